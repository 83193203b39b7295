//! The pc machine through the `vmkit` binary: firmware boot, -device on a COM port, serial
//! interrupts in both interrupt models, and reset by triple fault.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn bios_image_starts_at_the_reset_vector_and_runs_from_its_low_alias() {
    require_kvm!();
    // 64 KiB firmware: the reset vector (offset 0xfff0) far-jumps to f000:e000, i.e. into
    // the copy of the image's top visible below 1 MiB, which prints "BIOS" and exits with 0x21.
    let mut image = vec![0xf4u8; 0x10000];
    let code = assemble(16, 0xe000, |a| {
        for byte in *b"BIOS" {
            a.mov(al, byte as u32)?;
            emit_putc(a)?;
        }
        a.mov(al, 0x21)?;
        emit_debug_exit(a)
    });
    image[0xe000..0xe000 + code.len()].copy_from_slice(&code);
    image[0xfff0..0xfff5].copy_from_slice(&[0xea, 0x00, 0xe0, 0x00, 0xf0]); // jmp f000:e000
    let bios = guest_file("bios", &image);
    let mut command = vmkit();
    command
        .arg("-bios")
        .arg(&bios)
        .args(["-device", "isa-debug-exit"]);
    let (output, _) = run(command, Duration::from_secs(20));
    assert_eq!(stdout(&output), "BIOS", "{}", stderr(&output));
    assert_eq!(output.status.code(), Some(0x43));
}

#[test]
fn device_option_puts_a_uart_on_com2() {
    require_kvm!();
    // The scratch register of the UART at 0x2f8 keeps what is written; with no device there
    // the port would read 0xff.
    let guest = real_mode_guest(|a| {
        a.mov(dx, 0x2ffu32)?;
        a.mov(al, 0x5a)?;
        a.out(dx, al)?;
        a.mov(al, 0)?;
        a.in_(al, dx)?;
        emit_debug_exit(a)
    });
    let guest = guest_file("com2", &guest);
    let mut command = vmkit();
    command.arg("-flat").arg(&guest).args([
        "-device",
        "isa-serial,iobase=0x2f8,irq=3,id=modem",
        "-device",
        "isa-debug-exit",
    ]);
    let (output, _) = run(command, Duration::from_secs(20));
    assert_eq!(
        output.status.code(),
        Some(((0x5a << 1) | 1) & 0xff),
        "{}",
        stderr(&output)
    );

    // A second UART on COM1, the console, is refused with both devices named.
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(&guest)
        .args(["-device", "isa-serial,iobase=0x3f8"]);
    let (output, _) = run(command, Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("com1") && err.contains("0x3f8"), "{err}");
}

/// Receives `count` bytes through the COM1 receive interrupt (IRQ4, vector 0x0c), echoing
/// each from the handler, sleeping in `hlt` in between; then exits with the count.
fn interrupt_echo_guest(count: u8) -> Vec<u8> {
    let handler = ENTRY + 0x200;
    let main = real_mode_guest(|a| {
        let mut wait = a.create_label();
        a.cli()?;
        a.mov(byte_ptr(0x600), 0)?;
        a.mov(word_ptr(0x0c * 4), handler as u32)?;
        a.mov(word_ptr(0x0c * 4 + 2), 0)?;
        emit_pic_init(a, 0xef)?;
        // UART: receive-data interrupt on, OUT2 (the PC's IRQ gate). The FCR is left alone:
        // switching FIFO mode or resetting the FIFO discards what already arrived (16550D
        // FCR bits 0-1), and the host may have sent input before the guest got here.
        for (port, value) in [(0x3f9u32, 0x01u32), (0x3fc, 0x0b)] {
            a.mov(dx, port)?;
            a.mov(al, value)?;
            a.out(dx, al)?;
        }
        a.sti()?;
        a.set_label(&mut wait)?;
        a.hlt()?;
        a.cmp(byte_ptr(0x600), count as u32)?;
        a.jb(wait)?;
        a.cli()?;
        a.mov(al, byte_ptr(0x600))?;
        emit_debug_exit(a)
    });
    let isr = assemble(16, handler, |a| {
        let mut more = a.create_label();
        let mut done = a.create_label();
        a.push(ax)?;
        a.push(dx)?;
        a.set_label(&mut more)?;
        a.mov(dx, 0x3fdu32)?;
        a.in_(al, dx)?;
        a.test(al, 1)?; // data ready?
        a.jz(done)?;
        a.mov(dx, 0x3f8u32)?;
        a.in_(al, dx)?;
        emit_putc(a)?;
        a.inc(byte_ptr(0x600))?;
        a.jmp(more)?;
        a.set_label(&mut done)?;
        a.mov(al, 0x20)?;
        a.out(0x20, al)?;
        a.pop(dx)?;
        a.pop(ax)?;
        a.iret()
    });
    let mut image = main;
    assert!(image.len() <= 0x200);
    image.resize(0x200, 0x90);
    image.extend_from_slice(&isr);
    image
}

#[test]
fn serial_receive_interrupts_in_both_models() {
    require_kvm!();
    let input = b"interrupt-driven input, 41 bytes long!!!!";
    let guest = guest_file("rx-irq", &interrupt_echo_guest(input.len() as u8));
    for irqchip in ["kernel", "user"] {
        let mut command = vmkit();
        command
            .arg("-flat")
            .arg(&guest)
            .args(["-device", "isa-debug-exit", "-irqchip", irqchip]);
        let (output, _) = run_with_input(command, input, Duration::from_secs(30));
        assert_eq!(output.stdout, input, "{irqchip}: {}", stderr(&output));
        assert_eq!(
            output.status.code(),
            Some(((input.len() as i32) << 1 | 1) & 0xff),
            "{irqchip}"
        );
    }
}

/// 64-bit guest: counts boots at 0x7000, prints the count, and triple-faults (`ud2` with an
/// empty IDT) until the second boot, which exits with 9.
fn triple_fault_guest() -> Vec<u8> {
    assemble(64, ENTRY, |a| {
        let mut done = a.create_label();
        let mut wait = a.create_label();
        a.inc(byte_ptr(0x7000u64))?;
        a.mov(cl, byte_ptr(0x7000u64))?;
        a.add(cl, b'0' as u32)?;
        a.mov(dx, 0x3fdu32)?;
        a.set_label(&mut wait)?;
        a.in_(al, dx)?;
        a.test(al, 0x20)?;
        a.jz(wait)?;
        a.mov(al, cl)?;
        a.mov(dx, 0x3f8u32)?;
        a.out(dx, al)?;
        a.cmp(byte_ptr(0x7000u64), 2)?;
        a.jae(done)?;
        a.ud2()?;
        a.set_label(&mut done)?;
        a.mov(al, 9)?;
        a.mov(dx, 0x501u32)?;
        a.out(dx, al)?;
        a.hlt()
    })
}

#[test]
fn triple_fault_resets_the_machine_or_ends_it_under_no_reboot() {
    require_kvm!();
    let guest = guest_file("triple", &triple_fault_guest());
    let flat = format!("{},mode=long", guest.display());
    let mut command = vmkit();
    command.args(["-flat", &flat, "-device", "isa-debug-exit"]);
    let (output, _) = run(command, Duration::from_secs(20));
    assert_eq!(stdout(&output), "12", "{}", stderr(&output));
    assert_eq!(output.status.code(), Some(19));

    let mut command = vmkit();
    command.args(["-flat", &flat, "-device", "isa-debug-exit", "-no-reboot"]);
    let (output, _) = run(command, Duration::from_secs(20));
    assert_eq!(stdout(&output), "1", "{}", stderr(&output));
    assert_eq!(output.status.code(), Some(0));
}
