//! Linux bzImage inspection and host-side payload decompression.
//!
//! A bzImage is a real-mode setup part (boot sector + `setup_sects` sectors, carrying the
//! *setup header* of the x86 boot protocol) followed by the protected-mode part: a small
//! decompressor plus the *payload*, the compressed ELF `vmlinux`. A VMM can either load the
//! bzImage and let the guest decompress itself, or, as here, decompress the payload on the
//! host and load the ELF directly, which saves the guest tens of millions of instructions
//! (a lot on a host that interprets guest CPL0 code).
//!
//! - [`SetupHeader::parse`] reads the header fields a loader needs (protocol version,
//!   `loadflags`, `xloadflags`, alignment, `cmdline_size`, `init_size`, payload location...)
//!   with errors that name the field and the expected value.
//! - [`detect_payload_format`] tells the compression from the payload's magic number.
//! - [`decompress_payload`] returns the vmlinux ELF bytes, capped by an output limit.
//! - [`elf`]: the one ELF64 parser of the workspace: [`VmlinuxInfo::parse`] checks the header
//!   and gives the entry point, [`ElfImage::parse`] also the loadable segments, and
//!   [`elf::pvh_entry`] finds the PVH entry note.
//!
//! Host decompression covers gzip (flate2), xz with its x86 BCJ filter and lzma (lzma-rust2),
//! LZ4 legacy framing (lz4_flex blocks), zstd (ruzstd) and bzip2 (bzip2 with its pure-Rust
//! backend). LZO is detected but reported as [`Error::UnsupportedFormat`]: boot such a
//! kernel with guest decompression.
//!
//! [`multiboot`] reads Multiboot (v1) kernels (ELF32 or a.out kludge) and lays out the
//! multiboot information as QEMU's `-kernel` does.
//!
//! No input panics: truncated or corrupt images give an [`Error`].
//!
//! ```
//! use std::io::Write;
//! use vmkit_kernel::{decompress_payload, detect_payload_format, PayloadFormat, SetupHeader};
//!
//! // A fake vmlinux and a minimal bzImage around its gzip-compressed form.
//! let vmlinux = b"\x7fELF\x02\x01\x01 and the rest of a kernel".to_vec();
//! let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//! gz.write_all(&vmlinux).unwrap();
//! let mut payload = gz.finish().unwrap();
//! payload.extend_from_slice(&(vmlinux.len() as u32).to_le_bytes()); // as the kernel build does
//!
//! let setup_sects = 1u8;
//! let mut image = vec![0u8; (setup_sects as usize + 1) * 512];
//! image[0x1f1] = setup_sects;
//! image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
//! image[0x202..0x206].copy_from_slice(b"HdrS");
//! image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
//! image[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes()); // payload_offset
//! image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
//! image.extend_from_slice(&payload);
//!
//! let header = SetupHeader::parse(&image)?;
//! assert_eq!(header.version, 0x020f);
//! assert_eq!(header.kernel_offset(), 1024);
//! assert_eq!(detect_payload_format(&image)?, PayloadFormat::Gzip);
//! assert_eq!(decompress_payload(&image, 1 << 20)?, vmlinux);
//! # Ok::<(), vmkit_kernel::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod elf;
mod error;
pub mod header;
pub mod multiboot;
mod payload;

pub use elf::{ElfImage, ElfSegment, VmlinuxInfo};
pub use error::{Error, Result};
pub use header::SetupHeader;
pub use payload::{
    decompress, decompress_payload, detect_format, detect_payload_format, payload, PayloadFormat,
    DEFAULT_OUTPUT_LIMIT, ELF_MAGIC,
};
