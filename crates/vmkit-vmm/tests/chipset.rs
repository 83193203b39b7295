//! The PCI chipset seen from a guest of its own: configuration mechanism #1 at 0xCF8, the
//! PIIX4 PM block moved by PMBA, S5 power-off, and the 0xCF9 reset register.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_guest_moves_the_pm_block_and_powers_off_through_s5() {
    require_kvm!();
    let guest = real_mode_guest(|a| {
        let mut halt = a.create_label();
        // Vendor/device of 00:00.0 through CF8/CFC; print the device id's high byte (0x12).
        a.mov(eax, 0x8000_0000u32)?;
        a.mov(dx, 0xcf8u32)?;
        a.out(dx, eax)?;
        a.mov(dx, 0xcfeu32)?;
        a.in_(ax, dx)?;
        a.mov(al, ah)?;
        emit_putc(a)?;
        // 00:01.3 PMBA = 0xb000, PMREGMISC = 1: the PM block moves from 0x600 to 0xb000.
        emit_config_write32(a, 0x8000_0b40, 0xb001)?;
        emit_config_write32(a, 0x8000_0b80, 1)?;
        // SLP_TYP 0 (S5) | SLP_EN at the old base does nothing; at the new one powers off.
        a.mov(ax, 0x2000u32)?;
        a.mov(dx, 0x604u32)?;
        a.out(dx, ax)?;
        a.mov(al, b'.' as u32)?;
        emit_putc(a)?;
        a.mov(ax, 0x2000u32)?;
        a.mov(dx, 0xb004u32)?;
        a.out(dx, ax)?;
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.jmp(halt)
    });
    let mut command = vmkit();
    command.arg("-flat").arg(guest_file("chipset-s5", &guest));
    let (output, elapsed) = run(command, Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(output.stdout, [0x12, b'.'], "{:?}", stdout(&output));
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn the_cf9_reset_register_resets_the_machine() {
    require_kvm!();
    let guest = real_mode_guest(|a| {
        let mut halt = a.create_label();
        a.mov(al, b'x' as u32)?;
        emit_putc(a)?;
        // RCR: hard reset (bit 1) + reset (bit 2).
        a.mov(al, 0x06u32)?;
        a.mov(dx, 0xcf9u32)?;
        a.out(dx, al)?;
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.jmp(halt)
    });
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(guest_file("chipset-cf9", &guest))
        .arg("-no-reboot");
    let (output, _) = run(command, Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "x",
        "one pass, then the reset ends vmkit under -no-reboot"
    );
}
