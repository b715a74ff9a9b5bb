//! CDB field access and response building without indexing panics.

/// Operation codes this layer knows (SPC-4 / SBC-3 names).
pub mod opcode {
    #![allow(missing_docs)]
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const SEND_DIAGNOSTIC: u8 = 0x1d;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_AND_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const SANITIZE: u8 = 0x48;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const ORWRITE_16: u8 = 0x8b;
    pub const WRITE_16: u8 = 0x8a;
    pub const WRITE_AND_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const EXTENDED_COPY: u8 = 0x83;
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_AND_VERIFY_12: u8 = 0xae;
    pub const VERIFY_12: u8 = 0xaf;
    pub const READ_DEFECT_DATA_12: u8 = 0xb7;

    /// SERVICE ACTION IN(16) service actions.
    pub const SAI_READ_CAPACITY_16: u8 = 0x10;
    pub const SAI_GET_LBA_STATUS: u8 = 0x12;
    /// MAINTENANCE IN service actions.
    pub const MI_REPORT_SUPPORTED_OPCODES: u8 = 0x0c;
    pub const MI_REPORT_SUPPORTED_TMFS: u8 = 0x0d;
}

/// Big-endian field readers over a CDB or parameter list; bytes past the end
/// read as zero (callers check the length they need first).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }
    pub fn bit(&self, i: usize, bit: u8) -> bool {
        self.u8(i) & (1 << bit) != 0
    }
    pub fn u16(&self, i: usize) -> u16 {
        u16::from(self.u8(i)) << 8 | u16::from(self.u8(i + 1))
    }
    pub fn u24(&self, i: usize) -> u32 {
        u32::from(self.u8(i)) << 16 | u32::from(self.u16(i + 1))
    }
    pub fn u32(&self, i: usize) -> u32 {
        u32::from(self.u16(i)) << 16 | u32::from(self.u16(i + 2))
    }
    pub fn u64(&self, i: usize) -> u64 {
        u64::from(self.u32(i)) << 32 | u64::from(self.u32(i + 4))
    }
}

/// Writes a response into a caller buffer: bytes past the end of the
/// buffer (or of the allocation length) are counted but dropped, so the
/// full length is known for length fields and truncation is automatic.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }
    /// Bytes the full response takes (may exceed the buffer).
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.u8(b);
        }
    }
    pub fn u8(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.pos) {
            *slot = b;
        }
        self.pos = self.pos.saturating_add(1);
    }
    pub fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
    pub fn zeros(&mut self, n: usize) {
        for _ in 0..n {
            self.u8(0);
        }
    }
    /// Overwrites bytes already emitted at `at` (length fields).
    pub fn patch(&mut self, at: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            if let Some(slot) = at.checked_add(i).and_then(|j| self.buf.get_mut(j)) {
                *slot = b;
            }
        }
    }
    /// ASCII text left-aligned and space-padded to `width` bytes.
    pub fn ascii(&mut self, text: &[u8], width: usize) {
        for i in 0..width {
            self.u8(text.get(i).copied().unwrap_or(b' '));
        }
    }
    /// Data-In length: the response cut to `alloc_len` and the buffer.
    pub fn data_len(&self, alloc_len: u32) -> u32 {
        let n = self.pos.min(self.buf.len());
        u32::try_from(n).unwrap_or(u32::MAX).min(alloc_len)
    }
}
