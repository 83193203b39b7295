//! PCI bus 0: functions by [`DevFn`], configuration accesses and region bookkeeping.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{DevFn, Error, Mapping, PciDevice, RegionIndex, Result};

/// A PCI function shared between the bus and the regions it decodes.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Locks a device, recovering from a poisoned mutex: a device that panicked in one access
/// still answers the next (its state is whatever the panicking access left).
pub(crate) fn lock_device<'a>(
    device: &'a Mutex<dyn PciDevice + 'static>,
) -> MutexGuard<'a, dyn PciDevice + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

/// Puts a function's regions into the machine's address spaces.
///
/// The [`PciBus`] calls [`map`](Self::map) when a region starts decoding (or moves) and
/// [`unmap`](Self::unmap) when it stops (or before it moves). A mapper must not call back
/// into the bus (it runs under the bus's lock).
pub trait RegionMapper: Send + Sync {
    /// Makes `mapping` dispatch to `device`'s [`PciDevice::region_read`]/`region_write`
    /// for `region`. An error (e.g. the range overlaps something already mapped) leaves the
    /// region unmapped; the bus tries again after later configuration writes.
    fn map(
        &self,
        devfn: DevFn,
        region: RegionIndex,
        mapping: Mapping,
        device: &SharedPciDevice,
    ) -> std::result::Result<(), MapError>;

    /// Removes a mapping `map` made.
    fn unmap(&self, devfn: DevFn, region: RegionIndex, mapping: Mapping);
}

/// Why a [`RegionMapper`] could not map a region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot map {devfn} {region} at {space} {addr:#x} (size {size:#x}): {reason}", space = mapping.space, addr = mapping.addr, size = mapping.size)]
pub struct MapError {
    /// The function.
    pub devfn: DevFn,
    /// Its region.
    pub region: RegionIndex,
    /// Where it wanted to go.
    pub mapping: Mapping,
    /// What went wrong (the bus's own error message, e.g. which device it overlaps).
    pub reason: String,
}

struct Slot {
    device: SharedPciDevice,
    /// What the function decoded after its last config write or reset.
    wanted: BTreeMap<RegionIndex, Mapping>,
    /// What the mapper has actually mapped (a subset of `wanted`: failed maps are missing).
    mapped: BTreeMap<RegionIndex, Mapping>,
    /// Wanted regions whose map failed and was reported (reported once per placement).
    failed: BTreeMap<RegionIndex, Mapping>,
}

struct State {
    slots: BTreeMap<DevFn, Slot>,
    mapper: Option<Arc<dyn RegionMapper>>,
    /// Failures of the latest mapping attempts, newest last (bounded).
    map_errors: Vec<MapError>,
}

/// Most map failures kept for [`PciBus::map_errors`].
const MAX_MAP_ERRORS: usize = 64;

/// PCI bus 0. Cloning gives another handle to the same bus (for the host bridge, the
/// machine's reset path, hot-plug).
///
/// Every method takes `&self`; one internal lock serialises configuration accesses, then
/// the function's own mutex is taken for the access itself. Region accesses (BAR dispatch
/// through a [`BusRegionMapper`](crate::BusRegionMapper)) take only the function's mutex.
#[derive(Clone)]
pub struct PciBus {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_map()
            .entries(state.slots.iter().map(|(d, s)| (d.to_string(), &s.mapped)))
            .finish()
    }
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

impl PciBus {
    /// A bus without a mapper: it keeps the bookkeeping ([`mapped`](Self::mapped)) but maps
    /// nothing anywhere.
    pub fn new() -> Self {
        PciBus {
            state: Arc::new(Mutex::new(State {
                slots: BTreeMap::new(),
                mapper: None,
                map_errors: Vec::new(),
            })),
        }
    }

    /// A bus whose regions go through `mapper`.
    pub fn with_mapper(mapper: Arc<dyn RegionMapper>) -> Self {
        let bus = Self::new();
        bus.lock().mapper = Some(mapper);
        bus
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements that could panic (only a mapper
        // could), so a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Plugs `device` in at `devfn` and maps whatever it already decodes. Fails if the slot
    /// is taken. A function other than 0 may be added first but stays invisible to the
    /// guest until function 0 of its device is present.
    pub fn add(&self, devfn: DevFn, device: SharedPciDevice) -> Result<()> {
        let mut state = self.lock();
        if state.slots.contains_key(&devfn) {
            return Err(Error::DevFnInUse { devfn });
        }
        state.slots.insert(
            devfn,
            Slot {
                device,
                wanted: BTreeMap::new(),
                mapped: BTreeMap::new(),
                failed: BTreeMap::new(),
            },
        );
        state.refresh(devfn);
        Ok(())
    }

    /// Unplugs the function at `devfn`, unmapping its regions; returns it.
    pub fn remove(&self, devfn: DevFn) -> Option<SharedPciDevice> {
        let mut state = self.lock();
        let slot = state.slots.remove(&devfn)?;
        if let Some(mapper) = &state.mapper {
            for (region, mapping) in &slot.mapped {
                mapper.unmap(devfn, *region, *mapping);
            }
        }
        state.retry_all();
        Some(slot.device)
    }

    /// The function at `devfn`, if plugged in (visible to the guest or not).
    pub fn device(&self, devfn: DevFn) -> Option<SharedPciDevice> {
        self.lock().slots.get(&devfn).map(|s| Arc::clone(&s.device))
    }

    /// The occupied device/function numbers, in order.
    pub fn devfns(&self) -> Vec<DevFn> {
        self.lock().slots.keys().copied().collect()
    }

    /// Whether the guest sees a function at `devfn`: it is plugged in and so is function 0
    /// of its device.
    pub fn is_present(&self, devfn: DevFn) -> bool {
        self.lock().present(devfn).is_some()
    }

    /// A guest configuration read at `offset` of `devfn`. An absent function reads all ones
    /// (the master abort a real host bridge turns into 0xffff_ffff).
    pub fn config_read(&self, devfn: DevFn, offset: u16, data: &mut [u8]) {
        let state = self.lock();
        match state.present(devfn) {
            Some(slot) => lock_device(&slot.device).config_read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// A guest configuration write at `offset` of `devfn`, then region remapping. Writes to
    /// an absent function are dropped.
    pub fn config_write(&self, devfn: DevFn, offset: u16, data: &[u8]) {
        let mut state = self.lock();
        let Some(slot) = state.present(devfn) else {
            return;
        };
        lock_device(&slot.device).config_write(offset, data);
        state.refresh(devfn);
    }

    /// Re-reads `devfn`'s [`regions`](PciDevice::regions) and remaps what changed: for a
    /// device whose decoding changed without a configuration write.
    pub fn update_mappings(&self, devfn: DevFn) {
        self.lock().refresh(devfn);
    }

    /// [`update_mappings`](Self::update_mappings) for every function: after their states
    /// were restored, this maps what the restored BARs decode.
    pub fn update_all_mappings(&self) {
        let mut state = self.lock();
        let devfns: Vec<DevFn> = state.slots.keys().copied().collect();
        for devfn in devfns {
            state.refresh(devfn);
        }
    }

    /// Resets every function ([`PciDevice::reset`]) and remaps (usually: unmaps) their
    /// regions.
    pub fn reset(&self) {
        let mut state = self.lock();
        let devfns: Vec<DevFn> = state.slots.keys().copied().collect();
        for devfn in &devfns {
            if let Some(slot) = state.slots.get(devfn) {
                lock_device(&slot.device).reset();
            }
        }
        for devfn in devfns {
            state.refresh(devfn);
        }
    }

    /// What the mapper has mapped for `devfn`, in region order.
    pub fn mapped(&self, devfn: DevFn) -> Vec<(RegionIndex, Mapping)> {
        self.lock().slots.get(&devfn).map_or_else(Vec::new, |s| {
            s.mapped.iter().map(|(r, m)| (*r, *m)).collect()
        })
    }

    /// The most recent map failures (newest last, at most 64), and forgets them. A region
    /// that keeps failing at the same place is reported once.
    pub fn take_map_errors(&self) -> Vec<MapError> {
        std::mem::take(&mut self.lock().map_errors)
    }
}

impl State {
    fn present(&self, devfn: DevFn) -> Option<&Slot> {
        let func0 = DevFn::new(devfn.device(), 0);
        if devfn != func0 && !self.slots.contains_key(&func0) {
            return None;
        }
        self.slots.get(&devfn)
    }

    /// Asks `devfn` for its regions, unmaps the ones that went away or moved, then maps every
    /// wanted-but-unmapped region of every function (so a region left unmapped by a
    /// conflict gets in once the conflict is gone).
    fn refresh(&mut self, devfn: DevFn) {
        let Some(slot) = self.slots.get_mut(&devfn) else {
            return;
        };
        let wanted: BTreeMap<RegionIndex, Mapping> =
            lock_device(&slot.device).regions().into_iter().collect();
        let stale: Vec<(RegionIndex, Mapping)> = slot
            .mapped
            .iter()
            .filter(|(r, m)| wanted.get(r) != Some(m))
            .map(|(r, m)| (*r, *m))
            .collect();
        for (region, mapping) in stale {
            slot.mapped.remove(&region);
            if let Some(mapper) = &self.mapper {
                mapper.unmap(devfn, region, mapping);
            }
        }
        slot.failed.retain(|r, m| wanted.get(r) == Some(m));
        slot.wanted = wanted;
        self.retry_all();
    }

    fn retry_all(&mut self) {
        let State {
            slots,
            mapper,
            map_errors,
        } = self;
        for (devfn, slot) in slots.iter_mut() {
            for (region, mapping) in &slot.wanted {
                if slot.mapped.contains_key(region) {
                    continue;
                }
                let result = match mapper {
                    Some(mapper) => mapper.map(*devfn, *region, *mapping, &slot.device),
                    None => Ok(()),
                };
                match result {
                    Ok(()) => {
                        slot.failed.remove(region);
                        slot.mapped.insert(*region, *mapping);
                    }
                    Err(e) => {
                        if slot.failed.insert(*region, *mapping) != Some(*mapping) {
                            if map_errors.len() >= MAX_MAP_ERRORS {
                                map_errors.remove(0);
                            }
                            map_errors.push(e);
                        }
                    }
                }
            }
        }
    }
}
