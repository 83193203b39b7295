//! Firmware mapping, without KVM: the flat view, the bytes the guest would see, errors.

use std::path::PathBuf;

use vm_memory::{Bytes, GuestAddress};
use vmkit_memory::{AddressSpace, SectionKind};
use vmkit_pc::firmware::{FIRMWARE_MAX_SIZE, RESET_VECTOR};
use vmkit_pc::layout::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};
use vmkit_pc::{build_memory, load_firmware, map_firmware, Error, FirmwareLayout};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const FOUR_GIB: u64 = 1 << 32;

/// An image whose every 4-byte word holds its own offset, so any byte tells where it came from.
fn numbered_image(size: u64) -> Vec<u8> {
    (0..size / 4)
        .flat_map(|i| ((i * 4) as u32).to_le_bytes())
        .collect()
}

fn word_at(space: &AddressSpace, addr: u64) -> u32 {
    space
        .memory_snapshot()
        .read_obj::<u32>(GuestAddress(addr))
        .unwrap()
}

/// ROM sections of the flat view as (guest address, size, offset in the image, name).
fn rom_sections(space: &AddressSpace) -> Vec<(u64, u64, u64, String)> {
    space
        .flat_view()
        .iter()
        .filter(|s| s.kind == SectionKind::Rom)
        .map(|s| (s.guest_addr, s.size, s.offset_in_region, s.name.to_string()))
        .collect()
}

#[test]
fn a_256_kib_image_ends_at_4_gib_and_its_last_128_kib_below_1_mib() {
    let mut space = AddressSpace::new("system");
    build_memory(&mut space, 64 * MIB).unwrap();
    let size = 256 * KIB;
    let firmware = map_firmware(&mut space, &numbered_image(size)).unwrap();
    assert_eq!(
        firmware.layout,
        FirmwareLayout {
            size,
            base: FOUR_GIB - size,
            isa_size: 128 * KIB,
            isa_base: 0xe_0000,
            isa_offset: 128 * KIB,
        }
    );
    let bios = "pc.bios".to_string();
    assert_eq!(
        rom_sections(&space),
        vec![
            (0xe_0000, 128 * KIB, 128 * KIB, bios.clone()),
            (FOUR_GIB - size, size, 0, bios),
        ]
    );
    assert_eq!(space.region_name(firmware.isa_alias).unwrap(), "isa-bios");
    assert_eq!(space.region_size(firmware.rom).unwrap(), size);

    // The reset vector reads the image's 16th byte from the end, at 4 GiB and through the
    // alias at 0xffff0.
    assert_eq!(word_at(&space, RESET_VECTOR), (size - 16) as u32);
    assert_eq!(word_at(&space, 0xf_fff0), (size - 16) as u32);
    assert_eq!(word_at(&space, 0xe_0000), (128 * KIB) as u32);
    assert_eq!(word_at(&space, FOUR_GIB - size), 0);

    // RAM around it is untouched: still two RAM sections, the legacy hole below 0xe0000 empty.
    assert!(space.lookup(0xd_ffff).is_none());
    assert_eq!(
        space.lookup(0x9_ffff).map(|s| s.kind),
        Some(SectionKind::Ram)
    );
    assert_eq!(space.lookup(MIB).map(|s| s.kind), Some(SectionKind::Ram));
}

#[test]
fn a_small_image_is_aliased_whole() {
    let mut space = AddressSpace::new("system");
    build_memory(&mut space, 16 * MIB).unwrap();
    let firmware = map_firmware(&mut space, &numbered_image(4 * KIB)).unwrap();
    assert_eq!(firmware.layout.isa_size, 4 * KIB);
    assert_eq!(firmware.layout.isa_base, 0xf_f000);
    assert_eq!(firmware.layout.isa_offset, 0);
    assert_eq!(
        rom_sections(&space),
        vec![
            (0xf_f000, 4 * KIB, 0, "pc.bios".to_string()),
            (0xffff_f000, 4 * KIB, 0, "pc.bios".to_string()),
        ]
    );
    assert_eq!(word_at(&space, 0xf_f000), 0);
    assert_eq!(word_at(&space, 0xf_fffc), 4092);
}

#[test]
fn the_isa_alias_wins_over_ram_mapped_there() {
    // A machine that maps RAM over the legacy hole (as a later PAM model may) still shows the
    // BIOS at 0xe0000.. because the alias has the higher priority.
    let mut space = AddressSpace::new("system");
    let ram = space.new_ram("ram", 2 * MIB).unwrap();
    space.add_subregion(space.root(), 0, ram).unwrap();
    map_firmware(&mut space, &numbered_image(128 * KIB)).unwrap();
    let section = space.lookup(0xe_0000).unwrap();
    assert_eq!(
        (section.kind, &*section.name),
        (SectionKind::Rom, "pc.bios")
    );
    assert_eq!(
        space.lookup(0xd_f000).map(|s| s.kind),
        Some(SectionKind::Ram)
    );
    assert_eq!(space.lookup(MIB).map(|s| s.kind), Some(SectionKind::Ram));
}

#[test]
fn the_largest_image_stays_clear_of_kvm_pages_and_ram() {
    let mut space = AddressSpace::new("system");
    let layout = build_memory(&mut space, 3 * 1024 * MIB).unwrap();
    let firmware = map_firmware(&mut space, &vec![0u8; FIRMWARE_MAX_SIZE as usize]).unwrap();
    assert_eq!(firmware.layout.base, 0xff00_0000);
    // KVM's identity map and TSS pages sit just below it, unmapped, and RAM ends at 3 GiB.
    let kvm_pages = layout
        .e820()
        .find(KVM_IDENTITY_MAP_ADDRESS)
        .copied()
        .unwrap();
    assert_eq!(kvm_pages.end(), u128::from(firmware.layout.base));
    assert!(space.lookup(KVM_IDENTITY_MAP_ADDRESS).is_none());
    assert!(space.lookup(KVM_TSS_ADDRESS + 0x2fff).is_none());
    assert_eq!(
        space.lookup(0xbfff_ffff).map(|s| s.kind),
        Some(SectionKind::Ram)
    );
    assert!(space.lookup(0xc000_0000).is_none());
}

#[test]
fn bad_images_are_refused() {
    let mut space = AddressSpace::new("system");
    let cases: [(u64, &str); 4] = [
        (0, "is empty"),
        (4 * KIB + 512, "not a multiple of 4 KiB"),
        (100, "not a multiple of 4 KiB"),
        (
            FIRMWARE_MAX_SIZE + 4 * KIB,
            "larger than the 0x1000000-byte (16 MiB) maximum",
        ),
    ];
    for (size, message) in cases {
        let err = map_firmware(&mut space, &vec![0; size as usize]).unwrap_err();
        assert!(err.to_string().contains(message), "{size:#x}: {err}");
    }
    assert!(space.flat_view().is_empty(), "nothing was mapped");
}

fn temp_file(name: &str, size: usize) -> PathBuf {
    let path = std::env::temp_dir().join(format!("vmkit-pc-{}-{name}", std::process::id()));
    std::fs::write(&path, numbered_image(size as u64)).unwrap();
    path
}

#[test]
fn firmware_files_are_loaded_and_errors_name_them() {
    let mut space = AddressSpace::new("system");
    let good = temp_file("good.bin", 64 * 1024);
    let firmware = load_firmware(&mut space, &good).unwrap();
    assert_eq!(firmware.layout.base, FOUR_GIB - 64 * KIB);
    assert_eq!(word_at(&space, RESET_VECTOR), (64 * KIB - 16) as u32);
    std::fs::remove_file(&good).unwrap();

    let missing = std::env::temp_dir().join("vmkit-pc-no-such-bios.bin");
    let err = load_firmware(&mut space, &missing).unwrap_err();
    assert!(matches!(err, Error::FirmwareFile { .. }), "{err}");
    assert!(
        err.to_string().contains("vmkit-pc-no-such-bios.bin"),
        "{err}"
    );

    let odd = temp_file("odd.bin", 6000);
    let err = load_firmware(&mut space, &odd).unwrap_err();
    assert!(err.to_string().contains(&*odd.to_string_lossy()), "{err}");
    assert!(err.to_string().contains("not a multiple of 4 KiB"), "{err}");
    std::fs::remove_file(&odd).unwrap();

    // A huge sparse file is refused from its size alone.
    let huge = std::env::temp_dir().join(format!("vmkit-pc-{}-huge.bin", std::process::id()));
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(1 << 32).unwrap();
    let err = load_firmware(&mut space, &huge).unwrap_err();
    assert!(matches!(err, Error::FirmwareTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("huge.bin"), "{err}");
    std::fs::remove_file(&huge).unwrap();

    let empty = temp_file("empty.bin", 0);
    let err = load_firmware(&mut space, &empty).unwrap_err();
    assert!(err.to_string().contains("empty.bin is empty"), "{err}");
    std::fs::remove_file(&empty).unwrap();
}

#[test]
fn the_guest_view_of_the_rom_is_read_only() {
    let mut space = AddressSpace::new("system");
    map_firmware(&mut space, &numbered_image(8 * KIB)).unwrap();
    let sections: Vec<_> = space
        .flat_view()
        .iter()
        .map(|s| (s.kind, s.guest_addr))
        .collect();
    assert_eq!(
        sections,
        vec![
            (SectionKind::Rom, 0xf_e000),
            (SectionKind::Rom, FOUR_GIB - 8 * KIB)
        ]
    );
}
