//! The real-mode kernel header ("setup header") of a bzImage, as laid out by the Linux x86 boot
//! protocol (Documentation/arch/x86/boot.rst).

use std::ops::Range;

use crate::{Error, Result};

/// `boot_flag` value at 0x1FE.
pub const BOOT_FLAG: u16 = 0xAA55;
/// `header` magic at 0x202: "HdrS" read as a little-endian u32.
pub const HEADER_MAGIC: u32 = 0x5372_6448;
/// `loadflags` bit 0: the protected-mode code is loaded at 0x100000 (a bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags` bit 5: the kernel should print no early messages.
pub const QUIET_FLAG: u8 = 1 << 5;
/// `loadflags` bit 6: do not reload the segment registers at the 32-bit entry.
pub const KEEP_SEGMENTS: u8 = 1 << 6;
/// `loadflags` bit 7: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags` bit 0: the kernel has the legacy 64-bit entry point at +0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `xloadflags` bit 1: the kernel, boot_params, cmdline and ramdisk may live above 4 GiB.
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// `xloadflags` bit 2: 32-bit EFI handover entry.
pub const XLF_EFI_HANDOVER_32: u16 = 1 << 2;
/// `xloadflags` bit 3: 64-bit EFI handover entry.
pub const XLF_EFI_HANDOVER_64: u16 = 1 << 3;

/// The lowest boot protocol version this crate accepts (2.06: `cmdline_size`, and the first
/// version the 64-bit boot path of vmkit can rely on).
pub const MIN_VERSION: u16 = 0x0206;
/// The version that added `payload_offset` / `payload_length`.
pub const PAYLOAD_VERSION: u16 = 0x0208;

/// Size of one setup sector.
const SECTOR: u64 = 512;

/// The fields of a bzImage's setup header that a loader and the payload decompressor need.
///
/// Fields the image's protocol version does not define yet read as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    /// `setup_sects` (0x1F1) as stored; 0 means 4, see [`SetupHeader::setup_sectors`].
    pub setup_sects: u8,
    /// `syssize` (0x1F4): size of the protected-mode code in 16-byte paragraphs.
    pub syssize: u32,
    /// `version` (0x206): boot protocol version, major in the high byte.
    pub version: u16,
    /// `loadflags` (0x211), see [`LOADED_HIGH`] and friends.
    pub loadflags: u8,
    /// `code32_start` (0x214): the 32-bit entry as linked (0x100000 for a bzImage).
    pub code32_start: u32,
    /// `initrd_addr_max` (0x22C, 2.03+): highest address the initrd may end at.
    pub initrd_addr_max: u32,
    /// `kernel_alignment` (0x230, 2.05+): physical alignment the kernel needs.
    pub kernel_alignment: u32,
    /// `relocatable_kernel` (0x234, 2.05+): the kernel may be loaded at any aligned address.
    pub relocatable_kernel: bool,
    /// `min_alignment` (0x235, 2.10+): log2 of the minimum alignment.
    pub min_alignment: u8,
    /// `xloadflags` (0x236, 2.12+), see [`XLF_KERNEL_64`] and friends.
    pub xloadflags: u16,
    /// `cmdline_size` (0x238, 2.06+): longest command line, without the terminating NUL.
    pub cmdline_size: u32,
    /// `payload_offset` (0x248, 2.08+): payload offset from the protected-mode code start.
    pub payload_offset: u32,
    /// `payload_length` (0x24C, 2.08+): payload length in bytes.
    pub payload_length: u32,
    /// `pref_address` (0x258, 2.10+): preferred load address.
    pub pref_address: u64,
    /// `init_size` (0x260, 2.10+): linear memory the kernel needs from its load address
    /// before it has set up its own memory map.
    pub init_size: u32,
    /// `handover_offset` (0x264, 2.11+): EFI handover entry offset.
    pub handover_offset: u32,
}

/// Reads a little-endian field, naming it in the error when the image is too short.
fn field<const N: usize>(image: &[u8], offset: usize, name: &'static str) -> Result<[u8; N]> {
    let end = offset.saturating_add(N);
    image
        .get(offset..end)
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or(Error::Truncated {
            field: name,
            offset,
            needed: end,
            len: image.len(),
        })
}

fn u8_at(image: &[u8], offset: usize, name: &'static str) -> Result<u8> {
    field::<1>(image, offset, name).map(|b| b[0])
}

fn u16_at(image: &[u8], offset: usize, name: &'static str) -> Result<u16> {
    field(image, offset, name).map(u16::from_le_bytes)
}

fn u32_at(image: &[u8], offset: usize, name: &'static str) -> Result<u32> {
    field(image, offset, name).map(u32::from_le_bytes)
}

fn u64_at(image: &[u8], offset: usize, name: &'static str) -> Result<u64> {
    field(image, offset, name).map(u64::from_le_bytes)
}

impl SetupHeader {
    /// Parses the setup header at the start of a bzImage (the whole file, or at least its
    /// first 0x270 bytes).
    ///
    /// Checks `boot_flag` (0xAA55), the "HdrS" magic and that the protocol version is at
    /// least [`MIN_VERSION`]; each error names the field and what was expected.
    pub fn parse(image: &[u8]) -> Result<Self> {
        let boot_flag = u16_at(image, 0x1FE, "boot_flag")?;
        if boot_flag != BOOT_FLAG {
            return Err(Error::BadBootFlag { found: boot_flag });
        }
        let magic = u32_at(image, 0x202, "header")?;
        if magic != HEADER_MAGIC {
            return Err(Error::BadHeaderMagic { found: magic });
        }
        let version = u16_at(image, 0x206, "version")?;
        if version < MIN_VERSION {
            return Err(Error::ProtocolTooOld {
                version,
                required: MIN_VERSION,
                what: "vmkit's bzImage loader",
            });
        }
        // Fields newer than the image's protocol are not there (the bytes may be code).
        let since = |v: u16| version >= v;
        let mut header = SetupHeader {
            setup_sects: u8_at(image, 0x1F1, "setup_sects")?,
            syssize: u32_at(image, 0x1F4, "syssize")?,
            version,
            loadflags: u8_at(image, 0x211, "loadflags")?,
            code32_start: u32_at(image, 0x214, "code32_start")?,
            initrd_addr_max: u32_at(image, 0x22C, "initrd_addr_max")?,
            kernel_alignment: u32_at(image, 0x230, "kernel_alignment")?,
            relocatable_kernel: u8_at(image, 0x234, "relocatable_kernel")? != 0,
            cmdline_size: u32_at(image, 0x238, "cmdline_size")?,
            min_alignment: 0,
            xloadflags: 0,
            payload_offset: 0,
            payload_length: 0,
            pref_address: 0,
            init_size: 0,
            handover_offset: 0,
        };
        if since(PAYLOAD_VERSION) {
            header.payload_offset = u32_at(image, 0x248, "payload_offset")?;
            header.payload_length = u32_at(image, 0x24C, "payload_length")?;
        }
        if since(0x020A) {
            header.min_alignment = u8_at(image, 0x235, "min_alignment")?;
            header.pref_address = u64_at(image, 0x258, "pref_address")?;
            header.init_size = u32_at(image, 0x260, "init_size")?;
        }
        if since(0x020B) {
            header.handover_offset = u32_at(image, 0x264, "handover_offset")?;
        }
        if since(0x020C) {
            header.xloadflags = u16_at(image, 0x236, "xloadflags")?;
        }
        Ok(header)
    }

    /// Number of 512-byte setup sectors after the boot sector (`setup_sects`, with the
    /// historical rule that 0 means 4).
    pub fn setup_sectors(&self) -> u32 {
        match self.setup_sects {
            0 => 4,
            n => u32::from(n),
        }
    }

    /// File offset of the protected-mode kernel: the boot sector plus the setup sectors.
    pub fn kernel_offset(&self) -> u64 {
        (u64::from(self.setup_sectors()) + 1) * SECTOR
    }

    /// True when the kernel has the 64-bit entry point (`xloadflags` has [`XLF_KERNEL_64`]).
    pub fn has_64bit_entry(&self) -> bool {
        self.xloadflags & XLF_KERNEL_64 != 0
    }

    /// True when the protected-mode code is meant to be loaded at 1 MiB ([`LOADED_HIGH`]).
    pub fn loaded_high(&self) -> bool {
        self.loadflags & LOADED_HIGH != 0
    }

    /// The payload's byte range in an image of `image_len` bytes.
    ///
    /// Needs protocol 2.08 (for `payload_offset`) and a payload that lies inside the image.
    pub fn payload_range(&self, image_len: usize) -> Result<Range<usize>> {
        if self.version < PAYLOAD_VERSION {
            return Err(Error::ProtocolTooOld {
                version: self.version,
                required: PAYLOAD_VERSION,
                what: "finding the compressed payload (payload_offset)",
            });
        }
        let offset = self.kernel_offset() + u64::from(self.payload_offset);
        let length = u64::from(self.payload_length);
        let out_of_bounds = Error::PayloadOutOfBounds {
            offset,
            length,
            len: image_len,
        };
        let start = usize::try_from(offset).map_err(|_| out_of_bounds)?;
        let end = start.checked_add(self.payload_length as usize);
        match end {
            Some(end) if end <= image_len && length > 0 => Ok(start..end),
            _ => Err(Error::PayloadOutOfBounds {
                offset,
                length,
                len: image_len,
            }),
        }
    }
}
