//! Guest-controlled parsing of virtio-net descriptor chains, as pure functions over guest memory
//! (virtio 1.2, 5.1.6): a TX chain is gathered into one host buffer (its 12-byte
//! `virtio_net_hdr_v1` followed by the Ethernet frame), an RX chain is checked into the list of
//! device-writable segments a frame may be scattered into.
//!
//! Every descriptor's direction, address and length is checked against guest memory before a
//! byte moves; a chain that fails a check is reported as a [`ChainError`] and nothing of it is
//! used. Nothing here panics on guest input.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Size of the header before every frame with `VIRTIO_F_VERSION_1`: `struct virtio_net_hdr_v1`
/// (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers; 5.1.6).
pub const HDR_LEN: usize = 12;
/// Offset of `num_buffers` (le16) in the header.
pub const NUM_BUFFERS_OFFSET: usize = 10;
/// Largest Ethernet frame either direction carries, bytes: a 64 KiB GSO packet (the guest's
/// `GSO_MAX_SIZE` without BIG TCP) plus an Ethernet and a VLAN header. An MTU up to 65535 fits.
pub const MAX_FRAME_LEN: usize = 65_536 + 14 + 4;
/// Largest header-plus-frame buffer either direction carries.
pub const MAX_PACKET_LEN: usize = HDR_LEN + MAX_FRAME_LEN;

/// Why a descriptor chain is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A TX descriptor is device-writable, or an RX descriptor is device-readable.
    #[error("descriptor {index} has the wrong direction (device-{found})")]
    Direction {
        /// Position in the chain.
        index: usize,
        /// What it was: `readable` or `writable`.
        found: &'static str,
    },
    /// A descriptor's buffer is not entirely inside guest memory.
    #[error("descriptor {index} at {addr:#x} of {len} bytes is outside guest memory")]
    OutOfMemory {
        /// Position in the chain.
        index: usize,
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A TX chain holds more than a header and the largest frame.
    #[error("tx chain is longer than {MAX_PACKET_LEN} bytes")]
    TooLong,
    /// A chain holds fewer bytes than the header.
    #[error("chain holds {0} bytes, fewer than the {HDR_LEN}-byte header")]
    TooShort(usize),
}

/// Copies the readable TX chain `chain` (header and frame) into `buf`, which must hold
/// [`MAX_PACKET_LEN`] bytes; returns the number of bytes copied.
pub fn read_tx<M>(chain: DescriptorChain<M>, buf: &mut [u8]) -> Result<usize, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let mut len = 0usize;
    for (index, d) in chain.clone().enumerate() {
        if d.is_write_only() {
            return Err(ChainError::Direction {
                index,
                found: "writable",
            });
        }
        let n = d.len() as usize;
        let end = len
            .checked_add(n)
            .filter(|&e| e <= buf.len().min(MAX_PACKET_LEN))
            .ok_or(ChainError::TooLong)?;
        mem.read_slice(&mut buf[len..end], d.addr())
            .map_err(|_| ChainError::OutOfMemory {
                index,
                addr: d.addr().0,
                len: d.len(),
            })?;
        len = end;
    }
    if len < HDR_LEN {
        return Err(ChainError::TooShort(len));
    }
    Ok(len)
}

/// A checked RX chain: its head and its device-writable segments, all inside guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxChain {
    /// Head descriptor index (what goes into the used ring).
    pub head: u16,
    /// `(address, length)` of each non-empty segment, in chain order.
    pub segments: Vec<(GuestAddress, u32)>,
    /// Sum of the segments' lengths.
    pub capacity: usize,
}

/// Checks the RX chain `chain`: every descriptor device-writable and inside guest memory, at
/// least [`HDR_LEN`] bytes in all (a smaller buffer could never hold a header, and keeping it
/// would stall the queue).
pub fn parse_rx<M>(chain: DescriptorChain<M>) -> Result<RxChain, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let head = chain.head_index();
    let mut segments = Vec::new();
    let mut capacity = 0usize;
    for (index, d) in chain.clone().enumerate() {
        if !d.is_write_only() {
            return Err(ChainError::Direction {
                index,
                found: "readable",
            });
        }
        if d.len() == 0 {
            continue;
        }
        if mem.get_slice(d.addr(), d.len() as usize).is_err() {
            return Err(ChainError::OutOfMemory {
                index,
                addr: d.addr().0,
                len: d.len(),
            });
        }
        capacity = capacity.saturating_add(d.len() as usize);
        segments.push((d.addr(), d.len()));
    }
    if capacity < HDR_LEN {
        return Err(ChainError::TooShort(capacity));
    }
    Ok(RxChain {
        head,
        segments,
        capacity,
    })
}

/// Scatters `data` over the segments of `chain` from its start; returns the bytes written
/// (`data.len()` or the chain's capacity, whichever is smaller).
pub fn write_rx<M: GuestMemory>(
    mem: &M,
    chain: &RxChain,
    data: &[u8],
) -> Result<usize, ChainError> {
    let mut done = 0usize;
    for (index, &(addr, len)) in chain.segments.iter().enumerate() {
        if done == data.len() {
            break;
        }
        let n = (len as usize).min(data.len() - done);
        mem.write_slice(&data[done..done + n], addr)
            .map_err(|_| ChainError::OutOfMemory {
                index,
                addr: addr.0,
                len,
            })?;
        done += n;
    }
    Ok(done)
}
