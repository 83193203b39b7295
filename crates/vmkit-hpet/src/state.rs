//! A plain, versioned snapshot of the HPET for save/restore.
//!
//! Plain integers with serde derives: a VMM serializes it however it serializes the rest of
//! the machine.

/// The layout version [`HpetState`] has; [`Hpet::from_state`](crate::Hpet::from_state)
/// accepts only this one.
pub const HPET_STATE_VERSION: u32 = 1;

/// The HPET's guest-visible and hidden state (QEMU's `vmstate_hpet`, version 2, with the
/// counter and deadlines made clock-independent).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HpetState {
    /// Layout version, [`HPET_STATE_VERSION`].
    pub version: u32,
    /// General configuration register.
    pub config: u64,
    /// General interrupt status register.
    pub isr: u64,
    /// The main counter at the time of the snapshot; it runs on from there if `config` has
    /// `ENABLE_CNF`.
    pub counter: u64,
    /// One entry per timer.
    pub timers: Vec<HpetTimerState>,
}

/// One timer of an [`HpetState`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HpetTimerState {
    /// Configuration and capability register (capabilities are taken from the device's
    /// configuration on restore).
    pub config: u64,
    /// Comparator register.
    pub comparator: u64,
    /// FSB route register.
    pub fsb_route: u64,
    /// The comparator extended to the 64-bit counter.
    pub cmp64: u64,
    /// Periodic increment.
    pub period: u64,
    /// The armed expiry is the 32-bit wrap of a 32-bit one-shot timer.
    pub wrap_flag: bool,
    /// Time until the armed expiry (ns), if armed.
    pub remaining_ns: Option<u64>,
}
