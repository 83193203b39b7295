//! The guest CPU of a KVM x86-64 virtual machine, as a Linux guest expects to find it.
//!
//! - [`build_cpuid`]: the per-vCPU CPUID table, built from KVM_GET_SUPPORTED_CPUID (what
//!   QEMU calls `-cpu host`) with the vCPU's APIC id and a `-smp N` topology of N
//!   single-threaded cores in one package, the hypervisor bit and KVM's signature leaves,
//!   and the feature edits of a [`CpuModel`] parsed from QEMU-style `-cpu` text.
//! - [`CpuModel::parse`]: `host,-xsave,-cx16,+x2apic`. Removing a feature also removes what
//!   depends on it ([`features::DEPENDENCIES`]): `-xsave` takes AVX, AVX2, AVX-512,
//!   OSXSAVE, PKU and the XSAVE leaf 0xD with it.
//! - [`boot_msrs`]: the MSRs a Linux boot expects, for KVM_SET_MSRS.
//!
//! The MP table and the ACPI tables that describe the CPUs to the guest are in vmkit-acpi.
//!
//! The crate makes no KVM calls: the VMM passes in the supported CPUID and applies the
//! results (`vcpu.set_cpuid2(&cpuid)`, `vcpu.set_msrs(&msrs)`).
//!
//! ```
//! use kvm_bindings::{kvm_cpuid_entry2, CpuId};
//! use vmkit_cpu::{build_cpuid, CpuModel};
//!
//! // A tiny "supported" set; a VMM gets the real one from KVM_GET_SUPPORTED_CPUID.
//! let leaf = |function, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
//!     function, eax, ebx, ecx, edx, ..Default::default()
//! };
//! let supported = CpuId::from_entries(&[
//!     leaf(0, 0xd, u32::from_le_bytes(*b"Genu"), u32::from_le_bytes(*b"ntel"),
//!          u32::from_le_bytes(*b"ineI")),
//!     // XSAVE (bit 26), AVX (28) and CX16 (13) in ECX; FPU, APIC in EDX.
//!     leaf(1, 0x806f8, 0x0800, (1 << 26) | (1 << 28) | (1 << 13), (1 << 0) | (1 << 9)),
//! ])
//! .unwrap();
//!
//! let model = CpuModel::parse("host,-xsave,-cx16")?;
//! let cpuid = build_cpuid(&supported, &model, 1, 2)?;
//! let leaf1 = cpuid.as_slice().iter().find(|e| e.function == 1).unwrap();
//! assert_eq!(leaf1.ebx >> 24, 1, "APIC id of vCPU 1");
//! assert_eq!(leaf1.ecx & (1 << 26 | 1 << 28 | 1 << 13), 0, "xsave, avx, cx16 gone");
//! assert_ne!(leaf1.ecx & (1 << 31), 0, "hypervisor bit");
//! # Ok::<(), vmkit_cpu::Error>(())
//! ```
#![forbid(unsafe_code)]

mod cpuid;
mod error;
pub mod features;
pub mod msrs;

pub use cpuid::{
    build_cpuid, has_feature, Vendor, FALLBACK_BRAND, HYPERVISOR_LEAF, KVM_FEATURES_LEAF,
    KVM_SIGNATURE,
};
pub use error::{Error, Result};
pub use features::{CpuModel, Feature, Register};
pub use msrs::{boot_msr_entries, boot_msrs};
