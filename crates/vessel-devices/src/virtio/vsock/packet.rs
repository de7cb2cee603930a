//! virtio-vsock packets (virtio 1.2, 5.10.6): the 44-byte little-endian header and the bounded,
//! panic-free moves between descriptor chains and owned packets. Everything here is a pure
//! function of guest memory, so malformed chains and headers are errors, never panics.

use std::io::{Read, Write};
use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::GuestMemory;

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_SIZE: usize = 44;
/// Largest payload accepted from the guest in one packet (Linux sends at most 64 KiB).
pub const MAX_PKT_PAYLOAD: u32 = 64 * 1024;
/// `VIRTIO_VSOCK_TYPE_STREAM`.
pub const TYPE_STREAM: u16 = 1;

/// Packet operations (`VIRTIO_VSOCK_OP_*`).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Reset: refused or torn down.
    pub const RST: u16 = 3;
    /// Half or full close; flags say which direction.
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Unsolicited credit information.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Ask the peer for its credit.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// `struct virtio_vsock_hdr`, decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VsockHeader {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Socket type (1 = stream).
    pub type_: u16,
    /// Operation (see [`op`]).
    pub op: u16,
    /// Operation flags (SHUTDOWN direction bits).
    pub flags: u32,
    /// Sender's receive buffer size, bytes.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, mod 2^32.
    pub fwd_cnt: u32,
}

impl VsockHeader {
    /// Decodes the little-endian wire form.
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Self {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes"));
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the little-endian wire form.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A packet owned by the device: header plus payload (`payload.len()` is authoritative; the
/// header's `len` is set from it when written to the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Header.
    pub hdr: VsockHeader,
    /// Payload (RW only).
    pub payload: Vec<u8>,
}

/// Why a descriptor chain did not hold a valid packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    /// The chain itself is malformed (loops, bad addresses, wrong direction).
    #[error("malformed descriptor chain: {0}")]
    Chain(String),
    /// Fewer readable bytes than a header.
    #[error("chain has {0} readable bytes, fewer than the {HDR_SIZE}-byte header")]
    ShortHeader(usize),
    /// The header claims more payload than allowed.
    #[error("payload length {len} exceeds the {MAX_PKT_PAYLOAD}-byte limit")]
    PayloadTooLong {
        /// Claimed length.
        len: u32,
    },
    /// The header claims more payload than the chain holds.
    #[error("header claims {len} payload bytes, chain holds {avail}")]
    ShortPayload {
        /// Claimed length.
        len: u32,
        /// Bytes present.
        avail: usize,
    },
    /// Fewer writable bytes than a header.
    #[error("rx chain has {0} writable bytes, fewer than a header")]
    ShortRxBuffer(usize),
}

/// Reads a TX packet (header + payload) from the readable part of `chain`.
pub fn read_tx<M>(chain: DescriptorChain<M>) -> Result<Packet, PacketError>
where
    M: Deref + Clone,
    M::Target: GuestMemory + Sized,
{
    let mem = chain.memory();
    let mut reader = chain
        .clone()
        .reader(mem)
        .map_err(|e| PacketError::Chain(e.to_string()))?;
    let avail = reader.available_bytes();
    if avail < HDR_SIZE {
        return Err(PacketError::ShortHeader(avail));
    }
    let mut hb = [0u8; HDR_SIZE];
    reader
        .read_exact(&mut hb)
        .map_err(|e| PacketError::Chain(e.to_string()))?;
    let hdr = VsockHeader::from_bytes(&hb);
    if hdr.len > MAX_PKT_PAYLOAD {
        return Err(PacketError::PayloadTooLong { len: hdr.len });
    }
    let rest = reader.available_bytes();
    if (hdr.len as usize) > rest {
        return Err(PacketError::ShortPayload {
            len: hdr.len,
            avail: rest,
        });
    }
    let mut payload = vec![0u8; hdr.len as usize];
    reader
        .read_exact(&mut payload)
        .map_err(|e| PacketError::Chain(e.to_string()))?;
    Ok(Packet { hdr, payload })
}

/// Writes as much of `pkt` as the writable part of `chain` holds: the header with `len` set to
/// the payload bytes that fit. Returns `(bytes written, payload bytes written)`.
pub fn write_rx<M>(chain: DescriptorChain<M>, pkt: &Packet) -> Result<(u32, usize), PacketError>
where
    M: Deref + Clone,
    M::Target: GuestMemory + Sized,
{
    let mem = chain.memory();
    let mut writer = chain
        .clone()
        .writer(mem)
        .map_err(|e| PacketError::Chain(e.to_string()))?;
    let avail = writer.available_bytes();
    if avail < HDR_SIZE {
        return Err(PacketError::ShortRxBuffer(avail));
    }
    let n = pkt.payload.len().min(avail - HDR_SIZE);
    let mut hdr = pkt.hdr;
    hdr.len = n as u32;
    writer
        .write_all(&hdr.to_bytes())
        .and_then(|_| writer.write_all(&pkt.payload[..n]))
        .map_err(|e| PacketError::Chain(e.to_string()))?;
    Ok(((HDR_SIZE + n) as u32, n))
}
