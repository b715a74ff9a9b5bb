#![no_main]
//! The copy-on-write overlay against a plain in-memory disk.
//!
//! Input: one mode byte, then for mode 0 the overlay file's first bytes
//! (header and map, as found on disk: parsing and opening never panic, and
//! an overlay that opens reads back consistently), for mode 1 a fresh
//! overlay; then operations of 6 bytes each (kind, offset, length) applied
//! to the overlay and to a model disk: every read must match the model,
//! also after a flush and reopen.
use sanboot_core::block::overlay::{Header, Overlay, SliceMap};
use sanboot_core::block::{BlockDevice, RamDisk};

const MAX_FILE: u64 = 1 << 20;

fn base_bytes(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i as u8) ^ ((i >> 9) as u8)).collect()
}

type Dev<'a> = Overlay<RamDisk<Vec<u8>>, RamDisk<Vec<u8>>, SliceMap<'a>, Vec<u8>, 4>;

fn open<'a>(
    base: &[u8],
    file: Vec<u8>,
    entries: &'a mut [u32],
    free: &'a mut [u32],
    id: [u8; 16],
    scratch: usize,
) -> Option<Dev<'a>> {
    let map = SliceMap::new(entries, free);
    Overlay::open(RamDisk(base.to_vec()), RamDisk(file), map, vec![0; scratch], id).ok()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let scratch = 512 * (1 + usize::from(mode >> 4));
    let (header, file, ops) = if mode & 1 == 0 {
        // A file from the input (its length in the first byte): its
        // header decides the geometry; the map follows at its offset.
        let Some((&k, rest)) = rest.split_first() else {
            return;
        };
        let (head, ops) = rest.split_at(rest.len().min(76 + usize::from(k) * 16));
        let Ok(h) = Header::parse(head) else {
            return;
        };
        if h.max_file_len() > MAX_FILE || h.virtual_size > (256 << 10) {
            return;
        }
        let mut file = vec![0u8; h.max_file_len() as usize];
        file[..head.len()].copy_from_slice(head);
        (h, file, ops)
    } else {
        let Some((&g, ops)) = rest.split_first() else {
            return;
        };
        let gran = 4096u32 << (g % 3);
        let size = 512 * (64 + u64::from(g) * 2);
        let Some(h) = Header::new(size, [g; 16], gran) else {
            return;
        };
        (h, vec![0u8; h.max_file_len() as usize], ops)
    };
    let base = base_bytes(header.base_size);
    let mut entries = vec![0u32; header.entries as usize];
    let mut free = vec![0u32; 8];
    let mut dev: Dev = if mode & 1 == 0 {
        match open(&base, file, &mut entries, &mut free, header.base_id, scratch) {
            Some(d) => d,
            None => return,
        }
    } else {
        let map = SliceMap::new(&mut entries, &mut free);
        Overlay::create(
            RamDisk(base.clone()),
            RamDisk(file),
            map,
            vec![0; scratch],
            header.base_id,
            header.granularity,
        )
        .expect("a fresh overlay is created")
    };
    let len = dev.len();
    let mut model = vec![0u8; len as usize];
    dev.read_at(0, &mut model).expect("an opened overlay reads");
    let mut reopened = 0;
    for op in ops.chunks_exact(6).take(64) {
        let at = u64::from(u16::from_le_bytes([op[1], op[2]])) * 37 % len;
        let n = (u64::from(u16::from_le_bytes([op[3], op[4]])) * u64::from(op[5] % 8 + 1))
            .min(len - at);
        let (a, b) = (at as usize, (at + n) as usize);
        match op[0] % 6 {
            0 | 1 => {
                let bytes: Vec<u8> = (0..n).map(|i| op[5] ^ (i as u8)).collect();
                match dev.write_at(at, &bytes) {
                    Ok(()) => model[a..b].copy_from_slice(&bytes),
                    // Out of slots (a damaged map) is the one allowed refusal.
                    Err(e) => {
                        assert_eq!(e, sanboot_core::block::BlockError::NoSpace);
                        return;
                    }
                }
            }
            2 => match dev.deallocate(at, n) {
                Ok(()) => model[a..b].fill(0),
                Err(e) => {
                    assert_eq!(e, sanboot_core::block::BlockError::NoSpace);
                    return;
                }
            },
            3 => {
                let mut buf = vec![0u8; n as usize];
                dev.read_at(at, &mut buf).expect("read");
                assert!(buf == model[a..b], "read differs from the model");
                let _ = dev.extent(at.min(len - 1));
            }
            4 => dev.flush().expect("flush"),
            _ if reopened < 2 => {
                reopened += 1;
                dev.flush().expect("flush");
                let (_, file, map, _) = dev.into_parts();
                drop(map);
                let mut entries = vec![0u32; header.entries as usize];
                let mut free = vec![0u32; 8];
                let mut again = open(&base, file.0, &mut entries, &mut free, header.base_id, scratch)
                    .expect("a flushed overlay reopens");
                let mut all = vec![0u8; len as usize];
                again.read_at(0, &mut all).expect("read after reopen");
                assert!(all == model, "reopened overlay differs");
                return;
            }
            _ => {}
        }
    }
});
