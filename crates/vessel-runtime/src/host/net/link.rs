//! Link changes the wiring needs: find an interface's index by name, set its MTU and bring it up.

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::netlink::{Netlink, NetlinkError};

/// Errors of the link changes.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The netlink socket or a request failed.
    #[error("interface {name}")]
    Netlink {
        /// The interface.
        name: String,
        /// The cause.
        #[source]
        source: NetlinkError,
    },
    /// No interface has that name.
    #[error("no interface {0} in the container's network namespace")]
    Missing(String),
}

/// The index of interface `name`.
///
/// # Errors
/// See [`LinkError`].
pub fn index_of(nl: &mut Netlink, name: &str) -> Result<u32, LinkError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    match nl.dump_one(RouteNetlinkMessage::GetLink(m)) {
        Ok(Some(RouteNetlinkMessage::NewLink(l))) => Ok(l.header.index),
        Ok(_) => Err(LinkError::Missing(name.to_owned())),
        Err(e) if e.errno() == Some(libc::ENODEV) => Err(LinkError::Missing(name.to_owned())),
        Err(source) => Err(LinkError::Netlink {
            name: name.to_owned(),
            source,
        }),
    }
}

/// Brings interface `index` up, with `mtu` when given.
///
/// # Errors
/// See [`LinkError`].
pub fn set_up(nl: &mut Netlink, index: u32, name: &str, mtu: Option<u32>) -> Result<(), LinkError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    nl.change(RouteNetlinkMessage::SetLink(m), 0)
        .map_err(|source| LinkError::Netlink {
            name: name.to_owned(),
            source,
        })
}

/// Brings interface `name` of the calling thread's namespace up, with `mtu` when given.
///
/// # Errors
/// See [`LinkError`].
pub fn set_up_by_name(name: &str, mtu: Option<u32>) -> Result<(), LinkError> {
    let mut nl = Netlink::open().map_err(|source| LinkError::Netlink {
        name: name.to_owned(),
        source,
    })?;
    let index = index_of(&mut nl, name)?;
    set_up(&mut nl, index, name, mtu)
}
