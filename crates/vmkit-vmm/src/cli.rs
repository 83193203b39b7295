//! The `vmkit` command line: QEMU's option spelling for what vmkit supports.

use std::path::PathBuf;

// The machine's own types, under the names the options had: one definition each.
pub use vmkit_pc::FlatMode;
pub use vmkit_pc::IrqchipMode as IrqchipOption;
pub use vmkit_pc::KernelDecompress as KernelDecompressOption;

/// Default RAM, as QEMU's pc machine: 128 MiB.
pub const DEFAULT_RAM: u64 = 128 << 20;

/// Where COM1's output (and input) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOption {
    /// The terminal: stdout for output, stdin for input.
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// Not connected.
    None,
    /// A `-chardev` (by id, `chardev:ID`) or a chardev the short form described (`unix:`,
    /// `tcp:`, `pty`, ...), opened as `serial0`.
    Chardev(String),
}

/// A flat binary loaded at an address (`-flat PATH[,addr=A][,entry=E][,mode=real|long]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatOption {
    /// The file.
    pub path: PathBuf,
    /// Load address.
    pub addr: u64,
    /// Entry point (defaults to the load address).
    pub entry: u64,
    /// CPU mode at entry.
    pub mode: FlatMode,
}

/// The QMP control socket (`-qmp unix:PATH,server=on[,wait=on|off]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpOption {
    /// The Unix socket vmkit listens on.
    pub path: PathBuf,
    /// Wait for a client to connect before the guest starts (QEMU's default: on).
    pub wait: bool,
}

/// One `+feature`/`-feature` (or `feature=on|off`) of `-cpu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeatureOption {
    /// The feature's name as QEMU spells it (e.g. `xsave`, `cx16`).
    pub name: String,
    /// Added (`true`) or removed (`false`).
    pub enabled: bool,
}

/// The CPU model and feature changes (`-cpu host[,+feat|-feat|feat=on|feat=off...]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuOption {
    /// The model: `host` (what KVM supports on this host) is the only one.
    pub model: String,
    /// Feature changes, in order (a later one wins).
    pub features: Vec<CpuFeatureOption>,
}

impl CpuOption {
    /// The option as `-cpu` text in vmkit-cpu's syntax, e.g. `host,-xsave,+x2apic`.
    pub fn to_text(&self) -> String {
        let mut text = self.model.clone();
        for feature in &self.features {
            text.push(',');
            text.push(if feature.enabled { '+' } else { '-' });
            text.push_str(&feature.name);
        }
        text
    }
}

impl Default for CpuOption {
    fn default() -> Self {
        Self {
            model: "host".into(),
            features: Vec::new(),
        }
    }
}

/// Everything the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-m`: RAM in bytes.
    pub ram_size: u64,
    /// `-smp`: vCPUs.
    pub smp: usize,
    /// `-bios`: firmware image.
    pub bios: Option<PathBuf>,
    /// `-flat`: a flat binary.
    pub flat: Option<FlatOption>,
    /// `-kernel`.
    pub kernel: Option<PathBuf>,
    /// `-initrd`.
    pub initrd: Option<PathBuf>,
    /// `-append`.
    pub append: Option<String>,
    /// `-kernel-decompress`.
    pub kernel_decompress: KernelDecompressOption,
    /// `-cpu`.
    pub cpu: CpuOption,
    /// `-qmp`.
    pub qmp: Option<QmpOption>,
    /// `-serial`.
    pub serial: SerialOption,
    /// `-device`, in order.
    pub devices: Vec<String>,
    /// `-netdev` (and the backends of `-nic`), in order.
    pub netdevs: Vec<vmkit_net::NetdevSpec>,
    /// `-chardev`, plus the chardevs the `-serial`/`-debugcon` short forms describe
    /// (`serial0`, `debugcon`), in order.
    pub chardevs: Vec<vmkit_chardev::ChardevSpec>,
    /// `-debugcon`: the chardev id of an `isa-debugcon` at port 0xE9.
    pub debugcon: Option<String>,
    /// `-no-reboot`.
    pub no_reboot: bool,
    /// `-S`.
    pub start_paused: bool,
    /// `-irqchip`.
    pub irqchip: IrqchipOption,
    /// The HPET (`-no-hpet` or `-machine hpet=off` clear it).
    pub hpet: bool,
    /// `-drive`, in order, each with its id (given, or QEMU's default `virtio0`, `none0`, ...).
    pub drives: Vec<vmkit_block::DriveSpec>,
    /// `-gdb DEV` / `-s`: where the gdb stub listens.
    pub gdb: Option<vmkit_gdb::ListenAddr>,
    /// `-incoming URI`: wait for an incoming migration (`defer`, `file:PATH`, `unix:PATH`,
    /// `tcp:HOST:PORT`, `exec:CMD`).
    pub incoming: Option<String>,
    /// `-sandbox on|off[,action=trap|kill]`: the per-thread seccomp filters. On by default
    /// (unlike QEMU) with [`crate::seccomp::default_action`] (kill, or trap when
    /// `VMKIT_SANDBOX_ACTION=trap`); `None` is `-sandbox off`. See [`crate::seccomp`].
    pub sandbox: Option<crate::seccomp::Action>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ram_size: DEFAULT_RAM,
            smp: 1,
            bios: None,
            flat: None,
            kernel: None,
            initrd: None,
            append: None,
            kernel_decompress: KernelDecompressOption::Guest,
            cpu: CpuOption::default(),
            qmp: None,
            serial: SerialOption::Stdio,
            devices: Vec::new(),
            netdevs: Vec::new(),
            chardevs: Vec::new(),
            debugcon: None,
            no_reboot: false,
            start_paused: false,
            irqchip: IrqchipOption::Kernel,
            hpet: true,
            drives: Vec::new(),
            gdb: None,
            incoming: None,
            sandbox: Some(crate::seccomp::default_action()),
        }
    }
}

/// What the command line means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print [`USAGE`] and exit 0.
    Help,
    /// Print the version and exit 0 (`-version`).
    Version,
    /// List the machine types (`-machine help`).
    MachineHelp,
    /// List the CPU models and feature names (`-cpu help`).
    CpuHelp,
    /// List the device types (`-device help`) or, with a driver, its properties
    /// (`-device DRIVER,help`).
    DeviceHelp(Option<String>),
    /// Run the built-in guest (no arguments at all).
    BuiltinGuest,
    /// Run the configured machine.
    Run(Box<Options>),
}

/// A command-line error, naming the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vmkit: {option}: {reason}")]
pub struct CliError {
    /// The option at fault.
    pub option: String,
    /// What is wrong and what is expected.
    pub reason: String,
}

fn error(option: &str, reason: impl Into<String>) -> CliError {
    CliError {
        option: option.to_string(),
        reason: reason.into(),
    }
}

/// The `--help` text.
pub const USAGE: &str = "\
usage: vmkit [options]

With no options, vmkit runs a small built-in guest that greets on COM1 and ends.

Machine:
  -m SIZE              RAM size: a number of MiB, or with a suffix K, M, G, T (default 128M)
  -smp N               number of vCPUs (default 1)
  -cpu host[,+FEAT|-FEAT|FEAT=on|FEAT=off...]
                       the CPUID KVM supports here, with features added or removed
                       (e.g. host,-xsave,-cx16)
  -irqchip kernel|user interrupt controllers and PIT in KVM (default) or in vmkit
  -no-reboot           end vmkit when the guest resets instead of rebooting
  -no-hpet             no HPET (QEMU's pc has one at 0xfed00000); -machine pc,hpet=off
  -S                   do not start the vCPUs (stay in prelaunch)
  -gdb tcp:[HOST]:PORT | unix:PATH[,server]
                       wait for a gdb connection (target remote) there
  -s                   shorthand for -gdb tcp::1234

Guest:
  -bios FILE           firmware image, mapped to end at 4 GiB, reset vector start
  -flat FILE[,addr=A][,entry=E][,mode=real|long]
                       a flat binary loaded at A (default 0x1000), started at E in real
                       mode (default) or 64-bit mode with identity paging
  -kernel FILE         boot Linux: a bzImage, or an ELF vmlinux (PVH entry if it has one);
                       with -bios the firmware boots the bzImage from fw_cfg through
                       QEMU's linuxboot_dma.bin option ROM, as QEMU does; or a
                       multiboot (v1) kernel (ELF32 or a.out kludge), entered as QEMU does
  -initrd FILE         initial ramdisk for -kernel; for a multiboot kernel the modules,
                       \"file args,file2\" (each module's command line is its whole item)
  -append CMDLINE      kernel command line (e.g. \"console=ttyS0 earlyprintk=serial\")
  -kernel-decompress guest|host
                       who decompresses a bzImage: the kernel itself (default) or vmkit,
                       which then enters the extracted vmlinux at startup_64

Devices:
  -chardev BACKEND,id=ID[,...]
                       a character device: null, stdio, file,path=P, pty,
                       socket,path=P|host=H,port=N[,server=on][,wait=off]
  -serial stdio|file:PATH|none|pty|unix:PATH[,server,nowait]|tcp:HOST:PORT[,...]|chardev:ID
                       COM1 backend (default stdio; on a terminal, Ctrl-A x quits)
  -debugcon BACKEND    QEMU's debug console (isa-debugcon) at port 0xE9 on a backend as
                       -serial takes; -device isa-debugcon,iobase=0x402,chardev=ID for
                       SeaBIOS's log port
  -netdev tap,id=ID[,ifname=NAME][,script=no][,downscript=no][,fd=N][,vhost=off]
                       a tap network backend for -device virtio-net-pci,netdev=ID[,mac=MAC]
                       (vmkit runs no scripts: set the interface up beforehand)
  -nic tap,...[,mac=MAC]
                       a tap backend and its virtio-net-pci NIC in one option
  -device DRIVER[,prop=value,...]
                       add a device, e.g. isa-serial,iobase=0x2f8,irq=3 or
                       isa-debug-exit,iobase=0x501,iosize=2
  -drive file=IMAGE,if=none|virtio[,id=ID][,format=raw][,readonly=on|off]
         [,cache=none|writeback|writethrough|directsync|unsafe][,discard=ignore|unmap]
                       a raw disk image; if=virtio adds a virtio-blk-pci for it, if=none
                       waits for -device virtio-blk-pci,drive=ID[,serial=S][,addr=SLOT]

Control:
  -qmp unix:PATH,server=on[,wait=on|off]
                       QMP control socket (wait=on, the default, waits for a client)
  -incoming defer|file:PATH|unix:PATH|tcp:HOST:PORT|exec:CMD
                       wait for the machine's state (QMP migrate-incoming after defer)
  -sandbox on|off[,action=kill|trap]
                       seccomp filter per thread (default on; a forbidden syscall kills
                       vmkit, or with action=trap is reported by name and exits 159)
  -h, --help           this text
  -version             vmkit's version
  -machine help | -cpu help | -device help | -device DRIVER,help
                       list machine types, CPU features, devices, a device's properties
";

/// Parses a size as QEMU does: plain numbers are MiB; suffixes K, M, G, T (also with B/iB).
pub fn parse_size(option: &str, text: &str) -> Result<u64, CliError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(split);
    let not_a_size = || {
        error(
            option,
            format!("'{text}' is not a size (try 512M, 1.5G or 2G)"),
        )
    };
    // QEMU accepts a decimal fraction ("1.5G"); it is computed exactly here.
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || fraction.len() > 18 {
        return Err(not_a_size());
    }
    let whole: u128 = whole.parse().map_err(|_| not_a_size())?;
    let (fraction_value, fraction_scale) = if fraction.is_empty() {
        (0u128, 1u128)
    } else {
        (
            fraction.parse::<u128>().map_err(|_| not_a_size())?,
            10u128.pow(fraction.len() as u32),
        )
    };
    let shift = match suffix
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" | "M" => 20,
        "K" => 10,
        "G" => 30,
        "T" => 40,
        _ => return Err(error(option, format!("unknown size suffix in '{text}'"))),
    };
    let unit = 1u128 << shift;
    let scaled = whole
        .checked_mul(fraction_scale)
        .and_then(|w| w.checked_add(fraction_value))
        .and_then(|v| v.checked_mul(unit));
    let bytes = match scaled {
        Some(scaled) if scaled % fraction_scale != 0 => {
            return Err(error(
                option,
                format!("'{text}' is not a whole number of bytes"),
            ))
        }
        Some(scaled) => u64::try_from(scaled / fraction_scale).ok(),
        None => None,
    };
    bytes
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| error(option, format!("'{text}' is zero or too large")))
}

fn parse_number(option: &str, text: &str) -> Result<u64, CliError> {
    // The same number syntax as -device properties.
    vmkit_object::parse_integer(text)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| error(option, format!("'{text}' is not a number")))
}

fn parse_flat(text: &str) -> Result<FlatOption, CliError> {
    let mut parts = text.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| error("-flat", "needs a file"))?;
    let mut flat = FlatOption {
        path: PathBuf::from(path),
        addr: 0x1000,
        entry: u64::MAX,
        mode: FlatMode::Real,
    };
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| error("-flat", format!("'{part}' is not key=value")))?;
        match key {
            "addr" => flat.addr = parse_number("-flat addr", value)?,
            "entry" => flat.entry = parse_number("-flat entry", value)?,
            "mode" => {
                flat.mode = match value {
                    "real" => FlatMode::Real,
                    "long" => FlatMode::Long,
                    _ => return Err(error("-flat mode", format!("'{value}': use real or long"))),
                }
            }
            _ => return Err(error("-flat", format!("unknown parameter '{key}'"))),
        }
    }
    if flat.entry == u64::MAX {
        flat.entry = flat.addr;
    }
    Ok(flat)
}

fn parse_on_off(option: &str, value: &str) -> Result<bool, CliError> {
    match value {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(error(option, format!("'{value}': use on or off"))),
    }
}

/// Adds a netdev, refusing a second one with the same id as QEMU does.
fn add_netdev(
    options: &mut Options,
    option: &str,
    spec: vmkit_net::NetdevSpec,
) -> Result<(), CliError> {
    if options.netdevs.iter().any(|n| n.id == spec.id) {
        return Err(error(
            option,
            format!("Duplicate ID '{}' for netdev", spec.id),
        ));
    }
    options.netdevs.push(spec);
    Ok(())
}

/// Parses `-qmp unix:PATH,server=on[,wait=on|off]` (also QEMU's older `server` and
/// `nowait` spellings).
pub fn parse_qmp(text: &str) -> Result<QmpOption, CliError> {
    let mut parts = text.split(',');
    let target = parts.next().unwrap_or_default();
    let path = match target.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        Some(_) => return Err(error("-qmp", "unix: needs a socket path")),
        None => {
            return Err(error(
                "-qmp",
                format!("'{target}': only unix:PATH sockets are supported"),
            ))
        }
    };
    let mut server = false;
    let mut wait = true;
    for part in parts {
        match part.split_once('=') {
            Some(("server", value)) => server = parse_on_off("-qmp server", value)?,
            Some(("wait", value)) => wait = parse_on_off("-qmp wait", value)?,
            None if part == "server" => server = true,
            None if part == "nowait" => wait = false,
            _ => return Err(error("-qmp", format!("unknown parameter '{part}'"))),
        }
    }
    if !server {
        return Err(error(
            "-qmp",
            "vmkit only listens for QMP clients: add server=on",
        ));
    }
    Ok(QmpOption { path, wait })
}

/// Parses `-serial`: `stdio`, `file:PATH` and `none`/`null` as before, any other QEMU short
/// form (`unix:PATH[,server,nowait]`, `tcp:HOST:PORT[,...]`, `pty`) as a chardev `serial0`,
/// and `chardev:ID`.
fn parse_serial(
    text: &str,
    chardevs: &mut vmkit_chardev::ChardevSet,
) -> Result<SerialOption, CliError> {
    use vmkit_chardev::{Backend, LegacyBackend};
    let legacy = vmkit_chardev::parse_legacy_backend_for("-serial", text)
        .map_err(|e| error("-serial", e.to_string()))?;
    Ok(match legacy {
        LegacyBackend::None => SerialOption::None,
        LegacyBackend::Chardev(spec) => match spec.backend {
            Backend::Stdio { .. } => SerialOption::Stdio,
            Backend::Null => SerialOption::None,
            Backend::File { path, .. } => SerialOption::File(path),
            _ => {
                let id = chardevs
                    .resolve("-serial", LegacyBackend::Chardev(spec), "serial0")
                    .map_err(|e| error("-serial", e.to_string()))?;
                SerialOption::Chardev(id.unwrap_or_default())
            }
        },
        LegacyBackend::Ref(id) => {
            chardevs
                .resolve("-serial", LegacyBackend::Ref(id.clone()), "serial0")
                .map_err(|e| error("-serial", e.to_string()))?;
            SerialOption::Chardev(id)
        }
    })
}

/// Parses `-cpu host[,+FEAT|-FEAT|FEAT=on|FEAT=off|FEAT...]` (`max` is taken as `host`).
/// Feature names are checked when the machine is built.
pub fn parse_cpu(text: &str) -> Result<CpuOption, CliError> {
    let mut parts = text.split(',');
    let model = match parts.next().unwrap_or_default() {
        "host" | "max" => "host",
        other => {
            return Err(error(
                "-cpu",
                format!("model '{other}': only host (what KVM supports here) is available"),
            ))
        }
    };
    let valid_name = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let mut features = Vec::new();
    for part in parts {
        let (name, enabled) = if let Some(name) = part.strip_prefix('+') {
            (name, true)
        } else if let Some(name) = part.strip_prefix('-') {
            (name, false)
        } else if let Some((name, value)) = part.split_once('=') {
            (name, parse_on_off(&format!("-cpu {name}"), value)?)
        } else {
            (part, true)
        };
        if !valid_name(name) {
            return Err(error("-cpu", format!("'{part}': not a feature name")));
        }
        features.push(CpuFeatureOption {
            name: name.to_string(),
            enabled,
        });
    }
    Ok(CpuOption {
        model: model.to_string(),
        features,
    })
}

/// Gives each `-drive` without `id=` QEMU's default id (the interface name and its index
/// among the drives of that interface: `virtio0`, `virtio1`, `none0`, ...) and refuses
/// duplicate ids.
fn assign_drive_ids(drives: &mut [vmkit_block::DriveSpec]) -> Result<(), CliError> {
    let mut counts = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for drive in drives.iter_mut() {
        let index = counts.entry(drive.interface).or_insert(0usize);
        let id = drive
            .id
            .get_or_insert_with(|| format!("{}{}", drive.interface.name(), index))
            .clone();
        *index += 1;
        if !seen.insert(id.clone()) {
            return Err(error("-drive", format!("Duplicate ID '{id}' for drive")));
        }
    }
    Ok(())
}

/// `-machine TYPE[,hpet=on|off]`: vmkit's `pc` only. `Ok(true)` asks for `-machine help`.
fn parse_machine(text: &str, options: &mut Options) -> Result<bool, CliError> {
    let machine = text.split(',').next().unwrap_or_default();
    match machine {
        "help" | "?" => return Ok(true),
        "pc" | "" => {}
        other if other.starts_with("type=pc") => {}
        other => {
            return Err(error(
                "-machine",
                format!("'{other}': unsupported machine type (-machine help lists them)"),
            ))
        }
    }
    for property in text.split(',').skip(1) {
        match property {
            "hpet=on" => options.hpet = true,
            "hpet=off" => options.hpet = false,
            other => {
                return Err(error(
                    "-machine",
                    format!("'{other}': unsupported property (vmkit's pc has hpet=on|off)"),
                ))
            }
        }
    }
    Ok(false)
}

/// `-smp N` or `-smp cpus=N[,...]`, 1 to 255.
fn parse_smp(text: &str) -> Result<usize, CliError> {
    text.split(',')
        .next()
        .and_then(|n| n.strip_prefix("cpus=").unwrap_or(n).parse::<usize>().ok())
        .filter(|n| (1..=255).contains(n))
        .ok_or_else(|| error("-smp", format!("'{text}': expected 1 to 255")))
}

/// Options that need or exclude each other, named as QEMU does.
fn check_combinations(options: &Options, kernel_decompress_given: bool) -> Result<(), CliError> {
    if options.bios.is_some() && options.flat.is_some() {
        return Err(error("-flat", "cannot be combined with -bios"));
    }
    if options.initrd.is_some() && options.kernel.is_none() {
        return Err(error("-initrd", "needs -kernel"));
    }
    if options.append.is_some() && options.kernel.is_none() {
        return Err(error("-append", "needs -kernel"));
    }
    if kernel_decompress_given && options.kernel.is_none() {
        return Err(error("-kernel-decompress", "needs -kernel"));
    }
    if options.kernel.is_some() && options.flat.is_some() {
        return Err(error("-kernel", "cannot be combined with -flat"));
    }
    if kernel_decompress_given && options.bios.is_some() {
        return Err(error(
            "-kernel-decompress",
            "does not apply with -bios: the firmware boots the bzImage, which decompresses itself",
        ));
    }
    Ok(())
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    if args.is_empty() {
        return Ok(Command::BuiltinGuest);
    }
    let mut options = Options::default();
    let mut kernel_decompress_given = false;
    let mut chardevs = vmkit_chardev::ChardevSet::new();
    let mut serial_text: Option<String> = None;
    let mut debugcon_text: Option<String> = None;
    let mut nics = 0;
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        // QEMU accepts --opt as -opt.
        let name = if arg.starts_with("--") && arg != "--help" {
            arg[1..].to_string()
        } else {
            arg.clone()
        };
        let mut value = |what: &str| {
            iter.next()
                .ok_or_else(|| error(&name, format!("needs {what}")))
        };
        match name.as_str() {
            "-h" | "-help" | "--help" => return Ok(Command::Help),
            "-version" | "--version" => return Ok(Command::Version),
            "-machine" | "-M" => {
                if parse_machine(&value("a machine type")?, &mut options)? {
                    return Ok(Command::MachineHelp);
                }
            }
            "-m" => options.ram_size = parse_size("-m", &value("a size")?)?,
            "-smp" => options.smp = parse_smp(&value("a vCPU count")?)?,
            "-bios" => options.bios = Some(PathBuf::from(value("a file")?)),
            "-flat" => options.flat = Some(parse_flat(&value("a file")?)?),
            "-kernel" => options.kernel = Some(PathBuf::from(value("a file")?)),
            "-initrd" => options.initrd = Some(PathBuf::from(value("a file")?)),
            "-append" => options.append = Some(value("a command line")?),
            "-kernel-decompress" => {
                let text = value("guest or host")?;
                options.kernel_decompress = match text.as_str() {
                    "guest" => KernelDecompressOption::Guest,
                    "host" => KernelDecompressOption::Host,
                    _ => {
                        return Err(error(
                            "-kernel-decompress",
                            format!("'{text}': use guest or host"),
                        ))
                    }
                };
                kernel_decompress_given = true;
            }
            "-cpu" => {
                let text = value("a CPU model")?;
                if text == "help" || text == "?" {
                    return Ok(Command::CpuHelp);
                }
                options.cpu = parse_cpu(&text)?;
            }
            "-qmp" => options.qmp = Some(parse_qmp(&value("unix:PATH,server=on")?)?),
            "-incoming" => {
                let uri = value(
                    "a migration URI (defer, file:PATH, unix:PATH, tcp:HOST:PORT, exec:CMD)",
                )?;
                crate::migration::MigrationUri::parse(&uri)
                    .map_err(|e| error("-incoming", e.to_string()))?;
                options.incoming = Some(uri);
            }
            "-serial" => serial_text = Some(value("a character backend")?),
            "-chardev" => {
                let text = value("a character device")?;
                chardevs
                    .add_text(&text)
                    .map_err(|e| error("-chardev", e.to_string()))?;
            }
            "-debugcon" => debugcon_text = Some(value("a character backend")?),
            "-netdev" => {
                let text = value("a network backend")?;
                let spec = vmkit_net::NetdevSpec::parse(&text)
                    .map_err(|e| error("-netdev", e.to_string()))?;
                add_netdev(&mut options, "-netdev", spec)?;
            }
            "-nic" => {
                let text = value("a network backend")?;
                let nic = vmkit_net::NicSpec::parse(&text, nics)
                    .map_err(|e| error("-nic", e.to_string()))?;
                nics += 1;
                add_netdev(&mut options, "-nic", nic.netdev)?;
                options.devices.push(nic.device);
            }
            "-device" => {
                let text = value("a device description")?;
                if text == "help" || text == "?" {
                    return Ok(Command::DeviceHelp(None));
                }
                let mut parts = text.split(',');
                let driver = parts.next().unwrap_or_default().to_string();
                if parts.any(|p| p == "help" || p == "?") {
                    return Ok(Command::DeviceHelp(Some(driver)));
                }
                options.devices.push(text);
            }
            "-drive" => {
                let text = value("a drive description")?;
                let drive = vmkit_block::DriveSpec::parse(&text)
                    .map_err(|e| error("-drive", e.to_string()))?;
                options.drives.push(drive);
            }
            "-no-reboot" => options.no_reboot = true,
            "-sandbox" => {
                let text = value("on|off")?;
                options.sandbox = crate::seccomp::parse_sandbox(&text).map_err(|e| {
                    error("-sandbox", e.trim_start_matches("-sandbox: ").to_string())
                })?;
            }
            "-no-hpet" => options.hpet = false,
            "-S" => options.start_paused = true,
            "-s" => options.gdb = Some(vmkit_gdb::ListenAddr::Tcp("0.0.0.0:1234".into())),
            "-gdb" => {
                let text = value("tcp::PORT, tcp:HOST:PORT or unix:PATH[,server]")?;
                options.gdb = Some(text.parse().map_err(|e: vmkit_gdb::Error| {
                    error(
                        "-gdb",
                        e.to_string().trim_start_matches("-gdb: ").to_string(),
                    )
                })?);
            }
            "-irqchip" => {
                let text = value("kernel or user")?;
                options.irqchip = match text.as_str() {
                    "kernel" | "on" => IrqchipOption::Kernel,
                    "user" | "off" => IrqchipOption::User,
                    _ => return Err(error("-irqchip", format!("'{text}': use kernel or user"))),
                };
            }
            other => return Err(error(other, "unknown option (see vmkit --help)")),
        }
    }
    // After every -chardev, so chardev:ID may name one given later on the line, as QEMU.
    if let Some(text) = serial_text {
        options.serial = parse_serial(&text, &mut chardevs)?;
    }
    if let Some(text) = debugcon_text {
        let legacy = vmkit_chardev::parse_legacy_backend_for("-debugcon", &text)
            .map_err(|e| error("-debugcon", e.to_string()))?;
        options.debugcon = chardevs
            .resolve("-debugcon", legacy, "debugcon")
            .map_err(|e| error("-debugcon", e.to_string()))?;
    }
    options.chardevs = chardevs.iter().cloned().collect();
    assign_drive_ids(&mut options.drives)?;
    check_combinations(&options, kernel_decompress_given)?;
    Ok(Command::Run(Box::new(options)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse(args.iter().copied()).unwrap() {
            Command::Run(options) => *options,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_means_the_builtin_guest() {
        assert_eq!(parse(Vec::<String>::new()).unwrap(), Command::BuiltinGuest);
        assert_eq!(parse(["--help"]).unwrap(), Command::Help);
        assert_eq!(parse(["-m", "64", "-h"]).unwrap(), Command::Help);
    }

    #[test]
    fn netdevs_and_nics_in_qemu_syntax() {
        let options = run(&[
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-nic",
            "tap,ifname=tap1,mac=52:54:00:00:00:02",
        ]);
        let ids: Vec<_> = options.netdevs.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["n0", "__org.qemu.nic0"]);
        assert_eq!(
            options.devices,
            [
                "virtio-net-pci,netdev=n0",
                "virtio-net-pci,netdev=__org.qemu.nic0,mac=52:54:00:00:00:02"
            ]
        );
        for (args, needle) in [
            (&["-netdev", "user,id=n0"][..], "is tap"),
            (
                &["-netdev", "tap,id=n0,script=/etc/qemu-ifup"][..],
                "script=no",
            ),
            (
                &["-netdev", "tap,id=n0,ifname=waytoolonginterface"][..],
                "15 bytes",
            ),
            (
                &["-netdev", "tap,id=n0", "-netdev", "tap,id=n0"][..],
                "Duplicate ID 'n0'",
            ),
            (&["-nic", "user"][..], "is tap"),
        ] {
            let err = parse(args.iter().copied()).unwrap_err();
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn chardevs_serial_short_forms_and_debugcon() {
        let options = run(&[
            "-chardev",
            "file,id=d,path=/tmp/log",
            "-debugcon",
            "chardev:d",
            "-serial",
            "unix:/tmp/s,server,nowait",
        ]);
        assert_eq!(options.debugcon.as_deref(), Some("d"));
        assert_eq!(options.serial, SerialOption::Chardev("serial0".into()));
        let ids: Vec<_> = options.chardevs.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["d", "serial0"]);
        // chardev:ID may name a -chardev given later on the line.
        let options = run(&["-serial", "chardev:c", "-chardev", "null,id=c"]);
        assert_eq!(options.serial, SerialOption::Chardev("c".into()));
        assert_eq!(
            run(&["-serial", "file:/x"]).serial,
            SerialOption::File("/x".into())
        );
        assert_eq!(run(&["-serial", "null"]).serial, SerialOption::None);
        let options = run(&["-debugcon", "file:/tmp/d"]);
        assert_eq!(options.debugcon.as_deref(), Some("debugcon"));
        let err = parse(["-chardev", "null,id=a", "-chardev", "null,id=a"]).unwrap_err();
        assert_eq!(err.option, "-chardev");
    }

    #[test]
    fn drives_in_qemu_syntax_with_default_ids() {
        let options = run(&[
            "-drive",
            "file=a.img,format=raw,if=none,id=d0,cache=none,readonly=on",
            "-drive",
            "file=b.img,if=virtio",
            "-drive",
            "file=c.img,if=virtio,discard=unmap",
        ]);
        let ids: Vec<_> = options
            .drives
            .iter()
            .map(|d| d.id.clone().unwrap())
            .collect();
        assert_eq!(ids, ["d0", "virtio0", "virtio1"]);
        assert!(options.drives[0].read_only);
        assert_eq!(options.drives[0].cache, vmkit_block::CacheMode::None);
        assert_eq!(options.drives[2].discard, vmkit_block::DiscardMode::Unmap);
        for (text, needle) in [
            ("file=x.qcow2,format=qcow2,if=virtio", "qcow2"),
            ("file=x,if=virtio,cache=fast", "cache=fast"),
            ("file=x", "if=virtio"),
        ] {
            let err = parse(["-drive", text]).unwrap_err();
            assert_eq!(err.option, "-drive", "{text}");
            assert!(err.reason.contains(needle), "{text}: {err}");
        }
        let err = parse([
            "-drive",
            "file=a,if=none,id=x",
            "-drive",
            "file=b,if=none,id=x",
        ])
        .unwrap_err();
        assert!(err.reason.contains("Duplicate ID 'x'"), "{err}");
    }

    #[test]
    fn the_hpet_is_on_unless_turned_off() {
        assert!(run(&["-m", "64"]).hpet);
        assert!(!run(&["-no-hpet"]).hpet);
        assert!(!run(&["-machine", "pc,hpet=off"]).hpet);
        assert!(run(&["-machine", "pc,hpet=off", "-machine", "pc,hpet=on"]).hpet);
        let err = parse(["-machine", "pc,hpet=maybe"]).unwrap_err();
        assert_eq!(err.option, "-machine");
        assert!(err.to_string().contains("hpet=maybe"), "{err}");
    }

    #[test]
    fn qemu_introspection_options() {
        assert_eq!(parse(["-version"]).unwrap(), Command::Version);
        assert_eq!(parse(["-machine", "help"]).unwrap(), Command::MachineHelp);
        assert_eq!(parse(["-cpu", "help"]).unwrap(), Command::CpuHelp);
        assert_eq!(
            parse(["-device", "help"]).unwrap(),
            Command::DeviceHelp(None)
        );
        assert_eq!(
            parse(["-device", "isa-serial,help"]).unwrap(),
            Command::DeviceHelp(Some("isa-serial".into()))
        );
        assert!(matches!(
            parse(["-machine", "pc", "-m", "64"]),
            Ok(Command::Run(_))
        ));
        let err = parse(["-machine", "q35"]).unwrap_err().to_string();
        assert!(err.contains("unsupported machine type"), "{err}");
    }

    #[test]
    fn sizes_as_qemu_reads_them() {
        assert_eq!(parse_size("-m", "256").unwrap(), 256 << 20);
        assert_eq!(parse_size("-m", "2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("-m", "512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("-m", "64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("-m", "1024k").unwrap(), 1 << 20);
        assert_eq!(parse_size("-m", "1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("-m", "0.5").unwrap(), 512 << 10);
        assert_eq!(parse_size("-m", "2.25G").unwrap(), 9 << 28);
        for bad in [
            "",
            "x",
            "0",
            "12Q",
            "99999999999T",
            ".5G",
            "1..5G",
            "1.5.2G",
            "0.0",
        ] {
            let err = parse_size("-m", bad).unwrap_err();
            assert_eq!(err.option, "-m", "{bad}");
        }
    }

    #[test]
    fn a_full_command_line() {
        let options = run(&[
            "-m",
            "1G",
            "-smp",
            "2",
            "-flat",
            "guest.bin,addr=0x2000,mode=long",
            "-serial",
            "file:/tmp/out",
            "-device",
            "isa-serial,iobase=0x2f8,irq=3",
            "-device",
            "isa-debug-exit",
            "-no-reboot",
            "-S",
            "-irqchip",
            "user",
        ]);
        assert_eq!(options.ram_size, 1 << 30);
        assert_eq!(options.smp, 2);
        let flat = options.flat.unwrap();
        assert_eq!(
            (flat.addr, flat.entry, flat.mode),
            (0x2000, 0x2000, FlatMode::Long)
        );
        assert_eq!(options.serial, SerialOption::File("/tmp/out".into()));
        assert_eq!(options.devices.len(), 2);
        assert!(options.no_reboot && options.start_paused);
        assert_eq!(options.irqchip, IrqchipOption::User);
    }

    #[test]
    fn gdb_options_as_qemu_spells_them() {
        use vmkit_gdb::ListenAddr;
        assert_eq!(
            run(&["-s", "-S"]).gdb,
            Some(ListenAddr::Tcp("0.0.0.0:1234".into()))
        );
        assert_eq!(
            run(&["-gdb", "tcp::4321"]).gdb,
            Some(ListenAddr::Tcp("0.0.0.0:4321".into()))
        );
        assert_eq!(
            run(&["-gdb", "tcp:127.0.0.1:4321"]).gdb,
            Some(ListenAddr::Tcp("127.0.0.1:4321".into()))
        );
        assert_eq!(
            run(&["-gdb", "unix:/tmp/g.sock,server"]).gdb,
            Some(ListenAddr::Unix("/tmp/g.sock".into()))
        );
        for bad in ["tcp:1234x", "udp::1", "unix:", "tcp::1,frob"] {
            let err = parse(["-gdb", bad]).unwrap_err();
            assert_eq!(err.option, "-gdb", "{bad}");
        }
    }

    #[test]
    fn linux_boot_options() {
        let options = run(&[
            "-kernel",
            "bzImage",
            "-initrd",
            "initrd.img",
            "-append",
            "console=ttyS0 reboot=k",
            "-kernel-decompress",
            "host",
        ]);
        assert_eq!(options.kernel, Some(PathBuf::from("bzImage")));
        assert_eq!(options.initrd, Some(PathBuf::from("initrd.img")));
        assert_eq!(options.append.as_deref(), Some("console=ttyS0 reboot=k"));
        assert_eq!(options.kernel_decompress, KernelDecompressOption::Host);
        let options = run(&["-kernel", "vmlinux"]);
        assert_eq!(options.kernel_decompress, KernelDecompressOption::Guest);
        assert_eq!(options.append, None);
    }

    #[test]
    fn qmp_sockets_in_qemu_syntax() {
        let qmp = |text: &str| run(&["-qmp", text]).qmp.unwrap();
        assert_eq!(
            qmp("unix:/tmp/q.sock,server=on,wait=off"),
            QmpOption {
                path: "/tmp/q.sock".into(),
                wait: false
            }
        );
        // QEMU waits for the client unless told not to; the old spellings work too.
        assert!(qmp("unix:/tmp/q.sock,server=on").wait);
        assert!(qmp("unix:/tmp/q.sock,server,wait=on").wait);
        assert!(!qmp("unix:q.sock,server,nowait").wait);
        assert_eq!(run(&["-m", "64"]).qmp, None);
        for (text, option, why) in [
            ("tcp:localhost:4444,server=on", "-qmp", "only unix:PATH"),
            ("unix:,server=on", "-qmp", "socket path"),
            ("unix:/tmp/q.sock", "-qmp", "server=on"),
            ("unix:/tmp/q.sock,server=off", "-qmp", "server=on"),
            (
                "unix:/tmp/q.sock,server=on,wait=maybe",
                "-qmp wait",
                "on or off",
            ),
            (
                "unix:/tmp/q.sock,server=on,telnet",
                "-qmp",
                "unknown parameter 'telnet'",
            ),
        ] {
            let err = parse(["-qmp", text]).unwrap_err();
            assert_eq!(err.option, option, "{text}: {err}");
            assert!(err.reason.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn cpu_model_and_feature_edits() {
        let cpu = run(&["-cpu", "host,-xsave,+x2apic,cx16=off,avx=on,pdpe1gb"]).cpu;
        assert_eq!(cpu.model, "host");
        let edits: Vec<(&str, bool)> = cpu
            .features
            .iter()
            .map(|f| (f.name.as_str(), f.enabled))
            .collect();
        assert_eq!(
            edits,
            [
                ("xsave", false),
                ("x2apic", true),
                ("cx16", false),
                ("avx", true),
                ("pdpe1gb", true)
            ]
        );
        assert_eq!(cpu.to_text(), "host,-xsave,+x2apic,-cx16,+avx,+pdpe1gb");
        assert_eq!(run(&["-m", "64"]).cpu, CpuOption::default());
        assert_eq!(run(&["-cpu", "max"]).cpu.to_text(), "host");
        for (text, option) in [
            ("qemu64", "-cpu"),
            ("host,+", "-cpu"),
            ("host,-x y", "-cpu"),
            ("host,xsave=maybe", "-cpu xsave"),
        ] {
            let err = parse(["-cpu", text]).unwrap_err();
            assert_eq!(err.option, option, "{text}: {err}");
        }
    }

    #[test]
    fn errors_name_the_option() {
        let cases: &[(&[&str], &str)] = &[
            (&["-m"], "-m"),
            (&["-smp", "0"], "-smp"),
            (&["-smp", "lots"], "-smp"),
            (&["-serial", "bogus:x"], "-serial"),
            (&["-serial", "chardev:nope"], "-serial"),
            (&["-chardev", "socket,id=c0"], "-chardev"),
            (&["-irqchip", "split"], "-irqchip"),
            (&["-flat", "a.bin,mode=protected"], "-flat mode"),
            (&["-flat", "a.bin,addr=zz"], "-flat addr"),
            (&["-frobnicate"], "-frobnicate"),
            (&["-initrd", "x"], "-initrd"),
            (&["-bios", "a", "-flat", "b"], "-flat"),
            (&["-kernel", "k", "-flat", "b"], "-kernel"),
            (
                &["-kernel", "k", "-bios", "b", "-kernel-decompress", "host"],
                "-kernel-decompress",
            ),
            (&["-kernel-decompress", "host"], "-kernel-decompress"),
            (
                &["-kernel", "k", "-kernel-decompress", "maybe"],
                "-kernel-decompress",
            ),
            (&["-append", "quiet"], "-append"),
            (&["-qmp"], "-qmp"),
            (&["-cpu"], "-cpu"),
        ];
        for (args, option) in cases {
            let err = parse(args.iter().copied()).unwrap_err();
            assert_eq!(&err.option, option, "{args:?}: {err}");
            assert!(err.to_string().starts_with("vmkit: "), "{err}");
        }
    }
}
