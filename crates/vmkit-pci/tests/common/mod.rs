//! Test devices and a recording region mapper shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use vmkit_pci::{
    BarDef, BarKind, ConfigSpace, DevFn, MapError, Mapping, PciDevice, RegionIndex, RegionMapper,
    SharedPciDevice,
};

/// A function with configurable BARs whose regions echo accesses: a read returns the low
/// byte of the offset plus the region number in every byte; writes are recorded.
pub struct TestDevice {
    pub cfg: ConfigSpace,
    pub writes: Vec<(RegionIndex, u64, Vec<u8>)>,
    /// A region write of this byte panics (to test poisoned mutexes).
    pub panic_on: Option<u8>,
}

impl TestDevice {
    pub fn new(device_id: u16) -> Self {
        TestDevice {
            cfg: ConfigSpace::new(0x8086, device_id, 0x02, 0x00, 0x00, 0x03),
            writes: Vec::new(),
            panic_on: None,
        }
    }

    /// I/O BAR0 (32 ports), 32-bit memory BAR1 (4 KiB), 64-bit prefetchable BAR2/3
    /// (16 KiB), a 64 KiB ROM, INTA#, one vendor capability.
    pub fn full(device_id: u16) -> Self {
        let mut d = Self::new(device_id);
        d.cfg.add_bar(0, bar(BarKind::Io, 0x20, false)).unwrap();
        d.cfg
            .add_bar(1, bar(BarKind::Mem32, 0x1000, false))
            .unwrap();
        d.cfg.add_bar(2, bar(BarKind::Mem64, 0x4000, true)).unwrap();
        d.cfg.add_rom_bar(0x10000).unwrap();
        d.cfg.set_interrupt_pin(1);
        d.cfg.add_capability(0x09, &[0x04, 0xaa]).unwrap();
        d
    }

    pub fn shared(self) -> Arc<Mutex<TestDevice>> {
        Arc::new(Mutex::new(self))
    }
}

pub fn bar(kind: BarKind, size: u64, prefetchable: bool) -> BarDef {
    BarDef {
        kind,
        size,
        prefetchable,
    }
}

fn region_number(region: RegionIndex) -> u8 {
    match region {
        RegionIndex::Bar(i) => i,
        RegionIndex::Rom => 0x10,
        RegionIndex::Custom(i) => 0x20 + i,
    }
}

impl PciDevice for TestDevice {
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }

    fn region_read(&mut self, region: RegionIndex, offset: u64, data: &mut [u8]) {
        data.fill((offset as u8).wrapping_add(region_number(region)));
    }

    fn region_write(&mut self, region: RegionIndex, offset: u64, data: &[u8]) {
        if self.panic_on.is_some() && data.first() == self.panic_on.as_ref() {
            panic!("test device told to panic");
        }
        self.writes.push((region, offset, data.to_vec()));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Map(DevFn, RegionIndex, Mapping),
    Unmap(DevFn, RegionIndex, Mapping),
}

/// Records map/unmap calls and checks they are consistent (no double map, no unmap of
/// something not mapped). Regions in `refuse` fail to map.
#[derive(Default)]
pub struct RecordingMapper {
    pub events: Mutex<Vec<Event>>,
    pub live: Mutex<BTreeMap<(DevFn, RegionIndex), Mapping>>,
    pub refuse: Mutex<Vec<Mapping>>,
    pub inconsistencies: Mutex<Vec<String>>,
}

impl RecordingMapper {
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut self.events.lock().unwrap())
    }

    pub fn live(&self) -> BTreeMap<(DevFn, RegionIndex), Mapping> {
        self.live.lock().unwrap().clone()
    }
}

impl RegionMapper for RecordingMapper {
    fn map(
        &self,
        devfn: DevFn,
        region: RegionIndex,
        mapping: Mapping,
        _device: &SharedPciDevice,
    ) -> Result<(), MapError> {
        if self.refuse.lock().unwrap().contains(&mapping) {
            return Err(MapError {
                devfn,
                region,
                mapping,
                reason: "refused by the test".into(),
            });
        }
        self.events
            .lock()
            .unwrap()
            .push(Event::Map(devfn, region, mapping));
        if let Some(old) = self.live.lock().unwrap().insert((devfn, region), mapping) {
            self.inconsistencies.lock().unwrap().push(format!(
                "{devfn} {region} mapped twice ({old:?}, {mapping:?})"
            ));
        }
        Ok(())
    }

    fn unmap(&self, devfn: DevFn, region: RegionIndex, mapping: Mapping) {
        self.events
            .lock()
            .unwrap()
            .push(Event::Unmap(devfn, region, mapping));
        if self.live.lock().unwrap().remove(&(devfn, region)) != Some(mapping) {
            self.inconsistencies.lock().unwrap().push(format!(
                "{devfn} {region} unmapped but not mapped at {mapping:?}"
            ));
        }
    }
}
