//! vmkit: reusable crates for building KVM virtual machine monitors on x86-64.
//!
//! This facade re-exports every vmkit crate under a short name, for VMMs that want the whole
//! kit; a VMM that needs one layer depends on that crate alone (`cargo tree -p vmkit-serial`
//! shows how little it pulls in).
//!
//! | module | crate | what it owns |
//! |---|---|---|
//! | [`kvm`] | vmkit-kvm | system / VM / vCPU handles, the exit enum, kicks, the KVM memory listener |
//! | [`memory`] | vmkit-memory | guest RAM, the region tree, flat views, memory listeners, dirty bitmaps |
//! | [`bus`] | vmkit-bus | PIO and MMIO buses: the path from an exit to a device |
//! | [`hw`] | vmkit-hw | interrupt-line and clock traits shared by the device models |
//! | [`serial`] | vmkit-serial | the 16550A UART |
//! | [`i8259`] | vmkit-i8259 | the 8259A PIC pair |
//! | [`i8254`] | vmkit-i8254 | the 8254 PIT |
//! | [`pcglue`] | vmkit-pcglue | i8042 reset, POST port, CMOS/RTC, debug-exit |
//! | [`pc`] | vmkit-pc | the pc machine: memory map and e820, `-bios` firmware mapping, boot CPU state |
//! | [`isa`] | vmkit-isa | ISA device types, IRQ routing for both interrupt models, device timers |
//! | [`vmm`] | vmkit-vmm | vCPU threads, run states, the main loop, the `vmkit` binary |
//! | [`object`] | vmkit-object | QOM-like types, properties, the composition tree, realize |
//! | [`pci`] | vmkit-pci | PCI config space, BARs, the bus and configuration mechanism #1 |
//! | [`piix`] | vmkit-piix | the i440FX / PIIX3 / PIIX4 PM chipset functions |
//! | [`fwcfg`] | vmkit-fwcfg | QEMU's fw_cfg device (items, files, DMA) and table-loader |
//! | [`acpi`] | vmkit-acpi | the pc machine's ACPI and MP tables (acpi_tables) |
//! | [`chardev`] | vmkit-chardev | character backends: null, stdio, file, socket, pty |
//! | [`cpu`] | vmkit-cpu | guest CPUID, `-cpu` feature edits, boot MSRs |
//! | [`kernel`] | vmkit-kernel | bzImage header, host-side payload decompression |
//! | [`qmp`] | vmkit-qmp | the QMP protocol and commands over a backend trait |
//!
//! ```
//! assert_eq!(vmkit::serial::COM1_BASE, 0x3f8);
//! assert_eq!(vmkit::i8259::PIC_MASTER_BASE, 0x20);
//! ```
#![forbid(unsafe_code)]

pub use vmkit_acpi as acpi;
pub use vmkit_bus as bus;
pub use vmkit_chardev as chardev;
pub use vmkit_cpu as cpu;
pub use vmkit_fwcfg as fwcfg;
pub use vmkit_hw as hw;
pub use vmkit_i8254 as i8254;
pub use vmkit_i8259 as i8259;
pub use vmkit_isa as isa;
pub use vmkit_kernel as kernel;
pub use vmkit_kvm as kvm;
pub use vmkit_memory as memory;
pub use vmkit_object as object;
pub use vmkit_pc as pc;
pub use vmkit_pcglue as pcglue;
pub use vmkit_pci as pci;
pub use vmkit_piix as piix;
pub use vmkit_qmp as qmp;
pub use vmkit_serial as serial;
pub use vmkit_vmm as vmm;
