//! The chipset's PCI functions (i440FX, PIIX3 ISA bridge, PIIX3 IDE, PIIX4 PM): config
//! space, their I/O regions, the PM block's PM1/GPE/APM registers and the PM timer.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{access_len, value_bytes, RegOp};
use vmkit_hw::{ManualClock, RecordingLine};
use vmkit_pci::{PciDevice, RegionIndex};
use vmkit_piix::pm::PM_REGION;
use vmkit_piix::{I440fx, NoPam, NoPower, Piix3, Piix3Ide, Piix4Pm};

fn region(index: u16) -> RegionIndex {
    match index % 4 {
        0 => PM_REGION,
        1 => RegionIndex::Bar(4),
        2 => RegionIndex::Bar((index >> 2) as u8 % 7),
        _ => RegionIndex::Rom,
    }
}

fuzz_target!(|input: (u8, Vec<RegOp>)| {
    let (which, ops) = input;
    let clock = ManualClock::new(0);
    let mut pm = Piix4Pm::new(
        Arc::new(clock.clone()),
        Arc::new(RecordingLine::new()),
        Arc::new(NoPower),
    );
    let mut host = I440fx::new(Arc::new(NoPam));
    let mut isa = Piix3::new();
    let mut ide = Piix3Ide::new();
    for op in ops {
        let dev: &mut dyn PciDevice = match which % 4 {
            0 => &mut host,
            1 => &mut isa,
            2 => &mut ide,
            _ => &mut pm,
        };
        match op {
            RegOp::Read { offset, len } => {
                let mut b = vec![0; access_len(len)];
                if offset & 0x8000 == 0 {
                    dev.config_read(offset % 0x110, &mut b);
                } else {
                    dev.region_read(region(offset >> 8), u64::from(offset & 0x7f), &mut b);
                }
            }
            RegOp::Write { offset, len, value } => {
                let b = value_bytes(value, access_len(len));
                if offset & 0x8000 == 0 {
                    dev.config_write(offset % 0x110, &b);
                } else {
                    dev.region_write(region(offset >> 8), u64::from(offset & 0x7f), &b);
                }
            }
            RegOp::Advance(ns) => clock.advance(u64::from(ns) << 12),
            RegOp::Update => {
                let _ = dev.regions();
            }
            RegOp::Reset => dev.reset(),
            RegOp::Event(k, v) => {
                let len = access_len(k >> 2);
                let mut b = vec![0; len];
                let o = u64::from(v % 0x40);
                match k % 8 {
                    0 => pm.pm_read(o, &mut b),
                    1 => pm.pm_write(o, &value_bytes(u64::from(v >> 6), len)),
                    2 => pm.gpe_read(o, &mut b),
                    3 => pm.gpe_write(o, &value_bytes(u64::from(v >> 6), len)),
                    4 => pm.apm_read(o, &mut b),
                    5 => pm.apm_write(o, &value_bytes(u64::from(v >> 6), len)),
                    6 => pm.raise_gpe((v % 64) as u8),
                    _ => {
                        pm.power_button();
                        let _ = (
                            pm.timer(),
                            pm.pm1_status(),
                            isa.route((v % 5) as u8),
                            host.modes(),
                        );
                    }
                }
            }
        }
    }
});
