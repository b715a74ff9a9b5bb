//! Data transfer: R2T, immediate data, residuals, DataSN, CmdSN window, digests.

use super::*;

/// Log in straight to full feature phase (CSG=1, NSG=3) with `ops` keys.
pub(crate) fn logged_in_with(ops: &str, limits: TargetLimits) -> Harness<'static> {
    login_with(Harness::new(portal(targets(None, None)), limits), ops)
}

/// Log `h` in straight to full feature phase with `ops` keys.
pub(crate) fn login_with(mut h: Harness<'static>, ops: &str) -> Harness<'static> {
    let text = std::format!(
        "InitiatorName=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test\nTargetName={TARGET}\nSessionType=Normal\n{ops}\n"
    );
    let r = h.feed(&login_pdu(
        Stage::Operational,
        Stage::FullFeature,
        true,
        1,
        0,
        0,
        &text,
    ));
    assert_eq!(r.len(), 1);
    let resp = LoginResponse::parse(&bhs(&r[0])).unwrap();
    assert_eq!(
        (resp.status_class, resp.status_detail),
        (0, 0),
        "{:?}",
        keys(&r[0])
    );
    assert!(h.conn.is_full_feature());
    h.clear_unit_attentions();
    h
}

pub(crate) fn r2ts(out: &[Vec<u8>]) -> Vec<R2t> {
    out.iter()
        .filter(|p| bhs(p).opcode() == Opcode::R2t)
        .map(|p| R2t::parse(&bhs(p)).unwrap())
        .collect()
}

pub(crate) fn response(out: &[Vec<u8>]) -> ScsiResponse {
    let p = out
        .iter()
        .find(|p| bhs(p).opcode() == Opcode::ScsiResponse)
        .expect("a SCSI Response");
    ScsiResponse::parse(&bhs(p)).unwrap()
}

pub(crate) fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

#[test]
fn r2t_write_flow_with_bursts() {
    let mut h = logged_in_with(
        "InitialR2T=Yes\nImmediateData=No\nMaxBurstLength=16384\nMaxOutstandingR2T=2\nMaxRecvDataSegmentLength=8192",
        TargetLimits::default(),
    );
    let data = pattern(65536, 0x5a);
    let out = h.feed(&command(
        7,
        0,
        &write10(10, 128),
        65536,
        false,
        true,
        &[],
        true,
    ));
    let r = r2ts(&out);
    assert_eq!(r.len(), 2, "MaxOutstandingR2T=2");
    assert_eq!(
        (r[0].buffer_offset, r[0].desired_len, r[0].r2t_sn),
        (0, 16384, 0)
    );
    assert_eq!(
        (r[1].buffer_offset, r[1].desired_len, r[1].r2t_sn),
        (16384, 16384, 1)
    );
    let mut seen = r;
    let mut offset = 0u32;
    let mut final_out = Vec::new();
    while offset < 65536 {
        let r2t = seen.remove(0);
        assert_eq!(r2t.buffer_offset, offset);
        for (sn, chunk) in
            (0..).zip(data[offset as usize..(offset + r2t.desired_len) as usize].chunks(8192))
        {
            let last = (sn + 1) * 8192 >= r2t.desired_len;
            let out = h.feed(&data_out(7, r2t.ttt, sn, offset, chunk, last));
            offset += chunk.len() as u32;
            seen.extend(r2ts(&out));
            if offset == 65536 {
                final_out = out;
            }
        }
    }
    let s = response(&final_out);
    assert_eq!(s.status, 0);
    assert_eq!(s.residual, Residual::None);
    assert_eq!(s.exp_data_sn, 4, "ExpDataSN counts the R2Ts");
    assert_eq!(&h.disk(1)[10 * 512..10 * 512 + 65536], &data[..]);
    assert_eq!(h.writes, 1, "one storage write for the whole command");
    assert_eq!(
        h.luns.disk(1).written,
        65536,
        "every byte reached the disk once"
    );
}

#[test]
fn immediate_and_unsolicited_data_then_r2t() {
    let mut h = logged_in_with(
        "InitialR2T=No\nImmediateData=Yes\nFirstBurstLength=8192\nMaxBurstLength=65536",
        TargetLimits::default(),
    );
    let data = pattern(16384, 3);
    // 4 KiB immediate, F=0: more unsolicited data follows.
    let out = h.feed(&command(
        9,
        0,
        &write10(0, 32),
        16384,
        false,
        true,
        &data[..4096],
        false,
    ));
    assert!(out.is_empty(), "no R2T while the unsolicited burst is open");
    let out = h.feed(&data_out(9, RESERVED_TAG, 0, 4096, &data[4096..8192], true));
    let r = r2ts(&out);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].buffer_offset, r[0].desired_len), (8192, 8192));
    let out = h.feed(&data_out(9, r[0].ttt, 0, 8192, &data[8192..], true));
    assert_eq!(response(&out).status, 0);
    assert_eq!(&h.disk(1)[..16384], &data[..]);
}

#[test]
fn immediate_data_covering_everything_needs_no_r2t() {
    let mut h = logged_in_with("InitialR2T=Yes\nImmediateData=Yes", TargetLimits::default());
    let data = pattern(1024, 9);
    let out = h.feed(&command(
        1,
        0,
        &write10(5, 2),
        1024,
        false,
        true,
        &data,
        true,
    ));
    assert!(r2ts(&out).is_empty());
    assert_eq!(response(&out).status, 0);
    assert_eq!(&h.disk(1)[5 * 512..5 * 512 + 1024], &data[..]);
}

#[test]
fn bad_data_sn_fails_the_command_not_the_connection() {
    let mut h = logged_in_with("InitialR2T=Yes\nImmediateData=No", TargetLimits::default());
    // Two Data-Out in one R2T sequence, both DataSN 0 (libiscsi's first case).
    let out = h.feed(&command(
        3,
        0,
        &write10(100, 2),
        1024,
        false,
        true,
        &[],
        true,
    ));
    let r = r2ts(&out);
    assert!(h
        .feed(&data_out(3, r[0].ttt, 0, 0, &[1; 512], false))
        .is_empty());
    let out = h.feed(&data_out(3, r[0].ttt, 0, 512, &[1; 512], true));
    let s = response(&out);
    assert_eq!(s.status, 2);
    assert_eq!((out[0][50 + 2], out[0][50 + 12]), (0x0b, 0x4b));
    assert_eq!(h.conn.stats().data_sequence_errors, 1);
    assert!(!h.closed);
    // DataSN 27 on an unsolicited burst, then late Data-Out: ignored.
    let mut h = logged_in_with("InitialR2T=No\nImmediateData=No", TargetLimits::default());
    assert!(h
        .feed(&command(
            4,
            0,
            &write10(100, 2),
            1024,
            false,
            true,
            &[],
            false
        ))
        .is_empty());
    let out = h.feed(&data_out(4, RESERVED_TAG, 27, 0, &[1; 512], false));
    assert_eq!(response(&out).status, 2);
    assert!(h
        .feed(&data_out(4, RESERVED_TAG, 1, 512, &[1; 512], true))
        .is_empty());
    assert_eq!(h.conn.stats().stray_data_out, 1);
    // the session goes on
    let out = h.feed(&command(5, 1, &[0u8; 6], 0, false, false, &[], true));
    assert_eq!(response(&out).status, 0);
    assert!(!h.closed);
}

#[test]
fn cmdsn_window() {
    let mut h = ipxe_logged_in(TargetLimits::default());
    let tur = [0u8; 6];
    let out = h.feed(&command(1, 0, &tur, 0, false, false, &[], true));
    let s = response(&out);
    assert_eq!(s.exp_cmd_sn, 1);
    let max = s.max_cmd_sn;
    // Beyond MaxCmdSN: silently ignored.
    assert!(h
        .feed(&command(
            2,
            max.wrapping_add(1),
            &tur,
            0,
            false,
            false,
            &[],
            true
        ))
        .is_empty());
    // Below ExpCmdSN (a duplicate): ignored too.
    assert!(h
        .feed(&command(3, 0, &tur, 0, false, false, &[], true))
        .is_empty());
    assert_eq!(h.conn.stats().cmdsn_dropped, 2);
    // The expected one still works.
    let s = response(&h.feed(&command(4, 1, &tur, 0, false, false, &[], true)));
    assert_eq!((s.itt, s.exp_cmd_sn), (4, 2));
}

#[test]
fn read_residuals() {
    let mut h = ipxe_logged_in(TargetLimits::default());
    // EDTL smaller than the read: EDTL bytes, overflow.
    let out = h.feed(&command(1, 0, &read10(0, 2), 600, true, false, &[], true));
    let d = DataIn::parse(&bhs(&out[0])).unwrap();
    assert_eq!(d.data_len, 600);
    assert_eq!(d.residual, Residual::Overflow(424));
    // EDTL larger: underflow.
    let out = h.feed(&command(2, 1, &read10(0, 1), 4096, true, false, &[], true));
    let d = DataIn::parse(&bhs(&out[0])).unwrap();
    assert_eq!(d.data_len, 512);
    assert_eq!(d.residual, Residual::Underflow(3584));
    // EDTL 0: no Data-In at all, overflow in the response.
    let out = h.feed(&command(3, 2, &read10(0, 1), 0, true, false, &[], true));
    assert_eq!(out.len(), 1);
    assert_eq!(response(&out).residual, Residual::Overflow(512));
}

#[test]
fn write_residuals() {
    let mut h = logged_in_with("InitialR2T=Yes\nImmediateData=Yes", TargetLimits::default());
    let before = h.disk(1)[..512].to_vec();
    // EDTL 200 < one block: GOOD, only the 200 bytes are written, overflow.
    let out = h.feed(&command(
        1,
        0,
        &write10(0, 1),
        200,
        false,
        true,
        &[0x62; 200],
        true,
    ));
    let s = response(&out);
    assert_eq!(s.status, 0);
    assert_eq!(s.residual, Residual::Overflow(312));
    assert_eq!(&h.disk(1)[..200], &[0x62; 200][..]);
    assert_eq!(&h.disk(1)[200..512], &before[200..]);
    // EDTL 0: nothing written, overflow of the whole block.
    let out = h.feed(&command(3, 1, &write10(1, 1), 0, false, true, &[], true));
    let s = response(&out);
    assert_eq!((s.status, s.residual), (0, Residual::Overflow(512)));
    // EDTL 1024 > one block: write one block, underflow 512.
    let out = h.feed(&command(
        2,
        2,
        &write10(0, 1),
        1024,
        false,
        true,
        &[0x62; 1024],
        true,
    ));
    let s = response(&out);
    assert_eq!(s.status, 0);
    assert_eq!(s.residual, Residual::Underflow(512));
    assert_eq!(&h.disk(1)[..512], &[0x62; 512][..]);
    assert_ne!(&h.disk(1)[512..1024], &[0x62; 512][..]);
}

#[test]
fn completions_out_of_order() {
    let mut h = ipxe_logged_in(TargetLimits::default());
    h.sync_storage = false;
    assert!(h
        .feed(&command(1, 0, &read10(0, 1), 512, true, false, &[], true))
        .is_empty());
    assert!(h
        .feed(&command(2, 1, &read10(8, 1), 512, true, false, &[], true))
        .is_empty());
    assert_eq!(h.pending.len(), 2);
    let second = h.pending.pop().unwrap();
    let out = h.complete(second);
    assert_eq!(DataIn::parse(&bhs(&out[0])).unwrap().itt, 2);
    assert_eq!(&out[0][48..48 + 512], &h.disk(1)[8 * 512..9 * 512]);
    let first = h.pending.pop().unwrap();
    let out = h.complete(first);
    assert_eq!(DataIn::parse(&bhs(&out[0])).unwrap().itt, 1);
    // A late duplicate completion is counted, not acted on.
    h.complete(first);
    assert_eq!(h.conn.stats().stray_completions, 1);
}

#[test]
fn parameter_list_via_r2t() {
    let mut h = logged_in_with("InitialR2T=Yes\nImmediateData=No", TargetLimits::default());
    let out = h.feed(&command(
        5,
        0,
        &[0x15, 0x10, 0, 0, 12, 0],
        12,
        false,
        true,
        &[],
        true,
    ));
    let r = r2ts(&out);
    assert_eq!(r[0].desired_len, 12);
    // A mode parameter header and one block descriptor restating the
    // block length (512): all a MODE SELECT may change about it.
    let list = [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 2, 0];
    let out = h.feed(&data_out(5, r[0].ttt, 0, 0, &list, true));
    assert_eq!(response(&out).status, 0);
}

#[test]
fn nop_tmf_and_logout() {
    let mut h = ipxe_logged_in(TargetLimits::default());
    // NOP-Out ping with data is echoed.
    let mut p = vec![0u8; 48 + 8];
    NopOut {
        immediate: true,
        lun: 0,
        itt: 0x77,
        ttt: RESERVED_TAG,
        cmd_sn: 0,
        exp_stat_sn: 2,
        data_len: 5,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..48]));
    p[48..53].copy_from_slice(b"hello");
    let out = h.feed(&p);
    let n = NopIn::parse(&bhs(&out[0])).unwrap();
    assert_eq!((n.itt, n.ttt, n.data_len), (0x77, RESERVED_TAG, 5));
    assert_eq!(&out[0][48..53], b"hello");

    // ABORT TASK on a read still waiting for storage.
    h.sync_storage = false;
    assert!(h
        .feed(&command(
            0x10,
            0,
            &read10(0, 1),
            512,
            true,
            false,
            &[],
            true
        ))
        .is_empty());
    let mut t = [0u8; 48];
    TaskMgmtRequest {
        immediate: true,
        function: TmfFunction::AbortTask,
        lun: 1 << 48,
        itt: 0x11,
        ref_task_tag: 0x10,
        cmd_sn: 1,
        exp_stat_sn: 0,
        ref_cmd_sn: 0,
        exp_data_sn: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut t[..]));
    let out = h.feed(&t);
    let r = TaskMgmtResponse::parse(&bhs(&out[0])).unwrap();
    assert_eq!((r.itt, r.response), (0x11, TmfResponse::Complete));
    // The storage completion arrives later: nothing is sent for the aborted task.
    let io = h.pending.pop().unwrap();
    assert!(h.complete(io).is_empty());

    // LUN RESET reaches the SCSI layer.
    h.sync_storage = true;
    TaskMgmtRequest {
        immediate: true,
        function: TmfFunction::LogicalUnitReset,
        lun: 1 << 48,
        itt: 0x12,
        ref_task_tag: RESERVED_TAG,
        cmd_sn: 1,
        exp_stat_sn: 0,
        ref_cmd_sn: 0,
        exp_data_sn: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut t[..]));
    let out = h.feed(&t);
    assert_eq!(
        TaskMgmtResponse::parse(&bhs(&out[0])).unwrap().response,
        TmfResponse::Complete
    );
    assert_eq!(h.luns.target().resets, [Reset::Lun(1)]);

    // Logout closes the session.
    let mut l = [0u8; 48];
    LogoutRequest {
        immediate: true,
        reason: LogoutReason::CloseSession,
        itt: 0x20,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut l[..]));
    let out = h.feed(&l);
    let r = LogoutResponse::parse(&bhs(&out[0])).unwrap();
    assert_eq!((r.itt, r.response), (0x20, 0));
    assert!(h.closed);
    assert_eq!(h.conn.close_reason(), Some(CloseReason::Logout));
    assert_eq!(h.luns.target().lost, [NEXUS_SLOT]);
}

#[test]
fn unknown_opcode_is_rejected_and_connection_survives() {
    let mut h = ipxe_logged_in(TargetLimits::default());
    let mut p = [0u8; 48];
    p[0] = 0x1c; // vendor-specific initiator opcode
    p[16..20].copy_from_slice(&[0, 0, 0, 9]);
    let out = h.feed(&p);
    let rj = Reject::parse(&bhs(&out[0])).unwrap();
    assert_eq!(rj.reason, RejectReason::CommandNotSupported);
    assert_eq!(&out[0][48..96], &p[..]);
    let out = h.feed(&command(1, 0, &[0u8; 6], 0, false, false, &[], true));
    assert_eq!(response(&out).status, 0);
}

/// Build a PDU with digests from a plain one.
fn with_digests(p: &[u8]) -> Vec<u8> {
    let l = pdu_len(&bhs(p), Digests::default());
    let mut out = p[..48].to_vec();
    out.extend_from_slice(&crc32c::crc32c(&p[..48]).to_le_bytes());
    if l.data_len > 0 {
        let data = &p[48..48 + pad4(l.data_len)];
        out.extend_from_slice(data);
        out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    }
    out
}

#[test]
fn digests_on() {
    let mut h = logged_in_with(
        "HeaderDigest=CRC32C,None\nDataDigest=CRC32C,None\nImmediateData=Yes\nInitialR2T=Yes",
        TargetLimits::default(),
    );
    // a write with immediate data, digests on both segments
    let data = pattern(512, 1);
    let out = h.feed(&with_digests(&command(
        1,
        0,
        &write10(3, 1),
        512,
        false,
        true,
        &data,
        true,
    )));
    assert_eq!(out.len(), 1);
    let p = &out[0];
    assert_eq!(p.len(), 52);
    assert_eq!(&p[48..52], &crc32c::crc32c(&p[..48]).to_le_bytes());
    assert_eq!(&h.disk(1)[3 * 512..4 * 512], &data[..]);
    // a read: header digest, data, data digest
    let out = h.feed(&with_digests(&command(
        2,
        1,
        &read10(3, 1),
        512,
        true,
        false,
        &[],
        true,
    )));
    let p = &out[0];
    assert_eq!(p.len(), 48 + 4 + 512 + 4);
    assert_eq!(&p[52..564], &data[..]);
    assert_eq!(&p[564..568], &crc32c::crc32c(&data).to_le_bytes());
    // a bad data digest: Reject, the connection stays up
    let mut bad = with_digests(&command(
        3,
        2,
        &write10(3, 1),
        512,
        false,
        true,
        &data,
        true,
    ));
    let n = bad.len();
    bad[n - 1] ^= 1;
    let out = h.feed(&bad);
    assert_eq!(
        Reject::parse(&bhs(&out[0][..48])).unwrap().reason,
        RejectReason::DataDigestError
    );
    // a bad header digest: the connection is dropped
    let mut bad = with_digests(&command(4, 2, &[0u8; 6], 0, false, false, &[], true));
    bad[49] ^= 1;
    h.feed(&bad);
    assert!(h.closed);
    assert_eq!(h.conn.close_reason(), Some(CloseReason::ProtocolError));
    assert_eq!(h.conn.stats().digest_errors, 2);
}

/// The iPXE stream delivered one byte at a time: 0 until a PDU is whole,
/// and the same answers as with whole PDUs.
#[test]
fn byte_at_a_time_input() {
    let stream = hex(include_str!("../testdata/ipxe-stream.hex"));
    let mut h = Harness::new(portal(targets(None, None)), TargetLimits::default());
    let mut rx: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for &b in &stream {
        rx.push(b);
        let n = h.input(&rx);
        if n > 0 {
            assert_eq!(n, rx.len(), "a PDU is consumed exactly when complete");
            rx.clear();
            out.extend(h.drain());
        }
    }
    assert!(rx.is_empty());
    // 2 login responses, 2 TUR responses, READ CAPACITY, 6 READs
    assert_eq!(out.len(), 11);
    assert!(h.conn.is_full_feature());
}

/// Seeded random mix of reads and writes of random sizes with storage
/// completed in random order; the disk must match a model afterwards and
/// every read must return the model's bytes.
#[test]
fn random_io_against_model() {
    let mut h = logged_in_with(
        "InitialR2T=No\nImmediateData=Yes\nFirstBurstLength=4096\nMaxBurstLength=8192\nMaxOutstandingR2T=2\nMaxRecvDataSegmentLength=4096",
        TargetLimits::default(),
    );
    h.sync_storage = false;
    let mut model = h.disk(1).to_vec();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..200u32 {
        let cmd_sn = round;
        let itt = 0x1000 + round;
        // Stay inside the advertised CmdSN window (8 slots, 1 kept for immediates).
        while h.pending.len() >= 6 {
            let io = h.pending.remove(0);
            h.complete(io);
        }
        let lba = rnd(2000) as u32;
        let blocks = 1 + rnd(40) as u16;
        let len = u32::from(blocks) * 512;
        if rnd(2) == 0 {
            let data = pattern(len as usize, round as u8);
            let imm = (rnd(3) as usize * 1024).min(len as usize);
            let unsolicited = imm < 4096 && rnd(2) == 0;
            let mut out = h.feed(&command(
                itt,
                cmd_sn,
                &write10(lba, blocks),
                len,
                false,
                true,
                &data[..imm],
                !unsolicited,
            ));
            let mut offset = imm as u32;
            if unsolicited {
                let end = 4096.min(len);
                let mut sn = 0;
                while offset < end {
                    let n = (end - offset).min(1024);
                    out.extend(h.feed(&data_out(
                        itt,
                        RESERVED_TAG,
                        sn,
                        offset,
                        &data[offset as usize..(offset + n) as usize],
                        offset + n == end,
                    )));
                    offset += n;
                    sn += 1;
                }
            }
            let mut queue = r2ts(&out);
            while let Some(r) = (!queue.is_empty()).then(|| queue.remove(0)) {
                let mut sn = 0;
                let mut o = r.buffer_offset;
                while o < r.buffer_offset + r.desired_len {
                    let n = (r.buffer_offset + r.desired_len - o).min(4096);
                    let last = o + n == r.buffer_offset + r.desired_len;
                    queue.extend(r2ts(&h.feed(&data_out(
                        itt,
                        r.ttt,
                        sn,
                        o,
                        &data[o as usize..(o + n) as usize],
                        last,
                    ))));
                    o += n;
                    sn += 1;
                }
            }
            model[lba as usize * 512..(lba as usize * 512 + len as usize)].copy_from_slice(&data);
        } else {
            h.feed(&command(
                itt,
                cmd_sn,
                &read10(lba, blocks),
                len,
                true,
                false,
                &[],
                true,
            ));
        }
        // complete a random subset of pending storage, in random order
        while !h.pending.is_empty() && rnd(3) != 0 {
            let i = rnd(h.pending.len() as u64) as usize;
            let io = h.pending.swap_remove(i);
            for p in h.complete(io) {
                if bhs(&p).opcode() == Opcode::DataIn {
                    let d = DataIn::parse(&bhs(&p)).unwrap();
                    assert!(d.data_len <= 4096);
                }
                if bhs(&p).opcode() == Opcode::ScsiResponse {
                    assert_eq!(ScsiResponse::parse(&bhs(&p)).unwrap().status, 0);
                }
            }
        }
    }
    while let Some(io) = h.pending.pop() {
        h.complete(io);
    }
    assert_eq!(
        h.conn.stats(),
        Stats {
            pdus_in: h.conn.stats().pdus_in,
            pdus_out: h.conn.stats().pdus_out,
            ..Stats::default()
        }
    );
    let first_diff = h.disk(1).iter().zip(&model).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "disk differs from the model");
    assert_eq!(h.conn.stats().protocol_errors, 0);
    assert_eq!(h.conn.stats().cmdsn_dropped, 0);
}

pub(crate) fn tmf(
    function: TmfFunction,
    itt: u32,
    ref_itt: u32,
    cmd_sn: u32,
    ref_cmd_sn: u32,
) -> [u8; 48] {
    let mut t = [0u8; 48];
    TaskMgmtRequest {
        immediate: true,
        function,
        lun: 1 << 48,
        itt,
        ref_task_tag: ref_itt,
        cmd_sn,
        exp_stat_sn: 0,
        ref_cmd_sn,
        exp_data_sn: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut t[..]));
    t
}

#[test]
fn abort_of_a_finished_task_and_cold_reset() {
    let mut h = ipxe_logged_in(TargetLimits::default());
    let out = h.feed(&command(1, 0, &[0u8; 6], 0, false, false, &[], true));
    assert_eq!(response(&out).status, 0);
    // the TUR is done: "task does not exist" (libiscsi accepts this outcome)
    let out = h.feed(&tmf(TmfFunction::AbortTask, 2, 1, 1, 0));
    let r = TaskMgmtResponse::parse(&bhs(&out[0])).unwrap();
    assert_eq!(r.response, TmfResponse::NoSuchTask);
    // a task that never arrived (RefCmdSN not yet seen) counts as aborted
    let out = h.feed(&tmf(TmfFunction::AbortTask, 3, 0x99, 1, 5));
    let r = TaskMgmtResponse::parse(&bhs(&out[0])).unwrap();
    assert_eq!(r.response, TmfResponse::Complete);
    // unsupported functions
    let out = h.feed(&tmf(TmfFunction::TaskReassign, 4, 0, 1, 0));
    let r = TaskMgmtResponse::parse(&bhs(&out[0])).unwrap();
    assert_eq!(r.response, TmfResponse::NotSupported);
    // TARGET COLD RESET: answered, then the connection goes
    let out = h.feed(&tmf(TmfFunction::TargetColdReset, 5, 0, 1, 0));
    let r = TaskMgmtResponse::parse(&bhs(&out[0])).unwrap();
    assert_eq!(r.response, TmfResponse::Complete);
    assert!(h.closed);
    assert_eq!(h.conn.close_reason(), Some(CloseReason::TargetColdReset));
    assert_eq!(h.luns.target().resets, [Reset::Target]);
    assert_eq!(h.luns.target().lost, [NEXUS_SLOT]);
}

#[test]
fn nop_out_consumes_cmdsn_and_logout_of_other_cid() {
    let mut h = ipxe_logged_in(TargetLimits::default());
    // a non-immediate NOP-Out takes CmdSN 0
    let mut p = [0u8; 48];
    NopOut {
        immediate: false,
        lun: 0,
        itt: 9,
        ttt: RESERVED_TAG,
        cmd_sn: 0,
        exp_stat_sn: 2,
        data_len: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..]));
    let out = h.feed(&p);
    assert_eq!(NopIn::parse(&bhs(&out[0])).unwrap().exp_cmd_sn, 1);
    // a NOP-Out with ITT 0xffffffff wants no answer
    NopOut {
        immediate: true,
        lun: 0,
        itt: RESERVED_TAG,
        ttt: RESERVED_TAG,
        cmd_sn: 1,
        exp_stat_sn: 3,
        data_len: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..]));
    assert!(h.feed(&p).is_empty());
    // logout of a CID that is not ours: "CID not found", connection stays
    let mut l = [0u8; 48];
    LogoutRequest {
        immediate: true,
        reason: LogoutReason::CloseConnection,
        itt: 0x20,
        cid: 7,
        cmd_sn: 1,
        exp_stat_sn: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut l[..]));
    let out = h.feed(&l);
    assert_eq!(LogoutResponse::parse(&bhs(&out[0])).unwrap().response, 1);
    assert!(!h.closed);
}

#[test]
fn full_window_then_task_set_full_for_immediates() {
    let mut h = ipxe_logged_in(TargetLimits::default());
    h.sync_storage = false;
    // 8 slots, 1 kept back: MaxCmdSN allows 7 commands
    for i in 0..7u32 {
        assert!(h
            .feed(&command(i, i, &read10(i, 1), 512, true, false, &[], true))
            .is_empty());
    }
    // the 8th non-immediate command is beyond MaxCmdSN: ignored
    assert!(h
        .feed(&command(7, 7, &read10(7, 1), 512, true, false, &[], true))
        .is_empty());
    assert_eq!(h.conn.stats().cmdsn_dropped, 1);
    // immediate commands: the reserved slot, then TASK SET FULL
    let mut imm = |itt: u32| {
        let mut p = command(itt, 7, &read10(0, 1), 512, true, false, &[], true);
        p[0] |= 0x40;
        h.feed(&p)
    };
    assert!(imm(100).is_empty());
    let out = imm(101);
    let s = response(&out);
    assert_eq!((s.itt, s.status), (101, 0x28));
    // completing frees slots and MaxCmdSN moves on
    while let Some(io) = h.pending.pop() {
        h.complete(io);
    }
    let out = h.feed(&command(7, 7, &[0u8; 6], 0, false, false, &[], true));
    let s = response(&out);
    assert_eq!(s.exp_cmd_sn, 8);
    assert!(s.max_cmd_sn >= 14);
}

#[test]
fn connection_footprint() {
    // Documented in the module docs: hosts box a default connection.
    let n = core::mem::size_of::<Connection>();
    std::println!("Connection<32, 1024>: {n} bytes");
    assert!(n < 80 * 1024, "{n}");
}
