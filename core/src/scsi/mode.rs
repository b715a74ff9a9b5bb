//! MODE SENSE / MODE SELECT (SPC-4 §6.11-6.14): caching and control pages.

use super::cdb::{opcode as op, Bytes, Writer};
use super::lun::Lun;
use super::sense::asc;
use super::status::{bad_cdb, bad_param, done, illegal, ua, CmdResult};
use super::Nexus;

/// Caching mode page (SBC-3 §6.4.5).
const PAGE_CACHING: u8 = 0x08;
/// Control mode page (SPC-4 §7.5.8).
const PAGE_CONTROL: u8 = 0x0a;
/// Informational exceptions control (SPC-4 §7.5.x): reported, nothing changeable.
const PAGE_IEC: u8 = 0x1c;
const ALL_PAGES: u8 = 0x3f;

/// PAGE CONTROL field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pc {
    Current,
    Changeable,
    Default,
}

/// Longest page we emit.
const PAGE_MAX: usize = 20;

impl<const N: usize, const R: usize> Lun<N, R> {
    /// Writes page `code` for `pc` into `out`; returns its length.
    fn page(&self, code: u8, pc: Pc, out: &mut [u8; PAGE_MAX]) -> usize {
        *out = [0; PAGE_MAX];
        let mut w = Writer::new(out);
        match code {
            PAGE_CACHING => {
                w.u8(PAGE_CACHING);
                w.u8(0x12);
                // WCE reflects how the host really acknowledges writes; it
                // cannot be changed from the initiator.
                w.u8(match pc {
                    Pc::Changeable => 0,
                    _ if self.cfg.write_cache => 0x04,
                    _ => 0,
                });
                w.zeros(17);
            }
            PAGE_CONTROL => {
                w.u8(PAGE_CONTROL);
                w.u8(0x0a);
                let (d_sense, swp) = match pc {
                    Pc::Current => (self.d_sense, self.swp),
                    Pc::Default => (false, false),
                    Pc::Changeable => (true, true),
                };
                w.u8(if d_sense { 0x04 } else { 0 });
                // QUEUE ALGORITHM MODIFIER 1 (unrestricted reordering), QERR 0
                w.u8(if pc == Pc::Changeable { 0 } else { 0x10 });
                w.u8(if swp { 0x08 } else { 0 });
                w.u8(0);
                w.zeros(2);
                // BUSY TIMEOUT PERIOD: unlimited
                w.u16(if pc == Pc::Changeable { 0 } else { 0xffff });
                w.zeros(2);
            }
            PAGE_IEC => {
                w.u8(PAGE_IEC);
                w.u8(0x0a);
                w.zeros(10);
            }
            _ => return 0,
        }
        w.pos()
    }

    pub(crate) fn mode_sense(&self, cdb: Bytes<'_>, buf: &mut [u8]) -> CmdResult {
        let ten = cdb.u8(0) == op::MODE_SENSE_10;
        let dbd = cdb.bit(1, 3);
        let llbaa = ten && cdb.bit(1, 4);
        let pc = match cdb.u8(2) >> 6 {
            0 => Pc::Current,
            1 => Pc::Changeable,
            2 => Pc::Default,
            _ => return Err(illegal(asc::SAVING_PARAMETERS_NOT_SUPPORTED)),
        };
        let code = cdb.u8(2) & 0x3f;
        let sub = cdb.u8(3);
        let alloc = if ten {
            u32::from(cdb.u16(7))
        } else {
            u32::from(cdb.u8(4))
        };
        let pages: &[u8] = match (code, sub) {
            (ALL_PAGES, 0x00 | 0xff) => &[PAGE_CACHING, PAGE_CONTROL, PAGE_IEC],
            (PAGE_CACHING, 0x00) => &[PAGE_CACHING],
            (PAGE_CONTROL, 0x00 | 0xff) => &[PAGE_CONTROL],
            (PAGE_IEC, 0x00 | 0xff) => &[PAGE_IEC],
            (_, 0x00) => return Err(bad_cdb(2, Some(5))),
            _ => return Err(bad_cdb(3, None)),
        };
        let mut w = Writer::new(buf);
        let wp = self.cfg.read_only || self.swp;
        // DPOFUA: DPO and FUA are understood.
        let dev_specific = if wp { 0x80 } else { 0 } | 0x10;
        let long = llbaa && self.cfg.blocks > 0xffff_ffff;
        let bd_len: u16 = match (dbd, long) {
            (true, _) => 0,
            (false, true) => 16,
            (false, false) => 8,
        };
        if ten {
            w.u16(0);
            w.u8(0);
            w.u8(dev_specific);
            w.u8(u8::from(long));
            w.u8(0);
            w.u16(bd_len);
        } else {
            w.u8(0);
            w.u8(0);
            w.u8(dev_specific);
            w.u8(bd_len as u8);
        }
        match bd_len {
            8 => {
                w.u32(u32::try_from(self.cfg.blocks).unwrap_or(u32::MAX));
                w.u8(0);
                let [_, b1, b2, b3] = self.cfg.block_size.to_be_bytes();
                w.put(&[b1, b2, b3]);
            }
            16 => {
                w.u64(self.cfg.blocks);
                w.zeros(4);
                w.u32(self.cfg.block_size);
            }
            _ => {}
        }
        let mut page = [0u8; PAGE_MAX];
        for &p in pages {
            let n = self.page(p, pc, &mut page);
            w.put(page.get(..n).unwrap_or(&[]));
        }
        // MODE DATA LENGTH excludes itself.
        if ten {
            let len = u16::try_from(w.pos().saturating_sub(2)).unwrap_or(u16::MAX);
            w.patch(0, &len.to_be_bytes());
        } else {
            let len = u8::try_from(w.pos().saturating_sub(1)).unwrap_or(u8::MAX);
            w.patch(0, &[len]);
        }
        Ok(done(w.data_len(alloc)))
    }

    pub(crate) fn mode_select(&self, cdb: Bytes<'_>) -> CmdResult {
        let ten = cdb.u8(0) == op::MODE_SELECT_10;
        if cdb.bit(1, 0) {
            // SP: we cannot save parameters
            return Err(bad_cdb(1, Some(0)));
        }
        let len = if ten {
            u32::from(cdb.u16(7))
        } else {
            u32::from(cdb.u8(4))
        };
        if len == 0 {
            return Ok(done(0));
        }
        Ok(super::Step::DataOut { len })
    }

    pub(crate) fn mode_select_data(
        &mut self,
        nexus: &Nexus<'_>,
        cdb: Bytes<'_>,
        data: &[u8],
    ) -> CmdResult {
        let ten = cdb.u8(0) == op::MODE_SELECT_10;
        let pf = cdb.bit(1, 4);
        let p = Bytes(data);
        let (hdr, bd_len) = if ten {
            (8usize, usize::from(p.u16(6)))
        } else {
            (4usize, usize::from(p.u8(3)))
        };
        if data.len() < hdr {
            return Err(illegal(asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        // Block descriptors may only restate the block length.
        let bd = data
            .get(hdr..hdr.saturating_add(bd_len))
            .ok_or(illegal(asc::PARAMETER_LIST_LENGTH_ERROR))?;
        for d in bd.chunks(8) {
            let d = Bytes(d);
            if bd_len == 8 && d.u24(5) != self.cfg.block_size {
                return Err(bad_param(hdr as u16 + 5));
            }
        }
        let mut rest = data.get(hdr.saturating_add(bd_len)..).unwrap_or(&[]);
        let mut off = hdr.saturating_add(bd_len);
        let (mut d_sense, mut swp) = (self.d_sense, self.swp);
        while !rest.is_empty() {
            if !pf {
                return Err(bad_cdb(1, Some(4)));
            }
            let b = Bytes(rest);
            let code = b.u8(0) & 0x3f;
            if b.u8(0) & 0x40 != 0 {
                return Err(bad_param(off as u16));
            }
            let plen = usize::from(b.u8(1)).saturating_add(2);
            let page = rest
                .get(..plen)
                .ok_or(illegal(asc::PARAMETER_LIST_LENGTH_ERROR))?;
            let mut cur = [0u8; PAGE_MAX];
            let mut chg = [0u8; PAGE_MAX];
            let n = self.page(code, Pc::Current, &mut cur);
            let _ = self.page(code, Pc::Changeable, &mut chg);
            if n == 0 || n != plen {
                return Err(bad_param(off as u16));
            }
            // Every bit outside the changeable mask must stay as it is
            // (PS, bit 7 of byte 0, is reserved in MODE SELECT).
            for (i, ((&new, &now), &mask)) in
                page.iter().zip(cur.iter()).zip(chg.iter()).enumerate()
            {
                let new = if i == 0 { new & 0x7f } else { new };
                if (new ^ now) & !mask != 0 {
                    return Err(bad_param(off.saturating_add(i) as u16));
                }
            }
            if code == PAGE_CONTROL {
                let pb = Bytes(page);
                d_sense = pb.bit(2, 2);
                swp = pb.bit(4, 3);
            }
            off = off.saturating_add(plen);
            rest = rest.get(plen..).unwrap_or(&[]);
        }
        if (d_sense, swp) != (self.d_sense, self.swp) {
            self.d_sense = d_sense;
            self.swp = swp;
            // Other I_T nexuses learn about it (SPC-4 §7.5.1).
            self.raise_all(ua::MODE_CHANGED, Some(nexus.index));
        }
        Ok(done(0))
    }
}
