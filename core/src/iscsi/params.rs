//! Operational parameter negotiation (RFC 7143 §13): one function per key
//! kind, applying the RFC's result function and writing our answer.

use super::config::{DigestPolicy, TargetLimits};
use super::text::{fmt_u64, parse_number, Overflow, TextWriter};

/// Negotiated (or default) session and connection parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionParams {
    /// HeaderDigest=CRC32C.
    pub header_digest: bool,
    /// DataDigest=CRC32C.
    pub data_digest: bool,
    /// MaxConnections.
    pub max_connections: u16,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
    /// The initiator's MaxRecvDataSegmentLength: the largest data segment we
    /// may send (caps each Data-In).
    pub initiator_mrdsl: u32,
    /// Our MaxRecvDataSegmentLength (declared to the initiator).
    pub target_mrdsl: u32,
    /// MaxBurstLength.
    pub max_burst_length: u32,
    /// FirstBurstLength.
    pub first_burst_length: u32,
    /// DefaultTime2Wait.
    pub default_time2wait: u16,
    /// DefaultTime2Retain.
    pub default_time2retain: u16,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u16,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel.
    pub error_recovery_level: u8,
}

impl Default for SessionParams {
    /// The RFC 7143 defaults (what applies when a key is not negotiated).
    fn default() -> Self {
        SessionParams {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            initiator_mrdsl: 8192,
            target_mrdsl: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

impl SessionParams {
    /// Enforce cross-key rules after a negotiation stage.
    pub fn finish(&mut self) {
        if self.first_burst_length > self.max_burst_length {
            self.first_burst_length = self.max_burst_length;
        }
    }
}

/// What happened to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KeyOutcome {
    /// Answered (or ignored, for declarations that need no answer).
    Handled,
    /// Not an operational key: the caller handles it (login/security keys).
    NotOperational,
    /// The offer is unacceptable under the target's policy (a required
    /// digest missing): the login must fail.
    Refused,
}

fn yes_no(v: bool) -> &'static str {
    if v {
        "Yes"
    } else {
        "No"
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn num_in(v: &str, lo: u64, hi: u64) -> Option<u64> {
    parse_number(v).filter(|n| (lo..=hi).contains(n))
}

/// Keys that are meaningless in a discovery session (RFC 7143 §13 "Irrelevant when: SessionType=Discovery").
fn irrelevant_in_discovery(key: &str) -> bool {
    matches!(
        key,
        "MaxConnections"
            | "InitialR2T"
            | "ImmediateData"
            | "MaxBurstLength"
            | "FirstBurstLength"
            | "MaxOutstandingR2T"
            | "DataPDUInOrder"
            | "DataSequenceInOrder"
            | "DefaultTime2Wait"
            | "DefaultTime2Retain"
    )
}

/// Negotiate one operational key offered by the initiator, update `p` and
/// append our answer to `out`.
pub fn negotiate(
    key: &str,
    value: &str,
    limits: &TargetLimits,
    discovery: bool,
    p: &mut SessionParams,
    out: &mut TextWriter<'_>,
) -> Result<KeyOutcome, Overflow> {
    let mut num = [0u8; 20];
    if discovery && irrelevant_in_discovery(key) {
        out.push(key, "Irrelevant")?;
        return Ok(KeyOutcome::Handled);
    }
    match key {
        "HeaderDigest" | "DataDigest" => {
            let crc = limits.allow_digests && value.split(',').any(|v| v == "CRC32C");
            let none = value.split(',').any(|v| v == "None");
            let chosen = match limits.digest {
                DigestPolicy::Never => none.then_some(false),
                // List: the first of the initiator's values that we support.
                DigestPolicy::Allowed => value.split(',').find_map(|v| match v {
                    "CRC32C" if limits.allow_digests => Some(true),
                    "None" => Some(false),
                    _ => None,
                }),
                DigestPolicy::Preferred => {
                    if crc {
                        Some(true)
                    } else {
                        none.then_some(false)
                    }
                }
                DigestPolicy::Required => {
                    if !crc {
                        return Ok(KeyOutcome::Refused);
                    }
                    Some(true)
                }
            };
            match chosen {
                Some(c) => {
                    if key == "HeaderDigest" {
                        p.header_digest = c;
                    } else {
                        p.data_digest = c;
                    }
                    out.push(key, if c { "CRC32C" } else { "None" })?;
                }
                None => out.push(key, "Reject")?,
            }
        }
        "MaxConnections" => match num_in(value, 1, 65535) {
            // We run one connection per session.
            Some(_) => {
                p.max_connections = 1;
                out.push(key, "1")?;
            }
            None => out.push(key, "Reject")?,
        },
        "InitialR2T" => match parse_bool(value) {
            Some(v) => {
                p.initial_r2t = v || limits.initial_r2t;
                out.push(key, yes_no(p.initial_r2t))?;
            }
            None => out.push(key, "Reject")?,
        },
        "ImmediateData" => match parse_bool(value) {
            Some(v) => {
                p.immediate_data = v && limits.immediate_data;
                out.push(key, yes_no(p.immediate_data))?;
            }
            None => out.push(key, "Reject")?,
        },
        "DataPDUInOrder" | "DataSequenceInOrder" => match parse_bool(value) {
            // OR with our Yes: the result is always Yes, so Data-Out arrives in order.
            Some(_) => {
                if key == "DataPDUInOrder" {
                    p.data_pdu_in_order = true;
                } else {
                    p.data_sequence_in_order = true;
                }
                out.push(key, "Yes")?;
            }
            None => out.push(key, "Reject")?,
        },
        "MaxRecvDataSegmentLength" => match num_in(value, 512, 16_777_215) {
            // Declarative: the initiator's receive limit; we answer nothing
            // here (our own value is declared once by the login machine).
            Some(v) => p.initiator_mrdsl = v as u32,
            None => out.push(key, "Reject")?,
        },
        "MaxBurstLength" | "FirstBurstLength" => match num_in(value, 512, 16_777_215) {
            Some(v) => {
                let ours = if key == "MaxBurstLength" {
                    limits.max_burst_length
                } else {
                    limits.first_burst_length
                };
                let r = (v as u32).min(ours.max(512));
                if key == "MaxBurstLength" {
                    p.max_burst_length = r;
                } else {
                    p.first_burst_length = r;
                }
                out.push(key, fmt_u64(u64::from(r), &mut num))?;
            }
            None => out.push(key, "Reject")?,
        },
        "DefaultTime2Wait" => match num_in(value, 0, 3600) {
            Some(v) => {
                p.default_time2wait = (v as u16).max(limits.default_time2wait);
                out.push(key, fmt_u64(u64::from(p.default_time2wait), &mut num))?;
            }
            None => out.push(key, "Reject")?,
        },
        "DefaultTime2Retain" => match num_in(value, 0, 3600) {
            Some(v) => {
                p.default_time2retain = (v as u16).min(limits.default_time2retain);
                out.push(key, fmt_u64(u64::from(p.default_time2retain), &mut num))?;
            }
            None => out.push(key, "Reject")?,
        },
        "MaxOutstandingR2T" => match num_in(value, 1, 65535) {
            Some(v) => {
                p.max_outstanding_r2t = (v as u16).min(limits.max_outstanding_r2t.max(1));
                out.push(key, fmt_u64(u64::from(p.max_outstanding_r2t), &mut num))?;
            }
            None => out.push(key, "Reject")?,
        },
        "ErrorRecoveryLevel" => match num_in(value, 0, 2) {
            // We implement level 0 only; the result function is the minimum.
            Some(_) => {
                p.error_recovery_level = 0;
                out.push(key, "0")?;
            }
            None => out.push(key, "Reject")?,
        },
        "IFMarker" | "OFMarker" => out.push(key, "No")?,
        "IFMarkInt" | "OFMarkInt" => out.push(key, "Irrelevant")?,
        "iSCSIProtocolLevel" => match num_in(value, 0, 31) {
            Some(v) => out.push(key, if v >= 1 { "1" } else { "0" })?,
            None => out.push(key, "Reject")?,
        },
        "TaskReporting" => out.push(key, "RFC3720")?,
        _ => return Ok(KeyOutcome::NotOperational),
    }
    Ok(KeyOutcome::Handled)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::super::text::pairs;
    use super::*;

    fn run(
        keys: &[(&str, &str)],
        limits: &TargetLimits,
    ) -> (SessionParams, heapless::Vec<u8, 1024>) {
        let mut p = SessionParams::default();
        let mut buf = [0u8; 1024];
        let mut w = TextWriter::new(&mut buf);
        for (k, v) in keys {
            assert_eq!(
                negotiate(k, v, limits, false, &mut p, &mut w),
                Ok(KeyOutcome::Handled)
            );
        }
        p.finish();
        let n = w.len();
        (p, heapless::Vec::from_slice(&buf[..n]).unwrap())
    }

    fn answer<'a>(text: &'a [u8], key: &str) -> Option<&'a str> {
        pairs(text)
            .filter_map(Result::ok)
            .find(|p| p.key == key)
            .map(|p| p.value)
    }

    #[test]
    fn digest_policy_decides_libiscsis_none_crc32c_offer() {
        let offer = [("HeaderDigest", "None,CRC32C"), ("DataDigest", "None")];
        let with = |digest| TargetLimits {
            digest,
            ..TargetLimits::default()
        };
        // Allowed: the initiator's order (None first).
        let (p, _) = run(&offer, &with(DigestPolicy::Allowed));
        assert!(!p.header_digest);
        // Preferred: CRC32C when listed, None otherwise.
        let (p, text) = run(&offer, &with(DigestPolicy::Preferred));
        assert!(p.header_digest && !p.data_digest);
        assert_eq!(answer(&text, "HeaderDigest"), Some("CRC32C"));
        assert_eq!(answer(&text, "DataDigest"), Some("None"));
        // Never: None even when CRC32C comes first; CRC32C alone is Reject.
        let (p, text) = run(
            &[("HeaderDigest", "CRC32C,None"), ("DataDigest", "CRC32C")],
            &with(DigestPolicy::Never),
        );
        assert!(!p.header_digest && !p.data_digest);
        assert_eq!(answer(&text, "DataDigest"), Some("Reject"));
        // Required: CRC32C, and an offer without it refuses the login.
        let l = with(DigestPolicy::Required);
        let (p, _) = run(&[("HeaderDigest", "None,CRC32C")], &l);
        assert!(p.header_digest);
        let mut q = SessionParams::default();
        let mut buf = [0u8; 64];
        let mut w = TextWriter::new(&mut buf);
        assert_eq!(
            negotiate("DataDigest", "None", &l, false, &mut q, &mut w),
            Ok(KeyOutcome::Refused)
        );
    }

    #[test]
    fn ipxe_explicit_defaults() {
        let keys = [
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxConnections", "1"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "No"),
            ("MaxRecvDataSegmentLength", "8192"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("DefaultTime2Wait", "0"),
            ("DefaultTime2Retain", "0"),
            ("MaxOutstandingR2T", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("ErrorRecoveryLevel", "0"),
        ];
        let (p, text) = run(&keys, &TargetLimits::default());
        assert!(p.initial_r2t);
        assert!(!p.immediate_data);
        assert_eq!(p.initiator_mrdsl, 8192);
        assert_eq!(p.max_burst_length, 262_144);
        assert_eq!(p.first_burst_length, 65_536);
        assert_eq!(p.max_outstanding_r2t, 1);
        assert_eq!(answer(&text, "DefaultTime2Wait"), Some("2"));
        assert_eq!(answer(&text, "ImmediateData"), Some("No"));
        assert_eq!(answer(&text, "MaxRecvDataSegmentLength"), None);
    }

    #[test]
    fn result_functions() {
        let limits = TargetLimits::default();
        let (p, text) = run(
            &[
                ("HeaderDigest", "CRC32C,None"),
                ("DataDigest", "None,CRC32C"),
                ("MaxBurstLength", "16776192"),
                ("FirstBurstLength", "16776192"),
                ("InitialR2T", "No"),
                ("ImmediateData", "Yes"),
                ("MaxOutstandingR2T", "64"),
                ("ErrorRecoveryLevel", "2"),
                ("MaxConnections", "8"),
                ("OFMarker", "Yes"),
                ("IFMarkInt", "2048"),
            ],
            &limits,
        );
        assert!(p.header_digest && !p.data_digest);
        assert_eq!(p.max_burst_length, limits.max_burst_length);
        assert!(p.first_burst_length <= p.max_burst_length);
        assert!(!p.initial_r2t && p.immediate_data);
        assert_eq!(p.max_outstanding_r2t, limits.max_outstanding_r2t);
        assert_eq!(answer(&text, "ErrorRecoveryLevel"), Some("0"));
        assert_eq!(answer(&text, "MaxConnections"), Some("1"));
        assert_eq!(answer(&text, "OFMarker"), Some("No"));
        assert_eq!(answer(&text, "IFMarkInt"), Some("Irrelevant"));
        assert_eq!(answer(&text, "HeaderDigest"), Some("CRC32C"));
        assert_eq!(answer(&text, "DataDigest"), Some("None"));
    }

    #[test]
    fn bad_values_rejected_and_unknown_keys_left_to_caller() {
        let mut p = SessionParams::default();
        let mut buf = [0u8; 256];
        let mut w = TextWriter::new(&mut buf);
        let l = TargetLimits::default();
        negotiate("MaxBurstLength", "100", &l, false, &mut p, &mut w).unwrap();
        negotiate("InitialR2T", "Maybe", &l, false, &mut p, &mut w).unwrap();
        negotiate("HeaderDigest", "MD5", &l, false, &mut p, &mut w).unwrap();
        assert_eq!(
            negotiate("X-com.example", "1", &l, false, &mut p, &mut w),
            Ok(KeyOutcome::NotOperational)
        );
        let n = w.len();
        assert_eq!(
            &buf[..n],
            b"MaxBurstLength=Reject\0InitialR2T=Reject\0HeaderDigest=Reject\0"
        );
        assert_eq!(p, SessionParams::default());
    }

    #[test]
    fn discovery_marks_session_keys_irrelevant() {
        let mut p = SessionParams::default();
        let mut buf = [0u8; 64];
        let mut w = TextWriter::new(&mut buf);
        negotiate(
            "InitialR2T",
            "Yes",
            &TargetLimits::default(),
            true,
            &mut p,
            &mut w,
        )
        .unwrap();
        let n = w.len();
        assert_eq!(&buf[..n], b"InitialR2T=Irrelevant\0");
    }
}
