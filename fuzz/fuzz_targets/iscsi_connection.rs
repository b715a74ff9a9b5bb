#![no_main]
//! The connection machine fed an arbitrary byte stream in arbitrary chunks
//! (after iPXE's real login, or from scratch), with a RAM-disk backend that
//! completes storage now or later and out of order. It must never panic,
//! every PDU it sends must parse, and timeouts/aborts afterwards are clean.
use libfuzzer_sys::fuzz_target;
use sanboot_core::iscsi::pdu::{pdu_len, Bhs, Digests, TmfFunction, BHS_LEN};
use sanboot_core::iscsi::*;
use sanboot_core::time::Instant;

const BLOCKS: u64 = 64;
const LOGIN: &[u8] = include_bytes!("../../core/src/iscsi/testdata/ipxe-login.bin");

struct Ram {
    disk: [u8; (BLOCKS * 512) as usize],
}

fn sense(buf: &mut [u8]) -> Plan {
    let s = [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0];
    let n = s.len().min(buf.len());
    buf[..n].copy_from_slice(&s[..n]);
    Plan::Complete {
        status: 2,
        data_len: 0,
        sense_len: n as u32,
    }
}

impl Backend for Ram {
    fn scsi_command(&mut self, req: &ScsiRequest<'_>, buf: &mut [u8]) -> Plan {
        let c = req.cdb;
        let lba = u64::from(u32::from_be_bytes([c[2], c[3], c[4], c[5]]));
        let n = u64::from(u16::from_be_bytes([c[7], c[8]]));
        match c[0] {
            0x00 => Plan::Complete {
                status: 0,
                data_len: 0,
                sense_len: 0,
            },
            0x12 | 0x25 => {
                let n = 36.min(buf.len());
                buf[..n].fill(0x20);
                Plan::Complete {
                    status: 0,
                    data_len: n as u32,
                    sense_len: 0,
                }
            }
            0x28 | 0x2a | 0x2e if lba + n <= BLOCKS => {
                let (offset, len) = (lba * 512, (n * 512) as u32);
                match c[0] {
                    0x28 => Plan::Read { offset, len },
                    0x2a => Plan::Write {
                        offset,
                        len,
                        fua: c[1] & 8 != 0,
                    },
                    _ => Plan::ReceiveParameters { len: len.min(256) },
                }
            }
            0x35 => Plan::Flush,
            _ => sense(buf),
        }
    }
    fn scsi_resume(&mut self, _req: &ScsiRequest<'_>, why: Resume, buf: &mut [u8]) -> Plan {
        match why {
            Resume::Storage(Err(_)) => sense(buf),
            _ => Plan::Complete {
                status: 0,
                data_len: 4.min(buf.len() as u32),
                sense_len: 0,
            },
        }
    }
    fn task_management(&mut self, _: u64, _: usize, _: u64, _: TmfFunction) -> TmfOutcome {
        TmfOutcome::Complete
    }
    fn nexus_lost(&mut self, _: u64) {}
    fn write_data(&mut self, chunk: WriteChunk<'_>) {
        let at = chunk.offset as usize;
        let dst = self
            .disk
            .get_mut(at..at + chunk.data.len())
            .expect("write inside the disk");
        dst.copy_from_slice(chunk.data);
    }
    fn read_data(&mut self, chunk: ReadChunk<'_>) -> Result<(), sanboot_core::scsi::IoError> {
        let at = chunk.offset as usize;
        let src = self
            .disk
            .get(at..at + chunk.dst.len())
            .expect("read inside the disk");
        chunk.dst.copy_from_slice(src);
        // Some reads fail: the command must end in CHECK CONDITION, not data.
        if chunk.dst.first() == Some(&0xee) {
            return Err(sanboot_core::scsi::IoError::Read);
        }
        Ok(())
    }
}

static TARGETS: [TargetConfig<'static>; 1] = [TargetConfig {
    name: "iqn.2024-01.test.e2e:sanboot",
    initiators: &[],
    chap: None,
    mutual_chap: None,
    initiator_chap: &[],
    luns: &[0, 1],
    digest: sanboot_core::iscsi::DigestPolicy::Allowed,
}];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let targets = Targets {
        targets: &TARGETS,
        portal: "192.0.2.1:3260",
        portal_group_tag: 1,
    };
    let mut limits = TargetLimits::default();
    limits.max_recv_data_segment_length = 16384;
    let mut conn: Connection<8, 512> = Connection::new(Instant::from_millis(0), 1, limits, [9; 16]);
    let mut sessions: SessionTable<2> = SessionTable::new();
    let mut ram = Ram {
        disk: [0; (BLOCKS * 512) as usize],
    };
    let mut pending: Vec<IoId> = Vec::new();
    let mut tx = vec![0u8; 70_000];
    let mut now = 0u64;

    // Optionally log in with iPXE's real bytes first, so most input exercises full feature phase.
    let mut stream: Vec<u8> = Vec::new();
    if mode & 1 == 0 {
        stream.extend_from_slice(LOGIN);
    }
    stream.extend_from_slice(data);

    let mut rx: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut step = 0usize;
    while at < stream.len() || !pending.is_empty() {
        step += 1;
        // chunk size from the mode byte and position: 1..=4096 bytes
        let chunk = 1 + ((mode as usize >> 1) * 37 + step * 131) % 4096;
        let end = (at + chunk).min(stream.len());
        rx.extend_from_slice(&stream[at..end]);
        at = end;
        let mut used = 0;
        loop {
            let n = conn.handle_input(Instant::from_millis(now), &rx[used..], &targets, &mut ram);
            if n == 0 {
                break;
            }
            used += n;
        }
        rx.drain(..used);
        if rx.len() > conn.max_pdu_len() {
            break;
        }
        while let Some(ev) = conn.poll_event() {
            if let Event::SessionRequest(req) = ev {
                let name: String = conn.initiator_name().into();
                match sessions.admit(&name, &req, 1) {
                    Ok(a) => conn.session_admitted(&a),
                    Err(s) => conn.session_refused(s),
                }
            }
        }
        while let Some(req) = conn.poll_storage() {
            match req {
                StorageRequest::Release { .. } => {}
                r => pending.push(r.io()),
            }
        }
        // Complete some storage now, in an input-dependent order.
        let k = step % 3;
        while pending.len() > k || (at >= stream.len() && !pending.is_empty()) {
            let i = (step * 7) % pending.len();
            let io = pending.swap_remove(i);
            let res = if (step + i) % 11 == 0 {
                Err(sanboot_core::scsi::IoError::Read)
            } else {
                Ok(())
            };
            conn.complete_storage(Instant::from_millis(now), io, res, &mut ram);
            while let Some(req) = conn.poll_storage() {
                if !matches!(req, StorageRequest::Release { .. }) {
                    pending.push(req.io());
                }
            }
        }
        while let Some(n) = conn.poll_transmit(Instant::from_millis(now), &mut tx, &mut ram) {
            assert!(n >= BHS_LEN && n <= tx.len());
            let bhs = Bhs::new_checked(&tx[..n]).expect("our PDU has a BHS");
            let d = if conn.is_full_feature() {
                conn.params().header_digest
            } else {
                false
            };
            let l = pdu_len(
                &bhs,
                Digests {
                    header: d,
                    data: conn.params().data_digest && conn.is_full_feature(),
                },
            );
            assert!(l.data_len <= 70_000);
        }
        now += 100;
        if step > 10_000 {
            break;
        }
    }
    conn.handle_timeout(Instant::from_millis(now + 60_000));
    conn.abort(&mut ram);
    while conn.poll_storage().is_some() {}
    assert!(conn.is_closed());
});
