//! vmkit-kernel's image parsers: the bzImage setup header and payload range, the ELF
//! vmlinux check, payload format detection.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_kernel::{detect_format, detect_payload_format, payload, SetupHeader, VmlinuxInfo};

fuzz_target!(|image: &[u8]| {
    if let Ok(header) = SetupHeader::parse(image) {
        let _ = (
            header.setup_sectors(),
            header.kernel_offset(),
            header.has_64bit_entry(),
            header.loaded_high(),
            header.payload_range(image.len()),
        );
    }
    let _ = VmlinuxInfo::parse(image);
    let _ = payload(image);
    let _ = detect_payload_format(image);
    let _ = detect_format(image);
});
