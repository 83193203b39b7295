//! Random machine configurations: building never panics, and linking at random addresses
//! keeps every checksum valid and every RSDT entry on a table of the right kind.

use proptest::prelude::*;
use vmkit_acpi::{build_pc_tables, AcpiFile, PcAcpiConfig, PciConfig, Piix4PmConfig};

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn config() -> impl Strategy<Value = PcAcpiConfig> {
    (
        proptest::sample::subsequence((0u8..=254).collect::<Vec<_>>(), 1..=64),
        any::<Option<(bool, bool, u8)>>(),
        any::<Option<u8>>(),
        any::<(bool, bool, bool, bool)>(),
    )
        .prop_map(|(apic_ids, pm, hole, (hpet, irq0, com1, button))| {
            let mut config = PcAcpiConfig::qemu_pc(1, 0x800_0000);
            config.apic_ids = apic_ids;
            config.pm = pm.map(|(s3, s4, sci)| Piix4PmConfig {
                s3,
                s4,
                sci_irq: sci % 16,
                ..Piix4PmConfig::default()
            });
            // Holes from 16 MiB to 3.75 GiB in 16 MiB steps.
            config.pci = hole.map(|h| PciConfig::for_ram_below_4g((u32::from(h % 240) + 1) << 24));
            config.hpet = hpet;
            config.irq0_to_gsi2 = irq0;
            config.com1 = com1;
            config.power_button_device = button;
            config
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn linked_tables_are_consistent(
        config in config(),
        tables_page in 0x100u64..0xf_0000,
        rsdp_slot in 0u64..0x2000,
    ) {
        let tables = build_pc_tables(&config).unwrap();
        let tables_addr = tables_page << 12;
        let rsdp_addr = 0xe_0000 + rsdp_slot * 16;
        let linked = tables.link(tables_addr, rsdp_addr).unwrap();
        for c in &tables.checksums {
            let bytes = match c.file {
                AcpiFile::Tables => &linked.tables,
                AcpiFile::Rsdp => &linked.rsdp,
            };
            let range = c.start as usize..(c.start + c.length) as usize;
            prop_assert_eq!(bytes[range].iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        }
        let rsdt = u64::from(u32_at(&linked.rsdp, 16)) - tables_addr;
        let rsdt = &linked.tables[rsdt as usize..];
        prop_assert_eq!(&rsdt[..4], b"RSDT");
        let len = u32_at(rsdt, 4) as usize;
        let sigs: Vec<Vec<u8>> = rsdt[36..len]
            .chunks(4)
            .map(|c| {
                let at = (u64::from(u32_at(c, 0)) - tables_addr) as usize;
                linked.tables[at..at + 4].to_vec()
            })
            .collect();
        let mut expected = vec![b"FACP".to_vec(), b"APIC".to_vec()];
        if config.hpet {
            expected.push(b"HPET".to_vec());
        }
        prop_assert_eq!(sigs, expected);
        let madt = &tables.tables[tables.offsets.madt.start as usize..];
        let lapics = {
            let mut at = 44;
            let mut n = 0;
            while at < u32_at(madt, 4) as usize {
                n += usize::from(madt[at] == 0);
                at += usize::from(madt[at + 1]);
            }
            n
        };
        prop_assert_eq!(lapics, config.apic_ids.len());
    }
}
