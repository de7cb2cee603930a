//! The virtio-fs device: config space, and a serving thread per device that owns the queues once
//! the driver activates them.
//!
//! The thread starts when the device is created: it confines itself to the shared directory
//! ([`super::confine`]), opens the [`FileServer`] and reports back, so a bad directory fails VM
//! construction rather than the guest's mount. It then sleeps on an `EventFd` that
//! [`VirtioDevice::queue_notify`] (and activation, reset and drop) write; on each wake-up it
//! serves both queues and signals a used-ring interrupt when the driver wants one (its loop:
//! [`super::event_handler`]).
//!
//! The device's commands to the thread (activate, reset, stop) go through a [`Mailbox`] that
//! holds one command, not a queue: activation and reset come from the guest's writes of the
//! status register on a vCPU thread, and a guest that writes it in a loop must neither grow the
//! monitor's memory with commands the thread has not taken yet nor block its vCPU on a full
//! channel. Only the latest activation or reset matters (an activation replaces the thread's
//! whole state), so a newer one replaces one not yet taken; a stop, at teardown, replaces
//! anything and is never replaced.
//!
//! The thread never ends on its own while the device lives: a wait interrupted by a signal
//! (`EINTR`: any signal with a handler installed without `SA_RESTART`, such as the VMM's vCPU kick)
//! is retried. If it dies anyway (the eventfd fails otherwise), the guest's requests on the
//! share would wait forever, so the death is logged as an error naming the thread and handed to
//! the hook set with [`Fs::on_failure`], through which the VMM ends the VM. A panic is not
//! caught: release builds abort on panic, so it ends the whole monitor, VM included
//! (`docs/decisions/0008-panic-aborts-the-monitor.md`).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::event_handler::serve;
use super::{
    confine, FileServer, FsError, CONFIG_LEN, NUM_REQUEST_QUEUES, QUEUE_SIZE, TAG_LEN, VIRTIO_ID_FS,
};
use crate::virtio::{
    VirtioDevice, VirtioError, VirtioInterrupt, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

/// What the device tells its thread.
pub(super) enum Command {
    Activate {
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    },
    Reset,
    Stop,
}

/// The one command the device has for its thread and the thread has not taken yet (see the
/// module doc): posting never blocks and never holds more than one command.
#[derive(Default)]
pub(super) struct Mailbox {
    slot: Mutex<Option<Command>>,
}

impl Mailbox {
    /// Leaves `c` for the thread, replacing a command not taken yet, unless that is a stop.
    pub(super) fn post(&self, c: Command) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*slot, Some(Command::Stop)) {
            return;
        }
        let replaced = slot.replace(c);
        drop(slot);
        // Dropped outside the lock: an activation holds guest memory and queues.
        drop(replaced);
    }

    /// Takes the command left, if any.
    pub(super) fn take(&self) -> Option<Command> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Called once with the reason when the serving thread of an [`Fs`] dies (see the module doc).
pub type FailureHook = Box<dyn FnOnce(FsError) + Send>;

/// Run once on the serving thread when it is confined to its share and its server is open,
/// before it serves anything (the VMM installs the thread's seccomp filter here). An error fails
/// the device's creation.
pub type Lockdown =
    Box<dyn FnOnce() -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send>;

/// Where the serving thread reports its death: to the hook if one is set, else kept for it.
#[derive(Default)]
struct FailureSlot {
    hook: Option<FailureHook>,
    /// The death not yet handed to a hook.
    pending: Option<FsError>,
    /// The death as logged (the error and its causes).
    what: Option<String>,
}

/// A virtio-fs device sharing one host directory under one tag.
pub struct Fs {
    tag: String,
    shared_dir: PathBuf,
    config: [u8; CONFIG_LEN],
    queue_sizes: [u16; 2],
    acked_features: u64,
    commands: Arc<Mailbox>,
    kick: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    failure: Arc<Mutex<FailureSlot>>,
}

impl Fs {
    /// A device that serves `shared_dir` as `tag` (1 to [`TAG_LEN`] bytes, what the guest names
    /// in `mount -t virtiofs <tag> <dir>`). Starts its serving thread, which confines itself to
    /// `shared_dir` in a mount namespace of its own; needs `CAP_SYS_ADMIN`.
    pub fn new(tag: &str, shared_dir: &Path) -> Result<Fs, FsError> {
        Self::with_lockdown(tag, shared_dir, Box::new(|| Ok(())))
    }

    /// [`Fs::new`], with `lockdown` run on the serving thread before it serves (see [`Lockdown`]).
    ///
    /// # Errors
    /// As [`Fs::new`], and [`FsError::Lockdown`] when `lockdown` fails.
    pub fn with_lockdown(tag: &str, shared_dir: &Path, lockdown: Lockdown) -> Result<Fs, FsError> {
        if tag.is_empty() || tag.len() > TAG_LEN {
            return Err(FsError::BadTag {
                tag: tag.to_owned(),
                len: tag.len(),
            });
        }
        let mut config = [0u8; CONFIG_LEN];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());

        let start_err = |source| FsError::StartThread {
            tag: tag.to_owned(),
            source,
        };
        let kick = Arc::new(EventFd::new(0).map_err(start_err)?);
        let commands = Arc::new(Mailbox::default());
        let thread_commands = Arc::clone(&commands);
        let (ready_tx, ready_rx) = mpsc::channel();
        let dir = shared_dir.to_owned();
        let thread_kick = Arc::clone(&kick);
        let failure = Arc::new(Mutex::new(FailureSlot::default()));
        let thread_failure = Arc::clone(&failure);
        let name = format!("vessel-fs-{tag}");
        let thread_name = name.clone();
        let thread_tag = tag.to_owned();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // The server is rooted at ".": `PassthroughFs` reopens its root by that path at
                // FUSE INIT, when the share is this thread's working directory and `/`.
                let server = match confine::enter(&dir, || FileServer::open(Path::new("."))) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if let Err(source) = lockdown() {
                    let _ = ready_tx.send(Err(FsError::Lockdown {
                        tag: thread_tag,
                        source,
                    }));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                // A panic here is not caught: release builds abort on panic, which ends the
                // monitor and the VM with it (docs/decisions/0008-panic-aborts-the-monitor.md).
                if let Err(source) = serve(&server, &thread_kick, &thread_commands) {
                    let death = FsError::WaitNotify {
                        thread: thread_name,
                        source,
                    };
                    report_death(&thread_failure, death);
                }
            })
            .map_err(start_err)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(start_err(std::io::Error::other("thread exited")));
            }
        }
        Ok(Fs {
            tag: tag.to_owned(),
            shared_dir: shared_dir.to_owned(),
            config,
            queue_sizes: [QUEUE_SIZE; 2],
            acked_features: 0,
            commands,
            kick,
            thread: Some(thread),
            failure,
        })
    }

    /// Sets the hook told, once, that the serving thread died (see the module doc): the VMM ends
    /// the VM there, since the guest's requests on this share can no longer be answered. If the
    /// thread has already died, `hook` is called now, on this thread; otherwise it runs on the
    /// dying thread. Replaces a hook set earlier that has not run.
    pub fn on_failure(&mut self, hook: FailureHook) {
        let mut slot = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.pending.take() {
            Some(death) => {
                drop(slot);
                hook(death);
            }
            None => slot.hook = Some(hook),
        }
    }

    /// Why the serving thread died (the error and its causes, as logged), or `None` while it
    /// serves or after an orderly [`Fs::stop`].
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .what
            .clone()
    }

    /// The tag the guest mounts.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The host directory served.
    pub fn shared_dir(&self) -> &Path {
        &self.shared_dir
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// The `EventFd` the serving thread sleeps on. A VMM may register it as the KVM ioeventfd
    /// of the QueueNotify register: a guest kick then wakes the thread directly, with the same
    /// effect as [`VirtioDevice::queue_notify`] and no exit to user space on the vCPU thread.
    pub fn queue_evt(&self) -> &EventFd {
        &self.kick
    }

    /// Stops the serving thread and joins it (at VM teardown; drop does the same). The device
    /// serves no request afterwards; a second call does nothing.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.send(Command::Stop);
            let _ = t.join();
        }
    }

    fn send(&self, c: Command) {
        self.commands.post(c);
        self.kick_thread();
    }

    fn kick_thread(&self) {
        if let Err(e) = self.kick.write(1) {
            log::warn!("virtio-fs {}: cannot wake serving thread: {e}", self.tag);
        }
    }
}

/// Logs the serving thread's death and hands it to the hook, or keeps it for one.
fn report_death(slot: &Mutex<FailureSlot>, death: FsError) {
    let what = vessel_error::chain(&death);
    log::error!("{what}: the guest's requests on this share will not be answered");
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    slot.what = Some(what);
    match slot.hook.take() {
        Some(hook) => {
            drop(slot);
            hook(death);
        }
        None => slot.pending = Some(death),
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    /// `VIRTIO_F_VERSION_1` and `VIRTIO_RING_F_EVENT_IDX` (used and avail event indexes,
    /// virtio 1.2, 2.7.10: see [`FileServer::process_queue`]).
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    /// The config space is read-only for the driver (virtio 1.2, 5.11.4); writes are dropped.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio-fs {}: dropped {}-byte config write at {offset}",
            self.tag,
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), VirtioError> {
        if queues.len() != self.queue_sizes.len() {
            return Err(VirtioError::QueueCount {
                want: self.queue_sizes.len(),
                got: queues.len(),
            });
        }
        let event_idx = self.acked_features & VIRTIO_RING_F_EVENT_IDX != 0;
        let mut queues = queues;
        for q in &mut queues {
            q.set_event_idx(event_idx);
        }
        self.send(Command::Activate {
            mem,
            interrupt,
            queues,
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.send(Command::Reset);
    }

    fn queue_notify(&mut self, _index: u16) {
        self.kick_thread();
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies `data.len()` bytes of `config` at `offset`; bytes past the end read as 0.
fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start < config.len() {
        let n = data.len().min(config.len() - start);
        data[..n].copy_from_slice(&config[start..start + n]);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use fuse_backend_rs::abi::fuse_abi::{
        AttrOut, EntryOut, GetattrIn, GetxattrIn, InitIn, InitOut, OpenIn, OpenOut, OutHeader,
        ReadIn, SetxattrIn, WriteIn, WriteOut,
    };
    use virtio_queue::QueueT;
    use vm_memory::{ByteValued, Bytes};

    use std::sync::mpsc::Receiver;

    use super::super::test_utils::{cname, create_args, obj, Driver};
    use super::super::REQUEST_QUEUE;
    use super::*;
    use crate::virtio::INT_USED_RING;

    const LOOKUP: u32 = 1;
    const FORGET: u32 = 2;
    const GETATTR: u32 = 3;
    const OPEN: u32 = 14;
    const READ: u32 = 15;
    const WRITE: u32 = 16;
    const SETXATTR: u32 = 21;
    const GETXATTR: u32 = 22;
    const INIT: u32 = 26;
    const CREATE: u32 = 35;
    const ROOT: u64 = 1;

    fn set_xattr(path: &std::path::Path, name: &str, value: &[u8]) {
        let (p, n) = (
            std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap(),
            std::ffi::CString::new(name).unwrap(),
        );
        // SAFETY: NUL-terminated strings and a buffer of `value.len()` bytes, all outliving the
        // call, which only reads them.
        let rc = unsafe {
            libc::setxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(
            rc,
            0,
            "setxattr {name}: {}",
            std::io::Error::last_os_error()
        );
    }

    fn xattr_of(path: &std::path::Path, name: &str) -> Vec<u8> {
        let (p, n) = (
            std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap(),
            std::ffi::CString::new(name).unwrap(),
        );
        let mut buf = vec![0u8; 256];
        // SAFETY: NUL-terminated strings and a buffer of `buf.len()` bytes, all outliving the
        // call, which writes at most that many bytes into the buffer.
        let n =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(
            n >= 0,
            "getxattr {name}: {}",
            std::io::Error::last_os_error()
        );
        buf.truncate(n as usize);
        buf
    }

    /// The device confines its thread with a mount namespace: that needs root.
    fn root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!(
            "{}: skipped: the virtio-fs thread unshares its mount namespace and needs root",
            std::thread::current().name().unwrap_or("test")
        );
        false
    }

    struct Session {
        fs: Fs,
        d: Driver,
    }

    impl Session {
        fn start(dir: &Path) -> Session {
            Session::start_offering(dir, 0).0
        }

        /// A session whose FUSE INIT offers `flags`; also returns the server's INIT reply.
        fn start_offering(dir: &Path, flags: u32) -> (Session, InitOut) {
            Session::start_with(dir, VIRTIO_F_VERSION_1, flags)
        }

        /// A session whose driver accepted the virtio `features` and whose FUSE INIT offers
        /// `flags`; also returns the server's INIT reply.
        fn start_with(dir: &Path, features: u64, flags: u32) -> (Session, InitOut) {
            let mut fs = Fs::new("vessel", dir).unwrap();
            fs.ack_features(features);
            let d = Driver::new();
            let hiprio = Queue::new(QUEUE_SIZE).unwrap();
            fs.activate(
                d.mem.clone(),
                Arc::clone(&d.interrupt),
                vec![hiprio, d.queue()],
            )
            .unwrap();
            let mut s = Session { fs, d };
            let (h, body) = s.call(
                INIT,
                0,
                InitIn {
                    major: 7,
                    minor: 31,
                    max_readahead: 0x20000,
                    flags,
                }
                .as_slice(),
            );
            assert_eq!(h.error, 0);
            let out: InitOut = obj(&body);
            // The server answers with its own protocol version; the client uses the lower one.
            assert_eq!((out.major, out.minor), (7, 33));
            (s, out)
        }

        fn call(&mut self, op: u32, node: u64, args: &[u8]) -> (OutHeader, Vec<u8>) {
            let (unique, at) = self.d.post(op, node, args);
            self.fs.queue_notify(REQUEST_QUEUE as u16);
            let len = self.d.wait_used();
            let (h, body) = self.d.reply(at, len);
            assert_eq!(h.unique, unique);
            assert_eq!(h.len, len);
            (h, body)
        }

        fn lookup(&mut self, parent: u64, name: &str) -> Result<EntryOut, i32> {
            let (h, body) = self.call(LOOKUP, parent, &cname(name));
            if h.error != 0 {
                return Err(-h.error);
            }
            Ok(obj(&body))
        }

        fn open(&mut self, node: u64, flags: i32) -> u64 {
            let (h, body) = self.call(
                OPEN,
                node,
                OpenIn {
                    flags: flags as u32,
                    fuse_flags: 0,
                }
                .as_slice(),
            );
            assert_eq!(h.error, 0);
            obj::<OpenOut>(&body).fh
        }

        fn read(&mut self, node: u64, fh: u64, offset: u64, size: u32) -> Vec<u8> {
            let args = ReadIn {
                fh,
                offset,
                size,
                ..Default::default()
            };
            let (h, body) = self.call(READ, node, args.as_slice());
            assert_eq!(h.error, 0);
            body
        }

        fn write(&mut self, node: u64, fh: u64, offset: u64, data: &[u8]) -> u32 {
            let mut args = WriteIn {
                fh,
                offset,
                size: data.len() as u32,
                ..Default::default()
            }
            .as_slice()
            .to_vec();
            args.extend_from_slice(data);
            let (h, body) = self.call(WRITE, node, &args);
            assert_eq!(h.error, 0, "write failed");
            obj::<WriteOut>(&body).size
        }
    }

    #[test]
    fn config_space_is_the_tag_then_one_request_queue() {
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(b"vessel");
        config[TAG_LEN..].copy_from_slice(&1u32.to_le_bytes());
        let mut b = [0xffu8; 8];
        read_config_bytes(&config, 0, &mut b);
        assert_eq!(&b, b"vessel\0\0");
        let mut w = [0xffu8; 4];
        read_config_bytes(&config, TAG_LEN as u64, &mut w);
        assert_eq!(u32::from_le_bytes(w), 1);
        read_config_bytes(&config, CONFIG_LEN as u64 - 2, &mut w);
        assert_eq!(w, [0, 0, 0, 0]);
        for bad in ["", &"x".repeat(37)] {
            let e = Fs::new(bad, Path::new("/nonexistent")).err().unwrap();
            assert!(e.to_string().contains("must be 1..=36"), "{e}");
        }
    }

    #[test]
    fn device_registers_as_fs_with_two_queues_and_its_tag() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let fs = Fs::new("vessel", dir.path()).unwrap();
        assert_eq!(fs.device_type(), 26);
        assert_eq!(fs.queue_max_sizes(), &[1024, 1024]);
        assert_eq!(fs.features(), VIRTIO_F_VERSION_1 | (1 << 29));
        let mut tag = [0u8; 40];
        fs.read_config(0, &mut tag);
        assert_eq!(&tag[..7], b"vessel\0");
        assert_eq!(&tag[36..], &1u32.to_le_bytes());
        let e = Fs::new("vessel", &dir.path().join("missing"))
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("confine file server to"), "{e}");
    }

    #[test]
    fn stop_joins_the_serving_thread_once() {
        if !root() {
            return;
        }
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|c| c.trim_end() == "vessel-fs-st0p")
                .count()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Fs::new("st0p", dir.path()).unwrap();
        assert_eq!(threads(), 1);
        fs.stop();
        // A joined thread can stay listed in /proc for about a millisecond.
        let t0 = std::time::Instant::now();
        while threads() != 0 && t0.elapsed() < std::time::Duration::from_secs(1) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(threads(), 0);
        fs.stop();
        fs.queue_notify(REQUEST_QUEUE as u16);
        assert_eq!(fs.queue_evt().read().unwrap(), 1, "kick still lands");
    }

    /// Signals handled by [`counting_handler`].
    static SIGNALS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    extern "C" fn counting_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
        SIGNALS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    #[test]
    fn a_signal_while_waiting_for_a_kick_does_not_end_serving() {
        use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};
        if !root() {
            return;
        }
        // As the VMM's vCPU kick: a handler installed with SA_SIGINFO only, no SA_RESTART, so a
        // blocking read(2) the signal lands in fails with EINTR instead of restarting.
        register_signal_handler(SIGRTMIN(), counting_handler).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "ok").unwrap();
        let mut s = Session::start(dir.path());
        // The thread is idle, blocked reading its kick eventfd: every signal lands in that read.
        let before = SIGNALS.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..20 {
            s.fs.thread.as_ref().unwrap().kill(SIGRTMIN()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(SIGNALS.load(std::sync::atomic::Ordering::SeqCst) - before >= 20);
        assert_eq!(s.lookup(ROOT, "f").unwrap().attr.size, 2);
        assert_eq!(s.fs.failure(), None);
    }

    /// A hook that forwards the serving thread's death to the returned receiver.
    fn death_channel(fs: &mut Fs) -> Receiver<FsError> {
        let (tx, rx) = mpsc::channel();
        fs.on_failure(Box::new(move |e| {
            let _ = tx.send(e);
        }));
        rx
    }

    #[test]
    fn a_kick_eventfd_that_fails_ends_the_thread_loudly_and_calls_the_hook() {
        use std::os::fd::AsRawFd;
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Fs::new("k1ck", dir.path()).unwrap();
        let deaths = death_channel(&mut fs);
        // The kick descriptor becomes a directory, whose read(2) fails with EISDIR; a write to
        // the original eventfd wakes the thread if it already sleeps in a read of it.
        let original = fs.queue_evt().try_clone().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        nix::unistd::dup2(d.as_raw_fd(), fs.queue_evt().as_raw_fd()).unwrap();
        original.write(1).unwrap();
        let death = deaths
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the hook is told within 5 s");
        match &death {
            FsError::WaitNotify { thread, source } => {
                assert_eq!(thread, "vessel-fs-k1ck");
                assert_eq!(source.raw_os_error(), Some(libc::EISDIR));
            }
            other => panic!("unexpected death {other:?}"),
        }
        assert_eq!(
            fs.failure().unwrap(),
            "virtio-fs thread vessel-fs-k1ck cannot wait for queue notifications: \
             Is a directory (os error 21)"
        );
        fs.stop();
    }

    #[test]
    fn the_mailbox_holds_only_the_latest_command_and_a_stop_is_never_replaced() {
        let d = Driver::new();
        let activate = |queues: usize| Command::Activate {
            mem: d.mem.clone(),
            interrupt: Arc::clone(&d.interrupt),
            queues: (0..queues).map(|_| d.queue()).collect(),
        };
        let m = Mailbox::default();
        assert!(m.take().is_none());
        // A guest writing the status register in a loop: every command replaces the last, and
        // the replaced activations are dropped (their references to the interrupt with them).
        for i in 0..10_000 {
            m.post(activate(1 + i % 2));
            m.post(Command::Reset);
        }
        m.post(activate(2));
        assert_eq!(Arc::strong_count(&d.interrupt), 2, "one activation held");
        assert!(matches!(m.take(), Some(Command::Activate { queues, .. }) if queues.len() == 2));
        assert!(m.take().is_none(), "taken once");
        assert_eq!(Arc::strong_count(&d.interrupt), 1);
        m.post(Command::Reset);
        m.post(Command::Stop);
        m.post(activate(2));
        m.post(Command::Reset);
        assert!(matches!(m.take(), Some(Command::Stop)));
        assert_eq!(
            Arc::strong_count(&d.interrupt),
            1,
            "nothing posted after the stop kept"
        );
    }

    #[test]
    fn a_guest_flooding_activations_and_resets_is_served_by_the_last_activation() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "ok").unwrap();
        let mut fs = Fs::new("fl00d", dir.path()).unwrap();
        fs.ack_features(VIRTIO_F_VERSION_1);
        let d = Driver::new();
        let queues = || vec![Queue::new(QUEUE_SIZE).unwrap(), d.queue()];
        for _ in 0..20_000 {
            fs.activate(d.mem.clone(), Arc::clone(&d.interrupt), queues())
                .unwrap();
            fs.reset();
        }
        fs.activate(d.mem.clone(), Arc::clone(&d.interrupt), queues())
            .unwrap();
        // At most the mailbox's and the thread's activations hold the interrupt.
        assert!(Arc::strong_count(&d.interrupt) <= 3);
        let mut s = Session { fs, d };
        let init = InitIn {
            major: 7,
            minor: 31,
            max_readahead: 0,
            flags: 0,
        };
        assert_eq!(s.call(INIT, 0, init.as_slice()).0.error, 0);
        assert_eq!(s.lookup(ROOT, "f").unwrap().attr.size, 2);
    }

    #[test]
    fn fuse_requests_read_and_write_host_files() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.txt"), "hello from host").unwrap();
        let mut s = Session::start(dir.path());

        let e = s.lookup(ROOT, "hello.txt").unwrap();
        assert_eq!(e.attr.size, 15);
        let host = std::fs::metadata(dir.path().join("hello.txt")).unwrap();
        assert_eq!(e.attr.ino, host.ino());
        let (h, body) = s.call(GETATTR, e.nodeid, GetattrIn::default().as_slice());
        assert_eq!(h.error, 0);
        let attr: AttrOut = obj(&body);
        assert_eq!(attr.attr.mode, host.mode());
        assert_eq!(attr.attr.size, 15);

        let fh = s.open(e.nodeid, libc::O_RDWR);
        assert_eq!(s.read(e.nodeid, fh, 0, 4096), b"hello from host");
        assert_eq!(s.read(e.nodeid, fh, 6, 4), b"from");
        assert_eq!(s.write(e.nodeid, fh, 6, b"guest"), 5);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hello.txt")).unwrap(),
            "hello guesthost"
        );

        // A file created by the guest lands on the host with the mode asked for.
        let (h, body) = s.call(CREATE, ROOT, &create_args("from-guest", 0o640));
        assert_eq!(h.error, 0);
        let entry: EntryOut = obj(&body);
        let open: OpenOut = obj(&body[std::mem::size_of::<EntryOut>()..]);
        let data = vec![0xa5u8; 100_000];
        assert_eq!(s.write(entry.nodeid, open.fh, 0, &data), 100_000);
        let path = dir.path().join("from-guest");
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );

        // Extended attributes go through the server's /proc/self/fd/<n> paths (its procfs is
        // only the process's descriptor directory): a guest's trusted.* and user.* land on the
        // host file, and a host-set one reads back.
        for (name, value) in [
            ("user.vessel", &b"from-guest"[..]),
            ("trusted.overlay.x", b"y"),
        ] {
            let mut args = SetxattrIn {
                size: value.len() as u32,
                flags: 0,
            }
            .as_slice()
            .to_vec();
            args.extend(cname(name));
            args.extend(value);
            let (h, _) = s.call(SETXATTR, entry.nodeid, &args);
            assert_eq!(h.error, 0, "setxattr {name}");
            assert_eq!(xattr_of(&path, name), value, "{name} on the host file");
        }
        set_xattr(&path, "user.host", b"set-on-host");
        let mut args = GetxattrIn {
            size: 64,
            padding: 0,
        }
        .as_slice()
        .to_vec();
        args.extend(cname("user.host"));
        let (h, body) = s.call(GETXATTR, entry.nodeid, &args);
        assert_eq!(h.error, 0, "getxattr user.host");
        assert_eq!(body, b"set-on-host");

        // Missing names are ENOENT; ".." of the root is the root itself.
        assert_eq!(s.lookup(ROOT, "nope").unwrap_err(), libc::ENOENT);
        let up = s.lookup(ROOT, "..").unwrap();
        let root_ino = std::fs::metadata(dir.path()).unwrap().ino();
        assert_eq!(up.attr.ino, root_ino);
        assert_eq!(s.lookup(ROOT, "a/b").unwrap_err(), libc::EINVAL);
    }

    #[test]
    fn init_grants_1_mib_writes_when_the_driver_offers_them_and_they_land_whole() {
        use fuse_backend_rs::abi::fuse_abi::FsOptions;
        if !root() {
            return;
        }
        let (big, pages) = (
            FsOptions::BIG_WRITES.bits() as u32,
            FsOptions::MAX_PAGES.bits() as u32,
        );
        let dir = tempfile::tempdir().unwrap();
        // A driver that offers neither keeps the FUSE default of 4 KiB.
        let (_, out) = Session::start_offering(dir.path(), 0);
        assert_eq!((out.flags & (big | pages), out.max_write), (0, 4096));
        // Linux offers both (fs/fuse/inode.c, fuse_send_init).
        let (mut s, out) = Session::start_offering(dir.path(), big | pages);
        assert_eq!(out.flags & (big | pages), big | pages);
        assert_eq!((out.max_write, out.max_pages), (1 << 20, 256));
        assert_eq!(super::super::request::MAX_WRITE, 1 << 20);
        std::fs::write(dir.path().join("w"), "").unwrap();
        let e = s.lookup(ROOT, "w").unwrap();
        let fh = s.open(e.nodeid, libc::O_RDWR);
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        assert_eq!(s.write(e.nodeid, fh, 0, &data), 1 << 20);
        assert_eq!(std::fs::read(dir.path().join("w")).unwrap(), data);
    }

    #[test]
    fn a_request_the_server_fails_without_replying_gets_eio_unless_it_is_a_forget() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "ok").unwrap();
        let mut s = Session::start(dir.path());
        // A WRITE whose arguments stop short of `fuse_write_in`: the server cannot decode it and
        // returns an error without writing a reply.
        let (h, body) = s.call(WRITE, ROOT, &[0u8; 4]);
        assert_eq!((h.error, h.len, body.len()), (-libc::EIO, 16, 0));
        // A FORGET is never answered, even when malformed.
        let (_, at) = s.d.post(FORGET, ROOT, &[]);
        s.fs.queue_notify(REQUEST_QUEUE as u16);
        assert_eq!(s.d.wait_used(), 0);
        let untouched: OutHeader = s.d.mem.read_obj(vm_memory::GuestAddress(at)).unwrap();
        assert_eq!(untouched.unique, 0);
        assert_eq!(s.lookup(ROOT, "f").unwrap().attr.size, 2);
    }

    #[test]
    fn a_chain_outside_guest_memory_is_used_empty_and_serving_goes_on() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "ok").unwrap();
        let mut s = Session::start(dir.path());
        // A request whose descriptor points past the end of guest memory.
        s.d.post_raw_outside();
        s.fs.queue_notify(REQUEST_QUEUE as u16);
        assert_eq!(s.d.wait_used(), 0);
        assert_eq!(s.lookup(ROOT, "f").unwrap().attr.size, 2);
        assert!(s.d.interrupt.status() & INT_USED_RING != 0);
    }

    /// Guest address of the split ring field `used_event` (after the avail ring's entries) and
    /// `avail_event` (after the used ring's), for the test driver's 256-entry queue.
    /// Posts three GETATTRs, kicks once, waits for all three replies, then 50 ms more for any
    /// interrupt the device might still raise.
    fn three_getattrs_in_one_kick(s: &mut Session) {
        for _ in 0..3 {
            s.d.post(GETATTR, ROOT, GetattrIn::default().as_slice());
        }
        s.fs.queue_notify(REQUEST_QUEUE as u16);
        for _ in 0..3 {
            s.d.wait_used();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    fn event_fields(d: &Driver) -> (vm_memory::GuestAddress, vm_memory::GuestAddress) {
        use vm_memory::Address;
        (
            d.mock_avail_addr().unchecked_add(4 + 2 * 256),
            d.mock_used_addr().unchecked_add(4 + 8 * 256),
        )
    }

    #[test]
    fn with_event_idx_a_batch_interrupts_only_as_the_driver_asks_and_kicks_are_rearmed() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let features = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX;
        let (mut s, _) = Session::start_with(dir.path(), features, 0);
        let (used_event, avail_event) = event_fields(&s.d);
        // INIT was chain 0: the driver re-armed its interrupt for used index 1 and got one.
        assert_ne!(s.d.interrupt.status() & INT_USED_RING, 0);
        assert_eq!(s.d.irq_count(), 1);
        s.d.interrupt.ack(INT_USED_RING);
        // The device asks for the next kick at the avail index it will serve next.
        assert_eq!(s.d.mem.read_obj::<u16>(avail_event).unwrap(), 1);
        // A driver busy elsewhere wants no interrupt before used index 10: three requests in
        // one kick are all served, silently.
        s.d.mem.write_obj(9u16, used_event).unwrap();
        three_getattrs_in_one_kick(&mut s);
        assert_eq!(
            (s.d.interrupt.status(), s.d.irq_count()),
            (0, 0),
            "interrupted before used_event"
        );
        assert_eq!(s.d.mem.read_obj::<u16>(avail_event).unwrap(), 4);
        // A driver waiting for the next completion (used_event = used index) gets one interrupt
        // for it, and none for the two after it in the same batch.
        s.d.mem.write_obj(4u16, used_event).unwrap();
        three_getattrs_in_one_kick(&mut s);
        assert_eq!(s.d.irq_count(), 1);
    }

    #[test]
    fn init_grants_async_reads_auto_invalidation_atomic_truncation_and_parallel_dirops() {
        use fuse_backend_rs::abi::fuse_abi::FsOptions;
        if !root() {
            return;
        }
        let wanted = (FsOptions::ASYNC_READ
            | FsOptions::AUTO_INVAL_DATA
            | FsOptions::ATOMIC_O_TRUNC
            | FsOptions::PARALLEL_DIROPS)
            .bits() as u32;
        let dir = tempfile::tempdir().unwrap();
        // Never granted unless offered.
        let (_, out) = Session::start_offering(dir.path(), 0);
        assert_eq!(out.flags & wanted, 0);
        let (mut s, out) = Session::start_offering(dir.path(), wanted);
        assert_eq!(out.flags & wanted, wanted);
        // With FUSE_ATOMIC_O_TRUNC the guest sends O_TRUNC in OPEN, and the host file is
        // truncated by it.
        std::fs::write(dir.path().join("t"), "old contents").unwrap();
        let e = s.lookup(ROOT, "t").unwrap();
        s.open(e.nodeid, libc::O_WRONLY | libc::O_TRUNC);
        assert_eq!(std::fs::metadata(dir.path().join("t")).unwrap().len(), 0);
    }
}
