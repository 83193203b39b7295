//! Unit tests written from the Intel 8259A datasheet (section named in each test) and from
//! the port sequences Linux (arch/x86/kernel/i8259.c) and a PC BIOS perform.

use std::sync::{Arc, Mutex};

use vm_device::bus::PioAddress;
use vm_device::MutDevicePio;
use vmkit_hw::{IrqLine, RecordingLine};

use super::*;

type Pic = DualPic<Arc<RecordingLine>>;

const MASTER_CMD: u16 = 0x20;
const MASTER_IMR: u16 = 0x21;
const SLAVE_CMD: u16 = 0xa0;
const SLAVE_IMR: u16 = 0xa1;
const OCW3_READ_IRR: u8 = 0x0a;
const OCW3_READ_ISR: u8 = 0x0b;
const OCW3_POLL: u8 = 0x0c;
const OCW3_SET_SMM: u8 = 0x68;
const OCW3_CLEAR_SMM: u8 = 0x48;
const NON_SPECIFIC_EOI: u8 = 0x20;
const SPECIFIC_EOI: u8 = 0x60;

fn new_pic() -> (Pic, Arc<RecordingLine>) {
    let line = Arc::new(RecordingLine::new());
    (DualPic::new(Arc::clone(&line)), line)
}

fn outb(pic: &mut Pic, port: u16, value: u8) {
    pic.write_port(port, &[value]);
}

fn inb(pic: &mut Pic, port: u16) -> u8 {
    let mut data = [0u8];
    pic.read_port(port, &mut data);
    data[0]
}

fn pulse(pic: &mut Pic, irq: u8) {
    pic.set_irq_level(irq, true).unwrap();
    pic.set_irq_level(irq, false).unwrap();
}

fn read_isr(pic: &mut Pic, cmd: u16) -> u8 {
    outb(pic, cmd, OCW3_READ_ISR);
    let isr = inb(pic, cmd);
    outb(pic, cmd, OCW3_READ_IRR);
    isr
}

fn read_irr(pic: &mut Pic, cmd: u16) -> u8 {
    outb(pic, cmd, OCW3_READ_IRR);
    inb(pic, cmd)
}

/// The BIOS initialisation: vectors 0x08 / 0x70, slave on IR2, 8086 mode, all unmasked.
fn bios_init(pic: &mut Pic) {
    for (port, value) in [
        (MASTER_CMD, 0x11),
        (MASTER_IMR, 0x08),
        (MASTER_IMR, 0x04),
        (MASTER_IMR, 0x01),
        (SLAVE_CMD, 0x11),
        (SLAVE_IMR, 0x70),
        (SLAVE_IMR, 0x02),
        (SLAVE_IMR, 0x01),
        (MASTER_IMR, 0x00),
        (SLAVE_IMR, 0x00),
    ] {
        outb(pic, port, value);
    }
}

/// The port traffic of Linux's legacy PIC driver (arch/x86/kernel/i8259.c), with its
/// `cached_irq_mask`.
struct Linux {
    cached_irq_mask: u16,
    auto_eoi: bool,
    spurious: u32,
}

impl Linux {
    /// `init_8259A(auto_eoi)` with ISA_IRQ_VECTOR(0) = 0x30.
    fn init(pic: &mut Pic, auto_eoi: bool) -> Self {
        let linux = Self {
            cached_irq_mask: 0xffff,
            auto_eoi,
            spurious: 0,
        };
        outb(pic, MASTER_IMR, 0xff);
        outb(pic, SLAVE_IMR, 0xff);
        outb(pic, MASTER_CMD, 0x11); // ICW1: edge, cascade, ICW4 follows
        outb(pic, MASTER_IMR, 0x30); // ICW2: vector base
        outb(pic, MASTER_IMR, 0x04); // ICW3: slave on IR2
        outb(pic, MASTER_IMR, if auto_eoi { 0x03 } else { 0x01 }); // ICW4
        outb(pic, SLAVE_CMD, 0x11);
        outb(pic, SLAVE_IMR, 0x38);
        outb(pic, SLAVE_IMR, 0x02); // ICW3: slave ID 2
        outb(pic, SLAVE_IMR, 0x01); // the slave never uses AEOI
        outb(pic, MASTER_IMR, linux.cached_irq_mask as u8);
        outb(pic, SLAVE_IMR, (linux.cached_irq_mask >> 8) as u8);
        linux
    }

    fn write_mask(&self, pic: &mut Pic, irq: u8) {
        if irq & 8 != 0 {
            outb(pic, SLAVE_IMR, (self.cached_irq_mask >> 8) as u8);
        } else {
            outb(pic, MASTER_IMR, self.cached_irq_mask as u8);
        }
    }

    fn enable(&mut self, pic: &mut Pic, irq: u8) {
        self.cached_irq_mask &= !(1 << irq);
        self.write_mask(pic, irq);
    }

    fn disable(&mut self, pic: &mut Pic, irq: u8) {
        self.cached_irq_mask |= 1 << irq;
        self.write_mask(pic, irq);
    }

    /// `i8259A_irq_real`: is the IRQ's ISR bit set?
    fn irq_real(pic: &mut Pic, irq: u8) -> bool {
        let (cmd, bit) = if irq < 8 {
            (MASTER_CMD, 1u8 << irq)
        } else {
            (SLAVE_CMD, 1u8 << (irq - 8))
        };
        read_isr(pic, cmd) & bit != 0
    }

    /// `i8259A_irq_pending`: reads the IRR with the default OCW3 selection.
    fn irq_pending(pic: &mut Pic, irq: u8) -> bool {
        if irq < 8 {
            inb(pic, MASTER_CMD) & (1 << irq) != 0
        } else {
            inb(pic, SLAVE_CMD) & (1 << (irq - 8)) != 0
        }
    }

    /// `mask_and_ack_8259A`; returns false for an interrupt found spurious.
    fn mask_and_ack(&mut self, pic: &mut Pic, irq: u8) -> bool {
        let irqmask = 1u16 << irq;
        let mut real = true;
        if self.cached_irq_mask & irqmask != 0 && !Self::irq_real(pic, irq) {
            self.spurious += 1;
            real = false;
        }
        self.cached_irq_mask |= irqmask;
        if irq & 8 != 0 {
            let _ = inb(pic, SLAVE_IMR);
            outb(pic, SLAVE_IMR, (self.cached_irq_mask >> 8) as u8);
            outb(pic, SLAVE_CMD, SPECIFIC_EOI + (irq & 7));
            outb(pic, MASTER_CMD, SPECIFIC_EOI + CASCADE_IRQ);
        } else {
            let _ = inb(pic, MASTER_IMR);
            outb(pic, MASTER_IMR, self.cached_irq_mask as u8);
            outb(pic, MASTER_CMD, SPECIFIC_EOI + irq);
        }
        real
    }

    /// One interrupt as handle_level_irq() runs it: INTA, mask+ack (or just mask in AEOI
    /// mode), handler, unmask. Returns the IRQ number taken.
    fn take_interrupt(&mut self, pic: &mut Pic) -> Option<u8> {
        if !pic.interrupt_pending() {
            return None;
        }
        let irq = pic.acknowledge().checked_sub(0x30).filter(|&i| i < 16)?;
        if self.auto_eoi {
            self.disable(pic, irq);
        } else if !self.mask_and_ack(pic, irq) {
            return None;
        }
        self.enable(pic, irq);
        Some(irq)
    }
}

// 8259A, Initialization Command Words (ICW1-ICW4) and OCW1; Linux probe_8259A().
#[test]
fn linux_probe_reads_back_the_mask() {
    let (mut pic, _) = new_pic();
    outb(&mut pic, MASTER_IMR, 0xff);
    outb(&mut pic, MASTER_IMR, 0xa5);
    assert_eq!(inb(&mut pic, MASTER_IMR), 0xa5);
    outb(&mut pic, SLAVE_IMR, 0x5a);
    assert_eq!(inb(&mut pic, SLAVE_IMR), 0x5a);
}

// 8259A, Initialization Command Words: Linux init_8259A(0), then IRQ 0 and IRQ 12 taken and
// ended through mask_and_ack_8259A (ISR read with OCW3 0x0b, specific EOI 0x60 + irq).
#[test]
fn linux_init_sequence_and_mask_and_ack() {
    let (mut pic, intr) = new_pic();
    let mut linux = Linux::init(&mut pic, false);
    let master = pic.registers(Chip::Master);
    assert_eq!(master.vector_base, 0x30);
    assert_eq!(master.icw3, 0x04);
    assert_eq!(master.icw4, 0x01);
    assert!(!master.initializing);
    assert_eq!(master.imr, 0xff);
    assert_eq!(pic.registers(Chip::Slave).vector_base, 0x38);
    assert_eq!(pic.registers(Chip::Slave).icw3, 0x02);

    linux.enable(&mut pic, CASCADE_IRQ);
    linux.enable(&mut pic, 0);
    linux.enable(&mut pic, 12);
    pulse(&mut pic, 0);
    assert!(intr.level());
    assert_eq!(pic.acknowledge(), 0x30);
    assert!(!intr.level());
    assert!(Linux::irq_real(&mut pic, 0));
    assert!(linux.mask_and_ack(&mut pic, 0));
    assert_eq!(read_isr(&mut pic, MASTER_CMD), 0);
    linux.enable(&mut pic, 0);

    pulse(&mut pic, 12);
    assert_eq!(pic.acknowledge(), 0x3c);
    assert_eq!(read_isr(&mut pic, SLAVE_CMD), 1 << 4);
    assert_eq!(read_isr(&mut pic, MASTER_CMD), 1 << CASCADE_IRQ);
    assert!(linux.mask_and_ack(&mut pic, 12));
    assert_eq!(read_isr(&mut pic, SLAVE_CMD), 0);
    assert_eq!(read_isr(&mut pic, MASTER_CMD), 0);
    assert_eq!(linux.spurious, 0);
}

// 8259A, Automatic End of Interrupt mode: Linux init_8259A(1) (ICW4 0x03) never issues an
// EOI, so no ISR bit may stay set; the PIT tick keeps coming as check_timer() expects.
#[test]
fn linux_auto_eoi_timer_ticks() {
    let (mut pic, _) = new_pic();
    let mut linux = Linux::init(&mut pic, true);
    assert!(pic.registers(Chip::Master).icw4 & 0x02 != 0);
    linux.enable(&mut pic, 0);
    for _ in 0..5 {
        pulse(&mut pic, 0);
        assert_eq!(linux.take_interrupt(&mut pic), Some(0));
        assert_eq!(pic.registers(Chip::Master).isr, 0);
    }
    assert!(!pic.interrupt_pending());
}

// Linux timer_irq_works()/check_timer(): PIT ticks on IRQ 0 with normal EOI are all taken,
// and while IRQ 0 is masked the tick shows in the IRR (i8259A_irq_pending).
#[test]
fn linux_pit_timer_check_paths() {
    let (mut pic, _) = new_pic();
    let mut linux = Linux::init(&mut pic, false);
    pulse(&mut pic, 0);
    assert!(!pic.interrupt_pending());
    assert!(Linux::irq_pending(&mut pic, 0));

    linux.enable(&mut pic, 0);
    let mut ticks = u32::from(linux.take_interrupt(&mut pic) == Some(0));
    for _ in 0..9 {
        pulse(&mut pic, 0);
        ticks += u32::from(linux.take_interrupt(&mut pic) == Some(0));
    }
    assert_eq!(ticks, 10);
    assert!(!Linux::irq_pending(&mut pic, 0));
    assert_eq!(pic.registers(Chip::Master).isr, 0);
}

// 8259A, Initialization Command Words: the PC BIOS programs vectors 0x08 and 0x70.
#[test]
fn bios_init_sequence_vectors() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    for (irq, vector) in [(0u8, 0x08u8), (1, 0x09), (7, 0x0f), (8, 0x70), (14, 0x76)] {
        pulse(&mut pic, irq);
        assert_eq!(pic.acknowledge(), vector, "IRQ {irq}");
        if irq >= 8 {
            outb(&mut pic, SLAVE_CMD, NON_SPECIFIC_EOI);
        }
        outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    }
    assert_eq!(pic.registers(Chip::Master).isr, 0);
    assert_eq!(pic.registers(Chip::Slave).isr, 0);
}

// 8259A, ICW1: with IC4 = 0 no ICW4 is expected; with SNGL = 1 no ICW3 is expected and the
// master answers IR2 itself.
#[test]
fn icw1_without_icw4_and_single_mode() {
    let (mut pic, _) = new_pic();
    outb(&mut pic, MASTER_CMD, 0x10); // cascade, no ICW4
    outb(&mut pic, MASTER_IMR, 0x4f); // ICW2: T2-T0 are ignored in 8086 mode
    outb(&mut pic, MASTER_IMR, 0x04);
    assert!(!pic.registers(Chip::Master).initializing);
    assert_eq!(pic.registers(Chip::Master).vector_base, 0x48);
    assert_eq!(pic.registers(Chip::Master).icw4, 0);
    outb(&mut pic, MASTER_IMR, 0xfe); // now OCW1
    assert_eq!(inb(&mut pic, MASTER_IMR), 0xfe);

    outb(&mut pic, MASTER_CMD, 0x13); // single, ICW4
    outb(&mut pic, MASTER_IMR, 0x20);
    outb(&mut pic, MASTER_IMR, 0x01); // taken as ICW4, not ICW3
    assert!(!pic.registers(Chip::Master).initializing);
    assert!(pic.registers(Chip::Master).single_mode);
    pic.set_irq_level(9, true).unwrap(); // slave INT onto master IR2
    assert_eq!(pic.acknowledge(), 0x22);
}

// 8259A, ICW1: the IMR is cleared, IR7 becomes lowest priority, status read is IRR, special
// mask mode is reset and the edge sense latches are reset (a held line must edge again).
#[test]
fn icw1_resets_state_and_edge_sense() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    outb(&mut pic, MASTER_IMR, 0x0f);
    outb(&mut pic, MASTER_CMD, 0xc3); // set priority: IR3 lowest
    outb(&mut pic, MASTER_CMD, OCW3_SET_SMM);
    outb(&mut pic, MASTER_CMD, OCW3_READ_ISR);
    pic.set_irq_level(5, true).unwrap();
    pic.set_irq_level(6, true).unwrap();
    let _ = pic.acknowledge();

    outb(&mut pic, MASTER_CMD, 0x11);
    let regs = pic.registers(Chip::Master);
    assert_eq!((regs.imr, regs.irr, regs.isr), (0, 0, 0));
    assert_eq!(regs.highest_priority_irq, 0);
    assert!(!regs.special_mask_mode && !regs.read_selects_isr && regs.initializing);
    outb(&mut pic, MASTER_IMR, 0x08);
    outb(&mut pic, MASTER_IMR, 0x04);
    outb(&mut pic, MASTER_IMR, 0x01);
    assert!(
        !pic.interrupt_pending(),
        "held edge line must not re-trigger"
    );
    pic.set_irq_level(5, false).unwrap();
    pic.set_irq_level(5, true).unwrap();
    assert_eq!(pic.acknowledge(), 0x0d);
}

// 8259A, OCW1 and OCW3 (RR/RIS): IMR read at the odd port, IRR and ISR at the even port as
// selected; OCW3 with RR = 0 keeps the selection.
#[test]
fn register_readback_via_ocw3() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    outb(&mut pic, MASTER_IMR, 0x80);
    assert_eq!(inb(&mut pic, MASTER_IMR), 0x80);
    pulse(&mut pic, 3);
    pulse(&mut pic, 7); // masked: still latched in the IRR
    assert_eq!(read_irr(&mut pic, MASTER_CMD), 0x88);
    assert_eq!(pic.acknowledge(), 0x0b);
    assert_eq!(read_irr(&mut pic, MASTER_CMD), 0x80);
    outb(&mut pic, MASTER_CMD, OCW3_READ_ISR);
    assert_eq!(inb(&mut pic, MASTER_CMD), 0x08);
    assert_eq!(inb(&mut pic, MASTER_CMD), 0x08, "selection persists");
    outb(&mut pic, MASTER_CMD, 0x08); // OCW3, RR = 0: no action
    assert_eq!(inb(&mut pic, MASTER_CMD), 0x08);
    outb(&mut pic, MASTER_CMD, OCW3_READ_IRR);
    assert_eq!(inb(&mut pic, MASTER_CMD), 0x80);
    assert_eq!(inb(&mut pic, MASTER_IMR), 0x80);
}

// 8259A, Cascade Mode: a slave interrupt leaves IR2 in service on the master, so it needs an
// EOI to both chips; until the master's EOI nothing at IR2 or below gets through.
#[test]
fn cascade_needs_eoi_to_both_chips() {
    let (mut pic, intr) = new_pic();
    bios_init(&mut pic);
    pulse(&mut pic, 10);
    assert_eq!(pic.acknowledge(), 0x72);
    assert_eq!(pic.registers(Chip::Master).isr, 0x04);
    assert_eq!(pic.registers(Chip::Slave).isr, 0x04);

    outb(&mut pic, SLAVE_CMD, NON_SPECIFIC_EOI);
    pulse(&mut pic, 11);
    pulse(&mut pic, 3);
    assert!(!intr.level(), "IR2 still in service on the master");
    pulse(&mut pic, 1);
    assert_eq!(pic.acknowledge(), 0x09, "higher priority than IR2 nests");
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI); // ends IR1
    assert!(!pic.interrupt_pending());

    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI); // ends IR2
    assert_eq!(pic.acknowledge(), 0x73);
    outb(&mut pic, SLAVE_CMD, NON_SPECIFIC_EOI);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert_eq!(pic.acknowledge(), 0x0b);
}

// 8259A, Fully Nested Mode and the Priority Resolver: a higher level nests over an
// in-service lower one, a lower level waits; a non-specific EOI ends the highest ISR bit.
#[test]
fn fully_nested_priority_and_non_specific_eoi() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    pulse(&mut pic, 4);
    pulse(&mut pic, 6);
    assert_eq!(pic.pending_vector(), Some(0x0c));
    assert_eq!(pic.acknowledge(), 0x0c);
    assert!(!pic.interrupt_pending(), "IR6 waits behind IR4");
    pulse(&mut pic, 1);
    assert_eq!(pic.acknowledge(), 0x09);
    assert_eq!(pic.registers(Chip::Master).isr, 0x12);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert_eq!(pic.registers(Chip::Master).isr, 0x10, "IR1 ended first");
    assert!(!pic.interrupt_pending());
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert_eq!(pic.acknowledge(), 0x0e);
}

// 8259A, OCW2 specific EOI: only the named ISR bit is reset.
#[test]
fn specific_eoi_resets_named_level() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    pulse(&mut pic, 5);
    let _ = pic.acknowledge();
    pulse(&mut pic, 3);
    let _ = pic.acknowledge();
    outb(&mut pic, MASTER_CMD, SPECIFIC_EOI + 5);
    assert_eq!(read_isr(&mut pic, MASTER_CMD), 0x08);
    outb(&mut pic, MASTER_CMD, SPECIFIC_EOI + 3);
    assert_eq!(read_isr(&mut pic, MASTER_CMD), 0);
}

// 8259A, Automatic Rotation (rotate on non-specific EOI, OCW2 0xa0): the level just served
// becomes the lowest priority.
#[test]
fn rotate_on_non_specific_eoi() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    pulse(&mut pic, 4);
    assert_eq!(pic.acknowledge(), 0x0c);
    outb(&mut pic, MASTER_CMD, 0xa0);
    assert_eq!(pic.registers(Chip::Master).highest_priority_irq, 5);
    pulse(&mut pic, 0);
    pulse(&mut pic, 6);
    pulse(&mut pic, 4);
    // Order now 5, 6, 7, 0, 1, 2, 3, 4.
    assert_eq!(pic.acknowledge(), 0x0e);
    outb(&mut pic, MASTER_CMD, 0xa0); // IR6 lowest: 7, 0, ..., 6
    assert_eq!(pic.acknowledge(), 0x08);
    outb(&mut pic, MASTER_CMD, 0xa0); // IR0 lowest: 1, ..., 0
    assert_eq!(pic.acknowledge(), 0x0c);
    outb(&mut pic, MASTER_CMD, 0xa0);
    assert_eq!(pic.registers(Chip::Master).highest_priority_irq, 5);
}

// 8259A, Specific Rotation: set priority (OCW2 0xc0 + L) makes L the lowest; rotate on
// specific EOI (0xe0 + L) ends L and makes it the lowest.
#[test]
fn set_priority_and_rotate_on_specific_eoi() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    outb(&mut pic, MASTER_CMD, 0xc4); // IR4 lowest, IR5 highest
    pulse(&mut pic, 3);
    pulse(&mut pic, 6);
    assert_eq!(pic.acknowledge(), 0x0e);
    assert!(!pic.interrupt_pending(), "IR3 ranks below IR6 now");
    outb(&mut pic, MASTER_CMD, 0xe6); // end IR6, IR6 lowest, IR7 highest
    assert_eq!(pic.registers(Chip::Master).isr, 0);
    assert_eq!(pic.registers(Chip::Master).highest_priority_irq, 7);
    pulse(&mut pic, 6);
    assert_eq!(pic.acknowledge(), 0x0b);
    outb(&mut pic, MASTER_CMD, 0x40); // OCW2 no operation
    assert_eq!(pic.registers(Chip::Master).isr, 0x08);
}

// 8259A, Automatic Rotation in AEOI mode: OCW2 0x80 sets it, 0x00 clears it.
#[test]
fn rotate_in_auto_eoi_mode() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    outb(&mut pic, MASTER_CMD, 0x11);
    outb(&mut pic, MASTER_IMR, 0x08);
    outb(&mut pic, MASTER_IMR, 0x04);
    outb(&mut pic, MASTER_IMR, 0x03); // AEOI
    outb(&mut pic, MASTER_CMD, 0x80);
    assert!(pic.registers(Chip::Master).rotate_on_auto_eoi);
    pulse(&mut pic, 1);
    assert_eq!(pic.acknowledge(), 0x09);
    assert_eq!(pic.registers(Chip::Master).isr, 0);
    assert_eq!(pic.registers(Chip::Master).highest_priority_irq, 2);
    pulse(&mut pic, 1);
    pulse(&mut pic, 3);
    assert_eq!(pic.acknowledge(), 0x0b, "IR1 rotated to the bottom");
    outb(&mut pic, MASTER_CMD, 0x00);
    assert!(!pic.registers(Chip::Master).rotate_on_auto_eoi);
    assert_eq!(pic.acknowledge(), 0x09);
    assert_eq!(pic.registers(Chip::Master).highest_priority_irq, 4);
}

// 8259A, Edge Triggered Mode: a request is latched on the rising edge only; holding the line
// high does not request again after the acknowledge; a masked edge stays latched.
#[test]
fn edge_triggered_latches_rising_edges_only() {
    let (mut pic, intr) = new_pic();
    bios_init(&mut pic);
    pic.set_irq_level(3, true).unwrap();
    assert_eq!(pic.acknowledge(), 0x0b);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert!(!intr.level(), "line still high, but no new edge");
    pic.set_irq_level(3, false).unwrap();
    assert!(!intr.level());
    pic.set_irq_level(3, true).unwrap();
    assert!(intr.level());
    pic.set_irq_level(3, false).unwrap();
    assert!(intr.level(), "edge request survives the line falling");
    assert_eq!(pic.acknowledge(), 0x0b);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);

    outb(&mut pic, MASTER_IMR, 0x10);
    pulse(&mut pic, 4);
    assert!(!intr.level());
    outb(&mut pic, MASTER_IMR, 0x00);
    assert_eq!(pic.acknowledge(), 0x0c);
}

// 8259A, Level Triggered Mode and the PIIX ELCR: the IRR follows the line; after EOI a line
// still high requests again; bits for IRQ 0, 1, 2, 8, 13 cannot be set.
#[test]
fn level_triggered_via_elcr() {
    let (mut pic, intr) = new_pic();
    bios_init(&mut pic);
    pic.write_port(ELCR_BASE, &[0xff, 0xff]);
    let mut elcr = [0u8; 2];
    pic.read_port(ELCR_BASE, &mut elcr);
    assert_eq!(elcr, [MASTER_ELCR_MASK, SLAVE_ELCR_MASK]);

    pic.set_irq_level(11, true).unwrap();
    assert_eq!(read_irr(&mut pic, SLAVE_CMD), 0x08);
    pic.set_irq_level(11, false).unwrap();
    assert_eq!(read_irr(&mut pic, SLAVE_CMD), 0x00, "IRR follows the line");
    // The master's edge-triggered IR2 latched the slave's INT: the request that went away
    // now ends as a slave spurious interrupt.
    assert!(intr.level());
    assert_eq!(pic.acknowledge(), 0x77);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert!(!intr.level());

    pic.set_irq_level(11, true).unwrap();
    assert_eq!(pic.acknowledge(), 0x73);
    outb(&mut pic, SLAVE_CMD, NON_SPECIFIC_EOI);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert_eq!(pic.acknowledge(), 0x73, "still high: requests again");
    // The handler quiets the device before its EOIs.
    pic.set_irq_level(11, false).unwrap();
    outb(&mut pic, SLAVE_CMD, NON_SPECIFIC_EOI);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert!(!pic.interrupt_pending());

    // IRQ 8 stays edge-triggered whatever the ELCR says.
    pic.set_irq_level(8, true).unwrap();
    pic.set_irq_level(8, false).unwrap();
    assert_eq!(pic.acknowledge(), 0x70);
}

// 8259A, ICW1 LTIM: every input of the chip becomes level-triggered.
#[test]
fn ltim_makes_all_inputs_level_triggered() {
    let (mut pic, _) = new_pic();
    outb(&mut pic, MASTER_CMD, 0x19);
    outb(&mut pic, MASTER_IMR, 0x08);
    outb(&mut pic, MASTER_IMR, 0x04);
    outb(&mut pic, MASTER_IMR, 0x01);
    assert!(pic.registers(Chip::Master).level_triggered_mode);
    pic.set_irq_level(0, true).unwrap();
    assert_eq!(read_irr(&mut pic, MASTER_CMD), 0x01);
    pic.set_irq_level(0, false).unwrap();
    assert_eq!(read_irr(&mut pic, MASTER_CMD), 0x00);
}

// 8259A, Interrupt Sequence (step 4, spurious IR7): a request that goes away before INTA
// yields the master's base + 7 with no ISR bit set; Linux finds ISR7 clear and counts a
// spurious IRQ 7.
#[test]
fn master_spurious_irq7() {
    let (mut pic, intr) = new_pic();
    let mut linux = Linux::init(&mut pic, false);
    pic.write_port(ELCR_BASE, &[0x08]); // IRQ 3 level-triggered
    linux.enable(&mut pic, 3);
    pic.set_irq_level(3, true).unwrap();
    assert!(intr.level());
    pic.set_irq_level(3, false).unwrap(); // gone before the CPU's INTA
    assert_eq!(pic.acknowledge(), 0x37);
    assert_eq!(pic.registers(Chip::Master).isr, 0);
    assert!(!linux.mask_and_ack(&mut pic, 7));
    assert_eq!(linux.spurious, 1);

    // The same for an edge request masked between INT and INTA.
    pulse(&mut pic, 0);
    linux.enable(&mut pic, 0);
    assert!(pic.interrupt_pending());
    linux.disable(&mut pic, 0);
    assert_eq!(pic.acknowledge(), 0x37);
    assert_eq!(pic.registers(Chip::Master).isr, 0);
}

// 8259A, Cascade Mode + spurious: the slave's request goes away after its INT reached the
// master: the master acknowledges IR2 normally and the slave returns its base + 7.
#[test]
fn slave_spurious_irq15() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    pic.write_port(ELCR_BASE + 1, &[0x08]); // IRQ 11 level-triggered
    pic.set_irq_level(11, true).unwrap();
    pic.set_irq_level(11, false).unwrap();
    assert_eq!(pic.pending_vector(), Some(0x77));
    assert_eq!(pic.acknowledge(), 0x77);
    assert_eq!(pic.registers(Chip::Master).isr, 0x04);
    assert_eq!(pic.registers(Chip::Slave).isr, 0x00);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert!(!pic.interrupt_pending());
}

// 8259A, The Poll Command (OCW3 P = 1): the next read returns I and W2-W0 and acts as INTA.
#[test]
fn poll_command() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    outb(&mut pic, MASTER_CMD, OCW3_POLL);
    assert_eq!(inb(&mut pic, MASTER_CMD), 0x00, "no request: I = 0");
    pulse(&mut pic, 5);
    outb(&mut pic, MASTER_CMD, OCW3_POLL);
    assert!(pic.registers(Chip::Master).poll_pending);
    assert_eq!(
        inb(&mut pic, MASTER_IMR),
        0x85,
        "either port answers the poll"
    );
    assert_eq!(pic.registers(Chip::Master).isr, 0x20);
    assert!(!pic.interrupt_pending());
    assert_eq!(inb(&mut pic, MASTER_IMR), 0x00, "poll is one read only");
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);

    // A slave request polls as level 2 on the master, then the slave gives the level.
    pulse(&mut pic, 13);
    outb(&mut pic, MASTER_CMD, OCW3_POLL);
    assert_eq!(inb(&mut pic, MASTER_CMD), 0x82);
    outb(&mut pic, SLAVE_CMD, OCW3_POLL);
    assert_eq!(inb(&mut pic, SLAVE_CMD), 0x85);
    assert_eq!(pic.registers(Chip::Slave).isr, 0x20);
}

// 8259A, Special Mask Mode: with SMM a masked in-service level no longer blocks lower
// levels, and a non-specific EOI does not clear a masked ISR bit.
#[test]
fn special_mask_mode() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    pulse(&mut pic, 3);
    assert_eq!(pic.acknowledge(), 0x0b);
    pulse(&mut pic, 5);
    assert!(!pic.interrupt_pending(), "fully nested: IR5 waits");

    outb(&mut pic, MASTER_IMR, 0x08);
    outb(&mut pic, MASTER_CMD, OCW3_SET_SMM);
    assert!(pic.registers(Chip::Master).special_mask_mode);
    assert_eq!(pic.acknowledge(), 0x0d);
    assert_eq!(pic.registers(Chip::Master).isr, 0x28);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert_eq!(
        pic.registers(Chip::Master).isr,
        0x08,
        "masked ISR3 survives"
    );
    outb(&mut pic, MASTER_CMD, SPECIFIC_EOI + 3);
    outb(&mut pic, MASTER_CMD, OCW3_CLEAR_SMM);
    outb(&mut pic, MASTER_IMR, 0x00);
    assert!(!pic.registers(Chip::Master).special_mask_mode);
    assert_eq!(pic.registers(Chip::Master).isr, 0);
}

// 8259A, Special Fully Nested Mode (ICW4 SFNM): the master lets a higher-priority request
// from the slave through while IR2 is in service, but lower master levels still wait.
#[test]
fn special_fully_nested_mode() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    pulse(&mut pic, 12);
    assert_eq!(pic.acknowledge(), 0x74);
    pulse(&mut pic, 9);
    assert!(
        !pic.interrupt_pending(),
        "normal nesting blocks IR2 at the master"
    );
    outb(&mut pic, SLAVE_CMD, SPECIFIC_EOI + 1);
    outb(&mut pic, SLAVE_CMD, SPECIFIC_EOI + 4);
    outb(&mut pic, MASTER_CMD, SPECIFIC_EOI + 2);
    assert_eq!(pic.acknowledge(), 0x71);
    outb(&mut pic, SLAVE_CMD, NON_SPECIFIC_EOI);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);

    outb(&mut pic, MASTER_CMD, 0x11);
    outb(&mut pic, MASTER_IMR, 0x08);
    outb(&mut pic, MASTER_IMR, 0x04);
    outb(&mut pic, MASTER_IMR, 0x11); // 8086, SFNM
    pulse(&mut pic, 12);
    assert_eq!(pic.acknowledge(), 0x74);
    pulse(&mut pic, 4);
    assert!(!pic.interrupt_pending(), "IR4 is below the IR2 in service");
    pulse(&mut pic, 9);
    assert_eq!(pic.acknowledge(), 0x71, "nested slave request");
    assert_eq!(pic.registers(Chip::Slave).isr, 0x12);
}

// 8259A, AEOI on the slave: a request waiting behind the one acknowledged keeps the slave's
// INT high; the master must still see it (INT drops during INTA).
#[test]
fn slave_auto_eoi_keeps_second_request() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    outb(&mut pic, SLAVE_CMD, 0x11);
    outb(&mut pic, SLAVE_IMR, 0x70);
    outb(&mut pic, SLAVE_IMR, 0x02);
    outb(&mut pic, SLAVE_IMR, 0x03);
    pulse(&mut pic, 9);
    pulse(&mut pic, 10);
    assert_eq!(pic.acknowledge(), 0x71);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert_eq!(pic.acknowledge(), 0x72);
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert!(!pic.interrupt_pending());
}

// 8259A, ICW3 / Cascade Mode: the slave answers only its programmed ID; with no chip on the
// data bus the CPU reads 0xff.
#[test]
fn cascade_address_mismatch_reads_open_bus() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    outb(&mut pic, SLAVE_CMD, 0x11);
    outb(&mut pic, SLAVE_IMR, 0x70);
    outb(&mut pic, SLAVE_IMR, 0x05);
    outb(&mut pic, SLAVE_IMR, 0x01);
    pulse(&mut pic, 8);
    assert_eq!(pic.pending_vector(), Some(0xff));
    assert_eq!(pic.acknowledge(), 0xff);
    assert_eq!(pic.registers(Chip::Slave).isr, 0);
}

// The INT output drives the IrqLine once per rising edge, never redundantly.
#[test]
fn int_output_drives_line_on_changes_only() {
    let (mut pic, intr) = new_pic();
    bios_init(&mut pic);
    pulse(&mut pic, 1);
    pulse(&mut pic, 4);
    assert_eq!(intr.rising_edges(), 1);
    assert!(intr.level());
    assert_eq!(pic.acknowledge(), 0x09);
    assert!(!intr.level());
    outb(&mut pic, MASTER_CMD, NON_SPECIFIC_EOI);
    assert!(intr.level());
    assert_eq!(intr.rising_edges(), 2);
    assert_eq!(pic.output().rising_edges(), 2);
}

// The INTA cycle with nothing pending still behaves as the hardware: the master's IR7.
#[test]
fn acknowledge_without_request_is_spurious() {
    let (mut pic, _) = new_pic();
    bios_init(&mut pic);
    assert_eq!(pic.pending_vector(), None);
    assert_eq!(pic.acknowledge(), 0x0f);
    assert_eq!(pic.registers(Chip::Master).isr, 0);
}

#[test]
fn set_irq_level_rejects_bad_lines() {
    let (mut pic, _) = new_pic();
    assert_eq!(pic.set_irq_level(2, true), Err(Error::CascadeLine));
    assert_eq!(pic.set_irq_level(16, true), Err(Error::InvalidLine(16)));
    assert_eq!(pic.set_irq_level(255, false), Err(Error::InvalidLine(255)));
    assert!(pic.set_irq_level(15, true).is_ok());
    assert!(Error::CascadeLine.to_string().contains("IRQ 9"));
}

// Machine reset returns to the power-on state and lowers INT.
#[test]
fn reset_restores_power_on_state() {
    let (mut pic, intr) = new_pic();
    let power_on = pic.registers(Chip::Master);
    bios_init(&mut pic);
    pic.write_port(ELCR_BASE, &[0x08, 0x08]);
    outb(&mut pic, MASTER_IMR, 0x55);
    pulse(&mut pic, 1);
    assert!(intr.level());
    pic.reset();
    assert!(!intr.level());
    assert_eq!(pic.registers(Chip::Master), power_on);
    assert_eq!(pic.registers(Chip::Slave).elcr, 0);
    assert_eq!(pic.registers(Chip::Slave).icw3, 2);
    assert_eq!(power_on.icw3, 0x04);
}

// ISA bus: a 16-bit `out 0x20, ax` is two byte writes (AL to 0x20, AH to 0x21); ports outside
// the pair read 0xff; the vm-device PIO trait uses base + offset.
#[test]
fn wide_accesses_and_pio_trait() {
    let (mut pic, _) = new_pic();
    pic.write_port(MASTER_CMD, &[0x11, 0x08]); // ICW1 then ICW2
    assert!(pic.registers(Chip::Master).initializing);
    assert_eq!(pic.registers(Chip::Master).vector_base, 0x08);

    pic.pio_write(PioAddress(PIC_SLAVE_BASE), 1, &[0x3c]);
    let mut data = [0u8; 3];
    pic.pio_read(PioAddress(PIC_SLAVE_BASE), 1, &mut data);
    assert_eq!(data, [0x3c, 0xff, 0xff]);
    pic.pio_write(PioAddress(ELCR_BASE), 0, &[0x20, 0x20]);
    assert_eq!(pic.registers(Chip::Master).elcr, 0x20);
    let mut wide = [0u8; 9];
    pic.pio_read(PioAddress(0xffff), 0xffff, &mut wide);
    assert_eq!(wide, [0xff; 9]);
    pic.read_port(0xffff, &mut wide);
    assert_eq!(wide, [0xff; 9]);
    pic.write_port(0x22, &[0x00; 4]);
    let mut empty = [0u8; 0];
    pic.read_port(MASTER_CMD, &mut empty);
    assert_eq!(pic.registers(Chip::Master).imr, 0);
}

// A device drives its ISA IRQ through a PicInputLine; the PIC behind a Mutex also serves
// the vm-device DevicePio blanket impl.
#[test]
fn pic_input_line_wiring() {
    let intr = Arc::new(RecordingLine::new());
    let pic = Arc::new(Mutex::new(DualPic::new(Arc::clone(&intr))));
    {
        let mut guard = pic.lock().unwrap();
        bios_init(&mut guard);
    }
    assert_eq!(
        PicInputLine::new(Arc::clone(&pic), 2).unwrap_err(),
        Error::CascadeLine
    );
    assert!(PicInputLine::new(Arc::clone(&pic), 16).is_err());
    let com1 = PicInputLine::new(Arc::clone(&pic), 4).unwrap();
    assert_eq!(com1.line(), 4);
    com1.pulse();
    assert!(intr.level());
    let mut vector = [0u8];
    vm_device::DevicePio::pio_read(&*pic, PioAddress(PIC_MASTER_BASE), 0, &mut vector);
    assert_eq!(vector[0], 0x10, "IRR read shows IRQ 4");
    assert_eq!(pic.lock().unwrap().acknowledge(), 0x0c);
}
