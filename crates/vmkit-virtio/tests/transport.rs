//! The transport driven as a guest driver would: identity, capabilities, feature
//! negotiation, queue setup (modern and legacy), activation, interrupts (MSI-X and INTx),
//! reset, the PCI_CFG window.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use vm_memory::GuestAddress;
use vmkit_pci::PciDevice;
use vmkit_virtio::{
    common as cc, legacy, Console, Error, InterruptKind, Rng, VirtioDevice, VirtioInterrupt,
    VirtioPciBuilder, VIRTIO_NO_VECTOR,
};

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const QSIZE: u16 = 16;

fn rng() -> Box<dyn VirtioDevice<Mem>> {
    Box::new(Rng::with_source(|b: &mut [u8]| {
        b.fill(0xa5);
        Ok(())
    }))
}

/// A device with knobs: refuses feature bit 0, fails activation on demand.
struct TestDev {
    sizes: [u16; 2],
    fail_activate: bool,
    activations: Arc<AtomicUsize>,
    resets: Arc<AtomicUsize>,
    config: [u8; 8],
    irq: Option<Arc<dyn VirtioInterrupt>>,
}

impl TestDev {
    fn new() -> Self {
        TestDev {
            sizes: [QSIZE, 8],
            fail_activate: false,
            activations: Arc::default(),
            resets: Arc::default(),
            config: *b"abcdefgh",
            irq: None,
        }
    }
}

impl VirtioDevice<Mem> for TestDev {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_NET
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn device_features(&self) -> u64 {
        0b11 | 1 << 29
    }
    fn ack_features(&mut self, features: u64) -> vmkit_virtio::Result<()> {
        if features & 1 != 0 {
            return Err(Error::FeaturesRefused {
                features,
                reason: "bit 0 is not allowed in this test".into(),
            });
        }
        Ok(())
    }
    fn config_len(&self) -> usize {
        self.config.len()
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let o = offset as usize;
        data.copy_from_slice(&self.config[o..o + data.len()]);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let o = offset as usize;
        self.config[o..o + data.len()].copy_from_slice(data);
    }
    fn activate(
        &mut self,
        _memory: Mem,
        interrupt: Arc<dyn VirtioInterrupt>,
        _queues: Vec<vmkit_virtio::ActivatedQueue>,
    ) -> vmkit_virtio::Result<()> {
        if self.fail_activate {
            return Err(Error::Activate {
                device: "test",
                reason: "asked to fail".into(),
            });
        }
        self.activations.fetch_add(1, Ordering::SeqCst);
        self.irq = Some(interrupt);
        Ok(())
    }
    fn reset(&mut self) -> bool {
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.irq = None;
        true
    }
}

fn bar_size(h: &mut Harness, bar: u16) -> u64 {
    let off = 0x10 + 4 * bar;
    let old = h.cfg_read(off, 4);
    h.cfg_write(off, 0xffff_ffff, 4);
    let v = h.cfg_read(off, 4) as u32;
    h.cfg_write(off, old, 4);
    let mask = if v & 1 != 0 { v & !3 } else { v & !0xf };
    u64::from((!mask).wrapping_add(1))
}

#[test]
fn transitional_identity_is_qemus() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new());
    assert_eq!(h.cfg_read(0x00, 2), 0x1af4);
    assert_eq!(h.cfg_read(0x02, 2), 0x1005, "virtio-rng transitional ID");
    assert_eq!(h.cfg_read(0x08, 1), 0, "revision 0 (legacy ABI)");
    assert_eq!(h.cfg_read(0x09, 3), 0xff0000, "PCI_CLASS_OTHERS");
    assert_eq!(h.cfg_read(0x2c, 2), 0x1af4);
    assert_eq!(h.cfg_read(0x2e, 2), 4, "subsystem = virtio type");
    assert_eq!(h.cfg_read(0x3d, 1), 1, "INTA#");
    assert_eq!(h.cfg_read(0x10, 4) & 1, 1, "BAR0 is I/O");
    assert_eq!(bar_size(&mut h, 0), 32, "24-byte header + no config");
    assert_eq!(bar_size(&mut h, 1), 4096, "MSI-X BAR");
    assert_eq!(h.cfg_read(0x20, 4) & 0xf, 0xc, "BAR4: 64-bit prefetchable");
    assert_eq!(bar_size(&mut h, 4), 0x4000);
    assert!(h.dev.has_legacy() && h.dev.has_modern());

    let mut c = Harness::new(
        Box::new(Console::new(Sink::default()).unwrap()),
        VirtioPciBuilder::new(),
    );
    assert_eq!(c.cfg_read(0x02, 2), 0x1003);
    assert_eq!(c.cfg_read(0x09, 3), 0x078000, "communication/other");
    assert_eq!(bar_size(&mut c, 0), 64, "24 + 12 bytes of config");
    assert_eq!(c.cfg_read(0x2e, 2), 3);
}

#[test]
fn modern_only_identity() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new().disable_legacy(true));
    assert_eq!(h.cfg_read(0x02, 2), 0x1044);
    assert_eq!(h.cfg_read(0x08, 1), 1, "revision 1");
    assert_eq!(h.cfg_read(0x2e, 2), 0x1100);
    assert_eq!(h.cfg_read(0x10, 4), 0, "no BAR0");
    assert_eq!(h.read(BAR0, 0, 4), 0xffff_ffff, "no legacy registers");
    assert!(h.device_features() & VERSION_1 != 0);
}

#[test]
fn legacy_only_has_no_modern_interface() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new().disable_modern(true));
    assert!(h.vendor_caps().is_empty());
    assert_eq!(h.cfg_read(0x20, 4), 0, "no BAR4");
    assert_eq!(h.legacy_read(legacy::HOST_FEATURES, 4) & VERSION_1, 0);
    assert_eq!(h.dev.offered_features() & VERSION_1, 0);
    assert_eq!(h.read(BAR4, 0x14, 1), 0xff);
}

#[test]
fn builder_errors_name_the_problem() {
    let mem = memory(4096);
    let err = VirtioPciBuilder::new()
        .disable_legacy(true)
        .disable_modern(true)
        .build(rng(), mem.clone())
        .unwrap_err();
    assert!(matches!(err, Error::NoInterface), "{err}");

    struct Input;
    impl VirtioDevice<Mem> for Input {
        fn device_type(&self) -> u32 {
            18
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[64, 64]
        }
        fn device_features(&self) -> u64 {
            0
        }
        fn read_config(&self, _: u64, d: &mut [u8]) {
            d.fill(0)
        }
        fn activate(
            &mut self,
            _: Mem,
            _: Arc<dyn VirtioInterrupt>,
            _: Vec<vmkit_virtio::ActivatedQueue>,
        ) -> vmkit_virtio::Result<()> {
            Ok(())
        }
        fn reset(&mut self) -> bool {
            true
        }
    }
    let err = VirtioPciBuilder::new()
        .disable_legacy(false)
        .build(Box::new(Input), mem.clone())
        .unwrap_err();
    assert!(err.to_string().contains("disable-legacy=on"), "{err}");
    // Without an explicit choice a type with no transitional ID is modern-only.
    let dev = VirtioPciBuilder::new()
        .build(Box::new(Input), mem.clone())
        .unwrap();
    assert!(!dev.has_legacy());
    assert_eq!(dev.config().word(2), 0x1040 + 18);
    assert_eq!(dev.config().byte(0x09 + 2), 0x09, "input class");

    let err = VirtioPciBuilder::new().set("vectors", "many").unwrap_err();
    assert!(err.to_string().contains("vectors=many"), "{err}");
    let err = VirtioPciBuilder::new()
        .set("page-per-vq", "on")
        .unwrap_err();
    assert!(err.to_string().contains("unknown property"), "{err}");
    let b = VirtioPciBuilder::new()
        .set("disable-legacy", "on")
        .unwrap()
        .set("disable-modern", "off")
        .unwrap()
        .set("vectors", "0")
        .unwrap();
    let dev = b.build(rng(), mem).unwrap();
    assert!(!dev.has_legacy() && dev.has_modern());
    assert_eq!(dev.config().dword(0x14), 0, "no MSI-X BAR with vectors=0");
}

#[test]
fn vendor_capabilities_describe_the_modern_bar() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new());
    let caps = h.vendor_caps();
    let types: Vec<u8> = caps.iter().map(|c| c.1).collect();
    assert_eq!(
        types,
        vec![1, 3, 4, 2, 5],
        "common, ISR, device, notify, PCI cfg"
    );
    let expect = [
        (1u8, 16u64, 0x0u64, 0x1000u64),
        (3, 16, 0x1000, 0x1000),
        (4, 16, 0x2000, 0x1000),
        (2, 20, 0x3000, 0x1000),
        (5, 20, 0, 0),
    ];
    for (&(off, _), (ty, len, offset, length)) in caps.iter().zip(expect) {
        assert_eq!(h.cfg_read(off + 2, 1), len, "cap_len of type {ty}");
        assert_eq!(h.cfg_read(off + 3, 1), u64::from(ty));
        if ty != 5 {
            assert_eq!(h.cfg_read(off + 4, 1), 4, "BAR4");
        }
        assert_eq!(h.cfg_read(off + 8, 4), offset);
        assert_eq!(h.cfg_read(off + 12, 4), length);
    }
    let notify = caps[3].0;
    assert_eq!(h.cfg_read(notify + 16, 4), 4, "notify_off_multiplier");
    assert_eq!(caps[0].0, 0x40, "QEMU's first capability offset");
    let msix = h.msix_cap();
    assert_eq!(h.cfg_read(msix + 2, 2), 1, "two vectors: table size - 1");
    assert_eq!(h.cfg_read(msix + 4, 4), 1, "table in BAR1 at 0");
    assert_eq!(h.cfg_read(msix + 8, 4), 0x801, "PBA in BAR1 at 0x800");
    // Read-only: the guest cannot move them.
    h.cfg_write(notify + 8, 0, 4);
    assert_eq!(h.cfg_read(notify + 8, 4), 0x3000);
}

#[test]
fn feature_negotiation_accepts_a_subset() {
    let mut h = Harness::new(Box::new(TestDev::new()), VirtioPciBuilder::new());
    assert_eq!(h.device_features(), 0b11 | 1 << 29 | VERSION_1);
    h.common_write(cc::DEVICE_FEATURE_SELECT, 2, 4);
    assert_eq!(h.common_read(cc::DEVICE_FEATURE, 4), 0, "select 2 reads 0");
    let status = h.negotiate(VERSION_1 | 0b10);
    assert_eq!(status, ACK | DRIVER | FEATURES_OK);
    assert_eq!(h.dev.acked_features(), Some(VERSION_1 | 0b10));
    // Driver features read back; writes after FEATURES_OK are ignored.
    h.common_write(cc::DRIVER_FEATURE_SELECT, 0, 4);
    assert_eq!(h.common_read(cc::DRIVER_FEATURE, 4), 0b10);
    h.common_write(cc::DRIVER_FEATURE, 0, 4);
    assert_eq!(h.common_read(cc::DRIVER_FEATURE, 4), 0b10);
    assert_eq!(h.common_read(cc::NUM_QUEUES, 2), 2);
}

#[test]
fn features_ok_is_refused_for_unoffered_or_rejected_features() {
    let mut h = Harness::new(Box::new(TestDev::new()), VirtioPciBuilder::new());
    let status = h.negotiate(VERSION_1 | 1 << 5);
    assert_eq!(status, ACK | DRIVER, "bit 5 was not offered");
    assert_eq!(h.dev.acked_features(), None);
    let status = h.negotiate(VERSION_1 | 1);
    assert_eq!(status, ACK | DRIVER, "the device refuses bit 0");
    let status = h.negotiate(VERSION_1);
    assert_eq!(status, ACK | DRIVER | FEATURES_OK);
}

#[test]
fn modern_queue_registers() {
    let mut h = Harness::new(Box::new(TestDev::new()), VirtioPciBuilder::new());
    h.negotiate(VERSION_1);
    h.common_write(cc::QUEUE_SELECT, 1, 2);
    assert_eq!(h.common_read(cc::QUEUE_SIZE, 2), 8, "max size by default");
    assert_eq!(h.common_read(cc::QUEUE_NOTIFY_OFF, 2), 1);
    assert_eq!(
        h.common_read(cc::QUEUE_MSIX_VECTOR, 2),
        u64::from(VIRTIO_NO_VECTOR)
    );
    h.common_write(cc::QUEUE_SIZE, 6, 2);
    assert_eq!(
        h.common_read(cc::QUEUE_SIZE, 2),
        8,
        "not a power of two: ignored"
    );
    h.common_write(cc::QUEUE_SIZE, 16, 2);
    assert_eq!(
        h.common_read(cc::QUEUE_SIZE, 2),
        8,
        "above the maximum: ignored"
    );
    h.common_write(cc::QUEUE_SIZE, 4, 2);
    assert_eq!(h.common_read(cc::QUEUE_SIZE, 2), 4);
    h.common_write(cc::QUEUE_DESC_LO, 0x1234_5000, 4);
    h.common_write(cc::QUEUE_DESC_HI, 0x1, 4);
    assert_eq!(h.common_read(cc::QUEUE_DESC_LO, 4), 0x1234_5000);
    assert_eq!(h.common_read(cc::QUEUE_DESC_HI, 4), 1);
    h.common_write(cc::QUEUE_DRIVER_LO, 0x1001, 4);
    assert_eq!(
        h.common_read(cc::QUEUE_DRIVER_LO, 4),
        0,
        "misaligned avail ring: ignored"
    );
    h.common_write(cc::QUEUE_DEVICE_LO, 0x8000, 8);
    assert_eq!(
        h.common_read(cc::QUEUE_DEVICE_LO, 8),
        0x8000,
        "64-bit access"
    );
    assert_eq!(h.common_read(cc::QUEUE_ENABLE, 2), 0);
    h.common_write(cc::QUEUE_ENABLE, 0, 2);
    assert_eq!(
        h.common_read(cc::QUEUE_ENABLE, 2),
        0,
        "0 is not a valid write"
    );
    h.common_write(cc::QUEUE_ENABLE, 1, 2);
    assert_eq!(h.common_read(cc::QUEUE_ENABLE, 2), 1);
    // Vectors past the table read back as NO_VECTOR.
    h.common_write(cc::QUEUE_MSIX_VECTOR, 1, 2);
    assert_eq!(h.common_read(cc::QUEUE_MSIX_VECTOR, 2), 1);
    h.common_write(cc::QUEUE_MSIX_VECTOR, 3, 2);
    assert_eq!(
        h.common_read(cc::QUEUE_MSIX_VECTOR, 2),
        u64::from(VIRTIO_NO_VECTOR)
    );
    h.common_write(cc::MSIX_CONFIG, 0, 2);
    assert_eq!(h.common_read(cc::MSIX_CONFIG, 2), 0);
    // An out-of-range selector reads 0 and ignores writes.
    h.common_write(cc::QUEUE_SELECT, 7, 2);
    assert_eq!(h.common_read(cc::QUEUE_SELECT, 2), 7);
    assert_eq!(h.common_read(cc::QUEUE_SIZE, 2), 0);
    h.common_write(cc::QUEUE_ENABLE, 1, 2);
    assert_eq!(h.common_read(cc::QUEUE_ENABLE, 2), 0);
    // Unknown offsets read 0.
    assert_eq!(h.common_read(0x40, 4), 0);
}

#[test]
fn device_config_through_both_interfaces() {
    let mut h = Harness::new(Box::new(TestDev::new()), VirtioPciBuilder::new());
    assert_eq!(
        h.read(BAR4, 0x2000, 4),
        u64::from(u32::from_le_bytes(*b"abcd"))
    );
    assert_eq!(
        h.read(BAR4, 0x2006, 4),
        0xffff_ffff,
        "past the config: all ones"
    );
    h.write(BAR4, 0x2000, u64::from(b'X'), 1);
    // Legacy: config at 0x14 while MSI-X is off, 0x18 while it is on.
    assert_eq!(h.legacy_read(legacy::CONFIG, 1), u64::from(b'X'));
    h.enable_msix(3);
    assert_eq!(h.legacy_read(legacy::CONFIG_MSIX + 1, 1), u64::from(b'b'));
    assert_eq!(
        h.legacy_read(legacy::MSI_CONFIG_VECTOR, 2),
        u64::from(VIRTIO_NO_VECTOR)
    );
    h.legacy_write(legacy::MSI_CONFIG_VECTOR, 2, 2);
    assert_eq!(h.common_read(cc::MSIX_CONFIG, 2), 2);
}

#[test]
fn driver_ok_activates_and_lists_doorbells() {
    let acts;
    let mut h = {
        let d = TestDev::new();
        acts = d.activations.clone();
        Harness::new(Box::new(d), VirtioPciBuilder::new())
    };
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    let gen0 = h.dev.notify_generation();
    assert!(h.dev.notify_addresses().is_empty());
    h.driver_ok();
    assert_eq!(acts.load(Ordering::SeqCst), 1);
    assert!(h.dev.is_active());
    assert_eq!(h.dev.notify_generation(), gen0 + 1);
    let n = h.dev.notify_addresses();
    assert_eq!(
        n.len(),
        2,
        "queue 0: modern and legacy doorbells (queue 1 disabled)"
    );
    assert_eq!(
        (n[0].region, n[0].offset, n[0].len, n[0].datamatch),
        (BAR4, 0x3000, 0, None)
    );
    assert_eq!(
        (n[1].region, n[1].offset, n[1].len, n[1].datamatch),
        (BAR0, 0x10, 2, Some(0))
    );
    let fd = h.dev.queue_eventfd(0).unwrap();
    assert!(Arc::ptr_eq(&n[0].eventfd, &fd));
    // The slow path writes the eventfd itself.
    h.notify(0);
    assert_eq!(fd.read().unwrap(), 1);
    h.legacy_write(legacy::QUEUE_NOTIFY, 0, 2);
    assert_eq!(fd.read().unwrap(), 1);
    // Queue registers are frozen while running.
    h.common_write(cc::QUEUE_SELECT, 0, 2);
    h.common_write(cc::QUEUE_SIZE, 4, 2);
    assert_eq!(h.common_read(cc::QUEUE_SIZE, 2), u64::from(QSIZE));
    // DRIVER_OK again does not re-activate.
    h.driver_ok();
    assert_eq!(acts.load(Ordering::SeqCst), 1);
    h.set_status(0);
    assert!(h.dev.notify_addresses().is_empty());
    assert_eq!(h.dev.notify_generation(), gen0 + 2);
}

#[test]
fn failed_activation_sets_needs_reset_and_interrupts() {
    let mut d = TestDev::new();
    d.fail_activate = true;
    let mut h = Harness::new(Box::new(d), VirtioPciBuilder::new());
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    h.driver_ok();
    assert_eq!(
        h.status(),
        ACK | DRIVER | FEATURES_OK | DRIVER_OK | NEEDS_RESET
    );
    assert!(!h.dev.is_active());
    assert_eq!(h.dev.isr(), 2, "configuration change");
    assert!(h.line.level());
    // The driver cannot clear NEEDS_RESET except by resetting.
    h.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(h.status() & NEEDS_RESET, NEEDS_RESET);
    h.set_status(0);
    assert_eq!(h.status(), 0);
    assert!(!h.line.level());
}

#[test]
fn rings_outside_memory_fail_activation() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new());
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, 0x4000_0000, AVAIL, USED);
    h.driver_ok();
    assert_eq!(h.status() & NEEDS_RESET, NEEDS_RESET);
}

#[test]
fn rng_request_completes_with_msix() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new());
    h.enable_msix(2);
    h.negotiate(VERSION_1);
    h.common_write(cc::MSIX_CONFIG, 1, 2);
    h.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    h.common_write(cc::QUEUE_MSIX_VECTOR, 0, 2);
    h.driver_ok();
    let routes = h.msi.routes.lock().unwrap().clone();
    assert!(routes.contains(&(
        0,
        Some(vmkit_pci::MsiMessage {
            address: 0xfee0_0000,
            data: 0x40
        })
    )));
    publish(
        &h.mem,
        DESC,
        AVAIL,
        QSIZE,
        &[(0, desc(0x10000, 64, WRITE, 0))],
        0,
    );
    h.notify(0);
    let mem = h.mem.clone();
    wait_for("used idx", || used_idx(&mem, GuestAddress(USED)) == 1);
    assert_eq!(used_elem(&mem, GuestAddress(USED), 0), (0, 64));
    let mut buf = [0u8; 64];
    vm_memory::Bytes::read_slice(&*mem, &mut buf, GuestAddress(0x10000)).unwrap();
    assert_eq!(buf, [0xa5; 64]);
    let msi = h.msi.clone();
    wait_for("MSI", || msi.count(0) == 1);
    assert_eq!(h.dev.isr(), 0, "no ISR with MSI-X");
    assert!(!h.line.level());
}

#[test]
fn rng_request_completes_with_intx() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new());
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    h.driver_ok();
    publish(
        &h.mem,
        DESC,
        AVAIL,
        QSIZE,
        &[(3, desc(0x10000, 100, WRITE, 0))],
        3,
    );
    h.notify(0);
    let line = h.line.clone();
    wait_for("INTx", || line.level());
    assert_eq!(used_elem(&h.mem, GuestAddress(USED), 0), (3, 100));
    assert_eq!(h.cfg_read(0x06, 2) & 0x8, 0x8, "status: interrupt pending");
    // INTx disable drops the line but keeps ISR.
    h.cfg_write(0x04, 0x400, 2);
    assert!(!h.line.level());
    h.cfg_write(0x04, 0, 2);
    assert!(h.line.level());
    assert_eq!(h.read(BAR4, 0x1000, 1), 1, "ISR: queue interrupt");
    assert!(!h.line.level(), "reading ISR lowers INTx");
    assert_eq!(h.read(BAR4, 0x1000, 1), 0, "and clears it");
    assert_eq!(h.cfg_read(0x06, 2) & 0x8, 0);
}

#[test]
fn rng_requests_are_bounded() {
    let dev = Rng::with_source(|b: &mut [u8]| {
        b.fill(1);
        Ok(())
    })
    .with_max_request(32);
    let mut h = Harness::new(Box::new(dev), VirtioPciBuilder::new());
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    h.driver_ok();
    publish(
        &h.mem,
        DESC,
        AVAIL,
        QSIZE,
        &[(0, desc(0x10000, 4096, WRITE, 0))],
        0,
    );
    h.notify(0);
    let mem = h.mem.clone();
    wait_for("used", || used_idx(&mem, GuestAddress(USED)) == 1);
    assert_eq!(used_elem(&mem, GuestAddress(USED), 0), (0, 32));
}

#[test]
fn legacy_driver_sets_up_and_completes_a_request() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new());
    let host = h.legacy_read(legacy::HOST_FEATURES, 4);
    assert_eq!(
        host,
        1 << 28 | 1 << 29,
        "INDIRECT_DESC | EVENT_IDX, no VERSION_1 bit"
    );
    h.legacy_status(ACK | DRIVER);
    h.legacy_write(legacy::GUEST_FEATURES, 1 << 28, 4);
    assert_eq!(h.legacy_read(legacy::GUEST_FEATURES, 4), 1 << 28);
    h.legacy_write(legacy::QUEUE_SEL, 0, 2);
    let size = h.legacy_read(legacy::QUEUE_NUM, 2);
    assert_eq!(size, 256);
    let (d, a, u) = legacy_layout(0x20, size);
    h.legacy_write(legacy::QUEUE_PFN, 0x20, 4);
    assert_eq!(h.legacy_read(legacy::QUEUE_PFN, 4), 0x20);
    assert_eq!(h.common_read(cc::QUEUE_DRIVER_LO, 4), a);
    assert_eq!(h.common_read(cc::QUEUE_DEVICE_LO, 4), u);
    h.legacy_status(ACK | DRIVER | DRIVER_OK);
    assert!(h.dev.is_active());
    assert_eq!(
        h.dev.acked_features(),
        Some(1 << 28),
        "legacy features at DRIVER_OK"
    );
    publish(
        &h.mem,
        d,
        a,
        size as u16,
        &[(0, desc(0x80000, 8, WRITE, 0))],
        0,
    );
    h.legacy_write(legacy::QUEUE_NOTIFY, 0, 2);
    let line = h.line.clone();
    wait_for("INTx", || line.level());
    assert_eq!(used_elem(&h.mem, GuestAddress(u), 0), (0, 8));
    assert_eq!(h.legacy_read(legacy::ISR, 1), 1);
    assert!(!h.line.level());
    // Writing 0 to the PFN resets the whole device.
    h.legacy_write(legacy::QUEUE_PFN, 0, 4);
    assert_eq!(h.legacy_read(legacy::STATUS, 1), 0);
    assert!(!h.dev.is_active());
    assert_eq!(h.legacy_read(legacy::QUEUE_PFN, 4), 0);
}

#[test]
fn legacy_with_msix_uses_vector_registers() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new());
    h.enable_msix(2);
    h.legacy_status(ACK | DRIVER);
    h.legacy_write(legacy::MSI_CONFIG_VECTOR, 1, 2);
    h.legacy_write(legacy::QUEUE_SEL, 0, 2);
    h.legacy_write(legacy::MSI_QUEUE_VECTOR, 0, 2);
    assert_eq!(h.legacy_read(legacy::MSI_QUEUE_VECTOR, 2), 0);
    let (d, a, u) = legacy_layout(0x20, 256);
    h.legacy_write(legacy::QUEUE_PFN, 0x20, 4);
    h.legacy_status(ACK | DRIVER | DRIVER_OK);
    publish(&h.mem, d, a, 256, &[(0, desc(0x80000, 8, WRITE, 0))], 0);
    h.legacy_write(legacy::QUEUE_NOTIFY, 0, 2);
    let msi = h.msi.clone();
    wait_for("MSI vector 0", || msi.count(0) == 1);
    assert_eq!(used_elem(&h.mem, GuestAddress(u), 0), (0, 8));
}

#[test]
fn msix_masking_holds_interrupts_in_the_pba() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new());
    h.enable_msix(2);
    h.write(BAR1, 12, 1, 4); // mask entry 0
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    h.common_write(cc::QUEUE_MSIX_VECTOR, 0, 2);
    h.driver_ok();
    publish(
        &h.mem,
        DESC,
        AVAIL,
        QSIZE,
        &[(0, desc(0x10000, 8, WRITE, 0))],
        0,
    );
    h.notify(0);
    let mem = h.mem.clone();
    wait_for("used", || used_idx(&mem, GuestAddress(USED)) == 1);
    let (dev, msi) = (&mut h.dev, h.msi.clone());
    wait_for("PBA bit", || {
        let mut b = [0u8; 8];
        dev.region_read(BAR1, 0x800, &mut b);
        b[0] == 1
    });
    assert_eq!(msi.count(0), 0, "masked: nothing delivered");
    h.write(BAR1, 0x800, 0, 8);
    assert_eq!(h.read(BAR1, 0x800, 8), 1, "PBA is read-only");
    h.write(BAR1, 12, 0, 4); // unmask: the pending vector goes out
    assert_eq!(msi.count(0), 1);
    assert_eq!(h.read(BAR1, 0x800, 8), 0);

    // Function mask: the same through Message Control.
    let cap = h.msix_cap();
    h.cfg_write(cap + 2, 0xc000, 2);
    publish(
        &h.mem,
        DESC,
        AVAIL,
        QSIZE,
        &[(1, desc(0x10000, 8, WRITE, 0))],
        1,
    );
    h.notify(0);
    let dev = &mut h.dev;
    wait_for("PBA bit", || {
        let mut b = [0u8; 8];
        dev.region_read(BAR1, 0x800, &mut b);
        b[0] == 1
    });
    assert_eq!(msi.count(0), 1);
    h.cfg_write(cap + 2, 0x8000, 2);
    assert_eq!(msi.count(0), 2);
}

/// A device that hands its interrupt handle out, to trigger by hand.
struct Trigger {
    sizes: [u16; 1],
    slot: Arc<std::sync::Mutex<Option<Arc<dyn VirtioInterrupt>>>>,
}

impl VirtioDevice<Mem> for Trigger {
    fn device_type(&self) -> u32 {
        4
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn device_features(&self) -> u64 {
        0
    }
    fn read_config(&self, _: u64, d: &mut [u8]) {
        d.fill(0)
    }
    fn activate(
        &mut self,
        _: Mem,
        i: Arc<dyn VirtioInterrupt>,
        _: Vec<vmkit_virtio::ActivatedQueue>,
    ) -> vmkit_virtio::Result<()> {
        *self.slot.lock().unwrap() = Some(i);
        Ok(())
    }
    fn reset(&mut self) -> bool {
        true
    }
}

#[test]
fn triggers_map_to_vectors_and_stale_handles_are_dead() {
    let slot = Arc::new(std::sync::Mutex::new(None));
    let dev = Trigger {
        sizes: [16],
        slot: slot.clone(),
    };
    let mut h = Harness::new(Box::new(dev), VirtioPciBuilder::new());
    h.negotiate(VERSION_1);
    h.setup_queue(0, 16, DESC, AVAIL, USED);
    h.driver_ok();
    let irq = slot.lock().unwrap().clone().unwrap();
    let gen = h.common_read(cc::CONFIG_GENERATION, 1);
    irq.trigger(InterruptKind::Config);
    assert_eq!(h.common_read(cc::CONFIG_GENERATION, 1), gen + 1);
    assert_eq!(h.read(BAR4, 0x1000, 1), 2, "ISR bit 1: configuration");
    irq.trigger(InterruptKind::Queue(5));
    assert_eq!(h.dev.isr(), 0, "no such queue: ignored");

    h.enable_msix(2);
    h.common_write(cc::MSIX_CONFIG, 1, 2);
    // Vector registers are not frozen by DRIVER_OK in QEMU: msix_config may change.
    irq.trigger(InterruptKind::Config);
    assert_eq!(h.msi.count(1), 1);
    irq.trigger(InterruptKind::Queue(0));
    assert_eq!(h.msi.sent.lock().unwrap().len(), 1, "queue 0 has NO_VECTOR");

    h.set_status(0);
    irq.trigger(InterruptKind::Config);
    irq.trigger(InterruptKind::Queue(0));
    assert_eq!(
        h.msi.sent.lock().unwrap().len(),
        1,
        "handle from before the reset"
    );
    assert_eq!(h.dev.isr(), 0);
}

#[test]
fn reset_during_requests_stops_the_worker_and_restores_defaults() {
    // A source that is slow, so requests are in flight when the reset comes.
    let dev = Rng::with_source(|b: &mut [u8]| {
        std::thread::sleep(std::time::Duration::from_millis(2));
        b.fill(7);
        Ok(())
    });
    let mut h = Harness::new(Box::new(dev), VirtioPciBuilder::new());
    for round in 0..3 {
        h.negotiate(VERSION_1);
        h.setup_queue(0, QSIZE, DESC, AVAIL, USED);
        h.driver_ok();
        assert!(h.dev.is_active(), "round {round}");
        for i in 0..8u16 {
            publish(
                &h.mem,
                DESC,
                AVAIL,
                QSIZE,
                &[(i, desc(0x10000 + 0x100 * u64::from(i), 16, WRITE, 0))],
                i,
            );
        }
        h.notify(0);
        h.set_status(0);
        assert_eq!(h.status(), 0);
        assert!(!h.dev.is_active());
        assert_eq!(h.common_read(cc::QUEUE_ENABLE, 2), 0);
        assert_eq!(h.common_read(cc::QUEUE_SIZE, 2), 256);
        assert_eq!(h.common_read(cc::QUEUE_DESC_LO, 4), 0);
        assert_eq!(
            h.common_read(cc::QUEUE_MSIX_VECTOR, 2),
            u64::from(VIRTIO_NO_VECTOR)
        );
        assert_eq!(h.dev.acked_features(), None);
        // The worker is gone: the used ring does not move any more.
        let before = used_idx(&h.mem, GuestAddress(USED));
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(used_idx(&h.mem, GuestAddress(USED)), before);
        // Fresh rings for the next round.
        vm_memory::Bytes::write_slice(&*h.mem, &[0u8; 0x3000], GuestAddress(DESC)).unwrap();
    }
}

#[test]
fn machine_reset_clears_pci_and_virtio_state() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new());
    h.enable_msix(2);
    h.cfg_write(0x04, 0x7, 2);
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    h.driver_ok();
    PciDevice::reset(&mut h.dev);
    assert_eq!(h.cfg_read(0x04, 2), 0);
    assert!(!h.dev.msix_enabled());
    assert_eq!(h.read(BAR1, 12, 4), 1, "entries masked again");
    assert!(!h.dev.is_active());
    assert_eq!(h.status(), 0);
    assert_eq!(h.cfg_read(0x02, 2), 0x1005, "identity survives");
}

#[test]
fn pci_cfg_window_reaches_the_modern_bar() {
    let mut h = Harness::new(rng(), VirtioPciBuilder::new());
    let cap = h.vendor_caps().iter().find(|c| c.1 == 5).unwrap().0;
    h.cfg_write(cap + 4, 4, 1); // bar
    h.cfg_write(cap + 8, cc::DEVICE_STATUS, 4); // offset
    h.cfg_write(cap + 12, 1, 4); // length
    h.cfg_write(cap + 16, u64::from(ACK), 1);
    assert_eq!(h.status(), ACK);
    h.set_status(ACK | DRIVER);
    assert_eq!(h.cfg_read(cap + 16, 1), u64::from(ACK | DRIVER));
    // Length 4 at a misaligned offset is aligned down (0x12 -> 0x10, msix_config; like
    // QEMU, a wide access at a field's offset returns that field only).
    h.cfg_write(cap + 8, 0x12, 4);
    h.cfg_write(cap + 12, 4, 4);
    assert_eq!(h.cfg_read(cap + 16, 4), u64::from(VIRTIO_NO_VECTOR));
    h.cfg_write(cap + 12, 2, 4);
    assert_eq!(h.cfg_read(cap + 16, 2), 1, "num_queues = 1");
    // Another BAR or a bad length: no access.
    h.cfg_write(cap + 4, 0, 1);
    h.cfg_write(cap + 8, cc::DEVICE_STATUS, 4);
    h.cfg_write(cap + 12, 1, 4);
    h.cfg_write(cap + 16, 0, 1);
    assert_eq!(h.status(), ACK | DRIVER);
    h.cfg_write(cap + 4, 4, 1);
    h.cfg_write(cap + 12, 3, 4);
    h.cfg_write(cap + 16, 0, 1);
    assert_eq!(h.status(), ACK | DRIVER);
}

#[test]
fn through_the_pci_bus_and_mmio_bus() {
    use std::sync::Mutex;
    use vmkit_bus::{MmioBus, PioBus};
    use vmkit_pci::{BusRegionMapper, DevFn, PciBus};

    let h = Harness::new(rng(), VirtioPciBuilder::new());
    let mem = h.mem.clone();
    let dev = Arc::new(Mutex::new(h.dev));
    let (pio, mmio) = (PioBus::new(), MmioBus::new());
    let pci = PciBus::with_mapper(Arc::new(BusRegionMapper::new(pio.clone(), mmio.clone())));
    let devfn = DevFn::new(4, 0);
    pci.add(devfn, dev.clone()).unwrap();
    pci.config_write(devfn, 0x20, &0xfe00_0000u32.to_le_bytes());
    pci.config_write(devfn, 0x10, &0xc000u32.to_le_bytes());
    pci.config_write(devfn, 0x04, &0x7u16.to_le_bytes());
    let mapped = pci.mapped(devfn);
    assert_eq!(
        mapped.len(),
        2,
        "BAR0 and BAR4 (BAR1 still at 0): {mapped:?}"
    );
    let w = |addr: u64, v: u64, len: usize| mmio.write(addr, &v.to_le_bytes()[..len]);
    let base = 0xfe00_0000u64;
    w(base + cc::DEVICE_STATUS, 3, 1);
    w(base + cc::DRIVER_FEATURE_SELECT, 1, 4);
    w(base + cc::DRIVER_FEATURE, 1, 4);
    w(base + cc::DEVICE_STATUS, 11, 1);
    w(base + cc::QUEUE_SIZE, 16, 2);
    w(base + cc::QUEUE_DESC_LO, DESC, 4);
    w(base + cc::QUEUE_DRIVER_LO, AVAIL, 4);
    w(base + cc::QUEUE_DEVICE_LO, USED, 4);
    w(base + cc::QUEUE_ENABLE, 1, 2);
    w(base + cc::DEVICE_STATUS, 15, 1);
    publish(&mem, DESC, AVAIL, 16, &[(0, desc(0x10000, 8, WRITE, 0))], 0);
    // The legacy doorbell on the port bus reaches the same queue.
    pio.write(0xc010, &0u16.to_le_bytes());
    wait_for("used", || used_idx(&mem, GuestAddress(USED)) == 1);
    let notify = dev.lock().unwrap().notify_addresses();
    assert_eq!(notify.len(), 2);
}

/// One reported doorbell: (queue, region, offset, len, datamatch).
type Doorbell = (u16, vmkit_pci::RegionIndex, u64, u32, Option<u64>);

/// Records every set of doorbells the transport reports.
#[derive(Default)]
struct RecordingHook(std::sync::Mutex<Vec<Vec<Doorbell>>>);

impl vmkit_virtio::NotifierHook for RecordingHook {
    fn notifiers_changed(&self, notifiers: &[vmkit_virtio::QueueNotify]) {
        self.0.lock().unwrap().push(
            notifiers
                .iter()
                .map(|n| (n.queue, n.region, n.offset, n.len, n.datamatch))
                .collect(),
        );
    }
}

#[test]
fn the_notifier_hook_gets_the_doorbells_at_driver_ok_and_none_at_reset() {
    let hook = Arc::new(RecordingHook::default());
    let mut h = Harness::new(
        Box::new(TestDev::new()),
        VirtioPciBuilder::new().notifier_hook(hook.clone()),
    );
    assert!(h.dev.ioeventfd_enabled());
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    h.setup_queue(1, 8, DESC + 0x4000, AVAIL + 0x4000, USED + 0x4000);
    assert!(
        hook.0.lock().unwrap().is_empty(),
        "nothing before DRIVER_OK"
    );
    h.driver_ok();
    h.set_status(0);
    // A reset of an inactive device reports nothing more.
    h.set_status(0);
    assert_eq!(
        *hook.0.lock().unwrap(),
        vec![
            vec![
                (0, BAR4, 0x3000, 0, None),
                (0, BAR0, 0x10, 2, Some(0)),
                (1, BAR4, 0x3004, 0, None),
                (1, BAR0, 0x10, 2, Some(1)),
            ],
            vec![],
        ]
    );
}

#[test]
fn ioeventfd_off_keeps_the_hook_out_and_doorbells_on_the_slow_path() {
    let hook = Arc::new(RecordingHook::default());
    let builder = VirtioPciBuilder::new()
        .notifier_hook(hook.clone())
        .set("ioeventfd", "off")
        .unwrap();
    let mut h = Harness::new(Box::new(TestDev::new()), builder);
    assert!(!h.dev.ioeventfd_enabled());
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    h.driver_ok();
    h.notify(0);
    assert_eq!(h.dev.queue_eventfd(0).unwrap().read().unwrap(), 1);
    h.set_status(0);
    assert!(hook.0.lock().unwrap().is_empty());
    let err = VirtioPciBuilder::new()
        .set("ioeventfd", "maybe")
        .unwrap_err();
    assert!(err.to_string().contains("ioeventfd=maybe"), "{err}");
}
