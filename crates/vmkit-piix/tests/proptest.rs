//! Any access sequence to any chipset function is defined: no panic, read-only identity
//! bytes never change, and the PM block's SLP_EN never reads back set.

use std::sync::Arc;

use proptest::prelude::*;
use vmkit_hw::{ManualClock, RecordingLine};
use vmkit_pci::{PciDevice, RegionIndex};
use vmkit_piix::pm::{NoPower, Piix4Pm, PM_REGION, SLP_EN};
use vmkit_piix::{I440fx, NoPam, Piix3, Piix3Ide};

#[derive(Debug, Clone)]
enum Op {
    ConfigRead(u16, usize),
    ConfigWrite(u16, Vec<u8>),
    RegionRead(u8, u64, usize),
    RegionWrite(u8, u64, Vec<u8>),
    Gpe(u64, Vec<u8>),
    Apm(u64, Vec<u8>),
    Time(u64),
    Button,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    let data = proptest::collection::vec(any::<u8>(), 1..=4);
    prop_oneof![
        (0u16..0x110, 1usize..=4).prop_map(|(o, l)| Op::ConfigRead(o, l)),
        (0u16..0x110, data.clone()).prop_map(|(o, d)| Op::ConfigWrite(o, d)),
        (0u8..3, 0u64..80, 1usize..=4).prop_map(|(r, o, l)| Op::RegionRead(r, o, l)),
        (0u8..3, 0u64..80, data.clone()).prop_map(|(r, o, d)| Op::RegionWrite(r, o, d)),
        (0u64..6, data.clone()).prop_map(|(o, d)| Op::Gpe(o, d)),
        (0u64..4, data).prop_map(|(o, d)| Op::Apm(o, d)),
        (0u64..10_000_000_000).prop_map(Op::Time),
        Just(Op::Button),
        Just(Op::Reset),
    ]
}

fn region(index: u8) -> RegionIndex {
    match index {
        0 => PM_REGION,
        1 => RegionIndex::Bar(4),
        _ => RegionIndex::Rom,
    }
}

fn apply(device: &mut dyn PciDevice, op: Op) {
    match op {
        Op::ConfigRead(o, l) => {
            let mut d = vec![0; l];
            device.config_read(o, &mut d);
        }
        Op::ConfigWrite(o, d) => device.config_write(o, &d),
        Op::RegionRead(r, o, l) => {
            let mut d = vec![0; l];
            device.region_read(region(r), o, &mut d);
        }
        Op::RegionWrite(r, o, d) => device.region_write(region(r), o, &d),
        Op::Reset => device.reset(),
        Op::Gpe(..) | Op::Apm(..) | Op::Time(_) | Op::Button => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_is_defined(ops in proptest::collection::vec(op(), 0..64), which in 0usize..4) {
        let clock = ManualClock::new(0);
        let mut pm = Piix4Pm::new(Arc::new(clock.clone()), Arc::new(RecordingLine::default()), Arc::new(NoPower));
        let mut host = I440fx::new(Arc::new(NoPam));
        let mut isa = Piix3::new();
        let mut ide = Piix3Ide::new();
        let mut ids = [[0u8; 12]; 4];
        for (i, d) in [&mut host as &mut dyn PciDevice, &mut isa, &mut ide, &mut pm].into_iter().enumerate() {
            d.config_read(0, &mut ids[i][..4]);
            d.config_read(8, &mut ids[i][4..8]);
            d.config_read(0x2c, &mut ids[i][8..12]);
        }
        for op in ops {
            match op {
                Op::Gpe(o, d) => pm.gpe_write(o, &d),
                Op::Apm(o, d) => pm.apm_write(o, &d),
                Op::Time(t) => clock.set(t),
                Op::Button => pm.power_button(),
                other => {
                    let device: &mut dyn PciDevice = match which {
                        0 => &mut host,
                        1 => &mut isa,
                        2 => &mut ide,
                        _ => &mut pm,
                    };
                    apply(device, other);
                    let _ = device.regions();
                }
            }
            prop_assert_eq!(pm.pm1_control() & SLP_EN, 0);
        }
        for (i, d) in [&mut host as &mut dyn PciDevice, &mut isa, &mut ide, &mut pm].into_iter().enumerate() {
            let mut now = [0u8; 12];
            d.config_read(0, &mut now[..4]);
            d.config_read(8, &mut now[4..8]);
            d.config_read(0x2c, &mut now[8..12]);
            prop_assert_eq!(now, ids[i]);
        }
    }
}
