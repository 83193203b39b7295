//! Unit tests against the IA-PC HPET 1.0a specification and QEMU's hpet.c.

use std::sync::{Arc, Mutex};

use vm_device::bus::MmioAddress;
use vm_device::{DeviceMmio, MutDeviceMmio};
use vmkit_hw::{Clock, DeviceTimers, ManualClock, RecordingLine};

use super::*;

type TestHpet = Hpet<Arc<RecordingGsis>, ManualClock>;

fn setup() -> (TestHpet, Arc<RecordingGsis>, ManualClock) {
    let clock = ManualClock::new(1_000_000);
    let gsis = Arc::new(RecordingGsis::new());
    let hpet = Hpet::pc(gsis.clone(), clock.clone());
    (hpet, gsis, clock)
}

fn with_config(config: HpetConfig) -> (TestHpet, Arc<RecordingGsis>, ManualClock) {
    let clock = ManualClock::new(0);
    let gsis = Arc::new(RecordingGsis::new());
    let hpet = Hpet::new(config, gsis.clone(), clock.clone()).unwrap();
    (hpet, gsis, clock)
}

fn w64(h: &mut TestHpet, offset: u64, value: u64) {
    h.write(offset, &value.to_le_bytes());
}

fn w32(h: &mut TestHpet, offset: u64, value: u32) {
    h.write(offset, &value.to_le_bytes());
}

fn r64(h: &mut TestHpet, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    h.read(offset, &mut b);
    u64::from_le_bytes(b)
}

fn r32(h: &mut TestHpet, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    h.read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Sets the clock to `ns` and services the HPET, as the VMM's timer loop does.
fn run_to(h: &mut TestHpet, clock: &ManualClock, ns: u64) {
    clock.set(ns);
    h.update();
}

fn route(gsi: u64) -> u64 {
    gsi << TN_INT_ROUTE_SHIFT
}

#[test]
fn capabilities_are_qemus() {
    let (mut h, _, _) = setup();
    // Vendor 0x8086, LEG_RT_CAP, 64-bit counter, 3 timers (NUM_TIM_CAP = 2), rev 1, 10 ns.
    assert_eq!(r64(&mut h, REG_CAPABILITIES), 0x0098_9680_8086_A201);
    assert_eq!(r32(&mut h, REG_CAPABILITIES), 0x8086_A201);
    assert_eq!(r32(&mut h, REG_PERIOD), HPET_CLK_PERIOD_FS);
    let caps = h.capabilities();
    assert_eq!(caps & 0xFF, 1, "revision 1");
    assert_eq!((caps >> CAP_NUM_TIM_SHIFT) & 0x1F, 2);
    assert_ne!(caps & CAP_COUNT_SIZE, 0);
    assert_ne!(caps & CAP_LEG_RT, 0);
    assert_eq!((caps >> 16) & 0xFFFF, 0x8086);
    // Read-only.
    w64(&mut h, REG_CAPABILITIES, 0);
    assert_eq!(r64(&mut h, REG_CAPABILITIES), 0x0098_9680_8086_A201);

    let (mut h, _, _) = with_config(HpetConfig {
        timers: 5,
        ..HpetConfig::default()
    });
    assert_eq!((r64(&mut h, REG_CAPABILITIES) >> 8) & 0x1F, 4);
    assert_eq!(h.timer_count(), 5);
    assert_ne!(r64(&mut h, timer_config(4)), 0);
    assert_eq!(r64(&mut h, timer_config(5)), 0, "no sixth timer");
}

#[test]
fn timer_count_is_checked() {
    for timers in [0, 2, 33, 255] {
        let err = Hpet::new(
            HpetConfig {
                timers,
                ..HpetConfig::default()
            },
            RecordingGsis::new(),
            ManualClock::new(0),
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::TimerCount {
                timers,
                min: 3,
                max: 32
            }
        );
        assert!(err.to_string().contains(&timers.to_string()));
    }
}

#[test]
fn reset_values() {
    let (mut h, _, _) = setup();
    assert_eq!(r64(&mut h, REG_CONFIG), 0);
    assert_eq!(r64(&mut h, REG_STATUS), 0);
    assert_eq!(r64(&mut h, REG_COUNTER), 0);
    for n in 0..3 {
        // Tn_INT_ROUTE_CAP = GSI 2 (pc), Tn_SIZE_CAP, Tn_PER_INT_CAP; no FSB capability.
        assert_eq!(r64(&mut h, timer_config(n)), 0x0000_0004_0000_0030);
        assert_eq!(r32(&mut h, timer_config(n) + 4), PC_INT_ROUTE_CAP);
        assert_eq!(r64(&mut h, timer_comparator(n)), u64::MAX);
        assert_eq!(r64(&mut h, timer_fsb_route(n)), 0);
    }
    assert_eq!(h.next_deadline_ns(), None);

    let (mut q35, _, _) = with_config(HpetConfig {
        int_route_cap: Q35_INT_ROUTE_CAP,
        fsb: true,
        ..HpetConfig::default()
    });
    assert_eq!(r64(&mut q35, timer_config(1)), 0x00FF_0104_0000_8030);
}

#[test]
fn general_config_has_two_writable_bits() {
    let (mut h, _, _) = setup();
    w64(&mut h, REG_CONFIG, u64::MAX);
    assert_eq!(r64(&mut h, REG_CONFIG), CFG_ENABLE | CFG_LEGACY);
    assert_eq!(r32(&mut h, REG_CONFIG + 4), 0);
    w32(&mut h, REG_CONFIG, 0);
    assert_eq!(r64(&mut h, REG_CONFIG), 0);
}

#[test]
fn counter_runs_only_when_enabled() {
    let (mut h, _, clock) = setup();
    clock.advance(1_000_000);
    assert_eq!(r64(&mut h, REG_COUNTER), 0, "halted after reset");

    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    clock.advance(1_000); // 1 us = 100 ticks at 100 MHz
    assert_eq!(r64(&mut h, REG_COUNTER), 100);
    clock.advance(15);
    assert_eq!(r64(&mut h, REG_COUNTER), 101, "counts whole 10 ns periods");

    w32(&mut h, REG_CONFIG, 0);
    clock.advance(1_000_000);
    assert_eq!(r64(&mut h, REG_COUNTER), 101, "halted: holds its value");

    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    clock.advance(500);
    assert_eq!(
        r64(&mut h, REG_COUNTER),
        151,
        "restarts from the held value"
    );
    assert_eq!(h.counter(), 151);
}

#[test]
fn counter_writable_only_while_halted() {
    let (mut h, _, clock) = setup();
    w32(&mut h, REG_COUNTER, 0xDEAD_BEEF);
    w32(&mut h, REG_COUNTER + 4, 0x1234_5678);
    assert_eq!(r64(&mut h, REG_COUNTER), 0x1234_5678_DEAD_BEEF);
    assert_eq!(r32(&mut h, REG_COUNTER + 4), 0x1234_5678);
    w64(&mut h, REG_COUNTER, 0x10);
    assert_eq!(r64(&mut h, REG_COUNTER), 0x10);

    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    clock.advance(100);
    w64(&mut h, REG_COUNTER, 0xFFFF);
    w32(&mut h, REG_COUNTER + 4, 7);
    assert_eq!(
        r64(&mut h, REG_COUNTER),
        0x10 + 10,
        "writes while running ignored"
    );
    w32(&mut h, REG_CONFIG, 0);
    assert_eq!(
        r64(&mut h, REG_COUNTER),
        0x1A,
        "and not applied when halting"
    );
}

#[test]
fn comparator_match_raises_the_routed_line_at_the_right_time() {
    let (mut h, gsis, clock) = setup();
    let start = clock.now_ns();
    w64(
        &mut h,
        timer_config(2),
        TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(2),
    );
    w64(&mut h, timer_comparator(2), 5_000);
    assert_eq!(h.next_deadline_ns(), None, "halted: nothing armed");
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    assert_eq!(h.next_deadline_ns(), Some(start + 50_000));

    run_to(&mut h, &clock, start + 49_999);
    assert!(!gsis.level(2));
    assert_eq!(r64(&mut h, REG_STATUS), 0);
    run_to(&mut h, &clock, start + 50_000);
    assert!(gsis.level(2));
    assert_eq!(r64(&mut h, REG_STATUS), 1 << 2);
    assert_eq!(r64(&mut h, REG_COUNTER), 5_000);
    assert_eq!(h.next_deadline_ns(), None, "one-shot");
    assert_eq!(h.timer_info(2).unwrap().gsi, Some(2));
}

#[test]
fn status_is_write_one_to_clear() {
    let (mut h, gsis, clock) = setup();
    for n in 0..2 {
        w64(
            &mut h,
            timer_config(n),
            TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(2 + n),
        );
        w64(&mut h, timer_comparator(n), 10);
    }
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    run_to(&mut h, &clock, clock.now_ns() + 100);
    assert_eq!(r64(&mut h, REG_STATUS), 0b11);
    assert!(gsis.level(2) && gsis.level(3));

    w64(&mut h, REG_STATUS, 0);
    assert_eq!(r64(&mut h, REG_STATUS), 0b11, "writing 0 has no effect");
    w32(&mut h, REG_STATUS + 4, u32::MAX);
    assert_eq!(r64(&mut h, REG_STATUS), 0b11, "high half is reserved");
    w32(&mut h, REG_STATUS, 0b10);
    assert_eq!(r64(&mut h, REG_STATUS), 0b01);
    assert!(gsis.level(2) && !gsis.level(3));
    w64(&mut h, REG_STATUS, u64::MAX);
    assert_eq!(r64(&mut h, REG_STATUS), 0);
    assert_eq!(gsis.levels(), 0);
}

#[test]
fn periodic_timer_rearms_and_accumulates() {
    let (mut h, gsis, clock) = setup();
    let start = clock.now_ns();
    // Periodic, edge, VAL_SET: the first write sets comparator and period.
    w64(
        &mut h,
        timer_config(0),
        TN_PERIODIC | TN_VAL_SET | TN_INT_ENABLE | route(2),
    );
    w64(&mut h, timer_comparator(0), 1_000);
    assert_eq!(
        r64(&mut h, timer_config(0)) & TN_VAL_SET,
        0,
        "VAL_SET clears itself"
    );
    // Without VAL_SET a write only changes the period (spec 2.3.9.2.2).
    w64(&mut h, timer_comparator(0), 2_000);
    assert_eq!(r64(&mut h, timer_comparator(0)), 1_000);
    assert_eq!(h.timer_info(0).unwrap().period, 2_000);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);

    let mut expected = Vec::new();
    for k in 0..4u64 {
        let due = start + (1_000 + 2_000 * k) * 10;
        assert_eq!(h.next_deadline_ns(), Some(due));
        run_to(&mut h, &clock, due);
        expected.push(due);
        assert_eq!(gsis.rising_edges(2), k + 1);
        assert_eq!(r64(&mut h, timer_comparator(0)), 1_000 + 2_000 * (k + 1));
    }
    assert!(!gsis.level(2), "edge: pulses only");
    assert_eq!(r64(&mut h, REG_STATUS), 0, "edge timers set no status");

    // Serviced 3.5 periods late: one interrupt, missed periods skipped, next on the grid.
    let late = start + (9_000 + 7_000) * 10;
    run_to(&mut h, &clock, late);
    assert_eq!(gsis.rising_edges(2), 5);
    assert_eq!(r64(&mut h, timer_comparator(0)), 17_000);
    assert_eq!(h.next_deadline_ns(), Some(start + 170_000));
}

#[test]
fn periodic_expiries_are_at_least_a_microsecond_apart() {
    let (mut h, gsis, clock) = setup();
    w64(
        &mut h,
        timer_config(0),
        TN_PERIODIC | TN_VAL_SET | TN_INT_ENABLE | route(2),
    );
    w64(&mut h, timer_comparator(0), 1); // every 10 ns: QEMU clamps to 1 us
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    let mut last = None::<u64>;
    for _ in 0..5 {
        let d = h.next_deadline_ns().unwrap();
        if let Some(l) = last {
            assert!(d >= l + MIN_PERIODIC_NS, "{d} after {l}");
        }
        last = Some(d);
        run_to(&mut h, &clock, d);
    }
    assert_eq!(gsis.rising_edges(2), 5);
}

#[test]
fn thirty_two_bit_mode_truncates() {
    let (mut h, _, _) = setup();
    w64(&mut h, timer_comparator(1), 0x1234_5678_9ABC_DEF0);
    assert_eq!(r64(&mut h, timer_comparator(1)), 0x1234_5678_9ABC_DEF0);
    // Setting Tn_32MODE_CNF truncates the comparator.
    w64(&mut h, timer_config(1), TN_32BIT);
    assert_eq!(r64(&mut h, timer_comparator(1)), 0x9ABC_DEF0);
    // A 64-bit write keeps only the low half; a write of the high half is ignored.
    w64(&mut h, timer_comparator(1), 0xFFFF_FFFF_0000_0042);
    assert_eq!(r64(&mut h, timer_comparator(1)), 0x42);
    w32(&mut h, timer_comparator(1) + 4, 0x55);
    assert_eq!(r64(&mut h, timer_comparator(1)), 0x42);
    // 64-bit mode again: both halves writable.
    w64(&mut h, timer_config(1), 0);
    w32(&mut h, timer_comparator(1) + 4, 0x55);
    assert_eq!(r64(&mut h, timer_comparator(1)), 0x55_0000_0042);
}

#[test]
fn thirty_two_bit_one_shot_interrupts_at_the_wrap_and_at_the_match() {
    let (mut h, gsis, clock) = setup();
    let start = clock.now_ns();
    w64(&mut h, REG_COUNTER, 0xFFFF_FF00);
    w64(&mut h, timer_config(0), TN_32BIT | TN_INT_ENABLE | route(2));
    w64(&mut h, timer_comparator(0), 0x100);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    // First the wrap of the low 32 bits (0x100 ticks away)...
    assert_eq!(h.next_deadline_ns(), Some(start + 0x100 * 10));
    run_to(&mut h, &clock, start + 0x100 * 10);
    assert_eq!(gsis.rising_edges(2), 1);
    assert_eq!(
        r64(&mut h, REG_COUNTER),
        0x1_0000_0000,
        "the counter is 64-bit"
    );
    // ...then the match.
    assert_eq!(h.next_deadline_ns(), Some(start + 0x200 * 10));
    run_to(&mut h, &clock, start + 0x200 * 10);
    assert_eq!(gsis.rising_edges(2), 2);
    assert_eq!(h.next_deadline_ns(), None);
}

#[test]
fn thirty_two_bit_wrap_and_match_both_delivered_when_serviced_late() {
    let (mut h, gsis, clock) = setup();
    let start = clock.now_ns();
    w64(&mut h, REG_COUNTER, 0xFFFF_FF00);
    w64(
        &mut h,
        timer_config(0),
        TN_32BIT | TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(2),
    );
    w64(&mut h, timer_comparator(0), 0x100);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    run_to(&mut h, &clock, start + 0x1000 * 10);
    assert!(gsis.level(2));
    assert_eq!(h.next_deadline_ns(), None);
}

#[test]
fn thirty_two_bit_periodic_has_no_wrap_interrupt() {
    let (mut h, gsis, clock) = setup();
    let start = clock.now_ns();
    w64(&mut h, REG_COUNTER, 0xFFFF_FF00);
    w64(
        &mut h,
        timer_config(0),
        TN_32BIT | TN_PERIODIC | TN_VAL_SET | TN_INT_ENABLE | route(2),
    );
    w64(&mut h, timer_comparator(0), 0xFFFF_FF80);
    w64(&mut h, timer_comparator(0), 0x100);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    assert_eq!(h.next_deadline_ns(), Some(start + 0x80 * 10));
    run_to(&mut h, &clock, start + 0x80 * 10);
    // The comparator wraps with the timer's 32 bits: 0xFFFFFF80 + 0x100 = 0x80.
    assert_eq!(r64(&mut h, timer_comparator(0)), 0x80);
    assert_eq!(h.next_deadline_ns(), Some(start + 0x180 * 10));
    run_to(&mut h, &clock, start + 0x180 * 10);
    assert_eq!(gsis.rising_edges(2), 2);
}

#[test]
fn legacy_route_sends_timers_0_and_1_to_gsi_2_and_8() {
    let (mut h, gsis, clock) = setup();
    let start = clock.now_ns();
    // Route fields point elsewhere; LEG_RT_CNF overrides them for timers 0 and 1 only.
    for (n, gsi) in [(0u64, 5u64), (1, 6), (2, 7)] {
        w64(
            &mut h,
            timer_config(n),
            TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(gsi),
        );
        w64(&mut h, timer_comparator(n), 100 * (n + 1));
    }
    assert!(h.pit_enabled());
    w32(&mut h, REG_CONFIG, (CFG_ENABLE | CFG_LEGACY) as u32);
    assert!(h.legacy_replacement() && !h.pit_enabled());
    assert_eq!(gsis.legacy_changes(), [true]);
    run_to(&mut h, &clock, start + 1_000);
    assert_eq!(gsis.levels(), 1 << 2);
    run_to(&mut h, &clock, start + 2_000);
    assert_eq!(gsis.levels(), (1 << 2) | (1 << 8));
    run_to(&mut h, &clock, start + 3_000);
    assert_eq!(gsis.levels(), (1 << 2) | (1 << 8) | (1 << 7));
    assert_eq!(h.timer_info(0).unwrap().gsi, Some(LEGACY_TIMER0_GSI));
    assert_eq!(h.timer_info(1).unwrap().gsi, Some(LEGACY_TIMER1_GSI));

    // Leaving legacy mode moves the asserted lines to the programmed routes.
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    assert_eq!(gsis.levels(), (1 << 5) | (1 << 6) | (1 << 7));
    assert_eq!(gsis.legacy_changes(), [true, false]);
}

#[test]
fn edge_timers_pulse_and_level_timers_hold() {
    let (mut h, gsis, clock) = setup();
    let start = clock.now_ns();
    w64(&mut h, timer_config(0), TN_INT_ENABLE | route(3));
    w64(&mut h, timer_comparator(0), 10);
    w64(
        &mut h,
        timer_config(1),
        TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(4),
    );
    w64(&mut h, timer_comparator(1), 10);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    run_to(&mut h, &clock, start + 100);
    assert_eq!(gsis.rising_edges(3), 1);
    assert!(!gsis.level(3), "edge: back low");
    assert!(gsis.level(4), "level: held until the status bit is cleared");
    assert_eq!(r64(&mut h, REG_STATUS), 0b10);

    // Switching a fired level timer to edge drops its status bit and its line.
    w64(&mut h, timer_config(1), TN_INT_ENABLE | route(4));
    assert_eq!(r64(&mut h, REG_STATUS), 0);
    assert!(!gsis.level(4));
}

#[test]
fn disabled_interrupt_still_sets_level_status() {
    let (mut h, gsis, clock) = setup();
    let start = clock.now_ns();
    // Level timer 0 with Tn_INT_ENB_CNF clear; edge timer 1 with it clear.
    w64(&mut h, timer_config(0), TN_INT_TYPE_LEVEL | route(2));
    w64(&mut h, timer_comparator(0), 10);
    w64(&mut h, timer_config(1), route(3));
    w64(&mut h, timer_comparator(1), 10);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    run_to(&mut h, &clock, start + 100);
    assert_eq!(
        r64(&mut h, REG_STATUS),
        0b01,
        "status set, spec 2.3.9 Tn_INT_ENB_CNF"
    );
    assert_eq!(gsis.levels(), 0);
    assert_eq!(gsis.rising_edges(2) + gsis.rising_edges(3), 0);

    // Enabling the interrupt with the status bit set asserts the line (QEMU too).
    w64(
        &mut h,
        timer_config(0),
        TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(2),
    );
    assert!(gsis.level(2));
    // And clearing the enable deasserts it, status kept.
    w64(&mut h, timer_config(0), TN_INT_TYPE_LEVEL | route(2));
    assert!(!gsis.level(2));
    assert_eq!(r64(&mut h, REG_STATUS), 0b01);
}

#[test]
fn halting_the_hpet_lowers_lines_but_keeps_status() {
    let (mut h, gsis, clock) = setup();
    w64(
        &mut h,
        timer_config(2),
        TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(2),
    );
    w64(&mut h, timer_comparator(2), 1);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    run_to(&mut h, &clock, clock.now_ns() + 10);
    assert!(gsis.level(2));
    w32(&mut h, REG_CONFIG, 0);
    assert!(!gsis.level(2));
    assert_eq!(r64(&mut h, REG_STATUS), 0b100);
    assert_eq!(h.next_deadline_ns(), None);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    assert!(gsis.level(2), "re-enabled with the status bit set");
}

#[test]
fn level_timers_sharing_a_gsi_are_wired_or() {
    let (mut h, gsis, clock) = setup();
    for n in 0..2 {
        w64(
            &mut h,
            timer_config(n),
            TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(2),
        );
        w64(&mut h, timer_comparator(n), 1);
    }
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    run_to(&mut h, &clock, clock.now_ns() + 10);
    w32(&mut h, REG_STATUS, 0b01);
    assert!(gsis.level(2), "timer 1 still asserts GSI 2");
    w32(&mut h, REG_STATUS, 0b10);
    assert!(!gsis.level(2));
}

#[test]
fn past_64_bit_comparator_waits_for_the_counter_to_wrap() {
    let (mut h, gsis, clock) = setup();
    w64(&mut h, REG_COUNTER, 1_000);
    w64(&mut h, timer_config(0), TN_INT_ENABLE | route(2));
    w64(&mut h, timer_comparator(0), 999);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    // 2^64 - 1 ticks away: beyond the clock's range.
    assert_eq!(h.next_deadline_ns(), None);
    run_to(&mut h, &clock, clock.now_ns() + 1_000_000);
    assert_eq!(gsis.rising_edges(2), 0);
    // A comparator equal to the counter matches at once.
    let now_ticks = h.counter();
    w64(&mut h, timer_comparator(0), now_ticks);
    assert_eq!(h.next_deadline_ns(), Some(clock.now_ns()));
    h.update();
    assert_eq!(gsis.rising_edges(2), 1);
}

#[test]
fn sixty_four_bit_counter_wraps() {
    let (mut h, gsis, clock) = setup();
    let start = clock.now_ns();
    w64(&mut h, REG_COUNTER, u64::MAX - 9);
    assert_eq!(r64(&mut h, REG_COUNTER), u64::MAX - 9);
    w64(&mut h, timer_config(0), TN_INT_ENABLE | route(2));
    w64(&mut h, timer_comparator(0), 5);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    assert_eq!(h.timer_info(0).unwrap().deadline_ns, Some(start + 15 * 10));
    // Timers 1 and 2 keep their reset comparator, all ones: they match 9 ticks from now.
    assert_eq!(h.next_deadline_ns(), Some(start + 9 * 10));
    run_to(&mut h, &clock, start + 150);
    assert_eq!(r64(&mut h, REG_COUNTER), 5);
    assert_eq!(gsis.rising_edges(2), 1);
}

#[test]
fn other_widths_and_unaligned_accesses_are_dropped() {
    let (mut h, _, _) = setup();
    for len in [1usize, 2, 3, 5, 7, 16] {
        let mut buf = vec![0xAAu8; len];
        h.read(REG_CAPABILITIES, &mut buf);
        assert!(buf.iter().all(|&b| b == 0), "{len}-byte read");
        h.write(REG_CONFIG, &vec![0xFF; len]);
        assert_eq!(r64(&mut h, REG_CONFIG), 0, "{len}-byte write");
    }
    let mut b4 = [0xAAu8; 4];
    h.read(REG_CAPABILITIES + 2, &mut b4);
    assert_eq!(b4, [0; 4], "unaligned 4-byte");
    let mut b8 = [0xAAu8; 8];
    h.read(REG_PERIOD, &mut b8);
    assert_eq!(b8, [0; 8], "8-byte at +4 is unaligned");
    h.write(REG_CONFIG + 2, &[0xFF; 4]);
    assert_eq!(r64(&mut h, REG_CONFIG), 0);
    // Outside the window, reserved offsets and missing timers read 0.
    for offset in [
        HPET_LEN,
        u64::MAX - 7,
        0x008,
        0x030,
        0x0F8,
        timer_config(3),
        timer_config(0) + 0x18,
    ] {
        assert_eq!(r64(&mut h, offset), 0, "offset {offset:#x}");
    }
    w64(&mut h, timer_config(3), u64::MAX); // ignored, no panic
}

#[test]
fn fsb_delivery_only_with_the_capability() {
    let (mut h, gsis, clock) = setup();
    w64(
        &mut h,
        timer_config(0),
        TN_FSB_ENABLE | TN_INT_ENABLE | route(2),
    );
    assert_eq!(
        r64(&mut h, timer_config(0)) & TN_FSB_ENABLE,
        0,
        "no FSB cap on pc"
    );
    w64(&mut h, timer_fsb_route(0), 0xFEE0_0000_0000_0041);
    assert_eq!(r64(&mut h, timer_fsb_route(0)), 0xFEE0_0000_0000_0041);
    w64(&mut h, timer_comparator(0), 1);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    run_to(&mut h, &clock, clock.now_ns() + 10);
    assert!(gsis.fsb_writes().is_empty());
    assert_eq!(gsis.rising_edges(2), 1);

    let (mut h, gsis, clock) = with_config(HpetConfig {
        fsb: true,
        ..HpetConfig::default()
    });
    w64(
        &mut h,
        timer_config(0),
        TN_FSB_ENABLE | TN_INT_TYPE_LEVEL | TN_INT_ENABLE,
    );
    assert_ne!(r64(&mut h, timer_config(0)) & TN_FSB_ENABLE, 0);
    w32(&mut h, timer_fsb_route(0), 0x41);
    w32(&mut h, timer_fsb_route(0) + 4, 0xFEE0_0000);
    w64(&mut h, timer_comparator(0), 1);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    run_to(&mut h, &clock, clock.now_ns() + 10);
    assert_eq!(gsis.fsb_writes(), [(0xFEE0_0000, 0x41)]);
    assert_eq!(gsis.levels(), 0, "no line with FSB delivery");
    assert_eq!(h.timer_info(0).unwrap().gsi, None);
}

#[test]
fn reset_lowers_lines_and_restores_defaults() {
    let (mut h, gsis, clock) = setup();
    w64(
        &mut h,
        timer_config(0),
        TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(2),
    );
    w64(&mut h, timer_comparator(0), 1);
    w32(&mut h, REG_CONFIG, (CFG_ENABLE | CFG_LEGACY) as u32);
    run_to(&mut h, &clock, clock.now_ns() + 10);
    assert!(gsis.level(2));
    h.reset();
    assert_eq!(gsis.levels(), 0);
    assert_eq!(gsis.legacy_changes(), [true, false]);
    assert_eq!(r64(&mut h, REG_STATUS), 0);
    assert_eq!(r64(&mut h, REG_CONFIG), 0);
    assert_eq!(r64(&mut h, timer_config(0)), 0x0000_0004_0000_0030);
    assert_eq!(h.next_deadline_ns(), None);
}

#[test]
fn state_round_trip_keeps_counter_and_remaining_time() {
    let (mut h, gsis, clock) = setup();
    let start = clock.now_ns();
    w64(
        &mut h,
        timer_config(0),
        TN_PERIODIC | TN_VAL_SET | TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(2),
    );
    w64(&mut h, timer_comparator(0), 100);
    w32(&mut h, REG_CONFIG, CFG_ENABLE as u32);
    run_to(&mut h, &clock, start + 1_000);
    assert!(gsis.level(2));
    clock.advance(300); // 70 ticks before the next match
    let state = h.state();
    assert_eq!(state.version, HPET_STATE_VERSION);
    assert_eq!(state.counter, 130);
    assert_eq!(state.timers[0].remaining_ns, Some(700));

    // Restore on a clock with another origin.
    let clock2 = ManualClock::new(77_777);
    let gsis2 = Arc::new(RecordingGsis::new());
    let mut h2 =
        Hpet::from_state(HpetConfig::default(), &state, gsis2.clone(), clock2.clone()).unwrap();
    assert!(gsis2.level(2), "restored line level");
    assert_eq!(r64(&mut h2, REG_COUNTER), 130);
    assert_eq!(r64(&mut h2, timer_comparator(0)), 200);
    assert_eq!(h2.next_deadline_ns(), Some(77_777 + 700));
    assert_eq!(h2.state(), state);

    let mut bad = state.clone();
    bad.version = 9;
    assert_eq!(
        Hpet::from_state(
            HpetConfig::default(),
            &bad,
            RecordingGsis::new(),
            clock2.clone()
        )
        .unwrap_err(),
        Error::StateVersion {
            found: 9,
            supported: HPET_STATE_VERSION
        }
    );
    let four = HpetConfig {
        timers: 4,
        ..HpetConfig::default()
    };
    assert_eq!(
        Hpet::from_state(four, &state, RecordingGsis::new(), clock2).unwrap_err(),
        Error::StateTimerCount {
            state: 3,
            device: 4
        }
    );
}

#[test]
fn timer_info_checks_the_index() {
    let (h, _, _) = setup();
    assert_eq!(
        h.timer_info(3).unwrap_err(),
        Error::NoSuchTimer {
            index: 3,
            timers: 3
        }
    );
    let info = h.timer_info(0).unwrap();
    assert_eq!(info.comparator, u64::MAX);
    assert_eq!(info.gsi, Some(0));
}

#[test]
fn mmio_trait_and_timed_adapter_report_deadlines() {
    let clock = ManualClock::new(0);
    let gsis = Arc::new(RecordingGsis::new());
    let hpet = Arc::new(Mutex::new(Hpet::pc(gsis.clone(), clock.clone())));
    let timers = DeviceTimers::new(Arc::new(clock.clone()));
    let armed = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&armed);
    timers.set_notifier(Arc::new(move |t| log.lock().unwrap().push(t)));
    timers.register("hpet", hpet.clone());
    let mmio = TimedMmio::new(hpet.clone(), timers.clone());
    let base = MmioAddress(HPET_BASE);

    mmio.mmio_write(
        base,
        timer_config(0),
        &(TN_INT_TYPE_LEVEL | TN_INT_ENABLE | route(2)).to_le_bytes(),
    );
    mmio.mmio_write(base, timer_comparator(0), &500u64.to_le_bytes());
    assert!(armed.lock().unwrap().is_empty(), "halted: no deadline");
    mmio.mmio_write(base, REG_CONFIG, &1u32.to_le_bytes());
    assert_eq!(*armed.lock().unwrap(), [5_000]);

    clock.set(5_000);
    assert_eq!(timers.service(), None);
    assert!(gsis.level(2));
    let mut status = [0u8; 4];
    mmio.mmio_read(base, REG_STATUS, &mut status);
    assert_eq!(u32::from_le_bytes(status), 1);

    // The MutDeviceMmio impl takes offsets relative to the base.
    let mut caps = [0u8; 8];
    hpet.lock().unwrap().mmio_read(base, 0, &mut caps);
    assert_eq!(u64::from_le_bytes(caps), 0x0098_9680_8086_A201);
}

#[test]
fn gsi_lines_adapter() {
    let line = Arc::new(RecordingLine::new());
    let lines = GsiLines::new().with(2, line.clone()).unwrap();
    assert_eq!(
        GsiLines::new().with(32, line.clone()).unwrap_err(),
        Error::GsiOutOfRange { gsi: 32, max: 31 }
    );
    let clock = ManualClock::new(0);
    let mut h = Hpet::pc(lines, clock.clone());
    h.write(timer_config(0), &(TN_INT_ENABLE | route(2)).to_le_bytes());
    h.write(timer_comparator(0), &1u64.to_le_bytes());
    h.write(timer_config(1), &(TN_INT_ENABLE | route(9)).to_le_bytes()); // unconnected
    h.write(timer_comparator(1), &1u64.to_le_bytes());
    h.write(REG_CONFIG, &1u32.to_le_bytes());
    clock.set(10);
    h.update();
    assert_eq!(line.rising_edges(), 1);
    assert!(!line.level());
    assert!(format!("{:?}", h.irq()).contains('2'));
}
