//! Structural checks of a descriptor chain before a device uses it, and the result the
//! devices give a chain that fails them.
//!
//! virtio-queue's [`DescriptorChain`] iterator ends a chain silently where it cannot go on:
//! after queue-size descriptors (a loop, or a chain longer than the queue), at a `next`
//! outside the table, at an unreadable descriptor or a bad indirect table, past 4 GiB in
//! total. [`check_chain`] tells such a cut chain from a complete one (its last descriptor
//! still has `VIRTQ_DESC_F_NEXT`) and also refuses zero-length descriptors, buffers not
//! wholly inside guest memory and device-readable descriptors after device-writable ones
//! (virtio 1.x 2.7.4.2). This crate's devices (and vmkit-block's and vmkit-net's) answer
//! a chain that fails with QEMU's `virtio_error`: the chain is not completed, the device
//! stops serving the queue, and the transport sets `NEEDS_RESET` and raises a configuration
//! interrupt ([`VirtioInterrupt::needs_reset`](crate::VirtioInterrupt::needs_reset)).
//! Where a request has a status byte the device can write (virtio-blk), request-level
//! errors (a short header, an out-of-range sector) are an error status instead.

use std::num::Wrapping;
use std::ops::Deref;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

/// Why a chain is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The head descriptor could not be read (or is an invalid indirect table).
    #[error("descriptor chain {head}: no readable descriptor")]
    Empty {
        /// The chain's head index.
        head: u16,
    },
    /// The chain was cut: a loop, more descriptors than the queue (or indirect table)
    /// holds, a `next` outside the table, a bad indirect table or more than 4 GiB.
    #[error("descriptor chain {head}: does not end within the queue (a loop, more than queue-size descriptors, next out of the table, a bad indirect table or over 4 GiB)")]
    Unterminated {
        /// The chain's head index.
        head: u16,
    },
    /// A descriptor of length 0.
    #[error("descriptor chain {head}: descriptor {position} has length 0")]
    ZeroLength {
        /// The chain's head index.
        head: u16,
        /// Position in the chain (0 = head).
        position: usize,
    },
    /// A buffer not wholly inside guest memory.
    #[error("descriptor chain {head}: buffer {addr:#x}+{len:#x} is not inside guest memory")]
    OutsideMemory {
        /// The chain's head index.
        head: u16,
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// A device-readable descriptor after a device-writable one.
    #[error("descriptor chain {head}: device-readable descriptor {position} follows a device-writable one")]
    ReadableAfterWritable {
        /// The chain's head index.
        head: u16,
        /// Position in the chain.
        position: usize,
    },
}

/// What a well-formed chain holds: bytes the device may read, bytes it may write, and its
/// descriptor count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainShape {
    /// Total length of the device-readable descriptors.
    pub readable: u64,
    /// Total length of the device-writable descriptors.
    pub writable: u64,
    /// Descriptors in the chain (an indirect table's, not the one pointing at it).
    pub descriptors: usize,
}

/// Checks `chain` (a clone is walked; the chain itself is not consumed).
pub fn check_chain<M, MM>(chain: &DescriptorChain<M>, mem: &MM) -> Result<ChainShape, ChainError>
where
    M: Deref<Target = MM> + Clone,
    MM: GuestMemory + ?Sized,
{
    let head = chain.head_index();
    let mut shape = ChainShape::default();
    let mut last_has_next = false;
    for (position, desc) in chain.clone().enumerate() {
        let (addr, len) = (desc.addr(), desc.len());
        if len == 0 {
            return Err(ChainError::ZeroLength { head, position });
        }
        let access = if desc.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if !GuestMemory::check_range(mem, GuestAddress(addr.0), len as usize, access) {
            return Err(ChainError::OutsideMemory {
                head,
                addr: addr.0,
                len,
            });
        }
        if desc.is_write_only() {
            shape.writable += u64::from(len);
        } else if shape.writable > 0 {
            return Err(ChainError::ReadableAfterWritable { head, position });
        } else {
            shape.readable += u64::from(len);
        }
        shape.descriptors += 1;
        last_has_next = desc.has_next();
    }
    if shape.descriptors == 0 {
        return Err(ChainError::Empty { head });
    }
    if last_has_next {
        return Err(ChainError::Unterminated { head });
    }
    Ok(shape)
}

/// Whether the driver's available index claims more entries than the queue holds (it moved
/// `avail.idx` more than queue-size past the device's position). virtio-queue then pops
/// nothing; the devices treat it as a malformed ring (QEMU: "Guest moved avail index").
pub fn avail_overrun<MM>(queue: &Queue, mem: &MM) -> bool
where
    MM: GuestMemory + ?Sized,
{
    queue
        .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .is_ok_and(|idx| (idx - Wrapping(queue.next_avail())).0 > queue.size())
}
