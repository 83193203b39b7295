//! Multiboot (version 1) kernels: the header, ELF32 and a.out-kludge images, and the
//! multiboot information a boot loader hands to the kernel.
//!
//! Shaped after what QEMU's `-kernel` does with such a file (hw/i386/multiboot.c plus its
//! `multiboot.bin` option ROM), without firmware:
//!
//! - [`find_header`] searches the first 8192 bytes, 4-byte aligned, for the magic
//!   0x1BADB002 whose `checksum` makes `magic + flags + checksum` zero. A magic with a wrong
//!   checksum and no valid header after it is an error, not "no header".
//! - [`MultibootKernel::parse`] loads the image as an ELF32 (its `PT_LOAD` segments at
//!   `p_paddr`) unless the header's flag bit 16 gives the a.out-kludge address fields
//!   (`header_addr`, `load_addr`, `load_end_addr`, `bss_end_addr`, `entry_addr`), which then
//!   win over the ELF headers, as in QEMU.
//! - [`MultibootKernel::plan`] checks the segments against the guest's memory map and lays
//!   out what a loader writes: the segments, the memory map at [`MMAP_ADDR`], the
//!   information structure at [`INFO_ADDR`] and, page-aligned after the highest segment, the
//!   module list, the command lines, the boot loader name ([`BOOT_LOADER_NAME`]) and each
//!   module, as QEMU's one contiguous buffer does, then a page of boot stack. When the image
//!   covers QEMU's 0x9000 area (QEMU would load the image over its own information), the
//!   information and memory map go after the strings instead.
//!
//! The kernel is entered in flat 32-bit protected mode, paging off, with
//! EAX = [`BOOTLOADER_MAGIC`] and EBX = [`INFO_ADDR`]; setting the registers is the VMM's job.
//!
//! ```
//! use vmkit_kernel::multiboot::{
//!     MemoryRegion, Module, MultibootKernel, PlanConfig, BOOTLOADER_MAGIC, HEADER_MAGIC,
//!     INFO_ADDR,
//! };
//!
//! // An a.out-kludge kernel: the header at offset 0, loaded at 1 MiB, entry just after it.
//! let flags = 1u32 << 16;
//! let mut image = Vec::new();
//! for word in [
//!     HEADER_MAGIC,
//!     flags,
//!     0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
//!     0x10_0000, // header_addr
//!     0x10_0000, // load_addr
//!     0,         // load_end_addr: the whole file
//!     0x10_1000, // bss_end_addr
//!     0x10_0020, // entry_addr
//! ] {
//!     image.extend_from_slice(&word.to_le_bytes());
//! }
//! image.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // hlt; jmp $-1
//!
//! let kernel = MultibootKernel::parse(&image)?.expect("a multiboot header");
//! assert_eq!(kernel.entry, 0x10_0020);
//! let memory_map = [
//!     MemoryRegion { addr: 0, size: 0x9_fc00, kind: 1 },
//!     MemoryRegion { addr: 0x10_0000, size: 63 << 20, kind: 1 },
//! ];
//! let modules = [Module { cmdline: "env.txt NR_CPUS=1", data: b"NR_CPUS=1\n" }];
//! let plan = kernel.plan(&PlanConfig {
//!     cmdline: "kernel.elf console=ttyS0",
//!     modules: &modules,
//!     memory_map: &memory_map,
//!     reserved: &[],
//! })?;
//! assert_eq!(plan.info_addr, INFO_ADDR as u32);
//! assert_eq!(plan.info.mem_lower, 639);
//! assert_eq!(plan.info.mem_upper, 63 << 10);
//! // The module goes on the first page boundary after the page of module list and strings.
//! assert_eq!(plan.modules[0].start, 0x10_2000);
//! let _ = BOOTLOADER_MAGIC; // what EAX holds at the entry
//! # Ok::<(), vmkit_kernel::Error>(())
//! ```

use crate::{Error, Result};

/// The header's `magic` field.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// What EAX holds when a multiboot loader enters the kernel.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header lies in this many first bytes of the image.
pub const HEADER_SEARCH_LEN: usize = 8192;
/// QEMU looks at offsets below this (its 48-byte header must end inside the 8 KiB).
const SEARCH_END: usize = HEADER_SEARCH_LEN - 48;

/// Header flag bit 0: modules page-aligned (always done here).
pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag bit 1: the kernel wants the memory information (always given here).
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Header flag bit 2: the kernel wants a video mode (not given, as in QEMU).
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Header flag bit 16: the a.out-kludge address fields are valid.
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;

/// Guest-physical address of the memory map (QEMU's `ADDR_E820_MAP`).
pub const MMAP_ADDR: u64 = 0x9000;
/// Guest-physical address of the multiboot information (QEMU's `ADDR_MBI`): EBX at entry,
/// unless the image covers it.
pub const INFO_ADDR: u64 = 0x9500;
/// Size of the multiboot information structure.
pub const INFO_SIZE: usize = 88;
/// Bytes of one memory map entry (its `size` field, 20, plus the field itself).
pub const MMAP_ENTRY_SIZE: usize = 24;
/// The most memory map entries that fit between [`MMAP_ADDR`] and [`INFO_ADDR`].
pub const MMAP_MAX_ENTRIES: usize = (INFO_ADDR - MMAP_ADDR) as usize / MMAP_ENTRY_SIZE;
/// The boot loader name in the information (QEMU says "qemu").
pub const BOOT_LOADER_NAME: &str = "vmkit";
/// `boot_device`: no BIOS disk, as QEMU (0x8000ffff).
pub const BOOT_DEVICE: u32 = 0x8000_ffff;

/// Information flag: `mem_lower`/`mem_upper` valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// Information flag: `boot_device` valid.
pub const INFO_BOOT_DEVICE: u32 = 1 << 1;
/// Information flag: `cmdline` valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// Information flag: `mods_count`/`mods_addr` valid.
pub const INFO_MODULES: u32 = 1 << 3;
/// Information flag: `mmap_length`/`mmap_addr` valid.
pub const INFO_MMAP: u32 = 1 << 6;
/// Information flag: `boot_loader_name` valid.
pub const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;
/// The flags vmkit (and QEMU) set.
pub const INFO_FLAGS: u32 = INFO_MEMORY
    | INFO_BOOT_DEVICE
    | INFO_CMDLINE
    | INFO_MODULES
    | INFO_MMAP
    | INFO_BOOT_LOADER_NAME;

/// Memory map type of usable RAM (e820 type 1).
pub const MEMORY_AVAILABLE: u32 = 1;

const PAGE: u64 = 4096;
const MODULE_ENTRY_SIZE: u64 = 16;
const ONE_MIB: u64 = 1 << 20;
const FOUR_GIB: u64 = 1 << 32;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const ELF32_EHDR_SIZE: usize = 52;
const ELF32_PHDR_SIZE: usize = 32;

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    let field = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes(field.try_into().ok()?))
}

/// The a.out-kludge address fields (header flag bit 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AoutKludge {
    /// `header_addr`: where the header's magic lands in memory.
    pub header_addr: u32,
    /// `load_addr`: where the text starts.
    pub load_addr: u32,
    /// `load_end_addr`: end of the loaded bytes (0: to the end of the file).
    pub load_end_addr: u32,
    /// `bss_end_addr`: end of the zeroed area after them (0: no bss).
    pub bss_end_addr: u32,
    /// `entry_addr`: the entry point.
    pub entry_addr: u32,
}

/// A multiboot header found in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its offset in the file.
    pub offset: usize,
    /// The `flags` field.
    pub flags: u32,
    /// The address fields, when flag bit 16 says they are valid.
    pub aout: Option<AoutKludge>,
}

/// Finds the multiboot header in the first [`HEADER_SEARCH_LEN`] bytes of `image`.
///
/// `Ok(None)`: no magic at all. The first magic whose checksum is right wins, as in QEMU.
///
/// # Errors
/// [`Error::MultibootChecksum`] if magics were found but none has a valid checksum;
/// [`Error::MultibootHeader`] if flag bit 16 is set and the image ends inside the address
/// fields.
pub fn find_header(image: &[u8]) -> Result<Option<Header>> {
    let mut bad = None;
    for offset in (0..SEARCH_END).step_by(4) {
        let Some(magic) = u32_at(image, offset) else {
            break;
        };
        if magic != HEADER_MAGIC {
            continue;
        }
        let (Some(flags), Some(checksum)) = (u32_at(image, offset + 4), u32_at(image, offset + 8))
        else {
            break;
        };
        if magic.wrapping_add(flags).wrapping_add(checksum) != 0 {
            bad.get_or_insert((offset, flags, checksum));
            continue;
        }
        let aout = if flags & FLAG_AOUT_KLUDGE != 0 {
            let field = |index: usize, name: &'static str| {
                u32_at(image, offset + 12 + 4 * index).ok_or_else(|| Error::MultibootHeader {
                    field: name,
                    reason: format!(
                        "the a.out-kludge fields (flag bit 16) need bytes up to {:#x}, the image \
                         has {:#x}",
                        offset + 12 + 4 * (index + 1),
                        image.len()
                    ),
                })
            };
            Some(AoutKludge {
                header_addr: field(0, "header_addr")?,
                load_addr: field(1, "load_addr")?,
                load_end_addr: field(2, "load_end_addr")?,
                bss_end_addr: field(3, "bss_end_addr")?,
                entry_addr: field(4, "entry_addr")?,
            })
        } else {
            None
        };
        return Ok(Some(Header {
            offset,
            flags,
            aout,
        }));
    }
    match bad {
        None => Ok(None),
        Some((offset, flags, checksum)) => Err(Error::MultibootChecksum {
            offset,
            flags,
            checksum,
            expected: 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
        }),
    }
}

/// How the image's bytes were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// An ELF32 i386 executable: its `PT_LOAD` segments.
    Elf32,
    /// The a.out kludge: one block described by the header's address fields.
    AoutKludge,
}

/// One piece of the kernel in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical start.
    pub addr: u64,
    /// Where its bytes start in the file.
    pub file_offset: usize,
    /// How many bytes come from the file.
    pub file_len: usize,
    /// Bytes in memory (the part past `file_len` is zero).
    pub mem_len: u64,
}

impl Segment {
    /// One past its last byte in memory.
    pub fn end(&self) -> u64 {
        self.addr + self.mem_len
    }
}

/// A multiboot kernel image, checked: where its bytes go and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultibootKernel {
    /// The header.
    pub header: Header,
    /// ELF32 or a.out kludge.
    pub format: ImageFormat,
    /// The 32-bit entry point.
    pub entry: u32,
    /// The loaded pieces (non-empty, each below 4 GiB).
    pub segments: Vec<Segment>,
}

/// A region of the guest's memory map (e820 style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Start.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// e820 type (1: usable RAM).
    pub kind: u32,
}

impl MemoryRegion {
    fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }
}

/// A module handed to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module<'a> {
    /// Its command line: as QEMU passes it, the whole `-initrd` item ("path args").
    pub cmdline: &'a str,
    /// Its bytes.
    pub data: &'a [u8],
}

/// What [`MultibootKernel::plan`] needs besides the kernel.
#[derive(Debug, Clone, Copy)]
pub struct PlanConfig<'a> {
    /// The kernel command line as given to the kernel (QEMU: "KERNEL-PATH APPEND").
    pub cmdline: &'a str,
    /// The modules, in order.
    pub modules: &'a [Module<'a>],
    /// The guest's memory map; the image and everything placed must lie in type-1 regions.
    pub memory_map: &'a [MemoryRegion],
    /// Guest ranges `(start, end)` the VMM keeps for itself (boot GDT, stack, ...): the
    /// image must not overlap them.
    pub reserved: &'a [(u64, u64)],
}

/// The values of the multiboot information, as written at [`INFO_ADDR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Info {
    /// `flags` ([`INFO_FLAGS`]).
    pub flags: u32,
    /// `mem_lower`: KiB of RAM from 0 (at most 640).
    pub mem_lower: u32,
    /// `mem_upper`: KiB of RAM contiguous from 1 MiB.
    pub mem_upper: u32,
    /// `boot_device`.
    pub boot_device: u32,
    /// `cmdline`: address of the kernel command line.
    pub cmdline: u32,
    /// `mods_count`.
    pub mods_count: u32,
    /// `mods_addr`: address of the module list.
    pub mods_addr: u32,
    /// `mmap_length`: bytes of the memory map.
    pub mmap_length: u32,
    /// `mmap_addr`.
    pub mmap_addr: u32,
    /// `boot_loader_name`: address of [`BOOT_LOADER_NAME`].
    pub boot_loader_name: u32,
}

impl Info {
    /// The 88-byte structure.
    pub fn to_bytes(&self) -> [u8; INFO_SIZE] {
        let mut bytes = [0u8; INFO_SIZE];
        for (offset, value) in [
            (0, self.flags),
            (4, self.mem_lower),
            (8, self.mem_upper),
            (12, self.boot_device),
            (16, self.cmdline),
            (20, self.mods_count),
            (24, self.mods_addr),
            (44, self.mmap_length),
            (48, self.mmap_addr),
            (64, self.boot_loader_name),
        ] {
            bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }
}

/// Where one module went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedModule {
    /// `mod_start`.
    pub start: u32,
    /// `mod_end` (one past the last byte).
    pub end: u32,
    /// Address of its command line.
    pub cmdline: u32,
}

/// What a loader writes to guest memory, and how the kernel starts (see
/// [`MultibootKernel::plan`] and [`write`](Self::write)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// The 32-bit entry point (EIP).
    pub entry: u32,
    /// Address of the information (EBX).
    pub info_addr: u32,
    /// The information.
    pub info: Info,
    /// The modules, in order.
    pub modules: Vec<PlacedModule>,
    /// The lowest and one-past-highest addresses of the kernel image.
    pub image_span: (u64, u64),
    /// The initial stack pointer: the top of a page after the modules.
    pub stack_top: u32,
    /// The page after everything placed (kernel, strings, modules, stack).
    pub end: u64,
    segments: Vec<Segment>,
    /// Address and bytes of the memory map.
    memory_map: (u64, Vec<u8>),
    /// Address and bytes of the module list, command lines and boot loader name.
    strings: (u64, Vec<u8>),
}

/// Zeros are written in pieces of this size, not allocated whole.
const ZERO_CHUNK: usize = 64 * 1024;

impl LoadPlan {
    /// Writes everything with `write(what, addr, bytes)`: the kernel segments (their bss
    /// zeroed), the memory map, the module list and strings, the modules and the
    /// information. `image` and `modules` must be those the plan was made from.
    ///
    /// # Errors
    /// The first error `write` returns.
    pub fn write<E>(
        &self,
        image: &[u8],
        modules: &[Module<'_>],
        mut write: impl FnMut(&'static str, u64, &[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let zeros = vec![0u8; ZERO_CHUNK];
        for segment in &self.segments {
            let bytes = image
                .get(segment.file_offset..segment.file_offset + segment.file_len)
                .unwrap_or_default();
            write("multiboot kernel segment", segment.addr, bytes)?;
            let mut addr = segment.addr + bytes.len() as u64;
            while addr < segment.end() {
                let len = (segment.end() - addr).min(ZERO_CHUNK as u64);
                write("multiboot kernel bss", addr, &zeros[..len as usize])?;
                addr += len;
            }
        }
        write("multiboot module list", self.strings.0, &self.strings.1)?;
        write(
            "multiboot memory map",
            self.memory_map.0,
            &self.memory_map.1,
        )?;
        for (placed, module) in self.modules.iter().zip(modules) {
            write("multiboot module", u64::from(placed.start), module.data)?;
        }
        write(
            "multiboot information",
            u64::from(self.info_addr),
            &self.info.to_bytes(),
        )
    }
}

impl MultibootKernel {
    /// Reads a multiboot kernel: `Ok(None)` if `image` has no multiboot header.
    ///
    /// # Errors
    /// A header with a bad checksum, a.out-kludge fields that contradict each other or the
    /// file, or (without them) an ELF that is not a loadable ELF32 i386 executable.
    pub fn parse(image: &[u8]) -> Result<Option<Self>> {
        let Some(header) = find_header(image)? else {
            return Ok(None);
        };
        let kernel = match header.aout {
            Some(aout) => Self::parse_aout(image, header, aout)?,
            None => Self::parse_elf(image, header)?,
        };
        Ok(Some(kernel))
    }

    fn parse_aout(image: &[u8], header: Header, aout: AoutKludge) -> Result<Self> {
        let field_error =
            |field: &'static str, reason: String| Error::MultibootHeader { field, reason };
        let load = u64::from(aout.load_addr);
        let header_addr = u64::from(aout.header_addr);
        if header_addr < load {
            return Err(field_error(
                "load_addr",
                format!(
                    "load_addr {load:#x} is above header_addr {header_addr:#x}: the header \
                     would lie before the loaded text"
                ),
            ));
        }
        let header_offset = header.offset as u64;
        if header_addr - load > header_offset {
            return Err(field_error(
                "header_addr",
                format!(
                    "header_addr {header_addr:#x} - load_addr {load:#x} = {:#x} is beyond the \
                     header's file offset {header_offset:#x}: the text would start before the \
                     file",
                    header_addr - load
                ),
            ));
        }
        let text_offset = header_offset - (header_addr - load);
        let file_len = image.len() as u64;
        let load_size = if aout.load_end_addr != 0 {
            let end = u64::from(aout.load_end_addr);
            if end < load {
                return Err(field_error(
                    "load_end_addr",
                    format!("load_end_addr {end:#x} is below load_addr {load:#x}"),
                ));
            }
            end - load
        } else {
            file_len - text_offset
        };
        if text_offset + load_size > file_len {
            return Err(field_error(
                "load_end_addr",
                format!(
                    "load_end_addr {:#x} asks for {load_size:#x} bytes of text from file offset \
                     {text_offset:#x}, past the end of the {file_len:#x}-byte file",
                    aout.load_end_addr
                ),
            ));
        }
        if load + load_size > FOUR_GIB {
            return Err(field_error(
                "load_end_addr",
                format!(
                    "{load_size:#x} bytes at load_addr {load:#x} do not fit below 4 GiB (the \
                     kernel does not fit in the 32-bit address space)"
                ),
            ));
        }
        let mem_len = if aout.bss_end_addr != 0 {
            let bss_end = u64::from(aout.bss_end_addr);
            if bss_end < load + load_size {
                return Err(field_error(
                    "bss_end_addr",
                    format!(
                        "bss_end_addr {bss_end:#x} is below the end of the loaded text {:#x}",
                        load + load_size
                    ),
                ));
            }
            bss_end - load
        } else {
            load_size
        };
        if mem_len == 0 {
            return Err(field_error(
                "load_end_addr",
                "the a.out-kludge fields describe an empty kernel".into(),
            ));
        }
        // Bounded by the file length (checked above).
        let file_len = usize::try_from(load_size).unwrap_or(usize::MAX);
        Ok(Self {
            header,
            format: ImageFormat::AoutKludge,
            entry: aout.entry_addr,
            segments: vec![Segment {
                addr: load,
                file_offset: usize::try_from(text_offset).unwrap_or(usize::MAX),
                file_len,
                mem_len,
            }],
        })
    }

    fn parse_elf(image: &[u8], header: Header) -> Result<Self> {
        let bad = |reason: String| Error::MultibootElf { reason };
        if !image.starts_with(b"\x7fELF") {
            return Err(bad(format!(
                "the multiboot header (at offset {:#x}) has no a.out-kludge fields (flag bit 16 \
                 clear), so the image must be an ELF file, and it does not start with \\x7fELF",
                header.offset
            )));
        }
        if image.get(4) == Some(&2) || u16_at(image, 18) == Some(EM_X86_64) {
            return Err(bad(
                "the image is a 64-bit ELF (ELFCLASS64 / x86-64): a multiboot kernel without \
                 a.out-kludge fields must be a 32-bit ELF"
                    .into(),
            ));
        }
        if image.get(4) != Some(&1) {
            return Err(bad(format!(
                "EI_CLASS is {:?}, expected 1 (ELFCLASS32)",
                image.get(4)
            )));
        }
        if image.get(5) != Some(&1) {
            return Err(bad("EI_DATA is not 1 (little-endian)".into()));
        }
        if image.len() < ELF32_EHDR_SIZE {
            return Err(bad(format!(
                "truncated ELF file: {} bytes, shorter than the 52-byte ELF32 header",
                image.len()
            )));
        }
        let machine = u16_at(image, 18).unwrap_or(0);
        if machine != EM_386 {
            return Err(bad(format!("e_machine is {machine}, expected 3 (EM_386)")));
        }
        let entry = u32_at(image, 24).unwrap_or(0);
        let phoff = u32_at(image, 28).unwrap_or(0) as usize;
        let phentsize = usize::from(u16_at(image, 42).unwrap_or(0));
        let phnum = usize::from(u16_at(image, 44).unwrap_or(0));
        if phentsize != ELF32_PHDR_SIZE {
            return Err(bad(format!(
                "e_phentsize is {phentsize}, expected {ELF32_PHDR_SIZE}"
            )));
        }
        let table_end = phoff.checked_add(phnum * ELF32_PHDR_SIZE);
        if table_end.is_none_or(|end| end > image.len()) {
            return Err(bad(format!(
                "{phnum} program headers at e_phoff {phoff:#x} do not lie within the \
                 {:#x}-byte file",
                image.len()
            )));
        }
        let mut segments = Vec::new();
        for index in 0..phnum {
            let base = phoff + index * ELF32_PHDR_SIZE;
            let word = |at: usize| u32_at(image, base + at).unwrap_or(0);
            if word(0) != PT_LOAD {
                continue;
            }
            let (offset, paddr, filesz, memsz) = (word(4), word(12), word(16), word(20));
            if filesz > memsz {
                return Err(bad(format!(
                    "segment {index}: p_filesz {filesz:#x} is above p_memsz {memsz:#x}"
                )));
            }
            if u64::from(offset) + u64::from(filesz) > image.len() as u64 {
                return Err(bad(format!(
                    "segment {index}: p_offset {offset:#x} + p_filesz {filesz:#x} is past the \
                     end of the {:#x}-byte file",
                    image.len()
                )));
            }
            if u64::from(paddr) + u64::from(memsz) > FOUR_GIB {
                return Err(bad(format!(
                    "segment {index}: p_paddr {paddr:#x} + p_memsz {memsz:#x} is beyond 4 GiB"
                )));
            }
            if memsz == 0 {
                continue;
            }
            segments.push(Segment {
                addr: u64::from(paddr),
                file_offset: offset as usize,
                file_len: filesz as usize,
                mem_len: u64::from(memsz),
            });
        }
        if segments.is_empty() {
            return Err(bad("no loadable (PT_LOAD) segment with bytes".into()));
        }
        Ok(Self {
            header,
            format: ImageFormat::Elf32,
            entry,
            segments,
        })
    }

    /// The lowest and one-past-highest guest addresses of the image.
    pub fn span(&self) -> (u64, u64) {
        let start = self.segments.iter().map(|s| s.addr).min().unwrap_or(0);
        let end = self.segments.iter().map(Segment::end).max().unwrap_or(0);
        (start, end)
    }

    /// Checks the image against `config`'s memory map and decides where everything goes.
    ///
    /// # Errors
    /// [`Error::MultibootPlacement`] naming the segment or module and the limit: a segment
    /// outside usable RAM (beyond the end of RAM, over the BIOS area, in a hole),
    /// overlapping another segment, the memory map or information area or a `reserved`
    /// range; modules or strings that do not fit in RAM after the image; a memory map with
    /// more than [`MMAP_MAX_ENTRIES`] entries.
    pub fn plan(&self, config: &PlanConfig<'_>) -> Result<LoadPlan> {
        let usable: Vec<&MemoryRegion> = config
            .memory_map
            .iter()
            .filter(|r| r.kind == MEMORY_AVAILABLE && r.size > 0)
            .collect();
        self.check_segments(config, &usable)?;
        // QEMU's buffer: the image, then (page-aligned) module list, command lines and the
        // boot loader name, then each module on its own page boundary.
        let (image_start, image_end) = self.span();
        let strings_addr = image_end.next_multiple_of(PAGE);
        let region_end = usable
            .iter()
            .find(|r| r.addr <= strings_addr && strings_addr < r.end())
            .map_or(strings_addr, |r| r.end())
            .min(FOUR_GIB);
        let fits = |what: String, start: u64, len: u64| -> Result<()> {
            match start.checked_add(len) {
                Some(end) if end <= region_end => Ok(()),
                _ => Err(Error::MultibootPlacement {
                    what: format!("{what} ({len:#x} bytes at {start:#x})"),
                    reason: format!(
                        "does not fit after the kernel image: the RAM region ends at \
                         {region_end:#x} ({} MiB); give more -m",
                        region_end >> 20
                    ),
                }),
            }
        };
        let mut strings = vec![0u8; config.modules.len() * MODULE_ENTRY_SIZE as usize];
        let add_string = |strings: &mut Vec<u8>, text: &str| -> u64 {
            let at = strings_addr + strings.len() as u64;
            strings.extend_from_slice(text.as_bytes());
            strings.push(0);
            at
        };
        let module_cmdlines: Vec<u64> = config
            .modules
            .iter()
            .map(|m| add_string(&mut strings, m.cmdline))
            .collect();
        let cmdline_addr = add_string(&mut strings, config.cmdline);
        let name_addr = add_string(&mut strings, BOOT_LOADER_NAME);
        // QEMU's fixed 0x9000 area, unless the image is there (realmode.flat loads at
        // 0x8000): then the information and memory map follow the strings.
        let low_area = (MMAP_ADDR, INFO_ADDR + INFO_SIZE as u64);
        let low_area_free = self
            .segments
            .iter()
            .all(|s| s.end() <= low_area.0 || low_area.1 <= s.addr);
        let mmap_len = config.memory_map.len() * MMAP_ENTRY_SIZE;
        let (info_addr, mmap_addr) = if low_area_free {
            (INFO_ADDR, MMAP_ADDR)
        } else {
            strings.resize(strings.len().next_multiple_of(8), 0);
            let info_addr = strings_addr + strings.len() as u64;
            strings.resize(strings.len() + INFO_SIZE + mmap_len, 0);
            (info_addr, info_addr + INFO_SIZE as u64)
        };
        fits(
            "the module list and command lines".into(),
            strings_addr,
            strings.len() as u64,
        )?;
        if config.memory_map.len() > MMAP_MAX_ENTRIES && low_area_free {
            return Err(Error::MultibootPlacement {
                what: format!("the memory map ({} entries)", config.memory_map.len()),
                reason: format!(
                    "more than the {MMAP_MAX_ENTRIES} entries that fit between {MMAP_ADDR:#x} and \
                     {INFO_ADDR:#x}"
                ),
            });
        }

        let mut next = (strings_addr + strings.len() as u64).next_multiple_of(PAGE);
        let mut modules = Vec::with_capacity(config.modules.len());
        for (index, (module, cmdline)) in config.modules.iter().zip(&module_cmdlines).enumerate() {
            let len = module.data.len() as u64;
            fits(format!("module {index} '{}'", module.cmdline), next, len)?;
            let placed = PlacedModule {
                start: next as u32,
                end: (next + len) as u32,
                cmdline: *cmdline as u32,
            };
            let entry = index * MODULE_ENTRY_SIZE as usize;
            strings[entry..entry + 4].copy_from_slice(&placed.start.to_le_bytes());
            strings[entry + 4..entry + 8].copy_from_slice(&placed.end.to_le_bytes());
            strings[entry + 8..entry + 12].copy_from_slice(&placed.cmdline.to_le_bytes());
            modules.push(placed);
            next = (next + len).next_multiple_of(PAGE);
        }
        // The boot stack: one page after everything (multiboot leaves ESP undefined).
        fits("the boot stack".into(), next, PAGE)?;
        let stack_top = next + PAGE;

        let memory_map = encode_memory_map(config.memory_map);
        let (mem_lower, mem_upper) = lower_and_upper_memory(&usable);
        let info = Info {
            flags: INFO_FLAGS,
            mem_lower,
            mem_upper,
            boot_device: BOOT_DEVICE,
            cmdline: cmdline_addr as u32,
            mods_count: modules.len() as u32,
            mods_addr: strings_addr as u32,
            mmap_length: memory_map.len() as u32,
            mmap_addr: mmap_addr as u32,
            boot_loader_name: name_addr as u32,
        };
        Ok(LoadPlan {
            entry: self.entry,
            info_addr: info_addr as u32,
            info,
            modules,
            image_span: (image_start, image_end),
            stack_top: stack_top as u32,
            end: stack_top,
            segments: self.segments.clone(),
            memory_map: (mmap_addr, memory_map),
            strings: (strings_addr, strings),
        })
    }

    /// Each segment inside one usable RAM region, clear of the other segments and of what
    /// the VMM keeps for the boot; the error names the segment and what it hit.
    fn check_segments(&self, config: &PlanConfig<'_>, usable: &[&MemoryRegion]) -> Result<()> {
        let ram_top = usable.iter().map(|r| r.end()).max().unwrap_or(0);
        let in_ram = |start: u64, end: u64| {
            usable
                .iter()
                .any(|region| region.addr <= start && end <= region.end())
        };
        for (index, segment) in self.segments.iter().enumerate() {
            let (start, end) = (segment.addr, segment.end());
            let what = format!(
                "{} [{start:#x}, {end:#x})",
                match self.format {
                    ImageFormat::Elf32 => format!("ELF segment {index}"),
                    ImageFormat::AoutKludge => "the a.out-kludge image".to_string(),
                }
            );
            if !in_ram(start, end) {
                let reason = match config
                    .memory_map
                    .iter()
                    .find(|r| r.kind != MEMORY_AVAILABLE && r.addr < end && start < r.end())
                {
                    Some(r) => format!(
                        "overlaps the reserved area [{:#x}, {:#x}) (e820 type {}){}",
                        r.addr,
                        r.end(),
                        r.kind,
                        if r.addr >= 0xa_0000 && r.end() <= ONE_MIB {
                            ": the BIOS area"
                        } else {
                            ""
                        }
                    ),
                    None if end > ram_top => format!(
                        "is beyond guest RAM, which ends at {ram_top:#x} ({} MiB): give more -m",
                        ram_top >> 20
                    ),
                    None => "is not inside one usable RAM region of the memory map".to_string(),
                };
                return Err(Error::MultibootPlacement { what, reason });
            }
            for (other_index, other) in self.segments.iter().enumerate().take(index) {
                if other.addr < end && start < other.end() {
                    return Err(Error::MultibootPlacement {
                        what,
                        reason: format!(
                            "overlaps ELF segment {other_index} [{:#x}, {:#x})",
                            other.addr,
                            other.end()
                        ),
                    });
                }
            }
            for &(a, b) in config.reserved {
                if a < end && start < b {
                    return Err(Error::MultibootPlacement {
                        what,
                        reason: format!(
                            "overlaps [{a:#x}, {b:#x}), which the VMM keeps for the boot (GDT)"
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The memory map in multiboot's layout: 24-byte entries, each with its size field (20).
fn encode_memory_map(map: &[MemoryRegion]) -> Vec<u8> {
    let mut memory_map = Vec::with_capacity(map.len() * MMAP_ENTRY_SIZE);
    for region in map {
        memory_map.extend_from_slice(&20u32.to_le_bytes());
        memory_map.extend_from_slice(&region.addr.to_le_bytes());
        memory_map.extend_from_slice(&region.size.to_le_bytes());
        memory_map.extend_from_slice(&region.kind.to_le_bytes());
    }
    memory_map
}

/// `mem_lower` as int 0x12 reports it and `mem_upper` as QEMU's multiboot.bin derives it
/// (RAM contiguous from 1 MiB through the usable regions, in any order), both in KiB.
fn lower_and_upper_memory(usable: &[&MemoryRegion]) -> (u32, u32) {
    let mem_lower = usable
        .iter()
        .find(|r| r.addr == 0)
        .map_or(0, |r| r.size.min(640 << 10) >> 10);
    let mut upper = ONE_MIB;
    while let Some(region) = usable
        .iter()
        .find(|r| r.addr <= upper && upper < r.end() && r.addr < FOUR_GIB)
    {
        upper = region.end().min(FOUR_GIB);
        if upper == FOUR_GIB {
            break;
        }
    }
    (mem_lower as u32, ((upper - ONE_MIB) >> 10) as u32)
}

/// Splits QEMU's `-initrd` text for a multiboot kernel into module items: items are
/// separated by `,`, and `,,` stands for a literal comma (QEMU's `get_opt_value`). Each item
/// is "path" or "path args": the module's command line is the whole item, its file the part
/// before the first space.
pub fn split_modules(initrd: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = initrd.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                current.push(',');
            } else {
                items.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    if !initrd.is_empty() {
        items.push(current);
    }
    items
}

/// The file of a module item: the part before the first space.
pub fn module_path(item: &str) -> &str {
    item.split(' ').next().unwrap_or(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_words(flags: u32, extra: &[u32]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
        ]
        .iter()
        .chain(extra)
        {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    /// An ELF32 with one PT_LOAD of `code` at `paddr` (memsz `memsz`) and a multiboot header
    /// (flags 0) in the segment.
    fn elf32(paddr: u32, code: &[u8], memsz: u32) -> Vec<u8> {
        let mut image = vec![0u8; 0x54];
        image[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
        image[16..18].copy_from_slice(&2u16.to_le_bytes());
        image[18..20].copy_from_slice(&EM_386.to_le_bytes());
        image[24..28].copy_from_slice(&(paddr + 12).to_le_bytes());
        image[28..32].copy_from_slice(&52u32.to_le_bytes());
        image[40..42].copy_from_slice(&52u16.to_le_bytes());
        image[42..44].copy_from_slice(&32u16.to_le_bytes());
        image[44..46].copy_from_slice(&1u16.to_le_bytes());
        let mut payload = header_words(0, &[]);
        payload.extend_from_slice(code);
        let ph = 52;
        image[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        image[ph + 4..ph + 8].copy_from_slice(&0x54u32.to_le_bytes());
        image[ph + 8..ph + 12].copy_from_slice(&paddr.to_le_bytes());
        image[ph + 12..ph + 16].copy_from_slice(&paddr.to_le_bytes());
        image[ph + 16..ph + 20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image[ph + 20..ph + 24].copy_from_slice(&memsz.max(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(&payload);
        image
    }

    fn pc_map(ram: u64) -> Vec<MemoryRegion> {
        vec![
            MemoryRegion {
                addr: 0,
                size: 0x9_fc00,
                kind: 1,
            },
            MemoryRegion {
                addr: 0x9_fc00,
                size: 0x400,
                kind: 2,
            },
            MemoryRegion {
                addr: 0xf_0000,
                size: 0x1_0000,
                kind: 2,
            },
            MemoryRegion {
                addr: ONE_MIB,
                size: ram - ONE_MIB,
                kind: 1,
            },
        ]
    }

    fn config<'a>(map: &'a [MemoryRegion], modules: &'a [Module<'a>]) -> PlanConfig<'a> {
        PlanConfig {
            cmdline: "k.elf arg",
            modules,
            memory_map: map,
            reserved: &[(0x500, 0x600)],
        }
    }

    #[test]
    fn no_magic_is_no_header() {
        assert_eq!(find_header(&[0u8; 9000]).unwrap(), None);
        assert_eq!(MultibootKernel::parse(b"short").unwrap(), None);
    }

    #[test]
    fn header_found_at_an_aligned_offset_and_only_in_the_first_8_kib() {
        let mut image = vec![0u8; 0x100];
        image.extend_from_slice(&header_words(0, &[]));
        assert_eq!(find_header(&image).unwrap().unwrap().offset, 0x100);
        let mut misaligned = vec![0u8; 0x102];
        misaligned.extend_from_slice(&header_words(0, &[]));
        assert_eq!(find_header(&misaligned).unwrap(), None);
        let mut late = vec![0u8; SEARCH_END];
        late.extend_from_slice(&header_words(0, &[]));
        assert_eq!(find_header(&late).unwrap(), None);
    }

    #[test]
    fn bad_checksum_is_an_error_naming_the_field() {
        let mut image = header_words(0, &[]);
        image[8] ^= 1;
        let err = find_header(&image).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("checksum"), "{text}");
        assert!(text.contains("offset 0x0"), "{text}");
        // A valid header after a bad one wins.
        image.extend_from_slice(&header_words(0, &[]));
        assert_eq!(find_header(&image).unwrap().unwrap().offset, 12);
    }

    #[test]
    fn elf32_segments_and_entry() {
        let image = elf32(0x40_0000, &[0xf4], 0x2000);
        let kernel = MultibootKernel::parse(&image).unwrap().unwrap();
        assert_eq!(kernel.format, ImageFormat::Elf32);
        assert_eq!(kernel.entry, 0x40_000c);
        assert_eq!(kernel.segments.len(), 1);
        assert_eq!(kernel.segments[0].addr, 0x40_0000);
        assert_eq!(kernel.segments[0].mem_len, 0x2000);
        assert_eq!(kernel.span(), (0x40_0000, 0x40_2000));
    }

    #[test]
    fn elf64_with_a_header_is_refused() {
        let mut image = elf32(0x40_0000, &[0xf4], 0);
        image[4] = 2;
        let err = MultibootKernel::parse(&image).unwrap_err().to_string();
        assert!(err.contains("64-bit"), "{err}");
    }

    #[test]
    fn aout_kludge_fields() {
        let mut image = header_words(
            FLAG_AOUT_KLUDGE,
            &[0x10_0010, 0x10_0000, 0x10_0040, 0x10_2000, 0x10_0020],
        );
        image.splice(0..0, [0u8; 16]); // header at offset 16 = header_addr - load_addr
        image.resize(0x40, 0x90);
        let kernel = MultibootKernel::parse(&image).unwrap().unwrap();
        assert_eq!(kernel.format, ImageFormat::AoutKludge);
        assert_eq!(kernel.entry, 0x10_0020);
        assert_eq!(
            kernel.segments,
            vec![Segment {
                addr: 0x10_0000,
                file_offset: 0,
                file_len: 0x40,
                mem_len: 0x2000
            }]
        );
    }

    #[test]
    fn aout_kludge_field_errors_name_the_field() {
        let cases: [(&[u32], &str); 5] = [
            (&[0x10_0000, 0x10_1000, 0, 0, 0], "load_addr"),
            (&[0x10_1000, 0x10_0000, 0, 0, 0], "header_addr"),
            (&[0x10_0000, 0x10_0000, 0xf_0000, 0, 0], "load_end_addr"),
            (&[0x10_0000, 0x10_0000, 0x10_1000, 0, 0], "load_end_addr"),
            (
                &[0x10_0000, 0x10_0000, 0x10_0020, 0x10_0010, 0],
                "bss_end_addr",
            ),
        ];
        for (fields, field) in cases {
            let mut image = header_words(FLAG_AOUT_KLUDGE, fields);
            image.resize(0x40, 0);
            let err = MultibootKernel::parse(&image).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let image = header_words(FLAG_AOUT_KLUDGE, &[0x10_0000]);
        let err = MultibootKernel::parse(&image).unwrap_err().to_string();
        assert!(err.contains("load_addr"), "{err}");
    }

    #[test]
    fn plan_places_info_strings_and_modules_after_the_image() {
        let image = elf32(0x40_0000, &[0xf4], 0x1800);
        let kernel = MultibootKernel::parse(&image).unwrap().unwrap();
        let map = pc_map(64 << 20);
        let modules = [
            Module {
                cmdline: "a.txt x=1",
                data: b"hello",
            },
            Module {
                cmdline: "b",
                data: &[7u8; 5000],
            },
        ];
        let plan = kernel.plan(&config(&map, &modules)).unwrap();
        assert_eq!(plan.entry, 0x40_000c);
        assert_eq!(plan.info_addr, 0x9500);
        assert_eq!(plan.info.flags, 0x24f);
        assert_eq!(plan.info.mem_lower, 639);
        assert_eq!(plan.info.mem_upper, 63 * 1024);
        assert_eq!(plan.info.mods_count, 2);
        assert_eq!(plan.info.mods_addr, 0x40_2000);
        assert_eq!(plan.info.mmap_length, 4 * 24);
        assert_eq!(plan.modules[0].start, 0x40_3000);
        assert_eq!(plan.modules[0].end, 0x40_3005);
        assert_eq!(plan.modules[1].start, 0x40_4000);
        assert_eq!(plan.modules[1].end, 0x40_4000 + 5000);
        assert_eq!(plan.stack_top, 0x40_7000);
        assert_eq!(plan.end, 0x40_7000);

        // Write into a flat buffer and read it back as a guest would.
        let mut ram = vec![0xaau8; 8 << 20];
        plan.write(&image, &modules, |_, addr, bytes| {
            ram[addr as usize..addr as usize + bytes.len()].copy_from_slice(bytes);
            Ok::<(), ()>(())
        })
        .unwrap();
        let word = |addr: u32| u32_at(&ram, addr as usize).unwrap();
        let cstr = |addr: u32| {
            let start = addr as usize;
            let len = ram[start..].iter().position(|b| *b == 0).unwrap();
            String::from_utf8(ram[start..start + len].to_vec()).unwrap()
        };
        assert_eq!(word(0x9500), 0x24f);
        assert_eq!(cstr(word(0x9500 + 16)), "k.elf arg");
        assert_eq!(cstr(word(0x9500 + 64)), "vmkit");
        let mods = word(0x9500 + 24);
        assert_eq!(cstr(word(mods + 8)), "a.txt x=1");
        assert_eq!(&ram[word(mods) as usize..word(mods + 4) as usize], b"hello");
        assert_eq!(cstr(word(mods + 16 + 8)), "b");
        // bss zeroed, segment bytes copied
        assert_eq!(word(0x40_0000), HEADER_MAGIC);
        assert!(ram[0x40_0011..0x40_1800].iter().all(|b| *b == 0));
        // The memory map: size 20, then base, length, type.
        assert_eq!(word(0x9000), 20);
        assert_eq!(u32_at(&ram, 0x9000 + 3 * 24 + 4).unwrap(), ONE_MIB as u32);
        assert_eq!(word(0x9000 + 3 * 24 + 20), 1);
    }

    #[test]
    fn segment_beyond_ram_or_over_the_bios_is_refused() {
        let map = pc_map(16 << 20);
        let big = elf32(0x40_0000, &[0xf4], 0x100_0000);
        let err = MultibootKernel::parse(&big)
            .unwrap()
            .unwrap()
            .plan(&config(&map, &[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ELF segment 0") && err.contains("beyond guest RAM"),
            "{err}"
        );
        assert!(err.contains("0x1000000"), "{err}");
        let bios = elf32(0xf_0000, &[0xf4], 0x100);
        let err = MultibootKernel::parse(&bios)
            .unwrap()
            .unwrap()
            .plan(&config(&map, &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("BIOS area"), "{err}");
        let gdt = elf32(0x400, &[0xf4], 0x200);
        let err = MultibootKernel::parse(&gdt)
            .unwrap()
            .unwrap()
            .plan(&config(&map, &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("GDT") && err.contains("0x500"), "{err}");
    }

    #[test]
    fn an_image_over_the_low_info_area_gets_its_info_after_it() {
        // As kvm-unit-tests' realmode.flat: loaded at 0x8000, over QEMU's 0x9000 area.
        let image = elf32(0x8000, &[0xf4], 0x286c);
        let kernel = MultibootKernel::parse(&image).unwrap().unwrap();
        let map = pc_map(16 << 20);
        let plan = kernel.plan(&config(&map, &[])).unwrap();
        let strings = 0xb000;
        assert!(
            plan.info_addr > strings && plan.info_addr < strings + 0x100,
            "{plan:?}"
        );
        assert_eq!(plan.info_addr % 8, 0);
        assert_eq!(plan.info.mmap_addr, plan.info_addr + INFO_SIZE as u32);
        let mut ram = vec![0u8; 1 << 20];
        plan.write(&image, &[], |_, addr, bytes| {
            ram[addr as usize..addr as usize + bytes.len()].copy_from_slice(bytes);
            Ok::<(), ()>(())
        })
        .unwrap();
        let info = plan.info_addr as usize;
        assert_eq!(u32_at(&ram, info), Some(INFO_FLAGS));
        assert_eq!(u32_at(&ram, plan.info.mmap_addr as usize), Some(20));
        // The image was not overwritten.
        assert_eq!(u32_at(&ram, 0x8000), Some(HEADER_MAGIC));
        assert!(ram[0x9000..0x9558].iter().all(|b| *b == 0));
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let mut image = elf32(0x40_0000, &[0xf4], 0x2000);
        // A second program header identical to the first.
        let ph: Vec<u8> = image[52..84].to_vec();
        image.splice(84..84, ph);
        image[44] = 2;
        // The segment data moved by 32 bytes.
        for at in [52 + 4, 84 + 4] {
            image[at..at + 4].copy_from_slice(&0x74u32.to_le_bytes());
        }
        let kernel = MultibootKernel::parse(&image).unwrap().unwrap();
        let map = pc_map(64 << 20);
        let err = kernel.plan(&config(&map, &[])).unwrap_err().to_string();
        assert!(err.contains("overlaps ELF segment 0"), "{err}");
    }

    #[test]
    fn module_that_does_not_fit_names_the_module_and_the_limit() {
        let image = elf32(0x40_0000, &[0xf4], 0x10);
        let kernel = MultibootKernel::parse(&image).unwrap().unwrap();
        let map = pc_map(5 << 20);
        let data = vec![0u8; 2 << 20];
        let modules = [Module {
            cmdline: "big.img",
            data: &data,
        }];
        let err = kernel
            .plan(&config(&map, &modules))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("module 0 'big.img'") && err.contains("0x500000"),
            "{err}"
        );
    }

    #[test]
    fn initrd_items_as_qemu_splits_them() {
        assert_eq!(split_modules("a arg,b"), vec!["a arg", "b"]);
        assert_eq!(split_modules("a,,b"), vec!["a,b"]);
        assert_eq!(split_modules(""), Vec::<String>::new());
        assert_eq!(module_path("a arg x"), "a");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let map = pc_map(32 << 20);
            if let Ok(Some(kernel)) = MultibootKernel::parse(&bytes) {
                if let Ok(plan) = kernel.plan(&config(&map, &[])) {
                    plan.write(&bytes, &[], |_, _, _| Ok::<(), ()>(())).unwrap();
                }
            }
        }

        #[test]
        fn random_fields_after_a_valid_header_never_panic(
            flags in proptest::num::u32::ANY,
            words in proptest::collection::vec(proptest::num::u32::ANY, 0..16),
            elf in proptest::bool::ANY,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let mut image = if elf { elf32(0x40_0000, &[0xf4], 0) } else { Vec::new() };
            image.extend_from_slice(&header_words(flags, &words));
            image.extend_from_slice(&tail);
            let map = pc_map(32 << 20);
            let modules = [Module { cmdline: "m", data: &tail }];
            if let Ok(Some(kernel)) = MultibootKernel::parse(&image) {
                if let Ok(plan) = kernel.plan(&config(&map, &modules)) {
                    proptest::prop_assert!(plan.end <= 32 << 20);
                    let mut writes = 0;
                    plan.write(&image, &modules, |_, addr, bytes| {
                        assert!(addr + bytes.len() as u64 <= 32 << 20);
                        writes += 1;
                        Ok::<(), ()>(())
                    }).unwrap();
                    proptest::prop_assert!(writes >= 4);
                }
            }
        }
    }
}
