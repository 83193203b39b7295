//! The cost of one virtio doorbell as a guest sees it, with and without ioeventfd, through
//! vmkit's own stack on real KVM: a virtio-rng-pci function (vmkit-virtio's transport) on a
//! PCI bus whose BARs are regions (vmkit-pci's `RegionTreeMapper`), vmkit-pc's
//! `MachineNotifiers` turning the doorbell into a KVM ioeventfd, and a real-mode guest loop
//! `out dx, ax; loop` at the legacy `QUEUE_NOTIFY` port (2 bytes, queue 0).
//!
//! - `doorbell/exit` (`ioeventfd=off`): every `out` exits to this thread, which dispatches it
//!   on the PIO bus to the transport, which writes the queue's eventfd.
//! - `doorbell/ioeventfd`: KVM signals the queue's eventfd itself; no exit.
//! - `doorbell/exit_unassigned`: the same `out` to a port with nothing behind it: the
//!   exit and the bus lookup alone, without the transport and the worker's wake-up.
//! - `doorbell/ioeventfd_unread`: an ioeventfd of the same kind on another port that no
//!   thread waits on: KVM's share of the ioeventfd case without the worker's wake-up.
//! - `doorbell/loop_only`: the same loop without the `out`, what the guest's own
//!   instructions cost (this host interprets guest CPL0 code).
//!
//! The device's worker thread wakes on the eventfd in both doorbell cases (an empty
//! available ring: nothing to do), as it would for a real driver. One criterion iteration
//! is one loop turn; the figure is the time per doorbell. Needs /dev/kvm (skipped with a
//! message without it). `cargo bench --bench doorbell`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use vmkit::bus::{MmioBus, PioBus, PioHandle};
use vmkit::kvm::{KvmMemoryListener, KvmSystem, Vcpu, VcpuExit};
use vmkit::memory::AddressSpace;
use vmkit::pc::notifiers::MachineNotifiers;
use vmkit::pci::{DevFn, PciBus, RegionTreeMapper};
use vmkit_testutil::iced_x86::code_asm::*;
use vmkit_virtio::{Rng, VirtioPciBuilder};

/// Entry of the doorbell loop and of the empty loop.
const DOORBELL_LOOP: u64 = 0x1000;
const EMPTY_LOOP: u64 = 0x1100;
const IO_BASE: u16 = 0xc000;
const QUEUE_NOTIFY: u16 = IO_BASE + 0x10;
/// A port with no device and no ioeventfd.
const UNASSIGNED_PORT: u16 = 0xe010;
/// The port of the ioeventfd no thread reads.
const UNREAD_PORT: u16 = 0xd010;
/// The legacy ring (page frame 0x10).
const RING_PFN: u32 = 0x10;

struct Rig {
    vcpu: Vcpu,
    /// The unread ioeventfd's counter (kept open while KVM holds it).
    _unread: Arc<vmm_sys_util::eventfd::EventFd>,
    pio: PioHandle,
    notifiers: Arc<MachineNotifiers>,
    // Kept alive for the VM's lifetime.
    _pci: PciBus,
    _memory: Arc<Mutex<AddressSpace>>,
}

fn rig(ioeventfd: bool) -> Option<Rig> {
    let kvm = match KvmSystem::open() {
        Ok(kvm) => kvm,
        Err(e) => {
            eprintln!("doorbell bench skipped: {e}");
            return None;
        }
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    vmkit::pc::configure_kvm_pages(&vm).unwrap();

    let mut memory = AddressSpace::new("system");
    let root = memory.root();
    let ram = memory.new_ram("ram", 1 << 20).unwrap();
    memory.add_subregion(root, 0, ram).unwrap();
    let doorbell_loop = vmkit_testutil::assemble(16, DOORBELL_LOOP, |a| {
        let mut turn = a.create_label();
        a.set_label(&mut turn)?;
        a.out(dx, ax)?;
        a.loop_(turn)?;
        a.hlt()
    });
    let empty_loop = vmkit_testutil::assemble(16, EMPTY_LOOP, |a| {
        let mut turn = a.create_label();
        a.set_label(&mut turn)?;
        a.loop_(turn)?;
        a.hlt()
    });
    memory
        .write_region(ram, DOORBELL_LOOP, &doorbell_loop)
        .unwrap();
    memory.write_region(ram, EMPTY_LOOP, &empty_loop).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: the listener goes into this address space and is never called directly.
    let listener = unsafe { KvmMemoryListener::new(Arc::clone(&vm), u32::MAX) };
    memory.register_listener(Box::new(listener)).unwrap();
    let guest_memory = memory.guest_memory();
    let memory = Arc::new(Mutex::new(memory));

    let pio = PioBus::new();
    let io = Arc::new(Mutex::new(AddressSpace::new("io")));
    let mapper = Arc::new(
        RegionTreeMapper::new(Arc::clone(&memory), MmioBus::new(), io, pio.clone()).unwrap(),
    );
    let pci = PciBus::with_mapper(mapper.clone());
    let notifiers = MachineNotifiers::install(&vm, &memory, &mapper, false).unwrap();
    let devfn = DevFn::new(2, 0);
    let builder = VirtioPciBuilder::new().vectors(0).ioeventfd(ioeventfd);
    let transport = notifiers
        .configure(builder, devfn)
        .build(Box::new(Rng::new()), guest_memory)
        .unwrap();
    pci.add(devfn, Arc::new(Mutex::new(transport))).unwrap();
    // What a legacy driver does: BAR0 at IO_BASE, I/O decode on, ACKNOWLEDGE | DRIVER,
    // queue 0's ring, DRIVER_OK.
    pci.config_write(devfn, 0x10, &u32::from(IO_BASE).to_le_bytes());
    pci.config_write(devfn, 0x04, &1u16.to_le_bytes());
    pio.write(IO_BASE + 0x12, &[3]);
    pio.write(IO_BASE + 0x0e, &0u16.to_le_bytes());
    pio.write(IO_BASE + 0x08, &RING_PFN.to_le_bytes());
    pio.write(IO_BASE + 0x12, &[7]);
    assert_eq!(
        notifiers.pio_ioeventfd_count(),
        usize::from(ioeventfd),
        "the doorbell is an ioeventfd exactly when ioeventfd is on"
    );

    // An ioeventfd nobody waits on, in the same port space.
    let unread = Arc::new(vmm_sys_util::eventfd::EventFd::new(0).unwrap());
    {
        let mut io = mapper.io_space().lock().unwrap();
        let region = io.new_io("unread", 0x20).unwrap();
        io.add_eventfd(region, 0x10, 2, Some(0), Arc::clone(&unread))
            .unwrap();
        let root = io.root();
        io.add_subregion(root, u64::from(UNREAD_PORT - 0x10), region)
            .unwrap();
    }
    let vcpu = vm.create_vcpu(0).unwrap();
    Some(Rig {
        vcpu,
        _unread: unread,
        pio: pio.handle(),
        notifiers,
        _pci: pci,
        _memory: memory,
    })
}

impl Rig {
    /// Runs `turns` turns of the loop at `entry` writing `port` (in chunks of CX's 16
    /// bits), handling its exits, and returns the time spent.
    fn run(&mut self, entry: u64, port: u16, turns: u64) -> Duration {
        let mut left = turns;
        let start = Instant::now();
        while left > 0 {
            let chunk = left.min(0xffff);
            left -= chunk;
            vmkit::pc::real_mode_at(&self.vcpu, entry).unwrap();
            let mut regs = self.vcpu.regs().unwrap();
            regs.rcx = chunk;
            regs.rdx = u64::from(port);
            regs.rax = 0;
            self.vcpu.set_regs(&regs).unwrap();
            loop {
                match self.vcpu.run().unwrap() {
                    VcpuExit::IoOut { port, data, .. } => {
                        self.pio.write(port, data);
                    }
                    VcpuExit::Hlt => break,
                    other => panic!("unexpected exit {other:?}"),
                }
            }
        }
        start.elapsed()
    }
}

fn doorbell(c: &mut Criterion) {
    let (Some(mut exits), Some(mut eventfds)) = (rig(false), rig(true)) else {
        return;
    };
    let mut group = c.benchmark_group("doorbell");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("exit", |b| {
        b.iter_custom(|turns| exits.run(DOORBELL_LOOP, QUEUE_NOTIFY, turns))
    });
    group.bench_function("exit_unassigned", |b| {
        b.iter_custom(|turns| exits.run(DOORBELL_LOOP, UNASSIGNED_PORT, turns))
    });
    group.bench_function("ioeventfd", |b| {
        b.iter_custom(|turns| eventfds.run(DOORBELL_LOOP, QUEUE_NOTIFY, turns))
    });
    group.bench_function("ioeventfd_unread", |b| {
        b.iter_custom(|turns| eventfds.run(DOORBELL_LOOP, UNREAD_PORT, turns))
    });
    group.bench_function("loop_only", |b| {
        b.iter_custom(|turns| eventfds.run(EMPTY_LOOP, QUEUE_NOTIFY, turns))
    });
    group.finish();
    // Still on the ioeventfd path after the run (nothing fell back to exits): the queue's
    // and the unread one.
    assert_eq!(eventfds.notifiers.pio_ioeventfd_count(), 2);
}

criterion_group!(benches, doorbell);
criterion_main!(benches);
