//! Debian's SeaBIOS, unmodified, on vmkit's pc machine: it must find the machine QEMU's pc
//! is (fw_cfg, the i440FX/PIIX PCI functions, PAM shadowing, PIIX4 PM, ACPI tables) and
//! reach its boot step, logging through isa-debugcon at 0x402 as under QEMU.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const SEABIOS: &str = "/usr/share/seabios/bios.bin";

/// Runs SeaBIOS until its log (or the file `until_in`, when given) contains `until` (or
/// `limit` passes); returns the log and the time from start until `until` appeared.
fn boot_seabios(
    name: &str,
    extra: &[&str],
    until: &str,
    until_in: Option<&std::path::Path>,
    limit: Duration,
) -> (String, Option<Duration>) {
    let log = guest_file(name, b"");
    let mut command = vmkit();
    command
        .args([
            "-bios",
            SEABIOS,
            "-m",
            "128",
            "-serial",
            "none",
            "-no-reboot",
        ])
        .arg("-chardev")
        .arg(format!("file,id=d,path={}", log.display()))
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=d"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command.spawn().expect("start vmkit");
    let mut reached = None;
    while start.elapsed() < limit {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let watched = until_in.map_or_else(
            || text.clone(),
            |path| std::fs::read_to_string(path).unwrap_or_default(),
        );
        if watched.contains(until) {
            reached = Some(start.elapsed());
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("vmkit ended early ({status}); SeaBIOS log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    (std::fs::read_to_string(&log).unwrap_or_default(), reached)
}

fn seabios_present() -> bool {
    if std::path::Path::new(SEABIOS).exists() {
        return true;
    }
    assert!(
        std::env::var("VMKIT_REQUIRE_KVM").as_deref() != Ok("1"),
        "{SEABIOS} is missing: install Debian's seabios package (the test command does)"
    );
    eprintln!("SKIPPED seabios: {SEABIOS} is missing (apt-get install seabios)");
    false
}

#[test]
fn debian_seabios_finds_qemus_pc_and_reaches_its_boot_step() {
    require_kvm!();
    if !seabios_present() {
        return;
    }
    let (log, reached) = boot_seabios(
        "seabios-1cpu",
        &[],
        "Booting from ",
        None,
        Duration::from_secs(60),
    );
    assert!(
        reached.is_some(),
        "SeaBIOS did not reach its boot step; log:\n{log}"
    );
    for line in [
        "Running on QEMU (i440fx)",
        "Found QEMU fw_cfg",
        "QEMU fw_cfg DMA interface supported",
        "qemu/e820: addr 0x0000000000000000 len 0x0000000008000000 [RAM]",
        "Moving pm_base to 0x600",
        "Found 4 PCI devices (max PCI bus is 00)",
        "PCI: init bdf=00:00.0 id=8086:1237",
        "PCI: init bdf=00:01.0 id=8086:7000",
        "PCI: init bdf=00:01.1 id=8086:7010",
        "PCI: init bdf=00:01.3 id=8086:7113",
        "Found 1 cpu(s) max supported 1 cpu(s)",
        "Booting from ",
    ] {
        assert!(
            log.contains(line),
            "missing {line:?} in the SeaBIOS log:\n{log}"
        );
    }
    assert!(!log.contains("Unable to unlock ram"), "{log}");
    assert!(!log.contains("No space for init relocation"), "{log}");
    eprintln!("SeaBIOS reached its boot step in {:?}", reached.unwrap());
}

#[test]
fn seabios_counts_every_vcpu_from_fw_cfg() {
    require_kvm!();
    if !seabios_present() {
        return;
    }
    let (log, reached) = boot_seabios(
        "seabios-2cpu",
        &["-smp", "2"],
        "Found 2 cpu(s)",
        None,
        Duration::from_secs(60),
    );
    assert!(
        reached.is_some(),
        "SeaBIOS did not start the second CPU; log:\n{log}"
    );
    assert!(
        log.contains("Found 2 cpu(s) max supported 2 cpu(s)"),
        "{log}"
    );
}

/// Reads a little-endian u32 of guest memory.
fn guest_u32(vm: &vmkit_vmm::runtime::VmmHandle, gpa: u64) -> u32 {
    let mut bytes = [0u8; 4];
    assert!(
        vm.read_guest_memory(gpa, &mut bytes),
        "{gpa:#x} is not memory"
    );
    u32::from_le_bytes(bytes)
}

fn guest_signature(vm: &vmkit_vmm::runtime::VmmHandle, gpa: u64) -> String {
    let mut bytes = [0u8; 4];
    assert!(
        vm.read_guest_memory(gpa, &mut bytes),
        "{gpa:#x} is not memory"
    );
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn seabios_installs_vmkits_acpi_tables_through_the_table_loader() {
    require_kvm!();
    if !seabios_present() {
        return;
    }
    let log = guest_file("seabios-acpi", b"");
    let mut options = vmkit_vmm::cli::Options {
        bios: Some(SEABIOS.into()),
        serial: vmkit_vmm::cli::SerialOption::None,
        ..Default::default()
    };
    options.chardevs.push(
        vmkit_chardev::ChardevSpec::parse(&format!("file,id=d,path={}", log.display())).unwrap(),
    );
    options
        .devices
        .push("isa-debugcon,iobase=0x402,chardev=d".into());
    let boot = vmkit_vmm::builder::boot_source(&options).unwrap();
    let vmm = vmkit_vmm::builder::start_pc(&options, boot, Default::default(), Vec::new()).unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Booting from ")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "SeaBIOS did not reach its boot step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let vm = vmm.handle();
    // The RSDP, where the table loader's FSEG allocation put it (as Linux scans for it).
    let rsdp = (0xe_0000u64..0x10_0000)
        .step_by(16)
        .find(|&gpa| {
            let mut sig = [0u8; 8];
            vm.read_guest_memory(gpa, &mut sig) && &sig == b"RSD PTR "
        })
        .expect("an RSDP in 0xE0000-0xFFFFF");
    let mut rsdp_bytes = [0u8; 20];
    assert!(vm.read_guest_memory(rsdp, &mut rsdp_bytes));
    assert_eq!(
        rsdp_bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)),
        0,
        "RSDP checksum"
    );
    let rsdt = u64::from(guest_u32(&vm, rsdp + 16));
    assert_eq!(guest_signature(&vm, rsdt), "RSDT");
    let len = u64::from(guest_u32(&vm, rsdt + 4));
    let mut table = vec![0u8; len as usize];
    assert!(vm.read_guest_memory(rsdt, &mut table));
    assert_eq!(
        table.iter().fold(0u8, |a, b| a.wrapping_add(*b)),
        0,
        "RSDT checksum"
    );
    let signatures: Vec<String> = (0..(len - 36) / 4)
        .map(|i| guest_signature(&vm, u64::from(guest_u32(&vm, rsdt + 36 + 4 * i))))
        .collect();
    assert!(signatures.contains(&"FACP".to_string()), "{signatures:?}");
    assert!(signatures.contains(&"APIC".to_string()), "{signatures:?}");
    let facp = u64::from(guest_u32(
        &vm,
        rsdt + 36 + 4 * signatures.iter().position(|s| s == "FACP").unwrap() as u64,
    ));
    assert_eq!(
        guest_signature(&vm, u64::from(guest_u32(&vm, facp + 40))),
        "DSDT"
    );
    assert_eq!(
        guest_u32(&vm, facp + 56),
        0x600,
        "PM1a_EVT_BLK at SeaBIOS's pm_base"
    );
    assert_eq!(guest_u32(&vm, facp + 76), 0x608, "PM_TMR_BLK");
    vmm.stop("test done");
    let _ = vmm.wait();
}

/// A minimal bzImage: boot sector, two setup sectors whose code (reached through the jump
/// at 0x200, where the option ROM enters) prints the command line it finds at the setup
/// header's `cmd_line_ptr` to COM1 and halts; and a protected-mode part of zeros.
fn tiny_bzimage() -> Vec<u8> {
    let mut k = vec![0u8; 0x3000];
    k[0x1f1] = 2; // setup_sects
    k[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    k[0x200..0x202].copy_from_slice(&[0xeb, 0x7e]); // jmp 0x280
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes()); // protocol 2.15
    k[0x211] = 0x01; // LOADED_HIGH
    k[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
                                                                    // cs = setup segment + 0x20, so the header's cmd_line_ptr (setup offset 0x228) is at
                                                                    // cs:0x28. Load it, turn the linear address into ds:si (ds = addr >> 4, si = addr & 15).
    #[rustfmt::skip]
    let code: &[u8] = &[
        0x66, 0x2e, 0xa1, 0x28, 0x00,       // mov eax, cs:[0x28]
        0x66, 0x89, 0xc6,                   // mov esi, eax
        0x66, 0xc1, 0xe8, 0x04,             // shr eax, 4
        0x8e, 0xd8,                         // mov ds, ax
        0x83, 0xe6, 0x0f,                   // and si, 15
        0xba, 0xf8, 0x03,                   // mov dx, 0x3f8
        0xac,                               // next: lodsb
        0x84, 0xc0,                         // test al, al
        0x74, 0x03,                         // jz done
        0xee,                               // out dx, al
        0xeb, 0xf8,                         // jmp next
        0xf4,                               // done: hlt
        0xeb, 0xfd,                         // jmp done
    ];
    k[0x280..0x280 + code.len()].copy_from_slice(code);
    k
}

#[test]
fn seabios_boots_a_kernel_from_fw_cfg_through_qemus_option_rom() {
    require_kvm!();
    if !seabios_present() {
        return;
    }
    let kernel = guest_file("fwcfg-bzimage", &tiny_bzimage());
    let serial = guest_file("fwcfg-serial", b"");
    let (log, reached) = boot_seabios(
        "seabios-kernel",
        &[
            "-kernel",
            kernel.to_str().unwrap(),
            "-append",
            "vmkit fw_cfg kernel boot",
            "-serial",
            &format!("file:{}", serial.display()),
        ],
        "vmkit fw_cfg kernel boot",
        Some(&serial),
        Duration::from_secs(90),
    );
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        reached.is_some(),
        "the setup code never printed; COM1: {text:?}; log:\n{log}"
    );
    assert!(log.contains("genroms/linuxboot_dma.bin"), "{log}");
    // SeaBIOS's serial console writes first; the setup code's line ends the output.
    assert!(
        text.contains("Booting from ROM") && text.ends_with("vmkit fw_cfg kernel boot"),
        "COM1 output: {text:?}"
    );
}
