//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 §6.4, §6.18):
//! block-to-block copies inside this logical unit, done by the host as one
//! [`Io::Copy`] so the data never crosses the network.

use super::cdb::{Bytes, Writer};
use super::sense::{asc, Sense, SenseKey};
use super::status::{bad_cdb, bad_param, done, illegal, CmdResult, Fail};
use super::{Io, LunConfig, Nexus, Step};

/// Parameter list header length.
const HEADER: usize = 16;
/// Identification descriptor target descriptor (E4h) length.
const TARGET_DESC: usize = 32;
/// Block device to block device segment descriptor (02h) length.
const B2B_DESC: usize = 28;
const MAX_TARGET_DESCRIPTORS: usize = 2;
const MAX_SEGMENT_DESCRIPTORS: usize = 1;
const MAX_DESCRIPTOR_LIST: usize = 1024;
/// MAXIMUM SEGMENT LENGTH in bytes.
const MAX_SEGMENT_BYTES: u32 = 256 << 20;

const TYPE_IDENTIFICATION: u8 = 0xe4;
const TYPE_BLOCK_TO_BLOCK: u8 = 0x02;

/// What a finished copy left for RECEIVE COPY RESULTS / COPY STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyRecord {
    pub list_id: u8,
    pub ok: bool,
    pub segments: u16,
    pub bytes: u64,
}

/// COPY ABORTED (sense key 0Ah) with `code`.
pub(crate) fn copy_aborted(code: (u8, u8)) -> Fail {
    Fail::Check(Sense::new(SenseKey::Unknown(0x0a), code))
}

/// COPY TARGET DEVICE NOT REACHABLE (0D/02).
const NOT_REACHABLE: (u8, u8) = (0x0d, 0x02);

/// The one block-to-block segment of a parameter list, checked against
/// everything but the logical unit's capacity and write protection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    /// The list identifier to remember for RECEIVE COPY RESULTS, if any.
    pub list_id: Option<u8>,
    pub src_lba: u64,
    pub dst_lba: u64,
    pub blocks: u64,
    /// Offset of the segment descriptor in the parameter list (for sense).
    seg_off: u16,
}

/// EXTENDED COPY's CDB: asks for the parameter list.
pub(crate) fn extended_copy(cdb: Bytes<'_>) -> CmdResult {
    if cdb.u8(1) & 0x1f != 0 {
        // Only LID1 (service action 00h).
        return Err(bad_cdb(1, Some(4)));
    }
    let len = cdb.u32(10);
    if len == 0 {
        return Ok(done(0));
    }
    Ok(Step::DataOut { len })
}

/// Parses and checks an EXTENDED COPY parameter list for `cfg`'s logical
/// unit; `None` when it holds no segment (nothing to copy).
pub(crate) fn parse_list(cfg: &LunConfig, data: &[u8]) -> CmdResult<Option<Segment>> {
    let p = Bytes(data);
    if data.len() < HEADER {
        return Err(illegal(asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    let list_id = p.u8(0);
    // LIST ID USAGE 11b: no list identifier, nothing to remember.
    let keep = (p.u8(1) >> 3) & 3 != 3;
    let tdll = usize::from(p.u16(2));
    let sdll = p.u32(8) as usize;
    let inline = p.u32(12) as usize;
    let total = HEADER
        .saturating_add(tdll)
        .saturating_add(sdll)
        .saturating_add(inline);
    if total > data.len() {
        return Err(illegal(asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    if tdll.saturating_add(sdll) > MAX_DESCRIPTOR_LIST {
        return Err(illegal(asc::PARAMETER_LIST_LENGTH_ERROR));
    }
    if inline != 0 {
        return Err(bad_param(12));
    }
    if tdll > MAX_TARGET_DESCRIPTORS * TARGET_DESC {
        return Err(illegal((0x26, 0x06))); // TOO MANY TARGET DESCRIPTORS
    }
    let targets = data.get(HEADER..HEADER.saturating_add(tdll)).unwrap_or(&[]);
    let segments = data
        .get(HEADER.saturating_add(tdll)..HEADER.saturating_add(tdll).saturating_add(sdll))
        .unwrap_or(&[]);
    // Count segment descriptors by their own lengths.
    let mut count = 0usize;
    let mut at = 0usize;
    while at < segments.len() {
        let len = usize::from(Bytes(segments).u16(at.saturating_add(2))).saturating_add(4);
        at = at.saturating_add(len);
        count = count.saturating_add(1);
    }
    if count > MAX_SEGMENT_DESCRIPTORS {
        return Err(illegal((0x26, 0x08))); // TOO MANY SEGMENT DESCRIPTORS
    }
    // Target descriptors: identification descriptors naming this LUN.
    let mut reachable = [false; MAX_TARGET_DESCRIPTORS];
    for (i, d) in targets.chunks(TARGET_DESC).enumerate() {
        let off =
            u16::try_from(HEADER.saturating_add(i.saturating_mul(TARGET_DESC))).unwrap_or(u16::MAX);
        let d = Bytes(d);
        if d.u8(0) != TYPE_IDENTIFICATION {
            // UNSUPPORTED TARGET DESCRIPTOR TYPE CODE
            return Err(Fail::Check(Sense::illegal((0x26, 0x07), false, off, None)));
        }
        // LU ID TYPE and NUL are obsolete in SPC-4 (which we claim):
        // ignored, the designator alone names the logical unit.
        let device_type = d.u8(1) & 0x1f;
        // Designator: NAA, logical unit association, 8 bytes, ours.
        let ours = d.u8(5) & 0x3f == 0x03 && d.u8(7) == 8 && d.u64(8) == cfg.naa;
        let block = d.u24(29);
        let ok_block = block == 0 || block == cfg.block_size;
        if let Some(slot) = reachable.get_mut(i) {
            *slot = device_type == 0 && ours && ok_block;
        }
    }
    let n_targets = targets.len() / TARGET_DESC;
    if segments.is_empty() {
        return Ok(None);
    }
    let s = Bytes(segments);
    let seg_off = u16::try_from(HEADER.saturating_add(tdll)).unwrap_or(u16::MAX);
    if s.u8(0) != TYPE_BLOCK_TO_BLOCK {
        // UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE
        return Err(Fail::Check(Sense::illegal(
            (0x26, 0x09),
            false,
            seg_off,
            None,
        )));
    }
    if usize::from(s.u16(2)).saturating_add(4) != B2B_DESC || segments.len() < B2B_DESC {
        return Err(bad_param(seg_off.saturating_add(2)));
    }
    let src = usize::from(s.u16(4));
    let dst = usize::from(s.u16(6));
    for idx in [src, dst] {
        if idx >= n_targets || !reachable.get(idx).copied().unwrap_or(false) {
            return Err(copy_aborted(NOT_REACHABLE));
        }
    }
    let blocks = u64::from(s.u16(10));
    let src_lba = s.u64(12);
    let dst_lba = s.u64(20);
    Ok(Some(Segment {
        list_id: keep.then_some(list_id),
        src_lba,
        dst_lba,
        blocks,
        seg_off,
    }))
}

/// The [`Io::Copy`] of `seg` once the logical unit turned its LBAs
/// into byte offsets; a segment longer than we advertise is refused.
pub(crate) fn copy_io(seg: &Segment, nexus: u16, src: u64, dst: u64, len: u32) -> CmdResult {
    if len > MAX_SEGMENT_BYTES {
        return Err(bad_param(seg.seg_off.saturating_add(10)));
    }
    Ok(Step::Io(Io::Copy {
        src,
        dst,
        len,
        nexus,
        list_id: seg.list_id,
    }))
}

/// Remembers how the copy of nexus slot `index` ended.
pub(crate) fn record(
    copies: &mut [Option<CopyRecord>],
    index: u16,
    list_id: Option<u8>,
    ok: bool,
    bytes: u64,
) {
    let Some(list_id) = list_id else { return };
    if let Some(slot) = copies.get_mut(usize::from(index)) {
        *slot = Some(CopyRecord {
            list_id,
            ok,
            segments: u16::from(ok),
            bytes,
        });
    }
}

/// RECEIVE COPY RESULTS: COPY STATUS of `nexus`'s last copy, or the
/// OPERATING PARAMETERS.
pub(crate) fn receive_copy_results(
    copies: &[Option<CopyRecord>],
    nexus: &Nexus<'_>,
    cdb: Bytes<'_>,
    buf: &mut [u8],
) -> CmdResult {
    let alloc = cdb.u32(10);
    let mut w = Writer::new(buf);
    match cdb.u8(1) & 0x1f {
        // COPY STATUS
        0x00 => {
            let list_id = cdb.u8(2);
            let rec = copies
                .get(usize::from(nexus.index))
                .copied()
                .flatten()
                .filter(|r| r.list_id == list_id)
                .ok_or(bad_cdb(2, None))?;
            w.u32(8);
            w.u8(if rec.ok { 0x01 } else { 0x02 });
            w.u16(rec.segments);
            match u32::try_from(rec.bytes) {
                Ok(b) => {
                    w.u8(0x00); // TRANSFER COUNT UNITS: bytes
                    w.u32(b);
                }
                Err(_) => {
                    w.u8(0x01); // kibibytes
                    w.u32(u32::try_from(rec.bytes >> 10).unwrap_or(u32::MAX));
                }
            }
        }
        // OPERATING PARAMETERS
        0x03 => {
            w.u32(42);
            w.u8(0); // SNLID
            w.zeros(3);
            w.u16(MAX_TARGET_DESCRIPTORS as u16);
            w.u16(MAX_SEGMENT_DESCRIPTORS as u16);
            w.u32(MAX_DESCRIPTOR_LIST as u32);
            w.u32(MAX_SEGMENT_BYTES);
            w.u32(0); // MAXIMUM INLINE DATA LENGTH
            w.u32(0); // HELD DATA LIMIT
            w.u32(0); // MAXIMUM STREAM DEVICE TRANSFER SIZE
            w.zeros(2);
            w.u16(1); // TOTAL CONCURRENT COPIES
            w.u8(1); // MAXIMUM CONCURRENT COPIES
            w.u8(9); // DATA SEGMENT GRANULARITY (log2 bytes)
            w.u8(0); // INLINE DATA GRANULARITY
            w.u8(0); // HELD DATA GRANULARITY
            w.zeros(3);
            w.u8(2); // IMPLEMENTED DESCRIPTOR LIST LENGTH
            w.u8(TYPE_BLOCK_TO_BLOCK);
            w.u8(TYPE_IDENTIFICATION);
        }
        _ => return Err(bad_cdb(1, Some(4))),
    }
    Ok(done(w.data_len(alloc)))
}
