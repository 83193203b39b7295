//! Port 0x80: the POST-code sink.
//!
//! Firmware writes progress codes here for a POST card to show; Linux writes here as a short
//! I/O delay (`outb_p` and friends, the default `io_delay=0x80`), so the port sees a write for
//! many legacy port accesses and must cost as little as possible. The model is lock-free: two
//! relaxed atomics, so besides `Mutex<PostPort>` a VMM may register an `Arc<PostPort>`
//! (it implements [`vm_device::DevicePio`] on `&self`) and skip the lock entirely.
//!
//! Reads return the last value written, as a chipset's readable DMA page register at 0x80
//! does, and 0xFF before the first write (an empty ISA bus floats high). QEMU returns 0xFF
//! for every read; no known guest reads this port, so the more useful answer was chosen.
//!
//! The device is one port wide: offset 0 is port 0x80; wider accesses also touch 0x81..,
//! which belong to other devices, so those bytes read 0xFF and their writes are ignored.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::{DevicePio, MutDevicePio};

use crate::{byte_offsets, pio_offset, POST_PORT};

/// The POST-code port (see the [module docs](self)).
#[derive(Debug)]
pub struct PostPort {
    last: AtomicU8,
    writes: AtomicU64,
}

impl Default for PostPort {
    fn default() -> Self {
        Self::new()
    }
}

impl PostPort {
    /// Creates a port that has seen no write (reads 0xFF).
    pub fn new() -> Self {
        Self {
            last: AtomicU8::new(0xFF),
            writes: AtomicU64::new(0),
        }
    }

    /// The last byte written, or `None` before the first write.
    pub fn last_value(&self) -> Option<u8> {
        (self.write_count() > 0).then(|| self.last.load(Ordering::Relaxed))
    }

    /// How many bytes were written to the port (wrapping after 2^64).
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Records one byte written to port 0x80.
    pub fn record(&self, value: u8) {
        self.last.store(value, Ordering::Relaxed);
        // fetch_add wraps on overflow; it never panics.
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `data.len()` bytes starting at `offset` from port 0x80.
    ///
    /// Takes `&self`: the port is lock-free, so a shared reference is enough.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let len = data.len();
        for (byte, offset) in data.iter_mut().zip(byte_offsets(offset, len)) {
            *byte = if offset == 0 {
                self.last.load(Ordering::Relaxed)
            } else {
                0xFF
            };
        }
    }

    /// Writes `data` starting at `offset` from port 0x80; only the byte at offset 0 counts.
    pub fn write(&self, offset: u64, data: &[u8]) {
        for (&value, offset) in data.iter().zip(byte_offsets(offset, data.len())) {
            if offset == 0 {
                self.record(value);
            }
        }
    }
}

impl MutDevicePio for PostPort {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(pio_offset(POST_PORT, base, offset), data);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(pio_offset(POST_PORT, base, offset), data);
    }
}

impl DevicePio for PostPort {
    fn pio_read(&self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(pio_offset(POST_PORT, base, offset), data);
    }

    fn pio_write(&self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(pio_offset(POST_PORT, base, offset), data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn reads_0xff_before_any_write() {
        // Empty ISA bus convention: undriven data lines read high.
        let post = PostPort::new();
        let mut byte = [0u8];
        post.read(0, &mut byte);
        assert_eq!(byte, [0xFF]);
        assert_eq!(post.last_value(), None);
        assert_eq!(post.write_count(), 0);
    }

    #[test]
    fn records_last_value_and_count() {
        // POST codes: each write replaces the displayed code.
        let post = PostPort::new();
        for code in [0x01u8, 0x55, 0xAA] {
            post.write(0, &[code]);
        }
        assert_eq!(post.last_value(), Some(0xAA));
        assert_eq!(post.write_count(), 3);
        let mut byte = [0u8];
        post.read(0, &mut byte);
        assert_eq!(byte, [0xAA]);
    }

    #[test]
    fn wide_write_touches_only_port_0x80() {
        // `out 0x80, ax` is split by the ISA bus into 0x80 (low byte) and 0x81 (high byte).
        let post = PostPort::new();
        post.write(0, &[0x12, 0x34]);
        assert_eq!(post.last_value(), Some(0x12));
        assert_eq!(post.write_count(), 1);
        let mut word = [0u8; 2];
        post.read(0, &mut word);
        assert_eq!(word, [0x12, 0xFF]);
        post.write(1, &[0x99]);
        assert_eq!(post.last_value(), Some(0x12));
    }

    #[test]
    fn works_behind_mutex_and_arc_on_a_pio_bus() {
        let shared = Arc::new(PostPort::new());
        DevicePio::pio_write(&shared, PioAddress(POST_PORT), 0, &[0x7E]);
        assert_eq!(shared.last_value(), Some(0x7E));
        let locked = Mutex::new(PostPort::new());
        DevicePio::pio_write(&locked, PioAddress(POST_PORT), 0, &[0x3C]);
        let mut byte = [0u8];
        DevicePio::pio_read(&locked, PioAddress(POST_PORT), 0, &mut byte);
        assert_eq!(byte, [0x3C]);
        // A range registered below the port: base 0x7F offset 1 is still port 0x80.
        DevicePio::pio_write(&locked, PioAddress(0x7F), 1, &[0x3D]);
        DevicePio::pio_read(&locked, PioAddress(0x7F), 0, &mut byte);
        assert_eq!(byte, [0xFF]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// No panic on any access sequence; the count equals the bytes that hit port 0x80
        /// and a read of 0x80 returns the last of them.
        #[test]
        fn any_access_sequence(ops in prop::collection::vec(
            (any::<bool>(), prop_oneof![0u64..4, Just(u64::MAX), any::<u64>()], prop::collection::vec(any::<u8>(), 0..=9)),
            0..64,
        )) {
            let post = PostPort::new();
            let mut expected_count = 0u64;
            let mut expected_last = None;
            for (is_write, offset, bytes) in ops {
                if is_write {
                    post.write(offset, &bytes);
                    if offset == 0 {
                        if let Some(&first) = bytes.first() {
                            expected_count += 1;
                            expected_last = Some(first);
                        }
                    }
                } else {
                    let mut buf = bytes.clone();
                    post.read(offset, &mut buf);
                    for (i, b) in buf.iter().enumerate() {
                        if offset.checked_add(i as u64) != Some(0) {
                            prop_assert_eq!(*b, 0xFF);
                        }
                    }
                }
                prop_assert_eq!(post.write_count(), expected_count);
                prop_assert_eq!(post.last_value(), expected_last);
            }
        }
    }
}
