//! Control messages: requests from the host, responses from the agent, and their envelopes.
//!
//! Each control frame body is the JSON of a [`RequestEnvelope`] (host -> agent) or a
//! [`ResponseEnvelope`] (agent -> host). On every accepted control connection the agent first
//! sends, unasked, a `ResponseEnvelope { id: 0, result: Ok(Response::Hello(..)) }`. Then it
//! serves requests one at a time, in order, answering each with the envelope of the same `id`
//! (host ids start at 1). A request that blocks (`Wait`) blocks only its own connection: the host
//! opens one control connection per concurrent waiter.
//!
//! OCI objects (`process`, `root`, `mounts`, `linux`, `linux.resources`) are carried as the
//! `oci-spec` types, so their JSON is exactly the runtime-spec's `config.json` JSON.

use oci_spec::runtime::{Linux, LinuxResources, Mount, Process, Root, Spec};
use serde::{Deserialize, Serialize};

use crate::stats::Stats;
use crate::status::RemoteError;

/// A request with the id its response will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Chosen by the host, echoed in the response; 0 is reserved for the agent's hello.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// A response, or the typed error that replaced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// The id of the request answered (0 for the unsolicited hello).
    pub id: u64,
    /// `{"Ok": <Response>}` or `{"Err": <RemoteError>}`.
    pub result: Result<Response, RemoteError>,
}

/// Everything the host can ask of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Ask for the [`Hello`] again. Answer: [`Response::Hello`].
    Hello,
    /// Set a container up (everything but the `execve` of `process.args`) and leave its init
    /// blocked until [`Request::Start`]. Answer: [`Response::Created`].
    CreateContainer(Box<CreateContainer>),
    /// Let a created container's init `execve` its program. Answer: [`Response::Done`].
    Start {
        /// The container id.
        container_id: String,
    },
    /// Give a created container the network the host found in its network namespace: each
    /// interface is a virtio-net interface of the guest, moved into the container's network
    /// namespace and configured as listed (see [`crate::network`]). Sent after
    /// [`Request::CreateContainer`] and before [`Request::Start`]; may be sent again with
    /// interfaces not configured before (earlier ones are left as they are; one listed again
    /// exactly as configured is a no-op, with other settings it is refused as already
    /// existing). The container needs a network namespace of its own. Answer:
    /// [`Response::Done`].
    ConfigureNetwork {
        /// The container id.
        container_id: String,
        /// The interfaces to configure.
        interfaces: Vec<crate::network::Interface>,
    },
    /// Start an additional process in a running container's namespaces, cgroup and seccomp
    /// filter. Answer: [`Response::ExecStarted`].
    Exec(Box<ExecProcess>),
    /// Send a signal. Answer: [`Response::Done`].
    Signal {
        /// The container id.
        container_id: String,
        /// An exec id, or `None` for the container's init.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
        /// The signal number (Linux x86_64 numbering).
        signal: i32,
        /// Send to every process of the container's cgroup (runc `kill --all`); only meaningful
        /// without `exec_id`.
        #[serde(default)]
        all: bool,
    },
    /// Wait until the process has exited (returns at once if it already has; may be repeated).
    /// Answer: [`Response::Exited`].
    Wait {
        /// The container id.
        container_id: String,
        /// An exec id, or `None` for the container's init.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
    /// List the container's processes. Answer: [`Response::Processes`].
    Ps {
        /// The container id.
        container_id: String,
    },
    /// Read the container's cgroup statistics. Answer: [`Response::Stats`].
    Stats {
        /// The container id.
        container_id: String,
    },
    /// The count of OOM kills in the container's cgroup (`oom_kill` in `memory.events`).
    /// Without `seen`, answers at once; with it, blocks until the count exceeds `seen` or the
    /// container's init has exited (then the count may equal `seen`). Answer:
    /// [`Response::OomKills`].
    WaitOom {
        /// The container id.
        container_id: String,
        /// The count the host has already reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seen: Option<u64>,
    },
    /// Freeze the container's cgroup (`cgroup.freeze` = 1), waiting until it is frozen.
    /// Answer: [`Response::Done`].
    Pause {
        /// The container id.
        container_id: String,
    },
    /// Thaw the container's cgroup (`cgroup.freeze` = 0). Answer: [`Response::Done`].
    Resume {
        /// The container id.
        container_id: String,
    },
    /// Apply new resource limits to the container's cgroup. Answer: [`Response::Done`].
    Update {
        /// The container id.
        container_id: String,
        /// The limits, as OCI `linux.resources`; absent fields are left unchanged.
        resources: Box<LinuxResources>,
    },
    /// Set a process terminal's window size. Answer: [`Response::Done`].
    ResizeTty {
        /// The container id.
        container_id: String,
        /// An exec id, or `None` for the container's init.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
        /// Rows (characters).
        rows: u16,
        /// Columns (characters).
        cols: u16,
    },
    /// Close a process's stdin so it reads EOF. Answer: [`Response::Done`].
    CloseStdin {
        /// The container id.
        container_id: String,
        /// An exec id, or `None` for the container's init.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
    /// Kill what is left of a container and remove its cgroup. Answer: [`Response::Done`].
    Delete {
        /// The container id.
        container_id: String,
    },
    /// Sync file systems and power the VM off. Answer: [`Response::Done`], sent before the
    /// power-off.
    Shutdown,
    /// The agent's own time from a request to a process's `execve` (its setup cost, measured
    /// in the guest). Answer: [`Response::Timings`].
    Timings {
        /// The container id.
        container_id: String,
        /// An exec id, or `None` for the container's init.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
}

/// The container to create, taken from the bundle's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateContainer {
    /// The container id (runc's id rules are checked by the host).
    pub id: String,
    /// `root`, with `path` rewritten by the host to the rootfs's path in the guest, e.g.
    /// `/run/vessel/shared/<id>/rootfs` (virtio-fs).
    pub root: Root,
    /// `process`.
    pub process: Process,
    /// `mounts`, in order; bind sources are guest paths.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// `hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `domainname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// `linux`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<Linux>,
    /// Which standard streams the host will attach.
    #[serde(default)]
    pub stdio: StdioConfig,
}

impl CreateContainer {
    /// Builds the request from a whole spec, with `rootfs` as the guest path of the root file
    /// system (replacing `root.path`).
    ///
    /// A spec without `process` gets `Process::default()` (the host validates `process` before
    /// this, as runc's `validateProcessSpec` does).
    pub fn from_spec(id: impl Into<String>, spec: &Spec, rootfs: impl Into<String>) -> Self {
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_path(rootfs.into().into());
        CreateContainer {
            id: id.into(),
            root,
            process: spec.process().clone().unwrap_or_default(),
            mounts: spec.mounts().clone().unwrap_or_default(),
            hostname: spec.hostname().clone(),
            domainname: spec.domainname().clone(),
            linux: spec.linux().clone(),
            stdio: StdioConfig::default(),
        }
    }
}

/// An additional process to run in a container (runc `exec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecProcess {
    /// The container id.
    pub container_id: String,
    /// The exec id, unique within the container, chosen by the host.
    pub exec_id: String,
    /// The OCI `process` object (its own user, env, cwd, capabilities, terminal).
    pub process: Process,
    /// Which standard streams the host will attach.
    #[serde(default)]
    pub stdio: StdioConfig,
}

/// Which standard streams of a process are relayed to the host (see [`crate::stdio`]).
///
/// A stream that is `false` is connected to `/dev/null` in the guest. With `process.terminal`
/// these flags are ignored: the process gets a pty on all three and the host attaches `tty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioConfig {
    /// Relay stdin.
    pub stdin: bool,
    /// Relay stdout.
    pub stdout: bool,
    /// Relay stderr.
    pub stderr: bool,
}

impl Default for StdioConfig {
    /// All three streams relayed.
    fn default() -> Self {
        StdioConfig {
            stdin: true,
            stdout: true,
            stderr: true,
        }
    }
}

/// Everything the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// The agent is ready.
    Hello(Hello),
    /// The container is created; its init is blocked before `execve`.
    Created {
        /// Guest PID of the container's init.
        pid: i32,
        /// Time the agent spent on the request, in microseconds.
        setup_us: u64,
    },
    /// The exec'd process is running.
    ExecStarted {
        /// Guest PID of the process.
        pid: i32,
    },
    /// The process has exited.
    Exited {
        /// How it ended.
        status: ExitStatus,
    },
    /// The container's processes.
    Processes(ProcessList),
    /// The container's statistics.
    Stats(Stats),
    /// OOM kills in the container's cgroup so far.
    OomKills {
        /// The `oom_kill` counter of `memory.events`.
        count: u64,
        /// Whether the container's init has exited (no more OOM kills will be waited for).
        exited: bool,
    },
    /// The request was carried out and has nothing to return.
    Done,
    /// Answer to [`Request::Timings`].
    Timings(ExecTimings),
}

/// How long the agent took to bring a process to its `execve`, on the guest's
/// `CLOCK_MONOTONIC`. The end point is the `execve` itself: the agent sees it as EOF on the
/// process's close-on-exec setup channel, the last thing it can observe before the program's
/// first instruction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecTimings {
    /// From receipt of the request that set the process up (`create_container` or `exec`) to
    /// the process blocked before `execve`, in microseconds.
    pub setup_us: u64,
    /// From receipt of the request that released it (`start`, or the same `exec`) to its
    /// `execve`, in microseconds; 0 while it has not been released.
    pub release_us: u64,
    /// The agent's time from the request to the program's first instruction, without the time
    /// a created container waited for `start`: `setup_us + release_us` for a container's init;
    /// for an exec, its one request's time (at least that sum: it also covers the bookkeeping
    /// between setup and release).
    pub request_to_exec_us: u64,
}

/// The agent's greeting, sent first on every control connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// `vessel-agent`'s crate version.
    pub agent_version: String,
    /// The protocol version the agent speaks ([`crate::PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// Guest `CLOCK_BOOTTIME` when the agent became ready, in microseconds: the guest's boot
    /// time from kernel entry to a listening agent.
    pub boot_to_ready_us: u64,
    /// The guest kernel's release (`uname -r`).
    pub kernel_release: String,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this code (0..=255).
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// The status as a shell or runc reports it: the code, or 128 + the signal number.
    pub fn runc_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// The container's processes as seen in the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessList {
    /// Guest PIDs (in the agent's PID namespace) of every process in the container's cgroup.
    pub pids: Vec<i32>,
    /// Details of those processes, read from `/proc/<pid>/`.
    pub processes: Vec<ProcessInfo>,
}

/// One process, as `ps -ef` would show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// PID.
    pub pid: i32,
    /// Parent PID.
    pub ppid: i32,
    /// Real user id.
    pub uid: u32,
    /// State letter from `/proc/<pid>/stat` (`R`, `S`, `D`, `Z`, `T` ...).
    pub state: String,
    /// Start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
    pub start_ticks: u64,
    /// User plus system CPU time in clock ticks.
    pub cpu_ticks: u64,
    /// `/proc/<pid>/cmdline` joined with spaces, or `[comm]` when empty (kernel threads, zombies).
    pub cmd: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{read_message, write_message};
    use crate::status::Code;
    use oci_spec::runtime::ProcessBuilder;

    fn round_trip_request(r: Request) {
        let env = RequestEnvelope { id: 7, request: r };
        let mut buf = Vec::new();
        write_message(&mut buf, &env).unwrap();
        let back: RequestEnvelope = read_message(&mut std::io::Cursor::new(buf))
            .unwrap()
            .unwrap();
        assert_eq!(back, env);
    }

    fn round_trip_response(r: Result<Response, RemoteError>) {
        let env = ResponseEnvelope { id: 9, result: r };
        let mut buf = Vec::new();
        write_message(&mut buf, &env).unwrap();
        let back: ResponseEnvelope = read_message(&mut std::io::Cursor::new(buf))
            .unwrap()
            .unwrap();
        assert_eq!(back, env);
    }

    fn process() -> Process {
        ProcessBuilder::default()
            .args(vec!["sh".to_string(), "-c".into(), "exit 3".into()])
            .cwd("/tmp")
            .env(vec!["PATH=/bin".to_string()])
            .build()
            .unwrap()
    }

    #[test]
    fn every_request_round_trips() {
        let spec = Spec::default();
        let cid = || "c1".to_string();
        let mut create = CreateContainer::from_spec("c1", &spec, "/run/vessel/shared/c1/rootfs");
        create.process = process();
        create.stdio.stdin = false;
        for r in [
            Request::Hello,
            Request::CreateContainer(Box::new(create)),
            Request::Start {
                container_id: cid(),
            },
            Request::Exec(Box::new(ExecProcess {
                container_id: cid(),
                exec_id: "e1".into(),
                process: process(),
                stdio: StdioConfig::default(),
            })),
            Request::Signal {
                container_id: cid(),
                exec_id: Some("e1".into()),
                signal: 9,
                all: false,
            },
            Request::Signal {
                container_id: cid(),
                exec_id: None,
                signal: 15,
                all: true,
            },
            Request::Wait {
                container_id: cid(),
                exec_id: None,
            },
            Request::Ps {
                container_id: cid(),
            },
            Request::Stats {
                container_id: cid(),
            },
            Request::WaitOom {
                container_id: cid(),
                seen: Some(2),
            },
            Request::Pause {
                container_id: cid(),
            },
            Request::Resume {
                container_id: cid(),
            },
            Request::Update {
                container_id: cid(),
                resources: Box::default(),
            },
            Request::ResizeTty {
                container_id: cid(),
                exec_id: None,
                rows: 24,
                cols: 80,
            },
            Request::CloseStdin {
                container_id: cid(),
                exec_id: Some("e1".into()),
            },
            Request::Delete {
                container_id: cid(),
            },
            Request::Shutdown,
            Request::Timings {
                container_id: cid(),
                exec_id: Some("e1".into()),
            },
        ] {
            round_trip_request(r);
        }
    }

    #[test]
    fn every_response_round_trips() {
        for r in [
            Ok(Response::Hello(Hello {
                agent_version: "0.1.0".into(),
                protocol_version: crate::PROTOCOL_VERSION,
                boot_to_ready_us: 123_456,
                kernel_release: "6.1.0".into(),
            })),
            Ok(Response::Created {
                pid: 42,
                setup_us: 900,
            }),
            Ok(Response::ExecStarted { pid: 43 }),
            Ok(Response::Exited {
                status: ExitStatus::Signal(9),
            }),
            Ok(Response::Processes(ProcessList {
                pids: vec![42, 43],
                processes: vec![ProcessInfo {
                    pid: 42,
                    ppid: 1,
                    uid: 0,
                    state: "S".into(),
                    start_ticks: 10,
                    cpu_ticks: 1,
                    cmd: "sh -c sleep 1".into(),
                }],
            })),
            Ok(Response::Stats(Stats::default())),
            Ok(Response::OomKills {
                count: 3,
                exited: false,
            }),
            Ok(Response::Done),
            Ok(Response::Timings(ExecTimings {
                setup_us: 1200,
                release_us: 300,
                request_to_exec_us: 1500,
            })),
            Err(RemoteError::new(Code::NotFound, "container c9 not found")),
        ] {
            round_trip_response(r);
        }
    }

    #[test]
    fn wire_json_is_readable_and_stable() {
        let env = RequestEnvelope {
            id: 3,
            request: Request::Signal {
                container_id: "c1".into(),
                exec_id: None,
                signal: 15,
                all: true,
            },
        };
        assert_eq!(
            serde_json::to_string(&env).unwrap(),
            r#"{"id":3,"request":{"op":"signal","container_id":"c1","signal":15,"all":true}}"#
        );
        let env = ResponseEnvelope {
            id: 3,
            result: Ok(Response::Exited {
                status: ExitStatus::Code(3),
            }),
        };
        assert_eq!(
            serde_json::to_string(&env).unwrap(),
            r#"{"id":3,"result":{"Ok":{"kind":"exited","status":{"code":3}}}}"#
        );
    }

    #[test]
    fn exit_status_maps_signals_to_128_plus_n() {
        assert_eq!(ExitStatus::Code(3).runc_code(), 3);
        assert_eq!(ExitStatus::Signal(9).runc_code(), 137);
    }

    #[test]
    fn create_from_spec_takes_the_guest_rootfs() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs","readonly":true},
                "process":{"cwd":"/","args":["true"],"user":{"uid":0,"gid":0}},
                "hostname":"h1","linux":{"namespaces":[{"type":"pid"}]}}"#,
        )
        .unwrap();
        let c = CreateContainer::from_spec("c1", &spec, "/run/vessel/shared/c1/rootfs");
        assert_eq!(
            c.root.path().to_str().unwrap(),
            "/run/vessel/shared/c1/rootfs"
        );
        assert_eq!(c.root.readonly(), Some(true));
        assert_eq!(c.hostname.as_deref(), Some("h1"));
        assert_eq!(
            c.process.args().as_ref().unwrap(),
            &vec!["true".to_string()]
        );
    }
}
