//! GSI routing for the in-kernel irqchip (`KVM_SET_GSI_ROUTING`): the default PIC and IOAPIC
//! routes kept, MSI routes added, updated and removed per vector (QEMU's
//! `kvm_irqchip_add_msi_route` / `kvm_irqchip_update_msi_route` / `kvm_irqchip_commit_routes`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MAX_IRQ_ROUTES,
};

use crate::error::{Error, Result};
use crate::vm::Vm;

/// Pins of KVM's IOAPIC: GSIs 0..24 are irqchip routes, MSI routes start here.
pub const IOAPIC_PINS: u32 = 24;
/// GSIs 0..16 also reach the PIC pair (pin = GSI % 8).
pub const PIC_PINS: u32 = 16;

/// An MSI route's message (address and data as the device's MSI-X table entry holds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsiRoute {
    /// The message address (x86: 0xFEEx_xxxx).
    pub address: u64,
    /// The message data.
    pub data: u32,
}

/// The VM's GSI routing table, as QEMU's `KVMState` keeps it.
///
/// KVM's table is replaced whole by every `KVM_SET_GSI_ROUTING`, so this keeps the whole
/// table: the irqchip routes KVM installs by default with `KVM_CREATE_IRQCHIP` (GSIs 0-15
/// to the PIC pair, pin GSI % 8, and GSIs 0-23 to the IOAPIC, pin = GSI; so `KVM_IRQ_LINE`
/// for ISA IRQs works as before), plus one MSI route per GSI handed out by
/// [`add_msi`](Self::add_msi), from [`IOAPIC_PINS`] up. An irqfd registered on such a GSI
/// ([`Vm::register_irqfd`]) injects that message when written, from any thread, without
/// the VMM: the guest writing the MSI-X table entry only changes the route
/// ([`update_msi`](Self::update_msi)).
///
/// Each change is committed at once; a refused commit leaves the table as it was.
#[derive(Debug)]
pub struct GsiRouting {
    vm: Arc<Vm>,
    msi: Mutex<BTreeMap<u32, MsiRoute>>,
}

fn irqchip_entry(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip, pin },
        },
        ..Default::default()
    }
}

fn msi_entry(gsi: u32, route: MsiRoute) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            msi: kvm_irq_routing_msi {
                address_lo: route.address as u32,
                address_hi: (route.address >> 32) as u32,
                data: route.data,
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

impl GsiRouting {
    /// The table of `vm` (which has an in-kernel irqchip) with only the default irqchip
    /// routes; nothing is sent to KVM until the first MSI route.
    pub fn new(vm: Arc<Vm>) -> Self {
        Self {
            vm,
            msi: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, MsiRoute>> {
        // Plain data, updated only after a successful commit.
        self.msi.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The irqchip routes KVM installs by default (`kvm_setup_default_irq_routing`).
    pub fn irqchip_entries() -> Vec<kvm_irq_routing_entry> {
        let mut entries = Vec::with_capacity((PIC_PINS + IOAPIC_PINS) as usize);
        for gsi in 0..IOAPIC_PINS {
            entries.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
            if gsi < PIC_PINS {
                let chip = if gsi < 8 {
                    KVM_IRQCHIP_PIC_MASTER
                } else {
                    KVM_IRQCHIP_PIC_SLAVE
                };
                entries.push(irqchip_entry(gsi, chip, gsi % 8));
            }
        }
        entries
    }

    fn table(msi: &BTreeMap<u32, MsiRoute>) -> Vec<kvm_irq_routing_entry> {
        let mut entries = Self::irqchip_entries();
        entries.extend(msi.iter().map(|(&gsi, &route)| msi_entry(gsi, route)));
        entries
    }

    /// Commits `next` as the table; on success it becomes the state.
    fn commit(
        &self,
        state: &mut BTreeMap<u32, MsiRoute>,
        next: BTreeMap<u32, MsiRoute>,
    ) -> Result<()> {
        self.vm.set_gsi_routing(&Self::table(&next))?;
        *state = next;
        Ok(())
    }

    /// Adds an MSI route for `route` on the lowest free GSI (from [`IOAPIC_PINS`]) and
    /// returns the GSI.
    pub fn add_msi(&self, route: MsiRoute) -> Result<u32> {
        let mut state = self.lock();
        let limit = (KVM_MAX_IRQ_ROUTES as u32).saturating_sub(PIC_PINS + IOAPIC_PINS);
        let gsi = (IOAPIC_PINS..IOAPIC_PINS + limit)
            .find(|gsi| !state.contains_key(gsi))
            .ok_or_else(|| {
                Error::InvalidRoute(format!(
                    "no free GSI: {} MSI routes in use (KVM's table holds {KVM_MAX_IRQ_ROUTES} \
                     entries)",
                    state.len()
                ))
            })?;
        let mut next = state.clone();
        next.insert(gsi, route);
        self.commit(&mut state, next)?;
        Ok(gsi)
    }

    /// Points MSI route `gsi` at a new message (the guest rewrote the vector's table entry).
    /// An unchanged message sends nothing to KVM.
    pub fn update_msi(&self, gsi: u32, route: MsiRoute) -> Result<()> {
        let mut state = self.lock();
        match state.get(&gsi) {
            None => Err(Error::InvalidRoute(format!(
                "GSI {gsi} is not an MSI route of this table"
            ))),
            Some(&current) if current == route => Ok(()),
            Some(_) => {
                let mut next = state.clone();
                next.insert(gsi, route);
                self.commit(&mut state, next)
            }
        }
    }

    /// Removes MSI route `gsi` (unregister its irqfd first).
    pub fn remove_msi(&self, gsi: u32) -> Result<()> {
        let mut state = self.lock();
        if !state.contains_key(&gsi) {
            return Err(Error::InvalidRoute(format!(
                "GSI {gsi} is not an MSI route of this table"
            )));
        }
        let mut next = state.clone();
        next.remove(&gsi);
        self.commit(&mut state, next)
    }

    /// The MSI route on `gsi`, if any.
    pub fn msi_route(&self, gsi: u32) -> Option<MsiRoute> {
        self.lock().get(&gsi).copied()
    }

    /// How many MSI routes are in the table.
    pub fn msi_count(&self) -> usize {
        self.lock().len()
    }

    /// The whole table as last committed (irqchip routes first).
    pub fn entries(&self) -> Vec<kvm_irq_routing_entry> {
        Self::table(&self.lock())
    }

    /// The VM.
    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }
}
