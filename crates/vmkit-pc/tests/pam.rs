//! The PAM windows in the region tree: every route of a segment, checked through the flat
//! view and the MMIO bus (no KVM needed).

use vmkit_bus::MmioBus;
use vmkit_memory::{AddressSpace, SectionKind};
use vmkit_pc::pam::{IsaRom, PamRoute, PamWindows};
use vmkit_pc::{map_firmware, MemoryLayout};

const F_SEG: u64 = 0xf_0000;
const C_SEG: u64 = 0xc_0000;

struct Machine {
    space: AddressSpace,
    pam: PamWindows,
    mmio: MmioBus,
    ram: vmkit_memory::RegionAccess,
}

fn machine() -> Machine {
    let mut space = AddressSpace::new("system");
    let regions = MemoryLayout::new(16 << 20)
        .unwrap()
        .map_into(&mut space)
        .unwrap();
    // A 128 KiB "BIOS" whose every byte is 0xb1.
    let firmware = map_firmware(&mut space, &vec![0xb1; 128 << 10]).unwrap();
    let rom = IsaRom {
        base: firmware.layout.isa_base,
        size: firmware.layout.isa_size,
        rom: space.region_access(firmware.rom).unwrap(),
        rom_offset: firmware.layout.isa_offset,
    };
    let mmio = MmioBus::new();
    let segments = [(C_SEG, 0x4000), (F_SEG, 0x1_0000)];
    let pam = PamWindows::new(&mut space, regions.ram, segments, Some(rom), mmio.clone()).unwrap();
    let ram = space.region_access(regions.ram).unwrap();
    Machine {
        space,
        pam,
        mmio,
        ram,
    }
}

fn kind_at(space: &AddressSpace, addr: u64) -> Option<(SectionKind, String)> {
    space.lookup(addr).map(|s| (s.kind, s.name.to_string()))
}

#[test]
fn segments_start_routed_to_pci() {
    let m = machine();
    assert_eq!(
        kind_at(&m.space, F_SEG),
        Some((SectionKind::Rom, "pc.bios".into()))
    );
    assert_eq!(kind_at(&m.space, C_SEG), None);
    assert_eq!(m.pam.route(F_SEG), Some(PamRoute::default()));
    assert_eq!(m.mmio.len(), 0);
}

#[test]
fn read_write_shows_ram_and_back_to_pci_shows_the_rom() {
    let mut m = machine();
    let rw = PamRoute {
        read_ram: true,
        write_ram: true,
    };
    m.pam.set_route(&mut m.space, F_SEG, rw).unwrap();
    assert_eq!(
        kind_at(&m.space, F_SEG),
        Some((SectionKind::Ram, "pc.ram".into()))
    );
    m.pam
        .set_route(&mut m.space, F_SEG, PamRoute::default())
        .unwrap();
    assert_eq!(
        kind_at(&m.space, F_SEG),
        Some((SectionKind::Rom, "pc.bios".into()))
    );
}

#[test]
fn read_only_maps_the_ram_read_only() {
    let mut m = machine();
    let ro = PamRoute {
        read_ram: true,
        write_ram: false,
    };
    m.pam.set_route(&mut m.space, C_SEG, ro).unwrap();
    assert_eq!(
        kind_at(&m.space, C_SEG),
        Some((SectionKind::Rom, "pc.ram".into()))
    );
    assert_eq!(m.mmio.len(), 0);
}

#[test]
fn write_only_reads_the_rom_and_writes_the_ram() {
    let mut m = machine();
    let wo = PamRoute {
        read_ram: false,
        write_ram: true,
    };
    m.pam.set_route(&mut m.space, F_SEG, wo).unwrap();
    // Reads still see the ROM (a read-only KVM slot); writes exit to the bus entry.
    assert_eq!(
        kind_at(&m.space, F_SEG),
        Some((SectionKind::Rom, "pc.bios".into()))
    );
    m.mmio.write(F_SEG + 0x10, &[1, 2, 3, 4]);
    let mut data = [0u8; 4];
    m.mmio.read(F_SEG + 0x10, &mut data);
    assert_eq!(data, [0xb1; 4], "reads come from the ROM");
    m.ram.read(F_SEG + 0x10, &mut data).unwrap();
    assert_eq!(data, [1, 2, 3, 4], "writes land in shadow RAM");
    // Switching to read/write shows what was written, and removes the bus entry.
    let rw = PamRoute {
        read_ram: true,
        write_ram: true,
    };
    m.pam.set_route(&mut m.space, F_SEG, rw).unwrap();
    assert_eq!(m.mmio.len(), 0);
    let mut c = [0u8; 1];
    m.mmio.read(C_SEG, &mut c);
    // A write-only segment with no ROM behind it reads as floating bus.
    let wo_c = PamRoute {
        read_ram: false,
        write_ram: true,
    };
    m.pam.set_route(&mut m.space, C_SEG, wo_c).unwrap();
    m.mmio.read(C_SEG, &mut c);
    assert_eq!(c, [0xff]);
}

#[test]
fn unknown_segment_is_ignored() {
    let mut m = machine();
    let rw = PamRoute {
        read_ram: true,
        write_ram: true,
    };
    m.pam.set_route(&mut m.space, 0xd_0000, rw).unwrap();
    assert_eq!(m.pam.route(0xd_0000), None);
}
