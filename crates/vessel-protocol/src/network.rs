//! The container's network as the host found it in the container's network namespace, for the
//! agent to reproduce on the guest's virtio-net interfaces ([`crate::Request::ConfigureNetwork`]).
//!
//! The host reads each interface of the namespace but `lo` (its MAC, MTU, addresses, routes and
//! static neighbours) and wires it to one virtio-net device of the VM; the agent finds that
//! device's interface in the guest by [`Interface::guest_mac`] (the MAC the device offered at
//! boot), moves it into the container's network namespace, and gives it the name, MAC, MTU,
//! addresses, routes and neighbours listed here, so that `ip addr`, `ip route` and
//! `/sys/class/net/<name>/mtu` in the container read what they read under runc.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet address, written `aa:bb:cc:dd:ee:ff` in JSON and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A locally administered unicast address (`02:...`) made from `seed`, for a device whose
    /// real address is not known when the VM boots.
    pub fn local(seed: u32) -> Self {
        let b = seed.to_be_bytes();
        Mac([0x02, 0x76, b[0], b[1], b[2], b[3]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A string that is not six `:`-separated hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an Ethernet address (aa:bb:cc:dd:ee:ff)")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(|| BadMac(s.to_owned()))?;
            if p.len() != 2 {
                return Err(BadMac(s.to_owned()));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| BadMac(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(BadMac(s.to_owned()));
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One interface of the container's network namespace, wired to one virtio-net device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name in the namespace (`eth0`), given to the guest interface.
    pub name: String,
    /// The MAC the virtio-net device offered the guest at boot: how the agent finds it.
    pub guest_mac: Mac,
    /// The interface's own MAC, given to the guest interface.
    pub mac: Mac,
    /// The interface's MTU.
    pub mtu: u32,
    /// Its addresses (link-local IPv6 addresses excepted: the guest makes its own from the MAC).
    #[serde(default)]
    pub addresses: Vec<Address>,
    /// The routes through it, in the order they are to be added (a gateway's own route first).
    /// Routes the kernel makes for an address (`proto kernel`) are not listed.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Its permanent (static) neighbour entries.
    #[serde(default)]
    pub neighbours: Vec<Neighbour>,
}

/// An address with its prefix length (`10.88.0.5/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The address.
    pub ip: IpAddr,
    /// Prefix length, at most 32 (IPv4) or 128 (IPv6).
    pub prefix_len: u8,
}

/// A route through an interface (main table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination network; `None` for the default route of its family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Address>,
    /// Next hop; `None` for a route on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Preferred source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// Route scope (`rtm_scope`: 0 universe, 253 link, 254 host).
    #[serde(default)]
    pub scope: u8,
    /// Priority (metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// The route's own MTU (`RTAX_MTU`), which some networks (Cilium) set below the link's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `true` for an IPv6 route (needed for a default route, which has no destination).
    #[serde(default)]
    pub ipv6: bool,
}

/// A permanent neighbour entry (`ip neigh add <ip> lladdr <mac> nud permanent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its link-layer address.
    pub mac: Mac,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_read_and_write_as_colon_hex_and_bad_ones_are_named() {
        let m: Mac = "0a:58:0A:f4:00:1c".parse().unwrap();
        assert_eq!(m.0, [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x1c]);
        assert_eq!(m.to_string(), "0a:58:0a:f4:00:1c");
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"0a:58:0a:f4:00:1c\"");
        for bad in [
            "",
            "0a:58:0a:f4:00",
            "0a:58:0a:f4:00:1c:00",
            "0a:58:0a:f4:00:zz",
            "a:58:0a:f4:00:1c",
        ] {
            let e = bad.parse::<Mac>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert!(serde_json::from_str::<Mac>("\"nope\"").is_err());
        assert_eq!(Mac::local(0x0102_0304).to_string(), "02:76:01:02:03:04");
    }

    #[test]
    fn an_interface_round_trips_through_json_with_defaults_for_empty_lists() {
        let i = Interface {
            name: "eth0".into(),
            guest_mac: Mac::local(7),
            mac: "0a:58:0a:58:00:05".parse().unwrap(),
            mtu: 1400,
            addresses: vec![Address {
                ip: "10.88.0.5".parse().unwrap(),
                prefix_len: 16,
            }],
            routes: vec![Route {
                destination: None,
                gateway: Some("10.88.0.1".parse().unwrap()),
                source: None,
                scope: 0,
                metric: None,
                mtu: Some(1350),
                ipv6: false,
            }],
            neighbours: vec![],
        };
        let json = serde_json::to_string(&i).unwrap();
        assert_eq!(serde_json::from_str::<Interface>(&json).unwrap(), i);
        let minimal: Interface = serde_json::from_str(
            r#"{"name":"eth1","guest_mac":"02:76:00:00:00:01","mac":"02:76:00:00:00:01","mtu":1500}"#,
        )
        .unwrap();
        assert!(minimal.addresses.is_empty() && minimal.routes.is_empty());
    }
}
