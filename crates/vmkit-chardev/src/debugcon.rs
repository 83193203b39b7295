//! `isa-debugcon`: the Bochs-style "port E9" debug console, after QEMU's
//! `hw/char/debugcon.c`.
//!
//! One byte-wide port (`iobase`, default 0xE9). A write sends its low byte to the output;
//! a read returns the `readback` property's low byte (default 0xE9, so a guest can probe
//! for the port). As in QEMU the region is one port long: the other bytes of a wider
//! access fall outside it (writes ignored, reads 0xFF, as for an unassigned port).
//!
//! The model knows nothing of chardevs: it writes to a [`DebugconOutput`], which
//! [`Chardev`](crate::Chardev) implements.

use std::sync::{Arc, Mutex};

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

/// QEMU's default `iobase`.
pub const DEBUGCON_DEFAULT_IOBASE: u16 = 0xe9;
/// QEMU's default `readback`.
pub const DEBUGCON_DEFAULT_READBACK: u32 = 0xe9;

/// Where debug-console bytes go. Called on a vCPU thread: must not block for long.
pub trait DebugconOutput: Send {
    /// Outputs `bytes`.
    fn write(&self, bytes: &[u8]);
}

impl<T: DebugconOutput + Sync + ?Sized> DebugconOutput for Arc<T> {
    fn write(&self, bytes: &[u8]) {
        (**self).write(bytes);
    }
}

impl<T: DebugconOutput + ?Sized> DebugconOutput for Box<T> {
    fn write(&self, bytes: &[u8]) {
        (**self).write(bytes);
    }
}

impl DebugconOutput for crate::Chardev {
    fn write(&self, bytes: &[u8]) {
        // Output errors (a full disk) cannot be reported to the guest; drop the byte.
        let _ = crate::Chardev::write(self, bytes);
    }
}

/// An output that keeps everything written (tests, a log).
#[derive(Debug, Default)]
pub struct RecordingOutput(Mutex<Vec<u8>>);

impl RecordingOutput {
    /// An empty recording.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl DebugconOutput for RecordingOutput {
    fn write(&self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
    }
}

/// The debug console (see the [module docs](self)).
#[derive(Debug)]
pub struct Debugcon<O: DebugconOutput> {
    output: O,
    iobase: u16,
    readback: u32,
}

impl<O: DebugconOutput> Debugcon<O> {
    /// A debug console at port 0xE9 reading back 0xE9.
    pub fn new(output: O) -> Self {
        Self {
            output,
            iobase: DEBUGCON_DEFAULT_IOBASE,
            readback: DEBUGCON_DEFAULT_READBACK,
        }
    }

    /// Sets `iobase` (QEMU's property; 0x402 is OVMF's and SeaBIOS's debug port).
    #[must_use]
    pub fn with_iobase(mut self, iobase: u16) -> Self {
        self.iobase = iobase;
        self
    }

    /// Sets `readback` (a 32-bit property; reads return its low byte).
    #[must_use]
    pub fn with_readback(mut self, readback: u32) -> Self {
        self.readback = readback;
        self
    }

    /// The port.
    pub fn iobase(&self) -> u16 {
        self.iobase
    }

    /// The `readback` property.
    pub fn readback(&self) -> u32 {
        self.readback
    }

    /// The output.
    pub fn output(&self) -> &O {
        &self.output
    }

    /// A guest read of `data.len()` bytes at `offset` from the port.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = if offset.checked_add(i as u64) == Some(0) {
                self.readback.to_le_bytes()[0]
            } else {
                0xff
            };
        }
    }

    /// A guest write of `data` at `offset` from the port: the byte at the port goes out.
    pub fn write(&self, offset: u64, data: &[u8]) {
        if offset == 0 {
            if let Some(&byte) = data.first() {
                self.output.write(&[byte]);
            }
        }
    }

    fn offset_of(&self, base: PioAddress, offset: PioAddressOffset) -> u64 {
        let port = u32::from(base.0) + u32::from(offset);
        u64::from(port.wrapping_sub(u32::from(self.iobase)))
    }
}

impl<O: DebugconOutput> MutDevicePio for Debugcon<O> {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let offset = self.offset_of(base, offset);
        self.read(offset, data);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let offset = self.offset_of(base, offset);
        self.write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_output_the_byte_and_reads_return_readback() {
        let con = Debugcon::new(RecordingOutput::new());
        assert_eq!(con.iobase(), 0xe9);
        for &b in b"hi\n" {
            con.write(0, &[b]);
        }
        assert_eq!(con.output().bytes(), b"hi\n");
        let mut byte = [0u8];
        con.read(0, &mut byte);
        assert_eq!(
            byte,
            [0xe9],
            "QEMU's default readback lets guests probe the port"
        );
    }

    #[test]
    fn wide_accesses_use_only_the_one_port() {
        let con = Debugcon::new(RecordingOutput::new()).with_readback(0x1234_5678);
        // outw 0x4241: only the low byte lands on the port.
        con.write(0, &[0x41, 0x42]);
        assert_eq!(con.output().bytes(), b"A");
        let mut word = [0u8; 2];
        con.read(0, &mut word);
        assert_eq!(
            word,
            [0x78, 0xff],
            "low byte of readback, then an unassigned port"
        );
        // Offsets outside the port are ignored / read 0xFF.
        con.write(1, &[0x43]);
        assert_eq!(con.output().bytes(), b"A");
        let mut byte = [0u8];
        con.read(1, &mut byte);
        assert_eq!(byte, [0xff]);
    }

    #[test]
    fn pio_bus_view_uses_iobase() {
        let out = Arc::new(RecordingOutput::new());
        let mut con = Debugcon::new(Arc::clone(&out))
            .with_iobase(0x402)
            .with_readback(0);
        con.pio_write(PioAddress(0x402), 0, b"x");
        con.pio_write(PioAddress(0x400), 2, b"y");
        con.pio_write(PioAddress(0xe9), 0, b"z");
        assert_eq!(out.bytes(), b"xy");
        let mut byte = [0xaa];
        con.pio_read(PioAddress(0x402), 0, &mut byte);
        assert_eq!(byte, [0]);
        con.pio_read(PioAddress(0xffff), 0xffff, &mut byte);
        assert_eq!(byte, [0xff]);
    }

    #[test]
    fn chardev_is_an_output() {
        let chardev =
            crate::Chardev::open(&crate::ChardevSpec::parse("null,id=d").unwrap()).unwrap();
        let con = Debugcon::new(chardev);
        con.write(0, b"dropped");
        assert_eq!(con.output().id(), "d");
    }
}
