//! The Intel MultiProcessor Specification 1.4 table that tells a guest (Linux without ACPI)
//! how many CPUs there are, where the local APICs and the IOAPIC are, and how the ISA IRQs
//! reach the IOAPIC.
//!
//! Layout: the 16-byte floating pointer structure at the start of the area, the
//! configuration table right after it. The default area is the EBDA's first (and base
//! memory's last) KiB, 0x9fc00-0xa0000, one of the places Linux scans for "_MP_"; the
//! machine's e820 map must report it reserved. 1 KiB holds the table for up to 40 vCPUs;
//! [`write_mptable_at`] takes a larger area.

use std::ops::Range;

use vm_memory::{Bytes, GuestAddress};

use crate::{checksum, Error, Result};

/// Default start of the MP table: the EBDA start, 639 KiB.
pub const MPTABLE_START: u64 = 0x9_fc00;
/// End of the default area (start of the legacy VGA hole, 640 KiB).
pub const MPTABLE_END: u64 = 0xa_0000;
/// Local APIC base address.
pub const APIC_DEFAULT_BASE: u32 = 0xfee0_0000;
/// IOAPIC base address.
pub const IOAPIC_DEFAULT_BASE: u32 = 0xfec0_0000;
/// IOAPIC version register value of the 82093AA-compatible IOAPIC KVM models.
pub const IOAPIC_VERSION: u8 = 0x11;
/// Local APIC version of KVM's local APIC.
pub const APIC_VERSION: u8 = 0x14;
/// Most vCPUs: APIC ids are one byte, 0xff is broadcast and the IOAPIC takes the id after
/// the last CPU.
pub const MAX_CPUS: u32 = 254;
/// MP specification revision 1.4.
const SPEC_REV: u8 = 4;

const FLOATING_POINTER_LEN: u64 = 16;
const HEADER_LEN: u64 = 44;
const PROCESSOR_ENTRY_LEN: u64 = 20;
const SMALL_ENTRY_LEN: u64 = 8;
const ISA_IRQS: u8 = 16;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

const CPU_ENABLED: u8 = 1 << 0;
const CPU_BOOTSTRAP: u8 = 1 << 1;
/// Processor signature in processor entries: family 6 (the entries are informational;
/// Linux reads the real CPUID).
const CPU_SIGNATURE: u32 = 0x600;
/// Feature flags in processor entries: FPU and APIC (CPUID leaf 1 EDX bits 0 and 9).
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// Which IOAPIC pin ISA IRQ 0 (the PIT) is wired to.
///
/// KVM's default GSI routing (no KVM_SET_GSI_ROUTING) sends GSI n to IOAPIC pin n, and the
/// in-kernel PIT (KVM_CREATE_PIT2) raises GSI 0, so with that routing IRQ0 is on pin 0.
/// QEMU instead installs a routing that sends GSI 0 to pin 2, as on real PC chipsets; a
/// VMM doing the same picks [`Irq0Pin::Pin2`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Irq0Pin {
    /// ISA IRQ n on pin n for every n (KVM's default routing).
    #[default]
    Identity,
    /// IRQ0 on pin 2, other ISA IRQs on their own pin (nothing on pin 0).
    Pin2,
}

/// Where and what to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpTableConfig {
    /// Number of vCPUs; their APIC ids are 0..num_cpus, vCPU 0 boots.
    pub num_cpus: u32,
    /// Guest-physical area the whole table must fit in.
    pub area: Range<u64>,
    /// Routing of ISA IRQ 0.
    pub irq0_pin: Irq0Pin,
}

impl MpTableConfig {
    /// The default area and routing for `num_cpus` vCPUs.
    pub fn new(num_cpus: u32) -> Self {
        MpTableConfig {
            num_cpus,
            area: MPTABLE_START..MPTABLE_END,
            irq0_pin: Irq0Pin::Identity,
        }
    }
}

/// The (ISA IRQ, IOAPIC pin) pairs of the I/O interrupt entries.
pub fn isa_routes(irq0_pin: Irq0Pin) -> Vec<(u8, u8)> {
    match irq0_pin {
        Irq0Pin::Identity => (0..ISA_IRQS).map(|irq| (irq, irq)).collect(),
        // IRQ2 is the 8259 cascade and reaches no IOAPIC pin on such boards.
        Irq0Pin::Pin2 => (0..ISA_IRQS)
            .filter(|&irq| irq != 2)
            .map(|irq| (irq, if irq == 0 { 2 } else { irq }))
            .collect(),
    }
}

/// Bytes the MP table (floating pointer plus configuration table) takes.
pub fn mptable_size(config: &MpTableConfig) -> u64 {
    FLOATING_POINTER_LEN + config_table_len(config)
}

fn small_entries(config: &MpTableConfig) -> u64 {
    // One bus, one IOAPIC, the ISA IRQs, LINT0 and LINT1.
    1 + 1 + isa_routes(config.irq0_pin).len() as u64 + 2
}

fn config_table_len(config: &MpTableConfig) -> u64 {
    HEADER_LEN
        + PROCESSOR_ENTRY_LEN * u64::from(config.num_cpus)
        + SMALL_ENTRY_LEN * small_entries(config)
}

/// Writes the MP table for `num_cpus` vCPUs into the EBDA ([`MPTABLE_START`]) with KVM's
/// default IRQ routing; returns the guest-physical range it occupies.
pub fn write_mptable_to_ebda<M>(memory: &M, num_cpus: u32) -> Result<Range<u64>>
where
    M: Bytes<GuestAddress> + ?Sized,
    M::E: std::fmt::Display,
{
    write_mptable_at(memory, &MpTableConfig::new(num_cpus))
}

/// Writes the MP table into the area `config` gives; returns the guest-physical range it
/// occupies.
pub fn write_mptable_at<M>(memory: &M, config: &MpTableConfig) -> Result<Range<u64>>
where
    M: Bytes<GuestAddress> + ?Sized,
    M::E: std::fmt::Display,
{
    let bytes = build_mptable(config)?;
    let start = config.area.start;
    memory
        .write_slice(&bytes, GuestAddress(start))
        .map_err(|e| Error::GuestMemory {
            what: "MP table",
            addr: start,
            reason: e.to_string(),
        })?;
    Ok(start..start + bytes.len() as u64)
}

/// The MP table bytes for `config`, as they are laid out at `config.area.start`.
pub fn build_mptable(config: &MpTableConfig) -> Result<Vec<u8>> {
    let cpus = config.num_cpus;
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(Error::TooManyCpus {
            requested: cpus,
            max: MAX_CPUS,
        });
    }
    let needed = mptable_size(config);
    let start = config.area.start;
    let available = config.area.end.saturating_sub(start);
    // The configuration table pointer is 32-bit.
    let fits_32bit = start.checked_add(needed).is_some_and(|end| end <= 1 << 32);
    if needed > available || !fits_32bit {
        return Err(Error::MpTableNoRoom {
            cpus,
            needed,
            available,
            start,
        });
    }
    let config_addr =
        u32::try_from(start + FLOATING_POINTER_LEN).map_err(|_| Error::MpTableNoRoom {
            cpus,
            needed,
            available,
            start,
        })?;
    // Checked above: cpus <= 254, so the id and the lengths fit their fields.
    let ioapic_id = cpus as u8;
    let table_len = config_table_len(config) as u16;
    let entries = u64::from(cpus) + small_entries(config);

    let mut table = Vec::with_capacity(usize::from(table_len));
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&table_len.to_le_bytes());
    table.push(SPEC_REV);
    table.push(0); // checksum, below
    table.extend_from_slice(b"VMKIT   ");
    table.extend_from_slice(b"vmkit-pc    ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&(entries as u16).to_le_bytes());
    table.extend_from_slice(&APIC_DEFAULT_BASE.to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    table.push(0); // extended table checksum
    table.push(0);

    for id in 0..cpus as u8 {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTSTRAP } else { 0 };
        table.extend_from_slice(&[ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        table.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        table.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        table.extend_from_slice(&[0; 8]);
    }
    table.extend_from_slice(&[ENTRY_BUS, 0]);
    table.extend_from_slice(b"ISA   ");
    table.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    table.extend_from_slice(&IOAPIC_DEFAULT_BASE.to_le_bytes());
    for (irq, pin) in isa_routes(config.irq0_pin) {
        // Flags 0: polarity and trigger conform to the ISA bus (active high, edge).
        table.extend_from_slice(&[
            ENTRY_IO_INTERRUPT,
            INT_TYPE_INT,
            0,
            0,
            0,
            irq,
            ioapic_id,
            pin,
        ]);
    }
    // LINT0 takes the 8259's ExtINT, LINT1 the NMI, on every local APIC (id 0xff).
    table.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    table.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    table[7] = checksum(&table);

    let mut bytes = Vec::with_capacity(FLOATING_POINTER_LEN as usize + table.len());
    bytes.extend_from_slice(b"_MP_");
    bytes.extend_from_slice(&config_addr.to_le_bytes());
    bytes.push(1); // length in 16-byte units
    bytes.push(SPEC_REV);
    bytes.push(0); // checksum, below
    bytes.push(0); // feature byte 1: 0 = a configuration table is present
    bytes.push(0); // feature byte 2: no IMCR, virtual wire mode
    bytes.extend_from_slice(&[0; 3]);
    bytes[10] = checksum(&bytes);
    bytes.extend_from_slice(&table);
    Ok(bytes)
}
