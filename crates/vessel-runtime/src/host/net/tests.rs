//! The scan and the wiring against a real network namespace of this host: a thread unshares
//! one (`CLONE_NEWNET` moves only that thread), and `ip`/`tc` run from it (a child inherits the
//! thread's namespace) build and inspect what a CNI plugin would leave there. Needs root, veth,
//! tun and the `ingress`/`u32`/`mirred` tc modules; says so and skips otherwise.

use std::process::Command;

use super::*;

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to make a network namespace".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no ip(8)".into());
    }
    None
}

/// Runs `f` in a thread of a new network namespace.
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare net");
        f()
    })
    .join()
    .expect("netns thread")
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a CNI bridge plugin leaves in a pod's namespace, plus a route with its own MTU and a
/// permanent neighbour.
fn cni_like() {
    sh("ip link add eth0 type veth peer name peer0 && \
        ip link set eth0 address 0a:58:0a:58:00:05 mtu 1400 && \
        ip link set lo up && ip link set eth0 up && ip link set peer0 up && \
        ip addr add 10.88.0.5/16 dev eth0 && \
        ip -6 addr add fd00:88::5/64 dev eth0 nodad && \
        ip route add default via 10.88.0.1 dev eth0 mtu 1350 && \
        ip route add 192.0.2.0/24 dev eth0 scope link && \
        ip neigh add 10.88.0.9 lladdr 0a:58:0a:58:00:09 dev eth0 nud permanent && \
        ip link set peer0 down");
}

#[test]
fn a_scan_reads_what_cni_left_and_skips_lo_taps_and_down_links() {
    if let Some(why) = skip_reason() {
        eprintln!("a_scan_reads_what_cni_left_and_skips_lo_taps_and_down_links: skipped: {why}");
        return;
    }
    let found = in_new_netns(|| {
        cni_like();
        sh("ip tuntap add vessel-tap0 mode tap && ip link set vessel-tap0 up");
        let mut nl = Netlink::open().unwrap();
        scan::scan(&mut nl).unwrap()
    });
    assert_eq!(found.len(), 1, "only eth0: {found:?}");
    let eth0 = &found[0];
    assert_eq!(eth0.kind, "veth");
    let i = &eth0.interface;
    assert_eq!(i.name, "eth0");
    assert_eq!(i.mac.to_string(), "0a:58:0a:58:00:05");
    assert_eq!(i.mtu, 1400);
    let addrs: Vec<String> = i
        .addresses
        .iter()
        .map(|a| format!("{}/{}", a.ip, a.prefix_len))
        .collect();
    assert_eq!(
        addrs,
        ["10.88.0.5/16", "fd00:88::5/64"],
        "no fe80:: address"
    );
    // The on-link route first, then the default route with its MTU; no kernel routes.
    assert_eq!(i.routes.len(), 2, "{:?}", i.routes);
    let onlink = &i.routes[0];
    assert_eq!(
        onlink
            .destination
            .map(|d| format!("{}/{}", d.ip, d.prefix_len))
            .as_deref(),
        Some("192.0.2.0/24")
    );
    assert_eq!((onlink.gateway, onlink.scope), (None, 253));
    let default = &i.routes[1];
    assert_eq!(default.destination, None);
    assert_eq!(default.gateway, Some("10.88.0.1".parse().unwrap()));
    assert_eq!(default.mtu, Some(1350));
    assert!(!default.ipv6);
    assert_eq!(i.neighbours.len(), 1);
    assert_eq!(
        i.neighbours[0].ip,
        "10.88.0.9".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(i.neighbours[0].mac.to_string(), "0a:58:0a:58:00:09");
}

#[test]
fn an_interface_that_is_up_and_not_ethernet_is_refused_by_name() {
    if let Some(why) = skip_reason() {
        eprintln!("an_interface_that_is_up_and_not_ethernet_is_refused_by_name: skipped: {why}");
        return;
    }
    let result = in_new_netns(|| {
        // A tun (layer 3) device that is up: nothing Ethernet to give a virtio-net device.
        sh("ip tuntap add l3tun mode tun && ip link set l3tun up");
        let mut nl = Netlink::open().unwrap();
        scan::scan(&mut nl)
    });
    let e = result.unwrap_err();
    assert!(
        matches!(e, ScanError::Unwireable { ref name, .. } if name == "l3tun"),
        "{e}"
    );
    assert!(e.to_string().contains("interface l3tun"), "{e}");
}

#[test]
fn wiring_redirects_both_ways_with_the_tap_at_the_interface_mtu_and_unwiring_removes_it() {
    if let Some(why) = skip_reason() {
        eprintln!(
            "wiring_redirects_both_ways_with_the_tap_at_the_interface_mtu_and_unwiring_removes_it: \
             skipped: {why}"
        );
        return;
    }
    let (devices, interfaces, filters, tap_mtu, after, late) = in_new_netns(|| {
        cni_like();
        let mut wiring = Wiring::plan(false).unwrap();
        let devices = wiring.devices().to_vec();
        // The VMM opens the taps when the VM boots.
        sh("ip tuntap add vessel-tap0 mode tap");
        let interfaces = wiring.wire().unwrap();
        let again = wiring.wire().unwrap();
        assert!(again.is_empty(), "wired once: {again:?}");
        let filters =
            sh("tc filter show dev eth0 ingress; echo ---; tc filter show dev vessel-tap0 ingress");
        // /sys shows the namespace it was mounted in: ask ip(8).
        let tap_mtu = sh("ip -o link show vessel-tap0");
        // A second interface appears: no device is left for it.
        sh("ip link add eth1 type veth peer name peer1 && ip link set eth1 up");
        let late = wiring.wire().unwrap_err().to_string();
        wiring.unwire();
        let after = sh("tc qdisc show dev eth0 ingress");
        (devices, interfaces, filters, tap_mtu, after, late)
    });
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].tap, "vessel-tap0");
    assert_eq!(devices[0].guest_mac.to_string(), "0a:58:0a:58:00:05");
    assert_eq!(interfaces.len(), 1);
    assert_eq!(interfaces[0].name, "eth0");
    assert_eq!(interfaces[0].guest_mac, devices[0].guest_mac);
    let (eth0, tap) = filters.split_once("---").unwrap();
    assert!(
        eth0.contains("u32") && eth0.contains("Egress Redirect to device vessel-tap0"),
        "{filters}"
    );
    assert!(tap.contains("Egress Redirect to device eth0"), "{filters}");
    assert!(
        tap_mtu.contains(" mtu 1400 ") && tap_mtu.contains(",UP"),
        "{tap_mtu}"
    );
    assert!(
        late.contains("interface eth1 appeared") && late.contains("1 network device"),
        "{late}"
    );
    assert!(!after.contains("ingress"), "qdisc left: {after}");
}

#[test]
fn a_namespace_the_monitor_made_gets_one_device_before_docker_moves_its_veth_in() {
    if let Some(why) = skip_reason() {
        eprintln!(
            "a_namespace_the_monitor_made_gets_one_device_before_docker_moves_its_veth_in: \
             skipped: {why}"
        );
        return;
    }
    let (empty, docker) = in_new_netns(|| {
        (
            Wiring::plan(false).unwrap().devices().len(),
            Wiring::plan(true).unwrap().devices().to_vec(),
        )
    });
    assert_eq!(empty, 0, "--net none: no device");
    assert_eq!(docker.len(), 1);
    assert_eq!(docker[0].guest_mac.0[0], 0x02, "locally administered");
}

#[test]
fn a_namespace_another_vessel_vm_owns_is_refused_naming_its_tap() {
    if let Some(why) = skip_reason() {
        eprintln!("a_namespace_another_vessel_vm_owns_is_refused_naming_its_tap: skipped: {why}");
        return;
    }
    let e = in_new_netns(|| {
        cni_like();
        sh("ip tuntap add vessel-tap0 mode tap");
        Wiring::plan(false).unwrap_err()
    });
    assert!(
        matches!(e, NetError::Shared { ref tap } if tap == "vessel-tap0"),
        "{e}"
    );
    assert!(e.to_string().contains("--network container:<id>"), "{e}");
}

#[test]
fn leftovers_of_a_killed_monitor_are_taken_off_in_a_namespace_someone_else_keeps() {
    if let Some(why) = skip_reason() {
        eprintln!(
            "leftovers_of_a_killed_monitor_are_taken_off_in_a_namespace_someone_else_keeps: \
             skipped: {why}"
        );
        return;
    }
    let name = format!("vessel-test-{}", std::process::id());
    sh(&format!(
        "ip netns add {name} && ip netns exec {name} sh -c 'ip link add eth0 type veth peer name peer0 && \
         ip tuntap add vessel-tap0 mode tap && tc qdisc add dev eth0 ingress && \
         tc filter add dev eth0 ingress protocol all u32 match u8 0 0 action mirred egress redirect dev vessel-tap0'"
    ));
    let left = Leftovers {
        netns: format!("/run/netns/{name}").into(),
        interfaces: vec!["eth0".into(), "gone0".into()],
    };
    let before = sh(&format!(
        "ip netns exec {name} tc qdisc show dev eth0 ingress"
    ));
    let result = left.remove();
    let after = sh(&format!(
        "ip netns exec {name} tc qdisc show dev eth0 ingress"
    ));
    sh(&format!("ip netns del {name}"));
    result.unwrap();
    assert!(before.contains("ingress"), "{before}");
    assert!(!after.contains("ingress"), "left: {after}");
    // A namespace that is gone has nothing left to remove.
    left.remove().unwrap();
}
