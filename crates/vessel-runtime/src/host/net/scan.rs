//! Reads the container's network namespace: every interface but `lo` and Vessel's own taps, with
//! its MAC, MTU, addresses, routes (main table, with their own MTU) and permanent neighbours, in
//! the shape the agent reproduces ([`Interface`]).

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use vessel_protocol::network::{Address, Interface, Mac, Neighbour, Route};

use super::netlink::{Netlink, NetlinkError};
use super::TAP_PREFIX;

/// The main routing table (`RT_TABLE_MAIN`).
const MAIN_TABLE: u32 = 254;

/// Errors of [`scan`].
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A dump failed.
    #[error("list the {what} of the container's network namespace")]
    Dump {
        /// Links, addresses, routes or neighbours.
        what: &'static str,
        /// The cause.
        #[source]
        source: NetlinkError,
    },
    /// An interface that is up is not an Ethernet-like device, so no virtio-net device can stand
    /// for it.
    #[error(
        "interface {name} ({kind}) of the container's network namespace cannot be given to the \
         microVM: only Ethernet interfaces (veth, macvlan, ipvlan, tap) can; remove it from the \
         namespace or run this container with runc"
    )]
    Unwireable {
        /// Its name.
        name: String,
        /// Its kind (`wireguard`, `ipip`, ...) or link type.
        kind: String,
    },
}

/// One interface to wire, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its index in the namespace.
    pub index: u32,
    /// Its kind (`veth`, `macvlan`, ...), for messages.
    pub kind: String,
    /// What the agent is to reproduce (`guest_mac` is left at the interface's own MAC).
    pub interface: Interface,
}

/// Every interface of the calling socket's namespace that is up, but `lo` and Vessel's taps, in
/// index order.
///
/// # Errors
/// A dump failed, or an interface that is up cannot be wired ([`ScanError::Unwireable`]).
pub fn scan(nl: &mut Netlink) -> Result<Vec<Found>, ScanError> {
    let dump = |nl: &mut Netlink, what, m| {
        nl.dump(m)
            .map_err(|source| ScanError::Dump { what, source })
    };
    let links = dump(
        nl,
        "links",
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
    )?;
    let addresses = dump(
        nl,
        "addresses",
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
    )?;
    let routes = dump(
        nl,
        "routes",
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
    )?;
    let neighbours = dump(
        nl,
        "neighbours",
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
    )?;
    let mut found = Vec::new();
    for link in links {
        let RouteNetlinkMessage::NewLink(link) = link else {
            continue;
        };
        if let Some(f) = interface(&link)? {
            found.push(f);
        }
    }
    for f in &mut found {
        f.interface.addresses = addresses
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == f.index => address(a),
                _ => None,
            })
            .collect();
        let mut own: Vec<Route> = routes
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route(r, f.index),
                _ => None,
            })
            .collect();
        // Routes on the link before routes through a gateway, which need them.
        own.sort_by_key(|r| r.gateway.is_some());
        f.interface.routes = own;
        f.interface.neighbours = neighbours
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == f.index => neighbour(n),
                _ => None,
            })
            .collect();
    }
    found.sort_by_key(|f| f.index);
    Ok(found)
}

/// The names of Vessel's taps in the namespace (another VM's, when the namespace is shared).
///
/// # Errors
/// The dump failed.
pub fn taps(nl: &mut Netlink) -> Result<Vec<String>, ScanError> {
    let links = nl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(|source| ScanError::Dump {
            what: "links",
            source,
        })?;
    Ok(links
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) if n.starts_with(TAP_PREFIX) => Some(n),
                _ => None,
            }),
            _ => None,
        })
        .collect())
}

/// The link as an interface to wire, `None` to leave it alone (`lo`, a tap of ours, a link that
/// is down and not Ethernet, like the `sit0` a new namespace holds).
fn interface(link: &LinkMessage) -> Result<Option<Found>, ScanError> {
    let mut name = None;
    let mut mac = None;
    let mut mtu = 1500;
    let mut kind = None;
    for a in &link.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(m) if m.len() == 6 => {
                mac = Some(Mac([m[0], m[1], m[2], m[3], m[4], m[5]]))
            }
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        kind = Some(kind_name(k));
                    }
                }
            }
            _ => {}
        }
    }
    let Some(name) = name else {
        return Ok(None);
    };
    let flags = link.header.flags;
    if flags.contains(LinkFlags::Loopback) || name.starts_with(TAP_PREFIX) {
        return Ok(None);
    }
    let up = flags.contains(LinkFlags::Up);
    let ether = link.header.link_layer_type == LinkLayerType::Ether;
    if !up {
        if ether {
            log::debug!("interface {name} of the container's network namespace is down: not wired");
        }
        return Ok(None);
    }
    let Some(mac) = mac.filter(|_| ether) else {
        return Err(ScanError::Unwireable {
            name,
            kind: kind.unwrap_or_else(|| format!("link type {:?}", link.header.link_layer_type)),
        });
    };
    Ok(Some(Found {
        index: link.header.index,
        kind: kind.unwrap_or_else(|| "ethernet".to_owned()),
        interface: Interface {
            name,
            guest_mac: mac,
            mac,
            mtu,
            addresses: Vec::new(),
            routes: Vec::new(),
            neighbours: Vec::new(),
        },
    }))
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Veth => "veth".to_owned(),
        InfoKind::MacVlan => "macvlan".to_owned(),
        InfoKind::MacVtap => "macvtap".to_owned(),
        InfoKind::IpVlan => "ipvlan".to_owned(),
        InfoKind::Tun => "tun".to_owned(),
        InfoKind::Dummy => "dummy".to_owned(),
        InfoKind::Bridge => "bridge".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// An address worth copying: all but IPv6 link-local ones (the guest derives its own from the
/// same MAC).
fn address(a: &AddressMessage) -> Option<Address> {
    let ip = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let ip = ip.or_else(|| {
        a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    if let IpAddr::V6(v6) = ip {
        if v6.segments()[0] & 0xffc0 == 0xfe80 {
            return None;
        }
    }
    Some(Address {
        ip,
        prefix_len: a.header.prefix_len,
    })
}

/// A main-table unicast route through interface `index` that the kernel did not make for an
/// address.
fn route(r: &RouteMessage, index: u32) -> Option<Route> {
    let mut oif = None;
    let mut table = u32::from(r.header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut source = None;
    let mut metric = None;
    let mut mtu = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => destination = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::PrefSource(s) => source = ip_of(s),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::Metrics(ms) => {
                for m in ms {
                    if let RouteMetric::Mtu(v) = m {
                        mtu = Some(*v);
                    }
                }
            }
            _ => {}
        }
    }
    if oif != Some(index)
        || table != MAIN_TABLE
        || r.header.kind != RouteType::Unicast
        || r.header.protocol == RouteProtocol::Kernel
    {
        return None;
    }
    let ipv6 = r.header.address_family == AddressFamily::Inet6;
    Some(Route {
        destination: destination.map(|ip| Address {
            ip,
            prefix_len: r.header.destination_prefix_length,
        }),
        gateway,
        source,
        scope: u8::from(r.header.scope),
        metric,
        mtu,
        ipv6,
    })
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A permanent neighbour entry.
fn neighbour(n: &NeighbourMessage) -> Option<Neighbour> {
    if n.header.state != NeighbourState::Permanent {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                mac = Some(Mac([m[0], m[1], m[2], m[3], m[4], m[5]]))
            }
            _ => {}
        }
    }
    Some(Neighbour { ip: ip?, mac: mac? })
}
