//! CPUID tables for -smp 1/2/4 on Intel- and AMD-like supported sets, and -cpu edits.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use proptest::prelude::*;
use vmkit_cpu::features::find_feature;
use vmkit_cpu::{build_cpuid, has_feature, CpuModel, Error, Vendor, FALLBACK_BRAND};

fn leaf(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags: if index > 0 || matches!(function, 4 | 7 | 0xB | 0xD | 0x1F | 0x8000_001D) {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    }
}

fn text(s: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*s)
}

fn brand(name: &str) -> Vec<kvm_cpuid_entry2> {
    let mut bytes = [0u8; 48];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    let word = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
    (0..3)
        .map(|n| {
            leaf(
                0x8000_0002 + n as u32,
                0,
                word(n * 4),
                word(n * 4 + 1),
                word(n * 4 + 2),
                word(n * 4 + 3),
            )
        })
        .collect()
}

const LEAF1_ECX: u32 = (1 << 0)
    | (1 << 1)
    | (1 << 9)
    | (1 << 12)
    | (1 << 13)
    | (1 << 19)
    | (1 << 20)
    | (1 << 21)
    | (1 << 23)
    | (1 << 24)
    | (1 << 25)
    | (1 << 26)
    | (1 << 28)
    | (1 << 29)
    | (1 << 30);
const LEAF1_EDX: u32 = 0x0781_abff; // fpu..sse2, no ht
const LEAF7_EBX: u32 = (1 << 0)
    | (1 << 3)
    | (1 << 5)
    | (1 << 8)
    | (1 << 9)
    | (1 << 16)
    | (1 << 17)
    | (1 << 30)
    | (1 << 31);

/// Something shaped like KVM_GET_SUPPORTED_CPUID on an Intel host.
fn intel_supported() -> CpuId {
    let mut entries = vec![
        leaf(0, 0, 0x1f, text(b"Genu"), text(b"ntel"), text(b"ineI")),
        leaf(1, 0, 0x000806f8, 0x0000_0800, LEAF1_ECX, LEAF1_EDX),
        // Host cache leaves: L1d, L1i, L2, L3 with host sharing counts.
        leaf(4, 0, 0x1c00_4121, 0x02c0_003f, 63, 0),
        leaf(4, 1, 0x1c00_4122, 0x01c0_003f, 63, 0),
        leaf(4, 2, 0x1c00_4143, 0x03c0_003f, 2047, 0),
        leaf(4, 3, 0x1c03_c163, 0x03c0_003f, 0xfffff, 4),
        leaf(7, 0, 0, LEAF7_EBX, (1 << 3) | (1 << 2), 0),
        leaf(0xA, 0, 0x0830_0805, 0, 0, 0x603),
        leaf(0xB, 0, 1, 2, 0x100, 7),
        leaf(0xB, 1, 7, 96, 0x201, 7),
        leaf(0xD, 0, 0x2e7, 0xa88, 0xa88, 0),
        leaf(0xD, 1, 0xf, 0, 0, 0),
        leaf(0xD, 2, 0x100, 0x240, 0, 0),
        leaf(0xD, 5, 0x40, 0x440, 0, 0),
        leaf(0xD, 6, 0x200, 0x480, 0, 0),
        leaf(0xD, 7, 0x400, 0x680, 0, 0),
        leaf(0xD, 9, 0x8, 0xa80, 0, 0),
        leaf(0x1F, 0, 1, 2, 0x100, 7),
        leaf(
            0x4000_0000,
            0,
            0x4000_0001,
            text(b"KVMK"),
            text(b"VMKV"),
            text(b"M\0\0\0"),
        ),
        leaf(0x4000_0001, 0, 0x0100_7afb, 0, 0, 0),
        leaf(0x8000_0000, 0, 0x8000_0008, 0, 0, 0),
        leaf(
            0x8000_0001,
            0,
            0,
            0,
            (1 << 0) | (1 << 5) | (1 << 8),
            (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29),
        ),
        leaf(0x8000_0008, 0, 0x3030, 0, 0, 0),
    ];
    entries.extend(brand("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"));
    CpuId::from_entries(&entries).unwrap()
}

/// Something shaped like KVM_GET_SUPPORTED_CPUID on an AMD host.
fn amd_supported() -> CpuId {
    let mut entries = vec![
        leaf(0, 0, 0x10, text(b"Auth"), text(b"cAMD"), text(b"enti")),
        leaf(1, 0, 0x00a00f11, 0x0000_0800, LEAF1_ECX, LEAF1_EDX),
        leaf(7, 0, 0, LEAF7_EBX, 0, 0),
        leaf(0xD, 0, 0x7, 0x340, 0x340, 0),
        leaf(0xD, 1, 0xf, 0, 0, 0),
        leaf(0xD, 2, 0x100, 0x240, 0, 0),
        leaf(
            0x4000_0000,
            0,
            0x4000_0001,
            text(b"KVMK"),
            text(b"VMKV"),
            text(b"M\0\0\0"),
        ),
        leaf(0x4000_0001, 0, 0x0100_7afb, 0, 0, 0),
        leaf(0x8000_0000, 0, 0x8000_0021, 0, 0, 0),
        leaf(
            0x8000_0001,
            0,
            0x00a00f11,
            0,
            (1 << 0) | (1 << 5),
            (1 << 11) | (1 << 20) | (1 << 29),
        ),
        leaf(0x8000_0008, 0, 0x3030, 0, 0x7007, 0),
        leaf(0x8000_001D, 0, 0x121, 0x01c0_003f, 63, 0),
        leaf(0x8000_001D, 3, 0x3c163, 0x03c0_003f, 0x7fff, 1),
        leaf(0x8000_001E, 0, 0, 0x100, 0, 0),
    ];
    entries.extend(brand("AMD EPYC 7B13 64-Core Processor"));
    CpuId::from_entries(&entries).unwrap()
}

fn get(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
    *cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == index)
        .unwrap_or_else(|| panic!("leaf {function:#x}.{index} missing"))
}

fn count(cpuid: &CpuId, function: u32) -> usize {
    cpuid
        .as_slice()
        .iter()
        .filter(|e| e.function == function)
        .count()
}

fn brand_of(cpuid: &CpuId) -> String {
    let mut bytes = Vec::new();
    for function in 0x8000_0002..=0x8000_0004 {
        let e = get(cpuid, function, 0);
        for reg in [e.eax, e.ebx, e.ecx, e.edx] {
            bytes.extend_from_slice(&reg.to_le_bytes());
        }
    }
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\0')
        .to_string()
}

fn host(supported: &CpuId, index: u32, n: u32) -> CpuId {
    build_cpuid(supported, &CpuModel::host(), index, n).unwrap()
}

#[test]
fn intel_topology_for_smp_1_2_4() {
    let supported = intel_supported();
    for n in [1u32, 2, 4] {
        for index in 0..n {
            let cpuid = host(&supported, index, n);
            let leaf1 = get(&cpuid, 1, 0);
            assert_eq!(leaf1.ebx >> 24, index, "initial APIC id");
            assert_eq!((leaf1.ebx >> 16) & 0xff, n, "logical processor count");
            assert_eq!(leaf1.ebx & 0xffff, 0x0800, "CLFLUSH line size kept");
            assert_eq!(leaf1.edx & (1 << 28) != 0, n > 1, "HTT");
            assert_eq!(leaf1.eax, 0x000806f8, "signature kept");

            for sub in 0..4 {
                let l4 = get(&cpuid, 4, sub);
                assert_eq!(l4.eax >> 26, n - 1, "cores per package - 1");
                let level = (l4.eax >> 5) & 7;
                let sharing = (l4.eax >> 14) & 0xfff;
                assert_eq!(sharing, if level == 3 { n - 1 } else { 0 }, "level {level}");
                assert_eq!(l4.eax & 0x3fff, get(&supported, 4, sub).eax & 0x3fff);
            }

            for topo in [0xB, 0x1F] {
                assert_eq!(count(&cpuid, topo), 3);
                let smt = get(&cpuid, topo, 0);
                assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, index));
                let core = get(&cpuid, topo, 1);
                let shift = match n {
                    1 => 0,
                    2 => 1,
                    _ => 2,
                };
                assert_eq!(
                    (core.eax, core.ebx, core.ecx, core.edx),
                    (shift, n, 0x201, index)
                );
                let end = get(&cpuid, topo, 2);
                assert_eq!((end.eax, end.ebx, end.ecx >> 8, end.edx), (0, 0, 0, index));
                assert_ne!(end.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0);
            }
        }
    }
}

#[test]
fn hypervisor_leaves_vendor_and_brand() {
    let cpuid = host(&intel_supported(), 0, 1);
    assert_eq!(Vendor::of(cpuid.as_slice()), Vendor::Intel);
    assert_ne!(get(&cpuid, 1, 0).ecx & (1 << 31), 0, "hypervisor bit");
    let hv = get(&cpuid, 0x4000_0000, 0);
    assert_eq!(hv.eax, 0x4000_0001);
    let mut sig = Vec::new();
    for reg in [hv.ebx, hv.ecx, hv.edx] {
        sig.extend_from_slice(&reg.to_le_bytes());
    }
    assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
    assert_eq!(
        get(&cpuid, 0x4000_0001, 0).eax,
        0x0100_7afb,
        "KVM features as reported"
    );
    assert_eq!(
        brand_of(&cpuid),
        "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    );
    // PMU leaf zeroed.
    let pmu = get(&cpuid, 0xA, 0);
    assert_eq!((pmu.eax, pmu.ebx, pmu.ecx, pmu.edx), (0, 0, 0, 0));
}

#[test]
fn missing_hypervisor_leaves_and_brand_are_added() {
    let entries: Vec<_> = intel_supported()
        .as_slice()
        .iter()
        .copied()
        .filter(|e| !(0x4000_0000..=0x4000_0001).contains(&e.function))
        .map(|mut e| {
            if (0x8000_0002..=0x8000_0004).contains(&e.function) {
                (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0);
            }
            e
        })
        .collect();
    let supported = CpuId::from_entries(&entries).unwrap();
    let cpuid = host(&supported, 0, 1);
    assert_eq!(get(&cpuid, 0x4000_0000, 0).ebx, text(b"KVMK"));
    assert_eq!(get(&cpuid, 0x4000_0001, 0).eax, 0);
    assert_eq!(brand_of(&cpuid), FALLBACK_BRAND);
}

#[test]
fn amd_topology() {
    let supported = amd_supported();
    for n in [1u32, 2, 4] {
        for index in 0..n {
            let cpuid = host(&supported, index, n);
            assert_eq!(Vendor::of(cpuid.as_slice()), Vendor::Amd);
            let leaf1 = get(&cpuid, 1, 0);
            assert_eq!((leaf1.ebx >> 24, (leaf1.ebx >> 16) & 0xff), (index, n));
            let nc = get(&cpuid, 0x8000_0008, 0).ecx;
            assert_eq!(nc & 0xff, n - 1, "NC");
            assert_eq!(
                (nc >> 12) & 0xf,
                match n {
                    1 => 0,
                    2 => 1,
                    _ => 2,
                }
            );
            assert_eq!(get(&cpuid, 0x8000_0001, 0).ecx & 2 != 0, n > 1, "CmpLegacy");
            let ext = get(&cpuid, 0x8000_001E, 0);
            assert_eq!((ext.eax, ext.ebx, ext.ecx), (index, index, 0));
            assert_eq!(
                (get(&cpuid, 0x8000_001D, 3).eax >> 14) & 0xfff,
                n - 1,
                "L3 sharing"
            );
            assert_eq!(
                (get(&cpuid, 0x8000_001D, 0).eax >> 14) & 0xfff,
                0,
                "L1 private"
            );
            // Leaf 0xB: present in no AMD set below 0xB max? This one has max 0x10.
            assert_eq!(get(&cpuid, 0xB, 1).ebx, n);
            assert_eq!(count(&cpuid, 0x1F), 0, "0x1F only where KVM lists it");
        }
    }
}

#[test]
fn bad_vcpu_index_is_an_error() {
    let supported = intel_supported();
    for (index, n) in [(0, 0), (2, 2), (5, 4)] {
        let err = build_cpuid(&supported, &CpuModel::host(), index, n).unwrap_err();
        assert!(matches!(err, Error::BadVcpuIndex { .. }), "{err}");
    }
}

fn feature_set(cpuid: &CpuId, name: &str) -> bool {
    has_feature(cpuid.as_slice(), find_feature(name).unwrap())
}

#[test]
fn removing_xsave_removes_its_dependents_and_leaf_d() {
    let supported = intel_supported();
    let model = CpuModel::parse("host,-xsave,-cx16").unwrap();
    let cpuid = build_cpuid(&supported, &model, 0, 2).unwrap();
    for gone in [
        "xsave", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
        "xsaveopt", "xsavec", "xgetbv1", "xsaves", "pku", "cx16",
    ] {
        assert!(!feature_set(&cpuid, gone), "{gone} still set");
    }
    for kept in [
        "sse4.2",
        "aes",
        "x2apic",
        "bmi2",
        "popcnt",
        "pclmulqdq",
        "lm",
        "syscall",
    ] {
        assert!(feature_set(&cpuid, kept), "{kept} lost");
        assert!(feature_set(&supported, kept));
    }
    for e in cpuid.as_slice().iter().filter(|e| e.function == 0xD) {
        assert_eq!(
            (e.eax, e.ebx, e.ecx, e.edx),
            (0, 0, 0, 0),
            "leaf 0xD.{}",
            e.index
        );
    }
    // Nothing else in leaf 1 ECX changed but those bits and the hypervisor bit.
    let removed = (1 << 26) | (1 << 28) | (1 << 12) | (1 << 29) | (1 << 13);
    assert_eq!(get(&cpuid, 1, 0).ecx, (LEAF1_ECX & !removed) | (1 << 31));
}

#[test]
fn removing_avx_keeps_xsave_but_drops_its_state_components() {
    let model = CpuModel::parse("host,-avx").unwrap();
    let cpuid = build_cpuid(&intel_supported(), &model, 0, 1).unwrap();
    assert!(feature_set(&cpuid, "xsave"));
    assert!(feature_set(&cpuid, "xsaveopt"));
    assert!(!feature_set(&cpuid, "avx2") && !feature_set(&cpuid, "avx512bw"));
    assert_eq!(get(&cpuid, 0xD, 0).eax, 0x2e7 & !(0b111 << 5) & !(1 << 2));
    assert_eq!(get(&cpuid, 0xD, 2).eax, 0, "YMM component");
    assert_eq!(get(&cpuid, 0xD, 6).eax, 0, "ZMM component");
    assert_eq!(get(&cpuid, 0xD, 9).eax, 8, "PKRU component kept");
}

#[test]
fn model_parsing_and_errors() {
    let model = CpuModel::parse("host,-xsave,-cx16,+x2apic").unwrap();
    let names = |v: Vec<&vmkit_cpu::Feature>| v.iter().map(|f| f.name).collect::<Vec<_>>();
    assert_eq!(names(model.removed()), ["cx16", "xsave"]);
    assert_eq!(names(model.added()), ["x2apic"]);
    assert!(names(model.removed_with_dependents()).contains(&"avx512vl"));

    // Spellings and syntaxes QEMU accepts.
    let model =
        CpuModel::parse("max,sse4_1=off,pni=off,SSE4-2=off,lahf-lm=off,tsc_deadline").unwrap();
    assert_eq!(
        names(model.removed()),
        ["lahf_lm", "sse3", "sse4.1", "sse4.2"]
    );
    assert_eq!(names(model.added()), ["tsc-deadline"]);
    // Last item wins.
    assert!(CpuModel::parse("host,-avx,+avx")
        .unwrap()
        .removed()
        .is_empty());

    let err = CpuModel::parse("host,-xsave,-frobnicate,+warp-drive").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown CPU feature name(s): frobnicate, warp-drive"
    );
    assert!(matches!(CpuModel::parse("qemu64"), Err(Error::UnknownModel(m)) if m == "qemu64"));
    assert!(matches!(
        CpuModel::parse("host,xsave=maybe"),
        Err(Error::BadItem(_))
    ));
    assert!(matches!(
        CpuModel::parse("host,+osxsave"),
        Err(Error::NotSettable("osxsave"))
    ));
    assert!(CpuModel::parse("host,-osxsave").is_ok());
    assert_eq!(CpuModel::parse("host,").unwrap(), CpuModel::host());
}

#[test]
fn adding_needs_kvm_support() {
    let supported = intel_supported();
    let ok = CpuModel::parse("host,+x2apic,+avx2,+hypervisor").unwrap();
    assert!(build_cpuid(&supported, &ok, 0, 1).is_ok());
    let bad = CpuModel::parse("host,+la57,+sha-ni,+sse").unwrap();
    let err = build_cpuid(&supported, &bad, 0, 1).unwrap_err();
    assert!(
        matches!(&err, Error::NotSupported(v) if v == &["la57", "sha-ni"]),
        "{err}"
    );
}

#[test]
fn removing_hypervisor_and_apic() {
    let model = CpuModel::parse("host,-hypervisor,-apic").unwrap();
    let cpuid = build_cpuid(&intel_supported(), &model, 0, 1).unwrap();
    assert_eq!(get(&cpuid, 1, 0).ecx & (1 << 31), 0);
    for gone in ["apic", "x2apic", "tsc-deadline"] {
        assert!(!feature_set(&cpuid, gone), "{gone}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random -cpu strings (free text and plausible item lists) never panic.
    #[test]
    fn random_cpu_strings_never_panic(
        free in ".{0,40}",
        items in proptest::collection::vec(
            (prop_oneof![Just("+"), Just("-"), Just(""), Just("=")],
             prop_oneof![
                 proptest::sample::select(vmkit_cpu::features::FEATURES.iter().map(|f| f.name).collect::<Vec<_>>()),
                 Just("nope"), Just(""), Just("sse4_1"),
             ],
             prop_oneof![Just(""), Just("=on"), Just("=off"), Just("=x")]),
            0..8),
        index in 0u32..6,
        n in 0u32..6,
    ) {
        let _ = CpuModel::parse(&free);
        let mut text = String::from("host");
        for (sign, name, value) in items {
            text.push(',');
            text.push_str(sign);
            text.push_str(name);
            text.push_str(value);
        }
        if let Ok(model) = CpuModel::parse(&text) {
            if let Ok(cpuid) = build_cpuid(&intel_supported(), &model, index, n) {
                for removed in model.removed_with_dependents() {
                    // As in QEMU, HTT follows the topology: a multi-CPU guest has it even
                    // with -ht (cpu_x86_cpuid sets it whenever cores * threads > 1).
                    if removed.name == "ht" && n > 1 {
                        prop_assert!(has_feature(cpuid.as_slice(), removed));
                        continue;
                    }
                    prop_assert!(!has_feature(cpuid.as_slice(), removed));
                }
            }
        }
    }
}
