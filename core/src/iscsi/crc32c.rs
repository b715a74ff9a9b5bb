//! CRC32C (Castagnoli), the iSCSI header and data digest (RFC 7143 §13.1).
//!
//! The software path here is a byte-wise table walk: portable and no_std, but
//! slow (~0.5 GB/s). Hosts with SSE4.2 or ARMv8 CRC instructions plug a faster
//! function in through [`Crc32cFn`]; `crc32c::crc32c_append` from the
//! `crc32c` crate has exactly that signature.

/// A CRC32C implementation with "append" semantics: `f(0, data)` is the
/// CRC32C of `data`, and `f(f(0, a), b) == f(0, a ++ b)`.
pub type Crc32cFn = fn(u32, &[u8]) -> u32;

const POLY: u32 = 0x82f6_3b78; // Castagnoli, reflected

// `i` stays below 256, the table's length.
#[allow(clippy::indexing_slicing)]
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Software CRC32C with append semantics (see [`Crc32cFn`]).
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        let idx = ((c ^ u32::from(b)) & 0xff) as usize;
        // `idx` is masked to 0..=255, the table's exact length.
        c = (c >> 8) ^ TABLE.get(idx).copied().unwrap_or(0);
    }
    !c
}

/// CRC32C of `data` with the software table.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn rfc3720_vectors() {
        // RFC 3720 B.4: 32 bytes of zeros, of 0xff, and an incrementing pattern.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let mut inc = [0u8; 32];
        for (i, b) in inc.iter_mut().enumerate() {
            *b = i as u8;
        }
        assert_eq!(crc32c(&inc), 0x46dd_794e);
    }

    #[test]
    fn append_composes() {
        let data = b"the quick brown fox jumps over the lazy dog";
        let (a, b) = data.split_at(17);
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(data));
    }
}
