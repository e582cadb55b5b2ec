//! Property tests: every message guestd builds from arbitrary model values passes the
//! host-side checker, at every API version that allows it.

use guestd_core::model::*;
use guestd_core::sysfacts::BlockDevice;
use guestd_protocols::ovirt::frame::encode_capped;
use guestd_protocols::ovirt::message::{self, MemorySampler, Message};
use guestd_protocols::ovirt::{AppFilter, FreeRam, OvirtConfig};
use proptest::prelude::*;
use serde_json::Value;

use super::checker::Checker;

fn text() -> impl Strategy<Value = String> {
    // Any characters, control and non-BMP ones included: the filter must handle them.
    prop_oneof![
        proptest::string::string_regex("(?s).{0,24}").expect("regex"),
        "[a-z0-9._:/-]{0,20}"
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

prop_compose! {
    fn memory()(v in proptest::collection::vec(any::<u64>(), 14), est in any::<bool>()) -> Memory {
        Memory {
            total: v[0], free: v[1], available: v[2], available_estimated: est,
            buffers: v[3], cached: v[4], swap_total: v[5], swap_free: v[6], page_in: v[7],
            page_out: v[8], swap_in: v[9], swap_out: v[10], faults: v[11], major_faults: v[12],
        }
    }
}

prop_compose! {
    fn interface()(
        name in text(), mac in proptest::option::of("[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"),
        v4 in proptest::collection::vec((any::<[u8; 4]>(), 0u8..=32), 0..3),
        v6 in proptest::collection::vec((any::<[u8; 16]>(), 0u8..=128), 0..3),
        up in any::<bool>(), loopback in any::<bool>(),
    ) -> Interface {
        Interface {
            name, mac,
            ipv4: v4.into_iter().map(|(a, p)| IpPrefix { address: a.into(), prefix: p }).collect(),
            ipv6: v6.into_iter().map(|(a, p)| IpPrefix { address: a.into(), prefix: p }).collect(),
            up, loopback, mtu: None, stats: None,
        }
    }
}

prop_compose! {
    fn application()(name in text(), version in text(), arch in opt_text(), src in 0..3u8) -> Application {
        let source = match src { 0 => PackageSource::Dpkg, 1 => PackageSource::Rpm, _ => PackageSource::Apk };
        Application { name, version, arch, source }
    }
}

prop_compose! {
    fn disk()(name in text(), dev in opt_text(), serial in opt_text()) -> Disk {
        Disk { name, dev, serial, ..Disk::default() }
    }
}

prop_compose! {
    fn filesystem()(
        mountpoint in text(), device in text(), fstype in text(),
        total in proptest::option::of(any::<u64>()), used in proptest::option::of(any::<u64>()),
        disks in proptest::collection::vec(disk(), 0..3),
    ) -> Filesystem {
        Filesystem { mountpoint, device, fstype, total, used, available: None, read_only: false, disks }
    }
}

prop_compose! {
    fn os()(
        name in opt_text(), version in opt_text(), version_id in opt_text(), variant in opt_text(),
        kernel_release in opt_text(),
        machine in proptest::option::of(prop_oneof![Just("i686".to_owned()), Just("x86_64".to_owned()), text()]),
    ) -> OsInfo {
        OsInfo { name, version, version_id, variant, kernel_release, machine, ..OsInfo::default() }
    }
}

prop_compose! {
    fn user()(name in text(), seat in opt_text(), class in opt_text(), active in any::<bool>()) -> UserSession {
        UserSession {
            name, uid: None, session_id: None, seat, tty: None, remote_host: None, class,
            kind: None, active, locked: false, login_time: None, source: SessionSource::Logind,
        }
    }
}

prop_compose! {
    fn container()(id in text(), names in proptest::collection::vec(text(), 0..3), image in text(),
                   command in text(), status in text()) -> Container {
        Container { id, names, image, command, status }
    }
}

fn check(msg: &Message, cfg: &OvirtConfig) -> Result<(), TestCaseError> {
    let (frame, _) = encode_capped(msg.name, &msg.body, msg.trim_key(), cfg.max_message)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(frame.ends_with(b"\n"));
    let line = &frame[..frame.len() - 1];
    for version in 0..=3u8 {
        let mut c = Checker::at(version);
        let r = c.check_line(line);
        if msg.min_version() <= version {
            prop_assert!(r.is_ok(), "v{}: {:?}", version, r);
        } else {
            prop_assert!(r.is_err(), "{} accepted at v{}", msg.name, version);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_built_message_passes_the_checker(
        mems in proptest::collection::vec(memory(), 1..3),
        api in 0..=3u8,
        ifaces in proptest::collection::vec(interface(), 0..4),
        apps in proptest::collection::vec(application(), 0..40),
        fss in proptest::collection::vec(filesystem(), 0..4),
        block_disks in proptest::collection::vec(disk(), 0..2),
        osi in os(),
        users in proptest::collection::vec(user(), 0..3),
        zone in opt_text(), std_offset in -14 * 3600..=14 * 3600i32,
        online in proptest::option::of(1..512u32),
        containers in proptest::collection::vec(container(), 0..3),
        all_apps in any::<bool>(),
        plain in text(),
        reply in prop_oneof![text().prop_map(Value::String), any::<i64>().prop_map(Value::from)],
        small_cap in any::<bool>(),
    ) {
        let mut cfg = OvirtConfig::default();
        if all_apps { cfg.applications = AppFilter::All; }
        if small_cap { cfg.max_message = 16 * 1024; }
        let mut sampler = MemorySampler::default();
        let now = std::time::Instant::now();
        for (i, m) in mems.iter().enumerate() {
            let stat = sampler.sample(m, now + std::time::Duration::from_millis(i as u64 * 7), FreeRam::Legacy);
            let free = message::free_bytes(m, FreeRam::Legacy) >> 20;
            let hb_version = if api == 0 { 0 } else { 3 };
            check(&message::heartbeat(free, Some(&stat), hb_version), &cfg)?;
            check(&message::heartbeat(free, None, hb_version), &cfg)?;
        }
        check(&message::host_name(&plain), &cfg)?;
        check(&message::fqdn(&plain), &cfg)?;
        check(&message::os_version(&plain), &cfg)?;
        check(&message::active_user(message::pick_active_user(&users).as_deref()), &cfg)?;
        check(&message::active_user(None), &cfg)?;
        check(&message::network_interfaces(&ifaces, &cfg.ignored_nics), &cfg)?;
        check(&message::applications(&apps, &cfg.applications), &cfg)?;
        let block: Vec<BlockDevice> = block_disks
            .into_iter()
            .map(|d| BlockDevice { name: d.name.clone(), address: Some(d), ..BlockDevice::default() })
            .collect();
        check(&message::disks_usage(&fss, &block, &cfg.ignored_fs, true), &cfg)?;
        check(&message::disks_usage(&fss, &block, &[], false), &cfg)?;
        check(&message::os_info(&osi), &cfg)?;
        let tz = Timezone { name: zone, std_offset, utc_offset: std_offset, ..Timezone::default() };
        check(&message::timezone(&tz), &cfg)?;
        let cpus = online.map(|n| Cpus { online: n, present: n });
        check(&message::number_of_cpus(cpus.as_ref()), &cfg)?;
        check(&message::containers(&containers), &cfg)?;
        for s in ["session-startup", "session-shutdown", "session-lock", "session-unlock",
                  "session-logon", "session-logoff"] {
            check(&Message::bare(s), &cfg)?;
        }
        // completion is checked as the reply the host waits for.
        let c = message::completion(&reply);
        let (frame, _) = encode_capped(c.name, &c.body, None, cfg.max_message).unwrap();
        let mut checker = Checker::at(0);
        checker.awaiting.insert(reply.to_string());
        // The filter may have changed the id's text; the host matches on what it receives.
        let got: Value = serde_json::from_slice(&frame).unwrap();
        checker.awaiting.insert(got["reply_id"].to_string());
        prop_assert!(checker.check_line(&frame[..frame.len() - 1]).is_ok());
    }
}
