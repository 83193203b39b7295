//! The model-specific registers a Linux guest expects initialised at boot.

use kvm_bindings::{kvm_msr_entry, Msrs, KVM_MAX_MSR_ENTRIES};

use crate::{Error, Result};

/// IA32_TSC.
pub const MSR_IA32_TSC: u32 = 0x10;
/// IA32_SYSENTER_CS.
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// IA32_MISC_ENABLE.
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// IA32_MTRR_DEF_TYPE.
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// STAR: SYSCALL/SYSRET segment selectors.
pub const MSR_STAR: u32 = 0xc000_0081;
/// LSTAR: 64-bit SYSCALL entry.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// CSTAR: compatibility-mode SYSCALL entry.
pub const MSR_CSTAR: u32 = 0xc000_0083;
/// SYSCALL_MASK (FMASK): RFLAGS bits cleared by SYSCALL.
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// KERNEL_GS_BASE: the GS base SWAPGS exchanges.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// IA32_MISC_ENABLE bit 0: fast string operations (rep movs/stos) enabled.
pub const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
/// IA32_MTRR_DEF_TYPE bit 11: MTRRs enabled.
pub const MTRR_ENABLE: u64 = 1 << 11;
/// Memory type write-back.
pub const MTRR_TYPE_WRITEBACK: u64 = 6;

/// The boot MSR values: the syscall/sysenter MSRs and the TSC at 0, fast strings on, and
/// MTRRs enabled with write-back as the default type (variable and fixed ranges off, so
/// all RAM is write-back; Linux keeps PAT working instead of disabling it for lack of
/// MTRRs).
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRITEBACK),
    ]
}

/// [`boot_msr_entries`] as the `Msrs` KVM_SET_MSRS takes (`vcpu.set_msrs(&msrs)` returns
/// how many were set: compare with `msrs.as_slice().len()`).
pub fn boot_msrs() -> Result<Msrs> {
    Msrs::from_entries(&boot_msr_entries()).map_err(|_| Error::TooManyEntries {
        what: "MSR",
        max: KVM_MAX_MSR_ENTRIES,
    })
}
