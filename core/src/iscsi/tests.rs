//! Connection-level tests: a scripted initiator against [`Connection`] with
//! an in-memory disk behind a minimal SCSI backend.
#![allow(dead_code)]

extern crate std;

use std::vec;
use std::vec::Vec;

use super::pdu::*;
use super::text::pairs;
use super::*;
use crate::time::Instant;

pub(crate) const BLOCK: u64 = 512;

/// A tiny SCSI layer over a RAM disk: enough for the transport tests.
pub(crate) struct MemBackend {
    pub disk: Vec<u8>,
    pub writes: usize,
    pub flushes: usize,
    pub lost: Vec<u64>,
    pub tmfs: Vec<TmfFunction>,
}

impl MemBackend {
    pub fn new(blocks: u64) -> Self {
        let mut disk = vec![0u8; (blocks * BLOCK) as usize];
        for (i, b) in disk.iter_mut().enumerate() {
            *b = (i / BLOCK as usize) as u8 ^ (i as u8);
        }
        MemBackend {
            disk,
            writes: 0,
            flushes: 0,
            lost: Vec::new(),
            tmfs: Vec::new(),
        }
    }

    fn blocks(&self) -> u64 {
        self.disk.len() as u64 / BLOCK
    }

    fn sense(buf: &mut [u8], key: u8, asc: u8, ascq: u8) -> Plan {
        let s = [
            0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0,
        ];
        buf[..18].copy_from_slice(&s);
        Plan::Complete {
            status: 2,
            data_len: 0,
            sense_len: 18,
        }
    }
}

impl Backend for MemBackend {
    fn scsi_command(&mut self, req: &ScsiRequest<'_>, buf: &mut [u8]) -> Plan {
        let cdb = req.cdb;
        let be32 = |at: usize| u32::from_be_bytes([cdb[at], cdb[at + 1], cdb[at + 2], cdb[at + 3]]);
        let be16 = |at: usize| u16::from_be_bytes([cdb[at], cdb[at + 1]]);
        match cdb[0] {
            0x00 => Plan::Complete {
                status: 0,
                data_len: 0,
                sense_len: 0,
            },
            0x25 => {
                let last = (self.blocks() - 1) as u32;
                buf[..4].copy_from_slice(&last.to_be_bytes());
                buf[4..8].copy_from_slice(&(BLOCK as u32).to_be_bytes());
                Plan::Complete {
                    status: 0,
                    data_len: 8,
                    sense_len: 0,
                }
            }
            0x28 | 0x2a => {
                let lba = u64::from(be32(2));
                let n = u64::from(be16(7));
                if lba + n > self.blocks() {
                    return Self::sense(buf, 5, 0x21, 0);
                }
                if cdb[0] == 0x28 {
                    Plan::Read {
                        offset: lba * BLOCK,
                        len: (n * BLOCK) as u32,
                    }
                } else {
                    Plan::Write {
                        offset: lba * BLOCK,
                        len: (n * BLOCK) as u32,
                        fua: cdb[1] & 0x08 != 0,
                    }
                }
            }
            0x35 => Plan::Flush,
            // MODE SELECT(6): take the parameter list, answer GOOD.
            0x15 => Plan::ReceiveParameters {
                len: u32::from(cdb[4]),
            },
            _ => Self::sense(buf, 5, 0x20, 0),
        }
    }

    fn scsi_resume(&mut self, _req: &ScsiRequest<'_>, why: Resume, buf: &mut [u8]) -> Plan {
        match why {
            Resume::Storage(Ok(())) | Resume::Parameters { .. } => Plan::Complete {
                status: 0,
                data_len: 0,
                sense_len: 0,
            },
            Resume::Storage(Err(_)) => Self::sense(buf, 3, 0x11, 0),
        }
    }

    fn task_management(&mut self, _n: u64, _t: usize, _l: u64, f: TmfFunction) -> TmfOutcome {
        self.tmfs.push(f);
        TmfOutcome::Complete
    }

    fn nexus_lost(&mut self, nexus: u64) {
        self.lost.push(nexus);
    }

    fn write_data(&mut self, chunk: WriteChunk<'_>) {
        let at = chunk.offset as usize;
        self.disk[at..at + chunk.data.len()].copy_from_slice(chunk.data);
    }

    fn read_data(&mut self, chunk: ReadChunk<'_>) -> Result<(), crate::scsi::IoError> {
        let at = chunk.offset as usize;
        let n = chunk.dst.len();
        chunk.dst.copy_from_slice(&self.disk[at..at + n]);
        Ok(())
    }
}

pub(crate) const TARGET: &str = "iqn.2024-01.test.e2e:sanboot";

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let d: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    d.chunks(2)
        .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Split a byte stream into PDUs (no digests).
pub(crate) fn split(mut s: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while s.len() >= BHS_LEN {
        let l = pdu_len(&Bhs::new_unchecked(s), Digests::default()).total_len;
        out.push(s[..l].to_vec());
        s = &s[l..];
    }
    out
}

/// A connection plus everything around it: session table, backend, clock.
pub(crate) struct Harness<'a> {
    pub conn: Connection<8, 512>,
    pub sessions: SessionTable<4>,
    pub backend: MemBackend,
    pub targets: Targets<'a>,
    pub now: Instant,
    pub closed: bool,
    /// Answer storage at once (else keep requests in `pending`).
    pub sync_storage: bool,
    pub pending: Vec<IoId>,
    pub rx_digests: Digests,
}

pub(crate) const LUNS: &[u64] = &[0, 1];

impl<'a> Harness<'a> {
    pub fn new(targets: Targets<'a>, limits: TargetLimits) -> Self {
        Harness {
            conn: Connection::new(Instant::from_millis(0), 1, limits, [3; 16]),
            sessions: SessionTable::new(),
            backend: MemBackend::new(2048),
            targets,
            now: Instant::from_millis(0),
            closed: false,
            sync_storage: true,
            pending: Vec::new(),
            rx_digests: Digests::default(),
        }
    }

    /// Feed bytes; return every PDU the target sends in reaction.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut at = 0;
        loop {
            let n =
                self.conn
                    .handle_input(self.now, &bytes[at..], &self.targets, &mut self.backend);
            if n == 0 {
                break;
            }
            at += n;
            if at >= bytes.len() {
                break;
            }
        }
        assert_eq!(at, bytes.len(), "whole PDUs must be consumed");
        self.drain()
    }

    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut idle = 0;
        loop {
            let mut progress = false;
            while let Some(ev) = self.conn.poll_event() {
                progress = true;
                match ev {
                    Event::SessionRequest(req) => {
                        let name: heapless::String<256> =
                            heapless::String::try_from(self.conn.initiator_name()).unwrap();
                        match self.sessions.admit(&name, &req, self.conn.token()) {
                            Ok(a) => self.conn.session_admitted(&a),
                            Err(s) => self.conn.session_refused(s),
                        }
                    }
                    Event::LoggedIn { .. } => {}
                    Event::Close => self.closed = true,
                }
            }
            let mut done = Vec::new();
            while let Some(req) = self.conn.poll_storage() {
                progress = true;
                match req {
                    StorageRequest::Release { .. } => {}
                    StorageRequest::Flush { io, .. } => {
                        self.backend.flushes += 1;
                        done.push(io)
                    }
                    StorageRequest::Write { io, .. } => {
                        self.backend.writes += 1;
                        done.push(io)
                    }
                    r => done.push(r.io()),
                }
            }
            for io in done {
                if self.sync_storage {
                    self.conn
                        .complete_storage(self.now, io, Ok(()), &mut self.backend);
                } else {
                    self.pending.push(io);
                }
            }
            let mut buf = vec![0xa5u8; 300_000];
            while let Some(n) = self
                .conn
                .poll_transmit(self.now, &mut buf, &mut self.backend)
            {
                progress = true;
                out.push(buf[..n].to_vec());
            }
            // An event may appear during the last poll_transmit: go round once more.
            idle = if progress { 0 } else { idle + 1 };
            if idle == 2 {
                break;
            }
        }
        out
    }

    pub fn complete(&mut self, io: IoId) -> Vec<Vec<u8>> {
        self.conn
            .complete_storage(self.now, io, Ok(()), &mut self.backend);
        self.drain()
    }
}

pub(crate) fn targets(
    chap: Option<ChapCredentials<'static>>,
    mutual: Option<ChapCredentials<'static>>,
) -> &'static [TargetConfig<'static>] {
    let t = std::boxed::Box::new([TargetConfig {
        name: TARGET,
        initiators: &[],
        chap,
        mutual_chap: mutual,
        luns: LUNS,
        digest: crate::iscsi::DigestPolicy::Allowed,
    }]);
    std::boxed::Box::leak(t)
}

pub(crate) fn portal(t: &'static [TargetConfig<'static>]) -> Targets<'static> {
    Targets {
        targets: t,
        portal: "192.0.2.1:3260",
        portal_group_tag: 1,
    }
}

pub(crate) fn bhs(p: &[u8]) -> Bhs<&[u8]> {
    Bhs::new_checked(p).unwrap()
}

pub(crate) fn keys(p: &[u8]) -> Vec<(std::string::String, std::string::String)> {
    let l = pdu_len(&bhs(p), Digests::default());
    pairs(&p[l.data_offset..l.data_offset + l.data_len])
        .map(|kv| {
            let kv = kv.unwrap();
            (kv.key.into(), kv.value.into())
        })
        .collect()
}

pub(crate) fn key<'k>(
    k: &'k [(std::string::String, std::string::String)],
    name: &str,
) -> Option<&'k str> {
    k.iter().find(|(a, _)| a == name).map(|(_, v)| v.as_str())
}

/// Build a login request PDU.
pub(crate) fn login_pdu(
    csg: Stage,
    nsg: Stage,
    transit: bool,
    isid_q: u8,
    cmd_sn: u32,
    exp_stat_sn: u32,
    text: &str,
) -> Vec<u8> {
    let data: Vec<u8> = text.replace('\n', "\0").into_bytes();
    let mut p = vec![0u8; BHS_LEN + pad4(data.len())];
    LoginRequest {
        transit,
        cont: false,
        csg,
        nsg,
        version_max: 0,
        version_min: 0,
        isid: [0x40, 0, 0x27, 0x23, 0, isid_q],
        tsih: 0,
        itt: 0x1000 + u32::from(isid_q),
        cid: 0,
        cmd_sn,
        exp_stat_sn,
        data_len: data.len() as u32,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..BHS_LEN]));
    p[BHS_LEN..BHS_LEN + data.len()].copy_from_slice(&data);
    p
}

pub(crate) fn command(
    itt: u32,
    cmd_sn: u32,
    cdb: &[u8],
    edtl: u32,
    read: bool,
    write: bool,
    immediate: &[u8],
    final_bit: bool,
) -> Vec<u8> {
    let mut c = [0u8; 16];
    c[..cdb.len()].copy_from_slice(cdb);
    let mut p = vec![0u8; BHS_LEN + pad4(immediate.len())];
    ScsiCommand {
        immediate: false,
        final_bit,
        read,
        write,
        attr: 1,
        lun: 1 << 48,
        itt,
        edtl,
        cmd_sn,
        exp_stat_sn: 0,
        cdb: c,
        ahs_words: 0,
        data_len: immediate.len() as u32,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..BHS_LEN]));
    p[BHS_LEN..BHS_LEN + immediate.len()].copy_from_slice(immediate);
    p
}

pub(crate) fn data_out(
    itt: u32,
    ttt: u32,
    data_sn: u32,
    offset: u32,
    data: &[u8],
    final_bit: bool,
) -> Vec<u8> {
    let mut p = vec![0u8; BHS_LEN + pad4(data.len())];
    DataOut {
        final_bit,
        lun: 1 << 48,
        itt,
        ttt,
        exp_stat_sn: 0,
        data_sn,
        buffer_offset: offset,
        data_len: data.len() as u32,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..BHS_LEN]));
    p[BHS_LEN..BHS_LEN + data.len()].copy_from_slice(data);
    p
}

pub(crate) fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let n = blocks.to_be_bytes();
    [0x28, 0, l[0], l[1], l[2], l[3], 0, n[0], n[1], 0]
}

pub(crate) fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c
}

/// Log in like iPXE does (the captured bytes), return the harness.
pub(crate) fn ipxe_logged_in(limits: TargetLimits) -> Harness<'static> {
    let mut h = Harness::new(portal(targets(None, None)), limits);
    let stream = hex(include_str!("testdata/ipxe-stream.hex"));
    let pdus = split(&stream);
    let r1 = h.feed(&pdus[0]);
    let r2 = h.feed(&pdus[1]);
    assert_eq!(r1.len(), 1);
    assert_eq!(r2.len(), 1);
    assert!(h.conn.is_full_feature());
    h
}

mod discovery_tmf;
mod ipxe;
mod keepalive;
mod login_tests;
mod transfer;
