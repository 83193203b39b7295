//! The `vmkit` command line: arbitrary argument vectors, option values biased towards the
//! real options.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

const OPTIONS: &[&str] = &[
    "-m",
    "-smp",
    "-cpu",
    "-machine",
    "-M",
    "-kernel",
    "-initrd",
    "-append",
    "-flat",
    "-bios",
    "-serial",
    "-chardev",
    "-device",
    "-drive",
    "-netdev",
    "-nic",
    "-qmp",
    "-monitor",
    "-S",
    "-s",
    "-gdb",
    "-no-reboot",
    "-no-shutdown",
    "-nographic",
    "-display",
    "-accel",
    "-enable-kvm",
    "-debugcon",
    "-kernel-decompress",
    "-global",
    "-object",
    "-rtc",
    "-boot",
    "-name",
    "-sandbox",
    "-help",
    "-version",
    "-d",
    "-D",
    "-icount",
    "-daemonize",
    "-pidfile",
    "-uuid",
];

#[derive(Arbitrary, Debug)]
enum Arg {
    Option(u8),
    Text(String),
}

fuzz_target!(|args: Vec<Arg>| {
    let args: Vec<String> = args
        .into_iter()
        .take(40)
        .map(|a| match a {
            Arg::Option(i) => OPTIONS[usize::from(i) % OPTIONS.len()].to_owned(),
            Arg::Text(t) => t,
        })
        .collect();
    let _ = vmkit_vmm::cli::parse(args);
});
