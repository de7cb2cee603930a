//! The guest's network: `lo` at boot and in each new network namespace (`loopback.rs`), and the
//! container's interfaces the host asks for with `configure_network` (`configure.rs`: which guest
//! interface, in which order, with which errors), through a small synchronous rtnetlink client
//! (`netlink.rs`: socket, request and acknowledgement, the kernel's errno) and the messages it
//! sends (`messages.rs`: pure builders from the protocol's types).

pub mod configure;
pub mod loopback;
mod messages;
mod netlink;

pub use configure::configure;

#[cfg(test)]
mod tests;
