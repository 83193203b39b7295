//! ioeventfds and GSI routing with real KVM: an address space's ioeventfds become
//! KVM_IOEVENTFDs (port with datamatch, MMIO with no length, sized without datamatch), a
//! matching guest write signals the eventfd without an exit and follows the region when it
//! moves; GSI routes keep the irqchip's and take irqfds.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use iced_x86::code_asm::*;
use vmkit_kvm::{
    GsiRouting, IoeventfdSpace, KvmIoeventfdListener, KvmSystem, MemorySlot, MsiRoute, SlotFlags,
    Vcpu, VcpuExit, Vm, IOAPIC_PINS,
};
use vmkit_memory::{AddressSpace, Error as MemoryError};
use vmkit_testutil::{assemble, require_kvm, GuestRam};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const CODE: u64 = 0x1000;

fn real_mode_vm(code: &[u8], irqchip: bool) -> (Arc<Vm>, Vcpu, GuestRam) {
    let kvm = KvmSystem::open().expect("open /dev/kvm");
    let vm = Arc::new(kvm.create_vm().expect("create VM"));
    if irqchip {
        vm.create_irqchip().expect("irqchip");
    }
    let mut ram = GuestRam::new(0x10000);
    ram.write(CODE as usize, code);
    // SAFETY: `ram` is returned to the test and outlives the VM's use of it.
    unsafe {
        vm.set_memory_slot(MemorySlot {
            slot: 0,
            guest_addr: 0,
            size: 0x10000,
            host_addr: ram.host_addr(),
            flags: SlotFlags::default(),
        })
    }
    .expect("slot");
    let vcpu = vm.create_vcpu(0).expect("vCPU");
    let mut sregs = vcpu.sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.regs().unwrap();
    regs.rip = CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    (vm, vcpu, ram)
}

fn eventfd() -> Arc<EventFd> {
    Arc::new(EventFd::new(EFD_NONBLOCK).unwrap())
}

/// The eventfd's counter (0 if it was not signalled), cleared.
fn count(fd: &EventFd) -> u64 {
    fd.read().unwrap_or(0)
}

#[test]
fn a_port_ioeventfd_with_datamatch_takes_the_doorbell_and_follows_its_region() {
    require_kvm!();
    let code = assemble(16, CODE, |a| {
        a.mov(dx, 0xc010u32)?;
        a.mov(ax, 1u32)?;
        a.out(dx, ax)?; // no match: exits
        a.xor(ax, ax)?;
        a.out(dx, ax)?; // queue 0: signalled in the kernel
        a.out(0x10, al)?; // marker: the region moves now
        a.mov(dx, 0xc010u32)?;
        a.out(dx, ax)?; // the old address: exits
        a.mov(dx, 0xd010u32)?;
        a.out(dx, ax)?; // the new one: signalled
        a.hlt()
    });
    let (vm, mut vcpu, _ram) = real_mode_vm(&code, false);
    let mut io = AddressSpace::new("io");
    let listener = KvmIoeventfdListener::new(Arc::clone(&vm), IoeventfdSpace::Pio);
    let registered = listener.count_handle();
    io.register_listener(Box::new(listener)).unwrap();
    let root = io.root();
    let bar = io.new_io("bar0", 0x20).unwrap();
    let fd = eventfd();
    io.add_eventfd(bar, 0x10, 2, Some(0), Arc::clone(&fd))
        .unwrap();
    io.add_subregion(root, 0xc000, bar).unwrap();
    assert_eq!(registered.load(Ordering::Acquire), 1);

    match vcpu.run().unwrap() {
        VcpuExit::IoOut { port, data, .. } => assert_eq!((port, data), (0xc010, &[1, 0][..])),
        other => panic!("{other:?}"),
    }
    match vcpu.run().unwrap() {
        VcpuExit::IoOut { port, .. } => assert_eq!(port, 0x10),
        other => panic!("the doorbell exited: {other:?}"),
    }
    assert_eq!(count(&fd), 1, "KVM signalled the queue's eventfd");

    io.set_address(bar, 0xd000).unwrap();
    assert_eq!(registered.load(Ordering::Acquire), 1);
    match vcpu.run().unwrap() {
        VcpuExit::IoOut { port, data, .. } => assert_eq!((port, data), (0xc010, &[0, 0][..])),
        other => panic!("the old address did not exit: {other:?}"),
    }
    assert!(matches!(vcpu.run().unwrap(), VcpuExit::Hlt));
    assert_eq!(count(&fd), 1, "the moved ioeventfd was signalled");

    io.remove_subregion(root, bar).unwrap();
    assert_eq!(registered.load(Ordering::Acquire), 0);
}

#[test]
fn mmio_ioeventfds_of_any_length_and_of_one_size() {
    require_kvm!();
    let code = assemble(16, CODE, |a| {
        a.mov(ax, 0xd000u32)?;
        a.mov(ds, ax)?;
        a.mov(byte_ptr(0x10), 1u32)?; // no length: any write signals
        a.mov(word_ptr(0x10), 2u32)?;
        a.mov(dword_ptr(0x10), 3u32)?;
        a.mov(byte_ptr(0x20), 4u32)?; // 1-byte ioeventfd: signalled
        a.mov(word_ptr(0x20), 5u32)?; // 2 bytes: exits
        a.hlt()
    });
    let (vm, mut vcpu, _ram) = real_mode_vm(&code, false);
    let mut memory = AddressSpace::new("system");
    let listener = KvmIoeventfdListener::new(Arc::clone(&vm), IoeventfdSpace::Mmio);
    let registered = listener.count_handle();
    memory.register_listener(Box::new(listener)).unwrap();
    let root = memory.root();
    let bar = memory.new_io("bar4", 0x100).unwrap();
    memory.add_subregion(root, 0xd0000, bar).unwrap();
    let any = eventfd();
    let byte = eventfd();
    memory
        .add_eventfd(bar, 0x10, 0, None, Arc::clone(&any))
        .unwrap();
    memory
        .add_eventfd(bar, 0x20, 1, None, Arc::clone(&byte))
        .unwrap();
    assert_eq!(registered.load(Ordering::Acquire), 2);
    match vcpu.run().unwrap() {
        VcpuExit::MmioWrite { addr, data } => assert_eq!((addr, data), (0xd0020, &[5, 0][..])),
        other => panic!("{other:?}"),
    }
    assert!(matches!(vcpu.run().unwrap(), VcpuExit::Hlt));
    assert_eq!(count(&any), 3);
    assert_eq!(count(&byte), 1);
    drop(memory);
    assert_eq!(registered.load(Ordering::Acquire), 0);
}

#[test]
fn kvm_refusing_a_second_ioeventfd_on_the_same_trigger_undoes_the_add() {
    require_kvm!();
    let (vm, _vcpu, _ram) = real_mode_vm(&[0xf4], false);
    let mut io = AddressSpace::new("io");
    let listener = KvmIoeventfdListener::new(Arc::clone(&vm), IoeventfdSpace::Pio);
    let registered = listener.count_handle();
    io.register_listener(Box::new(listener)).unwrap();
    let root = io.root();
    let bar = io.new_io("bar0", 0x20).unwrap();
    io.add_subregion(root, 0xc000, bar).unwrap();
    io.add_eventfd(bar, 0x10, 2, Some(0), eventfd()).unwrap();
    let err = io
        .add_eventfd(bar, 0x10, 2, Some(0), eventfd())
        .unwrap_err();
    assert!(matches!(err, MemoryError::Listener { .. }), "{err}");
    assert!(err.to_string().contains("kvm ioeventfd (pio)"), "{err}");
    assert_eq!(io.region_eventfd_count(bar).unwrap(), 1);
    assert_eq!(registered.load(Ordering::Acquire), 1);
    // A port ioeventfd above 0xFFFF is refused by name.
    let high = io.new_io("high", 0x20).unwrap();
    io.add_eventfd(high, 0, 1, None, eventfd()).unwrap();
    let err = io.add_subregion(root, 0x1_0000, high).unwrap_err();
    assert!(format!("{err:?}").contains("16-bit port space"), "{err:?}");
    assert_eq!(io.region_parent(high).unwrap(), None);
}

#[test]
fn gsi_routes_keep_the_irqchip_routes_and_take_msi_routes_and_irqfds() {
    require_kvm!();
    let (vm, _vcpu, _ram) = real_mode_vm(&[0xf4], true);
    let routing = GsiRouting::new(Arc::clone(&vm));
    let irqchip = GsiRouting::irqchip_entries().len();
    assert_eq!(irqchip, 16 + 24);
    let first = MsiRoute {
        address: 0xfee0_0000,
        data: 0x4041,
    };
    let gsi = routing.add_msi(first).unwrap();
    assert_eq!(gsi, IOAPIC_PINS);
    let second = routing
        .add_msi(MsiRoute {
            address: 0xfee0_1000,
            data: 0x42,
        })
        .unwrap();
    assert_eq!(second, IOAPIC_PINS + 1);
    assert_eq!(routing.entries().len(), irqchip + 2);
    // ISA lines still reach the PIC and IOAPIC through the kept routes.
    vm.set_irq_line(4, true).unwrap();
    vm.set_irq_line(4, false).unwrap();

    let irqfd = EventFd::new(EFD_NONBLOCK).unwrap();
    vm.register_irqfd(&irqfd, gsi).unwrap();
    let moved = MsiRoute {
        address: 0xfee0_2000,
        data: 0x4043,
    };
    routing.update_msi(gsi, moved).unwrap();
    assert_eq!(routing.msi_route(gsi), Some(moved));
    irqfd.write(1).unwrap();
    vm.unregister_irqfd(&irqfd, gsi).unwrap();

    routing.remove_msi(second).unwrap();
    assert_eq!(routing.msi_route(second), None);
    // The lowest free GSI is handed out again.
    assert_eq!(routing.add_msi(first).unwrap(), second);
    let err = routing.update_msi(99, first).unwrap_err();
    assert!(err.to_string().contains("GSI 99"), "{err}");
    let err = routing.remove_msi(99).unwrap_err();
    assert!(err.to_string().contains("GSI 99"), "{err}");
}

#[test]
fn a_refused_routing_table_leaves_the_routes_as_they_were() {
    require_kvm!();
    // No irqchip: KVM has no routing table to replace.
    let (vm, _vcpu, _ram) = real_mode_vm(&[0xf4], false);
    let routing = GsiRouting::new(vm);
    let err = routing
        .add_msi(MsiRoute {
            address: 0xfee0_0000,
            data: 0x41,
        })
        .unwrap_err();
    assert!(err.to_string().contains("KVM_SET_GSI_ROUTING"), "{err}");
    assert_eq!(routing.msi_count(), 0);
}
