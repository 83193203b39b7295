//! The workspace's one ELF64 parser: header, loadable segments and the PVH entry note.

use vmkit_kernel::elf::{is_elf, pvh_entry};
use vmkit_kernel::{ElfImage, VmlinuxInfo};

const ENTRY: u64 = 0x100_0000;

/// An ELF64 x86-64 image with one PT_LOAD segment (4 bytes at 16 MiB, 16 in memory) and,
/// if `note` is given, a PT_NOTE segment holding that note.
fn image(note: Option<&[u8]>) -> Vec<u8> {
    let phnum: u16 = if note.is_some() { 2 } else { 1 };
    let data_at = 64 + 56 * u64::from(phnum);
    let mut elf = vec![0u8; data_at as usize];
    elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    elf[18] = 62;
    elf[24..32].copy_from_slice(&ENTRY.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes());
    elf[52] = 64;
    elf[54] = 56;
    elf[56..58].copy_from_slice(&phnum.to_le_bytes());
    let phdr = |elf: &mut Vec<u8>,
                index: usize,
                kind: u32,
                offset: u64,
                paddr: u64,
                size: u64,
                memsz: u64| {
        let base = 64 + 56 * index;
        elf[base..base + 4].copy_from_slice(&kind.to_le_bytes());
        elf[base + 8..base + 16].copy_from_slice(&offset.to_le_bytes());
        elf[base + 24..base + 32].copy_from_slice(&paddr.to_le_bytes());
        elf[base + 32..base + 40].copy_from_slice(&size.to_le_bytes());
        elf[base + 40..base + 48].copy_from_slice(&memsz.to_le_bytes());
    };
    phdr(&mut elf, 0, 1, data_at, ENTRY, 4, 16);
    elf.extend_from_slice(&[0x90, 0x90, 0xf4, 0xf4]);
    if let Some(note) = note {
        let at = elf.len() as u64;
        phdr(&mut elf, 1, 4, at, 0, note.len() as u64, 0);
        elf.extend_from_slice(note);
    }
    elf
}

fn xen_note(kind: u32, desc: &[u8]) -> Vec<u8> {
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    note.extend_from_slice(&kind.to_le_bytes());
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(desc);
    while note.len() % 4 != 0 {
        note.push(0);
    }
    note
}

#[test]
fn segments_and_entry_are_read() {
    let elf = image(None);
    assert!(is_elf(&elf));
    let parsed = ElfImage::parse(&elf).unwrap();
    assert_eq!(parsed.entry, ENTRY);
    assert_eq!(parsed.segments.len(), 1);
    assert_eq!(parsed.segments[0].filesz, 4);
    assert_eq!(parsed.span(), (ENTRY, ENTRY + 16));
    let header = VmlinuxInfo::parse(&elf).unwrap();
    assert_eq!((header.entry, header.program_headers), (ENTRY, 1));
    assert_eq!(pvh_entry(&elf).unwrap(), None);
}

#[test]
fn the_pvh_note_gives_the_32_bit_entry() {
    let elf = image(Some(&xen_note(18, &0x0100_00a0_u32.to_le_bytes())));
    assert_eq!(pvh_entry(&elf).unwrap(), Some(0x0100_00a0));
    let wide = image(Some(&xen_note(18, &0x20_0000u64.to_le_bytes())));
    assert_eq!(pvh_entry(&wide).unwrap(), Some(0x20_0000));
    let other_kind = image(Some(&xen_note(17, &[0; 4])));
    assert_eq!(pvh_entry(&other_kind).unwrap(), None);
}

#[test]
fn bad_images_are_refused_with_the_reason() {
    let high = image(Some(&xen_note(18, &0x1_0000_0000u64.to_le_bytes())));
    let err = pvh_entry(&high).unwrap_err().to_string();
    assert!(err.contains("not below 4 GiB"), "{err}");
    let odd = image(Some(&xen_note(18, &[0; 2])));
    assert!(pvh_entry(&odd)
        .unwrap_err()
        .to_string()
        .contains("2-byte descriptor"));

    let mut class32 = image(None);
    class32[4] = 1;
    let err = ElfImage::parse(&class32).unwrap_err().to_string();
    assert!(err.contains("not 64-bit"), "{err}");
    assert!(VmlinuxInfo::parse(&class32).is_err());

    let elf = image(None);
    let err = ElfImage::parse(&elf[..elf.len() - 2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("segment 0 needs file bytes"), "{err}");
    let err = ElfImage::parse(&elf[..100]).unwrap_err().to_string();
    assert!(err.contains("program headers"), "{err}");
    assert!(ElfImage::parse(b"").is_err());
    assert!(ElfImage::parse(b"MZ not an elf")
        .unwrap_err()
        .to_string()
        .contains("magic"));
}
