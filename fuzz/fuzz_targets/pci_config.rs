//! PCI configuration mechanism #1 (0xCF8/0xCFC, 0xCF9 reset control) on a bus holding the
//! chipset functions (i440FX, PIIX3 ISA, IDE, PIIX4 PM), plus direct bus config accesses.
#![no_main]
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{access_len, value_bytes, RegOp};
use vmkit_hw::{ManualClock, RecordingLine};
use vmkit_pci::{DevFn, PciBus, PciHost};
use vmkit_piix::{I440fx, NoPam, NoPower, Piix3, Piix3Ide, Piix4Pm};

const DEVFNS: [DevFn; 6] = [
    DevFn::new(0, 0),
    DevFn::new(1, 0),
    DevFn::new(1, 1),
    DevFn::new(1, 3),
    DevFn::new(2, 0), // empty
    DevFn::new(1, 7), // function of a present device, absent
];

fuzz_target!(|ops: Vec<RegOp>| {
    let bus = PciBus::new();
    let clock = ManualClock::new(0);
    bus.add(
        DEVFNS[0],
        Arc::new(Mutex::new(I440fx::new(Arc::new(NoPam)))),
    )
    .unwrap();
    bus.add(DEVFNS[1], Arc::new(Mutex::new(Piix3::new())))
        .unwrap();
    bus.add(DEVFNS[2], Arc::new(Mutex::new(Piix3Ide::new())))
        .unwrap();
    let pm = Piix4Pm::new(
        Arc::new(clock.clone()),
        Arc::new(RecordingLine::new()),
        Arc::new(NoPower),
    );
    bus.add(DEVFNS[3], Arc::new(Mutex::new(pm))).unwrap();
    let mut host = PciHost::new(bus);
    for op in ops {
        match op {
            RegOp::Read { offset, len } => {
                let mut b = vec![0; access_len(len)];
                host.read(offset % 9, &mut b);
            }
            RegOp::Write { offset, len, value } => {
                host.write(offset % 9, &value_bytes(value, access_len(len)))
            }
            RegOp::Advance(ns) => clock.advance(u64::from(ns) << 10),
            RegOp::Update => {
                for d in DEVFNS {
                    host.bus().update_mappings(d);
                }
                let _ = host.bus().take_map_errors();
            }
            RegOp::Reset => {
                host.bus().reset();
                host.reset();
            }
            RegOp::Event(k, v) => {
                let devfn = DEVFNS[usize::from(k) % DEVFNS.len()];
                let offset = (v % 0x110) as u16;
                let len = access_len(k >> 3);
                if k & 0x80 == 0 {
                    let mut b = vec![0; len];
                    host.bus().config_read(devfn, offset, &mut b);
                } else {
                    host.bus().config_write(
                        devfn,
                        offset,
                        &value_bytes(u64::from(v) * 0x1_0001, len),
                    );
                }
            }
        }
    }
});
