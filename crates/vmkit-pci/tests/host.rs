//! PciHost (configuration mechanism #1, 0xCF9) and BusRegionMapper over real vmkit-bus buses.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use common::TestDevice;
use vmkit_bus::{Dispatch, MmioBus, MmioRange, PioBus, PioRange};
use vmkit_pci::{region_name, BusRegionMapper, DevFn, PciBus, PciDevice, PciHost, RegionIndex};

/// A PIO bus with the host at 0xCF8..=0xCFF over a bus holding a full test device at 00:02.0
/// (device ID 0x1234) and a plain one at 00:00.0 (device ID 0x1237), with a vmkit-bus mapper.
struct Machine {
    pio: PioBus,
    mmio: MmioBus,
    pci: PciBus,
    host: Arc<Mutex<PciHost>>,
    resets: Arc<Mutex<Vec<bool>>>,
    device: Arc<Mutex<TestDevice>>,
}

fn machine() -> Machine {
    let pio = PioBus::new();
    let mmio = MmioBus::new();
    let mapper = Arc::new(BusRegionMapper::new(pio.clone(), mmio.clone()));
    let pci = PciBus::with_mapper(mapper);
    pci.add(DevFn::new(0, 0), TestDevice::new(0x1237).shared())
        .unwrap();
    let device = TestDevice::full(0x1234).shared();
    pci.add(DevFn::new(2, 0), device.clone()).unwrap();
    let resets = Arc::new(Mutex::new(Vec::new()));
    let log = resets.clone();
    let host = Arc::new(Mutex::new(PciHost::with_reset(
        pci.clone(),
        Box::new(move |hard| log.lock().unwrap().push(hard)),
    )));
    let range = PioRange::new(PciHost::BASE, PciHost::LEN).unwrap();
    pio.insert(range, "/machine/i440fx/pci-conf", host.clone())
        .unwrap();
    Machine {
        pio,
        mmio,
        pci,
        host,
        resets,
        device,
    }
}

impl Machine {
    fn outl(&self, port: u16, v: u32) {
        assert_eq!(self.pio.write(port, &v.to_le_bytes()), Dispatch::Handled);
    }
    fn outw(&self, port: u16, v: u16) {
        assert_eq!(self.pio.write(port, &v.to_le_bytes()), Dispatch::Handled);
    }
    fn outb(&self, port: u16, v: u8) {
        assert_eq!(self.pio.write(port, &[v]), Dispatch::Handled);
    }
    fn inl(&self, port: u16) -> u32 {
        let mut b = [0; 4];
        self.pio.read(port, &mut b);
        u32::from_le_bytes(b)
    }
    fn inw(&self, port: u16) -> u16 {
        let mut b = [0; 2];
        self.pio.read(port, &mut b);
        u16::from_le_bytes(b)
    }
    fn inb(&self, port: u16) -> u8 {
        let mut b = [0; 1];
        self.pio.read(port, &mut b);
        b[0]
    }
    /// Selects bus 0, `devfn`, register `reg` with the enable bit.
    fn select(&self, devfn: DevFn, reg: u8) {
        self.outl(
            0xcf8,
            0x8000_0000 | u32::from(devfn.0) << 8 | u32::from(reg),
        );
    }
}

#[test]
fn range_constants() {
    assert_eq!(PciHost::RANGE, 0xcf8..0xd00);
    assert_eq!((PciHost::BASE, PciHost::LEN), (0xcf8, 8));
    assert_eq!(
        (
            PciHost::CONFIG_ADDRESS_PORT,
            PciHost::RESET_CONTROL_PORT,
            PciHost::CONFIG_DATA_PORT
        ),
        (0xcf8, 0xcf9, 0xcfc)
    );
}

#[test]
fn config_address_is_a_dword_latch() {
    let m = machine();
    m.outl(0xcf8, 0x8000_1234);
    assert_eq!(m.inl(0xcf8), 0x8000_1234);
    // Reserved bits 30:24 and 1:0 do not latch.
    m.outl(0xcf8, 0xffff_ffff);
    assert_eq!(m.inl(0xcf8), 0x80ff_fffc);
    // Narrower accesses do not touch it (Linux's type-1 probe writes a byte to 0xCFB).
    m.outb(0xcfb, 0x01);
    m.outw(0xcfa, 0x0000);
    m.outb(0xcf8, 0x00);
    assert_eq!(m.inl(0xcf8), 0x80ff_fffc);
    assert_eq!(m.inw(0xcf8), 0xffff, "word reads of CONFIG_ADDRESS float");
    assert_eq!(m.inb(0xcfa), 0xff);
    // Linux's pci_check_type1 sequence.
    m.outl(0xcf8, 0x8000_0000);
    assert_eq!(m.inl(0xcf8), 0x8000_0000);
    assert_eq!(m.host.lock().unwrap().config_address(), 0x8000_0000);
}

#[test]
fn config_data_byte_word_dword_at_every_offset() {
    let m = machine();
    let d2 = DevFn::new(2, 0);
    m.select(d2, 0x00);
    assert_eq!(m.inl(0xcfc), 0x1234_8086);
    assert_eq!(m.inw(0xcfc), 0x8086);
    assert_eq!(m.inw(0xcfe), 0x1234);
    assert_eq!(
        [m.inb(0xcfc), m.inb(0xcfd), m.inb(0xcfe), m.inb(0xcff)],
        [0x86, 0x80, 0x34, 0x12]
    );
    m.select(d2, 0x08);
    assert_eq!(m.inl(0xcfc), 0x0200_0003, "class 02 00 00, revision 3");
    assert_eq!(m.inb(0xcff), 0x02);
    // The register field is bits 7:2: bits 1:0 of the address are dropped.
    m.outl(0xcf8, 0x8000_0000 | u32::from(d2.0) << 8 | 0x0b);
    assert_eq!(m.inl(0xcfc), 0x0200_0003);

    // Writes: interrupt line through byte 0 of dword 0x3c, cache line size through 0xcfc.
    m.select(d2, 0x3c);
    m.outb(0xcfc, 11);
    assert_eq!(m.inl(0xcfc) & 0xffff, 0x010b, "line 11, pin INTA#");
    m.select(d2, 0x0c);
    m.outb(0xcfc, 0x10);
    m.outw(0xcfe, 0xffff);
    assert_eq!(m.inb(0xcfc), 0x10);
    // Command register via a word write at 0xcfc and at 0xcfe for status (w1c: no effect).
    m.select(d2, 0x04);
    m.outw(0xcfc, 0x0003);
    m.outw(0xcfe, 0xffff);
    assert_eq!(
        m.inl(0xcfc),
        0x0010_0003,
        "command IO|MEM, status capability bit"
    );
    // A word at 0xcff runs past 0xcff: the bus splits it; only 0xcff hits config data.
    let mut two = [0u8; 2];
    assert_eq!(m.pio.read(0xcff, &mut two), Dispatch::Split);
    assert_eq!(two, [0x00, 0xff]);
}

#[test]
fn disabled_other_bus_and_absent_device_read_all_ones() {
    let m = machine();
    m.outl(0xcf8, u32::from(DevFn::new(2, 0).0) << 8);
    assert_eq!(m.inl(0xcfc), 0xffff_ffff, "enable bit clear");
    m.outl(0xcfc, 0x0000_0003);
    m.outl(0xcf8, 0x8001_0000 | u32::from(DevFn::new(2, 0).0) << 8);
    assert_eq!(m.inl(0xcfc), 0xffff_ffff, "bus 1 does not exist");
    m.outl(0xcfc, 0x0000_0003);
    m.select(DevFn::new(9, 0), 0);
    assert_eq!(m.inl(0xcfc), 0xffff_ffff, "no device 9");
    assert_eq!(m.inw(0xcfe), 0xffff);
    assert_eq!(m.inb(0xcfd), 0xff);
    m.outl(0xcfc, 0);
    m.select(DevFn::new(0, 1), 0);
    assert_eq!(m.inl(0xcfc), 0xffff_ffff, "no function 1 of device 0");
    m.select(DevFn::new(2, 0), 4);
    assert_eq!(m.inw(0xcfc), 0, "writes above went nowhere");
}

#[test]
fn accesses_straddling_address_and_data_are_split_safely() {
    let m = machine();
    let mut host = m.host.lock().unwrap();
    host.write(
        0,
        &(0x8000_0000u32 | u32::from(DevFn::new(2, 0).0) << 8).to_le_bytes(),
    );
    // Dword at 0xcfa: bytes 0xcfa and 0xcfb float, 0xcfc and 0xcfd are config bytes 0, 1.
    let mut b = [0u8; 4];
    host.read(2, &mut b);
    assert_eq!(b, [0xff, 0xff, 0x86, 0x80]);
    // Eight bytes at 0xcf8 (a 64-bit access): CONFIG_ADDRESS bytes float.
    let mut q = [0u8; 8];
    host.read(0, &mut q);
    assert_eq!(q, [0xff, 0xff, 0xff, 0xff, 0x86, 0x80, 0x34, 0x12]);
    host.write(0, &[0; 8]);
    assert_eq!(
        host.config_address() >> 31,
        1,
        "address unchanged by the split write"
    );
    // Offsets outside the host decode nothing.
    host.read(8, &mut b);
    assert_eq!(b, [0xff; 4]);
    host.write(u16::MAX, &[1, 2, 3]);
    host.read(u16::MAX, &mut b);
    assert_eq!(b, [0xff; 4]);
    host.read(4, &mut []);
    host.write(4, &[]);
    assert!(
        m.resets.lock().unwrap().is_empty(),
        "split writes never touch 0xCF9"
    );
}

#[test]
fn reset_control_register_at_0xcf9() {
    let m = machine();
    assert_eq!(m.inb(0xcf9), 0);
    m.outb(0xcf9, 0x02);
    assert!(
        m.resets.lock().unwrap().is_empty(),
        "bit 1 alone only selects the type"
    );
    assert_eq!(m.inb(0xcf9), 0x02);
    m.outb(0xcf9, 0x06);
    assert_eq!(*m.resets.lock().unwrap(), vec![true], "hard reset");
    assert_eq!(m.inb(0xcf9), 0x02, "bit 2 reads back 0");
    m.outb(0xcf9, 0x04);
    assert_eq!(*m.resets.lock().unwrap(), vec![true, false], "soft reset");
    assert_eq!(m.inb(0xcf9), 0x00);
    // Word/dword accesses at 0xcf8 do not reach it.
    m.outw(0xcf8, 0x0606);
    assert_eq!(m.resets.lock().unwrap().len(), 2);
    // Machine reset of the host.
    m.outb(0xcf9, 0x02);
    m.outl(0xcf8, 0x8000_0000);
    m.host.lock().unwrap().reset();
    assert_eq!(m.inb(0xcf9), 0);
    assert_eq!(m.inl(0xcf8), 0);
    // Without a callback a reset request is ignored.
    let mut plain = PciHost::new(PciBus::new());
    plain.write(1, &[0x06]);
    assert_eq!(plain.reset_control(), 0x02);
    assert!(format!("{plain:?}").contains("rcr"));
}

#[test]
fn bars_programmed_through_cf8_dispatch_on_the_buses() {
    let m = machine();
    let d2 = DevFn::new(2, 0);
    // Size and place BAR0 (I/O, 32 ports) and BAR1 (4 KiB memory) the way firmware does.
    m.select(d2, 0x10);
    m.outl(0xcfc, 0xffff_ffff);
    assert_eq!(m.inl(0xcfc), 0xffff_ffe1);
    m.outl(0xcfc, 0xc000);
    m.select(d2, 0x14);
    m.outl(0xcfc, 0xffff_ffff);
    assert_eq!(m.inl(0xcfc), 0xffff_f000);
    m.outl(0xcfc, 0xfebf_0000);
    assert_eq!(
        m.pio.read(0xc000, &mut [0u8]),
        Dispatch::Unassigned,
        "decode off"
    );
    m.select(d2, 0x04);
    m.outw(0xcfc, 0x0003);

    let (range, name) = m.pio.lookup(0xc010).unwrap();
    assert_eq!((range.base(), range.size()), (0xc000, 0x20));
    assert_eq!(&*name, "/machine/pci/00:02.0/bar0");
    assert_eq!(&*name, region_name(d2, RegionIndex::Bar(0)));
    assert_eq!(m.inb(0xc005), 0x05, "region_read got offset 5 of BAR0");
    let mut b = [0u8; 4];
    assert_eq!(m.mmio.read(0xfebf_0010, &mut b), Dispatch::Handled);
    assert_eq!(b, [0x11; 4], "offset 0x10 + region 1");
    assert_eq!(m.mmio.write(0xfebf_0020, &[7, 8]), Dispatch::Handled);
    m.outb(0xc01f, 9);
    assert_eq!(
        m.device.lock().unwrap().writes,
        vec![
            (RegionIndex::Bar(1), 0x20, vec![7, 8]),
            (RegionIndex::Bar(0), 0x1f, vec![9])
        ]
    );

    // Move BAR0; the old ports become unassigned.
    m.select(d2, 0x10);
    m.outl(0xcfc, 0xc100);
    assert!(m.pio.lookup(0xc000).is_none());
    assert_eq!(m.inb(0xc101), 0x01);

    // Memory decode off: BAR1 leaves the MMIO bus.
    m.select(d2, 0x04);
    m.outw(0xcfc, 0x0001);
    assert!(m.mmio.is_empty());
    // Machine reset unmaps everything.
    m.pci.reset();
    assert!(m.pio.lookup(0xc100).is_none());
    assert_eq!(m.pio.len(), 1, "only the host itself is left");
}

#[test]
fn a_bar_over_an_existing_bus_entry_stays_unmapped_without_panicking() {
    let m = machine();
    let d2 = DevFn::new(2, 0);
    // Something else owns MMIO 0xfebf_0000.
    struct Other;
    impl vm_device::MutDeviceMmio for Other {
        fn mmio_read(&mut self, _: vm_device::bus::MmioAddress, _: u64, data: &mut [u8]) {
            data.fill(0x5a);
        }
        fn mmio_write(&mut self, _: vm_device::bus::MmioAddress, _: u64, _: &[u8]) {}
    }
    m.mmio
        .insert(
            MmioRange::new(0xfebf_0800, 0x100).unwrap(),
            "other",
            Arc::new(Mutex::new(Other)),
        )
        .unwrap();
    m.select(d2, 0x14);
    m.outl(0xcfc, 0xfebf_0000);
    m.select(d2, 0x04);
    m.outw(0xcfc, 0x0002);
    assert!(m.pci.mapped(d2).is_empty());
    let errors = m.pci.take_map_errors();
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(
        msg.contains("00:02.0 bar1") && msg.contains("\"other\""),
        "{msg}"
    );
    let mut b = [0u8; 1];
    m.mmio.read(0xfebf_0800, &mut b);
    assert_eq!(b, [0x5a], "the existing entry keeps its range");
    // Once the other entry is gone, the next config write maps the BAR.
    m.mmio.remove_named("other");
    m.select(d2, 0x3c);
    m.outb(0xcfc, 5);
    assert_eq!(m.pci.mapped(d2).len(), 1);
    m.mmio.read(0xfebf_0800, &mut b);
    assert_eq!(b, [0x01]);
}

#[test]
fn a_poisoned_device_mutex_is_recovered() {
    let m = machine();
    let d2 = DevFn::new(2, 0);
    m.select(d2, 0x10);
    m.outl(0xcfc, 0xc000);
    m.select(d2, 0x04);
    m.outw(0xcfc, 0x0001);
    m.device.lock().unwrap().panic_on = Some(0xee);
    let pio = m.pio.clone();
    let result = catch_unwind(AssertUnwindSafe(|| pio.write(0xc000, &[0xee])));
    assert!(result.is_err());
    assert!(m.device.is_poisoned());
    // Region and config accesses keep working.
    assert_eq!(m.inb(0xc003), 0x03);
    m.select(d2, 0x00);
    assert_eq!(m.inl(0xcfc), 0x1234_8086);
    m.select(d2, 0x3c);
    m.outb(0xcfc, 3);
    assert_eq!(m.inb(0xcfc), 3);
    m.pci.reset();
    assert!(m.pio.lookup(0xc000).is_none());
}

/// A chipset-style function with a Custom I/O window enabled by a register at 0x40..0x43.
struct Chipset {
    cfg: vmkit_pci::ConfigSpace,
    hits: Arc<AtomicU32>,
}

impl PciDevice for Chipset {
    fn config(&self) -> &vmkit_pci::ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut vmkit_pci::ConfigSpace {
        &mut self.cfg
    }
    fn regions(&self) -> Vec<(RegionIndex, vmkit_pci::Mapping)> {
        let base = self.cfg.dword(0x40);
        if base & 1 == 0 {
            return Vec::new();
        }
        vec![(
            RegionIndex::Custom(0),
            vmkit_pci::Mapping {
                space: vmkit_bus::Space::Pio,
                addr: u64::from(base & 0xffc0),
                size: 0x40,
            },
        )]
    }
    fn region_read(&mut self, region: RegionIndex, offset: u64, data: &mut [u8]) {
        assert_eq!(region, RegionIndex::Custom(0));
        self.hits.fetch_add(1, Ordering::Relaxed);
        data.fill(offset as u8);
    }
    fn reset(&mut self) {
        self.cfg.reset();
        self.cfg.set_dword(0x40, 0xb001);
    }
}

#[test]
fn custom_windows_map_like_bars() {
    let m = machine();
    let hits = Arc::new(AtomicU32::new(0));
    let mut cfg = vmkit_pci::ConfigSpace::new(0x8086, 0x7113, 0x06, 0x80, 0, 3);
    cfg.set_write_mask_dword(0x40, 0xffc1);
    let f3 = DevFn::new(1, 3);
    m.pci
        .add(DevFn::new(1, 0), TestDevice::new(0x7110).shared())
        .unwrap();
    m.pci
        .add(
            f3,
            Arc::new(Mutex::new(Chipset {
                cfg,
                hits: hits.clone(),
            })),
        )
        .unwrap();
    assert_eq!(
        m.pio.len(),
        1,
        "window disabled: only the host is on the PIO bus"
    );
    m.select(f3, 0x40);
    m.outl(0xcfc, 0xb001);
    assert_eq!(
        &*m.pio.lookup(0xb008).unwrap().1,
        "/machine/pci/00:01.3/custom0"
    );
    assert_eq!(m.inb(0xb008), 0x08);
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    m.outl(0xcfc, 0xb000);
    assert!(m.pio.lookup(0xb008).is_none());
    // The device's own reset value (enabled at 0xb000) is mapped after a bus reset.
    m.pci.reset();
    assert_eq!(m.inb(0xb001), 0x01);
    assert_eq!(hits.load(Ordering::Relaxed), 2);
}

#[test]
fn mem64_bar_above_4g_and_rom_dispatch_on_mmio() {
    let m = machine();
    let d2 = DevFn::new(2, 0);
    m.select(d2, 0x18);
    m.outl(0xcfc, 0xffff_ffff);
    assert_eq!(m.inl(0xcfc), 0xffff_c00c);
    m.select(d2, 0x1c);
    m.outl(0xcfc, 0xffff_ffff);
    assert_eq!(m.inl(0xcfc), 0xffff_ffff);
    m.outl(0xcfc, 0x8);
    m.select(d2, 0x18);
    m.outl(0xcfc, 0x0);
    m.select(d2, 0x30);
    m.outl(0xcfc, 0xfeb0_0001);
    m.select(d2, 0x04);
    m.outw(0xcfc, 0x0002);
    let (range, name) = m.mmio.lookup(0x8_0000_3fff).unwrap();
    assert_eq!((range.base(), range.size()), (0x8_0000_0000, 0x4000));
    assert_eq!(&*name, "/machine/pci/00:02.0/bar2");
    let mut b = [0u8; 8];
    assert_eq!(m.mmio.read(0x8_0000_0001, &mut b), Dispatch::Handled);
    assert_eq!(b, [0x03; 8], "offset 1 + region 2");
    assert_eq!(
        &*m.mmio.lookup(0xfeb0_ffff).unwrap().1,
        "/machine/pci/00:02.0/rom"
    );
    let mut one = [0u8; 1];
    m.mmio.read(0xfeb0_0002, &mut one);
    assert_eq!(one, [0x12], "offset 2 + ROM's 0x10");
    assert!(m.mmio.lookup(0xfeb1_0000).is_none());
}
