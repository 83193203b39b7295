//! The PIIX3 (82371SB) PCI-to-ISA bridge at 00:01.0 and its IDE function at 00:01.1.
//!
//! The bridge's PIRQ route control registers (0x60-0x63) steer the four PCI interrupt lines
//! PIRQA#-PIRQD# to ISA IRQs; [`PciIntx`] does that steering for the PCI functions' INTx
//! pins, with the OR of every function sharing a line. The ELCR (0x4D0/0x4D1) is in the
//! i8259 model, where QEMU has it too.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vmkit_bus::Space;
use vmkit_hw::lock;
use vmkit_pci::{
    BarDef, BarKind, ConfigSpace, ConfigSpaceState, DevFn, Mapping, PciDevice, RegionIndex,
};

use crate::i440fx::VENDOR_INTEL;

/// PIIX3 ISA bridge device id.
pub const PIIX3_DEVICE_ID: u16 = 0x7000;
/// PIIX3 IDE device id.
pub const PIIX3_IDE_DEVICE_ID: u16 = 0x7010;
/// First PIRQ route control register (PIRQRC for PIRQA#).
pub const PIRQRC_BASE: u16 = 0x60;
/// PIRQRC value with routing disabled (bit 7, IRQEN# high): the power-on value.
pub const PIRQ_DISABLED: u8 = 0x80;
/// Number of PIRQ lines.
pub const PIRQ_COUNT: u8 = 4;

/// The power-on values QEMU's PIIX3 sets outside the header (`piix3_reset`), with the
/// datasheet names: IORT, XBCS, PIRQRC A-D, TOM, MSTAT, MBIRQ0, MBDMA0/1, PCSC, APICBASE,
/// DLC, SMICNTL, SMIEN, SEE, FTMR, SMIREQ, CTLTMR, CTHTMR.
const POWER_ON: &[(u16, u8)] = &[
    (0x4c, 0x4d),
    (0x4e, 0x03),
    (0x4f, 0x00),
    (0x60, 0x80),
    (0x61, 0x80),
    (0x62, 0x80),
    (0x63, 0x80),
    (0x69, 0x02),
    (0x70, 0x80),
    (0x76, 0x0c),
    (0x77, 0x0c),
    (0x78, 0x02),
    (0x79, 0x00),
    (0x80, 0x00),
    (0x82, 0x00),
    (0xa0, 0x08),
    (0xa2, 0x00),
    (0xa3, 0x00),
    (0xa4, 0x00),
    (0xa5, 0x00),
    (0xa6, 0x00),
    (0xa7, 0x00),
    (0xa8, 0x0f),
    (0xaa, 0x00),
    (0xab, 0x00),
    (0xac, 0x00),
    (0xae, 0x00),
];

/// The ISA IRQ a PIRQRC value routes to: bits 3:0 while bit 7 is clear. A value of 16 or
/// more is no route, as QEMU reads it (`pic_irq >= ISA_NUM_IRQS`).
pub fn pirq_route(value: u8) -> Option<u8> {
    (value < 16).then_some(value)
}

/// Told when a PIRQ line's route changes.
pub trait PirqListener: Send + Sync {
    /// PIRQ `pirq` (0 = A) now goes to ISA IRQ `irq` (`None`: nowhere).
    fn pirq_changed(&self, pirq: u8, irq: Option<u8>);
}

/// The PIIX3 ISA bridge function.
pub struct Piix3 {
    config: ConfigSpace,
    listener: Option<Arc<dyn PirqListener>>,
}

impl std::fmt::Debug for Piix3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piix3")
            .field(
                "routes",
                &(0..PIRQ_COUNT).map(|p| self.route(p)).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for Piix3 {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix3 {
    /// The bridge in its power-on state (every PIRQ disabled).
    pub fn new() -> Self {
        let mut config = ConfigSpace::new(VENDOR_INTEL, PIIX3_DEVICE_ID, 0x06, 0x01, 0x00, 0x00);
        config.set_multifunction(true);
        config.set_subsystem(
            crate::i440fx::QEMU_SUBSYSTEM_VENDOR,
            crate::i440fx::QEMU_SUBSYSTEM_ID,
        );
        // As QEMU: the device-specific registers are plain read/write storage.
        for off in 0x40..=0xff {
            config.set_write_mask_byte(off, 0xff);
        }
        let mut bridge = Self {
            config,
            listener: None,
        };
        bridge.power_on();
        bridge
    }

    /// Reports route changes to `listener`.
    pub fn with_listener(mut self, listener: Arc<dyn PirqListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Reports route changes to `listener` from now on (for a listener built after the
    /// bridge, such as [`PciIntx::listener`]).
    pub fn set_listener(&mut self, listener: Arc<dyn PirqListener>) {
        self.listener = Some(listener);
    }

    /// Tells the listener about every PIRQ whose route differs from `before`.
    fn report_routes(&self, before: &[Option<u8>; PIRQ_COUNT as usize]) {
        if let Some(listener) = &self.listener {
            for pirq in 0..PIRQ_COUNT {
                let now = self.route(pirq);
                if now != before[usize::from(pirq)] {
                    listener.pirq_changed(pirq, now);
                }
            }
        }
    }

    fn routes(&self) -> [Option<u8>; PIRQ_COUNT as usize] {
        std::array::from_fn(|p| self.route(p as u8))
    }

    fn power_on(&mut self) {
        self.config.reset();
        // Bus master, memory and I/O decode on; DEVSEL medium.
        self.config.set_word(vmkit_pci::config::COMMAND, 0x0007);
        self.config.set_word(vmkit_pci::config::STATUS, 0x0200);
        for &(offset, value) in POWER_ON {
            self.config.set_byte(offset, value);
        }
        if let Some(listener) = &self.listener {
            for pirq in 0..PIRQ_COUNT {
                listener.pirq_changed(pirq, None);
            }
        }
    }

    /// Where PIRQ `pirq` (0 = A .. 3 = D) goes now.
    pub fn route(&self, pirq: u8) -> Option<u8> {
        if pirq >= PIRQ_COUNT {
            return None;
        }
        pirq_route(self.config.byte(PIRQRC_BASE + u16::from(pirq)))
    }
}

impl PciDevice for Piix3 {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let before = self.routes();
        self.config.write(offset, data);
        self.report_routes(&before);
    }

    fn reset(&mut self) {
        let before = self.routes();
        self.power_on();
        self.report_routes(&before);
    }
}

/// PCI INTx delivery through the PIIX3: each function's pin is swizzled to a PIRQ line
/// (`vmkit_pci::intx_swizzle`), the line is the OR of every source on it, and the line
/// drives the ISA IRQ its PIRQRC names.
///
/// It is also the bridge's [`PirqListener`] (give it to [`Piix3::with_listener`] through
/// [`PciIntx::listener`]): when the guest reroutes a PIRQ that is high, the old ISA IRQ is
/// lowered and the new one raised, as QEMU's `piix3_update_irq_levels` does. Only level
/// changes reach the ISA side, and nothing here allocates.
pub struct PciIntx {
    bridge: Arc<Mutex<Piix3>>,
    isa: Arc<dyn Fn(u8, bool) + Send + Sync>,
    state: Mutex<IntxState>,
}

#[derive(Default)]
struct IntxState {
    /// Per PIRQ line: which functions drive it high (bit = devfn; a function reaches a
    /// given line through at most one pin).
    sources: [[u64; 4]; 4],
    /// Per PIRQ line: the ISA IRQ this device currently holds high for it.
    driven: [Option<u8>; 4],
    /// Per PIRQ line: the route last reported by the bridge's listener (`None` until then:
    /// ask the bridge).
    routes: [Option<Option<u8>>; 4],
}

impl IntxState {
    fn level(&self, pirq: usize) -> bool {
        self.sources[pirq].iter().any(|w| *w != 0)
    }
}

impl std::fmt::Debug for PciIntx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciIntx").finish_non_exhaustive()
    }
}

impl PciIntx {
    /// INTx routing through `bridge`'s PIRQ registers; `isa(irq, level)` drives an ISA
    /// line.
    pub fn new(bridge: Arc<Mutex<Piix3>>, isa: Arc<dyn Fn(u8, bool) + Send + Sync>) -> Self {
        Self {
            bridge,
            isa,
            state: Mutex::new(IntxState::default()),
        }
    }

    /// The listener to install on the bridge so reroutes move raised lines.
    pub fn listener(self: &Arc<Self>) -> Arc<dyn PirqListener> {
        Arc::new(IntxListener(Arc::downgrade(self)))
    }

    /// Function `devfn` drives its INTx pin `pin` (1 = INTA#) to `high`. Pins outside 1-4
    /// are ignored.
    pub fn set_level(&self, devfn: DevFn, pin: u8, high: bool) {
        let Some(pirq) = vmkit_pci::intx_swizzle(devfn, pin) else {
            return;
        };
        let pirq = usize::from(pirq);
        let (word, bit) = (usize::from(devfn.0 >> 6), devfn.0 & 63);
        // The bridge's listener runs under the bridge's lock and takes `state`: never hold
        // `state` while taking the bridge.
        let cached = lock(&self.state).routes[pirq];
        let asked = match cached {
            Some(route) => route,
            None => lock(&self.bridge).route(pirq as u8),
        };
        let mut state = lock(&self.state);
        if high {
            state.sources[pirq][word] |= 1 << bit;
        } else {
            state.sources[pirq][word] &= !(1 << bit);
        }
        // A reroute reported meanwhile wins over what was asked.
        let route = state.routes[pirq].unwrap_or(asked);
        self.apply(&mut state, pirq, route);
    }

    /// Drives the ISA side of `pirq` to match its level through `route`.
    fn apply(&self, state: &mut IntxState, pirq: usize, route: Option<u8>) {
        let want = if state.level(pirq) { route } else { None };
        let held = state.driven[pirq];
        if held == want {
            return;
        }
        state.driven[pirq] = want;
        if let Some(old) = held {
            (self.isa)(old, false);
        }
        if let Some(new) = want {
            (self.isa)(new, true);
        }
    }

    fn rerouted(&self, pirq: u8, route: Option<u8>) {
        let index = usize::from(pirq);
        if index >= 4 {
            return;
        }
        let mut state = lock(&self.state);
        state.routes[index] = Some(route);
        self.apply(&mut state, index, route);
    }

    /// Whether PIRQ `pirq` is high.
    pub fn pirq_level(&self, pirq: u8) -> bool {
        usize::from(pirq) < 4 && lock(&self.state).level(usize::from(pirq))
    }
}

/// [`PciIntx::listener`]: forwards route changes without keeping the router alive.
struct IntxListener(std::sync::Weak<PciIntx>);

impl PirqListener for IntxListener {
    fn pirq_changed(&self, pirq: u8, irq: Option<u8>) {
        if let Some(intx) = self.0.upgrade() {
            intx.rerouted(pirq, irq);
        }
    }
}

/// The PIIX3 IDE function (00:01.1 on QEMU's pc): class 01/01 in legacy mode, the bus-master
/// registers behind BAR4. There are no drives: the legacy channels float as QEMU's empty
/// IDE buses do (see [`IdeNoDrives`]).
pub struct Piix3Ide {
    config: ConfigSpace,
}

impl std::fmt::Debug for Piix3Ide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piix3Ide").finish_non_exhaustive()
    }
}

impl Default for Piix3Ide {
    fn default() -> Self {
        Self::new()
    }
}

/// The bus-master IDE register block BAR4 decodes.
pub const IDE_BMDMA_BAR: u8 = 4;

impl Piix3Ide {
    /// The function with no drives.
    pub fn new() -> Self {
        let mut config =
            ConfigSpace::new(VENDOR_INTEL, PIIX3_IDE_DEVICE_ID, 0x01, 0x01, 0x80, 0x00);
        let bar = BarDef {
            kind: BarKind::Io,
            size: 16,
            prefetchable: false,
        };
        // A 16-byte I/O BAR is always valid: this cannot fail.
        let _ = config.add_bar(IDE_BMDMA_BAR, bar);
        config.set_subsystem(
            crate::i440fx::QEMU_SUBSYSTEM_VENDOR,
            crate::i440fx::QEMU_SUBSYSTEM_ID,
        );
        for off in 0x40..=0xff {
            config.set_write_mask_byte(off, 0xff);
        }
        Self { config }
    }
}

impl PciDevice for Piix3Ide {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn region_read(&mut self, _region: RegionIndex, _offset: u64, data: &mut [u8]) {
        // Bus-master status and command of idle channels.
        data.fill(0);
    }
}

/// The legacy IDE channels with no drive attached (0x1F0-0x1F7 + 0x3F6, 0x170-0x177 +
/// 0x376): every register reads 0 and writes are ignored, as QEMU's IDE bus answers with
/// neither drive present, so firmware sees "not busy, no device" at once instead of waiting
/// out a busy timeout on a floating 0xFF.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdeNoDrives;

impl IdeNoDrives {
    /// The port ranges: (base, length).
    pub const RANGES: [(u16, u16); 4] = [(0x1f0, 8), (0x3f6, 1), (0x170, 8), (0x376, 1)];

    /// A read: zeros.
    pub fn read(&self, data: &mut [u8]) {
        data.fill(0);
    }
}

impl vm_device::DevicePio for IdeNoDrives {
    fn pio_read(
        &self,
        _base: vm_device::bus::PioAddress,
        _offset: vm_device::bus::PioAddressOffset,
        data: &mut [u8],
    ) {
        self.read(data);
    }

    fn pio_write(
        &self,
        _base: vm_device::bus::PioAddress,
        _offset: vm_device::bus::PioAddressOffset,
        _data: &[u8],
    ) {
    }
}

/// A mapping of `size` ports at `addr` (for tests and chipset windows).
pub fn io_mapping(addr: u64, size: u64) -> Mapping {
    Mapping {
        space: Space::Pio,
        addr,
        size,
    }
}

/// The layout version of [`Piix3State`].
pub const PIIX3_STATE_VERSION: u32 = 1;

/// A PIIX3 function as plain data (QEMU's `vmstate_piix3`): its configuration space, which
/// holds the PIRQ route control registers (the ELCR is the i8259's state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piix3State {
    /// Layout version, [`PIIX3_STATE_VERSION`].
    pub version: u32,
    /// Configuration space.
    pub config: ConfigSpaceState,
}

fn check_piix3_version(what: &str, version: u32) -> vmkit_pci::Result<()> {
    if version != PIIX3_STATE_VERSION {
        return Err(vmkit_pci::Error::InvalidState(format!(
            "{what} state version {version} is not supported (this build reads version \
             {PIIX3_STATE_VERSION})"
        )));
    }
    Ok(())
}

impl Piix3 {
    /// The bridge's state now.
    pub fn state(&self) -> Piix3State {
        Piix3State {
            version: PIIX3_STATE_VERSION,
            config: self.config.state(),
        }
    }

    /// Takes `state` and tells the [`PirqListener`] all four PIRQ routes (so INTx steering
    /// is what the restored registers say). Another version or another function's
    /// configuration is refused and nothing changes.
    pub fn restore(&mut self, state: &Piix3State) -> vmkit_pci::Result<()> {
        check_piix3_version("PIIX3", state.version)?;
        self.config.restore(&state.config)?;
        if let Some(listener) = &self.listener {
            for pirq in 0..PIRQ_COUNT {
                listener.pirq_changed(pirq, self.route(pirq));
            }
        }
        Ok(())
    }
}

impl Piix3Ide {
    /// The IDE function's state now (its configuration space: BAR4, command).
    pub fn state(&self) -> Piix3State {
        Piix3State {
            version: PIIX3_STATE_VERSION,
            config: self.config.state(),
        }
    }

    /// Takes `state` (the bus maps BAR4 on its next region update).
    pub fn restore(&mut self, state: &Piix3State) -> vmkit_pci::Result<()> {
        check_piix3_version("PIIX3 IDE", state.version)?;
        self.config.restore(&state.config)
    }
}
