//! Reading a station's serial log: iPXE and OVMF write ANSI escapes and
//! carriage returns, which are removed before matching.

use std::sync::OnceLock;

use regex::Regex;

/// Strips ANSI escapes (`ESC [ … letter`, `ESC c`) and turns CR / CR LF into LF.
pub fn clean(raw: &[u8]) -> String {
    static ANSI: OnceLock<Option<Regex>> = OnceLock::new();
    let text = String::from_utf8_lossy(raw);
    let text = match ANSI.get_or_init(|| Regex::new(r"\x1b\[[0-9;=?]*[A-Za-z]|\x1bc").ok()) {
        Some(re) => re.replace_all(&text, "").into_owned(),
        None => text.into_owned(),
    };
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Text on a console that means the boot cannot succeed any more.
pub const FATAL: &[&str] = &[
    "SANBOOT-FAIL",
    "No bootable device",
    "No bootable option or device",
    "Shell> ",
    "Could not open SAN device",
    "Boot from SAN device 0x80 failed",
    "No more network devices",
];

/// The first fatal string present in `text`.
pub fn fatal_in(text: &str) -> Option<&'static str> {
    FATAL.iter().copied().find(|f| text.contains(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_carriage_returns_are_removed() {
        let raw = b"\x1bc\x1b[0m\x1b[1;37miPXE\x1b[0m 1.0.0\r\nnet0: 52:54\r\x1b[?25hok\n";
        assert_eq!(clean(raw), "iPXE 1.0.0\nnet0: 52:54\nok\n");
    }

    #[test]
    fn fatal_strings_are_found() {
        assert_eq!(
            fatal_in("x\nCould not open SAN device: Input/output error"),
            Some("Could not open SAN device")
        );
        assert_eq!(fatal_in("SANBOOT-OK"), None);
    }
}
