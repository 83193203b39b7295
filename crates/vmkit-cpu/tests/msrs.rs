//! The boot MSRs.

use vmkit_cpu::boot_msrs;
use vmkit_cpu::msrs::*;

#[test]
fn boot_msrs_contents() {
    let msrs = boot_msrs().unwrap();
    let get = |index| {
        msrs.as_slice()
            .iter()
            .find(|e| e.index == index)
            .unwrap_or_else(|| panic!("MSR {index:#x} missing"))
            .data
    };
    for zero in [
        MSR_IA32_SYSENTER_CS,
        MSR_IA32_SYSENTER_ESP,
        MSR_IA32_SYSENTER_EIP,
        MSR_STAR,
        MSR_LSTAR,
        MSR_CSTAR,
        MSR_SYSCALL_MASK,
        MSR_KERNEL_GS_BASE,
        MSR_IA32_TSC,
    ] {
        assert_eq!(get(zero), 0, "{zero:#x}");
    }
    assert_eq!(get(MSR_IA32_MISC_ENABLE) & 1, 1, "fast strings");
    assert_eq!(
        get(MSR_MTRR_DEF_TYPE),
        0x806,
        "MTRRs on, write-back default"
    );
    assert_eq!(msrs.as_slice().len(), 11);
    let mut indices: Vec<_> = msrs.as_slice().iter().map(|e| e.index).collect();
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices.len(), 11, "no duplicates");
}
