use super::*;

fn base_file(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    let p = dir.join("golden.img");
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

fn io<R>(o: &OverlayDisk, f: impl FnOnce(&mut dyn BlockDevice) -> R) -> R {
    o.with_device(Access::Shared, f)
}

#[test]
fn a_new_overlay_reads_the_base_and_keeps_writes_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (base, data) = base_file(dir.path(), 4 << 20);
    let ov = dir.path().join("station.ovl");
    let o = OverlayDisk::open(&base, &ov, OverlayOptions::default()).unwrap();
    assert_eq!(o.blocks(), 8192);
    let mut buf = vec![0u8; 1 << 20];
    io(&o, |d| d.read_at(1 << 20, &mut buf)).unwrap();
    assert!(buf == data[1 << 20..2 << 20]);
    io(&o, |d| d.write_at(4096, &[0xab; 512])).unwrap();
    o.sync().unwrap();
    drop(o);
    assert_eq!(
        std::fs::read(&base).unwrap(),
        data,
        "the base is never written"
    );
    let o = OverlayDisk::open(&base, &ov, OverlayOptions::default()).unwrap();
    let mut g = vec![0u8; 65536];
    io(&o, |d| d.read_at(0, &mut g)).unwrap();
    let mut want = data[..65536].to_vec();
    want[4096..4608].fill(0xab);
    assert!(g == want);
    assert_eq!(o.data_bytes(), 65536);
}

#[test]
fn overlays_pass_the_block_device_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = base_file(dir.path(), 1 << 20);
    let o = OverlayDisk::open(&base, &dir.path().join("o"), OverlayOptions::default()).unwrap();
    assert_eq!(io(&o, sanboot_core::block::conformance::run), Ok(()));
}

#[test]
fn an_overlay_of_another_base_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = base_file(dir.path(), 1 << 20);
    let ov = dir.path().join("station.ovl");
    drop(OverlayDisk::open(&base, &ov, OverlayOptions::default()).unwrap());
    let other = dir.path().join("other.img");
    std::fs::write(&other, vec![7u8; 2 << 20]).unwrap();
    let h = read_header(&ov).unwrap();
    assert_eq!(
        (h.base_size, h.base_id),
        (1 << 20, base_identity(&base).unwrap())
    );
    let err = OverlayDisk::open(&other, &ov, OverlayOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("station.ovl") && msg.contains("other.img"),
        "{msg}"
    );
    assert!(msg.contains("another base"), "{msg}");
    // Same size, different content and time: refused too.
    std::fs::write(&other, vec![7u8; 1 << 20]).unwrap();
    assert!(OverlayDisk::open(&other, &ov, OverlayOptions::default()).is_err());
}

#[test]
fn unmap_gives_the_space_back_and_reset_discards_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (base, data) = base_file(dir.path(), 8 << 20);
    let o = OverlayDisk::open(&base, &dir.path().join("o"), OverlayOptions::default()).unwrap();
    let empty = o.allocated_bytes().unwrap();
    io(&o, |d| d.write_at(0, &vec![1u8; 4 << 20])).unwrap();
    o.sync().unwrap();
    let full = o.allocated_bytes().unwrap();
    assert!(full >= empty + (4 << 20), "{empty} -> {full}");
    io(&o, |d| d.deallocate(0, 4 << 20)).unwrap();
    o.sync().unwrap();
    let after = o.allocated_bytes().unwrap();
    assert!(after < empty + (256 << 10), "{empty} -> {full} -> {after}");
    let mut buf = vec![9u8; 4096];
    io(&o, |d| d.read_at(8192, &mut buf)).unwrap();
    assert!(buf.iter().all(|&b| b == 0));

    io(&o, |d| d.write_at(65536 * 3, &[5u8; 100_000])).unwrap();
    o.reset().unwrap();
    let mut all = vec![0u8; 8 << 20];
    io(&o, |d| d.read_at(0, &mut all)).unwrap();
    assert!(all == data, "after reset every block reads the base");
    assert_eq!(o.data_bytes(), 0);
}

#[test]
fn the_base_is_shared_read_only_and_the_overlay_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = base_file(dir.path(), 1 << 20);
    let ov = dir.path().join("a.ovl");
    let _a = OverlayDisk::open(&base, &ov, OverlayOptions::default()).unwrap();
    // A second station on the same base: fine.
    let _b =
        OverlayDisk::open(&base, &dir.path().join("b.ovl"), OverlayOptions::default()).unwrap();
    // The same overlay twice, or the base writable: refused.
    assert!(OverlayDisk::open(&base, &ov, OverlayOptions::default()).is_err());
    assert!(Disk::open(&base, DiskOptions::default()).is_err());
}

#[test]
fn a_slot_whose_tail_is_a_hole_at_the_end_of_the_file_reads_zeros() {
    // Copy-up of a deallocated granule punches the zeros around the new
    // data; when that slot is the file's last, the hole is past the end.
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = base_file(dir.path(), 1 << 20);
    let o = OverlayDisk::open(&base, &dir.path().join("o"), OverlayOptions::default()).unwrap();
    io(&o, |d| d.deallocate(0, 65536)).unwrap();
    io(&o, |d| d.write_at(0, &[3u8; 512])).unwrap();
    let mut g = vec![9u8; 65536];
    io(&o, |d| d.read_at(0, &mut g)).unwrap();
    assert!(g[..512].iter().all(|&b| b == 3));
    assert!(g[512..].iter().all(|&b| b == 0));
}

fn load(dir: &Path, luns: &str) -> Result<crate::Config> {
    let p = dir.join("sanboot.toml");
    std::fs::write(
        &p,
        format!(
            "[server]\naddress = \"192.0.2.1\"\ninterface = \"br0\"\n\
             [[target]]\niqn = \"iqn.2024-01.test:a\"\n{luns}"
        ),
    )
    .unwrap();
    crate::Config::load(&p)
}

#[test]
fn the_base_key_makes_an_overlay_lun_and_its_rules_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = base_file(dir.path(), 1 << 20);
    let c = load(
        dir.path(),
        "[[target.lun]]\nid = 0\nbase = \"golden.img\"\nimage = \"pc1.ovl\"\n",
    )
    .unwrap();
    let lun = &c.targets[0].luns[0];
    assert_eq!(
        lun.base.as_deref(),
        Some(dir.path().join("golden.img").as_path())
    );
    let mut dev = crate::lun_device::LunDevice::open(lun).unwrap();
    assert!(matches!(dev, crate::lun_device::LunDevice::Overlay(_)));
    assert_eq!(dev.blocks(), 2048);
    let mut b = vec![0u8; 512];
    dev.read_at(512, &mut b).unwrap();
    assert!(b == data[512..1024]);

    let refused = |luns: &str, needle: &str| {
        let e = format!("{:#}", load(dir.path(), luns).unwrap_err());
        assert!(e.contains(needle), "{e}");
    };
    refused(
        "[[target.lun]]\nbase = \"golden.img\"\nimage = \"x.ovl\"\nread_only = true\n",
        "read-only LUN needs no overlay",
    );
    refused(
        "[[target.lun]]\nbase = \"golden.img\"\nimage = \"x.ovl\"\nsize = 4096\n",
        "an overlay has its base's size",
    );
    refused(
        "[[target.lun]]\nbase = \"golden.img\"\nimage = \"x.ovl\"\n\
         [[target.lun]]\nid = 1\nimage = \"golden.img\"\n",
        "must not change under its overlays",
    );
}
