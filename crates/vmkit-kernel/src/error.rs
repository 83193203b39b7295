//! The crate's error type.

use crate::PayloadFormat;

/// Everything that can go wrong while reading a bzImage or decompressing its payload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image ends before a header field the boot protocol defines.
    #[error(
        "bzImage truncated: field `{field}` at offset {offset:#x} needs {needed} bytes, the image has {len} bytes"
    )]
    Truncated {
        /// Name of the field (as in the kernel's boot protocol document).
        field: &'static str,
        /// Offset of the field in the image.
        offset: usize,
        /// Bytes the field needs (offset + size).
        needed: usize,
        /// Length of the image that was given.
        len: usize,
    },
    /// `boot_flag` at 0x1FE is not 0xAA55.
    #[error("not a Linux boot image: boot_flag at 0x1fe is {found:#06x}, expected 0xaa55")]
    BadBootFlag {
        /// The value found.
        found: u16,
    },
    /// `header` at 0x202 is not "HdrS".
    #[error(
        "not a Linux bzImage: header at 0x202 is {found:#010x}, expected 0x53726448 (\"HdrS\"); zImages before boot protocol 2.00 are not supported"
    )]
    BadHeaderMagic {
        /// The value found (little-endian).
        found: u32,
    },
    /// The kernel's boot protocol version is older than a feature needs.
    #[error(
        "boot protocol version {}.{:02} is too old: {what} needs {}.{:02} or later",
        version >> 8, version & 0xff, required >> 8, required & 0xff
    )]
    ProtocolTooOld {
        /// The image's `version` field.
        version: u16,
        /// The lowest version that has the feature.
        required: u16,
        /// The feature (for example "64-bit boot").
        what: &'static str,
    },
    /// The payload (or the protected-mode code) lies outside the image.
    #[error(
        "bzImage payload at file offset {offset:#x} with length {length:#x} lies outside the {len}-byte image (truncated file?)"
    )]
    PayloadOutOfBounds {
        /// File offset of the payload.
        offset: u64,
        /// Length of the payload from the header.
        length: u64,
        /// Length of the image.
        len: usize,
    },
    /// The payload starts with no magic number this crate knows.
    #[error(
        "unknown bzImage payload format (first bytes {magic:02x?}): expected gzip, xz, lzma, lz4, zstd, bzip2 or lzo"
    )]
    UnknownPayloadFormat {
        /// Up to the first 8 bytes of the payload.
        magic: Vec<u8>,
    },
    /// The payload format is known but this crate has no host decompressor for it.
    #[error(
        "payload format {0} not supported for host decompression: boot the bzImage with guest decompression instead"
    )]
    UnsupportedFormat(PayloadFormat),
    /// The uncompressed kernel would exceed the caller's output limit.
    #[error(
        "{format} payload decompresses to more than the {limit}-byte limit; raise the limit if the kernel is really that large"
    )]
    OutputLimit {
        /// Format of the payload.
        format: PayloadFormat,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The compressed data is corrupt or truncated.
    #[error("corrupt {format} payload: {reason}")]
    Corrupt {
        /// Format of the payload.
        format: PayloadFormat,
        /// What the decompressor reported.
        reason: String,
    },
    /// The decompressed payload is not an ELF file.
    #[error(
        "{format} payload decompressed to {len} bytes that are not an ELF vmlinux (first bytes {first:02x?}, expected 7f 45 4c 46)"
    )]
    NotElf {
        /// Format of the payload.
        format: PayloadFormat,
        /// Output length.
        len: usize,
        /// Up to the first 4 bytes of the output.
        first: Vec<u8>,
    },
    /// An ELF image that is not a 64-bit little-endian x86-64 executable, or whose program
    /// headers, segments or PVH note are truncated or corrupt (the text says which).
    #[error("{0}")]
    Elf(String),
    /// A multiboot header magic was found but no checksum matched.
    #[error(
        "multiboot header at file offset {offset:#x}: checksum {checksum:#010x} is wrong for flags {flags:#010x} (magic + flags + checksum must be 0, so checksum must be {expected:#010x})"
    )]
    MultibootChecksum {
        /// File offset of the (first) magic.
        offset: usize,
        /// Its `flags`.
        flags: u32,
        /// Its `checksum`.
        checksum: u32,
        /// The checksum that would be right.
        expected: u32,
    },
    /// A multiboot header field is inconsistent with the others or with the file.
    #[error("multiboot header field `{field}`: {reason}")]
    MultibootHeader {
        /// The field (as the Multiboot Specification names it).
        field: &'static str,
        /// What is wrong, with the values and the limit.
        reason: String,
    },
    /// A multiboot kernel without a.out-kludge fields is not a loadable ELF32.
    #[error("multiboot ELF kernel: {reason}")]
    MultibootElf {
        /// What is wrong.
        reason: String,
    },
    /// Part of a multiboot kernel, or something the loader places, does not fit the guest.
    #[error("multiboot kernel: {what} {reason}")]
    MultibootPlacement {
        /// The segment, module or table.
        what: String,
        /// Why it does not fit, with the limit.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
