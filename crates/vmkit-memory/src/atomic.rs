//! Atomic compare-exchange on guest RAM, for a VMM that finishes a guest's locked
//! instruction itself (`lock cmpxchg8b` / `cmpxchg16b` handed back by KVM): done on the
//! host mapping so that it is atomic against the guest's other vCPUs and the devices.

use vm_memory::{GuestAddress, GuestMemory, Permissions, VolatileMemory};

/// Compares the `N` (8 or 16) bytes at `gpa` with `expected` and, if equal, replaces them
/// with `new` atomically (`Some(Ok(()))`); otherwise returns the bytes found
/// (`Some(Err(current))`). `None` when the bytes are not RAM, not aligned to `N`, or `N` is
/// neither 8 nor 16.
pub fn compare_exchange<M: GuestMemory + ?Sized, const N: usize>(
    memory: &M,
    gpa: u64,
    expected: [u8; N],
    new: [u8; N],
) -> Option<Result<(), [u8; N]>> {
    if gpa % N as u64 != 0 {
        return None;
    }
    // One slice of N bytes: the range is contiguous RAM (an aligned 8- or 16-byte range
    // never straddles regions, which are page aligned).
    let slice = memory
        .get_slices(GuestAddress(gpa), N, Permissions::ReadWrite)
        .ok()?
        .next()?
        .ok()?;
    if slice.len() != N {
        return None;
    }
    match N {
        8 => {
            let cell: &std::sync::atomic::AtomicU64 = slice.get_atomic_ref(0).ok()?;
            let result = cell.compare_exchange(
                u64::from_le_bytes(expected[..8].try_into().ok()?),
                u64::from_le_bytes(new[..8].try_into().ok()?),
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
            );
            Some(result.map(|_| ()).map_err(|current| {
                let mut out = [0u8; N];
                out.copy_from_slice(&current.to_le_bytes()[..N]);
                out
            }))
        }
        16 => {
            let expected_value = u128::from_le_bytes(expected[..16].try_into().ok()?);
            let new_value = u128::from_le_bytes(new[..16].try_into().ok()?);
            if !std::arch::is_x86_feature_detected!("cmpxchg16b") {
                return None;
            }
            let pointer = slice.ptr_guard_mut().as_ptr().cast::<u128>();
            // SAFETY: `pointer` addresses the 16 bytes of guest RAM `slice` covers (mapped
            // for as long as `memory` is borrowed), aligned to 16 (checked above, and
            // regions are page aligned); the host CPU has CMPXCHG16B (checked above).
            let current = unsafe { cmpxchg16b(pointer, expected_value, new_value) };
            Some(if current == expected_value {
                Ok(())
            } else {
                let mut out = [0u8; N];
                out.copy_from_slice(&current.to_le_bytes()[..N]);
                Err(out)
            })
        }
        _ => None,
    }
}

/// `lock cmpxchg16b`: returns the 16 bytes found at `destination` (equal to `expected`
/// when the exchange happened). Inline assembly rather than `core::arch`'s intrinsic, which
/// without the target feature enabled for the whole crate lowers to a libatomic call.
///
/// # Safety
///
/// `destination` must be valid for reads and writes of 16 bytes and aligned to 16, and the
/// CPU must have CMPXCHG16B.
unsafe fn cmpxchg16b(destination: *mut u128, expected: u128, new: u128) -> u128 {
    let mut low = expected as u64;
    let mut high = (expected >> 64) as u64;
    // SAFETY: the caller's guarantees; RBX (reserved by the compiler) is swapped in and
    // restored around the instruction.
    unsafe {
        std::arch::asm!(
            "xchg {new_low}, rbx",
            "lock cmpxchg16b xmmword ptr [{destination}]",
            "xchg {new_low}, rbx",
            destination = in(reg) destination,
            new_low = inout(reg) new as u64 => _,
            in("rcx") (new >> 64) as u64,
            inout("rax") low,
            inout("rdx") high,
            options(nostack),
        );
    }
    (u128::from(high) << 64) | u128::from(low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    fn ram() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap()
    }

    #[test]
    fn eight_and_sixteen_bytes_swap_when_equal_and_report_when_not() {
        let ram = ram();
        ram.write_slice(&[1u8; 16], GuestAddress(0x100)).unwrap();
        assert_eq!(
            compare_exchange(&ram, 0x100, [1u8; 8], [2u8; 8]),
            Some(Ok(()))
        );
        assert_eq!(
            compare_exchange(&ram, 0x100, [1u8; 8], [3u8; 8]),
            Some(Err([2u8; 8]))
        );
        let mut expected = [2u8; 16];
        expected[8..].copy_from_slice(&[1u8; 8]);
        assert_eq!(
            compare_exchange(&ram, 0x100, expected, [9u8; 16]),
            Some(Ok(()))
        );
        let mut back = [0u8; 16];
        ram.read_slice(&mut back, GuestAddress(0x100)).unwrap();
        assert_eq!(back, [9u8; 16]);
        assert_eq!(
            compare_exchange(&ram, 0x100, [0u8; 16], [1u8; 16]),
            Some(Err([9u8; 16]))
        );
    }

    #[test]
    fn misaligned_outside_ram_or_odd_sizes_are_refused() {
        let ram = ram();
        assert_eq!(compare_exchange(&ram, 0x108, [0u8; 16], [0u8; 16]), None);
        assert_eq!(compare_exchange(&ram, 0x104, [0u8; 8], [0u8; 8]), None);
        assert_eq!(compare_exchange(&ram, 0x4000, [0u8; 8], [0u8; 8]), None);
        assert_eq!(compare_exchange(&ram, 0x100, [0u8; 4], [0u8; 4]), None);
    }
}
