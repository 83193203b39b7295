//! Boot CPU state built without KVM: descriptors, page tables, register values.

use kvm_bindings::{kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmkit_pc::boot::{
    cpu_signature, gdt_entry, identity_page_tables, initial_fpu, long_mode_gdt, long_mode_sregs,
    protected_mode_gdt, protected_mode_sregs, real_mode_entry, real_mode_sregs, reset_regs,
    reset_sregs, segment_from_descriptor, table_bytes, tss_descriptor_64, write_long_mode_tables,
    write_protected_mode_tables, BOOT_CS, BOOT_DS, BOOT_GDT_ADDR, BOOT_IDT_ADDR, BOOT_TSS,
    BOOT_TSS_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR, PTE_PAGE_SIZE, PTE_PRESENT, PTE_WRITABLE,
};
use vmkit_pc::{Error, IdentityMap};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn low_memory(size: u64) -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
}

fn entry_at(bytes: &[u8], index: usize) -> u64 {
    u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap())
}

/// What a CPU would load for `selector` from the GDT at BOOT_GDT_ADDR in `memory`.
fn load_selector(memory: &GuestMemoryMmap<()>, selector: u16) -> kvm_segment {
    let entry: u64 = memory
        .read_obj(GuestAddress(BOOT_GDT_ADDR + u64::from(selector & !7)))
        .unwrap();
    segment_from_descriptor(selector, entry)
}

#[test]
fn descriptor_encodings_match_the_manual() {
    // The classic flat descriptors.
    assert_eq!(gdt_entry(0, 0xf_ffff, 0x9b, 0xa), 0x00af_9b00_0000_ffff);
    assert_eq!(gdt_entry(0, 0xf_ffff, 0x93, 0xc), 0x00cf_9300_0000_ffff);
    assert_eq!(gdt_entry(0, 0xf_ffff, 0x9b, 0xc), 0x00cf_9b00_0000_ffff);
    // Every field in its place: base split 24+8, limit split 16+4, access, flags.
    assert_eq!(
        gdt_entry(0x1234_5678, 0xa_bcde, 0x92, 0x4),
        0x124a_9234_5678_bcde
    );
    // Only 20 bits of limit and 4 bits of flags are encoded.
    assert_eq!(
        gdt_entry(0, 0xfff_ffff, 0, 0xff),
        gdt_entry(0, 0xf_ffff, 0, 0xf)
    );
    assert_eq!(gdt_entry(0x580, 0x67, 0x8b, 0), 0x0000_8b00_0580_0067);
    assert_eq!(
        tss_descriptor_64(0x1_2345_6789, 0x67),
        [gdt_entry(0x2345_6789, 0x67, 0x8b, 0), 0x1]
    );
}

#[test]
fn descriptors_decode_into_kvm_segments() {
    let segment = segment_from_descriptor(0x28, 0x124a_9234_5678_bcde);
    assert_eq!(
        (segment.base, segment.limit, segment.selector, segment.type_),
        (0x1234_5678, 0xa_bcde, 0x28, 2)
    );
    assert_eq!(
        (
            segment.present,
            segment.dpl,
            segment.s,
            segment.db,
            segment.l,
            segment.g
        ),
        (1, 0, 1, 1, 0, 0)
    );
    assert_eq!(segment.unusable, 0);

    let code64 = segment_from_descriptor(0x10, 0x00af_9b00_0000_ffff);
    assert_eq!(
        (code64.limit, code64.l, code64.db, code64.g),
        (0xffff_ffff, 1, 0, 1)
    );
    assert_eq!((code64.type_, code64.s, code64.present), (0xb, 1, 1));

    let ring3 = segment_from_descriptor(0x33, gdt_entry(0, 0xfff, 0xf3, 0x1));
    assert_eq!((ring3.dpl, ring3.avl, ring3.limit), (3, 1, 0xfff));

    let null = segment_from_descriptor(0, 0);
    assert_eq!((null.present, null.unusable), (0, 1));
}

#[test]
fn boot_gdts_follow_the_linux_boot_protocol_selectors() {
    let gdt = long_mode_gdt(BOOT_TSS_ADDR);
    assert_eq!(gdt[0], 0);
    assert_eq!(gdt[1], 0);
    assert_eq!(gdt[usize::from(BOOT_CS / 8)], 0x00af_9b00_0000_ffff);
    assert_eq!(gdt[usize::from(BOOT_DS / 8)], 0x00cf_9300_0000_ffff);
    assert_eq!(gdt[usize::from(BOOT_TSS / 8)], 0x0000_8b00_0580_0067);
    assert_eq!(gdt[5], 0, "TSS base bits 63:32");

    let gdt32 = protected_mode_gdt(0x580);
    assert_eq!(gdt32[2], 0x00cf_9b00_0000_ffff);
    assert_eq!(gdt32[3], 0x00cf_9300_0000_ffff);
    assert_eq!(gdt32[4], 0x0000_8b00_0580_0067);

    let bytes = table_bytes(&gdt);
    assert_eq!(bytes.len(), 48);
    assert_eq!(&bytes[16..24], &[0xff, 0xff, 0, 0, 0, 0x9b, 0xaf, 0]);
}

#[test]
fn default_identity_tables_map_4_gib_with_2_mib_pages() {
    let map = IdentityMap::default();
    assert_eq!(
        (map.pml4, map.pdpt(), map.size),
        (PML4_ADDR, PDPT_ADDR, 4 * GIB)
    );
    assert_eq!(map.area(), (0x9000, 0xf000));
    let bytes = identity_page_tables(&map).unwrap();
    assert_eq!(bytes.len(), 6 * 4096);
    let table = |page: usize, index: usize| entry_at(&bytes, page * 512 + index);

    assert_eq!(table(0, 0), PDPT_ADDR | PTE_PRESENT | PTE_WRITABLE);
    assert!((1..512).all(|i| table(0, i) == 0), "one PML4 entry");
    for i in 0..4 {
        assert_eq!(table(1, i), (PD_ADDR + i as u64 * 4096) | 0x3);
    }
    assert!((4..512).all(|i| table(1, i) == 0), "4 GiB, no more");
    assert_eq!(table(2, 0), 0x83);
    assert_eq!(table(2, 1), 0x20_0083);
    // The last 2 MiB page below 4 GiB, in the MMIO hole, is mapped too.
    assert_eq!(
        table(5, 511),
        0xffe0_0000 | PTE_PRESENT | PTE_WRITABLE | PTE_PAGE_SIZE
    );
    // Every PD entry maps the 2 MiB page matching its position: an identity map.
    for pd in 0..4 {
        for i in 0..512 {
            let addr = (pd * 512 + i) as u64 * 2 * MIB;
            assert_eq!(table(2 + pd, i), addr | 0x83);
        }
    }
}

#[test]
fn larger_identity_maps_add_one_directory_per_gib() {
    let map = IdentityMap::covering(5 * GIB - 1);
    assert_eq!(map.size, 5 * GIB);
    assert_eq!(map.area(), (0x9000, 0x1_0000));
    let bytes = identity_page_tables(&map).unwrap();
    assert_eq!(entry_at(&bytes, 512 + 4), 0xf000 | 0x3);
    assert_eq!(entry_at(&bytes, 6 * 512), (4 * GIB) | 0x83);
    assert_eq!(IdentityMap::covering(0).size, GIB);

    let high = IdentityMap {
        pml4: 2 * MIB,
        size: 512 * GIB,
    };
    let bytes = identity_page_tables(&high).unwrap();
    assert_eq!(bytes.len(), 514 * 4096);
    assert_eq!(entry_at(&bytes, 0), (2 * MIB + 4096) | 0x3);
    assert_eq!(entry_at(&bytes, 512 + 511), (2 * MIB + 513 * 4096) | 0x3);
}

#[test]
fn bad_identity_maps_are_refused() {
    let cases = [
        (0x9100, 4 * GIB, "not 4 KiB aligned"),
        (0x9000, 0, "multiple of 1 GiB"),
        (0x9000, GIB + GIB / 2, "multiple of 1 GiB"),
        (0x9000, 513 * GIB, "multiple of 1 GiB"),
        (0x9_e000, 4 * GIB, "must lie in"),
        (0, GIB, "must lie in"),
        (0xf_f000, GIB, "must lie in"),
    ];
    for (pml4, size, message) in cases {
        let err = identity_page_tables(&IdentityMap { pml4, size }).unwrap_err();
        assert!(matches!(err, Error::PageTables(_)), "{err}");
        assert!(
            err.to_string().contains(message),
            "{pml4:#x} {size:#x}: {err}"
        );
    }
}

#[test]
fn cpu_signatures_use_the_extended_fields() {
    assert_eq!(cpu_signature(6, 0, 0), 0x600);
    assert_eq!(cpu_signature(6, 0x55, 4), 0x5_0654); // Skylake-SP
    assert_eq!(cpu_signature(0x17, 0x31, 0), 0x83_0f10); // Zen 2
    assert_eq!(cpu_signature(15, 107, 1), 0x6_0fb1); // QEMU's qemu64
    assert_eq!(cpu_signature(u32::MAX, u32::MAX, u32::MAX), 0x0fff_0fff);
}

#[test]
fn real_mode_entries_split_addresses_into_cs_ip() {
    assert_eq!(real_mode_entry(0x7c00).unwrap(), (0, 0x7c00));
    assert_eq!(real_mode_entry(0xf_fff0).unwrap(), (0xf000, 0xfff0));
    assert_eq!(real_mode_entry(0x1_2345).unwrap(), (0x1000, 0x2345));
    for addr in [0x10_0000, u64::MAX] {
        let err = real_mode_entry(addr).unwrap_err();
        assert!(err.to_string().contains("not below 1 MiB"), "{err}");
    }
}

fn sregs_with_apic() -> kvm_sregs {
    kvm_sregs {
        apic_base: 0xfee0_0900,
        interrupt_bitmap: [1, 2, 3, 4],
        cr3: 0x1234_5000,
        efer: 0x500,
        ..Default::default()
    }
}

#[test]
fn reset_state_is_the_power_on_state() {
    let mut sregs = sregs_with_apic();
    reset_sregs(&mut sregs);
    assert_eq!(
        (sregs.cs.selector, sregs.cs.base, sregs.cs.limit),
        (0xf000, 0xffff_0000, 0xffff)
    );
    assert_eq!((sregs.cs.type_, sregs.cs.s, sregs.cs.present), (0xb, 1, 1));
    for segment in [sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss] {
        assert_eq!(
            (segment.selector, segment.base, segment.limit, segment.type_),
            (0, 0, 0xffff, 3)
        );
    }
    assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0, 0xffff));
    assert_eq!((sregs.idt.base, sregs.idt.limit), (0, 0xffff));
    assert_eq!(sregs.cr0, 0x6000_0010);
    assert_eq!((sregs.cr3, sregs.cr4, sregs.efer), (0, 0, 0));
    assert_eq!(sregs.apic_base, 0xfee0_0900, "left alone");
    assert_eq!(sregs.interrupt_bitmap, [1, 2, 3, 4], "left alone");

    let regs = reset_regs(0x600);
    assert_eq!((regs.rip, regs.rflags, regs.rdx), (0xfff0, 2, 0x600));
    assert_eq!((regs.rax, regs.rsp), (0, 0));
    let fpu = initial_fpu();
    assert_eq!((fpu.fcw, fpu.mxcsr), (0x37f, 0x1f80));
}

#[test]
fn real_mode_state_uses_the_ivt_and_flat_data_segments() {
    let mut sregs = sregs_with_apic();
    real_mode_sregs(&mut sregs, 0x1000);
    assert_eq!((sregs.cs.selector, sregs.cs.base), (0x1000, 0x1_0000));
    assert_eq!((sregs.ds.base, sregs.ss.base), (0, 0));
    assert_eq!((sregs.idt.base, sregs.idt.limit), (0, 0x3ff));
    assert_eq!(sregs.cr0, 0x10);
    assert_eq!(sregs.efer, 0);
}

#[test]
fn long_mode_state_matches_the_gdt_in_memory() {
    let memory = low_memory(MIB);
    let cr3 = write_long_mode_tables(&memory, &IdentityMap::default()).unwrap();
    assert_eq!(cr3, PML4_ADDR);
    let mut sregs = sregs_with_apic();
    long_mode_sregs(&mut sregs, cr3);

    assert_eq!(sregs.cs, load_selector(&memory, BOOT_CS));
    assert_eq!((sregs.cs.l, sregs.cs.db, sregs.cs.selector), (1, 0, 0x10));
    for segment in [sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss] {
        assert_eq!(segment, load_selector(&memory, BOOT_DS));
    }
    let mut tr = load_selector(&memory, BOOT_TSS);
    tr.base |= memory
        .read_obj::<u64>(GuestAddress(BOOT_GDT_ADDR + u64::from(BOOT_TSS) + 8))
        .unwrap()
        << 32;
    assert_eq!(sregs.tr, tr);
    assert_eq!((sregs.tr.type_, sregs.tr.s, sregs.tr.base), (0xb, 0, 0x580));
    assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0x500, 47));
    assert_eq!((sregs.idt.base, sregs.idt.limit), (BOOT_IDT_ADDR, 15));
    assert_eq!(sregs.cr0, 0x8001_0033); // PG | WP | NE | ET | MP | PE
    assert_eq!(
        (sregs.cr3, sregs.cr4, sregs.efer),
        (PML4_ADDR, 0x620, 0x500)
    );
    assert_eq!(sregs.apic_base, 0xfee0_0900);

    // The page tables are in memory where CR3 says.
    let pml4e: u64 = memory.read_obj(GuestAddress(cr3)).unwrap();
    assert_eq!(pml4e, PDPT_ADDR | 3);
    let last_pde: u64 = memory
        .read_obj(GuestAddress(PD_ADDR + 4 * 4096 - 8))
        .unwrap();
    assert_eq!(last_pde, 0xffe0_0083);
    // The IDT is empty (not-present gate) and the TSS zeroed.
    let idt: [u8; 16] = memory.read_obj(GuestAddress(BOOT_IDT_ADDR)).unwrap();
    assert_eq!(idt, [0; 16]);
}

#[test]
fn protected_mode_state_matches_the_gdt_in_memory() {
    let memory = low_memory(MIB);
    write_protected_mode_tables(&memory).unwrap();
    let mut sregs = sregs_with_apic();
    protected_mode_sregs(&mut sregs);
    assert_eq!(sregs.cs, load_selector(&memory, BOOT_CS));
    assert_eq!(
        (sregs.cs.db, sregs.cs.l, sregs.cs.limit),
        (1, 0, 0xffff_ffff)
    );
    assert_eq!(sregs.ss, load_selector(&memory, BOOT_DS));
    assert_eq!(sregs.tr, load_selector(&memory, BOOT_TSS));
    assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0x500, 39));
    assert_eq!(
        (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer),
        (0x11, 0, 0, 0)
    );
}

#[test]
fn tables_need_ram_where_they_go() {
    // Memory only from 1 MiB: the GDT at 0x500 cannot be written.
    let memory: GuestMemoryMmap<()> =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(MIB), MIB as usize)]).unwrap();
    let err = write_long_mode_tables(&memory, &IdentityMap::default()).unwrap_err();
    assert!(
        matches!(err, Error::GuestMemory { addr: 0x500, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("boot GDT"), "{err}");

    // Low memory too small for the page tables.
    let memory = low_memory(0xc000);
    let err = write_long_mode_tables(&memory, &IdentityMap::default()).unwrap_err();
    assert!(err.to_string().contains("identity page tables"), "{err}");
}
