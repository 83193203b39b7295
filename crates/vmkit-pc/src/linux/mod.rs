//! Linux boot: `-kernel`, `-initrd` and `-append` as the x86 boot protocol
//! (Documentation/arch/x86/boot.rst) and the PVH boot ABI describe them, with linux-loader
//! copying the kernel.
//!
//! [`LinuxBoot`] holds a kernel image (a bzImage, or an ELF `vmlinux`), an optional initrd and
//! the command line, checked when it is created. [`LinuxBoot::plan`] decides where everything
//! goes for a [`MemoryLayout`] and refuses what does not fit; [`load_linux`] writes it all to
//! guest memory and returns a [`LoadedLinux`], whose [`regs`](LoadedLinux::regs) and
//! [`sregs`](LoadedLinux::sregs) are the boot vCPU's entry state ([`set_linux_entry`] applies
//! them). Nothing here needs KVM except `set_linux_entry`.
//!
//! # How each kind of kernel starts
//!
//! | kernel | entry | CPU mode | boot info |
//! |---|---|---|---|
//! | bzImage with `XLF_KERNEL_64` (protocol 2.12+) | load address + 0x200 (`startup_64`) | 64-bit, identity-mapped first 4 GiB | RSI = zero page |
//! | older bzImage (2.06-2.11) | load address (`startup_32`) | flat 32-bit, paging off | ESI = zero page |
//! | bzImage, [`KernelDecompress::Host`] | the extracted vmlinux's `e_entry` (`startup_64`) | 64-bit | RSI = zero page, setup header from the bzImage |
//! | ELF vmlinux with a PVH note | the note's 32-bit entry | flat 32-bit, paging off | EBX = `hvm_start_info` |
//! | ELF vmlinux without one | `e_entry` (`startup_64`) | 64-bit | RSI = zero page without a kernel setup header |
//! | multiboot kernel (not a bzImage, not a 64-bit ELF, with a multiboot header) | ELF32 `e_entry` or the header's `entry_addr` | flat 32-bit, paging off, reached from a real-mode stub at 0x600 that first sets up the 8259A pair and PIT as SeaBIOS leaves them | EAX = 0x2BADB002, EBX = multiboot information (0x9500), ESP = a page after the modules |
//!
//! Interrupts are off (RFLAGS = 2), segments flat with Linux's `__BOOT_CS` (0x10) and
//! `__BOOT_DS` (0x18), RSP = [`BOOT_STACK_TOP`]. An ELF vmlinux with a PVH note boots through
//! PVH, as Firecracker and Cloud Hypervisor do; a bzImage decompressed on the host boots
//! through the 64-bit entry even when its vmlinux has a PVH note, so that it gets the same zero
//! page (with the bzImage's own setup header) as the guest-decompressed kernel.
//!
//! # Where things go
//!
//! | guest-physical | what |
//! |---|---|
//! | `0x500..0x5e8` | boot GDT, IDT and TSS ([`crate::boot`]) |
//! | `0x6000..0x7000` | PVH `hvm_start_info` ([`PVH_START_INFO_ADDR`]), module list, memory map |
//! | `0x7000..0x8000` | zero page, `struct boot_params` ([`ZERO_PAGE_ADDR`]) |
//! | `0x8000..0x8ff0` | boot stack (RSP = [`BOOT_STACK_TOP`]) |
//! | `0x9000..0xf000` | identity page tables (64-bit entries) |
//! | `0x20000..0x30000` | command line ([`CMDLINE_ADDR`], NUL-terminated) |
//! | load address | the bzImage's protected-mode part (its `pref_address`, aligned to `kernel_alignment`: 16 MiB for current kernels), or the vmlinux segments at their `p_paddr` |
//! | top of RAM below min(`initrd_addr_max`, 3 GiB) | the initrd, page-aligned, above the kernel's `init_size` |
//!
//! The zero page's e820 table, like PVH's memory map, is [`MemoryLayout::e820`].
//!
//! A multiboot kernel is laid out as QEMU's loader does ([`vmkit_kernel::multiboot`]): its
//! segments where it asks (inside usable RAM, off the boot GDT and stack), the memory map at
//! 0x9000, the information at 0x9500, then after the image the module list, the command lines
//! (the kernel's is "KERNEL-PATH APPEND", as QEMU passes it), the boot loader name "vmkit" and
//! the `-initrd` modules ("file args,file2": each module's command line is its whole item).
//!
//! # Example
//!
//! A synthetic ELF "kernel" (one segment at 16 MiB, no PVH note) loaded into a 64 MiB layout:
//!
//! ```
//! use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};
//! use vmkit_memory::AddressSpace;
//! use vmkit_pc::linux::{load_linux, KernelDecompress, LinuxBoot, LinuxEntry, ZERO_PAGE_ADDR};
//! use vmkit_pc::{build_memory, E820Map};
//!
//! // An ELF64 x86-64 header and one PT_LOAD program header for 4 bytes at 0x1000000.
//! let mut elf = vec![0u8; 0x80];
//! elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
//! elf[18] = 62; // EM_X86_64
//! elf[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
//! elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
//! elf[52] = 64; // e_ehsize
//! elf[54] = 56; // e_phentsize
//! elf[56] = 1; // e_phnum
//! elf[64] = 1; // PT_LOAD
//! elf[72..80].copy_from_slice(&0x78u64.to_le_bytes()); // p_offset
//! elf[88..96].copy_from_slice(&0x100_0000u64.to_le_bytes()); // p_paddr
//! elf[96..104].copy_from_slice(&4u64.to_le_bytes()); // p_filesz
//! elf[104..112].copy_from_slice(&4u64.to_le_bytes()); // p_memsz
//! elf[0x78..0x7c].copy_from_slice(&[0xf4, 0xeb, 0xfd, 0x90]); // hlt; jmp back
//!
//! let mut space = AddressSpace::new("system");
//! let layout = build_memory(&mut space, 64 << 20)?;
//! let boot = LinuxBoot::new("vmlinux", elf, "console=ttyS0", KernelDecompress::Guest)?;
//! let loaded = load_linux(&*space.guest_memory().memory(), &layout, &boot)?;
//! assert_eq!(loaded.entry, LinuxEntry::Long64 { rip: 0x100_0000 });
//! assert_eq!(loaded.regs().rsi, ZERO_PAGE_ADDR);
//!
//! // The zero page carries the command line pointer and the machine's e820 map.
//! let memory = space.guest_memory().memory();
//! let cmd_line_ptr: u32 = memory.read_obj(GuestAddress(ZERO_PAGE_ADDR + 0x228))?;
//! let mut cmdline = [0u8; 13];
//! memory.read_slice(&mut cmdline, GuestAddress(u64::from(cmd_line_ptr)))?;
//! assert_eq!(&cmdline, b"console=ttyS0");
//! let entries: u8 = memory.read_obj(GuestAddress(ZERO_PAGE_ADDR + 0x1e8))?;
//! let mut table = vec![0u8; usize::from(entries) * E820Map::RECORD_SIZE];
//! memory.read_slice(&mut table, GuestAddress(ZERO_PAGE_ADDR + 0x2d0))?;
//! assert_eq!(E820Map::decode(&table)?, layout.e820());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bzimage;
mod load;
mod multiboot_boot;
mod pvh;

pub mod firmware;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kvm_bindings::{kvm_regs, kvm_sregs};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmkit_kernel::elf;
use vmkit_kernel::multiboot::{self, MemoryRegion, Module, MultibootKernel, PlanConfig};
use vmkit_kvm::Vcpu;

use crate::boot::{self, IdentityMap, RFLAGS_FIXED};
use crate::e820::E820Map;
use crate::error::{Error, Result};
use crate::image_file::{read_image, MAX_IMAGE_BYTES};
use crate::layout::{MemoryLayout, HIGH_MEMORY_START};

pub use bzimage::{
    BOOT_FLAG, DEFAULT_INITRD_ADDR_MAX, ENTRY_64_OFFSET, HDRS_MAGIC, LOADED_HIGH, MIN_PROTOCOL,
    SETUP_HEADER_OFFSET, TYPE_OF_LOADER, XLF_KERNEL_64,
};
pub use firmware::FirmwareLinux;
pub use load::load_linux;
use load::write_bytes;
pub use multiboot_boot::MULTIBOOT_STUB_ADDR;
use multiboot_boot::{load_multiboot, MULTIBOOT_RESERVED};

/// Guest-physical address of the zero page (`struct boot_params`, 4 KiB).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// The boot vCPU's initial stack pointer: the top of the page after the zero page.
pub const BOOT_STACK_TOP: u64 = 0x8ff0;
/// Guest-physical address of the kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Bytes reserved for the command line at [`CMDLINE_ADDR`] (its NUL included).
pub const CMDLINE_AREA_SIZE: u64 = 0x1_0000;
/// Guest-physical address of PVH's `hvm_start_info`.
pub const PVH_START_INFO_ADDR: u64 = 0x6000;
/// Guest-physical address of PVH's module list (the initrd).
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// Guest-physical address of PVH's memory map.
pub const PVH_MEMMAP_ADDR: u64 = 0x6080;
/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// The command line limit for ELF kernels, which carry no `cmdline_size`: x86's
/// `COMMAND_LINE_SIZE` (2048) minus the NUL.
pub const ELF_CMDLINE_LIMIT: u64 = 2047;

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
const ZERO_PAGE_SIZE: u64 = 4096;
const PVH_MEMMAP_MAX_ENTRIES: usize = ((ZERO_PAGE_ADDR - PVH_MEMMAP_ADDR) / 24) as usize;

/// Where a bzImage's compressed payload is decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelDecompress {
    /// By the kernel itself, in the guest: the unmodified boot path (QEMU's only one).
    #[default]
    Guest,
    /// By vmkit, on the host, before the machine starts: the extracted ELF vmlinux is loaded
    /// and entered at `startup_64`, skipping the guest's decompressor (which is slow where
    /// guest kernel code is interpreted). ELF kernels are already uncompressed: no effect.
    Host,
}

/// The kind of image that is loaded into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A bzImage: setup code plus a self-decompressing protected-mode kernel.
    BzImage,
    /// An ELF vmlinux (given as such, or extracted from a bzImage on the host).
    Elf,
    /// A Multiboot (v1) kernel: an ELF32 or a.out-kludge image with a multiboot header
    /// (kvm-unit-tests' `.flat` files, for example).
    Multiboot,
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinuxEntry {
    /// The 64-bit boot protocol: long mode, RSI = the zero page.
    Long64 {
        /// The entry point.
        rip: u64,
    },
    /// The 32-bit boot protocol: flat protected mode without paging, ESI = the zero page.
    Protected32 {
        /// The entry point.
        eip: u32,
    },
    /// PVH: flat protected mode without paging, EBX = `hvm_start_info`.
    Pvh {
        /// The entry point from the kernel's `XEN_ELFNOTE_PHYS32_ENTRY` note.
        eip: u32,
    },
    /// Multiboot: flat protected mode without paging, EAX = 0x2BADB002, EBX = the
    /// multiboot information.
    Multiboot {
        /// The entry point (ELF `e_entry` or the header's `entry_addr`).
        eip: u32,
        /// The initial stack pointer: a page after the modules (multiboot leaves it
        /// undefined).
        esp: u32,
    },
}

// `BzImage` is the format's name, not a repetition of the enum's.
#[allow(clippy::enum_variant_names)]
#[derive(Clone)]
enum Image {
    BzImage(bzimage::BzImageHeader),
    Elf {
        elf: elf::ElfImage,
        pvh_entry: Option<u32>,
        /// The setup header of the bzImage it was extracted from (host decompression).
        header: Option<bzimage::BzImageHeader>,
    },
    Multiboot(Box<MultibootKernel>),
}

/// A multiboot module: the `-initrd` item (its command line), the file and its bytes.
#[derive(Clone)]
struct MultibootModule {
    item: String,
    path: PathBuf,
    data: Arc<[u8]>,
}

/// A Linux kernel, its initrd and command line, checked and ready to load.
#[derive(Clone)]
pub struct LinuxBoot {
    kernel_path: PathBuf,
    kernel: Arc<[u8]>,
    image: Image,
    initrd: Option<(PathBuf, Arc<[u8]>)>,
    modules: Vec<MultibootModule>,
    cmdline: String,
}

impl std::fmt::Debug for LinuxBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxBoot")
            .field("kernel", &self.kernel_path)
            .field("format", &self.format())
            .field("kernel_bytes", &self.kernel.len())
            .field("initrd", &self.initrd.as_ref().map(|(p, b)| (p, b.len())))
            .field(
                "modules",
                &self
                    .modules
                    .iter()
                    .map(|m| (&m.item, &m.path, m.data.len()))
                    .collect::<Vec<_>>(),
            )
            .field("cmdline", &self.cmdline)
            .finish()
    }
}

/// Where [`LinuxBoot::plan`] puts things, and how the kernel is entered: what [`load_linux`]
/// wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedLinux {
    /// The kind of image in guest memory.
    pub format: KernelFormat,
    /// How the boot vCPU enters it.
    pub entry: LinuxEntry,
    /// The zero page or PVH start info (what RSI or EBX holds).
    pub boot_info_addr: u64,
    /// First byte of the kernel.
    pub kernel_start: u64,
    /// One past the memory the kernel needs (`init_size` for a bzImage, the end of the
    /// highest segment for ELF).
    pub kernel_end: u64,
    /// The initrd's address and size.
    pub initrd: Option<(u64, u64)>,
    /// Address of the command line.
    pub cmdline_addr: u64,
    /// Its length without the NUL.
    pub cmdline_len: u64,
    /// The most command line bytes the kernel accepts.
    pub cmdline_limit: u64,
}

impl LoadedLinux {
    /// The general registers at entry: RIP, the boot info pointer (RSI, or EBX for PVH), RSP
    /// = [`BOOT_STACK_TOP`], RFLAGS = 2 (interrupts off), everything else 0.
    pub fn regs(&self) -> kvm_regs {
        let mut regs = kvm_regs {
            rsp: BOOT_STACK_TOP,
            rflags: RFLAGS_FIXED,
            ..Default::default()
        };
        match self.entry {
            LinuxEntry::Long64 { rip } => {
                regs.rip = rip;
                regs.rsi = self.boot_info_addr;
            }
            LinuxEntry::Protected32 { eip } => {
                regs.rip = u64::from(eip);
                regs.rsi = self.boot_info_addr;
            }
            LinuxEntry::Pvh { eip } => {
                regs.rip = u64::from(eip);
                regs.rbx = self.boot_info_addr;
            }
            LinuxEntry::Multiboot { eip, esp } => {
                regs.rip = u64::from(eip);
                regs.rsp = u64::from(esp);
                regs.rax = u64::from(multiboot::BOOTLOADER_MAGIC);
                regs.rbx = self.boot_info_addr;
            }
        }
        regs
    }

    /// Sets the segment and control registers for the entry: 64-bit mode with the identity
    /// page tables [`load_linux`] wrote, or flat 32-bit protected mode without paging.
    pub fn sregs(&self, sregs: &mut kvm_sregs) {
        match self.entry {
            LinuxEntry::Long64 { .. } => boot::long_mode_sregs(sregs, IdentityMap::default().pml4),
            LinuxEntry::Protected32 { .. }
            | LinuxEntry::Pvh { .. }
            | LinuxEntry::Multiboot { .. } => {
                boot::protected_mode_sregs(sregs);
            }
        }
    }
}

impl LinuxBoot {
    /// Reads and checks `kernel` (a bzImage or an ELF vmlinux) and `initrd`; see
    /// [`new`](Self::new).
    pub fn from_files(
        kernel: &Path,
        initrd: Option<&Path>,
        cmdline: &str,
        decompress: KernelDecompress,
    ) -> Result<Self> {
        Self::from_files_within(kernel, initrd, cmdline, decompress, MAX_IMAGE_BYTES)
    }

    /// [`from_files`](Self::from_files), refusing a kernel or initrd over `limit` bytes
    /// (the guest's RAM) before reading it.
    pub fn from_files_within(
        kernel: &Path,
        initrd: Option<&Path>,
        cmdline: &str,
        decompress: KernelDecompress,
        limit: u64,
    ) -> Result<Self> {
        let bytes = read_image("kernel", kernel, limit)?;
        let boot = Self::new(kernel, bytes, cmdline, decompress)?;
        match initrd {
            // As QEMU: for a multiboot kernel, -initrd lists modules ("a arg,b").
            Some(text) if boot.format() == KernelFormat::Multiboot => {
                boot.with_module_list_within(&text.to_string_lossy(), limit)
            }
            Some(path) => boot.with_initrd(path, read_image("initrd", path, limit)?),
            None => Ok(boot),
        }
    }

    /// Checks a kernel image (`path` names it in messages) and the command line against what
    /// the image accepts. A bzImage needs boot protocol 2.06 or later, the "HdrS" magic,
    /// `LOADED_HIGH`, and its setup and payload inside the file; an ELF must be a 64-bit
    /// x86-64 executable whose segments lie in the file. With [`KernelDecompress::Host`] a
    /// bzImage's payload is decompressed here.
    pub fn new(
        path: impl Into<PathBuf>,
        kernel: Vec<u8>,
        cmdline: impl Into<String>,
        decompress: KernelDecompress,
    ) -> Result<Self> {
        let kernel_path = path.into();
        let cmdline = cmdline.into();
        let image_error = |reason: String| Error::KernelImage {
            path: kernel_path.clone(),
            reason,
        };
        let multiboot = if is_elf64(&kernel) || has_hdrs(&kernel) {
            None
        } else {
            MultibootKernel::parse(&kernel)
                .map_err(|e| image_error(format!("{e}")))?
                .map(Box::new)
        };
        let (kernel, image) = if let Some(multiboot) = multiboot {
            (kernel, Image::Multiboot(multiboot))
        } else if elf::is_elf(&kernel) {
            let parsed = elf::parse(&kernel).map_err(|e| image_error(e.to_string()))?;
            check_elf_placement(&parsed).map_err(image_error)?;
            let pvh_entry = elf::pvh_entry(&kernel).map_err(|e| image_error(e.to_string()))?;
            let image = Image::Elf {
                elf: parsed,
                pvh_entry,
                header: None,
            };
            (kernel, image)
        } else {
            let header = bzimage::parse(&kernel).map_err(image_error)?;
            match decompress {
                KernelDecompress::Guest => (kernel, Image::BzImage(header)),
                KernelDecompress::Host => {
                    let vmlinux = decompress_on_host(&kernel_path, &kernel)?;
                    let parsed = elf::parse(&vmlinux)
                        .map_err(|e| e.to_string())
                        .and_then(|parsed| check_elf_placement(&parsed).map(|()| parsed))
                        .map_err(|why| {
                            image_error(format!("the vmlinux decompressed on the host: {why}"))
                        })?;
                    let image = Image::Elf {
                        elf: parsed,
                        pvh_entry: None,
                        header: Some(header),
                    };
                    (vmlinux, image)
                }
            }
        };
        let boot = Self {
            kernel_path,
            kernel: kernel.into(),
            image,
            initrd: None,
            modules: Vec::new(),
            cmdline,
        };
        boot.check_cmdline()?;
        Ok(boot)
    }

    /// Adds an initrd (`path` names it in messages). An empty one is refused. For a
    /// multiboot kernel it becomes module 0, with `path` as its command line.
    pub fn with_initrd(mut self, path: impl Into<PathBuf>, initrd: Vec<u8>) -> Result<Self> {
        let path = path.into();
        if self.format() == KernelFormat::Multiboot {
            let item = path.to_string_lossy().into_owned();
            return self.with_module(item, path, initrd);
        }
        if initrd.is_empty() {
            return Err(Error::Config(format!(
                "-initrd: {} is empty",
                path.display()
            )));
        }
        self.initrd = Some((path, initrd.into()));
        Ok(self)
    }

    /// Adds the multiboot modules of QEMU's `-initrd` text: items separated by `,` (`,,` is
    /// a comma), each "path" or "path args"; a module's command line is its whole item.
    ///
    /// # Errors
    /// A module file that cannot be read; a kernel that is not multiboot.
    pub fn with_module_list(self, text: &str) -> Result<Self> {
        self.with_module_list_within(text, MAX_IMAGE_BYTES)
    }

    /// [`with_module_list`](Self::with_module_list), refusing a module over `limit` bytes
    /// (the guest's RAM) before reading it.
    pub fn with_module_list_within(mut self, text: &str, limit: u64) -> Result<Self> {
        for item in multiboot::split_modules(text) {
            let path = PathBuf::from(multiboot::module_path(&item));
            let data = read_image("multiboot module (-initrd)", &path, limit)?;
            self = self.with_module(item, path, data)?;
        }
        Ok(self)
    }

    /// Adds one multiboot module: `item` is its command line, `path` names it in messages.
    ///
    /// # Errors
    /// [`Error::Config`] if the kernel is not multiboot.
    pub fn with_module(
        mut self,
        item: impl Into<String>,
        path: impl Into<PathBuf>,
        data: Vec<u8>,
    ) -> Result<Self> {
        let item = item.into();
        if self.format() != KernelFormat::Multiboot {
            return Err(Error::Config(format!(
                "-initrd: module '{item}' needs a multiboot kernel; {} is not one",
                self.kernel_path.display()
            )));
        }
        if item.contains('\0') {
            return Err(Error::Config(format!(
                "-initrd: the module command line '{item}' contains a NUL byte"
            )));
        }
        self.modules.push(MultibootModule {
            item,
            path: path.into(),
            data: data.into(),
        });
        Ok(self)
    }

    /// The kind of image loaded into guest memory.
    pub fn format(&self) -> KernelFormat {
        match self.image {
            Image::BzImage(_) => KernelFormat::BzImage,
            Image::Elf { .. } => KernelFormat::Elf,
            Image::Multiboot(_) => KernelFormat::Multiboot,
        }
    }

    /// The command line a multiboot kernel gets: as QEMU, the kernel's file name, a space,
    /// and `-append`.
    pub fn multiboot_cmdline(&self) -> String {
        format!("{} {}", self.kernel_path.display(), self.cmdline)
    }

    fn multiboot_plan(
        &self,
        kernel: &MultibootKernel,
        layout: &MemoryLayout,
    ) -> Result<multiboot::LoadPlan> {
        let memory_map: Vec<MemoryRegion> = layout
            .e820()
            .entries()
            .iter()
            .map(|entry| MemoryRegion {
                addr: entry.addr,
                size: entry.size,
                kind: entry.kind.code(),
            })
            .collect();
        let modules = self.multiboot_modules();
        let cmdline = self.multiboot_cmdline();
        kernel
            .plan(&PlanConfig {
                cmdline: &cmdline,
                modules: &modules,
                memory_map: &memory_map,
                reserved: &MULTIBOOT_RESERVED,
            })
            .map_err(|e| Error::KernelImage {
                path: self.kernel_path.clone(),
                reason: format!("{e}"),
            })
    }

    fn multiboot_modules(&self) -> Vec<Module<'_>> {
        self.modules
            .iter()
            .map(|m| Module {
                cmdline: &m.item,
                data: &m.data,
            })
            .collect()
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// The boot protocol version of the bzImage (e.g. 0x020f for 2.15), also when it was
    /// decompressed on the host; `None` for an ELF kernel.
    pub fn boot_protocol(&self) -> Option<u16> {
        match &self.image {
            Image::BzImage(header) => Some(header.version),
            Image::Elf { header, .. } => header.as_ref().map(|h| h.version),
            Image::Multiboot(_) => None,
        }
    }

    /// The kernel file's name as given.
    pub fn kernel_path(&self) -> &Path {
        &self.kernel_path
    }

    /// The longest command line this kernel accepts, and where that limit comes from.
    pub fn cmdline_limit(&self) -> (u64, String) {
        let header = match &self.image {
            Image::BzImage(header) => Some(header),
            Image::Elf { header, .. } => header.as_ref(),
            Image::Multiboot(_) => None,
        };
        if let Image::Multiboot(_) = self.image {
            // QEMU sets no limit; the line goes after the image in RAM.
            return (
                u64::from(u32::MAX),
                "the 32-bit address space of a multiboot kernel".into(),
            );
        }
        let (limit, origin) = match header {
            Some(header) => (
                header.cmdline_limit,
                format!(
                    "cmdline_size in the setup header of {}",
                    self.kernel_path.display()
                ),
            ),
            None => (
                ELF_CMDLINE_LIMIT,
                "x86 COMMAND_LINE_SIZE, 2048 bytes with the NUL, for an ELF kernel".into(),
            ),
        };
        let area = CMDLINE_AREA_SIZE - 1;
        if limit > area {
            (
                area,
                format!("vmkit's {CMDLINE_AREA_SIZE:#x}-byte command line area"),
            )
        } else {
            (limit, origin)
        }
    }

    fn check_cmdline(&self) -> Result<()> {
        if self.cmdline.contains('\0') {
            return Err(Error::Config(
                "-append: the kernel command line contains a NUL byte".into(),
            ));
        }
        let (limit, origin) = self.cmdline_limit();
        let len = self.cmdline.len();
        if len as u64 > limit {
            return Err(Error::CmdlineTooLong { len, limit, origin });
        }
        Ok(())
    }

    /// Decides where the kernel, initrd, command line and boot info go in `layout`, and how
    /// the kernel is entered; refuses a kernel or initrd that does not fit.
    pub fn plan(&self, layout: &MemoryLayout) -> Result<LoadedLinux> {
        let ram_end = layout
            .below_4g_range()
            .map_or(HIGH_MEMORY_START, |range| range.end());
        let too_large = |needed_end: u64, what: String| Error::KernelTooLarge {
            path: self.kernel_path.clone(),
            needed_end,
            what,
            ram_end,
            min_mib: needed_end.div_ceil(MIB),
        };
        if let Image::Multiboot(kernel) = &self.image {
            let plan = self.multiboot_plan(kernel, layout)?;
            return Ok(LoadedLinux {
                format: KernelFormat::Multiboot,
                entry: LinuxEntry::Multiboot {
                    eip: plan.entry,
                    esp: plan.stack_top,
                },
                boot_info_addr: u64::from(plan.info_addr),
                kernel_start: plan.image_span.0,
                kernel_end: plan.image_span.1,
                initrd: plan
                    .modules
                    .first()
                    .map(|m| (u64::from(m.start), u64::from(m.end - m.start))),
                cmdline_addr: u64::from(plan.info.cmdline),
                cmdline_len: self.multiboot_cmdline().len() as u64,
                cmdline_limit: self.cmdline_limit().0,
            });
        }
        let (format, entry, kernel_start, kernel_end, initrd_addr_max, zero_page) = match &self
            .image
        {
            Image::BzImage(header) => {
                let start = header.load_address;
                let end = start.saturating_add(header.init_size);
                if end > ram_end {
                    return Err(too_large(
                        end,
                        format!("loaded at {start:#x}, init_size {:#x}", header.init_size),
                    ));
                }
                let entry = if header.has_64bit_entry {
                    LinuxEntry::Long64 {
                        rip: start + ENTRY_64_OFFSET,
                    }
                } else {
                    // Below 4 GiB: checked by the header parser.
                    LinuxEntry::Protected32 {
                        eip: u32::try_from(start).unwrap_or(u32::MAX),
                    }
                };
                (
                    KernelFormat::BzImage,
                    entry,
                    start,
                    end,
                    header.initrd_addr_max,
                    true,
                )
            }
            Image::Elf {
                elf,
                pvh_entry,
                header,
            } => {
                for segment in &elf.segments {
                    let end = segment.paddr.saturating_add(segment.memsz);
                    if end > ram_end {
                        return Err(too_large(
                            end,
                            format!(
                                "an ELF segment at {:#x} of {:#x} bytes",
                                segment.paddr, segment.memsz
                            ),
                        ));
                    }
                }
                let (start, end) = elf.span();
                let (entry, zero_page) = match (pvh_entry, header) {
                    (Some(eip), None) => (LinuxEntry::Pvh { eip: *eip }, false),
                    _ => (LinuxEntry::Long64 { rip: elf.entry }, true),
                };
                let initrd_addr_max = header.map_or(DEFAULT_INITRD_ADDR_MAX, |h| h.initrd_addr_max);
                (
                    KernelFormat::Elf,
                    entry,
                    start,
                    end,
                    initrd_addr_max,
                    zero_page,
                )
            }
            Image::Multiboot(_) => {
                return Err(Error::Config(
                    "a multiboot kernel has no Linux boot plan".into(),
                ))
            }
        };
        let initrd = match &self.initrd {
            None => None,
            Some((path, bytes)) => {
                let size = bytes.len() as u64;
                let limit = initrd_addr_max.saturating_add(1).min(ram_end);
                let floor = kernel_end.next_multiple_of(PAGE);
                let addr = limit
                    .checked_sub(size)
                    .map(|top| top & !(PAGE - 1))
                    .filter(|addr| *addr >= floor);
                match addr {
                    Some(addr) => Some((addr, size)),
                    None => {
                        return Err(Error::InitrdTooLarge {
                            path: path.clone(),
                            size,
                            kernel_end: floor,
                            limit,
                            room: limit.saturating_sub(floor),
                        })
                    }
                }
            }
        };
        Ok(LoadedLinux {
            format,
            entry,
            boot_info_addr: if zero_page {
                ZERO_PAGE_ADDR
            } else {
                PVH_START_INFO_ADDR
            },
            kernel_start,
            kernel_end,
            initrd,
            cmdline_addr: CMDLINE_ADDR,
            cmdline_len: self.cmdline.len() as u64,
            cmdline_limit: self.cmdline_limit().0,
        })
    }

    /// The zero page for `plan`: the kernel's setup header (if it has one) with the loader's
    /// fields filled in, and `e820` as the memory map.
    pub fn zero_page(&self, plan: &LoadedLinux, e820: &E820Map) -> Result<boot_params> {
        let mut params = boot_params::default();
        let header = match &self.image {
            Image::BzImage(header) => Some(header),
            Image::Elf { header, .. } => header.as_ref(),
            Image::Multiboot(_) => None,
        };
        match header {
            Some(header) => params.hdr = header.raw,
            None => {
                params.hdr.boot_flag = BOOT_FLAG;
                params.hdr.header = HDRS_MAGIC;
            }
        }
        params.hdr.type_of_loader = TYPE_OF_LOADER;
        // Addresses are below 4 GiB by construction; the ext_ fields hold the high halves.
        params.hdr.code32_start = split(plan.kernel_start).0;
        let (low, high) = split(plan.cmdline_addr);
        params.hdr.cmd_line_ptr = low;
        params.ext_cmd_line_ptr = high;
        params.hdr.cmdline_size = u32::try_from(plan.cmdline_limit).unwrap_or(u32::MAX);
        if let Some((addr, size)) = plan.initrd {
            let (low, high) = split(addr);
            params.hdr.ramdisk_image = low;
            params.ext_ramdisk_image = high;
            let (low, high) = split(size);
            params.hdr.ramdisk_size = low;
            params.ext_ramdisk_size = high;
        }
        if e820.len() > params.e820_table.len() {
            return Err(Error::Config(format!(
                "the e820 map has {} entries, more than the zero page's {}",
                e820.len(),
                params.e820_table.len()
            )));
        }
        for (slot, entry) in params.e820_table.iter_mut().zip(e820.entries()) {
            *slot = boot_e820_entry {
                addr: entry.addr,
                size: entry.size,
                r#type: entry.kind.code(),
            };
        }
        params.e820_entries = u8::try_from(e820.len()).unwrap_or(u8::MAX);
        Ok(params)
    }
}

/// Kernels load at 1 MiB and above: below are the boot tables and the legacy areas.
fn check_elf_placement(elf: &elf::ElfImage) -> std::result::Result<(), String> {
    match elf.segments.iter().find(|s| s.paddr < HIGH_MEMORY_START) {
        Some(segment) => Err(format!(
            "an ELF segment is loaded at {:#x}, below 1 MiB where the boot tables and legacy \
             areas are: kernels load at 1 MiB and above",
            segment.paddr
        )),
        None => Ok(()),
    }
}

fn split(value: u64) -> (u32, u32) {
    // Truncation intended: the two 32-bit halves.
    (value as u32, (value >> 32) as u32)
}

/// Decompresses a bzImage's payload on the host into an ELF vmlinux (vmkit-kernel).
fn decompress_on_host(path: &Path, bzimage: &[u8]) -> Result<Vec<u8>> {
    vmkit_kernel::decompress_payload(bzimage, vmkit_kernel::DEFAULT_OUTPUT_LIMIT).map_err(|e| {
        Error::KernelImage {
            path: path.to_path_buf(),
            reason: format!("host decompression failed: {e}"),
        }
    })
}

/// Whether `image` is a 64-bit ELF file (the vmlinux path, even with a multiboot header).
fn is_elf64(image: &[u8]) -> bool {
    elf::is_elf(image) && image.get(4) == Some(&2)
}

/// Whether `image` has a bzImage's "HdrS" magic (the Linux path wins, as in QEMU).
fn has_hdrs(image: &[u8]) -> bool {
    image.get(0x202..0x206) == Some(&HDRS_MAGIC.to_le_bytes()[..])
}

/// Puts the boot vCPU at the kernel's entry as `loaded` describes (general, segment and
/// control registers, and the x87/SSE reset state). Set the vCPU's CPUID first. A multiboot
/// kernel starts at the real-mode stub [`load_linux`] wrote at [`MULTIBOOT_STUB_ADDR`], which
/// reaches the state [`LoadedLinux::regs`]/[`sregs`](LoadedLinux::sregs) describe.
pub fn set_linux_entry(vcpu: &Vcpu, loaded: &LoadedLinux) -> Result<()> {
    if let LinuxEntry::Multiboot { .. } = loaded.entry {
        return boot::real_mode_at(vcpu, MULTIBOOT_STUB_ADDR);
    }
    let mut sregs = vcpu.sregs()?;
    loaded.sregs(&mut sregs);
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&loaded.regs())?;
    vcpu.set_fpu(&boot::initial_fpu())?;
    Ok(())
}
