//! QEMU's `-netdev` and `-nic` option text for the backends vmkit has (tap), and MAC
//! addresses as QEMU spells and defaults them.

use std::os::fd::RawFd;

use crate::backend::NetBackend;
use crate::tap::{check_ifname, Tap};
use crate::{Error, Result};

/// The MAC address QEMU gives the first NIC without `mac=` (the next ones count up in
/// the last byte).
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// The backend types QEMU has that vmkit does not (each refused naming `tap`).
const OTHER_QEMU_TYPES: &[&str] = &[
    "user",
    "bridge",
    "socket",
    "stream",
    "dgram",
    "l2tpv3",
    "vde",
    "netmap",
    "vhost-user",
    "vhost-vdpa",
    "vmnet-host",
    "vmnet-shared",
    "vmnet-bridged",
    "af-xdp",
    "hubport",
];

/// QEMU's default MAC for the NIC with default-MAC index `index` (0 for the first NIC
/// without `mac=`): `52:54:00:12:34:56`, then `...:57`, ... (as `qemu_macaddr_default_if_unset`).
pub fn default_mac(index: u8) -> [u8; 6] {
    let mut mac = DEFAULT_MAC;
    mac[5] = mac[5].wrapping_add(index);
    mac
}

/// Parses `aa:bb:cc:dd:ee:ff` (also with `-`).
pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bad = || Error::Option {
        option: "mac".into(),
        value: text.into(),
        reason: "expected six hex bytes as 52:54:00:12:34:56".into(),
    };
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.is_empty() || part.len() > 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// Formats a MAC as QEMU prints it (`52:54:00:12:34:56`).
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `-netdev tap,...` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TapOptions {
    /// `ifname=`: the interface to create or attach to (`None`: the kernel picks `tapN`).
    pub ifname: Option<String>,
    /// `fd=`: an already open tap fd, inherited from the parent.
    pub fd: Option<RawFd>,
    /// `vnet_hdr=on|off` (`None`: use it if the kernel has it).
    pub vnet_hdr: Option<bool>,
}

/// The backend kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetdevKind {
    /// A tap interface.
    Tap(TapOptions),
}

/// One `-netdev` option: `tap,id=ID[,ifname=NAME][,script=no][,downscript=no][,fd=N]
/// [,vhost=off][,vnet_hdr=on|off]`.
///
/// vmkit runs no scripts: `script=` and `downscript=` may only be `no` (or be left out),
/// configure the interface before starting vmkit. `vhost=on` is refused (no vhost-net).
///
/// ```
/// use vmkit_net::{NetdevKind, NetdevSpec};
/// let spec = NetdevSpec::parse("tap,id=net0,ifname=tap0,script=no,downscript=no")?;
/// assert_eq!(spec.id, "net0");
/// let NetdevKind::Tap(tap) = &spec.kind;
/// assert_eq!(tap.ifname.as_deref(), Some("tap0"));
/// let err = NetdevSpec::parse("user,id=n0").unwrap_err().to_string();
/// assert!(err.contains("tap"), "{err}");
/// # Ok::<(), vmkit_net::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetdevSpec {
    /// `id=`: what `-device ...,netdev=ID` and QMP's `set_link` name.
    pub id: String,
    /// The backend.
    pub kind: NetdevKind,
}

/// Splits option text at commas, with QEMU's `,,` for a literal comma.
fn split_options(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                if let Some(p) = parts.last_mut() {
                    p.push(',');
                }
            } else {
                parts.push(String::new());
            }
        } else if let Some(p) = parts.last_mut() {
            p.push(c);
        }
    }
    parts
}

fn on_off(option: &str, value: &str) -> Result<bool> {
    match value {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(Error::Option {
            option: option.into(),
            value: value.into(),
            reason: "use on or off".into(),
        }),
    }
}

/// Checks an id as QEMU's `id_wellformed`: a letter first, then letters, digits, `-`,
/// `.` and `_`.
fn check_id(id: &str) -> Result<()> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Option {
            option: "id".into(),
            value: id.into(),
            reason: "identifiers consist of letters, digits, '-', '.', '_', starting with a letter"
                .into(),
        })
    }
}

fn refuse_type(kind: &str) -> Error {
    let reason = if OTHER_QEMU_TYPES.contains(&kind) {
        format!("vmkit has no '{kind}' network backend; the backend vmkit has is tap (-netdev tap,id=ID,ifname=NAME,script=no,downscript=no)")
    } else {
        format!("'{kind}' is not a network backend type; the backend vmkit has is tap")
    };
    Error::Option {
        option: "type".into(),
        value: kind.into(),
        reason,
    }
}

impl NetdevSpec {
    /// Parses `-netdev` text.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_with(text, true)
    }

    fn parse_with(text: &str, user_id: bool) -> Result<Self> {
        let parts = split_options(text);
        // The type decides which parameters exist: refuse other types first.
        let first = parts.first().map(String::as_str).unwrap_or_default();
        let kind_text = first.strip_prefix("type=").unwrap_or(first);
        if !kind_text.contains('=') && kind_text != "tap" {
            if kind_text.is_empty() {
                return Err(Error::Option {
                    option: "type".into(),
                    value: String::new(),
                    reason: "a backend type is needed first (tap)".into(),
                });
            }
            return Err(refuse_type(kind_text));
        }
        let mut kind = None;
        let mut id = None;
        let mut tap = TapOptions::default();
        for (index, part) in parts.iter().enumerate() {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k, v),
                None if index == 0 => ("type", part.as_str()),
                None => {
                    return Err(Error::Option {
                        option: part.clone(),
                        value: String::new(),
                        reason: "expected key=value".into(),
                    })
                }
            };
            match key {
                "type" => kind = Some(value.to_string()),
                "id" => id = Some(value.to_string()),
                "ifname" => {
                    check_ifname(value)?;
                    tap.ifname = Some(value.to_string());
                }
                "script" | "downscript" => {
                    if value != "no" && !value.is_empty() {
                        return Err(Error::Option {
                            option: key.into(),
                            value: value.into(),
                            reason: format!(
                                "vmkit runs no interface scripts: set up the interface before \
                                 starting vmkit and give {key}=no"
                            ),
                        });
                    }
                }
                "fd" => {
                    let fd = value
                        .parse::<RawFd>()
                        .ok()
                        .filter(|fd| *fd >= 0)
                        .ok_or_else(|| Error::Option {
                            option: "fd".into(),
                            value: value.into(),
                            reason: "expected an open file descriptor number".into(),
                        })?;
                    tap.fd = Some(fd);
                }
                "vhost" => {
                    if on_off("vhost", value)? {
                        return Err(Error::Option {
                            option: "vhost".into(),
                            value: value.into(),
                            reason: "vmkit has no vhost-net: the virtio-net device runs in vmkit \
                                     (vhost=off)"
                                .into(),
                        });
                    }
                }
                "vnet_hdr" => tap.vnet_hdr = Some(on_off("vnet_hdr", value)?),
                other => {
                    return Err(Error::Option {
                        option: other.into(),
                        value: value.into(),
                        reason: "unknown tap parameter (vmkit's tap takes id, ifname, script=no, \
                                 downscript=no, fd, vhost=off, vnet_hdr)"
                            .into(),
                    })
                }
            }
        }
        let kind = kind.unwrap_or_default();
        if kind != "tap" {
            if kind.is_empty() {
                return Err(Error::Option {
                    option: "type".into(),
                    value: String::new(),
                    reason: "a backend type is needed first (tap)".into(),
                });
            }
            return Err(refuse_type(&kind));
        }
        let id = id.ok_or_else(|| Error::Option {
            option: "id".into(),
            value: String::new(),
            reason: "-netdev needs id=ID (devices refer to it with netdev=ID)".into(),
        })?;
        if user_id {
            check_id(&id)?;
        }
        if tap.fd.is_some() && tap.ifname.is_some() {
            return Err(Error::Option {
                option: "fd".into(),
                value: tap.fd.unwrap_or_default().to_string(),
                reason: "ifname= and fd= exclude each other (the fd is already an interface)"
                    .into(),
            });
        }
        Ok(NetdevSpec {
            id,
            kind: NetdevKind::Tap(tap),
        })
    }

    /// Opens the backend.
    pub fn open(&self) -> Result<Box<dyn NetBackend>> {
        match &self.kind {
            NetdevKind::Tap(tap) => {
                let opened = match tap.fd {
                    // SAFETY: the user passed fd=N for this tap: vmkit owns it from here.
                    Some(fd) => unsafe { Tap::from_raw_fd(fd) }?,
                    None => Tap::open(tap.ifname.as_deref(), tap.vnet_hdr)?,
                };
                Ok(Box::new(opened))
            }
        }
    }
}

/// `-nic tap,...[,model=virtio-net-pci][,mac=MAC]`: a netdev and its NIC in one option.
/// The tap parameters are `-netdev tap`'s; `id=` defaults to `__org.qemu.nicN` as QEMU's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// The backend.
    pub netdev: NetdevSpec,
    /// The `-device` text of the NIC (`virtio-net-pci,netdev=ID[,mac=MAC]`).
    pub device: String,
}

impl NicSpec {
    /// Parses `-nic` text; `index` counts the `-nic` options before it.
    ///
    /// vmkit's only NIC model is `virtio-net-pci`, which is what `model=` defaults to (QEMU's
    /// pc defaults to e1000, which vmkit does not have); `model=help` is not supported.
    pub fn parse(text: &str, index: usize) -> Result<Self> {
        let mut netdev_parts = Vec::new();
        let mut model = "virtio-net-pci".to_string();
        let mut mac = None;
        let mut id = None;
        for (i, part) in split_options(text).into_iter().enumerate() {
            match part.split_once('=') {
                Some(("model", value)) => model = value.to_string(),
                Some(("mac", value)) => {
                    parse_mac(value)?;
                    mac = Some(value.to_string());
                }
                Some(("id", value)) => id = Some(value.to_string()),
                _ if i == 0 && part == "none" => {
                    return Err(Error::Option {
                        option: "-nic".into(),
                        value: part,
                        reason: "vmkit's pc has no default NIC, so -nic none is not needed".into(),
                    })
                }
                _ => netdev_parts.push(part.replace(',', ",,")),
            }
        }
        if model != "virtio-net-pci" && model != "virtio" {
            return Err(Error::Option {
                option: "model".into(),
                value: model,
                reason: "vmkit's NIC model is virtio-net-pci".into(),
            });
        }
        // A generated id starts with '_', which the rule for users' ids refuses.
        let user_id = id.is_some();
        let id = id.unwrap_or_else(|| format!("__org.qemu.nic{index}"));
        let mut netdev_text = netdev_parts.join(",");
        netdev_text.push_str(&format!(",id={}", id.replace(',', ",,")));
        let netdev = NetdevSpec::parse_with(&netdev_text, user_id)?;
        let mut device = format!("virtio-net-pci,netdev={id}");
        if let Some(mac) = mac {
            device.push_str(&format!(",mac={mac}"));
        }
        Ok(NicSpec { netdev, device })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(text: &str) -> TapOptions {
        let NetdevKind::Tap(tap) = NetdevSpec::parse(text).unwrap().kind;
        tap
    }

    #[test]
    fn qemu_tap_options() {
        let t = tap("tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off");
        assert_eq!(t.ifname.as_deref(), Some("tap0"));
        assert_eq!(t.fd, None);
        assert_eq!(tap("tap,id=n0,fd=5").fd, Some(5));
        assert_eq!(tap("type=tap,id=n0,vnet_hdr=off").vnet_hdr, Some(false));
        assert_eq!(tap("tap,id=n0"), TapOptions::default());
    }

    #[test]
    fn bad_netdevs_say_why() {
        for (text, needle) in [
            ("user,id=n0", "the backend vmkit has is tap"),
            ("bridge,id=n0,br=br0", "no 'bridge' network backend"),
            ("frob,id=n0", "not a network backend type"),
            ("tap,ifname=tap0", "needs id=ID"),
            ("tap,id=0bad", "starting with a letter"),
            (
                "tap,id=n0,script=/etc/qemu-ifup",
                "runs no interface scripts",
            ),
            ("tap,id=n0,downscript=/x", "downscript=no"),
            ("tap,id=n0,ifname=averyveryverylongname", "longer than 15"),
            ("tap,id=n0,vhost=on", "no vhost-net"),
            ("tap,id=n0,fd=x", "file descriptor"),
            ("tap,id=n0,fd=3,ifname=tap0", "exclude each other"),
            ("tap,id=n0,queues=4", "unknown tap parameter"),
            ("tap,id=n0,vnet_hdr=maybe", "on or off"),
            ("", "backend type"),
        ] {
            let err = NetdevSpec::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: '{needle}' not in '{err}'");
        }
    }

    #[test]
    fn macs_as_qemu() {
        assert_eq!(default_mac(0), DEFAULT_MAC);
        assert_eq!(format_mac(&default_mac(1)), "52:54:00:12:34:57");
        assert_eq!(
            parse_mac("52:54:00:AB:cd:01").unwrap()[3..],
            [0xab, 0xcd, 1]
        );
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "5254:00:12:34:56:7",
            "zz:54:00:12:34:56",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nic_is_a_netdev_and_a_device() {
        let nic = NicSpec::parse("tap,ifname=tap1,script=no,mac=52:54:00:00:00:01", 0).unwrap();
        assert_eq!(nic.netdev.id, "__org.qemu.nic0");
        assert_eq!(
            nic.device,
            "virtio-net-pci,netdev=__org.qemu.nic0,mac=52:54:00:00:00:01"
        );
        let nic = NicSpec::parse("tap,id=x,model=virtio-net-pci", 3).unwrap();
        assert_eq!(nic.netdev.id, "x");
        let err = NicSpec::parse("tap,model=e1000", 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("virtio-net-pci"), "{err}");
        let err = NicSpec::parse("user", 0).unwrap_err().to_string();
        assert!(err.contains("tap"), "{err}");
    }
}
