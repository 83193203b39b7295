//! Register offsets, bits and the constants of QEMU's HPET.

/// Where QEMU's pc (and the PIIX4/ICH chipsets) put the HPET.
pub const HPET_BASE: u64 = 0xFED0_0000;
/// Size of the register block (QEMU maps 0x400 bytes).
pub const HPET_LEN: u64 = 0x400;
/// Main counter period in ns: 10 ns, a 100 MHz counter (QEMU's `HPET_CLK_PERIOD`).
pub const HPET_CLK_PERIOD_NS: u64 = 10;
/// The same period in femtoseconds, as `COUNTER_CLK_PERIOD` reports it.
pub const HPET_CLK_PERIOD_FS: u32 = 10_000_000;
/// Fewest timers a block has (the spec's minimum; QEMU's default `timers=3`).
pub const HPET_MIN_TIMERS: u8 = 3;
/// QEMU's default and pc's number of timers.
pub const HPET_DEFAULT_TIMERS: u8 = 3;
/// Most timers a block has (5-bit `NUM_TIM_CAP`).
pub const HPET_MAX_TIMERS: u8 = 32;
/// Number of interrupt routes (`Tn_INT_ROUTE_CNF` is 5 bits): GSIs 0..32.
pub const HPET_ROUTE_COUNT: u32 = 32;
/// `Tn_INT_ROUTE_CAP` of QEMU's pc (PIIX): GSI 2 only (pc.c's `hpet_irqs = 0x4`).
pub const PC_INT_ROUTE_CAP: u32 = 0x0000_0004;
/// `Tn_INT_ROUTE_CAP` of QEMU's q35: GSIs 2, 8 and 16-23.
pub const Q35_INT_ROUTE_CAP: u32 = 0x00FF_0104;
/// The GSI timer 0 drives with `LEG_RT_CNF`: I/O APIC input 2, where a PC sees ISA IRQ0.
pub const LEGACY_TIMER0_GSI: u32 = 2;
/// The GSI timer 1 drives with `LEG_RT_CNF`: ISA IRQ8 / I/O APIC input 8 (the RTC's).
pub const LEGACY_TIMER1_GSI: u32 = 8;
/// Shortest interval between two expiries of a periodic timer (QEMU's 1 us clamp against
/// interrupt storms).
pub const MIN_PERIODIC_NS: u64 = 1_000;

/// General capabilities and ID register (read-only, 64-bit).
pub const REG_CAPABILITIES: u64 = 0x000;
/// `COUNTER_CLK_PERIOD`, the capabilities register's high half.
pub const REG_PERIOD: u64 = 0x004;
/// General configuration register.
pub const REG_CONFIG: u64 = 0x010;
/// General interrupt status register (write 1 to clear).
pub const REG_STATUS: u64 = 0x020;
/// Main counter value register.
pub const REG_COUNTER: u64 = 0x0F0;
/// Timer 0's block; timer n's is at `TIMER_BASE + n * TIMER_STRIDE`.
pub const TIMER_BASE: u64 = 0x100;
/// Size of one timer's register block.
pub const TIMER_STRIDE: u64 = 0x20;
/// Offset of `Tn_CONF_CAP` in a timer's block.
pub const TN_CONFIG: u64 = 0x00;
/// Offset of `Tn_COMPARATOR` in a timer's block.
pub const TN_COMPARATOR: u64 = 0x08;
/// Offset of `Tn_FSB_ROUTE` in a timer's block.
pub const TN_FSB_ROUTE: u64 = 0x10;

/// Timer `n`'s configuration and capability register.
pub const fn timer_config(n: u64) -> u64 {
    TIMER_BASE + n * TIMER_STRIDE + TN_CONFIG
}
/// Timer `n`'s comparator register.
pub const fn timer_comparator(n: u64) -> u64 {
    TIMER_BASE + n * TIMER_STRIDE + TN_COMPARATOR
}
/// Timer `n`'s FSB route register.
pub const fn timer_fsb_route(n: u64) -> u64 {
    TIMER_BASE + n * TIMER_STRIDE + TN_FSB_ROUTE
}

/// Capabilities without `NUM_TIM_CAP` and the period: vendor 0x8086, `LEG_RT_CAP` (bit 15),
/// `COUNT_SIZE_CAP` 64-bit (bit 13), revision 1 (QEMU's `0x8086a001`).
pub const HPET_CAP_BASE: u64 = 0x8086_A001;
/// `NUM_TIM_CAP` position (number of timers minus one, bits 12:8).
pub const CAP_NUM_TIM_SHIFT: u32 = 8;
/// `COUNT_SIZE_CAP`: 64-bit main counter.
pub const CAP_COUNT_SIZE: u64 = 1 << 13;
/// `LEG_RT_CAP`: legacy replacement route capable.
pub const CAP_LEG_RT: u64 = 1 << 15;

/// `ENABLE_CNF`: run the main counter, allow interrupts.
pub const CFG_ENABLE: u64 = 1 << 0;
/// `LEG_RT_CNF`: legacy replacement route.
pub const CFG_LEGACY: u64 = 1 << 1;
/// Writable bits of the general configuration register.
pub const CFG_WRITE_MASK: u64 = CFG_ENABLE | CFG_LEGACY;

/// `Tn_INT_TYPE_CNF`: level-triggered (1) or edge-triggered (0).
pub const TN_INT_TYPE_LEVEL: u64 = 1 << 1;
/// `Tn_INT_ENB_CNF`: interrupt enable.
pub const TN_INT_ENABLE: u64 = 1 << 2;
/// `Tn_TYPE_CNF`: periodic mode.
pub const TN_PERIODIC: u64 = 1 << 3;
/// `Tn_PER_INT_CAP`: periodic capable (read-only; every QEMU timer).
pub const TN_PERIODIC_CAP: u64 = 1 << 4;
/// `Tn_SIZE_CAP`: 64-bit comparator (read-only; every QEMU timer).
pub const TN_SIZE_CAP: u64 = 1 << 5;
/// `Tn_VAL_SET_CNF`: the next comparator write of a periodic timer sets the comparator.
pub const TN_VAL_SET: u64 = 1 << 6;
/// `Tn_32MODE_CNF`: run the timer as a 32-bit timer.
pub const TN_32BIT: u64 = 1 << 8;
/// `Tn_INT_ROUTE_CNF`: the I/O APIC input (GSI) of the timer.
pub const TN_INT_ROUTE_MASK: u64 = 0x1F << TN_INT_ROUTE_SHIFT;
/// Position of `Tn_INT_ROUTE_CNF`.
pub const TN_INT_ROUTE_SHIFT: u32 = 9;
/// `Tn_FSB_EN_CNF`: deliver by FSB message (writable only with `Tn_FSB_INT_DEL_CAP`).
pub const TN_FSB_ENABLE: u64 = 1 << 14;
/// `Tn_FSB_INT_DEL_CAP`: FSB delivery capable (read-only).
pub const TN_FSB_CAP: u64 = 1 << 15;
/// Position of `Tn_INT_ROUTE_CAP` (bits 63:32).
pub const TN_INT_ROUTE_CAP_SHIFT: u32 = 32;
/// Writable bits of a timer's configuration register (QEMU's `HPET_TN_CFG_WRITE_MASK`).
pub const TN_CONFIG_WRITE_MASK: u64 = 0x7F4E;
