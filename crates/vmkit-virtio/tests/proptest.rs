//! Random transport traffic: configuration space, the three BARs, status writes, queue
//! setup with random rings and descriptors in guest memory, doorbells and machine resets.
//! Property: no panic, no hang (every case ends by dropping the device, which joins its
//! worker), and the transport's invariants hold after every access (among them: the
//! doorbells last reported to the notifier hook are exactly the ones the transport lists).

mod common;

use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};
use vmkit_hw::RecordingLine;
use vmkit_pci::{PciDevice, RegionIndex};
use vmkit_virtio::{common as cc, Console, Rng, VirtioDevice, VirtioPciBuilder};

const MEM: usize = 64 * 1024;

#[derive(Debug, Clone)]
enum Op {
    Cfg {
        write: bool,
        off: u16,
        len: usize,
        val: u64,
    },
    Bar {
        bar: u8,
        write: bool,
        off: u64,
        len: usize,
        val: u64,
    },
    Status(u8),
    SetupQueue {
        q: u16,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    },
    Descriptor {
        table: u64,
        slot: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    },
    Publish {
        avail: u64,
        head: u16,
        idx: u16,
    },
    Kick(u16),
    /// A whole driver bring-up with rings at random places (so workers really run).
    Bringup {
        features: u64,
        rings: [u64; 3],
    },
    Input(Vec<u8>),
    MachineReset,
}

fn offset_in_bar() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..0x40,
        0x1000u64..0x1004,
        0x2000u64..0x2010,
        0x3000u64..0x3010,
        0u64..0x5000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![Just(1usize), Just(2), Just(4), Just(8), Just(3)];
    let addr = (0u64..(MEM as u64 / 16)).prop_map(|a| a * 16);
    prop_oneof![
        3 => (any::<bool>(), 0u16..0x100, prop_oneof![Just(1usize), Just(2), Just(4)], any::<u64>())
            .prop_map(|(write, off, len, val)| Op::Cfg { write, off, len, val }),
        8 => (prop_oneof![Just(0u8), Just(1), Just(4), Just(2)], any::<bool>(), offset_in_bar(), len, any::<u64>())
            .prop_map(|(bar, write, off, len, val)| Op::Bar { bar, write, off, len, val }),
        3 => prop_oneof![Just(0u8), Just(1), Just(3), Just(11), Just(15), Just(7), any::<u8>()]
            .prop_map(Op::Status),
        2 => (0u16..3, prop_oneof![Just(4u16), Just(16), Just(3), Just(256)], addr.clone(), addr.clone(), addr.clone())
            .prop_map(|(q, size, desc, avail, used)| Op::SetupQueue { q, size, desc, avail, used }),
        3 => (addr.clone(), 0u16..20, 0u64..(MEM as u64 + 0x100), prop_oneof![0u32..256, Just(u32::MAX)], 0u16..8, 0u16..20)
            .prop_map(|(table, slot, addr, len, flags, next)| Op::Descriptor { table, slot, addr, len, flags, next }),
        2 => (addr.clone(), 0u16..20, any::<u16>()).prop_map(|(avail, head, idx)| Op::Publish { avail, head, idx }),
        2 => (0u16..3).prop_map(Op::Kick),
        2 => (prop_oneof![Just(VERSION_1), any::<u64>()], [addr.clone(), addr.clone(), addr.clone()])
            .prop_map(|(features, rings)| Op::Bringup { features, rings }),
        1 => proptest::collection::vec(any::<u8>(), 0..32).prop_map(Op::Input),
        1 => Just(Op::MachineReset),
    ]
}

type Doorbell = (u16, RegionIndex, u64, u32, Option<u64>);

fn doorbells(notifiers: &[vmkit_virtio::QueueNotify]) -> Vec<Doorbell> {
    notifiers
        .iter()
        .map(|n| (n.queue, n.region, n.offset, n.len, n.datamatch))
        .collect()
}

/// Keeps the last set of doorbells the transport reported (what a machine has registered).
#[derive(Default)]
struct LastDoorbells(std::sync::Mutex<Vec<Doorbell>>);

impl vmkit_virtio::NotifierHook for LastDoorbells {
    fn notifiers_changed(&self, notifiers: &[vmkit_virtio::QueueNotify]) {
        *self.0.lock().unwrap() = doorbells(notifiers);
    }
}

fn check(dev: &Dev, line: &RecordingLine, hook: &LastDoorbells, what: &Op) {
    assert_eq!(
        *hook.0.lock().unwrap(),
        doorbells(&dev.notify_addresses()),
        "registered doorbells differ from the transport's after {what:?}"
    );
    let level = dev.intx_level();
    assert_eq!(dev.config().word(0), 0x1af4, "after {what:?}");
    assert!(
        !dev.is_active() || dev.status() & DRIVER_OK != 0,
        "active without DRIVER_OK after {what:?}"
    );
    if dev.status() == 0 {
        assert!(!dev.is_active(), "status 0 but active after {what:?}");
    }
    if !dev.is_active() {
        assert!(dev.notify_addresses().is_empty());
    }
    if level {
        assert_ne!(dev.isr(), 0, "INTx high with ISR 0 after {what:?}");
        assert!(
            !dev.msix_enabled(),
            "INTx high with MSI-X on after {what:?}"
        );
    }
    // Device threads only ever raise: the transport's level read first implies the line's.
    assert!(
        !level || line.level(),
        "line low while the transport drives it after {what:?}"
    );
}

fn run(console: bool, ops: Vec<Op>) {
    let sink = Sink::default();
    let (device, input): (Box<dyn VirtioDevice<Mem>>, _) = if console {
        let c = Console::with_input_capacity(sink, 16).unwrap();
        let i = c.input();
        (Box::new(c), Some(i))
    } else {
        (
            Box::new(Rng::with_source(|b: &mut [u8]| {
                b.fill(3);
                Ok(())
            })),
            None,
        )
    };
    let mem = memory(MEM);
    let line = Arc::new(RecordingLine::new());
    let msi = Arc::new(RecordingMsi::default());
    let hook = Arc::new(LastDoorbells::default());
    let mut dev = VirtioPciBuilder::new()
        .intx(line.clone())
        .msi(msi)
        .notifier_hook(hook.clone())
        .build(device, mem.clone())
        .unwrap();
    for op in &ops {
        match op {
            Op::Cfg {
                write,
                off,
                len,
                val,
            } => {
                if *write {
                    dev.config_write(*off, &val.to_le_bytes()[..*len]);
                } else {
                    let mut b = [0u8; 4];
                    dev.config_read(*off, &mut b[..*len]);
                }
            }
            Op::Bar {
                bar,
                write,
                off,
                len,
                val,
            } => {
                let r = RegionIndex::Bar(*bar);
                if *write {
                    dev.region_write(r, *off, &val.to_le_bytes()[..*len]);
                } else {
                    let mut b = [0u8; 8];
                    dev.region_read(r, *off, &mut b[..*len]);
                }
            }
            Op::Status(s) => dev.region_write(BAR4, cc::DEVICE_STATUS, &[*s]),
            Op::SetupQueue {
                q,
                size,
                desc,
                avail,
                used,
            } => {
                let w = |dev: &mut Dev, off: u64, v: u64, len: usize| {
                    dev.region_write(BAR4, off, &v.to_le_bytes()[..len])
                };
                w(&mut dev, cc::QUEUE_SELECT, u64::from(*q), 2);
                w(&mut dev, cc::QUEUE_SIZE, u64::from(*size), 2);
                w(&mut dev, cc::QUEUE_DESC_LO, *desc, 4);
                w(&mut dev, cc::QUEUE_DRIVER_LO, *avail, 4);
                w(&mut dev, cc::QUEUE_DEVICE_LO, *used, 4);
                w(&mut dev, cc::QUEUE_ENABLE, 1, 2);
            }
            Op::Descriptor {
                table,
                slot,
                addr,
                len,
                flags,
                next,
            } => {
                let a = table + 16 * u64::from(*slot);
                let _ = mem.write_obj(desc(*addr, *len, *flags, *next), GuestAddress(a));
            }
            Op::Publish { avail, head, idx } => {
                let _ = mem.write_obj(*head, GuestAddress(avail + 4 + 2 * u64::from(idx % 16)));
                let _ = mem.write_obj(*idx, GuestAddress(avail + 2));
            }
            Op::Kick(q) => dev.region_write(BAR4, 0x3000 + 4 * u64::from(*q), &q.to_le_bytes()),
            Op::Bringup { features, rings } => {
                let w = |dev: &mut Dev, off: u64, v: u64, len: usize| {
                    dev.region_write(BAR4, off, &v.to_le_bytes()[..len])
                };
                for s in [0u64, 1, 3] {
                    w(&mut dev, cc::DEVICE_STATUS, s, 1);
                }
                w(&mut dev, cc::DRIVER_FEATURE_SELECT, 0, 4);
                w(&mut dev, cc::DRIVER_FEATURE, features & 0xffff_ffff, 4);
                w(&mut dev, cc::DRIVER_FEATURE_SELECT, 1, 4);
                w(&mut dev, cc::DRIVER_FEATURE, features >> 32, 4);
                w(&mut dev, cc::DEVICE_STATUS, 11, 1);
                for q in 0..2u64 {
                    w(&mut dev, cc::QUEUE_SELECT, q, 2);
                    w(&mut dev, cc::QUEUE_SIZE, 16, 2);
                    w(&mut dev, cc::QUEUE_DESC_LO, rings[0] + 0x400 * q, 4);
                    w(&mut dev, cc::QUEUE_DRIVER_LO, rings[1] + 0x400 * q, 4);
                    w(&mut dev, cc::QUEUE_DEVICE_LO, rings[2] + 0x400 * q, 4);
                    w(&mut dev, cc::QUEUE_ENABLE, 1, 2);
                }
                w(&mut dev, cc::DEVICE_STATUS, 15, 1);
            }
            Op::Input(bytes) => {
                if let Some(i) = &input {
                    i.enqueue(bytes);
                }
            }
            Op::MachineReset => PciDevice::reset(&mut dev),
        }
        check(&dev, &line, &hook, op);
    }
    // Dropping joins any worker: a hang here fails the run by timeout.
    drop(dev);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_rng_traffic(ops in proptest::collection::vec(op(), 1..60)) {
        run(false, ops);
    }

    #[test]
    fn random_console_traffic(ops in proptest::collection::vec(op(), 1..60)) {
        run(true, ops);
    }
}
