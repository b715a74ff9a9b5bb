//! Unsigned numbers in decimal, as the text protocols write them (iSCSI
//! key values, TFTP option values).

/// Format `n` in decimal into `buf`, returning the digits.
pub fn fmt_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(b) = buf.get_mut(i) {
            *b = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    core::str::from_utf8(buf.get(i..).unwrap_or(&[])).unwrap_or("0")
}
