//! `virtio-net-pci`: vmkit-net's virtio-net device on a `-netdev` backend, on the
//! virtio-pci transport (QEMU's `netdev`, `mac` and `mrg_rxbuf` properties).

use std::collections::HashMap;

use vmkit_net::{default_mac, parse_mac, NetBackend, NetLink, VirtioNet};
use vmkit_object::{Object, PropertyDef, TypeInfo};

use super::{pci_context, realize_virtio, PciContext, TYPE_VIRTIO_PCI};

/// virtio-net on PCI, on a `-netdev`.
pub const TYPE_VIRTIO_NET_PCI: &str = "virtio-net-pci";

/// The `-netdev` backends waiting for their NIC (`netdev=ID`; each is used once), and
/// QEMU's count of NICs given the default MAC.
#[derive(Default)]
pub struct Netdevs {
    backends: HashMap<String, Box<dyn NetBackend>>,
    taken: Vec<String>,
    default_macs: u8,
}

impl std::fmt::Debug for Netdevs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netdevs")
            .field("free", &self.backends.keys().collect::<Vec<_>>())
            .field("taken", &self.taken)
            .finish()
    }
}

impl Netdevs {
    /// Adds backend `id`.
    pub fn insert(&mut self, id: String, backend: Box<dyn NetBackend>) {
        self.backends.insert(id, backend);
    }

    /// Adds backends by id.
    pub fn extend(&mut self, backends: impl IntoIterator<Item = (String, Box<dyn NetBackend>)>) {
        self.backends.extend(backends);
    }

    /// The ids no NIC took (QEMU warns "netdev ID has no peer").
    pub fn unused(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.backends.keys().cloned().collect();
        ids.sort();
        ids
    }

    fn take(&mut self, id: &str) -> Result<Box<dyn NetBackend>, String> {
        if let Some(backend) = self.backends.remove(id) {
            self.taken.push(id.to_string());
            return Ok(backend);
        }
        Err(if self.taken.iter().any(|t| t == id) {
            format!("virtio-net-pci: netdev '{id}' is already used by another NIC")
        } else {
            format!("virtio-net-pci: netdev '{id}' is not a -netdev (give -netdev tap,id={id},...)")
        })
    }
}

#[derive(Default)]
struct NetState {
    link: Option<NetLink>,
}

/// The link of a `virtio-net-pci` object (QMP's `set_link`), with its `netdev` id.
pub fn net_link(object: &Object) -> Option<(NetLink, String)> {
    let link = object
        .with_state::<NetState, _>(|s| s.link.clone())
        .ok()
        .flatten()?;
    Some((link, object.get_string("netdev").unwrap_or_default()))
}

fn realize_virtio_net(object: &Object, ctx: &mut PciContext) -> vmkit_object::Result<()> {
    let fail = |text: String| vmkit_object::Error::failed(text);
    let netdev = object.get_string("netdev")?;
    if netdev.is_empty() {
        return Err(fail(
            "virtio-net-pci needs netdev=ID (a -netdev tap,id=ID,ifname=NAME,script=no,downscript=no)"
                .into(),
        ));
    }
    let mac_text = object.get_string("mac")?;
    let mac = if mac_text.is_empty() {
        None
    } else {
        Some(parse_mac(&mac_text).map_err(|e| fail(format!("virtio-net-pci: {e}")))?)
    };
    let backend = ctx.netdevs.take(&netdev).map_err(fail)?;
    let mac = mac.unwrap_or_else(|| {
        let mac = default_mac(ctx.netdevs.default_macs);
        ctx.netdevs.default_macs = ctx.netdevs.default_macs.wrapping_add(1);
        mac
    });
    let net = VirtioNet::new(backend, mac)
        .map_err(|e| fail(format!("virtio-net-pci: {e}")))?
        .with_mrg_rxbuf(object.get_bool("mrg_rxbuf")?);
    let link = net.link();
    realize_virtio(object, ctx, Box::new(net))?;
    object.with_state::<NetState, _>(|s| s.link = Some(link))?;
    Ok(())
}

/// The `virtio-net-pci` type.
pub fn virtio_net_pci_type() -> TypeInfo {
    TypeInfo::new(TYPE_VIRTIO_NET_PCI)
        .parent(TYPE_VIRTIO_PCI)
        .description("virtio-net on a -netdev (tap)")
        .state(NetState::default)
        .property(
            PropertyDef::string("netdev")
                .default("")
                .description("the -netdev id the NIC is connected to"),
        )
        .property(
            PropertyDef::string("mac")
                .default("")
                .description("MAC address (default 52:54:00:12:34:56, counting up per NIC)"),
        )
        .property(
            PropertyDef::bool("mrg_rxbuf")
                .default(true)
                .description("offer VIRTIO_NET_F_MRG_RXBUF (mergeable receive buffers)"),
        )
        .realize(|object, ctx, parent| {
            parent.call(object, ctx)?;
            realize_virtio_net(object, pci_context(ctx)?)
        })
}
