//! CPU feature names as QEMU users write them in `-cpu`, and the CPUID bits behind them.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Register {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

/// One named CPU feature: a single CPUID bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Feature {
    /// QEMU's name for it (`sse4.1`, `tsc-deadline`, `lahf_lm`...).
    pub name: &'static str,
    /// Other accepted spellings (`pni` for `sse3`...).
    pub aliases: &'static [&'static str],
    /// CPUID leaf (EAX input).
    pub leaf: u32,
    /// CPUID subleaf (ECX input); 0 for leaves without subleaves.
    pub subleaf: u32,
    /// Output register.
    pub register: Register,
    /// Bit number in the register.
    pub bit: u8,
}

impl Feature {
    /// The bit as a mask.
    pub fn mask(&self) -> u32 {
        1 << self.bit
    }

    /// True for bits the guest OS owns (OSXSAVE, OSPKE mirror CR4): `+` cannot set them.
    pub fn os_controlled(&self) -> bool {
        matches!(self.name, "osxsave" | "ospke")
    }
}

const fn f(
    name: &'static str,
    aliases: &'static [&'static str],
    leaf: u32,
    subleaf: u32,
    register: Register,
    bit: u8,
) -> Feature {
    Feature {
        name,
        aliases,
        leaf,
        subleaf,
        register,
        bit,
    }
}

use Register::{Eax, Ebx, Ecx, Edx};

/// Every feature name this crate knows.
pub const FEATURES: &[Feature] = &[
    // Leaf 1 EDX.
    f("fpu", &[], 1, 0, Edx, 0),
    f("vme", &[], 1, 0, Edx, 1),
    f("de", &[], 1, 0, Edx, 2),
    f("pse", &[], 1, 0, Edx, 3),
    f("tsc", &[], 1, 0, Edx, 4),
    f("msr", &[], 1, 0, Edx, 5),
    f("pae", &[], 1, 0, Edx, 6),
    f("mce", &[], 1, 0, Edx, 7),
    f("cx8", &[], 1, 0, Edx, 8),
    f("apic", &[], 1, 0, Edx, 9),
    f("sep", &[], 1, 0, Edx, 11),
    f("mtrr", &[], 1, 0, Edx, 12),
    f("pge", &[], 1, 0, Edx, 13),
    f("mca", &[], 1, 0, Edx, 14),
    f("cmov", &[], 1, 0, Edx, 15),
    f("pat", &[], 1, 0, Edx, 16),
    f("pse36", &[], 1, 0, Edx, 17),
    f("clflush", &[], 1, 0, Edx, 19),
    f("mmx", &[], 1, 0, Edx, 23),
    f("fxsr", &[], 1, 0, Edx, 24),
    f("sse", &[], 1, 0, Edx, 25),
    f("sse2", &[], 1, 0, Edx, 26),
    f("ss", &[], 1, 0, Edx, 27),
    f("ht", &[], 1, 0, Edx, 28),
    // Leaf 1 ECX.
    f("sse3", &["pni"], 1, 0, Ecx, 0),
    f("pclmulqdq", &["pclmuldq"], 1, 0, Ecx, 1),
    f("ssse3", &[], 1, 0, Ecx, 9),
    f("fma", &[], 1, 0, Ecx, 12),
    f("cx16", &[], 1, 0, Ecx, 13),
    f("pcid", &[], 1, 0, Ecx, 17),
    f("sse4.1", &["sse4_1"], 1, 0, Ecx, 19),
    f("sse4.2", &["sse4_2"], 1, 0, Ecx, 20),
    f("x2apic", &[], 1, 0, Ecx, 21),
    f("movbe", &[], 1, 0, Ecx, 22),
    f("popcnt", &[], 1, 0, Ecx, 23),
    f("tsc-deadline", &[], 1, 0, Ecx, 24),
    f("aes", &[], 1, 0, Ecx, 25),
    f("xsave", &[], 1, 0, Ecx, 26),
    f("osxsave", &[], 1, 0, Ecx, 27),
    f("avx", &[], 1, 0, Ecx, 28),
    f("f16c", &[], 1, 0, Ecx, 29),
    f("rdrand", &[], 1, 0, Ecx, 30),
    f("hypervisor", &[], 1, 0, Ecx, 31),
    // Leaf 7 subleaf 0 EBX.
    f("fsgsbase", &[], 7, 0, Ebx, 0),
    f("bmi1", &[], 7, 0, Ebx, 3),
    f("avx2", &[], 7, 0, Ebx, 5),
    f("smep", &[], 7, 0, Ebx, 7),
    f("bmi2", &[], 7, 0, Ebx, 8),
    f("erms", &[], 7, 0, Ebx, 9),
    f("invpcid", &[], 7, 0, Ebx, 10),
    f("avx512f", &[], 7, 0, Ebx, 16),
    f("avx512dq", &[], 7, 0, Ebx, 17),
    f("rdseed", &[], 7, 0, Ebx, 18),
    f("adx", &[], 7, 0, Ebx, 19),
    f("smap", &[], 7, 0, Ebx, 20),
    f("avx512ifma", &[], 7, 0, Ebx, 21),
    f("clflushopt", &[], 7, 0, Ebx, 23),
    f("clwb", &[], 7, 0, Ebx, 24),
    f("avx512pf", &[], 7, 0, Ebx, 26),
    f("avx512er", &[], 7, 0, Ebx, 27),
    f("avx512cd", &[], 7, 0, Ebx, 28),
    f("sha-ni", &[], 7, 0, Ebx, 29),
    f("avx512bw", &[], 7, 0, Ebx, 30),
    f("avx512vl", &[], 7, 0, Ebx, 31),
    // Leaf 7 subleaf 0 ECX.
    f("avx512vbmi", &[], 7, 0, Ecx, 1),
    f("umip", &[], 7, 0, Ecx, 2),
    f("pku", &[], 7, 0, Ecx, 3),
    f("ospke", &[], 7, 0, Ecx, 4),
    f("avx512vbmi2", &[], 7, 0, Ecx, 6),
    f("gfni", &[], 7, 0, Ecx, 8),
    f("vaes", &[], 7, 0, Ecx, 9),
    f("vpclmulqdq", &[], 7, 0, Ecx, 10),
    f("avx512vnni", &[], 7, 0, Ecx, 11),
    f("avx512bitalg", &[], 7, 0, Ecx, 12),
    f("avx512-vpopcntdq", &[], 7, 0, Ecx, 14),
    f("la57", &[], 7, 0, Ecx, 16),
    f("rdpid", &[], 7, 0, Ecx, 22),
    // Leaf 0xD subleaf 1 EAX.
    f("xsaveopt", &[], 0xD, 1, Eax, 0),
    f("xsavec", &[], 0xD, 1, Eax, 1),
    f("xgetbv1", &[], 0xD, 1, Eax, 2),
    f("xsaves", &[], 0xD, 1, Eax, 3),
    // Leaf 0x80000001 ECX.
    f("lahf_lm", &["lahf-lm"], 0x8000_0001, 0, Ecx, 0),
    f("abm", &["lzcnt"], 0x8000_0001, 0, Ecx, 5),
    f("sse4a", &[], 0x8000_0001, 0, Ecx, 6),
    f("3dnowprefetch", &["prefetchw"], 0x8000_0001, 0, Ecx, 8),
    // Leaf 0x80000001 EDX.
    f("syscall", &[], 0x8000_0001, 0, Edx, 11),
    f("nx", &["xd"], 0x8000_0001, 0, Edx, 20),
    f("pdpe1gb", &[], 0x8000_0001, 0, Edx, 26),
    f("rdtscp", &[], 0x8000_0001, 0, Edx, 27),
    f("lm", &["i64"], 0x8000_0001, 0, Edx, 29),
];

/// Dependency rules applied when a feature is removed: `(feature, needs)` means removing
/// `needs` also removes `feature`. They follow the architecture (an AVX register file is
/// XSAVE state; FMA/F16C/AVX2 encode in VEX and need AVX; AVX-512 subsets need AVX512F;
/// x2APIC and the TSC-deadline timer are APIC modes) the way QEMU and Linux's
/// cpuid-deps table do, so a guest never sees a feature whose prerequisite is gone.
pub const DEPENDENCIES: &[(&str, &str)] = &[
    ("osxsave", "xsave"),
    ("avx", "xsave"),
    ("pku", "xsave"),
    ("xsaveopt", "xsave"),
    ("xsavec", "xsave"),
    ("xgetbv1", "xsave"),
    ("xsaves", "xsave"),
    ("avx2", "avx"),
    ("fma", "avx"),
    ("f16c", "avx"),
    ("vaes", "avx"),
    ("vpclmulqdq", "avx"),
    ("avx512f", "avx"),
    ("avx512f", "avx2"),
    ("avx512dq", "avx512f"),
    ("avx512ifma", "avx512f"),
    ("avx512pf", "avx512f"),
    ("avx512er", "avx512f"),
    ("avx512cd", "avx512f"),
    ("avx512bw", "avx512f"),
    ("avx512vl", "avx512f"),
    ("avx512vbmi", "avx512f"),
    ("avx512vbmi2", "avx512f"),
    ("avx512vnni", "avx512f"),
    ("avx512bitalg", "avx512f"),
    ("avx512-vpopcntdq", "avx512f"),
    ("ospke", "pku"),
    ("sse", "fxsr"),
    ("sse2", "sse"),
    ("sse3", "sse2"),
    ("ssse3", "sse3"),
    ("sse4.1", "ssse3"),
    ("sse4.2", "sse4.1"),
    ("pclmulqdq", "sse2"),
    ("aes", "sse2"),
    ("sha-ni", "sse2"),
    ("gfni", "sse2"),
    ("x2apic", "apic"),
    ("tsc-deadline", "apic"),
    ("pse36", "pse"),
    ("pdpe1gb", "lm"),
];

/// Folds the spellings QEMU accepts together: case, `_`, `-` and `.` do not matter.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Finds a feature by any of its spellings.
pub fn find_feature(name: &str) -> Option<&'static Feature> {
    let wanted = normalize(name);
    FEATURES.iter().find(|feature| {
        normalize(feature.name) == wanted
            || feature
                .aliases
                .iter()
                .any(|alias| normalize(alias) == wanted)
    })
}

/// The feature and everything that (transitively) depends on it, by the
/// [`DEPENDENCIES`] rules.
pub fn with_dependents(feature: &'static Feature) -> Vec<&'static Feature> {
    let mut closure = vec![feature];
    let mut next = 0;
    while let Some(current) = closure.get(next).copied() {
        next += 1;
        for (dependent, needs) in DEPENDENCIES {
            if *needs == current.name && !closure.iter().any(|f| f.name == *dependent) {
                if let Some(found) = find_feature(dependent) {
                    closure.push(found);
                }
            }
        }
    }
    closure
}

/// A `-cpu` specification: the `host` model plus feature edits.
///
/// `host` (or its alias `max`) means "everything KVM_GET_SUPPORTED_CPUID offers", as QEMU's
/// `-cpu host` does. Items after it are `+feat` / `feat=on` (must be supported by KVM:
/// checked when the CPUID is built), `-feat` / `feat=off` (removes the feature and, by the
/// [`DEPENDENCIES`] rules, everything that needs it), or a bare `feat` (same as `+feat`).
/// For the same feature, the last item wins; removals (with their dependents) are applied
/// after additions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuModel {
    edits: BTreeMap<&'static str, bool>,
}

impl CpuModel {
    /// The `host` model with no edits.
    pub fn host() -> Self {
        Self::default()
    }

    /// Parses `-cpu` text such as `host,-xsave,-cx16,+x2apic`.
    ///
    /// Every unknown feature name is reported in one error.
    pub fn parse(text: &str) -> Result<Self> {
        let mut items = text.split(',');
        let model = items.next().unwrap_or_default().trim();
        if !matches!(model, "host" | "max") {
            return Err(Error::UnknownModel(model.to_string()));
        }
        let mut edits = BTreeMap::new();
        let mut unknown = Vec::new();
        for item in items.map(str::trim).filter(|item| !item.is_empty()) {
            let (name, enable) = if let Some(name) = item.strip_prefix('+') {
                (name, true)
            } else if let Some(name) = item.strip_prefix('-') {
                (name, false)
            } else if let Some((name, value)) = item.split_once('=') {
                match value {
                    "on" | "true" | "yes" => (name, true),
                    "off" | "false" | "no" => (name, false),
                    _ => return Err(Error::BadItem(item.to_string())),
                }
            } else {
                (item, true)
            };
            match find_feature(name) {
                Some(feature) => {
                    if enable && feature.os_controlled() {
                        return Err(Error::NotSettable(feature.name));
                    }
                    edits.insert(feature.name, enable);
                }
                None => unknown.push(name.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(Error::UnknownFeatures(unknown));
        }
        Ok(CpuModel { edits })
    }

    /// Features asked for with `+`.
    pub fn added(&self) -> Vec<&'static Feature> {
        self.features_where(true)
    }

    /// Features asked off with `-` (without their dependents).
    pub fn removed(&self) -> Vec<&'static Feature> {
        self.features_where(false)
    }

    /// Features asked off with `-` plus everything that depends on them.
    pub fn removed_with_dependents(&self) -> Vec<&'static Feature> {
        let mut all: Vec<&'static Feature> = Vec::new();
        for feature in self.removed() {
            for dependent in with_dependents(feature) {
                if !all.contains(&dependent) {
                    all.push(dependent);
                }
            }
        }
        all
    }

    fn features_where(&self, enabled: bool) -> Vec<&'static Feature> {
        self.edits
            .iter()
            .filter(|(_, &on)| on == enabled)
            .filter_map(|(name, _)| find_feature(name))
            .collect()
    }
}
