//! virtio-pci devices on the pc machine, driven by tiny guests of their own through the
//! legacy (transitional) I/O BAR, as a legacy virtio driver does.

mod common;

use std::time::Duration;

use common::legacy_driver::*;
use common::*;

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
