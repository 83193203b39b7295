//! QEMU's introspection options: `-version`, `-machine help`, `-cpu help`, `-device help`
//! and `-device DRIVER,help`, answered from the object registry and vmkit-cpu's tables.

use std::fmt::Write as _;

use vmkit_object::Value;

use crate::error::{Error, Result};

/// The `-version` text.
pub fn version_text() -> String {
    format!(
        "vmkit version {} (QEMU-compatible command line; QMP reports QEMU 9.0)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The `-machine help` text.
pub fn machine_help() -> Result<String> {
    let registry = registry()?;
    let mut out = String::from("Supported machines are:\n");
    for summary in registry.list_types(Some(vmkit_pc::machine::TYPE_MACHINE), false) {
        let description = summary.description.unwrap_or_default();
        let _ = writeln!(out, "{:<20} {description} (default)", summary.name);
    }
    Ok(out)
}

/// The `-cpu help` text: the one model and every feature name `-cpu host,+FEAT` accepts.
pub fn cpu_help() -> String {
    let mut out = String::from(
        "Available CPUs:\n  host                  KVM processor with all supported host features\n  \
         max                   the same as host\n\nRecognized CPUID flags:\n",
    );
    let mut names: Vec<&str> = vmkit_cpu::features::FEATURES
        .iter()
        .map(|f| f.name)
        .collect();
    names.sort_unstable();
    for line in names.chunks(8) {
        let _ = writeln!(out, "  {}", line.join(" "));
    }
    out
}

/// The abstract types `-device` creates devices of, with QEMU's bus names.
const DEVICE_BUSES: [(&str, &str); 2] = [
    (vmkit_isa::TYPE_ISA_DEVICE, "ISA"),
    (vmkit_pc::pci_devices::TYPE_PCI_DEVICE, "PCI"),
];

/// The `-device help` text: every device type `-device` can create.
pub fn device_list() -> Result<String> {
    let registry = registry()?;
    let mut out = String::from("Devices (-device DRIVER,help lists a driver's properties):\n");
    for (base, bus) in DEVICE_BUSES {
        for summary in registry.list_types(Some(base), false) {
            let _ = writeln!(
                out,
                "name \"{}\", bus {bus}, desc \"{}\"",
                summary.name,
                summary.description.unwrap_or_default()
            );
        }
    }
    Ok(out)
}

/// The `-device DRIVER,help` text: the driver's properties, types, defaults and meaning.
pub fn device_help(driver: &str) -> Result<String> {
    let registry = registry()?;
    let known = DEVICE_BUSES.iter().any(|(base, _)| {
        registry
            .list_types(Some(base), false)
            .into_iter()
            .any(|t| t.name == driver)
    });
    if !known {
        return Err(Error::Machine(format!(
            "vmkit: -device {driver},help: '{driver}' is not a valid device model name \
             (-device help lists them)"
        )));
    }
    let properties = registry
        .type_properties(driver)
        .map_err(|e| Error::Machine(format!("vmkit: -device {driver},help: {e}")))?;
    let mut out = format!("{driver} options:\n");
    for property in properties {
        let mut line = format!("  {}=<{}>", property.name, property.type_name);
        if let Some(description) = &property.description {
            let _ = write!(
                line,
                "{:width$} - {description}",
                "",
                width = 24usize.saturating_sub(line.len())
            );
        }
        if let Some(default) = &property.default {
            let shown = match default {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(line, " (default: {shown})");
        }
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

fn registry() -> Result<vmkit_object::Registry> {
    vmkit_pc::machine::pc_registry().map_err(|e| Error::Machine(format!("vmkit: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_help_lists_the_properties_with_defaults() {
        let text = device_help("isa-debugcon").unwrap();
        assert!(text.starts_with("isa-debugcon options:\n"), "{text}");
        assert!(text.contains("iobase=<uint16>"), "{text}");
        assert!(text.contains("(default: 233)"), "{text}");
        assert!(text.contains("chardev=<str>"), "{text}");
        let err = device_help("e1000").unwrap_err().to_string();
        assert!(
            err.contains("'e1000' is not a valid device model name"),
            "{err}"
        );
    }

    #[test]
    fn device_list_machine_and_cpu_help() {
        let devices = device_list().unwrap();
        for name in ["isa-serial", "isa-debug-exit", "isa-debugcon", "i8042"] {
            assert!(devices.contains(&format!("name \"{name}\"")), "{devices}");
        }
        assert!(
            devices.contains("name \"virtio-rng-pci\", bus PCI"),
            "{devices}"
        );
        assert!(device_help("virtio-rng-pci")
            .unwrap()
            .contains("disable-legacy=<enum>"));
        assert!(machine_help().unwrap().contains("pc "));
        let cpu = cpu_help();
        assert!(
            cpu.contains("host") && cpu.contains("cx16") && cpu.contains("xsave"),
            "{cpu}"
        );
        assert!(version_text().starts_with("vmkit version "));
    }
}
