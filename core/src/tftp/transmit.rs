//! What both the listener and a transfer hand back to the host: how much of
//! the caller's buffer to send. Its own module so neither state machine
//! depends on the other for it.

/// A datagram to send: the first `len` bytes of the buffer the caller passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transmit {
    /// Datagram length.
    pub len: usize,
}
