//! Answering FUSE requests carried by virtio-fs descriptor chains (virtio 1.2, 5.11.6): each
//! chain holds a request (`fuse_in_header` + arguments) in its device-readable part and room for
//! the reply (`fuse_out_header` + data) in its device-writable part.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{FsOptions, InHeader, InitIn, InitOut, Opcode, OutHeader};
use fuse_backend_rs::api::server::{Server, MAX_REQ_PAGES};
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{ByteValued, Bytes, GuestMemoryMmap};

use super::bound::{self, Bounded};
use super::FsError;

/// How long the guest may cache entries and attributes. Short, because the host side (the
/// container's caller) may change the files too (runc gives it the same files, uncached).
const CACHE_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest FUSE_WRITE (and direct FUSE_READ) granted at INIT, bytes: [`MAX_REQ_PAGES`] pages of
/// 4 KiB, the most fuse-backend-rs's server takes in one request (its `MAX_BUFFER_SIZE`, 1 MiB).
/// Such a write is a chain of 260 descriptors (header, `fuse_write_in`, 256 pages, reply
/// header, `fuse_write_out`), within the 1024 of [`super::QUEUE_SIZE`].
pub const MAX_WRITE: u32 = MAX_REQ_PAGES as u32 * 4096;

/// A FUSE server over a passthrough file system rooted at one host directory, holding a bounded
/// number of descriptors for the guest ([`super::bound`]).
pub struct FileServer {
    server: Server<Arc<Bounded>>,
    fs: Arc<Bounded>,
}

impl FileServer {
    /// Opens the passthrough file system on `dir` (an `O_PATH` descriptor of `dir` becomes the
    /// FUSE root inode; `/proc/self/fd` is opened too, to reopen inodes). `dir` is opened again
    /// by name at FUSE INIT, so a relative `dir` must still name it then. Extended attributes
    /// are on, caching is close-to-open (`auto`) with one-second timeouts, no writeback cache.
    /// It holds at most [`bound::default_limit`] descriptors for the guest.
    ///
    /// `PassthroughFs` clears the umask of the calling thread's `fs_struct`; call this on a
    /// thread that has its own (see [`super::confine::enter`]).
    pub fn open(dir: &Path) -> Result<FileServer, FsError> {
        Self::open_bounded(dir, bound::default_limit())
    }

    /// [`FileServer::open`], holding at most `limit` descriptors for the guest.
    pub fn open_bounded(dir: &Path, limit: usize) -> Result<FileServer, FsError> {
        let err = |source| FsError::OpenSharedDir {
            path: dir.to_owned(),
            source,
        };
        let cfg = Config {
            root_dir: dir.to_string_lossy().into_owned(),
            xattr: true,
            cache_policy: CachePolicy::Auto,
            attr_timeout: CACHE_TIMEOUT,
            entry_timeout: CACHE_TIMEOUT,
            do_import: true,
            ..Config::default()
        };
        let fs = PassthroughFs::<()>::new(cfg).map_err(err)?;
        fs.import().map_err(err)?;
        let fs = Arc::new(Bounded::new(fs, limit));
        Ok(FileServer {
            server: Server::new(Arc::clone(&fs)),
            fs,
        })
    }

    /// Descriptors held for the guest now (inodes it has looked up and not forgotten, open
    /// handles), and the most it may hold.
    pub fn held_descriptors(&self) -> (usize, usize) {
        (self.fs.held(), self.fs.limit())
    }

    /// Answers the request in `chain` and returns the number of bytes written to its
    /// device-writable part (the `len` of its used-ring element). The reply to FUSE_INIT grants
    /// writes of up to [`MAX_WRITE`] bytes and the flags of [`GRANTED_INIT_FLAGS`] (see
    /// `grant_init_flags`). A request the server fails
    /// without answering (arguments it cannot decode, a reply that does not fit) gets `EIO` if
    /// its opcode expects a reply: the Linux driver ignores the used length and reads the reply
    /// header it preallocated zeroed, so no answer would pass for success with garbage arguments.
    /// FORGET and BATCH_FORGET get none, and neither does a request whose header is unreadable.
    pub fn handle_chain(
        &self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> Result<u32, FsError> {
        let head = chain.head_index();
        let bad = |source| FsError::BadChain { head, source };
        let reader = Reader::from_descriptor_chain(mem, chain.clone()).map_err(bad)?;
        let mut args = reader.clone();
        let header: Option<InHeader> = args.read_obj().ok();
        let init: Option<InitIn> = header
            .filter(|h| h.opcode == Opcode::Init as u32)
            .and_then(|_| args.read_obj().ok());
        let writer = VirtioFsWriter::new(mem, chain.clone()).map_err(bad)?;
        let err = match self
            .server
            .handle_message(reader, writer.into(), None, None)
        {
            Ok(n) => {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                if let Some(init) = init {
                    grant_init_flags(mem, &chain, n, init.flags);
                }
                return Ok(n);
            }
            Err(e) => e,
        };
        let Some(h) = header.filter(|h| expects_reply(h.opcode)) else {
            log::debug!("virtio-fs: request in chain {head} not answered: {err}");
            return Ok(0);
        };
        log::warn!(
            "virtio-fs: opcode {} (unique {}) in chain {head} failed without a reply, answering \
             EIO: {err}",
            h.opcode,
            h.unique
        );
        let reply = OutHeader {
            len: std::mem::size_of::<OutHeader>() as u32,
            error: -libc::EIO,
            unique: h.unique,
        };
        let mut writer = VirtioFsWriter::new(mem, chain).map_err(bad)?;
        match writer.write_obj(reply) {
            Ok(()) => Ok(reply.len),
            Err(e) => {
                log::warn!("virtio-fs: no room for a reply header in chain {head}: {e}");
                Ok(0)
            }
        }
    }

    /// Serves every available chain of `queue`, puts each on the used ring and calls `notify`
    /// whenever the driver must be interrupted (virtio 1.2, 2.7.10).
    ///
    /// With `VIRTIO_F_EVENT_IDX` negotiated, that is checked after each chain (the driver's
    /// `used_event` says which completion it waits for), so a request served early in a batch
    /// is completed in the guest without waiting for the rest, and a driver already draining the
    /// used ring gets no interrupt for the chains it will find anyway. Without it, `notify` is
    /// called once at the end, if any chain was used.
    ///
    /// While it serves, the driver's notifications (kicks) are suppressed (2.7.10: `avail_event`,
    /// or `VIRTQ_USED_F_NO_NOTIFY` without EVENT_IDX): a chain the driver adds meanwhile is
    /// served by this same call, without a kick (an exit of the guest) for it. They are enabled
    /// again before returning, and the avail ring is checked once more after that, so no chain is
    /// left waiting for a kick that never comes. A second pass in a row that finds nothing to pop
    /// although the avail index says otherwise (a ring the driver broke) ends the call instead of
    /// spinning. A queue the driver did not make ready, or whose rings are not in guest memory,
    /// is not touched at all.
    pub fn process_queue(
        &self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        notify: &mut dyn FnMut(),
    ) -> Result<(), FsError> {
        if !queue.ready() || !queue.is_valid(mem) {
            return Ok(());
        }
        let per_chain = queue.event_idx_enabled();
        let mut used = false;
        let mut empty_passes = 0;
        loop {
            queue
                .disable_notification(mem)
                .map_err(FsError::AccessQueue)?;
            let mut popped = 0;
            while let Some(chain) = queue.pop_descriptor_chain(mem) {
                popped += 1;
                let head = chain.head_index();
                let len = match self.handle_chain(mem, chain) {
                    Ok(n) => n,
                    Err(e) => {
                        log::warn!("virtio-fs: {e}");
                        0
                    }
                };
                queue
                    .add_used(mem, head, len)
                    .map_err(FsError::AccessQueue)?;
                used = true;
                if per_chain
                    && queue
                        .needs_notification(mem)
                        .map_err(FsError::AccessQueue)?
                {
                    notify();
                }
            }
            if !queue
                .enable_notification(mem)
                .map_err(FsError::AccessQueue)?
            {
                break;
            }
            empty_passes = if popped == 0 { empty_passes + 1 } else { 0 };
            if empty_passes == 2 {
                log::warn!("virtio-fs: avail ring index runs ahead of what can be popped");
                break;
            }
        }
        if used && !per_chain {
            notify();
        }
        Ok(())
    }
}

/// Whether a request with `opcode` gets a reply (FUSE: all but FORGET and BATCH_FORGET).
fn expects_reply(opcode: u32) -> bool {
    opcode != Opcode::Forget as u32 && opcode != Opcode::BatchForget as u32
}

/// FUSE INIT flags granted whenever the driver offers them, beyond what `PassthroughFs` asks for
/// (readdirplus): what virtiofsd grants by default, and what the passthrough file system serves.
///
/// - `FUSE_BIG_WRITES`, `FUSE_MAX_PAGES`: writes of [`MAX_WRITE`] bytes (see `grant_init_flags`).
/// - `FUSE_ASYNC_READ`: the guest sends readahead READs in the background, several at a time,
///   instead of waiting for each: the serving thread fills the next window while the guest
///   copies the last one out, and the queued READs need no kick of their own.
/// - `FUSE_AUTO_INVAL_DATA`: when a refreshed attribute shows a new mtime or size, the guest drops
///   the file's cached pages, so a host write is seen by a guest that keeps the file open (once
///   the attribute timeout has passed), not only at the next open.
/// - `FUSE_ATOMIC_O_TRUNC`: `open(O_TRUNC)` is one OPEN carrying `O_TRUNC` (the passthrough
///   opens the host file with it) instead of a SETATTR then an OPEN.
/// - `FUSE_PARALLEL_DIROPS`: lookups and readdirs of one directory may run concurrently.
pub const GRANTED_INIT_FLAGS: u64 = FsOptions::BIG_WRITES.bits()
    | FsOptions::MAX_PAGES.bits()
    | FsOptions::ASYNC_READ.bits()
    | FsOptions::AUTO_INVAL_DATA.bits()
    | FsOptions::ATOMIC_O_TRUNC.bits()
    | FsOptions::PARALLEL_DIROPS.bits();

/// Adds [`GRANTED_INIT_FLAGS`] to a successful FUSE_INIT reply of `len` bytes in `chain` where
/// the driver offered them in `offered` (its `fuse_init_in.flags`; all of them are in the low 32
/// bits), and with `FUSE_BIG_WRITES`/`FUSE_MAX_PAGES` raises the write size to [`MAX_WRITE`]
/// (`max_pages` [`MAX_REQ_PAGES`]). fuse-backend-rs's server enables only what the file system's
/// `init` asks for, and `PassthroughFs` asks for none of these: `max_write` stayed 4 KiB, so the
/// guest split every `write(2)` into 4 KiB synchronous requests (16,384 round trips for
/// 64 MiB), while the server takes up to [`MAX_WRITE`] in one; and every readahead READ was
/// synchronous. Replies that are errors or too short are left alone.
fn grant_init_flags(
    mem: &GuestMemoryMmap,
    chain: &DescriptorChain<&GuestMemoryMmap>,
    len: u32,
    offered: u32,
) {
    const HEADER: usize = std::mem::size_of::<OutHeader>();
    const REPLY: usize = HEADER + std::mem::size_of::<InitOut>();
    let mut reply = [0u8; REPLY];
    if (len as usize) < REPLY || !copy_writable(mem, chain, &mut reply, false) {
        return;
    }
    let h = OutHeader::from_slice(&reply[..HEADER])
        .copied()
        .unwrap_or_default();
    let Some(out) = InitOut::from_mut_slice(&mut reply[HEADER..]) else {
        return;
    };
    if h.error != 0 {
        return;
    }
    out.flags |= offered & GRANTED_INIT_FLAGS as u32;
    if out.flags & FsOptions::MAX_PAGES.bits() as u32 != 0 {
        out.max_pages = MAX_REQ_PAGES;
    }
    if out.flags & (FsOptions::BIG_WRITES | FsOptions::MAX_PAGES).bits() as u32 != 0 {
        out.max_write = MAX_WRITE;
    }
    copy_writable(mem, chain, &mut reply, true);
}

/// Copies between `buf` and the start of `chain`'s device-writable part (into guest memory when
/// `to_guest`). Returns false when that part is shorter than `buf` or not in guest memory.
fn copy_writable(
    mem: &GuestMemoryMmap,
    chain: &DescriptorChain<&GuestMemoryMmap>,
    buf: &mut [u8],
    to_guest: bool,
) -> bool {
    let mut done = 0;
    for d in chain.clone().writable() {
        if done == buf.len() {
            break;
        }
        let n = (d.len() as usize).min(buf.len() - done);
        let part = &mut buf[done..done + n];
        let ok = if to_guest {
            mem.write_slice(part, d.addr()).is_ok()
        } else {
            mem.read_slice(part, d.addr()).is_ok()
        };
        if !ok {
            return false;
        }
        done += n;
    }
    done == buf.len()
}
