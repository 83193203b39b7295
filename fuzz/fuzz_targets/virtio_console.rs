//! virtio-console request handling: arbitrary receive and transmit chains, host input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{run_session, transport, Sink, VirtioSession};
use vmkit_virtio::Console;

fuzz_target!(|session: VirtioSession| {
    let console = Console::with_input_capacity(Sink::default(), 64).unwrap();
    let input = console.input();
    let (mut dev, mem) = transport(Box::new(console));
    run_session(&mut dev, &mem, &session, |round| {
        if let Some((_, bytes)) = round.data.first() {
            input.enqueue(bytes);
        }
    });
});
