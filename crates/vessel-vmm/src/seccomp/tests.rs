//! Each filter is checked in a forked child, where it can kill a process without killing the
//! test run: a call the thread needs goes through, a call it does not need kills the child
//! with `SIGSYS`.

use super::*;

/// What the child ended with.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Exited(i32),
    Signaled(i32),
}

/// Forks; the child installs `kind`'s filter and runs `call`, exiting with 0 when it returns.
/// Only async-signal-safe work happens in the child (the filter is compiled before the fork).
fn in_child(filters: &Filters, kind: ThreadKind, call: fn()) -> End {
    // SAFETY: the child only installs an already compiled filter (prctl and seccomp system
    // calls on a borrowed buffer), makes raw system calls and `_exit`s; the parent waits for it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match filters.install(kind) {
            Ok(()) => {
                call();
                0
            }
            Err(_) => 99,
        };
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above, writing its status into a local.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFSIGNALED(status) {
        End::Signaled(libc::WTERMSIG(status))
    } else {
        End::Exited(libc::WEXITSTATUS(status))
    }
}

fn write_to_stderr() {
    // SAFETY: writes zero bytes from a static buffer to fd 2.
    let rc = unsafe { libc::write(2, b"".as_ptr().cast(), 0) };
    assert!(rc >= 0);
}

fn open_etc_passwd_for_reading() {
    // SAFETY: a NUL-terminated static path; the descriptor, if any, is leaked in the child.
    unsafe { libc::openat(libc::AT_FDCWD, c"/etc/passwd".as_ptr(), libc::O_RDONLY) };
}

fn inet_socket() {
    // SAFETY: socket(2) with constant arguments.
    unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
}

fn unix_socket() {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        // SAFETY: as in `in_child`.
        unsafe { libc::_exit(3) };
    }
}

fn execve_true() {
    let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: NUL-terminated path and NULL-terminated arrays of static strings.
    unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
}

fn ptrace_me() {
    // SAFETY: PTRACE_TRACEME takes no pointers.
    unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
}

fn tty_ioctl() {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into a local.
    unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
}

#[test]
fn every_kind_compiles_to_a_program() {
    let f = Filters::compile().unwrap();
    for kind in ThreadKind::ALL {
        assert!(!f.program(kind).is_empty(), "{kind}");
    }
}

#[test]
fn each_thread_kind_may_write_to_a_descriptor_it_holds() {
    let f = Filters::compile().unwrap();
    for kind in ThreadKind::ALL {
        assert_eq!(
            in_child(&f, kind, write_to_stderr),
            End::Exited(0),
            "{kind}"
        );
    }
}

#[test]
fn no_thread_kind_may_exec_or_trace() {
    let f = Filters::compile().unwrap();
    for kind in ThreadKind::ALL {
        for call in [execve_true as fn(), ptrace_me] {
            assert_eq!(
                in_child(&f, kind, call),
                End::Signaled(libc::SIGSYS),
                "{kind}"
            );
        }
    }
}

#[test]
fn of_the_allowlisted_threads_only_the_file_server_may_open_a_file_for_reading() {
    let f = Filters::compile().unwrap();
    assert_eq!(
        in_child(&f, ThreadKind::Vcpu, open_etc_passwd_for_reading),
        End::Signaled(libc::SIGSYS)
    );
    assert_eq!(
        in_child(&f, ThreadKind::Devices, open_etc_passwd_for_reading),
        End::Signaled(libc::SIGSYS)
    );
    assert_eq!(
        in_child(&f, ThreadKind::Relay, open_etc_passwd_for_reading),
        End::Signaled(libc::SIGSYS)
    );
    assert_eq!(
        in_child(&f, ThreadKind::FileServer, open_etc_passwd_for_reading),
        End::Exited(0)
    );
}

#[test]
fn only_the_device_thread_may_open_a_socket_and_only_a_unix_one() {
    let f = Filters::compile().unwrap();
    assert_eq!(
        in_child(&f, ThreadKind::Devices, unix_socket),
        End::Exited(0)
    );
    assert_eq!(
        in_child(&f, ThreadKind::Devices, inet_socket),
        End::Signaled(libc::SIGSYS)
    );
    for kind in [ThreadKind::Vcpu, ThreadKind::FileServer, ThreadKind::Relay] {
        assert_eq!(
            in_child(&f, kind, unix_socket),
            End::Signaled(libc::SIGSYS),
            "{kind}"
        );
    }
}

#[test]
fn a_vcpu_may_make_only_its_own_ioctls() {
    let f = Filters::compile().unwrap();
    assert_eq!(
        in_child(&f, ThreadKind::Vcpu, tty_ioctl),
        End::Signaled(libc::SIGSYS)
    );
}

/// The descriptors `relay_a_socket_to_a_pipe` uses: a socket pair and a pipe's write end, made
/// before the fork (a relay holds its descriptors before its filter).
static RELAY_FDS: [std::sync::atomic::AtomicI32; 3] =
    [const { std::sync::atomic::AtomicI32::new(-1) }; 3];

/// What a relay does: reads a socket, writes a pipe, half-closes the socket; exits 5 when a
/// call failed.
fn relay_a_socket_to_a_pipe() {
    let [a, b, out] = RELAY_FDS
        .each_ref()
        .map(|f| f.load(std::sync::atomic::Ordering::SeqCst));
    let mut byte = [0u8; 1];
    // SAFETY: send/recv/write on descriptors the test made, from and into local buffers.
    let ok = unsafe {
        libc::send(b, b"x".as_ptr().cast(), 1, 0) == 1
            && libc::recv(a, byte.as_mut_ptr().cast(), 1, 0) == 1
            && libc::write(out, byte.as_ptr().cast(), 1) == 1
            && libc::shutdown(a, libc::SHUT_WR) == 0
            && libc::close(a) == 0
    };
    if !ok {
        // SAFETY: as in `in_child`.
        unsafe { libc::_exit(5) };
    }
}

#[test]
fn a_relay_may_move_bytes_between_descriptors_it_holds() {
    use std::io::Read;
    use std::os::fd::IntoRawFd;
    let f = Filters::compile().unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (mut from_child, to_parent) = std::io::pipe().unwrap();
    let fds = [a.into_raw_fd(), b.into_raw_fd(), to_parent.into_raw_fd()];
    for (slot, fd) in RELAY_FDS.iter().zip(fds) {
        slot.store(fd, std::sync::atomic::Ordering::SeqCst);
    }
    assert_eq!(
        in_child(&f, ThreadKind::Relay, relay_a_socket_to_a_pipe),
        End::Exited(0)
    );
    for fd in fds {
        // SAFETY: closes the descriptors made above, which nothing else owns.
        unsafe { libc::close(fd) };
    }
    let mut got = Vec::new();
    from_child.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"x");
}

#[test]
fn a_relay_may_not_open_a_socket_or_make_an_ioctl() {
    let f = Filters::compile().unwrap();
    assert_eq!(
        in_child(&f, ThreadKind::Relay, tty_ioctl),
        End::Signaled(libc::SIGSYS)
    );
    assert_eq!(
        in_child(&f, ThreadKind::Relay, inet_socket),
        End::Signaled(libc::SIGSYS)
    );
}

fn load_a_module() {
    // SAFETY: finit_module(2) on an invalid descriptor with a static empty string.
    unsafe { libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0) };
}

fn load_bpf() {
    // SAFETY: bpf(2) with a null attribute pointer and size 0: fails if it is let through.
    unsafe { libc::syscall(libc::SYS_bpf, 0, std::ptr::null::<u8>(), 0) };
}

fn x32_getpid() {
    // SAFETY: getpid by its x32 number (`__X32_SYSCALL_BIT | 39`); no arguments.
    unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
}

fn unmount_nothing() {
    // SAFETY: umount2(2) of a static path that is not a mount point: fails with EINVAL/ENOENT.
    unsafe { libc::umount2(c"/nonexistent-vessel-test".as_ptr(), 0) };
}

/// The monitor's threads may do what its teardown does (files, sockets, unmounts) but never
/// load kernel code or BPF.
#[test]
fn the_monitor_may_tear_down_but_not_load_code_into_the_kernel() {
    let f = Filters::compile().unwrap();
    for call in [
        open_etc_passwd_for_reading as fn(),
        unix_socket,
        inet_socket,
        unmount_nothing,
        tty_ioctl,
    ] {
        assert_eq!(in_child(&f, ThreadKind::Monitor, call), End::Exited(0));
    }
    // An x32 call (the same arch field as x86_64's) is refused whatever it is.
    for call in [load_a_module as fn(), load_bpf, x32_getpid] {
        assert_eq!(
            in_child(&f, ThreadKind::Monitor, call),
            End::Signaled(libc::SIGSYS)
        );
    }
}

fn set_stdin_nonblocking_by_ioctl() {
    let mut on: libc::c_int = 0;
    // SAFETY: FIONBIO reads one int from a local (0: leaves the descriptor blocking).
    unsafe { libc::ioctl(0, libc::FIONBIO, &mut on) };
}

#[test]
fn the_device_thread_may_make_only_its_own_ioctl() {
    let f = Filters::compile().unwrap();
    assert_eq!(
        in_child(&f, ThreadKind::Devices, set_stdin_nonblocking_by_ioctl),
        End::Exited(0)
    );
    assert_eq!(
        in_child(&f, ThreadKind::Devices, tty_ioctl),
        End::Signaled(libc::SIGSYS)
    );
}

fn open_tmp_as_a_path() {
    // SAFETY: a NUL-terminated static path; the descriptor, if any, is leaked in the child.
    let fd = unsafe {
        libc::openat(
            libc::AT_FDCWD,
            c"/tmp".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        // SAFETY: as in `in_child`.
        unsafe { libc::_exit(3) };
    }
}

#[test]
fn the_device_thread_may_open_a_directory_only_as_a_path() {
    let f = Filters::compile().unwrap();
    assert_eq!(
        in_child(&f, ThreadKind::Devices, open_tmp_as_a_path),
        End::Exited(0)
    );
    assert_eq!(
        in_child(&f, ThreadKind::Devices, open_etc_passwd_for_reading),
        End::Signaled(libc::SIGSYS)
    );
}

fn open_etc_passwd_read_only_cloexec() {
    // SAFETY: a NUL-terminated static path.
    let fd = unsafe {
        libc::openat(
            libc::AT_FDCWD,
            c"/etc/passwd".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error();
    // SAFETY: as in `in_child`.
    unsafe {
        libc::_exit(if fd < 0 && errno == Some(libc::ENOENT) {
            0
        } else {
            4
        })
    };
}

#[test]
fn glibcs_read_only_open_fails_with_enoent_on_the_vcpus_the_device_thread_and_the_relays() {
    let f = Filters::compile().unwrap();
    for kind in [ThreadKind::Vcpu, ThreadKind::Devices, ThreadKind::Relay] {
        assert_eq!(
            in_child(&f, kind, open_etc_passwd_read_only_cloexec),
            End::Exited(0),
            "{kind}"
        );
    }
}

/// Paths under a directory of another user (uid 1000, mode 0700): root opens them only with
/// `CAP_DAC_OVERRIDE`. Set before the fork; the child only reads them.
static OTHERS: std::sync::OnceLock<(std::ffi::CString, std::ffi::CString)> =
    std::sync::OnceLock::new();

/// Opens `path` with `flags` and exits 0 when that fails with `EACCES`.
fn open_is_denied(path: &std::ffi::CStr, flags: libc::c_int) {
    // SAFETY: a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), flags, 0o600) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    // SAFETY: as in `in_child`.
    unsafe {
        libc::_exit(if fd < 0 && errno == Some(libc::EACCES) {
            0
        } else {
            5
        })
    };
}

fn open_others_log_for_append() {
    let (log, _) = OTHERS.get().unwrap();
    open_is_denied(
        log,
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
    );
}

fn open_others_directory_as_a_path() {
    let (_, sub) = OTHERS.get().unwrap();
    open_is_denied(sub, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC);
}

#[test]
fn the_vcpus_and_the_device_thread_hold_no_capabilities() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "the_vcpus_and_the_device_thread_hold_no_capabilities: skipped: needs root (it \
             shows a capability gone by what root can no longer open)"
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir_all(theirs.join("sub")).unwrap();
    std::fs::write(theirs.join("console.log"), "").unwrap();
    for p in [
        theirs.join("console.log"),
        theirs.join("sub"),
        theirs.clone(),
    ] {
        std::os::unix::fs::chown(&p, Some(1000), Some(1000)).unwrap();
    }
    std::fs::set_permissions(
        theirs.join("console.log"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    let c = |p: std::path::PathBuf| std::ffi::CString::new(p.into_os_string().into_encoded_bytes());
    let (log, sub) = (
        c(theirs.join("console.log")).unwrap(),
        c(theirs.join("sub")).unwrap(),
    );
    // With its capabilities, root (this test) opens both.
    assert!(std::fs::OpenOptions::new()
        .append(true)
        .open(theirs.join("console.log"))
        .is_ok());
    assert!(std::fs::read_dir(theirs.join("sub")).is_ok());
    OTHERS.set((log, sub)).unwrap();
    let f = Filters::compile().unwrap();
    assert_eq!(
        in_child(&f, ThreadKind::Vcpu, open_others_log_for_append),
        End::Exited(0),
        "a vCPU thread opened another user's 0600 file: it kept CAP_DAC_OVERRIDE"
    );
    assert_eq!(
        in_child(&f, ThreadKind::Devices, open_others_directory_as_a_path),
        End::Exited(0),
        "the device thread searched another user's 0700 directory: it kept CAP_DAC_OVERRIDE"
    );
}
