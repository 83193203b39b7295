//! [`TimedMmio`]: the MMIO-bus counterpart of vmkit-hw's [`Timed`](vmkit_hw::Timed) adapter.

use std::fmt;
use std::sync::{Arc, Mutex};

use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::{DeviceMmio, MutDeviceMmio};
use vmkit_hw::{lock, DeviceTimers, TimedDevice};

/// An MMIO-bus device adapter for a timed device: after every access the device's deadline
/// is reported to [`DeviceTimers::deadline_changed`], with the device's lock released (the
/// protocol of [`vmkit_hw::timers`]).
pub struct TimedMmio<D> {
    device: Arc<Mutex<D>>,
    timers: DeviceTimers,
}

impl<D> TimedMmio<D> {
    /// Wraps `device`, reporting to `timers` (register the same device with
    /// [`DeviceTimers::register`] as well).
    pub fn new(device: Arc<Mutex<D>>, timers: DeviceTimers) -> Self {
        Self { device, timers }
    }

    /// The wrapped device.
    pub fn device(&self) -> &Arc<Mutex<D>> {
        &self.device
    }
}

impl<D> Clone for TimedMmio<D> {
    fn clone(&self) -> Self {
        Self {
            device: Arc::clone(&self.device),
            timers: self.timers.clone(),
        }
    }
}

impl<D: MutDeviceMmio + TimedDevice> DeviceMmio for TimedMmio<D> {
    fn mmio_read(&self, base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        let deadline = {
            let mut device = lock(&self.device);
            device.mmio_read(base, offset, data);
            device.next_deadline_ns()
        };
        self.timers.deadline_changed(deadline);
    }

    fn mmio_write(&self, base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        let deadline = {
            let mut device = lock(&self.device);
            device.mmio_write(base, offset, data);
            device.next_deadline_ns()
        };
        self.timers.deadline_changed(deadline);
    }
}

impl<D> fmt::Debug for TimedMmio<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedMmio").finish_non_exhaustive()
    }
}
