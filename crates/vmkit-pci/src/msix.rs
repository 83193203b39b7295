//! MSI-X: the capability, the vector table and the pending-bit array (PCI Local Bus
//! Specification 3.0, section 6.8.2), as QEMU's `hw/pci/msix.c` models them.
//!
//! [`Msix`] owns the table and the PBA and mirrors the capability's Message Control word
//! (the guest writes it through the [`ConfigSpace`], whose write mask opens only the enable
//! and function-mask bits). The device raises a vector with [`Msix::notify`]; delivery goes
//! out through an [`MsiSignal`] the machine provides (an irqfd per vector plus a GSI route
//! under KVM, or `KVM_SIGNAL_MSI`). Whenever a vector's effective route changes (MSI-X
//! enable, function mask, the entry's mask bit, its address or data), the model tells the
//! machine with [`MsiSignal::update_vector`], so it can update its GSI routes before the
//! next delivery.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vmkit_pci::{ConfigSpace, MsiMessage, MsiSignal, Msix, MsixDelivery};
//!
//! #[derive(Default)]
//! struct Log(Mutex<Vec<(u16, MsiMessage)>>);
//! impl MsiSignal for Log {
//!     fn signal(&self, vector: u16, message: MsiMessage) {
//!         self.0.lock().unwrap().push((vector, message));
//!     }
//! }
//!
//! let log = Arc::new(Log::default());
//! let mut cfg = ConfigSpace::new(0x1af4, 0x1041, 0x02, 0x00, 0x00, 0x01);
//! let (_bar_size, pba) = Msix::exclusive_bar_layout(2);
//! let mut msix = Msix::new(2, 1, 0, 1, pba, log.clone())?;
//! let cap = msix.add_capability(&mut cfg)?;
//!
//! // The guest programs entry 0 (address, data, unmask) and enables MSI-X.
//! msix.table_write(0x0, &0xfee0_0000u32.to_le_bytes());
//! msix.table_write(0x8, &0x41u32.to_le_bytes());
//! msix.table_write(0xc, &0u32.to_le_bytes());
//! cfg.write(cap + 2, &0x8000u16.to_le_bytes());
//! msix.config_written(&cfg);
//!
//! assert_eq!(msix.notify(0), MsixDelivery::Sent);
//! assert_eq!(log.0.lock().unwrap()[0], (0, MsiMessage { address: 0xfee0_0000, data: 0x41 }));
//! // Entry 1 is still masked (its reset state): the vector waits in the PBA.
//! assert_eq!(msix.notify(1), MsixDelivery::Pending);
//! let mut pba_bits = [0u8; 8];
//! msix.pba_read(0, &mut pba_bits);
//! assert_eq!(pba_bits[0], 0b10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;

use crate::ConfigSpace;

/// Capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Message Control bit 15: MSI-X enable.
pub const MSIX_CONTROL_ENABLE: u16 = 1 << 15;
/// Message Control bit 14: function mask (every vector masked).
pub const MSIX_CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Message Control bits 10:0: table size minus one.
pub const MSIX_CONTROL_TABLE_SIZE: u16 = 0x07ff;
/// Bytes per table entry: address low, address high, data, vector control.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Vector control bit 0: the entry is masked.
pub const MSIX_ENTRY_MASKED: u32 = 1;
/// Most vectors one function can have.
pub const MSIX_MAX_VECTORS: u16 = 2048;
/// Length of the capability structure (ID, next, control, table, PBA).
pub const MSIX_CAP_LEN: usize = 12;

/// One MSI message: where the device writes (`address`) and what (`data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MsiMessage {
    /// The message address (on x86, 0xfee0_0000 plus the destination APIC fields).
    pub address: u64,
    /// The message data (vector, delivery mode, trigger).
    pub data: u32,
}

impl fmt::Display for MsiMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "address {:#x} data {:#x}", self.address, self.data)
    }
}

/// Where MSI-X messages go: the machine's side of a function's vectors.
///
/// Under KVM a machine typically keeps one irqfd and one GSI per vector: `update_vector`
/// sets the GSI's route (`KVM_SET_GSI_ROUTING`) and `signal` writes the vector's irqfd. A
/// machine without irqfds delivers `message` directly (`KVM_SIGNAL_MSI`). Both methods may
/// be called from any thread (a device's I/O thread signals); they must not call back into
/// the device.
pub trait MsiSignal: Send + Sync {
    /// Delivers `vector` now; `message` is its current address and data.
    fn signal(&self, vector: u16, message: MsiMessage);

    /// `vector`'s route changed: `Some(message)` when it is deliverable with `message`
    /// (MSI-X enabled, function and entry unmasked), `None` when it is not. Called only on
    /// a change, and before any `signal` with the new message. Default: ignored.
    fn update_vector(&self, vector: u16, route: Option<MsiMessage>) {
        let _ = (vector, route);
    }
}

impl<T: MsiSignal + ?Sized> MsiSignal for Arc<T> {
    fn signal(&self, vector: u16, message: MsiMessage) {
        (**self).signal(vector, message)
    }

    fn update_vector(&self, vector: u16, route: Option<MsiMessage>) {
        (**self).update_vector(vector, route)
    }
}

/// An [`MsiSignal`] that drops everything (a function whose MSI-X is not wired).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullMsiSignal;

impl MsiSignal for NullMsiSignal {
    fn signal(&self, _vector: u16, _message: MsiMessage) {}
}

/// What [`Msix::notify`] did with a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsixDelivery {
    /// The message went out through [`MsiSignal::signal`].
    Sent,
    /// The vector (or the function) is masked: its PBA bit is set and it goes out on unmask.
    Pending,
    /// MSI-X is disabled or the vector does not exist: nothing happened (as in QEMU).
    Dropped,
}

/// Errors declaring an MSI-X capability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsixError {
    /// The vector count is 0 or above 2048.
    #[error("MSI-X vector count {vectors} must be in 1..={max}")]
    InvalidVectorCount {
        /// Requested count.
        vectors: u16,
        /// The limit (2048).
        max: u16,
    },
    /// A BAR indicator past BAR 5.
    #[error("MSI-X {what} BIR {bir} must be a BAR index 0..=5")]
    InvalidBir {
        /// `table` or `PBA`.
        what: &'static str,
        /// Requested BAR index.
        bir: u8,
    },
    /// An offset that is not 8-byte aligned (its low 3 bits hold the BIR).
    #[error("MSI-X {what} offset {offset:#x} must be 8-byte aligned (bits 2:0 hold the BIR)")]
    MisalignedOffset {
        /// `table` or `PBA`.
        what: &'static str,
        /// Requested offset.
        offset: u32,
    },
    /// The table and the PBA overlap in the same BAR.
    #[error("MSI-X table ({table_offset:#x}..{table_end:#x}) and PBA ({pba_offset:#x}..{pba_end:#x}) overlap in BAR {bir}")]
    Overlap {
        /// The shared BAR.
        bir: u8,
        /// Table start.
        table_offset: u32,
        /// Table end (exclusive).
        table_end: u64,
        /// PBA start.
        pba_offset: u32,
        /// PBA end (exclusive).
        pba_end: u64,
    },
    /// The capability could not be placed in configuration space.
    #[error("MSI-X capability: {0}")]
    Config(#[from] crate::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) addr_lo: u32,
    pub(crate) addr_hi: u32,
    pub(crate) data: u32,
    pub(crate) control: u32,
}

impl Entry {
    const RESET: Entry = Entry {
        addr_lo: 0,
        addr_hi: 0,
        data: 0,
        control: MSIX_ENTRY_MASKED,
    };

    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: u64::from(self.addr_hi) << 32 | u64::from(self.addr_lo),
            data: self.data,
        }
    }

    fn dword(&self, index: u64) -> u32 {
        match index {
            0 => self.addr_lo,
            1 => self.addr_hi,
            2 => self.data,
            _ => self.control,
        }
    }

    fn set_dword(&mut self, index: u64, value: u32) {
        match index {
            0 => self.addr_lo = value,
            1 => self.addr_hi = value,
            2 => self.data = value,
            // Bits 31:1 of vector control are reserved (read 0).
            _ => self.control = value & MSIX_ENTRY_MASKED,
        }
    }
}

/// The MSI-X state of one PCI function: capability registers, vector table, PBA.
///
/// Table accesses must be 4 or 8 bytes, naturally aligned (the spec's rule); others read
/// as 0 and are dropped. PBA writes are dropped (it is read-only). All entries reset
/// masked with address and data 0, MSI-X disabled, no vector pending.
pub struct Msix {
    vectors: u16,
    table_bir: u8,
    table_offset: u32,
    pba_bir: u8,
    pba_offset: u32,
    pub(crate) table: Vec<Entry>,
    pub(crate) pba: Vec<u64>,
    pub(crate) enabled: bool,
    pub(crate) function_mask: bool,
    cap_offset: Option<u16>,
    signal: Arc<dyn MsiSignal>,
    /// The route last reported per vector through `update_vector`.
    routes: Vec<Option<MsiMessage>>,
}

impl fmt::Debug for Msix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Msix")
            .field("vectors", &self.vectors)
            .field("table", &(self.table_bir, self.table_offset))
            .field("pba", &(self.pba_bir, self.pba_offset))
            .field("enabled", &self.enabled)
            .field("function_mask", &self.function_mask)
            .field("cap_offset", &self.cap_offset)
            .finish_non_exhaustive()
    }
}

impl Msix {
    /// The layout QEMU's `msix_init_exclusive_bar` gives `vectors` vectors in a BAR of
    /// their own: the table at offset 0 and the PBA in the upper half of a 4 KiB BAR (or
    /// right after the table when it needs more than 2 KiB); returns `(bar_size,
    /// pba_offset)`, the size a power of two.
    pub fn exclusive_bar_layout(vectors: u16) -> (u64, u32) {
        let table = u64::from(vectors) * MSIX_ENTRY_SIZE;
        let pba_size = u64::from(vectors).div_ceil(64) * 8;
        let mut pba_offset = 2048u64;
        if table > pba_offset {
            pba_offset = table;
        }
        let size = (pba_offset + pba_size).max(4096).next_power_of_two();
        // vectors <= u16::MAX, so the table is below 1 MiB.
        (size, pba_offset as u32)
    }

    /// MSI-X with `vectors` vectors (1..=2048), the table at `table_offset` in BAR
    /// `table_bir` and the PBA at `pba_offset` in BAR `pba_bir`; deliveries go to `signal`.
    pub fn new(
        vectors: u16,
        table_bir: u8,
        table_offset: u32,
        pba_bir: u8,
        pba_offset: u32,
        signal: Arc<dyn MsiSignal>,
    ) -> Result<Self, MsixError> {
        if vectors == 0 || vectors > MSIX_MAX_VECTORS {
            return Err(MsixError::InvalidVectorCount {
                vectors,
                max: MSIX_MAX_VECTORS,
            });
        }
        for (what, bir, offset) in [
            ("table", table_bir, table_offset),
            ("PBA", pba_bir, pba_offset),
        ] {
            if bir > 5 {
                return Err(MsixError::InvalidBir { what, bir });
            }
            if offset & 7 != 0 {
                return Err(MsixError::MisalignedOffset { what, offset });
            }
        }
        let n = usize::from(vectors);
        let table_end = u64::from(table_offset) + u64::from(vectors) * MSIX_ENTRY_SIZE;
        let pba_end = u64::from(pba_offset) + u64::from(vectors).div_ceil(64) * 8;
        if table_bir == pba_bir
            && u64::from(table_offset) < pba_end
            && u64::from(pba_offset) < table_end
        {
            return Err(MsixError::Overlap {
                bir: table_bir,
                table_offset,
                table_end,
                pba_offset,
                pba_end,
            });
        }
        Ok(Msix {
            vectors,
            table_bir,
            table_offset,
            pba_bir,
            pba_offset,
            table: vec![Entry::RESET; n],
            pba: vec![0; n.div_ceil(64)],
            enabled: false,
            function_mask: false,
            cap_offset: None,
            signal,
            routes: vec![None; n],
        })
    }

    /// Appends the MSI-X capability to `cfg` and opens its enable and function-mask bits
    /// to the guest; returns its offset.
    pub fn add_capability(&mut self, cfg: &mut ConfigSpace) -> Result<u16, MsixError> {
        let mut body = [0u8; MSIX_CAP_LEN - 2];
        body[0..2].copy_from_slice(&(self.vectors - 1).to_le_bytes());
        body[2..6].copy_from_slice(&(self.table_offset | u32::from(self.table_bir)).to_le_bytes());
        body[6..10].copy_from_slice(&(self.pba_offset | u32::from(self.pba_bir)).to_le_bytes());
        let off = cfg.add_capability(CAP_ID_MSIX, &body)?;
        cfg.set_write_mask_word(off + 2, MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK);
        self.cap_offset = Some(off);
        Ok(off)
    }

    /// Where the capability sits in configuration space, once added.
    pub fn cap_offset(&self) -> Option<u16> {
        self.cap_offset
    }

    /// Whether a configuration access at `offset` of `len` bytes touches Message Control.
    pub fn touches_control(&self, offset: u16, len: usize) -> bool {
        self.cap_offset.is_some_and(|cap| {
            let (start, end) = (usize::from(offset), usize::from(offset) + len);
            start < usize::from(cap) + 4 && usize::from(cap) + 2 < end
        })
    }

    /// Re-reads Message Control from `cfg` after a guest configuration write (cheap; call
    /// it after every write or after those [`touches_control`](Self::touches_control)
    /// reports). Enabling MSI-X or clearing the function mask delivers pending vectors
    /// whose entries are unmasked.
    pub fn config_written(&mut self, cfg: &ConfigSpace) {
        let Some(cap) = self.cap_offset else {
            return;
        };
        let control = cfg.word(cap + 2);
        let enabled = control & MSIX_CONTROL_ENABLE != 0;
        let function_mask = control & MSIX_CONTROL_FUNCTION_MASK != 0;
        if (enabled, function_mask) != (self.enabled, self.function_mask) {
            self.enabled = enabled;
            self.function_mask = function_mask;
            for v in 0..self.vectors {
                self.refresh(v);
            }
        }
    }

    /// Number of vectors.
    pub fn vectors(&self) -> u16 {
        self.vectors
    }

    /// The table's BAR and offset.
    pub fn table_location(&self) -> (u8, u32) {
        (self.table_bir, self.table_offset)
    }

    /// The PBA's BAR and offset.
    pub fn pba_location(&self) -> (u8, u32) {
        (self.pba_bir, self.pba_offset)
    }

    /// Size of the table in bytes.
    pub fn table_len(&self) -> u64 {
        u64::from(self.vectors) * MSIX_ENTRY_SIZE
    }

    /// Size of the PBA in bytes (whole qwords).
    pub fn pba_len(&self) -> u64 {
        self.pba.len() as u64 * 8
    }

    /// MSI-X enable (Message Control bit 15).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Function mask (Message Control bit 14).
    pub fn is_function_masked(&self) -> bool {
        self.function_mask
    }

    /// Whether `vector` cannot be delivered now: MSI-X off, function masked, or its
    /// entry masked. Vectors that do not exist are masked.
    pub fn is_masked(&self, vector: u16) -> bool {
        match self.table.get(usize::from(vector)) {
            Some(e) => !self.enabled || self.function_mask || e.control & MSIX_ENTRY_MASKED != 0,
            None => true,
        }
    }

    /// The address and data programmed in `vector`'s entry.
    pub fn message(&self, vector: u16) -> Option<MsiMessage> {
        self.table.get(usize::from(vector)).map(Entry::message)
    }

    /// Whether `vector`'s PBA bit is set.
    pub fn is_pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        v < usize::from(self.vectors) && self.pba[v / 64] & (1 << (v % 64)) != 0
    }

    /// Clears `vector`'s PBA bit (the device withdrew the interrupt).
    pub fn clear_pending(&mut self, vector: u16) {
        let v = usize::from(vector);
        if v < usize::from(self.vectors) {
            self.pba[v / 64] &= !(1 << (v % 64));
        }
    }

    /// Clears every PBA bit.
    pub fn clear_all_pending(&mut self) {
        self.pba.fill(0);
    }

    /// Raises `vector`: delivers it, or sets its PBA bit if it is masked, or drops it if
    /// MSI-X is disabled or the vector does not exist.
    pub fn notify(&mut self, vector: u16) -> MsixDelivery {
        let v = usize::from(vector);
        if !self.enabled || v >= usize::from(self.vectors) {
            return MsixDelivery::Dropped;
        }
        if self.is_masked(vector) {
            self.pba[v / 64] |= 1 << (v % 64);
            return MsixDelivery::Pending;
        }
        self.signal.signal(vector, self.table[v].message());
        MsixDelivery::Sent
    }

    /// A guest read of the table at `offset` within it (4 or 8 bytes, aligned).
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !Self::access_ok(offset, data.len()) {
            return;
        }
        for (k, chunk) in data.chunks_mut(4).enumerate() {
            let o = offset + 4 * k as u64;
            if let Some(e) = self.table.get((o / MSIX_ENTRY_SIZE) as usize) {
                chunk.copy_from_slice(&e.dword((o % MSIX_ENTRY_SIZE) / 4).to_le_bytes());
            }
        }
    }

    /// A guest write of the table at `offset` within it (4 or 8 bytes, aligned). A change
    /// of the entry's route is reported; unmasking a pending vector delivers it.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        if !Self::access_ok(offset, data.len()) {
            return;
        }
        let mut touched = None;
        for (k, chunk) in data.chunks(4).enumerate() {
            let o = offset + 4 * k as u64;
            let index = (o / MSIX_ENTRY_SIZE) as usize;
            let Some(e) = self.table.get_mut(index) else {
                continue;
            };
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            e.set_dword((o % MSIX_ENTRY_SIZE) / 4, u32::from_le_bytes(b));
            touched = Some(index);
        }
        if let Some(index) = touched {
            // index < vectors <= 2048.
            self.refresh(index as u16);
        }
    }

    /// A guest read of the PBA at `offset` within it (any size; past the end reads 0).
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (k, byte) in data.iter_mut().enumerate() {
            let o = offset.saturating_add(k as u64);
            *byte = self
                .pba
                .get((o / 8) as usize)
                .map_or(0, |q| (q >> ((o % 8) * 8)) as u8);
        }
    }

    /// Back to the power-on state: every entry masked with address and data 0, nothing
    /// pending, MSI-X disabled, function unmasked (the capability's bits in configuration
    /// space are cleared by [`ConfigSpace::reset`]). Routes that were live are reported
    /// gone.
    pub fn reset(&mut self) {
        self.table.fill(Entry::RESET);
        self.pba.fill(0);
        self.enabled = false;
        self.function_mask = false;
        for v in 0..self.vectors {
            self.refresh(v);
        }
    }

    fn access_ok(offset: u64, len: usize) -> bool {
        (len == 4 || len == 8) && offset % len as u64 == 0
    }

    /// Reports `vector`'s route if it changed and delivers it if it is pending and now
    /// unmasked.
    pub(crate) fn refresh(&mut self, vector: u16) {
        let v = usize::from(vector);
        let route = (!self.is_masked(vector)).then(|| self.table[v].message());
        if self.routes[v] != route {
            self.routes[v] = route;
            self.signal.update_vector(vector, route);
        }
        if let Some(message) = route {
            if self.is_pending(vector) {
                self.clear_pending(vector);
                self.signal.signal(vector, message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Rec {
        sent: Mutex<Vec<(u16, MsiMessage)>>,
        routes: Mutex<Vec<(u16, Option<MsiMessage>)>>,
    }

    impl MsiSignal for Rec {
        fn signal(&self, vector: u16, message: MsiMessage) {
            self.sent.lock().unwrap().push((vector, message));
        }
        fn update_vector(&self, vector: u16, route: Option<MsiMessage>) {
            self.routes.lock().unwrap().push((vector, route));
        }
    }

    fn setup(vectors: u16) -> (Msix, ConfigSpace, Arc<Rec>, u16) {
        let rec = Arc::new(Rec::default());
        let (_, pba) = Msix::exclusive_bar_layout(vectors);
        let mut msix = Msix::new(vectors, 1, 0, 1, pba, rec.clone()).unwrap();
        let mut cfg = ConfigSpace::new(0x1af4, 0x1000, 2, 0, 0, 0);
        let cap = msix.add_capability(&mut cfg).unwrap();
        (msix, cfg, rec, cap)
    }

    fn control(msix: &mut Msix, cfg: &mut ConfigSpace, cap: u16, value: u16) {
        cfg.write(cap + 2, &value.to_le_bytes());
        msix.config_written(cfg);
    }

    #[test]
    fn capability_layout_is_qemus() {
        let (_, cfg, _, cap) = setup(3);
        assert_eq!(cap, 0x40);
        assert_eq!(cfg.byte(cap), CAP_ID_MSIX);
        assert_eq!(cfg.word(cap + 2), 2, "table size - 1, disabled, unmasked");
        assert_eq!(cfg.dword(cap + 4), 1, "table at 0 in BAR 1");
        assert_eq!(cfg.dword(cap + 8), 0x800 | 1, "PBA at 0x800 in BAR 1");
        assert_eq!(Msix::exclusive_bar_layout(3), (4096, 2048));
        assert_eq!(Msix::exclusive_bar_layout(129), (4096, 129 * 16));
        assert_eq!(Msix::exclusive_bar_layout(255), (8192, 255 * 16));
        assert_eq!(Msix::exclusive_bar_layout(2048), (65536, 32768));
    }

    #[test]
    fn only_enable_and_mask_bits_are_writable() {
        let (mut msix, mut cfg, _, cap) = setup(3);
        control(&mut msix, &mut cfg, cap, 0xffff);
        assert_eq!(cfg.word(cap + 2), 0xc002);
        assert!(msix.is_enabled() && msix.is_function_masked());
        cfg.write(cap + 4, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(cfg.dword(cap + 4), 1, "table offset/BIR is read-only");
        assert!(msix.touches_control(cap + 3, 1));
        assert!(!msix.touches_control(cap + 4, 4));
        assert!(msix.touches_control(cap, 4));
    }

    #[test]
    fn entries_reset_masked_and_read_back() {
        let (mut msix, _, _, _) = setup(3);
        let mut d = [0u8; 4];
        msix.table_read(0x1c, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1, "vector control masked at reset");
        msix.table_write(0x10, &0x1234_5678_fee0_1000u64.to_le_bytes());
        let mut q = [0u8; 8];
        msix.table_read(0x10, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1234_5678_fee0_1000);
        msix.table_write(0x1c, &0xffff_ffffu32.to_le_bytes());
        msix.table_read(0x1c, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1, "reserved bits read 0");
        // Misaligned and odd-sized accesses are dropped / read 0.
        msix.table_write(0x12, &0xffff_ffffu32.to_le_bytes());
        msix.table_write(0x10, &[0xff, 0xff]);
        msix.table_read(0x10, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1234_5678_fee0_1000);
        let mut two = [0xaau8; 2];
        msix.table_read(0x10, &mut two);
        assert_eq!(two, [0, 0]);
        // Past the table: reads 0, writes dropped.
        msix.table_write(0x30, &1u32.to_le_bytes());
        msix.table_read(0x30, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn masked_vector_goes_pending_and_unmask_delivers() {
        let (mut msix, mut cfg, rec, cap) = setup(3);
        assert_eq!(msix.notify(0), MsixDelivery::Dropped, "MSI-X disabled");
        control(&mut msix, &mut cfg, cap, MSIX_CONTROL_ENABLE);
        msix.table_write(0, &0xfee0_0000u32.to_le_bytes());
        msix.table_write(8, &0x30u32.to_le_bytes());
        assert_eq!(msix.notify(0), MsixDelivery::Pending);
        assert!(msix.is_pending(0));
        let mut pba = [0u8; 8];
        msix.pba_read(0, &mut pba);
        assert_eq!(pba[0], 1);
        msix.pba_read(8, &mut pba);
        assert_eq!(pba, [0; 8], "past the PBA reads 0");
        assert!(rec.sent.lock().unwrap().is_empty());
        msix.table_write(0xc, &0u32.to_le_bytes());
        assert!(!msix.is_pending(0));
        let msg = MsiMessage {
            address: 0xfee0_0000,
            data: 0x30,
        };
        assert_eq!(*rec.sent.lock().unwrap(), vec![(0, msg)]);
        assert_eq!(rec.routes.lock().unwrap().last(), Some(&(0, Some(msg))));
        assert_eq!(msix.notify(0), MsixDelivery::Sent);
        assert_eq!(msix.notify(7), MsixDelivery::Dropped, "no such vector");
    }

    #[test]
    fn function_mask_holds_every_vector() {
        let (mut msix, mut cfg, rec, cap) = setup(2);
        for v in 0..2u64 {
            msix.table_write(v * 16 + 8, &(0x40 + v as u32).to_le_bytes());
            msix.table_write(v * 16 + 12, &0u32.to_le_bytes());
        }
        control(
            &mut msix,
            &mut cfg,
            cap,
            MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK,
        );
        assert_eq!(msix.notify(0), MsixDelivery::Pending);
        assert_eq!(msix.notify(1), MsixDelivery::Pending);
        control(&mut msix, &mut cfg, cap, MSIX_CONTROL_ENABLE);
        let sent: Vec<u16> = rec.sent.lock().unwrap().iter().map(|s| s.0).collect();
        assert_eq!(sent, vec![0, 1]);
        // Disabling reports routes gone.
        control(&mut msix, &mut cfg, cap, 0);
        let routes = rec.routes.lock().unwrap();
        assert_eq!(&routes[routes.len() - 2..], &[(0, None), (1, None)]);
    }

    #[test]
    fn reset_masks_and_clears() {
        let (mut msix, mut cfg, _, cap) = setup(2);
        control(&mut msix, &mut cfg, cap, MSIX_CONTROL_ENABLE);
        msix.table_write(0xc, &0u32.to_le_bytes());
        msix.table_write(0x1c, &0u32.to_le_bytes());
        control(
            &mut msix,
            &mut cfg,
            cap,
            MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK,
        );
        msix.notify(1);
        msix.reset();
        cfg.reset();
        assert!(!msix.is_enabled() && !msix.is_pending(1) && msix.is_masked(0));
        assert_eq!(cfg.word(cap + 2), 1);
    }

    #[test]
    fn bad_layouts_are_refused() {
        let s: Arc<dyn MsiSignal> = Arc::new(NullMsiSignal);
        assert!(matches!(
            Msix::new(0, 1, 0, 1, 2048, s.clone()),
            Err(MsixError::InvalidVectorCount { .. })
        ));
        assert!(matches!(
            Msix::new(4, 6, 0, 1, 2048, s.clone()),
            Err(MsixError::InvalidBir { .. })
        ));
        assert!(matches!(
            Msix::new(4, 1, 4, 1, 2048, s.clone()),
            Err(MsixError::MisalignedOffset { .. })
        ));
        assert!(matches!(
            Msix::new(4, 1, 0, 1, 32, s),
            Err(MsixError::Overlap { .. })
        ));
    }
}
