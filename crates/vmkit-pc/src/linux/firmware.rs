//! `-kernel` with firmware (`-bios`), as QEMU's `x86_load_linux` does it: the bzImage is
//! split into its real-mode setup and protected-mode parts, the setup header is patched as
//! a boot loader would patch it, and everything goes to fw_cfg (`FW_CFG_SETUP_*`,
//! `FW_CFG_KERNEL_*`, `FW_CFG_INITRD_*`, `FW_CFG_CMDLINE_*`), with QEMU's
//! `linuxboot_dma.bin` option ROM as `genroms/linuxboot_dma.bin` and first in `bootorder`.
//! SeaBIOS runs the ROM, which copies the parts to their addresses over fw_cfg DMA and
//! enters the setup code in real mode.
//!
//! The direct boot (`-kernel` without `-bios`, [`super::load_linux`]) needs no firmware
//! and is faster; this path exists so that a guest sees exactly what QEMU's firmware boot
//! gives it.

use std::path::{Path, PathBuf};

use vmkit_fwcfg::LinuxBoot as FwCfgLinuxBoot;

use crate::error::{Error, Result};
use crate::image_file::read_image;

/// File name of QEMU's DMA-capable Linux boot option ROM.
pub const LINUXBOOT_ROM: &str = "linuxboot_dma.bin";
/// Where the ROM appears in fw_cfg (SeaBIOS runs every `genroms/` file).
pub const LINUXBOOT_ROM_FILE: &str = "genroms/linuxboot_dma.bin";
/// The `bootorder` entry that makes firmware boot the ROM first (QEMU gives it bootindex 0).
pub const LINUXBOOT_BOOT_PATH: &str = "/rom@genroms/linuxboot_dma.bin";
/// Directories searched for [`LINUXBOOT_ROM`], in order (after `$VMKIT_ROM_DIR`).
pub const ROM_DIRS: &[&str] = &[
    "/usr/share/qemu",
    "/usr/share/seabios",
    "/usr/lib/ipxe/qemu",
];

/// Bytes QEMU's pc keeps free for ACPI tables below the top of low RAM (`acpi_data_size`);
/// the initrd stays below it.
const ACPI_DATA_SIZE: u64 = 0x20000 + 0x8000;
/// The setup header's magic `HdrS` and where it is.
const HDRS_OFFSET: usize = 0x202;
/// Setup header fields (offsets in the image).
const SETUP_SECTS: usize = 0x1f1;
const VERSION: usize = 0x206;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const HEAP_END_PTR: usize = 0x224;
const CMD_LINE_PTR: usize = 0x228;
const INITRD_ADDR_MAX: usize = 0x22c;
const XLOADFLAGS: usize = 0x236;
/// `loadflags`: the protected-mode part goes at 1 MiB.
const LOADED_HIGH: u8 = 0x01;
/// `loadflags`: `heap_end_ptr` is valid.
const CAN_USE_HEAP: u8 = 0x80;
/// `xloadflags`: the initrd may sit above 4 GiB.
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 0x40;
/// `type_of_loader` QEMU writes (0xB: QEMU, revision 0).
const QEMU_LOADER: u8 = 0xb0;

/// A Linux kernel (and initrd, command line) that firmware boots through fw_cfg and QEMU's
/// option ROM.
#[derive(Debug, Clone)]
pub struct FirmwareLinux {
    kernel_path: PathBuf,
    kernel: Vec<u8>,
    initrd: Option<(PathBuf, Vec<u8>)>,
    cmdline: String,
    option_rom: Vec<u8>,
}

impl FirmwareLinux {
    /// Reads the kernel, the initrd and [`LINUXBOOT_ROM`] (from `$VMKIT_ROM_DIR`, then
    /// [`ROM_DIRS`]) and checks the kernel's setup header. A kernel or initrd over `limit`
    /// bytes (the guest's RAM) is refused before it is read.
    pub fn from_files(
        kernel: &Path,
        initrd: Option<&Path>,
        cmdline: &str,
        limit: u64,
    ) -> Result<Self> {
        let read = |what: &'static str, path: &Path| read_image(what, path, limit);
        let kernel_bytes = read("kernel", kernel)?;
        let initrd = match initrd {
            Some(path) => Some((path.to_path_buf(), read("initrd", path)?)),
            None => None,
        };
        // The kernel is checked before the ROM is looked for, so a bad kernel is reported
        // as such on a machine without QEMU's ROMs too.
        let mut linux = Self::new(
            kernel.to_path_buf(),
            kernel_bytes,
            initrd,
            cmdline,
            Vec::new(),
        )?;
        linux.option_rom = find_option_rom()?;
        Ok(linux)
    }

    /// A kernel given in memory (`kernel_path` names it in errors), with the option ROM's
    /// bytes.
    pub fn new(
        kernel_path: PathBuf,
        kernel: Vec<u8>,
        initrd: Option<(PathBuf, Vec<u8>)>,
        cmdline: &str,
        option_rom: Vec<u8>,
    ) -> Result<Self> {
        let linux = Self {
            kernel_path,
            kernel,
            initrd,
            cmdline: cmdline.to_string(),
            option_rom,
        };
        linux.check()?;
        Ok(linux)
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::KernelImage {
            path: self.kernel_path.clone(),
            reason: reason.into(),
        }
    }

    fn check(&self) -> Result<()> {
        let k = &self.kernel;
        if k.len() < 0x1000 {
            return Err(self.invalid(format!(
                "{} bytes: too short for a bzImage (at least 4096 bytes: boot sector and setup header)",
                k.len()
            )));
        }
        if &k[HDRS_OFFSET..HDRS_OFFSET + 4] != b"HdrS" {
            return Err(self.invalid(
                "no setup header (magic \"HdrS\" at 0x202): with -bios, -kernel takes a bzImage",
            ));
        }
        if self.protocol() < 0x200 {
            return Err(self.invalid(format!(
                "boot protocol {:#x} at 0x206 is older than 2.00, which firmware boot needs",
                self.protocol()
            )));
        }
        let setup = self.setup_size();
        if setup > k.len() {
            return Err(self.invalid(format!(
                "setup_sects at 0x1f1 gives {setup:#x} bytes of setup code, more than the \
                 {:#x}-byte file",
                k.len()
            )));
        }
        Ok(())
    }

    fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.kernel[offset], self.kernel[offset + 1]])
    }

    fn u32_at(&self, offset: usize) -> u32 {
        let b = &self.kernel[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn protocol(&self) -> u16 {
        self.u16_at(VERSION)
    }

    /// Bytes of real-mode code: boot sector plus `setup_sects` (0 meaning 4) sectors.
    fn setup_size(&self) -> usize {
        let sects = match self.kernel[SETUP_SECTS] {
            0 => 4,
            n => usize::from(n),
        };
        (sects + 1) * 512
    }

    /// The fw_cfg items for a machine whose RAM below 4 GiB is `below_4g` bytes: where the
    /// option ROM puts the setup code, the kernel, the initrd and the command line, with the
    /// header patched as QEMU patches it.
    pub fn fw_cfg_items(&self, below_4g: u64) -> Result<FwCfgLinuxBoot> {
        let protocol = self.protocol();
        let cmdline_size = (self.cmdline.len() as u32 + 16) & !15;
        // Where QEMU puts things: old kernels below 640 KiB, LOADED_HIGH kernels with
        // protocol 2.02+ at QEMU's fixed addresses.
        let loaded_high = self.kernel[LOADFLAGS] & LOADED_HIGH != 0;
        let (real_addr, cmdline_addr, prot_addr) = if protocol < 0x200 || !loaded_high {
            (0x9_0000u32, 0x9_a000 - cmdline_size, 0x1_0000u32)
        } else if protocol < 0x202 {
            (0x9_0000, 0x9_a000 - cmdline_size, 0x10_0000)
        } else {
            (0x1_0000, 0x2_0000, 0x10_0000)
        };
        let mut initrd_max: u64 =
            if protocol >= 0x20c && self.u16_at(XLOADFLAGS) & XLF_CAN_BE_LOADED_ABOVE_4G != 0 {
                u64::from(u32::MAX)
            } else if protocol >= 0x203 {
                u64::from(self.u32_at(INITRD_ADDR_MAX))
            } else {
                0x37ff_ffff
            };
        let ram_limit = below_4g.saturating_sub(ACPI_DATA_SIZE).saturating_sub(1);
        initrd_max = initrd_max.min(ram_limit);

        let mut header = self.kernel[..self.setup_size()].to_vec();
        let put16 =
            |h: &mut Vec<u8>, at: usize, v: u16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |h: &mut Vec<u8>, at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
        if protocol >= 0x202 {
            put32(&mut header, CMD_LINE_PTR, cmdline_addr);
        } else {
            // The old command-line protocol: magic and offset from the setup segment.
            put16(&mut header, 0x20, 0xa33f);
            put16(&mut header, 0x22, (cmdline_addr - real_addr) as u16);
        }
        header[TYPE_OF_LOADER] = QEMU_LOADER;
        if protocol >= 0x201 {
            header[LOADFLAGS] |= CAN_USE_HEAP;
            put16(
                &mut header,
                HEAP_END_PTR,
                (cmdline_addr - real_addr - 0x200) as u16,
            );
        }
        let mut items = FwCfgLinuxBoot {
            setup_addr: real_addr,
            kernel_addr: prot_addr,
            cmdline_addr,
            cmdline: self.cmdline.clone(),
            kernel: self.kernel[self.setup_size()..].to_vec(),
            ..FwCfgLinuxBoot::default()
        };
        if let Some((path, initrd)) = &self.initrd {
            let size = initrd.len() as u64;
            if size >= initrd_max {
                return Err(Error::InitrdTooLarge {
                    path: path.clone(),
                    size,
                    kernel_end: u64::from(prot_addr),
                    limit: initrd_max,
                    room: initrd_max.saturating_sub(u64::from(prot_addr)),
                });
            }
            let addr = ((initrd_max - size) & !4095) as u32;
            put32(&mut header, RAMDISK_IMAGE, addr);
            put32(&mut header, RAMDISK_SIZE, size as u32);
            items.initrd_addr = addr;
            items.initrd = initrd.clone();
        }
        items.setup = header;
        Ok(items)
    }

    /// The option ROM's bytes (for [`LINUXBOOT_ROM_FILE`]).
    pub fn option_rom(&self) -> &[u8] {
        &self.option_rom
    }
}

/// Reads [`LINUXBOOT_ROM`] from `$VMKIT_ROM_DIR` or the first of [`ROM_DIRS`] that has it.
pub fn find_option_rom() -> Result<Vec<u8>> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("VMKIT_ROM_DIR") {
        dirs.push(dir.into());
    }
    dirs.extend(ROM_DIRS.iter().map(PathBuf::from));
    for dir in &dirs {
        if let Ok(bytes) = std::fs::read(dir.join(LINUXBOOT_ROM)) {
            return Ok(bytes);
        }
    }
    Err(Error::OptionRomMissing {
        name: LINUXBOOT_ROM,
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protocol-2.15 bzImage header: 2 setup sectors, LOADED_HIGH, initrd_addr_max 0x7fffffff.
    fn image() -> Vec<u8> {
        let mut k = vec![0u8; 0x3000];
        k[SETUP_SECTS] = 2;
        k[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(b"HdrS");
        k[VERSION..VERSION + 2].copy_from_slice(&0x20fu16.to_le_bytes());
        k[LOADFLAGS] = LOADED_HIGH;
        k[INITRD_ADDR_MAX..INITRD_ADDR_MAX + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        k[0x600] = 0xaa; // first byte of the protected-mode part
        k
    }

    fn linux(k: Vec<u8>, initrd: Option<Vec<u8>>, cmdline: &str) -> Result<FirmwareLinux> {
        FirmwareLinux::new(
            "bzImage".into(),
            k,
            initrd.map(|i| (PathBuf::from("initrd"), i)),
            cmdline,
            vec![0x55, 0xaa],
        )
    }

    fn u32_of(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn modern_kernel_is_split_and_patched_as_qemu_does() {
        let items = linux(image(), Some(vec![7; 5000]), "console=ttyS0")
            .unwrap()
            .fw_cfg_items(128 << 20)
            .unwrap();
        assert_eq!(
            (items.setup_addr, items.kernel_addr, items.cmdline_addr),
            (0x1_0000, 0x10_0000, 0x2_0000)
        );
        assert_eq!(items.setup.len(), 3 * 512);
        assert_eq!(items.kernel.len(), 0x3000 - 3 * 512);
        assert_eq!(items.kernel[0x600 - 3 * 512], 0xaa);
        let h = &items.setup;
        assert_eq!(u32_of(h, CMD_LINE_PTR), 0x2_0000);
        assert_eq!(h[TYPE_OF_LOADER], 0xb0);
        assert_eq!(h[LOADFLAGS], LOADED_HIGH | CAN_USE_HEAP);
        assert_eq!(
            u16::from_le_bytes([h[HEAP_END_PTR], h[HEAP_END_PTR + 1]]),
            0xfe00
        );
        // The initrd ends page-aligned below the ACPI reserve under the top of RAM.
        let max = (128u64 << 20) - ACPI_DATA_SIZE - 1;
        let addr = ((max - 5000) & !4095) as u32;
        assert_eq!(items.initrd_addr, addr);
        assert_eq!(u32_of(h, RAMDISK_IMAGE), addr);
        assert_eq!(u32_of(h, RAMDISK_SIZE), 5000);
        assert_eq!(items.cmdline, "console=ttyS0");
    }

    #[test]
    fn old_protocols_use_the_low_addresses_and_the_old_cmdline_magic() {
        let mut k = image();
        k[VERSION..VERSION + 2].copy_from_slice(&0x201u16.to_le_bytes());
        let items = linux(k, None, "abc")
            .unwrap()
            .fw_cfg_items(64 << 20)
            .unwrap();
        // cmdline_size = (3 + 16) & !15 = 16.
        assert_eq!(items.setup_addr, 0x9_0000);
        assert_eq!(items.cmdline_addr, 0x9_a000 - 16);
        assert_eq!(items.kernel_addr, 0x10_0000);
        assert_eq!(&items.setup[0x20..0x22], &0xa33fu16.to_le_bytes());
        assert_eq!(&items.setup[0x22..0x24], &(0xa000u16 - 16).to_le_bytes());
        assert!(items.initrd.is_empty());
    }

    #[test]
    fn bad_images_and_big_initrds_are_refused_with_the_field() {
        let short = linux(vec![0; 100], None, "").unwrap_err().to_string();
        assert!(short.contains("too short"), "{short}");
        let mut k = image();
        k[HDRS_OFFSET] = b'X';
        let e = linux(k, None, "").unwrap_err().to_string();
        assert!(e.contains("HdrS") && e.contains("0x202"), "{e}");
        let mut k = image();
        k[SETUP_SECTS] = 200;
        let e = linux(k, None, "").unwrap_err().to_string();
        assert!(e.contains("setup_sects"), "{e}");
        let e = linux(image(), Some(vec![0; 1 << 20]), "")
            .unwrap()
            .fw_cfg_items(1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("initrd initrd:"), "{e}");
    }
}
