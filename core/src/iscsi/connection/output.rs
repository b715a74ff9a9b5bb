//! Output: one PDU per `poll_transmit` call (login response, control
//! responses, R2Ts, Data-In, SCSI Response), with digests and padding.

use super::*;

impl<const TASKS: usize, const SCRATCH: usize> Connection<TASKS, SCRATCH> {
    pub(super) fn data_offset(&self) -> usize {
        BHS_LEN
            + if self.tx_digests.header {
                DIGEST_LEN
            } else {
                0
            }
    }

    /// Bytes a PDU with `data_len` bytes of data needs.
    pub(super) fn pdu_size(&self, data_len: usize) -> usize {
        self.data_offset()
            + pad4(data_len)
            + if self.tx_digests.data && data_len > 0 {
                DIGEST_LEN
            } else {
                0
            }
    }

    /// Digests and padding for a PDU whose BHS and data are in place.
    pub(super) fn seal(&mut self, buf: &mut [u8], data_len: usize) -> Option<usize> {
        let total = self.pdu_size(data_len);
        let buf = buf.get_mut(..total)?;
        if self.tx_digests.header {
            let d = (self.crc)(0, buf.get(..BHS_LEN)?);
            buf.get_mut(BHS_LEN..BHS_LEN + DIGEST_LEN)?
                .copy_from_slice(&d.to_le_bytes());
        }
        let off = self.data_offset();
        for b in buf.get_mut(off + data_len..off + pad4(data_len))? {
            *b = 0;
        }
        if self.tx_digests.data && data_len > 0 {
            let d = (self.crc)(0, buf.get(off..off + pad4(data_len))?);
            let at = off + pad4(data_len);
            buf.get_mut(at..at + DIGEST_LEN)?
                .copy_from_slice(&d.to_le_bytes());
        }
        self.stats.pdus_out += 1;
        Some(total)
    }

    /// Write the next PDU to send into `buf` and return its length. Call
    /// until it returns `None` after every input, completion and timeout.
    /// `buf` should hold at least 56 bytes plus the initiator's
    /// MaxRecvDataSegmentLength (8 KiB for iPXE); smaller buffers get
    /// smaller Data-In PDUs, and `None` if even a header does not fit.
    #[must_use]
    pub fn poll_transmit<B: Backend>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        backend: &mut B,
    ) -> Option<usize> {
        let _ = now;
        if self.state == State::Closed {
            return None;
        }
        if self.login_response_pending {
            let n = self.emit_login_response(buf)?;
            self.login_response_pending = false;
            if self.state == State::FullFeature {
                // Digests start with the first PDU after the final response.
                self.tx_digests = self.rx_digests;
            }
            return Some(n);
        }
        if let Some(n) = self.emit_ctrl(buf) {
            return Some(n);
        }
        if self.state == State::FullFeature && self.close_after_ctrl.is_none() {
            if let Some(n) = self.emit_r2t(buf) {
                return Some(n);
            }
            if let Some(n) = self.emit_task_output(buf, backend) {
                return Some(n);
            }
        }
        if self.ctrl.is_empty() {
            if let Some(why) = self.close_after_ctrl.take() {
                self.close(why);
            }
        }
        if self.state == State::Closing {
            self.lose_nexus(backend);
            self.state = State::Closed;
            let _ = self.events.push_back(Event::Close);
        }
        None
    }

    pub(super) fn emit_login_response(&mut self, buf: &mut [u8]) -> Option<usize> {
        let (resp, text) = self.login.response();
        let total = BHS_LEN + pad4(text.len());
        let out = buf.get_mut(..total)?;
        let (head, data) = out.split_at_mut(BHS_LEN);
        let mut r = *resp;
        r.data_len = text.len() as u32;
        r.emit(&mut Bhs::new_unchecked(head));
        data.get_mut(..text.len())?.copy_from_slice(text);
        for b in data.get_mut(text.len()..)? {
            *b = 0;
        }
        self.stats.pdus_out += 1;
        Some(total)
    }

    pub(super) fn emit_ctrl(&mut self, buf: &mut [u8]) -> Option<usize> {
        let c = self.ctrl.front()?.clone();
        let off = self.data_offset();
        let mut text_advance = None;
        let (data_len, ok) = {
            let max = self.advertise(0);
            let exp = self.exp_cmd_sn;
            let stat_sn = self.stat_sn;
            let mrdsl = self.params.initiator_mrdsl.max(512) as usize;
            if matches!(c, Ctrl::Text { .. }) && self.text_ttt == RESERVED_TAG {
                self.text_ttt = self.next_ttt;
                self.next_ttt = self.next_ttt.wrapping_add(1).max(1);
                if self.next_ttt == RESERVED_TAG {
                    self.next_ttt = 1;
                }
            }
            let text_ttt = self.text_ttt;
            let need = |n: usize| self.pdu_size(n);
            match &c {
                Ctrl::Reject { reason, bhs } => {
                    let len = need(BHS_LEN);
                    let b = buf.get_mut(..len)?;
                    Reject {
                        reason: *reason,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        data_sn: 0,
                        data_len: BHS_LEN as u32,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    b.get_mut(off..off + BHS_LEN)?.copy_from_slice(bhs);
                    (BHS_LEN, true)
                }
                Ctrl::NopIn { itt, lun, data } => {
                    let len = need(data.len());
                    let b = buf.get_mut(..len)?;
                    NopIn {
                        lun: *lun,
                        itt: *itt,
                        ttt: RESERVED_TAG,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        data_len: data.len() as u32,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    b.get_mut(off..off + data.len())?.copy_from_slice(data);
                    (data.len(), true)
                }
                Ctrl::Tmf { itt, response } => {
                    let b = buf.get_mut(..need(0))?;
                    TaskMgmtResponse {
                        response: *response,
                        itt: *itt,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    (0, true)
                }
                Ctrl::Logout { itt, response } => {
                    let b = buf.get_mut(..need(0))?;
                    LogoutResponse {
                        response: *response,
                        itt: *itt,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        time2wait: 0,
                        time2retain: 0,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    (0, true)
                }
                Ctrl::Status { itt, status } => {
                    let b = buf.get_mut(..need(0))?;
                    ScsiResponse {
                        response: 0,
                        status: *status,
                        residual: Residual::None,
                        itt: *itt,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        exp_data_sn: 0,
                        data_len: 0,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    (0, true)
                }
                Ctrl::Ping { ttt } => {
                    let b = buf.get_mut(..need(0))?;
                    NopIn {
                        lun: 0,
                        itt: RESERVED_TAG,
                        ttt: *ttt,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        data_len: 0,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    (0, true)
                }
                Ctrl::Text { itt, lun } => {
                    // Pieces of at most the initiator's MaxRecvDataSegmentLength;
                    // all but the last carry C=1 and a TTT to continue with.
                    let from = self.text_sent.min(self.text.len());
                    let piece = (self.text.len() - from).min(mrdsl);
                    let more = from + piece < self.text.len();
                    let b = buf.get_mut(..need(piece))?;
                    TextResponse {
                        final_bit: !more,
                        cont: more,
                        lun: *lun,
                        itt: *itt,
                        ttt: if more { text_ttt } else { RESERVED_TAG },
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        data_len: piece as u32,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    b.get_mut(off..off + piece)?
                        .copy_from_slice(self.text.get(from..from + piece)?);
                    text_advance = Some((from + piece, more));
                    (piece, true)
                }
            }
        };
        if !ok {
            return None;
        }
        let _ = self.ctrl.pop_front();
        if let Some((sent, more)) = text_advance {
            self.text_sent = sent;
            if !more {
                self.text_ttt = RESERVED_TAG;
            }
        }
        // Every control response carries and advances StatSN (only Data-In
        // without status, R2T and a ping, RFC 7143 §11.19.4, do not).
        if !matches!(c, Ctrl::Ping { .. }) {
            self.stat_sn = self.stat_sn.wrapping_add(1);
        }
        self.seal(buf, data_len)
    }

    pub(super) fn emit_r2t(&mut self, buf: &mut [u8]) -> Option<usize> {
        let exp = self.exp_cmd_sn;
        let max = self.advertise(0);
        let stat_sn = self.stat_sn;
        let need = self.pdu_size(0);
        for t in self.tasks.iter_mut() {
            if !matches!(t.phase, Phase::Collecting) {
                continue;
            }
            let itt = t.itt;
            let lun = t.lun_raw;
            let r2t_sn = t.r2t_sn;
            let Some(r) = t.r2ts.iter_mut().find(|r| !r.sent) else {
                continue;
            };
            let b = buf.get_mut(..need)?;
            R2t {
                lun,
                itt,
                ttt: r.ttt,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                r2t_sn,
                buffer_offset: r.offset,
                desired_len: r.len,
            }
            .emit(&mut Bhs::new_unchecked(&mut b[..]));
            r.sent = true;
            t.r2t_sn = t.r2t_sn.wrapping_add(1);
            return self.seal(buf, 0);
        }
        None
    }

    pub(super) fn emit_task_output<B: Backend>(
        &mut self,
        buf: &mut [u8],
        backend: &mut B,
    ) -> Option<usize> {
        for i in 0..TASKS {
            let slot = (self.rr + i) % TASKS.max(1);
            let phase = self.tasks.get(slot).map(|t| t.phase)?;
            let n = match phase {
                Phase::DataIn(src) => self.emit_data_in(slot, src, buf, backend),
                Phase::Respond => self.emit_response(slot, buf),
                _ => continue,
            };
            if n.is_some() {
                self.rr = slot;
                return n;
            }
            return None;
        }
        None
    }

    pub(super) fn emit_data_in<B: Backend>(
        &mut self,
        slot: usize,
        src: Source,
        buf: &mut [u8],
        backend: &mut B,
    ) -> Option<usize> {
        let off = self.data_offset();
        let overhead = self.pdu_size(0) + if self.tx_digests.data { DIGEST_LEN } else { 0 };
        let room = buf.len().checked_sub(overhead)? & !3;
        let mrdsl = self.params.initiator_mrdsl.max(512);
        let max_burst = self.params.max_burst_length.max(512);
        let target = self.target.unwrap_or(0);
        let exp = self.exp_cmd_sn;
        let (remaining, burst_left, good) = {
            let t = self.tasks.get(slot)?;
            let remaining = t.data_in_len.checked_sub(t.data_in_sent)?;
            (
                remaining,
                max_burst - (t.data_in_sent % max_burst),
                t.status == 0,
            )
        };
        let len_guess = remaining.min(mrdsl).min(burst_left).min(room as u32);
        let max = self.advertise(usize::from(len_guess == remaining && good));
        let t = self.tasks.get_mut(slot)?;
        let remaining = t.data_in_len.checked_sub(t.data_in_sent)?;
        // Stay inside the current burst (sequence) of MaxBurstLength.
        let burst_left = max_burst - (t.data_in_sent % max_burst);
        let len = remaining.min(mrdsl).min(burst_left).min(room as u32);
        if len == 0 {
            return None;
        }
        let offset = t.data_in_sent;
        // The data first: a failed or short read must not go out, and
        // neither may a GOOD status after it.
        let data = buf.get_mut(off..off + len as usize)?;
        let read = match src {
            Source::Scratch => {
                let at = offset as usize;
                data.copy_from_slice(t.scratch.get(at..at + len as usize)?);
                Ok(())
            }
            Source::Storage { offset: base } => backend.read_data(ReadChunk {
                io: t.io(slot),
                target,
                lun: t.lun,
                offset: base + u64::from(offset),
                dst: data,
            }),
        };
        if let Err(e) = read {
            self.resume(slot, Resume::Storage(Err(e)), backend);
            return self.emit_response(slot, buf);
        }
        let t = self.tasks.get_mut(slot)?;
        let last = len == remaining;
        let end_of_burst = last || len == burst_left;
        // GOOD status rides in the final Data-In (S bit); anything else gets
        // its own SCSI Response (iPXE needs that).
        let with_status = last && t.status == 0;
        let stat_sn = if with_status {
            let s = self.stat_sn;
            self.stat_sn = self.stat_sn.wrapping_add(1);
            s
        } else {
            self.stat_sn
        };
        DataIn {
            final_bit: end_of_burst,
            ack: false,
            status: if with_status { Some(0) } else { None },
            residual: if with_status {
                t.residual
            } else {
                Residual::None
            },
            lun: 0,
            itt: t.itt,
            ttt: RESERVED_TAG,
            stat_sn,
            exp_cmd_sn: exp,
            max_cmd_sn: max,
            data_sn: t.data_sn,
            buffer_offset: offset,
            data_len: len,
        }
        .emit(&mut Bhs::new_unchecked(buf.get_mut(..BHS_LEN)?));
        t.data_sn = t.data_sn.wrapping_add(1);
        t.data_in_sent += len;
        if last {
            if with_status {
                self.end_task(slot);
            } else if let Some(t) = self.tasks.get_mut(slot) {
                t.phase = Phase::Respond;
            }
        }
        self.seal(buf, len as usize)
    }

    pub(super) fn emit_response(&mut self, slot: usize, buf: &mut [u8]) -> Option<usize> {
        let off = self.data_offset();
        let max = self.advertise(1);
        let t = self.tasks.get(slot)?;
        let sense_len = t.sense_len as usize;
        let data_len = if sense_len > 0 { sense_len + 2 } else { 0 };
        let need = self.pdu_size(data_len);
        let b = buf.get_mut(..need)?;
        let stat_sn = self.stat_sn;
        ScsiResponse {
            response: 0,
            status: t.status,
            residual: t.residual,
            itt: t.itt,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: max,
            exp_data_sn: t.data_sn.wrapping_add(t.r2t_sn),
            data_len: data_len as u32,
        }
        .emit(&mut Bhs::new_unchecked(b.get_mut(..BHS_LEN)?));
        if sense_len > 0 {
            let at = t.sense_at as usize;
            let sense = t.scratch.get(at..at + sense_len)?;
            b.get_mut(off..off + 2)?
                .copy_from_slice(&(sense_len as u16).to_be_bytes());
            b.get_mut(off + 2..off + 2 + sense_len)?
                .copy_from_slice(sense);
        }
        self.stat_sn = self.stat_sn.wrapping_add(1);
        self.end_task(slot);
        self.seal(buf, data_len)
    }
}
