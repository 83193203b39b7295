//! Coalesced PIO for port 0x80: POST writes KVM queues instead of exiting still reach the
//! `port80` device, all of them and in order, before any later exit is handled.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vmkit_vmm::builder::start_pc;
use vmkit_vmm::cli::{FlatMode as CliFlatMode, FlatOption, Options};
use vmkit_vmm::{ExitReason, RunOptions};

/// More writes than the ring's ~170 slots, so KVM also exits on a full ring.
const WRITES: u32 = 1000;

#[test]
fn post_writes_reach_the_port80_device_in_order_and_none_is_lost() {
    require_kvm!();
    // Writes 1, 2, .., WRITES (low byte) to port 0x80, reads the port back (the last value
    // written) and exits with it through isa-debug-exit.
    let guest = real_mode_guest(|a| {
        let mut again = a.create_label();
        a.mov(ecx, 1u32)?;
        a.set_label(&mut again)?;
        a.mov(al, cl)?;
        a.out(0x80, al)?;
        a.inc(ecx)?;
        a.cmp(ecx, WRITES + 1)?;
        a.jne(again)?;
        a.mov(al, 0)?;
        a.in_(al, 0x80)?;
        emit_debug_exit(a)
    });
    let guest = guest_file("post", &guest);
    let options = Options {
        ram_size: 16 << 20,
        devices: vec!["isa-debug-exit".into()],
        flat: Some(FlatOption {
            path: guest,
            addr: ENTRY,
            entry: ENTRY,
            mode: CliFlatMode::Real,
        }),
        ..Options::default()
    };
    let boot = vmkit_vmm::builder::boot_source(&options).unwrap();
    let vmm = start_pc(&options, boot, RunOptions::default(), Vec::new()).unwrap();

    // The debug exit is itself an exit, so every queued write was delivered before it.
    let range = |stats: &vmkit_vmm::ExitStats, port: u64| {
        stats.pio.ranges.iter().find(|r| r.base == port).cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = vmm.exit_stats();
        if range(&stats, 0x501).is_some_and(|r| r.writes > 0) {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "the guest did not finish: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let post = range(&stats, 0x80).expect("port 0x80 in the bus stats");
    assert_eq!(post.writes, u64::from(WRITES), "every POST write delivered");
    assert_eq!(post.reads, 1);

    let kvm = vmkit_kvm::KvmSystem::open().unwrap();
    let coalescing = kvm.has(vmkit_kvm::kvm_ioctls::Cap::CoalescedMmio)
        && kvm.has(vmkit_kvm::kvm_ioctls::Cap::CoalescedPio);
    let io_out = stats.per_vcpu[0]
        .iter()
        .find(|(kind, _)| *kind == "io-out")
        .map_or(0, |(_, n)| *n);
    eprintln!("coalescing {coalescing}: {io_out} io-out exits for {WRITES} writes");
    if coalescing {
        // Only the full-ring writes (about one in 170) and the debug exit left the guest.
        assert!(
            io_out < u64::from(WRITES) / 10,
            "{io_out} io-out exits for {WRITES} coalesced writes"
        );
    } else {
        assert!(io_out > u64::from(WRITES), "{io_out}");
    }

    // The read saw the last write: the writes arrived in order.
    let last = WRITES & 0xff;
    assert_eq!(
        vmm.wait().unwrap(),
        ExitReason::DebugExit {
            status: (last << 1) | 1
        }
    );
}
