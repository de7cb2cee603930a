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

use super::FsError;

/// How long the guest may cache entries and attributes. Short, because the host side (the
/// container's caller) may change the files too (runc gives it the same files, uncached).
const CACHE_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest FUSE_WRITE (and direct FUSE_READ) granted at INIT, bytes: [`MAX_REQ_PAGES`] pages of
/// 4 KiB, the most fuse-backend-rs's server takes in one request (its `MAX_BUFFER_SIZE`, 1 MiB).
/// Such a write is a chain of 260 descriptors (header, `fuse_write_in`, 256 pages, reply
/// header, `fuse_write_out`), within the 1024 of [`super::QUEUE_SIZE`].
pub const MAX_WRITE: u32 = MAX_REQ_PAGES as u32 * 4096;

/// A FUSE server over a passthrough file system rooted at one host directory.
pub struct FileServer {
    server: Server<Arc<PassthroughFs>>,
}

impl FileServer {
    /// Opens the passthrough file system on `dir` (an `O_PATH` descriptor of `dir` becomes the
    /// FUSE root inode; `/proc/self/fd` is opened too, to reopen inodes). `dir` is opened again
    /// by name at FUSE INIT, so a relative `dir` must still name it then. Extended attributes
    /// are on, caching is close-to-open (`auto`) with one-second timeouts, no writeback cache.
    ///
    /// `PassthroughFs` clears the umask of the calling thread's `fs_struct`; call this on a
    /// thread that has its own (see [`super::confine::enter`]).
    pub fn open(dir: &Path) -> Result<FileServer, FsError> {
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
        Ok(FileServer {
            server: Server::new(Arc::new(fs)),
        })
    }

    /// Answers the request in `chain` and returns the number of bytes written to its
    /// device-writable part (the `len` of its used-ring element). The reply to FUSE_INIT grants
    /// writes of up to [`MAX_WRITE`] bytes (see `grant_big_writes`). A request the server fails
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
                    grant_big_writes(mem, &chain, n, init.flags);
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

    /// Serves every available chain of `queue` and puts each on the used ring. Returns whether
    /// the driver must be notified (virtio 1.2, 2.7.10: `VIRTIO_F_EVENT_IDX` is not offered, so
    /// whenever a chain was used and the driver did not suppress interrupts).
    pub fn process_queue(&self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, FsError> {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
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
        }
        Ok(used
            && queue
                .needs_notification(mem)
                .map_err(FsError::AccessQueue)?)
    }
}

/// Whether a request with `opcode` gets a reply (FUSE: all but FORGET and BATCH_FORGET).
fn expects_reply(opcode: u32) -> bool {
    opcode != Opcode::Forget as u32 && opcode != Opcode::BatchForget as u32
}

/// Raises the write size of a successful FUSE_INIT reply of `len` bytes in `chain` to
/// [`MAX_WRITE`]: sets `FUSE_BIG_WRITES` and `FUSE_MAX_PAGES` where the driver offered them in
/// `offered` (its `fuse_init_in.flags`), with `max_pages` [`MAX_REQ_PAGES`] and `max_write`
/// [`MAX_WRITE`]. fuse-backend-rs's server grants these only when the file system's `init` asks
/// for them and `PassthroughFs` never does, so `max_write` stayed 4 KiB: the guest then split
/// every `write(2)` into 4 KiB synchronous requests (16,384 round trips for 64 MiB), while the
/// server takes up to [`MAX_WRITE`] in one. Replies that are errors or too short are left alone.
fn grant_big_writes(
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
    let wanted = (FsOptions::BIG_WRITES | FsOptions::MAX_PAGES).bits() as u32;
    out.flags |= offered & wanted;
    if out.flags & FsOptions::MAX_PAGES.bits() as u32 != 0 {
        out.max_pages = MAX_REQ_PAGES;
    }
    if out.flags & wanted != 0 {
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
