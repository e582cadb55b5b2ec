//! Is this a Xen guest, and can guestd reach xenstore? Every signal is collected (for
//! `guestd probe` and the log) but the decision rests on one: the guest device exists, i.e.
//! the kernel has a xenstore link. QEMU can emulate Xen too, so host identity decides nothing.

use std::path::PathBuf;

use guestd_core::Paths;

/// Xen's CPUID leaves, when found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenCpuid {
    /// The base leaf (`0x40000000`, or `0x40000100` with Viridian enlightenments).
    pub base: u32,
    /// Xen version, major.
    pub major: u32,
    /// Xen version, minor.
    pub minor: u32,
    /// The domain id, when the HVM leaf provides it.
    pub domid: Option<u32>,
}

/// Everything guestd can see about Xen here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XenSignals {
    /// `/sys/hypervisor/type`.
    pub hypervisor_type: Option<String>,
    /// `/sys/hypervisor/uuid`: all zeros in dom0.
    pub uuid: Option<String>,
    /// `/proc/xen/capabilities` contains `control_d` (dom0).
    pub control_domain: bool,
    /// `/proc/xen` is mounted (xenfs).
    pub xenfs: bool,
    /// The first guest device that exists.
    pub device: Option<PathBuf>,
    /// Xen's CPUID leaves (x86 only, HVM or PVH; PV guests cannot see them).
    pub cpuid: Option<XenCpuid>,
    /// UEK's `ovmapi` driver is loaded: the kernel owns the Oracle VM channel.
    pub ovmapi: bool,
}

impl XenSignals {
    /// True when guestd can speak xenstore as a guest here.
    pub fn has_xenstore(&self) -> bool {
        self.device.is_some()
    }

    /// One line per signal, for `guestd probe`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.push(format!(
            "/sys/hypervisor/type: {}",
            self.hypervisor_type.as_deref().unwrap_or("(absent)")
        ));
        out.push(format!(
            "/sys/hypervisor/uuid: {}",
            self.uuid.as_deref().unwrap_or("(absent)")
        ));
        out.push(format!(
            "xenfs: {}{}",
            if self.xenfs { "mounted" } else { "absent" },
            if self.control_domain {
                " (control domain)"
            } else {
                ""
            }
        ));
        out.push(match &self.cpuid {
            Some(c) => format!(
                "cpuid: Xen {}.{} at {:#x}{}",
                c.major,
                c.minor,
                c.base,
                c.domid.map(|d| format!(", domid {d}")).unwrap_or_default()
            ),
            None => "cpuid: no Xen leaves".into(),
        });
        out.push(match &self.device {
            Some(d) => format!("xenstore device: {}", d.display()),
            None => "xenstore device: absent".into(),
        });
        out.push(format!(
            "ovmapi driver: {}",
            if self.ovmapi { "loaded" } else { "absent" }
        ));
        out.push(format!(
            "decision: {}",
            if self.has_xenstore() {
                "xenstore reachable"
            } else {
                "no xenstore"
            }
        ));
        out
    }
}

/// Collect the signals under `paths` (CPUID only on the running system).
pub fn detect(paths: &Paths) -> XenSignals {
    let read = |rel: &str| {
        std::fs::read_to_string(paths.join(rel))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let caps = read("proc/xen/capabilities");
    XenSignals {
        hypervisor_type: read("sys/hypervisor/type"),
        uuid: read("sys/hypervisor/uuid"),
        control_domain: caps.as_deref().is_some_and(|c| c.contains("control_d")),
        xenfs: paths.join("proc/xen/xenbus").exists() || caps.is_some(),
        device: super::GUEST_DEVICES
            .iter()
            .map(|d| paths.join(d))
            .find(|p| p.exists()),
        cpuid: if paths.is_system() { cpuid() } else { None },
        ovmapi: paths.dev("ovmapi").exists() || paths.sys("class/misc/ovmapi").exists(),
    }
}

/// Scan the hypervisor leaves in 0x100 steps, as Linux does, for `XenVMMXenVMM` with at
/// least two leaves beyond the base.
#[cfg(target_arch = "x86_64")]
pub fn cpuid() -> Option<XenCpuid> {
    use std::arch::x86_64::__cpuid;
    let leaf = |n: u32| {
        // SAFETY: CPUID exists on every x86_64 CPU; hypervisor leaves that are not
        // implemented return zeros or the highest basic leaf, never fault.
        #[allow(unused_unsafe)]
        unsafe {
            __cpuid(n)
        }
    };
    let mut base = 0x4000_0000u32;
    while base < 0x4001_0000 {
        let r = leaf(base);
        let mut sig = [0u8; 12];
        sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..12].copy_from_slice(&r.edx.to_le_bytes());
        if &sig == b"XenVMMXenVMM" && r.eax.wrapping_sub(base) >= 2 {
            let v = leaf(base + 1).eax;
            let domid = (r.eax.wrapping_sub(base) >= 4)
                .then(|| leaf(base + 4))
                .filter(|h| h.eax & (1 << 4) != 0)
                .map(|h| h.ecx);
            return Some(XenCpuid {
                base,
                major: v >> 16,
                minor: v & 0xffff,
                domid,
            });
        }
        base += 0x100;
    }
    None
}

/// No CPUID here.
#[cfg(not(target_arch = "x86_64"))]
pub fn cpuid() -> Option<XenCpuid> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_guest_and_dom0() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let paths = Paths::under(root);
        let none = detect(&paths);
        assert!(!none.has_xenstore());
        assert_eq!(none.cpuid, None);

        std::fs::create_dir_all(root.join("sys/hypervisor")).unwrap();
        std::fs::write(root.join("sys/hypervisor/type"), "xen\n").unwrap();
        std::fs::create_dir_all(root.join("proc/xen")).unwrap();
        std::fs::write(root.join("proc/xen/capabilities"), "").unwrap();
        std::fs::create_dir_all(root.join("dev/xen")).unwrap();
        std::fs::write(root.join("dev/xen/xenbus"), "").unwrap();
        let guest = detect(&paths);
        assert_eq!(guest.hypervisor_type.as_deref(), Some("xen"));
        assert!(guest.xenfs && !guest.control_domain && guest.has_xenstore());
        assert_eq!(guest.device, Some(root.join("dev/xen/xenbus")));
        assert!(!guest.ovmapi);
        assert!(
            guest
                .describe()
                .iter()
                .any(|l| l == "decision: xenstore reachable")
        );

        std::fs::write(root.join("proc/xen/capabilities"), "control_d\n").unwrap();
        std::fs::write(root.join("dev/ovmapi"), "").unwrap();
        let dom0 = detect(&paths);
        assert!(dom0.control_domain && dom0.ovmapi);
    }

    #[test]
    fn cpuid_scan_does_not_fault() {
        // On this machine (KVM, TCG or bare metal) there may or may not be Xen; the scan must
        // simply return.
        let _ = cpuid();
    }
}
