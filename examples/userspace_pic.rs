//! The userspace interrupt model at work: vmkit's own i8259 and i8254 run in the VMM, and the
//! boot vCPU gets timer interrupts through KVM_INTERRUPT and interrupt windows.
//!
//! The guest programs the PIC and the PIT (1 kHz), sleeps in `hlt` between interrupts, prints
//! a dot every 100 ticks and leaves through the debug-exit port after 1000 ticks. The VMM
//! then prints its exit statistics.
//!
//! Run: `cargo run --release --example userspace_pic`

use std::time::Instant;

use iced_x86::code_asm::*;
use vmkit::pc::{BootSource, FlatMode};
use vmkit::vmm::builder::start_pc;
use vmkit::vmm::cli::{IrqchipOption, Options};
use vmkit::vmm::RunOptions;

const ENTRY: u64 = 0x1000;
const HANDLER: u64 = 0x1200;
const TICKS: u32 = 0x600; // the guest's tick counter

/// Prints AL on COM1 once the transmitter is empty.
fn putc(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut wait = a.create_label();
    a.mov(ah, al)?;
    a.mov(dx, 0x3fdu32)?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, 0x20)?;
    a.jz(wait)?;
    a.mov(al, ah)?;
    a.mov(dx, 0x3f8u32)?;
    a.out(dx, al)
}

fn guest() -> Result<Vec<u8>, IcedError> {
    let mut main = CodeAssembler::new(16)?;
    let a = &mut main;
    let mut wait = a.create_label();
    let mut no_dot = a.create_label();
    a.cli()?;
    a.mov(word_ptr(TICKS), 0)?;
    a.mov(word_ptr(8 * 4), HANDLER as u32)?; // IVT[8]: IRQ0 with the BIOS's vector base
    a.mov(word_ptr(8 * 4 + 2), 0)?;
    // ICW1-ICW4 for both 8259As, then unmask IRQ0 only.
    for (port, value) in [
        (0x20u32, 0x11u32),
        (0x21, 0x08),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xa0, 0x11),
        (0xa1, 0x70),
        (0xa1, 0x02),
        (0xa1, 0x01),
        (0x21, 0xfe),
        (0xa1, 0xff),
    ] {
        a.mov(al, value)?;
        a.out(port, al)?;
    }
    // PIT channel 0, mode 2, 1193 counts of 1.193182 MHz: 1 kHz.
    a.mov(al, 0x34)?;
    a.out(0x43, al)?;
    a.mov(al, 1193 & 0xff)?;
    a.out(0x40, al)?;
    a.mov(al, 1193 >> 8)?;
    a.out(0x40, al)?;
    a.xor(bx, bx)?; // ticks already reported as dots
    a.sti()?;
    a.set_label(&mut wait)?;
    a.hlt()?;
    a.mov(ax, word_ptr(TICKS))?;
    a.sub(ax, bx)?;
    a.cmp(ax, 100)?;
    a.jb(no_dot)?;
    a.add(bx, 100)?;
    a.mov(al, b'.' as u32)?;
    putc(a)?;
    a.set_label(&mut no_dot)?;
    a.cmp(word_ptr(TICKS), 1000)?;
    a.jb(wait)?;
    a.mov(al, b'\n' as u32)?;
    putc(a)?;
    a.mov(al, 0)?;
    a.mov(dx, 0x501u32)?; // isa-debug-exit: status (0 << 1) | 1
    a.out(dx, al)?;
    a.hlt()?;
    let mut image = main.assemble(ENTRY)?;

    let mut isr = CodeAssembler::new(16)?;
    isr.inc(word_ptr(TICKS))?;
    isr.push(ax)?;
    isr.mov(al, 0x20)?; // non-specific EOI
    isr.out(0x20, al)?;
    isr.pop(ax)?;
    isr.iret()?;
    image.resize((HANDLER - ENTRY) as usize, 0x90);
    image.extend(isr.assemble(HANDLER)?);
    Ok(image)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options {
        ram_size: 16 << 20,
        irqchip: IrqchipOption::User,
        devices: vec!["isa-debug-exit".into()],
        ..Options::default()
    };
    let boot = BootSource::Flat {
        image: guest()?,
        addr: ENTRY,
        entry: ENTRY,
        mode: FlatMode::Real,
    };
    let start = Instant::now();
    let vmm = start_pc(&options, boot, RunOptions::default(), Vec::new())?;
    // Block until the guest leaves, then read the statistics before tearing down.
    let reason = vmm.controller().wait_until_ended();
    let stats = vmm.exit_stats();
    vmm.wait()?;
    println!("guest ended after {:?}: {reason:?}", start.elapsed());
    println!("exits of vCPU 0:");
    for (kind, count) in &stats.per_vcpu[0] {
        println!("  {kind:<16} {count}");
    }
    println!("port accesses by device:");
    for range in stats.pio.ranges.iter().filter(|r| r.accesses > 0) {
        println!(
            "  {:<32} {:#06x}  {}",
            range.name, range.base, range.accesses
        );
    }
    Ok(())
}
