//! The overlay file's header: parse (an input path: never panics) and emit.
//! The layout is described in the parent module's documentation.

use crate::iscsi::crc32c::crc32c;

/// `magic` at offset 0 of every overlay file.
pub const MAGIC: [u8; 8] = *b"SANBOVLY";
/// The one format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Bytes reserved for the header at the start of the file (the map starts
/// at or after this).
pub const HEADER_BLOCK: u64 = 4096;
/// Bytes of the header that carry fields; the rest of the block is zero.
pub const HEADER_LEN: usize = 76;
/// Smallest and largest granularity (bytes per map entry).
pub const MIN_GRANULARITY: u32 = 4096;
/// See [`MIN_GRANULARITY`].
pub const MAX_GRANULARITY: u32 = 1 << 20;
/// The granularity a new overlay gets unless the caller picks another.
pub const DEFAULT_GRANULARITY: u32 = 64 << 10;
/// Map entry: the granule was never written here; read the base.
pub const ENTRY_BASE: u32 = 0;
/// Map entry: the granule was deallocated; it reads as zeros.
pub const ENTRY_ZERO: u32 = 1;
/// Largest entry count: slot numbers go up to twice the entry count (see
/// [`Header::max_slots`]) and `slot + 2` must fit a `u32`.
pub const MAX_ENTRIES: u32 = (u32::MAX - 2) / 2;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..8;
    pub const VERSION: Range<usize> = 8..12;
    pub const GRANULARITY: Range<usize> = 12..16;
    pub const VIRTUAL_SIZE: Range<usize> = 16..24;
    pub const BASE_SIZE: Range<usize> = 24..32;
    pub const BASE_ID: Range<usize> = 32..48;
    pub const MAP_OFFSET: Range<usize> = 48..56;
    pub const ENTRIES: Range<usize> = 56..60;
    pub const RESERVED: Range<usize> = 60..64;
    pub const DATA_OFFSET: Range<usize> = 64..72;
    pub const CRC: Range<usize> = 72..76;
}

/// Why a header (or the file behind it) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FormatError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Truncated,
    /// Not an overlay file.
    BadMagic,
    /// A version this code does not know.
    UnsupportedVersion(u32),
    /// The header's CRC32C does not match its bytes.
    BadChecksum,
    /// The fields contradict each other or the limits (granularity, sizes,
    /// offsets).
    BadGeometry,
}

/// The validated header of an overlay file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Bytes per map entry (a power of two, 4 KiB..=1 MiB).
    pub granularity: u32,
    /// Size of the device the overlay presents, in bytes (a multiple of 512).
    pub virtual_size: u64,
    /// Size of the base it was made for (at most `virtual_size`; the bytes
    /// past it read as zeros until written).
    pub base_size: u64,
    /// Identity of the base, chosen by the host (e.g. a content digest).
    pub base_id: [u8; 16],
    /// Where the map starts (a multiple of 512, at or after [`HEADER_BLOCK`]).
    pub map_offset: u64,
    /// Number of map entries: `virtual_size / granularity`, rounded up.
    pub entries: u32,
    /// Where slot 0 starts (a multiple of the granularity, after the map).
    pub data_offset: u64,
}

fn u32_at(b: &[u8], r: core::ops::Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(r) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], r: core::ops::Range<usize>) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(r) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn put(b: &mut [u8], r: core::ops::Range<usize>, v: &[u8]) {
    if let Some(d) = b.get_mut(r) {
        d.copy_from_slice(v);
    }
}

impl Header {
    /// The header a new overlay over a base of `base_size` bytes gets:
    /// the same virtual size, the map right after the header block, data
    /// aligned to the granularity. `None` when the sizes are out of range.
    pub fn new(base_size: u64, base_id: [u8; 16], granularity: u32) -> Option<Header> {
        Header::with_size(base_size, base_size, base_id, granularity)
    }

    /// Like [`Header::new`] with a virtual size larger than the base.
    pub fn with_size(
        virtual_size: u64,
        base_size: u64,
        base_id: [u8; 16],
        granularity: u32,
    ) -> Option<Header> {
        let g = u64::from(granularity);
        let entries = u32::try_from(virtual_size.checked_add(g - 1)? / g).ok()?;
        let map_end = HEADER_BLOCK.checked_add(u64::from(entries) * 4)?;
        let data_offset = map_end.checked_add(g - 1)? / g * g;
        let h = Header {
            granularity,
            virtual_size,
            base_size,
            base_id,
            map_offset: HEADER_BLOCK,
            entries,
            data_offset,
        };
        h.valid().then_some(h)
    }

    /// Slot numbers run from 0 to `max_slots() - 1`: twice the entry count,
    /// so slots freed but not yet reusable (see the module docs) never stop
    /// a write.
    pub fn max_slots(&self) -> u32 {
        self.entries.saturating_mul(2)
    }

    /// Byte offset of slot `slot`.
    pub fn slot_offset(&self, slot: u32) -> u64 {
        self.data_offset + u64::from(slot) * u64::from(self.granularity)
    }

    /// The file size when every slot is in use.
    pub fn max_file_len(&self) -> u64 {
        self.slot_offset(self.max_slots())
    }

    fn valid(&self) -> bool {
        let g = u64::from(self.granularity);
        let geometry = self.granularity.is_power_of_two()
            && (MIN_GRANULARITY..=MAX_GRANULARITY).contains(&self.granularity)
            && self.virtual_size > 0
            && self.virtual_size & 511 == 0
            && self.base_size <= self.virtual_size
            && self.entries > 0
            && self.entries <= MAX_ENTRIES
            && u64::from(self.entries) == self.virtual_size.div_ceil(g);
        let map_end = self.map_offset.checked_add(u64::from(self.entries) * 4);
        // Every slot offset must be representable: data_offset + 2 * entries * g.
        let data_end = (u64::from(self.entries) * 2)
            .checked_mul(g)
            .and_then(|d| d.checked_add(self.data_offset));
        geometry
            && self.map_offset >= HEADER_BLOCK
            && self.map_offset & 511 == 0
            && map_end.is_some_and(|end| end <= self.data_offset)
            && self.data_offset & (g - 1) == 0
            && data_end.is_some()
    }

    /// Parses and validates the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Header, FormatError> {
        let b = bytes.get(..HEADER_LEN).ok_or(FormatError::Truncated)?;
        if b.get(field::MAGIC) != Some(&MAGIC[..]) {
            return Err(FormatError::BadMagic);
        }
        let version = u32_at(b, field::VERSION);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let body = b.get(..field::CRC.start).ok_or(FormatError::Truncated)?;
        if crc32c(body) != u32_at(b, field::CRC) {
            return Err(FormatError::BadChecksum);
        }
        let mut base_id = [0u8; 16];
        if let Some(id) = b.get(field::BASE_ID) {
            base_id.copy_from_slice(id);
        }
        let h = Header {
            granularity: u32_at(b, field::GRANULARITY),
            virtual_size: u64_at(b, field::VIRTUAL_SIZE),
            base_size: u64_at(b, field::BASE_SIZE),
            base_id,
            map_offset: u64_at(b, field::MAP_OFFSET),
            entries: u32_at(b, field::ENTRIES),
            data_offset: u64_at(b, field::DATA_OFFSET),
        };
        if u32_at(b, field::RESERVED) != 0 || !h.valid() {
            return Err(FormatError::BadGeometry);
        }
        Ok(h)
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out` and
    /// zeros the rest of `out`. `out` shorter than [`HEADER_LEN`]: nothing
    /// is written and `false` returned.
    pub fn emit(&self, out: &mut [u8]) -> bool {
        if out.len() < HEADER_LEN {
            return false;
        }
        out.fill(0);
        put(out, field::MAGIC, &MAGIC);
        put(out, field::VERSION, &VERSION.to_le_bytes());
        put(out, field::GRANULARITY, &self.granularity.to_le_bytes());
        put(out, field::VIRTUAL_SIZE, &self.virtual_size.to_le_bytes());
        put(out, field::BASE_SIZE, &self.base_size.to_le_bytes());
        put(out, field::BASE_ID, &self.base_id);
        put(out, field::MAP_OFFSET, &self.map_offset.to_le_bytes());
        put(out, field::ENTRIES, &self.entries.to_le_bytes());
        put(out, field::DATA_OFFSET, &self.data_offset.to_le_bytes());
        let crc = crc32c(out.get(..field::CRC.start).unwrap_or(&[]));
        put(out, field::CRC, &crc.to_le_bytes());
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lays_out_data_on_granule_boundaries() {
        let h = Header::new(100 << 20, [7; 16], DEFAULT_GRANULARITY).unwrap();
        assert_eq!(h.entries, 1600);
        assert_eq!(h.map_offset, 4096);
        assert_eq!(h.data_offset, 64 << 10);
        let mut buf = [0xa5u8; 512];
        assert!(h.emit(&mut buf));
        assert_eq!(&buf[..8], b"SANBOVLY");
        assert!(buf[HEADER_LEN..].iter().all(|&b| b == 0));
        assert_eq!(Header::parse(&buf), Ok(h));
    }

    #[test]
    fn refuses_damaged_headers() {
        let h = Header::new(1 << 20, [1; 16], 4096).unwrap();
        let mut buf = [0u8; HEADER_LEN];
        h.emit(&mut buf);
        assert_eq!(Header::parse(&buf[..40]), Err(FormatError::Truncated));
        let mut b = buf;
        b[0] = b'X';
        assert_eq!(Header::parse(&b), Err(FormatError::BadMagic));
        let mut b = buf;
        b[8] = 2;
        assert_eq!(Header::parse(&b), Err(FormatError::UnsupportedVersion(2)));
        let mut b = buf;
        b[20] ^= 1;
        assert_eq!(Header::parse(&b), Err(FormatError::BadChecksum));
        // A consistent checksum over inconsistent fields.
        let bad = Header {
            granularity: 3000,
            ..h
        };
        bad.emit(&mut b);
        assert_eq!(Header::parse(&b), Err(FormatError::BadGeometry));
        let bad = Header {
            data_offset: 4096,
            ..h
        };
        bad.emit(&mut b);
        assert_eq!(Header::parse(&b), Err(FormatError::BadGeometry));
    }

    #[test]
    fn granularity_limits() {
        assert!(Header::new(1 << 20, [0; 16], 2048).is_none());
        assert!(Header::new(1 << 20, [0; 16], 2 << 20).is_none());
        assert!(Header::new(1 << 20, [0; 16], 1 << 20).is_some());
        assert!(
            Header::new(1000, [0; 16], 4096).is_none(),
            "not whole blocks"
        );
        assert!(Header::new(0, [0; 16], 4096).is_none());
    }
}
