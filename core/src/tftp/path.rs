//! Requested filename → a relative path that cannot leave the TFTP root.
//!
//! Firmware sends paths in many shapes: `/boot/x`, `boot\x64\wdsnbp.com`,
//! `//pxelinux.0`. [`normalize`] turns them into `a/b/c` (no leading `/`, no
//! empty or `.` components, `\` read as `/`) and refuses anything that could
//! name something outside the root: `..` components (even `a/../b`, which
//! would stay inside, because hosts should never have to reason about it),
//! drive letters, NUL, control characters, non-UTF-8 and over-long names.
//!
//! This is the first line only: the host joins the result to its root and must
//! still check the final file (canonical path under the canonical root, no
//! symlink pointing out of it).

/// Why a filename was refused; every case is an ERROR 2 (access violation) on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PathError {
    /// Nothing left after removing slashes and `.` components.
    Empty,
    /// Longer than the capacity the host chose.
    TooLong,
    /// A `..` component.
    ParentComponent,
    /// A component like `C:` (a Windows drive).
    DriveLetter,
    /// A NUL byte inside the name.
    Nul,
    /// A control character (below 0x20, or 0x7f).
    ControlChar,
    /// Not valid UTF-8.
    NotUtf8,
}

impl core::fmt::Display for PathError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PathError::Empty => "empty filename",
            PathError::TooLong => "filename too long",
            PathError::ParentComponent => "'..' in filename",
            PathError::DriveLetter => "drive letter in filename",
            PathError::Nul => "NUL in filename",
            PathError::ControlChar => "control character in filename",
            PathError::NotUtf8 => "filename is not UTF-8",
        })
    }
}

impl core::error::Error for PathError {}

/// Normalises a requested filename into at most `N` bytes; see the module docs.
pub fn normalize<const N: usize>(raw: &[u8]) -> Result<heapless::String<N>, PathError> {
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    let text = core::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
    if text.chars().any(|c| c.is_ascii_control()) {
        return Err(PathError::ControlChar);
    }
    let mut out = heapless::String::<N>::new();
    for component in text.split(['/', '\\']) {
        match component {
            "" | "." => continue,
            ".." => return Err(PathError::ParentComponent),
            _ => {}
        }
        let mut chars = component.chars();
        if let (Some(letter), Some(':')) = (chars.next(), chars.next()) {
            if letter.is_ascii_alphabetic() {
                return Err(PathError::DriveLetter);
            }
        }
        if !out.is_empty() {
            out.push('/').map_err(|_| PathError::TooLong)?;
        }
        out.push_str(component).map_err(|_| PathError::TooLong)?;
    }
    if out.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    fn n(raw: &[u8]) -> Result<heapless::String<64>, PathError> {
        normalize::<64>(raw)
    }

    #[test]
    fn ordinary_names_pass_through() {
        assert_eq!(n(b"boot.ipxe").unwrap(), "boot.ipxe");
        assert_eq!(
            n(b"scripts/52-54-00-e2-e0-01.ipxe").unwrap(),
            "scripts/52-54-00-e2-e0-01.ipxe"
        );
        assert_eq!(n(b"a..b/c...d/.hidden").unwrap(), "a..b/c...d/.hidden");
        assert_eq!(n("ünïcode/ok".as_bytes()).unwrap(), "ünïcode/ok");
    }

    #[test]
    fn slashes_are_normalised() {
        assert_eq!(n(b"/abs").unwrap(), "abs");
        assert_eq!(n(b"///boot//x64///f").unwrap(), "boot/x64/f");
        assert_eq!(n(b"boot\\x64\\wdsnbp.com").unwrap(), "boot/x64/wdsnbp.com");
        assert_eq!(n(b"\\\\server\\share\\f").unwrap(), "server/share/f");
        assert_eq!(n(b"./a/./b/.").unwrap(), "a/b");
        assert_eq!(n(b"dir/").unwrap(), "dir");
    }

    #[test]
    fn traversal_is_refused() {
        for raw in [
            &b"../etc/passwd"[..],
            b"..\\..\\windows\\win.ini",
            b"a/../../b",
            b"a/../b",
            b"/..",
            b"..",
            b"scripts/..",
            b"x\\..\\..\\y",
            b"//../x",
        ] {
            assert_eq!(n(raw), Err(PathError::ParentComponent), "{raw:?}");
        }
    }

    #[test]
    fn drives_nul_controls_and_encoding_are_refused() {
        assert_eq!(n(b"C:\\x"), Err(PathError::DriveLetter));
        assert_eq!(n(b"c:/x"), Err(PathError::DriveLetter));
        assert_eq!(n(b"/d:"), Err(PathError::DriveLetter));
        assert_eq!(n(b"dir/z:stream"), Err(PathError::DriveLetter));
        assert_eq!(n(b"boot.ipxe\0../../etc/passwd"), Err(PathError::Nul));
        assert_eq!(n(b"a\nb"), Err(PathError::ControlChar));
        assert_eq!(n(b"a\x7fb"), Err(PathError::ControlChar));
        assert_eq!(n(b"\xff\xfe"), Err(PathError::NotUtf8));
        // A colon that is not a drive letter is an ordinary character.
        assert_eq!(n(b"ab:c").unwrap(), "ab:c");
    }

    #[test]
    fn empty_and_long_names() {
        for raw in [&b""[..], b"/", b"//", b".", b"\\", b"./."] {
            assert_eq!(n(raw), Err(PathError::Empty), "{raw:?}");
        }
        assert_eq!(normalize::<4>(b"abcd").unwrap(), "abcd");
        assert_eq!(normalize::<4>(b"abcde"), Err(PathError::TooLong));
        assert_eq!(normalize::<4>(b"ab/cd"), Err(PathError::TooLong));
        // Collapsed slashes do not count against the limit.
        assert_eq!(normalize::<4>(b"//a//b").unwrap(), "a/b");
    }
}
