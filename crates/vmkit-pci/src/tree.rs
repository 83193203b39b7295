//! A [`RegionMapper`] over vmkit-memory's region tree, as QEMU's `pci_update_mappings`: a
//! BAR becomes an I/O region in the memory (or port) address space, and the bus entry that
//! dispatches to it follows from the flat view through a [`MemoryListener`].
//!
//! Because the BAR is a region, every other listener sees it too: the KVM listener keeps its
//! memory slots consistent around it, and (once queues register them) ioeventfds on the
//! region follow it when the guest moves the BAR. Overlaps resolve as QEMU resolves them:
//! RAM (priority 0) hides a BAR placed over it (BARs are at [`PCI_BAR_PRIORITY`]), and of
//! two overlapping BARs the one mapped last shows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use vm_device::bus::{MmioAddress, MmioAddressOffset, PioAddress, PioAddressOffset};
use vm_device::{DeviceMmio, DevicePio};
use vmkit_bus::{MmioBus, MmioRange, PioBus, PioRange, Space};
use vmkit_memory::{AddressSpace, ListenerError, ListenerResult, MemoryListener, RegionId};
use vmkit_memory::{Section, SectionKind};

use crate::bus::lock_device;
use crate::mapper::region_name;
use crate::{DevFn, MapError, Mapping, RegionIndex, RegionMapper, SharedPciDevice};

/// Priority of BAR regions in their address space's root: below RAM and ROM (0), as QEMU's
/// PCI address space sits below system RAM.
pub const PCI_BAR_PRIORITY: i32 = -1;

/// What one BAR region dispatches to.
#[derive(Clone)]
struct Handler {
    device: SharedPciDevice,
    region: RegionIndex,
}

type Handlers = Arc<Mutex<HashMap<RegionId, Handler>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation: a poisoned table is still whole.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One address space the mapper places regions in, with the bus its listener fills.
struct Target {
    space: Arc<Mutex<AddressSpace>>,
    handlers: Handlers,
}

/// Maps PCI regions into two address spaces (memory and port I/O, each an
/// [`AddressSpace`] whose root holds the BAR regions at [`PCI_BAR_PRIORITY`]) and keeps
/// the machine's [`MmioBus`] and [`PioBus`] in step with their flat views.
///
/// [`new`](Self::new) registers one dispatch listener on each space. A bus entry that
/// cannot be added (it overlaps a device put on the bus directly, outside the tree) makes the
/// listener refuse the change, the tree undoes it, and [`map`](RegionMapper::map) returns a
/// [`MapError`] naming both.
pub struct RegionTreeMapper {
    memory: Target,
    io: Target,
    /// The region of each (function, region), kept while unmapped so that what hangs on it
    /// (ioeventfds) follows the BAR when the guest moves it; `true` while mapped.
    regions: Mutex<HashMap<(DevFn, RegionIndex), Placed>>,
}

#[derive(Debug, Clone, Copy)]
struct Placed {
    space: Space,
    id: RegionId,
    size: u64,
    mapped: bool,
}

impl std::fmt::Debug for RegionTreeMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionTreeMapper")
            .field("regions", &*lock(&self.regions))
            .finish_non_exhaustive()
    }
}

impl RegionTreeMapper {
    /// A mapper placing memory BARs in `memory` (dispatched by `mmio`) and I/O BARs in
    /// `io` (dispatched by `pio`). Registers the dispatch listeners; fails if a space
    /// refuses a listener.
    pub fn new(
        memory: Arc<Mutex<AddressSpace>>,
        mmio: MmioBus,
        io: Arc<Mutex<AddressSpace>>,
        pio: PioBus,
    ) -> vmkit_memory::Result<Self> {
        let memory_handlers = Handlers::default();
        let io_handlers = Handlers::default();
        lock(&memory).register_listener(Box::new(BusDispatchListener {
            bus: DispatchBus::Mmio(mmio),
            handlers: Arc::clone(&memory_handlers),
        }))?;
        lock(&io).register_listener(Box::new(BusDispatchListener {
            bus: DispatchBus::Pio(pio),
            handlers: Arc::clone(&io_handlers),
        }))?;
        Ok(Self {
            memory: Target {
                space: memory,
                handlers: memory_handlers,
            },
            io: Target {
                space: io,
                handlers: io_handlers,
            },
            regions: Mutex::new(HashMap::new()),
        })
    }

    fn target(&self, space: Space) -> &Target {
        match space {
            Space::Mmio => &self.memory,
            Space::Pio => &self.io,
        }
    }

    /// The region a mapped PCI region is in its address space.
    pub fn region_of(&self, devfn: DevFn, region: RegionIndex) -> Option<(Space, RegionId)> {
        lock(&self.regions)
            .get(&(devfn, region))
            .filter(|p| p.mapped)
            .map(|p| (p.space, p.id))
    }

    /// The region that stands for a PCI region once it has been mapped, mapped now or not:
    /// the one to hang ioeventfds on (they follow it wherever the guest moves the BAR).
    pub fn region_for(&self, devfn: DevFn, region: RegionIndex) -> Option<(Space, RegionId)> {
        lock(&self.regions)
            .get(&(devfn, region))
            .map(|p| (p.space, p.id))
    }

    /// Destroys the regions of `devfn` (its function left the bus): unmapped first.
    pub fn forget(&self, devfn: DevFn) {
        let gone: Vec<((DevFn, RegionIndex), Placed)> = {
            let mut regions = lock(&self.regions);
            let keys: Vec<_> = regions.keys().filter(|k| k.0 == devfn).copied().collect();
            keys.into_iter()
                .filter_map(|k| regions.remove(&k).map(|p| (k, p)))
                .collect()
        };
        for (_, placed) in gone {
            self.destroy(placed);
        }
    }

    fn destroy(&self, placed: Placed) {
        let target = self.target(placed.space);
        let mut space = lock(&target.space);
        if placed.mapped {
            let root = space.root();
            let _ = space.remove_subregion(root, placed.id);
        }
        let _ = space.destroy_region(placed.id);
        lock(&target.handlers).remove(&placed.id);
    }

    /// The address space memory BARs go in.
    pub fn memory_space(&self) -> &Arc<Mutex<AddressSpace>> {
        &self.memory.space
    }

    /// The address space I/O BARs go in.
    pub fn io_space(&self) -> &Arc<Mutex<AddressSpace>> {
        &self.io.space
    }
}

impl RegionMapper for RegionTreeMapper {
    fn map(
        &self,
        devfn: DevFn,
        region: RegionIndex,
        mapping: Mapping,
        device: &SharedPciDevice,
    ) -> Result<(), MapError> {
        let fail = |reason: String| MapError {
            devfn,
            region,
            mapping,
            reason,
        };
        let key = (devfn, region);
        // Reuse the region of an earlier mapping of the same size; a different size (the
        // function was replaced) gets a new one.
        let existing = lock(&self.regions).get(&key).copied();
        let reuse = existing.filter(|p| p.space == mapping.space && p.size == mapping.size);
        if let Some(old) = existing.filter(|_| reuse.is_none()) {
            lock(&self.regions).remove(&key);
            self.destroy(old);
        }
        let target = self.target(mapping.space);
        let mut space = lock(&target.space);
        let id = match reuse {
            Some(p) if p.mapped => return Ok(()),
            Some(p) => p.id,
            None => {
                let id = space
                    .new_io(&region_name(devfn, region), mapping.size)
                    .map_err(|e| fail(e.to_string()))?;
                lock(&self.regions).insert(
                    key,
                    Placed {
                        space: mapping.space,
                        id,
                        size: mapping.size,
                        mapped: false,
                    },
                );
                id
            }
        };
        lock(&target.handlers).insert(
            id,
            Handler {
                device: Arc::clone(device),
                region,
            },
        );
        let root = space.root();
        space
            .add_subregion_overlap(root, mapping.addr, id, PCI_BAR_PRIORITY)
            .map_err(|e| fail(e.to_string()))?;
        if let Some(p) = lock(&self.regions).get_mut(&key) {
            p.mapped = true;
        }
        Ok(())
    }

    fn unmap(&self, devfn: DevFn, region: RegionIndex, _mapping: Mapping) {
        let placed = {
            let mut regions = lock(&self.regions);
            match regions.get_mut(&(devfn, region)) {
                Some(p) if p.mapped => {
                    p.mapped = false;
                    *p
                }
                _ => return,
            }
        };
        let target = self.target(placed.space);
        let mut space = lock(&target.space);
        let root = space.root();
        // Removing a subregion only fails if a listener refuses; the dispatch listener never
        // refuses a delete, so the region is gone from the view either way. The region
        // itself stays for the next mapping.
        let _ = space.remove_subregion(root, placed.id);
    }
}

/// The bus a [`BusDispatchListener`] fills.
#[derive(Debug, Clone)]
enum DispatchBus {
    /// Memory space: sections become [`MmioBus`] ranges.
    Mmio(MmioBus),
    /// Port space: sections become [`PioBus`] ranges (addresses above 0xFFFF are refused).
    Pio(PioBus),
}

/// A [`MemoryListener`] that turns the I/O sections of a [`RegionTreeMapper`]'s BAR regions
/// into bus ranges (other I/O sections are left to whoever owns them). A region split in
/// pieces by an overlapping one gets one bus range per visible piece, each dispatching with
/// its offset in the region.
struct BusDispatchListener {
    bus: DispatchBus,
    handlers: Handlers,
}

/// One visible piece of a BAR region on the bus.
struct BarPiece {
    handler: Handler,
    /// Offset in the region of the piece's first byte.
    offset: u64,
}

impl BarPiece {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let offset = self.offset.saturating_add(offset);
        lock_device(&self.handler.device).region_read(self.handler.region, offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let offset = self.offset.saturating_add(offset);
        lock_device(&self.handler.device).region_write(self.handler.region, offset, data);
    }
}

impl DevicePio for BarPiece {
    fn pio_read(&self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(u64::from(offset), data);
    }

    fn pio_write(&self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(u64::from(offset), data);
    }
}

impl DeviceMmio for BarPiece {
    fn mmio_read(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn mmio_write(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(offset, data);
    }
}

impl BusDispatchListener {
    fn handler(&self, section: &Section) -> Option<Handler> {
        if section.kind != SectionKind::Io {
            return None;
        }
        lock(&self.handlers).get(&section.region).cloned()
    }
}

impl MemoryListener for BusDispatchListener {
    fn name(&self) -> &str {
        match self.bus {
            DispatchBus::Mmio(_) => "pci mmio dispatch",
            DispatchBus::Pio(_) => "pci pio dispatch",
        }
    }

    fn region_add(&mut self, section: &Section) -> ListenerResult {
        let Some(handler) = self.handler(section) else {
            return Ok(());
        };
        let piece = Arc::new(BarPiece {
            handler,
            offset: section.offset_in_region,
        });
        let name = section.name.to_string();
        let inserted = match &self.bus {
            DispatchBus::Mmio(bus) => MmioRange::new(section.guest_addr, section.size)
                .and_then(|range| bus.insert(range, name, piece)),
            DispatchBus::Pio(bus) => {
                let (Ok(base), Ok(size)) = (
                    u16::try_from(section.guest_addr),
                    u16::try_from(section.size),
                ) else {
                    return Err(ListenerError::new(format!(
                        "{} at {:#x} (size {:#x}) does not fit in the 16-bit port space",
                        section.name, section.guest_addr, section.size
                    )));
                };
                PioRange::new(base, size).and_then(|range| bus.insert(range, name, piece))
            }
        };
        inserted.map_err(|e| ListenerError::new(e.to_string()))
    }

    fn region_del(&mut self, section: &Section) -> ListenerResult {
        if self.handler(section).is_none() {
            return Ok(());
        }
        match &self.bus {
            DispatchBus::Mmio(bus) => drop(bus.remove(section.guest_addr)),
            DispatchBus::Pio(bus) => {
                if let Ok(port) = u16::try_from(section.guest_addr) {
                    drop(bus.remove(port));
                }
            }
        }
        Ok(())
    }
}
