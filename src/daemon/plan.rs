//! Which protocol the daemon serves on which channel, and whether that channel is there now.
//!
//! A channel is *wanted* when its protocol is enabled: the configured channels, or the protocol's
//! default channel when none is configured (the QGA port, the oVirt ports, xenstore in a Xen
//! guest). A wanted virtio-serial port, or xenstore without an explicit path, is *gated*: it is
//! served only while it is present, and picked up or released as it comes and goes. Every other
//! configured channel (isa-serial, sockets, vsock, an explicit xenstore path) is served from the
//! start, its transport retrying until the endpoint works.

use std::fmt;
use std::path::PathBuf;

use guestd_core::Paths;
use guestd_core::contract::{KeyValueTransport, Probe};
use guestd_transports::ChannelSpec;
use guestd_transports::xenstore::{XenstoreTransport, detect};

use crate::config::{OVIRT_PORTS, QGA_PORT, Settings};

/// A protocol guestd speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// QEMU guest agent.
    Qga,
    /// oVirt guest agent.
    Ovirt,
    /// Oracle VM messaging.
    Ovmd,
}

impl Proto {
    /// Its name in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Qga => "qga",
            Proto::Ovirt => "ovirt",
            Proto::Ovmd => "ovmd",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a protocol is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A byte stream.
    Stream(ChannelSpec),
    /// xenstore: found as libxenstore would (`None`) or at a path.
    Xenstore(Option<PathBuf>),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Stream(s) => write!(f, "{s}"),
            Endpoint::Xenstore(None) => f.write_str("xenstore"),
            Endpoint::Xenstore(Some(p)) => write!(f, "xenstore:{}", p.display()),
        }
    }
}

/// One protocol on one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// The protocol.
    pub proto: Proto,
    /// The channel.
    pub endpoint: Endpoint,
    /// The protocol's default channel (nothing was configured): served only where it belongs
    /// (xenstore only in a Xen guest).
    pub default: bool,
}

impl Want {
    /// Unique name of this protocol-on-channel.
    pub fn key(&self) -> String {
        format!("{}={}", self.proto, self.endpoint)
    }

    /// Served only while present.
    pub fn gated(&self) -> bool {
        matches!(
            self.endpoint,
            Endpoint::Stream(ChannelSpec::Virtio(_)) | Endpoint::Xenstore(None)
        )
    }
}

/// Whether a wanted channel can be served now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Yes; `at` is what was found (a device node), so a change can be noticed.
    Present {
        /// The device or endpoint.
        at: String,
    },
    /// No, and why.
    Absent {
        /// The reason.
        why: String,
    },
}

/// Every wanted channel under `settings`, in a stable order.
pub fn wanted(settings: &Settings) -> Vec<Want> {
    let mut out = Vec::new();
    let stream = |proto, specs: &Option<Vec<ChannelSpec>>, default: ChannelSpec| match specs {
        Some(list) => list
            .iter()
            .map(|s| Want {
                proto,
                endpoint: Endpoint::Stream(s.clone()),
                default: false,
            })
            .collect::<Vec<_>>(),
        None => vec![Want {
            proto,
            endpoint: Endpoint::Stream(default),
            default: true,
        }],
    };
    if settings.qga.enable {
        out.extend(stream(
            Proto::Qga,
            &settings.qga.channels,
            ChannelSpec::Virtio(QGA_PORT.into()),
        ));
    }
    if settings.ovirt.enable {
        out.extend(stream(
            Proto::Ovirt,
            &settings.ovirt.channels,
            ChannelSpec::virtio_any(&OVIRT_PORTS),
        ));
    }
    if settings.ovmd.enable {
        let (endpoint, default) = match settings.ovmd.channel.as_deref() {
            None => (Endpoint::Xenstore(None), true),
            Some(s) => match s.strip_prefix("xenstore:") {
                Some(p) if !p.is_empty() => (Endpoint::Xenstore(Some(PathBuf::from(p))), false),
                _ => (Endpoint::Xenstore(None), false),
            },
        };
        out.push(Want {
            proto: Proto::Ovmd,
            endpoint,
            default,
        });
    }
    out
}

/// Is `want` there now? Cheap and side-effect free: nothing is opened.
pub async fn presence(want: &Want, paths: &Paths) -> Presence {
    match &want.endpoint {
        Endpoint::Stream(ChannelSpec::Virtio(_)) => {
            let names = match &want.endpoint {
                Endpoint::Stream(s) => s.virtio_names().unwrap_or_default(),
                Endpoint::Xenstore(_) => Vec::new(),
            };
            match guestd_transports::virtio::discover::find(paths, &names) {
                Ok(f) => Presence::Present {
                    at: f.dev.display().to_string(),
                },
                Err(why) => Presence::Absent { why },
            }
        }
        Endpoint::Stream(other) => Presence::Present {
            at: other.to_string(),
        },
        Endpoint::Xenstore(Some(p)) => Presence::Present {
            at: p.display().to_string(),
        },
        Endpoint::Xenstore(None) if want.default => {
            let s = detect::detect(paths);
            match (&s.device, s.control_domain, s.ovmapi) {
                (None, ..) => Presence::Absent {
                    why: "not a Xen guest: no /dev/xen/xenbus or /proc/xen/xenbus".into(),
                },
                (Some(_), true, _) => Presence::Absent {
                    why: "this is Xen's control domain, not a guest".into(),
                },
                (Some(_), _, true) => Presence::Absent {
                    why: "UEK's ovmapi driver owns the Oracle VM channel (/dev/ovmapi)".into(),
                },
                (Some(d), false, false) => Presence::Present {
                    at: d.display().to_string(),
                },
            }
        }
        Endpoint::Xenstore(None) => {
            match XenstoreTransport::discover(paths.clone()).probe().await {
                Probe::Present { at } => Presence::Present { at },
                Probe::Absent { why } => Presence::Absent { why },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(ports: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys/class/virtio-ports");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(t.path().join("dev")).unwrap();
        for (node, name) in ports {
            std::fs::create_dir_all(sys.join(node)).unwrap();
            std::fs::write(sys.join(node).join("name"), format!("{name}\n")).unwrap();
            std::fs::write(t.path().join("dev").join(node), "").unwrap();
        }
        t
    }

    #[test]
    fn defaults_want_every_protocol() {
        let w = wanted(&Settings::default());
        let keys: Vec<String> = w.iter().map(Want::key).collect();
        assert_eq!(
            keys,
            vec![
                "qga=virtio:org.qemu.guest_agent.0",
                "ovirt=virtio:ovirt-guest-agent.0,com.redhat.rhevm.vdsm",
                "ovmd=xenstore"
            ]
        );
        assert!(w.iter().all(|w| w.default && w.gated()));
    }

    #[test]
    fn configured_channels_replace_the_default() {
        let mut s = Settings::default();
        s.qga.channels = Some(vec![
            ChannelSpec::Serial("/dev/ttyS1".into()),
            ChannelSpec::Virtio("x".into()),
        ]);
        s.ovirt.enable = false;
        s.ovmd.channel = Some("xenstore:/run/xs.sock".into());
        let w = wanted(&s);
        assert_eq!(w.len(), 3);
        assert!(!w[0].gated() && w[1].gated() && !w[2].gated());
        assert!(w.iter().all(|w| !w.default));
    }

    #[tokio::test]
    async fn presence_follows_the_ports() {
        let t = fixture(&[
            ("vport0p1", "org.qemu.guest_agent.0"),
            ("vport0p2", "com.redhat.rhevm.vdsm"),
        ]);
        let paths = Paths::under(t.path());
        let w = wanted(&Settings::default());
        assert_eq!(
            presence(&w[0], &paths).await,
            Presence::Present {
                at: t.path().join("dev/vport0p1").display().to_string()
            }
        );
        // The legacy oVirt name is used while the current one is absent ...
        assert_eq!(
            presence(&w[1], &paths).await,
            Presence::Present {
                at: t.path().join("dev/vport0p2").display().to_string()
            }
        );
        // ... and the current one wins once it appears.
        std::fs::create_dir_all(t.path().join("sys/class/virtio-ports/vport0p3")).unwrap();
        std::fs::write(
            t.path().join("sys/class/virtio-ports/vport0p3/name"),
            "ovirt-guest-agent.0\n",
        )
        .unwrap();
        std::fs::write(t.path().join("dev/vport0p3"), "").unwrap();
        assert_eq!(
            presence(&w[1], &paths).await,
            Presence::Present {
                at: t.path().join("dev/vport0p3").display().to_string()
            }
        );
        // No Xen here.
        assert!(matches!(
            presence(&w[2], &paths).await,
            Presence::Absent { .. }
        ));
    }

    #[tokio::test]
    async fn xenstore_only_in_a_xen_guest_without_ovmapi() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::under(t.path());
        let w = &wanted(&Settings::default())[2];
        std::fs::create_dir_all(t.path().join("dev/xen")).unwrap();
        std::fs::write(t.path().join("dev/xen/xenbus"), "").unwrap();
        assert!(matches!(
            presence(w, &paths).await,
            Presence::Present { .. }
        ));
        std::fs::write(t.path().join("dev/ovmapi"), "").unwrap();
        match presence(w, &paths).await {
            Presence::Absent { why } => assert!(why.contains("ovmapi"), "{why}"),
            p => panic!("{p:?}"),
        }
    }
}
