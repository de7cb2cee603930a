//! The bound on the descriptors a file server holds for its guest.
//!
//! `PassthroughFs` keeps an `O_PATH` descriptor for every inode the guest holds a lookup count
//! on (from LOOKUP, CREATE, MKNOD, MKDIR, SYMLINK, LINK and each entry of READDIRPLUS) until the
//! guest FORGETs it, and one descriptor for every handle from OPEN, OPENDIR and CREATE until the
//! guest RELEASEs it. Unbounded, a guest that looks up millions of names would take the whole
//! `RLIMIT_NOFILE` of the monitor (which `vessel-vmm` raises to a million for this) and pin as
//! many host inodes and dentries in host kernel memory, and the monitor's own sockets would then
//! fail with `EMFILE`.
//!
//! [`Bounded`] wraps the passthrough file system and counts exactly what it holds: the inodes
//! with a lookup count (mirroring the counts the way `PassthroughFs` keeps them) plus the open
//! handles. A request that would take the count past the limit is answered `EMFILE` (by the
//! FUSE server: a reply header of 16 bytes with the request's `unique`), and the file system is
//! left as it was:
//!
//! - MKDIR, MKNOD, SYMLINK, LINK (one descriptor), CREATE (two), OPEN and OPENDIR (one) are
//!   refused before they reach the host file system, so nothing is created on the host;
//! - a LOOKUP is served, and if it found an inode not held yet while the limit is reached, that
//!   inode is forgotten again (its descriptor closed) and the answer is `EMFILE`. A LOOKUP of an
//!   inode the guest already holds (the kernel revalidating a cached name) still succeeds;
//! - a READDIRPLUS lists entries until the first one whose inode would pass the limit, and ends
//!   the listing there as if the reply buffer were full (the guest asks again from that offset);
//!   a listing that cannot hold even one entry is answered `EMFILE`;
//! - FORGET, BATCH_FORGET, RELEASE and RELEASEDIR are never refused: they are how the guest
//!   gets back under the limit (the Linux driver forgets inodes as its caches shrink, or at
//!   once on `echo 2 > /proc/sys/vm/drop_caches`).
//!
//! The count is kept per file server, and a container has one share, so the bound is per
//! container. It is [`MAX_HELD_DESCRIPTORS`], or half the monitor's `RLIMIT_NOFILE` when that is
//! lower (the limit could not be raised), so the monitor always keeps descriptors for itself.
//! No system call is made for the count: it is the mirror of what the requests returned.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64, CreateIn};
use fuse_backend_rs::abi::virtio_fs::RemovemappingOne;
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions,
    SetattrValid, ZeroCopyReader, ZeroCopyWriter, ROOT_ID,
};
use fuse_backend_rs::api::validate_path_component;
use fuse_backend_rs::passthrough::PassthroughFs;
use fuse_backend_rs::transport::FsCacheReqHandler;

/// Most descriptors a file server holds for its guest (inodes looked up plus open handles).
///
/// The Linux driver keeps an inode looked up for as long as it caches it, and it shrinks its
/// caches only under memory pressure, so the bound must cover what a workload walks in one go:
/// `find /` over a large distribution image, or a `node_modules` or source tree, reaches tens of
/// thousands of inodes. 65,536 covers that, while holding the worst case to a small share of the
/// raised `RLIMIT_NOFILE` (a million) and to roughly 100 MiB of pinned host kernel memory
/// (a `struct file`, a dentry and an inode per descriptor).
pub const MAX_HELD_DESCRIPTORS: usize = 65_536;

/// The bound for a file server of this process: [`MAX_HELD_DESCRIPTORS`], or half the soft
/// `RLIMIT_NOFILE` when that is lower. Read when the server opens, after the builder has raised
/// the limit.
pub fn default_limit() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let half = usize::try_from(soft / 2).unwrap_or(usize::MAX);
    MAX_HELD_DESCRIPTORS.min(half)
}

/// What the wrapped file system holds for the guest.
#[derive(Default)]
struct Held {
    /// Lookup count of every inode the guest holds (the root, always held, is not counted).
    inodes: HashMap<u64, u64>,
    /// Open file and directory handles, each with the open flags `PassthroughFs` keeps for it
    /// (see [`Bounded::kept_flags`]).
    handles: HashMap<u64, u32>,
}

impl Held {
    fn descriptors(&self) -> usize {
        self.inodes.len() + self.handles.len()
    }

    /// Counts one lookup of `inode` (a new entry holds a descriptor).
    fn look_up(&mut self, inode: u64) {
        if inode != ROOT_ID && inode != 0 {
            *self.inodes.entry(inode).or_insert(0) += 1;
        }
    }

    /// Whether `inode` already holds a descriptor.
    fn holds(&self, inode: u64) -> bool {
        inode == ROOT_ID || inode == 0 || self.inodes.contains_key(&inode)
    }

    /// As `PassthroughFs::forget_one`: the count drops, saturating, and the inode goes at 0.
    fn forget(&mut self, inode: u64, count: u64) {
        if let Some(n) = self.inodes.get_mut(&inode) {
            *n = n.saturating_sub(count);
            if *n == 0 {
                self.inodes.remove(&inode);
            }
        }
    }
}

/// `PassthroughFs` with a bound on the descriptors it holds (see the module doc).
pub struct Bounded {
    fs: PassthroughFs<()>,
    limit: usize,
    held: Mutex<Held>,
}

fn emfile() -> io::Error {
    io::Error::from_raw_os_error(libc::EMFILE)
}

impl Bounded {
    /// `fs`, holding at most `limit` descriptors for the guest.
    pub fn new(fs: PassthroughFs<()>, limit: usize) -> Bounded {
        Bounded {
            fs,
            limit,
            held: Mutex::new(Held::default()),
        }
    }

    /// The wrapped file system.
    pub fn inner(&self) -> &PassthroughFs<()> {
        &self.fs
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Descriptors held for the guest now.
    pub fn held(&self) -> usize {
        self.lock().descriptors()
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `EMFILE` unless `n` more descriptors fit under the bound.
    fn reserve(&self, n: usize) -> io::Result<()> {
        if self.lock().descriptors() + n > self.limit {
            return Err(emfile());
        }
        Ok(())
    }

    /// Counts the entry a creating request returned.
    fn entry(&self, r: io::Result<Entry>) -> io::Result<Entry> {
        let e = r?;
        self.lock().look_up(e.inode);
        Ok(e)
    }

    /// Counts the handle an open returned, opened with `flags` as `PassthroughFs` keeps them.
    fn handle(&self, h: Option<u64>, flags: u32) {
        if let Some(h) = h {
            self.lock().handles.insert(h, flags);
        }
    }

    /// Uncounts `handle` when a release closed it.
    fn released(&self, handle: u64, r: io::Result<()>) -> io::Result<()> {
        r?;
        self.lock().handles.remove(&handle);
        Ok(())
    }

    /// The flags `handle` was opened with, which READ and WRITE pass on instead of the
    /// guest's.
    ///
    /// `PassthroughFs::read` and `write` (fuse-backend-rs 0.14) wrap the handle's descriptor in
    /// a `File` of their own to borrow it, and call `fcntl(F_SETFL)` with the request's flags
    /// when they differ from the open flags before they protect that `File` from being dropped.
    /// When `fcntl` fails (the guest's flags ask for `O_DIRECT` where the host file system has
    /// none, `EINVAL`; the handle was opened `O_PATH`, `EBADF`; `O_APPEND` cleared on an
    /// append-only file, `EPERM`) the early return drops it and closes the handle's descriptor,
    /// which the handle still names: the number is reused by the monitor's next descriptor
    /// (another file, a socket, the disk image), and the guest's READs and WRITEs on the handle
    /// then go there, and the handle's RELEASE closes it (found by the `fs_requests` fuzz
    /// target; test `read_and_write_flags_the_host_refuses_never_close_the_handle`). With the
    /// open flags, the flags never differ and `fcntl` is never called. The guest loses nothing:
    /// FUSE gives every READ and WRITE its offset, and its `O_APPEND` and `O_NONBLOCK` act in
    /// the guest kernel.
    fn kept_flags(&self, handle: u64) -> io::Result<u32> {
        self.lock()
            .handles
            .get(&handle)
            .copied()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }
}

impl Bounded {
    /// CREATE of a name that exists, whose inode `e` was just looked up: `open(2)` with
    /// `O_CREAT` of an existing file, so `EEXIST` with `O_EXCL`, otherwise an open of it. The
    /// lookup becomes the reply's entry when the open succeeds and is given back when it fails.
    ///
    /// `PassthroughFs::create` (fuse-backend-rs 0.14) looks such a name up too, and then opens
    /// it, but when that open fails (a directory opened for writing: `EISDIR`; a symlink, FIFO,
    /// socket or device: `EBADF`) it returns the error and keeps the lookup. The guest, told the
    /// request failed, never FORGETs an inode it was not given, so its descriptor stayed open
    /// and uncounted: a guest that makes directories, CREATEs each name once and FORGETs them
    /// held descriptors past any bound (found by the `fs_requests` fuzz target; test
    /// `a_create_over_an_existing_directory_holds_nothing`).
    fn open_existing(
        &self,
        ctx: &Context,
        e: Entry,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        let flags = args.flags & !(libc::O_CREAT | libc::O_EXCL) as u32;
        let opened = if args.flags & libc::O_EXCL as u32 != 0 {
            Err(io::Error::from_raw_os_error(libc::EEXIST))
        } else {
            self.fs.open(ctx, e.inode, flags, args.fuse_flags)
        };
        match opened {
            Ok((handle, opts, passthrough)) => {
                self.lock().look_up(e.inode);
                self.handle(handle, flags);
                Ok((e, handle, opts, passthrough))
            }
            Err(err) => {
                self.fs.forget(ctx, e.inode, 1);
                Err(err)
            }
        }
    }
}

impl FileSystem for Bounded {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        self.fs.init(capable)
    }

    /// The file system drops every inode and handle: so does the count.
    fn destroy(&self) {
        self.fs.destroy();
        *self.lock() = Held::default();
    }

    fn statfs(&self, ctx: &Context, inode: u64) -> io::Result<statvfs64> {
        self.fs.statfs(ctx, inode)
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        let e = self.fs.lookup(ctx, parent, name)?;
        let mut held = self.lock();
        if !held.holds(e.inode) && held.descriptors() >= self.limit {
            drop(held);
            self.fs.forget(ctx, e.inode, 1);
            return Err(emfile());
        }
        held.look_up(e.inode);
        Ok(e)
    }

    fn forget(&self, ctx: &Context, inode: u64, count: u64) {
        self.fs.forget(ctx, inode, count);
        self.lock().forget(inode, count);
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
        {
            let mut held = self.lock();
            for &(inode, count) in &requests {
                held.forget(inode, count);
            }
        }
        self.fs.batch_forget(ctx, requests);
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        self.reserve(1)?;
        let r = self.fs.opendir(ctx, inode, flags)?;
        self.handle(r.0, flags | libc::O_DIRECTORY as u32);
        Ok(r)
    }

    fn releasedir(&self, ctx: &Context, inode: u64, flags: u32, handle: u64) -> io::Result<()> {
        self.released(handle, self.fs.releasedir(ctx, inode, flags, handle))
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.reserve(1)?;
        self.entry(self.fs.mkdir(ctx, parent, name, mode, umask))
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.fs.rmdir(ctx, parent, name)
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry<'_>) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.fs.readdir(ctx, inode, handle, size, offset, add_entry)
    }

    /// Each entry's lookup is counted once the server has taken it; the listing ends at the
    /// first new inode past the bound (see the module doc).
    fn readdirplus(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry<'_>, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let (mut listed, mut refused) = (0usize, false);
        let mut bounded = |d: DirEntry<'_>, e: Entry| {
            let ino = e.inode;
            {
                let held = self.lock();
                if !held.holds(ino) && held.descriptors() >= self.limit {
                    refused = true;
                    // 0 is "no room": `PassthroughFs` forgets the lookup it made and stops.
                    return Ok(0);
                }
            }
            let r = add_entry(d, e);
            // Taken, or lost on the way to the guest: either way the lookup stays held.
            if !matches!(r, Ok(0)) {
                self.lock().look_up(ino);
                listed += 1;
            }
            r
        };
        self.fs
            .readdirplus(ctx, inode, handle, size, offset, &mut bounded)?;
        if refused && listed == 0 {
            return Err(emfile());
        }
        Ok(())
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        self.reserve(1)?;
        let r = self.fs.open(ctx, inode, flags, fuse_flags)?;
        self.handle(r.0, flags);
        Ok(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn release(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        handle: u64,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.released(
            handle,
            self.fs
                .release(ctx, inode, flags, handle, flush, flock_release, lock_owner),
        )
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.reserve(2)?;
        validate_path_component(name)?;
        // An existing name is opened here, not by `PassthroughFs::create`: see
        // [`Bounded::open_existing`].
        if let Ok(e) = self.fs.lookup(ctx, parent, name) {
            return self.open_existing(ctx, e, args);
        }
        let r = self.fs.create(ctx, parent, name, args)?;
        self.lock().look_up(r.0.inode);
        self.handle(r.1, args.flags);
        Ok(r)
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.fs.unlink(ctx, parent, name)
    }

    #[allow(clippy::too_many_arguments)]
    fn setupmapping(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        foffset: u64,
        len: u64,
        flags: u64,
        moffset: u64,
        vu_req: &mut dyn FsCacheReqHandler,
    ) -> io::Result<()> {
        self.fs
            .setupmapping(ctx, inode, handle, foffset, len, flags, moffset, vu_req)
    }

    fn removemapping(
        &self,
        ctx: &Context,
        inode: u64,
        requests: Vec<RemovemappingOne>,
        vu_req: &mut dyn FsCacheReqHandler,
    ) -> io::Result<()> {
        self.fs.removemapping(ctx, inode, requests, vu_req)
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        _flags: u32,
    ) -> io::Result<usize> {
        let flags = self.kept_flags(handle)?;
        self.fs
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        _flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        let flags = self.kept_flags(handle)?;
        self.fs.write(
            ctx,
            inode,
            handle,
            r,
            size,
            offset,
            lock_owner,
            delayed_write,
            flags,
            fuse_flags,
        )
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        self.fs.getattr(ctx, inode, handle)
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        attr: stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        self.fs.setattr(ctx, inode, attr, handle, valid)
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.fs.rename(ctx, olddir, oldname, newdir, newname, flags)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.reserve(1)?;
        self.entry(self.fs.mknod(ctx, parent, name, mode, rdev, umask))
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.reserve(1)?;
        self.entry(self.fs.link(ctx, inode, newparent, newname))
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.reserve(1)?;
        self.entry(self.fs.symlink(ctx, linkname, parent, name))
    }

    fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.fs.readlink(ctx, inode)
    }

    fn flush(&self, ctx: &Context, inode: u64, handle: u64, lock_owner: u64) -> io::Result<()> {
        self.fs.flush(ctx, inode, handle, lock_owner)
    }

    fn fsync(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.fs.fsync(ctx, inode, datasync, handle)
    }

    fn fsyncdir(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.fs.fsyncdir(ctx, inode, datasync, handle)
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        self.fs.access(ctx, inode, mask)
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.fs.setxattr(ctx, inode, name, value, flags)
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.fs.getxattr(ctx, inode, name, size)
    }

    fn listxattr(&self, ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        self.fs.listxattr(ctx, inode, size)
    }

    fn removexattr(&self, ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
        self.fs.removexattr(ctx, inode, name)
    }

    fn fallocate(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.fs.fallocate(ctx, inode, handle, mode, offset, length)
    }

    fn lseek(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.fs.lseek(ctx, inode, handle, offset, whence)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use fuse_backend_rs::abi::fuse_abi::{
        Dirent, EntryOut, ForgetIn, InitIn, MkdirIn, OpenIn, OpenOut, OutHeader, ReadIn, ReleaseIn,
        WriteIn,
    };
    use virtio_queue::Queue;
    use vm_memory::ByteValued;

    use super::super::test_utils::{cname, create_args, obj, Driver};
    use super::super::FileServer;

    const LOOKUP: u32 = 1;
    const FORGET: u32 = 2;
    const MKDIR: u32 = 9;
    const OPEN: u32 = 14;
    const RELEASE: u32 = 18;
    const RELEASEDIR: u32 = 29;
    const INIT: u32 = 26;
    const OPENDIR: u32 = 27;
    const CREATE: u32 = 35;
    const READDIRPLUS: u32 = 44;
    const ROOT: u64 = 1;

    /// A file server driven synchronously on the calling thread: each request is posted, the
    /// queue served, the reply read back.
    struct Direct {
        server: FileServer,
        d: Driver,
        q: Queue,
    }

    impl Direct {
        fn new(dir: &Path, limit: usize) -> Direct {
            let server = FileServer::open_bounded(dir, limit).unwrap();
            let d = Driver::new();
            let q = d.queue();
            let mut s = Direct { server, d, q };
            let init = InitIn {
                major: 7,
                minor: 31,
                max_readahead: 0x20000,
                flags: 0,
            };
            assert_eq!(s.call(INIT, 0, init.as_slice()).0.error, 0);
            s
        }

        fn serve(&mut self) -> u32 {
            self.server
                .process_queue(self.d.mem, &mut self.q, &mut || {})
                .unwrap();
            self.d.wait_used()
        }

        fn call(&mut self, op: u32, node: u64, args: &[u8]) -> (OutHeader, Vec<u8>) {
            let (unique, at) = self.d.post(op, node, args);
            let len = self.serve();
            let (h, body) = self.d.reply(at, len);
            assert_eq!((h.unique, h.len), (unique, len));
            (h, body)
        }

        /// The error of a reply that must be a bare header.
        fn error(&mut self, op: u32, node: u64, args: &[u8]) -> i32 {
            let (h, body) = self.call(op, node, args);
            assert!(body.is_empty() || h.error == 0, "error reply with a body");
            -h.error
        }

        fn lookup(&mut self, parent: u64, name: &str) -> Result<u64, i32> {
            let (h, body) = self.call(LOOKUP, parent, &cname(name));
            if h.error != 0 {
                assert_eq!(h.len, 16, "error reply is a bare header");
                return Err(-h.error);
            }
            Ok(obj::<EntryOut>(&body).nodeid)
        }

        fn forget(&mut self, node: u64, nlookup: u64) {
            self.d.post(FORGET, node, ForgetIn { nlookup }.as_slice());
            assert_eq!(self.serve(), 0, "FORGET gets no reply");
        }

        fn open(&mut self, op: u32, node: u64) -> Result<u64, i32> {
            let args = OpenIn {
                flags: libc::O_RDONLY as u32,
                fuse_flags: 0,
            };
            let (h, body) = self.call(op, node, args.as_slice());
            if h.error != 0 {
                return Err(-h.error);
            }
            Ok(obj::<OpenOut>(&body).fh)
        }

        /// RELEASE or RELEASEDIR (`op`) of handle `fh`.
        fn release(&mut self, op: u32, node: u64, fh: u64) {
            let args = ReleaseIn {
                fh,
                ..Default::default()
            };
            assert_eq!(self.error(op, node, args.as_slice()), 0);
        }

        /// READDIRPLUS of `fh` from `offset`: the names listed and the offset after each.
        fn readdirplus(
            &mut self,
            node: u64,
            fh: u64,
            offset: u64,
        ) -> Result<Vec<(String, u64)>, i32> {
            let args = ReadIn {
                fh,
                offset,
                size: 4096,
                ..Default::default()
            };
            let (h, body) = self.call(READDIRPLUS, node, args.as_slice());
            if h.error != 0 {
                return Err(-h.error);
            }
            let mut listed = Vec::new();
            let mut at = 0;
            while at < body.len() {
                at += std::mem::size_of::<EntryOut>();
                let d: Dirent = obj(&body[at..]);
                at += std::mem::size_of::<Dirent>();
                let name = &body[at..at + d.namelen as usize];
                listed.push((String::from_utf8_lossy(name).into_owned(), d.off));
                at += (d.namelen as usize).next_multiple_of(8);
            }
            Ok(listed)
        }

        fn held(&self) -> usize {
            self.server.held_descriptors().0
        }
    }

    /// Runs `f` on a thread with a `fs_struct` of its own: `PassthroughFs` clears the umask of
    /// the thread that opens it, which would otherwise be the whole test process's.
    fn on_own_fs_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
            f();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn lookups_past_the_bound_get_emfile_until_the_guest_forgets() {
        on_own_fs_thread(|| {
            let dir = tempfile::tempdir().unwrap();
            for f in ["a", "b", "c", "d"] {
                std::fs::write(dir.path().join(f), f).unwrap();
            }
            let mut s = Direct::new(dir.path(), 3);
            assert_eq!(s.server.held_descriptors(), (0, 3));
            let a = s.lookup(ROOT, "a").unwrap();
            let b = s.lookup(ROOT, "b").unwrap();
            let c = s.lookup(ROOT, "c").unwrap();
            assert_eq!(s.held(), 3);
            // A fourth inode is refused, and the descriptor the lookup opened is closed again.
            assert_eq!(s.lookup(ROOT, "d"), Err(libc::EMFILE));
            assert_eq!(s.held(), 3);
            // An inode the guest holds is looked up again (a cached name revalidated).
            assert_eq!(s.lookup(ROOT, "a"), Ok(a));
            assert_eq!(s.held(), 3);
            // Nothing that creates is let through, and nothing lands on the host.
            let mut mkdir = MkdirIn {
                mode: 0o755,
                umask: 0,
            }
            .as_slice()
            .to_vec();
            mkdir.extend_from_slice(&cname("newdir"));
            assert_eq!(s.error(MKDIR, ROOT, &mkdir), libc::EMFILE);
            let create = create_args("newfile", 0o644);
            assert_eq!(s.error(CREATE, ROOT, &create), libc::EMFILE);
            assert!(!dir.path().join("newdir").exists());
            assert!(!dir.path().join("newfile").exists());
            assert_eq!(s.open(OPEN, b), Err(libc::EMFILE));
            // Forgetting `a` (looked up twice) makes room for `d`.
            s.forget(a, 1);
            assert_eq!(s.held(), 3, "a is still held once");
            assert_eq!(s.lookup(ROOT, "d"), Err(libc::EMFILE));
            s.forget(a, 1);
            assert_eq!(s.held(), 2);
            let d = s.lookup(ROOT, "d").unwrap();
            assert_eq!(s.held(), 3);
            // An open handle takes a descriptor too; releasing it gives it back.
            s.forget(c, 1);
            let fh = s.open(OPEN, b).unwrap();
            assert_eq!(s.held(), 3);
            assert_eq!(s.lookup(ROOT, "c"), Err(libc::EMFILE));
            s.release(RELEASE, b, fh);
            assert_eq!(s.held(), 2);
            assert!(s.lookup(ROOT, "c").is_ok());
            // A create needs two (the inode and the handle).
            s.forget(d, 1);
            assert_eq!(s.error(CREATE, ROOT, &create), libc::EMFILE);
            s.forget(b, 1);
            assert_eq!(s.error(CREATE, ROOT, &create), 0);
            assert!(dir.path().join("newfile").exists());
            assert_eq!(s.held(), 3);
        });
    }

    /// Descriptors of this process open on `dir` or below it.
    fn fds_under(dir: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|p| p.starts_with(dir))
            .count()
    }

    #[test]
    fn a_create_over_an_existing_directory_holds_nothing() {
        on_own_fs_thread(|| {
            let tmp = tempfile::tempdir().unwrap();
            let dir = std::fs::canonicalize(tmp.path()).unwrap();
            let mut s = Direct::new(&dir, 3);
            // A directory made, CREATEd over (it cannot be opened for writing) and forgotten,
            // again and again: nothing stays held, on the count or on the host.
            for i in 0..8 {
                let name = format!("d{i}");
                let mut mkdir = MkdirIn {
                    mode: 0o755,
                    umask: 0,
                }
                .as_slice()
                .to_vec();
                mkdir.extend_from_slice(&cname(&name));
                let (h, body) = s.call(MKDIR, ROOT, &mkdir);
                assert_eq!(h.error, 0);
                let node = obj::<EntryOut>(&body).nodeid;
                assert_eq!(
                    s.error(CREATE, ROOT, &create_args(&name, 0o644)),
                    libc::EISDIR
                );
                assert_eq!(s.held(), 1);
                s.forget(node, 1);
                assert_eq!(s.held(), 0);
                assert_eq!(fds_under(&dir), 1, "only the root is held open");
            }
            // A symlink is never opened on the host, and its lookup is given back too.
            std::os::unix::fs::symlink("/etc/passwd", dir.join("pw")).unwrap();
            assert_eq!(
                s.error(CREATE, ROOT, &create_args("pw", 0o644)),
                libc::EBADF
            );
            assert_eq!((s.held(), fds_under(&dir)), (0, 1));
            // An existing file is opened (O_EXCL refused), with the inode and the handle counted.
            std::fs::write(dir.join("f"), "f").unwrap();
            let mut excl = create_args("f", 0o644);
            excl[0..4].copy_from_slice(
                &((libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32).to_le_bytes(),
            );
            assert_eq!(s.error(CREATE, ROOT, &excl), libc::EEXIST);
            assert_eq!((s.held(), fds_under(&dir)), (0, 1));
            assert_eq!(s.error(CREATE, ROOT, &create_args("f", 0o644)), 0);
            assert_eq!((s.held(), fds_under(&dir)), (2, 3));
            assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"f", "not truncated");
        });
    }

    #[test]
    fn read_and_write_flags_the_host_refuses_never_close_the_handle() {
        const READ: u32 = 15;
        const WRITE: u32 = 16;
        on_own_fs_thread(|| {
            let tmp = tempfile::tempdir().unwrap();
            let dir = std::fs::canonicalize(tmp.path()).unwrap();
            std::fs::write(dir.join("f"), "f").unwrap();
            let mut s = Direct::new(&dir, 16);
            let node = s.lookup(ROOT, "f").unwrap();
            // An O_PATH handle, on which fcntl(F_SETFL) fails with EBADF: READs and WRITEs
            // whose flags differ from the open's fail, and the handle's descriptor stays open.
            let args = OpenIn {
                flags: libc::O_PATH as u32,
                fuse_flags: 0,
            };
            let (h, body) = s.call(OPEN, node, args.as_slice());
            assert_eq!(h.error, 0);
            let fh = obj::<OpenOut>(&body).fh;
            assert_eq!(fds_under(&dir), 3, "root, f and the handle");
            let read = ReadIn {
                fh,
                size: 16,
                flags: libc::O_RDONLY as u32,
                ..Default::default()
            };
            assert_eq!(s.error(READ, node, read.as_slice()), libc::EBADF);
            let mut write = WriteIn {
                fh,
                size: 1,
                flags: libc::O_RDWR as u32,
                ..Default::default()
            }
            .as_slice()
            .to_vec();
            write.push(b'x');
            assert_eq!(s.error(WRITE, node, &write), libc::EBADF);
            assert_eq!(fds_under(&dir), 3, "the handle's descriptor is still open");
            // A handle the server never gave is refused.
            let stray = ReadIn {
                fh: fh + 100,
                ..read
            };
            assert_eq!(s.error(READ, node, stray.as_slice()), libc::EBADF);
            s.release(RELEASE, node, fh);
            assert_eq!((s.held(), fds_under(&dir)), (1, 2));
        });
    }

    #[test]
    fn readdirplus_stops_at_the_bound_and_is_refused_when_nothing_fits() {
        on_own_fs_thread(|| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("sub")).unwrap();
            for f in ["x", "y", "z"] {
                std::fs::write(dir.path().join("sub").join(f), f).unwrap();
            }
            let mut s = Direct::new(dir.path(), 3);
            let sub = s.lookup(ROOT, "sub").unwrap();
            let fh = s.open(OPENDIR, sub).unwrap();
            assert_eq!(s.held(), 2);
            // Room for one more inode: the listing ends after the first entry.
            let first = s.readdirplus(sub, fh, 0).unwrap();
            assert_eq!(first.len(), 1, "{first:?}");
            assert_eq!(s.held(), 3);
            // From there, the next entry is a new inode and nothing fits.
            assert_eq!(s.readdirplus(sub, fh, first[0].1), Err(libc::EMFILE));
            assert_eq!(s.held(), 3);
            // From the start, the entry already held is listed again.
            assert_eq!(s.readdirplus(sub, fh, 0).unwrap(), first);
            // With room for everything, all three come.
            let mut t = Direct::new(dir.path(), 16);
            let sub = t.lookup(ROOT, "sub").unwrap();
            let fh = t.open(OPENDIR, sub).unwrap();
            let mut all: Vec<String> = t
                .readdirplus(sub, fh, 0)
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            all.sort();
            assert_eq!(all, ["x", "y", "z"]);
            assert_eq!(t.held(), 5);
            t.release(RELEASEDIR, sub, fh);
            assert_eq!(t.held(), 4);
        });
    }
}
