#![no_main]
//! DHCP wire layer: any bytes parse or fail cleanly; whatever parses re-emits
//! into exactly `buffer_len()` bytes and parses back to the same `Repr`.
use sanboot_core::dhcp::wire::{Packet, Repr};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    for o in packet.option_iter() {
        let _ = o;
    }
    let Ok(repr) = Repr::parse(&packet) else {
        return;
    };
    let _ = repr.user_class_is_ipxe();
    let len = repr.buffer_len();
    let mut buf = vec![0xa5u8; len];
    assert!(repr.emit(&mut buf[..len - 1]).is_err());
    assert_eq!(repr.emit(&mut buf), Ok(len));
    let again = Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap();
    assert_eq!(again, repr);
});
