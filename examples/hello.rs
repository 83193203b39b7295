//! The smallest vmkit VMM: guest RAM from an address space, one vCPU, a 16550A on COM1 on the
//! port bus, and a built-in real-mode guest that prints a greeting through the UART and halts.
//!
//! Run: `cargo run --release --example hello`

use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};
use vmkit::bus::PioBus;
use vmkit::bus::PioRange;
use vmkit::hw::{MonotonicClock, NullLine};
use vmkit::kvm::{KvmMemoryListener, KvmSystem, VcpuExit};
use vmkit::memory::AddressSpace;
use vmkit::serial::{Serial, COM1_BASE, PORT_RANGE_LEN};

const ENTRY: u64 = 0x1000;
const MESSAGE: u64 = 0x1100;

/// 16-bit code at 0x1000: print the NUL-terminated string at 0x1100 on COM1, polling LSR.THRE
/// before each byte as a BIOS or an early console does, then halt.
const GUEST: &[u8] = &[
    0xbe, 0x00, 0x11, //       mov si, 0x1100
    0xac, //             next: lodsb
    0x84, 0xc0, //             test al, al
    0x74, 0x12, //             jz done
    0x88, 0xc3, //             mov bl, al
    0xba, 0xfd, 0x03, //       mov dx, 0x3fd      ; LSR
    0xec, //             wait: in al, dx
    0xa8, 0x20, //             test al, 0x20      ; THRE
    0x74, 0xfb, //             jz wait
    0xba, 0xf8, 0x03, //       mov dx, 0x3f8      ; THR
    0x88, 0xd8, //             mov al, bl
    0xee, //                   out dx, al
    0xeb, 0xe9, //             jmp next
    0xf4, //             done: hlt
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Memory: 1 MiB of RAM at guest address 0, turned into KVM slots by the listener.
    let kvm = KvmSystem::open()?;
    let vm = Arc::new(kvm.create_vm()?);
    let mut memory = AddressSpace::new("system");
    let ram = memory.new_ram("pc.ram", 1 << 20)?;
    memory.add_subregion(memory.root(), 0, ram)?;
    // SAFETY: the listener is only ever driven by this address space.
    let listener = unsafe { KvmMemoryListener::new(Arc::clone(&vm), u32::MAX) };
    memory.register_listener(Box::new(listener))?;

    let guest_memory = memory.memory_snapshot();
    guest_memory.write_slice(GUEST, GuestAddress(ENTRY))?;
    guest_memory.write_slice(b"Hello from a vmkit guest!\n\0", GuestAddress(MESSAGE))?;

    // One vCPU in real mode at 0000:1000.
    let mut vcpu = vm.create_vcpu(0)?;
    let mut sregs = vcpu.sregs()?;
    for segment in [&mut sregs.cs, &mut sregs.ds, &mut sregs.es, &mut sregs.ss] {
        segment.base = 0;
        segment.selector = 0;
    }
    vcpu.set_sregs(&sregs)?;
    let mut regs = vcpu.regs()?;
    regs.rip = ENTRY;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs)?;

    // COM1 on the port bus (a polling guest needs no interrupt line). Unassigned ports read
    // all ones and swallow writes, as on a PC.
    let com1 = Serial::new(NullLine, MonotonicClock::new(), std::io::stdout());
    let pio = PioBus::new();
    pio.insert(
        PioRange::new(COM1_BASE, PORT_RANGE_LEN)?,
        "com1",
        Arc::new(Mutex::new(com1)),
    )?;
    // The vCPU thread's own view of the bus: dispatch without touching shared counters.
    let mut ports = pio.handle();

    loop {
        match vcpu.run()? {
            // `rep outs`/`rep ins` hand over several transfers of `size` bytes at once.
            VcpuExit::IoOut {
                port, size, data, ..
            } => {
                for transfer in data.chunks(usize::from(size)) {
                    ports.write(port, transfer);
                }
            }
            VcpuExit::IoIn {
                port, size, data, ..
            } => {
                for transfer in data.chunks_mut(usize::from(size)) {
                    ports.read(port, transfer);
                }
            }
            VcpuExit::Hlt => break,
            other => return Err(format!("unexpected exit: {other:?}").into()),
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}
