//! How a command ends early ([`Fail`], [`CmdResult`]), the sense shortcuts
//! every command module uses, and the unit-attention conditions. Shared by
//! the logical unit and the command families (PR, XCOPY, mode, inquiry), so
//! none of them needs another's module.

use super::sense::{asc, Sense, SenseKey};
use super::{Response, Step};

/// Why a command stops early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    Check(Sense),
    Conflict,
}

pub(crate) type CmdResult<T = Step> = Result<T, Fail>;

pub(crate) const fn illegal(code: (u8, u8)) -> Fail {
    Fail::Check(Sense::new(SenseKey::IllegalRequest, code))
}

/// INVALID FIELD IN CDB pointing at byte `byte` (bit if known).
pub(crate) const fn bad_cdb(byte: u16, bit: Option<u8>) -> Fail {
    Fail::Check(Sense::illegal(asc::INVALID_FIELD_IN_CDB, true, byte, bit))
}

/// INVALID FIELD IN PARAMETER LIST pointing at byte `byte`.
pub(crate) const fn bad_param(byte: u16) -> Fail {
    Fail::Check(Sense::illegal(
        asc::INVALID_FIELD_IN_PARAMETER_LIST,
        false,
        byte,
        None,
    ))
}

/// Unit attention conditions, lowest bit reported first.
pub(crate) mod ua {
    pub const POWER_ON: u16 = 1 << 0;
    pub const RESET: u16 = 1 << 1;
    pub const NEXUS_LOSS: u16 = 1 << 2;
    pub const RESERVATIONS_PREEMPTED: u16 = 1 << 3;
    pub const RESERVATIONS_RELEASED: u16 = 1 << 4;
    pub const REGISTRATIONS_PREEMPTED: u16 = 1 << 5;
    pub const MODE_CHANGED: u16 = 1 << 6;
    pub const CAPACITY_CHANGED: u16 = 1 << 7;
    pub const LUNS_CHANGED: u16 = 1 << 8;
    /// Conditions a power-on / reset report supersedes (SAM-5 §6.x).
    pub const RESET_CLASS: u16 = POWER_ON | RESET | NEXUS_LOSS;

    /// Raises `bit` on nexus slot `index` (ignored past the table).
    pub fn raise(slots: &mut [u16], index: u16, bit: u16) {
        if let Some(slot) = slots.get_mut(usize::from(index)) {
            *slot |= bit;
        }
    }

    pub fn code(bit: u16) -> (u8, u8) {
        use super::asc;
        match bit {
            POWER_ON => asc::POWER_ON_RESET,
            RESET => asc::BUS_DEVICE_RESET,
            NEXUS_LOSS => asc::I_T_NEXUS_LOSS,
            RESERVATIONS_PREEMPTED => asc::RESERVATIONS_PREEMPTED,
            RESERVATIONS_RELEASED => asc::RESERVATIONS_RELEASED,
            REGISTRATIONS_PREEMPTED => asc::REGISTRATIONS_PREEMPTED,
            MODE_CHANGED => asc::MODE_PARAMETERS_CHANGED,
            CAPACITY_CHANGED => asc::CAPACITY_DATA_HAS_CHANGED,
            _ => asc::REPORTED_LUNS_DATA_HAS_CHANGED,
        }
    }
}

pub(crate) const fn done(data_len: u32) -> Step {
    Step::Done(Response::good(data_len))
}
