//! Mapping a BIOS/UEFI firmware image as QEMU's `-bios FILE` does.
//!
//! - The whole image becomes the ROM region `pc.bios`, mapped so that it ends exactly at
//!   4 GiB: the CPU's first instruction fetch at [`RESET_VECTOR`] (0xffff_fff0) reads the
//!   image's 16th byte from the end.
//! - Its last 128 KiB (the whole image if it is smaller) are also visible just below 1 MiB,
//!   ending at 0x10_0000, through the alias `isa-bios` mapped with priority 1 (above RAM), so
//!   the real-mode BIOS at segment 0xf000 finds itself after its first far jump.
//!
//! Image sizes must be a non-zero multiple of 4 KiB and at most 16 MiB. QEMU is stricter
//! (multiples of 64 KiB); vmkit only needs whole pages for the memory slots, which lets tests
//! use one-page images. The 16 MiB ceiling keeps the image above KVM's identity-map and TSS
//! pages ([`KVM_IDENTITY_MAP_ADDRESS`](crate::layout::KVM_IDENTITY_MAP_ADDRESS)).
//! The bytes are written once into the ROM's host memory; the guest cannot change them.

use std::path::{Path, PathBuf};

use vmkit_memory::{AddressSpace, RegionId};

use crate::error::{Error, Result};
use crate::layout::{FOUR_GIB, HIGH_MEMORY_START};

/// Largest accepted image: 16 MiB.
pub const FIRMWARE_MAX_SIZE: u64 = 16 << 20;
/// Granule of image sizes: 4 KiB.
pub const FIRMWARE_SIZE_ALIGN: u64 = 4 << 10;
/// How much of the image's end is also shown below 1 MiB: 128 KiB.
pub const ISA_BIOS_MAX_SIZE: u64 = 128 << 10;
/// Priority of the `isa-bios` alias in the root container (RAM uses 0).
pub const ISA_BIOS_PRIORITY: i32 = 1;
/// Name of the ROM region.
pub const FIRMWARE_REGION_NAME: &str = "pc.bios";
/// Name of the alias below 1 MiB.
pub const ISA_BIOS_REGION_NAME: &str = "isa-bios";
/// Where an x86 CPU fetches its first instruction after reset (CS base 0xffff_0000 + IP
/// 0xfff0).
pub const RESET_VECTOR: u64 = 0xffff_fff0;

/// Where a firmware image of a given size is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FirmwareLayout {
    /// Image size in bytes.
    pub size: u64,
    /// Guest-physical address of the image's first byte (4 GiB - size).
    pub base: u64,
    /// Bytes shown below 1 MiB: min(size, 128 KiB).
    pub isa_size: u64,
    /// Guest-physical address of the alias (1 MiB - isa_size).
    pub isa_base: u64,
    /// Offset in the image of the alias's first byte (size - isa_size).
    pub isa_offset: u64,
}

impl FirmwareLayout {
    /// The layout for an image of `size` bytes (a non-zero multiple of 4 KiB, at most 16 MiB).
    pub fn new(size: u64) -> Result<Self> {
        Self::checked(size, None)
    }

    fn checked(size: u64, path: Option<&Path>) -> Result<Self> {
        let path = || path.map(Path::to_path_buf);
        if size == 0 {
            return Err(Error::FirmwareEmpty { path: path() });
        }
        if size > FIRMWARE_MAX_SIZE {
            return Err(Error::FirmwareTooLarge {
                path: path(),
                size,
                max: FIRMWARE_MAX_SIZE,
            });
        }
        if size % FIRMWARE_SIZE_ALIGN != 0 {
            return Err(Error::FirmwareUnaligned { path: path(), size });
        }
        let isa_size = size.min(ISA_BIOS_MAX_SIZE);
        Ok(Self {
            size,
            base: FOUR_GIB - size,
            isa_size,
            isa_base: HIGH_MEMORY_START - isa_size,
            isa_offset: size - isa_size,
        })
    }
}

/// A mapped firmware image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firmware {
    /// Where it is.
    pub layout: FirmwareLayout,
    /// The ROM region holding the image.
    pub rom: RegionId,
    /// The alias showing its end below 1 MiB.
    pub isa_alias: RegionId,
}

/// Maps `image` as the machine's firmware (see the [module docs](self)): loads it into a new
/// ROM region ending at 4 GiB and adds the `isa-bios` alias below 1 MiB, in one transaction.
pub fn map_firmware(space: &mut AddressSpace, image: &[u8]) -> Result<Firmware> {
    map_checked(space, image, None)
}

/// Reads the firmware file at `path` and maps it like [`map_firmware`]. Errors name the file.
pub fn load_firmware(space: &mut AddressSpace, path: impl AsRef<Path>) -> Result<Firmware> {
    let path = path.as_ref();
    let io_error = |source| Error::FirmwareFile {
        path: PathBuf::from(path),
        source,
    };
    // Check the size before reading, so a huge file is refused without loading it.
    let size = std::fs::metadata(path).map_err(io_error)?.len();
    FirmwareLayout::checked(size, Some(path))?;
    let image = std::fs::read(path).map_err(io_error)?;
    map_checked(space, &image, Some(path))
}

fn map_checked(space: &mut AddressSpace, image: &[u8], path: Option<&Path>) -> Result<Firmware> {
    let size = u64::try_from(image.len()).unwrap_or(u64::MAX);
    let layout = FirmwareLayout::checked(size, path)?;
    let (rom, isa_alias) = space.transaction(|space| {
        let rom = space.new_rom(FIRMWARE_REGION_NAME, layout.size)?;
        space.write_region(rom, 0, image)?;
        let alias = space.new_alias(
            ISA_BIOS_REGION_NAME,
            rom,
            layout.isa_offset,
            layout.isa_size,
        )?;
        let root = space.root();
        space.add_subregion(root, layout.base, rom)?;
        space.add_subregion_overlap(root, layout.isa_base, alias, ISA_BIOS_PRIORITY)?;
        Ok((rom, alias))
    })?;
    Ok(Firmware {
        layout,
        rom,
        isa_alias,
    })
}
