//! Guest-virtual to guest-physical translation by walking the guest's page tables from CR3,
//! as the CPU does: 4-level and 5-level (CR4.LA57) long mode, PAE, and 32-bit paging with or
//! without 4 MiB pages (CR4.PSE, PSE-36), large pages at every level that has them.
//!
//! The stub uses it when the VMM's own translation (`KVM_TRANSLATE`) fails or finds nothing.
//! Only presence is checked: a debugger may read what the guest itself could not (a
//! supervisor page from user mode, a read-only page for a write).

use crate::arch::X86SystemRegs;

const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;

const PRESENT: u64 = 1;
/// Page size bit: this entry maps a large page instead of pointing at a table.
const PAGE_SIZE: u64 = 1 << 7;
/// Physical address bits 51:12 of a 64-bit entry.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The paging controls of a vCPU.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PagingState {
    /// CR0 (PG).
    pub cr0: u64,
    /// CR3 (the top table).
    pub cr3: u64,
    /// CR4 (PSE, PAE, LA57).
    pub cr4: u64,
    /// EFER (LMA).
    pub efer: u64,
}

impl From<&X86SystemRegs> for PagingState {
    fn from(regs: &X86SystemRegs) -> Self {
        Self {
            cr0: regs.cr0,
            cr3: regs.cr3,
            cr4: regs.cr4,
            efer: regs.efer,
        }
    }
}

/// Which translation the CPU does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingMode {
    /// Paging off: linear = physical (32-bit addresses).
    None,
    /// 32-bit paging: two levels of 4-byte entries.
    Bits32,
    /// PAE: a 4-entry PDPT, then two levels of 8-byte entries.
    Pae,
    /// Long mode with 4 levels (48-bit addresses).
    Level4,
    /// Long mode with 5 levels (57-bit addresses).
    Level5,
}

impl PagingState {
    /// The mode these controls select.
    pub fn mode(&self) -> PagingMode {
        if self.cr0 & CR0_PG == 0 {
            PagingMode::None
        } else if self.efer & EFER_LMA != 0 {
            if self.cr4 & CR4_LA57 != 0 {
                PagingMode::Level5
            } else {
                PagingMode::Level4
            }
        } else if self.cr4 & CR4_PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Bits32
        }
    }
}

/// Translates `gva` under `state`, reading tables with `read` (guest physical address,
/// buffer; false if not memory). `None` if it is not mapped (or not canonical, or a table
/// is not in memory).
pub fn translate(
    state: &PagingState,
    gva: u64,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Option<u64> {
    match state.mode() {
        PagingMode::None => (gva <= u64::from(u32::MAX)).then_some(gva),
        PagingMode::Bits32 => walk_32(state, gva, read),
        PagingMode::Pae => walk_pae(state, gva, read),
        PagingMode::Level4 => walk_long(state.cr3, gva, 4, read),
        PagingMode::Level5 => walk_long(state.cr3, gva, 5, read),
    }
}

fn read_u64(read: &mut dyn FnMut(u64, &mut [u8]) -> bool, gpa: u64) -> Option<u64> {
    let mut bytes = [0u8; 8];
    read(gpa, &mut bytes).then(|| u64::from_le_bytes(bytes))
}

fn read_u32(read: &mut dyn FnMut(u64, &mut [u8]) -> bool, gpa: u64) -> Option<u64> {
    let mut bytes = [0u8; 4];
    read(gpa, &mut bytes).then(|| u64::from(u32::from_le_bytes(bytes)))
}

/// The entry at `level` (1 = page table) maps the address in `gva`'s low `12 + 9 * (level-1)`
/// bits; `table` is that level's table.
fn walk_levels(
    mut table: u64,
    gva: u64,
    top: u32,
    large_from: u32,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Option<u64> {
    for level in (1..=top).rev() {
        let shift = 12 + 9 * (level - 1);
        let index = (gva >> shift) & 0x1ff;
        let entry = read_u64(read, table + index * 8)?;
        if entry & PRESENT == 0 {
            return None;
        }
        if level == 1 {
            return Some((entry & ADDRESS_MASK) | (gva & 0xfff));
        }
        if entry & PAGE_SIZE != 0 {
            if level > large_from {
                return None; // reserved at this level: the CPU faults
            }
            let offset_mask = (1u64 << shift) - 1;
            return Some((entry & ADDRESS_MASK & !offset_mask) | (gva & offset_mask));
        }
        table = entry & ADDRESS_MASK;
    }
    None
}

fn walk_long(
    cr3: u64,
    gva: u64,
    levels: u32,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Option<u64> {
    // Canonical: the bits above the top level's are copies of its highest bit.
    let bits = 12 + 9 * levels;
    let high = (gva as i64) >> (bits - 1);
    if high != 0 && high != -1 {
        return None;
    }
    // Large pages: 1 GiB (PDPT, level 3) and 2 MiB (PD, level 2).
    walk_levels(cr3 & ADDRESS_MASK, gva, levels, 3, read)
}

fn walk_pae(
    state: &PagingState,
    gva: u64,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Option<u64> {
    let gva = gva & u64::from(u32::MAX);
    let pdpt = state.cr3 & 0xffff_ffe0;
    let pdpte = read_u64(read, pdpt + ((gva >> 30) & 3) * 8)?;
    if pdpte & PRESENT == 0 {
        return None;
    }
    // Then a page directory (2 MiB pages) and a page table, as long mode's lowest two levels.
    walk_levels(pdpte & ADDRESS_MASK, gva, 2, 2, read)
}

fn walk_32(
    state: &PagingState,
    gva: u64,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Option<u64> {
    let gva = gva & u64::from(u32::MAX);
    let directory = state.cr3 & 0xffff_f000;
    let pde = read_u32(read, directory + (gva >> 22) * 4)?;
    if pde & PRESENT == 0 {
        return None;
    }
    if pde & PAGE_SIZE != 0 && state.cr4 & CR4_PSE != 0 {
        // A 4 MiB page; PSE-36 puts physical bits 39:32 in PDE bits 20:13.
        let high = ((pde >> 13) & 0xff) << 32;
        return Some(high | (pde & 0xffc0_0000) | (gva & 0x3f_ffff));
    }
    let pte = read_u32(read, (pde & 0xffff_f000) + ((gva >> 12) & 0x3ff) * 4)?;
    if pte & PRESENT == 0 {
        return None;
    }
    Some((pte & 0xffff_f000) | (gva & 0xfff))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Sparse guest memory: 4 KiB pages that exist once written.
    #[derive(Default)]
    struct Memory(HashMap<u64, Vec<u8>>);

    impl Memory {
        fn put(&mut self, gpa: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                let at = gpa + i as u64;
                self.0.entry(at & !0xfff).or_insert_with(|| vec![0; 4096])[(at & 0xfff) as usize] =
                    *b;
            }
        }

        fn put64(&mut self, gpa: u64, value: u64) {
            self.put(gpa, &value.to_le_bytes());
        }

        fn put32(&mut self, gpa: u64, value: u32) {
            self.put(gpa, &value.to_le_bytes());
        }

        fn translate(&self, state: &PagingState, gva: u64) -> Option<u64> {
            translate(state, gva, &mut |gpa, buf| {
                for (i, b) in buf.iter_mut().enumerate() {
                    let at = gpa + i as u64;
                    match self.0.get(&(at & !0xfff)) {
                        Some(page) => *b = page[(at & 0xfff) as usize],
                        None => return false,
                    }
                }
                true
            })
        }
    }

    fn long_mode(cr3: u64, la57: bool) -> PagingState {
        PagingState {
            cr0: CR0_PG | 1,
            cr3,
            cr4: CR4_PAE | if la57 { CR4_LA57 } else { 0 },
            efer: EFER_LMA | (1 << 8),
        }
    }

    /// Index of `gva` at `level` (1 = page table).
    fn index(gva: u64, level: u32) -> u64 {
        (gva >> (12 + 9 * (level - 1))) & 0x1ff
    }

    #[test]
    fn four_level_4k_2m_and_1g_pages() {
        let mut m = Memory::default();
        let gva = 0xffff_8000_1234_5678u64;
        // PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000 -> page 0x7_6543_2000.
        m.put64(0x1000 + index(gva, 4) * 8, 0x2003);
        m.put64(0x2000 + index(gva, 3) * 8, 0x3003);
        m.put64(0x3000 + index(gva, 2) * 8, 0x4003);
        m.put64(0x4000 + index(gva, 1) * 8, 0x8000_0007_6543_2003); // NX and a high address
        let state = long_mode(0x1000 | 0x5, false); // PCID bits in CR3 are not an address
        assert_eq!(m.translate(&state, gva), Some(0x7_6543_2678));
        // The PD entry as a 2 MiB page.
        m.put64(0x3000 + index(gva, 2) * 8, 0x4020_0083);
        assert_eq!(
            m.translate(&state, gva),
            Some(0x4020_0000 | (gva & 0x1f_ffff))
        );
        // The PDPT entry as a 1 GiB page.
        m.put64(0x2000 + index(gva, 3) * 8, 0x1_8000_0083);
        assert_eq!(
            m.translate(&state, gva),
            Some(0x1_8000_0000 | (gva & 0x3fff_ffff))
        );
        // A page-size bit in the PML4 is reserved: no translation.
        m.put64(0x1000 + index(gva, 4) * 8, 0x2083);
        assert_eq!(m.translate(&state, gva), None);
    }

    #[test]
    fn not_present_non_canonical_and_missing_tables_translate_to_nothing() {
        let mut m = Memory::default();
        let state = long_mode(0x1000, false);
        m.put64(0x1000, 0x2003);
        m.put64(0x2000, 0x3002); // not present
        assert_eq!(m.translate(&state, 0x1000), None);
        assert_eq!(
            m.translate(&state, 0x0000_8000_0000_0000),
            None,
            "non-canonical"
        );
        // A table outside memory.
        m.put64(0x2000, 0xdead_0003);
        assert_eq!(m.translate(&state, 0x1000), None);
    }

    #[test]
    fn five_level_paging_uses_bits_56_to_48() {
        let mut m = Memory::default();
        let gva = 0xff12_3456_789a_bcdeu64; // canonical only with 57-bit addresses
        m.put64(0x1000 + index(gva, 5) * 8, 0x2003);
        m.put64(0x2000 + index(gva, 4) * 8, 0x3003);
        m.put64(0x3000 + index(gva, 3) * 8, 0x4003);
        m.put64(0x4000 + index(gva, 2) * 8, 0x5003);
        m.put64(0x5000 + index(gva, 1) * 8, 0x9000 | 3);
        assert_eq!(m.translate(&long_mode(0x1000, true), gva), Some(0x9cde));
        assert_eq!(m.translate(&long_mode(0x1000, false), gva), None);
    }

    #[test]
    fn pae_4k_and_2m_pages() {
        let mut m = Memory::default();
        let state = PagingState {
            cr0: CR0_PG | 1,
            cr3: 0x1020, // PDPT 32-byte aligned
            cr4: CR4_PAE,
            efer: 0,
        };
        let gva = 0xc012_3456u64; // PDPT entry 3
        m.put64(0x1020 + 3 * 8, 0x2001);
        m.put64(0x2000 + ((gva >> 21) & 0x1ff) * 8, 0x3003);
        m.put64(0x3000 + ((gva >> 12) & 0x1ff) * 8, 0x1_2345_6003);
        assert_eq!(m.translate(&state, gva), Some(0x1_2345_6456));
        m.put64(0x2000 + ((gva >> 21) & 0x1ff) * 8, 0x80_0000 | 0x83);
        assert_eq!(
            m.translate(&state, gva),
            Some(0x80_0000 | (gva & 0x1f_ffff))
        );
        m.put64(0x1020 + 3 * 8, 0);
        assert_eq!(m.translate(&state, gva), None);
    }

    #[test]
    fn thirty_two_bit_4k_4m_and_pse36_pages() {
        let mut m = Memory::default();
        let mut state = PagingState {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            cr4: 0,
            efer: 0,
        };
        let gva = 0x8040_1234u64;
        m.put32(0x1000 + (gva >> 22) * 4, 0x2003);
        m.put32(0x2000 + ((gva >> 12) & 0x3ff) * 4, 0x0055_5003);
        assert_eq!(m.translate(&state, gva), Some(0x0055_5234));
        // A 4 MiB page: only with CR4.PSE; bits 20:13 are physical bits 39:32.
        m.put32(0x1000 + (gva >> 22) * 4, 0x0c00_0000 | (0x12 << 13) | 0x83);
        let page = 0x12_0c00_0000 | (gva & 0x3f_ffff);
        state.cr4 = CR4_PSE;
        assert_eq!(m.translate(&state, gva), Some(page));
        // Without PSE the same entry points at a page table at 0x0c02_4000 (not in memory).
        state.cr4 = 0;
        assert_eq!(m.translate(&state, gva), None);
    }

    proptest::proptest! {
        /// Any paging state over any table contents: no panic, and a translation keeps the
        /// offset within the 4 KiB page.
        #[test]
        fn any_tables_translate_without_panic(
            cr0 in proptest::prelude::any::<u64>(),
            cr3 in proptest::prelude::any::<u64>(),
            cr4 in proptest::prelude::any::<u64>(),
            efer in proptest::prelude::any::<u64>(),
            gva in proptest::prelude::any::<u64>(),
            words in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..64),
        ) {
            let state = PagingState { cr0, cr3, cr4, efer };
            // Every physical address reads as one of `words` (tables point anywhere).
            let result = translate(&state, gva, &mut |gpa, buf| {
                let word = words[(gpa as usize / 8) % words.len()].to_le_bytes();
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = word[i % 8];
                }
                true
            });
            if let Some(gpa) = result {
                proptest::prop_assert_eq!(gpa & 0xfff, gva & 0xfff);
            }
        }
    }

    #[test]
    fn paging_off_is_the_identity_on_32_bit_addresses() {
        let m = Memory::default();
        let state = PagingState {
            cr0: 0x11,
            ..Default::default()
        };
        assert_eq!(state.mode(), PagingMode::None);
        assert_eq!(m.translate(&state, 0xb8000), Some(0xb8000));
        assert_eq!(m.translate(&state, 0x1_0000_0000), None);
    }
}
