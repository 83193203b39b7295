//! Dispatch does not allocate: every kind of access, counted by a global allocator wrapper.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::Counting;
use vmkit_bus::{Dispatch, MmioBus, MmioRange, PioBus, PioRange};

/// Counts allocations made by threads that turned counting on.
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged,
// so the caller's obligations carry over exactly; counting touches only an atomic and a
// const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s size contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn dispatch_never_allocates() {
    let pio = PioBus::new();
    let mmio = MmioBus::new();
    for i in 0..16u16 {
        let device = Arc::new(Mutex::new(Counting::default()));
        pio.insert(
            PioRange::new(0x100 + 8 * i, 8).unwrap(),
            "dev",
            device.clone(),
        )
        .unwrap();
        let base = 0x1000 * u64::from(i);
        mmio.insert(MmioRange::new(base, 0x1000).unwrap(), "dev", device)
            .unwrap();
    }
    let mut pio_handle = pio.handle();
    let mut mmio_handle = mmio.handle();
    let mut results = [Dispatch::Handled; 16];
    let mut run = || {
        let mut data = [0u8; 8];
        let mut odd = [0u8; 3];
        results = [
            pio.read(0x104, &mut data[..1]),
            pio.write(0x180, &data[..2]),
            pio.read(0x17F, &mut data[..4]),
            pio.write(0x100, &odd),
            pio_handle.read(0x13C, &mut data[..4]),
            pio_handle.write(0xFFFF, &data[..4]),
            pio_handle.read(0x100, &mut odd),
            pio_handle.write(0x108, &data[..1]),
            mmio.read(0x1FFC, &mut data),
            mmio.write(0x10_0000, &data[..4]),
            mmio.read(0xFFF8, &mut data),
            mmio.write(0x0, &[]),
            mmio_handle.read(u64::MAX - 3, &mut data),
            mmio_handle.write(0x2000, &data[..2]),
            mmio_handle.read(0x3FFE, &mut data[..4]),
            mmio_handle.write(0x2000, &odd),
        ];
    };
    // The first dispatch on a thread may register that thread with arc-swap (once).
    run();
    let allocations = allocations_during(&mut run);
    assert_eq!(allocations, 0);
    // The probe itself sees allocations.
    assert_eq!(
        allocations_during(|| drop(std::hint::black_box(vec![1u8]))),
        1
    );
    // Every kind of outcome was exercised.
    for kind in [
        Dispatch::Handled,
        Dispatch::Unassigned,
        Dispatch::Split,
        Dispatch::InvalidSize,
    ] {
        assert!(results.contains(&kind), "{kind:?} not exercised");
    }
}
