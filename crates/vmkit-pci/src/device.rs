//! The trait every PCI function implements.

use crate::{ConfigSpace, Mapping, RegionIndex};

/// One PCI function as the bus sees it: a configuration space plus the regions its BARs
/// (and any chipset windows) decode.
///
/// Only [`config`](Self::config) and [`config_mut`](Self::config_mut) are required; the rest
/// default to plain configuration-space behaviour. Guest accesses must never panic.
///
/// The bus calls these methods with the function's mutex held (and, for configuration
/// accesses, the bus's own lock), so they must not call back into the [`PciBus`](crate::PciBus).
pub trait PciDevice: Send {
    /// The function's configuration space.
    fn config(&self) -> &ConfigSpace;

    /// The function's configuration space, mutably.
    fn config_mut(&mut self) -> &mut ConfigSpace;

    /// A guest configuration read of `data.len()` bytes at `offset` (0..=0xff). The default
    /// reads the [`ConfigSpace`]; override to compute registers on the fly.
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config().read(offset, data)
    }

    /// A guest configuration write at `offset`. The default writes the [`ConfigSpace`]
    /// (honouring its masks); override to react to register writes. After it returns the
    /// bus calls [`regions`](Self::regions) and remaps what changed.
    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config_mut().write(offset, data)
    }

    /// Every region the function decodes now. The default is the BARs and ROM
    /// [`ConfigSpace::regions`] decodes; chipset functions add [`RegionIndex::Custom`]
    /// windows (e.g. PIIX4's power-management I/O block at PMBA).
    fn regions(&self) -> Vec<(RegionIndex, Mapping)> {
        self.config().regions()
    }

    /// A guest read of `data.len()` bytes at `offset` within `region`. Default: all ones.
    fn region_read(&mut self, region: RegionIndex, offset: u64, data: &mut [u8]) {
        let _ = (region, offset);
        data.fill(0xff);
    }

    /// A guest write at `offset` within `region`. Default: ignored.
    fn region_write(&mut self, region: RegionIndex, offset: u64, data: &[u8]) {
        let _ = (region, offset, data);
    }

    /// Back to power-on state (a machine reset or PCI reset). Default:
    /// [`ConfigSpace::reset`].
    fn reset(&mut self) {
        self.config_mut().reset()
    }
}
