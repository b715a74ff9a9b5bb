//! Sense data (SPC-4 §4.5): fixed (70h) and descriptor (72h) formats.

/// SENSE KEY (SPC-4 table 27).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseKey {
    /// NO SENSE (0h).
    NoSense,
    /// NOT READY (2h).
    NotReady,
    /// MEDIUM ERROR (3h).
    MediumError,
    /// HARDWARE ERROR (4h).
    HardwareError,
    /// ILLEGAL REQUEST (5h).
    IllegalRequest,
    /// UNIT ATTENTION (6h).
    UnitAttention,
    /// DATA PROTECT (7h).
    DataProtect,
    /// ABORTED COMMAND (Bh).
    AbortedCommand,
    /// MISCOMPARE (Eh).
    Miscompare,
    /// Any other key.
    Unknown(u8),
}

impl SenseKey {
    /// The 4-bit code.
    pub const fn as_u8(self) -> u8 {
        match self {
            SenseKey::NoSense => 0x0,
            SenseKey::NotReady => 0x2,
            SenseKey::MediumError => 0x3,
            SenseKey::HardwareError => 0x4,
            SenseKey::IllegalRequest => 0x5,
            SenseKey::UnitAttention => 0x6,
            SenseKey::DataProtect => 0x7,
            SenseKey::AbortedCommand => 0xb,
            SenseKey::Miscompare => 0xe,
            SenseKey::Unknown(v) => v & 0x0f,
        }
    }
}

/// ADDITIONAL SENSE CODE / QUALIFIER pairs used by this layer (SPC-4 table D.1).
pub mod asc {
    #![allow(missing_docs)]
    pub const NO_ADDITIONAL_SENSE: (u8, u8) = (0x00, 0x00);
    pub const WRITE_ERROR: (u8, u8) = (0x0c, 0x00);
    pub const UNRECOVERED_READ_ERROR: (u8, u8) = (0x11, 0x00);
    pub const MISCOMPARE_DURING_VERIFY: (u8, u8) = (0x1d, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: (u8, u8) = (0x1a, 0x00);
    pub const INVALID_COMMAND_OPERATION_CODE: (u8, u8) = (0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: (u8, u8) = (0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
    pub const LOGICAL_UNIT_NOT_SUPPORTED: (u8, u8) = (0x25, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: (u8, u8) = (0x26, 0x00);
    pub const WRITE_PROTECTED: (u8, u8) = (0x27, 0x00);
    pub const SPACE_ALLOCATION_FAILED_WRITE_PROTECT: (u8, u8) = (0x27, 0x07);
    pub const POWER_ON_RESET: (u8, u8) = (0x29, 0x00);
    pub const BUS_DEVICE_RESET: (u8, u8) = (0x29, 0x03);
    pub const I_T_NEXUS_LOSS: (u8, u8) = (0x29, 0x07);
    pub const MODE_PARAMETERS_CHANGED: (u8, u8) = (0x2a, 0x01);
    pub const RESERVATIONS_PREEMPTED: (u8, u8) = (0x2a, 0x03);
    pub const RESERVATIONS_RELEASED: (u8, u8) = (0x2a, 0x04);
    pub const REGISTRATIONS_PREEMPTED: (u8, u8) = (0x2a, 0x05);
    pub const CAPACITY_DATA_HAS_CHANGED: (u8, u8) = (0x2a, 0x09);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: (u8, u8) = (0x39, 0x00);
    pub const MEDIUM_NOT_PRESENT: (u8, u8) = (0x3a, 0x00);
    pub const REPORTED_LUNS_DATA_HAS_CHANGED: (u8, u8) = (0x3f, 0x0e);
    pub const INTERNAL_TARGET_FAILURE: (u8, u8) = (0x44, 0x00);
    /// COMMANDS CLEARED BY ANOTHER INITIATOR.
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: (u8, u8) = (0x2f, 0x00);
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: (u8, u8) = (0x55, 0x04);
}

/// One sense report, independent of its wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// SENSE KEY.
    pub key: SenseKey,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
    /// INFORMATION field (e.g. miscompare offset), if valid.
    pub information: Option<u64>,
    /// SENSE KEY SPECIFIC bytes (SKSV is set when present), e.g. a field
    /// pointer for ILLEGAL REQUEST.
    pub key_specific: Option<[u8; 3]>,
    /// Emit descriptor format (72h) instead of fixed (70h): the control mode
    /// page's D_SENSE bit.
    pub descriptor: bool,
}

/// Encoded sense data: at most 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenseBytes {
    buf: [u8; 32],
    len: u8,
}

impl SenseBytes {
    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl Sense {
    /// A sense report with only key and code.
    pub const fn new(key: SenseKey, code: (u8, u8)) -> Self {
        Sense {
            key,
            asc: code.0,
            ascq: code.1,
            information: None,
            key_specific: None,
            descriptor: false,
        }
    }

    /// ILLEGAL REQUEST with a field pointer to CDB byte `byte` (bit `bit`, if
    /// known) or, with `in_cdb` false, to the parameter list.
    pub const fn illegal(code: (u8, u8), in_cdb: bool, byte: u16, bit: Option<u8>) -> Self {
        let mut b0 = 0x80;
        if in_cdb {
            b0 |= 0x40;
        }
        if let Some(bit) = bit {
            b0 |= 0x08 | (bit & 7);
        }
        let ptr = byte.to_be_bytes();
        let mut s = Sense::new(SenseKey::IllegalRequest, code);
        s.key_specific = Some([b0, ptr[0], ptr[1]]);
        s
    }

    /// Encodes the sense data in its format.
    pub fn bytes(&self) -> SenseBytes {
        let mut buf = [0u8; 32];
        let mut w = super::cdb::Writer::new(&mut buf);
        if self.descriptor {
            w.u8(0x72);
            w.u8(self.key.as_u8());
            w.u8(self.asc);
            w.u8(self.ascq);
            w.zeros(3);
            let len_at = w.pos();
            w.u8(0);
            if let Some(info) = self.information {
                w.put(&[0x00, 0x0a, 0x80, 0x00]);
                w.u64(info);
            }
            if let Some(sks) = self.key_specific {
                w.put(&[0x02, 0x06, 0x00, 0x00]);
                w.put(&sks);
                w.u8(0);
            }
            let add = u8::try_from(w.pos().saturating_sub(8)).unwrap_or(0);
            w.patch(len_at, &[add]);
        } else {
            let valid = self.information.is_some_and(|i| i <= u64::from(u32::MAX));
            w.u8(if valid { 0xf0 } else { 0x70 });
            w.u8(0);
            w.u8(self.key.as_u8());
            w.u32(if valid {
                u32::try_from(self.information.unwrap_or(0)).unwrap_or(0)
            } else {
                0
            });
            w.u8(10);
            w.zeros(4);
            w.u8(self.asc);
            w.u8(self.ascq);
            w.u8(0);
            match self.key_specific {
                Some(sks) => w.put(&sks),
                None => w.zeros(3),
            }
        }
        let len = u8::try_from(w.pos()).unwrap_or(32);
        SenseBytes { buf, len }
    }
}
