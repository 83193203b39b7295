//! The pc machine's KVM notifiers for PCI devices, as QEMU's `kvm-all.c` and
//! `virtio-pci.c` wire them: the memory and I/O address spaces get KVM ioeventfd listeners,
//! virtio doorbells become ioeventfds on their BAR regions (so they follow the BARs), and
//! MSI-X vectors go through GSI routes and irqfds.
//!
//! - [`MachineNotifiers::install`] registers a [`KvmIoeventfdListener`] on the memory space
//!   (MMIO) and on the chipset's `io` space (PIO), and, with the in-kernel irqchip, keeps
//!   the VM's [`GsiRouting`].
//! - [`DoorbellHook`] is a virtio transport's [`NotifierHook`]: at `DRIVER_OK` it hangs one
//!   ioeventfd per doorbell on the region the [`RegionTreeMapper`] keeps for the BAR
//!   (`add_eventfd`; the modern doorbell with no length, the legacy `QUEUE_NOTIFY` port with
//!   2 bytes and the queue index as datamatch), and takes them off at reset.
//! - [`KvmMsiRoutes`] is a function's [`MsiSignal`]: each vector the guest makes deliverable
//!   gets an MSI route and an irqfd on its GSI; the guest rewriting the table entry updates
//!   the route; a device thread's interrupt is one irqfd write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vmkit_bus::Space;
use vmkit_hw::lock;
use vmkit_kvm::{GsiRouting, IoeventfdSpace, KvmIoeventfdListener, MsiRoute, Vm};
use vmkit_memory::{AddressSpace, RegionId};
use vmkit_pci::{DevFn, MsiMessage, MsiSignal, RegionTreeMapper};
use vmkit_virtio::{NotifierHook, QueueNotify, VirtioPciBuilder};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// How interrupts and doorbells went, machine-wide (for statistics and tests).
#[derive(Debug, Default)]
pub struct NotifierStats {
    /// MSI-X messages delivered by writing the vector's irqfd.
    pub irqfd_signals: AtomicU64,
    /// MSI-X messages delivered with `KVM_SIGNAL_MSI` (no route for the vector yet, or its
    /// route could not be set).
    pub direct_signals: AtomicU64,
    /// Doorbells that could not become ioeventfds (their BAR was never mapped, or KVM
    /// refused): they stay on the exit path.
    pub doorbells_on_exit_path: AtomicU64,
}

/// The machine's notifier plumbing (see the module docs).
pub struct MachineNotifiers {
    vm: Arc<Vm>,
    mapper: Arc<RegionTreeMapper>,
    routing: Option<Arc<GsiRouting>>,
    mmio_ioeventfds: Arc<AtomicUsize>,
    pio_ioeventfds: Arc<AtomicUsize>,
    stats: Arc<NotifierStats>,
}

impl std::fmt::Debug for MachineNotifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineNotifiers")
            .field("ioeventfds", &self.ioeventfd_count())
            .field("msi_routes", &self.msi_route_count())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl MachineNotifiers {
    /// Registers the KVM ioeventfd listeners on `memory` and on the mapper's I/O space;
    /// `irqchip`: the VM has the in-kernel irqchip, so MSI-X goes through GSI routes.
    pub fn install(
        vm: &Arc<Vm>,
        memory: &Arc<Mutex<AddressSpace>>,
        mapper: &Arc<RegionTreeMapper>,
        irqchip: bool,
    ) -> vmkit_memory::Result<Arc<Self>> {
        let mmio = KvmIoeventfdListener::new(Arc::clone(vm), IoeventfdSpace::Mmio);
        let pio = KvmIoeventfdListener::new(Arc::clone(vm), IoeventfdSpace::Pio);
        let (mmio_ioeventfds, pio_ioeventfds) = (mmio.count_handle(), pio.count_handle());
        lock(memory).register_listener(Box::new(mmio))?;
        lock(mapper.io_space()).register_listener(Box::new(pio))?;
        Ok(Arc::new(Self {
            vm: Arc::clone(vm),
            mapper: Arc::clone(mapper),
            routing: irqchip.then(|| Arc::new(GsiRouting::new(Arc::clone(vm)))),
            mmio_ioeventfds,
            pio_ioeventfds,
            stats: Arc::default(),
        }))
    }

    /// Puts a virtio function at `devfn` on these notifiers: its doorbells become
    /// ioeventfds (if the builder's `ioeventfd` is on) and, with the in-kernel irqchip, its
    /// MSI-X vectors go through GSI routes and irqfds.
    pub fn configure(&self, builder: VirtioPciBuilder, devfn: DevFn) -> VirtioPciBuilder {
        let builder = builder.notifier_hook(Arc::new(DoorbellHook {
            mapper: Arc::clone(&self.mapper),
            devfn,
            placed: Mutex::new(Vec::new()),
            stats: Arc::clone(&self.stats),
        }));
        match &self.routing {
            Some(routing) => builder.msi(Arc::new(KvmMsiRoutes::new(
                Arc::clone(routing),
                Arc::clone(&self.stats),
            ))),
            None => builder,
        }
    }

    /// How many ioeventfds KVM holds for the machine (memory and port space).
    pub fn ioeventfd_count(&self) -> usize {
        self.mmio_ioeventfds.load(Ordering::Acquire) + self.pio_ioeventfds.load(Ordering::Acquire)
    }

    /// How many port-space (legacy virtio) ioeventfds KVM holds.
    pub fn pio_ioeventfd_count(&self) -> usize {
        self.pio_ioeventfds.load(Ordering::Acquire)
    }

    /// How many MSI routes the GSI routing table holds (0 without the in-kernel irqchip).
    pub fn msi_route_count(&self) -> usize {
        self.routing.as_ref().map_or(0, |r| r.msi_count())
    }

    /// Delivery counters.
    pub fn stats(&self) -> &NotifierStats {
        &self.stats
    }

    /// The VM.
    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }
}

/// One doorbell placed as an ioeventfd.
struct Placed {
    space: Space,
    region: RegionId,
    notify: QueueNotify,
}

/// A virtio function's [`NotifierHook`]: its doorbells become ioeventfds on the regions of
/// its BARs (see the module docs).
pub struct DoorbellHook {
    mapper: Arc<RegionTreeMapper>,
    devfn: DevFn,
    placed: Mutex<Vec<Placed>>,
    stats: Arc<NotifierStats>,
}

impl DoorbellHook {
    fn space(&self, space: Space) -> &Arc<Mutex<AddressSpace>> {
        match space {
            Space::Mmio => self.mapper.memory_space(),
            Space::Pio => self.mapper.io_space(),
        }
    }
}

impl NotifierHook for DoorbellHook {
    fn notifiers_changed(&self, notifiers: &[QueueNotify]) {
        let mut placed = lock(&self.placed);
        for old in placed.drain(..) {
            let n = &old.notify;
            let removed = lock(self.space(old.space)).del_eventfd(
                old.region,
                n.offset,
                u64::from(n.len),
                n.datamatch,
                &n.eventfd,
            );
            if let Err(e) = removed {
                eprintln!(
                    "vmkit: {} queue {}: removing its ioeventfd: {e}",
                    self.devfn, n.queue
                );
            }
        }
        for n in notifiers {
            // The region exists once the guest has mapped the BAR; a BAR never mapped has
            // no doorbell the guest could ring.
            let Some((space, region)) = self.mapper.region_for(self.devfn, n.region) else {
                self.stats
                    .doorbells_on_exit_path
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let added = lock(self.space(space)).add_eventfd(
                region,
                n.offset,
                u64::from(n.len),
                n.datamatch,
                Arc::clone(&n.eventfd),
            );
            match added {
                Ok(()) => placed.push(Placed {
                    space,
                    region,
                    notify: n.clone(),
                }),
                Err(e) => {
                    // The doorbell still works through the exit path.
                    self.stats
                        .doorbells_on_exit_path
                        .fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "vmkit: {} queue {}: no ioeventfd for its {} doorbell: {e}",
                        self.devfn, n.queue, n.region
                    );
                }
            }
        }
    }
}

/// One vector's route.
struct VectorRoute {
    gsi: u32,
    irqfd: EventFd,
    message: MsiMessage,
}

/// A PCI function's [`MsiSignal`] through KVM GSI routes and irqfds, as QEMU's
/// `kvm_irqchip_add_msi_route` + `kvm_irqchip_add_irqfd_notifier_gsi`.
///
/// A vector gets its route and irqfd the first time the guest makes it deliverable (MSI-X
/// on, function and entry unmasked: `update_vector` with a message); later table writes
/// update the route. A masked vector keeps its route: the MSI-X model does not signal it
/// (the PBA bit is set instead). [`signal`](MsiSignal::signal) writes the irqfd when the
/// route carries that message, and falls back to `KVM_SIGNAL_MSI` otherwise. Dropping it
/// (the function goes away) removes the irqfds and routes.
pub struct KvmMsiRoutes {
    routing: Arc<GsiRouting>,
    vectors: Mutex<BTreeMap<u16, VectorRoute>>,
    stats: Arc<NotifierStats>,
}

impl KvmMsiRoutes {
    /// Routes on `routing`'s VM, counting deliveries in `stats`.
    pub fn new(routing: Arc<GsiRouting>, stats: Arc<NotifierStats>) -> Self {
        Self {
            routing,
            vectors: Mutex::new(BTreeMap::new()),
            stats,
        }
    }

    /// The GSI vector `vector` is routed on, if it has a route.
    pub fn gsi(&self, vector: u16) -> Option<u32> {
        lock(&self.vectors).get(&vector).map(|r| r.gsi)
    }

    fn add_route(&self, message: MsiMessage) -> vmkit_kvm::Result<VectorRoute> {
        let gsi = self.routing.add_msi(MsiRoute {
            address: message.address,
            data: message.data,
        })?;
        let irqfd = match EventFd::new(EFD_NONBLOCK) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = self.routing.remove_msi(gsi);
                return Err(vmkit_kvm::Error::InvalidRoute(format!(
                    "cannot create an irqfd: {e}"
                )));
            }
        };
        if let Err(e) = self.routing.vm().register_irqfd(&irqfd, gsi) {
            let _ = self.routing.remove_msi(gsi);
            return Err(e);
        }
        Ok(VectorRoute {
            gsi,
            irqfd,
            message,
        })
    }

    fn signal_directly(&self, vector: u16, message: MsiMessage) {
        self.stats.direct_signals.fetch_add(1, Ordering::Relaxed);
        let msi = kvm_bindings::kvm_msi {
            address_lo: message.address as u32,
            address_hi: (message.address >> 32) as u32,
            data: message.data,
            ..Default::default()
        };
        if let Err(e) = self.routing.vm().as_raw().signal_msi(msi) {
            eprintln!("vmkit: MSI-X vector {vector} ({message}): KVM_SIGNAL_MSI failed: {e}");
        }
    }
}

impl MsiSignal for KvmMsiRoutes {
    fn signal(&self, vector: u16, message: MsiMessage) {
        {
            let vectors = lock(&self.vectors);
            if let Some(route) = vectors.get(&vector).filter(|r| r.message == message) {
                // Counted first: the guest may see the interrupt before this thread runs on.
                self.stats.irqfd_signals.fetch_add(1, Ordering::Relaxed);
                if route.irqfd.write(1).is_ok() {
                    return;
                }
                self.stats.irqfd_signals.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.signal_directly(vector, message);
    }

    fn update_vector(&self, vector: u16, route: Option<MsiMessage>) {
        let Some(message) = route else {
            return;
        };
        let mut vectors = lock(&self.vectors);
        match vectors.get_mut(&vector) {
            Some(existing) => {
                let updated = self.routing.update_msi(
                    existing.gsi,
                    MsiRoute {
                        address: message.address,
                        data: message.data,
                    },
                );
                match updated {
                    Ok(()) => existing.message = message,
                    Err(e) => eprintln!(
                        "vmkit: MSI-X vector {vector}: updating GSI {} to {message}: {e} \
                         (delivered with KVM_SIGNAL_MSI meanwhile)",
                        existing.gsi
                    ),
                }
            }
            None => match self.add_route(message) {
                Ok(route) => {
                    vectors.insert(vector, route);
                }
                Err(e) => eprintln!(
                    "vmkit: MSI-X vector {vector}: no GSI route ({e}); delivered with \
                     KVM_SIGNAL_MSI"
                ),
            },
        }
    }
}

impl Drop for KvmMsiRoutes {
    fn drop(&mut self) {
        let vectors = std::mem::take(&mut *lock(&self.vectors));
        for route in vectors.into_values() {
            let _ = self.routing.vm().unregister_irqfd(&route.irqfd, route.gsi);
            let _ = self.routing.remove_msi(route.gsi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msix_vectors_get_a_route_and_an_irqfd_and_follow_table_writes() {
        vmkit_testutil::require_kvm!();
        let kvm = vmkit_kvm::KvmSystem::open().unwrap();
        let vm = Arc::new(kvm.create_vm().unwrap());
        vm.create_irqchip().unwrap();
        let routing = Arc::new(GsiRouting::new(Arc::clone(&vm)));
        let stats = Arc::new(NotifierStats::default());
        let routes = KvmMsiRoutes::new(Arc::clone(&routing), Arc::clone(&stats));
        let first = MsiMessage {
            address: 0xfee0_0000,
            data: 0x41,
        };
        // Before the guest made the vector deliverable: KVM_SIGNAL_MSI.
        routes.signal(0, first);
        assert_eq!(stats.direct_signals.load(Ordering::Relaxed), 1);
        routes.update_vector(0, Some(first));
        let gsi = routes.gsi(0).expect("a route");
        assert_eq!(routing.msi_route(gsi).map(|r| r.data), Some(0x41));
        routes.signal(0, first);
        assert_eq!(stats.irqfd_signals.load(Ordering::Relaxed), 1);
        // The guest rewrites the entry: same GSI, new message.
        let second = MsiMessage {
            address: 0xfee0_1000,
            data: 0x42,
        };
        routes.update_vector(0, Some(second));
        assert_eq!(routes.gsi(0), Some(gsi));
        assert_eq!(routing.msi_route(gsi).map(|r| r.data), Some(0x42));
        routes.signal(0, second);
        assert_eq!(stats.irqfd_signals.load(Ordering::Relaxed), 2);
        // Masking keeps the route; a message the route does not carry goes directly.
        routes.update_vector(0, None);
        assert_eq!(routes.gsi(0), Some(gsi));
        routes.signal(0, first);
        assert_eq!(stats.direct_signals.load(Ordering::Relaxed), 2);
        routes.update_vector(1, Some(first));
        assert_eq!(routing.msi_count(), 2);
        drop(routes);
        assert_eq!(routing.msi_count(), 0);
    }
}
