//! Native tests of [`configure`](super::configure) with real namespaces: a thread that has
//! unshared its network namespace stands for the guest's root one (it holds a veth end with a
//! known MAC, as the guest holds its virtio-net interfaces), another for the container's; the
//! configuration runs from a thread in the fake root, and `ip -j` (through `nsenter`) reads back
//! what a container would see. Both namespaces, and the veths in them, go when the test ends.
//!
//! Needs root, `ip` and `nsenter`, and veth support; without them each test says why it skips.

use std::io;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;

use nix::sched::CloneFlags;
use serde_json::Value;
use vessel_protocol::network::{Address, Interface, Mac, Neighbour, Route};
use vessel_protocol::Code;

use super::configure::{configure, ConfigureError};

/// A network namespace of its own, held by a parked thread until dropped.
struct Netns {
    tid: i32,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Netns {
    fn new() -> io::Result<Netns> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let r = nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map(|()| nix::unistd::gettid().as_raw());
            let _ = ready_tx.send(r);
            let _ = stop_rx.recv();
        });
        let tid = ready_rx
            .recv()
            .map_err(|_| io::Error::other("netns thread died"))??;
        Ok(Netns {
            tid,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.tid)
    }

    /// Runs `ip args` in this namespace; fails with its stderr.
    fn ip(&self, args: &str) -> io::Result<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .arg("ip")
            .args(args.split_whitespace())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ip {args}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ip -j args` in this namespace, parsed.
    fn ip_json(&self, args: &str) -> Vec<Value> {
        let out = self.ip(&format!("-j {args}")).unwrap();
        if out.trim().is_empty() {
            return Vec::new();
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args}: {e}: {out}"))
    }

    /// Adds a veth pair: `name` with MAC `mac` here, its peer `peer` here too and up (a carrier,
    /// as a virtio-net device has).
    fn add_veth(&self, name: &str, mac: Mac, peer: &str) -> io::Result<()> {
        self.ip(&format!(
            "link add {name} address {mac} type veth peer name {peer}"
        ))?;
        self.ip(&format!("link set {peer} up")).map(drop)
    }

    /// Runs `f` on a thread that has entered this namespace (as the agent runs in the guest's
    /// root one).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = std::fs::File::open(self.path()).unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root for network namespaces and veth pairs".into());
    }
    let probe = || -> io::Result<()> {
        let ns = Netns::new()?;
        ns.add_veth("probe0", Mac::local(1), "probe1")
    };
    probe()
        .err()
        .map(|e| format!("needs nsenter, ip and veth support: {e}"))
}

macro_rules! require_root {
    ($name:literal) => {
        if let Some(why) = skip_reason() {
            eprintln!("{}: skipped: {why}", $name);
            return;
        }
    };
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

fn addr(s: &str, prefix_len: u8) -> Address {
    Address {
        ip: ip(s),
        prefix_len,
    }
}

fn route(destination: Option<Address>, gateway: Option<&str>, ipv6: bool) -> Route {
    Route {
        destination,
        gateway: gateway.map(ip),
        source: None,
        scope: 0,
        metric: None,
        mtu: None,
        ipv6,
    }
}

/// eth0 as a CNI bridge network gives it: IPv4 and IPv6, an on-link route, default routes
/// through gateways (the IPv4 one with an MTU), a permanent neighbour.
fn eth0(guest_mac: Mac) -> Interface {
    Interface {
        name: "eth0".into(),
        guest_mac,
        mac: "0a:58:0a:58:00:05".parse().unwrap(),
        mtu: 1400,
        addresses: vec![addr("10.88.0.5", 16), addr("fd00:88::5", 64)],
        routes: vec![
            Route {
                scope: 253,
                ..route(Some(addr("10.89.0.0", 16)), None, false)
            },
            Route {
                mtu: Some(1350),
                metric: Some(100),
                ..route(None, Some("10.88.0.1"), false)
            },
            route(None, Some("fd00:88::1"), true),
        ],
        neighbours: vec![Neighbour {
            ip: ip("10.88.0.9"),
            mac: "0a:58:0a:58:00:09".parse().unwrap(),
        }],
    }
}

/// The fake guest root with guest interface `vg0` (MAC `guest_mac`), and a container namespace.
fn namespaces(guest_mac: Mac) -> (Netns, Netns) {
    let root = Netns::new().unwrap();
    root.add_veth("vg0", guest_mac, "vp0").unwrap();
    (root, Netns::new().unwrap())
}

fn addresses(link: &Value, family: &str) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == family && a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[test]
fn an_interface_gets_name_mac_mtu_addresses_routes_and_neighbours_in_the_container() {
    require_root!(
        "an_interface_gets_name_mac_mtu_addresses_routes_and_neighbours_in_the_container"
    );
    let guest_mac = Mac::local(0x11);
    let (root, container) = namespaces(guest_mac);
    let want = eth0(guest_mac);
    let mut done = Vec::new();
    let tid = container.tid;
    root.run(|| configure(tid, std::slice::from_ref(&want), &mut done))
        .unwrap();
    assert_eq!(done, std::slice::from_ref(&want));

    let links = container.ip_json("addr show dev eth0");
    let link = &links[0];
    assert_eq!(link["ifname"], "eth0");
    assert_eq!(link["address"], "0a:58:0a:58:00:05");
    assert_eq!(link["mtu"], 1400);
    assert!(
        link["flags"].as_array().unwrap().contains(&"UP".into()),
        "{link}"
    );
    assert_eq!(addresses(link, "inet"), ["10.88.0.5/16"]);
    let v4 = &link["addr_info"].as_array().unwrap()[0];
    assert_eq!(v4["broadcast"], "10.88.255.255", "{v4}");
    assert_eq!(addresses(link, "inet6"), ["fd00:88::5/64"]);
    let v6 = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["local"] == "fd00:88::5")
        .unwrap();
    assert!(v6.get("tentative").is_none(), "usable at once: {v6}");
    // What `stats` reports for the container reads the same namespace.
    assert!(std::fs::read_to_string(format!("/proc/{tid}/net/dev"))
        .unwrap()
        .contains("eth0:"));

    let routes = container.ip_json("-4 route show dev eth0");
    let default = routes.iter().find(|r| r["dst"] == "default").unwrap();
    assert_eq!(default["gateway"], "10.88.0.1", "{default}");
    assert_eq!(default["metric"], 100, "{default}");
    assert_eq!(default["metrics"][0]["mtu"], 1350, "{default}");
    let onlink = routes.iter().find(|r| r["dst"] == "10.89.0.0/16").unwrap();
    assert_eq!(onlink["scope"], "link", "{onlink}");
    assert!(onlink.get("gateway").is_none(), "{onlink}");
    let routes6 = container.ip_json("-6 route show dev eth0");
    let default6 = routes6.iter().find(|r| r["dst"] == "default").unwrap();
    assert_eq!(default6["gateway"], "fd00:88::1", "{default6}");

    let neigh = container.ip_json("neigh show dev eth0");
    let n = neigh.iter().find(|n| n["dst"] == "10.88.0.9").unwrap();
    assert_eq!(n["lladdr"], "0a:58:0a:58:00:09");
    assert_eq!(n["state"], Value::from(vec!["PERMANENT"]), "{n}");

    // The guest interface left the root namespace.
    assert!(root.ip("link show vg0").is_err());

    // A second request with a new interface configures it, next to the first.
    root.add_veth("vg1", Mac::local(0x12), "vp1").unwrap();
    let eth1 = Interface {
        name: "eth1".into(),
        guest_mac: Mac::local(0x12),
        mac: "0a:58:0a:59:00:05".parse().unwrap(),
        mtu: 1500,
        addresses: vec![addr("10.89.0.5", 24)],
        routes: vec![],
        neighbours: vec![],
    };
    root.run(|| configure(tid, std::slice::from_ref(&eth1), &mut done))
        .unwrap();
    assert_eq!(done, [want.clone(), eth1]);
    let link = &container.ip_json("addr show dev eth1")[0];
    assert_eq!(addresses(link, "inet"), ["10.89.0.5/24"]);
    assert_eq!(
        addresses(&container.ip_json("addr show dev eth0")[0], "inet"),
        ["10.88.0.5/16"]
    );

    // The first one again: its guest interface is gone from the root namespace.
    let e = root
        .run(|| configure(tid, std::slice::from_ref(&want), &mut done))
        .unwrap_err();
    assert!(
        matches!(e, ConfigureError::FindGuestInterface { .. }),
        "{e}"
    );
}

#[test]
fn ipv6_is_left_out_when_the_container_disables_it() {
    require_root!("ipv6_is_left_out_when_the_container_disables_it");
    let guest_mac = Mac::local(0x21);
    let (root, container) = namespaces(guest_mac);
    Command::new("nsenter")
        .arg(format!("--net={}", container.path()))
        .args(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        .status()
        .unwrap();
    let tid = container.tid;
    let mut done = Vec::new();
    root.run(|| configure(tid, &[eth0(guest_mac)], &mut done))
        .unwrap();
    let link = &container.ip_json("addr show dev eth0")[0];
    assert_eq!(addresses(link, "inet"), ["10.88.0.5/16"]);
    assert!(addresses(link, "inet6").is_empty(), "{link}");
    assert!(container.ip_json("-6 route show dev eth0").is_empty());
    assert!(container
        .ip_json("-4 route show dev eth0")
        .iter()
        .any(|r| r["dst"] == "default"));
}

#[test]
fn a_missing_guest_mac_and_a_name_clash_are_named_and_change_nothing() {
    require_root!("a_missing_guest_mac_and_a_name_clash_are_named_and_change_nothing");
    let guest_mac = Mac::local(0x31);
    let (root, container) = namespaces(guest_mac);
    let tid = container.tid;
    let mut done = Vec::new();

    let e = root
        .run(|| configure(tid, &[eth0(Mac::local(0x99))], &mut done))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let text = e.to_string();
    assert!(
        text.starts_with("eth0: no interface of the guest has MAC 02:76:00:00:00:99"),
        "{text}"
    );

    container
        .add_veth("eth0", Mac::local(0x77), "other0")
        .unwrap();
    let e = root
        .run(|| configure(tid, &[eth0(guest_mac)], &mut done))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(
        e.to_string()
            .contains("a link named eth0 already exists in the container's network namespace"),
        "{e}"
    );
    assert!(done.is_empty());
    // Still in the root namespace, as it was.
    let vg0 = &root.ip_json("link show vg0")[0];
    assert_eq!(vg0["address"], guest_mac.to_string());
}

#[test]
fn a_failing_step_names_the_errno_and_puts_the_interface_back() {
    require_root!("a_failing_step_names_the_errno_and_puts_the_interface_back");
    let guest_mac = Mac::local(0x41);
    let (root, container) = namespaces(guest_mac);
    let tid = container.tid;
    let mut bad = eth0(guest_mac);
    // A gateway outside every subnet of the interface.
    bad.routes = vec![route(None, Some("192.0.2.1"), false)];
    let mut done = Vec::new();
    let e = root
        .run(|| configure(tid, std::slice::from_ref(&bad), &mut done))
        .unwrap_err();
    assert_eq!(
        vessel_error::chain(&e),
        "eth0: add route default via 192.0.2.1: Network is unreachable (os error 101)"
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(done.is_empty());
    assert!(container.ip("link show eth0").is_err());
    let vg0 = &root.ip_json("addr show vg0")[0];
    assert_eq!(vg0["address"], guest_mac.to_string());
    assert_eq!(vg0["mtu"], 1500);
    assert!(vg0["addr_info"].as_array().unwrap().is_empty(), "{vg0}");
    assert!(!vg0["flags"].as_array().unwrap().contains(&"UP".into()));

    // Fixed, the same request goes through.
    let good = eth0(guest_mac);
    root.run(|| configure(tid, std::slice::from_ref(&good), &mut done))
        .unwrap();
    assert_eq!(done, [good]);
}

#[test]
fn a_container_in_the_agents_namespace_is_refused() {
    require_root!("a_container_in_the_agents_namespace_is_refused");
    let guest_mac = Mac::local(0x51);
    let (root, _container) = namespaces(guest_mac);
    let tid = root.tid;
    let mut done = Vec::new();
    let e = root
        .run(|| configure(tid, &[eth0(guest_mac)], &mut done))
        .unwrap_err();
    assert!(matches!(e, ConfigureError::SharedNamespace { .. }), "{e}");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e
        .to_string()
        .contains("`network` entry in linux.namespaces"));
}
