//! Where the HPET's interrupts go: [`HpetIrq`], one call per GSI level change, edge or FSB
//! message; [`GsiLines`] adapts it to one [`vmkit_hw::IrqLine`] per GSI; [`RecordingGsis`]
//! records everything for tests.

use std::fmt;
use std::sync::{Arc, Mutex};

use vmkit_hw::{lock, IrqLine};

use crate::{Error, Result, HPET_ROUTE_COUNT};

/// The HPET's interrupt outputs, as the machine wires them.
///
/// A timer's route is a GSI number, i.e. an I/O APIC input: `Tn_INT_ROUTE_CNF` = n drives GSI
/// n, and with `LEG_RT_CNF` set timer 0 drives GSI [`LEGACY_TIMER0_GSI`](crate::LEGACY_TIMER0_GSI)
/// (2, where a PC's I/O APIC sees ISA IRQ0) and timer 1 drives GSI
/// [`LEGACY_TIMER1_GSI`](crate::LEGACY_TIMER1_GSI) (8, the RTC's IRQ). GSIs are 0..32 (the route
/// field has 5 bits); the machine decides what a GSI its interrupt controller lacks means
/// (usually nothing).
///
/// Calls happen with the HPET borrowed mutably (under its lock, on a vCPU thread for register
/// accesses and on the main loop for timer expiries): implementations must not block and must
/// not call back into the HPET.
pub trait HpetIrq: Send + Sync {
    /// GSI `gsi` is now driven `high` (level-triggered timers) or low. Several level timers
    /// routed to one GSI are wired-OR: the line is reported low only when none asserts it.
    fn set_gsi(&self, gsi: u32, high: bool);

    /// One edge on GSI `gsi` (an edge-triggered timer fired). Default: high then low.
    fn pulse_gsi(&self, gsi: u32) {
        self.set_gsi(gsi, true);
        self.set_gsi(gsi, false);
    }

    /// FSB (MSI-style) delivery: a 32-bit little-endian write of `data` to guest physical
    /// `address`, from `Tn_FSB_INT_VAL` / `Tn_FSB_INT_ADDR`. Only called when the HPET was
    /// created with [`HpetConfig::fsb`](crate::HpetConfig::fsb) (QEMU's `msi=on`); the default
    /// drops the message.
    fn fsb_write(&self, address: u32, data: u32) {
        let _ = (address, data);
    }

    /// `LEG_RT_CNF` changed. While it is set the 8254's and the RTC's own outputs are
    /// disconnected on real chipsets (QEMU's `pit_enabled` GPIO out and its gating of the RTC
    /// input): a machine should mute the PIT on IRQ0/GSI 2 and the RTC on IRQ8 meanwhile.
    /// Default: nothing.
    fn legacy_replacement_changed(&self, enabled: bool) {
        let _ = enabled;
    }
}

impl<T: HpetIrq + ?Sized> HpetIrq for Arc<T> {
    fn set_gsi(&self, gsi: u32, high: bool) {
        (**self).set_gsi(gsi, high)
    }
    fn pulse_gsi(&self, gsi: u32) {
        (**self).pulse_gsi(gsi)
    }
    fn fsb_write(&self, address: u32, data: u32) {
        (**self).fsb_write(address, data)
    }
    fn legacy_replacement_changed(&self, enabled: bool) {
        (**self).legacy_replacement_changed(enabled)
    }
}

impl<T: HpetIrq + ?Sized> HpetIrq for Box<T> {
    fn set_gsi(&self, gsi: u32, high: bool) {
        (**self).set_gsi(gsi, high)
    }
    fn pulse_gsi(&self, gsi: u32) {
        (**self).pulse_gsi(gsi)
    }
    fn fsb_write(&self, address: u32, data: u32) {
        (**self).fsb_write(address, data)
    }
    fn legacy_replacement_changed(&self, enabled: bool) {
        (**self).legacy_replacement_changed(enabled)
    }
}

/// [`HpetIrq`] over one [`IrqLine`] per GSI: for machines that already hand devices lines.
/// GSIs without a line are dropped; FSB messages and legacy changes are dropped too.
#[derive(Default)]
pub struct GsiLines {
    lines: Vec<Option<Arc<dyn IrqLine>>>,
}

impl GsiLines {
    /// No GSI connected.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects `gsi` (0..32) to `line`, replacing any previous line.
    pub fn connect(&mut self, gsi: u32, line: Arc<dyn IrqLine>) -> Result<()> {
        if gsi >= HPET_ROUTE_COUNT {
            return Err(Error::GsiOutOfRange {
                gsi,
                max: HPET_ROUTE_COUNT - 1,
            });
        }
        let index = gsi as usize;
        if self.lines.len() <= index {
            self.lines.resize(index + 1, None);
        }
        self.lines[index] = Some(line);
        Ok(())
    }

    /// Builder form of [`connect`](Self::connect).
    pub fn with(mut self, gsi: u32, line: Arc<dyn IrqLine>) -> Result<Self> {
        self.connect(gsi, line)?;
        Ok(self)
    }

    fn line(&self, gsi: u32) -> Option<&Arc<dyn IrqLine>> {
        self.lines.get(gsi as usize).and_then(Option::as_ref)
    }
}

impl HpetIrq for GsiLines {
    fn set_gsi(&self, gsi: u32, high: bool) {
        if let Some(line) = self.line(gsi) {
            line.set_level(high);
        }
    }

    fn pulse_gsi(&self, gsi: u32) {
        if let Some(line) = self.line(gsi) {
            line.pulse();
        }
    }
}

impl fmt::Debug for GsiLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let connected: Vec<usize> = self
            .lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|_| i))
            .collect();
        f.debug_struct("GsiLines")
            .field("connected", &connected)
            .finish()
    }
}

#[derive(Debug, Default)]
struct Recorded {
    levels: u32,
    rising_edges: [u64; HPET_ROUTE_COUNT as usize],
    fsb: Vec<(u32, u32)>,
    legacy: Vec<bool>,
}

/// An [`HpetIrq`] that records levels, rising edges, FSB messages and legacy-route changes.
#[derive(Debug, Default)]
pub struct RecordingGsis {
    inner: Mutex<Recorded>,
}

impl RecordingGsis {
    /// All GSIs low, nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// The level GSI `gsi` is driven at now (false for GSIs >= 32).
    pub fn level(&self, gsi: u32) -> bool {
        gsi < HPET_ROUTE_COUNT && lock(&self.inner).levels & (1 << gsi) != 0
    }

    /// Bit n set = GSI n driven high.
    pub fn levels(&self) -> u32 {
        lock(&self.inner).levels
    }

    /// Low-to-high transitions seen on GSI `gsi` (pulses included).
    pub fn rising_edges(&self, gsi: u32) -> u64 {
        lock(&self.inner)
            .rising_edges
            .get(gsi as usize)
            .copied()
            .unwrap_or(0)
    }

    /// FSB messages as `(address, data)`, oldest first.
    pub fn fsb_writes(&self) -> Vec<(u32, u32)> {
        lock(&self.inner).fsb.clone()
    }

    /// Every `legacy_replacement_changed` call, oldest first.
    pub fn legacy_changes(&self) -> Vec<bool> {
        lock(&self.inner).legacy.clone()
    }
}

impl HpetIrq for RecordingGsis {
    fn set_gsi(&self, gsi: u32, high: bool) {
        if gsi >= HPET_ROUTE_COUNT {
            return;
        }
        let mut r = lock(&self.inner);
        let bit = 1u32 << gsi;
        if high && r.levels & bit == 0 {
            r.rising_edges[gsi as usize] += 1;
        }
        if high {
            r.levels |= bit;
        } else {
            r.levels &= !bit;
        }
    }

    fn fsb_write(&self, address: u32, data: u32) {
        lock(&self.inner).fsb.push((address, data));
    }

    fn legacy_replacement_changed(&self, enabled: bool) {
        lock(&self.inner).legacy.push(enabled);
    }
}
