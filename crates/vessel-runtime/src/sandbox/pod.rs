//! Pods: a container created in another container's microVM.
//!
//! A container whose `linux.namespaces` paths name a Vessel container (`/proc/<pid>/ns/<type>`
//! where `<pid>` is that container's monitor, as containerd's CRI, podman pods and Docker's
//! `--net=container:` write them; or, for the network, a namespace file that is that monitor's
//! network namespace, as podman names its pod's netns), or whose CRI annotations name one as its
//! sandbox (`io.kubernetes.cri.container-type: container`, `io.kubernetes.cri.sandbox-id`), is
//! a **member** of that container's pod ([`find`]): it runs in the sandbox's VM instead of a
//! VM of its own, in the sandbox's guest namespaces for every namespace it names the sandbox's.
//!
//! The member's monitor is the host process that stands for its guest process, as the runc shim
//! needs (its PID in the pid-file and in `state`, in the member's `linux.cgroupsPath`, signals
//! forwarded, the guest process's exit status as its own, 137 when the VM ends). It holds no VM:
//! [`PodMemberSandbox`] drives the sandbox VM's agent through the sandbox's vsock socket, and
//! the member's root file system and bind sources reach the guest through the sandbox's share
//! (`pods/<id>/`, [`crate::sandbox::share::open_member`]), attached from inside the sandbox
//! monitor's mount namespace, which the member's monitor joins.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use vessel_protocol::{Request, Response};

use super::agent::{AgentConnector, AgentSandbox, VsockUds};
use super::share::{self, MemberTrees, ShareLayout};
use super::{Sandbox, SandboxError, WorkloadExit, WorkloadIo};
use crate::host::bundle::Bundle;
use crate::host::procfs;
use crate::host::state::{StateStore, Status, GUEST_INIT_PID, VSOCK_SOCKET};

/// CRI's annotation of a container's type (`sandbox` or `container`).
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation of the pod's sandbox ID (the sandbox container's ID).
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Errors of [`find`] and of joining a pod.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The sandbox container exists but its VM cannot take another container.
    #[error(
        "linux.namespaces {what} names container {sandbox}, which is {status}: a container can \
         join only a created, running or paused container's VM; start {sandbox} again or give \
         this container namespaces of its own"
    )]
    SandboxNotRunning {
        /// The field that named it.
        what: String,
        /// The sandbox container.
        sandbox: String,
        /// Its status.
        status: String,
    },
    /// Two namespace paths name two different Vessel containers.
    #[error(
        "linux.namespaces name two Vessel containers, {first} and {second}: a container runs in \
         one VM, so every namespace it joins must be the same container's"
    )]
    TwoSandboxes {
        /// One container.
        first: String,
        /// The other.
        second: String,
    },
    /// The container joins some of the sandbox's namespaces but has a network of its own.
    #[error(
        "linux.namespaces joins container {sandbox}'s {joined} namespace but not its network \
         namespace: a container in another container's VM has that VM's network; join its \
         network namespace too (`/proc/<pid>/ns/net`)"
    )]
    OwnNetwork {
        /// The sandbox container.
        sandbox: String,
        /// A namespace it joins.
        joined: &'static str,
    },
    /// The sandbox is itself a member of another container's pod.
    #[error(
        "linux.namespaces names container {sandbox}, which runs in container {pod}'s VM: join \
         {pod}'s namespaces instead"
    )]
    MemberOfMember {
        /// The container named.
        sandbox: String,
        /// The pod's sandbox.
        pod: String,
    },
    /// The state of a possible sandbox could not be read.
    #[error("read the state of container {id}")]
    ReadState {
        /// The container.
        id: String,
        /// The cause.
        #[source]
        source: crate::host::state::StateError,
    },
    /// The state root could not be listed.
    #[error("list {}", .0.display())]
    ListRoot(PathBuf, #[source] io::Error),
}

/// The pod a new container joins.
#[derive(Debug, Clone)]
pub struct Pod {
    /// The sandbox container's ID.
    pub sandbox: String,
    /// Its state directory.
    pub dir: PathBuf,
    /// Its monitor.
    pub monitor_pid: i32,
    /// The monitor's start time (`/proc/<pid>/stat`), against PID reuse.
    pub monitor_start_time: u64,
    /// The namespaces the member shares with the sandbox's init in the guest.
    pub joined: Vec<LinuxNamespaceType>,
    /// The size of the sandbox's VM, as its create recorded it.
    pub vm_size: Option<crate::sandbox::sizing::VmSize>,
}

/// The `/proc` name of a namespace type (`/proc/<pid>/ns/<name>`).
fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Time => "time",
    }
}

/// The PID in a `/proc/<pid>/ns/<name>` path.
fn proc_pid(path: &Path) -> Option<i32> {
    let mut parts = path.components().skip(1);
    let (proc, pid, ns) = (parts.next()?, parts.next()?, parts.next()?);
    if proc.as_os_str() != "proc" || ns.as_os_str() != "ns" {
        return None;
    }
    pid.as_os_str().to_str()?.parse().ok()
}

/// A container of the store that could be a sandbox.
struct Candidate {
    id: String,
    dir: PathBuf,
    pid: i32,
    start_time: u64,
    status: Status,
    pod: Option<String>,
    vm_size: Option<crate::sandbox::sizing::VmSize>,
}

fn candidates(store: &StateStore) -> Result<Vec<Candidate>, PodError> {
    let ids = match store.ids() {
        Ok(ids) => ids,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PodError::ListRoot(store.root().to_owned(), e)),
    };
    let mut out = Vec::new();
    for id in ids {
        let record = match store.load(&id) {
            Ok(r) => r,
            // Being created or deleted meanwhile, or not a container directory.
            Err(_) => continue,
        };
        let dir = store
            .container_dir(&id)
            .map_err(|source| PodError::ReadState {
                id: id.clone(),
                source,
            })?;
        out.push(Candidate {
            status: record.status(),
            id,
            dir,
            pid: record.monitor_pid,
            start_time: record.monitor_start_time,
            pod: record.pod,
            vm_size: record.vm_size,
        });
    }
    Ok(out)
}

/// The pod `spec` joins, if any (see the module documentation), among the containers of
/// `store`. `None`: the container gets a VM of its own.
///
/// # Errors
/// The spec names a sandbox that is stopped or itself a member, names two containers, or joins
/// a sandbox's namespaces without its network.
pub fn find(store: &StateStore, spec: &Spec) -> Result<Option<Pod>, PodError> {
    let namespaces: Vec<_> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let annotations = spec.annotations().clone().unwrap_or_default();
    let cri_sandbox = annotations
        .get(CRI_CONTAINER_TYPE)
        .filter(|t| *t == "container")
        .and(annotations.get(CRI_SANDBOX_ID));
    let named_by_path = namespaces
        .iter()
        .any(|n| n.path().as_ref().is_some_and(|p| !p.as_os_str().is_empty()));
    if !named_by_path && cri_sandbox.is_none() {
        return Ok(None);
    }
    let all = candidates(store)?;
    let live: Vec<&Candidate> = all
        .iter()
        .filter(|c| procfs::is_alive(c.pid, c.start_time))
        .collect();
    let mut found: Option<(&Candidate, String)> = None;
    let mut joined = Vec::new();
    for ns in &namespaces {
        let Some(path) = ns.path().as_ref().filter(|p| !p.as_os_str().is_empty()) else {
            continue;
        };
        let by_pid = proc_pid(path).and_then(|pid| all.iter().find(|c| c.pid == pid));
        // podman names its pod's network namespace by its file (`/run/netns/...`): the
        // sandbox's monitor lives in it.
        let by_inode = || {
            if ns.typ() != LinuxNamespaceType::Network {
                return None;
            }
            let theirs = std::fs::metadata(path).ok()?;
            live.iter().copied().find(|c| {
                std::fs::metadata(format!("/proc/{}/ns/net", c.pid))
                    .is_ok_and(|m| (m.dev(), m.ino()) == (theirs.dev(), theirs.ino()))
            })
        };
        let Some(c) = by_pid.or_else(by_inode) else {
            continue;
        };
        let what = format!("{} path {}", ns_name(ns.typ()), path.display());
        match &found {
            Some((first, _)) if first.id != c.id => {
                return Err(PodError::TwoSandboxes {
                    first: first.id.clone(),
                    second: c.id.clone(),
                })
            }
            Some(_) => {}
            None => found = Some((c, what)),
        }
        joined.push(ns.typ());
    }
    if found.is_none() {
        if let Some(id) = cri_sandbox {
            if let Some(c) = all.iter().find(|c| &c.id == id) {
                found = Some((c, format!("annotation {CRI_SANDBOX_ID}")));
            }
        }
    }
    let Some((c, what)) = found else {
        return Ok(None);
    };
    let running = matches!(c.status, Status::Created | Status::Running | Status::Paused)
        && procfs::is_alive(c.pid, c.start_time);
    if !running {
        return Err(PodError::SandboxNotRunning {
            what,
            sandbox: c.id.clone(),
            status: if procfs::is_alive(c.pid, c.start_time) {
                c.status.to_string()
            } else {
                Status::Stopped.to_string()
            },
        });
    }
    if let Some(pod) = &c.pod {
        return Err(PodError::MemberOfMember {
            sandbox: c.id.clone(),
            pod: pod.clone(),
        });
    }
    if let Some(&first) = joined.first() {
        if !joined.contains(&LinuxNamespaceType::Network) {
            return Err(PodError::OwnNetwork {
                sandbox: c.id.clone(),
                joined: ns_name(first),
            });
        }
    } else {
        // Named by the CRI annotation only: the pod's network, IPC and UTS, as CRI gives them.
        joined = vec![
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
        ];
    }
    Ok(Some(Pod {
        sandbox: c.id.clone(),
        dir: c.dir.clone(),
        monitor_pid: c.pid,
        monitor_start_time: c.start_time,
        joined,
        vm_size: c.vm_size,
    }))
}

/// The guest's view of a member's spec: root and bind sources in the sandbox's share
/// (`layout`), and each namespace it shares with the sandbox the sandbox init's
/// (`/proc/<guest pid>/ns/<name>` in the guest); a namespace joined by a path that is not the
/// sandbox's is made new in the guest.
pub fn guest_spec(spec: &Spec, layout: &ShareLayout, pod: &Pod, sandbox_init: i32) -> Spec {
    let mut out = layout.guest_spec(spec);
    if let Some(namespaces) = out
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
    {
        for ns in namespaces.iter_mut() {
            if pod.joined.contains(&ns.typ()) {
                ns.set_path(Some(
                    format!("/proc/{sandbox_init}/ns/{}", ns_name(ns.typ())).into(),
                ));
            } else {
                ns.set_path(None);
            }
        }
    }
    out
}

/// Reaches the sandbox VM's agent through its vsock socket; the member's root is its entry in
/// the sandbox's share.
struct MemberConnector {
    vsock: VsockUds,
    rootfs: Mutex<String>,
}

impl AgentConnector for std::sync::Arc<MemberConnector> {
    fn connect(&self, port: u32) -> io::Result<std::os::unix::net::UnixStream> {
        self.vsock.connect(port)
    }

    fn guest_rootfs(&self, _id: &str, _host_rootfs: &Path) -> String {
        self.rootfs.lock().expect("rootfs lock").clone()
    }
}

/// A container in another container's VM (see the module documentation).
pub struct PodMemberSandbox {
    pod: Pod,
    id: String,
    connector: std::sync::Arc<MemberConnector>,
    agent: AgentSandbox<std::sync::Arc<MemberConnector>>,
    layout: Mutex<Option<ShareLayout>>,
    created: std::sync::atomic::AtomicBool,
}

impl PodMemberSandbox {
    /// A member `id` of `pod`.
    pub fn new(pod: Pod, id: &str) -> PodMemberSandbox {
        let connector = std::sync::Arc::new(MemberConnector {
            vsock: VsockUds {
                path: pod.dir.join(VSOCK_SOCKET),
            },
            rootfs: Mutex::new(String::new()),
        });
        PodMemberSandbox {
            agent: AgentSandbox::new(std::sync::Arc::clone(&connector)),
            connector,
            pod,
            id: id.to_owned(),
            layout: Mutex::new(None),
            created: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn sandbox_alive(&self) -> bool {
        procfs::is_alive(self.pod.monitor_pid, self.pod.monitor_start_time)
    }
}

/// Joins the mount namespace of the sandbox's monitor (`setns`) and its root directory, which
/// `setns` does not carry (the caller may run under a `chroot`, as the lab's tests do: the
/// namespace's root is then not the directory paths start from); the working directory stays
/// the one it was. The process must be single-threaded.
fn join_mount_namespace(pod: &Pod) -> Result<(), SandboxError> {
    let sys = |op: &'static str| {
        move |e: std::io::Error| SandboxError::Sys {
            op,
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    };
    let open_dir = |path: &str| {
        std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
    };
    let ns = std::fs::File::open(format!("/proc/{}/ns/mnt", pod.monitor_pid))
        .map_err(sys("open the pod sandbox monitor's mount namespace"))?;
    let root = open_dir(&format!("/proc/{}/root", pod.monitor_pid))
        .map_err(sys("open the pod sandbox monitor's root directory"))?;
    let cwd = open_dir(".").map_err(sys("open the working directory"))?;
    if !procfs::is_alive(pod.monitor_pid, pod.monitor_start_time) {
        return Err(SandboxError::InvalidState(
            "the pod's sandbox container ended while this container was created",
        ));
    }
    let step = |op: &'static str| move |source: nix::Error| SandboxError::Sys { op, source };
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(step("join the pod sandbox monitor's mount namespace"))?;
    nix::unistd::fchdir(root.as_raw_fd())
        .map_err(step("enter the pod sandbox monitor's root directory"))?;
    nix::unistd::chroot(".").map_err(step("chroot to the pod sandbox monitor's root"))?;
    nix::unistd::fchdir(cwd.as_raw_fd()).map_err(step("return to the working directory"))
}

impl Sandbox for PodMemberSandbox {
    fn kind(&self) -> &'static str {
        "pod-member"
    }

    /// Opens the member's trees here, joins the sandbox monitor's mount namespace and attaches
    /// them under the sandbox's share.
    fn prepare_mounts(&self, id: &str, bundle: &Bundle) -> Result<(), SandboxError> {
        let trees: MemberTrees = share::open_member(
            &self.pod.dir,
            id,
            &bundle.path,
            &bundle.rootfs,
            &bundle.spec,
        )
        .map_err(SandboxError::PrepareShare)?;
        join_mount_namespace(&self.pod)?;
        let layout = trees
            .attach(&self.pod.dir)
            .map_err(SandboxError::PrepareShare)?;
        *self.connector.rootfs.lock().expect("rootfs lock") = Path::new(share::GUEST_MOUNT)
            .join(&layout.rootfs)
            .to_string_lossy()
            .into_owned();
        *self.layout.lock().expect("layout lock") = Some(layout);
        Ok(())
    }

    fn boot(&self) -> Result<(), SandboxError> {
        self.agent.boot()
    }

    fn create_container(
        &self,
        id: &str,
        bundle: &Bundle,
        io: WorkloadIo,
    ) -> Result<(), SandboxError> {
        let layout =
            self.layout
                .lock()
                .expect("layout lock")
                .clone()
                .ok_or(SandboxError::InvalidState(
                    "the member's share is not attached",
                ))?;
        let pid_file = self.pod.dir.join(GUEST_INIT_PID);
        let sandbox_init: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(SandboxError::InvalidState(
                "the pod's sandbox container has not recorded its guest init's PID",
            ))?;
        let mut spec = guest_spec(&bundle.spec, &layout, &self.pod, sandbox_init);
        if let Some(vm) = self.pod.vm_size {
            spec = crate::sandbox::sizing::guest_cpuset(&spec, vm.vcpus);
        }
        let guest = Bundle {
            spec,
            ..bundle.clone()
        };
        self.agent.create_container(id, &guest, io)?;
        self.created
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // What the rest of a monitor's life needs (its share's unmounting, the state
        // directory); the threads it starts next inherit them.
        crate::host::capabilities::limit(&crate::host::capabilities::AFTER_SET_UP)
            .map_err(SandboxError::LimitCapabilities)?;
        vessel_vmm::seccomp::confine_monitor().map_err(SandboxError::ConfineMonitor)
    }

    fn start(&self) -> Result<(), SandboxError> {
        self.agent.start()
    }

    fn signal(&self, signal: i32, all: bool) -> Result<(), SandboxError> {
        self.agent.signal(signal, all)
    }

    /// The guest process's end; when the VM ends under it (the sandbox was deleted or killed,
    /// the guest died), the member ends as its processes did: by SIGKILL.
    fn wait(&self) -> Result<WorkloadExit, SandboxError> {
        match self.agent.wait() {
            Ok(exit) => Ok(exit),
            Err(e) if e.code().is_none() => {
                log::warn!(
                    "container {}: the pod's VM (container {}) ended under it: {}",
                    self.id,
                    self.pod.sandbox,
                    vessel_error::chain(&e)
                );
                Ok(WorkloadExit::Signaled(libc::SIGKILL))
            }
            Err(e) => Err(e),
        }
    }

    fn pause(&self) -> Result<(), SandboxError> {
        self.agent.pause()
    }

    fn resume(&self) -> Result<(), SandboxError> {
        self.agent.resume()
    }

    fn resize_terminal(&self, rows: u16, cols: u16) -> Result<(), SandboxError> {
        self.agent.resize_terminal(rows, cols)
    }

    fn agent_call(&self, request: Request) -> Result<Response, SandboxError> {
        self.agent.agent_call(request)
    }

    /// Removes the member from the guest (its processes are killed) and its entries from the
    /// sandbox's share; the VM stays with the sandbox.
    fn shutdown(&self) -> Result<(), SandboxError> {
        let mut result = Ok(());
        if self.created.load(std::sync::atomic::Ordering::SeqCst) && self.sandbox_alive() {
            result = self
                .agent
                .agent_call(Request::Delete {
                    container_id: self.id.clone(),
                })
                .map(drop);
        }
        share::remove_member(&self.pod.dir, &self.id).map_err(SandboxError::PrepareShare)?;
        result
    }
}

/// After a member's monitor is gone (`delete`): removes the member from the sandbox's guest, if
/// the VM still runs, and its entries from the sandbox's share (in the sandbox monitor's mount
/// namespace, from a forked child). Failures are logged: the VM may be gone.
///
/// Must be called from a single-threaded process: it forks.
pub fn release(store: &StateStore, sandbox: &str, id: &str) {
    let Ok(record) = store.load_any(sandbox) else {
        return;
    };
    if !procfs::is_alive(record.monitor_pid, record.monitor_start_time) {
        return;
    }
    let Ok(dir) = store.container_dir(sandbox) else {
        return;
    };
    let vsock = VsockUds {
        path: dir.join(VSOCK_SOCKET),
    };
    let deleted = vsock
        .connect(vessel_protocol::CONTROL_PORT)
        .and_then(|s| vessel_protocol::Client::handshake(s).map_err(io::Error::other))
        .and_then(|mut c| {
            c.call(Request::Delete {
                container_id: id.to_owned(),
            })
            .map_err(io::Error::other)
        });
    if let Err(e) = deleted {
        log::debug!("container {id}: remove it from pod {sandbox}'s guest: {e}");
    }
    let pod = Pod {
        sandbox: sandbox.to_owned(),
        dir: dir.clone(),
        monitor_pid: record.monitor_pid,
        monitor_start_time: record.monitor_start_time,
        joined: Vec::new(),
        vm_size: None,
    };
    // SAFETY: the caller is single-threaded (documented), so the child is a complete copy and
    // may run ordinary Rust code before it exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let code = match join_mount_namespace(&pod)
                .and_then(|()| share::remove_member(&dir, id).map_err(SandboxError::PrepareShare))
            {
                Ok(()) => 0,
                Err(e) => {
                    log::warn!(
                        "container {id}: remove its entries from pod {sandbox}'s share: {}",
                        vessel_error::chain(&e)
                    );
                    1
                }
            };
            std::process::exit(code);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(e) => log::warn!("container {id}: fork to clean pod {sandbox}'s share: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths_name_their_pid() {
        assert_eq!(proc_pid(Path::new("/proc/42/ns/net")), Some(42));
        assert_eq!(proc_pid(Path::new("/proc/self/ns/net")), None);
        assert_eq!(proc_pid(Path::new("/run/netns/cni-1")), None);
        assert_eq!(proc_pid(Path::new("/proc/42/fd/3")), None);
    }

    fn spec(v: serde_json::Value) -> Spec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_container_naming_no_vessel_container_gets_its_own_vm() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::new(root.path());
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [
                {"type": "network", "path": "/proc/1/ns/net"},
                {"type": "pid"}
            ]}
        }));
        assert!(find(&store, &s).unwrap().is_none());
        let cri = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": {CRI_CONTAINER_TYPE: "container", CRI_SANDBOX_ID: "nosuch"},
            "linux": {"namespaces": [{"type": "network"}]}
        }));
        assert!(find(&store, &cri).unwrap().is_none());
    }

    #[test]
    fn the_guest_spec_joins_the_sandbox_inits_namespaces() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [
                {"type": "network", "path": "/proc/77/ns/net"},
                {"type": "ipc", "path": "/proc/77/ns/ipc"},
                {"type": "uts", "path": "/proc/77/ns/uts"},
                {"type": "pid"},
                {"type": "mount"}
            ]}
        }));
        let layout = ShareLayout {
            dir: "/run/vessel/pod/share".into(),
            rootfs: "pods/c2/rootfs".into(),
            rootfs_readonly: false,
            mounts: Vec::new(),
        };
        let pod = Pod {
            sandbox: "pod".into(),
            dir: "/run/vessel/pod".into(),
            monitor_pid: 77,
            monitor_start_time: 1,
            joined: vec![
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
            ],
            vm_size: None,
        };
        let g = guest_spec(&s, &layout, &pod, 5);
        assert_eq!(
            g.root().as_ref().unwrap().path(),
            Path::new("/run/vessel/shared/pods/c2/rootfs")
        );
        let paths: Vec<(String, Option<String>)> = g
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    ns_name(n.typ()).to_owned(),
                    n.path().as_ref().map(|p| p.display().to_string()),
                )
            })
            .collect();
        assert_eq!(
            paths,
            vec![
                ("net".into(), Some("/proc/5/ns/net".into())),
                ("ipc".into(), Some("/proc/5/ns/ipc".into())),
                ("uts".into(), Some("/proc/5/ns/uts".into())),
                ("pid".into(), None),
                ("mnt".into(), None),
            ]
        );
    }
}
