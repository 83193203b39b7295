//! A real-mode legacy (virtio 0.9.5, transitional I/O BAR) driver kit for device tests:
//! probing a function, setting features, placing a queue by page frame, writing
//! descriptors and avail entries, ringing and waiting for the used ring. Generalizes the
//! helpers of tests/virtio.rs to chains of several descriptors and several requests.
#![allow(dead_code)]

use super::*;

/// Where the guest puts the legacy I/O BAR.
pub const IO_BASE: u32 = 0xc000;

/// VRING_DESC_F_NEXT / VRING_DESC_F_WRITE.
pub const DESC_NEXT: u32 = 1;
pub const DESC_WRITE: u32 = 2;

/// Emits: print 'V' if function `slot`.0 is 1af4:`device`, put its legacy BAR at
/// [`IO_BASE`] with I/O and bus mastering on, set ACKNOWLEDGE | DRIVER, print the low byte
/// of the host features, and accept `features`.
pub fn emit_probe_with_features(
    a: &mut CodeAssembler,
    slot: u32,
    device: u32,
    features: u32,
) -> Result<(), IcedError> {
    emit_legacy_virtio_probe(a, slot, device, IO_BASE)?;
    a.mov(dx, IO_BASE)?;
    a.in_(eax, dx)?;
    emit_putc(a)?;
    a.mov(dx, IO_BASE + 0x04)?;
    a.mov(eax, features)?;
    a.out(dx, eax)
}

/// Byte offsets of a legacy ring of `size` entries: (avail, used).
pub fn ring_offsets(size: u32) -> (u32, u32) {
    let avail = 16 * size;
    let used = (avail + 6 + 2 * size + 4095) & !4095;
    (avail, used)
}

/// Emits: descriptor `index` of the ring at `ring` = (`addr`, `len`, `flags`, `next`).
/// Leaves DS = 0.
pub fn emit_desc(
    a: &mut CodeAssembler,
    ring: u32,
    index: u32,
    addr: u32,
    len: u32,
    flags: u32,
    next: u32,
) -> Result<(), IcedError> {
    let at = 16 * index;
    a.mov(ax, ring >> 4)?;
    a.mov(ds, ax)?;
    a.mov(dword_ptr(at), addr)?;
    a.mov(dword_ptr(at + 4), 0u32)?;
    a.mov(dword_ptr(at + 8), len)?;
    a.mov(word_ptr(at + 12), flags)?;
    a.mov(word_ptr(at + 14), next)?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)
}

/// Emits: avail.ring[`slot`] = `head`, avail.idx = `slot` + 1 (for a ring of `size`).
/// Leaves DS = 0.
pub fn emit_publish(
    a: &mut CodeAssembler,
    ring: u32,
    size: u32,
    slot: u32,
    head: u32,
) -> Result<(), IcedError> {
    let (avail, _) = ring_offsets(size);
    a.mov(ax, ring >> 4)?;
    a.mov(ds, ax)?;
    a.mov(word_ptr(avail + 4 + 2 * slot), head)?;
    a.mov(word_ptr(avail + 2), slot + 1)?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)
}

/// Emits: select queue `queue` and give it the ring at `ring` (QUEUE_PFN).
pub fn emit_queue_pfn(a: &mut CodeAssembler, queue: u32, ring: u32) -> Result<(), IcedError> {
    a.mov(dx, IO_BASE + 0x0e)?;
    a.mov(ax, queue)?;
    a.out(dx, ax)?;
    a.mov(dx, IO_BASE + 0x08)?;
    a.mov(eax, ring >> 12)?;
    a.out(dx, eax)
}

/// Emits: DRIVER_OK (ACKNOWLEDGE | DRIVER | DRIVER_OK).
pub fn emit_status_driver_ok(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(dx, IO_BASE + 0x12)?;
    a.mov(al, 7u32)?;
    a.out(dx, al)
}

/// Emits: ring queue `queue`'s doorbell.
pub fn emit_notify(a: &mut CodeAssembler, queue: u32) -> Result<(), IcedError> {
    a.mov(dx, IO_BASE + 0x10)?;
    a.mov(ax, queue)?;
    a.out(dx, ax)
}

/// Emits: wait until used.idx of the ring at `ring` (of `size`) is `count`. Leaves DS = 0.
pub fn emit_wait_used_count(
    a: &mut CodeAssembler,
    ring: u32,
    size: u32,
    count: u32,
) -> Result<(), IcedError> {
    let (_, used) = ring_offsets(size);
    let mut poll = a.create_label();
    a.mov(ax, ring >> 4)?;
    a.mov(ds, ax)?;
    a.set_label(&mut poll)?;
    a.pause()?;
    a.cmp(word_ptr(used + 2), count)?;
    a.jne(poll)?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)
}

/// Emits: print the byte at physical `addr` (below 1 MiB) on COM1. Leaves DS = 0.
pub fn emit_print_byte_at(a: &mut CodeAssembler, addr: u32) -> Result<(), IcedError> {
    a.mov(ax, addr >> 4)?;
    a.mov(ds, ax)?;
    a.mov(al, byte_ptr(addr & 0xf))?;
    emit_putc(a)?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)
}

/// Emits: S5 through the PM block vmkit programs at 0x600 for firmware-less boots.
pub fn emit_s5_power_off(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut off = a.create_label();
    a.cli()?;
    a.set_label(&mut off)?;
    a.mov(ax, 0x2000u32)?;
    a.mov(dx, 0x604u32)?;
    a.out(dx, ax)?;
    a.hlt()?;
    a.jmp(off)
}
