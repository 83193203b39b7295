//! Property tests: no panic on any access sequence, and invariants that must always hold.

use std::sync::Arc;

use proptest::prelude::*;
use vmkit_hpet::*;
use vmkit_hw::{Clock, ManualClock};

type TestHpet = Hpet<Arc<RecordingGsis>, ManualClock>;

#[derive(Debug, Clone)]
enum Op {
    Read {
        offset: u64,
        len: usize,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    Advance(u64),
    /// What a driver does: timer `n` enabled with `bits` (level, periodic, 32-bit, route),
    /// comparator `delta` ticks ahead, HPET enabled (legacy route or not).
    Program {
        n: u64,
        bits: u64,
        delta: u64,
        legacy: bool,
    },
    Update,
    Reset,
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        // Registers that exist, at their two halves.
        6 => (prop::sample::select(vec![
            REG_CAPABILITIES, REG_CONFIG, REG_STATUS, REG_COUNTER,
            timer_config(0), timer_comparator(0), timer_fsb_route(0),
            timer_config(1), timer_comparator(1), timer_config(2), timer_comparator(2),
            timer_fsb_route(2),
        ]), prop::bool::ANY).prop_map(|(o, hi)| o + if hi { 4 } else { 0 }),
        2 => 0u64..0x400,
        1 => any::<u64>(),
    ]
}

fn value_bytes(len: usize, value: u64) -> Vec<u8> {
    let mut v = value.to_le_bytes().to_vec();
    v.resize(len, 0xA5);
    v
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![4 => Just(4usize), 4 => Just(8usize), 1 => Just(1usize), 1 => Just(2usize), 1 => 0usize..=16];
    prop_oneof![
        4 => (offset(), len.clone()).prop_map(|(offset, len)| Op::Read { offset, len }),
        4 => (offset(), len, prop_oneof![0u64..0x4000, 0u64..16, any::<u64>()])
            .prop_map(|(offset, len, value)| Op::Write { offset, data: value_bytes(len, value) }),
        // Timer configurations that make things happen: level/edge, enable, periodic,
        // VAL_SET, 32-bit, a route 0..31.
        3 => (0u64..3, any::<u64>()).prop_map(|(n, bits)| Op::Write {
            offset: timer_config(n),
            data: (bits & (TN_CONFIG_WRITE_MASK)).to_le_bytes().to_vec(),
        }),
        3 => (0u64..3, 0u64..5_000).prop_map(|(n, v)| Op::Write {
            offset: timer_comparator(n),
            data: v.to_le_bytes().to_vec(),
        }),
        3 => (0u64..3, any::<u64>(), 1u64..20_000, any::<bool>()).prop_map(|(n, bits, delta, legacy)| Op::Program { n, bits, delta, legacy }),
        2 => (0u64..4).prop_map(|cfg| Op::Write { offset: REG_CONFIG, data: cfg.to_le_bytes().to_vec() }),
        4 => prop_oneof![0u64..100, 0u64..100_000, 0u64..100_000_000].prop_map(Op::Advance),
        3 => Just(Op::Update),
        1 => Just(Op::Reset),
    ]
}

fn r64(h: &mut TestHpet, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    h.read(offset, &mut b);
    u64::from_le_bytes(b)
}

/// Does a write of `len` bytes at `offset` touch `[reg, reg + 8)`?
fn touches(offset: u64, len: usize, reg: u64) -> bool {
    offset < reg + 8 && offset.saturating_add(len as u64) > reg
}

/// The GSI levels the registers imply: a level timer with its status bit, its interrupt
/// and the HPET enabled, without FSB delivery, asserts its route.
fn expected_levels(h: &mut TestHpet) -> u32 {
    let config = r64(h, REG_CONFIG);
    let status = r64(h, REG_STATUS);
    let mut levels = 0u32;
    if config & CFG_ENABLE == 0 {
        return 0;
    }
    for n in 0..3u64 {
        let tc = r64(h, timer_config(n));
        let asserted = tc & TN_INT_TYPE_LEVEL != 0
            && tc & TN_INT_ENABLE != 0
            && tc & TN_FSB_ENABLE == 0
            && status & (1 << n) != 0;
        if asserted {
            let gsi = if n <= 1 && config & CFG_LEGACY != 0 {
                [LEGACY_TIMER0_GSI, LEGACY_TIMER1_GSI][n as usize]
            } else {
                ((tc & TN_INT_ROUTE_MASK) >> TN_INT_ROUTE_SHIFT) as u32
            };
            levels |= 1 << gsi;
        }
    }
    levels
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn random_accesses_keep_the_invariants(ops in prop::collection::vec(op(), 1..80)) {
        let clock = ManualClock::new(12_345);
        let gsis = Arc::new(RecordingGsis::new());
        let mut h: TestHpet = Hpet::pc(gsis.clone(), clock.clone());
        // (clock ns, counter) of the last counter reading while enabled, if still comparable.
        let mut last_read: Option<(u64, u64)> = None;

        for op in ops {
            match op {
                Op::Read { offset, len } => {
                    let mut buf = vec![0x5Au8; len];
                    h.read(offset, &mut buf);
                    let decoded = (len == 4 || len == 8) && offset % len as u64 == 0 && offset < HPET_LEN;
                    if !decoded {
                        prop_assert!(buf.iter().all(|&b| b == 0), "undecoded read not zero");
                    }
                }
                Op::Write { offset, data } => {
                    let len = data.len();
                    h.write(offset, &data);
                    if touches(offset, len, REG_CONFIG) || touches(offset, len, REG_COUNTER) {
                        last_read = None;
                    }
                }
                Op::Advance(ns) => clock.advance(ns),
                Op::Program { n, bits, delta, legacy } => {
                    let config = TN_INT_ENABLE | TN_VAL_SET
                        | (bits & (TN_INT_TYPE_LEVEL | TN_PERIODIC | TN_32BIT | TN_INT_ROUTE_MASK));
                    h.write(timer_config(n), &config.to_le_bytes());
                    let target = h.counter().wrapping_add(delta);
                    h.write(timer_comparator(n), &target.to_le_bytes());
                    if config & TN_PERIODIC != 0 {
                        h.write(timer_comparator(n), &delta.to_le_bytes()); // the period
                    }
                    let general = CFG_ENABLE | if legacy { CFG_LEGACY } else { 0 };
                    h.write(REG_CONFIG, &general.to_le_bytes());
                    last_read = None;
                }
                Op::Update => {
                    h.update();
                    let now = clock.now_ns();
                    prop_assert!(h.next_deadline_ns().is_none_or(|d| d > now),
                        "a deadline at or before now survived update()");
                }
                Op::Reset => {
                    h.reset();
                    last_read = None;
                    prop_assert_eq!(gsis.levels(), 0);
                }
            }

            // Capabilities never change.
            prop_assert_eq!(r64(&mut h, REG_CAPABILITIES), 0x0098_9680_8086_A201);
            // Status bits only for existing, level-triggered timers.
            let status = r64(&mut h, REG_STATUS);
            prop_assert_eq!(status & !0b111, 0);
            for n in 0..3u64 {
                if status & (1 << n) != 0 {
                    prop_assert!(r64(&mut h, timer_config(n)) & TN_INT_TYPE_LEVEL != 0,
                        "status bit {} set for an edge timer", n);
                }
                let tc = r64(&mut h, timer_config(n));
                // Capability bits are read-only; no FSB on pc.
                prop_assert_eq!(tc >> 32, u64::from(PC_INT_ROUTE_CAP));
                prop_assert_eq!(tc & (TN_PERIODIC_CAP | TN_SIZE_CAP | TN_FSB_CAP | TN_FSB_ENABLE),
                    TN_PERIODIC_CAP | TN_SIZE_CAP);
                if tc & TN_32BIT != 0 {
                    prop_assert_eq!(r64(&mut h, timer_comparator(n)) >> 32, 0);
                }
            }
            // The lines are what the registers say.
            prop_assert_eq!(gsis.levels(), expected_levels(&mut h));
            // Counter: follows the clock at 100 MHz while enabled, frozen while halted.
            let now = clock.now_ns();
            let counter = r64(&mut h, REG_COUNTER);
            let enabled = r64(&mut h, REG_CONFIG) & CFG_ENABLE != 0;
            if let Some((then, before)) = last_read {
                let delta = counter.wrapping_sub(before);
                if enabled {
                    let elapsed = (now - then) / HPET_CLK_PERIOD_NS;
                    prop_assert!(delta == elapsed || delta == elapsed + 1,
                        "counter moved {} in {} ticks", delta, elapsed);
                } else {
                    prop_assert_eq!(delta, 0, "halted counter moved");
                }
            }
            last_read = Some((now, counter));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A periodic timer serviced at its deadlines interrupts once per period, on the
    /// period grid, in 64- and 32-bit mode, from any counter start (wraps included).
    #[test]
    fn periodic_timer_is_on_the_grid(
        start in prop_oneof![any::<u64>(), 0u64..1_000, (u64::MAX - 5_000)..=u64::MAX,
                             0xFFFF_F000u64..0x1_0000_1000],
        first in 1u64..10_000,
        period in 100u64..50_000,
        mode32 in any::<bool>(),
        level in any::<bool>(),
        n in 0u64..3,
    ) {
        let clock = ManualClock::new(1_000);
        let gsis = Arc::new(RecordingGsis::new());
        let mut h: TestHpet = Hpet::pc(gsis.clone(), clock.clone());
        h.write(REG_COUNTER, &start.to_le_bytes());
        let mut config = TN_INT_ENABLE | TN_PERIODIC | TN_VAL_SET | (5 << TN_INT_ROUTE_SHIFT);
        if mode32 { config |= TN_32BIT; }
        if level { config |= TN_INT_TYPE_LEVEL; }
        h.write(timer_config(n), &config.to_le_bytes());
        h.write(timer_comparator(n), &start.wrapping_add(first).to_le_bytes());
        h.write(timer_comparator(n), &period.to_le_bytes());
        h.write(REG_CONFIG, &CFG_ENABLE.to_le_bytes());
        // Other timers keep their all-ones comparators; only timer n's deadline matters.
        let t0 = clock.now_ns();
        for k in 0..5u64 {
            let due = t0 + (first + k * period) * HPET_CLK_PERIOD_NS;
            prop_assert_eq!(h.timer_info(n as usize).unwrap().deadline_ns, Some(due));
            clock.set(due - 1);
            h.update();
            prop_assert_eq!(gsis.rising_edges(5), k, "early");
            clock.set(due);
            h.update();
            prop_assert_eq!(gsis.rising_edges(5), k + 1);
            if level {
                prop_assert!(gsis.level(5));
                h.write(REG_STATUS, &(1u32 << n).to_le_bytes());
                prop_assert!(!gsis.level(5));
            }
        }
    }
}
