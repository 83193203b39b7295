//! The transport's interrupt state, shared between the vCPU side (register accesses) and
//! device threads (triggers): MSI-X vectors, the ISR byte and the INTx level.

use std::sync::{Arc, Mutex, MutexGuard};

use vmkit_hw::IrqLine;
use vmkit_pci::{Msix, MsixDelivery};

use crate::device::{InterruptKind, VirtioInterrupt};

/// "No vector" in `msix_config` / `queue_msix_vector`.
pub const VIRTIO_NO_VECTOR: u16 = 0xffff;
/// ISR status bit 0: a queue has used buffers.
pub const VIRTIO_ISR_QUEUE: u8 = 0x1;
/// ISR status bit 1: the device configuration changed.
pub const VIRTIO_ISR_CONFIG: u8 = 0x2;

pub(crate) struct IrqState {
    pub(crate) msix: Option<Msix>,
    pub(crate) isr: u8,
    pub(crate) config_vector: u16,
    pub(crate) queue_vectors: Vec<u16>,
    /// PCI command bit 10.
    pub(crate) intx_disabled: bool,
    line: Arc<dyn IrqLine>,
    level: bool,
    /// Bumped on every virtio reset: triggers from an older activation are dropped.
    pub(crate) epoch: u64,
    /// DRIVER_OK is set (configuration interrupts are dropped before, as in QEMU).
    pub(crate) driver_ok: bool,
    pub(crate) config_generation: u8,
    /// The device asked for a reset (NEEDS_RESET reads back set until the next reset).
    pub(crate) needs_reset: bool,
}

impl IrqState {
    pub(crate) fn new(msix: Option<Msix>, queues: usize, line: Arc<dyn IrqLine>) -> Self {
        IrqState {
            msix,
            isr: 0,
            config_vector: VIRTIO_NO_VECTOR,
            queue_vectors: vec![VIRTIO_NO_VECTOR; queues],
            intx_disabled: false,
            line,
            level: false,
            epoch: 0,
            driver_ok: false,
            config_generation: 0,
            needs_reset: false,
        }
    }

    pub(crate) fn msix_enabled(&self) -> bool {
        self.msix.as_ref().is_some_and(Msix::is_enabled)
    }

    /// A vector register write: values past the table (or any value without MSI-X) read
    /// back as [`VIRTIO_NO_VECTOR`], as QEMU's `msix_vector_use` failure does.
    pub(crate) fn checked_vector(&self, vector: u16) -> u16 {
        match &self.msix {
            Some(m) if vector < m.vectors() => vector,
            _ => VIRTIO_NO_VECTOR,
        }
    }

    pub(crate) fn raise(&mut self, kind: InterruptKind) {
        let (vector, bit) = match kind {
            InterruptKind::Config => {
                if !self.driver_ok {
                    return;
                }
                self.config_generation = self.config_generation.wrapping_add(1);
                (self.config_vector, VIRTIO_ISR_CONFIG)
            }
            InterruptKind::Queue(q) => match self.queue_vectors.get(usize::from(q)) {
                Some(&v) => (v, VIRTIO_ISR_QUEUE),
                None => return,
            },
        };
        match &mut self.msix {
            Some(msix) if msix.is_enabled() => {
                if vector != VIRTIO_NO_VECTOR {
                    let _: MsixDelivery = msix.notify(vector);
                }
            }
            _ => {
                self.isr |= bit;
                self.update_line();
            }
        }
    }

    /// Reads and clears the ISR byte, lowering INTx.
    pub(crate) fn take_isr(&mut self) -> u8 {
        let isr = std::mem::take(&mut self.isr);
        self.update_line();
        isr
    }

    /// Drives INTx to "ISR non-zero, INTx not disabled, MSI-X off".
    pub(crate) fn update_line(&mut self) {
        let level = self.isr != 0 && !self.intx_disabled && !self.msix_enabled();
        if level != self.level {
            self.level = level;
            self.line.set_level(level);
        }
    }

    pub(crate) fn level(&self) -> bool {
        self.level
    }
}

/// The transport's interrupt state behind one lock.
pub(crate) struct Interrupts(Mutex<IrqState>);

impl Interrupts {
    pub(crate) fn new(state: IrqState) -> Arc<Self> {
        Arc::new(Interrupts(Mutex::new(state)))
    }

    /// Locks the state; a poisoned lock is reused (every update leaves it consistent).
    pub(crate) fn lock(&self) -> MutexGuard<'_, IrqState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The [`VirtioInterrupt`] a device gets at activation: valid until the next reset.
pub(crate) struct DeviceInterrupt {
    pub(crate) shared: Arc<Interrupts>,
    pub(crate) epoch: u64,
}

impl VirtioInterrupt for DeviceInterrupt {
    fn trigger(&self, kind: InterruptKind) {
        let mut s = self.shared.lock();
        if s.epoch == self.epoch {
            s.raise(kind);
        }
    }

    fn needs_reset(&self) {
        let mut s = self.shared.lock();
        if s.epoch == self.epoch && !s.needs_reset {
            s.needs_reset = true;
            s.raise(InterruptKind::Config);
        }
    }
}
