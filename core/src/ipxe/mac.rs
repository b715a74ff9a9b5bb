//! MAC addresses in the form iPXE puts into file names: `${mac:hexhyp}`.

use core::fmt;

/// Length of a MAC in hex-hyphen form, `52-54-00-e2-e0-01`.
pub const HEXHYP_LEN: usize = 17;

/// The file-name suffix of a per-machine script.
pub const SCRIPT_SUFFIX: &str = ".ipxe";

/// Displays a MAC as iPXE's `${mac:hexhyp}` does: lower-case hex, hyphens
/// between octets (`52-54-00-e2-e0-01`). This is also the per-machine script
/// name without its `.ipxe` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HexHyp(pub [u8; 6]);

impl fmt::Display for HexHyp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}-{b:02x}-{c:02x}-{d:02x}-{e:02x}-{g:02x}")
    }
}

/// Parses a MAC in hex-hyphen form, hex digits in either case
/// (`52-54-00-E2-E0-01`). Exactly six two-digit octets; nothing else.
pub fn parse_hexhyp(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split('-');
    for byte in mac.iter_mut() {
        let [hi, lo] = parts.next()?.as_bytes() else {
            return None;
        };
        let octet = (char::from(*hi).to_digit(16)? << 4) | char::from(*lo).to_digit(16)?;
        *byte = u8::try_from(octet).ok()?;
    }
    match parts.next() {
        Some(_) => None,
        None => Some(mac),
    }
}

/// The MAC a per-machine script request names: `52-54-00-e2-e0-01.ipxe`,
/// matched case-insensitively (digits and suffix), without any directory.
/// Anything else is `None`.
pub fn mac_from_script_name(name: &str) -> Option<[u8; 6]> {
    let (stem, suffix) = name.split_at_checked(HEXHYP_LEN)?;
    if !suffix.eq_ignore_ascii_case(SCRIPT_SUFFIX) {
        return None;
    }
    parse_hexhyp(stem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xe2, 0xe0, 0x01];

    #[test]
    fn hexhyp_is_lower_case_like_ipxe() {
        let mut s = heapless::String::<32>::new();
        write!(s, "{}", HexHyp([0xAB, 0xCD, 0xEF, 0, 1, 0x0a])).ok();
        assert_eq!(s.as_str(), "ab-cd-ef-00-01-0a");
        assert_eq!(s.len(), HEXHYP_LEN);
    }

    #[test]
    fn script_names_match_case_insensitively() {
        assert_eq!(mac_from_script_name("52-54-00-e2-e0-01.ipxe"), Some(MAC));
        assert_eq!(mac_from_script_name("52-54-00-E2-E0-01.ipxe"), Some(MAC));
        assert_eq!(mac_from_script_name("52-54-00-E2-E0-01.IPXE"), Some(MAC));
    }

    #[test]
    fn other_names_are_not_scripts() {
        for name in [
            "",
            "default.ipxe",
            "52-54-00-e2-e0-01",
            "52-54-00-e2-e0-01.ipxe.bak",
            "52:54:00:e2:e0:01.ipxe",
            "52-54-00-e2-e0-0g.ipxe",
            "52-54-00-e2-e0-+1.ipxe",
            "52-54-00-e2-e0-01-02.ipxe",
            "5-254-00-e2-e0-01.ipxe",
            "é2-54-00-e2-e0-01.ipxe",
            "52-54-00-e2-e0é.ipxe",
        ] {
            assert_eq!(mac_from_script_name(name), None, "{name}");
        }
    }

    #[test]
    fn hexhyp_round_trips() {
        let mut s = heapless::String::<32>::new();
        write!(s, "{}", HexHyp(MAC)).ok();
        assert_eq!(parse_hexhyp(&s), Some(MAC));
    }
}
