//! The exit path allocates nothing: the process makes as many heap allocations for a guest
//! taking 20 200 port-write exits as for one taking 200 (building and tearing down the VM
//! allocates the same in both runs).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use vmkit_pc::{BootSource, FlatMode};
use vmkit_vmm::builder::start_pc;
use vmkit_vmm::cli::{Options, SerialOption};
use vmkit_vmm::{ExitReason, RunOptions};

struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments, so the
// GlobalAlloc contract holds exactly as for `System`; counting has no effect on memory.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged from our caller, who upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; `ptr`/`layout` come from this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// `count` writes to port 0x81 (unassigned: each one an exit), then debug-exit.
fn port_writer(count: u16) -> Vec<u8> {
    real_mode_guest(|a| {
        let mut again = a.create_label();
        a.mov(cx, count as u32)?;
        a.set_label(&mut again)?;
        // Not 0x80: POST writes are coalesced (no exit) where KVM can.
        a.out(0x81, al)?;
        a.loop_(again)?;
        a.mov(al, 1)?;
        emit_debug_exit(a)
    })
}

fn allocations_for(count: u16) -> u64 {
    let options = Options {
        ram_size: 16 << 20,
        serial: SerialOption::None,
        devices: vec!["isa-debug-exit".into()],
        ..Options::default()
    };
    let boot = BootSource::Flat {
        image: port_writer(count),
        addr: ENTRY,
        entry: ENTRY,
        mode: FlatMode::Real,
    };
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let vmm = start_pc(&options, boot, RunOptions::default(), Vec::new()).unwrap();
    let stats_vmm = vmm.controller().wait_until_ended();
    let outs = vmm.exit_stats().per_vcpu[0]
        .iter()
        .find(|(kind, _)| *kind == "io-out")
        .map_or(0, |(_, n)| *n);
    assert_eq!(vmm.wait().unwrap(), ExitReason::DebugExit { status: 3 });
    assert_eq!(stats_vmm, ExitReason::DebugExit { status: 3 });
    assert!(outs > u64::from(count), "{outs} port writes for {count}");
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn allocations_do_not_grow_with_exits() {
    require_kvm!();
    // Warm up one-time allocations (signal handlers, lazy statics).
    allocations_for(10);
    let few = allocations_for(200);
    let many = allocations_for(20_200);
    eprintln!("allocations: {few} for 200 exits, {many} for 20200 exits");
    // The main loop's 100 ms epoll timeouts may add a handful in the longer run.
    assert!(
        many <= few + 20,
        "{} extra allocations for 20000 extra exits",
        many.saturating_sub(few)
    );
}
