//! Per-vCPU CPUID tables built from KVM's supported set.

use kvm_bindings::{
    kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES,
};

use crate::features::{CpuModel, Feature, Register};
use crate::{Error, Result};

/// Brand string used when KVM's set has none (leaves 0x80000002-4 missing or empty).
pub const FALLBACK_BRAND: &str = "vmkit virtual CPU";
/// KVM's hypervisor signature in leaf 0x40000000 EBX, ECX, EDX.
pub const KVM_SIGNATURE: &[u8; 12] = b"KVMKVMKVM\0\0\0";
/// First hypervisor leaf.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// KVM's paravirtual feature leaf.
pub const KVM_FEATURES_LEAF: u32 = 0x4000_0001;

/// Leaf 1 ECX bit 31: running under a hypervisor.
const HYPERVISOR_BIT: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: EBX[23:16] holds a logical processor count.
const HTT_BIT: u32 = 1 << 28;
/// Leaf 0x80000001 ECX bit 1 (AMD CmpLegacy): HTT counts cores, not threads.
const CMP_LEGACY_BIT: u32 = 1 << 1;
/// Leaf 0xD XCR0 component bits owned by features this crate can remove.
const XCR0_YMM: u32 = 1 << 2;
const XCR0_AVX512: u32 = 0b111 << 5;
const XCR0_PKRU: u32 = 1 << 9;

/// CPU vendor, from leaf 0's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel.
    Intel,
    /// AuthenticAMD or HygonGenuine (AMD's topology leaves).
    Amd,
    /// Anything else: only vendor-neutral leaves are adjusted.
    Other,
}

impl Vendor {
    /// Reads the vendor from a CPUID table's leaf 0.
    pub fn of(cpuid: &[kvm_cpuid_entry2]) -> Vendor {
        let Some(leaf0) = cpuid.iter().find(|e| e.function == 0) else {
            return Vendor::Other;
        };
        let mut name = [0u8; 12];
        name[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
        name[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
        name[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
        match &name {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
            _ => Vendor::Other,
        }
    }
}

/// Builds the CPUID table of vCPU `index` (0-based, also its APIC id) of `count` vCPUs.
///
/// Starting from `supported` (KVM_GET_SUPPORTED_CPUID), it keeps the host vendor and brand
/// string ([`FALLBACK_BRAND`] when KVM reports none), sets the hypervisor bit and KVM's
/// leaves, describes `count` single-threaded cores in one package (leaves 1, 4, 0xB, 0x1F,
/// and AMD's 0x80000008, 0x8000001D, 0x8000001E), zeroes the PMU leaf 0xA (no vPMU is
/// promised), then applies `model`'s feature edits.
pub fn build_cpuid(supported: &CpuId, model: &CpuModel, index: u32, count: u32) -> Result<CpuId> {
    if count == 0 || index >= count {
        return Err(Error::BadVcpuIndex { index, count });
    }
    let mut entries: Vec<kvm_cpuid_entry2> = supported.as_slice().to_vec();
    let vendor = Vendor::of(&entries);

    apply_model(&mut entries, model)?;
    set_brand(&mut entries);
    set_hypervisor_leaves(&mut entries);
    set_topology(&mut entries, vendor, index, count);
    entries
        .iter_mut()
        .filter(|e| e.function == 0xA)
        .for_each(zero);

    CpuId::from_entries(&entries).map_err(|_| Error::TooManyEntries {
        what: "CPUID",
        max: KVM_MAX_CPUID_ENTRIES,
    })
}

fn register(entry: &mut kvm_cpuid_entry2, register: Register) -> &mut u32 {
    match register {
        Register::Eax => &mut entry.eax,
        Register::Ebx => &mut entry.ebx,
        Register::Ecx => &mut entry.ecx,
        Register::Edx => &mut entry.edx,
    }
}

fn entry_mut(
    entries: &mut [kvm_cpuid_entry2],
    leaf: u32,
    subleaf: u32,
) -> Option<&mut kvm_cpuid_entry2> {
    entries.iter_mut().find(|e| matches_leaf(e, leaf, subleaf))
}

fn matches_leaf(entry: &kvm_cpuid_entry2, leaf: u32, subleaf: u32) -> bool {
    entry.function == leaf
        && (entry.index == subleaf || entry.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
}

fn zero(entry: &mut kvm_cpuid_entry2) {
    (entry.eax, entry.ebx, entry.ecx, entry.edx) = (0, 0, 0, 0);
}

/// True when `feature` is set in a CPUID table.
pub fn has_feature(entries: &[kvm_cpuid_entry2], feature: &Feature) -> bool {
    entries
        .iter()
        .find(|e| matches_leaf(e, feature.leaf, feature.subleaf))
        .is_some_and(|e| {
            let value = match feature.register {
                Register::Eax => e.eax,
                Register::Ebx => e.ebx,
                Register::Ecx => e.ecx,
                Register::Edx => e.edx,
            };
            value & feature.mask() != 0
        })
}

fn apply_model(entries: &mut [kvm_cpuid_entry2], model: &CpuModel) -> Result<()> {
    // The hypervisor bit is ours to set even when KVM does not list it.
    let unsupported: Vec<String> = model
        .added()
        .into_iter()
        .filter(|f| f.name != "hypervisor" && !has_feature(entries, f))
        .map(|f| f.name.to_string())
        .collect();
    if !unsupported.is_empty() {
        return Err(Error::NotSupported(unsupported));
    }
    let removed = model.removed_with_dependents();
    let hypervisor_off = removed.iter().any(|f| f.name == "hypervisor");
    for feature in &removed {
        if let Some(entry) = entry_mut(entries, feature.leaf, feature.subleaf) {
            *register(entry, feature.register) &= !feature.mask();
        }
    }
    if !hypervisor_off {
        if let Some(leaf1) = entry_mut(entries, 1, 0) {
            leaf1.ecx |= HYPERVISOR_BIT;
        }
    }
    // XSAVE state components of removed features leave leaf 0xD's XCR0 mask; without
    // XSAVE the whole leaf goes.
    let gone = |name: &str| removed.iter().any(|f| f.name == name);
    if gone("xsave") {
        entries
            .iter_mut()
            .filter(|e| e.function == 0xD)
            .for_each(zero);
    } else {
        let mut dropped = 0;
        if gone("avx") {
            dropped |= XCR0_YMM;
        }
        if gone("avx512f") {
            dropped |= XCR0_AVX512;
        }
        if gone("pku") {
            dropped |= XCR0_PKRU;
        }
        if dropped != 0 {
            if let Some(leaf_d) = entry_mut(entries, 0xD, 0) {
                leaf_d.eax &= !dropped;
            }
            entries
                .iter_mut()
                .filter(|e| e.function == 0xD && (2..32).contains(&e.index))
                .filter(|e| dropped & (1 << e.index) != 0)
                .for_each(zero);
        }
    }
    Ok(())
}

fn set_brand(entries: &mut Vec<kvm_cpuid_entry2>) {
    let brand_leaves = [0x8000_0002u32, 0x8000_0003, 0x8000_0004];
    let has_brand = brand_leaves.iter().all(|leaf| {
        entries
            .iter()
            .any(|e| e.function == *leaf && (e.eax | e.ebx | e.ecx | e.edx) != 0)
    });
    let max_extended = entries
        .iter()
        .find(|e| e.function == 0x8000_0000)
        .map_or(0, |e| e.eax);
    if has_brand || max_extended < 0x8000_0004 {
        return;
    }
    let mut text = [0u8; 48];
    text[..FALLBACK_BRAND.len()].copy_from_slice(FALLBACK_BRAND.as_bytes());
    for (i, leaf) in brand_leaves.into_iter().enumerate() {
        let word = |n: usize| {
            let at = i * 16 + n * 4;
            u32::from_le_bytes([text[at], text[at + 1], text[at + 2], text[at + 3]])
        };
        let entry = kvm_cpuid_entry2 {
            function: leaf,
            eax: word(0),
            ebx: word(1),
            ecx: word(2),
            edx: word(3),
            ..Default::default()
        };
        entries.retain(|e| e.function != leaf);
        entries.push(entry);
    }
}

fn set_hypervisor_leaves(entries: &mut Vec<kvm_cpuid_entry2>) {
    let signature = |n: usize| {
        u32::from_le_bytes([
            KVM_SIGNATURE[n * 4],
            KVM_SIGNATURE[n * 4 + 1],
            KVM_SIGNATURE[n * 4 + 2],
            KVM_SIGNATURE[n * 4 + 3],
        ])
    };
    let max_leaf = entries
        .iter()
        .find(|e| e.function == HYPERVISOR_LEAF)
        .map_or(KVM_FEATURES_LEAF, |e| e.eax.max(KVM_FEATURES_LEAF));
    entries.retain(|e| e.function != HYPERVISOR_LEAF);
    entries.push(kvm_cpuid_entry2 {
        function: HYPERVISOR_LEAF,
        eax: max_leaf,
        ebx: signature(0),
        ecx: signature(1),
        edx: signature(2),
        ..Default::default()
    });
    // KVM's paravirtual features as KVM reports them; none promised when it reports none.
    if !entries.iter().any(|e| e.function == KVM_FEATURES_LEAF) {
        entries.push(kvm_cpuid_entry2 {
            function: KVM_FEATURES_LEAF,
            ..Default::default()
        });
    }
}

/// Bits needed to number `count` items (ceil(log2(count))).
fn id_bits(count: u32) -> u32 {
    match count {
        0 | 1 => 0,
        n => u32::BITS - (n - 1).leading_zeros(),
    }
}

fn set_topology(entries: &mut Vec<kvm_cpuid_entry2>, vendor: Vendor, index: u32, count: u32) {
    let apic_id = index & 0xff;
    let logical = count.min(0xff);
    let sharing_all = (count - 1).min(0xfff);
    let max_basic = entries
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);

    if let Some(leaf1) = entry_mut(entries, 1, 0) {
        leaf1.ebx = (leaf1.ebx & 0x0000_ffff) | (apic_id << 24) | (logical << 16);
        if count > 1 {
            leaf1.edx |= HTT_BIT;
        } else {
            leaf1.edx &= !HTT_BIT;
        }
    }

    for entry in entries.iter_mut() {
        match entry.function {
            // Deterministic cache parameters: one thread per core, L3 shared by the package.
            4 if vendor == Vendor::Intel => {
                let level = (entry.eax >> 5) & 0x7;
                let sharing = if level >= 3 { sharing_all } else { 0 };
                let cores = (count - 1).min(63);
                entry.eax = (entry.eax & 0x3fff) | (sharing << 14) | (cores << 26);
            }
            0x8000_001D if vendor == Vendor::Amd => {
                let level = (entry.eax >> 5) & 0x7;
                let sharing = if level >= 3 { sharing_all } else { 0 };
                entry.eax = (entry.eax & 0x3fff) | (sharing << 14);
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                // NC (cores - 1) and ApicIdCoreIdSize.
                entry.ecx = (entry.ecx & !0xf0ff) | (id_bits(count) << 12) | (count - 1).min(0xff);
            }
            0x8000_0001 if vendor == Vendor::Amd => {
                if count > 1 {
                    entry.ecx |= CMP_LEGACY_BIT;
                } else {
                    entry.ecx &= !CMP_LEGACY_BIT;
                }
            }
            0x8000_001E if vendor == Vendor::Amd => {
                // Extended APIC id; compute unit = core, one thread per unit, node 0.
                entry.eax = index;
                entry.ebx = index & 0xff;
                entry.ecx = 0;
            }
            _ => {}
        }
    }

    // x2APIC topology: level 0 SMT (one thread per core), level 1 core (count cores),
    // then the terminating invalid level. EDX is the x2APIC id on every subleaf.
    for leaf in [0xBu32, 0x1F] {
        let present = entries.iter().any(|e| e.function == leaf);
        if max_basic < leaf || !(present || leaf == 0xB) {
            continue;
        }
        entries.retain(|e| e.function != leaf);
        let levels = [
            (0, 1, 1),                  // (shift, processors, level type SMT)
            (id_bits(count), count, 2), // core
            (0, 0, 0),                  // invalid: end of the list
        ];
        for (subleaf, (shift, processors, level_type)) in (0u32..).zip(levels) {
            entries.push(kvm_cpuid_entry2 {
                function: leaf,
                index: subleaf,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                eax: shift,
                ebx: processors & 0xffff,
                ecx: (level_type << 8) | subleaf,
                edx: index,
                ..Default::default()
            });
        }
    }
}
