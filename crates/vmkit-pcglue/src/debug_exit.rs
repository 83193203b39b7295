//! QEMU's `isa-debug-exit` port: a test guest asks the VMM to exit with a status.
//!
//! Semantics follow QEMU's `hw/misc/debugexit.c` (properties `iobase`, default 0x501, and
//! `iosize`, default 2): a write of value `v` of 1 to 4 bytes, little-endian, at any port of
//! the range asks the VMM to exit with status `(v << 1) | 1`. The status is therefore always
//! odd, so a guest cannot make the VMM report plain success (0); test harnesses map an agreed
//! odd value (e.g. `(0x10 << 1) | 1 = 0x21`) to success. The status is passed as a `u32`
//! (`v << 1` drops bit 31 of a 4-byte value); a process exit status keeps its low 8 bits.
//!
//! The request goes to an [`ExitRequest`], called on the vCPU thread that did the write,
//! under the device's lock: it must only record the request and wake the main loop (set an
//! atomic, write an eventfd), never block or join vCPU threads.
//!
//! Reads return 0, as QEMU's device does (a guest can tell the device is present because an
//! absent port reads 0xFF); [`DebugExit::set_read_value`] changes that, e.g. to 0xFF to look
//! like an empty bus. Accesses wider than 4 bytes are ignored (QEMU's `max_access_size` is
//! 4); an access that starts inside the range is taken whole, like QEMU's single dispatch.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

use crate::{pio_offset, Error, Result, DEBUG_EXIT_DEFAULT_PORT, DEBUG_EXIT_DEFAULT_SIZE};

/// Receives a guest's request to end the VM.
///
/// Called on a vCPU thread while the device is locked: implementations must not block.
pub trait ExitRequest: Send + Sync {
    /// The guest asked the VMM to exit with `status` (`(value << 1) | 1`).
    fn request_exit(&self, status: u32);
}

impl<T: ExitRequest + ?Sized> ExitRequest for Arc<T> {
    fn request_exit(&self, status: u32) {
        (**self).request_exit(status)
    }
}

impl<T: ExitRequest + ?Sized> ExitRequest for Box<T> {
    fn request_exit(&self, status: u32) {
        (**self).request_exit(status)
    }
}

/// Adapts a closure into an [`ExitRequest`]: `ExitFn(|status| flag.store(status, ..))`.
#[derive(Debug, Clone, Copy)]
pub struct ExitFn<F>(pub F);

impl<F: Fn(u32) + Send + Sync> ExitRequest for ExitFn<F> {
    fn request_exit(&self, status: u32) {
        (self.0)(status)
    }
}

/// An [`ExitRequest`] that records requests in atomics: for tests, or for a VMM that checks
/// after each vCPU exit whether the guest asked to stop.
#[derive(Debug, Default)]
pub struct RecordingExit {
    requests: AtomicU64,
    last_status: AtomicU32,
}

impl RecordingExit {
    /// Creates a recorder that has seen no request.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many exit requests arrived.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// The status of the latest request, or `None` if none arrived.
    pub fn last_status(&self) -> Option<u32> {
        // Statuses are always odd, so 0 safely means "none yet".
        match self.last_status.load(Ordering::Acquire) {
            0 => None,
            status => Some(status),
        }
    }
}

impl ExitRequest for RecordingExit {
    fn request_exit(&self, status: u32) {
        self.last_status.store(status, Ordering::Release);
        self.requests.fetch_add(1, Ordering::AcqRel);
    }
}

/// The debug-exit device (see the [module docs](self)).
#[derive(Debug)]
pub struct DebugExit<E: ExitRequest> {
    exit: E,
    base: u16,
    size: u16,
    read_value: u8,
}

impl<E: ExitRequest> DebugExit<E> {
    /// A device at QEMU's default range, ports 0x501..=0x502.
    pub fn new(exit: E) -> Self {
        Self {
            exit,
            base: DEBUG_EXIT_DEFAULT_PORT,
            size: DEBUG_EXIT_DEFAULT_SIZE,
            read_value: 0,
        }
    }

    /// A device at `size` ports from `base` (QEMU's `iobase`/`iosize`; 0xf4 with size 4 is
    /// a common choice of test kernels).
    ///
    /// # Errors
    /// [`Error::InvalidDebugExitRange`] if `size` is 0 or the range runs past port 0xFFFF.
    pub fn with_range(exit: E, base: u16, size: u16) -> Result<Self> {
        let last = u32::from(base) + u32::from(size);
        if size == 0 || last > 0x1_0000 {
            return Err(Error::InvalidDebugExitRange { base, size });
        }
        Ok(Self {
            exit,
            base,
            size,
            read_value: 0,
        })
    }

    /// First port of the range.
    pub fn base_port(&self) -> u16 {
        self.base
    }

    /// Number of ports in the range.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Sets the byte every in-range read returns (0 by default, as QEMU).
    pub fn set_read_value(&mut self, value: u8) {
        self.read_value = value;
    }

    /// The exit-request sink.
    pub fn exit_request(&self) -> &E {
        &self.exit
    }

    /// The status a write of `value` asks for: `(value << 1) | 1`.
    pub fn status_for(value: u32) -> u32 {
        // `<<` by 1 on a u32 cannot panic: it drops bit 31, as QEMU's shift into an int does.
        (value << 1) | 1
    }

    /// Reads at `offset` from the base: in-range bytes read the read value, others 0xFF.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let len = data.len();
        for (byte, offset) in data.iter_mut().zip(crate::byte_offsets(offset, len)) {
            *byte = if offset < u64::from(self.size) {
                self.read_value
            } else {
                0xFF
            };
        }
    }

    /// Writes at `offset` from the base: a 1..=4 byte write starting in range requests an
    /// exit with the value taken little-endian; anything else is ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(self.size) || data.is_empty() || data.len() > 4 {
            return;
        }
        let value = data
            .iter()
            .rev()
            .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte));
        self.exit.request_exit(Self::status_for(value));
    }
}

impl<E: ExitRequest> MutDevicePio for DebugExit<E> {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let offset = pio_offset(self.base, base, offset);
        self.read(offset, data);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let offset = pio_offset(self.base, base, offset);
        self.write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Mutex;
    use vm_device::DevicePio;

    fn device() -> (Arc<RecordingExit>, DebugExit<Arc<RecordingExit>>) {
        let exit = Arc::new(RecordingExit::new());
        (exit.clone(), DebugExit::new(exit))
    }

    #[test]
    fn byte_write_requests_shifted_status() {
        // QEMU isa-debug-exit: exit status is (val << 1) | 1.
        let (exit, mut dev) = device();
        dev.write(0, &[0x10]);
        assert_eq!(exit.last_status(), Some(0x21));
        dev.write(1, &[0x00]);
        assert_eq!(exit.last_status(), Some(0x01));
        assert_eq!(exit.request_count(), 2);
    }

    #[test]
    fn word_and_dword_writes_are_taken_whole_little_endian() {
        // QEMU isa-debug-exit: valid access sizes 1..=4, little-endian.
        let (exit, mut dev) = device();
        dev.write(0, &[0x34, 0x12]);
        assert_eq!(exit.last_status(), Some((0x1234 << 1) | 1));
        dev.write(0, &[0x01, 0x00, 0x00, 0x80]);
        // Bit 31 is shifted out.
        assert_eq!(exit.last_status(), Some(0x0000_0003));
        assert_eq!(exit.request_count(), 2);
    }

    #[test]
    fn out_of_range_and_oversized_writes_are_ignored() {
        let (exit, mut dev) = device();
        dev.write(2, &[0x10]);
        dev.write(u64::MAX, &[0x10]);
        dev.write(0, &[]);
        dev.write(0, &[1; 8]);
        assert_eq!(exit.request_count(), 0);
        assert_eq!(exit.last_status(), None);
    }

    #[test]
    fn reads_return_zero_like_qemu_and_ff_outside() {
        // QEMU isa-debug-exit: debug_exit_read returns 0.
        let (_, mut dev) = device();
        let mut buf = [0xAAu8; 3];
        dev.read(0, &mut buf);
        assert_eq!(buf, [0x00, 0x00, 0xFF]);
        dev.set_read_value(0xFF);
        dev.read(0, &mut buf);
        assert_eq!(buf, [0xFF; 3]);
    }

    #[test]
    fn custom_range_and_pio_bus_dispatch() {
        // Common test-kernel setting: iobase=0xf4, iosize=0x04.
        let exit = Arc::new(RecordingExit::new());
        let dev = Mutex::new(DebugExit::with_range(exit.clone(), 0xF4, 4).unwrap());
        DevicePio::pio_write(&dev, PioAddress(0xF4), 3, &[0x05]);
        assert_eq!(exit.last_status(), Some(0x0B));
        DevicePio::pio_write(&dev, PioAddress(0xF0), 0, &[0x05]);
        assert_eq!(exit.request_count(), 1);
        assert_eq!(dev.lock().unwrap().base_port(), 0xF4);
    }

    #[test]
    fn invalid_ranges_are_rejected() {
        assert!(matches!(
            DebugExit::with_range(ExitFn(|_| {}), 0x501, 0),
            Err(Error::InvalidDebugExitRange { .. })
        ));
        let ok = DebugExit::with_range(ExitFn(|_| {}), 0xFFFE, 2);
        assert!(ok.is_ok());
        let too_far = DebugExit::with_range(ExitFn(|_| {}), 0xFFFF, 2);
        assert_eq!(
            too_far.err(),
            Some(Error::InvalidDebugExitRange {
                base: 0xFFFF,
                size: 2
            })
        );
    }

    #[test]
    fn closure_adapter() {
        let seen = Arc::new(AtomicU32::new(0));
        let sink = seen.clone();
        let mut dev = DebugExit::new(ExitFn(move |status| sink.store(status, Ordering::SeqCst)));
        dev.write(0, &[3]);
        assert_eq!(seen.load(Ordering::SeqCst), 7);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// No panic on any access sequence; every request is odd and matches the write.
        #[test]
        fn any_access_sequence(
            size in 1u16..=4,
            ops in prop::collection::vec(
                (any::<bool>(), prop_oneof![0u64..6, any::<u64>()], prop::collection::vec(any::<u8>(), 0..=9)),
                0..64,
            ),
        ) {
            let exit = Arc::new(RecordingExit::new());
            let mut dev = DebugExit::with_range(exit.clone(), DEBUG_EXIT_DEFAULT_PORT, size).unwrap();
            let mut expected = 0u64;
            for (is_write, offset, bytes) in ops {
                if is_write {
                    dev.write(offset, &bytes);
                    if offset < u64::from(size) && (1..=4).contains(&bytes.len()) {
                        expected += 1;
                        let mut value = [0u8; 4];
                        value[..bytes.len()].copy_from_slice(&bytes);
                        prop_assert_eq!(exit.last_status(), Some((u32::from_le_bytes(value) << 1) | 1));
                    }
                } else {
                    let mut buf = bytes.clone();
                    dev.read(offset, &mut buf);
                    prop_assert!(buf.iter().all(|&b| b == 0 || b == 0xFF));
                }
                prop_assert_eq!(exit.request_count(), expected);
                prop_assert!(exit.last_status().is_none_or(|s| s & 1 == 1));
            }
        }
    }
}
