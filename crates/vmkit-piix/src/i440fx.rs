//! The i440FX host bridge (82441FX PMC) at 00:00.0: identity, the PAM registers that route
//! the shadow segments 0xC0000-0xFFFFF, and SMRAM.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vmkit_pci::{ConfigSpace, ConfigSpaceState, PciDevice};

/// Intel.
pub const VENDOR_INTEL: u16 = 0x8086;
/// 82441FX device id.
pub const I440FX_DEVICE_ID: u16 = 0x1237;
/// Subsystem vendor QEMU gives every function (Red Hat / Qumranet); SeaBIOS checks it on
/// 00:00.0 to know it runs on QEMU.
pub const QEMU_SUBSYSTEM_VENDOR: u16 = 0x1af4;
/// Subsystem id QEMU gives every function ("QEMU virtual machine").
pub const QEMU_SUBSYSTEM_ID: u16 = 0x1100;
/// Revision QEMU's pc reports.
pub const I440FX_REVISION: u8 = 0x02;
/// First PAM register (PAM0).
pub const PAM_BASE: u16 = 0x59;
/// Number of PAM registers (PAM0-PAM6).
pub const PAM_COUNT: u16 = 7;
/// The SMRAM control register.
pub const SMRAM: u16 = 0x72;
/// SMRAM's power-on value: C_BASE_SEG = 010b (SMRAM at 0xA0000).
pub const SMRAM_DEFAULT: u8 = 0x02;
/// SMRAM: D_OPEN, SMRAM visible outside SMM.
pub const SMRAM_D_OPEN: u8 = 0x40;
/// SMRAM: D_CLS.
pub const SMRAM_D_CLS: u8 = 0x20;
/// SMRAM: D_LCK, locks D_OPEN at 0 and the register until reset.
pub const SMRAM_D_LCK: u8 = 0x10;
/// SMRAM: G_SMRAME, SMRAM enabled.
pub const SMRAM_G_SMRAME: u8 = 0x08;

/// One PAM segment: guest-physical base and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PamSegment {
    /// First address.
    pub base: u64,
    /// Bytes.
    pub size: u64,
}

/// Where a segment's accesses go, from its two attribute bits (RE bit 0, WE bit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PamMode {
    /// Reads and writes go to PCI (the BIOS ROM or nothing): the power-on state.
    #[default]
    Pci,
    /// Reads from RAM, writes to PCI.
    ReadOnly,
    /// Reads from PCI, writes to RAM.
    WriteOnly,
    /// Reads and writes to RAM.
    ReadWrite,
}

impl PamMode {
    /// The mode of a 2-bit attribute field.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => PamMode::Pci,
            1 => PamMode::ReadOnly,
            2 => PamMode::WriteOnly,
            _ => PamMode::ReadWrite,
        }
    }

    /// Whether reads see RAM.
    pub fn reads_ram(self) -> bool {
        matches!(self, PamMode::ReadOnly | PamMode::ReadWrite)
    }

    /// Whether writes go to RAM.
    pub fn writes_ram(self) -> bool {
        matches!(self, PamMode::WriteOnly | PamMode::ReadWrite)
    }
}

/// Told about every PAM segment whose mode changes (and, at construction and reset, about
/// all of them), on the thread of the guest's configuration write.
pub trait PamListener: Send + Sync {
    /// `segment` now routes as `mode`.
    fn pam_changed(&self, segment: PamSegment, mode: PamMode);
}

/// A listener that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPam;

impl PamListener for NoPam {
    fn pam_changed(&self, _segment: PamSegment, _mode: PamMode) {}
}

/// The 13 segments in register order: PAM0's high nibble is 0xF0000-0xFFFFF (its low
/// nibble is reserved), then PAM1-PAM6 each hold two 16 KiB segments from 0xC0000 up, low
/// nibble first.
pub fn pam_segments() -> [PamSegment; 13] {
    let mut segments = [PamSegment {
        base: 0xf_0000,
        size: 0x1_0000,
    }; 13];
    for (i, segment) in segments.iter_mut().enumerate().skip(1) {
        *segment = PamSegment {
            base: 0xc_0000 + (i as u64 - 1) * 0x4000,
            size: 0x4000,
        };
    }
    segments
}

/// The (register offset, nibble shift) that holds segment `index` of [`pam_segments`].
fn segment_field(index: usize) -> (u16, u8) {
    if index == 0 {
        (PAM_BASE, 4)
    } else {
        let i = index as u16 - 1;
        (PAM_BASE + 1 + i / 2, if i % 2 == 0 { 0 } else { 4 })
    }
}

/// The i440FX host bridge function.
pub struct I440fx {
    config: ConfigSpace,
    listener: Arc<dyn PamListener>,
    modes: [PamMode; 13],
}

impl std::fmt::Debug for I440fx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I440fx")
            .field("modes", &self.modes)
            .field("smram", &self.config.byte(SMRAM))
            .finish_non_exhaustive()
    }
}

impl I440fx {
    /// A host bridge in its power-on state; `listener` is told the (all-PCI) state at once.
    pub fn new(listener: Arc<dyn PamListener>) -> Self {
        let mut config = ConfigSpace::new(
            VENDOR_INTEL,
            I440FX_DEVICE_ID,
            0x06,
            0x00,
            0x00,
            I440FX_REVISION,
        );
        config.set_subsystem(QEMU_SUBSYSTEM_VENDOR, QEMU_SUBSYSTEM_ID);
        for off in PAM_BASE..PAM_BASE + PAM_COUNT {
            config.set_write_mask_byte(off, 0xff);
        }
        // PAM0's low nibble is reserved.
        config.set_write_mask_byte(PAM_BASE, 0xf0);
        config.set_write_mask_byte(
            SMRAM,
            SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME,
        );
        let mut bridge = Self {
            config,
            listener,
            modes: [PamMode::Pci; 13],
        };
        bridge.power_on();
        bridge
    }

    fn power_on(&mut self) {
        self.config.reset();
        self.config.set_byte(SMRAM, SMRAM_DEFAULT);
        self.config.set_write_mask_byte(
            SMRAM,
            SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME,
        );
        self.modes = [PamMode::Pci; 13];
        for segment in pam_segments() {
            self.listener.pam_changed(segment, PamMode::Pci);
        }
    }

    /// The current mode of every segment, in [`pam_segments`] order.
    pub fn modes(&self) -> [PamMode; 13] {
        self.modes
    }

    /// Whether SMRAM is open outside SMM (D_OPEN).
    pub fn smram_open(&self) -> bool {
        self.config.byte(SMRAM) & SMRAM_D_OPEN != 0
    }

    fn update_pam(&mut self) {
        for (index, segment) in pam_segments().into_iter().enumerate() {
            let (offset, shift) = segment_field(index);
            let mode = PamMode::from_bits(self.config.byte(offset) >> shift);
            if mode != self.modes[index] {
                self.modes[index] = mode;
                self.listener.pam_changed(segment, mode);
            }
        }
    }

    fn update_smram(&mut self, before: u8) {
        let mut value = self.config.byte(SMRAM);
        if before & SMRAM_D_LCK != 0 {
            // Locked: only a reset opens it again.
            value = before;
        } else if value & SMRAM_D_LCK != 0 {
            // Setting D_LCK closes SMRAM and freezes the register.
            value &= !SMRAM_D_OPEN;
            self.config.set_write_mask_byte(SMRAM, 0);
        }
        self.config.set_byte(SMRAM, value);
    }
}

impl PciDevice for I440fx {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let smram_before = self.config.byte(SMRAM);
        self.config.write(offset, data);
        let end = offset.saturating_add(data.len() as u16);
        if offset < PAM_BASE + PAM_COUNT && end > PAM_BASE {
            self.update_pam();
        }
        if offset <= SMRAM && end > SMRAM {
            self.update_smram(smram_before);
        }
    }

    fn reset(&mut self) {
        self.power_on();
    }
}

/// The layout version of [`I440fxState`].
pub const I440FX_STATE_VERSION: u32 = 1;

/// The host bridge as plain data (QEMU's `vmstate_i440fx`): its configuration space, which
/// holds PAM0-PAM6 and SMRAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct I440fxState {
    /// Layout version, [`I440FX_STATE_VERSION`].
    pub version: u32,
    /// Configuration space.
    pub config: ConfigSpaceState,
}

impl I440fx {
    /// The bridge's state now.
    pub fn state(&self) -> I440fxState {
        I440fxState {
            version: I440FX_STATE_VERSION,
            config: self.config.state(),
        }
    }

    /// Takes `state` and tells the [`PamListener`] every segment's mode (all 13, so the
    /// machine's aliases are what the restored PAM registers say whatever they were); a
    /// locked SMRAM (D_LCK) stays locked. Another version or another function's
    /// configuration is refused and nothing changes.
    pub fn restore(&mut self, state: &I440fxState) -> vmkit_pci::Result<()> {
        if state.version != I440FX_STATE_VERSION {
            return Err(vmkit_pci::Error::InvalidState(format!(
                "i440FX state version {} is not supported (this build reads version \
                 {I440FX_STATE_VERSION})",
                state.version
            )));
        }
        self.config.restore(&state.config)?;
        let smram_mask = if self.config.byte(SMRAM) & SMRAM_D_LCK != 0 {
            0
        } else {
            SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME
        };
        self.config.set_write_mask_byte(SMRAM, smram_mask);
        for (index, segment) in pam_segments().into_iter().enumerate() {
            let (offset, shift) = segment_field(index);
            let mode = PamMode::from_bits(self.config.byte(offset) >> shift);
            self.modes[index] = mode;
            self.listener.pam_changed(segment, mode);
        }
        Ok(())
    }
}
