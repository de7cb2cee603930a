//! The microVM sandbox: the container runs in its own KVM guest, booted by `vessel-vmm` inside
//! the monitor process, and is set up by the guest agent reached over virtio-vsock.
//!
//! Order of work (all in the monitor, see docs/design.md "Processes"):
//! 1. `create_container`: prepare the virtio-fs share (`crate::sandbox::share`: rootfs and bind sources
//!    under `<state dir>/share`), boot the VM with that share (tag `vessel`), wait for the
//!    agent's hello on vsock port 1024, then hand the spec, rewritten to the guest's paths, to
//!    [`AgentSandbox`], which has the agent create the container and relays stdio.
//! 2. `start`, `signal`, `wait`: the agent's requests. `pause` freezes the container's cgroup
//!    (the agent), then pauses every vCPU (the VMM); `resume` runs the vCPUs, then thaws. While
//!    the vCPUs are paused, a request that needs the agent (`signal`, [`Sandbox::agent_call`],
//!    `shutdown`) lets them run for it and pauses them again, except after SIGKILL, the one
//!    signal that acts on a frozen cgroup: the vCPUs then stay running so the guest can report
//!    the container's end (the cgroup stays frozen, so the workload itself does not run).
//! 3. `shutdown`: ask the agent to power off, wait briefly for the VM to end, kill it if it does
//!    not; then take the share down. Nothing of the VM outlives the monitor: its vCPU and device
//!    threads are threads of the monitor process.
//! 4. A guest that ends on its own (the agent died: the kernel panics, `panic=-1` resets the
//!    VM at once; or the kernel failed or was rebooted) is noticed by a watcher thread that waits
//!    on the VM's end: it tears the VM down, which closes every vsock connection, so a pending
//!    agent call (the monitor's `wait`, a `kill`, an `exec`) fails at once instead of hanging,
//!    and the sandbox's calls report [`SandboxError::GuestLost`] with the console log's path.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vessel_devices::virtio::vsock::VsockHandle;
use vessel_protocol::{Request, Response, CONTROL_PORT};
use vessel_vmm::config::{FsConfig, NetConfig};
use vessel_vmm::{EndWatch, SerialSink, Vm, VmConfig};

use super::agent::{AgentConnector, AgentSandbox};
use super::{Sandbox, SandboxError, WorkloadExit, WorkloadIo};
use crate::host::bundle::Bundle;
use crate::host::capabilities;
use crate::host::net::{netns, Wiring};
use crate::host::state::VSOCK_SOCKET;
use crate::sandbox::share;
use crate::sandbox::sizing::VmSize;

/// How long a call that lost its agent connection waits for the VM's end to be noticed.
const LOSS_GRACE: Duration = Duration::from_secs(2);

/// Guest vsock CID of every container VM (each VM has its own vsock device, so CIDs never meet).
pub const GUEST_CID: u32 = 3;
/// How long the agent may take from VM start to answering on its control port. Generous because
/// the nested lab runs guests under emulation.
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Environment variable that overrides [`AGENT_READY_TIMEOUT`], in whole seconds, for hosts where
/// many guests boot at once under emulation (the lab's 20-container test).
pub const AGENT_READY_TIMEOUT_ENV: &str = "VESSEL_AGENT_READY_TIMEOUT";

/// [`AGENT_READY_TIMEOUT`], or the whole seconds in [`AGENT_READY_TIMEOUT_ENV`] when set.
fn agent_ready_timeout() -> Duration {
    std::env::var(AGENT_READY_TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(AGENT_READY_TIMEOUT, Duration::from_secs)
}
/// How long `shutdown` waits for the guest to power off before killing the VM.
pub const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(5);
/// File in the state directory that receives the guest's serial console.
pub const CONSOLE_LOG: &str = "console.log";

/// Reaches the agent through the VM's vsock once the VM exists.
#[derive(Default)]
struct VmConnector {
    vsock: OnceLock<VsockHandle>,
}

impl AgentConnector for std::sync::Arc<VmConnector> {
    fn connect(&self, port: u32) -> io::Result<UnixStream> {
        match self.vsock.get() {
            Some(vsock) => vsock.connect(port),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the microVM has not been started",
            )),
        }
    }

    fn guest_rootfs(&self, _id: &str, _host_rootfs: &Path) -> String {
        Path::new(share::GUEST_MOUNT)
            .join(share::ROOTFS_ENTRY)
            .to_string_lossy()
            .into_owned()
    }
}

/// See the module documentation.
pub struct MicroVmSandbox {
    size: VmSize,
    state_dir: PathBuf,
    connector: std::sync::Arc<VmConnector>,
    agent: AgentSandbox<std::sync::Arc<VmConnector>>,
    /// The VM; shared with the watcher thread, which takes it when the guest ends on its own.
    vm: Arc<Mutex<Option<Vm>>>,
    /// Why the guest ended on its own, once it has (set by the watcher).
    lost: Arc<Mutex<Option<String>>>,
    /// Set by `shutdown` before it asks the guest to power off: that end is expected.
    stopping: Arc<AtomicBool>,
    /// Waits on the VM's end (set at boot).
    end: OnceLock<EndWatch>,
    /// Whether `pause` left the vCPUs paused (guarded with the VM's own lock held).
    vcpus_paused: Mutex<bool>,
    /// Set when a SIGKILL the agent did not take stopped the VM instead ([`Sandbox::signal`]):
    /// the init then ended by SIGKILL.
    killed: AtomicBool,
    /// The guest kernel and initramfs, looked up when the sandbox is made (in `create`, before
    /// the monitor's fork): the monitor then works in a mount namespace of its own, where
    /// `/proc/self/exe`, which the lookup starts from, may name another path.
    artefacts: vessel_vmm::artefacts::Artefacts,
    /// The VM's network devices and the interfaces wired to them (set at create).
    wiring: Mutex<Option<Wiring>>,
    /// The path of the container's network namespace, when the spec gives one.
    netns_path: OnceLock<PathBuf>,
}

impl MicroVmSandbox {
    /// A sandbox for a VM of `size` whose files (share, console log, vsock socket) live in
    /// `state_dir` (`<root>/<id>`).
    pub fn new(size: VmSize, state_dir: PathBuf) -> MicroVmSandbox {
        let connector = std::sync::Arc::new(VmConnector::default());
        MicroVmSandbox {
            size,
            state_dir,
            agent: AgentSandbox::new(std::sync::Arc::clone(&connector)),
            connector,
            vm: Arc::new(Mutex::new(None)),
            lost: Arc::new(Mutex::new(None)),
            stopping: Arc::new(AtomicBool::new(false)),
            end: OnceLock::new(),
            vcpus_paused: Mutex::new(false),
            killed: AtomicBool::new(false),
            artefacts: vessel_vmm::artefacts::locate(),
            wiring: Mutex::new(None),
            netns_path: OnceLock::new(),
        }
    }

    /// Whether a pod member's entry is in this VM's share (`share/pods/<id>`, made by the
    /// member's create in this monitor's mount namespace and removed by its delete).
    fn hosts_pod_members(&self) -> bool {
        std::fs::read_dir(self.state_dir.join(share::SHARE_DIR).join(share::PODS_DIR))
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
    }

    /// Runs `f` (a request to the agent) with the vCPUs running; when `pause` had paused them,
    /// they are paused again afterwards unless `keep_running`.
    fn with_vcpus<T>(
        &self,
        keep_running: bool,
        f: impl FnOnce() -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        let mut paused = self.vcpus_paused.lock().expect("vcpu state lock");
        if !*paused {
            drop(paused);
            return f();
        }
        {
            let vm = self.vm.lock().expect("vm lock");
            if let Some(vm) = vm.as_ref() {
                vm.resume().map_err(SandboxError::PauseVcpus)?;
            }
        }
        *paused = false;
        let result = f();
        if !keep_running {
            if let Some(vm) = self.vm.lock().expect("vm lock").as_ref() {
                vm.pause().map_err(SandboxError::PauseVcpus)?;
                *paused = true;
            }
        }
        result
    }

    fn vm_config(&self, shared_dir: PathBuf) -> Result<VmConfig, SandboxError> {
        let artefacts = &self.artefacts;
        let kernel = artefacts.kernel.clone().ok_or(SandboxError::FindArtefact {
            what: "guest kernel",
            file: vessel_vmm::artefacts::KERNEL_FILE,
            var: "VESSEL_KERNEL",
        })?;
        let initramfs = artefacts
            .initramfs
            .clone()
            .ok_or(SandboxError::FindArtefact {
                what: "agent initramfs",
                file: vessel_vmm::artefacts::INITRAMFS_FILE,
                var: "VESSEL_INITRAMFS",
            })?;
        let mut config = VmConfig::new(kernel);
        config.vcpus = self.size.vcpus;
        config.memory_mib = u32::try_from(self.size.memory_mib).unwrap_or(u32::MAX);
        config.initramfs = Some(initramfs);
        config.serial = SerialSink::File(self.state_dir.join(CONSOLE_LOG));
        config.vsock_cid = GUEST_CID;
        config.vsock_uds = Some(self.state_dir.join(VSOCK_SOCKET));
        config.fs.push(FsConfig {
            tag: share::TAG.to_owned(),
            shared_dir,
        });
        Ok(config)
    }

    /// Boots the VM and waits until the agent answers on its control port.
    fn boot_vm(&self, config: VmConfig) -> Result<(), SandboxError> {
        let mut vm = Vm::start(config).map_err(SandboxError::StartVm)?;
        let vsock = vm.vsock();
        let ready_timeout = agent_ready_timeout();
        let deadline = Instant::now() + ready_timeout;
        loop {
            // The agent listens once it has mounted its file systems; until then the guest
            // refuses the port. A VM that ends meanwhile is reported with its reason.
            match vsock.connect(CONTROL_PORT) {
                Ok(probe) => {
                    drop(probe);
                    break;
                }
                Err(e) if Instant::now() >= deadline => {
                    vm.stop();
                    return Err(SandboxError::WaitAgent {
                        waited: ready_timeout,
                        last_lines: super::console_tail(&self.state_dir.join(CONSOLE_LOG)),
                        source: e,
                    });
                }
                Err(_) => {
                    if let Some(reason) = vm.wait_timeout(Duration::from_millis(20)) {
                        return Err(SandboxError::GuestEnded {
                            reason: reason.to_string(),
                            last_lines: super::console_tail(&self.state_dir.join(CONSOLE_LOG)),
                        });
                    }
                }
            }
        }
        let _ = self.connector.vsock.set(vsock);
        let watch = vm.end_watch();
        let _ = self.end.set(watch.clone());
        *self.vm.lock().expect("vm lock") = Some(vm);
        self.watch(watch)?;
        self.agent.boot()
    }

    /// Wires the interfaces of the container's network namespace not wired yet to the VM's
    /// devices and has the agent configure them in the container.
    fn configure_network(&self) -> Result<(), SandboxError> {
        let mut wiring = self.wiring.lock().expect("wiring lock");
        let Some(wiring) = wiring.as_mut() else {
            return Ok(());
        };
        let interfaces = wiring.wire().map_err(SandboxError::Network)?;
        if interfaces.is_empty() {
            return Ok(());
        }
        // In a namespace someone else keeps (CRI, podman), the redirects outlive a killed
        // monitor: `delete` reads this to take them off.
        if let Some(netns) = self.netns_path.get() {
            let record = crate::host::net::Leftovers {
                netns: netns.clone(),
                interfaces: wiring.wired(),
            };
            let path = self.state_dir.join(crate::host::net::WIRED_FILE);
            if let Err(e) = serde_json::to_vec(&record)
                .map_err(std::io::Error::other)
                .and_then(|b| crate::host::state::write_atomic(&path, &b, 0o600))
            {
                log::warn!("record the wired interfaces in {}: {e}", path.display());
            }
        }
        for i in &interfaces {
            log::debug!(
                "interface {} ({}, mtu {}) wired to the guest NIC {}",
                i.name,
                i.mac,
                i.mtu,
                i.guest_mac
            );
        }
        self.agent.configure_network(interfaces)
    }

    /// Starts the thread that tears the VM down when the guest ends on its own (module
    /// documentation, 4).
    fn watch(&self, watch: EndWatch) -> Result<(), SandboxError> {
        let vm = Arc::clone(&self.vm);
        let lost = Arc::clone(&self.lost);
        let stopping = Arc::clone(&self.stopping);
        let console = self.state_dir.join(CONSOLE_LOG);
        std::thread::Builder::new()
            .name("vm-watch".to_owned())
            .spawn(move || {
                // Started during set-up, with the monitor's set: it keeps what the main thread
                // keeps after set-up (the VM's teardown needs no more).
                if let Err(e) = capabilities::limit(&capabilities::AFTER_SET_UP) {
                    log::warn!("vm-watch: {}", vessel_error::chain(&e));
                }
                if let Err(e) = vessel_vmm::seccomp::confine_monitor() {
                    log::warn!("vm-watch: {}", vessel_error::chain(&e));
                }
                let reason = watch.wait();
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let mut slot = vm.lock().unwrap_or_else(|e| e.into_inner());
                let Some(mut ended) = slot.take() else {
                    return;
                };
                log::error!(
                    "the microVM ended under its container ({reason}); guest console: {}",
                    console.display()
                );
                *lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
                // Dropping the VM closes its vsock device and with it every host connection.
                ended.stop();
                drop(ended);
            })
            .map(drop)
            .map_err(|e| SandboxError::Sys {
                op: "spawn the microVM watcher thread",
                source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
            })
    }

    /// `e`, or [`SandboxError::GuestLost`] when the guest has ended on its own (which is why a
    /// call to the agent failed). A guest that reboots resets its vsock device, cutting the
    /// connections, a moment before the VM ends: a call that lost its connection (not one the
    /// agent refused) gives the VM [`LOSS_GRACE`] to end before `e` is taken as the cause.
    fn lost_or(&self, e: SandboxError) -> SandboxError {
        let guest_lost = |reason: String| SandboxError::GuestLost {
            reason,
            console: self.state_dir.join(CONSOLE_LOG),
        };
        if let Some(reason) = self.lost.lock().expect("lost lock").clone() {
            return guest_lost(reason);
        }
        let refused = matches!(
            &e,
            SandboxError::CallAgent {
                source: vessel_protocol::ClientError::Refuse { .. },
                ..
            }
        );
        if refused || self.stopping.load(Ordering::SeqCst) {
            return e;
        }
        match self.end.get().and_then(|w| w.wait_timeout(LOSS_GRACE)) {
            Some(reason) if !self.stopping.load(Ordering::SeqCst) => guest_lost(reason.to_string()),
            _ => e,
        }
    }
}

impl MicroVmSandbox {
    /// `e` from the agent's create of the container: as it is unless the call to the agent
    /// broke (not a refusal, which is the spec's error as runc words it); then
    /// ([`Self::lost_or`]: the guest may have ended) with the guest console's last lines, since
    /// the log goes with the failed create's directory.
    fn failed_at_create(&self, e: SandboxError) -> SandboxError {
        let broke = match &e {
            SandboxError::CallAgent { source, .. } => {
                !matches!(source, vessel_protocol::ClientError::Refuse { .. })
            }
            SandboxError::ConnectAgent { .. } => true,
            _ => false,
        };
        if !broke {
            return e;
        }
        SandboxError::FailedAtCreate {
            source: Box::new(self.lost_or(e)),
            last_lines: super::console_tail(&self.state_dir.join(CONSOLE_LOG)),
        }
    }
}

/// Whether a failed call had an answer that stopping the VM would not change: the guest is
/// already gone, or the agent refused the request (for a signal: the process has exited).
fn lost_or_refused(e: &SandboxError) -> bool {
    matches!(
        e,
        SandboxError::GuestLost { .. }
            | SandboxError::CallAgent {
                source: vessel_protocol::ClientError::Refuse { .. },
                ..
            }
    )
}

impl Sandbox for MicroVmSandbox {
    fn kind(&self) -> &'static str {
        "microvm"
    }

    /// `/dev/kvm`, and `/dev/net/tun` for one tap per interface the namespace holds now (or for
    /// the one Docker moves in later).
    fn open_devices(&self, bundle: &Bundle) -> Result<(), SandboxError> {
        let taps = Wiring::plan(netns::is_new(&bundle.spec))
            .map_err(SandboxError::Network)?
            .devices()
            .len();
        vessel_vmm::preopen::open(taps).map_err(SandboxError::StartVm)
    }

    fn boot(&self) -> Result<(), SandboxError> {
        // The VM needs the bundle's share, which `create_container` prepares.
        Ok(())
    }

    fn create_container(
        &self,
        id: &str,
        bundle: &Bundle,
        io: WorkloadIo,
    ) -> Result<(), SandboxError> {
        // The VMM's threads start from this thread's capabilities: nothing beyond the
        // monitor's set (host::capabilities).
        capabilities::limit(&capabilities::monitor()).map_err(SandboxError::LimitCapabilities)?;
        let layout = share::prepare(&self.state_dir, &bundle.path, &bundle.rootfs, &bundle.spec)
            .map_err(SandboxError::PrepareShare)?;
        let mut config = self.vm_config(layout.dir.clone())?;
        // The monitor is in the container's network namespace: one device per interface there
        // now, or one for the veth Docker's prestart hook brings into a namespace made for it.
        let wiring = Wiring::plan(netns::is_new(&bundle.spec)).map_err(SandboxError::Network)?;
        config.net = wiring
            .devices()
            .iter()
            .map(|d| NetConfig {
                tap: d.tap.clone(),
                mac: d.guest_mac,
            })
            .collect();
        *self.wiring.lock().expect("wiring lock") = Some(wiring);
        if let Some(path) = netns::path(&bundle.spec) {
            let _ = self.netns_path.set(path);
        }
        self.boot_vm(config)?;
        let guest_bundle = Bundle {
            spec: crate::sandbox::sizing::guest_cpuset(
                &netns::guest_spec(&layout.guest_spec(&bundle.spec)),
                self.size.vcpus,
            ),
            ..bundle.clone()
        };
        self.agent
            .create_container(id, &guest_bundle, io)
            .map_err(|e| self.failed_at_create(e))?;
        // For the containers that join this one's pod (crate::sandbox::pod).
        if let Some(pid) = self.agent.init_pid() {
            crate::host::state::write_atomic(
                &self.state_dir.join(crate::host::state::GUEST_INIT_PID),
                pid.to_string().as_bytes(),
                0o600,
            )
            .map_err(|e| SandboxError::Sys {
                op: "record the guest init's PID",
                source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        }
        self.configure_network()?;
        // Set up: the rest of the monitor's life (control requests, the late wiring, the
        // teardown) needs only these, and the threads the monitor starts next inherit them.
        capabilities::limit(&capabilities::AFTER_SET_UP)
            .map_err(SandboxError::LimitCapabilities)?;
        // And the calls none of them makes are refused (vessel_vmm::seccomp::confine_monitor).
        vessel_vmm::seccomp::confine_monitor().map_err(SandboxError::ConfineMonitor)
    }

    /// Before `process.args` runs, interfaces that came after create (Docker's, moved in by its
    /// hook or, from Docker 26/28, between create and start) are wired and configured too.
    fn start(&self) -> Result<(), SandboxError> {
        self.configure_network().map_err(|e| self.lost_or(e))?;
        self.agent.start().map_err(|e| self.lost_or(e))
    }

    /// A SIGKILL always works: when the agent does not take it (silent past its deadline, a
    /// hung guest kernel, a broken connection), the VM is stopped instead, which ends the
    /// container's init and everything else in the guest exactly as SIGKILL to a container's
    /// init does (its PID namespace ends); [`Sandbox::wait`] then reports the SIGKILL.
    fn signal(&self, signal: i32, all: bool) -> Result<(), SandboxError> {
        let sent = self
            .with_vcpus(signal == libc::SIGKILL, || self.agent.signal(signal, all))
            .map_err(|e| self.lost_or(e));
        match sent {
            Err(e) if signal == libc::SIGKILL && !lost_or_refused(&e) => {
                log::warn!(
                    "SIGKILL through the agent failed ({}): stopping the microVM instead",
                    vessel_error::chain(&e)
                );
                self.killed.store(true, Ordering::SeqCst);
                if let Some(mut vm) = self.vm.lock().expect("vm lock").take() {
                    vm.stop();
                }
                Ok(())
            }
            other => other,
        }
    }

    fn wait(&self) -> Result<WorkloadExit, SandboxError> {
        match self.agent.wait() {
            Err(_) if self.killed.load(Ordering::SeqCst) => {
                Ok(WorkloadExit::Signaled(libc::SIGKILL))
            }
            other => other.map_err(|e| self.lost_or(e)),
        }
    }

    fn pause(&self) -> Result<(), SandboxError> {
        let mut paused = self.vcpus_paused.lock().expect("vcpu state lock");
        if *paused {
            return Ok(());
        }
        self.agent.pause()?;
        // Other containers of the pod run in this VM (their entries are under the share's
        // `pods/`): only this container's guest cgroup is frozen, as runc freezes only the
        // pause container's cgroup; the vCPUs keep running for the members.
        if self.hosts_pod_members() {
            return Ok(());
        }
        let vm = self.vm.lock().expect("vm lock");
        let Some(vm) = vm.as_ref() else {
            return Ok(());
        };
        if let Err(e) = vm.pause() {
            // Leave nothing half done: the cgroup is thawed again.
            let _ = self.agent.resume();
            return Err(SandboxError::PauseVcpus(e));
        }
        *paused = true;
        Ok(())
    }

    fn resume(&self) -> Result<(), SandboxError> {
        {
            let mut paused = self.vcpus_paused.lock().expect("vcpu state lock");
            if *paused {
                if let Some(vm) = self.vm.lock().expect("vm lock").as_ref() {
                    vm.resume().map_err(SandboxError::PauseVcpus)?;
                }
                *paused = false;
            }
        }
        self.agent.resume()
    }

    fn agent_call(&self, request: Request) -> Result<Response, SandboxError> {
        self.with_vcpus(false, || self.agent.agent_call(request))
            .map_err(|e| self.lost_or(e))
    }

    fn resize_terminal(&self, rows: u16, cols: u16) -> Result<(), SandboxError> {
        self.with_vcpus(false, || self.agent.resize_terminal(rows, cols))
    }

    fn shutdown(&self) -> Result<(), SandboxError> {
        self.stopping.store(true, Ordering::SeqCst);
        // The agent must run to power the guest off.
        let asked = self.with_vcpus(true, || self.agent.shutdown());
        if let Some(mut vm) = self.vm.lock().expect("vm lock").take() {
            if vm.wait_timeout(POWER_OFF_TIMEOUT).is_none() {
                vm.stop();
            }
        }
        // The taps went with the VM; the interfaces get their traffic back.
        if let Some(wiring) = self.wiring.lock().expect("wiring lock").as_mut() {
            wiring.unwire();
            let _ = std::fs::remove_file(self.state_dir.join(crate::host::net::WIRED_FILE));
        }
        share::remove(&self.state_dir).map_err(SandboxError::PrepareShare)?;
        asked
    }
}
