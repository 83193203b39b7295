//! Finding, identifying and decompressing the bzImage payload (the compressed vmlinux).

use std::fmt;
use std::io::Read;

use crate::header::SetupHeader;
use crate::{Error, Result};

/// Default output limit for [`decompress_payload`]: 1 GiB (distribution kernels are 30-80 MiB).
pub const DEFAULT_OUTPUT_LIMIT: usize = 1 << 30;

/// The ELF magic every decompressed x86 payload starts with.
pub const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

/// Magic of the LZ4 "legacy" stream the kernel's `lz4 -l` produces.
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Largest uncompressed chunk of an LZ4 legacy stream.
const LZ4_LEGACY_CHUNK: usize = 8 << 20;
/// Never preallocate more than this from the (untrusted) size trailer.
const PREALLOC_CAP: usize = 256 << 20;

/// Compression format of a bzImage payload (the kernel's `CONFIG_KERNEL_*` choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// gzip (`1f 8b`).
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`), with the x86 BCJ filter the kernel build uses.
    Xz,
    /// The legacy .lzma format (`5d 00 00`).
    Lzma,
    /// LZ4 legacy framing (`02 21 4c 18`).
    Lz4,
    /// Zstandard (`28 b5 2f fd`).
    Zstd,
    /// bzip2 (`BZh`).
    Bzip2,
    /// lzop (`89 4c 5a 4f`).
    Lzo,
}

impl PayloadFormat {
    /// Every format, in detection order.
    pub const ALL: [PayloadFormat; 7] = [
        PayloadFormat::Gzip,
        PayloadFormat::Xz,
        PayloadFormat::Lzma,
        PayloadFormat::Lz4,
        PayloadFormat::Zstd,
        PayloadFormat::Bzip2,
        PayloadFormat::Lzo,
    ];

    /// The magic bytes a payload of this format starts with.
    pub fn magic(self) -> &'static [u8] {
        match self {
            PayloadFormat::Gzip => &[0x1f, 0x8b],
            PayloadFormat::Xz => &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
            PayloadFormat::Lzma => &[0x5d, 0x00, 0x00],
            PayloadFormat::Lz4 => &[0x02, 0x21, 0x4c, 0x18],
            PayloadFormat::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            PayloadFormat::Bzip2 => b"BZh",
            PayloadFormat::Lzo => &[0x89, 0x4c, 0x5a, 0x4f],
        }
    }

    /// Identifies a compressed stream by its first bytes.
    pub fn from_magic(data: &[u8]) -> Option<PayloadFormat> {
        PayloadFormat::ALL
            .into_iter()
            .find(|format| data.starts_with(format.magic()))
    }

    /// True when this crate can decompress the format on the host.
    pub fn host_supported(self) -> bool {
        !matches!(self, PayloadFormat::Lzo)
    }

    /// Name as in the kernel's `CONFIG_KERNEL_*` option, lower case.
    pub fn name(self) -> &'static str {
        match self {
            PayloadFormat::Gzip => "gzip",
            PayloadFormat::Xz => "xz",
            PayloadFormat::Lzma => "lzma",
            PayloadFormat::Lz4 => "lz4",
            PayloadFormat::Zstd => "zstd",
            PayloadFormat::Bzip2 => "bzip2",
            PayloadFormat::Lzo => "lzo",
        }
    }
}

impl fmt::Display for PayloadFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The compressed payload bytes of a bzImage (parses the setup header to find them).
pub fn payload(image: &[u8]) -> Result<&[u8]> {
    let header = SetupHeader::parse(image)?;
    let range = header.payload_range(image.len())?;
    image.get(range).ok_or(Error::PayloadOutOfBounds {
        offset: header.kernel_offset() + u64::from(header.payload_offset),
        length: u64::from(header.payload_length),
        len: image.len(),
    })
}

/// Identifies the compression format of a bzImage's payload from its magic number.
pub fn detect_payload_format(image: &[u8]) -> Result<PayloadFormat> {
    detect_format(payload(image)?)
}

/// Identifies a bare compressed stream (a payload already cut out of its bzImage).
pub fn detect_format(data: &[u8]) -> Result<PayloadFormat> {
    PayloadFormat::from_magic(data).ok_or_else(|| Error::UnknownPayloadFormat {
        magic: data.iter().take(8).copied().collect(),
    })
}

/// Decompresses a bzImage's payload to the ELF vmlinux it carries.
///
/// `limit` caps the output size (use [`DEFAULT_OUTPUT_LIMIT`] when unsure): a larger output
/// is an [`Error::OutputLimit`], never an out-of-memory abort. The result is checked to
/// start with the ELF magic.
pub fn decompress_payload(image: &[u8], limit: usize) -> Result<Vec<u8>> {
    decompress(payload(image)?, limit)
}

/// Decompresses a bare payload (format from its magic) to the ELF vmlinux.
///
/// The kernel build appends the uncompressed size as 4 little-endian bytes after the
/// compressed stream, and `payload_length` counts them. Each decoder stops at the end of its
/// own stream, so the trailer is optional here; when present it only sizes the first
/// allocation.
pub fn decompress(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let format = detect_format(data)?;
    let hint = size_trailer(data).filter(|&size| size <= limit);
    let output = match format {
        PayloadFormat::Gzip => {
            read_limited(format, flate2::read::GzDecoder::new(data), limit, hint)?
        }
        PayloadFormat::Xz => {
            let reader = lzma_rust2::XzReader::new_mem_limit(data, false, dict_limit_kib(limit));
            read_limited(format, reader, limit, hint)?
        }
        PayloadFormat::Lzma => {
            let reader = lzma_rust2::LzmaReader::new_mem_limit(data, dict_limit_kib(limit), None)
                .map_err(|e| corrupt(format, e))?;
            read_limited(format, reader, limit, hint)?
        }
        PayloadFormat::Lz4 => lz4_legacy(data, limit, hint)?,
        PayloadFormat::Zstd => zstd(data, limit, hint)?,
        PayloadFormat::Bzip2 => {
            read_limited(format, bzip2::read::BzDecoder::new(data), limit, hint)?
        }
        PayloadFormat::Lzo => return Err(Error::UnsupportedFormat(format)),
    };
    if !output.starts_with(&ELF_MAGIC) {
        return Err(Error::NotElf {
            format,
            len: output.len(),
            first: output.iter().take(4).copied().collect(),
        });
    }
    Ok(output)
}

/// The 4-byte little-endian uncompressed size the kernel build appends to the payload.
fn size_trailer(data: &[u8]) -> Option<usize> {
    let start = data.len().checked_sub(4)?;
    let bytes: [u8; 4] = data.get(start..)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(bytes)).ok()
}

/// Memory limit for the LZMA/xz dictionary: a dictionary larger than the whole output is
/// never needed, but kernels use 32-64 MiB dictionaries, so small limits still allow those.
fn dict_limit_kib(limit: usize) -> u32 {
    let bytes = limit.max(192 << 20);
    u32::try_from(bytes / 1024).unwrap_or(u32::MAX)
}

fn corrupt(format: PayloadFormat, error: impl fmt::Display) -> Error {
    Error::Corrupt {
        format,
        reason: error.to_string(),
    }
}

/// Reads a decoder to its end, stopping with [`Error::OutputLimit`] one byte past `limit`.
fn read_limited(
    format: PayloadFormat,
    reader: impl Read,
    limit: usize,
    hint: Option<usize>,
) -> Result<Vec<u8>> {
    let mut output = Vec::with_capacity(hint.unwrap_or(0).min(PREALLOC_CAP));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut output)
        .map_err(|e| corrupt(format, e))?;
    if output.len() > limit {
        return Err(Error::OutputLimit { format, limit });
    }
    Ok(output)
}

/// Decodes one zstd frame and checks its content checksum (ruzstd computes it but leaves
/// the comparison to the caller).
fn zstd(data: &[u8], limit: usize, hint: Option<usize>) -> Result<Vec<u8>> {
    const FORMAT: PayloadFormat = PayloadFormat::Zstd;
    let mut decoder =
        ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| corrupt(FORMAT, e))?;
    let output = read_limited(FORMAT, &mut decoder, limit, hint)?;
    let frame = &decoder.decoder;
    if let (Some(stored), Some(computed)) = (
        frame.get_checksum_from_data(),
        frame.get_calculated_checksum(),
    ) {
        if stored != computed {
            return Err(corrupt(
                FORMAT,
                format_args!(
                    "content checksum {computed:#010x} does not match the stored {stored:#010x}"
                ),
            ));
        }
    }
    Ok(output)
}

/// Decodes the LZ4 legacy framing: the magic, then chunks of (u32 LE compressed size, LZ4
/// block) each decoding to at most 8 MiB. A chunk size equal to the magic starts a new
/// concatenated stream. Four bytes left over whose value exceeds what remains are the
/// kernel's size trailer.
fn lz4_legacy(data: &[u8], limit: usize, hint: Option<usize>) -> Result<Vec<u8>> {
    const FORMAT: PayloadFormat = PayloadFormat::Lz4;
    let mut rest = data.get(4..).unwrap_or_default();
    let mut output = Vec::with_capacity(hint.unwrap_or(0).min(PREALLOC_CAP));
    while let Some((size_bytes, body)) = rest.split_first_chunk::<4>() {
        let size = u32::from_le_bytes(*size_bytes);
        if size == LZ4_LEGACY_MAGIC {
            rest = body;
            continue;
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > body.len() {
            if body.is_empty() && !output.is_empty() {
                // The size trailer: no checksum in this format, so check the length at least.
                if size != output.len() {
                    return Err(corrupt(
                        FORMAT,
                        format_args!(
                            "decoded {} bytes but the size trailer says {size}",
                            output.len()
                        ),
                    ));
                }
                rest = body;
                break;
            }
            return Err(corrupt(
                FORMAT,
                format_args!(
                    "chunk of {size} bytes at payload offset {} but only {} bytes remain",
                    data.len() - rest.len(),
                    body.len()
                ),
            ));
        }
        let (chunk, after) = body.split_at(size);
        rest = after;
        let room = LZ4_LEGACY_CHUNK.min(limit - output.len());
        let start = output.len();
        output.resize(start + room, 0);
        let written = lz4_flex::block::decompress_into(chunk, &mut output[start..]);
        match written {
            Ok(n) => output.truncate(start + n),
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. })
                if room < LZ4_LEGACY_CHUNK =>
            {
                return Err(Error::OutputLimit {
                    format: FORMAT,
                    limit,
                })
            }
            Err(e) => return Err(corrupt(FORMAT, e)),
        }
    }
    if !rest.is_empty() {
        return Err(corrupt(
            FORMAT,
            format_args!("{} stray bytes after the last chunk", rest.len()),
        ));
    }
    Ok(output)
}
