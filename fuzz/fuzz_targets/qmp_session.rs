//! QMP: bytes from a client (in arbitrary chunks) through the JSON splitter and the session
//! (negotiation, every command, bad arguments) against a fake machine; replies encoded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_qmp::{
    encode_message, CpuInfoFast, CpuProps, JsonSplitter, Output, QmpBackend, QmpError, QmpSession,
    RunState, StatusInfo,
};

struct FakeVm(RunState);

impl QmpBackend for FakeVm {
    fn query_status(&mut self) -> StatusInfo {
        StatusInfo::new(self.0)
    }
    fn stop(&mut self) -> Result<(), QmpError> {
        self.0 = RunState::Paused;
        Ok(())
    }
    fn cont(&mut self) -> Result<(), QmpError> {
        self.0 = RunState::Running;
        Ok(())
    }
    fn system_reset(&mut self) -> Result<(), QmpError> {
        Ok(())
    }
    fn quit(&mut self) {}
    fn query_cpus_fast(&mut self) -> Vec<CpuInfoFast> {
        vec![CpuInfoFast {
            cpu_index: 0,
            qom_path: "/machine/unattached/device[0]".into(),
            thread_id: 1,
            props: CpuProps::default(),
        }]
    }
}

fuzz_target!(|input: (u8, Vec<Vec<u8>>)| {
    let (negotiate, chunks) = input;
    let mut session = QmpSession::new(4096);
    let mut vm = FakeVm(RunState::Running);
    let mut out = Vec::new();
    if negotiate & 1 == 1 {
        session.handle_input(br#"{"execute":"qmp_capabilities"}"#, &mut vm, &mut out);
    }
    let mut splitter = JsonSplitter::new(512);
    for chunk in &chunks {
        session.handle_input(chunk, &mut vm, &mut out);
        splitter.feed(chunk);
        while splitter.next_frame().is_some() {}
        for o in out.drain(..) {
            if let Output::Reply(v) = o {
                let _ = encode_message(&v);
            }
        }
    }
    let _ = (session.pending_input(), session.is_negotiated());
});
