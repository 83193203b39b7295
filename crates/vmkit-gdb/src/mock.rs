//! A pretend machine for tests and examples: flat memory mapped one to one, vCPUs whose
//! "execution" is scripted, and a log of what the stub asked for.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{
    DebugRegisterKind, DebugRegisters, DebugVcpus, Error, Resume, StopEvent, X86_64CoreRegs,
};

/// Size of the mock's guest memory.
pub const MOCK_MEMORY: usize = 0x10000;

/// A scripted [`DebugVcpus`]: a resume with an armed execute breakpoint stops there at once
/// (as if the code ran to it), a step advances RIP by one byte, and `Continue` without
/// breakpoints runs until [`DebugVcpus::pause_all`] (or until [`MockVcpus::exit_after`]).
#[derive(Debug, Clone)]
pub struct MockVcpus {
    regs: Vec<X86_64CoreRegs>,
    memory: Vec<u8>,
    debug: DebugRegisters,
    running: bool,
    pending: VecDeque<StopEvent>,
    exit_code: Option<u8>,
    log: Arc<Mutex<Vec<String>>>,
}

impl MockVcpus {
    /// `vcpus` stopped vCPUs; vCPU `i` has RIP `0x1000 + 0x100 * i`, RAX `i`.
    pub fn new(vcpus: usize) -> Self {
        let regs = (0..vcpus)
            .map(|i| {
                let mut r = X86_64CoreRegs {
                    rip: 0x1000 + 0x100 * i as u64,
                    eflags: 0x2,
                    ..Default::default()
                };
                r.regs[0] = i as u64;
                r
            })
            .collect();
        let memory = (0..MOCK_MEMORY).map(|i| (i & 0xff) as u8).collect();
        Self {
            regs,
            memory,
            debug: [None; crate::MAX_DEBUG_REGISTERS],
            running: false,
            pending: VecDeque::new(),
            exit_code: None,
            log: Arc::default(),
        }
    }

    /// Everything the stub asked for so far, in order (`pause`, `continue`, `step 0`,
    /// `detach`, ...); the handle stays valid after the mock moves into a server.
    pub fn log(&self) -> Arc<Mutex<Vec<String>>> {
        Arc::clone(&self.log)
    }

    fn note(&self, what: String) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    /// The next `Continue` with no breakpoint ends the machine with `code`.
    pub fn exit_after(mut self, code: u8) -> Self {
        self.exit_code = Some(code);
        self
    }
}

impl DebugVcpus for MockVcpus {
    fn vcpu_count(&self) -> usize {
        self.regs.len()
    }

    fn pause_all(&mut self) -> Result<(), Error> {
        self.running = false;
        self.note("pause".into());
        Ok(())
    }

    fn resume(&mut self, how: Resume) -> Result<(), Error> {
        self.running = true;
        match how {
            Resume::Step(vcpu) => {
                self.note(format!("step {vcpu}"));
                self.regs[vcpu].rip += 1;
                self.pending.push_back(StopEvent::Stepped { vcpu });
            }
            Resume::Continue => {
                self.note("continue".into());
                let hit = self.debug.iter().enumerate().find_map(|(slot, r)| {
                    r.filter(|r| r.kind == DebugRegisterKind::Execute)
                        .map(|r| (slot, r.addr))
                });
                if let Some((slot, addr)) = hit {
                    self.regs[0].rip = addr;
                    self.pending
                        .push_back(StopEvent::DebugRegister { vcpu: 0, slot });
                } else if let Some((slot, _)) =
                    self.debug.iter().enumerate().find(|(_, r)| r.is_some())
                {
                    self.pending
                        .push_back(StopEvent::DebugRegister { vcpu: 0, slot });
                } else if let Some(code) = self.exit_code {
                    self.pending.push_back(StopEvent::Exited(code));
                }
            }
        }
        Ok(())
    }

    fn wait_for_stop(&mut self, timeout: Duration) -> Option<StopEvent> {
        match self.pending.pop_front() {
            Some(event) => {
                self.running = false;
                Some(event)
            }
            None => {
                std::thread::sleep(timeout);
                None
            }
        }
    }

    fn read_registers(&mut self, vcpu: usize) -> Result<X86_64CoreRegs, Error> {
        self.regs.get(vcpu).cloned().ok_or(Error::Vcpu {
            vcpu,
            what: "no such vCPU".into(),
        })
    }

    fn write_registers(&mut self, vcpu: usize, regs: &X86_64CoreRegs) -> Result<(), Error> {
        self.note(format!("write registers {vcpu}"));
        *self.regs.get_mut(vcpu).ok_or(Error::Vcpu {
            vcpu,
            what: "no such vCPU".into(),
        })? = regs.clone();
        Ok(())
    }

    fn translate(&mut self, _vcpu: usize, gva: u64) -> Result<Option<u64>, Error> {
        Ok((gva < MOCK_MEMORY as u64).then_some(gva))
    }

    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        let start = gpa as usize;
        match self.memory.get(start..start + buf.len()) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    fn write_physical(&mut self, gpa: u64, data: &[u8]) -> bool {
        let start = gpa as usize;
        match self.memory.get_mut(start..start + data.len()) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    fn set_debug_registers(&mut self, registers: &DebugRegisters) -> Result<(), Error> {
        self.note(format!(
            "debug registers {}",
            registers.iter().filter(|r| r.is_some()).count()
        ));
        self.debug = *registers;
        Ok(())
    }

    fn detach(&mut self) {
        self.note("detach".into());
        self.debug = [None; crate::MAX_DEBUG_REGISTERS];
        self.running = true;
    }

    fn kill(&mut self) {
        self.note("kill".into());
    }
}
