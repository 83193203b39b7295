//! Unit tests written from the Intel 8254 (82C54) datasheet; each cites the section it checks.
//!
//! Timing convention: a write "during tick w" is a write with the clock inside input clock
//! tick w; the datasheet's "next CLK pulse" is then tick w + 1.

use std::sync::Arc;

use vm_device::bus::PioAddress;
use vm_device::MutDevicePio;
use vmkit_hw::{Clock, ManualClock, RecordingLine};

use super::*;

struct Rig {
    clock: ManualClock,
    irq0: Arc<RecordingLine>,
    pit: Pit<Arc<RecordingLine>, ManualClock>,
}

impl Rig {
    fn new() -> Self {
        let clock = ManualClock::new(0);
        let irq0 = Arc::new(RecordingLine::new());
        let pit = Pit::new(irq0.clone(), clock.clone());
        Self { clock, irq0, pit }
    }

    /// Moves the clock to the first nanosecond of input clock tick `tick`.
    fn at(&mut self, tick: u64) -> &mut Self {
        self.clock.set(ticks_to_ns(tick));
        assert_eq!(ns_to_ticks(self.clock.now_ns()), tick);
        self
    }

    fn outb(&mut self, port: u16, value: u8) {
        self.pit.write_port(port, &[value]);
    }

    fn inb(&mut self, port: u16) -> u8 {
        let mut byte = [0u8];
        self.pit.read_port(port, &mut byte);
        byte[0]
    }

    /// Control word for `counter`, LSB-then-MSB access.
    fn program(&mut self, counter: u8, mode: u8, bcd: bool) {
        self.outb(
            PIT_CONTROL_PORT,
            (counter << 6) | 0x30 | (mode << 1) | u8::from(bcd),
        );
    }

    fn write_count(&mut self, counter: u8, count: u16) {
        let [lsb, msb] = count.to_le_bytes();
        self.outb(PIT_COUNTER0_PORT + u16::from(counter), lsb);
        self.outb(PIT_COUNTER0_PORT + u16::from(counter), msb);
    }

    /// Counter latch command, then LSB and MSB reads (LSB-then-MSB access).
    fn latched_count(&mut self, counter: u8) -> u16 {
        self.outb(PIT_CONTROL_PORT, counter << 6);
        let lsb = self.inb(PIT_COUNTER0_PORT + u16::from(counter));
        let msb = self.inb(PIT_COUNTER0_PORT + u16::from(counter));
        u16::from_le_bytes([lsb, msb])
    }

    /// Read-back command latching only the status of `counter`, then the status read.
    fn status(&mut self, counter: u8) -> u8 {
        self.outb(PIT_CONTROL_PORT, 0xE0 | (2 << counter));
        self.inb(PIT_COUNTER0_PORT + u16::from(counter))
    }

    fn out(&self, counter: usize) -> bool {
        self.pit
            .counter_info(counter)
            .map(|i| i.out)
            .unwrap_or(false)
    }

    fn set_gate2(&mut self, high: bool) {
        let value = (self.inb(SYSTEM_CONTROL_PORT_B) & 0x0E) | u8::from(high);
        self.outb(SYSTEM_CONTROL_PORT_B, value);
    }
}

#[test]
fn tick_conversions_are_exact_and_inverse() {
    // One second is exactly PIT_CLOCK_HZ ticks, with no rounding drift.
    assert_eq!(ticks_to_ns(PIT_CLOCK_HZ), 1_000_000_000);
    assert_eq!(ns_to_ticks(1_000_000_000), PIT_CLOCK_HZ);
    assert_eq!(ns_to_ticks(3_600 * 1_000_000_000), 3_600 * PIT_CLOCK_HZ);
    for k in [1u64, 2, 1193, 65_536, 1 << 40, ns_to_ticks(u64::MAX)] {
        let ns = ticks_to_ns(k);
        assert_eq!(ns_to_ticks(ns), k, "tick {k} starts at {ns}");
        assert_eq!(ns_to_ticks(ns - 1), k - 1, "tick {k} starts no earlier");
    }
    // 1193 ticks: 999_847.46.. ns, so tick 1193 starts at 999_848 ns.
    assert_eq!(ticks_to_ns(1193), 999_848);
    assert_eq!(ticks_to_ns(0), 0);
}

#[test]
fn power_on_state_is_quiet() {
    let mut rig = Rig::new();
    assert_eq!(rig.pit.next_deadline_ns(), None);
    assert!(!rig.irq0.level());
    // Status: OUT 0, NULL COUNT 1, RW 11, mode 0, binary.
    assert_eq!(rig.status(0), 0b0111_0000);
    assert_eq!(rig.inb(SYSTEM_CONTROL_PORT_B) & 0x2F, 0);
    rig.at(1_000_000);
    assert_eq!(rig.latched_count(0), 0);
    assert_eq!(rig.irq0.rising_edges(), 0);
}

#[test]
fn mode0_counts_from_next_clk_and_out_rises_after_n_plus_1() {
    // 8254 Mode 0 (Interrupt on Terminal Count): OUT low after the control word; the count is
    // loaded on the next CLK pulse, which does not decrement it, so OUT goes high N+1 CLK
    // pulses after the count is written; counting continues (wraps to FFFF) after zero.
    let mut rig = Rig::new();
    rig.at(10);
    rig.program(0, 0, false);
    assert!(!rig.out(0));
    rig.write_count(0, 100);
    rig.at(11);
    assert_eq!(rig.latched_count(0), 100);
    for j in [1u64, 50, 99] {
        rig.at(11 + j);
        assert_eq!(u64::from(rig.latched_count(0)), 100 - j);
        assert!(!rig.out(0), "OUT low before terminal count (pulse {j})");
    }
    rig.at(10 + 100 + 1);
    assert_eq!(rig.latched_count(0), 0);
    assert!(rig.out(0), "OUT high N+1 pulses after the write");
    rig.at(10 + 100 + 2);
    assert_eq!(rig.latched_count(0), 0xFFFF);
    assert!(rig.out(0), "OUT stays high while the counter wraps");
    rig.at(10 + 100 + 2 + 0xFFFF);
    assert!(rig.out(0), "OUT high until a new count or control word");
}

#[test]
fn mode0_first_byte_stops_counting_and_lowers_out() {
    // 8254 Mode 0: "Writing the first byte disables counting. OUT is set low immediately (no
    // clock pulse required). Writing the second byte allows the new count to be loaded on the
    // next CLK pulse."
    let mut rig = Rig::new();
    rig.program(0, 0, false);
    rig.write_count(0, 10);
    rig.at(20);
    assert!(rig.out(0));
    rig.outb(PIT_COUNTER0_PORT, 0x00); // LSB of 0x0100
    assert!(!rig.out(0), "OUT low at once");
    let held = rig.latched_count(0);
    rig.at(500);
    assert_eq!(
        rig.latched_count(0),
        held,
        "counting disabled between the two bytes"
    );
    rig.outb(PIT_COUNTER0_PORT, 0x01);
    rig.at(501);
    assert_eq!(rig.latched_count(0), 0x100);
    rig.at(500 + 0x100);
    assert!(!rig.out(0));
    rig.at(501 + 0x100);
    assert!(rig.out(0), "N+1 pulses after the second byte");
}

#[test]
fn mode0_gate_low_holds_count_and_count_loads_anyway() {
    // 8254 Mode 0: GATE = 1 enables counting, GATE = 0 disables it and does not affect OUT;
    // a count written while GATE is low is still loaded on the next CLK pulse.
    let mut rig = Rig::new();
    rig.set_gate2(false);
    rig.program(2, 0, false);
    rig.write_count(2, 50);
    rig.at(1);
    let status = rig.status(2);
    assert_eq!(
        status & 0x40,
        0,
        "NULL COUNT clear: count loaded with GATE low"
    );
    rig.at(100);
    assert_eq!(rig.latched_count(2), 50, "no counting while GATE is low");
    rig.set_gate2(true); // rises during tick 100; counting resumes on tick 101
    rig.at(111);
    assert_eq!(rig.latched_count(2), 40);
    rig.set_gate2(false);
    rig.at(5_000);
    assert_eq!(rig.latched_count(2), 40);
    assert!(!rig.out(2));
    rig.set_gate2(true); // during tick 5000
    rig.at(5_000 + 40);
    assert!(!rig.out(2));
    rig.at(5_000 + 41);
    assert!(
        rig.out(2),
        "terminal count 40 pulses after counting resumed"
    );
}

#[test]
fn mode1_one_shot_needs_gate_trigger_and_retriggers() {
    // 8254 Mode 1 (Hardware Retriggerable One-Shot): OUT initially high; a GATE trigger loads
    // the count and sets OUT low on the next CLK pulse; OUT goes high at terminal count, N
    // pulses later; a new trigger reloads the count.
    let mut rig = Rig::new();
    rig.program(2, 1, false);
    assert!(rig.out(2));
    rig.write_count(2, 20);
    rig.at(1_000);
    assert!(rig.out(2), "nothing happens without a trigger");
    assert_ne!(
        rig.status(2) & 0x40,
        0,
        "NULL COUNT stays set until the trigger"
    );
    rig.set_gate2(true); // trigger during tick 1000
    assert!(rig.out(2));
    rig.at(1_001);
    assert!(!rig.out(2), "OUT low on the CLK pulse after the trigger");
    assert_eq!(rig.latched_count(2), 20);
    rig.at(1_011);
    assert_eq!(rig.latched_count(2), 10);
    rig.set_gate2(false);
    rig.at(1_015);
    assert_eq!(rig.latched_count(2), 6, "GATE level does not stop mode 1");
    rig.set_gate2(true); // retrigger during tick 1015
    rig.at(1_016);
    assert_eq!(rig.latched_count(2), 20);
    rig.at(1_035);
    assert!(!rig.out(2));
    rig.at(1_036);
    assert!(rig.out(2), "high N pulses after the retrigger load");
}

#[test]
fn mode2_rate_generator_waveform_and_counts() {
    // 8254 Mode 2 (Rate Generator): loaded on the next CLK pulse; OUT goes low for one CLK
    // pulse when the count reaches 1, then the count reloads: OUT goes low N pulses after the
    // count is written, and the period is N.
    let mut rig = Rig::new();
    rig.program(0, 2, false);
    assert!(rig.out(0), "OUT initially high");
    rig.write_count(0, 5);
    let expected_ce = [5u16, 4, 3, 2, 1];
    for tick in 1..=21u64 {
        rig.at(tick);
        let ce = expected_ce[usize::try_from((tick - 1) % 5).unwrap_or(0)];
        assert_eq!(rig.latched_count(0), ce, "tick {tick}");
        assert_eq!(rig.out(0), ce != 1, "tick {tick}");
    }
}

#[test]
fn mode2_new_count_waits_for_end_of_period_and_gate_controls() {
    // 8254 Mode 2: "Writing a new count while counting does not affect the current counting
    // sequence ... the new count will be loaded at the end of the current counting cycle."
    // GATE low forces OUT high and stops counting; a trigger reloads on the next CLK pulse.
    let mut rig = Rig::new();
    rig.set_gate2(true);
    rig.program(2, 2, false);
    rig.write_count(2, 10); // loaded at tick 1; periods start at 1, 11, 21...
    rig.at(3);
    rig.write_count(2, 4);
    assert_ne!(rig.status(2) & 0x40, 0, "NULL COUNT until the period ends");
    rig.at(10);
    assert_eq!(rig.latched_count(2), 1, "old period finishes");
    assert!(!rig.out(2));
    rig.at(11);
    assert_eq!(rig.latched_count(2), 4, "new count from the next period");
    assert_eq!(rig.status(2) & 0x40, 0);
    rig.at(14);
    assert!(!rig.out(2));
    rig.at(15);
    assert_eq!(rig.latched_count(2), 4);
    // GATE low during the low pulse: OUT high at once, counting stops.
    rig.at(18);
    assert!(!rig.out(2));
    rig.set_gate2(false);
    assert!(rig.out(2));
    rig.at(100);
    assert_eq!(rig.latched_count(2), 1);
    assert!(rig.out(2));
    rig.set_gate2(true); // trigger during tick 100
    rig.at(101);
    assert_eq!(rig.latched_count(2), 4);
    rig.at(104);
    assert!(!rig.out(2), "low N pulses after the trigger");
}

#[test]
fn mode3_square_wave_even_and_odd_counts() {
    // 8254 Mode 3 (Square Wave): even N: high N/2, low N/2, CE N, N-2, ..., 2 per half; odd
    // N: high (N+1)/2, low (N-1)/2, CE starts at N-1 and decrements by two.
    let mut rig = Rig::new();
    rig.program(0, 3, false);
    rig.write_count(0, 6);
    let even = [
        (6u16, true),
        (4, true),
        (2, true),
        (6, false),
        (4, false),
        (2, false),
    ];
    for tick in 1..=13u64 {
        rig.at(tick);
        let (ce, out) = even[usize::try_from((tick - 1) % 6).unwrap_or(0)];
        assert_eq!(rig.latched_count(0), ce, "even, tick {tick}");
        assert_eq!(rig.out(0), out, "even, tick {tick}");
    }
    rig.program(1, 3, false);
    rig.write_count(1, 5); // during tick 13, loaded at 14
    let odd = [(4u16, true), (2, true), (0, true), (4, false), (2, false)];
    for tick in 14..=30u64 {
        rig.at(tick);
        let (ce, out) = odd[usize::try_from((tick - 14) % 5).unwrap_or(0)];
        assert_eq!(rig.latched_count(1), ce, "odd, tick {tick}");
        assert_eq!(rig.out(1), out, "odd, tick {tick}");
    }
}

#[test]
fn mode3_new_count_loads_at_end_of_half_cycle() {
    // 8254 Mode 3: "Otherwise, the new count is loaded at the end of the current half-cycle."
    let mut rig = Rig::new();
    rig.program(0, 3, false);
    rig.write_count(0, 100); // high 1..=50, low 51..=100
    rig.at(20);
    rig.write_count(0, 10);
    rig.at(50);
    assert!(rig.out(0));
    assert_eq!(rig.latched_count(0), 2);
    rig.at(51);
    assert!(!rig.out(0), "the low half-cycle starts on time");
    assert_eq!(rig.latched_count(0), 10, "with the new count");
    rig.at(55);
    assert!(!rig.out(0));
    rig.at(56);
    assert!(rig.out(0), "low half of the new count is 5 pulses");
    rig.at(61);
    assert!(!rig.out(0));
}

#[test]
fn mode3_gate_low_forces_out_high() {
    // 8254 Mode 3: "If GATE goes low while OUT is low, OUT is set high immediately."
    let mut rig = Rig::new();
    rig.set_gate2(true);
    rig.program(2, 3, false);
    rig.write_count(2, 8);
    rig.at(6);
    assert!(!rig.out(2));
    rig.set_gate2(false);
    assert!(rig.out(2));
    rig.at(60);
    assert!(rig.out(2));
    rig.set_gate2(true); // trigger during tick 60: high half starts at 61
    rig.at(64);
    assert!(rig.out(2));
    rig.at(65);
    assert!(!rig.out(2));
}

#[test]
fn mode4_software_strobe() {
    // 8254 Mode 4 (Software Triggered Strobe): OUT initially high; loaded on the next CLK
    // pulse; OUT strobes low for one CLK pulse N+1 pulses after the count is written.
    let mut rig = Rig::new();
    rig.program(0, 4, false);
    assert!(rig.out(0));
    let base = rig.irq0.rising_edges();
    rig.write_count(0, 30); // during tick 0
    assert_eq!(rig.pit.next_deadline_ns(), Some(ticks_to_ns(31)));
    rig.at(30);
    assert!(rig.out(0));
    assert_eq!(rig.latched_count(0), 1);
    rig.at(31);
    assert!(!rig.out(0));
    rig.pit.update();
    assert_eq!(rig.pit.next_deadline_ns(), Some(ticks_to_ns(32)));
    rig.at(32);
    assert!(rig.out(0));
    rig.pit.update();
    assert_eq!(rig.irq0.rising_edges(), base + 1);
    assert_eq!(rig.pit.next_deadline_ns(), None, "one strobe per count");
    rig.at(32 + 70_000);
    assert!(rig.out(0));
}

#[test]
fn mode4_gate_low_disables_counting() {
    // 8254 Mode 4: GATE = 0 disables counting; GATE has no effect on OUT.
    let mut rig = Rig::new();
    rig.set_gate2(true);
    rig.program(2, 4, false);
    rig.write_count(2, 10);
    rig.at(5);
    rig.set_gate2(false);
    let held = rig.latched_count(2);
    assert_eq!(held, 6);
    rig.at(50);
    assert_eq!(rig.latched_count(2), held);
    assert!(rig.out(2));
    rig.set_gate2(true); // during tick 50: resumes at 51 with 6
    rig.at(56);
    assert_eq!(rig.latched_count(2), 1);
    rig.at(57);
    assert!(!rig.out(2), "strobe when the held count expires");
    rig.at(58);
    assert!(rig.out(2));
}

#[test]
fn mode5_hardware_strobe() {
    // 8254 Mode 5 (Hardware Triggered Strobe): OUT initially high; counting starts on a GATE
    // trigger; OUT strobes low for one pulse N+1 pulses after the trigger.
    let mut rig = Rig::new();
    rig.program(2, 5, false);
    rig.write_count(2, 7);
    rig.at(100);
    assert!(rig.out(2));
    rig.set_gate2(true); // trigger during tick 100
    rig.at(107);
    assert!(rig.out(2));
    assert_eq!(rig.latched_count(2), 1);
    rig.at(108);
    assert!(!rig.out(2));
    rig.at(109);
    assert!(rig.out(2));
}

#[test]
fn modes_6_and_7_alias_2_and_3() {
    // 8254 control word format: M2 is "don't care" for modes 2 and 3 (X10, X11).
    let mut rig = Rig::new();
    rig.outb(PIT_CONTROL_PORT, 0x30 | (6 << 1));
    rig.write_count(0, 3);
    rig.outb(PIT_CONTROL_PORT, 0x70 | (7 << 1));
    rig.write_count(1, 4);
    let info0 = rig.pit.counter_info(0).expect("counter 0");
    let info1 = rig.pit.counter_info(1).expect("counter 1");
    assert_eq!((info0.mode, info1.mode), (2, 3));
    assert_eq!(
        info0.status & 0x0E,
        6 << 1,
        "status returns the bits as written"
    );
    rig.at(3);
    assert!(!rig.out(0), "mode 2 low pulse when CE is 1");
    assert!(!rig.out(1), "mode 3 second half");
}

#[test]
fn bcd_counting() {
    // 8254 control word BCD bit: 4-decade BCD counter; 0 is 10^4 in BCD.
    let mut rig = Rig::new();
    rig.program(0, 0, true);
    rig.write_count(0, 0x0100); // 100 decimal
    rig.at(1);
    assert_eq!(rig.latched_count(0), 0x0100);
    rig.at(2);
    assert_eq!(rig.latched_count(0), 0x0099);
    rig.at(11);
    assert_eq!(rig.latched_count(0), 0x0090);
    rig.at(101);
    assert_eq!(rig.latched_count(0), 0x0000);
    assert!(rig.out(0));
    rig.at(102);
    assert_eq!(rig.latched_count(0), 0x9999, "BCD wraps to 9999");

    rig.program(1, 2, true);
    rig.write_count(1, 0); // 10000 in BCD, during tick 102
    rig.at(103);
    assert_eq!(rig.latched_count(1), 0x0000);
    rig.at(104);
    assert_eq!(rig.latched_count(1), 0x9999);
    rig.at(103 + 10_000 - 1);
    assert_eq!(rig.latched_count(1), 0x0001);
    assert!(!rig.out(1));
    rig.at(103 + 10_000);
    assert!(rig.out(1), "BCD period is 10000");
    assert_eq!(rig.status(1) & 1, 1);
}

#[test]
fn binary_count_zero_means_65536() {
    // 8254: "0 is equivalent to 2^16 for binary counting".
    let mut rig = Rig::new();
    rig.program(0, 2, false);
    rig.write_count(0, 0);
    rig.at(1);
    assert_eq!(rig.latched_count(0), 0);
    rig.at(2);
    assert_eq!(rig.latched_count(0), 0xFFFF);
    assert_eq!(rig.pit.next_deadline_ns(), Some(ticks_to_ns(65_536)));
}

#[test]
fn lsb_only_and_msb_only_access() {
    // 8254 control word RW bits: 01 LSB only, 10 MSB only (the other byte is 0).
    let mut rig = Rig::new();
    rig.outb(PIT_CONTROL_PORT, 0x10); // counter 0, LSB only, mode 0
    rig.outb(PIT_COUNTER0_PORT, 0x80);
    rig.at(1);
    assert_eq!(rig.inb(PIT_COUNTER0_PORT), 0x80);
    assert_eq!(rig.inb(PIT_COUNTER0_PORT), 0x80, "every read is the LSB");
    assert_eq!(rig.pit.counter_info(0).map(|i| i.count), Ok(0x0080));
    rig.outb(PIT_CONTROL_PORT, 0x60); // counter 1, MSB only, mode 0
    rig.outb(PIT_COUNTER1_PORT, 0x02); // count 0x0200, during tick 1
    rig.at(2);
    assert_eq!(rig.inb(PIT_COUNTER1_PORT), 0x02);
    rig.at(3);
    assert_eq!(rig.inb(PIT_COUNTER1_PORT), 0x01, "MSB of 0x01FF");
    assert_eq!(
        rig.pit.counter_info(1).map(|i| i.access),
        Ok(AccessMode::Msb)
    );
}

#[test]
fn read_and_write_flip_flops_are_separate() {
    // 8254 "Read Operations": reads and writes of the same counter may be interleaved:
    // read LSB, write new LSB, read MSB, write new MSB.
    let mut rig = Rig::new();
    rig.program(2, 0, false);
    rig.set_gate2(false); // hold the count still
    rig.write_count(2, 0x1234);
    rig.at(5);
    assert_eq!(rig.inb(PIT_COUNTER2_PORT), 0x34);
    rig.outb(PIT_COUNTER2_PORT, 0x78); // LSB of the new count
                                       // Mode 0: the first byte stops counting; CE still holds 0x1234.
    assert_eq!(
        rig.inb(PIT_COUNTER2_PORT),
        0x12,
        "read flip-flop unaffected by the write"
    );
    rig.outb(PIT_COUNTER2_PORT, 0x56);
    rig.at(6);
    assert_eq!(rig.inb(PIT_COUNTER2_PORT), 0x78);
    assert_eq!(rig.inb(PIT_COUNTER2_PORT), 0x56);
}

#[test]
fn latch_holds_until_read_and_second_latch_is_ignored() {
    // 8254 Counter Latch Command: the count is held until read (or the counter reprogrammed);
    // a second latch before the count is read is ignored.
    let mut rig = Rig::new();
    rig.program(0, 2, false);
    rig.write_count(0, 1000);
    rig.at(101);
    rig.outb(PIT_CONTROL_PORT, 0x00);
    rig.at(301);
    rig.outb(PIT_CONTROL_PORT, 0x00); // ignored
    assert_eq!(rig.inb(PIT_COUNTER0_PORT), (900u16 & 0xFF) as u8);
    rig.at(401);
    assert_eq!(rig.inb(PIT_COUNTER0_PORT), (900u16 >> 8) as u8);
    // Released: reads follow the counter again.
    let live = u16::from_le_bytes([rig.inb(PIT_COUNTER0_PORT), rig.inb(PIT_COUNTER0_PORT)]);
    assert_eq!(live, 600);
    // Reprogramming drops a latched count.
    rig.outb(PIT_CONTROL_PORT, 0x00);
    rig.program(0, 2, false);
    rig.write_count(0, 50);
    rig.at(402);
    assert_eq!(rig.latched_count(0), 50);
}

#[test]
fn read_back_status_and_count() {
    // 8254 Read-Back Command: status byte = OUT, NULL COUNT, RW1 RW0, M2 M1 M0, BCD; if both
    // count and status are latched, the first read returns the status.
    let mut rig = Rig::new();
    rig.program(0, 3, false);
    // After the control word: OUT high (mode 3), NULL COUNT 1, RW 11, mode 011, binary.
    assert_eq!(rig.status(0), 0b1111_0110);
    rig.write_count(0, 8);
    assert_eq!(rig.status(0), 0b1111_0110, "count written, not yet loaded");
    rig.at(1);
    assert_eq!(rig.status(0), 0b1011_0110, "loaded: NULL COUNT 0");
    rig.at(5);
    // Latch count and status of counters 0 and 2: 0b1100_0101 (bits 5 and 4 low).
    rig.outb(PIT_CONTROL_PORT, 0xC0 | 0b1010);
    rig.at(7);
    assert_eq!(
        rig.inb(PIT_COUNTER0_PORT),
        0b0011_0110,
        "status first: OUT low at tick 5"
    );
    assert_eq!(
        rig.inb(PIT_COUNTER0_PORT),
        8,
        "then the count latched at tick 5 (LSB)"
    );
    assert_eq!(rig.inb(PIT_COUNTER0_PORT), 0);
    // Counter 2 in its power-on state: status then count 0.
    assert_eq!(rig.inb(PIT_COUNTER2_PORT), 0b0111_0000);
    assert_eq!(rig.inb(PIT_COUNTER2_PORT), 0);
    // Count-only read-back (bit 4 high) of counter 0.
    rig.outb(PIT_CONTROL_PORT, 0xD0 | 0b0010);
    rig.at(9);
    assert_eq!(rig.inb(PIT_COUNTER0_PORT), 4, "count latched at tick 7");
    // A second status latch before the read is ignored.
    rig.inb(PIT_COUNTER0_PORT);
    rig.outb(PIT_CONTROL_PORT, 0xE2); // status at tick 9: OUT high
    rig.at(13);
    assert!(!rig.out(0));
    rig.outb(PIT_CONTROL_PORT, 0xE2); // ignored (OUT reads low now)
    assert_eq!(rig.inb(PIT_COUNTER0_PORT) & 0x80, 0x80);
}

#[test]
fn port61_gate2_speaker_refresh_and_out2() {
    // IBM PC/AT port 61h: bit 0 GATE2, bit 1 speaker data, bit 4 refresh toggle, bit 5 OUT2.
    let mut rig = Rig::new();
    rig.outb(SYSTEM_CONTROL_PORT_B, 0xF3); // read-only bits are not stored
    assert!(rig.pit.gate2());
    assert!(rig.pit.speaker_data_enabled());
    assert_eq!(rig.inb(SYSTEM_CONTROL_PORT_B) & 0xCF, 0x03);
    assert_eq!(rig.pit.counter_info(2).map(|i| i.gate), Ok(true));
    // The refresh bit toggles every REFRESH_TOGGLE_TICKS input clock ticks.
    let mut toggles = 0;
    let mut last = rig.inb(SYSTEM_CONTROL_PORT_B) & 0x10;
    for tick in 0..(REFRESH_TOGGLE_TICKS * 10) {
        rig.at(tick);
        let bit = rig.inb(SYSTEM_CONTROL_PORT_B) & 0x10;
        let expected = if (tick / REFRESH_TOGGLE_TICKS) % 2 == 1 {
            0x10
        } else {
            0
        };
        assert_eq!(bit, expected, "tick {tick}");
        if bit != last {
            toggles += 1;
            last = bit;
        }
    }
    assert_eq!(toggles, 9);
    // ~15 us per toggle, as PC software expects.
    let period_ns = ticks_to_ns(REFRESH_TOGGLE_TICKS);
    assert!((15_000..15_200).contains(&period_ns));
    // Bit 5 is OUT2.
    rig.program(2, 0, false);
    assert_eq!(rig.inb(SYSTEM_CONTROL_PORT_B) & 0x20, 0);
    rig.program(2, 2, false);
    assert_eq!(rig.inb(SYSTEM_CONTROL_PORT_B) & 0x20, 0x20);
    rig.outb(SYSTEM_CONTROL_PORT_B, 0x00);
    assert!(!rig.pit.gate2());
    assert_eq!(rig.pit.counter_info(2).map(|i| i.gate), Ok(false));
}

#[test]
fn linux_pit_calibrate_tsc_sequence() {
    // Linux arch/x86/kernel/tsc.c pit_calibrate_tsc(): GATE2 high and speaker off, counter 2
    // mode 0 with a 50 ms count (CLOCK_TICK_RATE / 20), then poll port 0x61 bit 5 until OUT2
    // goes high. 8254 Mode 0: OUT rises N+1 pulses after the count is written.
    let mut rig = Rig::new();
    rig.clock.set(123_456_789);
    let value = rig.inb(SYSTEM_CONTROL_PORT_B);
    rig.outb(SYSTEM_CONTROL_PORT_B, (value & !0x02) | 0x01);
    rig.outb(PIT_CONTROL_PORT, 0xB0);
    let latch: u16 = (PIT_CLOCK_HZ / 20) as u16;
    rig.outb(PIT_COUNTER2_PORT, (latch & 0xFF) as u8);
    rig.outb(PIT_COUNTER2_PORT, (latch >> 8) as u8);
    let written_tick = ns_to_ticks(rig.clock.now_ns());
    let expected_high_ns = ticks_to_ns(written_tick + u64::from(latch) + 1);
    let mut polls = 0u64;
    while rig.inb(SYSTEM_CONTROL_PORT_B) & 0x20 == 0 {
        polls += 1;
        assert!(polls < 1_000_000, "OUT2 never went high");
        rig.clock.advance(997); // a poll loop iteration
    }
    let seen = rig.clock.now_ns();
    assert!(seen >= expected_high_ns && seen < expected_high_ns + 997);
    // ~50 ms of polling.
    assert!((49_900_000..50_100_000).contains(&(seen - 123_456_789)));
}

#[test]
fn linux_quick_pit_calibrate_msb_reads_advance_consistently() {
    // Linux quick_pit_calibrate() / pit_verify_msb(): counter 2 mode 0 count 0xffff, then
    // unlatched reads "inb(0x42); msb = inb(0x42)" that must step down 0xff, 0xfe, ... as time
    // passes. 8254 "Read Operations": simple reads of the counter with the read flip-flop.
    let mut rig = Rig::new();
    rig.clock.set(5_000_000);
    let value = rig.inb(SYSTEM_CONTROL_PORT_B);
    rig.outb(SYSTEM_CONTROL_PORT_B, (value & !0x02) | 0x01);
    rig.outb(PIT_CONTROL_PORT, 0xB0);
    rig.outb(PIT_COUNTER2_PORT, 0xFF);
    rig.outb(PIT_COUNTER2_PORT, 0xFF);
    let load_tick = ns_to_ticks(rig.clock.now_ns()) + 1;
    // pit_verify_msb(0): the read that gives the PIT its first CLK edge.
    rig.inb(PIT_COUNTER2_PORT);
    rig.inb(PIT_COUNTER2_PORT);
    let mut last_msb = 0xFFu8;
    let mut msb_changes = 0;
    for _ in 0..20_000 {
        rig.clock.advance(1_000); // each PIO exit costs about a microsecond or more
        let lsb = rig.inb(PIT_COUNTER2_PORT);
        let msb = rig.inb(PIT_COUNTER2_PORT);
        let tick = ns_to_ticks(rig.clock.now_ns());
        let expected = 0xFFFFu64 - (tick - load_tick);
        assert_eq!(u64::from(msb), expected >> 8, "MSB at tick {tick}");
        assert_eq!(u64::from(lsb), (expected & 0xFF), "LSB at tick {tick}");
        assert!(msb <= last_msb, "MSB never goes back up");
        if msb != last_msb {
            assert_eq!(msb, last_msb - 1, "MSB steps by one");
            msb_changes += 1;
        }
        last_msb = msb;
    }
    // 20 ms of reads: ~23864 ticks, ~93 MSB steps.
    assert!((90..=95).contains(&msb_changes), "{msb_changes} MSB steps");
}

#[test]
fn irq0_rate_generator_1khz_edges_and_deadlines() {
    // 8254 Mode 2 with N = 1193 on counter 0 (Linux's periodic PIT setup: 0x34, LATCH):
    // OUT0 low for one pulse at the end of each period; IRQ0 rises when it returns high.
    let mut rig = Rig::new();
    rig.outb(PIT_CONTROL_PORT, 0x34);
    rig.outb(PIT_COUNTER0_PORT, (1193u16 & 0xFF) as u8);
    rig.outb(PIT_COUNTER0_PORT, (1193u16 >> 8) as u8);
    // Control word for mode 2 sets OUT0 high: one edge from programming (as on hardware).
    assert_eq!(rig.irq0.rising_edges(), 1);
    let edges_after_programming = rig.irq0.rising_edges();
    // Loaded at tick 1; low at tick 1 + 1192 = 1193 (999_848 ns), high at 1194.
    assert_eq!(rig.pit.next_deadline_ns(), Some(999_848));
    assert_eq!(rig.pit.next_rising_edge_ns(), Some(ticks_to_ns(1194)));
    assert_eq!(ticks_to_ns(1194), 1_000_686);
    for period in 1..=10_000u64 {
        let fall = rig.pit.next_deadline_ns().expect("periodic");
        assert_eq!(fall, ticks_to_ns(1 + period * 1193 - 1), "fall {period}");
        rig.clock.set(fall);
        rig.pit.update();
        assert!(!rig.irq0.level());
        let rise = rig.pit.next_deadline_ns().expect("periodic");
        assert_eq!(rise, ticks_to_ns(1 + period * 1193), "rise {period}");
        rig.clock.set(rise);
        rig.pit.update();
        assert!(rig.irq0.level());
        assert_eq!(rig.irq0.rising_edges(), edges_after_programming + period);
    }
    // No drift: 10000 periods of 1193 ticks is exactly 11_930_000 ticks.
    assert_eq!(ns_to_ticks(rig.clock.now_ns()), 1 + 11_930_000);
    assert_eq!(rig.clock.now_ns(), ticks_to_ns(1 + 11_930_000));
}

#[test]
fn late_update_still_delivers_one_edge_per_call() {
    // IRQ0 in mode 2: a VMM that wakes up after the one-tick low pulse must still give the
    // PIC a rising edge; many missed periods collapse into one edge; the next is on time.
    let mut rig = Rig::new();
    rig.program(0, 2, false);
    rig.write_count(0, 1193);
    let base = rig.irq0.rising_edges();
    // Wake 20 us after the rising edge of period 1: the low pulse was missed entirely.
    rig.clock.set(ticks_to_ns(1194) + 20_000);
    assert!(
        rig.pit.next_deadline_ns() < Some(rig.clock.now_ns()),
        "overdue"
    );
    rig.pit.update();
    assert_eq!(rig.irq0.rising_edges(), base + 1);
    assert!(rig.irq0.level());
    let next = rig.pit.next_deadline_ns().expect("periodic");
    assert!(next > rig.clock.now_ns());
    assert_eq!(next, ticks_to_ns(1 + 2 * 1193 - 1));
    // Sleep through 50 periods: one edge, not 50.
    rig.clock.set(ticks_to_ns(1 + 52 * 1193) + 5_000);
    rig.pit.update();
    assert_eq!(rig.irq0.rising_edges(), base + 2);
    // The next period is not lost.
    assert_eq!(
        rig.pit.next_rising_edge_ns(),
        Some(ticks_to_ns(1 + 53 * 1193))
    );
    rig.clock.set(ticks_to_ns(1 + 53 * 1193));
    rig.pit.update();
    assert_eq!(rig.irq0.rising_edges(), base + 3);
    // Calling update() again without time passing changes nothing.
    rig.pit.update();
    assert_eq!(rig.irq0.rising_edges(), base + 3);
    // Waking up inside the low tick of the following period: the rising edge of the period
    // before is still delivered, and the line is left low (OUT0 is low now).
    rig.at(1 + 54 * 1193 + 1192);
    assert!(!rig.out(0));
    rig.pit.update();
    assert_eq!(rig.irq0.rising_edges(), base + 4);
    assert!(!rig.irq0.level());
    assert_eq!(rig.pit.next_deadline_ns(), Some(ticks_to_ns(1 + 55 * 1193)));
    rig.at(1 + 55 * 1193);
    rig.pit.update();
    assert_eq!(rig.irq0.rising_edges(), base + 5);
    assert!(rig.irq0.level());
}

#[test]
fn irq0_square_wave_and_late_updates() {
    // 8254 Mode 3 on counter 0: OUT0 high half / low half; IRQ0 follows, one rising edge per
    // period at the start of each high half.
    let mut rig = Rig::new();
    rig.program(0, 3, false);
    let base = rig.irq0.rising_edges();
    rig.write_count(0, 1000); // high 1..=500, low 501..=1000, high from 1001
    assert_eq!(rig.pit.next_deadline_ns(), Some(ticks_to_ns(501)));
    rig.at(501);
    rig.pit.update();
    assert!(!rig.irq0.level());
    assert_eq!(rig.pit.next_deadline_ns(), Some(ticks_to_ns(1001)));
    rig.at(1001);
    rig.pit.update();
    assert_eq!(rig.irq0.rising_edges(), base + 1);
    // Late by a whole period, landing in a high half that the line already shows: glitch.
    rig.at(2100);
    rig.pit.update();
    assert_eq!(rig.irq0.rising_edges(), base + 2);
    assert!(rig.irq0.level());
    // Late into a low half: the line just goes low; the edge comes at the next high half.
    rig.at(2600);
    rig.pit.update();
    assert!(!rig.irq0.level());
    assert_eq!(rig.irq0.rising_edges(), base + 2);
    assert_eq!(rig.pit.next_deadline_ns(), Some(ticks_to_ns(3001)));
}

#[test]
fn irq0_mode0_one_shot() {
    // 8254 Mode 0 on counter 0 (Linux's one-shot clockevent: 0x30, count): one rising edge at
    // terminal count, then nothing.
    let mut rig = Rig::new();
    rig.clock.set(1_000_000);
    rig.outb(PIT_CONTROL_PORT, 0x30);
    rig.write_count(0, 500);
    let written = ns_to_ticks(1_000_000);
    assert!(!rig.irq0.level());
    assert_eq!(rig.pit.next_deadline_ns(), Some(ticks_to_ns(written + 501)));
    assert_eq!(
        rig.pit.next_rising_edge_ns(),
        Some(ticks_to_ns(written + 501))
    );
    rig.clock.set(ticks_to_ns(written + 501) + 123_456_789); // very late
    rig.pit.update();
    assert!(rig.irq0.level());
    assert_eq!(rig.irq0.rising_edges(), 1);
    assert_eq!(rig.pit.next_deadline_ns(), None);
    // Rewriting the count lowers IRQ0 and arms a new shot.
    rig.write_count(0, 10);
    assert!(!rig.irq0.level());
    assert!(rig.pit.next_deadline_ns() > Some(rig.clock.now_ns()));
}

#[test]
fn reset_returns_to_power_on_state() {
    let mut rig = Rig::new();
    rig.program(0, 2, false);
    rig.write_count(0, 100);
    rig.outb(SYSTEM_CONTROL_PORT_B, 0x03);
    rig.at(50);
    rig.pit.reset();
    assert!(!rig.irq0.level());
    assert_eq!(rig.pit.next_deadline_ns(), None);
    assert!(!rig.pit.gate2());
    assert_eq!(rig.status(0), 0b0111_0000);
    let fresh = Pit::new(Arc::new(RecordingLine::new()), rig.clock.clone());
    for i in 0..3 {
        assert_eq!(rig.pit.counter_info(i), fresh.counter_info(i));
    }
}

#[test]
fn wide_and_out_of_range_accesses() {
    // ISA splits wider accesses into byte accesses at consecutive ports.
    let mut rig = Rig::new();
    rig.pit.write_port(PIT_CONTROL_PORT, &[0x34]);
    // A word written at 0x40 gives counter 0 its LSB and counter 1 the other byte.
    rig.pit.write_port(PIT_COUNTER0_PORT, &[0x34, 0x12]);
    assert_eq!(rig.pit.counter_info(0).map(|i| i.null_count), Ok(true));
    rig.pit.write_port(PIT_COUNTER0_PORT, &[0x12]);
    rig.at(1);
    assert_eq!(rig.pit.counter_info(0).map(|i| i.count), Ok(0x1234));
    // A 2-byte read at 0x40 reads counter 0 (LSB) and counter 1 (held count 0).
    let mut word = [0u8; 2];
    rig.pit.read_port(PIT_COUNTER0_PORT, &mut word);
    assert_eq!(word, [0x34, 0x00]);
    // 0x43 is write-only; 0x44 and beyond are not the PIT's.
    let mut four = [0u8; 4];
    rig.pit.read_port(PIT_CONTROL_PORT, &mut four);
    assert_eq!(four, [0xFF; 4]);
    let mut tail = [0u8; 3];
    rig.pit.read_port(0xFFFF, &mut tail);
    assert_eq!(tail, [0xFF; 3]);
    rig.pit.write_port(0xFFFE, &[1, 2, 3, 4]);
    rig.pit.read_port(PIT_COUNTER0_PORT, &mut []);
}

#[test]
fn mut_device_pio_uses_base_plus_offset() {
    let mut rig = Rig::new();
    rig.pit.pio_write(PioAddress(PIT_BASE), 3, &[0xB0]); // counter 2, mode 0
    rig.pit.pio_write(PioAddress(PIT_BASE), 2, &[0x10, 0x00]); // LSB 0x10, then port 0x43
    rig.pit.pio_write(PioAddress(PIT_BASE), 2, &[0x00]);
    rig.pit
        .pio_write(PioAddress(SYSTEM_CONTROL_PORT_B), 0, &[0x01]);
    assert!(rig.pit.gate2());
    // Count 0x10 written during tick 0: OUT2 rises at tick 0x11 (8254 mode 0: N+1).
    rig.at(0x10);
    let mut byte = [0u8];
    rig.pit
        .pio_read(PioAddress(SYSTEM_CONTROL_PORT_B), 0, &mut byte);
    assert_eq!(byte[0] & 0x21, 0x01, "OUT2 still low");
    rig.at(0x11);
    rig.pit
        .pio_read(PioAddress(SYSTEM_CONTROL_PORT_B), 0, &mut byte);
    assert_eq!(byte[0] & 0x21, 0x21);
    rig.pit.pio_read(PioAddress(0xFFFF), 1, &mut byte);
    assert_eq!(byte, [0xFF]);
}

#[test]
fn counter_info_rejects_bad_index() {
    let rig = Rig::new();
    assert_eq!(rig.pit.counter_info(3), Err(Error::NoSuchCounter(3)));
    let message = Error::NoSuchCounter(7).to_string();
    assert!(message.contains("counter 7"), "{message}");
}
