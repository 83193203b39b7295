//! Linux boot without KVM: synthetic bzImages and ELF vmlinux files, generated here, loaded
//! into the pc memory map; the zero page, PVH start info, boot tables and entry registers
//! checked against the x86 boot protocol; bad input refused with messages naming the file
//! and the limit.

use std::io::Write;
use std::path::Path;

use kvm_bindings::kvm_sregs;
use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};
use vmkit_memory::AddressSpace;
use vmkit_pc::boot::{
    segment_from_descriptor, BOOT_CS, BOOT_DS, BOOT_GDT_ADDR, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA,
    EFER_LME, PML4_ADDR, PTE_PAGE_SIZE, PTE_PRESENT,
};
use vmkit_pc::linux::{
    load_linux, KernelDecompress, KernelFormat, LinuxBoot, LinuxEntry, LoadedLinux, BOOT_STACK_TOP,
    CMDLINE_ADDR, ELF_CMDLINE_LIMIT, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR, PVH_START_INFO_ADDR,
    XEN_HVM_START_MAGIC, ZERO_PAGE_ADDR,
};
use vmkit_pc::{build_memory, E820Map, Error, MemoryLayout};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------
// Synthetic kernels.

/// The knobs of a synthetic bzImage.
#[derive(Clone)]
struct BzSpec {
    version: u16,
    setup_sects: u8,
    xloadflags: u16,
    loadflags: u8,
    cmdline_size: u32,
    initrd_addr_max: u32,
    kernel_alignment: u32,
    pref_address: u64,
    init_size: u32,
    /// The protected-mode part (decompressor + payload in a real kernel).
    kernel: Vec<u8>,
    /// Where the "compressed payload" lies inside `kernel`.
    payload: (u32, u32),
}

impl Default for BzSpec {
    fn default() -> Self {
        let mut kernel = vec![0x90u8; 0x1000];
        // startup_64 at +0x200: hlt; jmp back.
        kernel[0x200..0x203].copy_from_slice(&[0xf4, 0xeb, 0xfd]);
        Self {
            version: 0x020f,
            setup_sects: 4,
            xloadflags: 1,
            loadflags: 1,
            cmdline_size: 0x7ff,
            initrd_addr_max: 0x7fff_ffff,
            kernel_alignment: 0x20_0000,
            pref_address: 0x100_0000,
            init_size: 0x40_0000,
            kernel,
            payload: (0x400, 0x800),
        }
    }
}

fn put(image: &mut [u8], offset: usize, bytes: &[u8]) {
    image[offset..offset + bytes.len()].copy_from_slice(bytes);
}

impl BzSpec {
    fn build(&self) -> Vec<u8> {
        let setup = (usize::from(self.setup_sects.max(1)) + 1) * 512;
        let mut image = vec![0u8; setup];
        // Setup code after the header: a recognisable filler that must not reach the zero
        // page.
        for byte in &mut image[0x270..] {
            *byte = 0xcc;
        }
        image[0x1f1] = self.setup_sects;
        let syssize = (self.kernel.len() as u32).div_ceil(16);
        put(&mut image, 0x1f4, &syssize.to_le_bytes());
        put(&mut image, 0x1fe, &0xaa55u16.to_le_bytes());
        // Short jump over the header: the header ends at 0x202 + this byte.
        let header_end: usize = match self.version {
            v if v >= 0x020f => 0x26c,
            v if v >= 0x020a => 0x264,
            _ => 0x248,
        };
        image[0x200] = 0xeb;
        image[0x201] = (header_end - 0x202) as u8;
        put(&mut image, 0x202, b"HdrS");
        put(&mut image, 0x206, &self.version.to_le_bytes());
        image[0x211] = self.loadflags;
        put(&mut image, 0x214, &0x10_0000u32.to_le_bytes());
        put(&mut image, 0x22c, &self.initrd_addr_max.to_le_bytes());
        put(&mut image, 0x230, &self.kernel_alignment.to_le_bytes());
        image[0x234] = 1; // relocatable
        image[0x235] = 21;
        put(&mut image, 0x238, &self.cmdline_size.to_le_bytes());
        if self.version >= 0x0208 {
            put(&mut image, 0x248, &self.payload.0.to_le_bytes());
            put(&mut image, 0x24c, &self.payload.1.to_le_bytes());
        }
        if self.version >= 0x020a {
            put(&mut image, 0x258, &self.pref_address.to_le_bytes());
            put(&mut image, 0x260, &self.init_size.to_le_bytes());
        }
        if self.version >= 0x020c {
            put(&mut image, 0x236, &self.xloadflags.to_le_bytes());
        }
        image.extend_from_slice(&self.kernel);
        image.resize(setup + syssize as usize * 16, 0);
        image
    }

    fn setup_size(&self) -> usize {
        (usize::from(self.setup_sects.max(1)) + 1) * 512
    }
}

/// One ELF64 segment: load address, bytes in the file, size in memory.
struct Segment {
    paddr: u64,
    bytes: Vec<u8>,
    memsz: u64,
}

/// An ELF64 x86-64 executable with `segments` and, if given, a PVH entry note.
fn elf(entry: u64, segments: &[Segment], pvh_entry: Option<u32>) -> Vec<u8> {
    let phnum = segments.len() + usize::from(pvh_entry.is_some());
    let mut data_offset = 64 + 56 * phnum;
    let mut image = vec![0u8; data_offset];
    put(&mut image, 0, b"\x7fELF\x02\x01\x01");
    put(&mut image, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut image, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut image, 20, &1u32.to_le_bytes());
    put(&mut image, 24, &entry.to_le_bytes());
    put(&mut image, 32, &64u64.to_le_bytes()); // e_phoff
    put(&mut image, 52, &64u16.to_le_bytes());
    put(&mut image, 54, &56u16.to_le_bytes());
    put(&mut image, 56, &(phnum as u16).to_le_bytes());
    let mut phdrs = Vec::new();
    let mut data = Vec::new();
    for segment in segments {
        let mut phdr = [0u8; 56];
        put(&mut phdr, 0, &1u32.to_le_bytes()); // PT_LOAD
        put(&mut phdr, 4, &7u32.to_le_bytes());
        put(&mut phdr, 8, &(data_offset as u64).to_le_bytes());
        put(
            &mut phdr,
            16,
            &(0xffff_ffff_8000_0000 | segment.paddr).to_le_bytes(),
        );
        put(&mut phdr, 24, &segment.paddr.to_le_bytes());
        put(&mut phdr, 32, &(segment.bytes.len() as u64).to_le_bytes());
        put(&mut phdr, 40, &segment.memsz.to_le_bytes());
        phdrs.extend_from_slice(&phdr);
        data.extend_from_slice(&segment.bytes);
        data_offset += segment.bytes.len();
    }
    if let Some(pvh) = pvh_entry {
        // A "GNU" note first, to check that the walk skips other notes.
        let mut notes = Vec::new();
        for (name, kind, desc) in [
            (&b"GNU\0"[..], 3u32, &[1u8, 2, 3, 4, 5, 6, 7, 8][..]),
            (&b"Xen\0"[..], 18u32, &pvh.to_le_bytes()[..]),
        ] {
            notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&kind.to_le_bytes());
            notes.extend_from_slice(name);
            notes.extend_from_slice(desc);
        }
        let mut phdr = [0u8; 56];
        put(&mut phdr, 0, &4u32.to_le_bytes()); // PT_NOTE
        put(&mut phdr, 8, &(data_offset as u64).to_le_bytes());
        put(&mut phdr, 32, &(notes.len() as u64).to_le_bytes());
        put(&mut phdr, 40, &(notes.len() as u64).to_le_bytes());
        put(&mut phdr, 48, &4u64.to_le_bytes());
        phdrs.extend_from_slice(&phdr);
        data.extend_from_slice(&notes);
    }
    image[64..64 + phdrs.len()].copy_from_slice(&phdrs);
    image.extend_from_slice(&data);
    image
}

fn kernel_segments() -> Vec<Segment> {
    vec![
        Segment {
            paddr: 0x100_0000,
            bytes: vec![0xf4, 0xeb, 0xfd, 0x11, 0x22, 0x33],
            memsz: 0x2000, // with a BSS
        },
        Segment {
            paddr: 0x120_0000,
            bytes: vec![0xab; 0x100],
            memsz: 0x100,
        },
    ]
}

// ---------------------------------------------------------------------------------------
// Helpers.

struct Machine {
    space: AddressSpace,
    layout: MemoryLayout,
}

fn machine(ram: u64) -> Machine {
    let mut space = AddressSpace::new("system");
    let layout = build_memory(&mut space, ram).unwrap();
    Machine { space, layout }
}

impl Machine {
    fn load(&self, boot: &LinuxBoot) -> Result<LoadedLinux, Box<Error>> {
        load_linux(&*self.space.guest_memory().memory(), &self.layout, boot).map_err(Box::new)
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        self.space
            .guest_memory()
            .memory()
            .read_slice(&mut bytes, GuestAddress(addr))
            .unwrap();
        bytes
    }

    fn write(&self, addr: u64, bytes: &[u8]) {
        self.space
            .guest_memory()
            .memory()
            .write_slice(bytes, GuestAddress(addr))
            .unwrap();
    }

    fn u8(&self, addr: u64) -> u8 {
        self.read(addr, 1)[0]
    }

    fn u16(&self, addr: u64) -> u16 {
        u16::from_le_bytes(self.read(addr, 2).try_into().unwrap())
    }

    fn u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.read(addr, 4).try_into().unwrap())
    }

    fn u64(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.read(addr, 8).try_into().unwrap())
    }

    fn cstring(&self, addr: u64) -> String {
        let bytes = self.read(addr, 4096);
        let end = bytes.iter().position(|b| *b == 0).unwrap();
        String::from_utf8(bytes[..end].to_vec()).unwrap()
    }

    /// The zero page's e820 table.
    fn zero_page_e820(&self) -> E820Map {
        let count = usize::from(self.u8(ZERO_PAGE_ADDR + 0x1e8));
        E820Map::decode(&self.read(ZERO_PAGE_ADDR + 0x2d0, count * E820Map::RECORD_SIZE)).unwrap()
    }
}

fn bz_boot(spec: &BzSpec, cmdline: &str) -> LinuxBoot {
    LinuxBoot::new(
        "bzImage-test",
        spec.build(),
        cmdline,
        KernelDecompress::Guest,
    )
    .unwrap()
}

fn zero_page(offset: u64) -> u64 {
    ZERO_PAGE_ADDR + offset
}

/// Checks the 64-bit entry state: flat 64-bit CS/DS from the GDT in memory, paging with the
/// identity map, RSI = zero page, interrupts off.
fn assert_long_mode_entry(m: &Machine, loaded: &LoadedLinux, rip: u64) {
    let regs = loaded.regs();
    assert_eq!(regs.rip, rip);
    assert_eq!(regs.rsi, ZERO_PAGE_ADDR);
    assert_eq!(regs.rsp, BOOT_STACK_TOP);
    assert_eq!(regs.rflags, 2, "interrupts off");
    assert_eq!((regs.rax, regs.rbx, regs.rbp, regs.rdi), (0, 0, 0, 0));

    let mut sregs = kvm_sregs::default();
    loaded.sregs(&mut sregs);
    assert_eq!(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
    assert_ne!(sregs.cr4 & CR4_PAE, 0);
    assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
    assert_eq!(sregs.cr3, PML4_ADDR);
    assert_eq!(sregs.gdt.base, BOOT_GDT_ADDR);
    assert_eq!(sregs.cs.selector, BOOT_CS);
    assert_eq!(sregs.ds.selector, BOOT_DS);
    assert_eq!(sregs.ss.selector, BOOT_DS);
    // What the CPU would load from the GDT in memory is what the registers hold.
    let descriptor = |selector: u16| m.u64(BOOT_GDT_ADDR + u64::from(selector));
    assert_eq!(
        sregs.cs,
        segment_from_descriptor(BOOT_CS, descriptor(BOOT_CS))
    );
    assert_eq!(
        sregs.ds,
        segment_from_descriptor(BOOT_DS, descriptor(BOOT_DS))
    );
    assert_eq!((sregs.cs.l, sregs.cs.dpl, sregs.cs.present), (1, 0, 1));
    assert_eq!((sregs.ds.base, sregs.ds.limit), (0, 0xffff_ffff));

    // The identity map covers the entry, the zero page and the command line.
    for addr in [rip, ZERO_PAGE_ADDR, CMDLINE_ADDR] {
        let pml4e = m.u64(PML4_ADDR + 8 * ((addr >> 39) & 511));
        assert_ne!(pml4e & PTE_PRESENT, 0);
        let pdpte = m.u64((pml4e & !0xfff) + 8 * ((addr >> 30) & 511));
        assert_ne!(pdpte & PTE_PRESENT, 0);
        let pde = m.u64((pdpte & !0xfff) + 8 * ((addr >> 21) & 511));
        assert_ne!(pde & PTE_PAGE_SIZE, 0);
        assert_eq!(
            pde & !0x1f_ffff & ((1 << 52) - 1),
            addr & !0x1f_ffff,
            "{addr:#x}"
        );
    }
}

/// Checks flat 32-bit protected mode without paging.
fn assert_protected_mode_entry(loaded: &LoadedLinux) {
    let mut sregs = kvm_sregs::default();
    loaded.sregs(&mut sregs);
    assert_eq!(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE);
    assert_eq!((sregs.cr4, sregs.efer), (0, 0));
    assert_eq!(sregs.cs.selector, BOOT_CS);
    assert_eq!((sregs.cs.db, sregs.cs.l, sregs.cs.base), (1, 0, 0));
    assert_eq!(sregs.cs.limit, 0xffff_ffff);
    assert_eq!((sregs.ds.selector, sregs.ss.selector), (BOOT_DS, BOOT_DS));
    assert_eq!(loaded.regs().rflags, 2);
}

fn message(error: Error) -> String {
    error.to_string()
}

// ---------------------------------------------------------------------------------------
// bzImage.

#[test]
fn bzimage_zero_page_follows_the_boot_protocol() {
    let m = machine(128 * MIB);
    let spec = BzSpec::default();
    let image = spec.build();
    let cmdline = "console=ttyS0 earlyprintk=serial root=/dev/vda";
    let boot = LinuxBoot::new("bzImage", image.clone(), cmdline, KernelDecompress::Guest)
        .unwrap()
        .with_initrd("initrd.img", vec![0x5a; 10_000])
        .unwrap();
    assert_eq!(boot.format(), KernelFormat::BzImage);
    assert_eq!(boot.boot_protocol(), Some(0x020f));
    let loaded = m.load(&boot).unwrap();

    // Setup header copied from the image, up to its end (0x202 + the jump byte).
    assert_eq!(
        m.read(zero_page(0x1f1), 0x26c - 0x1f1)[..0x210 - 0x1f1],
        image[0x1f1..0x210]
    );
    assert_eq!(m.u16(zero_page(0x1fe)), 0xaa55, "boot_flag");
    assert_eq!(m.u32(zero_page(0x202)), 0x5372_6448, "HdrS");
    assert_eq!(m.u16(zero_page(0x206)), 0x020f, "version");
    assert_eq!(m.u8(zero_page(0x210)), 0xff, "type_of_loader");
    assert_eq!(m.u8(zero_page(0x211)) & 1, 1, "LOADED_HIGH kept");
    assert_eq!(
        m.u32(zero_page(0x214)),
        0x100_0000,
        "code32_start = load address"
    );
    assert_eq!(m.u32(zero_page(0x230)), 0x20_0000, "kernel_alignment kept");
    assert_eq!(m.u16(zero_page(0x236)), 1, "xloadflags kept");
    // Nothing of the setup code after the header.
    assert!(m
        .read(zero_page(0x26c), 0x290 - 0x26c)
        .iter()
        .all(|b| *b == 0));

    // Command line.
    assert_eq!(
        u64::from(m.u32(zero_page(0x228))),
        CMDLINE_ADDR,
        "cmd_line_ptr"
    );
    assert_eq!(m.u32(zero_page(0xc8)), 0, "ext_cmd_line_ptr");
    assert_eq!(m.u32(zero_page(0x238)), 0x7ff, "cmdline_size");
    assert_eq!(m.cstring(CMDLINE_ADDR), cmdline);

    // Initrd: page-aligned, at the top of RAM below 4 GiB (128 MiB here), above the kernel.
    let (initrd_addr, initrd_size) = loaded.initrd.unwrap();
    assert_eq!(initrd_size, 10_000);
    assert_eq!(initrd_addr % 4096, 0);
    assert!(initrd_addr + initrd_size <= 128 * MIB);
    assert!(initrd_addr + initrd_size > 128 * MIB - 4096);
    assert!(initrd_addr >= loaded.kernel_end);
    assert_eq!(
        u64::from(m.u32(zero_page(0x218))),
        initrd_addr,
        "ramdisk_image"
    );
    assert_eq!(
        u64::from(m.u32(zero_page(0x21c))),
        initrd_size,
        "ramdisk_size"
    );
    assert_eq!(m.read(initrd_addr, 10_000), vec![0x5a; 10_000]);

    // e820 = the layout's.
    assert_eq!(m.zero_page_e820(), m.layout.e820());

    // The protected-mode part at pref_address, entered at +0x200 in 64-bit mode.
    assert_eq!(loaded.kernel_start, 0x100_0000);
    assert_eq!(
        loaded.kernel_end,
        0x100_0000 + 0x40_0000,
        "init_size reserved"
    );
    assert_eq!(
        m.read(0x100_0000, spec.kernel.len()),
        image[spec.setup_size()..]
    );
    assert_eq!(loaded.entry, LinuxEntry::Long64 { rip: 0x100_0200 });
    assert_long_mode_entry(&m, &loaded, 0x100_0200);
}

#[test]
fn bzimage_kernel_goes_to_pref_address_aligned_to_kernel_alignment() {
    let m = machine(128 * MIB);
    let spec = BzSpec {
        pref_address: 0x110_0000,
        kernel_alignment: 0x40_0000,
        ..BzSpec::default()
    };
    let loaded = m.load(&bz_boot(&spec, "")).unwrap();
    assert_eq!(loaded.kernel_start, 0x140_0000);
    assert_eq!(loaded.entry, LinuxEntry::Long64 { rip: 0x140_0200 });
    assert_eq!(m.u32(zero_page(0x214)), 0x140_0000);

    let bad = BzSpec {
        kernel_alignment: 0x30_0000,
        ..BzSpec::default()
    };
    let err = LinuxBoot::new("odd", bad.build(), "", KernelDecompress::Guest).unwrap_err();
    assert!(message(err).contains("kernel_alignment 0x300000"));
}

#[test]
fn old_protocol_without_the_64_bit_entry_starts_in_32_bit_mode() {
    let m = machine(64 * MIB);
    let spec = BzSpec {
        version: 0x0206,
        ..BzSpec::default()
    };
    let loaded = m.load(&bz_boot(&spec, "quiet")).unwrap();
    // No pref_address before 2.10: the protected-mode kernel at 1 MiB, entered there.
    assert_eq!(loaded.kernel_start, 0x10_0000);
    assert_eq!(loaded.entry, LinuxEntry::Protected32 { eip: 0x10_0000 });
    assert_eq!(loaded.regs().rsi, ZERO_PAGE_ADDR);
    assert_protected_mode_entry(&loaded);
    // The 2.06 header ends at 0x248: later fields stay zero in the zero page.
    assert_eq!(m.u32(zero_page(0x248)), 0);
    assert_eq!(m.u16(zero_page(0x206)), 0x0206);
    assert_eq!(m.cstring(CMDLINE_ADDR), "quiet");
}

#[test]
fn initrd_stays_below_initrd_addr_max() {
    let m = machine(512 * MIB);
    let spec = BzSpec {
        initrd_addr_max: 0x0fff_ffff, // 256 MiB - 1
        ..BzSpec::default()
    };
    let boot = bz_boot(&spec, "")
        .with_initrd("small.cpio", vec![1; 5000])
        .unwrap();
    let loaded = m.load(&boot).unwrap();
    let (addr, size) = loaded.initrd.unwrap();
    assert_eq!(
        addr,
        0x1000_0000 - 8192,
        "highest page-aligned fit below 256 MiB"
    );
    assert_eq!(size, 5000);
}

#[test]
fn an_initrd_that_does_not_fit_is_refused_with_the_limit() {
    let layout = MemoryLayout::new(32 * MIB).unwrap();
    let boot = bz_boot(&BzSpec::default(), "")
        .with_initrd("/tmp/big.cpio", vec![0; 13 * MIB as usize])
        .unwrap();
    // The kernel needs [16 MiB, 20 MiB); 12 MiB remain below the end of RAM.
    let err = message(boot.plan(&layout).unwrap_err());
    assert!(err.contains("/tmp/big.cpio"), "{err}");
    assert!(
        err.contains("0x1400000") && err.contains("0x2000000"),
        "{err}"
    );
    assert!(err.contains("0xc00000 bytes free"), "{err}");
    // 12 MiB fit.
    let boot = bz_boot(&BzSpec::default(), "")
        .with_initrd("/tmp/ok.cpio", vec![0; 12 * MIB as usize])
        .unwrap();
    assert_eq!(
        boot.plan(&layout).unwrap().initrd,
        Some((0x140_0000, 12 * MIB))
    );
    let err = bz_boot(&BzSpec::default(), "")
        .with_initrd("empty.img", Vec::new())
        .unwrap_err();
    assert!(message(err).contains("empty.img is empty"));
}

#[test]
fn a_command_line_over_cmdline_size_is_refused_naming_the_limit() {
    let spec = BzSpec {
        cmdline_size: 16,
        ..BzSpec::default()
    };
    let ok = "a".repeat(16);
    assert!(LinuxBoot::new("k", spec.build(), ok, KernelDecompress::Guest).is_ok());
    let err = LinuxBoot::new(
        "/boot/k",
        spec.build(),
        "a".repeat(17),
        KernelDecompress::Guest,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        Error::CmdlineTooLong {
            len: 17,
            limit: 16,
            ..
        }
    ));
    let text = message(err);
    assert!(text.contains("limit of 16 bytes"), "{text}");
    assert!(
        text.contains("cmdline_size") && text.contains("/boot/k"),
        "{text}"
    );
    let err = LinuxBoot::new("k", spec.build(), "a\0b", KernelDecompress::Guest).unwrap_err();
    assert!(message(err).contains("NUL"));
}

#[test]
fn ram_too_small_for_the_kernel_names_the_needed_size() {
    let spec = BzSpec {
        init_size: 0x300_0000, // 48 MiB from 16 MiB: needs 64 MiB
        ..BzSpec::default()
    };
    let boot = bz_boot(&spec, "");
    let err = message(
        boot.plan(&MemoryLayout::new(32 * MIB).unwrap())
            .unwrap_err(),
    );
    assert!(err.contains("bzImage-test"), "{err}");
    assert!(
        err.contains("0x4000000") && err.contains("init_size 0x3000000"),
        "{err}"
    );
    assert!(err.contains("-m 64M"), "{err}");
    assert!(boot.plan(&MemoryLayout::new(64 * MIB).unwrap()).is_ok());
}

#[test]
fn corrupt_and_truncated_bzimages_are_refused_with_the_reason() {
    let image = BzSpec::default().build();
    let reason = |bytes: Vec<u8>| {
        let err = LinuxBoot::new("/k/vmlinuz", bytes, "", KernelDecompress::Guest).unwrap_err();
        assert!(matches!(err, Error::KernelImage { .. }), "{err:?}");
        let text = message(err);
        assert!(text.starts_with("kernel /k/vmlinuz: "), "{text}");
        text
    };
    // Not a kernel at all.
    assert!(reason(b"#!/bin/sh\necho hi\n".to_vec()).contains("ELF"));
    assert!(reason(vec![0; 4096]).contains("boot_flag"));
    let mut bad = image.clone();
    put(&mut bad, 0x202, b"HdrX");
    assert!(reason(bad).contains("HdrS"));
    // Too old a protocol.
    let mut bad = image.clone();
    put(&mut bad, 0x206, &0x0205u16.to_le_bytes());
    assert!(reason(bad).contains("2.05"));
    // A zImage.
    let mut bad = image.clone();
    bad[0x211] = 0;
    assert!(reason(bad).contains("LOADED_HIGH"));
    // Truncated: the protected-mode kernel is cut short.
    let cut = image[..image.len() - 512].to_vec();
    let text = reason(cut);
    assert!(
        text.contains("truncated") && text.contains("syssize"),
        "{text}"
    );
    // Cut inside the header.
    assert!(reason(image[..0x204].to_vec()).contains("truncated"));
    // A payload past the end of the kernel.
    let mut bad = image.clone();
    put(&mut bad, 0x24c, &0x10_0000u32.to_le_bytes());
    assert!(reason(bad).contains("payload"));
    // No protected-mode kernel at all.
    let mut bad = image[..BzSpec::default().setup_size()].to_vec();
    put(&mut bad, 0x1f4, &0u32.to_le_bytes());
    put(&mut bad, 0x248, &0u32.to_le_bytes());
    assert!(reason(bad).contains("corrupt"));
}

#[test]
fn missing_files_are_named() {
    let err = LinuxBoot::from_files(
        Path::new("/nonexistent/vmlinuz"),
        None,
        "",
        KernelDecompress::Guest,
    )
    .unwrap_err();
    let text = message(err);
    assert!(text.contains("kernel /nonexistent/vmlinuz"), "{text}");

    let dir = std::env::temp_dir().join(format!("vmkit-linux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("bzImage");
    std::fs::write(&kernel, BzSpec::default().build()).unwrap();
    let err = LinuxBoot::from_files(
        &kernel,
        Some(Path::new("/nonexistent/initrd")),
        "",
        KernelDecompress::Guest,
    )
    .unwrap_err();
    assert!(message(err).contains("initrd /nonexistent/initrd"));
    let boot = LinuxBoot::from_files(&kernel, None, "x", KernelDecompress::Guest).unwrap();
    assert_eq!(boot.kernel_path(), kernel);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn loading_twice_gives_the_same_memory_as_a_reset_reload_does() {
    let m = machine(64 * MIB);
    let boot = bz_boot(&BzSpec::default(), "console=ttyS0");
    let first = m.load(&boot).unwrap();
    let zero_page = m.read(ZERO_PAGE_ADDR, 4096);
    // The guest scribbles over its kernel and boot data; the reload restores them.
    m.write(0x100_0200, &[0; 16]);
    m.write(ZERO_PAGE_ADDR, &[0xee; 4096]);
    m.write(CMDLINE_ADDR, b"garbage garbage garbage");
    assert_eq!(m.load(&boot).unwrap(), first);
    assert_eq!(m.read(ZERO_PAGE_ADDR, 4096), zero_page);
    assert_eq!(m.cstring(CMDLINE_ADDR), "console=ttyS0");
    assert_eq!(m.read(0x100_0200, 3), [0xf4, 0xeb, 0xfd]);
}

// ---------------------------------------------------------------------------------------
// ELF vmlinux.

#[test]
fn elf_without_a_pvh_note_boots_through_the_64_bit_entry() {
    let m = machine(64 * MIB);
    let image = elf(0x100_0000, &kernel_segments(), None);
    let boot = LinuxBoot::new("vmlinux", image, "console=ttyS0", KernelDecompress::Guest)
        .unwrap()
        .with_initrd("initrd", vec![7; 100])
        .unwrap();
    assert_eq!(boot.format(), KernelFormat::Elf);
    assert_eq!(boot.boot_protocol(), None);
    // Garbage where the BSS goes: the loader zeroes it.
    m.write(0x100_0006, &[0xff; 64]);
    let loaded = m.load(&boot).unwrap();
    assert_eq!(loaded.entry, LinuxEntry::Long64 { rip: 0x100_0000 });
    assert_eq!(
        (loaded.kernel_start, loaded.kernel_end),
        (0x100_0000, 0x120_0100)
    );
    assert_eq!(m.read(0x100_0000, 6), [0xf4, 0xeb, 0xfd, 0x11, 0x22, 0x33]);
    assert!(
        m.read(0x100_0006, 0x2000 - 6).iter().all(|b| *b == 0),
        "BSS zeroed"
    );
    assert_eq!(m.read(0x120_0000, 0x100), vec![0xab; 0x100]);
    assert_long_mode_entry(&m, &loaded, 0x100_0000);

    // A zero page with no kernel setup header: the magic numbers and the loader's fields.
    assert_eq!(m.u16(zero_page(0x1fe)), 0xaa55);
    assert_eq!(m.u32(zero_page(0x202)), 0x5372_6448);
    assert_eq!(m.u8(zero_page(0x210)), 0xff);
    assert_eq!(u64::from(m.u32(zero_page(0x228))), CMDLINE_ADDR);
    assert_eq!(u64::from(m.u32(zero_page(0x238))), ELF_CMDLINE_LIMIT);
    assert_eq!(m.cstring(CMDLINE_ADDR), "console=ttyS0");
    let (addr, size) = loaded.initrd.unwrap();
    assert_eq!(
        (
            u64::from(m.u32(zero_page(0x218))),
            u64::from(m.u32(zero_page(0x21c)))
        ),
        (addr, size)
    );
    assert_eq!(m.zero_page_e820(), m.layout.e820());
}

#[test]
fn elf_with_a_pvh_note_boots_through_pvh_start_info() {
    let m = machine(256 * MIB);
    let image = elf(0x100_0000, &kernel_segments(), Some(0x100_0003));
    let boot = LinuxBoot::new(
        "vmlinux-pvh",
        image,
        "console=hvc0",
        KernelDecompress::Guest,
    )
    .unwrap()
    .with_initrd("initrd", vec![9; 3 * 4096])
    .unwrap();
    let loaded = m.load(&boot).unwrap();
    assert_eq!(loaded.entry, LinuxEntry::Pvh { eip: 0x100_0003 });
    assert_eq!(loaded.boot_info_addr, PVH_START_INFO_ADDR);
    let regs = loaded.regs();
    assert_eq!((regs.rip, regs.rbx), (0x100_0003, PVH_START_INFO_ADDR));
    assert_protected_mode_entry(&loaded);

    // hvm_start_info.
    let info = PVH_START_INFO_ADDR;
    assert_eq!(m.u32(info), XEN_HVM_START_MAGIC);
    assert_eq!(m.u32(info + 4), 1, "version");
    assert_eq!(m.u32(info + 12), 1, "nr_modules");
    assert_eq!(m.u64(info + 16), PVH_MODLIST_ADDR);
    assert_eq!(m.u64(info + 24), CMDLINE_ADDR);
    assert_eq!(m.u64(info + 32), 0, "no RSDP");
    assert_eq!(m.u64(info + 40), PVH_MEMMAP_ADDR);
    let entries = m.u32(info + 48) as usize;
    assert_eq!(m.cstring(CMDLINE_ADDR), "console=hvc0");
    // The module is the initrd.
    let (addr, size) = loaded.initrd.unwrap();
    assert_eq!(
        (m.u64(PVH_MODLIST_ADDR), m.u64(PVH_MODLIST_ADDR + 8)),
        (addr, size)
    );
    assert_eq!(m.read(addr, 4), [9; 4]);
    // The memory map: 24-byte entries (addr, size, type, reserved) = the layout's e820.
    let mut records = Vec::new();
    for i in 0..entries as u64 {
        let entry = PVH_MEMMAP_ADDR + 24 * i;
        records.extend_from_slice(&m.read(entry, 20));
        assert_eq!(m.u32(entry + 20), 0);
    }
    assert_eq!(E820Map::decode(&records).unwrap(), m.layout.e820());
    // No zero page was written.
    assert_eq!(m.u16(zero_page(0x1fe)), 0);
}

#[test]
fn bad_elf_files_are_refused_with_the_reason() {
    let good = elf(0x100_0000, &kernel_segments(), None);
    let reason = |bytes: Vec<u8>| {
        let err = LinuxBoot::new("/k/vmlinux", bytes, "", KernelDecompress::Guest).unwrap_err();
        let text = message(err);
        assert!(text.starts_with("kernel /k/vmlinux: "), "{text}");
        text
    };
    assert!(reason(good[..40].to_vec()).contains("truncated"));
    let cut = good[..good.len() - 10].to_vec();
    assert!(reason(cut).contains("segment 1"));
    let mut bad = good.clone();
    bad[4] = 1; // ELFCLASS32
    assert!(reason(bad).contains("64-bit"));
    let mut bad = good.clone();
    put(&mut bad, 18, &183u16.to_le_bytes()); // aarch64
    assert!(reason(bad).contains("machine 183"));
    let mut bad = good.clone();
    put(&mut bad, 56, &200u16.to_le_bytes()); // e_phnum past the file
    assert!(reason(bad).contains("program headers"));
    let mut bad = good.clone();
    put(&mut bad, 54, &32u16.to_le_bytes());
    assert!(reason(bad).contains("e_phentsize"));

    // A segment below 1 MiB, and one past the end of RAM.
    let low = elf(
        0x8000,
        &[Segment {
            paddr: 0x8000,
            bytes: vec![1],
            memsz: 1,
        }],
        None,
    );
    assert!(reason(low).contains("below 1 MiB"));
    let big = LinuxBoot::new(
        "big-vmlinux",
        elf(
            0x100_0000,
            &[Segment {
                paddr: 0x100_0000,
                bytes: vec![1],
                memsz: 0x400_0000,
            }],
            None,
        ),
        "",
        KernelDecompress::Guest,
    )
    .unwrap();
    let err = message(big.plan(&MemoryLayout::new(64 * MIB).unwrap()).unwrap_err());
    assert!(
        err.contains("big-vmlinux") && err.contains("-m 80M"),
        "{err}"
    );

    // A note segment cut inside its first note, and one past the end of the file.
    let mut bad = elf(0x100_0000, &kernel_segments(), Some(0x100_0000));
    let note_phdr = 64 + 56 * 2;
    put(&mut bad, note_phdr + 32, &16u64.to_le_bytes());
    assert!(reason(bad.clone()).contains("runs past the note segment"));
    put(&mut bad, note_phdr + 8, &0x10_0000u64.to_le_bytes());
    assert!(reason(bad).contains("note segment 2 lies past the end"));
}

#[test]
fn the_command_line_limit_of_elf_kernels_is_command_line_size() {
    let image = elf(0x100_0000, &kernel_segments(), None);
    let limit = ELF_CMDLINE_LIMIT as usize;
    assert!(LinuxBoot::new(
        "v",
        image.clone(),
        "x".repeat(limit),
        KernelDecompress::Guest
    )
    .is_ok());
    let err =
        LinuxBoot::new("v", image, "x".repeat(limit + 1), KernelDecompress::Guest).unwrap_err();
    assert!(message(err).contains("limit of 2047 bytes"));
}

// ---------------------------------------------------------------------------------------
// Host decompression.

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    let mut out = encoder.finish().unwrap();
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out
}

/// A bzImage whose payload is a gzip-compressed ELF vmlinux.
fn bzimage_around(vmlinux: &[u8], cmdline_size: u32) -> Vec<u8> {
    let payload = gzip(vmlinux);
    let mut kernel = vec![0x90u8; 0x400];
    kernel.extend_from_slice(&payload);
    BzSpec {
        payload: (0x400, payload.len() as u32),
        kernel,
        cmdline_size,
        ..BzSpec::default()
    }
    .build()
}

#[test]
fn host_decompression_boots_the_extracted_vmlinux_with_the_bzimage_header() {
    let m = machine(64 * MIB);
    // The vmlinux carries a PVH note, but a host-decompressed bzImage still gets the 64-bit
    // entry and the bzImage's zero page.
    let vmlinux = elf(0x100_0000, &kernel_segments(), Some(0x100_0003));
    let image = bzimage_around(&vmlinux, 0x100);
    let boot = LinuxBoot::new("bzImage", image, "console=ttyS0", KernelDecompress::Host).unwrap();
    assert_eq!(boot.format(), KernelFormat::Elf);
    assert_eq!(boot.boot_protocol(), Some(0x020f));
    let loaded = m.load(&boot).unwrap();
    assert_eq!(loaded.entry, LinuxEntry::Long64 { rip: 0x100_0000 });
    assert_long_mode_entry(&m, &loaded, 0x100_0000);
    assert_eq!(
        m.read(0x120_0000, 4),
        [0xab; 4],
        "the vmlinux segments are in place"
    );
    assert_eq!(m.u16(zero_page(0x206)), 0x020f, "the bzImage's header");
    assert_eq!(m.u32(zero_page(0x238)), 0x100, "its cmdline_size");
    assert_eq!(m.u8(zero_page(0x210)), 0xff);
    assert_eq!(m.zero_page_e820(), m.layout.e820());

    // The bzImage's cmdline_size still applies.
    let err = LinuxBoot::new(
        "bzImage",
        bzimage_around(&vmlinux, 0x10),
        "x".repeat(0x11),
        KernelDecompress::Host,
    )
    .unwrap_err();
    assert!(message(err).contains("limit of 16 bytes"));

    // The same bzImage with guest decompression loads the bzImage itself.
    let boot = LinuxBoot::new(
        "bzImage",
        bzimage_around(&vmlinux, 0x100),
        "",
        KernelDecompress::Guest,
    )
    .unwrap();
    assert_eq!(boot.format(), KernelFormat::BzImage);
}

#[test]
fn host_decompression_of_a_corrupt_payload_is_an_error() {
    let vmlinux = elf(0x100_0000, &kernel_segments(), None);
    let mut image = bzimage_around(&vmlinux, 0x100);
    let payload_start = BzSpec::default().setup_size() + 0x400;
    // Damage the deflate stream after the gzip header.
    for byte in &mut image[payload_start + 12..payload_start + 40] {
        *byte ^= 0x5a;
    }
    let err = LinuxBoot::new("/k/bz", image, "", KernelDecompress::Host).unwrap_err();
    let text = message(err);
    assert!(
        text.starts_with("kernel /k/bz: host decompression failed"),
        "{text}"
    );
    // A payload that is not compressed at all.
    let image = BzSpec::default().build();
    let err = LinuxBoot::new("/k/bz", image, "", KernelDecompress::Host).unwrap_err();
    assert!(message(err).contains("payload"));
}

// ---------------------------------------------------------------------------------------
// No panics on arbitrary input.

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn damaged_bzimages_never_panic(
        cut in 0usize..0x1800,
        flips in proptest::collection::vec((0x1f0usize..0x270, any::<u8>()), 0..6),
    ) {
        let mut image = BzSpec::default().build();
        for (offset, value) in flips {
            image[offset] = value;
        }
        image.truncate(cut.max(1));
        let layout = MemoryLayout::new(64 * MIB).unwrap();
        if let Ok(boot) = LinuxBoot::new("fuzz", image, "", KernelDecompress::Guest) {
            let _ = boot.plan(&layout);
        }
    }

    #[test]
    fn damaged_elf_files_never_panic(
        cut in 0usize..400,
        flips in proptest::collection::vec((0usize..300, any::<u8>()), 0..6),
    ) {
        let mut image = elf(0x100_0000, &kernel_segments(), Some(0x100_0000));
        for (offset, value) in flips {
            if let Some(byte) = image.get_mut(offset) {
                *byte = value;
            }
        }
        image.truncate(cut.max(1));
        let m = machine(32 * MIB);
        if let Ok(boot) = LinuxBoot::new("fuzz", image, "", KernelDecompress::Guest) {
            let _ = m.load(&boot);
        }
    }
}
