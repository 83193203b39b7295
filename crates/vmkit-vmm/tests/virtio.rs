//! virtio-pci devices on the pc machine, driven by tiny guests of their own through the
//! legacy (transitional) I/O BAR, as a legacy virtio driver does.

mod common;

use std::time::Duration;

use common::*;

/// Where the guest puts the legacy I/O BAR.
const IO_BASE: u32 = 0xc000;
/// The ring (page frame 0x10) and the buffer the device fills.
const RING: u32 = 0x1_0000;
const BUFFER: u32 = 0x2_0000;
/// The virtio-rng queue size (vmkit-virtio's RNG_QUEUE_SIZE, QEMU's 8).
const QUEUE_SIZE: u32 = 256;

/// CONFIG_ADDRESS for `reg` of function `slot`.0.
fn config_address(slot: u32, reg: u32) -> u32 {
    0x8000_0000 | (slot << 11) | reg
}

fn emit_config_write32(a: &mut CodeAssembler, address: u32, value: u32) -> Result<(), IcedError> {
    a.mov(eax, address)?;
    a.mov(dx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.mov(eax, value)?;
    a.mov(dx, 0xcfcu32)?;
    a.out(dx, eax)
}

/// A real-mode legacy virtio-rng driver for the function at `slot`.0: prints 'V' if the
/// function is 1af4:1005, sets up queue 0 with one 16-byte writable buffer, notifies, and
/// once the used ring moves prints 'U', the used length, 'R' if the buffer is no longer all
/// zeros and 'I' if the ISR says "queue"; then powers off through S5.
fn rng_driver(slot: u32) -> Vec<u8> {
    let desc = RING;
    let avail = RING + 16 * QUEUE_SIZE;
    let used = (avail + 6 + 2 * QUEUE_SIZE + 4095) & !4095;
    real_mode_guest(|a| {
        let mut skip_v = a.create_label();
        let mut poll = a.create_label();
        let mut off = a.create_label();
        let mut zero = a.create_label();
        let mut or_loop = a.create_label();
        a.cli()?;
        // Identity: vendor 0x1af4, transitional device id 0x1005.
        a.mov(eax, config_address(slot, 0))?;
        a.mov(dx, 0xcf8u32)?;
        a.out(dx, eax)?;
        a.mov(dx, 0xcfcu32)?;
        a.in_(eax, dx)?;
        a.cmp(eax, 0x1005_1af4u32)?;
        a.jne(skip_v)?;
        a.mov(al, b'V' as u32)?;
        emit_putc(a)?;
        a.set_label(&mut skip_v)?;
        // BAR0 = the I/O base; command = I/O space | bus master.
        emit_config_write32(a, config_address(slot, 0x10), IO_BASE)?;
        emit_config_write32(a, config_address(slot, 0x04), 0x5)?;
        // Status ACKNOWLEDGE | DRIVER, no features, queue 0 at page frame RING >> 12.
        a.mov(dx, IO_BASE + 0x12)?;
        a.mov(al, 3u32)?;
        a.out(dx, al)?;
        a.mov(dx, IO_BASE + 0x04)?;
        a.xor(eax, eax)?;
        a.out(dx, eax)?;
        a.mov(dx, IO_BASE + 0x0e)?;
        a.xor(ax, ax)?;
        a.out(dx, ax)?;
        // The ring: descriptor 0 = BUFFER, 16 bytes, device-writable; avail ring[0] = 0,
        // avail idx = 1. Segment registers reach past 64 KiB.
        a.mov(ax, RING >> 4)?;
        a.mov(ds, ax)?;
        a.mov(dword_ptr(desc - RING), BUFFER)?;
        a.mov(dword_ptr(desc - RING + 4), 0u32)?;
        a.mov(dword_ptr(desc - RING + 8), 16u32)?;
        a.mov(word_ptr(desc - RING + 12), 2u32)?;
        a.mov(word_ptr(desc - RING + 14), 0u32)?;
        a.mov(word_ptr(avail - RING + 4), 0u32)?;
        a.mov(word_ptr(avail - RING + 2), 1u32)?;
        a.mov(dx, IO_BASE + 0x08)?;
        a.mov(eax, RING >> 12)?;
        a.out(dx, eax)?;
        // DRIVER_OK starts the device; notify queue 0.
        a.mov(dx, IO_BASE + 0x12)?;
        a.mov(al, 7u32)?;
        a.out(dx, al)?;
        a.mov(dx, IO_BASE + 0x10)?;
        a.xor(ax, ax)?;
        a.out(dx, ax)?;
        // Wait for used idx to become 1.
        a.set_label(&mut poll)?;
        a.pause()?;
        a.cmp(word_ptr(used - RING + 2), 1u32)?;
        a.jne(poll)?;
        a.mov(al, b'U' as u32)?;
        emit_putc(a)?;
        a.mov(al, byte_ptr(used - RING + 8))?; // used.ring[0].len, low byte
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
        a.jz(off)?;
        a.mov(al, b'I' as u32)?;
        emit_putc(a)?;
        // S5 through the PM block vmkit programs at 0x600 for firmware-less boots.
        a.set_label(&mut off)?;
        a.mov(ax, 0x2000u32)?;
        a.mov(dx, 0x604u32)?;
        a.out(dx, ax)?;
        a.hlt()?;
        a.jmp(off)
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
