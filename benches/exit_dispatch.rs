//! The VMM side of one exit, end to end through vmkit's crates, without KVM: what a vCPU
//! thread runs after `KVM_RUN` returns a port access, from the bus lookup to the device
//! register (KVM's own share, ~9 us per exit on this host, is measured by `vmkit-bench`).
//!
//! `cargo bench` runs these; each group dispatches through a per-vCPU `PioHandle`, as the
//! vCPU loop does.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::{Arc, Mutex};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use vmkit::bus::{PioBus, PioRange};
use vmkit::hw::ManualClock;
use vmkit::isa::{
    add_pc_isa_devices, register_isa_types, IsaConfig, IsaContext, RecordingEvents, SerialBackend,
    UserspacePic,
};
use vmkit::object::{ObjectTree, Registry};
use vmkit::pci::{DevFn, PciBus, PciHost};
use vmkit::piix::{I440fx, NoPam};

/// The standard ISA devices on a port bus (userspace interrupt model, output discarded).
fn isa_bus() -> (ObjectTree, PioBus) {
    let registry = Registry::new();
    register_isa_types(&registry).unwrap();
    let tree = ObjectTree::new(&registry).unwrap();
    tree.set_machine(&registry.new_object("container").unwrap())
        .unwrap();
    let bus = PioBus::new();
    let mut ctx = IsaContext::userspace(
        bus.clone(),
        Arc::new(UserspacePic::new()),
        Arc::new(ManualClock::new(0)),
        Arc::new(RecordingEvents::new()),
    )
    .with_serial_backend("serial0", SerialBackend::new(std::io::sink()));
    add_pc_isa_devices(&tree, &mut ctx, &IsaConfig::default()).unwrap();
    (tree, bus)
}

fn isa_devices(c: &mut Criterion) {
    // The tree holds the devices' objects for as long as the bench runs.
    let (_tree, bus) = isa_bus();
    let mut handle = bus.handle();
    let mut group = c.benchmark_group("pio_dispatch");
    group.bench_function("post_0x80_write", |b| {
        b.iter(|| handle.write(black_box(0x80), &[0x42]))
    });
    group.bench_function("uart_thr_write", |b| {
        b.iter(|| handle.write(black_box(0x3f8), b"x"))
    });
    group.bench_function("uart_lsr_read", |b| {
        let mut data = [0u8];
        b.iter(|| handle.read(black_box(0x3fd), &mut data))
    });
    group.bench_function("unassigned_read", |b| {
        let mut data = [0u8];
        b.iter(|| handle.read(black_box(0x2a0), &mut data))
    });
    group.finish();
}

fn pci_config(c: &mut Criterion) {
    let bus = PioBus::new();
    let pci = PciBus::new();
    pci.add(
        DevFn::new(0, 0),
        Arc::new(Mutex::new(I440fx::new(Arc::new(NoPam)))),
    )
    .unwrap();
    let host = Arc::new(Mutex::new(PciHost::new(pci)));
    bus.insert(
        PioRange::new(PciHost::BASE, PciHost::LEN).unwrap(),
        "pci-conf",
        Arc::new(vmkit::hw::Locked(host)),
    )
    .unwrap();
    let mut handle = bus.handle();
    c.bench_function("pci_config/cf8_write_cfc_read", |b| {
        let mut data = [0u8; 4];
        b.iter(|| {
            handle.write(0xcf8, &0x8000_0000u32.to_le_bytes());
            handle.read(0xcfc, &mut data);
            black_box(data)
        })
    });
}

criterion_group!(benches, isa_devices, pci_config);
criterion_main!(benches);
