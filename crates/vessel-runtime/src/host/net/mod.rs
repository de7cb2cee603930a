//! The container's network on the host: the namespace the monitor lives in ([`netns`]), what is
//! in it ([`scan`]), and how each of its interfaces reaches the guest ([`Wiring`]): a tap per
//! interface, opened in the namespace by the VMM as the backend of one virtio-net device, and a
//! redirect both ways between the interface and the tap ([`redirect`]). The agent then gives the
//! guest interface the name, MAC, MTU, addresses, routes and neighbours found here
//! (`vessel_protocol::Request::ConfigureNetwork`). What a VM cannot reach, Docker's embedded
//! DNS, is warned about at create ([`dns`]). See docs/design.md "Networking".

pub mod dns;
pub mod link;
pub mod netlink;
pub mod netns;
pub mod redirect;
pub mod scan;
#[cfg(test)]
mod tests;

use vessel_protocol::network::{Interface, Mac};

use self::netlink::{Netlink, NetlinkError};
use self::scan::{Found, ScanError};

/// Name prefix of Vessel's taps in a container's network namespace (`vessel-tap0`, ...): a scan
/// skips them.
pub const TAP_PREFIX: &str = "vessel-tap";

/// Most interfaces one container's VM is given.
pub const MAX_INTERFACES: usize = 8;

/// Errors of the wiring.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The netlink socket could not be opened.
    #[error("open a netlink socket in the container's network namespace")]
    Open(#[source] NetlinkError),
    /// The namespace could not be read.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Another Vessel VM already owns the namespace's interfaces (its tap is there).
    #[error(
        "the container's network namespace is already given to another Vessel microVM (its tap \
         {tap} is there): containers sharing one network namespace (`--network container:<id>`, \
         a pod's containers) each in a VM of their own cannot share its interfaces; give this \
         container a network of its own, or run it with runc (docs/runc-compat.md \"Networking\")"
    )]
    Shared {
        /// The other VM's tap.
        tap: String,
    },
    /// More interfaces than the VM has network devices.
    #[error(
        "interface {name} appeared in the container's network namespace after the microVM was \
         booted with {devices} network device(s): interfaces added after create are not given \
         to the guest (docs/runc-compat.md \"Networking\")"
    )]
    TooLate {
        /// The interface.
        name: String,
        /// Devices the VM has.
        devices: usize,
    },
    /// The tap or the interface could not be set up.
    #[error(transparent)]
    Link(#[from] link::LinkError),
    /// The redirect could not be added.
    #[error("redirect interface {name} to {tap}")]
    Redirect {
        /// The interface.
        name: String,
        /// The tap.
        tap: String,
        /// The cause.
        #[source]
        source: redirect::RedirectError,
    },
}

/// File in the state directory naming the interfaces wired in a namespace the container does
/// not own (a path from CRI or podman), so that `delete` can take their redirects off when the
/// monitor was killed before it could ([`Leftovers`]).
pub const WIRED_FILE: &str = "network.json";

/// What [`WIRED_FILE`] holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Leftovers {
    /// The network namespace's path.
    pub netns: std::path::PathBuf,
    /// The interfaces whose ingress qdisc Vessel added.
    pub interfaces: Vec<String>,
}

impl Leftovers {
    /// Removes the redirects of [`Self::interfaces`] in [`Self::netns`], from a thread that
    /// joins it (the caller's own namespace is left alone). A namespace or interface that is gone
    /// has nothing left to remove.
    ///
    /// # Errors
    /// The namespace could not be joined, or the kernel refused a removal.
    pub fn remove(&self) -> Result<(), NetError> {
        let this = self.clone();
        std::thread::spawn(move || -> Result<(), NetError> {
            let Ok(f) = std::fs::File::open(&this.netns) else {
                return Ok(());
            };
            if nix::sched::setns(
                std::os::fd::AsFd::as_fd(&f),
                nix::sched::CloneFlags::CLONE_NEWNET,
            )
            .is_err()
            {
                return Ok(());
            }
            let mut nl = Netlink::open().map_err(NetError::Open)?;
            for name in &this.interfaces {
                match link::index_of(&mut nl, name) {
                    Ok(index) => redirect::remove(&mut nl, index).map_err(|source| {
                        NetError::Link(link::LinkError::Netlink {
                            name: name.clone(),
                            source,
                        })
                    })?,
                    Err(link::LinkError::Missing(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })
        .join()
        .unwrap_or(Ok(()))
    }
}

/// One virtio-net device of the VM: its tap and the MAC it offers the guest at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The tap's name in the container's network namespace.
    pub tap: String,
    /// The MAC the device offers the guest (the agent finds the guest interface by it).
    pub guest_mac: Mac,
    /// The interface wired to it, once it is: its index and name.
    wired: Option<(u32, String)>,
}

/// The VM's network devices and which interfaces are wired to them; made in the monitor, which
/// lives in the container's network namespace.
#[derive(Debug, Default)]
pub struct Wiring {
    devices: Vec<Device>,
}

impl Wiring {
    /// The devices for the interfaces the namespace holds now, and at least one when `expect_late`
    /// (a namespace the monitor made: Docker moves its veth in during the `prestart` hook, after
    /// the VM has booted). Devices beyond the interfaces found get a locally administered MAC.
    ///
    /// # Errors
    /// The namespace could not be read, or holds an interface that cannot be wired.
    pub fn plan(expect_late: bool) -> Result<Wiring, NetError> {
        let mut nl = Netlink::open().map_err(NetError::Open)?;
        if let Some(tap) = scan::taps(&mut nl)?.into_iter().next() {
            return Err(NetError::Shared { tap });
        }
        let found = scan::scan(&mut nl)?;
        let mut devices: Vec<Device> = found
            .iter()
            .take(MAX_INTERFACES)
            .map(|f| f.interface.mac)
            .collect::<Vec<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, mac)| Device {
                tap: format!("{TAP_PREFIX}{i}"),
                guest_mac: mac,
                wired: None,
            })
            .collect();
        if devices.is_empty() && expect_late {
            devices.push(Device {
                tap: format!("{TAP_PREFIX}0"),
                guest_mac: Mac::local(std::process::id()),
                wired: None,
            });
        }
        Ok(Wiring { devices })
    }

    /// The VM's network devices, in MMIO order.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Wires every interface of the namespace not wired yet to a free device (its tap must exist:
    /// the VM is up) and returns them for the agent, each with its device's `guest_mac`.
    ///
    /// # Errors
    /// See [`NetError`]; an interface for which no device is left is [`NetError::TooLate`].
    pub fn wire(&mut self) -> Result<Vec<Interface>, NetError> {
        if self.devices.is_empty() {
            return Ok(Vec::new());
        }
        let mut nl = Netlink::open().map_err(NetError::Open)?;
        let found = scan::scan(&mut nl)?;
        let mut out = Vec::new();
        for Found {
            index, interface, ..
        } in found
        {
            if self
                .devices
                .iter()
                .any(|d| d.wired.as_ref().is_some_and(|(i, _)| *i == index))
            {
                continue;
            }
            // The device planned for this MAC, else the first free one.
            let devices = self.devices.len();
            let slot = self
                .devices
                .iter()
                .position(|d| d.wired.is_none() && d.guest_mac == interface.mac)
                .or_else(|| self.devices.iter().position(|d| d.wired.is_none()))
                .ok_or_else(|| NetError::TooLate {
                    name: interface.name.clone(),
                    devices,
                })?;
            let device = &mut self.devices[slot];
            let tap = link::index_of(&mut nl, &device.tap)?;
            link::set_up(&mut nl, tap, &device.tap, Some(interface.mtu))?;
            redirect::redirect_both_ways(&mut nl, index, tap).map_err(|source| {
                NetError::Redirect {
                    name: interface.name.clone(),
                    tap: device.tap.clone(),
                    source,
                }
            })?;
            device.wired = Some((index, interface.name.clone()));
            out.push(Interface {
                guest_mac: device.guest_mac,
                ..interface
            });
        }
        Ok(out)
    }

    /// The names of the interfaces wired so far.
    pub fn wired(&self) -> Vec<String> {
        self.devices
            .iter()
            .filter_map(|d| d.wired.as_ref().map(|(_, n)| n.clone()))
            .collect()
    }

    /// Removes the redirects from the wired interfaces (their taps go with the VM), leaving each
    /// interface as the caller made it. Failures are logged: the namespace may be gone.
    pub fn unwire(&mut self) {
        let wired: Vec<(u32, String)> = self
            .devices
            .iter_mut()
            .filter_map(|d| d.wired.take())
            .collect();
        if wired.is_empty() {
            return;
        }
        let mut nl = match Netlink::open() {
            Ok(nl) => nl,
            Err(e) => {
                log::warn!("remove the network redirects: {}", vessel_error::chain(&e));
                return;
            }
        };
        for (index, name) in wired {
            if let Err(e) = redirect::remove(&mut nl, index) {
                log::warn!(
                    "remove the redirect of interface {name}: {}",
                    vessel_error::chain(&e)
                );
            }
        }
    }
}
