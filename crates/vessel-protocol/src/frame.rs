//! Length-prefixed frames.
//!
//! Every frame is a 12-byte header followed by a body of `length` bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"VSSL"` |
//! | 4 | 2 | protocol version, big endian ([`crate::PROTOCOL_VERSION`]) |
//! | 6 | 2 | reserved, must be zero |
//! | 8 | 4 | body length in bytes, big endian, at most [`crate::MAX_FRAME_LEN`] |
//!
//! Message bodies are JSON (serde_json). Reads are blocking; a clean end of stream before the
//! first header byte is reported as `Ok(None)`, anywhere else as an error.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{MAX_FRAME_LEN, PROTOCOL_VERSION};

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"VSSL";

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 12;

/// Errors from reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header could not be read (the stream failed or ended inside the header).
    #[error("read frame header")]
    ReadHeader(#[source] io::Error),
    /// The first four bytes were not [`MAGIC`].
    #[error("bad frame magic {found:02x?}, expected {MAGIC:02x?}")]
    CheckMagic {
        /// The bytes found instead.
        found: [u8; 4],
    },
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {found}, this side speaks {PROTOCOL_VERSION}")]
    CheckVersion {
        /// The version in the header.
        found: u16,
    },
    /// The reserved header field was not zero.
    #[error("reserved frame header field is {found:#06x}, expected 0")]
    CheckReserved {
        /// The value found.
        found: u16,
    },
    /// The body is larger than [`MAX_FRAME_LEN`].
    #[error("frame body of {len} bytes exceeds the limit of {MAX_FRAME_LEN} bytes")]
    CheckLength {
        /// The announced or attempted length.
        len: u64,
    },
    /// The body could not be read in full.
    #[error("read frame body of {len} bytes")]
    ReadBody {
        /// The announced body length.
        len: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the frame failed.
    #[error("write frame of {len} bytes")]
    WriteFrame {
        /// The body length.
        len: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A message could not be serialised to JSON.
    #[error("encode message")]
    EncodeMessage(#[source] serde_json::Error),
    /// A frame body was not the JSON of the expected message.
    #[error("decode message of {len} bytes")]
    DecodeMessage {
        /// The body length.
        len: usize,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Builds the header for a body of `len` bytes.
pub fn encode_header(len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    h[8..12].copy_from_slice(&len.to_be_bytes());
    h
}

/// Checks a header and returns the body length it announces.
///
/// # Errors
/// [`FrameError::CheckMagic`], [`FrameError::CheckVersion`], [`FrameError::CheckReserved`] or
/// [`FrameError::CheckLength`] when the header is not one this side accepts.
pub fn decode_header(h: &[u8; HEADER_LEN]) -> Result<u32, FrameError> {
    let magic: [u8; 4] = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC {
        return Err(FrameError::CheckMagic { found: magic });
    }
    let version = u16::from_be_bytes([h[4], h[5]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::CheckVersion { found: version });
    }
    let reserved = u16::from_be_bytes([h[6], h[7]]);
    if reserved != 0 {
        return Err(FrameError::CheckReserved { found: reserved });
    }
    let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::CheckLength { len: len.into() });
    }
    Ok(len)
}

/// Writes one frame carrying `body`, header and body in a single `write_all`, then flushes.
///
/// # Errors
/// [`FrameError::CheckLength`] if `body` is larger than [`MAX_FRAME_LEN`];
/// [`FrameError::WriteFrame`] if the writer fails.
pub fn write_frame<W: Write>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME_LEN)
        .ok_or(FrameError::CheckLength {
            len: body.len() as u64,
        })?;
    let mut buf = Vec::with_capacity(HEADER_LEN + body.len());
    buf.extend_from_slice(&encode_header(len));
    buf.extend_from_slice(body);
    w.write_all(&buf)
        .and_then(|()| w.flush())
        .map_err(|source| FrameError::WriteFrame {
            len: body.len(),
            source,
        })
}

/// Reads one frame and returns its body; `Ok(None)` if the stream ended cleanly before the
/// first byte of a header.
///
/// Memory use is bounded by [`MAX_FRAME_LEN`] (the length is checked before the body is read)
/// and by what the peer actually sent: the body buffer grows as bytes arrive, so a hostile
/// length prefix alone costs at most 64 KiB.
///
/// # Errors
/// Any [`FrameError`] of the reading kind; an end of stream inside a header or body is an error.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(FrameError::ReadHeader(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {got} of {HEADER_LEN} header bytes"),
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::ReadHeader(e)),
        }
    }
    let len = decode_header(&h)?;
    let body = read_body(r, len as usize).map_err(|source| FrameError::ReadBody { len, source })?;
    Ok(Some(body))
}

/// First allocation for a frame body, in bytes: bodies up to this size are read in one piece.
const BODY_CHUNK: usize = 64 * 1024;

/// Reads exactly `len` body bytes. The buffer grows with the bytes that actually arrive
/// (doubling, capped at `len`), so a peer that announces a large body and sends little costs at
/// most [`BODY_CHUNK`] plus twice what it sent, not the announced length.
fn read_body<R: Read>(r: &mut R, len: usize) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(len.min(BODY_CHUNK));
    while body.len() < len {
        if body.len() == body.capacity() {
            let grown = (body.len() * 2).clamp(BODY_CHUNK, len);
            body.reserve_exact(grown - body.len());
        }
        let filled = body.len();
        let end = body.capacity().min(len);
        body.resize(end, 0);
        match r.read(&mut body[filled..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {filled} of {len} body bytes"),
                ))
            }
            Ok(n) => body.truncate(filled + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => body.truncate(filled),
            Err(e) => return Err(e),
        }
    }
    Ok(body)
}

/// Serialises `msg` as JSON and writes it as one frame.
///
/// # Errors
/// [`FrameError::EncodeMessage`], or any error of [`write_frame`].
pub fn write_message<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let body = serde_json::to_vec(msg).map_err(FrameError::EncodeMessage)?;
    write_frame(w, &body)
}

/// Reads one frame and decodes its JSON body as `T`; `Ok(None)` on a clean end of stream.
///
/// # Errors
/// [`FrameError::DecodeMessage`], or any error of [`read_frame`].
pub fn read_message<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, FrameError> {
    let Some(body) = read_frame(r)? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|source| FrameError::DecodeMessage {
            len: body.len(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn frame_round_trip_keeps_bytes_and_order() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"first").unwrap();
        write_frame(&mut buf, b"").unwrap();
        write_frame(&mut buf, b"third").unwrap();
        assert_eq!(buf.len(), 3 * HEADER_LEN + 10);
        assert_eq!(&buf[0..4], b"VSSL");
        assert_eq!(&buf[8..12], &5u32.to_be_bytes());
        let mut r = Cursor::new(buf);
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"first");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"third");
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn oversized_frame_is_refused_before_reading_body() {
        let mut buf = encode_header(0).to_vec();
        buf[8..12].copy_from_slice(&(MAX_FRAME_LEN + 1).to_be_bytes());
        // No body at all: the reader must fail on the length, not try to read 16 MiB.
        let err = read_frame(&mut Cursor::new(buf)).unwrap_err();
        assert!(
            matches!(err, FrameError::CheckLength { len } if len == u64::from(MAX_FRAME_LEN) + 1)
        );
        let big = vec![0u8; MAX_FRAME_LEN as usize + 1];
        let err = write_frame(&mut Vec::new(), &big).unwrap_err();
        assert!(matches!(err, FrameError::CheckLength { .. }));
    }

    #[test]
    fn garbled_headers_are_typed_errors() {
        let mut bad_magic = encode_header(0).to_vec();
        bad_magic[0] = b'X';
        assert!(matches!(
            read_frame(&mut Cursor::new(bad_magic)).unwrap_err(),
            FrameError::CheckMagic { found } if &found == b"XSSL"
        ));
        let mut bad_version = encode_header(0).to_vec();
        bad_version[5] = 9;
        assert!(matches!(
            read_frame(&mut Cursor::new(bad_version)).unwrap_err(),
            FrameError::CheckVersion { found: 9 }
        ));
        let mut bad_reserved = encode_header(0).to_vec();
        bad_reserved[7] = 1;
        assert!(matches!(
            read_frame(&mut Cursor::new(bad_reserved)).unwrap_err(),
            FrameError::CheckReserved { found: 1 }
        ));
    }

    #[test]
    fn truncated_frames_are_errors_not_eof() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        let short_header = buf[..5].to_vec();
        assert!(matches!(
            read_frame(&mut Cursor::new(short_header)).unwrap_err(),
            FrameError::ReadHeader(e) if e.kind() == io::ErrorKind::UnexpectedEof
        ));
        let short_body = buf[..HEADER_LEN + 2].to_vec();
        assert!(matches!(
            read_frame(&mut Cursor::new(short_body)).unwrap_err(),
            FrameError::ReadBody { len: 5, .. }
        ));
    }

    #[test]
    fn bad_json_is_a_decode_error() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{not json").unwrap();
        let err = read_message::<_, crate::RequestEnvelope>(&mut Cursor::new(buf)).unwrap_err();
        assert!(matches!(err, FrameError::DecodeMessage { len: 9, .. }));
    }

    #[test]
    fn random_input_never_panics() {
        // A cheap deterministic fuzz: xorshift bytes, with and without a valid header prefix.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let mut data = Vec::new();
            if round % 2 == 0 {
                data.extend_from_slice(&encode_header((round % 64) as u32));
            }
            for _ in 0..(round % 97) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push(x as u8);
            }
            let mut r = Cursor::new(data);
            while let Ok(Some(_)) = read_message::<_, crate::RequestEnvelope>(&mut r) {}
        }
    }
}
