//! Synthetic bzImages in every supported format round-trip to their ELF; corrupt and
//! truncated images give errors; random bytes never panic.

use std::io::Write;

use proptest::prelude::*;
use vmkit_kernel::header::{LOADED_HIGH, XLF_KERNEL_64};
use vmkit_kernel::{
    decompress, decompress_payload, detect_payload_format, Error, PayloadFormat, SetupHeader,
    VmlinuxInfo,
};

const SETUP_SECTS: u8 = 3;
const ENTRY: u64 = 0x0100_0000;

/// A fake x86-64 vmlinux: a real ELF64 header, then `len` bytes of mixed compressible
/// (repeated text) and incompressible (xorshift) data.
fn fake_vmlinux(len: usize) -> Vec<u8> {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // ELFCLASS64
    elf[5] = 1; // little-endian
    elf[6] = 1;
    elf[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    elf[0x18..0x20].copy_from_slice(&ENTRY.to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&5u16.to_le_bytes());
    let mut state = 0x1234_5678_9abc_def0u64;
    while elf.len() < len {
        if (elf.len() / 4096) % 2 == 0 {
            elf.extend_from_slice(b"mov rax, [rbx+8]; call printk; ");
        } else {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            elf.extend_from_slice(&state.to_le_bytes());
        }
    }
    elf.truncate(len);
    elf
}

fn compress(format: PayloadFormat, data: &[u8]) -> Vec<u8> {
    let mut out = match format {
        PayloadFormat::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(data).unwrap();
            gz.finish().unwrap()
        }
        PayloadFormat::Xz => {
            // As the kernel's xz_wrap.sh: CRC32 check and the x86 BCJ filter.
            let mut options = lzma_rust2::XzOptions::with_preset(6);
            options.set_check_sum_type(lzma_rust2::CheckType::Crc32);
            options.prepend_pre_filter(lzma_rust2::FilterType::BcjX86, 0);
            let mut xz = lzma_rust2::XzWriter::new(Vec::new(), options).unwrap();
            xz.write_all(data).unwrap();
            xz.finish().unwrap()
        }
        PayloadFormat::Lzma => {
            // Unknown size in the header, as when lzma compresses from a pipe.
            let options = lzma_rust2::LzmaOptions::with_preset(6);
            let mut lzma =
                lzma_rust2::LzmaWriter::new_use_header(Vec::new(), &options, None).unwrap();
            lzma.write_all(data).unwrap();
            lzma.finish().unwrap()
        }
        PayloadFormat::Lz4 => lz4_legacy(data),
        PayloadFormat::Zstd => {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        }
        PayloadFormat::Bzip2 => {
            let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            bz.write_all(data).unwrap();
            bz.finish().unwrap()
        }
        PayloadFormat::Lzo => {
            // lzop's magic and a header; the blocks do not matter for the unsupported path.
            let mut lzo = vec![0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a];
            lzo.extend_from_slice(&[0; 32]);
            lzo
        }
    };
    // The kernel build appends the uncompressed size (size_append).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The LZ4 legacy framing: magic, then (LE compressed size, block) per 8 MiB of input.
fn lz4_legacy(data: &[u8]) -> Vec<u8> {
    let mut out = 0x184C_2102u32.to_le_bytes().to_vec();
    for chunk in data.chunks(8 << 20) {
        let block = lz4_flex::block::compress(chunk);
        out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

struct Image {
    bytes: Vec<u8>,
    payload_start: usize,
}

/// A bzImage with protocol `version` around `payload` (placed `payload_offset` bytes into
/// the protected-mode part, after some fake decompressor code).
fn bzimage(version: u16, payload: &[u8], payload_offset: u32) -> Image {
    let kernel_offset = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut bytes = vec![0u8; kernel_offset];
    bytes[0x1f1] = SETUP_SECTS;
    bytes[0x1f4..0x1f8].copy_from_slice(&0x1234u32.to_le_bytes());
    bytes[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    bytes[0x202..0x206].copy_from_slice(b"HdrS");
    bytes[0x206..0x208].copy_from_slice(&version.to_le_bytes());
    bytes[0x211] = LOADED_HIGH;
    bytes[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    bytes[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    bytes[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
    bytes[0x234] = 1;
    bytes[0x235] = 21;
    bytes[0x236..0x238].copy_from_slice(&(XLF_KERNEL_64 | 2).to_le_bytes());
    bytes[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
    bytes[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
    bytes[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
    bytes[0x260..0x264].copy_from_slice(&0x200_0000u32.to_le_bytes());
    bytes[0x264..0x268].copy_from_slice(&0x190u32.to_le_bytes());
    bytes.resize(kernel_offset + payload_offset as usize, 0x90);
    let payload_start = bytes.len();
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&[0xcc; 100]); // decompressor code after the payload
    Image {
        bytes,
        payload_start,
    }
}

const SUPPORTED: [PayloadFormat; 6] = [
    PayloadFormat::Gzip,
    PayloadFormat::Xz,
    PayloadFormat::Lzma,
    PayloadFormat::Lz4,
    PayloadFormat::Zstd,
    PayloadFormat::Bzip2,
];

#[test]
fn setup_header_fields_are_read() {
    let image = bzimage(
        0x020f,
        &compress(PayloadFormat::Gzip, &fake_vmlinux(100)),
        0x40,
    );
    let header = SetupHeader::parse(&image.bytes).unwrap();
    assert_eq!(header.setup_sects, SETUP_SECTS);
    assert_eq!(header.setup_sectors(), 3);
    assert_eq!(header.kernel_offset(), 2048);
    assert_eq!(header.syssize, 0x1234);
    assert_eq!(header.version, 0x020f);
    assert!(header.loaded_high());
    assert_eq!(header.code32_start, 0x10_0000);
    assert_eq!(header.initrd_addr_max, 0x7fff_ffff);
    assert_eq!(header.kernel_alignment, 0x20_0000);
    assert!(header.relocatable_kernel);
    assert_eq!(header.min_alignment, 21);
    assert!(header.has_64bit_entry());
    assert_eq!(header.xloadflags, XLF_KERNEL_64 | 2);
    assert_eq!(header.cmdline_size, 2047);
    assert_eq!(header.payload_offset, 0x40);
    assert_eq!(header.pref_address, 0x100_0000);
    assert_eq!(header.init_size, 0x200_0000);
    assert_eq!(header.handover_offset, 0x190);
    let range = header.payload_range(image.bytes.len()).unwrap();
    assert_eq!(range.start, image.payload_start);
    assert_eq!(range.len(), header.payload_length as usize);
}

#[test]
fn setup_sects_zero_means_four() {
    let mut image = bzimage(0x020f, &[], 0).bytes;
    image[0x1f1] = 0;
    let header = SetupHeader::parse(&image).unwrap();
    assert_eq!(header.setup_sectors(), 4);
    assert_eq!(header.kernel_offset(), 5 * 512);
}

#[test]
fn fields_newer_than_the_protocol_read_as_zero() {
    let image = bzimage(0x0206, &[1, 2, 3], 0);
    let header = SetupHeader::parse(&image.bytes).unwrap();
    assert_eq!(header.version, 0x0206);
    assert_eq!(header.cmdline_size, 2047);
    assert_eq!((header.payload_offset, header.payload_length), (0, 0));
    assert_eq!(
        (header.xloadflags, header.init_size, header.pref_address),
        (0, 0, 0)
    );
    assert!(!header.has_64bit_entry());
    let err = detect_payload_format(&image.bytes).unwrap_err();
    assert!(matches!(
        err,
        Error::ProtocolTooOld {
            version: 0x0206,
            required: 0x0208,
            ..
        }
    ));
    assert!(err.to_string().contains("2.06"), "{err}");
}

#[test]
fn header_errors_name_the_field() {
    let good = bzimage(0x020f, &[1], 0).bytes;

    let mut bad = good.clone();
    bad[0x1fe] = 0;
    let err = SetupHeader::parse(&bad).unwrap_err();
    assert!(matches!(err, Error::BadBootFlag { found: 0xaa00 }), "{err}");
    assert!(err.to_string().contains("boot_flag"));

    let mut bad = good.clone();
    bad[0x202..0x206].copy_from_slice(b"HdrX");
    let err = SetupHeader::parse(&bad).unwrap_err();
    assert!(matches!(err, Error::BadHeaderMagic { .. }), "{err}");
    assert!(err.to_string().contains("HdrS"));

    let mut bad = good.clone();
    bad[0x206..0x208].copy_from_slice(&0x0204u16.to_le_bytes());
    let err = SetupHeader::parse(&bad).unwrap_err();
    assert!(matches!(
        err,
        Error::ProtocolTooOld {
            version: 0x0204,
            required: 0x0206,
            ..
        }
    ));
    assert!(
        err.to_string().contains("2.04") && err.to_string().contains("2.06"),
        "{err}"
    );

    let err = SetupHeader::parse(&good[..0x100]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                field: "boot_flag",
                ..
            }
        ),
        "{err}"
    );
    let err = SetupHeader::parse(&good[..0x250]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                field: "pref_address",
                offset: 0x258,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("pref_address"));
}

#[test]
fn every_magic_is_detected() {
    for format in PayloadFormat::ALL {
        let payload = compress(format, &fake_vmlinux(1000));
        let image = bzimage(0x020f, &payload, 0x100);
        assert_eq!(detect_payload_format(&image.bytes).unwrap(), format);
    }
    let image = bzimage(0x020f, b"MZ not compressed", 0);
    let err = detect_payload_format(&image.bytes).unwrap_err();
    assert!(matches!(err, Error::UnknownPayloadFormat { .. }), "{err}");
}

#[test]
fn every_supported_format_round_trips() {
    let vmlinux = fake_vmlinux(300_000);
    for format in SUPPORTED {
        let image = bzimage(0x020f, &compress(format, &vmlinux), 0x3c0);
        let out =
            decompress_payload(&image.bytes, 1 << 30).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert!(out == vmlinux, "{format}: output differs");
        let info = VmlinuxInfo::parse(&out).unwrap();
        assert_eq!(info.entry, ENTRY);
        assert_eq!(info.program_headers, 5);
    }
}

#[test]
fn payload_length_without_the_size_trailer_also_works() {
    let vmlinux = fake_vmlinux(50_000);
    for format in SUPPORTED {
        let mut payload = compress(format, &vmlinux);
        payload.truncate(payload.len() - 4);
        let image = bzimage(0x020f, &payload, 0);
        let out =
            decompress_payload(&image.bytes, 1 << 30).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert!(out == vmlinux, "{format}");
    }
}

#[test]
fn lz4_spans_several_legacy_chunks() {
    // 8 MiB chunks: 17 MiB of input needs three, and concatenated streams repeat the magic.
    let vmlinux = fake_vmlinux(17 << 20);
    let mut payload = lz4_legacy(&vmlinux[..9 << 20]);
    payload.extend_from_slice(&lz4_legacy(&vmlinux[9 << 20..]));
    payload.extend_from_slice(&(vmlinux.len() as u32).to_le_bytes());
    assert!(decompress(&payload, 1 << 30).unwrap() == vmlinux);
}

#[test]
fn output_limit_is_an_error_not_an_allocation() {
    let vmlinux = fake_vmlinux(200_000);
    for format in SUPPORTED {
        let payload = compress(format, &vmlinux);
        let err = decompress(&payload, 100_000).unwrap_err();
        assert!(
            matches!(err, Error::OutputLimit { limit: 100_000, format: f } if f == format),
            "{format}: {err}"
        );
        // Exactly the size fits.
        assert_eq!(
            decompress(&payload, vmlinux.len()).unwrap().len(),
            vmlinux.len()
        );
    }
}

#[test]
fn corrupt_payloads_give_errors() {
    let vmlinux = fake_vmlinux(100_000);
    for format in SUPPORTED {
        let payload = compress(format, &vmlinux);
        // Flip bytes in the middle of the compressed data.
        let mut flipped = payload.clone();
        let middle = flipped.len() / 2;
        for byte in &mut flipped[middle..middle + 16] {
            *byte ^= 0x5a;
        }
        match decompress(&flipped, 1 << 30) {
            Err(Error::Corrupt { format: f, .. }) => assert_eq!(f, format),
            Err(e) => panic!("{format}: unexpected error {e}"),
            // gzip, xz, zstd and bzip2 carry a checksum of the content: corruption must be
            // caught. Legacy lzma and lz4 have none, so they can only be wrong, never right.
            Ok(out) => {
                let unchecked = matches!(format, PayloadFormat::Lzma | PayloadFormat::Lz4);
                assert!(
                    unchecked,
                    "{format}: corrupt data decompressed to {} bytes",
                    out.len()
                );
                assert!(out != vmlinux, "{format}: corrupt data gave the original");
            }
        }
    }
}

#[test]
fn lz4_size_trailer_is_checked() {
    let vmlinux = fake_vmlinux(10_000);
    let mut payload = compress(PayloadFormat::Lz4, &vmlinux);
    let at = payload.len() - 4;
    payload[at..].copy_from_slice(&20_000u32.to_le_bytes());
    let err = decompress(&payload, 1 << 30).unwrap_err();
    assert!(err.to_string().contains("size trailer says 20000"), "{err}");
}

#[test]
fn truncated_payloads_give_errors() {
    let vmlinux = fake_vmlinux(100_000);
    for format in SUPPORTED {
        let payload = compress(format, &vmlinux);
        for keep in [payload.len() * 2 / 3, 20, 7] {
            let err = decompress(&payload[..keep], 1 << 30).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Corrupt { .. } | Error::UnknownPayloadFormat { .. }
                ),
                "{format} cut to {keep}: {err}"
            );
        }
    }
}

#[test]
fn truncated_image_reports_the_payload_bounds() {
    let image = bzimage(
        0x020f,
        &compress(PayloadFormat::Gzip, &fake_vmlinux(5000)),
        0x10,
    );
    let cut = &image.bytes[..image.payload_start + 10];
    let err = decompress_payload(cut, 1 << 30).unwrap_err();
    assert!(matches!(err, Error::PayloadOutOfBounds { .. }), "{err}");
}

#[test]
fn non_elf_output_is_rejected() {
    let payload = compress(PayloadFormat::Gzip, b"MZ a PE file, not a vmlinux");
    let err = decompress(&payload, 1 << 20).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotElf {
                format: PayloadFormat::Gzip,
                len: 27,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("7f 45 4c 46"));
}

#[test]
fn lzo_is_detected_but_unsupported() {
    let image = bzimage(0x020f, &compress(PayloadFormat::Lzo, b"x"), 0);
    assert_eq!(
        detect_payload_format(&image.bytes).unwrap(),
        PayloadFormat::Lzo
    );
    let err = decompress_payload(&image.bytes, 1 << 20).unwrap_err();
    assert!(matches!(err, Error::UnsupportedFormat(PayloadFormat::Lzo)));
    assert!(err.to_string().contains("guest decompression"), "{err}");
}

#[test]
fn elf_header_checks() {
    let good = fake_vmlinux(64);
    assert_eq!(VmlinuxInfo::parse(&good).unwrap().entry, ENTRY);
    let mut bad = good.clone();
    bad[4] = 1;
    assert!(VmlinuxInfo::parse(&bad).is_err());
    let mut bad = good.clone();
    bad[0x12] = 3;
    assert!(VmlinuxInfo::parse(&bad).is_err());
    assert!(VmlinuxInfo::parse(&good[..0x20]).is_err());
    assert!(VmlinuxInfo::parse(b"").is_err());
}

fn arbitrary_format() -> impl Strategy<Value = PayloadFormat> {
    proptest::sample::select(PayloadFormat::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random bytes, or a valid header with random bytes after it, never panic.
    #[test]
    fn random_images_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1500),
        version in 0x0200u16..0x0210,
        header_first in any::<bool>(),
    ) {
        let image = if header_first {
            let mut image = bzimage(version, &bytes, (bytes.len() % 7) as u32).bytes;
            let garble = bytes.len() % 0x80;
            image[0x1f1] = bytes.first().copied().unwrap_or(0);
            image[0x248 + garble % 8] ^= bytes.last().copied().unwrap_or(0);
            image
        } else {
            bytes
        };
        let _ = SetupHeader::parse(&image);
        let _ = detect_payload_format(&image);
        let _ = decompress_payload(&image, 1 << 20);
    }

    /// A known magic followed by garbage never panics and never exceeds the limit.
    #[test]
    fn garbage_after_a_magic_never_panics(
        format in arbitrary_format(),
        tail in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut payload = format.magic().to_vec();
        payload.extend_from_slice(&tail);
        if let Ok(out) = decompress(&payload, 1 << 16) {
            prop_assert!(out.len() <= 1 << 16);
            prop_assert!(out.starts_with(b"\x7fELF"));
        }
    }

    /// Single-byte corruption of a real stream gives an error or the right ELF, never a panic.
    #[test]
    fn mutated_streams_never_panic(
        format_index in 0usize..6,
        position in any::<proptest::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let format = SUPPORTED[format_index];
        let vmlinux = fake_vmlinux(4000);
        let mut payload = compress(format, &vmlinux);
        let at = position.index(payload.len());
        payload[at] ^= xor;
        if let Ok(out) = decompress(&payload, 1 << 20) {
            prop_assert!(out.len() <= 1 << 20);
        }
    }
}
