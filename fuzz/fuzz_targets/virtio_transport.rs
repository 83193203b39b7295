//! The virtio PCI transport (VirtioPciDevice): config space (capabilities, MSI-X), the
//! legacy BAR, the MSI-X BAR and the modern BAR in any order, with virtio-rng behind it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{access_len, transport, value_bytes, RegOp};
use vmkit_pci::{PciDevice, RegionIndex};
use vmkit_virtio::Rng;

fn region(sel: u16) -> (RegionIndex, u64) {
    let off = u64::from(sel & 0x3fff);
    match sel >> 14 {
        0 => (RegionIndex::Bar(4), off),
        1 => (RegionIndex::Bar(4), 0x3000 | (off & 0xfff)),
        2 => (RegionIndex::Bar(0), off & 0x3f),
        _ => (RegionIndex::Bar(1), off & 0xfff),
    }
}

fuzz_target!(|ops: Vec<RegOp>| {
    let rng = Rng::with_source(|b: &mut [u8]| {
        b.fill(7);
        Ok(())
    });
    let (mut dev, _mem) = transport(Box::new(rng));
    for op in ops.into_iter().take(200) {
        match op {
            RegOp::Read { offset, len } => {
                let mut b = vec![0; access_len(len)];
                let (r, o) = region(offset);
                dev.region_read(r, o, &mut b);
            }
            RegOp::Write { offset, len, value } => {
                let (r, o) = region(offset);
                dev.region_write(r, o, &value_bytes(value, access_len(len)));
            }
            RegOp::Advance(v) => {
                let mut b = vec![0; access_len(v as u8)];
                dev.config_read((v >> 8) as u16 % 0x110, &mut b);
            }
            RegOp::Event(k, v) => {
                dev.config_write(
                    (v >> 8) as u16 % 0x110,
                    &value_bytes(u64::from(v) * 0x101, access_len(k)),
                );
            }
            RegOp::Update => {
                let _ = (
                    dev.notify_addresses(),
                    dev.isr(),
                    dev.intx_level(),
                    dev.regions(),
                );
            }
            RegOp::Reset => PciDevice::reset(&mut dev),
        }
    }
});
