//! Decompresses a real distribution bzImage when `VMKIT_TEST_KERNEL` names one (the project's
//! kernel fetch script exports it); skipped with a printed reason otherwise.

use std::time::Instant;

use vmkit_kernel::{
    decompress_payload, detect_payload_format, SetupHeader, VmlinuxInfo, DEFAULT_OUTPUT_LIMIT,
};

#[test]
fn real_kernel_decompresses_to_an_elf_with_an_entry_point() {
    let Some(path) = std::env::var_os("VMKIT_TEST_KERNEL") else {
        println!("SKIPPED real_kernel_decompresses_to_an_elf_with_an_entry_point: VMKIT_TEST_KERNEL is not set");
        return;
    };
    let image = match std::fs::read(&path) {
        Ok(image) => image,
        Err(e) => {
            println!("SKIPPED real_kernel_decompresses_to_an_elf_with_an_entry_point: cannot read {}: {e}", path.to_string_lossy());
            return;
        }
    };
    let header = SetupHeader::parse(&image).unwrap();
    assert!(header.version >= 0x020c, "version {:#x}", header.version);
    assert!(header.has_64bit_entry());
    assert!(header.relocatable_kernel);
    let format = detect_payload_format(&image).unwrap();

    let start = Instant::now();
    let vmlinux = decompress_payload(&image, DEFAULT_OUTPUT_LIMIT).unwrap();
    let elapsed = start.elapsed();

    let info = VmlinuxInfo::parse(&vmlinux).unwrap();
    assert_ne!(info.entry, 0);
    assert!(info.program_headers > 0);
    // init_size covers the decompressed kernel plus its early bss and page tables.
    assert!(vmlinux.len() < header.init_size as usize);
    println!(
        "{}: protocol {}.{:02}, {format} payload of {} bytes -> {} byte vmlinux in {:?}, entry {:#x}, {} program headers",
        path.to_string_lossy(),
        header.version >> 8,
        header.version & 0xff,
        header.payload_length,
        vmlinux.len(),
        elapsed,
        info.entry,
        info.program_headers
    );
}
