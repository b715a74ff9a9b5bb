//! INQUIRY: standard data and the vital product data pages.

use super::cdb::{Bytes, Writer};
use super::lun::Lun;
use super::status::{bad_cdb, done, CmdResult};

/// VERSION DESCRIPTORs (SPC-4 table 49): SAM-5, SPC-4, SBC-3, iSCSI.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00a0, 0x0460, 0x04c0, 0x0960];

/// Supported VPD pages, ascending as SPC-4 requires.
const VPD_PAGES: [u8; 6] = [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2];

impl<const N: usize, const R: usize> Lun<N, R> {
    pub(crate) fn inquiry(&self, cdb: Bytes<'_>, buf: &mut [u8]) -> CmdResult {
        let evpd = cdb.bit(1, 0);
        if cdb.u8(1) & 0xfe != 0 {
            // CMDDT (obsolete) and reserved bits
            return Err(bad_cdb(1, Some(1)));
        }
        let page = cdb.u8(2);
        let alloc = u32::from(cdb.u16(3));
        let mut w = Writer::new(buf);
        if !evpd {
            if page != 0 {
                return Err(bad_cdb(2, None));
            }
            self.standard_inquiry(&mut w);
        } else {
            match page {
                0x00 => {
                    vpd_header(&mut w, page);
                    w.put(&VPD_PAGES);
                }
                0x80 => {
                    vpd_header(&mut w, page);
                    let serial = self.cfg.serial.as_bytes();
                    if serial.is_empty() {
                        w.put(b" ");
                    } else {
                        w.put(serial);
                    }
                }
                0x83 => {
                    vpd_header(&mut w, page);
                    self.device_identification(&mut w);
                }
                0xb0 => {
                    vpd_header(&mut w, page);
                    self.block_limits(&mut w);
                }
                0xb1 => {
                    vpd_header(&mut w, page);
                    w.u16(1); // MEDIUM ROTATION RATE: non-rotating medium
                    w.u8(0); // PRODUCT TYPE
                             // WABEREQ 01b: reads after SANITIZE BLOCK ERASE succeed
                             // (thin LUNs only, where BLOCK ERASE is served).
                    w.u8(if self.cfg.thin_provisioning { 0x40 } else { 0 });
                    w.zeros(56);
                }
                0xb2 => {
                    vpd_header(&mut w, page);
                    self.provisioning(&mut w);
                }
                _ => return Err(bad_cdb(2, None)),
            }
            // PAGE LENGTH covers everything after the 4-byte header.
            let len = u16::try_from(w.pos().saturating_sub(4)).unwrap_or(u16::MAX);
            w.patch(2, &len.to_be_bytes());
        }
        Ok(done(w.data_len(alloc)))
    }

    fn standard_inquiry(&self, w: &mut Writer<'_>) {
        w.u8(0x00); // connected direct-access block device
        w.u8(0x00); // not removable
        w.u8(0x06); // VERSION: SPC-4
        w.u8(0x12); // HISUP, RESPONSE DATA FORMAT 2
        w.u8(91); // ADDITIONAL LENGTH: 96-byte response
        w.u8(0x00); // no SCCS/ACC/TPGS/3PC/PROTECT
        w.u8(0x00);
        w.u8(0x02); // CMDQUE
        w.ascii(&self.cfg.vendor, 8);
        w.ascii(&self.cfg.product, 16);
        w.ascii(&self.cfg.revision, 4);
        w.zeros(20); // vendor specific
        w.zeros(2); // clocking / QAS / IUS, reserved
        for v in VERSION_DESCRIPTORS {
            w.u16(v);
        }
        w.zeros(16 - 2 * VERSION_DESCRIPTORS.len());
        w.zeros(22);
    }

    fn device_identification(&self, w: &mut Writer<'_>) {
        // NAA IEEE Registered, logical unit association, binary.
        w.put(&[0x01, 0x03, 0x00, 0x08]);
        w.u64(self.cfg.naa);
        // T10 vendor ID based: vendor + serial (or NAA in hex), ASCII.
        let serial = self.cfg.serial.as_bytes();
        let mut id = [0u8; 8 + 32];
        let mut n = 0usize;
        for &b in self.cfg.vendor.iter().chain(serial.iter()) {
            if let Some(slot) = id.get_mut(n) {
                *slot = b;
                n = n.saturating_add(1);
            }
        }
        if serial.is_empty() {
            for i in 0..16u32 {
                let nib = (self.cfg.naa >> (60 - 4 * i)) & 0xf;
                let c = b"0123456789abcdef"
                    .get(nib as usize)
                    .copied()
                    .unwrap_or(b'0');
                if let Some(slot) = id.get_mut(n) {
                    *slot = c;
                    n = n.saturating_add(1);
                }
            }
        }
        w.put(&[0x02, 0x01, 0x00, u8::try_from(n).unwrap_or(0)]);
        w.put(id.get(..n).unwrap_or(&[]));
        // Relative target port 1, iSCSI protocol identifier, PIV.
        w.put(&[0x51, 0x94, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01]);
    }

    fn block_limits(&self, w: &mut Writer<'_>) {
        let thin = self.cfg.thin_provisioning;
        w.u8(0x00); // WSNZ = 0: WRITE SAME with 0 blocks runs to the last block
        w.u8(self.cfg.max_compare_and_write_blocks);
        w.u16(1); // OPTIMAL TRANSFER LENGTH GRANULARITY
        w.u32(self.cfg.max_transfer_blocks);
        w.u32(self.cfg.optimal_transfer_blocks);
        w.u32(self.cfg.max_transfer_blocks); // MAXIMUM PREFETCH LENGTH
        w.u32(if thin { self.cfg.max_unmap_blocks } else { 0 });
        w.u32(if thin {
            self.cfg
                .max_unmap_descriptors
                .min(super::LunConfig::MAX_UNMAP_DESCRIPTORS)
        } else {
            0
        });
        w.u32(if thin { self.cfg.unmap_granularity } else { 0 });
        w.u32(if thin { 0x8000_0000 } else { 0 }); // UGAVALID, alignment 0
        w.u64(self.cfg.max_write_same_blocks);
        w.zeros(20);
    }

    fn provisioning(&self, w: &mut Writer<'_>) {
        w.u8(0); // THRESHOLD EXPONENT
        if self.cfg.thin_provisioning {
            // LBPU | LBPWS | LBPWS10 | LBPRZ
            w.u8(0x80 | 0x40 | 0x20 | 0x04);
            w.u8(0x02); // PROVISIONING TYPE: thin
        } else {
            w.u8(0);
            w.u8(0);
        }
        w.u8(0);
    }
}

fn vpd_header(w: &mut Writer<'_>, page: u8) {
    w.u8(0x00);
    w.u8(page);
    w.u16(0);
}
