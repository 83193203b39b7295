//! `vmkit`: a QEMU-like command line over vmkit's `pc` machine.

use vmkit_vmm::builder::{boot_source, builtin_options, start_pc};
use vmkit_vmm::cli::{self, Command, USAGE};
use vmkit_vmm::{help, ExitReason, RunOptions};

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let (options, boot) = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return 0;
        }
        Ok(Command::Version) => {
            print!("{}", help::version_text());
            return 0;
        }
        Ok(Command::CpuHelp) => {
            print!("{}", help::cpu_help());
            return 0;
        }
        Ok(command @ (Command::MachineHelp | Command::DeviceHelp(_))) => {
            let text = match command {
                Command::DeviceHelp(Some(driver)) => help::device_help(&driver),
                Command::DeviceHelp(None) => help::device_list(),
                _ => help::machine_help(),
            };
            return match text {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            };
        }
        Ok(Command::BuiltinGuest) => builtin_options(),
        Ok(Command::Run(options)) => match boot_source(&options) {
            Ok(boot) => (*options, boot),
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        },
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let run = RunOptions {
        stdin_console: true,
        handle_signals: true,
        ..RunOptions::default()
    };
    if let Some(action) = options.sandbox {
        if let Err(e) = vmkit_vmm::seccomp::enable(action) {
            eprintln!("vmkit: -sandbox: {e}");
            return 1;
        }
    }
    let vmm = match start_pc(&options, boot, run, Vec::new()) {
        Ok(vmm) => vmm,
        Err(e @ vmkit_vmm::Error::Terminated(_)) => {
            eprintln!("vmkit: {e}");
            return 0;
        }
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    match vmm.wait() {
        Ok(reason) => {
            if let ExitReason::HostRequest(why) = &reason {
                if why.starts_with("terminated by signal") {
                    eprintln!("vmkit: {why}");
                }
            }
            reason.exit_code()
        }
        Err(e) => {
            eprintln!("vmkit: {e}");
            1
        }
    }
}
