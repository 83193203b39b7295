//! QEMU's `isa-debugcon`: a one-port console that firmware (SeaBIOS at 0x402, Bochs-style
//! code at 0xE9) writes its log to.
//!
//! Each byte written goes to the output sink unchanged; a read returns the `readback` value
//! (0xE9 by default, which is how guests detect the port). The port is one byte wide: in a
//! wider access only the byte at offset 0 counts, the others read 0xFF.

use std::io::Write;

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

use crate::{byte_offsets, pio_offset};

/// Bochs's and QEMU's default debug-console port.
pub const DEBUGCON_DEFAULT_PORT: u16 = 0xe9;
/// What a read returns by default (QEMU's `readback` property).
pub const DEBUGCON_DEFAULT_READBACK: u8 = 0xe9;
/// Ports the console occupies.
pub const DEBUGCON_PORT_LEN: u16 = 1;

/// The debug console (see the [module docs](self)).
pub struct DebugCon {
    port: u16,
    readback: u8,
    output: Box<dyn Write + Send>,
    written: u64,
    output_errors: u64,
}

impl std::fmt::Debug for DebugCon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugCon")
            .field("port", &self.port)
            .field("readback", &self.readback)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl DebugCon {
    /// A console at `port` writing to `output`, reading back `readback`.
    pub fn new(port: u16, readback: u8, output: Box<dyn Write + Send>) -> Self {
        Self {
            port,
            readback,
            output,
            written: 0,
            output_errors: 0,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bytes the guest wrote.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the sink refused (the bytes are dropped, as QEMU drops them).
    pub fn output_errors(&self) -> u64 {
        self.output_errors
    }

    /// A read of `data.len()` bytes at `offset` from the port.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let len = data.len();
        for (byte, offset) in data.iter_mut().zip(byte_offsets(offset, len)) {
            *byte = if offset == 0 { self.readback } else { 0xff };
        }
    }

    /// A write at `offset`: the byte at offset 0 goes to the output.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (&value, offset) in data.iter().zip(byte_offsets(offset, data.len())) {
            if offset == 0 {
                self.written = self.written.wrapping_add(1);
                if self.output.write_all(&[value]).is_err() {
                    self.output_errors = self.output_errors.wrapping_add(1);
                }
            }
        }
        // Firmware logs are read while the guest runs (and after a crash): do not buffer.
        let _ = self.output.flush();
    }
}

impl MutDevicePio for DebugCon {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(pio_offset(self.port, base, offset), data);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(pio_offset(self.port, base, offset), data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("gone"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_reach_the_output_and_reads_return_readback() {
        let sink = Sink::default();
        let mut con = DebugCon::new(0x402, DEBUGCON_DEFAULT_READBACK, Box::new(sink.clone()));
        for b in b"SeaBIOS\n" {
            con.pio_write(PioAddress(0x402), 0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"SeaBIOS\n");
        assert_eq!(con.written(), 8);
        let mut byte = [0];
        con.pio_read(PioAddress(0x402), 0, &mut byte);
        assert_eq!(byte, [0xe9]);
    }

    #[test]
    fn wide_accesses_use_only_offset_zero() {
        let sink = Sink::default();
        let mut con = DebugCon::new(0xe9, 0x42, Box::new(sink.clone()));
        con.write(0, b"ab");
        let mut word = [0u8; 2];
        con.read(0, &mut word);
        assert_eq!(word, [0x42, 0xff]);
        assert_eq!(&*sink.0.lock().unwrap(), b"a");
    }

    #[test]
    fn a_failing_output_is_counted_not_fatal() {
        let mut con = DebugCon::new(0xe9, 0xe9, Box::new(Broken));
        con.write(0, b"x");
        assert_eq!((con.written(), con.output_errors()), (1, 1));
    }

    proptest! {
        #[test]
        fn any_access_sequence_is_defined(ops in proptest::collection::vec(
            (any::<bool>(), any::<u16>(), 1usize..=4, any::<u8>()), 0..64)) {
            let sink = Sink::default();
            let mut con = DebugCon::new(0x402, 0xe9, Box::new(sink.clone()));
            let mut expected = Vec::new();
            for (write, port, len, value) in ops {
                if write {
                    con.pio_write(PioAddress(port), 0, &vec![value; len]);
                    if port == 0x402 { expected.push(value); }
                } else {
                    let mut data = vec![0; len];
                    con.pio_read(PioAddress(port), 0, &mut data);
                    prop_assert_eq!(data[0], if port == 0x402 { 0xe9 } else { 0xff });
                }
            }
            prop_assert_eq!(&*sink.0.lock().unwrap(), &expected);
        }
    }
}
