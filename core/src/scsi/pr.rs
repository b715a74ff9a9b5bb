//! Persistent reservations (SPC-4 §5.12): PERSISTENT RESERVE IN / OUT and
//! the access rules they impose on other commands.

use super::cdb::{opcode as op, Bytes, Writer};
use super::sense::asc;
use super::status::{bad_cdb, bad_param, done, illegal, ua, CmdResult, Fail};
use super::{Nexus, Step};

/// Longest iSCSI name (RFC 7143 §4.2.7.1: 223 bytes).
pub(crate) const NAME_MAX: usize = 223;

/// PERSISTENT RESERVE IN service actions.
mod sa_in {
    pub const READ_KEYS: u8 = 0x00;
    pub const READ_RESERVATION: u8 = 0x01;
    pub const REPORT_CAPABILITIES: u8 = 0x02;
    pub const READ_FULL_STATUS: u8 = 0x03;
}

/// PERSISTENT RESERVE OUT service actions.
mod sa_out {
    pub const REGISTER: u8 = 0x00;
    pub const RESERVE: u8 = 0x01;
    pub const RELEASE: u8 = 0x02;
    pub const CLEAR: u8 = 0x03;
    pub const PREEMPT: u8 = 0x04;
    pub const PREEMPT_AND_ABORT: u8 = 0x05;
    pub const REGISTER_AND_IGNORE: u8 = 0x06;
}

/// Reservation TYPE codes (SPC-4 table 176).
mod kind {
    pub const WRITE_EXCLUSIVE: u8 = 0x1;
    pub const EXCLUSIVE_ACCESS: u8 = 0x3;
    pub const WRITE_EXCLUSIVE_RO: u8 = 0x5;
    pub const EXCLUSIVE_ACCESS_RO: u8 = 0x6;
    pub const WRITE_EXCLUSIVE_AR: u8 = 0x7;
    pub const EXCLUSIVE_ACCESS_AR: u8 = 0x8;
}

fn valid_type(t: u8) -> bool {
    matches!(
        t,
        kind::WRITE_EXCLUSIVE
            | kind::EXCLUSIVE_ACCESS
            | kind::WRITE_EXCLUSIVE_RO
            | kind::EXCLUSIVE_ACCESS_RO
            | kind::WRITE_EXCLUSIVE_AR
            | kind::EXCLUSIVE_ACCESS_AR
    )
}

/// Registrants-only or all-registrants: every registrant may access.
fn registrants_share(t: u8) -> bool {
    matches!(
        t,
        kind::WRITE_EXCLUSIVE_RO
            | kind::EXCLUSIVE_ACCESS_RO
            | kind::WRITE_EXCLUSIVE_AR
            | kind::EXCLUSIVE_ACCESS_AR
    )
}

fn all_registrants(t: u8) -> bool {
    matches!(t, kind::WRITE_EXCLUSIVE_AR | kind::EXCLUSIVE_ACCESS_AR)
}

fn exclusive_access(t: u8) -> bool {
    matches!(
        t,
        kind::EXCLUSIVE_ACCESS | kind::EXCLUSIVE_ACCESS_RO | kind::EXCLUSIVE_ACCESS_AR
    )
}

/// One registered I_T nexus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registrant {
    pub key: u64,
    pub name: heapless::Vec<u8, NAME_MAX>,
    pub isid: [u8; 6],
    /// Nexus slot last seen for this initiator port (for unit attentions).
    pub index: u16,
}

impl Registrant {
    pub fn is(&self, nexus: &Nexus<'_>) -> bool {
        self.isid == nexus.isid && self.name.as_slice() == nexus.initiator.as_bytes()
    }
}

/// The persistent reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// Initiator port of the holder (unused for all-registrants types).
    pub name: heapless::Vec<u8, NAME_MAX>,
    pub isid: [u8; 6],
    pub kind: u8,
}

/// Registrations and reservation of one logical unit.
#[derive(Debug, Clone)]
pub(crate) struct Reservations<const R: usize> {
    pub regs: heapless::Vec<Registrant, R>,
    pub generation: u32,
    pub held: Option<Held>,
}

/// How a command touches the medium, for the access rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Always,
    Read,
    Write,
}

fn access_of(cdb: Bytes<'_>) -> Access {
    match cdb.u8(0) {
        op::READ_6
        | op::READ_10
        | op::READ_12
        | op::READ_16
        | op::VERIFY_10
        | op::VERIFY_12
        | op::VERIFY_16
        | op::PRE_FETCH_10
        | op::PRE_FETCH_16
        | op::MODE_SENSE_6
        | op::MODE_SENSE_10
        | op::READ_DEFECT_DATA_10
        | op::READ_DEFECT_DATA_12 => Access::Read,
        op::SERVICE_ACTION_IN_16 if cdb.u8(1) & 0x1f == op::SAI_GET_LBA_STATUS => Access::Read,
        op::WRITE_6
        | op::WRITE_10
        | op::WRITE_12
        | op::WRITE_16
        | op::WRITE_AND_VERIFY_10
        | op::WRITE_AND_VERIFY_12
        | op::WRITE_AND_VERIFY_16
        | op::WRITE_SAME_10
        | op::WRITE_SAME_16
        | op::UNMAP
        | op::COMPARE_AND_WRITE
        | op::ORWRITE_16
        | op::EXTENDED_COPY
        | op::SANITIZE
        | op::MODE_SELECT_6
        | op::MODE_SELECT_10
        | op::SYNCHRONIZE_CACHE_10
        | op::SYNCHRONIZE_CACHE_16
        | op::START_STOP_UNIT
        | op::RESERVE_6
        | op::RESERVE_10 => Access::Write,
        op::PREVENT_ALLOW_MEDIUM_REMOVAL if cdb.u8(4) & 3 != 0 => Access::Write,
        _ => Access::Always,
    }
}

impl<const R: usize> Reservations<R> {
    pub const fn new() -> Self {
        Reservations {
            regs: heapless::Vec::new(),
            generation: 0,
            held: None,
        }
    }

    /// Any registration or reservation exists (SPC-2 RESERVE conflicts).
    pub fn active(&self) -> bool {
        !self.regs.is_empty() || self.held.is_some()
    }

    fn find(&self, nexus: &Nexus<'_>) -> Option<usize> {
        self.regs.iter().position(|r| r.is(nexus))
    }

    /// Whether `nexus` holds the reservation (any registrant does for the
    /// all-registrants types).
    fn is_holder(&self, nexus: &Nexus<'_>) -> bool {
        match &self.held {
            Some(h) if all_registrants(h.kind) => self.find(nexus).is_some(),
            Some(h) => h.isid == nexus.isid && h.name.as_slice() == nexus.initiator.as_bytes(),
            None => false,
        }
    }

    /// The key shown by READ RESERVATION / READ FULL STATUS for the holder.
    fn holder_key(&self) -> u64 {
        match &self.held {
            Some(h) if !all_registrants(h.kind) => self
                .regs
                .iter()
                .find(|r| r.isid == h.isid && r.name == h.name)
                .map(|r| r.key)
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// SPC-4 §5.12.1 access check for a command from `nexus`.
    pub fn check(&self, nexus: &Nexus<'_>, cdb: Bytes<'_>) -> CmdResult<()> {
        let Some(h) = &self.held else {
            return Ok(());
        };
        let access = access_of(cdb);
        if access == Access::Always || self.is_holder(nexus) {
            return Ok(());
        }
        if registrants_share(h.kind) && self.find(nexus).is_some() {
            return Ok(());
        }
        match access {
            Access::Read if !exclusive_access(h.kind) => Ok(()),
            _ => Err(Fail::Conflict),
        }
    }
}

/// The PR commands themselves; `ua_slots` is the logical unit's unit-attention
/// table, where preempted and released registrants hear about it.
impl<const R: usize> Reservations<R> {
    pub(crate) fn persistent_reserve_in(&self, cdb: Bytes<'_>, buf: &mut [u8]) -> CmdResult {
        let sa = cdb.u8(1) & 0x1f;
        let alloc = u32::from(cdb.u16(7));
        let pr = self;
        let mut w = Writer::new(buf);
        match sa {
            sa_in::READ_KEYS => {
                w.u32(pr.generation);
                w.u32(u32::try_from(pr.regs.len().saturating_mul(8)).unwrap_or(0));
                for r in pr.regs.iter() {
                    w.u64(r.key);
                }
            }
            sa_in::READ_RESERVATION => {
                w.u32(pr.generation);
                match &pr.held {
                    Some(h) => {
                        w.u32(16);
                        w.u64(pr.holder_key());
                        w.zeros(4);
                        w.u8(0);
                        w.u8(h.kind & 0x0f); // SCOPE 0h: logical unit
                        w.zeros(2);
                    }
                    None => w.u32(0),
                }
            }
            sa_in::REPORT_CAPABILITIES => {
                w.u16(8);
                w.u8(0x10); // CRH: RESERVE/RELEASE handled per SPC-4 §5.12.3
                w.u8(0x80); // TMV: the type mask below is valid
                w.u8(0xea); // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
                w.u8(0x01); // EX_AC_AR
                w.zeros(2);
            }
            sa_in::READ_FULL_STATUS => {
                w.u32(pr.generation);
                let len_at = w.pos();
                w.u32(0);
                for r in pr.regs.iter() {
                    let holder = match &pr.held {
                        Some(h) if all_registrants(h.kind) => true,
                        Some(h) => h.isid == r.isid && h.name == r.name,
                        None => false,
                    };
                    w.u64(r.key);
                    w.zeros(4);
                    w.u8(u8::from(holder)); // R_HOLDER
                    w.u8(match (&pr.held, holder) {
                        (Some(h), true) => h.kind & 0x0f,
                        _ => 0,
                    });
                    w.zeros(4);
                    w.u16(1); // RELATIVE TARGET PORT IDENTIFIER
                    let tid_len = transport_id_len(r);
                    w.u32(tid_len as u32);
                    transport_id(&mut w, r, tid_len);
                }
                let len = u32::try_from(w.pos().saturating_sub(8)).unwrap_or(0);
                w.patch(len_at, &len.to_be_bytes());
            }
            _ => return Err(bad_cdb(1, Some(4))),
        }
        Ok(done(w.data_len(alloc)))
    }

    pub(crate) fn persistent_reserve_out(cdb: Bytes<'_>) -> CmdResult {
        let sa = cdb.u8(1) & 0x1f;
        if !matches!(sa, 0..=6) {
            return Err(bad_cdb(1, Some(4)));
        }
        let len = cdb.u32(5);
        if len != 24 {
            return Err(illegal(asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        Ok(Step::DataOut { len })
    }

    /// The parameter list of PERSISTENT RESERVE OUT; `ua_slots` and
    /// `aborts` are the LUN's per-nexus unit attentions and abort epochs.
    pub(crate) fn persistent_reserve_out_data(
        &mut self,
        ua_slots: &mut [u16],
        aborts: &mut [u32],
        nexus: &Nexus<'_>,
        cdb: Bytes<'_>,
        data: &[u8],
    ) -> CmdResult {
        let sa = cdb.u8(1) & 0x1f;
        let scope = cdb.u8(2) >> 4;
        let kind = cdb.u8(2) & 0x0f;
        if data.len() < 24 {
            return Err(illegal(asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        let p = Bytes(data);
        let rk = p.u64(0);
        let sark = p.u64(8);
        let flags = p.u8(20);
        // SPEC_I_PT, ALL_TG_PT and APTPL are not supported (capabilities say so).
        if flags & 0x0d != 0 {
            return Err(bad_param(20));
        }
        let me = self.find(nexus);
        if let Some(i) = me {
            if let Some(r) = self.regs.get_mut(i) {
                r.index = nexus.index;
            }
        }
        let my_key = me.and_then(|i| self.regs.get(i)).map(|r| r.key);
        match sa {
            sa_out::REGISTER | sa_out::REGISTER_AND_IGNORE => {
                if sa == sa_out::REGISTER {
                    match my_key {
                        None if rk != 0 => return Err(Fail::Conflict),
                        Some(k) if k != rk => return Err(Fail::Conflict),
                        _ => {}
                    }
                }
                match (me, sark) {
                    (None, 0) => {}
                    (None, key) => {
                        let mut name = heapless::Vec::new();
                        name.extend_from_slice(nexus.initiator.as_bytes())
                            .map_err(|_| bad_param(0))?;
                        let reg = Registrant {
                            key,
                            name,
                            isid: nexus.isid,
                            index: nexus.index,
                        };
                        self.regs
                            .push(reg)
                            .map_err(|_| illegal(asc::INSUFFICIENT_REGISTRATION_RESOURCES))?;
                    }
                    (Some(i), 0) => self.unregister(ua_slots, i, nexus.index),
                    (Some(i), key) => {
                        if let Some(r) = self.regs.get_mut(i) {
                            r.key = key;
                        }
                    }
                }
                self.generation = self.generation.wrapping_add(1);
            }
            sa_out::RESERVE => {
                if my_key != Some(rk) {
                    return Err(Fail::Conflict);
                }
                if scope != 0 {
                    return Err(bad_cdb(2, Some(7)));
                }
                if !valid_type(kind) {
                    return Err(bad_cdb(2, Some(3)));
                }
                match &self.held {
                    Some(h) if self.is_holder(nexus) && h.kind == kind => {}
                    Some(_) => return Err(Fail::Conflict),
                    None => {
                        let mut name = heapless::Vec::new();
                        let _ = name.extend_from_slice(nexus.initiator.as_bytes());
                        self.held = Some(Held {
                            name,
                            isid: nexus.isid,
                            kind,
                        });
                    }
                }
            }
            sa_out::RELEASE => {
                if my_key != Some(rk) {
                    return Err(Fail::Conflict);
                }
                let Some(h) = &self.held else {
                    return Ok(done(0));
                };
                if !self.is_holder(nexus) {
                    return Ok(done(0));
                }
                if scope != 0 || h.kind != kind {
                    // INVALID RELEASE OF PERSISTENT RESERVATION
                    return Err(illegal((0x26, 0x04)));
                }
                self.release(ua_slots, Some(nexus.index));
            }
            sa_out::CLEAR => {
                if my_key != Some(rk) {
                    return Err(Fail::Conflict);
                }
                let others: heapless::Vec<u16, R> = self
                    .regs
                    .iter()
                    .filter(|r| !r.is(nexus))
                    .map(|r| r.index)
                    .collect();
                for i in others {
                    ua::raise(ua_slots, i, ua::RESERVATIONS_PREEMPTED);
                }
                self.regs.clear();
                self.held = None;
                self.generation = self.generation.wrapping_add(1);
            }
            sa_out::PREEMPT | sa_out::PREEMPT_AND_ABORT => {
                if my_key != Some(rk) {
                    return Err(Fail::Conflict);
                }
                let abort = sa == sa_out::PREEMPT_AND_ABORT;
                self.preempt(ua_slots, aborts, nexus, sark, scope, kind, abort)?;
                self.generation = self.generation.wrapping_add(1);
            }
            _ => return Err(bad_cdb(1, Some(4))),
        }
        Ok(done(0))
    }

    /// Releases the persistent reservation; registrants other than
    /// `releaser` hear about it for the shared types (SPC-4 §5.12.11.2.2).
    fn release(&mut self, ua_slots: &mut [u16], releaser: Option<u16>) {
        let Some(h) = self.held.take() else {
            return;
        };
        if registrants_share(h.kind) {
            let others: heapless::Vec<u16, R> = self
                .regs
                .iter()
                .map(|r| r.index)
                .filter(|&i| Some(i) != releaser)
                .collect();
            for i in others {
                ua::raise(ua_slots, i, ua::RESERVATIONS_RELEASED);
            }
        }
    }

    /// Removes registration `i` (REGISTER with SARK 0), releasing the
    /// reservation if it was the holder's.
    fn unregister(&mut self, ua_slots: &mut [u16], i: usize, index: u16) {
        if i >= self.regs.len() {
            return;
        }
        let r = self.regs.swap_remove(i);
        let holder = match &self.held {
            Some(h) if all_registrants(h.kind) => self.regs.is_empty(),
            Some(h) => h.isid == r.isid && h.name == r.name,
            None => false,
        };
        if holder {
            self.release(ua_slots, Some(index));
        }
    }

    /// PREEMPT (and with `abort`, PREEMPT AND ABORT: the preempted nexuses'
    /// tasks are aborted, their `aborts` epochs move; see
    /// [`super::Lun::abort_epoch`]).
    #[allow(clippy::too_many_arguments)]
    fn preempt(
        &mut self,
        ua_slots: &mut [u16],
        aborts: &mut [u32],
        nexus: &Nexus<'_>,
        sark: u64,
        scope: u8,
        kind: u8,
        abort: bool,
    ) -> CmdResult<()> {
        let held = self.held.clone();
        let holder_key = self.holder_key();
        let take_over = match &held {
            Some(h) if all_registrants(h.kind) => sark == 0,
            Some(_) => sark == holder_key,
            None => false,
        };
        if take_over {
            if scope != 0 {
                return Err(bad_cdb(2, Some(7)));
            }
            if !valid_type(kind) {
                return Err(bad_cdb(2, Some(3)));
            }
        } else if sark == 0 {
            return Err(bad_param(8));
        }
        let all = held.as_ref().is_some_and(|h| all_registrants(h.kind)) && sark == 0;
        let mut removed = 0usize;
        let mut i = 0usize;
        while let Some(r) = self.regs.get(i) {
            if !r.is(nexus) && (all || r.key == sark) {
                let idx = r.index;
                self.regs.swap_remove(i);
                ua::raise(ua_slots, idx, ua::REGISTRATIONS_PREEMPTED);
                if abort {
                    if let Some(e) = aborts.get_mut(usize::from(idx)) {
                        *e = e.wrapping_add(1);
                    }
                }
                removed = removed.saturating_add(1);
            } else {
                i = i.saturating_add(1);
            }
        }
        if take_over {
            let mut name = heapless::Vec::new();
            let _ = name.extend_from_slice(nexus.initiator.as_bytes());
            self.held = Some(Held {
                name,
                isid: nexus.isid,
                kind,
            });
        } else if removed == 0 {
            return Err(Fail::Conflict);
        }
        Ok(())
    }
}

/// Bytes of the iSCSI TransportID (format 01b): header + `name,i,0x<isid>`
/// + NUL, padded to a multiple of 4.
fn transport_id_len(r: &Registrant) -> usize {
    let body = r.name.len().saturating_add(5 + 12 + 1);
    4usize.saturating_add(body.saturating_add(3) & !3)
}

fn transport_id(w: &mut Writer<'_>, r: &Registrant, total: usize) {
    let start = w.pos();
    w.u8(0x45); // FORMAT CODE 01b, PROTOCOL IDENTIFIER 5h (iSCSI)
    w.u8(0);
    w.u16(u16::try_from(total.saturating_sub(4)).unwrap_or(0));
    w.put(&r.name);
    w.put(b",i,0x");
    for b in r.isid {
        let hex = b"0123456789abcdef";
        w.u8(hex.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
        w.u8(hex.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'));
    }
    let end = start.saturating_add(total);
    while w.pos() < end {
        w.u8(0);
    }
}
