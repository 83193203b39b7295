//! SMP bring-up as a guest OS does it: the boot processor sends INIT and SIPI through its
//! in-kernel local APIC, the application processor starts in real mode at the SIPI vector's
//! page, and both vCPU threads run until the machine powers off.

mod common;

use std::time::Duration;

use common::*;

/// Where the application processor starts: SIPI vector 0x08 -> 0x8000.
const AP_ENTRY: u64 = 0x8000;
/// The AP's "I am alive" flag.
const AP_FLAG: u64 = 0x7100;

/// 64-bit boot-processor code at [`ENTRY`] and 16-bit AP code at [`AP_ENTRY`], in one image.
fn smp_guest() -> Vec<u8> {
    let bsp = assemble(64, ENTRY, |a| {
        let mut wait = a.create_label();
        a.mov(rbx, 0xfee0_0000u64)?;
        // Software-enable the local APIC (spurious vector register), as an OS does first.
        a.mov(dword_ptr(rbx + 0xf0), 0x1ff)?;
        // INIT to all excluding self, then STARTUP with vector 0x08 (entry 0x8000).
        a.mov(dword_ptr(rbx + 0x300), 0x000c_4500)?;
        a.mov(dword_ptr(rbx + 0x300), 0x000c_4608)?;
        a.set_label(&mut wait)?;
        a.pause()?;
        a.cmp(byte_ptr(AP_FLAG), 0x55)?;
        a.jne(wait)?;
        a.mov(al, 0x55)?;
        a.mov(dx, 0x501u32)?;
        a.out(dx, al)?;
        a.hlt()
    });
    let ap = assemble(16, AP_ENTRY, |a| {
        let mut halt = a.create_label();
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(byte_ptr(AP_FLAG as u32), 0x55)?;
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.jmp(halt)
    });
    let mut image = bsp;
    image.resize((AP_ENTRY - ENTRY) as usize, 0xcc);
    image.extend_from_slice(&ap);
    image
}

#[test]
fn the_boot_cpu_starts_an_application_processor_with_init_and_sipi() {
    require_kvm!();
    let guest = guest_file("smp-sipi", &smp_guest());
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(format!("{},mode=long", guest.display()))
        .args(["-smp", "2", "-device", "isa-debug-exit"]);
    let (output, _) = run(command, Duration::from_secs(30));
    assert_eq!(
        output.status.code(),
        Some(((0x55 << 1) | 1) & 0xff),
        "{}",
        stderr(&output)
    );
}
