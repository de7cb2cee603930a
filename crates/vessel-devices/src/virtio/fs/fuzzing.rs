//! Fuzzing checks for the guest-controlled side of virtio-fs: FUSE requests in descriptor chains
//! are answered within bounds, never panic, and never reach outside the shared directory.
//!
//! [`check_fs`] is the body of the `fs_requests` libFuzzer target (`fuzz/`, run by `make fuzz`)
//! and of this module's tests, which replay the checked-in seed corpus (`fuzz/corpus/fs_requests/`)
//! plus deterministic mutations of it on every `cargo test`. It serves real split-ring descriptor
//! chains in a `GuestMemoryMmap` with a real [`FileServer`] (the `PassthroughFs` behind
//! [`super::bound`]) over a scratch directory:
//!
//! ```text
//! <scratch>/            a fresh directory per input, under /dev/shm when there is one
//!   share/              the share: hello (a file), sub/ (a directory), up -> ../outside/canary
//!   outside/canary      the canary, and outside/dir/inner: what the guest must never touch
//! ```
//!
//! The server runs on a thread of its own with a private `fs_struct` (`unshare(CLONE_FS)`, as the
//! serving thread has: `PassthroughFs` clears its umask), but without the mount namespace of
//! [`super::confine`] and without the seccomp lockdown: the check tests the inner line of
//! defence (names resolved one component at a time, no symlink followed on the host) on its own,
//! so an escape shows up as a change next to the share instead of landing in an empty pivot root.
//! Needs no privilege; as root (the monitor's case) the guest's uid and gid in each request are
//! taken on by the server, and `trusted.*` xattrs work.
//!
//! Input: a sequence of records, each a tag byte (`tag % 3` picks the kind) and its fields, all
//! little endian; a record cut short by the end of the input reads zeros.
//!
//! | kind | fields | what the guest does |
//! |---|---|---|
//! | 0 request | opcode u8, node u8, who u8, bits u8, [len u32], args len u8, args, names u8, names, data len u16, data, reply len u16, [split u16] | a FUSE request on the request queue, then a kick |
//! | 1 hiprio | as 0 | the same on the high-priority queue (FORGET, BATCH_FORGET, INTERRUPT) |
//! | 2 raw | queue u8, count u8, then (addr u32, len u32, flags u16, next u16) each | 1-4 hostile descriptors on queue `queue % 2`, then a kick |
//!
//! A request is `fuse_in_header` (its `nodeid` is `node`, 255 meaning `u64::MAX`; uid 1000 if
//! bit 0 of `who`, gid 1000 if bit 1, else 0; `len` the request's length, XORed with the `len`
//! field when bit 0 of `bits` is set), then the `args` bytes (the fixed arguments, such as
//! `fuse_create_in`), then `names % 4` names each followed by a NUL (the last one not, when bit 1
//! of `bits` is set), then the `data` bytes (a WRITE's data, an xattr's value). A name is one
//! selector byte: below 16 it picks from [`NAMES`] (`..`, `/`-paths, the absolute path of the
//! canary ...), otherwise `selector - 16` literal bytes follow. The request is one readable
//! descriptor (two, split at `split`, when bit 3 of `bits` is set), the reply room of `reply len`
//! bytes one writable descriptor (two halves when bit 2 is set). A FALLOCATE's length is cut to
//! 1 MiB so an input cannot fill the scratch file system.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OutHeader};
use virtio_queue::{Queue, QueueT};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use super::{FileServer, HIPRIO_QUEUE, REQUEST_QUEUE};

/// Descriptors the file server may hold for the guest in the check: small, so inputs reach the
/// bound and its `EMFILE` paths.
pub const LIMIT: usize = 16;
/// Guest memory size.
const MEM_SIZE: usize = 4 << 20;
/// Size of each queue.
const QSIZE: u16 = 256;
/// First guest address handed out for requests and replies (below it: the rings).
const DATA_START: u64 = 0x10_0000;
/// `VRING_DESC_F_NEXT`, `VRING_DESC_F_WRITE`, `VRING_DESC_F_INDIRECT`.
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
/// Most bytes a FALLOCATE of the check may ask for.
const MAX_FALLOCATE: u64 = 1 << 20;
/// Size of `fuse_out_header`.
const OUT_HEADER: usize = std::mem::size_of::<OutHeader>();

/// Names a selector byte below 16 picks; `@` stands for the scratch directory's absolute path.
pub const NAMES: [&str; 16] = [
    "hello",
    "sub",
    "up",
    "new",
    ".",
    "..",
    "",
    "../outside",
    "../outside/canary",
    "@/outside/canary",
    "@/outside",
    "/etc/passwd",
    "outside",
    "canary",
    "/",
    "a/b",
];

/// What one well-laid request got: its opcode and the `error` of its reply (`None`: no reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The request's opcode.
    pub opcode: u32,
    /// The reply header's `error` (0 or a negative errno), or `None` when the chain was used
    /// without a reply.
    pub error: Option<i32>,
}

/// The `fs_requests` check: plays the records of `data` (layout in the module docs) against a
/// fresh file server over a fresh scratch share and panics if an invariant breaks:
///
/// - nothing panics, whatever the chains and requests;
/// - after each kick, the used ring holds exactly the chains published since the last one, in
///   order, each once, and the driver is notified once when any was used (until a hostile chain
///   names an indirect table: its entries may point anywhere, the rings included);
/// - a well-laid request's used length is within its reply room; a reply is a `fuse_out_header`
///   whose `len` is the used length and whose `unique` is the request's, with `error` 0 or a
///   negative errno and nothing after an error; a request other than FORGET, BATCH_FORGET,
///   INTERRUPT and NOTIFY_REPLY with room for a header gets one (DESTROY's is written with a
///   used length of 0);
/// - guest memory the guest did not offer as device-writable is never written;
/// - nothing outside the share changes: every entry under `outside/` keeps its type, mode,
///   owner, size, times, inode, link count and content (or link target), and no entry appears
///   next to `share/` and `outside/`;
/// - the server holds no descriptor of anything in the scratch directory outside the share (an
///   escape that only reads), holds at most [`LIMIT`] descriptors for the guest, exactly the
///   count [`FileServer::held_descriptors`] mirrors (plus the root's), and none once dropped.
///
/// Returns what each well-laid request got, so tests can tell that a seed does what it should.
pub fn check_fs(data: &[u8]) -> Vec<Answer> {
    let scratch = Scratch::new();
    let answers = std::thread::scope(|s| {
        let run = s.spawn(|| serve_input(&scratch, data));
        match run.join() {
            Ok(a) => a,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    assert_eq!(
        scratch.fds_under(&scratch.root),
        Vec::<PathBuf>::new(),
        "descriptors of the scratch directory left open after the server was dropped"
    );
    answers
}

/// The body of [`check_fs`], on a thread of its own.
fn serve_input(scratch: &Scratch, data: &[u8]) -> Vec<Answer> {
    // PassthroughFs clears the umask of the thread's fs_struct: keep the process's.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).expect("unshare(CLONE_FS)");
    let server = FileServer::open_bounded(&scratch.share, LIMIT).expect("open the scratch share");
    let mut run = Run {
        server,
        scratch,
        before: scratch.snapshot(),
        mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap(),
        queues: [queue(HIPRIO_QUEUE), queue(REQUEST_QUEUE)],
        next_desc: [0; 2],
        avail_idx: [0; 2],
        used_seen: [0; 2],
        data_next: DATA_START,
        unique: 0,
        writable: Vec::new(),
        readonly: Vec::new(),
        wild: false,
        answers: Vec::new(),
    };
    let mut input = Input(data);
    while !input.0.is_empty() {
        run.record(&mut input);
        run.check_host();
    }
    run.check_memory();
    run.answers
}

/// The fuzz input, read field by field; fields past its end read as zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.bytes(N);
        out[..b.len()].copy_from_slice(b);
        out
    }

    fn u8(&mut self) -> u8 {
        self.le::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.le())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.le())
    }
}

/// The scratch directory of one input (see the module doc); removed on drop.
struct Scratch {
    /// Its absolute, canonical path.
    root: PathBuf,
    /// `root/share`.
    share: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        };
        let root = nix::unistd::mkdtemp(&base.join("vessel-fuzz-fs.XXXXXX"))
            .expect("create the scratch directory");
        let root = std::fs::canonicalize(root).unwrap();
        let share = root.join("share");
        let outside = root.join("outside");
        for d in [&share, &share.join("sub"), &outside, &outside.join("dir")] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(share.join("hello"), "hello from the host\n").unwrap();
        std::os::unix::fs::symlink("../outside/canary", share.join("up")).unwrap();
        std::fs::write(outside.join("canary"), "the guest must not touch this\n").unwrap();
        std::fs::write(outside.join("dir/inner"), "nor this\n").unwrap();
        Scratch { root, share }
    }

    /// The state of everything in the scratch directory but the share, by relative path.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(&self.root).unwrap() {
            let name = e.unwrap().file_name();
            if name != "share" {
                walk(&self.root, Path::new(&name), &mut out);
            }
        }
        out
    }

    /// Where the process's open descriptors that lead under `dir` lead (`/proc/self/fd`).
    fn fds_under(&self, dir: &Path) -> Vec<PathBuf> {
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
            return Vec::new();
        };
        // Another thread (a parallel test) may close its descriptors meanwhile: skip those.
        fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|p| p.starts_with(dir))
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Without privilege, a directory the guest made unreadable stops the first attempt.
        let removed = std::fs::remove_dir_all(&self.root).or_else(|_| {
            open_up(&self.root);
            std::fs::remove_dir_all(&self.root)
        });
        if let Err(e) = removed {
            // Not worth a panic on top of one already unwinding.
            if !std::thread::panicking() {
                panic!("remove {}: {e}", self.root.display());
            }
        }
    }
}

/// Gives the owner full access to `dir` and every directory below it, as far as it can.
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&e.path());
        }
    }
}

/// Records `rel` (under `root`) and everything below it: type, mode, owner, size, times,
/// inode, links, and the content of a file or the target of a link. Access times are left out:
/// the check's own reads change them.
fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let path = root.join(rel);
    let Ok(m) = std::fs::symlink_metadata(&path) else {
        out.insert(rel.to_owned(), "gone".into());
        return;
    };
    let what = if m.is_file() {
        format!("{:?}", std::fs::read(&path).ok())
    } else if m.is_symlink() {
        format!("-> {:?}", std::fs::read_link(&path).ok())
    } else {
        String::new()
    };
    out.insert(
        rel.to_owned(),
        format!(
            "mode {:o} uid {} gid {} size {} mtime {}.{} ctime {}.{} ino {} nlink {} {what}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino(),
            m.nlink()
        ),
    );
    if m.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            walk(root, &rel.join(n), out);
        }
    }
}

/// Guest address of queue `q`'s descriptor table; the avail ring follows 4 KiB after it, the
/// used ring 8 KiB after it.
fn base(q: usize) -> u64 {
    0x1_0000 * (q as u64 + 1)
}

/// Queue `q` as the driver set it up.
fn queue(q: usize) -> Queue {
    let mut queue = Queue::new(QSIZE).unwrap();
    queue.set_size(QSIZE);
    let b = base(q);
    queue.set_desc_table_address(Some(b as u32), Some(0));
    queue.set_avail_ring_address(Some((b + 0x1000) as u32), Some(0));
    queue.set_used_ring_address(Some((b + 0x2000) as u32), Some(0));
    queue.set_ready(true);
    queue
}

/// The state of one input's run.
struct Run<'a> {
    server: FileServer,
    scratch: &'a Scratch,
    /// [`Scratch::snapshot`] before the first request.
    before: BTreeMap<PathBuf, String>,
    mem: GuestMemoryMmap,
    queues: [Queue; 2],
    next_desc: [u16; 2],
    avail_idx: [u16; 2],
    used_seen: [u16; 2],
    data_next: u64,
    unique: u64,
    /// Guest ranges the device may write: reply rooms and raw writable descriptors.
    writable: Vec<(u64, u64)>,
    /// Guest ranges the device must never write (requests), with their content.
    readonly: Vec<(u64, Vec<u8>)>,
    /// A raw chain named an indirect table: any byte, the rings included, may be written, so
    /// neither the used ring nor the memory is checked from then on.
    wild: bool,
    answers: Vec<Answer>,
}

/// A well-laid request as the input describes it.
struct Request {
    header: InHeader,
    body: Vec<u8>,
    reply_len: u16,
    split_reply: bool,
    split_request: Option<u16>,
}

impl Run<'_> {
    fn record(&mut self, input: &mut Input<'_>) {
        match input.u8() % 3 {
            0 => {
                let r = self.request(input);
                self.send(REQUEST_QUEUE, r);
            }
            1 => {
                let r = self.request(input);
                self.send(HIPRIO_QUEUE, r);
            }
            _ => {
                let q = usize::from(input.u8() % 2);
                let n = usize::from(input.u8() % 4) + 1;
                let descs: Vec<_> = (0..n)
                    .map(|_| {
                        (
                            u64::from(input.u32()),
                            input.u32(),
                            input.u16(),
                            input.u16(),
                        )
                    })
                    .collect();
                self.raw(q, &descs);
            }
        }
    }

    /// Reads a request record (see the module doc).
    fn request(&mut self, input: &mut Input<'_>) -> Request {
        let opcode = u32::from(input.u8());
        let node = match input.u8() {
            255 => u64::MAX,
            n => u64::from(n),
        };
        let who = input.u8();
        let bits = input.u8();
        let len_xor = if bits & 1 != 0 { input.u32() } else { 0 };
        let n = usize::from(input.u8());
        let mut body = input.bytes(n).to_vec();
        if opcode == Opcode::Fallocate as u32 && body.len() >= 24 {
            let len = u64::from_le_bytes(body[16..24].try_into().unwrap());
            body[16..24].copy_from_slice(&len.min(MAX_FALLOCATE).to_le_bytes());
        }
        let names = input.u8() % 4;
        for i in 0..names {
            let sel = input.u8();
            if sel < 16 {
                let root = self.scratch.root.to_str().unwrap();
                body.extend(NAMES[usize::from(sel)].replace('@', root).as_bytes());
            } else {
                body.extend(input.bytes(usize::from(sel - 16)));
            }
            if i + 1 < names || bits & 2 == 0 {
                body.push(0);
            }
        }
        let n = usize::from(input.u16());
        body.extend(input.bytes(n));
        let reply_len = input.u16();
        let split_request = (bits & 8 != 0).then(|| input.u16());
        self.unique += 1;
        let len = (std::mem::size_of::<InHeader>() + body.len()) as u32;
        Request {
            header: InHeader {
                len: len ^ len_xor,
                opcode,
                unique: self.unique,
                nodeid: node,
                uid: if who & 1 != 0 { 1000 } else { 0 },
                gid: if who & 2 != 0 { 1000 } else { 0 },
                pid: 1,
                padding: 0,
            },
            body,
            reply_len,
            split_reply: bits & 4 != 0,
            split_request,
        }
    }

    /// Room left for buffers of `bytes` bytes.
    fn room(&self, bytes: u64) -> bool {
        self.data_next + bytes.next_multiple_of(16) + 32 <= MEM_SIZE as u64
    }

    /// Copies `bytes` into a fresh guest buffer; returns its address.
    fn alloc(&mut self, bytes: &[u8]) -> u64 {
        let a = self.data_next;
        self.mem.write_slice(bytes, GuestAddress(a)).unwrap();
        self.data_next += (bytes.len() as u64).max(1).next_multiple_of(16);
        a
    }

    /// Puts a well-laid request on queue `q`, kicks it and checks its reply.
    fn send(&mut self, q: usize, r: Request) {
        let mut req = r.header.as_slice().to_vec();
        req.extend_from_slice(&r.body);
        if !self.room(req.len() as u64 + u64::from(r.reply_len) + 32) {
            return;
        }
        let mut bufs = Vec::new();
        let split = r
            .split_request
            .map_or(req.len(), |s| usize::from(s) % (req.len() + 1));
        for part in [&req[..split], &req[split..]] {
            if part.is_empty() && !bufs.is_empty() {
                continue;
            }
            let a = self.alloc(part);
            self.readonly.push((a, part.to_vec()));
            bufs.push((a, part.len() as u32, false));
        }
        let room = u32::from(r.reply_len);
        let reply = self.alloc(&vec![0u8; room as usize]);
        self.writable.push((reply, u64::from(room)));
        if r.split_reply && room >= 2 {
            bufs.push((reply, room / 2, true));
            bufs.push((reply + u64::from(room / 2), room - room / 2, true));
        } else {
            bufs.push((reply, room, true));
        }
        let head = self.add_chain(q, &bufs);
        let Some(len) = self.kick(q, head) else {
            return;
        };
        assert!(
            len <= room,
            "used length {len} beyond a reply room of {room}"
        );
        let opcode = r.header.opcode;
        let silent = [
            Opcode::Forget,
            Opcode::BatchForget,
            Opcode::Interrupt,
            Opcode::NotifyReply,
        ]
        .iter()
        .any(|&o| o as u32 == opcode);
        if opcode == Opcode::Destroy as u32 && len == 0 && room as usize >= OUT_HEADER {
            // fuse-backend-rs writes DESTROY's reply but reports 0 bytes written (which virtio
            // allows: a device may write more than the used length); the guest reads the
            // header it preallocated.
            let h: OutHeader = self.mem.read_obj(GuestAddress(reply)).unwrap();
            assert_eq!((h.len, h.unique, h.error), (16, r.header.unique, 0));
            self.answers.push(Answer {
                opcode,
                error: Some(0),
            });
            return;
        }
        if (len as usize) < OUT_HEADER {
            assert_eq!(len, 0, "a reply shorter than its header");
            assert!(
                silent || (room as usize) < OUT_HEADER,
                "opcode {opcode} with {room} bytes of room got no reply"
            );
            self.answers.push(Answer {
                opcode,
                error: None,
            });
            return;
        }
        let h: OutHeader = self.mem.read_obj(GuestAddress(reply)).unwrap();
        assert_eq!(h.len, len, "reply header len against the used length");
        assert_eq!(h.unique, r.header.unique, "reply to another request");
        assert!(
            (-4095..=0).contains(&h.error),
            "reply error {} is not 0 or a negative errno",
            h.error
        );
        if h.error != 0 {
            assert_eq!(len as usize, OUT_HEADER, "an error reply carries data");
        }
        self.answers.push(Answer {
            opcode,
            error: Some(h.error),
        });
    }

    /// Puts hostile descriptors on queue `q` and kicks it. Addresses below the data area are
    /// moved up into it, so a chain cannot overwrite the rings (unless through an indirect
    /// table, which makes the run wild).
    fn raw(&mut self, q: usize, descs: &[(u64, u32, u16, u16)]) {
        let descs: Vec<_> = descs
            .iter()
            .map(|&(addr, len, flags, next)| {
                let addr = if addr < DATA_START {
                    addr + DATA_START
                } else {
                    addr
                };
                if flags & F_INDIRECT != 0 {
                    self.wild = true;
                }
                if flags & F_WRITE != 0 {
                    self.writable.push((addr, u64::from(len)));
                }
                (addr, len, flags, next)
            })
            .collect();
        let head = self.add_raw(q, &descs);
        self.kick(q, head);
    }

    /// Writes raw descriptors `(addr, len, flags, next)` at the next free table slots of queue
    /// `q` and publishes the first as a chain head. Returns the head index.
    fn add_raw(&mut self, q: usize, descs: &[(u64, u32, u16, u16)]) -> u16 {
        let head = self.next_desc[q];
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let slot = (head + i as u16) % QSIZE;
            let d = base(q) + u64::from(slot) * 16;
            self.mem.write_obj(addr, GuestAddress(d)).unwrap();
            self.mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(d + 14)).unwrap();
        }
        self.next_desc[q] = (head + descs.len() as u16) % QSIZE;
        let avail = base(q) + 0x1000;
        let idx = self.avail_idx[q];
        self.mem
            .write_obj(head, GuestAddress(avail + 4 + u64::from(idx % QSIZE) * 2))
            .unwrap();
        self.avail_idx[q] = idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[q], GuestAddress(avail + 2))
            .unwrap();
        head
    }

    /// Publishes a well-formed chain of `(addr, len, writable)` buffers on queue `q`.
    fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc[q];
        let n = bufs.len();
        let descs: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(a, l, w))| {
                let mut f = if w { F_WRITE } else { 0 };
                if i + 1 < n {
                    f |= F_NEXT;
                }
                (a, l, f, (head + i as u16 + 1) % QSIZE)
            })
            .collect();
        self.add_raw(q, &descs)
    }

    /// Kicks queue `q` after publishing chain `head`; checks that exactly that chain was used
    /// and the driver notified once, and returns its used length (`None` in a wild run).
    fn kick(&mut self, q: usize, head: u16) -> Option<u32> {
        let mut notified = 0;
        let served = self
            .server
            .process_queue(&self.mem, &mut self.queues[q], &mut || notified += 1);
        let used = self.used(q);
        if self.wild {
            return None;
        }
        served.expect("serve a queue with sane rings");
        assert_eq!(used.len(), 1, "one kick after one chain: used {used:?}");
        assert_eq!(
            used[0].0,
            u32::from(head),
            "used id against the chain's head"
        );
        assert_eq!(
            notified, 1,
            "the driver is notified once per kick that used a chain"
        );
        Some(used[0].1)
    }

    /// New used entries `(id, len)` of queue `q` since the last call.
    fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let used = base(q) + 0x2000;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen[q] != idx && out.len() <= usize::from(QSIZE) {
            let e = used + 4 + u64::from(self.used_seen[q] % QSIZE) * 8;
            out.push((
                self.mem.read_obj(GuestAddress(e)).unwrap(),
                self.mem.read_obj(GuestAddress(e + 4)).unwrap(),
            ));
            self.used_seen[q] = self.used_seen[q].wrapping_add(1);
        }
        out
    }

    /// Checks the host side after a record: nothing outside the share changed or is held open,
    /// and the descriptors the server holds are bounded and counted.
    fn check_host(&self) {
        let now = self.scratch.snapshot();
        if now != self.before {
            let changed: Vec<_> = self
                .before
                .keys()
                .chain(now.keys())
                .filter(|k| self.before.get(*k) != now.get(*k))
                .collect();
            panic!(
                "outside the share changed: {changed:?}\nbefore: {:#?}\nnow: {now:#?}",
                self.before
            );
        }
        let held = self.scratch.fds_under(&self.scratch.root);
        let escaped: Vec<_> = held
            .iter()
            .filter(|p| !p.starts_with(&self.scratch.share))
            .collect();
        assert!(
            escaped.is_empty(),
            "the server holds descriptors outside the share: {escaped:?}"
        );
        let (count, limit) = self.server.held_descriptors();
        assert!(count <= limit, "{count} descriptors held, bound {limit}");
        assert_eq!(
            held.len(),
            count + 1,
            "descriptors into the share against the bound's count (plus the root): {held:?}"
        );
    }

    /// Checks that memory not offered as device-writable kept its content.
    fn check_memory(&self) {
        if self.wild {
            return;
        }
        let overlaps = |a: u64, l: u64| {
            self.writable
                .iter()
                .any(|&(b, m)| a < b.saturating_add(m) && b < a.saturating_add(l))
        };
        for (addr, want) in &self.readonly {
            if overlaps(*addr, want.len() as u64) {
                continue;
            }
            let mut got = vec![0u8; want.len()];
            self.mem.read_slice(&mut got, GuestAddress(*addr)).unwrap();
            assert_eq!(
                &got, want,
                "guest memory at {addr:#x} not offered for writing changed"
            );
        }
    }
}

/// Input builders for the seeds.
mod build {
    use fuse_backend_rs::abi::fuse_abi::Opcode;

    /// A request record on the request queue: `op` on `node` with fixed arguments `args`,
    /// `names` (each a selector, see [`super::NAMES`], or [`lit`]), `data`, and 64 KiB of
    /// reply room.
    pub fn req(op: Opcode, node: u8, args: &[u8], names: &[Vec<u8>], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, op as u8, node, 0, 0, args.len() as u8];
        v.extend(args);
        v.push(names.len() as u8);
        v.extend(names.concat());
        v.extend((data.len() as u16).to_le_bytes());
        v.extend(data);
        v.extend(0xfff0u16.to_le_bytes());
        v
    }

    /// Name selector `i` of [`super::NAMES`].
    pub fn n(i: u8) -> Vec<u8> {
        vec![i]
    }

    /// A name selector for a literal name.
    pub fn lit(name: &str) -> Vec<u8> {
        let mut v = vec![16 + name.len() as u8];
        v.extend(name.as_bytes());
        v
    }
}

/// The seeds checked into `fuzz/corpus/fs_requests/`, by name.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use build::{lit, n, req};
    use fuse_backend_rs::abi::fuse_abi::{
        CreateIn, FsOptions, GetattrIn, GetxattrIn, InitIn, MkdirIn, OpenIn, ReadIn, ReleaseIn,
        RenameIn, SetxattrIn, WriteIn,
    };
    use Opcode::*;

    let init = req(
        Init,
        0,
        InitIn {
            major: 7,
            minor: 31,
            max_readahead: 0x20000,
            flags: (FsOptions::BIG_WRITES | FsOptions::MAX_PAGES | FsOptions::DO_READDIRPLUS).bits()
                as u32,
        }
        .as_slice(),
        &[],
        &[],
    );
    let getattr = GetattrIn::default();
    let with = |mut v: Vec<u8>, more: &[Vec<u8>]| {
        for m in more {
            v.extend(m);
        }
        v
    };
    let open = |flags: i32| OpenIn {
        flags: flags as u32,
        fuse_flags: 0,
    };
    let read = ReadIn {
        fh: 1,
        offset: 0,
        size: 4096,
        ..Default::default()
    };
    let create = CreateIn {
        flags: (libc::O_RDWR | libc::O_CREAT) as u32,
        mode: libc::S_IFREG | 0o644,
        umask: 0o022,
        fuse_flags: 0,
    };
    let data = b"written by the guest";
    let write = WriteIn {
        fh: 1,
        offset: 0,
        size: data.len() as u32,
        ..Default::default()
    };
    let release = ReleaseIn {
        fh: 1,
        ..Default::default()
    };

    // Node 2 is the first inode the server hands out, 3 the next.
    let lookup_getattr = with(
        init.clone(),
        &[
            req(Lookup, 1, &[], &[n(0)], &[]),
            req(Getattr, 2, getattr.as_slice(), &[], &[]),
            req(Open, 2, open(libc::O_RDONLY).as_slice(), &[], &[]),
            req(Read, 2, read.as_slice(), &[], &[]),
            req(Release, 2, release.as_slice(), &[], &[]),
            req(Lookup, 1, &[], &[n(1)], &[]),
            req(Opendir, 3, open(libc::O_RDONLY).as_slice(), &[], &[]),
            req(
                Readdir,
                3,
                ReadIn {
                    fh: 2,
                    size: 4096,
                    ..Default::default()
                }
                .as_slice(),
                &[],
                &[],
            ),
        ],
    );
    let mkdir_create = with(
        init.clone(),
        &[
            req(
                Mkdir,
                1,
                MkdirIn {
                    mode: 0o755,
                    umask: 0o022,
                }
                .as_slice(),
                &[lit("dir")],
                &[],
            ),
            req(Create, 2, create.as_slice(), &[lit("file")], &[]),
            req(Write, 3, write.as_slice(), &[], data),
            req(Read, 3, read.as_slice(), &[], &[]),
            req(Release, 3, release.as_slice(), &[], &[]),
            req(Opendir, 2, open(libc::O_RDONLY).as_slice(), &[], &[]),
            req(
                Readdirplus,
                2,
                ReadIn {
                    fh: 2,
                    size: 4096,
                    ..Default::default()
                }
                .as_slice(),
                &[],
                &[],
            ),
        ],
    );
    let xattrs = with(
        init.clone(),
        &[
            req(Lookup, 1, &[], &[n(0)], &[]),
            req(
                Setxattr,
                2,
                SetxattrIn { size: 5, flags: 0 }.as_slice(),
                &[lit("user.vessel")],
                b"value",
            ),
            req(
                Getxattr,
                2,
                GetxattrIn {
                    size: 64,
                    padding: 0,
                }
                .as_slice(),
                &[lit("user.vessel")],
                &[],
            ),
            req(
                Listxattr,
                2,
                GetxattrIn {
                    size: 256,
                    padding: 0,
                }
                .as_slice(),
                &[],
                &[],
            ),
            req(Removexattr, 2, &[], &[lit("user.vessel")], &[]),
        ],
    );
    let rename_unlink = with(
        init.clone(),
        &[
            req(Create, 1, create.as_slice(), &[lit("old")], &[]),
            req(
                Rename,
                1,
                RenameIn { newdir: 1 }.as_slice(),
                &[lit("old"), n(3)],
                &[],
            ),
            req(Unlink, 1, &[], &[n(3)], &[]),
            req(Rmdir, 1, &[], &[n(1)], &[]),
        ],
    );
    // The ways out the guest might try: `..` of the root, names with `/`, a host symlink that
    // points out, the guest's own symlinks to absolute paths, renames and links across.
    let escapes = with(
        init.clone(),
        &[
            req(Lookup, 1, &[], &[n(5)], &[]),
            req(Lookup, 1, &[], &[n(8)], &[]),
            req(Lookup, 1, &[], &[n(9)], &[]),
            req(Create, 1, create.as_slice(), &[n(7)], &[]),
            req(Lookup, 1, &[], &[n(2)], &[]),
            req(
                Open,
                2,
                open(libc::O_RDWR | libc::O_TRUNC).as_slice(),
                &[],
                &[],
            ),
            req(Readlink, 2, &[], &[], &[]),
            req(Symlink, 1, &[], &[lit("pw"), n(11)], &[]),
            req(Open, 3, open(libc::O_RDONLY).as_slice(), &[], &[]),
            req(Symlink, 1, &[], &[lit("can"), n(9)], &[]),
            req(
                Open,
                4,
                open(libc::O_WRONLY | libc::O_TRUNC).as_slice(),
                &[],
                &[],
            ),
            req(
                Rename,
                1,
                RenameIn { newdir: 1 }.as_slice(),
                &[n(0), n(8)],
                &[],
            ),
            req(Link, 1, 2u64.to_le_bytes().as_slice(), &[n(7)], &[]),
            req(
                Mkdir,
                1,
                MkdirIn {
                    mode: 0o755,
                    umask: 0,
                }
                .as_slice(),
                &[n(10)],
                &[],
            ),
        ],
    );
    // Requests the server cannot decode, and a FORGET on the high-priority queue.
    let mut broken = with(
        init,
        &[
            req(Write, 1, &[0; 4], &[], &[]),
            req(Lookup, 1, &[], &[n(0)], &[]),
        ],
    );
    let mut forget = req(Forget, 2, &1u64.to_le_bytes(), &[], &[]);
    forget[0] = 1;
    broken.extend(forget);
    broken.extend([2, 1, 1]);
    broken.extend(0x10_0000u32.to_le_bytes());
    broken.extend(64u32.to_le_bytes());
    broken.extend([1, 0, 0, 0]);
    broken.extend(0x3f_ff00u32.to_le_bytes());
    broken.extend(4096u32.to_le_bytes());
    broken.extend([2, 0, 0, 0]);
    vec![
        ("lookup-getattr-read-readdir", lookup_getattr),
        ("mkdir-create-write-read", mkdir_create),
        ("xattrs", xattrs),
        ("rename-unlink", rename_unlink),
        ("escapes", escapes),
        ("broken-requests", broken),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_protocol::fuzzing::XorShift;

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/fs_requests")
    }

    fn corpus() -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
            .expect("fuzz/corpus/fs_requests is checked in")
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read(p).expect("read corpus file"))
            .collect()
    }

    fn errors(answers: &[Answer]) -> Vec<(u32, Option<i32>)> {
        answers.iter().map(|a| (a.opcode, a.error)).collect()
    }

    #[test]
    fn seed_corpus_is_checked_in_and_passes() {
        let corpus = corpus();
        for (name, seed) in seeds() {
            assert!(
                corpus.contains(&seed),
                "seed {name} missing from {}; run `cargo test -p vessel-devices -- --ignored write_fs_seed_corpus`",
                corpus_dir().display()
            );
        }
        for input in &corpus {
            check_fs(input);
        }
        let got: BTreeMap<_, _> = seeds()
            .into_iter()
            .map(|(name, seed)| (name, errors(&check_fs(&seed))))
            .collect();
        let ok = |ops: &[Opcode]| -> Vec<_> { ops.iter().map(|&o| (o as u32, Some(0))).collect() };
        use Opcode::*;
        assert_eq!(
            got["lookup-getattr-read-readdir"],
            ok(&[Init, Lookup, Getattr, Open, Read, Release, Lookup, Opendir, Readdir])
        );
        assert_eq!(
            got["mkdir-create-write-read"],
            ok(&[
                Init,
                Mkdir,
                Create,
                Write,
                Read,
                Release,
                Opendir,
                Readdirplus
            ])
        );
        assert_eq!(
            got["rename-unlink"],
            ok(&[Init, Create, Rename, Unlink, Rmdir])
        );
        // A scratch file system without user xattrs (tmpfs before Linux 6.6) refuses them.
        let xattrs = &got["xattrs"];
        assert_eq!(xattrs[..2], ok(&[Init, Lookup]));
        assert!(
            xattrs[2..].iter().all(|&(_, e)| e == Some(0))
                || xattrs[2] == (Setxattr as u32, Some(-libc::EOPNOTSUPP)),
            "{xattrs:?}"
        );
        let (einval, ebadf) = (Some(-libc::EINVAL), Some(-libc::EBADF));
        let escapes: Vec<(Opcode, Option<i32>)> = vec![
            (Init, Some(0)),
            (Lookup, Some(0)), // ".." of the root: the root
            (Lookup, einval),  // "../outside/canary"
            (Lookup, einval),  // its absolute path
            (Create, einval),  // "../outside"
            (Lookup, Some(0)), // "up", the host's symlink out
            (Open, ebadf),     // never opened on the host
            (Readlink, Some(0)),
            (Symlink, Some(0)), // "pw" -> /etc/passwd
            (Open, ebadf),
            (Symlink, Some(0)), // "can" -> the canary's absolute path
            (Open, ebadf),
            (Rename, einval),
            (Link, einval),
            (Mkdir, einval),
        ];
        let escapes: Vec<_> = escapes.into_iter().map(|(o, e)| (o as u32, e)).collect();
        assert_eq!(got["escapes"], escapes);
        let broken: Vec<_> = [
            (Init, Some(0)),
            (Write, Some(-libc::EIO)),
            (Lookup, Some(0)),
            (Forget, None),
        ]
        .into_iter()
        .map(|(o, e)| (o as u32, e))
        .collect();
        assert_eq!(got["broken-requests"], broken);
    }

    #[test]
    fn mutated_corpus_keeps_invariants() {
        let corpus = corpus();
        let mut rng = XorShift(0x0000_f5f5_eed0_0001);
        for i in 0..1000 {
            let input = rng.mutate(&corpus[i % corpus.len()]);
            check_fs(&input);
        }
    }

    #[test]
    #[ignore = "writes the seed corpus into fuzz/corpus; run by hand after changing seeds()"]
    fn write_fs_seed_corpus() {
        std::fs::create_dir_all(corpus_dir()).unwrap();
        for (name, seed) in seeds() {
            std::fs::write(corpus_dir().join(format!("seed-{name}")), seed).unwrap();
        }
    }
}
