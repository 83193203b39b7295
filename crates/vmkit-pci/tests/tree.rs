//! RegionTreeMapper: BARs as regions in vmkit-memory address spaces, dispatched by the buses
//! that follow the flat views.

mod common;

use std::sync::{Arc, Mutex};

use common::TestDevice;
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::DeviceMmio;
use vmkit_bus::{MmioBus, MmioRange, PioBus, Space};
use vmkit_memory::{AddressSpace, SectionKind};
use vmkit_pci::config::{BAR0, COMMAND, COMMAND_IO, COMMAND_MEMORY};
use vmkit_pci::{region_name, DevFn, PciBus, RegionIndex, RegionTreeMapper, PCI_BAR_PRIORITY};

struct Machine {
    pci: PciBus,
    mapper: Arc<RegionTreeMapper>,
    memory: Arc<Mutex<AddressSpace>>,
    io: Arc<Mutex<AddressSpace>>,
    mmio: MmioBus,
    pio: PioBus,
}

fn machine() -> Machine {
    let memory = Arc::new(Mutex::new(AddressSpace::new("memory")));
    let io = Arc::new(Mutex::new(AddressSpace::new("io")));
    let (mmio, pio) = (MmioBus::new(), PioBus::new());
    let mapper = Arc::new(
        RegionTreeMapper::new(memory.clone(), mmio.clone(), io.clone(), pio.clone()).unwrap(),
    );
    Machine {
        pci: PciBus::with_mapper(mapper.clone()),
        mapper,
        memory,
        io,
        mmio,
        pio,
    }
}

fn wd(bus: &PciBus, devfn: DevFn, off: u16, v: u32) {
    bus.config_write(devfn, off, &v.to_le_bytes());
}

fn mmio_byte(m: &Machine, addr: u64) -> Option<u8> {
    let mut b = [0u8];
    m.mmio.read(addr, &mut b).is_handled().then_some(b[0])
}

fn pio_byte(m: &Machine, port: u16) -> Option<u8> {
    let mut b = [0u8];
    m.pio.read(port, &mut b).is_handled().then_some(b[0])
}

/// (address, size, kind, name) of each section of `space`'s flat view.
fn view(space: &Mutex<AddressSpace>) -> Vec<(u64, u64, SectionKind, String)> {
    space
        .lock()
        .unwrap()
        .flat_view()
        .iter()
        .map(|s| (s.guest_addr, s.size, s.kind, s.name.to_string()))
        .collect()
}

#[test]
fn programmed_bars_become_io_regions_and_bus_entries() {
    let m = machine();
    let devfn = DevFn::new(2, 0);
    m.pci.add(devfn, TestDevice::full(1).shared()).unwrap();
    assert!(view(&m.memory).is_empty() && view(&m.io).is_empty());

    wd(&m.pci, devfn, BAR0, 0xc000);
    wd(&m.pci, devfn, BAR0 + 4, 0xfebf_0000);
    wd(
        &m.pci,
        devfn,
        COMMAND,
        u32::from(COMMAND_IO | COMMAND_MEMORY),
    );
    assert!(m.pci.take_map_errors().is_empty());

    let bar0 = region_name(devfn, RegionIndex::Bar(0));
    let bar1 = region_name(devfn, RegionIndex::Bar(1));
    assert_eq!(
        view(&m.io),
        vec![(0xc000, 0x20, SectionKind::Io, bar0.to_string())]
    );
    assert_eq!(
        view(&m.memory),
        vec![(0xfebf_0000, 0x1000, SectionKind::Io, bar1.to_string())]
    );
    // The test device answers with the low offset byte plus the region number.
    assert_eq!(pio_byte(&m, 0xc005), Some(5));
    assert_eq!(mmio_byte(&m, 0xfebf_0010), Some(0x11));
    assert_eq!(mmio_byte(&m, 0xfebf_1000), None);
    let (space, id) = m.mapper.region_of(devfn, RegionIndex::Bar(1)).unwrap();
    assert_eq!(space, Space::Mmio);
    assert_eq!(m.memory.lock().unwrap().flat_view()[0].region, id);

    // Moving the I/O BAR moves the region (the same one: what hangs on it follows) and the
    // bus entry.
    let io_region = m.mapper.region_for(devfn, RegionIndex::Bar(0)).unwrap();
    wd(&m.pci, devfn, BAR0, 0xd000);
    assert_eq!(
        m.mapper.region_for(devfn, RegionIndex::Bar(0)),
        Some(io_region)
    );
    assert_eq!(m.io.lock().unwrap().flat_view()[0].region, io_region.1);
    assert_eq!(pio_byte(&m, 0xc005), None);
    assert_eq!(pio_byte(&m, 0xd005), Some(5));
    assert_eq!(view(&m.io)[0].0, 0xd000);

    // Turning decode off removes both, and reset leaves nothing behind.
    wd(&m.pci, devfn, COMMAND, u32::from(COMMAND_IO));
    assert!(view(&m.memory).is_empty());
    assert_eq!(mmio_byte(&m, 0xfebf_0010), None);
    m.pci.reset();
    assert!(view(&m.io).is_empty());
    assert!(m.pio.is_empty() && m.mmio.is_empty());
    assert_eq!(m.mapper.region_of(devfn, RegionIndex::Bar(0)), None);
    assert_eq!(
        m.mapper.region_for(devfn, RegionIndex::Bar(0)),
        Some(io_region)
    );
    // The function leaves the bus: its regions go.
    m.pci.remove(devfn);
    m.mapper.forget(devfn);
    assert_eq!(m.mapper.region_for(devfn, RegionIndex::Bar(0)), None);
}

#[test]
fn ram_hides_the_part_of_a_bar_it_overlaps() {
    let m = machine();
    {
        let mut mem = m.memory.lock().unwrap();
        let ram = mem.new_ram("ram", 0x1000).unwrap();
        let root = mem.root();
        mem.add_subregion(root, 0xfebf_0000, ram).unwrap();
    }
    let devfn = DevFn::new(3, 0);
    let mut dev = TestDevice::new(2);
    dev.cfg
        .add_bar(0, common::bar(vmkit_pci::BarKind::Mem32, 0x2000, false))
        .unwrap();
    m.pci.add(devfn, dev.shared()).unwrap();
    wd(&m.pci, devfn, BAR0, 0xfebf_0000);
    wd(&m.pci, devfn, COMMAND, u32::from(COMMAND_MEMORY));
    assert!(m.pci.take_map_errors().is_empty());

    let bar = region_name(devfn, RegionIndex::Bar(0)).to_string();
    assert_eq!(
        view(&m.memory),
        vec![
            (0xfebf_0000, 0x1000, SectionKind::Ram, "ram".to_string()),
            (0xfebf_1000, 0x1000, SectionKind::Io, bar),
        ]
    );
    // Only the visible half is on the bus, and it dispatches with its offset in the BAR.
    assert_eq!(mmio_byte(&m, 0xfebf_0010), None);
    assert_eq!(mmio_byte(&m, 0xfebf_1010), Some(0x10));
    let mut b = [0u8; 4];
    m.mmio.read(0xfebf_1ffc, &mut b);
    assert_eq!(b, [0xfc; 4]);
}

struct Fixed;

impl DeviceMmio for Fixed {
    fn mmio_read(&self, _: MmioAddress, _: MmioAddressOffset, data: &mut [u8]) {
        data.fill(0xee);
    }
    fn mmio_write(&self, _: MmioAddress, _: MmioAddressOffset, _: &[u8]) {}
}

#[test]
fn a_bar_over_a_device_outside_the_tree_is_refused_and_the_tree_undone() {
    let m = machine();
    m.mmio
        .insert(
            MmioRange::new(0xfec0_0000, 0x1000).unwrap(),
            "ioapic",
            Arc::new(Fixed),
        )
        .unwrap();
    let devfn = DevFn::new(2, 0);
    m.pci.add(devfn, TestDevice::full(1).shared()).unwrap();
    wd(&m.pci, devfn, BAR0 + 4, 0xfec0_0000);
    wd(&m.pci, devfn, COMMAND, u32::from(COMMAND_MEMORY));
    let errors = m.pci.take_map_errors();
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(
        text.contains("00:02.0 bar1") && text.contains("ioapic"),
        "{text}"
    );
    assert!(
        view(&m.memory).is_empty(),
        "the refused region is not left in the tree"
    );
    assert_eq!(mmio_byte(&m, 0xfec0_0000), Some(0xee));

    // Moved elsewhere, it maps.
    wd(&m.pci, devfn, BAR0 + 4, 0xfeb0_0000);
    assert_eq!(mmio_byte(&m, 0xfeb0_0001), Some(0x02));
}

#[test]
fn of_two_overlapping_bars_the_one_mapped_last_shows_and_the_other_returns() {
    let m = machine();
    let (a, b) = (DevFn::new(2, 0), DevFn::new(3, 0));
    m.pci.add(a, TestDevice::full(1).shared()).unwrap();
    m.pci.add(b, TestDevice::full(2).shared()).unwrap();
    for devfn in [a, b] {
        wd(&m.pci, devfn, BAR0, 0xc000);
        wd(&m.pci, devfn, COMMAND, u32::from(COMMAND_IO));
    }
    assert!(m.pci.take_map_errors().is_empty());
    let names: Vec<String> = view(&m.io).into_iter().map(|s| s.3).collect();
    assert_eq!(names, vec![region_name(b, RegionIndex::Bar(0)).to_string()]);
    // b's BAR moves away: a's shows again at 0xc000.
    wd(&m.pci, b, BAR0, 0xc100);
    let got: Vec<(u64, String)> = view(&m.io).into_iter().map(|s| (s.0, s.3)).collect();
    assert_eq!(
        got,
        vec![
            (0xc000, region_name(a, RegionIndex::Bar(0)).to_string()),
            (0xc100, region_name(b, RegionIndex::Bar(0)).to_string()),
        ]
    );
    assert_eq!(PCI_BAR_PRIORITY, -1);
}

#[test]
fn an_io_bar_ending_at_the_top_of_the_port_space_maps() {
    let m = machine();
    let devfn = DevFn::new(2, 0);
    m.pci.add(devfn, TestDevice::full(1).shared()).unwrap();
    // 0xffe0 + 0x20 ends exactly at 0x10000: fits.
    wd(&m.pci, devfn, BAR0, 0xffe0);
    wd(&m.pci, devfn, COMMAND, u32::from(COMMAND_IO));
    assert!(m.pci.take_map_errors().is_empty());
    assert_eq!(pio_byte(&m, 0xffff), Some(0x1f));
}
