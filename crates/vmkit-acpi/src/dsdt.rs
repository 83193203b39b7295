//! The DSDT's AML, after QEMU's pc (hw/i386/acpi-build.c), written with `acpi_tables::aml`.

use acpi_tables::aml::{
    self, AddressSpace, AddressSpaceCacheable, CreateDWordField, Device, EISAName, Field,
    FieldAccessType, FieldEntry, FieldLockRule, FieldUpdateRule, If, LessThan, Memory32Fixed,
    Method, MethodCall, Name, OpRegion, OpRegionSpace, Package, Path, ResourceTemplate, Return,
    Scope, Store, IO,
};
use acpi_tables::{Aml, AmlSink};

use crate::config::{PcAcpiConfig, HPET_ADDRESS, HPET_LEN};

/// The IRQs the PCI interrupt links may be routed to (QEMU's PIIX links).
pub const PCI_LINK_IRQS: [u32; 3] = [5, 10, 11];
/// Names of the four PCI interrupt links, PIRQA..PIRQD.
pub const PCI_LINKS: [&str; 4] = ["LNKA", "LNKB", "LNKC", "LNKD"];
/// PCI configuration offset of the PIIX3 PIRQ route control registers (00:01.0).
pub const PIRQ_ROUTE_OFFSET: u8 = 0x60;
/// PCI address of the PIIX3 ISA bridge in `_ADR` form (device 1, function 0).
pub const ISA_BRIDGE_ADR: u32 = 0x0001_0000;
/// Slots the `_PRT` covers.
pub const PCI_SLOTS: u32 = 32;

/// The PIRQ link (0 = LNKA) that `pin` (0 = INTA) of `slot` reaches on QEMU's pc: the PIIX3
/// swizzle `(slot + pin - 1) mod 4`, so slot 1's INTA is PIRQA.
pub fn pirq_link(slot: u32, pin: u32) -> usize {
    ((slot + pin + 3) % 4) as usize
}

/// Already-serialized AML, to splice built objects into containers.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// Extended Interrupt Descriptor with several interrupts (acpi_tables' `Interrupt` holds
/// one): consumer, level-triggered, active-high, shared, as QEMU's link `_PRS`.
struct SharedLevelIrqs<'a>(&'a [u32]);

impl Aml for SharedLevelIrqs<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let count = self.0.len() as u8;
        sink.byte(0x89); // large item: Extended Interrupt Descriptor
        sink.word(2 + 4 * u16::from(count));
        sink.byte(0x01 | 0x08); // consumer, level, active high, shared
        sink.byte(count);
        for irq in self.0 {
            sink.dword(*irq);
        }
    }
}

/// ISA `IRQNoFlags` descriptor (edge, active high, exclusive): not in acpi_tables.
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(0x22); // small item IRQ, 2 bytes: the mask only
        sink.word(1u16 << self.0);
    }
}

fn bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    aml.to_aml_bytes(&mut out);
    out
}

fn refs(items: &[Raw]) -> Vec<&dyn Aml> {
    items.iter().map(|item| item as &dyn Aml).collect()
}

fn name(path: &str, value: &dyn Aml) -> Raw {
    Raw(bytes(&Name::new(Path::new(path), value)))
}

fn device(path: &str, children: &[Raw]) -> Raw {
    Raw(bytes(&Device::new(Path::new(path), refs(children))))
}

fn method(path: &str, args: u8, serialized: bool, children: &[Raw]) -> Raw {
    Raw(bytes(&Method::new(
        Path::new(path),
        args,
        serialized,
        refs(children),
    )))
}

fn eisa(id: &str) -> EISAName {
    EISAName::new(id)
}

/// The DSDT's AML body (everything after the table header).
pub fn dsdt_body(config: &PcAcpiConfig) -> Vec<u8> {
    let mut sb: Vec<Raw> = Vec::new();

    // Processors as ACPI0007 devices whose _UID matches the MADT's processor UID.
    for (index, _) in config.apic_ids.iter().enumerate() {
        let path = format!("C{index:03X}");
        sb.push(device(
            &path,
            &[name("_HID", &"ACPI0007"), name("_UID", &(index as u32))],
        ));
    }

    let com1 = config.com1.then(com1_device);
    if let Some(pci) = &config.pci {
        sb.push(pci0(config, pci, com1));
        sb.extend(pci_links(config));
    } else if let Some(com1) = com1 {
        sb.push(com1);
    }
    if config.hpet {
        let crs = Raw(bytes(&ResourceTemplate::new(vec![&Memory32Fixed::new(
            false,
            HPET_ADDRESS,
            HPET_LEN,
        )])));
        sb.push(device(
            "HPET",
            &[
                name("_HID", &eisa("PNP0103")),
                name("_UID", &0u8),
                name("_STA", &0x0fu8),
                name("_CRS", &crs),
            ],
        ));
    }
    if config.power_button_device {
        sb.push(device(
            "PWRB",
            &[name("_HID", &eisa("PNP0C0C")), name("_UID", &0u8)],
        ));
    }

    let mut out = bytes(&Scope::new(Path::new("\\_SB_"), refs(&sb)));
    // Sleep states: SLP_TYP values for PM1a_CNT and PM1b_CNT, as PIIX4 in QEMU decodes them.
    if let Some(pm) = &config.pm {
        if pm.s3 {
            out.extend(bytes(&Name::new(
                Path::new("\\_S3_"),
                &Package::new(vec![&1u8, &1u8, &0u8, &0u8]),
            )));
        }
        if pm.s4 {
            out.extend(bytes(&Name::new(
                Path::new("\\_S4_"),
                &Package::new(vec![&2u8, &2u8, &0u8, &0u8]),
            )));
        }
    }
    out.extend(bytes(&Name::new(
        Path::new("\\_S5_"),
        &Package::new(vec![&0u8, &0u8, &0u8, &0u8]),
    )));
    out
}

fn com1_device() -> Raw {
    let crs = Raw(bytes(&ResourceTemplate::new(vec![
        &IO::new(0x3f8, 0x3f8, 0, 8),
        &IrqNoFlags(4),
    ])));
    device(
        "COM1",
        &[
            name("_HID", &eisa("PNP0501")),
            name("_UID", &1u8),
            name("_STA", &0x0fu8),
            name("_CRS", &crs),
        ],
    )
}

/// `\_SB.PCI0`: the host bridge, its resources, `_PRT`, and the ISA bridge.
fn pci0(config: &PcAcpiConfig, pci: &crate::config::PciConfig, com1: Option<Raw>) -> Raw {
    let bus = AddressSpace::<u16>::new_bus_number(0, 0xff);
    let cfg_io = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = AddressSpace::<u16>::new_io(0, 0x0cf7, None);
    let io_high = AddressSpace::<u16>::new_io(0x0d00, 0xffff, None);
    let vga = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::Cacheable,
        true,
        0x000a_0000,
        0x000b_ffff,
        None,
    );
    let hole32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        pci.hole32_start,
        pci.hole32_end,
        None,
    );
    let hole64 = pci.hole64.map(|(start, end)| {
        AddressSpace::<u64>::new_memory(AddressSpaceCacheable::Cacheable, true, start, end, None)
    });
    let mut resources: Vec<&dyn Aml> = vec![&bus, &cfg_io, &io_low, &io_high, &vga, &hole32];
    if let Some(hole64) = &hole64 {
        resources.push(hole64);
    }
    let crs = ResourceTemplate::new(resources);

    // _PRT: one entry per slot and pin, slot 1 INTA (the PIIX4 PM function's) on the SCI's
    // link when there is a PM device, as QEMU wires it.
    let mut entries = Vec::new();
    for slot in 0..PCI_SLOTS {
        for pin in 0..4u32 {
            let link = if slot == 1 && pin == 0 && config.pm.is_some() {
                "\\_SB_.LNKS".to_string()
            } else {
                format!("\\_SB_.{}", PCI_LINKS[pirq_link(slot, pin)])
            };
            let address = (slot << 16) | 0xffff;
            let link = Path::new(&link);
            entries.push(Raw(bytes(&Package::new(vec![
                &address,
                &(pin as u8),
                &link,
                &0u8,
            ]))));
        }
    }
    let prt = Package::new(refs(&entries));

    let mut isa = vec![
        name("_ADR", &ISA_BRIDGE_ADR),
        Raw(bytes(&OpRegion::new(
            Path::new("P40C"),
            OpRegionSpace::PCIConfig,
            &PIRQ_ROUTE_OFFSET,
            &4u8,
        ))),
    ];
    isa.extend(com1);

    device(
        "PCI0",
        &[
            name("_HID", &eisa("PNP0A03")),
            name("_ADR", &0u8),
            name("_UID", &0u8),
            name("_CRS", &crs),
            name("_PRT", &prt),
            device("ISA_", &isa),
        ],
    )
}

/// The PIRQ route registers, the helper methods and the link devices LNKA-LNKD (and LNKS for
/// the SCI), as QEMU's pc DSDT has them in `\_SB`.
fn pci_links(config: &PcAcpiConfig) -> Vec<Raw> {
    let mut out = Vec::new();
    out.push(Raw(bytes(&Field::new(
        Path::new("\\_SB_.PCI0.ISA_.P40C"),
        FieldAccessType::Byte,
        FieldLockRule::NoLock,
        FieldUpdateRule::Preserve,
        vec![
            FieldEntry::Named(*b"PRQ0", 8),
            FieldEntry::Named(*b"PRQ1", 8),
            FieldEntry::Named(*b"PRQ2", 8),
            FieldEntry::Named(*b"PRQ3", 8),
        ],
    ))));

    // IQST(reg): link status from a PIRQ register, 0x09 (disabled) when bit 7 is set, else
    // 0x0B (present, enabled, functioning).
    let disabled = aml::And::new(&aml::ZERO, &0x80u8, &aml::Arg(0));
    let ret_9 = Return::new(&0x09u8);
    out.push(method(
        "IQST",
        1,
        false,
        &[
            Raw(bytes(&If::new(&disabled, vec![&ret_9]))),
            Raw(bytes(&Return::new(&0x0bu8))),
        ],
    ));

    // IQCR(reg): the current resource, the register's IRQ unless it is disabled.
    let prr0 = Raw(bytes(&ResourceTemplate::new(vec![&aml::Interrupt::new(
        true, false, false, true, 0,
    )])));
    let store_irq = Raw(bytes(&Store::new(&Path::new("PRRI"), &aml::Arg(0))));
    let routed = LessThan::new(&aml::Arg(0), &0x80u8);
    out.push(method(
        "IQCR",
        1,
        true,
        &[
            name("PRR0", &prr0),
            // The descriptor's interrupt number is at byte 5.
            Raw(bytes(&CreateDWordField::new(
                &Path::new("PRRI"),
                &Path::new("PRR0"),
                &5u8,
            ))),
            Raw(bytes(&If::new(&routed, vec![&store_irq]))),
            Raw(bytes(&Return::new(&Path::new("PRR0")))),
        ],
    ));

    let prs = ResourceTemplate::new(vec![&SharedLevelIrqs(&PCI_LINK_IRQS)]);
    for (index, link) in PCI_LINKS.iter().enumerate() {
        let reg = Path::new(&format!("PRQ{index}"));
        let status = MethodCall::new(Path::new("\\_SB_.IQST"), vec![&reg]);
        let current = MethodCall::new(Path::new("\\_SB_.IQCR"), vec![&reg]);
        let disable = aml::Or::new(&reg, &reg, &0x80u8);
        let new_irq = Raw(bytes(&Store::new(&reg, &Path::new("PRRI"))));
        out.push(device(
            link,
            &[
                name("_HID", &eisa("PNP0C0F")),
                name("_UID", &(index as u8)),
                name("_PRS", &prs),
                method("_STA", 0, false, &[Raw(bytes(&Return::new(&status)))]),
                method("_DIS", 0, false, &[Raw(bytes(&disable))]),
                method("_CRS", 0, false, &[Raw(bytes(&Return::new(&current)))]),
                method(
                    "_SRS",
                    1,
                    false,
                    &[
                        Raw(bytes(&CreateDWordField::new(
                            &Path::new("PRRI"),
                            &aml::Arg(0),
                            &5u8,
                        ))),
                        new_irq,
                    ],
                ),
            ],
        ));
    }

    // LNKS: the SCI, fixed on its IRQ; there only to say level/active-high as the MADT does.
    if let Some(pm) = &config.pm {
        let sci = Raw(bytes(&ResourceTemplate::new(vec![&aml::Interrupt::new(
            true,
            false,
            false,
            true,
            u32::from(pm.sci_irq),
        )])));
        out.push(device(
            "LNKS",
            &[
                name("_HID", &eisa("PNP0C0F")),
                name("_UID", &4u8),
                name("_PRS", &sci),
                method("_STA", 0, false, &[Raw(bytes(&Return::new(&0x0bu8)))]),
                method("_DIS", 0, false, &[]),
                method(
                    "_CRS",
                    0,
                    false,
                    &[Raw(bytes(&Return::new(&Path::new("_PRS"))))],
                ),
                method("_SRS", 1, false, &[]),
            ],
        ));
    }
    out
}
