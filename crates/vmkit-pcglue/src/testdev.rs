//! QEMU's `pc-testdev`: the x86 test device kvm-unit-tests drives.
//!
//! Semantics follow QEMU's `hw/misc/pc-testdev.c`:
//!
//! | where | size | what |
//! |---|---|---|
//! | ports 0xE0-0xE3 | 1-4 bytes | a 32-bit scratch register: an access of `len` bytes at port `0xE0 + n` reads or writes bytes `n..n+len` of it |
//! | ports 0xE4-0xE7 | 4 bytes only | "flush page": a write names a guest page (the value with its low 12 bits cleared), which QEMU `mprotect`s away and back; reads 0 |
//! | ports 0xE8-0xEB | 1-4 bytes, taken a byte at a time | the same scratch register |
//! | ports 0x2000-0x2017 | 1 byte (wider accesses split into bytes) | IRQ lines: a byte written to `0x2000 + n` drives ISA IRQ `n` high (value != 0) or low; reads 0 |
//! | memory 0xFF000000-0xFF00FFFF | 1-8 bytes | a 64 KiB scratch buffer |
//!
//! Differences, none visible to a well-behaved guest: QEMU's IRQ-line region is 24 ports
//! but its ISA bus has 16 IRQs, and a write to ports 0x2010-0x2017 aborts QEMU; here those
//! writes are ignored. Flush-port accesses other than 4 bytes are ignored and read 0, as QEMU's invalid
//! accesses. An access that runs past the end of a region keeps only the bytes inside it
//! (the rest read 0xFF); QEMU splits it between neighbouring regions. Port accesses wider
//! than 4 bytes are ignored.
//!
//! ```
//! use vmkit_pcglue::testdev::{PcTestdev, TESTDEV_IOPORT, TESTDEV_IRQ_BASE};
//!
//! let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
//! let seen = lines.clone();
//! let mut dev = PcTestdev::new(move |irq: u32, high: bool| seen.lock().unwrap().push((irq, high)));
//! dev.pio_write_port(TESTDEV_IOPORT, &0x1234_5678u32.to_le_bytes());
//! let mut byte = [0u8; 1];
//! dev.pio_read_port(TESTDEV_IOPORT + 2, &mut byte);
//! assert_eq!(byte, [0x34]);
//! dev.pio_write_port(TESTDEV_IRQ_BASE + 14, &[1]);
//! assert_eq!(*lines.lock().unwrap(), vec![(14, true)]);
//! ```

use vm_device::bus::{MmioAddress, MmioAddressOffset, PioAddress, PioAddressOffset};
use vm_device::{MutDeviceMmio, MutDevicePio};

/// First port of the scratch register (QEMU's `pc-testdev-ioport`).
pub const TESTDEV_IOPORT: u16 = 0xe0;
/// The flush-page port.
pub const TESTDEV_FLUSH_PORT: u16 = 0xe4;
/// First port of the byte-wise view of the scratch register (`pc-testdev-ioport-byte`).
pub const TESTDEV_IOPORT_BYTE: u16 = 0xe8;
/// Ports 0xE0-0xEB as one range.
pub const TESTDEV_LOW_PORTS_LEN: u16 = 12;
/// First IRQ-line port (`pc-testdev-irq-line`).
pub const TESTDEV_IRQ_BASE: u16 = 0x2000;
/// Number of IRQ-line ports.
pub const TESTDEV_IRQ_PORTS: u16 = 24;
/// ISA IRQs that the IRQ-line ports can drive (QEMU's ISA bus has 16).
pub const TESTDEV_ISA_IRQS: u32 = 16;
/// Guest-physical base of the memory window (`pc-testdev-iomem`).
pub const TESTDEV_IOMEM_BASE: u64 = 0xff00_0000;
/// Size of the memory window.
pub const TESTDEV_IOMEM_LEN: u64 = 0x1_0000;

/// Where the IRQ-line ports send levels: ISA IRQ `irq` (0-15) is driven `high` or low.
///
/// Called on a vCPU thread with the device locked: implementations must not block.
pub trait TestdevIrq: Send {
    /// ISA IRQ `irq` is now `high` or low.
    fn set_irq(&mut self, irq: u32, high: bool);
}

impl<F: FnMut(u32, bool) + Send> TestdevIrq for F {
    fn set_irq(&mut self, irq: u32, high: bool) {
        self(irq, high)
    }
}

/// The device (see the [module docs](self)).
pub struct PcTestdev<I: TestdevIrq> {
    irq: I,
    ioport_data: u32,
    iomem: Vec<u8>,
    flushes: u64,
    last_flush: Option<u64>,
}

impl<I: TestdevIrq> std::fmt::Debug for PcTestdev<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcTestdev")
            .field("ioport_data", &format_args!("{:#010x}", self.ioport_data))
            .field("flushes", &self.flushes)
            .finish_non_exhaustive()
    }
}

impl<I: TestdevIrq> PcTestdev<I> {
    /// A device whose IRQ-line ports drive `irq`; scratch register and window zero.
    pub fn new(irq: I) -> Self {
        Self {
            irq,
            ioport_data: 0,
            iomem: vec![0; TESTDEV_IOMEM_LEN as usize],
            flushes: 0,
            last_flush: None,
        }
    }

    /// The scratch register behind ports 0xE0 and 0xE8.
    pub fn ioport_data(&self) -> u32 {
        self.ioport_data
    }

    /// How many flush-page writes arrived, and the last page named.
    pub fn flushes(&self) -> (u64, Option<u64>) {
        (self.flushes, self.last_flush)
    }

    /// The memory window's bytes.
    pub fn iomem(&self) -> &[u8] {
        &self.iomem
    }

    /// Back to the power-on state: scratch register and window zero (QEMU's device has no
    /// reset handler and keeps them; a fresh machine starts at zero in both).
    pub fn reset(&mut self) {
        self.ioport_data = 0;
        self.iomem.fill(0);
        self.flushes = 0;
        self.last_flush = None;
    }

    fn mask(addr: u16, len: usize) -> (u32, u32) {
        let start_bit = u32::from(addr & 3) * 8;
        let bits = (len as u32).clamp(1, 4) * 8;
        let mask = ((u32::MAX >> (32 - bits)) as u64) << start_bit;
        (mask as u32, start_bit)
    }

    fn scratch_write(&mut self, addr: u16, data: &[u8]) {
        let mut value = [0u8; 8];
        value[..data.len()].copy_from_slice(data);
        let value = u64::from_le_bytes(value);
        let (mask, start_bit) = Self::mask(addr, data.len());
        self.ioport_data &= !mask;
        self.ioport_data |= (value << start_bit) as u32;
    }

    fn scratch_read(&self, addr: u16, data: &mut [u8]) {
        let (mask, start_bit) = Self::mask(addr, data.len());
        let value = u64::from((self.ioport_data & mask) >> start_bit).to_le_bytes();
        data.copy_from_slice(&value[..data.len()]);
    }

    /// Reads `data.len()` bytes from absolute port `port`.
    pub fn pio_read_port(&mut self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        let Some((region, offset, len)) = Self::region(port, data.len()) else {
            return;
        };
        let data = &mut data[..len];
        match region {
            Region::Ioport if len <= 4 => self.scratch_read(offset, data),
            Region::IoportByte if len <= 4 => {
                for (i, byte) in data.iter_mut().enumerate() {
                    self.scratch_read(offset + i as u16, std::slice::from_mut(byte));
                }
            }
            _ => data.fill(0),
        }
    }

    /// Writes `data` at absolute port `port`.
    pub fn pio_write_port(&mut self, port: u16, data: &[u8]) {
        let Some((region, offset, len)) = Self::region(port, data.len()) else {
            return;
        };
        let data = &data[..len];
        match region {
            Region::Ioport if len <= 4 => self.scratch_write(offset, data),
            Region::IoportByte if len <= 4 => {
                for (i, byte) in data.iter().enumerate() {
                    self.scratch_write(offset + i as u16, std::slice::from_ref(byte));
                }
            }
            Region::Flush if len == 4 => {
                let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                self.flushes += 1;
                self.last_flush = Some(u64::from(value) & !0xfff);
            }
            Region::Irq => {
                // QEMU's dispatch splits wider accesses into bytes at consecutive ports
                // (realmode.flat's `outl` to 0x200b drives IRQs 11-14).
                for (i, byte) in data.iter().enumerate() {
                    let irq = u32::from(offset) + i as u32;
                    if irq < TESTDEV_ISA_IRQS {
                        self.irq.set_irq(irq, *byte != 0);
                    }
                }
            }
            _ => {}
        }
    }

    /// The region `port` is in, the offset in it, and how many of `len` bytes lie in it.
    fn region(port: u16, len: usize) -> Option<(Region, u16, usize)> {
        let (region, base, size) = match port {
            0xe0..=0xe3 => (Region::Ioport, TESTDEV_IOPORT, 4),
            0xe4..=0xe7 => (Region::Flush, TESTDEV_FLUSH_PORT, 4),
            0xe8..=0xeb => (Region::IoportByte, TESTDEV_IOPORT_BYTE, 4),
            0x2000..=0x2017 => (Region::Irq, TESTDEV_IRQ_BASE, TESTDEV_IRQ_PORTS),
            _ => return None,
        };
        if len == 0 || len > 4 {
            return None;
        }
        let offset = port - base;
        let inside = usize::from(size - offset).min(len);
        Some((region, offset, inside))
    }

    /// Reads the memory window at `offset` (bytes past its end read 0xFF).
    pub fn iomem_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if data.len() > 8 {
            return;
        }
        if let Some(start) = usize::try_from(offset)
            .ok()
            .filter(|o| *o < self.iomem.len())
        {
            let len = data.len().min(self.iomem.len() - start);
            data[..len].copy_from_slice(&self.iomem[start..start + len]);
        }
    }

    /// Writes the memory window at `offset` (bytes past its end are dropped).
    pub fn iomem_write(&mut self, offset: u64, data: &[u8]) {
        if data.len() > 8 {
            return;
        }
        if let Some(start) = usize::try_from(offset)
            .ok()
            .filter(|o| *o < self.iomem.len())
        {
            let len = data.len().min(self.iomem.len() - start);
            self.iomem[start..start + len].copy_from_slice(&data[..len]);
        }
    }
}

#[derive(Clone, Copy)]
enum Region {
    Ioport,
    Flush,
    IoportByte,
    Irq,
}

impl<I: TestdevIrq> MutDevicePio for PcTestdev<I> {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        match u16::try_from(u32::from(base.0) + u32::from(offset)) {
            Ok(port) => self.pio_read_port(port, data),
            Err(_) => data.fill(0xff),
        }
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        if let Ok(port) = u16::try_from(u32::from(base.0) + u32::from(offset)) {
            self.pio_write_port(port, data);
        }
    }
}

/// MMIO accesses to the memory window; offsets relative to [`TESTDEV_IOMEM_BASE`].
impl<I: TestdevIrq> MutDeviceMmio for PcTestdev<I> {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.iomem_read(offset, data);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.iomem_write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};

    type Lines = Arc<Mutex<Vec<(u32, bool)>>>;

    fn device() -> (Lines, PcTestdev<impl TestdevIrq>) {
        let lines: Lines = Arc::default();
        let seen = lines.clone();
        let dev = PcTestdev::new(move |irq, high| seen.lock().unwrap().push((irq, high)));
        (lines, dev)
    }

    #[test]
    fn scratch_register_bytes_words_dwords_as_qemu() {
        let (_, mut dev) = device();
        dev.pio_write_port(0xe0, &0xdead_beefu32.to_le_bytes());
        assert_eq!(dev.ioport_data(), 0xdead_beef);
        dev.pio_write_port(0xe1, &[0x11]);
        assert_eq!(dev.ioport_data(), 0xdead_11ef);
        dev.pio_write_port(0xe2, &0x2233u16.to_le_bytes());
        assert_eq!(dev.ioport_data(), 0x2233_11ef);
        let mut word = [0u8; 2];
        dev.pio_read_port(0xe1, &mut word);
        assert_eq!(u16::from_le_bytes(word), 0x3311);
        // The byte view at 0xE8 is the same register.
        let mut dword = [0u8; 4];
        dev.pio_read_port(0xe8, &mut dword);
        assert_eq!(u32::from_le_bytes(dword), 0x2233_11ef);
        dev.pio_write_port(0xea, &0xaabbu16.to_le_bytes());
        assert_eq!(dev.ioport_data(), 0xaabb_11ef);
    }

    #[test]
    fn flush_port_takes_dwords_and_reads_zero() {
        let (_, mut dev) = device();
        dev.pio_write_port(0xe4, &0x0040_1234u32.to_le_bytes());
        assert_eq!(dev.flushes(), (1, Some(0x40_1000)));
        dev.pio_write_port(0xe4, &[1]);
        assert_eq!(dev.flushes().0, 1, "byte writes are invalid");
        let mut dword = [0xaau8; 4];
        dev.pio_read_port(0xe4, &mut dword);
        assert_eq!(dword, [0; 4]);
    }

    #[test]
    fn irq_line_ports_drive_isa_irqs() {
        let (lines, mut dev) = device();
        dev.pio_write_port(0x200e, &[1]);
        dev.pio_write_port(0x200e, &[0]);
        dev.pio_write_port(0x2004, &[0x80]);
        dev.pio_write_port(0x2010, &[1]); // past the ISA IRQs
        assert_eq!(
            *lines.lock().unwrap(),
            vec![(14, true), (14, false), (4, true)]
        );
        // A dword is four byte writes, as QEMU splits it (realmode.flat: outl to 0x200b).
        lines.lock().unwrap().clear();
        dev.pio_write_port(0x200b, &1u32.to_le_bytes());
        assert_eq!(
            *lines.lock().unwrap(),
            vec![(11, true), (12, false), (13, false), (14, false)]
        );
        let mut byte = [0xaau8];
        dev.pio_read_port(0x2000, &mut byte);
        assert_eq!(byte, [0]);
    }

    #[test]
    fn memory_window_reads_back_what_was_written() {
        let (_, mut dev) = device();
        dev.iomem_write(0x10, &0x0102_0304_0506_0708u64.to_le_bytes());
        let mut word = [0u8; 2];
        dev.iomem_read(0x12, &mut word);
        assert_eq!(word, [0x06, 0x05]);
        dev.iomem_write(0xffff, &[1, 2, 3, 4]);
        assert_eq!(dev.iomem()[0xffff], 1);
        let mut tail = [0u8; 2];
        dev.iomem_read(0xffff, &mut tail);
        assert_eq!(tail, [1, 0xff]);
        dev.reset();
        assert!(dev.iomem().iter().all(|b| *b == 0));
    }

    proptest! {
        /// No access sequence panics; the scratch register follows a byte-array model.
        #[test]
        fn any_access_sequence(ops in prop::collection::vec(
            (any::<bool>(), prop_oneof![0xdcu16..0xf0, 0x1ff8u16..0x2020, any::<u16>()],
             prop::collection::vec(any::<u8>(), 0..10), any::<u64>()),
            0..64,
        )) {
            let (lines, mut dev) = device();
            let mut model = [0u8; 4];
            for (write, port, bytes, mem_offset) in ops {
                let mut buf = bytes.clone();
                let mem_offset = mem_offset % 0x1_0010;
                if write {
                    dev.pio_write_port(port, &bytes);
                    dev.iomem_write(mem_offset, &bytes);
                    let base = match port { 0xe0..=0xe3 => Some(0xe0), 0xe8..=0xeb => Some(0xe8), _ => None };
                    if let Some(base) = base {
                        if (1..=4).contains(&bytes.len()) {
                            let start = usize::from(port - base);
                            for (i, b) in bytes.iter().enumerate().take(4 - start) {
                                model[start + i] = *b;
                            }
                        }
                    }
                } else {
                    dev.pio_read_port(port, &mut buf);
                    dev.iomem_read(mem_offset, &mut buf);
                }
                prop_assert_eq!(dev.ioport_data(), u32::from_le_bytes(model));
            }
            prop_assert!(lines.lock().unwrap().iter().all(|(irq, _)| *irq < 16));
        }
    }
}
