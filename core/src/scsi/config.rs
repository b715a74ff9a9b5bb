//! What a logical unit is: its size, its identity, its limits.

/// Configuration of one logical unit (a disk image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunConfig {
    /// Capacity in logical blocks.
    pub blocks: u64,
    /// Logical block length in bytes (512 default; 4096 also sensible).
    pub block_size: u32,
    /// Write-protected: every write ends in DATA PROTECT / WRITE PROTECTED,
    /// MODE SENSE reports WP.
    pub read_only: bool,
    /// The host acknowledges writes before they are durable (a volatile
    /// cache, e.g. the page cache without O_DSYNC): reported as WCE=1 in the
    /// caching mode page, so initiators send SYNCHRONIZE CACHE / FUA.
    pub write_cache: bool,
    /// Thin provisioning: LBPME in READ CAPACITY(16), UNMAP, WRITE SAME with
    /// UNMAP, GET LBA STATUS reports holes, VPD B2 advertises LBPU/LBPWS.
    pub thin_provisioning: bool,
    /// NAA IEEE Registered designator (NAA 5h: 4-bit NAA, 24-bit OUI,
    /// 36-bit vendor id) for VPD page 83h. Must be unique per LUN.
    pub naa: u64,
    /// Unit serial number (VPD 80h), printable ASCII.
    pub serial: heapless::String<32>,
    /// T10 VENDOR IDENTIFICATION (8 ASCII bytes, space padded).
    pub vendor: [u8; 8],
    /// PRODUCT IDENTIFICATION (16 ASCII bytes, space padded).
    pub product: [u8; 16],
    /// PRODUCT REVISION LEVEL (4 ASCII bytes).
    pub revision: [u8; 4],
    /// MAXIMUM TRANSFER LENGTH in blocks (VPD B0h); larger READ/WRITE/
    /// VERIFY/ORWRITE get INVALID FIELD IN CDB. 0 = no limit.
    pub max_transfer_blocks: u32,
    /// MAXIMUM COMPARE AND WRITE LENGTH in blocks (VPD B0h); longer COMPARE
    /// AND WRITE gets INVALID FIELD IN CDB. The storage driver collects
    /// `2 ×` this many blocks, so it is bounded by its collection buffer.
    pub max_compare_and_write_blocks: u8,
    /// OPTIMAL TRANSFER LENGTH in blocks (VPD B0h).
    pub optimal_transfer_blocks: u32,
    /// MAXIMUM UNMAP LBA COUNT (VPD B0h), per UNMAP descriptor. Default
    /// `u32::MAX` (no limit: a hole punch costs the same for any length);
    /// libiscsi calls an explicit limit above 2^20 insane.
    pub max_unmap_blocks: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT (VPD B0h); at most
    /// [`LunConfig::MAX_UNMAP_DESCRIPTORS`].
    pub max_unmap_descriptors: u32,
    /// OPTIMAL UNMAP GRANULARITY in blocks (VPD B0h), e.g. 8 for 4 KiB holes.
    pub unmap_granularity: u32,
    /// MAXIMUM WRITE SAME LENGTH in blocks (VPD B0h). 0 = no limit.
    pub max_write_same_blocks: u64,
}

impl LunConfig {
    /// Default MAXIMUM TRANSFER LENGTH in bytes (32 MiB): what one command
    /// may move. Data streams through fixed buffers, so this bounds how long
    /// one command runs, not memory; libiscsi's suite writes 65,536 blocks
    /// of 512 bytes in one command whatever the limit says.
    pub const DEFAULT_MAX_TRANSFER_BYTES: u32 = 32 << 20;

    /// Upper bound for [`LunConfig::max_unmap_descriptors`].
    pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;

    /// A writable, fully provisioned disk of `blocks` 512-byte blocks with
    /// write cache reported, identified by `naa` (see [`LunConfig::naa`]).
    pub fn new(blocks: u64, naa: u64) -> Self {
        LunConfig {
            blocks,
            block_size: 512,
            read_only: false,
            write_cache: true,
            thin_provisioning: false,
            naa,
            serial: heapless::String::new(),
            vendor: *b"SANBOOT ",
            product: *b"VIRTUAL-DISK    ",
            revision: *b"0001",
            max_transfer_blocks: Self::DEFAULT_MAX_TRANSFER_BYTES / 512,
            max_compare_and_write_blocks: 255,
            optimal_transfer_blocks: 0,
            max_unmap_blocks: u32::MAX,
            max_unmap_descriptors: 64,
            unmap_granularity: 8,
            max_write_same_blocks: 0x0040_0000,
        }
    }

    /// Capacity in bytes (saturating).
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}
