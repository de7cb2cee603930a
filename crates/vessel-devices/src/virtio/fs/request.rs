//! Answering FUSE requests carried by virtio-fs descriptor chains (virtio 1.2, 5.11.6): each
//! chain holds a request (`fuse_in_header` + arguments) in its device-readable part and room for
//! the reply (`fuse_out_header` + data) in its device-writable part.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OutHeader};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::FsError;

/// How long the guest may cache entries and attributes. Short, because the host side (the
/// container's caller) may change the files too (runc gives it the same files, uncached).
const CACHE_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// device-writable part (the `len` of its used-ring element). A request the server fails
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
        let header: Option<InHeader> = reader.clone().read_obj().ok();
        let writer = VirtioFsWriter::new(mem, chain.clone()).map_err(bad)?;
        let err = match self
            .server
            .handle_message(reader, writer.into(), None, None)
        {
            Ok(n) => return Ok(u32::try_from(n).unwrap_or(u32::MAX)),
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
