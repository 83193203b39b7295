//! A pretend machine for tests and examples: flat memory mapped one to one (or only through
//! page tables in it), vCPUs whose "execution" is scripted, and a log of what the stub asked
//! for.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{
    DebugRegisterKind, DebugRegisters, DebugVcpus, Error, Resume, SoftwareBreakpoint, StopEvent,
    X86SystemRegs, X86_64Regs,
};

/// Size of the mock's guest memory.
pub const MOCK_MEMORY: usize = 0x10000;

/// Shared guest memory of a [`MockVcpus`].
pub type MockMemory = Arc<Mutex<Vec<u8>>>;

/// A scripted [`DebugVcpus`]: a resume with a planted `int3` or an armed execute breakpoint
/// stops there at once (as if the code ran to it), a step advances RIP by one byte, and
/// `Continue` without breakpoints runs until [`DebugVcpus::pause_all`] (or until
/// [`MockVcpus::exit_after`]). Planted `int3`s stop a vCPU only in protected mode (CR0.PE),
/// as on nested KVM.
#[derive(Debug, Clone)]
pub struct MockVcpus {
    regs: Vec<X86_64Regs>,
    memory: MockMemory,
    translate: bool,
    debug: DebugRegisters,
    planted: Vec<SoftwareBreakpoint>,
    running: bool,
    pending: VecDeque<StopEvent>,
    exit_code: Option<u8>,
    log: Arc<Mutex<Vec<String>>>,
}

impl MockVcpus {
    /// `vcpus` stopped vCPUs in 32-bit protected mode without paging (CR0 0x11); vCPU `i`
    /// has RIP `0x1000 + 0x100 * i`, RAX `i`. Byte `i` of memory holds `i & 0xff`.
    pub fn new(vcpus: usize) -> Self {
        let regs = (0..vcpus)
            .map(|i| {
                let mut r = X86_64Regs::default();
                r.core.rip = 0x1000 + 0x100 * i as u64;
                r.core.eflags = 0x2;
                r.core.regs[0] = i as u64;
                r.system.cr0 = 0x11;
                r
            })
            .collect();
        let memory = (0..MOCK_MEMORY).map(|i| (i & 0xff) as u8).collect();
        Self {
            regs,
            memory: Arc::new(Mutex::new(memory)),
            translate: true,
            debug: [None; crate::MAX_DEBUG_REGISTERS],
            planted: Vec::new(),
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

    /// The guest memory (the handle stays valid after the mock moves into a server).
    pub fn memory(&self) -> MockMemory {
        Arc::clone(&self.memory)
    }

    /// Sets the system registers (CR0, CR3, ...) of every vCPU.
    pub fn with_system_registers(mut self, system: X86SystemRegs) -> Self {
        for regs in &mut self.regs {
            regs.system = system;
        }
        self
    }

    /// [`DebugVcpus::translate`] fails (as `KVM_TRANSLATE` can): the stub must walk the page
    /// tables itself.
    pub fn without_translate(mut self) -> Self {
        self.translate = false;
        self
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
                self.regs[vcpu].core.rip += 1;
                self.pending.push_back(StopEvent::Stepped { vcpu });
            }
            Resume::Continue => {
                self.note("continue".into());
                if let Some(planted) = self.planted.first() {
                    if self.regs[0].system.cr0 & 1 != 0 {
                        self.regs[0].core.rip = planted.addr;
                        self.pending
                            .push_back(StopEvent::SoftwareBreakpoint { vcpu: 0 });
                        return Ok(());
                    }
                }
                let hit = self.debug.iter().enumerate().find_map(|(slot, r)| {
                    r.filter(|r| r.kind == DebugRegisterKind::Execute)
                        .map(|r| (slot, r.addr))
                });
                if let Some((slot, addr)) = hit {
                    self.regs[0].core.rip = addr;
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

    fn read_registers(&mut self, vcpu: usize) -> Result<X86_64Regs, Error> {
        self.regs.get(vcpu).cloned().ok_or(Error::Vcpu {
            vcpu,
            what: "no such vCPU".into(),
        })
    }

    fn write_registers(&mut self, vcpu: usize, regs: &X86_64Regs) -> Result<(), Error> {
        self.note(format!("write registers {vcpu}"));
        *self.regs.get_mut(vcpu).ok_or(Error::Vcpu {
            vcpu,
            what: "no such vCPU".into(),
        })? = regs.clone();
        Ok(())
    }

    fn translate(&mut self, vcpu: usize, gva: u64) -> Result<Option<u64>, Error> {
        if !self.translate {
            return Err(Error::Vcpu {
                vcpu,
                what: "KVM_TRANSLATE: not in this mock".into(),
            });
        }
        Ok((gva < MOCK_MEMORY as u64).then_some(gva))
    }

    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(gpa) else {
            return false;
        };
        let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        match memory.get(start..start.saturating_add(buf.len())) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    fn write_physical(&mut self, gpa: u64, data: &[u8]) -> bool {
        let Ok(start) = usize::try_from(gpa) else {
            return false;
        };
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        match memory.get_mut(start..start.saturating_add(data.len())) {
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

    fn int3_breakpoints(&mut self, vcpu: usize) -> Result<bool, Error> {
        Ok(self.regs.get(vcpu).is_some_and(|r| r.system.cr0 & 1 != 0))
    }

    fn set_software_breakpoints(&mut self, planted: &[SoftwareBreakpoint]) -> Result<(), Error> {
        self.note(format!("int3s {}", planted.len()));
        self.planted = planted.to_vec();
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
