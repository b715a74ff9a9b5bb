//! Reads and writes of many sizes through `sanboot serve` without digests:
//! reads must return exactly what was written, and the image file must hold
//! it too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use iscsi_support::initiator::Initiator;
use iscsi_support::{Sanboot, IQN};

const SIZE: u64 = 32 << 20;

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32) ^ seed).wrapping_mul(0x9e37_79b1).rotate_left(7) as u8)
        .collect()
}

#[test]
fn reads_of_every_size_return_what_was_written() {
    let s = Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"disk.img\"\nsize = {SIZE}\n"
    ));
    let mut ini = Initiator::login(s.port, "iqn.2026-11.test.sanboot:datapath", IQN, 0)
        .unwrap_or_else(|e| panic!("login: {e}\n{}", s.log()));
    ini.ready().unwrap();

    // One 8 MiB region written in 1 MiB pieces.
    let region = pattern(7, 8 << 20);
    for (i, piece) in region.chunks(1 << 20).enumerate() {
        let lba = (i * 2048) as u32;
        let r = ini.write10(lba, piece, false).unwrap();
        assert_eq!(r.status, 0, "write at {lba}: {:02x?}", r.sense);
    }
    // Reads of many sizes and alignments, some spanning several Data-In PDUs.
    for (lba, blocks) in [
        (0u32, 1u16),
        (1, 7),
        (3, 128),
        (100, 129),
        (1000, 2048),
        (2047, 4095),
        (5000, 8000),
        (16383, 1),
    ] {
        let r = ini.read10(lba, blocks).unwrap();
        assert_eq!(r.status, 0);
        let at = lba as usize * 512;
        let want = &region[at..at + usize::from(blocks) * 512];
        assert!(
            r.data == want,
            "READ(10) lba {lba} x {blocks} differs (first bad byte {:?})",
            r.data.iter().zip(want).position(|(a, b)| a != b)
        );
    }
    // Unwritten space reads as zeros, and the image holds the region.
    let r = ini.read10(30000, 2048).unwrap();
    assert!(r.data.iter().all(|&b| b == 0));
    let image = std::fs::read(s.dir().join("disk.img")).unwrap();
    assert_eq!(image.len() as u64, SIZE);
    assert!(image[..region.len()] == region[..]);
}
