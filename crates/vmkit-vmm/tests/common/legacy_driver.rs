//! A real-mode legacy (transitional) virtio driver's building blocks, for the function at
//! `SLOT.0` with its legacy I/O BAR placed at [`IO_BASE`] and rings of [`QUEUE_SIZE`]
//! entries (the layout QUEUE_PFN implies: 4096-byte alignment).

use super::*;

/// Where the guest puts the legacy I/O BAR.
pub const IO_BASE: u32 = 0xc000;
/// The queue size vmkit's virtio devices offer (256).
pub const QUEUE_SIZE: u32 = 256;

/// Offset of the used ring in a legacy ring of [`QUEUE_SIZE`] entries.
pub fn used_offset() -> u32 {
    (16 * QUEUE_SIZE + 6 + 2 * QUEUE_SIZE + 4095) & !4095
}

/// Emits: check that `slot`.0 is 1af4:`device` (print 'V'), put its legacy BAR at
/// [`IO_BASE`] with I/O and bus mastering on, set ACKNOWLEDGE | DRIVER and accept no
/// features.
pub fn emit_probe(a: &mut CodeAssembler, slot: u32, device: u32) -> Result<(), IcedError> {
    emit_legacy_virtio_probe(a, slot, device, IO_BASE)?;
    a.mov(dx, IO_BASE + 0x04)?;
    a.xor(eax, eax)?;
    a.out(dx, eax)
}

/// Emits: give queue `queue` the ring at `ring` (QUEUE_SEL, QUEUE_PFN), no buffers.
pub fn emit_queue(a: &mut CodeAssembler, queue: u32, ring: u32) -> Result<(), IcedError> {
    a.mov(dx, IO_BASE + 0x0e)?;
    a.mov(ax, queue)?;
    a.out(dx, ax)?;
    a.mov(dx, IO_BASE + 0x08)?;
    a.mov(eax, ring >> 12)?;
    a.out(dx, eax)
}

/// Emits: one descriptor (`buffer`, `len`, `flags`) as entry 0 of the ring at `ring`,
/// published in the avail ring, then the ring given to queue `queue`. Leaves DS = 0.
pub fn emit_queue_with_one_buffer(
    a: &mut CodeAssembler,
    queue: u32,
    ring: u32,
    buffer: u32,
    len: u32,
    flags: u32,
) -> Result<(), IcedError> {
    let avail = 16 * QUEUE_SIZE;
    a.mov(ax, ring >> 4)?;
    a.mov(ds, ax)?;
    a.mov(dword_ptr(0), buffer)?;
    a.mov(dword_ptr(4), 0u32)?;
    a.mov(dword_ptr(8), len)?;
    a.mov(word_ptr(12), flags)?;
    a.mov(word_ptr(14), 0u32)?;
    a.mov(word_ptr(avail + 4), 0u32)?;
    a.mov(word_ptr(avail + 2), 1u32)?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)?;
    emit_queue(a, queue, ring)
}

/// Emits: wait until the used idx of the ring at `ring` is 1; leaves DS = ring's segment.
pub fn emit_wait_used(a: &mut CodeAssembler, ring: u32) -> Result<(), IcedError> {
    let mut poll = a.create_label();
    a.mov(ax, ring >> 4)?;
    a.mov(ds, ax)?;
    a.set_label(&mut poll)?;
    a.pause()?;
    a.cmp(word_ptr(used_offset() + 2), 1u32)?;
    a.jne(poll)
}

/// Emits: DRIVER_OK, then notify each of `queues`.
pub fn emit_driver_ok(a: &mut CodeAssembler, queues: &[u32]) -> Result<(), IcedError> {
    a.mov(dx, IO_BASE + 0x12)?;
    a.mov(al, 7u32)?;
    a.out(dx, al)?;
    for &queue in queues {
        a.mov(dx, IO_BASE + 0x10)?;
        a.mov(ax, queue)?;
        a.out(dx, ax)?;
    }
    Ok(())
}
