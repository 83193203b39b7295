//! One 8254 counter: its programming (control word, count register, latches, flip-flops) and a
//! closed-form description of its counting element (CE) and OUT as a function of the input
//! clock tick.
//!
//! Nothing here increments per tick. A counter is either *held* (CE frozen, OUT fixed) or
//! *counting* from a known load tick; CE and OUT at any later tick are computed from the number
//! of CLK pulses since that load. At most one future CR -> CE transfer is pending (the 8254
//! loads a new count "on the next CLK pulse", at the end of a period, or after a gate trigger);
//! it is applied lazily when time passes it, so reads never need a timer to have fired.

/// Counting range of a binary counter: a count of 0 means 65536.
const BINARY_MODULUS: u32 = 65_536;
/// Counting range of a BCD counter: a count of 0 means 10000.
const BCD_MODULUS: u32 = 10_000;

/// How the CPU reads and writes a counter's 16-bit value (control word bits RW1 RW0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AccessMode {
    /// Least significant byte only; the most significant byte of a written count is 0.
    Lsb,
    /// Most significant byte only; the least significant byte of a written count is 0.
    Msb,
    /// Least significant byte first, then most significant byte.
    LsbThenMsb,
}

impl AccessMode {
    /// Decodes RW1 RW0 (1, 2 or 3); 0 is the counter latch command, not an access mode.
    fn from_rw_bits(bits: u8) -> Option<Self> {
        match bits & 0b11 {
            0b01 => Some(Self::Lsb),
            0b10 => Some(Self::Msb),
            0b11 => Some(Self::LsbThenMsb),
            _ => None,
        }
    }

    /// The RW1 RW0 bits as they appear in the control word and the status byte.
    fn rw_bits(self) -> u8 {
        match self {
            Self::Lsb => 0b01,
            Self::Msb => 0b10,
            Self::LsbThenMsb => 0b11,
        }
    }
}

/// Why a held counter is not counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum HeldKind {
    /// Nothing to count yet (no count since the control word, mode 1/5 waiting for a trigger,
    /// mode 2/3 stopped by its gate: a gate trigger reloads the count).
    Idle,
    /// Mode 0/4 stopped by GATE low: counting resumes from CE when the gate goes high again.
    /// `to_terminal` is how many CLK pulses remain until CE reaches 0 (None: already past).
    Paused { to_terminal: Option<u32> },
}

/// A counting sequence that started (CE loaded or resumed) at tick `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Run {
    start: u64,
    /// CE at `start` (0..=modulus; the modulus itself reads as 0).
    ce0: u32,
    /// The initial count N that modes 2 and 3 reload every period.
    reload: u32,
    /// Modes 0, 1, 4, 5: pulses from `start` until CE reaches 0 (None: already happened).
    to_terminal: Option<u32>,
    /// Mode 3: the sequence starts with the low half-cycle (a new count loaded at the end of a
    /// high half-cycle).
    low_first: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Activity {
    Held { ce: u32, out: bool, kind: HeldKind },
    Counting(Run),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum PendingKind {
    /// CR -> CE on the CLK pulse after a count write (modes 0, 2, 3, 4).
    Load,
    /// CR -> CE at the end of the current mode 2 period or mode 3 half-cycle.
    Reload { low_first: bool },
    /// CR -> CE on the CLK pulse after a gate rising edge (modes 1, 2, 3, 5).
    Trigger,
    /// Mode 0/4: counting resumes from the held CE on the CLK pulse after the gate rose.
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Pending {
    tick: u64,
    kind: PendingKind,
    /// The decoded count (1..=modulus) that the transfer loads.
    count: u32,
}

/// One of the three counters of an 8254.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Counter {
    /// M2 M1 M0 as written (6 and 7 are kept so the status byte returns them).
    mode_bits: u8,
    bcd: bool,
    access: AccessMode,
    /// The count register as written by the CPU.
    cr: u16,
    /// Write flip-flop: the next byte written in LSB-then-MSB access is the MSB.
    write_msb_next: bool,
    /// Read flip-flop, separate from the write one (8254: reads and writes may interleave).
    read_msb_next: bool,
    latched_count: Option<u16>,
    latched_status: Option<u8>,
    gate: bool,
    /// A complete count has been written since the last control word.
    count_written: bool,
    /// A CR -> CE transfer has been scheduled since the last control word.
    loaded_since_control: bool,
    /// NULL COUNT is 1 before this tick; None: 1 until a transfer is scheduled.
    null_count_until: Option<u64>,
    activity: Activity,
    pending: Option<Pending>,
}

impl Counter {
    /// A counter as this model powers up: as if just programmed with mode 0, binary,
    /// LSB-then-MSB and no count (the datasheet leaves the power-on state undefined).
    pub(crate) fn power_on(gate: bool) -> Self {
        Self {
            mode_bits: 0,
            bcd: false,
            access: AccessMode::LsbThenMsb,
            cr: 0,
            write_msb_next: false,
            read_msb_next: false,
            latched_count: None,
            latched_status: None,
            gate,
            count_written: false,
            loaded_since_control: false,
            null_count_until: None,
            activity: Activity::Held {
                ce: 0,
                out: false,
                kind: HeldKind::Idle,
            },
            pending: None,
        }
    }

    /// The effective mode 0..=5 (8254: modes 6 and 7 are modes 2 and 3).
    pub(crate) fn mode(&self) -> u8 {
        match self.mode_bits & 0b111 {
            6 => 2,
            7 => 3,
            m => m,
        }
    }

    pub(crate) fn bcd(&self) -> bool {
        self.bcd
    }

    pub(crate) fn access(&self) -> AccessMode {
        self.access
    }

    pub(crate) fn gate(&self) -> bool {
        self.gate
    }

    fn modulus(&self) -> u32 {
        if self.bcd {
            BCD_MODULUS
        } else {
            BINARY_MODULUS
        }
    }

    /// The count N a CR value stands for: 1..=modulus (8254: 0 is 2^16 binary, 10^4 BCD).
    fn decoded_cr(&self) -> u32 {
        let raw = u32::from(self.cr);
        let value = if self.bcd {
            // Invalid BCD digits (A-F) are taken at face value and folded into range; the
            // datasheet does not define them.
            let digits = (raw >> 12) * 1000
                + ((raw >> 8) & 0xF) * 100
                + ((raw >> 4) & 0xF) * 10
                + (raw & 0xF);
            digits % BCD_MODULUS
        } else {
            raw
        };
        if value == 0 {
            self.modulus()
        } else {
            value
        }
    }

    /// CE as the CPU reads it: modulo the range, BCD-encoded in BCD mode.
    fn encode(&self, ce: u32) -> u16 {
        let value = ce % self.modulus();
        if self.bcd {
            let digits = [
                value / 1000,
                (value / 100) % 10,
                (value / 10) % 10,
                value % 10,
            ];
            let packed = digits.iter().fold(0u32, |acc, d| (acc << 4) | d);
            (packed & 0xFFFF) as u16
        } else {
            (value & 0xFFFF) as u16
        }
    }

    // ----- closed-form evaluation -------------------------------------------------------

    /// Mode 3 half-cycle lengths of a run: (first half length, first half is high).
    /// 8254 mode 3: OUT high for (N+1)/2 pulses and low for N/2 pulses (N odd: (N-1)/2).
    fn halves(run: &Run) -> (u64, bool) {
        let n = u64::from(run.reload.max(1));
        if run.low_first {
            (n / 2, false)
        } else {
            (n.div_ceil(2), true)
        }
    }

    fn run_out(&self, run: &Run, p: u64) -> bool {
        match self.mode() {
            // Modes 0, 1: OUT low until the terminal count, then high.
            0 | 1 => run.to_terminal.is_none_or(|t| p >= u64::from(t)),
            // Modes 4, 5: OUT low for exactly the one pulse at the terminal count.
            4 | 5 => run.to_terminal.is_none_or(|t| p != u64::from(t)),
            // Mode 2: OUT low while CE is 1, the last pulse of each period.
            2 => {
                let n = u64::from(run.reload.max(1));
                p % n != n - 1
            }
            _ => {
                let n = u64::from(run.reload.max(1));
                let (first, first_high) = Self::halves(run);
                (p % n < first) == first_high
            }
        }
    }

    fn run_ce(&self, run: &Run, p: u64) -> u32 {
        let modulus = u64::from(self.modulus());
        let value = match self.mode() {
            2 => {
                let n = u64::from(run.reload.max(1));
                n - p % n
            }
            3 => {
                let n = u64::from(run.reload.max(1));
                let (first, _) = Self::halves(run);
                let q = p % n;
                let j = if q < first { q } else { q - first };
                // Even N: N, N-2, ..., 2 in each half. Odd N: N-1, N-3, ... (82C54 mode 3:
                // "the initial count minus one is loaded ... and decremented by two").
                let top = if n % 2 == 0 { n } else { n - 1 };
                top.saturating_sub(2 * j)
            }
            _ => {
                let ce0 = u64::from(run.ce0) % modulus;
                (ce0 + modulus - p % modulus) % modulus
            }
        };
        u32::try_from(value).unwrap_or(0)
    }

    /// Pulses after `start` of the first OUT change strictly after pulse `p`.
    fn run_next_change(&self, run: &Run, p: u64) -> Option<u64> {
        match self.mode() {
            0 | 1 => {
                let t = u64::from(run.to_terminal?);
                (p < t).then_some(t)
            }
            4 | 5 => {
                let t = u64::from(run.to_terminal?);
                if p < t {
                    Some(t)
                } else if p == t {
                    Some(t + 1)
                } else {
                    None
                }
            }
            2 => {
                let n = u64::from(run.reload.max(1));
                if n == 1 {
                    return None; // count 1 is illegal in mode 2: OUT stays low
                }
                let phase = p % n;
                let base = p - phase;
                Some(if phase < n - 1 {
                    base + n - 1
                } else {
                    base + n
                })
            }
            _ => {
                let n = u64::from(run.reload.max(1));
                if n == 1 {
                    return None; // no low half-cycle: OUT stays high
                }
                let (first, _) = Self::halves(run);
                let q = p % n;
                let base = p - q;
                Some(if q < first { base + first } else { base + n })
            }
        }
    }

    fn activity_out(&self, activity: &Activity, tick: u64) -> bool {
        match activity {
            Activity::Held { out, .. } => *out,
            Activity::Counting(run) => self.run_out(run, tick.saturating_sub(run.start)),
        }
    }

    fn activity_ce(&self, activity: &Activity, tick: u64) -> u32 {
        match activity {
            Activity::Held { ce, .. } => *ce,
            Activity::Counting(run) => self.run_ce(run, tick.saturating_sub(run.start)),
        }
    }

    fn activity_next_change(&self, activity: &Activity, tick: u64) -> Option<u64> {
        match activity {
            Activity::Held { .. } => None,
            Activity::Counting(run) => {
                let rel = self.run_next_change(run, tick.saturating_sub(run.start))?;
                Some(run.start.saturating_add(rel))
            }
        }
    }

    /// The activity after `pending` takes effect (with the current gate level, which is the
    /// level at that tick: every gate change first brings the counter up to date).
    fn applied(&self, pending: &Pending) -> Activity {
        let counting = Activity::Counting(Run {
            start: pending.tick,
            ce0: pending.count,
            reload: pending.count,
            to_terminal: Some(pending.count),
            low_first: false,
        });
        match pending.kind {
            PendingKind::Load => {
                let mode = self.mode();
                if self.gate || mode == 1 || mode == 5 {
                    counting
                } else {
                    // 8254: a count written while GATE is low is still loaded on the next CLK
                    // pulse; GATE low only stops the counting.
                    let kind = if mode == 0 || mode == 4 {
                        HeldKind::Paused {
                            to_terminal: Some(pending.count),
                        }
                    } else {
                        HeldKind::Idle
                    };
                    Activity::Held {
                        ce: pending.count,
                        out: mode != 0,
                        kind,
                    }
                }
            }
            PendingKind::Reload { low_first } => Activity::Counting(Run {
                start: pending.tick,
                ce0: pending.count,
                reload: pending.count,
                to_terminal: None,
                low_first,
            }),
            PendingKind::Trigger => counting,
            PendingKind::Resume => match self.activity {
                Activity::Held {
                    ce,
                    kind: HeldKind::Paused { to_terminal },
                    ..
                } if self.gate => Activity::Counting(Run {
                    start: pending.tick,
                    ce0: ce,
                    reload: ce,
                    to_terminal,
                    low_first: false,
                }),
                other => other,
            },
        }
    }

    /// The activity and the still-pending transfer as they stand at `tick`.
    fn view(&self, tick: u64) -> (Activity, Option<Pending>) {
        match self.pending {
            Some(p) if p.tick <= tick => (self.applied(&p), None),
            other => (self.activity, other),
        }
    }

    /// Applies a pending transfer whose tick has passed.
    pub(crate) fn sync(&mut self, tick: u64) {
        let (activity, pending) = self.view(tick);
        self.activity = activity;
        self.pending = pending;
    }

    /// OUT during input clock tick `tick`.
    pub(crate) fn out_at(&self, tick: u64) -> bool {
        self.activity_out(&self.view(tick).0, tick)
    }

    /// CE during input clock tick `tick` (0..=modulus, not yet encoded).
    fn ce_at(&self, tick: u64) -> u32 {
        self.activity_ce(&self.view(tick).0, tick)
    }

    /// The count an unlatched read returns during `tick` (BCD-encoded in BCD mode).
    pub(crate) fn count_at(&self, tick: u64) -> u16 {
        self.encode(self.ce_at(tick))
    }

    pub(crate) fn null_count_at(&self, tick: u64) -> bool {
        self.null_count_until.is_none_or(|until| tick < until)
    }

    /// The read-back status byte: OUT, NULL COUNT, RW1 RW0, M2 M1 M0, BCD (8254 Figure
    /// "Status Byte").
    pub(crate) fn status_at(&self, tick: u64) -> u8 {
        (u8::from(self.out_at(tick)) << 7)
            | (u8::from(self.null_count_at(tick)) << 6)
            | (self.access.rw_bits() << 4)
            | ((self.mode_bits & 0b111) << 1)
            | u8::from(self.bcd)
    }

    /// The first tick strictly after `after` at which OUT differs from the tick before.
    pub(crate) fn next_out_change(&self, after: u64) -> Option<u64> {
        let (activity, pending) = self.view(after);
        let in_run = self.activity_next_change(&activity, after);
        let Some(pending) = pending else {
            return in_run;
        };
        if let Some(change) = in_run {
            if change < pending.tick {
                return Some(change);
            }
        }
        let before = self.activity_out(&activity, pending.tick.saturating_sub(1));
        let next = self.applied(&pending);
        if self.activity_out(&next, pending.tick) != before {
            return Some(pending.tick);
        }
        self.activity_next_change(&next, pending.tick)
    }

    // ----- CPU accesses and gate ------------------------------------------------------

    /// Records that the CR is transferred to CE at `tick` (NULL COUNT clears then).
    fn note_transfer(&mut self, tick: u64) {
        self.null_count_until = Some(match self.null_count_until {
            Some(until) => until.min(tick),
            None => tick,
        });
    }

    fn schedule(&mut self, tick: u64, kind: PendingKind, count: u32) {
        self.pending = Some(Pending { tick, kind, count });
        self.loaded_since_control = true;
        self.note_transfer(tick);
    }

    /// A control word for this counter (RW != 00): 8254 "Write Operations": all control
    /// logic is reset, OUT goes to its initial state (low in mode 0, high otherwise), NULL
    /// COUNT is set and the next count byte written is the LSB.
    pub(crate) fn control_word(&mut self, tick: u64, rw_bits: u8, mode_bits: u8, bcd: bool) {
        let Some(access) = AccessMode::from_rw_bits(rw_bits) else {
            return;
        };
        self.sync(tick);
        let ce = self.ce_at(tick);
        self.mode_bits = mode_bits & 0b111;
        self.bcd = bcd;
        self.access = access;
        self.write_msb_next = false;
        self.read_msb_next = false;
        self.latched_count = None;
        self.latched_status = None;
        self.count_written = false;
        self.loaded_since_control = false;
        self.null_count_until = None;
        self.pending = None;
        self.activity = Activity::Held {
            ce: ce % self.modulus(),
            out: self.mode() != 0,
            kind: HeldKind::Idle,
        };
    }

    /// Counter latch command: a second latch before the count is read is ignored.
    pub(crate) fn latch_count(&mut self, tick: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.count_at(tick));
        }
    }

    /// Read-back command with STATUS selected: ignored while a status is already latched.
    pub(crate) fn latch_status(&mut self, tick: u64) {
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status_at(tick));
        }
    }

    /// One byte read from the counter's port.
    pub(crate) fn read_byte(&mut self, tick: u64) -> u8 {
        // 8254 read-back: a latched status is read first, whatever was latched first.
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        let value = self.latched_count.unwrap_or_else(|| self.count_at(tick));
        let [lsb, msb] = value.to_le_bytes();
        let (byte, complete) = match self.access {
            AccessMode::Lsb => (lsb, true),
            AccessMode::Msb => (msb, true),
            AccessMode::LsbThenMsb => {
                let msb_now = self.read_msb_next;
                self.read_msb_next = !msb_now;
                if msb_now {
                    (msb, true)
                } else {
                    (lsb, false)
                }
            }
        };
        if complete {
            // The output latch follows CE again once the latched count has been read.
            self.latched_count = None;
        }
        byte
    }

    /// One byte written to the counter's port.
    pub(crate) fn write_byte(&mut self, tick: u64, byte: u8) {
        match self.access {
            AccessMode::Lsb => self.cr = u16::from(byte),
            AccessMode::Msb => self.cr = u16::from(byte) << 8,
            AccessMode::LsbThenMsb => {
                if !self.write_msb_next {
                    self.cr = (self.cr & 0xFF00) | u16::from(byte);
                    self.write_msb_next = true;
                    if self.mode() == 0 {
                        // 8254 mode 0: writing the first byte disables counting and OUT goes
                        // low immediately.
                        self.sync(tick);
                        let ce = self.ce_at(tick);
                        self.activity = Activity::Held {
                            ce,
                            out: false,
                            kind: HeldKind::Idle,
                        };
                        self.pending = None;
                    }
                    return;
                }
                self.cr = (self.cr & 0x00FF) | (u16::from(byte) << 8);
                self.write_msb_next = false;
            }
        }
        self.count_complete(tick);
    }

    /// A complete new count is in CR.
    fn count_complete(&mut self, tick: u64) {
        self.sync(tick);
        let count = self.decoded_cr();
        self.count_written = true;
        self.null_count_until = None;
        let next_pulse = tick.saturating_add(1);
        match self.mode() {
            0 => {
                // Mode 0: OUT low until terminal count; loaded on the next CLK pulse.
                let ce = self.ce_at(tick);
                self.activity = Activity::Held {
                    ce,
                    out: false,
                    kind: HeldKind::Idle,
                };
                self.schedule(next_pulse, PendingKind::Load, count);
            }
            // Mode 4: loaded on the next CLK pulse; OUT unaffected.
            4 => self.schedule(next_pulse, PendingKind::Load, count),
            1 | 5 => {
                // Modes 1, 5: a new count waits for the next trigger; a trigger already
                // seen in this tick loads it.
                if let Some(p) = self.pending {
                    self.schedule(p.tick, p.kind, count);
                }
            }
            _ => self.periodic_count_written(tick, count),
        }
    }

    /// Modes 2 and 3: the first count starts counting on the next CLK pulse; later counts do
    /// not disturb the current period (mode 2) or half-cycle (mode 3).
    fn periodic_count_written(&mut self, tick: u64, count: u32) {
        if let Some(p) = self.pending {
            self.schedule(p.tick, p.kind, count);
            return;
        }
        match self.activity {
            Activity::Counting(run) => {
                let n = u64::from(run.reload.max(1));
                let q = tick.saturating_sub(run.start) % n;
                let base = tick - q;
                let (at, low_first) = if self.mode() == 2 {
                    (base + n, false)
                } else {
                    let (first, first_high) = Self::halves(&run);
                    if q < first {
                        (base + first, first_high)
                    } else {
                        (base + n, !first_high)
                    }
                };
                self.schedule(at, PendingKind::Reload { low_first }, count);
            }
            Activity::Held { .. } => {
                if !self.loaded_since_control {
                    self.schedule(tick.saturating_add(1), PendingKind::Load, count);
                }
                // Otherwise GATE is low: the next gate trigger loads the new count.
            }
        }
    }

    /// A change of the counter's GATE input during `tick`.
    pub(crate) fn set_gate(&mut self, tick: u64, level: bool) {
        if level == self.gate {
            return;
        }
        self.sync(tick);
        let next_pulse = tick.saturating_add(1);
        match self.mode() {
            0 | 4 => {
                if level {
                    self.gate = true;
                    let paused = matches!(
                        self.activity,
                        Activity::Held {
                            kind: HeldKind::Paused { .. },
                            ..
                        }
                    );
                    if paused && self.pending.is_none() {
                        let ce = self.ce_at(tick);
                        self.pending = Some(Pending {
                            tick: next_pulse,
                            kind: PendingKind::Resume,
                            count: ce,
                        });
                    }
                } else {
                    // GATE low disables counting; in mode 0 and 4 it does not affect OUT.
                    if let Activity::Counting(run) = self.activity {
                        let p = tick.saturating_sub(run.start);
                        let to_terminal = run
                            .to_terminal
                            .and_then(|t| u64::from(t).checked_sub(p))
                            .filter(|left| *left > 0)
                            .and_then(|left| u32::try_from(left).ok());
                        let out = if self.mode() == 0 {
                            self.out_at(tick)
                        } else {
                            true // a mode 4 strobe is a single pulse: end it here
                        };
                        self.activity = Activity::Held {
                            ce: self.run_ce(&run, p),
                            out,
                            kind: HeldKind::Paused { to_terminal },
                        };
                    }
                    if matches!(self.pending, Some(p) if p.kind == PendingKind::Resume) {
                        self.pending = None;
                    }
                    self.gate = false;
                }
            }
            1 | 5 => {
                // Modes 1, 5: only the rising edge matters; it (re)triggers the count.
                self.gate = level;
                if level && self.count_written {
                    self.schedule(next_pulse, PendingKind::Trigger, self.decoded_cr());
                }
            }
            _ => {
                if level {
                    // Modes 2, 3: a trigger reloads the initial count on the next CLK pulse.
                    self.gate = true;
                    if self.count_written {
                        self.schedule(next_pulse, PendingKind::Trigger, self.decoded_cr());
                    }
                } else {
                    // GATE low stops counting and sets OUT high immediately.
                    let ce = self.ce_at(tick);
                    self.activity = Activity::Held {
                        ce,
                        out: true,
                        kind: HeldKind::Idle,
                    };
                    if let Some(p) = self.pending {
                        if p.kind != PendingKind::Load {
                            self.pending = None;
                            if self.null_count_until.is_some_and(|until| until > tick) {
                                self.null_count_until = None;
                            }
                        }
                    }
                    self.gate = false;
                }
            }
        }
    }
}

impl Counter {
    /// Whether a counter read from a saved state is one this model can be in: a mode,
    /// counts within the modulus and reload values that are not 0. Names the bad field.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let modulus = self.modulus();
        if self.mode_bits > 7 {
            return Err("mode_bits");
        }
        let count_ok = |c: u32| (1..=modulus).contains(&c);
        match &self.activity {
            Activity::Held { ce, .. } if *ce > modulus => return Err("activity.ce"),
            Activity::Counting(run) => {
                if run.ce0 > modulus {
                    return Err("activity.ce0");
                }
                if !count_ok(run.reload) {
                    return Err("activity.reload");
                }
            }
            Activity::Held { .. } => {}
        }
        if let Some(p) = &self.pending {
            if !count_ok(p.count) {
                return Err("pending.count");
            }
        }
        Ok(())
    }
}
