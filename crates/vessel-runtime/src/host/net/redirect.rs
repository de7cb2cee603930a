//! The traffic redirect between a container's interface and its tap (the "tc filter" model):
//! an ingress qdisc on each, and on each a `u32` filter matching every frame (`match u8 0 0`,
//! the classifier every kernel with tc has; `matchall` is newer and often a module) whose
//! `mirred` action sends it out of the other. The interface itself is left as the caller made it; the
//! host's network stack in the namespace no longer sees its traffic, the guest does.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::netlink::{Netlink, NetlinkError};

/// The ingress qdisc's handle, `ffff:`.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// The filters' priority.
const PRIORITY: u32 = 49152;
/// `ETH_P_ALL` in network byte order, as `tcm_info` carries the protocol.
const ETH_P_ALL_BE: u32 = 0x0300;

/// Errors of [`redirect_both_ways`].
#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    /// A qdisc or filter could not be added.
    #[error("add the {what} on interface index {index}")]
    Add {
        /// What (`ingress qdisc`, `redirect filter`).
        what: &'static str,
        /// The interface's index.
        index: u32,
        /// The cause.
        #[source]
        source: NetlinkError,
    },
}

/// Redirects every frame arriving on `a` out of `b`, and every frame arriving on `b` out of
/// `a`. An ingress qdisc already on either is used as it is.
///
/// # Errors
/// See [`RedirectError`].
pub fn redirect_both_ways(nl: &mut Netlink, a: u32, b: u32) -> Result<(), RedirectError> {
    for (from, to) in [(a, b), (b, a)] {
        add_ingress(nl, from)?;
        add_filter(nl, from, to)?;
    }
    Ok(())
}

/// Removes the ingress qdisc of interface `index`, and with it its filters. An interface or a
/// qdisc that is gone already is not an error.
///
/// # Errors
/// The kernel refused for another reason.
pub fn remove(nl: &mut Netlink, index: u32) -> Result<(), NetlinkError> {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = INGRESS_HANDLE;
    match nl.change(RouteNetlinkMessage::DelQueueDiscipline(m), 0) {
        Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)) => Ok(()),
        other => other,
    }
}

fn add_ingress(nl: &mut Netlink, index: u32) -> Result<(), RedirectError> {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = INGRESS_HANDLE;
    m.attributes.push(TcAttribute::Kind("ingress".to_owned()));
    match nl.change(
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | NLM_F_EXCL,
    ) {
        Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
        other => other.map_err(|source| RedirectError::Add {
            what: "ingress qdisc",
            index,
            source,
        }),
    }
}

fn add_filter(nl: &mut Netlink, from: u32, to: u32) -> Result<(), RedirectError> {
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.tab = 1;
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".to_owned()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    let mut m = TcMessage::with_index(from as i32);
    m.header.parent = INGRESS_HANDLE;
    m.header.info = (PRIORITY << 16) | ETH_P_ALL_BE;
    // One key with mask 0: every frame matches.
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    selector.keys = vec![TcU32Key::default()];
    m.attributes = vec![
        TcAttribute::Kind("u32".to_owned()),
        TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(selector)),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]),
    ];
    nl.change(
        RouteNetlinkMessage::NewTrafficFilter(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(|source| RedirectError::Add {
        what: "redirect filter",
        index: from,
        source,
    })
}
