//! CLI tests of the real `vessel` binary against runc's contract
//! (`../shared/reference/runc-cli-contract.md`), each with its own temporary `--root`.
//!
//! Lifecycle tests use the host test double (`VESSEL_TEST_SANDBOX=host`): this machine's KVM
//! cannot boot a guest, and the double runs `process.args` directly on the host so that the
//! monitor, pid-file, state and exit-status plumbing can be checked for real.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

mod common;

use common::{text, VESSEL};

/// A temporary root and bundle directory.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A bundle whose process is `sh -c <script>`. Its `linux.cgroupsPath` is relative and
    /// unique to this bundle, so that tests running at the same time (other test processes
    /// too) never share a host cgroup.
    fn bundle(&self, name: &str, script: &str) -> PathBuf {
        let b = self.dir.path().join(name);
        std::fs::create_dir_all(b.join("rootfs")).unwrap();
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
                        "args": ["sh", "-c", script], "env": ["PATH=/usr/bin:/bin"]},
            "annotations": {"org.example/k": "v"},
            "linux": {"cgroupsPath": self.cgroup_name(name),
                      "namespaces": [{"type": "network"}]}
        });
        std::fs::write(b.join("config.json"), config.to_string()).unwrap();
        b
    }

    /// `vessel-test-<temp dir name>-<name>`: unique to this test and bundle.
    fn cgroup_name(&self, name: &str) -> String {
        let tmp = self.dir.path().file_name().unwrap().to_string_lossy();
        format!("vessel-test-{}-{name}", tmp.trim_start_matches('.'))
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(VESSEL);
        c.arg("--root").arg(self.root()).args(args);
        c.env("VESSEL_TEST_SANDBOX", "host");
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `create` with stdout on /dev/null and stderr in a file: the workload inherits both, so a
    /// pipe would stay open (and `output()` block) while the workload lives.
    fn create(&self, id: &str, bundle: &Path, extra: &[&str]) -> Output {
        let err_path = self
            .dir
            .path()
            .join(format!("create-{}.err", id.replace('/', "_")));
        let mut c = self.cmd(&["create", "--bundle", bundle.to_str().unwrap()]);
        c.args(extra).arg(id).stdout(Stdio::null());
        c.stderr(std::fs::File::create(&err_path).unwrap());
        let status = c.status().unwrap();
        Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(&err_path).unwrap(),
        }
    }

    fn state(&self, id: &str) -> serde_json::Value {
        let out = self.run(&["state", id]);
        assert!(out.status.success(), "state {id}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Makes this test process the subreaper of orphaned monitors, as containerd's shim and conmon
/// are, so tests can wait for a pid-file process.
fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
}

/// Whether this process has CAP_SYS_RESOURCE (bit 24 of `CapEff`), which the monitor needs to
/// replace its command line.
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(eff, 16).unwrap() & (1 << 24) != 0
}

fn wait_exit(pid: i32) -> i32 {
    match waitpid(Pid::from_raw(pid), None).unwrap() {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        other => panic!("unexpected wait status {other:?}"),
    }
}

/// Checks the exit code and the error text. Without `--log`, errors are logrus text lines on
/// stderr (`msg="..."`, quotes escaped), as with runc.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    let escaped = needle.replace('"', "\\\"");
    assert!(
        stderr.contains(needle) || stderr.contains(&escaped),
        "stderr {stderr:?} lacks {needle:?}"
    );
}

#[test]
fn state_of_unknown_container_fails() {
    let env = Env::new();
    assert_fails(&env.run(&["state", "nope"]), 1, "container does not exist");
}

#[test]
fn invalid_ids_are_refused() {
    let env = Env::new();
    let bundle = env.bundle("b", "true");
    for id in ["a/b", "..", "x y", "é"] {
        assert_fails(
            &env.create(id, &bundle, &[]),
            1,
            "invalid container ID format",
        );
        assert_fails(&env.run(&["state", id]), 1, "invalid container ID format");
    }
    assert!(!env.root().join("..").join("b").join("state.json").exists());
    assert_fails(
        &env.create("", &bundle, &[]),
        1,
        "container id cannot be empty",
    );
    assert_fails(&env.run(&["state", ""]), 1, "container id cannot be empty");
}

#[test]
fn wrong_argument_count_prints_incorrect_usage_on_stdout() {
    let env = Env::new();
    let out = env.run(&["state"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with("Incorrect Usage.\n\n"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("Usage: vessel state"));
    assert_fails(&out, 1, "\"state\" requires exactly 1 argument(s)");
    let out = env.run(&["kill", "a", "9", "extra"]);
    assert_fails(&out, 1, "\"kill\" requires a maximum of 2 argument(s)");
}

#[test]
fn list_is_null_when_empty_and_missing_explicit_root_fails() {
    let env = Env::new();
    std::fs::create_dir(env.root()).unwrap();
    let out = env.run(&["list", "--format", "json"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "null\n");
    let out = env.run(&["list", "--format=json"]);
    assert_eq!(text(&out.stdout), "null\n");
    let out = env.run(&["list", "-q"]);
    assert_eq!(text(&out.stdout), "");
    std::fs::remove_dir(env.root()).unwrap();
    assert_eq!(env.run(&["list"]).status.code(), Some(1));
}

#[test]
fn json_log_gets_one_logrus_line_and_stderr_one_plain_line() {
    let env = Env::new();
    let log = env.dir.path().join("log.json");
    for _ in 0..2 {
        let out = env.run(&[
            "--log",
            log.to_str().unwrap(),
            "--log-format=json",
            "state",
            "gone",
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(text(&out.stderr), "container does not exist\n");
    }
    let content = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = content.lines().collect();
    assert_eq!(lines.len(), 2, "appended, not truncated: {content}");
    let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v["level"], "error");
    assert_eq!(v["msg"], "container does not exist");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn bad_log_format_is_refused() {
    let env = Env::new();
    assert_fails(
        &env.run(&["--log-format", "xml", "list"]),
        1,
        "invalid log-format: xml",
    );
}

#[test]
fn missing_config_json_fails_create_and_leaves_nothing() {
    let env = Env::new();
    let empty = env.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = env.create("c", &empty, &[]);
    assert_fails(&out, 1, "JSON specification file config.json not found");
    assert!(!env.root().join("c").exists());
}

#[test]
fn unknown_executable_fails_at_create() {
    let env = Env::new();
    let b = env.dir.path().join("nox");
    std::fs::create_dir_all(b.join("rootfs")).unwrap();
    std::fs::write(
        b.join("config.json"),
        r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["no-such-binary-xyz"]},
            "linux":{"namespaces":[{"type":"network"}]}}"#,
    )
    .unwrap();
    let out = env.create("c", &b, &[]);
    assert_fails(&out, 1, "executable file not found in $PATH");
    assert!(!env.root().join("c").exists());
}

/// A spec without a network namespace asks for the host's network, which a microVM cannot
/// share: create fails naming the field and the two ways out, and leaves no state behind.
#[test]
fn host_networking_fails_create_naming_the_field_and_leaves_nothing() {
    let env = Env::new();
    let b = env.bundle("hostnet", "exit 0");
    let config = b.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    spec["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "mount"}]);
    std::fs::write(&config, spec.to_string()).unwrap();
    let out = env.create("c", &b, &[]);
    assert_fails(&out, 1, "linux.namespaces has no \"network\" entry");
    assert!(text(&out.stderr).contains("run host-network containers with runc"));
    assert!(!env.root().join("c").exists());
    // The same bundle with a network entry is created.
    spec["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "network"}]);
    std::fs::write(&config, spec.to_string()).unwrap();
    let out = env.create("c", &b, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.run(&["delete", "--force", "c"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!env.root().join("c").exists());
}

#[test]
fn unknown_capability_is_ignored_with_runc_s_warning_and_a_malformed_config_named() {
    let env = Env::new();
    let b = env.bundle("caps", "exit 0");
    let config = b.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    spec["process"]["capabilities"] =
        serde_json::json!({"bounding": ["CAP_KILL", "CAP_FOO"], "effective": ["CAP_KILL"]});
    std::fs::write(&config, spec.to_string()).unwrap();
    // runc ≥1.1 creates the container and warns (libcontainer/capabilities `New`).
    let out = env.create("c", &b, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            r#"level=warning msg="ignoring unknown or unavailable capabilities: [CAP_FOO] (in process.capabilities.bounding)""#
        ),
        "{stderr}"
    );
    assert!(env.run(&["delete", "--force", "c"]).status.success());

    // A truncated config.json: its path, where it ends, what to do; no serde_path_to_error `?`.
    let text_of = spec.to_string();
    let cut = &text_of[..text_of.find("CAP_FOO").unwrap()];
    std::fs::write(&config, cut).unwrap();
    let out = env.create("c", &b, &[]);
    let expected = format!(
        "parse {}: the JSON ends inside process.capabilities.bounding[1]; complete it (is the \
         file truncated?): EOF while parsing a string at line 1 column {}",
        config.display(),
        cut.len()
    );
    assert_fails(&out, 1, &expected);
    assert!(!env.root().join("c").exists());
}

#[test]
fn spec_writes_once_and_features_is_four_space_json() {
    let env = Env::new();
    let b = env.dir.path().join("spec");
    std::fs::create_dir(&b).unwrap();
    let out = env.run(&["spec", "-b", b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"][0], "sh");
    assert_eq!(spec["root"]["path"], "rootfs");
    let out = env.run(&["spec", "--bundle", b.to_str().unwrap()]);
    assert_fails(&out, 1, "File config.json exists. Remove it first");

    let out = Command::new(VESSEL).arg("features").output().unwrap();
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert!(s.starts_with("{\n    \"ociVersionMin\""), "{s}");
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["ociVersionMax"], "1.2.0");
}

#[test]
fn version_first_line_and_spec_line() {
    let out = Command::new(VESSEL).arg("--version").output().unwrap();
    assert!(out.status.success());
    let s = text(&out.stdout);
    // go-runc's parser needs the first line to be `<name> version <v>`; it reads `spec: `.
    let mut lines = s.lines();
    assert_eq!(
        lines.next(),
        Some(format!("vessel version {}", env!("CARGO_PKG_VERSION")).as_str()),
        "{s}"
    );
    let spec = lines
        .find_map(|l| l.strip_prefix("spec: "))
        .expect("spec line");
    assert_eq!(spec.split('.').count(), 3, "a runtime-spec version: {spec}");
}

#[test]
fn kill_looks_up_the_container_before_the_signal() {
    // runc kill.go: getContainer, then parseSignal.
    let env = Env::new();
    assert_fails(
        &env.run(&["kill", "c", "sigfoo"]),
        1,
        "container does not exist",
    );
    assert_fails(
        &env.run(&["kill", "c", "KILL"]),
        1,
        "container does not exist",
    );
}

#[test]
fn help_shows_the_global_flags_defaults() {
    // As root the default root is /run/vessel whatever XDG_RUNTIME_DIR says (runc main.go).
    let out = Command::new(VESSEL)
        .arg("--help")
        .env("XDG_RUNTIME_DIR", "/run/user/1000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    let line_of = |flag: &str| {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
        help[at..].lines().take(2).collect::<Vec<_>>().join(" ")
    };
    let expected_root = if nix::unistd::geteuid().is_root() {
        "[default: /run/vessel]"
    } else {
        "[default: /run/user/1000/vessel]"
    };
    assert!(line_of("--root <PATH>").ends_with(expected_root), "{help}");
    assert!(
        line_of("--log <PATH>").ends_with("[default: stderr]"),
        "{help}"
    );
    assert!(
        line_of("--log-format <FORMAT>").ends_with("[default: text]"),
        "{help}"
    );
    assert!(
        line_of("--systemd-cgroup")
            .contains("`linux.cgroupsPath` must then be `slice:prefix:name`"),
        "{help}"
    );
    assert!(
        line_of("--rootless <VALUE>").ends_with("[default: auto]"),
        "{help}"
    );
}

#[test]
fn checkpoint_help_fails_so_podman_sees_no_support() {
    let out = Command::new(VESSEL)
        .args(["checkpoint", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("checkpoint is not supported"));
}

#[test]
fn create_start_wait_with_pid_file_and_exit_code() {
    become_subreaper();
    let env = Env::new();
    let bundle = env.bundle("b", "read x < /dev/null; exit 3");
    let pid_file = env.dir.path().join("init.pid");
    let out_file = env.dir.path().join("create.out");
    let mut c = env.cmd(&["create", "--bundle", bundle.to_str().unwrap(), "--pid-file"]);
    c.arg(&pid_file).arg("c1");
    c.stdout(std::fs::File::create(&out_file).unwrap());
    c.stderr(std::fs::File::create(env.dir.path().join("create.err")).unwrap());
    assert!(
        c.status().unwrap().success(),
        "{}",
        std::fs::read_to_string(env.dir.path().join("create.err")).unwrap()
    );
    // Nothing written by vessel on the container's stdio during create.
    assert_eq!(std::fs::read(&out_file).unwrap(), b"");
    assert_eq!(
        std::fs::read(env.dir.path().join("create.err")).unwrap(),
        b""
    );
    // Decimal, no newline, no temp file left.
    let content = std::fs::read_to_string(&pid_file).unwrap();
    assert!(content.chars().all(|c| c.is_ascii_digit()), "{content:?}");
    assert!(!env.dir.path().join(".init.pid").exists());
    let pid: i32 = content.parse().unwrap();

    let state = env.state("c1");
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid);
    assert_eq!(state["annotations"]["org.example/k"], "v");
    assert!(state["bundle"].as_str().unwrap().starts_with('/'));
    assert!(state["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(state["owner"], "");

    let dup = env.create("c1", &bundle, &[]);
    assert_fails(&dup, 1, "container with given ID already exists");

    assert!(env.run(&["start", "c1"]).status.success());
    assert_eq!(
        wait_exit(pid),
        3,
        "the pid-file process exits with the workload's code"
    );
    // Stopped as soon as the monitor is reaped, with pid 0.
    let state = env.state("c1");
    assert_eq!(state["status"], "stopped");
    assert_eq!(state["pid"], 0);
    assert_fails(
        &env.run(&["start", "c1"]),
        1,
        "cannot start a container that has stopped",
    );
    assert_fails(&env.run(&["kill", "c1"]), 1, "container not running");
    assert_fails(
        &env.run(&["kill", "c1", "sigfoo"]),
        1,
        "unknown signal \"sigfoo\"",
    );
    assert!(env.run(&["kill", "--all", "c1", "9"]).status.success());
    assert!(env.run(&["delete", "c1"]).status.success());
    assert!(!env.root().join("c1").exists());
}

#[test]
fn kill_by_name_gives_128_plus_signal() {
    become_subreaper();
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    let pid_file = env.dir.path().join("pid");
    let out = env.create("k", &bundle, &["--pid-file", pid_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(env.run(&["start", "k"]).status.success());
    assert_fails(
        &env.run(&["start", "k"]),
        1,
        "cannot start an already running container",
    );
    assert_eq!(env.state("k")["status"], "running");
    assert!(env.run(&["kill", "k", "sigkill"]).status.success());
    assert_eq!(wait_exit(pid), 137);
    assert!(env.run(&["delete", "k"]).status.success());
}

#[test]
fn workload_output_reaches_the_callers_pipe_and_ends_in_eof() {
    let env = Env::new();
    let bundle = env.bundle("b", "echo out; echo err >&2");
    let mut c = env.cmd(&["create", "--bundle", bundle.to_str().unwrap(), "io"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // Start from another process while `create`'s pipes are being read to EOF.
    let root = env.root();
    let starter = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !root.join("io").join("state.json").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Command::new(VESSEL)
            .arg("--root")
            .arg(&root)
            .args(["start", "io"])
            .output()
            .unwrap()
    });
    let out = child.wait_with_output().unwrap();
    assert!(starter.join().unwrap().status.success());
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n"); // The stopped container still holds its host cgroup until deleted.
    assert!(env.run(&["delete", "io"]).status.success());
}

#[test]
fn delete_follows_runc_rules() {
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    // created: deletable without --force, monitor killed.
    assert!(env.create("cr", &bundle, &[]).status.success());
    let pid = env.state("cr")["pid"].as_i64().unwrap() as i32;
    assert!(env.run(&["delete", "cr"]).status.success());
    assert!(!env.root().join("cr").exists());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "monitor still alive: {stat}"
    );
    // running: refused without --force, accepted with it.
    assert!(env.create("ru", &bundle, &[]).status.success());
    assert!(env.run(&["start", "ru"]).status.success());
    let out = env.run(&["delete", "ru"]);
    assert_fails(
        &out,
        1,
        "cannot delete container ru that is not stopped: running",
    );
    assert!(env.run(&["delete", "--force", "ru"]).status.success());
    assert!(!env.root().join("ru").exists());
    // missing: error without force, exit 0 with; a leftover directory is removed either way.
    assert_fails(&env.run(&["delete", "gone"]), 1, "container does not exist");
    assert!(env.run(&["delete", "-f", "gone"]).status.success());
    std::fs::create_dir_all(env.root().join("half")).unwrap();
    assert_fails(&env.run(&["delete", "half"]), 1, "container does not exist");
    assert!(!env.root().join("half").exists());
}

#[test]
fn state_records_the_bundle_s_physical_path_as_runc_does() {
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    std::fs::create_dir(env.dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(&bundle, env.dir.path().join("link")).unwrap();
    let physical = bundle.canonicalize().unwrap();
    // Given relative with `..` from another directory, then through a symlink.
    for (id, given) in [("rel", "../b"), ("sym", "../link")] {
        let mut c = env.cmd(&["create", "--bundle", given, id]);
        c.current_dir(env.dir.path().join("sub"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        assert!(c.status().unwrap().success(), "create --bundle {given}");
        assert_eq!(
            env.state(id)["bundle"],
            physical.to_str().unwrap(),
            "--bundle {given}"
        );
        assert!(env.run(&["delete", "--force", id]).status.success());
    }
}

#[test]
fn pause_and_resume_follow_runc_states() {
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    assert!(env.create("p", &bundle, &[]).status.success());
    assert_fails(&env.run(&["resume", "p"]), 1, "container not paused");
    // Paused before start: resume gives `created` back, and start still runs the process.
    assert!(env.run(&["pause", "p"]).status.success());
    assert_eq!(env.state("p")["status"], "paused");
    assert!(env.run(&["resume", "p"]).status.success());
    assert_eq!(env.state("p")["status"], "created");
    assert!(env.run(&["start", "p"]).status.success());
    assert_eq!(env.state("p")["status"], "running");
    assert!(env.run(&["pause", "p"]).status.success());
    assert_eq!(env.state("p")["status"], "paused");
    assert_fails(
        &env.run(&["start", "p"]),
        1,
        "cannot start a container in the paused state",
    );
    let out = env.run(&["exec", "p", "true"]);
    assert_fails(&out, 255, "exec failed: cannot exec in a paused container");
    assert!(env.run(&["resume", "p"]).status.success());
    assert_eq!(env.state("p")["status"], "running");
    assert!(env.run(&["delete", "--force", "p"]).status.success());
    assert_fails(&env.run(&["pause", "p"]), 1, "container does not exist");
}

#[test]
fn foreground_run_returns_status_and_cleans_up() {
    let env = Env::new();
    let bundle = env.bundle("b", "exit 7");
    let out = env.run(&["run", "--bundle", bundle.to_str().unwrap(), "r1"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(!env.root().join("r1").exists());
    // go-style single-dash long flags, --keep, and global flags later commands do not repeat;
    // with --systemd-cgroup, cgroupsPath is `slice:prefix:name`.
    let name = env.cgroup_name("sd");
    set_linux(
        &bundle,
        serde_json::json!({ "cgroupsPath": format!("vesseltest.slice:vessel:{name}") }),
    );
    let out = env.run(&[
        "-systemd-cgroup",
        "--criu",
        "/usr/sbin/criu",
        "run",
        "-no-subreaper",
        "-keep",
        "-bundle",
        bundle.to_str().unwrap(),
        "r2",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(env.state("r2")["status"], "stopped");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.root().join("r2").join("state.json")).unwrap())
            .unwrap();
    assert_eq!(record["systemd_cgroup"], true);
    let dirs = cgroup_dirs(&env, "r2");
    let scope = format!("vesseltest.slice/vessel-{name}.scope");
    assert!(dirs.iter().all(|d| d.ends_with(&scope)), "{dirs:?}");
    assert!(env.run(&["delete", "r2"]).status.success());
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?} left behind");
    assert_eq!(cgroups_named("vesseltest.slice"), Vec::<PathBuf>::new());
}

#[test]
fn detached_run_leaves_a_running_container() {
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    let mut c = env.cmd(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "d1"]);
    let status = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(env.state("d1")["status"], "running");
    let list = env.run(&["list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["id"], "d1");
    assert_eq!(v[0]["owner"], "root");
    let ps = env.run(&["ps", "--format", "json", "d1"]);
    let pids: Vec<i32> = serde_json::from_slice(&ps.stdout).unwrap();
    let monitor = env.state("d1")["pid"].as_i64().unwrap() as i32;
    assert_eq!(pids, vec![monitor]);
    // The monitor is named after the container in ps, not after the run command line.
    let comm = std::fs::read_to_string(format!("/proc/{monitor}/comm")).unwrap();
    assert_eq!(comm, "vessel:d1\n");
    // Its command line too, where the kernel lets it (CAP_SYS_RESOURCE: root on a host, the
    // lab; not this sandbox's restricted root, where it stays the run command line).
    let cmdline = text(&std::fs::read(format!("/proc/{monitor}/cmdline")).unwrap());
    if has_cap_sys_resource() {
        assert_eq!(cmdline, "vessel-monitor\0d1\0");
    } else {
        assert!(
            cmdline.starts_with(VESSEL) && cmdline.contains("\0run\0-d\0"),
            "{cmdline:?}"
        );
    }
    assert!(env.run(&["delete", "--force", "d1"]).status.success());
}

/// Whether the process behind a pid is gone (or a zombie nobody reaped yet).
fn is_gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

/// Runs the given commands as concurrent `vessel` processes (released together) and returns
/// their outputs in order. stderr goes through a file: a created workload inherits it.
fn race(env: &Env, commands: &[Vec<String>]) -> Vec<Output> {
    let barrier = std::sync::Barrier::new(commands.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = commands
            .iter()
            .enumerate()
            .map(|(i, args)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let err_path = env.dir.path().join(format!("race-{i}.err"));
                    let mut c = env.cmd(&args);
                    c.stdout(Stdio::null());
                    c.stderr(std::fs::File::create(&err_path).unwrap());
                    barrier.wait();
                    let status = c.status().unwrap();
                    Output {
                        status,
                        stdout: Vec::new(),
                        stderr: std::fs::read(&err_path).unwrap(),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn concurrent_creates_of_one_id_exactly_one_wins() {
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    let b = bundle.to_str().unwrap();
    for round in 0..5 {
        let id = format!("dup{round}");
        let create = args(&["create", "--bundle", b, &id]);
        let outs = race(&env, &vec![create; 4]);
        let winners = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(winners, 1, "round {round}: exactly one create wins");
        for out in outs.iter().filter(|o| !o.status.success()) {
            assert_fails(out, 1, "container with given ID already exists");
        }
        let state = env.state(&id);
        assert_eq!(state["status"], "created");
        let pid = state["pid"].as_i64().unwrap() as i32;
        assert!(env.run(&["delete", &id]).status.success());
        assert!(is_gone(pid), "round {round}: the winner's monitor is gone");
    }
    assert_eq!(std::fs::read_dir(env.root()).unwrap().count(), 0);
}

#[test]
fn concurrent_force_deletes_all_succeed_and_leave_nothing() {
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    for round in 0..5 {
        let id = format!("fd{round}");
        assert!(env.create(&id, &bundle, &[]).status.success());
        assert!(env.run(&["start", &id]).status.success());
        let pid = env.state(&id)["pid"].as_i64().unwrap() as i32;
        let outs = race(&env, &vec![args(&["delete", "--force", &id]); 4]);
        for out in &outs {
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        }
        assert!(!env.root().join(&id).exists());
        assert!(is_gone(pid), "round {round}: monitor still alive");
        assert_fails(&env.run(&["state", &id]), 1, "container does not exist");
    }
}

#[test]
fn start_racing_delete_has_one_consistent_winner() {
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    let (mut started, mut deleted) = (0, 0);
    for round in 0..8 {
        let id = format!("sd{round}");
        assert!(env.create(&id, &bundle, &[]).status.success());
        let pid = env.state(&id)["pid"].as_i64().unwrap() as i32;
        let outs = race(&env, &[args(&["start", &id]), args(&["delete", &id])]);
        let (start, delete) = (&outs[0], &outs[1]);
        if start.status.success() {
            // start won: delete (no --force) saw a running container.
            started += 1;
            assert_fails(
                delete,
                1,
                &format!("cannot delete container {id} that is not stopped: running"),
            );
            assert_eq!(env.state(&id)["status"], "running");
            assert!(env.run(&["delete", "-f", &id]).status.success());
        } else {
            // delete won: start found nothing.
            deleted += 1;
            assert_eq!(delete.status.code(), Some(0), "{}", text(&delete.stderr));
            assert_fails(start, 1, "container does not exist");
        }
        assert!(!env.root().join(&id).exists());
        assert!(is_gone(pid), "round {round}: monitor still alive");
    }
    eprintln!("start won {started} times, delete won {deleted} times");
}

#[test]
fn create_racing_force_delete_leaves_no_orphan() {
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    let b = bundle.to_str().unwrap();
    for round in 0..8 {
        let id = format!("cd{round}");
        let pid_file = env.dir.path().join(format!("{id}.pid"));
        let outs = race(
            &env,
            &[
                args(&[
                    "create",
                    "--bundle",
                    b,
                    "--pid-file",
                    pid_file.to_str().unwrap(),
                    &id,
                ]),
                args(&["delete", "--force", &id]),
            ],
        );
        assert_eq!(outs[0].status.code(), Some(0), "{}", text(&outs[0].stderr));
        assert_eq!(outs[1].status.code(), Some(0), "{}", text(&outs[1].stderr));
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
        if env.root().join(&id).exists() {
            // delete came first and found nothing: the container is intact.
            assert_eq!(env.state(&id)["status"], "created");
            assert!(!is_gone(pid));
            assert!(env.run(&["delete", &id]).status.success());
        }
        // Either way no monitor outlives its state directory.
        assert!(is_gone(pid), "round {round}: orphaned monitor {pid}");
    }
}

/// The container's host cgroup directories as recorded in its state.json.
fn cgroup_dirs(env: &Env, id: &str) -> Vec<PathBuf> {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.root().join(id).join("state.json")).unwrap())
            .unwrap();
    record["cgroup"]["paths"]
        .as_array()
        .expect("a host cgroup is recorded")
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

/// Directories named `name` in the cgroup file systems (mount points and 3 levels below).
fn cgroups_named(name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, name: &str, depth: u32, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name() == name {
                    out.push(e.path());
                }
                if depth > 0 {
                    walk(&e.path(), name, depth - 1, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), name, 4, &mut out);
    out
}

fn set_linux(bundle: &Path, linux: serde_json::Value) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // The bundle's namespaces stay: without a network entry, create refuses host networking.
    let namespaces = config["linux"]["namespaces"].clone();
    config["linux"] = linux;
    config["linux"]["namespaces"] = namespaces;
    std::fs::write(&path, config.to_string()).unwrap();
}

/// The monitor (pid-file process) is in `linux.cgroupsPath` in every hierarchy (cgroup v2, or
/// each v1 hierarchy plus the unified one on this hybrid host), gets the CPU limits but not the
/// memory limit, and the cgroup is gone after delete.
#[test]
fn monitor_lives_in_the_cgroups_path_until_delete() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "{}: skipped: needs root to create cgroups",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    let name = env.cgroup_name("placed");
    set_linux(
        &bundle,
        serde_json::json!({
            "cgroupsPath": format!("{name}/ctr"),
            "resources": {"cpu": {"quota": 50000, "period": 100000},
                          "memory": {"limit": 268435456}}
        }),
    );
    let out = env.create("cg", &bundle, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = env.state("cg")["pid"].as_i64().unwrap() as i32;
    let dirs = cgroup_dirs(&env, "cg");
    assert!(!dirs.is_empty());
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in own.lines() {
        assert!(
            line.ends_with(&format!("/{name}/ctr")),
            "the monitor is not in the cgroupsPath: {line}"
        );
    }
    for dir in &dirs {
        assert!(dir.ends_with(format!("{name}/ctr")), "{dir:?}");
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{dir:?}: {procs}"
        );
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        if let Some(max) = read("cpu.max") {
            assert_eq!(max.trim(), "50000 100000");
        }
        if let Some(quota) = read("cpu.cfs_quota_us") {
            assert_eq!(quota.trim(), "50000");
        }
        // The guest is sized from the memory limit; the VMM itself must not be capped by it.
        if let Some(max) = read("memory.max") {
            assert_eq!(max.trim(), "max");
        }
        if let Some(limit) = read("memory.limit_in_bytes") {
            assert_ne!(limit.trim(), "268435456");
        }
    }
    assert!(env.run(&["start", "cg"]).status.success());
    assert!(env.run(&["delete", "--force", "cg"]).status.success());
    for dir in &dirs {
        assert!(!dir.exists(), "{dir:?} left behind");
    }
    assert_eq!(
        cgroups_named(&name),
        Vec::<PathBuf>::new(),
        "parents left behind"
    );
}

#[test]
fn bad_cgroups_path_fails_create_and_leaves_nothing() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "{}: skipped: needs root to create cgroups",
            std::thread::current().name().unwrap_or("test")
        );
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("b", "exec sleep 30");
    let name = env.cgroup_name("bad");
    let cases: [(&[&str], String, &str); 3] = [
        (
            &["--systemd-cgroup"],
            "/kubepods/pod1/c1".into(),
            "expected cgroupsPath to be of format \"slice:prefix:name\" for systemd cgroups, got \"/kubepods/pod1/c1\" instead",
        ),
        (&["--systemd-cgroup"], "a--b.slice:p:n".into(), "invalid slice name: a--b.slice"),
        // A cgroup file in the way of a directory: fails after the first level was made.
        (&[], format!("{name}/cgroup.procs/c"), "create cgroup /sys/fs/cgroup/"),
    ];
    for (global, path, needle) in cases {
        set_linux(&bundle, serde_json::json!({ "cgroupsPath": path }));
        let mut c = env.cmd(global);
        c.args(["create", "--bundle", bundle.to_str().unwrap(), "bad"]);
        let out = c.stdout(Stdio::null()).output().unwrap();
        assert_fails(&out, 1, needle);
        assert_fails(&out, 1, "linux.cgroupsPath");
        assert!(!env.root().join("bad").exists(), "{path}: state dir left");
        assert_eq!(
            cgroups_named(&name),
            Vec::<PathBuf>::new(),
            "{path}: cgroup left"
        );
    }
}

/// Fields runc refuses fail `create` before any sandbox exists, with runc's text and the field;
/// labels the microVM cannot apply are accepted with one warning; `process.oomScoreAdj` is
/// applied to the monitor (the VM's host process), as runc applies it to its container process.
#[test]
fn config_fields_runc_refuses_fail_create_and_labels_only_warn() {
    let env = Env::new();
    let b = env.bundle("fields", "sleep 30");
    let config = b.join("config.json");
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let with = |pointer: &str, value: serde_json::Value| {
        let mut spec = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        spec.pointer_mut(parent).unwrap()[key] = value;
        std::fs::write(&config, spec.to_string()).unwrap();
    };
    for (pointer, value, needle) in [
        (
            "/linux/rootfsPropagation",
            serde_json::json!("bogus"),
            "rootfsPropagation=bogus is not supported (linux.rootfsPropagation takes private, ",
        ),
        (
            "/linux/intelRdt",
            serde_json::json!({"closID": "gold"}),
            "intelRdt is specified in config, but Intel RDT is not supported or enabled (the \
             microVM has no Intel RDT: remove linux.intelRdt from config.json)",
        ),
        (
            "/process/oomScoreAdj",
            serde_json::json!(1001),
            "failed to update /proc/self/oom_score_adj: Invalid argument (process.oomScoreAdj \
             is 1001: set it between -1000 and 1000)",
        ),
        (
            "/process/ioPriority",
            serde_json::json!({"class": "IOPRIO_CLASS_BE", "priority": 9}),
            "invalid ioPriority.Priority: 9 (process.ioPriority.priority",
        ),
    ] {
        with(pointer, value);
        let out = env.create("c", &b, &[]);
        assert_fails(&out, 1, needle);
        assert!(!env.root().join("c").exists(), "{pointer}");
    }

    let mut spec = base.clone();
    spec["process"]["apparmorProfile"] = serde_json::json!("cri-containerd.apparmor.d");
    spec["process"]["oomScoreAdj"] = serde_json::json!(321);
    std::fs::write(&config, spec.to_string()).unwrap();
    let pid_file = env.dir.path().join("fields.pid");
    let out = env.create("c", &b, &["--pid-file", pid_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("level=warning").count(),
        1,
        "one warning: {stderr}"
    );
    assert!(
        stderr.contains(
            r#"msg="process.apparmorProfile \"cri-containerd.apparmor.d\" not applied: the microVM's kernel has neither AppArmor nor SELinux (the VM isolates the container instead)""#
        ),
        "{stderr}"
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap(),
        "321\n"
    );
    assert!(env.run(&["delete", "--force", "c"]).status.success());
}

/// Usage lines read as runc's (`runc create [command options] <container-id>`), not clap's
/// `[container-id]...`.
#[test]
fn usage_lines_read_as_runc_s() {
    let env = Env::new();
    for (command, usage) in [
        (
            "create",
            "Usage: vessel create [command options] <container-id>",
        ),
        ("run", "Usage: vessel run [command options] <container-id>"),
        ("start", "Usage: vessel start <container-id>"),
        ("state", "Usage: vessel state <container-id>"),
        (
            "delete",
            "Usage: vessel delete [command options] <container-id>",
        ),
        (
            "kill",
            "Usage: vessel kill [command options] <container-id> [signal]",
        ),
        ("pause", "Usage: vessel pause <container-id>"),
        ("resume", "Usage: vessel resume <container-id>"),
        (
            "ps",
            "Usage: vessel ps [command options] <container-id> [ps options]",
        ),
        (
            "events",
            "Usage: vessel events [command options] <container-id>",
        ),
        (
            "update",
            "Usage: vessel update [command options] <container-id>",
        ),
    ] {
        let out = env.run(&[command, "--help"]);
        assert!(out.status.success(), "{command}");
        let help = text(&out.stdout);
        assert!(
            help.lines().any(|l| l == usage),
            "{command} --help lacks {usage:?}:\n{help}"
        );
    }
    let out = env.run(&["exec", "--help"]);
    let help = text(&out.stdout);
    assert!(
        help.contains(
            "Usage: vessel exec [command options] <container-id> <command> [command options]  \
             || -p process.json <container-id>"
        ),
        "{help}"
    );
}
