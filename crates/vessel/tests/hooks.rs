//! OCI hooks through the real `vessel` binary, with the host test double
//! (`VESSEL_TEST_SANDBOX=host`; this machine's KVM cannot boot a guest): each hook kind runs at
//! its point of the lifecycle with the container's state on stdin, and a failing hook fails or
//! only warns as runc does, leaving nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{text, VESSEL};

/// The six kinds, in lifecycle order.
const KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A temporary `--root`, one bundle and the file every hook appends to.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("hooks.log")
    }

    /// A bundle running `sh -c <script>`, whose `hooks` are `hooks` (kind -> list). Its
    /// `linux.cgroupsPath` is unique to this test.
    fn bundle(&self, script: &str, hooks: serde_json::Value) -> PathBuf {
        let b = self.dir.path().join("bundle");
        std::fs::create_dir_all(b.join("rootfs")).unwrap();
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
                        "args": ["sh", "-c", script], "env": ["PATH=/usr/bin:/bin"]},
            "annotations": {"org.example/k": "v"},
            "hooks": hooks,
            "linux": {"cgroupsPath": self.cgroup_name(),
                      "namespaces": [{"type": "network"}]}
        });
        std::fs::write(b.join("config.json"), config.to_string()).unwrap();
        b
    }

    fn cgroup_name(&self) -> String {
        let tmp = self.dir.path().file_name().unwrap().to_string_lossy();
        format!("vessel-hooks-{}", tmp.trim_start_matches('.'))
    }

    /// A hook appending `<kind> <state JSON>` to the log, then running `then` (sh).
    fn logging_hook(&self, kind: &str, then: &str) -> serde_json::Value {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("printf '%s %s\\n' \"$1\" \"$(cat)\" >> \"$2\"; {then}"),
                     "sh", kind, self.log()],
        })
    }

    /// One logging hook for each kind in `kinds`, with `then` for `failing` only.
    fn hooks(&self, kinds: &[&str], failing: &str, then: &str) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for &kind in kinds {
            let tail = if kind == failing { then } else { "" };
            map.insert(
                kind.into(),
                serde_json::json!([self.logging_hook(kind, tail)]),
            );
        }
        map.into()
    }

    /// `(kind, state)` of each hook run so far, in order.
    fn runs(&self) -> Vec<(String, serde_json::Value)> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        text.lines()
            .map(|line| {
                let (kind, json) = line.split_once(' ').unwrap();
                (kind.to_owned(), serde_json::from_str(json).unwrap())
            })
            .collect()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(VESSEL);
        c.arg("--root").arg(self.root()).args(args);
        c.env("VESSEL_TEST_SANDBOX", "host");
        c.stdin(Stdio::null());
        c
    }

    /// Runs a command whose stdout the workload may inherit (so it goes to /dev/null) and whose
    /// stderr goes through a file for the same reason.
    fn run(&self, args: &[&str]) -> Output {
        let err = self.dir.path().join("stderr");
        let status = self
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(&err).unwrap(),
        }
    }

    fn status(&self, id: &str) -> String {
        let out = self.cmd(&["state", id]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        state["status"].as_str().unwrap().to_owned()
    }

    fn wait_stopped(&self, id: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        while self.status(id) != "stopped" {
            assert!(Instant::now() < until, "{id} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
}

/// Gone, or a zombie nobody has reaped yet.
fn is_dead(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('Z'),
        Err(_) => true,
    }
}

#[test]
fn each_kind_runs_in_order_with_its_status() {
    let s = Setup::new();
    let bundle = s.bundle("exit 0", s.hooks(&KINDS, "", ""));
    let pid_file = s.dir.path().join("pid");
    let b = bundle.to_str().unwrap();
    let out = s.run(&[
        "create",
        "-b",
        b,
        "--pid-file",
        pid_file.to_str().unwrap(),
        "c1",
    ]);
    assert_ok(&out, "create");
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let expect = |kind: &str, status: &str, pid: Option<i64>| {
        let mut state = serde_json::json!({
            "ociVersion": "1.0.2", "id": "c1", "status": status, "bundle": b,
            "annotations": {"org.example/k": "v"},
        });
        if let Some(pid) = pid {
            state["pid"] = pid.into();
        }
        (kind.to_owned(), state)
    };
    let creating = ["prestart", "createRuntime", "createContainer"]
        .map(|k| expect(k, "creating", Some(pid)))
        .to_vec();
    assert_eq!(s.runs(), creating);

    assert_ok(&s.run(&["start", "c1"]), "start");
    let mut started = creating.clone();
    started.push(expect("startContainer", "created", Some(pid)));
    started.push(expect("poststart", "running", Some(pid)));
    assert_eq!(s.runs(), started);

    s.wait_stopped("c1");
    assert_ok(&s.run(&["delete", "c1"]), "delete");
    let mut all = started;
    all.push(expect("poststop", "stopped", None));
    assert_eq!(s.runs(), all);
    // The state JSON is compact, in the spec's field order.
    let log = std::fs::read_to_string(s.log()).unwrap();
    assert!(
        log.starts_with(&format!(
            "prestart {{\"ociVersion\":\"1.0.2\",\"id\":\"c1\",\"status\":\"creating\",\"pid\":{pid},\"bundle\":"
        )),
        "{log}"
    );
}

#[test]
fn foreground_run_runs_all_six_and_returns_the_status() {
    let s = Setup::new();
    let bundle = s.bundle("exit 3", s.hooks(&KINDS, "", ""));
    let out = s.run(&["run", "-b", bundle.to_str().unwrap(), "r1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let kinds: Vec<String> = s.runs().into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, KINDS);
    assert!(!s.root().join("r1").exists());
}

#[test]
fn a_failing_create_runtime_hook_fails_create_and_leaves_nothing() {
    let s = Setup::new();
    let hooks = s.hooks(
        &["prestart", "createRuntime", "createContainer", "poststop"],
        "createRuntime",
        "echo nope >&2; exit 7",
    );
    let bundle = s.bundle("exec sleep 30", hooks);
    let out = s.run(&["create", "-b", bundle.to_str().unwrap(), "c2"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "error running createRuntime hook #0 /bin/sh: exit status 7, stdout: , stderr: nope"
        ),
        "{stderr}"
    );
    assert!(!s.root().join("c2").exists(), "state dir left");
    let runs = s.runs();
    let kinds: Vec<&str> = runs.iter().map(|(k, _)| k.as_str()).collect();
    // createContainer never ran; the container was destroyed, which runs poststop (spec
    // runtime.md: a failed create hook continues the lifecycle at "destroy").
    assert_eq!(kinds, ["prestart", "createRuntime", "poststop"]);
    let monitor = runs[1].1["pid"].as_i64().unwrap();
    assert!(is_dead(monitor), "monitor {monitor} still running");
    assert_eq!(runs[2].1["status"], "stopped");
    if nix::unistd::geteuid().is_root() {
        let cgroup = s.cgroup_name();
        let left: Vec<_> = walk_cgroups(Path::new("/sys/fs/cgroup"), &cgroup, 4);
        assert!(left.is_empty(), "cgroups left: {left:?}");
    }
}

/// Directories named `name` in the cgroup file systems, down to `depth` levels.
fn walk_cgroups(dir: &Path, name: &str, depth: u32) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if entry.file_name() == name {
            found.push(entry.path());
        }
        if depth > 0 {
            found.extend(walk_cgroups(&entry.path(), name, depth - 1));
        }
    }
    found
}

#[test]
fn a_failing_poststart_hook_fails_start_and_stops_the_container() {
    let s = Setup::new();
    let hooks = s.hooks(&["poststart", "poststop"], "poststart", "exit 2");
    let bundle = s.bundle("exec sleep 30", hooks);
    assert_ok(
        &s.run(&["create", "-b", bundle.to_str().unwrap(), "c3"]),
        "create",
    );
    let out = s.run(&["start", "c3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error running poststart hook #0 /bin/sh: exit status 2"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.status("c3"), "stopped");
    assert_ok(&s.run(&["delete", "c3"]), "delete");
    let kinds: Vec<String> = s.runs().into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["poststart", "poststop"]);
}

#[test]
fn a_failing_poststop_hook_only_warns() {
    let s = Setup::new();
    let hooks = serde_json::json!({"poststop": [
        s.logging_hook("poststop", "exit 5"),
        s.logging_hook("poststop", ""),
    ]});
    let bundle = s.bundle("exit 0", hooks);
    assert_ok(
        &s.run(&["run", "-d", "-b", bundle.to_str().unwrap(), "c4"]),
        "run -d",
    );
    s.wait_stopped("c4");
    let out = s.run(&["delete", "c4"]);
    assert_ok(&out, "delete");
    assert!(
        text(&out.stderr).contains("error running poststop hook #0 /bin/sh: exit status 5"),
        "{}",
        text(&out.stderr)
    );
    assert!(!s.root().join("c4").exists());
    // The second poststop hook still ran.
    assert_eq!(s.runs().len(), 2);
}

#[test]
fn an_invalid_hook_is_refused_before_anything_runs() {
    let s = Setup::new();
    let hooks = serde_json::json!({"createRuntime": [{"path": "hook.sh"}]});
    let bundle = s.bundle("exit 0", hooks);
    let out = s.run(&["create", "-b", bundle.to_str().unwrap(), "c5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("hooks.createRuntime[0].path \\\"hook.sh\\\" must be an absolute path"),
        "{}",
        text(&out.stderr)
    );
    assert!(!s.root().join("c5").exists());
}

#[test]
fn features_lists_the_six_kinds() {
    let out = Command::new(VESSEL).arg("features").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hooks"], serde_json::json!(KINDS));
}

#[test]
fn a_container_killed_while_its_create_hooks_run_is_not_reported_created() {
    let s = Setup::new();
    // The createRuntime hook kills the monitor (its pid is in the state it logged), as a
    // `vessel kill` run meanwhile would: create must fail and leave nothing.
    let hooks = s.hooks(
        &["createRuntime", "poststop"],
        "createRuntime",
        r#"pid=$(tail -n 1 "$2" | sed 's/.*"pid":\([0-9]*\).*/\1/'); kill -9 "$pid"; sleep 0.3"#,
    );
    let bundle = s.bundle("exec sleep 30", hooks);
    let out = s.run(&["create", "-b", bundle.to_str().unwrap(), "c9"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the container's monitor exited while the create hooks ran"),
        "{stderr}"
    );
    assert!(!s.root().join("c9").exists(), "state dir left");
    let kinds: Vec<String> = s.runs().into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["createRuntime", "poststop"]);
}

/// Exit 1 and runc's one error line (logrus text format, as without `--log`): `time="..."
/// level=error msg="container does not exist"`.
fn assert_does_not_exist(out: &Output, what: &str) {
    assert_fails_with(out, 1, "container does not exist", what);
}

/// Exit `code` and one logrus text line whose `msg` is `msg`.
fn assert_fails_with(out: &Output, code: i32, msg: &str, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
    assert!(
        stderr.starts_with("time=\"")
            && stderr.ends_with(&format!("\" level=error msg=\"{msg}\"\n"))
            && stderr.lines().count() == 1,
        "{what}: {stderr}"
    );
}

/// Waits up to 10 s for `path` to exist, failing the test otherwise.
fn wait_for_file(path: &Path) {
    let until = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits up to 5 s for `pid` to be gone or a zombie.
fn wait_dead(pid: i64, what: &str) {
    let until = Instant::now() + Duration::from_secs(5);
    while !is_dead(pid) {
        assert!(Instant::now() < until, "{what} {pid} still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The PID a hook wrote to `path`, once it is all there: the file can exist before the hook's
/// shell has written into it (`echo $$ > file` creates, then writes). Up to 5 s.
fn read_pid(path: &Path) -> i64 {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap();
        if let Ok(pid) = text.trim().parse() {
            if text.ends_with('\n') {
                return pid;
            }
        }
        assert!(
            Instant::now() < until,
            "{} holds {text:?}, not a PID",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lines of /proc/self/mountinfo that name `dir` (mount points or sources below it).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.as_ref()))
        .map(str::to_owned)
        .collect()
}

impl Setup {
    /// A createRuntime hook that logs its state, writes its PID to `<dir>/hook.pid` and its
    /// background child's to `<dir>/child.pid`, then waits until `<dir>/release` exists (at
    /// most 30 s).
    fn waiting_hooks(&self) -> serde_json::Value {
        let dir = self.dir.path().display();
        let wait = format!(
            "echo $$ > {dir}/.hook.pid && mv {dir}/.hook.pid {dir}/hook.pid; \
             sleep 30 & echo $! > {dir}/child.pid; \
             i=0; while [ ! -e {dir}/release ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; \
             kill $!"
        );
        serde_json::json!({
            "createRuntime": [self.logging_hook("createRuntime", &wait)],
            "poststop": [self.logging_hook("poststop", "")],
        })
    }

    /// Starts `vessel create` of `id` in the background, its stderr to `<dir>/<id>.err`.
    fn spawn_create(&self, bundle: &Path, id: &str) -> std::process::Child {
        let err = std::fs::File::create(self.dir.path().join(format!("{id}.err"))).unwrap();
        self.cmd(&["create", "-b", bundle.to_str().unwrap(), id])
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap()
    }
}

#[test]
fn a_container_does_not_exist_until_its_create_hooks_succeed() {
    let s = Setup::new();
    let bundle = s.bundle("exec sleep 30", s.waiting_hooks());
    let mut create = s.spawn_create(&bundle, "c10");
    wait_for_file(&s.dir.path().join("hook.pid"));
    let monitor = s.runs()[0].1["pid"].as_i64().unwrap();
    // runc writes state.json only after its create hooks: every command finds nothing, at
    // once (none waits for the hook).
    let begun = Instant::now();
    for args in [
        &["state", "c10"][..],
        &["kill", "c10", "KILL"],
        &["delete", "c10"],
        &["start", "c10"],
        &["pause", "c10"],
        &["resume", "c10"],
        &["update", "--memory", "64M", "c10"],
    ] {
        assert_does_not_exist(&s.run(args), &format!("{args:?}"));
    }
    // exec's failures exit 255 (runc exec.go `fatalWithCode`).
    assert_fails_with(
        &s.run(&["exec", "c10", "true"]),
        255,
        "exec failed: container does not exist",
        "exec",
    );
    // `delete --force` of a missing container succeeds, and leaves the create alone.
    assert_ok(&s.run(&["delete", "--force", "c10"]), "delete --force");
    let list = s.cmd(&["list", "-q"]).output().unwrap();
    assert_ok(&list, "list");
    assert_eq!(text(&list.stdout), "");
    assert_eq!(
        text(&list.stderr),
        "load container c10: container does not exist\n"
    );
    // The ID is taken all the same.
    let again = s.run(&["create", "-b", bundle.to_str().unwrap(), "c10"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("container with given ID already exists"),
        "{}",
        text(&again.stderr)
    );
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
    assert!(!is_dead(monitor), "kill reached the monitor");
    assert!(create.try_wait().unwrap().is_none(), "create ended early");

    std::fs::write(s.dir.path().join("release"), "").unwrap();
    let status = create.wait().unwrap();
    let err = std::fs::read_to_string(s.dir.path().join("c10.err")).unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(s.status("c10"), "created");
    let state: serde_json::Value =
        serde_json::from_slice(&s.cmd(&["state", "c10"]).output().unwrap().stdout).unwrap();
    assert_eq!(state["pid"].as_i64(), Some(monitor));
    assert_ok(&s.run(&["delete", "c10"]), "delete");
    wait_dead(monitor, "monitor");
}

#[test]
fn a_create_ended_by_a_signal_during_its_hook_kills_it_and_leaves_nothing() {
    for (n, signal) in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ]
    .into_iter()
    .enumerate()
    {
        let s = Setup::new();
        let id = format!("c1{n}");
        let bundle = s.bundle("exec sleep 30", s.waiting_hooks());
        let mut create = s.spawn_create(&bundle, &id);
        wait_for_file(&s.dir.path().join("child.pid"));
        let hook = read_pid(&s.dir.path().join("hook.pid"));
        let child = read_pid(&s.dir.path().join("child.pid"));
        let monitor = s.runs()[0].1["pid"].as_i64().unwrap();
        let begun = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(create.id() as i32), signal).unwrap();
        let status = create.wait().unwrap();
        let err = std::fs::read_to_string(s.dir.path().join(format!("{id}.err"))).unwrap();
        assert!(begun.elapsed() < Duration::from_secs(3), "{signal}: {err}");
        // Dead of the signal, as a process that did not catch it (a shell says 128 + N).
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(signal as i32), "{signal}: {err}");
        assert!(
            err.contains(&format!(
                "error running createRuntime hook #0 /bin/sh: interrupted by {} (the hook was \
                 killed)",
                signal.as_str()
            )),
            "{signal}: {err}"
        );
        wait_dead(hook, "hook");
        wait_dead(child, "hook's child");
        wait_dead(monitor, "monitor");
        assert!(!s.root().join(&id).exists(), "{signal}: state dir left");
        assert_eq!(mounts_under(s.dir.path()), Vec::<String>::new());
        // The container was destroyed as after any failed create hook: poststop ran.
        let runs = s.runs();
        let kinds: Vec<&str> = runs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["createRuntime", "poststop"], "{signal}");
        assert_eq!(runs[1].1["status"], "stopped");
    }
}

#[test]
fn delete_cleans_up_after_a_create_killed_outright_during_its_hooks() {
    let s = Setup::new();
    let bundle = s.bundle("exec sleep 30", s.waiting_hooks());
    let mut create = s.spawn_create(&bundle, "c20");
    wait_for_file(&s.dir.path().join("hook.pid"));
    let monitor = s.runs()[0].1["pid"].as_i64().unwrap();
    create.kill().unwrap();
    create.wait().unwrap();
    // SIGKILL cannot be caught: the hook and the monitor live on, the record says `creating`.
    std::fs::write(s.dir.path().join("release"), "").unwrap();
    assert!(!is_dead(monitor));
    assert_does_not_exist(&s.run(&["state", "c20"]), "state");
    // Nobody holds the lock any more: delete takes the leftover down, monitor included.
    assert_does_not_exist(&s.run(&["delete", "c20"]), "delete");
    wait_dead(monitor, "monitor");
    assert!(!s.root().join("c20").exists(), "state dir left");
}
