//! A deliberately small blocking iSCSI initiator (RFC 7143): login with
//! AuthMethod=None, SCSI commands with immediate data and R2T handling,
//! NOP-In pings answered. Enough to drive writes and flushes one at a time
//! and to know exactly which were acknowledged.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const BHS: usize = 48;

/// A SCSI command's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResult {
    /// SCSI status (0 = GOOD).
    pub status: u8,
    /// iSCSI response code (0 = completed at target).
    pub response: u8,
    /// Sense data (without the 2-byte length).
    pub sense: Vec<u8>,
    /// Data-In received.
    pub data: Vec<u8>,
}

impl ScsiResult {
    /// Sense key, ASC and ASCQ of the (fixed-format) sense data; `None`
    /// when the target sent none or too little.
    pub fn sense_code(&self) -> Option<(u8, u8, u8)> {
        Some((
            self.sense.get(2)? & 0x0f,
            *self.sense.get(12)?,
            *self.sense.get(13)?,
        ))
    }
}

/// One logged-in session on one connection.
pub struct Initiator {
    sock: TcpStream,
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    /// Largest data segment the target accepts from us.
    target_mrdsl: usize,
    immediate_data: bool,
    first_burst: usize,
    lun: u64,
    /// CRC32C header / data digests in use (after login).
    header_digest: bool,
    data_digest: bool,
    /// Corrupt the next PDU's header digest (tests).
    pub corrupt_next_header: bool,
    /// Corrupt the next PDU's data digest (tests).
    pub corrupt_next_data: bool,
}

/// What the initiator asks for at login.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoginOptions {
    /// Offer only `HeaderDigest=CRC32C`.
    pub header_digest: bool,
    /// Offer only `DataDigest=CRC32C`.
    pub data_digest: bool,
    /// Last byte of the ISID (same name + same ISID = same session).
    pub isid_qualifier: u8,
    /// A discovery session (`SessionType=Discovery`, no target).
    pub discovery: bool,
}

/// What the target answered a task management request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfAnswer {
    /// A Task Management Function Response with this response code
    /// (0 = function complete, 5 = not supported, 255 = rejected).
    Response(u8),
    /// A Reject PDU with this reason code.
    Reject(u8),
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_dlen(b: &mut [u8], len: usize) {
    b[5] = (len >> 16) as u8;
    b[6] = (len >> 8) as u8;
    b[7] = len as u8;
}

fn lun_field(lun: u64) -> [u8; 8] {
    let mut l = [0u8; 8];
    if lun < 256 {
        l[1] = lun as u8;
    } else {
        l[0] = 0x40 | ((lun >> 8) as u8 & 0x3f);
        l[1] = lun as u8;
    }
    l
}

fn keys(text: &[u8]) -> Vec<(String, String)> {
    text.split(|&b| b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

fn text(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut t = Vec::new();
    for (k, v) in pairs {
        t.extend_from_slice(k.as_bytes());
        t.push(b'=');
        t.extend_from_slice(v.as_bytes());
        t.push(0);
    }
    t
}

fn proto(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Initiator {
    /// Connects to 127.0.0.1:`port` and logs in to `target` as `initiator`.
    pub fn login(port: u16, initiator: &str, target: &str, lun: u64) -> io::Result<Initiator> {
        Self::login_with(port, initiator, target, lun, LoginOptions::default())
    }

    /// Like [`Initiator::login`], with digests as `opts` says.
    pub fn login_with(
        port: u16,
        initiator: &str,
        target: &str,
        lun: u64,
        opts: LoginOptions,
    ) -> io::Result<Initiator> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut me = Initiator {
            sock,
            itt: 1,
            cmd_sn: 0,
            exp_stat_sn: 0,
            target_mrdsl: 8192,
            immediate_data: false,
            first_burst: 65536,
            lun,
            header_digest: false,
            data_digest: false,
            corrupt_next_header: false,
            corrupt_next_data: false,
        };
        let isid = [0x80, 0, 0, 0x51, 0x42, opts.isid_qualifier];
        // Security stage, then operational: iPXE's shape.
        let sec = if opts.discovery {
            text(&[
                ("InitiatorName", initiator),
                ("SessionType", "Discovery"),
                ("AuthMethod", "None"),
            ])
        } else {
            text(&[
                ("InitiatorName", initiator),
                ("TargetName", target),
                ("SessionType", "Normal"),
                ("AuthMethod", "None"),
            ])
        };
        let (flags, _) = me.login_step(isid, 0x81, &sec)?; // T, CSG=0, NSG=1
        let mut csg_nsg = flags & 0x0f;
        if flags & 0x80 == 0 || csg_nsg & 0x3 != 1 {
            return Err(proto(format!(
                "security stage did not transit: flags {flags:#x}"
            )));
        }
        let hd = if opts.header_digest { "CRC32C" } else { "None" };
        let dd = if opts.data_digest { "CRC32C" } else { "None" };
        let op = text(&[
            ("HeaderDigest", hd),
            ("DataDigest", dd),
            ("ImmediateData", "Yes"),
            ("InitialR2T", "No"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxBurstLength", "1048576"),
            ("FirstBurstLength", "262144"),
            ("MaxConnections", "1"),
            ("ErrorRecoveryLevel", "0"),
            ("DefaultTime2Wait", "0"),
            ("DefaultTime2Retain", "0"),
            ("MaxOutstandingR2T", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
        ]);
        let mut payload = op;
        for _ in 0..4 {
            let (flags, answer) = me.login_step(isid, 0x87, &payload)?; // T, CSG=1, NSG=3
            for (k, v) in keys(&answer) {
                match k.as_str() {
                    "MaxRecvDataSegmentLength" => me.target_mrdsl = v.parse().unwrap_or(8192),
                    "ImmediateData" => me.immediate_data = v == "Yes",
                    "FirstBurstLength" => me.first_burst = v.parse().unwrap_or(65536),
                    "HeaderDigest" if v != hd => {
                        return Err(proto(format!("target answered HeaderDigest={v}")))
                    }
                    "DataDigest" if v != dd => {
                        return Err(proto(format!("target answered DataDigest={v}")))
                    }
                    _ => {}
                }
            }
            csg_nsg = flags & 0x0f;
            if flags & 0x80 != 0 && csg_nsg & 0x3 == 3 {
                // Digests start with the first PDU after the final Login Response.
                me.header_digest = opts.header_digest;
                me.data_digest = opts.data_digest;
                return Ok(me);
            }
            payload = Vec::new();
        }
        Err(proto(format!(
            "login never reached full feature phase (flags {csg_nsg:#x})"
        )))
    }

    fn login_step(&mut self, isid: [u8; 6], flags: u8, data: &[u8]) -> io::Result<(u8, Vec<u8>)> {
        let mut h = [0u8; BHS];
        h[0] = 0x43;
        h[1] = flags;
        put_dlen(&mut h, data.len());
        h[8..14].copy_from_slice(&isid);
        put32(&mut h, 16, self.itt);
        put32(&mut h, 24, self.cmd_sn);
        put32(&mut h, 28, self.exp_stat_sn);
        self.send(&h, data)?;
        let (r, d) = self.recv()?;
        if r[0] & 0x3f != 0x23 {
            return Err(proto(format!(
                "expected Login Response, got opcode {:#x}",
                r[0]
            )));
        }
        if r[36] != 0 {
            return Err(proto(format!(
                "login refused: status class {} detail {}",
                r[36], r[37]
            )));
        }
        self.exp_stat_sn = be32(&r, 24).wrapping_add(1);
        Ok((r[1], d))
    }

    fn send(&mut self, bhs: &[u8; BHS], data: &[u8]) -> io::Result<()> {
        let mut pdu = Vec::with_capacity(BHS + 8 + pad4(data.len()));
        pdu.extend_from_slice(bhs);
        if self.header_digest {
            let mut d = crc32c::crc32c(bhs);
            if std::mem::take(&mut self.corrupt_next_header) {
                d ^= 1;
            }
            pdu.extend_from_slice(&d.to_le_bytes());
        }
        let at = pdu.len();
        pdu.extend_from_slice(data);
        pdu.resize(at + pad4(data.len()), 0);
        if self.data_digest && !data.is_empty() {
            let mut d = crc32c::crc32c(&pdu[at..]);
            if std::mem::take(&mut self.corrupt_next_data) {
                d ^= 1;
            }
            pdu.extend_from_slice(&d.to_le_bytes());
        }
        self.sock.write_all(&pdu)
    }

    fn recv(&mut self) -> io::Result<([u8; BHS], Vec<u8>)> {
        let mut h = [0u8; BHS];
        self.sock.read_exact(&mut h)?;
        let ahs = usize::from(h[4]) * 4;
        let dlen = (usize::from(h[5]) << 16) | (usize::from(h[6]) << 8) | usize::from(h[7]);
        let mut ahs_bytes = vec![0u8; ahs];
        self.sock.read_exact(&mut ahs_bytes)?;
        if self.header_digest {
            let mut d = [0u8; 4];
            self.sock.read_exact(&mut d)?;
            let want = crc32c::crc32c_append(crc32c::crc32c(&h), &ahs_bytes);
            if u32::from_le_bytes(d) != want {
                return Err(proto(format!(
                    "bad header digest from target on opcode {:#x}",
                    h[0]
                )));
            }
        }
        let mut rest = vec![0u8; pad4(dlen)];
        self.sock.read_exact(&mut rest)?;
        if self.data_digest && dlen > 0 {
            let mut d = [0u8; 4];
            self.sock.read_exact(&mut d)?;
            if u32::from_le_bytes(d) != crc32c::crc32c(&rest) {
                return Err(proto(format!(
                    "bad data digest from target on opcode {:#x}",
                    h[0]
                )));
            }
        }
        rest.truncate(dlen);
        Ok((h, rest))
    }

    /// Runs one SCSI command to completion. `write` is its Data-Out.
    pub fn command(&mut self, cdb: &[u8], write: &[u8], read_len: u32) -> io::Result<ScsiResult> {
        self.command_pausing(cdb, write, read_len, &mut || {})
    }

    /// Like [`Initiator::command`], calling `at_first_r2t` when the first
    /// R2T arrives, before any solicited Data-Out is sent (tests use it to
    /// act from another session while this command waits).
    pub fn command_pausing(
        &mut self,
        cdb: &[u8],
        write: &[u8],
        read_len: u32,
        at_first_r2t: &mut dyn FnMut(),
    ) -> io::Result<ScsiResult> {
        let mut paused = false;
        let itt = self.itt;
        self.itt = self.itt.wrapping_add(1);
        let mut h = [0u8; BHS];
        h[0] = 0x01;
        h[1] = 0x80 | 0x01; // F, SIMPLE
        if read_len > 0 {
            h[1] |= 0x40;
        }
        if !write.is_empty() {
            h[1] |= 0x20;
        }
        h[8..16].copy_from_slice(&lun_field(self.lun));
        put32(&mut h, 16, itt);
        let edtl = if write.is_empty() {
            read_len
        } else {
            write.len() as u32
        };
        put32(&mut h, 20, edtl);
        put32(&mut h, 24, self.cmd_sn);
        put32(&mut h, 28, self.exp_stat_sn);
        h[32..32 + cdb.len()].copy_from_slice(cdb);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        let imm = if self.immediate_data {
            write.len().min(self.first_burst).min(self.target_mrdsl)
        } else {
            0
        };
        put_dlen(&mut h, imm);
        self.send(&h, &write[..imm])?;
        let mut data = Vec::new();
        loop {
            let (r, d) = self.recv()?;
            match r[0] & 0x3f {
                // NOP-In: answer pings.
                0x20 => {
                    let ttt = be32(&r, 20);
                    if ttt != 0xffff_ffff {
                        let mut o = [0u8; BHS];
                        o[0] = 0x40;
                        o[1] = 0x80;
                        o[8..16].copy_from_slice(&r[8..16]);
                        put32(&mut o, 16, 0xffff_ffff);
                        put32(&mut o, 20, ttt);
                        put32(&mut o, 24, self.cmd_sn);
                        put32(&mut o, 28, self.exp_stat_sn);
                        put_dlen(&mut o, d.len());
                        self.send(&o, &d)?;
                    }
                }
                // R2T: send the asked range.
                0x31 => {
                    if !paused {
                        paused = true;
                        at_first_r2t();
                    }
                    let ttt = be32(&r, 20);
                    let offset = be32(&r, 40) as usize;
                    let len = be32(&r, 44) as usize;
                    let end = (offset + len).min(write.len());
                    let mut at = offset;
                    let mut data_sn = 0u32;
                    while at < end {
                        let n = (end - at).min(self.target_mrdsl);
                        let mut o = [0u8; BHS];
                        o[0] = 0x05;
                        if at + n == end {
                            o[1] = 0x80;
                        }
                        o[8..16].copy_from_slice(&lun_field(self.lun));
                        put32(&mut o, 16, itt);
                        put32(&mut o, 20, ttt);
                        put32(&mut o, 28, self.exp_stat_sn);
                        put32(&mut o, 36, data_sn);
                        put32(&mut o, 40, at as u32);
                        put_dlen(&mut o, n);
                        self.send(&o, &write[at..at + n])?;
                        at += n;
                        data_sn += 1;
                    }
                }
                // Data-In, maybe with status.
                0x25 => {
                    data.extend_from_slice(&d);
                    if r[1] & 0x01 != 0 {
                        self.exp_stat_sn = be32(&r, 24).wrapping_add(1);
                        return Ok(ScsiResult {
                            status: r[3],
                            response: 0,
                            sense: Vec::new(),
                            data,
                        });
                    }
                }
                // SCSI Response.
                0x21 => {
                    self.exp_stat_sn = be32(&r, 24).wrapping_add(1);
                    let sense = if d.len() >= 2 {
                        let n = usize::from(u16::from_be_bytes([d[0], d[1]]));
                        d[2..(2 + n).min(d.len())].to_vec()
                    } else {
                        Vec::new()
                    };
                    return Ok(ScsiResult {
                        status: r[3],
                        response: r[2],
                        sense,
                        data,
                    });
                }
                op => {
                    return Err(proto(format!(
                        "unexpected PDU opcode {op:#x} for a command"
                    )));
                }
            }
        }
    }

    /// Sends a write command of `edtl` bytes without any data, waits for its
    /// first R2T, then aborts it with ABORT TASK instead of sending data.
    /// Returns the TMF response code (0 = function complete).
    pub fn abort_at_first_r2t(&mut self, cdb: &[u8], edtl: u32) -> io::Result<u8> {
        let itt = self.itt;
        self.itt = self.itt.wrapping_add(1);
        let cmd_sn = self.cmd_sn;
        let mut h = [0u8; BHS];
        h[0] = 0x01;
        h[1] = 0x80 | 0x20 | 0x01; // F, W, SIMPLE
        h[8..16].copy_from_slice(&lun_field(self.lun));
        put32(&mut h, 16, itt);
        put32(&mut h, 20, edtl);
        put32(&mut h, 24, cmd_sn);
        put32(&mut h, 28, self.exp_stat_sn);
        h[32..32 + cdb.len()].copy_from_slice(cdb);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(&h, &[])?;
        let (r, _) = self.recv()?;
        match r[0] & 0x3f {
            0x31 => {}
            0x21 => {
                self.exp_stat_sn = be32(&r, 24).wrapping_add(1);
                return Err(proto(format!("status {:#x} instead of an R2T", r[3])));
            }
            op => return Err(proto(format!("unexpected opcode {op:#x}"))),
        }
        let mut t = [0u8; BHS];
        t[0] = 0x40 | 0x02; // immediate Task Management Function Request
        t[1] = 0x80 | 0x01; // ABORT TASK
        t[8..16].copy_from_slice(&lun_field(self.lun));
        put32(&mut t, 16, self.itt);
        self.itt = self.itt.wrapping_add(1);
        put32(&mut t, 20, itt);
        put32(&mut t, 24, self.cmd_sn);
        put32(&mut t, 28, self.exp_stat_sn);
        put32(&mut t, 32, cmd_sn);
        self.send(&t, &[])?;
        loop {
            let (r, _) = self.recv()?;
            match r[0] & 0x3f {
                // More R2Ts for the aborted command may still come.
                0x31 => {}
                0x22 => {
                    self.exp_stat_sn = be32(&r, 24).wrapping_add(1);
                    return Ok(r[2]);
                }
                op => return Err(proto(format!("unexpected opcode {op:#x} after ABORT TASK"))),
            }
        }
    }

    /// This initiator's TCP port (to find the connection in `ss`).
    pub fn local_port(&self) -> u16 {
        self.sock.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Sends task management function `function` (5 = LOGICAL UNIT RESET,
    /// 6 = TARGET WARM RESET, 7 = TARGET COLD RESET) for this initiator's
    /// LUN, as an immediate request, and returns the target's answer.
    pub fn task_management(&mut self, function: u8) -> io::Result<TmfAnswer> {
        let mut t = [0u8; BHS];
        t[0] = 0x40 | 0x02; // immediate Task Management Function Request
        t[1] = 0x80 | function;
        t[8..16].copy_from_slice(&lun_field(self.lun));
        put32(&mut t, 16, self.itt);
        self.itt = self.itt.wrapping_add(1);
        put32(&mut t, 20, 0xffff_ffff);
        put32(&mut t, 24, self.cmd_sn);
        put32(&mut t, 28, self.exp_stat_sn);
        self.send(&t, &[])?;
        let (r, _) = self.recv()?;
        match r[0] & 0x3f {
            0x22 => {
                self.exp_stat_sn = be32(&r, 24).wrapping_add(1);
                Ok(TmfAnswer::Response(r[2]))
            }
            0x3f => Ok(TmfAnswer::Reject(r[2])),
            op => Err(proto(format!(
                "unexpected opcode {op:#x} after a TMF request"
            ))),
        }
    }

    /// WRITE(10) of whole 512-byte blocks at `lba`.
    pub fn write10(&mut self, lba: u32, data: &[u8], fua: bool) -> io::Result<ScsiResult> {
        let blocks = (data.len() / 512) as u16;
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        if fua {
            cdb[1] = 0x08;
        }
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.command(&cdb, data, 0)
    }

    /// READ(10) of `blocks` 512-byte blocks at `lba`.
    pub fn read10(&mut self, lba: u32, blocks: u16) -> io::Result<ScsiResult> {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.command(&cdb, &[], u32::from(blocks) * 512)
    }

    /// SYNCHRONIZE CACHE(10) of the whole LUN.
    pub fn sync_cache(&mut self) -> io::Result<ScsiResult> {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x35;
        self.command(&cdb, &[], 0)
    }

    /// Plays a station that vanished: answers nothing, only reads what the
    /// target sends until it closes the connection (or `timeout` passes).
    /// Returns the (ITT, TTT) of every NOP-In received.
    pub fn silent_until_closed(&mut self, timeout: Duration) -> io::Result<Vec<(u32, u32)>> {
        self.sock.set_read_timeout(Some(timeout))?;
        let mut pings = Vec::new();
        loop {
            match self.recv() {
                Ok((h, _)) if h[0] & 0x3f == 0x20 => pings.push((be32(&h, 16), be32(&h, 20))),
                Ok((h, _)) => {
                    return Err(proto(format!("unexpected PDU opcode {:#x}", h[0] & 0x3f)))
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(pings),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(pings),
                Err(e) => return Err(e),
            }
        }
    }

    /// TEST UNIT READY until GOOD (the first answers carry unit attentions).
    pub fn ready(&mut self) -> io::Result<()> {
        for _ in 0..5 {
            if self.command(&[0u8; 6], &[], 0)?.status == 0 {
                return Ok(());
            }
        }
        Err(proto("TEST UNIT READY never returned GOOD".into()))
    }
}
