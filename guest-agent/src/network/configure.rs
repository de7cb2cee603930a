//! `configure_network`: gives a created container the interfaces the host found in its network
//! namespace, each one a virtio-net interface of the guest.
//!
//! Per interface, in the order listed:
//! 1. find the guest interface whose MAC is `guest_mac` in the agent's network namespace (the
//!    guest's root one);
//! 2. check that no link of the container's namespace has the interface's name already;
//! 3. set the guest interface down and move it into the container's network namespace, named
//!    `name` there (one `RTM_SETLINK` with `IFLA_NET_NS_FD` and `IFLA_IFNAME`);
//! 4. inside that namespace: set its MAC, its MTU, bring it up, add its addresses, its routes in
//!    the order given, its permanent neighbours. IPv6 addresses, routes and neighbours are added
//!    only where `net.ipv6.conf.all.disable_ipv6` and the interface's own `disable_ipv6`, read in
//!    the container's namespace, are both 0 (the spec's `linux.sysctl` was applied there at
//!    create); IPv6 addresses carry `IFA_F_NODAD`, so they are usable at once.
//!
//! If a step of 4 fails, the interface is put back as it was found (down, its guest MAC and MTU,
//! back in the agent's namespace under its guest name, which drops whatever addresses, routes and
//! neighbours it had been given), so the host may send it again. Interfaces configured before
//! the failing one stay configured.
//!
//! The agent's threads stay in the guest's root namespace: the container-side steps run on a
//! dedicated thread that `setns`es into `/proc/<pid>/ns/net` (which only moves that thread) and
//! ends with the request; the agent-side netlink socket is opened before, in the root namespace.

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use nix::sched::CloneFlags;
use vessel_protocol::network::{Interface, Mac};
use vessel_protocol::Code;

use super::messages::{self, Link};
use super::netlink::{Netlink, NetlinkError};

/// The longest interface name the kernel takes (`IFNAMSIZ` - 1).
const MAX_NAME_LEN: usize = 15;

/// Errors of configuring a container's interfaces; each names the interface and what failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// An interface of the request is malformed (nothing was changed).
    #[error("interface {name:?}: {reason}")]
    CheckInterface {
        /// The interface's name.
        name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The container's init is in the agent's own network namespace.
    #[error(
        "container process {pid} shares the agent's network namespace: its spec needs a \
         `network` entry in linux.namespaces to be given interfaces"
    )]
    SharedNamespace {
        /// The container's init.
        pid: i32,
    },
    /// A namespace file could not be opened or examined.
    #[error("open network namespace {}", path.display())]
    OpenNamespace {
        /// The `/proc/.../ns/net` file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `setns` into the container's network namespace failed.
    #[error("enter the network namespace of container process {pid}")]
    EnterNamespace {
        /// The container's init.
        pid: i32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// A netlink exchange that is not about one interface failed.
    #[error("{what} in the {namespace} network namespace")]
    Netlink {
        /// What was being done.
        what: &'static str,
        /// `agent's` or `container's`.
        namespace: &'static str,
        /// Why.
        #[source]
        source: NetlinkError,
    },
    /// No guest interface has the MAC the host gave its virtio-net device.
    #[error(
        "{name}: no interface of the guest has MAC {guest_mac} (its virtio-net device is \
         missing from the VM, or the interface was already moved)"
    )]
    FindGuestInterface {
        /// The interface's name.
        name: String,
        /// The MAC searched for.
        guest_mac: Mac,
    },
    /// The container's namespace already has a link of that name.
    #[error(
        "{name}: a link named {name} already exists in the container's network namespace \
         (index {index})"
    )]
    NameTaken {
        /// The interface's name.
        name: String,
        /// The existing link's index.
        index: u32,
    },
    /// A step of one interface's configuration failed; `step` names it, the source is the
    /// kernel's answer.
    #[error("{name}: {step}")]
    Step {
        /// The interface's name.
        name: String,
        /// The step (`add address 10.88.0.5/16`).
        step: String,
        /// Why.
        #[source]
        source: NetlinkError,
    },
    /// An IPv6 sysctl of the container's namespace could not be read.
    #[error("{name}: read {}", path.display())]
    ReadSysctl {
        /// The interface's name.
        name: String,
        /// The sysctl file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The thread working in the container's namespace panicked.
    #[error("the thread configuring the container's network panicked")]
    WorkerPanicked,
}

impl ConfigureError {
    /// The status code the host gets for this error.
    pub fn code(&self) -> Code {
        match self {
            ConfigureError::CheckInterface { .. } => Code::InvalidArgument,
            ConfigureError::SharedNamespace { .. } => Code::FailedPrecondition,
            ConfigureError::FindGuestInterface { .. } => Code::NotFound,
            ConfigureError::NameTaken { .. } => Code::AlreadyExists,
            ConfigureError::Step { source, .. } => match source.errno() {
                Some(libc::EEXIST) => Code::AlreadyExists,
                Some(libc::EINVAL | libc::ERANGE | libc::ENETUNREACH | libc::EADDRNOTAVAIL) => {
                    Code::InvalidArgument
                }
                _ => Code::Internal,
            },
            _ => Code::Internal,
        }
    }
}

/// Checks every interface of a request before anything is changed: names the kernel takes and
/// unique, unique guest MACs, prefix lengths within their family, routes whose addresses are of
/// the route's family.
///
/// # Errors
/// [`ConfigureError::CheckInterface`] naming the interface and the field.
pub fn validate(interfaces: &[Interface]) -> Result<(), ConfigureError> {
    for (n, i) in interfaces.iter().enumerate() {
        let bad = |reason: String| ConfigureError::CheckInterface {
            name: i.name.clone(),
            reason,
        };
        if i.name.is_empty()
            || i.name.len() > MAX_NAME_LEN
            || i.name == "."
            || i.name == ".."
            || i.name
                .contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(bad(format!(
                "not a valid interface name: 1 to {MAX_NAME_LEN} bytes, no '/', ':' or \
                 whitespace, not . or .."
            )));
        }
        if let Some(other) = interfaces[..n]
            .iter()
            .find(|o| o.name == i.name || o.guest_mac == i.guest_mac)
        {
            return Err(bad(format!(
                "listed twice in the request (name {} or guest MAC {} repeated): list each \
                 interface once",
                other.name, other.guest_mac
            )));
        }
        for a in &i.addresses {
            if a.prefix_len > max_prefix(&a.ip) {
                return Err(bad(format!(
                    "address {}/{}: prefix length above {}",
                    a.ip,
                    a.prefix_len,
                    max_prefix(&a.ip)
                )));
            }
        }
        for (k, r) in i.routes.iter().enumerate() {
            let ips = r
                .destination
                .map(|d| d.ip)
                .into_iter()
                .chain(r.gateway)
                .chain(r.source);
            for ip in ips {
                if ip.is_ipv6() != r.ipv6 {
                    return Err(bad(format!(
                        "routes[{k}]: address {ip} is not of the route's family (ipv6: {}): \
                         set ipv6 to match its addresses",
                        r.ipv6
                    )));
                }
            }
            if let Some(d) = r.destination.filter(|d| d.prefix_len > max_prefix(&d.ip)) {
                return Err(bad(format!(
                    "routes[{k}]: destination {}/{}: prefix length above {}",
                    d.ip,
                    d.prefix_len,
                    max_prefix(&d.ip)
                )));
            }
        }
    }
    Ok(())
}

fn max_prefix(ip: &IpAddr) -> u8 {
    if ip.is_ipv6() {
        128
    } else {
        32
    }
}

/// Configures `interfaces` in the network namespace of the container whose init is `pid`, in
/// order, appending each to `configured` once it is done (see the module's documentation).
///
/// # Errors
/// The first failure, naming its interface; the interfaces before it stay configured (and are in
/// `configured`), the failing one is put back as it was found.
pub fn configure(
    pid: i32,
    interfaces: &[Interface],
    configured: &mut Vec<Interface>,
) -> Result<(), ConfigureError> {
    validate(interfaces)?;
    let own_path = Path::new("/proc/thread-self/ns/net");
    let target_path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let own = open_namespace(own_path)?;
    let target = open_namespace(&target_path)?;
    if same_file(&own, own_path, &target, &target_path)? {
        return Err(ConfigureError::SharedNamespace { pid });
    }
    let mut root = Netlink::open().map_err(|source| ConfigureError::Netlink {
        what: "open a netlink socket",
        namespace: "agent's",
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&target, CloneFlags::CLONE_NEWNET)
                .map_err(|source| ConfigureError::EnterNamespace { pid, source })?;
            let mut inner = Netlink::open().map_err(|source| ConfigureError::Netlink {
                what: "open a netlink socket",
                namespace: "container's",
                source,
            })?;
            let mut side = Sides {
                root: &mut root,
                inner: &mut inner,
                own: &own,
                target: &target,
            };
            for i in interfaces {
                side.configure_one(i)?;
                log::info!(
                    "container process {pid}: {} configured (guest MAC {})",
                    i.name,
                    i.guest_mac
                );
                configured.push(i.clone());
            }
            Ok(())
        })
        .join()
        .unwrap_or(Err(ConfigureError::WorkerPanicked))
    })
}

fn open_namespace(path: &Path) -> Result<File, ConfigureError> {
    File::open(path).map_err(|source| ConfigureError::OpenNamespace {
        path: path.to_owned(),
        source,
    })
}

/// Whether two namespace files are the same namespace (same device and inode).
fn same_file(a: &File, a_path: &Path, b: &File, b_path: &Path) -> Result<bool, ConfigureError> {
    let meta = |f: &File, p: &Path| {
        f.metadata()
            .map_err(|source| ConfigureError::OpenNamespace {
                path: p.to_owned(),
                source,
            })
    };
    let (a, b) = (meta(a, a_path)?, meta(b, b_path)?);
    Ok((a.dev(), a.ino()) == (b.dev(), b.ino()))
}

/// The two namespaces and a socket in each; used from the thread that has entered `target`.
struct Sides<'a> {
    /// A socket of the agent's (root) namespace.
    root: &'a mut Netlink,
    /// A socket of the container's namespace.
    inner: &'a mut Netlink,
    /// The agent's namespace.
    own: &'a File,
    /// The container's namespace.
    target: &'a File,
}

fn links(nl: &mut Netlink, namespace: &'static str) -> Result<Vec<Link>, ConfigureError> {
    let answer = nl
        .dump(RouteNetlinkMessage::GetLink(messages::get_links()))
        .map_err(|source| ConfigureError::Netlink {
            what: "list links",
            namespace,
            source,
        })?;
    Ok(answer
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
            _ => None,
        })
        .collect())
}

impl Sides<'_> {
    fn configure_one(&mut self, i: &Interface) -> Result<(), ConfigureError> {
        let step = |what: String| {
            let name = i.name.clone();
            move |source| ConfigureError::Step {
                name,
                step: what,
                source,
            }
        };
        let guest = links(self.root, "agent's")?
            .into_iter()
            .find(|l| l.mac == Some(i.guest_mac))
            .ok_or_else(|| ConfigureError::FindGuestInterface {
                name: i.name.clone(),
                guest_mac: i.guest_mac,
            })?;
        if let Some(l) = links(self.inner, "container's")?
            .into_iter()
            .find(|l| l.name == i.name)
        {
            return Err(ConfigureError::NameTaken {
                name: i.name.clone(),
                index: l.index,
            });
        }
        self.root
            .request(
                RouteNetlinkMessage::SetLink(messages::set_up(guest.index, false)),
                0,
            )
            .map_err(step(format!("set guest interface {} down", guest.name)))?;
        self.root
            .request(
                RouteNetlinkMessage::SetLink(messages::move_to_namespace(
                    guest.index,
                    self.target.as_raw_fd(),
                    &i.name,
                )),
                0,
            )
            .map_err(step(format!(
                "move guest interface {} into the container's network namespace",
                guest.name
            )))?;
        // The index may change with the namespace; the name is the one just given.
        let index = links(self.inner, "container's")?
            .into_iter()
            .find(|l| l.name == i.name)
            .map(|l| l.index)
            .ok_or_else(|| {
                step(format!(
                    "find guest interface {} in the container's network namespace",
                    guest.name
                ))(NetlinkError::Kernel(io::Error::from_raw_os_error(
                    libc::ENODEV,
                )))
            })?;
        if let Err(e) = self.set_up_moved(index, i) {
            if let Err(undo) = self.put_back(index, &guest) {
                log::warn!(
                    "{}: could not put guest interface {} back: {}",
                    i.name,
                    guest.name,
                    vessel_error::chain(&undo)
                );
            }
            return Err(e);
        }
        Ok(())
    }

    /// Step 4 of the module's documentation, on link `index` of the container's namespace.
    fn set_up_moved(&mut self, index: u32, i: &Interface) -> Result<(), ConfigureError> {
        let step = |what: String| {
            let name = i.name.clone();
            move |source| ConfigureError::Step {
                name,
                step: what,
                source,
            }
        };
        let nl = &mut *self.inner;
        let link = |m| RouteNetlinkMessage::SetLink(m);
        nl.request(link(messages::set_mac(index, i.mac)), 0)
            .map_err(step(format!("set MAC {}", i.mac)))?;
        nl.request(link(messages::set_mtu(index, i.mtu)), 0)
            .map_err(step(format!("set MTU {}", i.mtu)))?;
        nl.request(link(messages::set_up(index, true)), 0)
            .map_err(step("set up".into()))?;
        let ipv6 = ipv6_enabled(&i.name)?;
        let create = NLM_F_CREATE | NLM_F_EXCL;
        let skip = |what: String| {
            log::info!(
                "{}: {what} skipped: IPv6 is disabled in the container's network namespace",
                i.name
            );
        };
        for a in &i.addresses {
            let what = format!("add address {}/{}", a.ip, a.prefix_len);
            if a.ip.is_ipv6() && !ipv6 {
                skip(what);
                continue;
            }
            nl.request(
                RouteNetlinkMessage::NewAddress(messages::add_address(index, a)),
                create,
            )
            .map_err(step(what))?;
        }
        for r in &i.routes {
            let what = format!("add route {}", describe_route(r));
            if r.ipv6 && !ipv6 {
                skip(what);
                continue;
            }
            nl.request(
                RouteNetlinkMessage::NewRoute(messages::add_route(index, r)),
                create,
            )
            .map_err(step(what))?;
        }
        for n in &i.neighbours {
            let what = format!("add neighbour {} lladdr {}", n.ip, n.mac);
            if n.ip.is_ipv6() && !ipv6 {
                skip(what);
                continue;
            }
            nl.request(
                RouteNetlinkMessage::NewNeighbour(messages::add_neighbour(index, n)),
                create,
            )
            .map_err(step(what))?;
        }
        Ok(())
    }

    /// Puts link `index` of the container's namespace back as `guest` was: down, its MAC and
    /// MTU, in the agent's namespace under its name (moving drops addresses, routes and
    /// neighbours).
    fn put_back(&mut self, index: u32, guest: &Link) -> Result<(), NetlinkError> {
        let nl = &mut *self.inner;
        nl.request(
            RouteNetlinkMessage::SetLink(messages::set_up(index, false)),
            0,
        )?;
        if let Some(mac) = guest.mac {
            nl.request(
                RouteNetlinkMessage::SetLink(messages::set_mac(index, mac)),
                0,
            )?;
        }
        nl.request(
            RouteNetlinkMessage::SetLink(messages::set_mtu(index, guest.mtu)),
            0,
        )?;
        nl.request(
            RouteNetlinkMessage::SetLink(messages::move_to_namespace(
                index,
                self.own.as_raw_fd(),
                &guest.name,
            )),
            0,
        )?;
        Ok(())
    }
}

/// `ip route`'s words for `r` (`default via 10.88.0.1 mtu 1350`), for error messages.
fn describe_route(r: &vessel_protocol::network::Route) -> String {
    let mut s = match &r.destination {
        Some(d) => format!("{}/{}", d.ip, d.prefix_len),
        None => "default".to_owned(),
    };
    if let Some(g) = r.gateway {
        s += &format!(" via {g}");
    }
    if let Some(src) = r.source {
        s += &format!(" src {src}");
    }
    if let Some(m) = r.metric {
        s += &format!(" metric {m}");
    }
    if let Some(m) = r.mtu {
        s += &format!(" mtu {m}");
    }
    s
}

/// Whether IPv6 is enabled for interface `name` in the calling thread's network namespace:
/// `net.ipv6.conf.all.disable_ipv6` and `net.ipv6.conf.<name>.disable_ipv6` both 0. A kernel
/// without IPv6 (no `/proc/sys/net/ipv6`) has it disabled.
fn ipv6_enabled(name: &str) -> Result<bool, ConfigureError> {
    let conf = Path::new("/proc/sys/net/ipv6/conf");
    for file in ["all", name] {
        let path = conf.join(file).join("disable_ipv6");
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == "0" => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(ConfigureError::ReadSysctl {
                    name: name.to_owned(),
                    path,
                    source,
                })
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_protocol::network::{Address, Route};

    fn iface(name: &str, seed: u32) -> Interface {
        Interface {
            name: name.into(),
            guest_mac: Mac::local(seed),
            mac: "0a:58:0a:58:00:05".parse().unwrap(),
            mtu: 1400,
            addresses: vec![Address {
                ip: "10.88.0.5".parse().unwrap(),
                prefix_len: 16,
            }],
            routes: vec![],
            neighbours: vec![],
        }
    }

    fn reason(r: Result<(), ConfigureError>) -> String {
        match r {
            Err(e @ ConfigureError::CheckInterface { .. }) => {
                assert_eq!(e.code(), Code::InvalidArgument);
                e.to_string()
            }
            other => panic!("expected a CheckInterface error, got {other:?}"),
        }
    }

    #[test]
    fn validation_names_the_interface_and_the_field() {
        assert!(validate(&[iface("eth0", 1), iface("net1", 2)]).is_ok());
        let e = reason(validate(&[iface("a-name-too-long-for-linux", 1)]));
        assert!(
            e.contains("\"a-name-too-long-for-linux\"") && e.contains("15 bytes"),
            "{e}"
        );
        for bad in ["", "a/b", "eth 0", "..", "eth0:1"] {
            reason(validate(&[iface(bad, 1)]));
        }
        let e = reason(validate(&[iface("eth0", 1), iface("eth0", 2)]));
        assert!(e.contains("listed twice"), "{e}");
        let e = reason(validate(&[iface("eth0", 1), iface("eth1", 1)]));
        assert!(e.contains("02:76:00:00:00:01"), "{e}");
        let mut i = iface("eth0", 1);
        i.addresses[0].prefix_len = 33;
        let e = reason(validate(&[i]));
        assert!(e.contains("10.88.0.5/33") && e.contains("above 32"), "{e}");
        let mut i = iface("eth0", 1);
        i.routes.push(Route {
            destination: None,
            gateway: Some("fd00::1".parse().unwrap()),
            source: None,
            scope: 0,
            metric: None,
            mtu: None,
            ipv6: false,
        });
        let e = reason(validate(&[i]));
        assert!(e.contains("routes[0]") && e.contains("fd00::1"), "{e}");
    }

    #[test]
    fn routes_are_described_as_ip_route_prints_them_and_kernel_errnos_map_to_codes() {
        let r = Route {
            destination: None,
            gateway: Some("10.88.0.1".parse().unwrap()),
            source: Some("10.88.0.5".parse().unwrap()),
            scope: 0,
            metric: Some(100),
            mtu: Some(1350),
            ipv6: false,
        };
        assert_eq!(
            describe_route(&r),
            "default via 10.88.0.1 src 10.88.0.5 metric 100 mtu 1350"
        );
        let step = |errno| ConfigureError::Step {
            name: "eth0".into(),
            step: "add address 10.88.0.5/16".into(),
            source: NetlinkError::Kernel(io::Error::from_raw_os_error(errno)),
        };
        let e = step(libc::EEXIST);
        assert_eq!(e.code(), Code::AlreadyExists);
        assert_eq!(
            vessel_error::chain(&e),
            "eth0: add address 10.88.0.5/16: File exists (os error 17)"
        );
        assert_eq!(step(libc::EINVAL).code(), Code::InvalidArgument);
        assert_eq!(step(libc::EPERM).code(), Code::Internal);
    }
}
