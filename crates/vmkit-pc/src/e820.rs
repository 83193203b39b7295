//! The BIOS e820 memory map: what the guest OS is told about guest-physical memory.

use std::fmt;

use crate::error::{Error, Result};

/// The type of an e820 entry (the `type` field of an `int 0x15, eax=0xe820` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum E820Type {
    /// 1: usable RAM.
    Ram,
    /// 2: reserved, not usable.
    Reserved,
    /// 3: ACPI tables, usable once they were read.
    Acpi,
    /// 4: ACPI non-volatile storage.
    Nvs,
    /// 5: memory found to be bad.
    Unusable,
    /// 7: persistent memory.
    Pmem,
    /// Any other code.
    Other(u32),
}

impl E820Type {
    /// The numeric code stored in an e820 record.
    pub fn code(self) -> u32 {
        match self {
            Self::Ram => 1,
            Self::Reserved => 2,
            Self::Acpi => 3,
            Self::Nvs => 4,
            Self::Unusable => 5,
            Self::Pmem => 7,
            Self::Other(code) => code,
        }
    }

    /// The type of numeric code `code`.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Ram,
            2 => Self::Reserved,
            3 => Self::Acpi,
            4 => Self::Nvs,
            5 => Self::Unusable,
            7 => Self::Pmem,
            other => Self::Other(other),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Ram => "usable",
            Self::Reserved => "reserved",
            Self::Acpi => "ACPI data",
            Self::Nvs => "ACPI NVS",
            Self::Unusable => "unusable",
            Self::Pmem => "persistent (type 7)",
            Self::Other(_) => "type ?",
        }
    }
}

/// One e820 entry: `size` bytes from guest-physical `addr`, of type `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct E820Entry {
    /// First guest-physical address.
    pub addr: u64,
    /// Length in bytes (at least 1).
    pub size: u64,
    /// What the range is.
    pub kind: E820Type,
}

impl E820Entry {
    /// One past the last address (the entry never wraps past 2^64 - 1 but may end exactly at
    /// 2^64, hence u128).
    pub fn end(&self) -> u128 {
        u128::from(self.addr) + u128::from(self.size)
    }
}

/// An e820 map: non-overlapping entries kept sorted by address.
///
/// Adjacent entries are kept as added (not merged), so the map says exactly what its builder
/// put in. [`E820Map::encode`] gives the 20-byte records Linux's zero page
/// (`boot_params.e820_table`) and QEMU's `etc/e820` fw_cfg file carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct E820Map {
    entries: Vec<E820Entry>,
}

impl E820Map {
    /// Size of one encoded record: u64 address, u64 size, u32 type, little endian, packed.
    pub const RECORD_SIZE: usize = 20;
    /// How many entries Linux's zero page holds (`E820_MAX_ENTRIES_ZEROPAGE`); larger maps
    /// need a `setup_data` extension.
    pub const ZEROPAGE_MAX_ENTRIES: usize = 128;

    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry. Refuses an empty entry, one running past 2^64, or one overlapping an
    /// existing entry (the map stays unchanged then).
    pub fn add(&mut self, addr: u64, size: u64, kind: E820Type) -> Result<()> {
        let entry = E820Entry { addr, size, kind };
        if size == 0 || entry.end() > 1u128 << 64 {
            return Err(Error::E820Invalid { addr, size });
        }
        let index = self.entries.partition_point(|e| e.addr < addr);
        let overlapping = [index.checked_sub(1), Some(index)]
            .into_iter()
            .flatten()
            .filter_map(|i| self.entries.get(i))
            .find(|other| other.end() > u128::from(addr) && entry.end() > u128::from(other.addr));
        if let Some(other) = overlapping {
            return Err(Error::E820Overlap {
                addr,
                size,
                other_addr: other.addr,
                other_size: other.size,
            });
        }
        self.entries.insert(index, entry);
        Ok(())
    }

    /// The entries, sorted by address.
    pub fn entries(&self) -> &[E820Entry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes of entries of type `kind`.
    pub fn total(&self, kind: E820Type) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == kind)
            .fold(0u64, |sum, e| sum.saturating_add(e.size))
    }

    /// The entry containing `addr`, if any.
    pub fn find(&self, addr: u64) -> Option<&E820Entry> {
        let index = self.entries.partition_point(|e| e.addr <= addr);
        self.entries
            .get(index.checked_sub(1)?)
            .filter(|e| e.end() > u128::from(addr))
    }

    /// The map as packed little-endian 20-byte records, in address order.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * Self::RECORD_SIZE);
        for entry in &self.entries {
            bytes.extend_from_slice(&entry.addr.to_le_bytes());
            bytes.extend_from_slice(&entry.size.to_le_bytes());
            bytes.extend_from_slice(&entry.kind.code().to_le_bytes());
        }
        bytes
    }

    /// Parses packed 20-byte records (the inverse of [`encode`](Self::encode)); a trailing
    /// partial record is ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut map = Self::new();
        for record in bytes.chunks_exact(Self::RECORD_SIZE) {
            let (addr, rest) = record.split_at(8);
            let (size, kind) = rest.split_at(8);
            let le64 = |b: &[u8]| b.try_into().map(u64::from_le_bytes).unwrap_or(0);
            let kind = kind.try_into().map(u32::from_le_bytes).unwrap_or(0);
            map.add(le64(addr), le64(size), E820Type::from_code(kind))?;
        }
        Ok(map)
    }
}

impl fmt::Display for E820Map {
    /// One line per entry, as Linux prints it at boot: `[mem 0x...-0x...] usable`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for entry in &self.entries {
            let last = entry.addr.saturating_add(entry.size.saturating_sub(1));
            write!(
                f,
                "[mem {:#018x}-{:#018x}] {}",
                entry.addr,
                last,
                entry.kind.label()
            )?;
            if let E820Type::Other(code) = entry.kind {
                write!(f, " {code}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
