//! iSCSI names (RFC 3720 §3.2.6) and the initiator-name template.
//!
//! Only the ASCII subset of the stringprep'd name space (RFC 3722) is
//! accepted: `a-z 0-9 - . :`. iPXE and most initiators never produce
//! anything else, and a name that needs Unicode normalisation cannot be
//! compared byte-for-byte against a target's allow-list.

use core::fmt;

use super::mac::HexHyp;

/// RFC 3720 §3.2.6.1: an iSCSI name is at most 223 bytes.
pub const MAX_ISCSI_NAME_LEN: usize = 223;

/// The RFC 3720 §3.2.6 rule an iSCSI name breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IscsiNameError {
    /// The name is empty.
    Empty,
    /// Longer than [`MAX_ISCSI_NAME_LEN`] bytes (§3.2.6.1).
    TooLong,
    /// Starts with neither `iqn.`, `eui.` nor `naa.` (§3.2.6.3, RFC 3980).
    UnknownFormat,
    /// Contains upper-case letters; names are compared after case folding
    /// (RFC 3722), so a valid name is written in lower case.
    UpperCase,
    /// Contains a character outside `a-z 0-9 - . :`.
    BadCharacter,
    /// `iqn.` is not followed by a `yyyy-mm` date with month 01–12 and a `.`.
    BadDate,
    /// The reversed domain name after the date is missing or has an empty
    /// label (`iqn.2024-01.:x`, `iqn.2024-01.org..x`).
    BadNamingAuthority,
    /// `eui.` is not followed by exactly 16 hex digits (§3.2.6.3.2).
    BadEui,
    /// `naa.` is not followed by 16 or 32 hex digits (RFC 3980).
    BadNaa,
}

impl fmt::Display for IscsiNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IscsiNameError::Empty => "empty iSCSI name",
            IscsiNameError::TooLong => "longer than 223 bytes (RFC 3720 3.2.6.1)",
            IscsiNameError::UnknownFormat => "does not start with iqn., eui. or naa.",
            IscsiNameError::UpperCase => {
                "contains upper-case letters (iSCSI names are lower case, RFC 3722)"
            }
            IscsiNameError::BadCharacter => "contains a character other than a-z 0-9 - . :",
            IscsiNameError::BadDate => "iqn. must be followed by a yyyy-mm date and a dot",
            IscsiNameError::BadNamingAuthority => {
                "the reversed domain name after the date is missing or has an empty label"
            }
            IscsiNameError::BadEui => "eui. must be followed by exactly 16 hex digits",
            IscsiNameError::BadNaa => "naa. must be followed by 16 or 32 hex digits",
        })
    }
}

fn allowed_char(c: u8) -> bool {
    matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b':')
}

/// Checks `name` against RFC 3720 §3.2.6: `iqn.yyyy-mm.reversed.domain[:anything]`,
/// `eui.` + 16 hex digits, or `naa.` + 16/32 hex digits (RFC 3980); at most
/// 223 bytes; lower case; only `a-z 0-9 - . :`.
///
/// `eui.`/`naa.` hex digits are accepted in either case: RFC 3720's own
/// example is `eui.02004567A425678D`.
pub fn validate_iscsi_name(name: &str) -> Result<(), IscsiNameError> {
    if name.is_empty() {
        return Err(IscsiNameError::Empty);
    }
    if name.len() > MAX_ISCSI_NAME_LEN {
        return Err(IscsiNameError::TooLong);
    }
    let (prefix, rest) = name
        .split_at_checked(4)
        .ok_or(IscsiNameError::UnknownFormat)?;
    match prefix {
        "iqn." => validate_iqn(rest),
        "eui." => validate_hex(rest, &[16], IscsiNameError::BadEui),
        "naa." => validate_hex(rest, &[16, 32], IscsiNameError::BadNaa),
        p if ["iqn.", "eui.", "naa."]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(p)) =>
        {
            Err(IscsiNameError::UpperCase)
        }
        _ => Err(IscsiNameError::UnknownFormat),
    }
}

fn validate_hex(digits: &str, lens: &[usize], err: IscsiNameError) -> Result<(), IscsiNameError> {
    if lens.contains(&digits.len()) && digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(err)
    }
}

/// `rest` is everything after `iqn.`.
fn validate_iqn(rest: &str) -> Result<(), IscsiNameError> {
    if rest.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(IscsiNameError::UpperCase);
    }
    if !rest.bytes().all(allowed_char) {
        return Err(IscsiNameError::BadCharacter);
    }
    let (date, rest) = rest.split_at_checked(7).ok_or(IscsiNameError::BadDate)?;
    let [y0, y1, y2, y3, b'-', m0, m1] = date.as_bytes() else {
        return Err(IscsiNameError::BadDate);
    };
    if ![y0, y1, y2, y3, m0, m1].iter().all(|c| c.is_ascii_digit()) {
        return Err(IscsiNameError::BadDate);
    }
    let month = (m0 - b'0') * 10 + (m1 - b'0');
    if !(1..=12).contains(&month) {
        return Err(IscsiNameError::BadDate);
    }
    let authority_and_rest = rest.strip_prefix('.').ok_or(IscsiNameError::BadDate)?;
    let authority = match authority_and_rest.split_once(':') {
        Some((authority, _unique)) => authority,
        None => authority_and_rest,
    };
    if authority.split('.').any(str::is_empty) {
        return Err(IscsiNameError::BadNamingAuthority);
    }
    Ok(())
}

/// Why an initiator-name template did not give a valid iSCSI name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InitiatorIqnError {
    /// The template uses `%hostname%` and the host has no hostname.
    MissingHostname,
    /// A `%word%` other than `%hostname%` and `%mac%`.
    UnknownPlaceholder,
    /// The expanded name breaks an RFC 3720 rule.
    Name(IscsiNameError),
}

impl fmt::Display for InitiatorIqnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitiatorIqnError::MissingHostname => {
                f.write_str("the template uses %hostname% but the host has no hostname")
            }
            InitiatorIqnError::UnknownPlaceholder => {
                f.write_str("unknown placeholder (only %hostname% and %mac% exist)")
            }
            InitiatorIqnError::Name(e) => write!(f, "expanded initiator name: {e}"),
        }
    }
}

/// An expanded initiator IQN.
pub type InitiatorIqn = heapless::String<MAX_ISCSI_NAME_LEN>;

/// Expands an initiator-name template such as
/// `iqn.2007-11.ru.pp.livid:%hostname%-%mac%`: `%mac%` becomes the
/// hex-hyphen MAC (`52-54-00-e2-e0-01`), `%hostname%` the host name in lower
/// case. The result is checked with [`validate_iscsi_name`].
pub fn expand_initiator_iqn(
    template: &str,
    hostname: Option<&str>,
    mac: [u8; 6],
) -> Result<InitiatorIqn, InitiatorIqnError> {
    use fmt::Write as _;
    let too_long = InitiatorIqnError::Name(IscsiNameError::TooLong);
    let mut out = InitiatorIqn::new();
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('%') {
        out.push_str(before).map_err(|()| too_long)?;
        let Some((word, after_word)) = after.split_once('%') else {
            // A lone '%': keep it, validation names the bad character.
            out.push('%').map_err(|()| too_long)?;
            rest = after;
            continue;
        };
        match word {
            "mac" => write!(out, "{}", HexHyp(mac)).map_err(|_| too_long)?,
            "hostname" => {
                let name = hostname.ok_or(InitiatorIqnError::MissingHostname)?;
                for c in name.chars() {
                    for l in c.to_lowercase() {
                        out.push(l).map_err(|()| too_long)?;
                    }
                }
            }
            _ => return Err(InitiatorIqnError::UnknownPlaceholder),
        }
        rest = after_word;
    }
    out.push_str(rest).map_err(|()| too_long)?;
    validate_iscsi_name(&out).map_err(InitiatorIqnError::Name)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xe2, 0xe0, 0x01];

    #[test]
    fn valid_names() {
        for name in [
            "iqn.2024-01.test.e2e:sanboot",
            "iqn.2010-04.org.ipxe:00000000-0000-0000-0000-000000000000",
            "iqn.2007-11.ru.pp.livid:pc1-52-54-00-e2-e0-01",
            "iqn.2001-04.com.example",
            "iqn.1992-01.com.example:storage:diskarrays-sn-a8675309",
            "eui.02004567A425678D",
            "eui.02004567a425678d",
            "naa.52004567ba64678d",
            "naa.62004567ba64678d0123456789abcdef",
        ] {
            assert_eq!(validate_iscsi_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn each_rule_is_named() {
        use IscsiNameError::*;
        let long = {
            let mut s = heapless::String::<300>::new();
            s.push_str("iqn.2024-01.test:").ok();
            while s.len() <= MAX_ISCSI_NAME_LEN {
                s.push('a').ok();
            }
            s
        };
        for (name, want) in [
            ("", Empty),
            (long.as_str(), TooLong),
            ("iqn", UnknownFormat),
            ("foo.2024-01.test:a", UnknownFormat),
            ("IQN.2024-01.test:a", UpperCase),
            ("iqn.2024-01.Test:a", UpperCase),
            ("iqn.2024-01.test:Disk", UpperCase),
            ("iqn.2024-01.test:a_b", BadCharacter),
            ("iqn.2024-01.test:a b", BadCharacter),
            ("iqn.2024-01.test:a\nsanboot x", BadCharacter),
            ("iqn.2024-01.test:é", BadCharacter),
            ("iqn.24-01.test:a", BadDate),
            ("iqn.2024-13.test:a", BadDate),
            ("iqn.2024-00.test:a", BadDate),
            ("iqn.2024-1.test:a", BadDate),
            ("iqn.2024-01", BadDate),
            ("iqn.2024-01:test", BadDate),
            ("iqn.2024-01.:a", BadNamingAuthority),
            ("iqn.2024-01.", BadNamingAuthority),
            ("iqn.2024-01.org..x:a", BadNamingAuthority),
            ("iqn.2024-01.org.:a", BadNamingAuthority),
            ("eui.0200456", BadEui),
            ("eui.02004567a425678g", BadEui),
            ("naa.1234", BadNaa),
        ] {
            assert_eq!(validate_iscsi_name(name), Err(want), "{name:?}");
        }
    }

    #[test]
    fn exactly_223_bytes_is_allowed() {
        let mut s = heapless::String::<300>::new();
        s.push_str("iqn.2024-01.test:").ok();
        while s.len() < MAX_ISCSI_NAME_LEN {
            s.push('a').ok();
        }
        assert_eq!(validate_iscsi_name(&s), Ok(()));
    }

    #[test]
    fn template_expands_hostname_and_mac() {
        let iqn =
            expand_initiator_iqn("iqn.2007-11.ru.pp.livid:%hostname%-%mac%", Some("PC1"), MAC);
        assert_eq!(
            iqn.as_deref(),
            Ok("iqn.2007-11.ru.pp.livid:pc1-52-54-00-e2-e0-01")
        );
    }

    #[test]
    fn template_errors() {
        use InitiatorIqnError::*;
        let t = "iqn.2007-11.ru.pp.livid:%hostname%-%mac%";
        assert_eq!(expand_initiator_iqn(t, None, MAC), Err(MissingHostname));
        assert_eq!(
            expand_initiator_iqn("iqn.2007-11.x:%uuid%", None, MAC),
            Err(UnknownPlaceholder)
        );
        assert_eq!(
            expand_initiator_iqn(t, Some("pc_1"), MAC),
            Err(Name(IscsiNameError::BadCharacter))
        );
        assert_eq!(
            expand_initiator_iqn("iqn.2007-11.x:100%", None, MAC),
            Err(Name(IscsiNameError::BadCharacter))
        );
        let long = [b'a'; 300];
        let long = core::str::from_utf8(&long).unwrap_or_default();
        assert_eq!(
            expand_initiator_iqn("iqn.2007-11.x:%hostname%", Some(long), MAC),
            Err(Name(IscsiNameError::TooLong))
        );
        assert_eq!(
            expand_initiator_iqn("iqn.2007-11.x:%hostname%", Some("a\nsanboot"), MAC),
            Err(Name(IscsiNameError::BadCharacter))
        );
    }
}
