//! sanboot on smoltcp (being written): binds `sanboot-core` to smoltcp sockets
//! over any `phy::Device`, with caller-provided buffers and no alloc.
#![no_std]
#![forbid(unsafe_code)]
