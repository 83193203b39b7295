//! virtio-rng request handling: arbitrary descriptor chains in guest memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{run_session, transport, VirtioSession};
use vmkit_virtio::Rng;

fuzz_target!(|session: VirtioSession| {
    let rng = Rng::with_source(|b: &mut [u8]| {
        b.fill(7);
        Ok(())
    })
    .with_max_request(0x1000);
    let (mut dev, mem) = transport(Box::new(rng));
    run_session(&mut dev, &mem, &session, |_| {});
});
