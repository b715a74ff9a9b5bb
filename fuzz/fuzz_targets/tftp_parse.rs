#![no_main]
//! Any datagram: parsing never panics; whatever parses emits into exactly
//! `buffer_len` bytes and parses back to the same meaning; a filename that
//! normalises is confined (no `..`, no leading or doubled slash, no `\`).
use sanboot_core::tftp::path;
use sanboot_core::tftp::wire::{Packet, Repr};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (
            p.opcode(),
            p.block(),
            p.error_code(),
            p.payload(),
            p.strings(),
        );
    }
    let Ok(repr) = Repr::parse_bytes(data) else {
        return;
    };
    let mut buf = vec![0xa5u8; repr.buffer_len()];
    let n = repr.emit(&mut buf).expect("emit into buffer_len bytes");
    assert_eq!(n, buf.len());
    assert_eq!(
        Repr::parse_bytes(&buf).expect("emitted packet parses"),
        repr
    );
    if let Repr::Rrq(r) | Repr::Wrq(r) = repr {
        if let Ok(p) = path::normalize::<256>(r.filename) {
            assert!(!p.is_empty() && p.len() <= 256);
            assert!(!p.starts_with('/') && !p.ends_with('/') && !p.contains("//"));
            assert!(!p.contains('\\') && !p.contains('\0'));
            assert!(p.split('/').all(|c| c != ".." && c != "."));
        }
    }
});
