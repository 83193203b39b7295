//! The chipset functions register by register, against the 82441FX / 82371SB / 82371AB
//! datasheets and QEMU's models (ids, reset values, masks, side effects).

use std::sync::{Arc, Mutex};

use vmkit_bus::Space;
use vmkit_hw::{ManualClock, RecordingLine};
use vmkit_pci::{DevFn, PciDevice, RegionIndex};
use vmkit_piix::i440fx::{PAM_BASE, SMRAM, SMRAM_D_LCK, SMRAM_D_OPEN};
use vmkit_piix::pm::*;
use vmkit_piix::*;

fn read32(device: &mut dyn PciDevice, offset: u16) -> u32 {
    let mut data = [0u8; 4];
    device.config_read(offset, &mut data);
    u32::from_le_bytes(data)
}

fn read8(device: &mut dyn PciDevice, offset: u16) -> u8 {
    let mut data = [0u8; 1];
    device.config_read(offset, &mut data);
    data[0]
}

#[derive(Default)]
struct RecordingPam(Mutex<Vec<(PamSegment, PamMode)>>);

impl PamListener for RecordingPam {
    fn pam_changed(&self, segment: PamSegment, mode: PamMode) {
        self.0.lock().unwrap().push((segment, mode));
    }
}

#[derive(Default)]
struct RecordingPower(Mutex<Vec<u8>>);

impl PowerEvents for RecordingPower {
    fn sleep(&self, slp_typ: u8) {
        self.0.lock().unwrap().push(slp_typ);
    }
}

#[test]
fn identities_as_qemus_pc() {
    let clock = Arc::new(ManualClock::new(0));
    let cases: Vec<(Box<dyn PciDevice>, u32, u32, u8)> = vec![
        (
            Box::new(I440fx::new(Arc::new(NoPam))),
            0x1237_8086,
            0x0600_0002,
            0x00,
        ),
        (Box::new(Piix3::new()), 0x7000_8086, 0x0601_0000, 0x80),
        (Box::new(Piix3Ide::new()), 0x7010_8086, 0x0101_8000, 0x00),
        (
            Box::new(Piix4Pm::new(
                clock,
                Arc::new(RecordingLine::default()),
                Arc::new(NoPower),
            )),
            0x7113_8086,
            0x0680_0003,
            0x00,
        ),
    ];
    for (mut device, id, class_rev, header) in cases {
        assert_eq!(read32(device.as_mut(), 0), id);
        assert_eq!(
            read32(device.as_mut(), 8),
            class_rev,
            "class/revision of {id:#x}"
        );
        assert_eq!(
            read8(device.as_mut(), 0x0e),
            header,
            "header type of {id:#x}"
        );
        // QEMU's subsystem ids, which SeaBIOS checks to know it runs on QEMU.
        assert_eq!(read32(device.as_mut(), 0x2c), 0x1100_1af4);
        // Ids are read-only.
        device.config_write(0, &[0; 4]);
        assert_eq!(read32(device.as_mut(), 0), id);
    }
}

#[test]
fn pam_segments_decode_every_nibble() {
    let pam = Arc::new(RecordingPam::default());
    let mut host = I440fx::new(pam.clone());
    assert_eq!(
        pam.0.lock().unwrap().len(),
        13,
        "the power-on state is announced"
    );
    assert!(host.modes().iter().all(|m| *m == PamMode::Pci));
    pam.0.lock().unwrap().clear();
    // PAM0 high nibble: 0xF0000; PAM1 low: 0xC0000, high: 0xC4000; ... PAM6 high: 0xEC000.
    host.config_write(0x59, &[0x20]);
    assert_eq!(
        pam.0.lock().unwrap().as_slice(),
        [(
            PamSegment {
                base: 0xf_0000,
                size: 0x1_0000
            },
            PamMode::WriteOnly
        )]
    );
    pam.0.lock().unwrap().clear();
    host.config_write(0x5a, &[0x31]);
    host.config_write(0x5f, &[0x20]);
    assert_eq!(
        pam.0.lock().unwrap().as_slice(),
        [
            (
                PamSegment {
                    base: 0xc_0000,
                    size: 0x4000
                },
                PamMode::ReadOnly
            ),
            (
                PamSegment {
                    base: 0xc_4000,
                    size: 0x4000
                },
                PamMode::ReadWrite
            ),
            (
                PamSegment {
                    base: 0xe_c000,
                    size: 0x4000
                },
                PamMode::WriteOnly
            ),
        ]
    );
    // PAM0's low nibble is reserved; a rewrite of the same value announces nothing.
    pam.0.lock().unwrap().clear();
    host.config_write(0x59, &[0x2f]);
    assert_eq!(read8(&mut host, 0x59), 0x20);
    assert!(pam.0.lock().unwrap().is_empty());
    // SeaBIOS writes the PAM registers as two dwords at 0x58 and 0x5c.
    host.config_write(0x58, &0x3333_3300u32.to_le_bytes());
    assert_eq!(host.modes()[0], PamMode::ReadWrite);
    assert_eq!(host.modes()[1], PamMode::ReadWrite);
    // Reset routes everything back to PCI and says so.
    host.reset();
    assert!(host.modes().iter().all(|m| *m == PamMode::Pci));
    assert_eq!(read8(&mut host, 0x5a), 0);
}

#[test]
fn smram_defaults_and_lock() {
    let mut host = I440fx::new(Arc::new(NoPam));
    assert_eq!(read8(&mut host, 0x72), 0x02, "C_BASE_SEG = 0xA0000");
    host.config_write(0x72, &[0x4a]); // D_OPEN | G_SMRAME
    assert!(host.smram_open());
    assert_eq!(read8(&mut host, 0x72), 0x4a);
    host.config_write(0x72, &[0x5a]); // + D_LCK: closes D_OPEN and locks
    assert_eq!(read8(&mut host, 0x72), 0x1a);
    assert!(!host.smram_open());
    host.config_write(0x72, &[0x42]);
    assert_eq!(read8(&mut host, 0x72), 0x1a, "locked until reset");
    host.reset();
    assert_eq!(read8(&mut host, 0x72), 0x02);
}

#[test]
fn piix3_reset_values_and_pirq_routes() {
    let mut bridge = Piix3::new();
    for (offset, value) in [
        (0x4c, 0x4d),
        (0x4e, 0x03),
        (0x60, 0x80),
        (0x63, 0x80),
        (0x69, 0x02),
        (0xa8, 0x0f),
    ] {
        assert_eq!(read8(&mut bridge, offset), value, "{offset:#x}");
    }
    assert_eq!(
        read32(&mut bridge, 4) & 0xffff,
        0x0007,
        "bus master, memory, I/O"
    );
    assert_eq!(
        (0..4).map(|p| bridge.route(p)).collect::<Vec<_>>(),
        [None; 4]
    );
    bridge.config_write(0x60, &[10, 11, 0x0b, 0x85]);
    assert_eq!(bridge.route(0), Some(10));
    assert_eq!(bridge.route(1), Some(11));
    assert_eq!(bridge.route(2), Some(11));
    assert_eq!(bridge.route(3), None, "bit 7 disables the route");
    assert_eq!(bridge.route(4), None);
    assert_eq!(
        pirq_route(0x1f),
        None,
        "QEMU: a value of 16 or more is no route"
    );
    bridge.reset();
    assert_eq!(bridge.route(0), None);
}

#[test]
fn pci_intx_ors_the_sources_of_a_pirq() {
    let bridge = Arc::new(Mutex::new(Piix3::new()));
    bridge.lock().unwrap().config_write(0x60, &[10, 11, 10, 11]);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&lines);
    let intx = PciIntx::new(
        bridge,
        Arc::new(move |irq, level| log.lock().unwrap().push((irq, level))),
    );
    // Slot 3 INTA and slot 2 INTB both land on PIRQC ((slot - 1 + pin - 1) % 4 = 2).
    let a = DevFn::new(3, 0);
    let b = DevFn::new(2, 0);
    intx.set_level(a, 1, true);
    intx.set_level(b, 2, true);
    intx.set_level(a, 1, false);
    assert!(intx.pirq_level(2), "still held by the other source");
    intx.set_level(b, 2, false);
    assert!(!intx.pirq_level(2));
    // Only changes of the shared line reach the ISA side.
    assert_eq!(lines.lock().unwrap().as_slice(), [(10, true), (10, false)]);
    intx.set_level(a, 0, true); // no pin: ignored
    intx.set_level(a, 5, true);
    assert_eq!(lines.lock().unwrap().len(), 2);
}

#[test]
fn rerouting_a_raised_pirq_moves_the_isa_line_and_reset_drops_it() {
    let bridge = Arc::new(Mutex::new(Piix3::new()));
    bridge.lock().unwrap().config_write(0x60, &[10, 11, 10, 11]);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&lines);
    let intx = Arc::new(PciIntx::new(
        Arc::clone(&bridge),
        Arc::new(move |irq, level| log.lock().unwrap().push((irq, level))),
    ));
    bridge.lock().unwrap().set_listener(intx.listener());
    let dev = DevFn::new(2, 0); // INTA of slot 2: PIRQB
    intx.set_level(dev, 1, true);
    // The guest moves PIRQB from IRQ 11 to IRQ 5 while it is high, then disables it.
    bridge.lock().unwrap().config_write(0x61, &[5]);
    bridge.lock().unwrap().config_write(0x61, &[0x80]);
    // Routed again, then a reset disables every route.
    bridge.lock().unwrap().config_write(0x61, &[9]);
    bridge.lock().unwrap().reset();
    assert_eq!(
        lines.lock().unwrap().as_slice(),
        [
            (11, true),
            (11, false),
            (5, true),
            (5, false),
            (9, true),
            (9, false)
        ]
    );
    assert!(intx.pirq_level(1), "the source still drives PIRQB");
}

#[test]
fn ide_function_has_bar4_and_empty_channels() {
    let mut ide = Piix3Ide::new();
    ide.config_write(0x20, &0xffff_ffffu32.to_le_bytes());
    assert_eq!(read32(&mut ide, 0x20), 0xffff_fff1, "16-byte I/O BAR");
    ide.config_write(0x20, &0xc000u32.to_le_bytes());
    ide.config_write(4, &[1, 0]);
    let regions = ide.regions();
    assert_eq!(regions.len(), 1);
    assert_eq!(
        (regions[0].1.space, regions[0].1.addr, regions[0].1.size),
        (Space::Pio, 0xc000, 16)
    );
    let mut status = [0xaa; 2];
    IdeNoDrives.read(&mut status);
    assert_eq!(status, [0, 0], "not busy, no device");
}

fn pm_fixture() -> (
    Piix4Pm,
    ManualClock,
    Arc<RecordingLine>,
    Arc<RecordingPower>,
) {
    let clock = ManualClock::new(0);
    let sci = Arc::new(RecordingLine::default());
    let power = Arc::new(RecordingPower::default());
    let pm = Piix4Pm::new(Arc::new(clock.clone()), sci.clone(), power.clone());
    (pm, clock, sci, power)
}

#[test]
fn pmba_and_pmregmisc_gate_the_pm_block() {
    let (mut pm, _, _, _) = pm_fixture();
    assert_eq!(read32(&mut pm, 0x40), 1, "PMBA: I/O indicator");
    assert_eq!(read8(&mut pm, 0x3d), 1, "INTA");
    assert_eq!(
        read8(&mut pm, 0x5b),
        0x02,
        "SMM marked initialised, as QEMU without SMM"
    );
    pm.config_write(0x40, &0x0000_ffffu32.to_le_bytes());
    assert_eq!(read32(&mut pm, 0x40), 0xffc1, "bits 15:6 writable");
    pm.config_write(0x40, &0x601u32.to_le_bytes());
    assert!(pm.regions().is_empty(), "PMREGMISC off: not decoded");
    pm.config_write(0x80, &[1]);
    let regions = pm.regions();
    assert_eq!(regions[0].0, PM_REGION);
    assert_eq!((regions[0].1.addr, regions[0].1.size), (0x600, 64));
    pm.reset();
    assert_eq!(pm.pm_base(), None);
}

#[test]
fn pm_timer_runs_at_3_58_mhz_and_wraps_at_24_bits() {
    let (mut pm, clock, _, _) = pm_fixture();
    pm.set_pm_base(0x600);
    clock.set(1_000_000_000);
    assert_eq!(pm.timer(), 3_579_545);
    let mut data = [0u8; 4];
    pm.region_read(PM_REGION, 8, &mut data);
    assert_eq!(u32::from_le_bytes(data), 3_579_545);
    // 2^24 ticks = 4.687 s: the counter wraps.
    clock.set(5_000_000_000);
    assert_eq!(u64::from(pm.timer()), (5 * PM_TIMER_HZ) & 0xff_ffff);
    // Bit 23 changed since power-on: TMROF_STS; write 1 clears it.
    assert_ne!(pm.pm1_status() & TMROF_STS, 0);
    pm.region_write(PM_REGION, 0, &TMROF_STS.to_le_bytes());
    assert_eq!(pm.pm1_status() & TMROF_STS, 0);
    // Writes to the timer are ignored.
    pm.region_write(PM_REGION, 8, &[0; 4]);
    assert_eq!(u64::from(pm.timer()), (5 * PM_TIMER_HZ) & 0xff_ffff);
}

#[test]
fn power_button_raises_the_sci_only_when_enabled() {
    let (mut pm, _, sci, _) = pm_fixture();
    pm.power_button();
    assert_ne!(pm.pm1_status() & PWRBTN_STS, 0);
    assert!(!sci.level(), "PWRBTN_EN clear");
    pm.pm_write(2, &PWRBTN_STS.to_le_bytes());
    assert!(sci.level());
    pm.pm_write(0, &PWRBTN_STS.to_le_bytes()); // w1c
    assert!(!sci.level());
    assert_eq!(pm.pm1_status() & PWRBTN_STS, 0);
    // GPE0: status w1c, enable plain; either source raises the SCI.
    pm.raise_gpe(1);
    assert!(!sci.level());
    pm.gpe_write(2, &[0x02]);
    assert!(sci.level());
    let mut gpe = [0u8; 4];
    pm.gpe_read(0, &mut gpe);
    assert_eq!(gpe, [0x02, 0, 0x02, 0]);
    pm.gpe_write(0, &[0x02]);
    assert!(!sci.level());
}

#[test]
fn slp_en_with_s5_powers_off_and_reads_back_clear() {
    let (mut pm, _, _, power) = pm_fixture();
    // SLP_TYP = 0 (S5 on PIIX4) | SLP_EN, as Linux's acpi_enter_sleep_state(5) writes it.
    pm.pm_write(4, &(SLP_EN | 1).to_le_bytes());
    assert_eq!(power.0.lock().unwrap().as_slice(), [SLP_TYP_S5]);
    assert_eq!(pm.pm1_control(), 1, "SLP_EN is write-only");
    // The control register written byte by byte: SLP_EN comes with the high byte.
    pm.pm_write(4, &[0x01]);
    pm.pm_write(5, &[((SLP_EN | (1 << SLP_TYP_SHIFT)) >> 8) as u8]);
    assert_eq!(power.0.lock().unwrap().as_slice(), [0, 1]);
}

#[test]
fn apm_switches_acpi_mode() {
    let (mut pm, _, _, _) = pm_fixture();
    pm.apm_write(0, &[ACPI_ENABLE]);
    assert_eq!(pm.pm1_control() & SCI_EN, SCI_EN);
    pm.apm_write(1, &[0x5a]);
    let mut status = [0u8; 2];
    pm.apm_read(0, &mut status);
    assert_eq!(status, [0, 0x5a]);
    pm.apm_write(0, &[ACPI_DISABLE]);
    assert_eq!(pm.pm1_control() & SCI_EN, 0);
}

#[test]
fn regions_other_than_the_pm_block_float() {
    let (mut pm, _, _, _) = pm_fixture();
    let mut data = [0u8; 2];
    pm.region_read(RegionIndex::Bar(0), 0, &mut data);
    assert_eq!(data, [0xff, 0xff]);
    pm.region_write(RegionIndex::Bar(0), 0, &[1]);
}

#[test]
fn i440fx_state_brings_the_pam_aliases_and_a_locked_smram_back() {
    let mut a = I440fx::new(Arc::new(NoPam));
    a.config_write(PAM_BASE, &[0x30]); // BIOS segment read/write
    a.config_write(PAM_BASE + 1, &[0x01]); // 0xC0000 read-only
    a.config_write(SMRAM, &[SMRAM_D_LCK | 0x02]);
    let json = serde_json::to_string(&a.state()).unwrap();

    let listener = Arc::new(RecordingPam::default());
    let mut b = I440fx::new(listener.clone());
    listener.0.lock().unwrap().clear();
    b.restore(&serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(b.modes(), a.modes());
    let told = listener.0.lock().unwrap().clone();
    assert_eq!(told.len(), 13, "every segment is told, changed or not");
    assert!(told.contains(&(pam_segments()[0], PamMode::ReadWrite)));
    assert!(told.contains(&(pam_segments()[1], PamMode::ReadOnly)));
    // Still locked: the guest cannot open SMRAM after the restore.
    b.config_write(SMRAM, &[SMRAM_D_OPEN]);
    assert!(!b.smram_open());

    let mut wrong = a.state();
    wrong.version = 9;
    assert!(b
        .restore(&wrong)
        .unwrap_err()
        .to_string()
        .contains("version 9"));
}

#[derive(Default)]
struct RecordingPirq(Mutex<Vec<(u8, Option<u8>)>>);

impl PirqListener for RecordingPirq {
    fn pirq_changed(&self, pirq: u8, irq: Option<u8>) {
        self.0.lock().unwrap().push((pirq, irq));
    }
}

#[test]
fn piix3_state_reports_the_restored_pirq_routes() {
    let mut a = Piix3::new();
    a.config_write(0x60, &[10, 11, 0x80, 5]);
    let listener = Arc::new(RecordingPirq::default());
    let mut b = Piix3::new().with_listener(listener.clone());
    b.restore(&a.state()).unwrap();
    assert_eq!(
        *listener.0.lock().unwrap(),
        vec![(0, Some(10)), (1, Some(11)), (2, None), (3, Some(5))]
    );
    // The IDE function's state is not the bridge's.
    let mut ide = Piix3Ide::new();
    let err = ide.restore(&a.state()).unwrap_err().to_string();
    assert!(err.contains("device ID"), "{err}");
}

#[test]
fn pm_state_carries_the_timer_on_across_clocks_and_maps_pmba_again() {
    let (mut a, clock_a, _, _) = pm_fixture();
    a.set_pm_base(0x600);
    a.region_write(PM_REGION, 2, &PWRBTN_STS.to_le_bytes()); // PM1a_EN
    a.power_button();
    clock_a.set(2_000_000_000);
    let saved_timer = a.timer();
    let state: PmState = serde_json::from_str(&serde_json::to_string(&a.state()).unwrap()).unwrap();

    // The destination's clock reads something else entirely.
    let (mut b, clock_b, sci_b, _) = pm_fixture();
    clock_b.set(77_000_000_000);
    b.restore(&state).unwrap();
    assert_eq!(b.timer(), saved_timer);
    assert!(
        sci_b.level(),
        "the enabled power button still asserts the SCI"
    );
    assert_eq!(b.pm_base(), Some(0x600));
    assert_eq!(b.regions()[0].1.addr, 0x600);
    clock_b.advance(1_000_000_000);
    assert_eq!(
        u64::from(b.timer()),
        (u64::from(saved_timer) + PM_TIMER_HZ) & 0xff_ffff
    );
}
