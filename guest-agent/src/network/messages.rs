//! The rtnetlink messages of network configuration, built from the protocol's types: pure
//! functions (no socket), so what is sent can be checked without root.
//!
//! They follow what `ip` and the CNI plugins send: addresses with `IFA_LOCAL` and
//! `IFA_ADDRESS` (and for IPv4 below /31 the broadcast address, as the CNI plugins set it),
//! routes in the main table with protocol `boot` and type unicast, neighbours `nud permanent`.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use vessel_protocol::network::{Address, Mac, Neighbour, Route};

/// A link as a dump lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index in its namespace.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its MAC (`None` for links without an Ethernet address, such as `lo` or `sit0`).
    pub mac: Option<Mac>,
    /// Its MTU.
    pub mtu: u32,
}

impl Link {
    /// The link a `RTM_NEWLINK` message describes.
    pub fn from_message(m: &LinkMessage) -> Self {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                LinkAttribute::Address(b) => {
                    link.mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac)
                }
                LinkAttribute::Mtu(v) => link.mtu = *v,
                _ => {}
            }
        }
        link
    }
}

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A request for every link (`RTM_GETLINK`, sent as a dump).
pub fn get_links() -> LinkMessage {
    LinkMessage::default()
}

/// Sets (`up`) or clears `IFF_UP` on link `index`, leaving the other flags.
pub fn set_up(index: u32, up: bool) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.change_mask = LinkFlags::Up;
    if up {
        m.header.flags = LinkFlags::Up;
    }
    m
}

/// Sets link `index`'s MAC (the link must be down for most drivers).
pub fn set_mac(index: u32, mac: Mac) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    m
}

/// Sets link `index`'s MTU.
pub fn set_mtu(index: u32, mtu: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m
}

/// Moves link `index` into the network namespace `netns_fd` refers to, named `name` there.
pub fn move_to_namespace(index: u32, netns_fd: RawFd, name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::NetNsFd(netns_fd));
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    m
}

/// The IPv4 broadcast address of `ip/prefix_len`, as the CNI plugins set it (none for /31
/// and /32, which have no broadcast).
fn broadcast(ip: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    if prefix_len >= 31 {
        return None;
    }
    let host_mask = u32::MAX >> prefix_len;
    Some(Ipv4Addr::from(u32::from(ip) | host_mask))
}

/// Adds `a` to link `index`; IPv6 addresses with `IFA_F_NODAD`, usable at once.
pub fn add_address(index: u32, a: &Address) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(&a.ip);
    m.header.prefix_len = a.prefix_len;
    m.header.scope = AddressScope::Universe;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(a.ip));
    m.attributes.push(AddressAttribute::Address(a.ip));
    match a.ip {
        IpAddr::V4(v4) => {
            if let Some(b) = broadcast(v4, a.prefix_len) {
                m.attributes.push(AddressAttribute::Broadcast(b));
            }
        }
        IpAddr::V6(_) => {
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    m
}

/// Adds `r` through link `index` to the main table.
pub fn add_route(index: u32, r: &Route) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if r.ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::from(r.scope);
    m.header.kind = RouteType::Unicast;
    if let Some(d) = &r.destination {
        m.header.destination_prefix_length = d.prefix_len;
        m.attributes.push(RouteAttribute::Destination(d.ip.into()));
    }
    if let Some(g) = r.gateway {
        m.attributes.push(RouteAttribute::Gateway(g.into()));
    }
    if let Some(s) = r.source {
        m.attributes.push(RouteAttribute::PrefSource(s.into()));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    if let Some(p) = r.metric {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    if let Some(mtu) = r.mtu {
        m.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    m
}

/// Adds the permanent neighbour `n` on link `index`.
pub fn add_neighbour(index: u32, n: &Neighbour) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(&n.ip);
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(n.ip.into()));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.mac.0.to_vec()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::route::RouteAddress;

    #[test]
    fn ipv4_addresses_get_the_broadcast_the_cni_plugins_set_and_ipv6_ones_nodad() {
        let v4 = add_address(
            3,
            &Address {
                ip: "10.88.0.5".parse().unwrap(),
                prefix_len: 16,
            },
        );
        assert_eq!((v4.header.index, v4.header.prefix_len), (3, 16));
        assert_eq!(v4.header.family, AddressFamily::Inet);
        assert!(v4.attributes.contains(&AddressAttribute::Broadcast(
            "10.88.255.255".parse().unwrap()
        )));
        assert!(v4
            .attributes
            .contains(&AddressAttribute::Local("10.88.0.5".parse().unwrap())));
        let p2p = add_address(
            3,
            &Address {
                ip: "10.0.0.1".parse().unwrap(),
                prefix_len: 31,
            },
        );
        assert!(!p2p
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Broadcast(_))));
        let v6 = add_address(
            3,
            &Address {
                ip: "fd00::5".parse().unwrap(),
                prefix_len: 64,
            },
        );
        assert_eq!(v6.header.family, AddressFamily::Inet6);
        assert!(v6
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        assert_eq!(
            broadcast("192.168.1.7".parse().unwrap(), 24),
            Some("192.168.1.255".parse().unwrap())
        );
        assert_eq!(
            broadcast("192.168.1.7".parse().unwrap(), 0),
            Some(Ipv4Addr::BROADCAST)
        );
    }

    #[test]
    fn a_default_route_carries_gateway_oif_metric_and_mtu_in_the_main_table() {
        let m = add_route(
            4,
            &Route {
                destination: None,
                gateway: Some("10.88.0.1".parse().unwrap()),
                source: Some("10.88.0.5".parse().unwrap()),
                scope: 0,
                metric: Some(100),
                mtu: Some(1350),
                ipv6: false,
            },
        );
        assert_eq!(m.header.destination_prefix_length, 0);
        assert_eq!(m.header.table, 254);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(m.header.protocol, RouteProtocol::Boot);
        for a in [
            RouteAttribute::Gateway(RouteAddress::Inet("10.88.0.1".parse().unwrap())),
            RouteAttribute::PrefSource(RouteAddress::Inet("10.88.0.5".parse().unwrap())),
            RouteAttribute::Oif(4),
            RouteAttribute::Priority(100),
            RouteAttribute::Metrics(vec![RouteMetric::Mtu(1350)]),
        ] {
            assert!(m.attributes.contains(&a), "{a:?} missing from {m:?}");
        }
        let onlink = add_route(
            4,
            &Route {
                destination: Some(Address {
                    ip: "10.89.0.0".parse().unwrap(),
                    prefix_len: 16,
                }),
                gateway: None,
                source: None,
                scope: 253,
                metric: None,
                mtu: None,
                ipv6: false,
            },
        );
        assert_eq!(onlink.header.scope, RouteScope::Link);
        assert_eq!(onlink.header.destination_prefix_length, 16);
        assert!(!onlink
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Metrics(_) | RouteAttribute::Gateway(_))));
    }

    #[test]
    fn links_read_back_name_mac_and_mtu_and_flag_changes_touch_only_up() {
        let mut m = LinkMessage::default();
        m.header.index = 9;
        m.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        m.attributes = vec![
            LinkAttribute::IfName("eth1".into()),
            LinkAttribute::Address(vec![2, 0x76, 0, 0, 0, 1]),
            LinkAttribute::Mtu(1500),
        ];
        let l = Link::from_message(&m);
        assert_eq!(l.name, "eth1");
        assert_eq!(l.mac, Some(Mac([2, 0x76, 0, 0, 0, 1])));
        assert_eq!((l.index, l.mtu), (9, 1500));
        let down = set_up(9, false);
        assert_eq!(down.header.change_mask, LinkFlags::Up);
        assert!(!down.header.flags.contains(LinkFlags::Up));
        let n = add_neighbour(
            9,
            &Neighbour {
                ip: "10.88.0.9".parse().unwrap(),
                mac: Mac([0xa, 0x58, 0, 0, 0, 9]),
            },
        );
        assert_eq!(n.header.state, NeighbourState::Permanent);
        assert!(n
            .attributes
            .contains(&NeighbourAttribute::LinkLayerAddress(vec![
                0xa, 0x58, 0, 0, 0, 9
            ])));
    }
}
