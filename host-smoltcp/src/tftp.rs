//! TFTP glue: the listening socket feeds the core `Listener`; each accepted
//! read request takes one slot of a fixed pool, whose UDP socket is bound to
//! a fresh port (the server's transfer ID) for the transfer's life.
//!
//! smoltcp has no connected UDP sockets, so a slot checks the source of
//! every datagram itself: the client's go to its `Transfer`, anyone else's
//! get ERROR 5 (RFC 1350 §4).

use sanboot_core::tftp::{
    listener::{unknown_tid, MIN_REPLY_LEN},
    Listener, ListenerEvent, ReadAt, ReadError, Refusal, Transfer, TransferConfig,
};
use sanboot_core::time::Instant;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::wire::IpEndpoint;

use crate::buffers::fits;
use crate::config::Scripts;
use crate::event::Event;
use crate::script::{Lookup, ScriptRef, STATION_SLOTS};
use crate::storage::Files;
use sanboot_core::ipxe::StationAddresses;

/// TFTP server port.
pub const TFTP_PORT: u16 = 69;
/// Transfer ports are taken from here up (IANA dynamic range).
const PORT_BASE: u16 = 49152;
const PORT_SPAN: u16 = 16384;
/// Datagrams taken from one socket per poll round, so one busy client
/// cannot starve the others.
const RX_BURST: usize = 16;
/// How long a finished transfer's socket stays open to flush its last datagram.
const LINGER_MS: u64 = 1000;

/// Where a transfer's bytes come from.
#[derive(Debug)]
enum Source<H> {
    Script(ScriptRef),
    File(H),
}

#[derive(Debug)]
struct Active<H> {
    transfer: Transfer,
    peer: IpEndpoint,
    source: Source<H>,
}

#[derive(Debug)]
enum State<H> {
    Idle,
    Running(Active<H>),
    /// Finished; closed once its queue is sent or at the deadline.
    Lingering(Instant),
}

#[derive(Debug)]
struct Slot<H> {
    socket: SocketHandle,
    state: State<H>,
}

/// Reads a transfer's bytes from a script or a file.
struct Reader<'r, 's, F: Files> {
    files: &'r mut F,
    scripts: &'r Scripts<'s>,
    source: &'r mut Source<F::Handle>,
}

impl<F: Files> ReadAt for Reader<'_, '_, F> {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        match self.source {
            Source::Script(r) => self.scripts.read_at(*r, offset, buf),
            Source::File(h) => self.files.read_at(h, offset, buf),
        }
    }
}

/// The TFTP service with `T` transfer slots.
#[derive(Debug)]
pub(crate) struct Tftp<H, const T: usize> {
    listener: Listener,
    listen: SocketHandle,
    slots: [Slot<H>; T],
    config: TransferConfig,
    next_port: u16,
}

impl<H, const T: usize> Tftp<H, T> {
    pub(crate) fn new(
        listen: SocketHandle,
        transfer_sockets: [SocketHandle; T],
        config: TransferConfig,
        seed: u64,
    ) -> Self {
        Tftp {
            listener: Listener::new(),
            listen,
            slots: transfer_sockets.map(|socket| Slot {
                socket,
                state: State::Idle,
            }),
            config,
            next_port: (seed % u64::from(PORT_SPAN)) as u16,
        }
    }

    /// Transfers running now.
    pub(crate) fn running(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, State::Running(_)))
            .count()
    }

    /// Counters of the listening port.
    pub(crate) fn listener_stats(&self) -> sanboot_core::tftp::ListenerStats {
        self.listener.stats()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match &s.state {
                State::Idle => None,
                State::Running(a) => a.transfer.poll_timeout(),
                State::Lingering(deadline) => Some(*deadline),
            })
            .min()
    }

    fn port_in_use(&self, port: u16, sockets: &SocketSet<'_>) -> bool {
        self.slots.iter().any(|s| {
            !matches!(s.state, State::Idle)
                && sockets.get::<udp::Socket>(s.socket).endpoint().port == port
        })
    }

    fn fresh_port(&mut self, sockets: &SocketSet<'_>) -> u16 {
        for _ in 0..=T {
            self.next_port = self.next_port.wrapping_add(1) % PORT_SPAN;
            let port = PORT_BASE.saturating_add(self.next_port);
            if !self.port_in_use(port, sockets) {
                return port;
            }
        }
        PORT_BASE
    }

    /// Handles what arrived and sends what is due. True if anything moved.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn process<F: Files<Handle = H>>(
        &mut self,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        files: &mut F,
        scripts: &Scripts<'_>,
        stations: Option<&StationAddresses<STATION_SLOTS>>,
        scratch: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> bool {
        let mut moved = self.process_listener(now, sockets, files, scripts, stations, on_event);
        for i in 0..T {
            moved |= self.process_slot(i, now, sockets, files, scripts, scratch, on_event);
        }
        moved
    }

    fn process_listener<F: Files<Handle = H>>(
        &mut self,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        files: &mut F,
        scripts: &Scripts<'_>,
        stations: Option<&StationAddresses<STATION_SLOTS>>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> bool {
        let mut moved = false;
        for _ in 0..RX_BURST {
            let mut out = [0u8; MIN_REPLY_LEN];
            let socket = sockets.get_mut::<udp::Socket>(self.listen);
            let (event, peer) = match socket.recv() {
                Ok((datagram, meta)) => (self.listener.handle(datagram, &mut out), meta.endpoint),
                Err(_) => break,
            };
            moved = true;
            let incoming = match event {
                None => continue,
                Some(ListenerEvent::Respond(t)) => {
                    reply(sockets.get_mut(self.listen), out.get(..t.len), peer);
                    on_event(Event::TftpRefused {
                        path: "",
                        peer,
                        reason: None,
                    });
                    continue;
                }
                Some(ListenerEvent::Incoming(incoming)) => incoming,
            };
            if self
                .slots
                .iter()
                .any(|s| matches!(&s.state, State::Running(a) if a.peer == peer))
            {
                on_event(Event::TftpRepeated { peer });
                continue;
            }
            let Some(free) = self
                .slots
                .iter()
                .position(|s| matches!(s.state, State::Idle))
            else {
                on_event(Event::TftpRefused {
                    path: incoming.path(),
                    peer,
                    reason: Some(Refusal::Busy),
                });
                if let Ok(t) = incoming.refuse(Refusal::Busy, &mut out) {
                    reply(sockets.get_mut(self.listen), out.get(..t.len), peer);
                }
                continue;
            };
            let opened = match scripts.lookup(incoming.path()) {
                Lookup::Script(r) => match scripts.access(r, stations, peer.addr) {
                    Ok(()) => scripts.open(r).map(|size| (Source::Script(r), size)),
                    Err((mac, expected)) => {
                        on_event(Event::ScriptRefused {
                            path: incoming.path(),
                            peer,
                            mac,
                            expected,
                        });
                        Err(Refusal::NotFound)
                    }
                },
                Lookup::UnknownMac(_) => Err(Refusal::NotFound),
                Lookup::NotScript => files
                    .open(incoming.path())
                    .map(|(h, size)| (Source::File(h), size)),
            };
            let (source, size) = match opened {
                Ok(x) => x,
                Err(reason) => {
                    on_event(Event::TftpRefused {
                        path: incoming.path(),
                        peer,
                        reason: Some(reason),
                    });
                    if let Ok(t) = incoming.refuse(reason, &mut out) {
                        reply(sockets.get_mut(self.listen), out.get(..t.len), peer);
                    }
                    continue;
                }
            };
            let port = self.fresh_port(sockets);
            let Some(slot) = self.slots.get_mut(free) else {
                continue;
            };
            let socket = sockets.get_mut::<udp::Socket>(slot.socket);
            socket.close();
            if socket.bind(port).is_err() {
                if let Source::File(h) = source {
                    files.close(h);
                }
                if let Ok(t) = incoming.refuse(Refusal::Busy, &mut out) {
                    reply(sockets.get_mut(self.listen), out.get(..t.len), peer);
                }
                continue;
            }
            // The event borrows the path, which `accept` consumes.
            let transfer = incoming.clone().accept(now, size, &self.config);
            on_event(Event::TftpRequest {
                path: incoming.path(),
                peer,
                script: matches!(source, Source::Script(_)),
                size,
                blksize: transfer.blksize(),
                windowsize: transfer.windowsize(),
            });
            slot.state = State::Running(Active {
                transfer,
                peer,
                source,
            });
        }
        moved
    }

    #[allow(clippy::too_many_arguments)]
    fn process_slot<F: Files<Handle = H>>(
        &mut self,
        i: usize,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        files: &mut F,
        scripts: &Scripts<'_>,
        scratch: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> bool {
        let Some(slot) = self.slots.get_mut(i) else {
            return false;
        };
        let socket = sockets.get_mut::<udp::Socket>(slot.socket);
        let active = match &mut slot.state {
            State::Idle => return false,
            State::Lingering(deadline) => {
                if socket.send_queue() == 0 || now >= *deadline {
                    socket.close();
                    slot.state = State::Idle;
                    return true;
                }
                return false;
            }
            State::Running(a) => a,
        };
        let mut moved = false;
        for _ in 0..RX_BURST {
            let mut stranger = None;
            match socket.recv() {
                Ok((datagram, meta)) if meta.endpoint == active.peer => {
                    active.transfer.handle_datagram(now, datagram);
                }
                Ok((_, meta)) => stranger = Some(meta.endpoint),
                Err(_) => break,
            }
            moved = true;
            if let Some(peer) = stranger {
                let mut out = [0u8; MIN_REPLY_LEN];
                if let Ok(t) = unknown_tid(&mut out) {
                    reply(socket, out.get(..t.len), peer);
                }
            }
        }
        if active.transfer.poll_timeout().is_some_and(|t| t <= now) {
            active.transfer.handle_timeout(now);
            moved = true;
        }
        let need = active.transfer.required_buffer_len();
        while fits(socket, need) {
            let mut reader = Reader {
                files,
                scripts,
                source: &mut active.source,
            };
            let Some(buf) = scratch.get_mut(..need) else {
                break;
            };
            match active.transfer.poll_transmit(now, buf, &mut reader) {
                Ok(Some(t)) => {
                    if let Some(datagram) = buf.get(..t.len) {
                        // `fits` said there is room; a failure only costs a retransmission.
                        let _ = socket.send_slice(datagram, active.peer);
                    }
                    moved = true;
                }
                Ok(None) | Err(_) => break,
            }
        }
        if active.transfer.is_finished() {
            let s = active.transfer.stats();
            on_event(Event::TftpDone {
                peer: active.peer,
                outcome: active.transfer.outcome(),
                acked: active.transfer.bytes_acked(),
                size: active.transfer.size(),
                retransmitted: s.retransmitted,
            });
            let old = core::mem::replace(
                &mut slot.state,
                State::Lingering(now + sanboot_core::time::Duration::from_millis(LINGER_MS)),
            );
            if let State::Running(Active {
                source: Source::File(h),
                ..
            }) = old
            {
                files.close(h);
            }
            moved = true;
        }
        moved
    }
}

fn reply(socket: &mut udp::Socket<'_>, bytes: Option<&[u8]>, peer: IpEndpoint) {
    if let Some(bytes) = bytes {
        let _ = socket.send_slice(bytes, peer);
    }
}
