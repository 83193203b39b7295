//! Random guest configuration traffic: never panics, read-only fields never change, and the
//! regions mapped always match what each function decodes.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{RecordingMapper, TestDevice};
use proptest::prelude::*;
use vmkit_bus::{MmioBus, PioBus, Space};
use vmkit_pci::config::{BAR0, CAPABILITY_LIST, HEADER_TYPE, INTERRUPT_PIN, SUBSYSTEM_VENDOR_ID};
use vmkit_pci::{
    region_name, BarKind, BusRegionMapper, DevFn, PciBus, PciDevice, PciHost, RegionIndex,
    RegionMapper,
};

#[derive(Debug, Clone)]
enum Op {
    /// A guest port access at 0xCF8 + `offset` (0..=8: 8 is just outside).
    Host {
        write: bool,
        offset: u16,
        len: usize,
        value: u64,
    },
    /// A configuration access straight on the bus.
    Config {
        write: bool,
        devfn: DevFn,
        offset: u16,
        len: usize,
        value: u32,
    },
    /// Program CONFIG_ADDRESS for a device and register (makes hits likely).
    Select { devfn: DevFn, reg: u8 },
    /// Machine reset of the bus and host.
    Reset,
    /// A guest access at a random port / MMIO address near where BARs land.
    Region {
        pio: bool,
        addr: u64,
        len: usize,
        write: bool,
    },
}

const DEVFNS: [DevFn; 5] = [
    DevFn::new(1, 0),
    DevFn::new(1, 1),
    DevFn::new(3, 0),
    DevFn::new(5, 2), // absent: no function 0
    DevFn::new(9, 0), // empty slot
];

fn devfn() -> impl Strategy<Value = DevFn> {
    prop::sample::select(DEVFNS.to_vec())
}

/// Offsets biased towards the registers that change mappings.
fn offset() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            0x04u16, 0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x30, 0x06, 0x3c
        ]),
        0u16..0x110,
    ]
}

/// Values biased towards plausible BAR contents and all ones.
fn value() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0xffff_ffffu32),
        Just(0),
        Just(0x7),
        (0u32..4).prop_map(|k| 0xc000 + k * 0x40),
        (0u32..4).prop_map(|k| 0xfeb0_0001 + k * 0x4000),
        any::<u32>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u16..=8, 0usize..=8, any::<u64>())
            .prop_map(|(write, offset, len, value)| Op::Host { write, offset, len, value }),
        8 => (any::<bool>(), devfn(), offset(), prop::sample::select(vec![1usize, 2, 4]), value())
            .prop_map(|(write, devfn, offset, len, value)| Op::Config { write, devfn, offset, len, value }),
        3 => (devfn(), any::<u8>()).prop_map(|(devfn, reg)| Op::Select { devfn, reg }),
        1 => Just(Op::Reset),
        // Decode on/off and plausible (often overlapping) BAR placements, so mappings,
        // moves and conflicts happen often.
        3 => (devfn(), prop::sample::select(vec![0u32, 1, 2, 3, 7])).prop_map(|(devfn, value)| {
            Op::Config { write: true, devfn, offset: 0x04, len: 2, value }
        }),
        6 => (
            devfn(),
            prop::sample::select(vec![0x10u16, 0x14, 0x18, 0x1c, 0x24, 0x30]),
            prop::sample::select(vec![0u32, 1, 0xc000, 0xc040, 0xc100, 0xfeb0_0000, 0xfeb0_0001, 0xfeb0_4000, 0xffff_ffff]),
        )
            .prop_map(|(devfn, offset, value)| Op::Config { write: true, devfn, offset, len: 4, value }),
        2 => (any::<bool>(), 0xbff0u64..0xc200, prop::sample::select(vec![1usize, 2, 4, 8]), any::<bool>())
            .prop_map(|(pio, addr, len, write)| {
                let addr = if pio { addr } else { 0xfeaf_fff0 + (addr - 0xbff0) * 0x100 };
                Op::Region { pio, addr, len, write }
            }),
    ]
}

struct Rig {
    pci: PciBus,
    host: PciHost,
    devices: BTreeMap<DevFn, Arc<Mutex<TestDevice>>>,
    /// Power-on read-only bytes of each device: (offset, value).
    read_only: BTreeMap<DevFn, Vec<(u16, u32)>>,
    pio: PioBus,
    mmio: MmioBus,
}

fn rig(mapper: Option<Arc<dyn RegionMapper>>, pio: PioBus, mmio: MmioBus) -> Rig {
    let pci = match mapper {
        Some(m) => PciBus::with_mapper(m),
        None => PciBus::new(),
    };
    let mut first = TestDevice::full(0x1001);
    first.cfg.set_multifunction(true);
    let mut second = TestDevice::new(0x1002);
    second
        .cfg
        .add_bar(0, common::bar(BarKind::Io, 0x100, false))
        .unwrap();
    second
        .cfg
        .add_bar(5, common::bar(BarKind::Mem32, 0x4000, true))
        .unwrap();
    let mut absent = TestDevice::new(0x1003);
    absent
        .cfg
        .add_bar(0, common::bar(BarKind::Io, 0x40, false))
        .unwrap();
    let mut devices = BTreeMap::new();
    devices.insert(DEVFNS[0], first.shared());
    devices.insert(DEVFNS[1], second.shared());
    devices.insert(DEVFNS[2], TestDevice::full(0x1004).shared());
    devices.insert(DEVFNS[3], absent.shared());
    let mut read_only = BTreeMap::new();
    for (devfn, dev) in &devices {
        pci.add(*devfn, dev.clone()).unwrap();
        let d = dev.lock().unwrap();
        let mut fields: Vec<(u16, u32)> = [0x00u16, 0x08, SUBSYSTEM_VENDOR_ID]
            .iter()
            .map(|&o| (o, d.cfg.dword(o)))
            .collect();
        fields.push((HEADER_TYPE, u32::from(d.cfg.byte(HEADER_TYPE))));
        fields.push((INTERRUPT_PIN, u32::from(d.cfg.byte(INTERRUPT_PIN))));
        fields.push((CAPABILITY_LIST, u32::from(d.cfg.byte(CAPABILITY_LIST))));
        // BAR type bits: bit 0 for I/O, bits 3:0 for memory.
        for i in 0..6u8 {
            if let Some(def) = d.cfg.bar(i) {
                let off = BAR0 + 4 * u16::from(i);
                let mask = if def.kind == BarKind::Io { 0x1 } else { 0xf };
                fields.push((0x1000 | off, d.cfg.dword(off) & mask));
            }
        }
        fields.push((0x2006, u32::from(d.cfg.word(0x06) & 0x10)));
        read_only.insert(*devfn, fields);
    }
    let host = PciHost::new(pci.clone());
    Rig {
        pci,
        host,
        devices,
        read_only,
        pio,
        mmio,
    }
}

impl Rig {
    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Host {
                write,
                offset,
                len,
                value,
            } => {
                let bytes = value.to_le_bytes();
                if write {
                    self.host.write(offset, &bytes[..len]);
                } else {
                    let mut buf = vec![0u8; len];
                    self.host.read(offset, &mut buf);
                }
            }
            Op::Config {
                write,
                devfn,
                offset,
                len,
                value,
            } => {
                let bytes = value.to_le_bytes();
                if write {
                    self.pci.config_write(devfn, offset, &bytes[..len]);
                } else {
                    let mut buf = vec![0u8; len];
                    self.pci.config_read(devfn, offset, &mut buf);
                    if !self.pci.is_present(devfn) {
                        assert!(
                            buf.iter().all(|&b| b == 0xff),
                            "absent {devfn} read {buf:?}"
                        );
                    }
                }
            }
            Op::Select { devfn, reg } => {
                let v = 0x8000_0000u32 | u32::from(devfn.0) << 8 | u32::from(reg);
                self.host.write(0, &v.to_le_bytes());
            }
            Op::Reset => {
                self.pci.reset();
                self.host.reset();
            }
            Op::Region {
                pio,
                addr,
                len,
                write,
            } => {
                let mut buf = vec![0x5au8; len];
                match (pio, write) {
                    (true, false) => drop(self.pio.read(addr as u16, &mut buf)),
                    (true, true) => drop(self.pio.write(addr as u16, &buf)),
                    (false, false) => drop(self.mmio.read(addr, &mut buf)),
                    (false, true) => drop(self.mmio.write(addr, &buf)),
                }
            }
        }
    }

    fn check_read_only(&self) {
        for (devfn, fields) in &self.read_only {
            let d = self.devices[devfn].lock().unwrap();
            for &(key, expected) in fields {
                let got = match key {
                    o if o & 0x2000 != 0 => u32::from(d.cfg.word(o & 0xff) & 0x10),
                    o if o & 0x1000 != 0 => {
                        let off = o & 0xff;
                        let mask =
                            if d.cfg.bar(((off - BAR0) / 4) as u8).unwrap().kind == BarKind::Io {
                                0x1
                            } else {
                                0xf
                            };
                        d.cfg.dword(off) & mask
                    }
                    o if o == HEADER_TYPE || o == INTERRUPT_PIN || o == CAPABILITY_LIST => {
                        u32::from(d.cfg.byte(o))
                    }
                    o => d.cfg.dword(o),
                };
                assert_eq!(got, expected, "{devfn} read-only field {key:#x} changed");
            }
        }
    }

    /// What each device decodes now, as the bus should have it.
    fn wanted(&self, devfn: DevFn) -> Vec<(RegionIndex, vmkit_pci::Mapping)> {
        let mut w = self.devices[&devfn].lock().unwrap().regions();
        w.sort_by_key(|(r, _)| *r);
        w
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn recorded_mappings_always_equal_regions(ops in prop::collection::vec(op(), 1..120)) {
        let mapper = Arc::new(RecordingMapper::default());
        let mut rig = rig(Some(mapper.clone()), PioBus::new(), MmioBus::new());
        for op in &ops {
            rig.apply(op);
            rig.check_read_only();
            let inconsistencies = mapper.inconsistencies.lock().unwrap().clone();
            prop_assert!(inconsistencies.is_empty(), "{inconsistencies:?}");
            let live = mapper.live();
            for devfn in rig.devices.keys().copied() {
                let wanted = rig.wanted(devfn);
                prop_assert_eq!(&rig.pci.mapped(devfn), &wanted, "after {:?}", op);
                let recorded: Vec<_> = live
                    .iter()
                    .filter(|((d, _), _)| *d == devfn)
                    .map(|((_, r), m)| (*r, *m))
                    .collect();
                prop_assert_eq!(&recorded, &wanted);
            }
        }
    }

    #[test]
    fn bus_mapper_entries_match_the_bookkeeping(ops in prop::collection::vec(op(), 1..120)) {
        let (pio, mmio) = (PioBus::new(), MmioBus::new());
        let mapper = Arc::new(BusRegionMapper::new(pio.clone(), mmio.clone()));
        let mut rig = rig(Some(mapper), pio.clone(), mmio.clone());
        for op in &ops {
            rig.apply(op);
            rig.check_read_only();
            let mut total = 0;
            for devfn in rig.devices.keys().copied() {
                let wanted = rig.wanted(devfn);
                for (region, m) in rig.pci.mapped(devfn) {
                    total += 1;
                    prop_assert!(wanted.contains(&(region, m)), "{devfn} {region} mapped but not decoded");
                    let name = match m.space {
                        Space::Pio => pio.lookup(m.addr as u16).map(|(_, n)| n),
                        Space::Mmio => mmio.lookup(m.addr).map(|(_, n)| n),
                    };
                    let expected = region_name(devfn, region);
                    prop_assert_eq!(name.as_deref(), Some(expected.as_str()));
                }
            }
            prop_assert_eq!(pio.len() + mmio.len(), total, "stale bus entries");
        }
    }

    #[test]
    fn host_without_mapper_never_panics(ops in prop::collection::vec(op(), 1..200)) {
        let mut rig = rig(None, PioBus::new(), MmioBus::new());
        for op in &ops {
            rig.apply(op);
        }
        rig.check_read_only();
        for devfn in rig.devices.keys().copied() {
            prop_assert_eq!(rig.pci.mapped(devfn), rig.wanted(devfn));
        }
    }
}
