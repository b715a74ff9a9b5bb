//! Text keys (RFC 7143 §6.1): `key=value` pairs, each ended by a NUL.
//!
//! Parsing borrows from the data segment; emitting writes into a caller buffer.

pub use crate::decimal::fmt_u64;

/// Longest key name the RFC allows (§6.1: up to 63 bytes).
pub const MAX_KEY_LEN: usize = 63;
/// Longest value we accept (§6.1: 255 for most keys, 8192 for a few; we
/// never need the long ones).
pub const MAX_VALUE_LEN: usize = 8192;

/// One `key=value` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pair<'a> {
    /// The key, as bytes (valid keys are ASCII).
    pub key: &'a str,
    /// The value.
    pub value: &'a str,
}

/// A text item that is not a valid `key=value` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TextError {
    /// No `=` in the item, an empty or too long key, or a too long value.
    BadPair,
    /// Not UTF-8 (iSCSI text is UTF-8).
    NotUtf8,
}

/// Iterator over the pairs of a data segment; stops at the first error
/// (yielding it) and ignores empty items (padding NULs).
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Iterate over the `key=value` pairs of `data`.
pub fn pairs(data: &[u8]) -> Pairs<'_> {
    Pairs {
        rest: data,
        failed: false,
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Result<Pair<'a>, TextError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (item, rest) = match self.rest.iter().position(|&b| b == 0) {
                Some(i) => {
                    let (a, b) = self.rest.split_at(i);
                    (a, b.get(1..).unwrap_or(&[]))
                }
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            if item.is_empty() {
                continue;
            }
            let r = parse_pair(item);
            if r.is_err() {
                self.failed = true;
            }
            return Some(r);
        }
    }
}

fn parse_pair(item: &[u8]) -> Result<Pair<'_>, TextError> {
    let eq = item
        .iter()
        .position(|&b| b == b'=')
        .ok_or(TextError::BadPair)?;
    let (k, v) = item.split_at(eq);
    let v = v.get(1..).unwrap_or(&[]);
    if k.is_empty() || k.len() > MAX_KEY_LEN || v.len() > MAX_VALUE_LEN {
        return Err(TextError::BadPair);
    }
    let key = core::str::from_utf8(k).map_err(|_| TextError::NotUtf8)?;
    let value = core::str::from_utf8(v).map_err(|_| TextError::NotUtf8)?;
    Ok(Pair { key, value })
}

/// The buffer given to a [`TextWriter`] is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Overflow;

/// Appends `key=value\0` items to a buffer.
#[derive(Debug)]
pub struct TextWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> TextWriter<'a> {
    /// Write into `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        TextWriter { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `key=value\0`; on overflow nothing is written.
    pub fn push(&mut self, key: &str, value: &str) -> Result<(), Overflow> {
        self.push_parts(key, &[value])
    }

    /// Append `key=` followed by the concatenation of `parts`, then a NUL.
    pub fn push_parts(&mut self, key: &str, parts: &[&str]) -> Result<(), Overflow> {
        let vlen: usize = parts.iter().map(|p| p.len()).sum();
        let need = key.len() + 1 + vlen + 1;
        let end = self.len.checked_add(need).ok_or(Overflow)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(Overflow)?;
        let mut at = 0;
        for chunk in [key.as_bytes(), b"="]
            .into_iter()
            .chain(parts.iter().map(|p| p.as_bytes()))
            .chain([&b"\0"[..]])
        {
            if let Some(d) = dst.get_mut(at..at + chunk.len()) {
                d.copy_from_slice(chunk);
            }
            at += chunk.len();
        }
        self.len = end;
        Ok(())
    }

    /// Append `key=<decimal n>\0`.
    pub fn push_num(&mut self, key: &str, n: u64) -> Result<(), Overflow> {
        let mut digits = [0u8; 20];
        let s = fmt_u64(n, &mut digits);
        self.push(key, s)
    }
}

/// Parse a numerical value (RFC 7143 §6.1: decimal, `0x` hex; no base64 for
/// numbers we use). `None` on anything else or overflow.
pub fn parse_number(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 16 {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Decode a binary value (`0x` hex or `0b` base64, RFC 7143 §6.1) into `out`,
/// returning the number of bytes. `None` on bad syntax or if `out` is too small.
pub fn decode_binary(s: &str, out: &mut [u8]) -> Option<usize> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        decode_hex(hex, out)
    } else if let Some(b64) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        decode_base64(b64, out)
    } else {
        None
    }
}

fn decode_hex(s: &str, out: &mut [u8]) -> Option<usize> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    // An odd digit count means a leading zero nibble.
    let odd = b.len() % 2;
    let n = b.len() / 2 + odd;
    let dst = out.get_mut(..n)?;
    let mut it = b.iter();
    for (i, d) in dst.iter_mut().enumerate() {
        let hi = if i == 0 && odd == 1 {
            0
        } else {
            char::from(*it.next()?).to_digit(16)?
        };
        let lo = char::from(*it.next()?).to_digit(16)?;
        *d = u8::try_from((hi << 4) | lo).ok()?;
    }
    Some(n)
}

fn b64_val(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn decode_base64(s: &str, out: &mut [u8]) -> Option<usize> {
    let b = s.trim_end_matches('=').as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut n = 0usize;
    for &c in b {
        acc = (acc << 6) | u32::from(b64_val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    Some(n)
}

/// Encode `data` as `0x`-prefixed lowercase hex into `out`.
pub fn encode_hex<'a>(data: &[u8], out: &'a mut [u8]) -> Option<&'a str> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = 2usize.checked_add(data.len().checked_mul(2)?)?;
    let dst = out.get_mut(..n)?;
    let (prefix, body) = dst.split_at_mut(2);
    prefix.copy_from_slice(b"0x");
    for (pair, &byte) in body.chunks_exact_mut(2).zip(data) {
        let hi = DIGITS.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
        let lo = DIGITS.get(usize::from(byte & 15)).copied().unwrap_or(b'0');
        pair.copy_from_slice(&[hi, lo]);
    }
    core::str::from_utf8(dst).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn ipxe_security_keys() {
        let data = b"InitiatorName=iqn.2010-04.org.ipxe:x\0TargetName=iqn.t\0SessionType=Normal\0AuthMethod=None\0\0\0";
        let v: heapless::Vec<Pair, 8> = pairs(data).map(|p| p.unwrap()).collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].key, "InitiatorName");
        assert_eq!(v[3].value, "None");
    }

    #[test]
    fn bad_items() {
        let mut it = pairs(b"NoEquals\0A=b\0");
        assert_eq!(it.next(), Some(Err(TextError::BadPair)));
        assert_eq!(it.next(), None);
        assert_eq!(pairs(b"=x\0").next(), Some(Err(TextError::BadPair)));
        assert_eq!(pairs(b"A=\xff\0").next(), Some(Err(TextError::NotUtf8)));
        // an empty value is valid syntax
        assert_eq!(
            pairs(b"A=").next(),
            Some(Ok(Pair {
                key: "A",
                value: ""
            }))
        );
    }

    #[test]
    fn writer() {
        let mut buf = [0u8; 32];
        let mut w = TextWriter::new(&mut buf);
        w.push("A", "b").unwrap();
        w.push_num("N", 8192).unwrap();
        assert_eq!(w.push("Long", "xxxxxxxxxxxxxxxxxxxxxxxx"), Err(Overflow));
        let n = w.len();
        assert_eq!(&buf[..n], b"A=b\0N=8192\0");
    }

    #[test]
    fn numbers_and_binary() {
        assert_eq!(parse_number("262144"), Some(262144));
        assert_eq!(parse_number("0x10"), Some(16));
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number("99999999999999999999999"), None);
        let mut out = [0u8; 8];
        assert_eq!(decode_binary("0x0102ff", &mut out), Some(3));
        assert_eq!(&out[..3], &[1, 2, 0xff]);
        assert_eq!(decode_binary("0xabc", &mut out), Some(2));
        assert_eq!(&out[..2], &[0x0a, 0xbc]);
        assert_eq!(decode_binary("0bAQL/", &mut out), Some(3));
        assert_eq!(&out[..3], &[1, 2, 0xff]);
        assert_eq!(decode_binary("0bAQI=", &mut out), Some(2));
        assert_eq!(decode_binary("0xzz", &mut out), None);
        assert_eq!(decode_binary("1234", &mut out), None);
        assert_eq!(decode_binary("0x0102030405060708090a", &mut out), None);
        let mut s = [0u8; 16];
        assert_eq!(encode_hex(&[0xde, 0xad], &mut s), Some("0xdead"));
    }
}
