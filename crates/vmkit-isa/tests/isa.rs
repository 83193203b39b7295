//! The ISA layer end to end, without KVM: device
//! types created from option text, wired onto a port bus, driven by guest-like port
//! accesses through the bus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use vmkit_bus::PioBus;
use vmkit_hw::{Clock, FixedWallClock, ManualClock, RecordingLine};
use vmkit_isa::*;
use vmkit_object::{Context, Object, ObjectTree, Registry};
use vmkit_pcglue::CmosMemoryLayout;

/// A machine under test: registry + tree, a bus, a context.
struct Rig {
    tree: ObjectTree,
    bus: PioBus,
    clock: ManualClock,
    pic: Arc<UserspacePic>,
    events: Arc<RecordingEvents>,
    console: SharedBuffer,
    ctx: IsaContext,
}

impl Rig {
    fn new(kernel: bool) -> Self {
        let registry = Registry::new();
        register_isa_types(&registry).unwrap();
        let tree = ObjectTree::new(&registry).unwrap();
        tree.set_machine(&registry.new_object("container").unwrap())
            .unwrap();
        let bus = PioBus::new();
        let clock = ManualClock::new(1_000);
        let pic = Arc::new(UserspacePic::new());
        let events = Arc::new(RecordingEvents::new());
        let console = SharedBuffer::new();
        let ctx = if kernel {
            IsaContext::kernel(
                bus.clone(),
                Arc::new(RecordingRouter::new()),
                Arc::new(clock.clone()),
                events.clone(),
            )
        } else {
            IsaContext::userspace(
                bus.clone(),
                pic.clone(),
                Arc::new(clock.clone()),
                events.clone(),
            )
        }
        .with_serial_backend("serial0", SerialBackend::new(console.clone()))
        .with_wall_clock(Arc::new(FixedWallClock::new(1_700_000_000)))
        .with_ram(CmosMemoryLayout::new(32 << 20, 0));
        Self {
            tree,
            bus,
            clock,
            pic,
            events,
            console,
            ctx,
        }
    }

    fn add(&mut self, options: &str) -> vmkit_object::Result<Object> {
        self.tree
            .device_add_with(options, &mut Context::new(&mut self.ctx))
    }

    fn standard(&mut self) -> IsaDevices {
        let config = IsaConfig {
            debug_exit: Some((0x501, 2)),
            ..IsaConfig::default()
        };
        add_pc_isa_devices(&self.tree, &mut self.ctx, &config).unwrap()
    }

    fn out(&self, port: u16, value: u8) {
        self.bus.write(port, &[value]);
    }

    fn inb(&self, port: u16) -> u8 {
        let mut data = [0u8];
        self.bus.read(port, &mut data);
        data[0]
    }

    /// Linux's init_8259A through the bus: vectors 0x30/0x38, nothing masked.
    fn program_pic(&self) {
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x30),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x38),
            (0xa1, 0x02),
            (0xa1, 0x01),
        ] {
            self.out(port, value);
        }
    }

    fn owner(&self, port: u16) -> Option<(u16, u32, String)> {
        self.bus
            .lookup(port)
            .map(|(range, name)| (range.base(), range.size(), name.to_string()))
    }
}

#[test]
fn every_type_is_registered_with_its_properties() {
    let registry = Registry::new();
    register_isa_types(&registry).unwrap();
    let names: Vec<_> = registry
        .list_types(Some(TYPE_ISA_DEVICE), true)
        .into_iter()
        .map(|t| t.name)
        .collect();
    for expected in [
        TYPE_ISA_DEVICE,
        TYPE_ISA_SERIAL,
        TYPE_I8259,
        TYPE_I8254,
        TYPE_I8042,
        TYPE_RTC,
        TYPE_PORT80,
        TYPE_DEBUG_EXIT,
        TYPE_DEBUGCON,
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(registry.new_object(TYPE_ISA_DEVICE).is_err(), "abstract");
    let props: Vec<_> = registry
        .type_properties(TYPE_ISA_SERIAL)
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.type_name))
        .collect();
    for (name, ty) in [
        ("index", "uint8"),
        ("iobase", "uint16"),
        ("irq", "uint8"),
        ("chardev", "str"),
    ] {
        assert!(
            props.iter().any(|(n, t)| n == name && t == ty),
            "{name}: {ty} in {props:?}"
        );
    }
    // Registering twice is refused.
    assert!(matches!(
        register_isa_types(&registry),
        Err(Error::Object(_))
    ));
}

#[test]
fn standard_set_lands_at_the_standard_ports() {
    let mut rig = Rig::new(false);
    let devices = rig.standard();
    let p = "/machine/peripheral/";
    for (port, base, size, id) in [
        (0x21, 0x20, 2, "pic"),
        (0xa0, 0xa0, 2, "pic"),
        (0x4d1, 0x4d0, 2, "pic"),
        (0x43, 0x40, 4, "pit"),
        (0x61, 0x61, 1, "pit"),
        (0x60, 0x60, 1, "i8042"),
        (0x64, 0x64, 1, "i8042"),
        (0x71, 0x70, 2, "rtc"),
        (0x80, 0x80, 1, "port80"),
        (0x3ff, 0x3f8, 8, "com1"),
        (0x2f8, 0x2f8, 8, "com2"),
        (0x3e8, 0x3e8, 8, "com3"),
        (0x2ef, 0x2e8, 8, "com4"),
        (0x502, 0x501, 2, "debug-exit"),
    ] {
        assert_eq!(
            rig.owner(port),
            Some((base, size, format!("{p}{id}"))),
            "port {port:#x}"
        );
    }
    for free in [0x62, 0x63, 0x65, 0x72, 0x81, 0x500, 0x503, 0x3f0] {
        assert_eq!(rig.owner(free), None, "port {free:#x}");
    }
    assert_eq!(rig.bus.len(), 14);
    assert_eq!(devices.serial.len(), 4);
    // Live properties: COM2 was given only its index.
    assert_eq!(rig.tree.get("com2", "iobase").unwrap(), 0x2f8);
    assert_eq!(rig.tree.get("com2", "irq").unwrap(), 3);
    assert_eq!(rig.tree.get("com4", "index").unwrap(), 3);
    assert_eq!(rig.tree.get("com1", "chardev").unwrap(), "serial0");
    assert_eq!(rig.tree.get("pit", "irq").unwrap(), 0);
    let com3 = devices.serial_handle(2).unwrap();
    assert_eq!(
        (com3.index(), com3.iobase(), com3.irq()),
        (Some(2), 0x3e8, 4)
    );
    assert!(matches!(
        devices.serial_handle(4),
        Err(Error::NoSuchSerial(4))
    ));
    // PIT and the four UARTs share the host timer.
    assert_eq!(rig.ctx.timers.len(), 5);
    assert!(rig.ctx.serial_backends.is_empty(), "COM1 took serial0");
}

#[test]
fn serial_output_goes_through_the_bus_to_the_backend() {
    let mut rig = Rig::new(false);
    rig.add("isa-serial,id=com1,index=0,chardev=serial0")
        .unwrap();
    for byte in b"Hello" {
        rig.out(0x3f8, *byte);
    }
    assert_eq!(rig.console.text(), "Hello");
    // LSR: THR empty and transmitter empty after each byte.
    assert_eq!(rig.inb(0x3fd) & 0x60, 0x60);
    // A 16-bit access at the last port straddles into unassigned space: split, no panic.
    rig.bus.write(0x3ff, &[0x55, 0x66]);
    assert_eq!(rig.inb(0x3ff), 0x55, "scratch register");
}

#[test]
fn serial_interrupt_reaches_the_userspace_pic() {
    let mut rig = Rig::new(false);
    let devices = rig.standard();
    let kicks = Arc::new(AtomicU64::new(0));
    let k = Arc::clone(&kicks);
    rig.pic.set_waker(Arc::new(move || {
        k.fetch_add(1, Ordering::Relaxed);
    }));
    rig.program_pic();
    assert!(!rig.pic.intr_pending());
    // Receive interrupt on COM1: OUT2 gates the UART's INTR onto IRQ 4.
    rig.out(0x3f9, 0x01); // IER.ERBFI
    rig.out(0x3fc, 0x08); // MCR.OUT2
    let com1 = devices.serial_handle(0).unwrap();
    assert_eq!(com1.enqueue_input(b"x"), 1);
    assert!(rig.pic.intr_pending());
    assert_eq!(kicks.load(Ordering::Relaxed), 1);
    assert_eq!(rig.pic.acknowledge(), Some(0x30 + 4));
    assert_eq!(rig.inb(0x3f8), b'x');
    rig.out(0x20, 0x20); // EOI
    assert!(!rig.pic.intr_pending());
    // COM2's IRQ 3, with the THR-empty interrupt.
    rig.out(0x2fc, 0x08);
    rig.out(0x2f9, 0x02);
    assert_eq!(rig.pic.acknowledge(), Some(0x33));
    // Nothing pending any more: INTA answers None instead of a spurious vector.
    assert_eq!(rig.pic.acknowledge(), None);
}

#[test]
fn serial_input_room_and_character_timeout() {
    let mut rig = Rig::new(false);
    let room = Arc::new(RecordingLine::new());
    let armed = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&armed);
    rig.ctx
        .timers
        .set_notifier(Arc::new(move |t| log.lock().unwrap().push(t)));
    rig.ctx.serial_backends.insert(
        "console".into(),
        SerialBackend::new(std::io::sink()).with_rx_room(room.clone()),
    );
    rig.add("i8259,id=pic").unwrap();
    let com1 = rig.add("isa-serial,id=com1,chardev=console").unwrap();
    let handle = serial_handle(&com1).unwrap();
    assert!(room.level(), "16450 mode: RBR has room for one byte");
    assert!(handle.rx_room_line().is_some());
    rig.program_pic();

    rig.out(0x3fa, 0x81); // FCR: FIFO on, trigger level 8
    rig.out(0x3f9, 0x01);
    rig.out(0x3fc, 0x08);
    assert_eq!(handle.input_room(), 16);
    assert_eq!(handle.enqueue_input(&[b'z'; 20]), 16, "only what fits");
    assert!(!room.level(), "FIFO full: no room");
    for _ in 0..16 {
        rig.inb(0x3f8);
    }
    assert!(room.level(), "the guest made room");
    assert_eq!(room.rising_edges(), 2);
    // The FIFO reached its trigger level: the receive interrupt (latched by the 8259A's
    // edge-triggered IRR), taken and ended.
    assert_eq!(rig.pic.acknowledge(), Some(0x34));
    rig.out(0x20, 0x20);
    assert!(!rig.pic.intr_pending());
    // While the guest drained the FIFO below its trigger level a character timeout was
    // armed; the host timer fires, finds the FIFO empty and has nothing left to arm.
    let stale = *armed
        .lock()
        .unwrap()
        .last()
        .expect("timeout armed while draining");
    rig.clock.set(stale);
    assert_eq!(rig.ctx.timers.service(), None);
    assert!(!rig.pic.intr_pending());
    armed.lock().unwrap().clear();

    // Two bytes: below the trigger level, so only the character timeout will interrupt.
    assert_eq!(handle.enqueue_input(b"ab"), 2);
    assert!(!rig.pic.intr_pending());
    let deadline = *armed.lock().unwrap().last().expect("timeout armed");
    assert!(deadline > rig.clock.now_ns());
    // The host timer fires.
    rig.clock.set(deadline);
    assert_eq!(rig.ctx.timers.service(), None);
    assert!(rig.pic.intr_pending());
    assert_eq!(rig.inb(0x3fa) & 0x0f, 0x0c, "IIR: character timeout");
}

#[test]
fn pit_at_1khz_through_the_bus_and_the_host_timer() {
    let mut rig = Rig::new(false);
    let armed = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&armed);
    rig.ctx
        .timers
        .set_notifier(Arc::new(move |t| log.lock().unwrap().push(t)));
    rig.add("i8259,id=pic").unwrap();
    let pit = rig.add("i8254,id=pit").unwrap();
    rig.program_pic();
    // Counter 0, lobyte/hibyte, mode 2, 1193 ticks: ~1 kHz (Linux's HZ=1000 setup).
    rig.out(0x43, 0x34);
    rig.out(0x40, (1193u16 & 0xff) as u8);
    rig.out(0x40, (1193u16 >> 8) as u8);
    // The control word raised OUT0 (IRQ 0 edge): take and end that interrupt.
    assert_eq!(rig.pic.acknowledge(), Some(0x30));
    rig.out(0x20, 0x20);
    let first = *armed
        .lock()
        .unwrap()
        .last()
        .expect("count write armed the timer");
    let notifications = rig.ctx.timers.notifications();

    let mut next = Some(first);
    let mut fired = Vec::new();
    let mut interrupts = 0;
    for _ in 0..10 {
        let deadline = next.expect("mode 2 is periodic");
        rig.clock.set(deadline);
        fired.push(deadline);
        next = rig.ctx.timers.service();
        if rig.pic.intr_pending() {
            assert_eq!(rig.pic.acknowledge(), Some(0x30));
            rig.out(0x20, 0x20);
            interrupts += 1;
        }
    }
    // One expiry per period of 1193 ticks (~999.85 us), each one IRQ 0 interrupt.
    for pair in fired.windows(2) {
        let period = pair[1] - pair[0];
        assert!(
            (999_000..=1_001_000).contains(&period),
            "period {period} ns"
        );
    }
    assert_eq!(interrupts, 10);
    // A host timer five periods late delivers one interrupt, and the next deadline is
    // ahead of the clock again (no burst of catch-up interrupts).
    rig.clock.set(next.unwrap() + 5_000_000);
    let after_late = rig.ctx.timers.service().unwrap();
    assert!(after_late > rig.clock.now_ns());
    assert_eq!(rig.pic.acknowledge(), Some(0x30));
    rig.out(0x20, 0x20);
    assert!(!rig.pic.intr_pending());
    assert_eq!(
        rig.ctx.timers.notifications(),
        notifications,
        "serviced deadlines needed no notification"
    );
    // Reading the count does not move the deadline: no notification either.
    rig.out(0x43, 0x00);
    rig.inb(0x40);
    rig.inb(0x40);
    assert_eq!(rig.ctx.timers.notifications(), notifications);
    let model = pit_handle(&pit).unwrap();
    assert!(model.lock().unwrap().next_deadline_ns().is_some());
    // Port 0x61 is the PIT's: GATE2 reads back.
    rig.out(0x61, 0x01);
    assert_eq!(rig.inb(0x61) & 0x01, 0x01);
}

#[test]
fn i8042_reset_command_requests_a_machine_reset() {
    let mut rig = Rig::new(true);
    rig.add("i8042").unwrap();
    assert_eq!(rig.inb(0x64) & 0x02, 0, "input buffer empty");
    rig.out(0x64, 0xfe);
    assert_eq!(rig.events.reset_count(), 1);
    rig.out(0x64, 0xfe);
    assert_eq!(rig.events.reset_count(), 2, "each pulse is a request");
    assert_eq!(rig.events.exit_count(), 0);
}

#[test]
fn debug_exit_requests_an_exit_with_qemu_status() {
    let mut rig = Rig::new(true);
    let dev = rig.add("isa-debug-exit").unwrap();
    assert_eq!(dev.get_u64("iobase").unwrap(), 0x501);
    rig.out(0x501, 0x31);
    assert_eq!(rig.events.last_exit_status(), Some(0x63));
    // A test kernel's choice: 4 ports at 0xf4, a 32-bit write.
    rig.add("isa-debug-exit,id=exit2,iobase=0xf4,iosize=4")
        .unwrap();
    assert_eq!(
        rig.owner(0xf7),
        Some((0xf4, 4, "/machine/peripheral/exit2".into()))
    );
    rig.bus.write(0xf4, &0x10u32.to_le_bytes());
    assert_eq!(rig.events.last_exit_status(), Some(0x21));
    // A range past port 0xffff is refused before anything is mapped.
    let err = rig
        .add("isa-debug-exit,iobase=0xfffe,iosize=4")
        .unwrap_err()
        .to_string();
    assert!(err.contains("0xfffe"), "{err}");
}

#[test]
fn a_second_serial_on_com2_ports_is_an_overlap_naming_both() {
    let mut rig = Rig::new(false);
    rig.standard();
    let err = rig
        .add("isa-serial,iobase=0x2f8,irq=3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/machine/peripheral-anon/device[0]"), "{err}");
    assert!(err.contains("/machine/peripheral/com2"), "{err}");
    assert!(err.contains("overlaps"), "{err}");
    // The failed device left nothing behind.
    assert!(rig
        .tree
        .resolve("/machine/peripheral-anon/device[0]")
        .is_err());
    assert_eq!(rig.owner(0x2f8).unwrap().2, "/machine/peripheral/com2");
    // All four COM ports are taken: an isa-serial with nothing given has nowhere to go.
    let err = rig.add("isa-serial").unwrap_err().to_string();
    assert!(err.contains("no free COM port"), "{err}");
    // Somewhere else is fine.
    let extra = rig.add("isa-serial,id=com5,iobase=0x3e0,irq=5").unwrap();
    let handle = serial_handle(&extra).unwrap();
    assert_eq!(
        (handle.index(), handle.iobase(), handle.irq()),
        (None, 0x3e0, 5)
    );
}

#[test]
fn serial_defaults_follow_the_free_com_ports() {
    let mut rig = Rig::new(true);
    let first = rig.add("isa-serial").unwrap();
    let second = rig.add("isa-serial,chardev=serial0").unwrap();
    assert_eq!(first.get_u64("iobase").unwrap(), 0x3f8);
    assert_eq!(second.get_u64("iobase").unwrap(), 0x2f8);
    assert_eq!(second.get_u64("irq").unwrap(), 3);
    assert_eq!(second.get_u64("index").unwrap(), 1);
    // iobase of a COM port implies its index.
    let third = rig.add("isa-serial,iobase=0x2e8").unwrap();
    assert_eq!(third.get_u64("index").unwrap(), 3);
    assert_eq!(third.get_u64("irq").unwrap(), 3);
    // Realized properties are fixed.
    assert!(first.set_property("iobase", 0x100.into()).is_err());
}

#[test]
fn chardev_errors_and_the_backend_survives_a_failed_realize() {
    let mut rig = Rig::new(true);
    let err = rig.add("isa-serial,chardev=nope").unwrap_err().to_string();
    assert!(
        err.contains("no serial backend 'nope'") && err.contains("serial0"),
        "{err}"
    );
    rig.add("port80,id=squatter").unwrap();
    rig.add("isa-serial,id=blocker,iobase=0x3f8").unwrap();
    // Overlaps COM1: refused, and serial0 goes back to the context.
    assert!(rig.add("isa-serial,iobase=0x3fc,chardev=serial0").is_err());
    assert!(rig.ctx.serial_backends.contains_key("serial0"));
    rig.add("isa-serial,id=good,index=1,chardev=serial0")
        .unwrap();
    rig.out(0x2f8, b'k');
    assert_eq!(rig.console.text(), "k");
    // Taken now.
    let err = rig
        .add("isa-serial,index=2,chardev=serial0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("available: none"), "{err}");
}

#[test]
fn userspace_chips_are_refused_in_the_kernel_model() {
    let mut rig = Rig::new(true);
    for ty in ["i8259", "i8254"] {
        let err = rig.add(ty).unwrap_err().to_string();
        assert!(err.contains("needs the userspace interrupt model"), "{err}");
        assert!(err.contains(ty), "{err}");
    }
    assert!(rig.bus.is_empty());
    // The standard set then leaves the PIC, PIT and port 0x61 to KVM.
    let devices = rig.standard();
    assert!(devices.pic.is_none() && devices.pit.is_none());
    for port in [0x20, 0x40, 0x43, 0x61, 0xa0, 0x4d0] {
        assert_eq!(rig.owner(port), None, "port {port:#x}");
    }
    assert_eq!(rig.ctx.timers.len(), 4, "only the UARTs");
}

#[test]
fn unrealize_removes_the_ranges_and_the_timer() {
    let mut rig = Rig::new(false);
    rig.standard();
    let before = rig.bus.len();
    rig.tree.remove("/machine/peripheral/pit").unwrap();
    assert_eq!(rig.owner(0x40), None);
    assert_eq!(rig.owner(0x61), None);
    assert_eq!(rig.bus.len(), before - 2);
    assert_eq!(rig.ctx.timers.len(), 4);
    rig.tree.remove("com2").unwrap();
    assert_eq!(rig.owner(0x2f8), None);
    assert_eq!(rig.ctx.timers.len(), 3);
    // The ports are free again for a new device.
    rig.add("i8254,id=pit").unwrap();
    rig.add("isa-serial,id=com2b,index=1").unwrap();
    assert_eq!(rig.bus.len(), before);
    assert_eq!(rig.ctx.timers.len(), 5);
    // Unrealize with a context works the same, and a handle of an unrealized device says so.
    let com3 = rig.tree.resolve("com3").unwrap();
    com3.unrealize_with(&mut Context::new(&mut rig.ctx))
        .unwrap();
    assert_eq!(rig.owner(0x3e8), None);
    assert!(matches!(serial_handle(&com3), Err(Error::NotRealized(_))));
}

#[test]
fn reset_tree_resets_the_models() {
    let mut rig = Rig::new(false);
    rig.standard();
    rig.program_pic();
    rig.out(0x2fc, 0x08);
    rig.out(0x2f9, 0x02);
    assert!(rig.pic.intr_pending());
    rig.out(0x3ff, 0x5a);
    rig.tree.root().reset_tree();
    assert!(!rig.pic.intr_pending(), "PIC reset drops INT");
    assert_eq!(rig.inb(0x3ff), 0, "UART scratch register reset");
    assert_eq!(rig.inb(0x2f9), 0, "IER reset");
}

#[test]
fn cmos_and_post_port() {
    let mut rig = Rig::new(true);
    let devices = rig.standard();
    // 32 MiB: 16 MiB above 16 MiB in 64 KiB units = 0x0100 at 0x34/0x35.
    rig.out(0x70, 0x34);
    assert_eq!(rig.inb(0x71), 0x00);
    rig.out(0x70, 0x35);
    assert_eq!(rig.inb(0x71), 0x01);
    // Year from the fixed wall clock (2023-11-14): BCD 0x23.
    rig.out(0x70, 0x09);
    assert_eq!(rig.inb(0x71), 0x23);
    assert!(cmos_handle(&devices.rtc).is_ok());
    rig.out(0x80, 0x42);
    assert_eq!(
        post_handle(&devices.port80).unwrap().last_value(),
        Some(0x42)
    );
    // Handles check the type.
    assert!(matches!(
        cmos_handle(&devices.port80),
        Err(Error::Object(_))
    ));
    assert!(matches!(pit_handle(&devices.rtc), Err(Error::Object(_))));
}

#[test]
fn realize_without_an_isa_context_is_a_clear_error() {
    let registry = Registry::new();
    register_isa_types(&registry).unwrap();
    let tree = ObjectTree::new(&registry).unwrap();
    tree.set_machine(&registry.new_object("container").unwrap())
        .unwrap();
    let err = tree.device_add("port80").unwrap_err().to_string();
    assert!(err.contains("IsaContext"), "{err}");
    // A detached object realizes too, under a generated range name.
    let bus = PioBus::new();
    let mut ctx = IsaContext::kernel(
        bus.clone(),
        Arc::new(RecordingRouter::new()),
        Arc::new(ManualClock::new(0)),
        Arc::new(RecordingEvents::new()),
    );
    let dev = registry.new_object("port80").unwrap();
    dev.realize_with(&mut Context::new(&mut ctx)).unwrap();
    assert!(bus.lookup(0x80).unwrap().1.starts_with("port80#"));
    dev.unrealize().unwrap();
    assert!(bus.is_empty());
}

#[test]
fn a_serial_irq_line_shared_by_com1_and_com3_reaches_the_router() {
    let mut rig = Rig::new(true);
    let router = Arc::new(RecordingRouter::new());
    rig.ctx.irq = router.clone();
    rig.standard();
    rig.out(0x3ec, 0x08);
    rig.out(0x3e9, 0x02);
    assert!(router.level(4), "COM3 raised IRQ 4");
    rig.out(0x3e9, 0x00);
    assert!(!router.level(4));
    // i8042's keyboard IRQ: a controller command producing output (0x20 reads the command
    // byte) with the keyboard interrupt enabled in it.
    rig.out(0x64, 0x60);
    rig.out(0x60, 0x01);
    rig.out(0x64, 0x20);
    assert!(router.level(1), "output buffer full raises IRQ 1");
    assert_eq!(rig.inb(0x60), 0x01);
    assert!(!router.level(1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any sequence of port accesses of any size over the standard set, with time passing
    /// and the host timer serviced, never panics, and INTA never returns a vector while INT
    /// is low.
    #[test]
    fn random_guest_accesses_never_panic(
        ops in proptest::collection::vec(
            (0u16..0x520, 0usize..=8, any::<u64>(), any::<bool>(), 0u64..2_000_000),
            1..96,
        )
    ) {
        let mut rig = Rig::new(false);
        rig.standard();
        for (port, size, value, write, advance) in ops {
            let bytes = value.to_le_bytes();
            let len = size.min(bytes.len());
            if write {
                rig.bus.write(port, &bytes[..len]);
            } else {
                let mut data = [0u8; 8];
                rig.bus.read(port, &mut data[..len]);
            }
            rig.clock.advance(advance);
            let _ = rig.ctx.timers.service();
            if !rig.pic.intr_pending() {
                prop_assert_eq!(rig.pic.acknowledge(), None);
            }
        }
    }
}

#[test]
fn isa_debugcon_writes_to_its_chardev_and_reads_back() {
    let mut rig = Rig::new(true);
    let log = SharedBuffer::new();
    rig.ctx
        .serial_backends
        .insert("d".into(), SerialBackend::new(log.clone()));
    rig.add("isa-debugcon,iobase=0x402,chardev=d").unwrap();
    for b in b"Found QEMU fw_cfg\n" {
        rig.out(0x402, *b);
    }
    assert_eq!(log.text(), "Found QEMU fw_cfg\n");
    assert_eq!(rig.inb(0x402), 0xe9);
    assert_eq!(rig.owner(0x402).map(|o| o.0), Some(0x402));
    // The default port and readback, QEMU's: 0xe9 / 0xe9; a custom readback.
    rig.add("isa-debugcon,readback=0x42").unwrap();
    assert_eq!(rig.inb(0xe9), 0x42);
    // The backend serves one device.
    let err = rig
        .add("isa-debugcon,iobase=0x403,chardev=d")
        .unwrap_err()
        .to_string();
    assert!(err.contains("'d'"), "{err}");
}
