//! virtio-net request parsing: arbitrary transmit chains and receive buffers, frames from
//! the host (a datagram socket backend), the control queue if offered.
#![no_main]
use std::os::unix::net::UnixDatagram;

use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{run_session, transport, VirtioSession};
use vmkit_net::{DatagramBackend, VirtioNet};

fuzz_target!(|input: (bool, VirtioSession)| {
    let (mrg, session) = input;
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let backend = DatagramBackend::new(theirs).unwrap();
    let net = VirtioNet::new(Box::new(backend), [0x52, 0x54, 0, 0x12, 0x34, 0x56])
        .unwrap()
        .with_mrg_rxbuf(mrg);
    let (mut dev, mem) = transport(Box::new(net));
    let mut buf = vec![0u8; 70000];
    run_session(&mut dev, &mem, &session, |round| {
        while ours.recv(&mut buf).is_ok() {}
        for (_, frame) in round.data.iter().take(2) {
            let _ = ours.send(frame);
        }
    });
});
