//! virtio-pci devices on the pc machine, driven by tiny guests of their own through the
//! legacy (transitional) I/O BAR, as a legacy virtio driver does; with `ioeventfd=on` (the
//! default) their doorbells are KVM ioeventfds.

mod common;

use std::time::Duration;

use common::legacy_driver::*;
use common::*;
use vmkit_vmm::cli::IrqchipOption;

/// The ring (page frame 0x10) and the buffer the device fills.
const RING: u32 = 0x1_0000;
const BUFFER: u32 = 0x2_0000;

/// Emits: S5 through the PM block vmkit programs at 0x600 for firmware-less boots.
fn emit_power_off(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut off = a.create_label();
    a.cli()?;
    a.set_label(&mut off)?;
    a.mov(ax, 0x2000u32)?;
    a.mov(dx, 0x604u32)?;
    a.out(dx, ax)?;
    a.hlt()?;
    a.jmp(off)
}

/// A real-mode legacy virtio-rng driver for the function at `slot`.0: prints 'V' if the
/// function is 1af4:1005, sets up queue 0 with one 16-byte writable buffer, notifies, and
/// once the used ring moves prints 'U', the used length, 'R' if the buffer is no longer all
/// zeros and 'I' if the ISR says "queue"; then powers off through S5.
fn rng_driver(slot: u32) -> Vec<u8> {
    real_mode_guest(|a| {
        let mut zero = a.create_label();
        let mut no_irq = a.create_label();
        let mut or_loop = a.create_label();
        a.cli()?;
        emit_probe(a, slot, 0x1005)?;
        emit_queue_with_one_buffer(a, 0, RING, BUFFER, 16, 2 /* WRITE */)?;
        emit_driver_ok(a, &[0])?;
        emit_wait_used(a, RING)?;
        a.mov(al, b'U' as u32)?;
        emit_putc(a)?;
        a.mov(al, byte_ptr(used_offset() + 8))?; // used.ring[0].len, low byte
        emit_putc(a)?;
        // OR the buffer's 16 bytes together.
        a.mov(ax, BUFFER >> 4)?;
        a.mov(ds, ax)?;
        a.xor(bx, bx)?;
        a.xor(cl, cl)?;
        a.set_label(&mut or_loop)?;
        a.or(cl, byte_ptr(bx))?;
        a.inc(bx)?;
        a.cmp(bx, 16u32)?;
        a.jb(or_loop)?;
        a.test(cl, cl)?;
        a.jz(zero)?;
        a.mov(al, b'R' as u32)?;
        emit_putc(a)?;
        a.set_label(&mut zero)?;
        // ISR bit 0: a queue interrupt is pending (INTx; reading clears it).
        a.mov(dx, IO_BASE + 0x13)?;
        a.in_(al, dx)?;
        a.test(al, 1u32)?;
        a.jz(no_irq)?;
        a.mov(al, b'I' as u32)?;
        emit_putc(a)?;
        a.set_label(&mut no_irq)?;
        emit_power_off(a)
    })
}

/// Where the console driver keeps its transmit ring and the bytes it sends.
const TX_RING: u32 = 0x3_0000;
const TX_BUFFER: u32 = 0x4_0000;
const TX_TEXT: &[u8] = b"hello from virtconsole\n";

/// A real-mode legacy virtio-console driver for `slot`.0: sends [`TX_TEXT`] on the
/// transmit queue (1), posts a 16-byte receive buffer on queue 0, waits for both, and
/// prints on COM1: 'V', 'T' once the text went out, then the received length and bytes.
fn console_driver(slot: u32) -> Vec<u8> {
    real_mode_guest(|a| {
        let mut echo = a.create_label();
        let mut done = a.create_label();
        a.cli()?;
        // The text to send, copied to TX_BUFFER byte by byte.
        a.mov(ax, TX_BUFFER >> 4)?;
        a.mov(es, ax)?;
        for (i, &byte) in TX_TEXT.iter().enumerate() {
            a.mov(byte_ptr(i as u32).es(), u32::from(byte))?;
        }
        emit_probe(a, slot, 0x1003)?;
        emit_queue_with_one_buffer(a, 0, RING, BUFFER, 16, 2 /* WRITE */)?;
        emit_queue_with_one_buffer(a, 1, TX_RING, TX_BUFFER, TX_TEXT.len() as u32, 0)?;
        emit_driver_ok(a, &[1, 0])?;
        emit_wait_used(a, TX_RING)?;
        a.mov(al, b'T' as u32)?;
        emit_putc(a)?;
        emit_wait_used(a, RING)?;
        a.mov(cx, word_ptr(used_offset() + 8))?; // received length
        a.mov(al, cl)?;
        emit_putc(a)?;
        a.mov(ax, BUFFER >> 4)?;
        a.mov(ds, ax)?;
        a.xor(bx, bx)?;
        a.set_label(&mut echo)?;
        a.cmp(bx, cx)?;
        a.jae(done)?;
        a.mov(al, byte_ptr(bx))?;
        emit_putc(a)?;
        a.inc(bx)?;
        a.jmp(echo)?;
        a.set_label(&mut done)?;
        emit_power_off(a)
    })
}

fn run_rng(name: &str, slot: u32, device: &str, extra: &[&str]) -> Vec<u8> {
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(guest_file(name, &rng_driver(slot)))
        .args(["-device", device])
        .args(extra);
    let (output, _) = run(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    output.stdout
}

#[test]
fn a_legacy_driver_gets_random_bytes_from_virtio_rng_pci() {
    require_kvm!();
    // The first free slot is 2, as on QEMU's pc without VGA.
    let out = run_rng("virtio-rng", 2, "virtio-rng-pci", &[]);
    assert_eq!(out, [b'V', b'U', 16, b'R', b'I'], "{out:?}");
}

#[test]
fn virtio_rng_pci_takes_its_addr_and_works_with_the_userspace_irqchip() {
    require_kvm!();
    let out = run_rng(
        "virtio-rng-addr",
        5,
        "virtio-rng-pci,addr=05.0",
        &["-irqchip", "user"],
    );
    assert_eq!(out, [b'V', b'U', 16, b'R', b'I'], "{out:?}");
}

#[test]
fn bad_pci_device_options_are_refused_by_name() {
    for (device, needle) in [
        ("virtio-rng-pci,addr=40", "addr '40'"),
        ("virtio-rng-pci,disable-legacy=maybe", "disable-legacy"),
        ("virtio-rng-pci,addr=01.0", "taken"),
    ] {
        let mut command = vmkit();
        command
            .arg("-flat")
            .arg(guest_file("virtio-bad", &[0xf4]))
            .args(["-device", device]);
        let (output, _) = run(command, Duration::from_secs(20));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{device}: {err}");
        assert!(err.contains(needle), "{device}: '{needle}' not in {err}");
    }
}

#[test]
fn virtconsole_sends_guest_output_to_its_chardev_and_delivers_input() {
    require_kvm!();
    let com1 = guest_file("virtconsole-com1", b"");
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(guest_file("virtconsole", &console_driver(2)))
        .args(["-serial", &format!("file:{}", com1.display())])
        .args(["-chardev", "stdio,id=con0"])
        .args(["-device", "virtio-serial-pci,id=vser0"])
        .args(["-device", "virtconsole,chardev=con0,bus=vser0.0"]);
    let (output, _) = run_with_input(command, b"ab", Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(output.stdout, TX_TEXT, "{:?}", stdout(&output));
    let status = std::fs::read(&com1).unwrap();
    assert_eq!(status, [b'V', b'T', 2, b'a', b'b'], "{status:?}");
}

#[test]
fn virtconsole_without_a_serial_device_or_chardev_is_refused() {
    for (devices, needle) in [
        (&["virtconsole,chardev=c"][..], "virtio-serial-pci"),
        (
            &["virtio-serial-pci", "virtconsole,chardev=nope"][..],
            "'nope'",
        ),
        (&["virtio-serial-pci", "virtconsole"][..], "chardev=ID"),
    ] {
        let mut command = vmkit();
        command
            .arg("-flat")
            .arg(guest_file("virtconsole-bad", &[0xf4]))
            .args(["-chardev", "null,id=c"]);
        for device in devices {
            command.args(["-device", device]);
        }
        let (output, _) = run(command, Duration::from_secs(20));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{devices:?}: {err}");
        assert!(err.contains(needle), "{devices:?}: '{needle}' not in {err}");
    }
}

/// How many extra doorbells [`doorbell_driver`] rings after DRIVER_OK's.
const EXTRA_DOORBELLS: u32 = 64;

/// A real-mode legacy virtio-rng driver for `slot`.0 that rings queue 0's doorbell (2-byte
/// `out` to QUEUE_NOTIFY with the queue index) once at DRIVER_OK and
/// [`EXTRA_DOORBELLS`] times more, waits for the used ring, prints 'D' and halts (the test
/// reads the exit statistics while it sits there).
fn doorbell_driver(slot: u32) -> Vec<u8> {
    real_mode_guest(|a| {
        let mut ring = a.create_label();
        let mut idle = a.create_label();
        a.cli()?;
        emit_probe(a, slot, 0x1005)?;
        emit_queue_with_one_buffer(a, 0, RING, BUFFER, 16, 2 /* WRITE */)?;
        emit_driver_ok(a, &[0])?;
        a.mov(cx, EXTRA_DOORBELLS)?;
        a.mov(dx, IO_BASE + 0x10)?;
        a.xor(ax, ax)?;
        a.set_label(&mut ring)?;
        a.out(dx, ax)?;
        a.loop_(ring)?;
        emit_wait_used(a, RING)?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(al, b'D' as u32)?;
        emit_putc(a)?;
        a.set_label(&mut idle)?;
        a.hlt()?;
        a.jmp(idle)
    })
}

/// Runs [`doorbell_driver`] on `device` until it printed 'D' and returns the guest's writes
/// to the legacy I/O BAR at [`IO_BASE`] that reached vmkit (exits).
fn legacy_bar_writes(name: &str, device: &str, irqchip: IrqchipOption) -> u64 {
    use vmkit_vmm::builder::start_pc;
    use vmkit_vmm::cli::{FlatMode as CliFlatMode, FlatOption, Options, SerialOption};
    use vmkit_vmm::RunOptions;

    let guest = guest_file(name, &doorbell_driver(2));
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}.out", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let options = Options {
        ram_size: 16 << 20,
        serial: SerialOption::File(out.clone()),
        flat: Some(FlatOption {
            path: guest,
            addr: ENTRY,
            entry: ENTRY,
            mode: CliFlatMode::Real,
        }),
        devices: vec![device.to_string()],
        irqchip,
        ..Options::default()
    };
    let boot = vmkit_vmm::builder::boot_source(&options).unwrap();
    let vmm = start_pc(&options, boot, RunOptions::default(), Vec::new()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read(&out).unwrap_or_default() != b"VD" {
        assert!(
            std::time::Instant::now() < deadline,
            "{device}: the driver did not finish: {:?}",
            std::fs::read(&out)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = vmm.exit_stats();
    vmm.stop("test over");
    vmm.wait().unwrap();
    let _ = std::fs::remove_file(out);
    stats
        .pio
        .ranges
        .iter()
        .find(|r| r.base == u64::from(IO_BASE))
        .map_or(0, |r| r.writes)
}

#[test]
fn with_ioeventfd_the_doorbells_never_reach_vmkit() {
    require_kvm!();
    for irqchip in [IrqchipOption::Kernel, IrqchipOption::User] {
        let off = legacy_bar_writes("doorbell-off", "virtio-rng-pci,ioeventfd=off", irqchip);
        let on = legacy_bar_writes("doorbell-on", "virtio-rng-pci", irqchip);
        // Both drivers write the same registers; without ioeventfd each of the 65
        // doorbells is a PIO exit too, with it none is (KVM signals the queue's eventfd,
        // the device's thread fills the buffer).
        assert_eq!(
            off - on,
            u64::from(EXTRA_DOORBELLS) + 1,
            "{irqchip:?}: BAR0 writes that exited: {off} with ioeventfd=off, {on} with it on"
        );
    }
}

/// Where the MSI-X guest keeps its IDT, its interrupt count and the MSI-X table (BAR1).
const MSIX_IDT: u64 = 0x4000;
const MSIX_IDTR: u64 = 0x3ff0;
const MSIX_COUNT: u64 = 0x5000;
const MSIX_TABLE: u64 = 0xfebf_0000;
const LAPIC: u64 = 0xfee0_0000;
/// Where the MSI-X guest maps the modern BAR (64-bit BAR4).
const MODERN_BAR4: u64 = 0xfe00_0000;

/// Emits an IDT gate for `vector` to `handler` (64-bit interrupt gate, current CS).
fn emit_gate(a: &mut CodeAssembler, vector: u64, handler: CodeLabel) -> Result<(), IcedError> {
    a.lea(rax, ptr(handler))?;
    a.mov(rdi, MSIX_IDT + vector * 16)?;
    a.mov(word_ptr(rdi), ax)?;
    a.mov(cx, cs)?;
    a.mov(word_ptr(rdi + 2), cx)?;
    a.mov(word_ptr(rdi + 4), 0x8e00u32)?;
    a.shr(rax, 16)?;
    a.mov(word_ptr(rdi + 6), ax)?;
    a.shr(rax, 16)?;
    a.mov(dword_ptr(rdi + 8), eax)?;
    a.mov(dword_ptr(rdi + 12), 0u32)
}

/// Emits a handler that prints `mark`, counts the interrupt, EOIs the local APIC.
fn emit_msix_handler(
    a: &mut CodeAssembler,
    label: &mut CodeLabel,
    mark: u8,
) -> Result<(), IcedError> {
    a.set_label(label)?;
    a.push(rax)?;
    a.push(rdx)?;
    a.mov(al, u32::from(mark))?;
    emit_putc(a)?;
    a.mov(rdx, MSIX_COUNT)?;
    a.inc(dword_ptr(rdx))?;
    a.mov(rdx, LAPIC)?;
    a.mov(dword_ptr(rdx + 0xb0), 0u32)?;
    a.pop(rdx)?;
    a.pop(rax)?;
    a.iretq()
}

/// Emits: wait (interrupts on, no lost wake-up) until the interrupt count reaches `n`.
fn emit_wait_count(a: &mut CodeAssembler, n: u32) -> Result<(), IcedError> {
    let mut wait = a.create_label();
    let mut done = a.create_label();
    a.set_label(&mut wait)?;
    a.cli()?;
    a.mov(rdx, MSIX_COUNT)?;
    a.cmp(dword_ptr(rdx), n)?;
    a.jae(done)?;
    a.sti()?;
    a.hlt()?;
    a.jmp(wait)?;
    a.set_label(&mut done)
}

/// A 64-bit legacy virtio-rng driver for 00:02.0 that uses MSI-X: enables the local APIC,
/// puts BAR0 at [`IO_BASE`] and the MSI-X table (BAR1) at [`MSIX_TABLE`], finds the MSI-X
/// capability and enables it, points table entry 0 at vector 0x41 and queue 0 at entry 0,
/// posts one buffer and rings the legacy doorbell; the handler prints 'M'. Then it rewrites
/// the entry to vector 0x42 (the route must follow), posts a second buffer and rings the
/// modern doorbell (BAR4, mapped at [`MODERN_BAR4`], queue 0 at offset 0x3000); that
/// handler prints 'N'. Then S5.
fn msix_driver() -> Vec<u8> {
    let avail = u64::from(RING) + 16 * u64::from(QUEUE_SIZE);
    assemble(64, ENTRY, |a| {
        let mut walk = a.create_label();
        let mut found = a.create_label();
        let mut h41 = a.create_label();
        let mut h42 = a.create_label();
        a.cli()?;
        a.mov(rbx, LAPIC)?;
        a.mov(dword_ptr(rbx + 0xf0), 0x1ffu32)?; // SVR: APIC on, spurious vector 0xff
        emit_gate(a, 0x41, h41)?;
        emit_gate(a, 0x42, h42)?;
        a.mov(rdi, MSIX_IDTR)?;
        a.mov(word_ptr(rdi), 0xfffu32)?;
        a.mov(rax, MSIX_IDT)?;
        a.mov(qword_ptr(rdi + 2), rax)?;
        a.lidt(ptr(rdi))?;
        emit_config_write32(a, config_address(2, 0x10), IO_BASE)?;
        emit_config_write32(a, config_address(2, 0x14), MSIX_TABLE as u32)?;
        emit_config_write32(a, config_address(2, 0x20), MODERN_BAR4 as u32)?;
        emit_config_write32(a, config_address(2, 0x24), 0)?;
        emit_config_write32(a, config_address(2, 0x04), 0x7)?;
        // Walk the capability list from 0x34 to ID 0x11 (MSI-X).
        a.mov(eax, config_address(2, 0x34))?;
        a.mov(dx, 0xcf8u32)?;
        a.out(dx, eax)?;
        a.mov(dx, 0xcfcu32)?;
        a.in_(eax, dx)?;
        a.movzx(ebx, al)?;
        a.set_label(&mut walk)?;
        a.mov(eax, config_address(2, 0))?;
        a.or(eax, ebx)?;
        a.mov(dx, 0xcf8u32)?;
        a.out(dx, eax)?;
        a.mov(dx, 0xcfcu32)?;
        a.in_(eax, dx)?;
        a.cmp(al, 0x11)?;
        a.je(found)?;
        a.movzx(ebx, ah)?;
        a.jmp(walk)?;
        a.set_label(&mut found)?;
        a.or(eax, 0x8000_0000u32)?; // message control bit 15: MSI-X enable
        a.out(dx, eax)?;
        // Entry 0: APIC 0, vector 0x41, unmasked (which gives it its route).
        a.mov(rsi, MSIX_TABLE)?;
        a.mov(dword_ptr(rsi), LAPIC as u32)?;
        a.mov(dword_ptr(rsi + 4), 0u32)?;
        a.mov(dword_ptr(rsi + 8), 0x41u32)?;
        a.mov(dword_ptr(rsi + 12), 0u32)?;
        // Legacy virtio: ACKNOWLEDGE | DRIVER, no features, queue 0 on MSI-X entry 0.
        a.mov(dx, IO_BASE + 0x12)?;
        a.mov(al, 3u32)?;
        a.out(dx, al)?;
        a.mov(dx, IO_BASE + 0x04)?;
        a.xor(eax, eax)?;
        a.out(dx, eax)?;
        a.mov(dx, IO_BASE + 0x0e)?;
        a.out(dx, ax)?;
        a.mov(dx, IO_BASE + 0x16)?;
        a.out(dx, ax)?;
        // Two device-writable 16-byte descriptors; the first one available.
        a.mov(rdi, u64::from(RING))?;
        for (i, buffer) in [BUFFER, BUFFER + 16].into_iter().enumerate() {
            let d = 16 * i as i32;
            a.mov(dword_ptr(rdi + d), buffer)?;
            a.mov(dword_ptr(rdi + d + 4), 0u32)?;
            a.mov(dword_ptr(rdi + d + 8), 16u32)?;
            a.mov(word_ptr(rdi + d + 12), 2u32)?;
            a.mov(word_ptr(rdi + d + 14), 0u32)?;
        }
        a.mov(rdi, avail)?;
        a.mov(word_ptr(rdi + 4), 0u32)?;
        a.mov(word_ptr(rdi + 2), 1u32)?;
        a.mov(dx, IO_BASE + 0x08)?;
        a.mov(eax, RING >> 12)?;
        a.out(dx, eax)?;
        a.mov(dx, IO_BASE + 0x12)?;
        a.mov(al, 7u32)?;
        a.out(dx, al)?;
        a.mov(dx, IO_BASE + 0x10)?;
        a.xor(eax, eax)?;
        a.out(dx, ax)?;
        emit_wait_count(a, 1)?;
        // The guest moves the vector: the GSI route follows the table entry.
        a.mov(rsi, MSIX_TABLE)?;
        a.mov(dword_ptr(rsi + 8), 0x42u32)?;
        a.mov(rdi, avail)?;
        a.mov(word_ptr(rdi + 6), 1u32)?;
        a.mov(word_ptr(rdi + 2), 2u32)?;
        a.mov(rdi, MODERN_BAR4 + 0x3000)?;
        a.mov(word_ptr(rdi), 0u32)?;
        emit_wait_count(a, 2)?;
        a.cli()?;
        a.mov(ax, 0x2000u32)?;
        a.mov(dx, 0x604u32)?;
        a.out(dx, ax)?;
        a.hlt()?;
        emit_msix_handler(a, &mut h41, b'M')?;
        emit_msix_handler(a, &mut h42, b'N')
    })
}

#[test]
fn msix_interrupts_go_through_gsi_routes_that_follow_the_table() {
    require_kvm!();
    let file = guest_file("virtio-msix", &msix_driver());
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(format!("{},mode=long", file.display()))
        .args(["-device", "virtio-rng-pci"]);
    let (output, _) = run(command, Duration::from_secs(30));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    assert_eq!(stdout(&output), "MN", "stderr: {err}");
    // No vector lacked its route (the irqfd path itself is counted by the test below).
    assert!(!err.contains("no GSI route"), "{err}");
}

/// Records the guest's power-off (and nothing else) for [`run_pc_until_poweroff`].
#[derive(Default)]
struct PowerOff(std::sync::atomic::AtomicBool);

impl vmkit_isa::MachineEvents for PowerOff {
    fn reset_requested(&self) {}
    fn exit_requested(&self, _status: u32) {}
    fn poweroff_requested(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// A `Write` into a shared buffer (COM1's output).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds vmkit's pc machine (in-kernel irqchip) with `devices` around the flat `image`
/// (entered in `mode`), runs its vCPU on this thread until the guest powers off, and returns the
/// machine and what the guest printed on COM1.
fn run_pc_until_poweroff(
    image: Vec<u8>,
    mode: vmkit_pc::FlatMode,
    devices: &[&str],
) -> (vmkit_pc::PcMachine, Vec<u8>) {
    use vmkit_kvm::VcpuExit;
    use vmkit_pc::{BootSource, IrqchipMode, PcConfig, PcMachine};

    let kvm = vmkit_kvm::KvmSystem::open().unwrap();
    let com1 = Captured::default();
    let events = std::sync::Arc::new(PowerOff::default());
    let config = PcConfig {
        ram_size: 16 << 20,
        smp: 1,
        cpu: vmkit_pc::CpuModel::host(),
        irqchip: IrqchipMode::Kernel,
        boot: BootSource::Flat {
            image,
            addr: ENTRY,
            entry: ENTRY,
            mode,
        },
        com1: Some(vmkit_isa::SerialBackend::new(com1.clone())),
        devices: devices.iter().map(|d| d.to_string()).collect(),
        chardevs: Vec::new(),
        netdevs: Vec::new(),
        firmware_linux: None,
        hpet: false,
        drives: Vec::new(),
    };
    let mut machine = PcMachine::build(&kvm, config, events.clone()).unwrap();
    let mut vcpu = machine.vcpus.remove(0);
    let (mut pio, mut mmio) = (machine.pio.handle(), machine.mmio.handle());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !events.0.load(std::sync::atomic::Ordering::Acquire) {
        assert!(std::time::Instant::now() < deadline, "no power-off");
        match vcpu.run().unwrap() {
            VcpuExit::IoOut { port, data, .. } => drop(pio.write(port, data)),
            VcpuExit::IoIn { port, data, .. } => drop(pio.read(port, data)),
            VcpuExit::MmioWrite { addr, data } => drop(mmio.write(addr, data)),
            VcpuExit::MmioRead { addr, data } => drop(mmio.read(addr, data)),
            other => panic!("unexpected exit {other:?}"),
        }
    }
    let out = com1.0.lock().unwrap().clone();
    (machine, out)
}

#[test]
fn msix_vectors_are_delivered_by_irqfds_on_their_gsi_routes() {
    require_kvm!();
    let (machine, out) =
        run_pc_until_poweroff(msix_driver(), vmkit_pc::FlatMode::Long, &["virtio-rng-pci"]);
    assert_eq!(out, b"MN", "{:?}", String::from_utf8_lossy(&out));
    let notifiers = &machine.notifiers;
    let stats = notifiers.stats();
    use std::sync::atomic::Ordering::Relaxed;
    // Both completions went out as irqfd writes, none through KVM_SIGNAL_MSI; the second
    // one at vector 0x42, so the route followed the guest's table write.
    assert_eq!(stats.irqfd_signals.load(Relaxed), 2, "{notifiers:?}");
    assert_eq!(stats.direct_signals.load(Relaxed), 0, "{notifiers:?}");
    assert_eq!(notifiers.msi_route_count(), 1);
    // Queue 0's legacy port (PIO, 2 bytes, datamatch 0) and modern doorbell (MMIO, no
    // length) are both ioeventfds.
    assert_eq!(notifiers.pio_ioeventfd_count(), 1);
    assert_eq!(notifiers.ioeventfd_count(), 2);
    assert_eq!(stats.doorbells_on_exit_path.load(Relaxed), 0);
    // The guest's only BAR4 access was the doorbell, and it never exited.
    let mmio = machine.mmio.stats();
    let bar4 = mmio.ranges.iter().find(|r| r.base == MODERN_BAR4);
    assert_eq!(bar4.map(|r| r.writes), Some(0), "{:?}", mmio.ranges);
    let table = mmio.ranges.iter().find(|r| r.base == MSIX_TABLE);
    assert_eq!(table.map(|r| r.writes), Some(5), "{:?}", mmio.ranges);
}

/// Where [`moving_bar_driver`] moves the legacy BAR after DRIVER_OK.
const MOVED_IO_BASE: u32 = 0xc100;

/// A real-mode legacy virtio-rng driver for 00:02.0 that moves its I/O BAR to
/// [`MOVED_IO_BASE`] after DRIVER_OK and only then rings (65 times, at the new port), waits
/// for the used ring, prints 'D' and powers off.
fn moving_bar_driver() -> Vec<u8> {
    real_mode_guest(|a| {
        let mut ring = a.create_label();
        a.cli()?;
        emit_probe(a, 2, 0x1005)?;
        emit_queue_with_one_buffer(a, 0, RING, BUFFER, 16, 2 /* WRITE */)?;
        a.mov(dx, IO_BASE + 0x12)?;
        a.mov(al, 7u32)?;
        a.out(dx, al)?;
        emit_config_write32(a, config_address(2, 0x10), MOVED_IO_BASE)?;
        a.mov(cx, EXTRA_DOORBELLS + 1)?;
        a.mov(dx, MOVED_IO_BASE + 0x10)?;
        a.xor(ax, ax)?;
        a.set_label(&mut ring)?;
        a.out(dx, ax)?;
        a.loop_(ring)?;
        emit_wait_used(a, RING)?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(al, b'D' as u32)?;
        emit_putc(a)?;
        emit_power_off(a)
    })
}

#[test]
fn ioeventfds_follow_a_moved_bar_and_go_at_machine_reset() {
    require_kvm!();
    let (machine, out) = run_pc_until_poweroff(
        moving_bar_driver(),
        vmkit_pc::FlatMode::Real,
        &["virtio-rng-pci"],
    );
    assert_eq!(out, b"VD", "{:?}", String::from_utf8_lossy(&out));
    // One ioeventfd, at the new port: none of the 65 doorbells there exited.
    assert_eq!(machine.notifiers.pio_ioeventfd_count(), 1);
    let pio = machine.pio.stats();
    let moved = pio
        .ranges
        .iter()
        .find(|r| r.base == u64::from(MOVED_IO_BASE));
    assert_eq!(moved.map(|r| r.writes), Some(0), "{:?}", pio.ranges);
    assert!(!pio.ranges.iter().any(|r| r.base == u64::from(IO_BASE)));
    // A machine reset stops the device and takes its ioeventfds away.
    machine.chipset.reset();
    assert_eq!(machine.notifiers.ioeventfd_count(), 0);
}

/// The state of a machine whose guest enabled MSI-X and ran a virtio-rng request, restored
/// into a second machine: the BARs are mapped where the guest put them, the doorbells are
/// ioeventfds again and the vector has its GSI route and irqfd, as on the first machine.
#[test]
fn restored_pci_state_brings_back_bar_mappings_ioeventfds_and_irqfds() {
    require_kvm!();
    use vmkit_vmm::migration::{map_restored_pci, register_pc_devices, start_restored_virtio};
    let (source, out) =
        run_pc_until_poweroff(msix_driver(), vmkit_pc::FlatMode::Long, &["virtio-rng-pci"]);
    assert_eq!(out, b"MN", "{:?}", String::from_utf8_lossy(&out));
    let sections = register_pc_devices(&source).unwrap().save_all().unwrap();
    assert!(
        sections.iter().any(|s| s.id == "virtio-pci"),
        "{:?}",
        sections.iter().map(|s| &s.path).collect::<Vec<_>>()
    );
    let sections: Vec<vmkit_object::VmStateSection> =
        serde_json::from_str(&serde_json::to_string(&sections).unwrap()).unwrap();

    // The destination: the same machine, booted but never run.
    use vmkit_pc::{BootSource, IrqchipMode, PcConfig, PcMachine};
    let kvm = vmkit_kvm::KvmSystem::open().unwrap();
    let config = PcConfig {
        ram_size: 16 << 20,
        smp: 1,
        cpu: vmkit_pc::CpuModel::host(),
        irqchip: IrqchipMode::Kernel,
        boot: BootSource::Flat {
            image: msix_driver(),
            addr: ENTRY,
            entry: ENTRY,
            mode: vmkit_pc::FlatMode::Long,
        },
        com1: None,
        devices: vec!["virtio-rng-pci".into()],
        chardevs: Vec::new(),
        netdevs: Vec::new(),
        firmware_linux: None,
        hpet: false,
        drives: Vec::new(),
    };
    let dest = PcMachine::build(&kvm, config, std::sync::Arc::new(PowerOff::default())).unwrap();
    assert_eq!(dest.notifiers.ioeventfd_count(), 0);
    assert_eq!(dest.notifiers.msi_route_count(), 0);
    register_pc_devices(&dest)
        .unwrap()
        .restore_all(&sections)
        .unwrap();
    map_restored_pci(&dest.chipset.pci);
    let virtio = vmkit_pc::pci_devices::virtio_transports(&dest.tree);
    start_restored_virtio(&virtio);

    let devfn = vmkit_pci::DevFn::new(2, 0);
    assert_eq!(
        dest.chipset.pci.mapped(devfn),
        source.chipset.pci.mapped(devfn),
        "the BARs are where the guest put them"
    );
    assert!(!dest.chipset.pci.mapped(devfn).is_empty());
    assert_eq!(dest.notifiers.ioeventfd_count(), 2, "{:?}", dest.notifiers);
    assert_eq!(dest.notifiers.pio_ioeventfd_count(), 1);
    assert_eq!(
        dest.notifiers.msi_route_count(),
        1,
        "the vector's GSI route and irqfd"
    );
    let (_, transport) = &virtio[0];
    let t = transport.lock().unwrap();
    assert!(t.is_active() && !t.is_paused() && t.msix_enabled());
}
