//! Boot CPU state: the x86 power-on state, and entry into a flat binary in real, 32-bit
//! protected or 64-bit long mode.
//!
//! The `*_at` functions set a [`Vcpu`]'s registers in one go. Each is built from pure pieces
//! that can be tested without KVM: descriptor encoding ([`gdt_entry`],
//! [`segment_from_descriptor`]), the boot GDTs ([`long_mode_gdt`], [`protected_mode_gdt`]),
//! identity page tables ([`identity_page_tables`]), and functions that fill `kvm_sregs` /
//! `kvm_regs` / `kvm_fpu` values ([`reset_sregs`], [`real_mode_sregs`],
//! [`protected_mode_sregs`], [`long_mode_sregs`], [`reset_regs`], [`initial_fpu`]). The sregs
//! functions set every mode-related field and leave `apic_base` and `interrupt_bitmap` as
//! they were.
//!
//! # Low RAM the loaders own
//!
//! | guest-physical | what | written by |
//! |---|---|---|
//! | `0x500..0x530` | boot GDT ([`BOOT_GDT_ADDR`]; 6 entries long mode, 5 protected mode) | protected and long mode |
//! | `0x540..0x550` | empty IDT ([`BOOT_IDT_ADDR`]): any exception ends in a triple fault (a `Shutdown` exit) | protected and long mode |
//! | `0x580..0x5e8` | zeroed TSS ([`BOOT_TSS_ADDR`]) | protected and long mode |
//! | `0x9000..0xf000` | PML4 ([`PML4_ADDR`]), PDPT ([`PDPT_ADDR`]), four page directories from [`PD_ADDR`] mapping 4 GiB with 2 MiB pages | long mode (default [`IdentityMap`]) |
//!
//! The real-mode IVT and BIOS data area (`0..0x500`), the Linux zero page's usual place
//! (0x7000), the boot sector (0x7c00) and the EBDA (0x9fc00) are left alone; the entry code
//! and the stack are the caller's. A larger [`IdentityMap`] takes one more page per GiB after
//! the PDPT.
//!
//! The selectors follow Linux's boot protocol (`__BOOT_CS` = 0x10, `__BOOT_DS` = 0x18), so the
//! same state suits the kernel's 32-bit and 64-bit entry points.

use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};
use vmkit_kvm::Vcpu;

use crate::error::{Error, Result};
use crate::layout::{EBDA_START, HIGH_MEMORY_START};

/// CR0.PE: protection enable.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.MP: monitor coprocessor.
pub const CR0_MP: u64 = 1 << 1;
/// CR0.ET: extension type (hard-wired to 1 on modern CPUs).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE: native x87 error reporting.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP: write protect in supervisor mode.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.NW: not write-through.
pub const CR0_NW: u64 = 1 << 29;
/// CR0.CD: cache disable.
pub const CR0_CD: u64 = 1 << 30;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension (required for long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.OSFXSR: the OS supports FXSAVE/FXRSTOR (SSE instructions do not fault).
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT: the OS handles SIMD floating-point exceptions.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1, which always reads as 1.
pub const RFLAGS_FIXED: u64 = 1 << 1;

/// CR0 after power-on or reset: CD | NW | ET (0x6000_0010).
pub const RESET_CR0: u64 = CR0_CD | CR0_NW | CR0_ET;
/// CR0 for [`real_mode_at`]: ET only (caches enabled, as a BIOS leaves them).
pub const REAL_MODE_CR0: u64 = CR0_ET;
/// CR0 for [`protected_mode_32_at`]: PE | ET, paging off.
pub const PROTECTED_MODE_CR0: u64 = CR0_PE | CR0_ET;
/// CR0 for [`long_mode_at`]: PE | MP | ET | NE | WP | PG.
pub const LONG_MODE_CR0: u64 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
/// CR4 for [`long_mode_at`]: PAE | OSFXSR | OSXMMEXCPT (SSE usable by compiled code).
pub const LONG_MODE_CR4: u64 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
/// EFER for [`long_mode_at`]: LME | LMA.
pub const LONG_MODE_EFER: u64 = EFER_LME | EFER_LMA;

/// Page-table entry bit: present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Page-table entry bit: writable.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Page-directory entry bit: maps a large (2 MiB) page instead of pointing at a table.
pub const PTE_PAGE_SIZE: u64 = 1 << 7;

/// Guest-physical address of the boot GDT.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// Guest-physical address of the (empty) boot IDT.
pub const BOOT_IDT_ADDR: u64 = 0x540;
/// Size of the boot IDT: one not-present 16-byte gate.
pub const BOOT_IDT_SIZE: u64 = 16;
/// Guest-physical address of the boot TSS.
pub const BOOT_TSS_ADDR: u64 = 0x580;
/// Size of a TSS without an I/O permission bitmap.
pub const TSS_SIZE: u64 = 0x68;
/// Default guest-physical address of the PML4 (CR3).
pub const PML4_ADDR: u64 = 0x9000;
/// Default guest-physical address of the PDPT (the page after the PML4).
pub const PDPT_ADDR: u64 = 0xa000;
/// Default guest-physical address of the first page directory (the page after the PDPT).
pub const PD_ADDR: u64 = 0xb000;

/// Code selector (GDT entry 2), Linux's `__BOOT_CS`.
pub const BOOT_CS: u16 = 0x10;
/// Data selector (GDT entry 3), Linux's `__BOOT_DS`.
pub const BOOT_DS: u16 = 0x18;
/// TSS selector (GDT entry 4).
pub const BOOT_TSS: u16 = 0x20;

/// Descriptor access byte: present, ring 0, code, execute/read, accessed.
pub const ACCESS_CODE: u8 = 0x9b;
/// Descriptor access byte: present, ring 0, data, read/write, accessed.
pub const ACCESS_DATA: u8 = 0x93;
/// Descriptor access byte: present, ring 0, system, busy 32/64-bit TSS (what `ltr` leaves).
pub const ACCESS_TSS_BUSY: u8 = 0x8b;
/// Descriptor flags nibble: 4 KiB granularity, 64-bit code (G | L).
pub const FLAGS_CODE64: u8 = 0xa;
/// Descriptor flags nibble: 4 KiB granularity, 32-bit (G | D/B).
pub const FLAGS_FLAT32: u8 = 0xc;

/// CPU signature (CPUID leaf 1 EAX) placed in EDX at reset when none is given: family 6,
/// model 0, stepping 0, the P6 family value Intel documents for EDX after reset.
pub const DEFAULT_CPU_SIGNATURE: u32 = 0x600;

const GIB: u64 = 1 << 30;
const PAGE: u64 = 4096;
const ENTRIES_PER_TABLE: u64 = 512;
const TWO_MIB: u64 = 2 << 20;
const REAL_MODE_LIMIT: u32 = 0xffff;
const SEGMENT_TYPE_DATA_RW: u8 = 0x3;
const SEGMENT_TYPE_CODE_RX: u8 = 0xb;
const SEGMENT_TYPE_LDT: u8 = 0x2;
const SEGMENT_TYPE_TSS_BUSY: u8 = 0xb;

/// Encodes a code/data/system descriptor: `access` is the P|DPL|S|type byte, `flags` the
/// G|D/B|L|AVL nibble, `limit` 20 bits (in 4 KiB units if G is set).
pub fn gdt_entry(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit & 0xf_ffff);
    (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | u64::from(access) << 40
        | (limit >> 16) << 48
        | u64::from(flags & 0xf) << 52
        | (base >> 24) << 56
}

/// The 16-byte 64-bit TSS descriptor for a TSS at `base` with byte limit `limit`, marked busy.
pub fn tss_descriptor_64(base: u64, limit: u32) -> [u64; 2] {
    // Truncation intended: the low descriptor holds base bits 31:0, the high one 63:32.
    let low_base = (base & 0xffff_ffff) as u32;
    [gdt_entry(low_base, limit, ACCESS_TSS_BUSY, 0), base >> 32]
}

/// The segment register state a CPU holds after loading `selector` whose descriptor is
/// `entry` (the low 8 bytes; a 64-bit system descriptor's base bits 63:32 are not included).
pub fn segment_from_descriptor(selector: u16, entry: u64) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let raw_limit = ((entry & 0xffff) | ((entry >> 48) & 0xf) << 16) as u32;
    let granular = bit(55) == 1;
    let present = bit(47);
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 56) & 0xff) << 24,
        limit: if granular {
            raw_limit << 12 | 0xfff
        } else {
            raw_limit
        },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The long-mode boot GDT: null, null, 64-bit code ([`BOOT_CS`]), flat data ([`BOOT_DS`]),
/// 16-byte TSS descriptor ([`BOOT_TSS`]) for a TSS at `tss_base`.
pub fn long_mode_gdt(tss_base: u64) -> [u64; 6] {
    let [tss_low, tss_high] = tss_descriptor_64(tss_base, (TSS_SIZE - 1) as u32);
    [
        0,
        0,
        gdt_entry(0, 0xf_ffff, ACCESS_CODE, FLAGS_CODE64),
        gdt_entry(0, 0xf_ffff, ACCESS_DATA, FLAGS_FLAT32),
        tss_low,
        tss_high,
    ]
}

/// The 32-bit protected-mode boot GDT: null, null, flat 32-bit code ([`BOOT_CS`]), flat data
/// ([`BOOT_DS`]), 32-bit TSS ([`BOOT_TSS`]) at `tss_base`.
pub fn protected_mode_gdt(tss_base: u32) -> [u64; 5] {
    [
        0,
        0,
        gdt_entry(0, 0xf_ffff, ACCESS_CODE, FLAGS_FLAT32),
        gdt_entry(0, 0xf_ffff, ACCESS_DATA, FLAGS_FLAT32),
        gdt_entry(tss_base, (TSS_SIZE - 1) as u32, ACCESS_TSS_BUSY, 0),
    ]
}

/// The bytes of a descriptor table (little-endian entries).
pub fn table_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// The CPUID leaf 1 EAX value (and reset EDX) for a family/model/stepping: family above 15
/// goes to the extended family field, model bits 7:4 to the extended model field. Out-of-range
/// values are clamped (family to 270, model to 255, stepping to 15).
pub fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let family = family.min(0xf + 0xff);
    let model = model.min(0xff);
    let (base_family, extended_family) = if family > 0xf {
        (0xf, family - 0xf)
    } else {
        (family, 0)
    };
    extended_family << 20
        | (model >> 4) << 16
        | base_family << 8
        | (model & 0xf) << 4
        | stepping.min(0xf)
}

/// Where the long-mode identity page tables go and how much they map.
///
/// The tables are contiguous pages from `pml4`: the PML4, the PDPT, then one page directory
/// per GiB mapped, each filled with 2 MiB pages (which every 64-bit CPU supports, unlike
/// 1 GiB pages). The area must be page-aligned and lie in low RAM between 4 KiB and the EBDA
/// (0x9fc00) or from 1 MiB up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityMap {
    /// Guest-physical address of the PML4 (what CR3 holds).
    pub pml4: u64,
    /// Bytes mapped from address 0: a multiple of 1 GiB, from 1 GiB to 512 GiB.
    pub size: u64,
}

impl Default for IdentityMap {
    /// The PML4 at [`PML4_ADDR`] mapping the first 4 GiB (MMIO hole included).
    fn default() -> Self {
        Self {
            pml4: PML4_ADDR,
            size: 4 * GIB,
        }
    }
}

impl IdentityMap {
    /// Maps the first `size` bytes (rounded up to whole GiB, at least 1 GiB) with the tables
    /// at the default place.
    pub fn covering(size: u64) -> Self {
        Self {
            pml4: PML4_ADDR,
            size: size.div_ceil(GIB).max(1).saturating_mul(GIB),
        }
    }

    /// Number of page directories (GiB mapped).
    pub fn directories(&self) -> u64 {
        self.size / GIB
    }

    /// Guest-physical address of the PDPT.
    pub fn pdpt(&self) -> u64 {
        self.pml4.saturating_add(PAGE)
    }

    /// Guest-physical range `[start, end)` the tables occupy.
    pub fn area(&self) -> (u64, u64) {
        let pages = 2 + self.directories();
        (self.pml4, self.pml4.saturating_add(pages * PAGE))
    }

    fn validate(&self) -> Result<()> {
        let invalid = |why: String| Err(Error::PageTables(why));
        if self.pml4 % PAGE != 0 {
            return invalid(format!(
                "PML4 address {:#x} is not 4 KiB aligned",
                self.pml4
            ));
        }
        if self.size == 0 || self.size % GIB != 0 || self.size > ENTRIES_PER_TABLE * GIB {
            return invalid(format!(
                "identity map size {:#x} must be a multiple of 1 GiB between 1 GiB and 512 GiB",
                self.size
            ));
        }
        let (start, end) = self.area();
        let in_conventional = start >= PAGE && end <= EBDA_START;
        let in_high = start >= HIGH_MEMORY_START && end < u64::MAX;
        if !in_conventional && !in_high {
            return invalid(format!(
                "page tables at [{start:#x}, {end:#x}) must lie in [0x1000, {EBDA_START:#x}) or at or above 1 MiB"
            ));
        }
        Ok(())
    }
}

/// The identity page tables described by `map`, as bytes to write at `map.pml4`: PML4
/// entry 0 points at the PDPT, PDPT entry i at page directory i, and directory i maps
/// `[i GiB, (i + 1) GiB)` with 2 MiB pages (present, writable, supervisor, write-back).
pub fn identity_page_tables(map: &IdentityMap) -> Result<Vec<u8>> {
    map.validate()?;
    let directories = map.directories();
    let pdpt = map.pdpt();
    let first_pd = pdpt + PAGE;
    let mut entries = vec![0u64; ((2 + directories) * ENTRIES_PER_TABLE) as usize];
    let (pml4, rest) = entries.split_at_mut(ENTRIES_PER_TABLE as usize);
    let (pdpt_entries, pds) = rest.split_at_mut(ENTRIES_PER_TABLE as usize);
    if let Some(first) = pml4.first_mut() {
        *first = pdpt | PTE_PRESENT | PTE_WRITABLE;
    }
    for (i, entry) in (0u64..).zip(pdpt_entries.iter_mut().take(directories as usize)) {
        *entry = (first_pd + i * PAGE) | PTE_PRESENT | PTE_WRITABLE;
    }
    for (i, entry) in (0u64..).zip(pds.iter_mut()) {
        *entry = (i * TWO_MIB) | PTE_PRESENT | PTE_WRITABLE | PTE_PAGE_SIZE;
    }
    Ok(table_bytes(&entries))
}

fn dtable(base: u64, limit: u16) -> kvm_dtable {
    kvm_dtable {
        base,
        limit,
        padding: [0; 3],
    }
}

fn real_mode_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: u64::from(selector) << 4,
        limit: REAL_MODE_LIMIT,
        selector,
        type_,
        present: 1,
        s: 1,
        ..Default::default()
    }
}

fn reset_ldt() -> kvm_segment {
    kvm_segment {
        limit: REAL_MODE_LIMIT,
        type_: SEGMENT_TYPE_LDT,
        present: 1,
        ..Default::default()
    }
}

fn real_mode_tr() -> kvm_segment {
    kvm_segment {
        limit: REAL_MODE_LIMIT,
        type_: SEGMENT_TYPE_TSS_BUSY,
        present: 1,
        ..Default::default()
    }
}

/// Sets `sregs` to the x86 power-on state: CS selector 0xf000 with base 0xffff_0000 and
/// limit 0xffff, the other segments selector 0, base 0, limit 0xffff, GDTR/IDTR base 0
/// limit 0xffff, CR0 [`RESET_CR0`], CR2/CR3/CR4/CR8 and EFER zero.
pub fn reset_sregs(sregs: &mut kvm_sregs) {
    let data = real_mode_segment(0, SEGMENT_TYPE_DATA_RW);
    sregs.cs = kvm_segment {
        base: 0xffff_0000,
        ..real_mode_segment(0xf000, SEGMENT_TYPE_CODE_RX)
    };
    for segment in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *segment = data;
    }
    sregs.ldt = reset_ldt();
    sregs.tr = real_mode_tr();
    sregs.gdt = dtable(0, 0xffff);
    sregs.idt = dtable(0, 0xffff);
    sregs.cr0 = RESET_CR0;
    sregs.cr2 = 0;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.cr8 = 0;
    sregs.efer = 0;
}

/// General registers after reset: RIP 0xfff0, RFLAGS 2, EDX = `cpu_signature`, the rest 0.
pub fn reset_regs(cpu_signature: u32) -> kvm_regs {
    kvm_regs {
        rip: 0xfff0,
        rflags: RFLAGS_FIXED,
        rdx: u64::from(cpu_signature),
        ..Default::default()
    }
}

/// x87/SSE state after reset (FCW 0x37f, MXCSR 0x1f80, the rest 0).
pub fn initial_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// CS:IP reaching real-mode address `addr` (below 1 MiB): segment `(addr >> 16) << 12`,
/// offset `addr & 0xffff`, so e.g. 0x7c00 is 0000:7c00 and 0xffff0 is f000:fff0.
pub fn real_mode_entry(addr: u64) -> Result<(u16, u16)> {
    if addr >= HIGH_MEMORY_START {
        return Err(Error::RealModeAddress { addr });
    }
    let segment = ((addr >> 16) << 12) as u16;
    let offset = (addr & 0xffff) as u16;
    Ok((segment, offset))
}

/// Sets `sregs` to real mode with CS = `code_segment` (base segment << 4), the data and stack
/// segments 0, IDTR at the real-mode IVT (base 0, limit 0x3ff), CR0 [`REAL_MODE_CR0`],
/// paging and long mode off.
pub fn real_mode_sregs(sregs: &mut kvm_sregs, code_segment: u16) {
    reset_sregs(sregs);
    sregs.cs = real_mode_segment(code_segment, SEGMENT_TYPE_CODE_RX);
    sregs.idt = dtable(0, 0x3ff);
    sregs.cr0 = REAL_MODE_CR0;
}

fn protected_segments(sregs: &mut kvm_sregs, code: u64, data: u64) {
    sregs.cs = segment_from_descriptor(BOOT_CS, code);
    let data = segment_from_descriptor(BOOT_DS, data);
    for segment in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *segment = data;
    }
    sregs.ldt = reset_ldt();
    sregs.idt = dtable(BOOT_IDT_ADDR, (BOOT_IDT_SIZE - 1) as u16);
    sregs.cr2 = 0;
    sregs.cr8 = 0;
}

/// Sets `sregs` to flat 32-bit protected mode matching [`protected_mode_gdt`] at
/// [`BOOT_GDT_ADDR`]: CS = [`BOOT_CS`], DS/ES/FS/GS/SS = [`BOOT_DS`], TR = [`BOOT_TSS`], CR0
/// [`PROTECTED_MODE_CR0`], paging off, CR3/CR4/EFER 0.
pub fn protected_mode_sregs(sregs: &mut kvm_sregs) {
    let gdt = protected_mode_gdt(BOOT_TSS_ADDR as u32);
    protected_segments(sregs, gdt[2], gdt[3]);
    sregs.tr = segment_from_descriptor(BOOT_TSS, gdt[4]);
    sregs.gdt = dtable(BOOT_GDT_ADDR, (gdt.len() * 8 - 1) as u16);
    sregs.cr0 = PROTECTED_MODE_CR0;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
}

/// Sets `sregs` to 64-bit long mode matching [`long_mode_gdt`] at [`BOOT_GDT_ADDR`]: CS =
/// [`BOOT_CS`] (L=1), DS/ES/FS/GS/SS = [`BOOT_DS`], TR = [`BOOT_TSS`], CR0
/// [`LONG_MODE_CR0`], CR3 = `cr3`, CR4 [`LONG_MODE_CR4`], EFER [`LONG_MODE_EFER`].
pub fn long_mode_sregs(sregs: &mut kvm_sregs, cr3: u64) {
    let gdt = long_mode_gdt(BOOT_TSS_ADDR);
    protected_segments(sregs, gdt[2], gdt[3]);
    let mut tr = segment_from_descriptor(BOOT_TSS, gdt[4]);
    tr.base |= gdt[5] << 32;
    sregs.tr = tr;
    sregs.gdt = dtable(BOOT_GDT_ADDR, (gdt.len() * 8 - 1) as u16);
    sregs.cr0 = LONG_MODE_CR0;
    sregs.cr3 = cr3;
    sregs.cr4 = LONG_MODE_CR4;
    sregs.efer = LONG_MODE_EFER;
}

fn write<M>(memory: &M, what: &'static str, addr: u64, bytes: &[u8]) -> Result<()>
where
    M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
{
    memory
        .write_slice(bytes, GuestAddress(addr))
        .map_err(|source| Error::GuestMemory { what, addr, source })
}

fn write_descriptor_tables<M>(memory: &M, gdt: &[u64]) -> Result<()>
where
    M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
{
    write(memory, "boot GDT", BOOT_GDT_ADDR, &table_bytes(gdt))?;
    write(
        memory,
        "boot IDT",
        BOOT_IDT_ADDR,
        &[0; BOOT_IDT_SIZE as usize],
    )?;
    write(memory, "boot TSS", BOOT_TSS_ADDR, &[0; TSS_SIZE as usize])
}

/// Writes the long-mode GDT, IDT and TSS and the identity page tables of `map` into guest
/// memory; returns the CR3 value (the PML4 address).
pub fn write_long_mode_tables<M>(memory: &M, map: &IdentityMap) -> Result<u64>
where
    M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
{
    let tables = identity_page_tables(map)?;
    write_descriptor_tables(memory, &long_mode_gdt(BOOT_TSS_ADDR))?;
    write(memory, "identity page tables", map.pml4, &tables)?;
    Ok(map.pml4)
}

/// Writes the 32-bit protected-mode GDT, IDT and TSS into guest memory.
pub fn write_protected_mode_tables<M>(memory: &M) -> Result<()>
where
    M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
{
    write_descriptor_tables(memory, &protected_mode_gdt(BOOT_TSS_ADDR as u32))
}

fn set_state(vcpu: &Vcpu, regs: &kvm_regs, mode: impl FnOnce(&mut kvm_sregs)) -> Result<()> {
    let mut sregs = vcpu.sregs()?;
    mode(&mut sregs);
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(regs)?;
    vcpu.set_fpu(&initial_fpu())?;
    Ok(())
}

/// Puts `vcpu` in the x86 power-on state (as QEMU's CPU reset): it will fetch its first
/// instruction at [`RESET_VECTOR`](crate::firmware::RESET_VECTOR), with EDX =
/// [`DEFAULT_CPU_SIGNATURE`].
///
/// Like every `*_at` function here it sets the general registers, the segment/control
/// registers and the x87/SSE state. MSRs, debug registers, the local APIC and pending events
/// are not touched: a freshly created vCPU already holds their reset values, and a full
/// machine reset is a later layer's job.
pub fn reset_vector(vcpu: &Vcpu) -> Result<()> {
    reset_vector_with_signature(vcpu, DEFAULT_CPU_SIGNATURE)
}

/// [`reset_vector`] with EDX = `cpu_signature` (see [`cpu_signature`]; use the guest's CPUID
/// leaf 1 EAX to be consistent with it).
pub fn reset_vector_with_signature(vcpu: &Vcpu, cpu_signature: u32) -> Result<()> {
    set_state(vcpu, &reset_regs(cpu_signature), reset_sregs)
}

/// Starts `vcpu` in real mode at address `addr` (below 1 MiB), with CS:IP from
/// [`real_mode_entry`], DS/ES/FS/GS/SS 0, the general registers 0 and RFLAGS 2.
pub fn real_mode_at(vcpu: &Vcpu, addr: u64) -> Result<()> {
    let (segment, ip) = real_mode_entry(addr)?;
    real_mode_segment_at(vcpu, segment, ip)
}

/// Starts `vcpu` in real mode at `segment:ip`, otherwise as [`real_mode_at`].
pub fn real_mode_segment_at(vcpu: &Vcpu, segment: u16, ip: u16) -> Result<()> {
    let regs = kvm_regs {
        rip: u64::from(ip),
        rflags: RFLAGS_FIXED,
        ..Default::default()
    };
    set_state(vcpu, &regs, |sregs| real_mode_sregs(sregs, segment))
}

/// Starts `vcpu` in flat 32-bit protected mode (paging off) at `entry` with ESP = `stack`,
/// the other general registers 0 and EFLAGS 2, after writing the boot GDT/IDT/TSS to
/// `memory` (see the [module docs](self) for where). This is the state Linux's 32-bit boot
/// protocol expects (the caller still points ESI at the zero page).
pub fn protected_mode_32_at<M>(vcpu: &Vcpu, memory: &M, entry: u32, stack: u32) -> Result<()>
where
    M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
{
    write_protected_mode_tables(memory)?;
    let regs = kvm_regs {
        rip: u64::from(entry),
        rsp: u64::from(stack),
        rflags: RFLAGS_FIXED,
        ..Default::default()
    };
    set_state(vcpu, &regs, protected_mode_sregs)
}

/// Starts `vcpu` in 64-bit mode at `entry` with RSP = `stack`, the first 4 GiB identity
/// mapped (the default [`IdentityMap`]), after writing the boot GDT/IDT/TSS and page tables
/// to `memory`. The other general registers are 0 and RFLAGS 2 (interrupts off).
///
/// Set the guest's CPUID before running code that relies on it: KVM derives the guest's
/// physical address width from it (36 bits when unset), which bounds the RAM reachable here.
pub fn long_mode_at<M>(vcpu: &Vcpu, memory: &M, entry: u64, stack: u64) -> Result<()>
where
    M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
{
    long_mode_at_with(vcpu, memory, entry, stack, &IdentityMap::default())
}

/// [`long_mode_at`] with the page tables placed and sized by `map` (e.g.
/// [`IdentityMap::covering`] the whole RAM when it extends above 4 GiB).
pub fn long_mode_at_with<M>(
    vcpu: &Vcpu,
    memory: &M,
    entry: u64,
    stack: u64,
    map: &IdentityMap,
) -> Result<()>
where
    M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
{
    let cr3 = write_long_mode_tables(memory, map)?;
    let regs = kvm_regs {
        rip: entry,
        rsp: stack,
        rflags: RFLAGS_FIXED,
        ..Default::default()
    };
    set_state(vcpu, &regs, |sregs| long_mode_sregs(sregs, cr3))
}
