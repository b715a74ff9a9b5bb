//! REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35): the command table.
//!
//! libiscsi decides which tests to skip from this list, so it must list
//! exactly what [`Lun::command`] serves for this LUN's configuration.

use super::cdb::{opcode as op, Bytes, Writer};
use super::lun::Lun;
use super::status::{bad_cdb, done, CmdResult};

/// One supported command: opcode, service action, CDB usage data (its
/// length is the CDB length; byte 0 is the opcode).
#[derive(Debug, Clone, Copy)]
struct Cmd {
    opcode: u8,
    sa: Option<u16>,
    usage: &'static [u8],
    /// Served only on thin-provisioned LUNs.
    thin_only: bool,
}

const fn c(opcode: u8, usage: &'static [u8]) -> Cmd {
    Cmd {
        opcode,
        sa: None,
        usage,
        thin_only: false,
    }
}

const fn s(opcode: u8, sa: u16, usage: &'static [u8]) -> Cmd {
    Cmd {
        opcode,
        sa: Some(sa),
        usage,
        thin_only: false,
    }
}

const RW10: [u8; 10] = [0, 0xf8, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0];
const RW12: [u8; 12] = [
    0, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
];
const RW16: [u8; 16] = [
    0, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
];

const fn with_op<const L: usize>(mut u: [u8; L], opcode: u8, byte1: u8) -> [u8; L] {
    if L > 1 {
        u[0] = opcode;
        u[1] = byte1;
    }
    u
}

const PRIN: [u8; 10] = [
    op::PERSISTENT_RESERVE_IN,
    0x1f,
    0,
    0,
    0,
    0,
    0,
    0xff,
    0xff,
    0,
];
const PROUT: [u8; 10] = [
    op::PERSISTENT_RESERVE_OUT,
    0x1f,
    0xff,
    0,
    0,
    0xff,
    0xff,
    0xff,
    0xff,
    0,
];
const SAI16: [u8; 16] = [
    op::SERVICE_ACTION_IN_16,
    0x1f,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0,
    0,
];

static READ_10: [u8; 10] = with_op(RW10, op::READ_10, 0xf8);
static WRITE_10: [u8; 10] = with_op(RW10, op::WRITE_10, 0xf8);
static WAV_10: [u8; 10] = with_op(RW10, op::WRITE_AND_VERIFY_10, 0xf2);
static VERIFY_10: [u8; 10] = with_op(RW10, op::VERIFY_10, 0xf6);
static PRE_FETCH_10: [u8; 10] = with_op(RW10, op::PRE_FETCH_10, 0x02);
static SYNC_10: [u8; 10] = with_op(RW10, op::SYNCHRONIZE_CACHE_10, 0x06);
static WS_10: [u8; 10] = with_op(RW10, op::WRITE_SAME_10, 0xe8);
static READ_12: [u8; 12] = with_op(RW12, op::READ_12, 0xf8);
static WRITE_12: [u8; 12] = with_op(RW12, op::WRITE_12, 0xf8);
static WAV_12: [u8; 12] = with_op(RW12, op::WRITE_AND_VERIFY_12, 0xf2);
static VERIFY_12: [u8; 12] = with_op(RW12, op::VERIFY_12, 0xf6);
static READ_16: [u8; 16] = with_op(RW16, op::READ_16, 0xf8);
static ORWRITE_16: [u8; 16] = with_op(RW16, op::ORWRITE_16, 0xfa);
static WRITE_16: [u8; 16] = with_op(RW16, op::WRITE_16, 0xf8);
static WAV_16: [u8; 16] = with_op(RW16, op::WRITE_AND_VERIFY_16, 0xf2);
static VERIFY_16: [u8; 16] = with_op(RW16, op::VERIFY_16, 0xf6);
static PRE_FETCH_16: [u8; 16] = with_op(RW16, op::PRE_FETCH_16, 0x02);
static SYNC_16: [u8; 16] = with_op(RW16, op::SYNCHRONIZE_CACHE_16, 0x06);
static WS_16: [u8; 16] = with_op(RW16, op::WRITE_SAME_16, 0xe9);
static CAW: [u8; 16] = [
    op::COMPARE_AND_WRITE,
    0xf8,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0,
    0,
    0,
    0xff,
    0x1f,
    0,
];
static RC16: [u8; 16] = with_op(SAI16, op::SERVICE_ACTION_IN_16, 0x1f);
static LBA_STATUS: [u8; 16] = with_op(SAI16, op::SERVICE_ACTION_IN_16, 0x1f);

static XCOPY: [u8; 16] = [
    op::EXTENDED_COPY,
    0x1f,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0xff,
    0xff,
    0xff,
    0xff,
    0,
    0,
];
static RCR: [u8; 16] = [
    op::RECEIVE_COPY_RESULTS,
    0x1f,
    0xff,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0xff,
    0xff,
    0xff,
    0xff,
    0,
    0,
];

static COMMANDS: &[Cmd] = &[
    c(op::TEST_UNIT_READY, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0]),
    c(op::REQUEST_SENSE, &[op::REQUEST_SENSE, 0x01, 0, 0, 0xff, 0]),
    c(op::READ_6, &[op::READ_6, 0x1f, 0xff, 0xff, 0xff, 0]),
    c(op::WRITE_6, &[op::WRITE_6, 0x1f, 0xff, 0xff, 0xff, 0]),
    c(op::INQUIRY, &[op::INQUIRY, 0x01, 0xff, 0xff, 0xff, 0]),
    c(op::MODE_SELECT_6, &[op::MODE_SELECT_6, 0x11, 0, 0, 0xff, 0]),
    c(op::RESERVE_6, &[op::RESERVE_6, 0, 0, 0, 0, 0]),
    c(op::RELEASE_6, &[op::RELEASE_6, 0, 0, 0, 0, 0]),
    c(
        op::MODE_SENSE_6,
        &[op::MODE_SENSE_6, 0x08, 0xff, 0xff, 0xff, 0],
    ),
    c(
        op::START_STOP_UNIT,
        &[op::START_STOP_UNIT, 0x01, 0, 0x0f, 0xf7, 0],
    ),
    c(
        op::PREVENT_ALLOW_MEDIUM_REMOVAL,
        &[op::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0x03, 0],
    ),
    c(
        op::READ_CAPACITY_10,
        &[
            op::READ_CAPACITY_10,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            0,
            0x01,
            0,
        ],
    ),
    c(op::READ_10, &READ_10),
    c(op::WRITE_10, &WRITE_10),
    c(op::WRITE_AND_VERIFY_10, &WAV_10),
    c(op::VERIFY_10, &VERIFY_10),
    c(op::PRE_FETCH_10, &PRE_FETCH_10),
    c(op::SYNCHRONIZE_CACHE_10, &SYNC_10),
    c(
        op::READ_DEFECT_DATA_10,
        &[op::READ_DEFECT_DATA_10, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0],
    ),
    c(op::WRITE_SAME_10, &WS_10),
    Cmd {
        opcode: op::UNMAP,
        sa: None,
        usage: &[op::UNMAP, 0x01, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0],
        thin_only: true,
    },
    Cmd {
        opcode: op::SANITIZE,
        sa: Some(0x02), // BLOCK ERASE
        usage: &[op::SANITIZE, 0xa2, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
        thin_only: true,
    },
    c(
        op::MODE_SELECT_10,
        &[op::MODE_SELECT_10, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
    ),
    c(op::RESERVE_10, &[op::RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    c(op::RELEASE_10, &[op::RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    c(
        op::MODE_SENSE_10,
        &[op::MODE_SENSE_10, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0],
    ),
    s(op::PERSISTENT_RESERVE_IN, 0x00, &PRIN),
    s(op::PERSISTENT_RESERVE_IN, 0x01, &PRIN),
    s(op::PERSISTENT_RESERVE_IN, 0x02, &PRIN),
    s(op::PERSISTENT_RESERVE_IN, 0x03, &PRIN),
    s(op::PERSISTENT_RESERVE_OUT, 0x00, &PROUT),
    s(op::PERSISTENT_RESERVE_OUT, 0x01, &PROUT),
    s(op::PERSISTENT_RESERVE_OUT, 0x02, &PROUT),
    s(op::PERSISTENT_RESERVE_OUT, 0x03, &PROUT),
    s(op::PERSISTENT_RESERVE_OUT, 0x04, &PROUT),
    s(op::PERSISTENT_RESERVE_OUT, 0x05, &PROUT),
    s(op::PERSISTENT_RESERVE_OUT, 0x06, &PROUT),
    s(op::EXTENDED_COPY, 0x00, &XCOPY),
    s(op::RECEIVE_COPY_RESULTS, 0x00, &RCR),
    s(op::RECEIVE_COPY_RESULTS, 0x03, &RCR),
    c(op::READ_16, &READ_16),
    c(op::COMPARE_AND_WRITE, &CAW),
    c(op::ORWRITE_16, &ORWRITE_16),
    c(op::WRITE_16, &WRITE_16),
    c(op::WRITE_AND_VERIFY_16, &WAV_16),
    c(op::VERIFY_16, &VERIFY_16),
    c(op::PRE_FETCH_16, &PRE_FETCH_16),
    c(op::SYNCHRONIZE_CACHE_16, &SYNC_16),
    c(op::WRITE_SAME_16, &WS_16),
    s(
        op::SERVICE_ACTION_IN_16,
        op::SAI_READ_CAPACITY_16 as u16,
        &RC16,
    ),
    s(
        op::SERVICE_ACTION_IN_16,
        op::SAI_GET_LBA_STATUS as u16,
        &LBA_STATUS,
    ),
    c(
        op::REPORT_LUNS,
        &[
            op::REPORT_LUNS,
            0,
            0xff,
            0,
            0,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            0,
        ],
    ),
    s(
        op::MAINTENANCE_IN,
        op::MI_REPORT_SUPPORTED_OPCODES as u16,
        &[
            op::MAINTENANCE_IN,
            0x1f,
            0x87,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            0,
        ],
    ),
    c(op::READ_12, &READ_12),
    c(op::WRITE_12, &WRITE_12),
    c(op::WRITE_AND_VERIFY_12, &WAV_12),
    c(op::VERIFY_12, &VERIFY_12),
    c(
        op::READ_DEFECT_DATA_12,
        &[
            op::READ_DEFECT_DATA_12,
            0x1f,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            0,
        ],
    ),
];

/// Opcodes whose byte 1 carries a service action.
fn has_service_actions(opcode: u8) -> bool {
    COMMANDS
        .iter()
        .any(|c| c.opcode == opcode && c.sa.is_some())
}

/// Command timeouts descriptor (SPC-4 §6.35.4): nominal unknown,
/// recommended 30 s.
fn timeouts(w: &mut Writer<'_>) {
    w.u16(0x0a);
    w.u8(0);
    w.u8(0);
    w.u32(0);
    w.u32(30);
}

impl<const N: usize, const R: usize> Lun<N, R> {
    fn serves(&self, c: &Cmd) -> bool {
        !c.thin_only || self.cfg.thin_provisioning
    }

    /// Whether this LUN serves `opcode` (used to reject the rest with
    /// INVALID COMMAND OPERATION CODE so initiators skip them).
    pub(crate) fn opcode_supported(&self, opcode: u8) -> bool {
        COMMANDS
            .iter()
            .any(|c| c.opcode == opcode && self.serves(c))
    }

    pub(crate) fn report_supported_opcodes(&self, cdb: Bytes<'_>, buf: &mut [u8]) -> CmdResult {
        let rctd = cdb.bit(2, 7);
        let options = cdb.u8(2) & 0x07;
        let req_op = cdb.u8(3);
        let req_sa = cdb.u16(4);
        let alloc = cdb.u32(6);
        let mut w = Writer::new(buf);
        match options {
            0 => {
                w.u32(0);
                for c in COMMANDS.iter().filter(|c| self.serves(c)) {
                    w.u8(c.opcode);
                    w.u8(0);
                    w.u16(c.sa.unwrap_or(0));
                    w.u8(0);
                    w.u8(if rctd { 0x02 } else { 0 } | u8::from(c.sa.is_some()));
                    w.u16(c.usage.len() as u16);
                    if rctd {
                        timeouts(&mut w);
                    }
                }
                let len = u32::try_from(w.pos().saturating_sub(4)).unwrap_or(0);
                w.patch(0, &len.to_be_bytes());
            }
            1..=3 => {
                let with_sa = has_service_actions(req_op);
                match (options, with_sa) {
                    (1, true) => return Err(bad_cdb(2, Some(2))),
                    (2, false) => return Err(bad_cdb(2, Some(2))),
                    _ => {}
                }
                let found = COMMANDS
                    .iter()
                    .filter(|c| self.serves(c))
                    .find(|c| c.opcode == req_op && (!with_sa || c.sa == Some(req_sa)));
                w.u8(0);
                match found {
                    Some(c) => {
                        // SUPPORT 011b: supported as the standard says
                        w.u8(if rctd { 0x80 } else { 0 } | 0x03);
                        w.u16(c.usage.len() as u16);
                        w.put(c.usage);
                        if rctd {
                            timeouts(&mut w);
                        }
                    }
                    None => {
                        // SUPPORT 001b: not supported
                        w.u8(0x01);
                        w.u16(0);
                    }
                }
            }
            _ => return Err(bad_cdb(2, Some(0))),
        }
        Ok(done(w.data_len(alloc)))
    }
}
