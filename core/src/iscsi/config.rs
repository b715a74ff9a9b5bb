//! Target configuration as the core sees it: borrowed slices, no allocation.
//!
//! The host keeps the owned configuration (e.g. parsed TOML) and builds these
//! views over it; the core never stores them beyond one call.

/// CHAP credentials: a user name and its secret (RFC 1994 / RFC 7143 §12.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChapCredentials<'a> {
    /// CHAP_N.
    pub user: &'a str,
    /// The shared secret.
    pub secret: &'a [u8],
}

/// One initiator's own CHAP credentials on a target, as LIO's per-ACL CHAP:
/// when this initiator logs in, these replace the target's
/// [`TargetConfig::chap`] and [`TargetConfig::mutual_chap`], so one
/// station's secret opens only the targets that list it, and a station
/// presenting another's initiator name must prove that station's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitiatorChap<'a> {
    /// InitiatorName these credentials belong to (compared case-insensitively).
    pub initiator: &'a str,
    /// What the initiator must prove (one-way CHAP).
    pub chap: ChapCredentials<'a>,
    /// What the target proves when this initiator asks for mutual CHAP.
    pub mutual_chap: Option<ChapCredentials<'a>>,
}

/// How a target answers the initiator's HeaderDigest / DataDigest offers
/// (RFC 7143 §6.2: the responder picks the first offered value it supports
/// *and is allowed to use*).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DigestPolicy {
    /// Never CRC32C (an offer of CRC32C only is answered `Reject`).
    Never,
    /// The initiator's order decides (`None,CRC32C` → None).
    #[default]
    Allowed,
    /// CRC32C whenever the initiator lists it (`None,CRC32C` → CRC32C).
    Preferred,
    /// CRC32C for both digests: a login that offers (or ends) without it is
    /// refused with Initiator Error.
    Required,
}

/// One iSCSI target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetConfig<'a> {
    /// TargetName (an IQN).
    pub name: &'a str,
    /// Initiator names allowed to log in; empty means any initiator.
    pub initiators: &'a [&'a str],
    /// Credentials an initiator must prove (one-way CHAP). `None`: AuthMethod=None.
    pub chap: Option<ChapCredentials<'a>>,
    /// The target's own credentials, sent when the initiator asks for mutual CHAP.
    pub mutual_chap: Option<ChapCredentials<'a>>,
    /// Per-initiator credentials: an initiator listed here proves its own
    /// secret instead of [`TargetConfig::chap`] (see [`TargetConfig::chap_for`]).
    /// Its length is the caller's: the lookup is a scan, no table is kept.
    pub initiator_chap: &'a [InitiatorChap<'a>],
    /// LUN numbers of this target (flat LUN numbers, as in REPORT LUNS).
    pub luns: &'a [u64],
    /// Digest policy of this target (overrides [`TargetLimits::digest`]).
    pub digest: DigestPolicy,
}

impl<'a> TargetConfig<'a> {
    /// Is `initiator` on the allow-list (or is the list empty)?
    pub fn allows(&self, initiator: &str) -> bool {
        self.initiators.is_empty()
            || self
                .initiators
                .iter()
                .any(|i| i.eq_ignore_ascii_case(initiator))
    }

    /// The CHAP credentials `initiator` must prove on this target, and the
    /// ones the target answers a mutual challenge with: the initiator's own
    /// entry in [`TargetConfig::initiator_chap`] if it has one (the whole
    /// entry: its mutual credentials too), else the target's.
    pub fn chap_for(
        &self,
        initiator: &str,
    ) -> (Option<ChapCredentials<'a>>, Option<ChapCredentials<'a>>) {
        match self
            .initiator_chap
            .iter()
            .find(|c| c.initiator.eq_ignore_ascii_case(initiator))
        {
            Some(c) => (Some(c.chap), c.mutual_chap),
            None => (self.chap, self.mutual_chap),
        }
    }

    /// Does this target have LUN `lun`?
    pub fn has_lun(&self, lun: u64) -> bool {
        self.luns.contains(&lun)
    }
}

/// What a connection needs to know about the server's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets<'a> {
    /// All targets served on this portal.
    pub targets: &'a [TargetConfig<'a>],
    /// TargetAddress value for SendTargets, `<ip>:<port>` (IPv6 in brackets).
    pub portal: &'a str,
    /// TargetPortalGroupTag of this portal (sent in the first login response).
    pub portal_group_tag: u16,
}

impl<'a> Targets<'a> {
    /// Look a target up by name (iSCSI names compare case-insensitively, RFC 3722).
    pub fn find(&self, name: &str) -> Option<(usize, &TargetConfig<'a>)> {
        self.targets
            .iter()
            .enumerate()
            .find(|(_, t)| t.name.eq_ignore_ascii_case(name))
    }
}

/// Limits and preferences of this target (the values it offers in login).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetLimits {
    /// Our MaxRecvDataSegmentLength: the largest data segment we accept. It is
    /// also capped by the connection's receive capacity.
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength we offer (the negotiated value is the minimum).
    pub max_burst_length: u32,
    /// FirstBurstLength we offer.
    pub first_burst_length: u32,
    /// MaxOutstandingR2T we offer.
    pub max_outstanding_r2t: u16,
    /// ImmediateData we offer (AND function).
    pub immediate_data: bool,
    /// InitialR2T we offer (OR function).
    pub initial_r2t: bool,
    /// DefaultTime2Wait we offer (max function).
    pub default_time2wait: u16,
    /// DefaultTime2Retain we offer (min function).
    pub default_time2retain: u16,
    /// A login that has not reached full feature phase by then is dropped (ms).
    pub login_timeout_ms: u64,
    /// Offer CRC32C digests when the initiator lists them.
    pub allow_digests: bool,
    /// Digest policy for sessions without a target (discovery); a normal
    /// session uses its target's [`TargetConfig::digest`].
    pub digest: DigestPolicy,
    /// Dead-peer detection: after this long without a PDU from the
    /// initiator, a full-feature connection sends a NOP-In ping (RFC 7143
    /// §11.19, a valid TTT and ITT 0xffffffff). 0 sends no pings.
    ///
    /// Default 15 s (LIO's `nopin_timeout`): Linux (open-iscsi) and Windows
    /// answer in milliseconds, so an idle but live initiator costs one
    /// 48-byte exchange per interval. iPXE never answers a ping (it ignores
    /// NOP-Ins with a TTT): an iPXE session idle for longer than interval +
    /// timeout is closed, and iPXE logs in again on its next disk access.
    pub nop_in_interval_ms: u64,
    /// Dead-peer detection: a ping not answered within this time (no PDU
    /// at all arrived) closes the connection with
    /// [`super::CloseReason::PeerTimeout`]. Default 30 s (LIO's
    /// `nopin_response_timeout`), generous for an initiator on a loaded
    /// machine; with the interval, a vanished station is reaped within 45 s.
    pub nop_in_timeout_ms: u64,
}

impl Default for TargetLimits {
    fn default() -> Self {
        TargetLimits {
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            max_outstanding_r2t: 8,
            immediate_data: true,
            initial_r2t: false,
            default_time2wait: 2,
            default_time2retain: 0,
            login_timeout_ms: 15_000,
            allow_digests: true,
            digest: DigestPolicy::Allowed,
            nop_in_interval_ms: 15_000,
            nop_in_timeout_ms: 30_000,
        }
    }
}
