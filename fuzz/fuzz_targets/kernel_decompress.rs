//! Host decompression of a kernel payload (gzip, xz, lzma, zstd, lz4, bzip2 as supported)
//! with an output cap: a bomb must stop at the cap.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_kernel::{decompress, decompress_payload};

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = decompress(data, LIMIT) {
        assert!(
            out.len() <= LIMIT,
            "{} bytes out past the {LIMIT}-byte cap",
            out.len()
        );
    }
    if let Ok(out) = decompress_payload(data, LIMIT) {
        assert!(
            out.len() <= LIMIT,
            "{} bytes out past the {LIMIT}-byte cap",
            out.len()
        );
    }
});
