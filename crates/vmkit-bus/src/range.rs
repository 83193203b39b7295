//! Address ranges on the two buses.

use std::fmt;

use crate::{Error, Result, Space};

/// An inclusive span `base..=last` in a 64-bit address space, the common form both buses use
/// internally. Keeping `last` instead of `base + size` means a range that ends at the very top
/// of its space (port 0xFFFF, MMIO `u64::MAX`) needs no wider type and cannot overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub(crate) base: u64,
    pub(crate) last: u64,
}

impl Span {
    fn new(space: Space, base: u64, size: u64) -> Result<Self> {
        if size == 0 {
            return Err(Error::EmptyRange { space, base });
        }
        let last = base
            .checked_add(size - 1)
            .filter(|last| *last <= space.max_address())
            .ok_or(Error::RangeOverflow {
                space,
                base,
                size,
                max: space.max_address(),
            })?;
        Ok(Span { base, last })
    }

    pub(crate) fn overlaps(&self, other: &Span) -> bool {
        self.base <= other.last && other.base <= self.last
    }

    /// Size of the span; saturates for the one span that covers all of the 64-bit space.
    pub(crate) fn size(&self) -> u64 {
        (self.last - self.base).saturating_add(1)
    }
}

/// A range of I/O ports: `size` ports starting at `base`, within 0..=0xFFFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PioRange(pub(crate) Span);

impl PioRange {
    /// Creates the range `base..base + size`.
    ///
    /// Fails with [`Error::EmptyRange`] for `size == 0` and with [`Error::RangeOverflow`] if the
    /// range would run past port 0xFFFF (a range that ends exactly at 0xFFFF is fine).
    pub fn new(base: u16, size: u16) -> Result<Self> {
        Span::new(Space::Pio, u64::from(base), u64::from(size)).map(PioRange)
    }

    /// First port of the range.
    pub fn base(&self) -> u16 {
        // Both ends were checked against 0xFFFF on construction.
        u16::try_from(self.0.base).unwrap_or(u16::MAX)
    }

    /// Last port of the range (inclusive).
    pub fn last(&self) -> u16 {
        u16::try_from(self.0.last).unwrap_or(u16::MAX)
    }

    /// Number of ports in the range (1..=0x10000).
    pub fn size(&self) -> u32 {
        // At most 0x10000, so the cast to u32 is lossless.
        u32::try_from(self.0.size()).unwrap_or(u32::MAX)
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.0.base..=self.0.last).contains(&u64::from(port))
    }
}

impl From<vm_device::bus::PioRange> for PioRange {
    /// vm-device ranges are validated the same way (non-empty, no overflow), so this cannot fail.
    fn from(range: vm_device::bus::PioRange) -> Self {
        let base = u64::from(range.base().0);
        let last = u64::from(range.last().0);
        PioRange(Span { base, last })
    }
}

impl fmt::Display for PioRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..={:#x}", self.0.base, self.0.last)
    }
}

/// A range of guest-physical MMIO addresses: `size` bytes starting at `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioRange(pub(crate) Span);

impl MmioRange {
    /// Creates the range `base..base + size`.
    ///
    /// Fails with [`Error::EmptyRange`] for `size == 0` and with [`Error::RangeOverflow`] if the
    /// range would run past `u64::MAX` (a range that ends exactly at `u64::MAX` is fine).
    pub fn new(base: u64, size: u64) -> Result<Self> {
        Span::new(Space::Mmio, base, size).map(MmioRange)
    }

    /// First address of the range.
    pub fn base(&self) -> u64 {
        self.0.base
    }

    /// Last address of the range (inclusive).
    pub fn last(&self) -> u64 {
        self.0.last
    }

    /// Number of bytes in the range.
    pub fn size(&self) -> u64 {
        self.0.size()
    }

    /// Whether `addr` lies in the range.
    pub fn contains(&self, addr: u64) -> bool {
        (self.0.base..=self.0.last).contains(&addr)
    }
}

impl From<vm_device::bus::MmioRange> for MmioRange {
    /// vm-device ranges are validated the same way (non-empty, no overflow), so this cannot fail.
    fn from(range: vm_device::bus::MmioRange) -> Self {
        MmioRange(Span {
            base: range.base().0,
            last: range.last().0,
        })
    }
}

impl fmt::Display for MmioRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..={:#x}", self.0.base, self.0.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pio_range_edges() {
        let top = PioRange::new(0xFFFF, 1).unwrap();
        assert_eq!((top.base(), top.last(), top.size()), (0xFFFF, 0xFFFF, 1));
        let all = PioRange::new(0, 0xFFFF).unwrap();
        assert_eq!(all.last(), 0xFFFE);
        assert!(matches!(
            PioRange::new(0xFFFF, 2),
            Err(Error::RangeOverflow {
                base: 0xFFFF,
                size: 2,
                max: 0xFFFF,
                ..
            })
        ));
        assert!(matches!(
            PioRange::new(0x10, 0),
            Err(Error::EmptyRange { base: 0x10, .. })
        ));
        assert!(top.contains(0xFFFF) && !top.contains(0xFFFE));
    }

    #[test]
    fn mmio_range_edges() {
        let top = MmioRange::new(u64::MAX, 1).unwrap();
        assert_eq!(
            (top.base(), top.last(), top.size()),
            (u64::MAX, u64::MAX, 1)
        );
        let near = MmioRange::new(u64::MAX - 0xFFF, 0x1000).unwrap();
        assert_eq!(near.last(), u64::MAX);
        assert!(MmioRange::new(u64::MAX - 0xFFF, 0x1001).is_err());
        assert!(MmioRange::new(u64::MAX, u64::MAX).is_err());
        let whole = MmioRange::new(0, u64::MAX).unwrap();
        assert_eq!(whole.last(), u64::MAX - 1);
        assert_eq!(whole.size(), u64::MAX);
    }

    #[test]
    fn converts_vm_device_ranges() {
        use vm_device::bus::{MmioAddress, PioAddress};
        let pio = vm_device::bus::PioRange::new(PioAddress(0x3f8), 8).unwrap();
        assert_eq!(PioRange::from(pio), PioRange::new(0x3f8, 8).unwrap());
        let mmio = vm_device::bus::MmioRange::new(MmioAddress(u64::MAX - 7), 8).unwrap();
        assert_eq!(
            MmioRange::from(mmio),
            MmioRange::new(u64::MAX - 7, 8).unwrap()
        );
    }

    #[test]
    fn display_is_inclusive_hex() {
        assert_eq!(
            PioRange::new(0x3f8, 8).unwrap().to_string(),
            "0x3f8..=0x3ff"
        );
        assert_eq!(
            MmioRange::new(0x1000, 0x1000).unwrap().to_string(),
            "0x1000..=0x1fff"
        );
    }
}
