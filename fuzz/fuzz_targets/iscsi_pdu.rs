#![no_main]
//! iSCSI PDU wire layer: arbitrary bytes never panic the parsers; every PDU
//! that parses re-emits to the same header fields; text and binary value
//! decoders survive anything.
use libfuzzer_sys::fuzz_target;
use sanboot_core::iscsi::pdu::*;
use sanboot_core::iscsi::text;

fn roundtrip<T: AsRef<[u8]>>(bhs: &Bhs<T>) {
    let mut out = [0u8; BHS_LEN];
    macro_rules! rt {
        ($ty:ty) => {
            if let Ok(r) = <$ty>::parse(bhs) {
                r.emit(&mut Bhs::new_unchecked(&mut out[..]));
                let again = <$ty>::parse(&Bhs::new_unchecked(&out[..])).expect("re-parse");
                assert_eq!(r, again);
            }
        };
    }
    rt!(LoginRequest);
    rt!(LoginResponse);
    rt!(TextRequest);
    rt!(TextResponse);
    rt!(ScsiCommand);
    rt!(ScsiResponse);
    rt!(DataOut);
    rt!(DataIn);
    rt!(R2t);
    rt!(NopOut);
    rt!(NopIn);
    rt!(TaskMgmtRequest);
    rt!(TaskMgmtResponse);
    rt!(LogoutRequest);
    rt!(LogoutResponse);
    rt!(Reject);
    rt!(AsyncMessage);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(bhs) = Bhs::new_checked(data) {
        let _ = InitiatorPdu::parse(&bhs);
        roundtrip(&bhs);
        for digests in [
            Digests::default(),
            Digests {
                header: true,
                data: true,
            },
        ] {
            let l = pdu_len(&bhs, digests);
            assert!(l.total_len >= l.data_offset + l.data_len);
            if let Some(seg) = data.get(l.data_offset..l.data_offset + l.data_len) {
                for p in text::pairs(seg).flatten() {
                    let _ = text::parse_number(p.value);
                    let mut out = [0u8; 64];
                    if let Some(n) = text::decode_binary(p.value, &mut out) {
                        assert!(n <= out.len());
                    }
                }
            }
        }
    }
    for p in text::pairs(data).flatten() {
        assert!(!p.key.is_empty() && p.key.len() <= text::MAX_KEY_LEN);
    }
    let _ = sanboot_core::iscsi::crc32c::crc32c(data);
});
