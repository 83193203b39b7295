//! `vmkit-bench`: the end-to-end exit-dispatch benchmark (see `--help` and the README).

use vmkit_bench::cli::{self, Command, USAGE};

fn main() {
    let command = match cli::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("vmkit-bench: {e}");
            std::process::exit(2);
        }
    };
    let code = match command {
        Command::Help => {
            print!("{USAGE}");
            0
        }
        Command::RawChild(image) => match vmkit_bench::bench::raw_child(&image) {
            Ok(status) => status,
            Err(e) => {
                eprintln!("vmkit-bench --raw-child: {e}");
                1
            }
        },
        Command::Run(options) => match vmkit_bench::bench::run(&options) {
            Ok(report) => {
                print!("{report}");
                0
            }
            Err(e) => {
                eprintln!("vmkit-bench: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}
