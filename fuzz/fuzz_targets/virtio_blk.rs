//! virtio-blk request parsing: arbitrary chains (header, data, status) against a 64 KiB
//! memory-backed disk, with discard and write-zeroes offered.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmkit_block::{BlkOptions, MemoryBackend, VirtioBlk};
use vmkit_fuzz::{run_session, transport, VirtioSession};

fuzz_target!(|input: (bool, VirtioSession)| {
    let (read_only, session) = input;
    let mut disk = MemoryBackend::new(0x1_0000);
    if read_only {
        disk = disk.read_only();
    }
    let options = BlkOptions {
        discard: true,
        write_zeroes: true,
        config_wce: true,
        pool_threads: 1,
        ..BlkOptions::default()
    };
    let blk = VirtioBlk::with_options(Arc::new(disk), options).unwrap();
    let (mut dev, mem) = transport(Box::new(blk));
    run_session(&mut dev, &mem, &session, |_| {});
});
