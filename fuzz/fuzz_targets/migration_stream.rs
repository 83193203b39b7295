//! The migration stream a destination reads (`-incoming`, `migrate-incoming`): header,
//! sections with their length limit and checksums, their order, the JSON of the config,
//! devices, KVM VM and vCPU sections, and the RAM and shadow-RAM pages handed on one by
//! one.
//!
//! Most inputs fail a section's crc32 at once; the first input byte picks whether the
//! target repairs every checksum first (so the fuzzer reaches the payload parsers).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_vmm::migration::{decode_stream, PageTarget, MAGIC, MAX_SECTION};

const RAM: u64 = 32 << 20;

/// Rewrites each section's crc32 so that it matches (stops at the first truncated one).
fn fix_checksums(stream: &mut [u8]) {
    let mut at = 12;
    while at + 5 <= stream.len() {
        let len = u32::from_le_bytes([
            stream[at + 1],
            stream[at + 2],
            stream[at + 3],
            stream[at + 4],
        ]);
        if len > MAX_SECTION {
            return;
        }
        let end = at + 5 + len as usize;
        if end + 4 > stream.len() {
            return;
        }
        let crc = crc32fast::hash(&stream[at..end]);
        stream[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        at = end + 4;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let mut stream = stream.to_vec();
    if mode & 1 == 1 {
        if stream.len() >= 12 {
            stream[..8].copy_from_slice(MAGIC);
        }
        fix_checksums(&mut stream);
    }
    let _ = decode_stream(
        stream.as_slice(),
        |_config| Ok(()),
        |target, page| {
            assert_eq!(page.len(), 4096, "a page of {} bytes", page.len());
            let gpa = match target {
                PageTarget::Ram(gpa) => gpa,
                PageTarget::Shadow(offset) => {
                    assert!((0xc_0000..0x10_0000).contains(&offset) && offset % 4096 == 0);
                    return Ok(());
                }
            };
            if gpa >= RAM {
                return Err(vmkit_vmm::Error::Machine(format!(
                    "page {gpa:#x} outside RAM"
                )));
            }
            Ok(())
        },
    );
});
