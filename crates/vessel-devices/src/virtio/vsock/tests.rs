//! Device tests through real descriptor chains: connection setup both ways, data both ways,
//! RST on unknown ports, credit accounting, shutdown, malformed chains, the Unix-socket bridge.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use super::device::{RX_QUEUE, TX_QUEUE};
use super::muxer::{BUF_ALLOC, FIRST_LOCAL_PORT, HOST_CID, MAX_GUEST_CONNECTIONS};
use super::packet::{op, HDR_SIZE, SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::test_utils::*;

/// Guest connects to a host listener and they exchange bytes both ways.
fn established(d: &mut Driver, host_port: u32, guest_port: u32, guest_buf: u32) -> UnixStream {
    let l = d.dev.handle().listen(host_port).unwrap();
    d.send_op(guest_port, host_port, op::REQUEST, guest_buf, 0);
    d.give_rx(1, 4096);
    let got = d.recv();
    assert_eq!(ops(&got), vec![op::RESPONSE]);
    let h = got[0].hdr;
    assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!((h.src_port, h.dst_port), (host_port, guest_port));
    assert_eq!(h.buf_alloc, BUF_ALLOC);
    let s = l.accept_timeout(Duration::from_secs(1)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

#[test]
fn guest_initiated_connection_carries_bytes_both_ways() {
    let mut d = Driver::new();
    let mut s = established(&mut d, 5001, 1234, 64 * 1024);
    d.send(Driver::hdr(1234, 5001, op::RW, 64 * 1024, 0), b"hello");
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    s.write_all(b"world!").unwrap();
    let got = d.pump_host();
    assert_eq!(data(&got), b"world!");
    assert_eq!(
        got[0].hdr.fwd_cnt, 5,
        "our fwd_cnt counts the 5 bytes handed to the host"
    );
    assert_eq!(d.dev.muxer().connection_count(), 1);
}

#[test]
fn request_to_a_port_without_listener_gets_rst_and_unknown_connections_too() {
    let mut d = Driver::new();
    d.send_op(1234, 9999, op::REQUEST, 4096, 0);
    d.send(Driver::hdr(1234, 9998, op::RW, 4096, 0), b"stray");
    d.send_op(1234, 9997, op::RST, 4096, 0);
    d.give_rx(4, 4096);
    let got = d.recv();
    assert_eq!(ops(&got), vec![op::RST, op::RST], "no reply to a RST");
    assert_eq!((got[0].hdr.src_port, got[0].hdr.dst_port), (9999, 1234));
    assert_eq!((got[1].hdr.src_port, got[1].hdr.dst_port), (9998, 1234));
    assert_eq!(d.dev.muxer().connection_count(), 0);
}

#[test]
fn guest_connections_beyond_the_limit_get_rst() {
    let mut d = Driver::new();
    let l = d.dev.handle().listen(5001).unwrap();
    let n = MAX_GUEST_CONNECTIONS as u32;
    let mut accepted = Vec::new();
    for port in 2000..2000 + n + 1 {
        d.send_op(port, 5001, op::REQUEST, 4096, 0);
        d.give_rx(1, 4096);
        let got = d.recv();
        let want = if port < 2000 + n {
            op::RESPONSE
        } else {
            op::RST
        };
        assert_eq!(ops(&got), vec![want], "guest port {port}");
        if want == op::RESPONSE {
            accepted.push(l.accept_timeout(Duration::from_secs(1)).unwrap());
        }
    }
    assert_eq!(d.dev.muxer().connection_count(), MAX_GUEST_CONNECTIONS);
    // Closing one makes room again.
    d.send_op(2000, 5001, op::RST, 4096, 0);
    d.send_op(3000, 5001, op::REQUEST, 4096, 0);
    d.give_rx(1, 4096);
    assert_eq!(ops(&d.recv()), vec![op::RESPONSE]);
}

#[test]
fn packets_with_wrong_cids_are_dropped() {
    let mut d = Driver::new();
    let _l = d.dev.handle().listen(5001).unwrap();
    let mut h = Driver::hdr(1, 5001, op::REQUEST, 4096, 0);
    h.src_cid = 7; // spoofed source
    d.send(h, &[]);
    d.give_rx(2, 4096);
    assert!(d.recv().is_empty());
    assert_eq!(d.dev.muxer().connection_count(), 0);
}

#[test]
fn host_data_respects_guest_credit_and_resumes_on_credit_update() {
    let mut d = Driver::new();
    let mut s = established(&mut d, 5001, 1234, 8);
    s.write_all(&[7u8; 20]).unwrap();
    let got = d.pump_host();
    assert_eq!(ops(&got), vec![op::RW, op::CREDIT_REQUEST]);
    assert_eq!(got[0].payload.len(), 8, "only the 8 bytes of credit");
    // Guest consumed 8 bytes: 8 more may come.
    d.send_op(1234, 5001, op::CREDIT_UPDATE, 8, 8);
    let got = d.pump_host();
    assert_eq!(data(&got).len(), 8);
    // Guest grows its buffer: the last 4 arrive.
    d.send_op(1234, 5001, op::CREDIT_UPDATE, 1024, 16);
    assert_eq!(data(&d.pump_host()), vec![7u8; 4]);
}

#[test]
fn credit_update_follows_a_quarter_buffer_forwarded_and_credit_request() {
    let mut d = Driver::new();
    let mut s = established(&mut d, 5001, 1234, 64 * 1024);
    let chunk = vec![1u8; 60 * 1024];
    d.send(Driver::hdr(1234, 5001, op::RW, 64 * 1024, 0), &chunk);
    d.give_rx(2, 4096);
    assert!(
        d.recv().is_empty(),
        "60 KiB is below a quarter of {BUF_ALLOC}"
    );
    d.send(Driver::hdr(1234, 5001, op::RW, 64 * 1024, 0), &chunk);
    d.give_rx(2, 4096);
    let got = d.recv();
    assert_eq!(ops(&got), vec![op::CREDIT_UPDATE]);
    assert_eq!(got[0].hdr.fwd_cnt, 120 * 1024);
    let mut sink = vec![0u8; 120 * 1024];
    s.read_exact(&mut sink).unwrap();
    d.send_op(1234, 5001, op::CREDIT_REQUEST, 64 * 1024, 0);
    d.give_rx(1, 4096);
    let got = d.recv();
    assert_eq!(ops(&got), vec![op::CREDIT_UPDATE]);
    assert_eq!(got[0].hdr.fwd_cnt, 120 * 1024);
}

#[test]
fn guest_overrunning_its_credit_is_reset() {
    let mut d = Driver::new();
    let s = established(&mut d, 5001, 1234, 64 * 1024);
    // The host never reads: once the socket buffer is full, bytes pile up in the device.
    let chunk = vec![2u8; 64 * 1024];
    let mut sent = 0usize;
    let mut reset = false;
    for _ in 0..64 {
        d.send(Driver::hdr(1234, 5001, op::RW, 64 * 1024, 0), &chunk);
        sent += chunk.len();
        d.give_rx(2, 4096);
        if ops(&d.recv()).contains(&op::RST) {
            reset = true;
            break;
        }
    }
    assert!(reset, "no RST after {sent} bytes");
    assert!(
        sent > BUF_ALLOC as usize,
        "reset before the credit was exceeded ({sent})"
    );
    assert_eq!(d.dev.muxer().connection_count(), 0);
    drop(s);
}

#[test]
fn host_initiated_connect_succeeds_or_is_refused() {
    let mut d = Driver::new();
    let h = d.dev.handle();
    let t = std::thread::spawn(move || h.connect(1024));
    // The request reaches the guest once the backend wakes up.
    let got = d.pump_host_until_some();
    assert_eq!(ops(&got), vec![op::REQUEST]);
    let r = got[0].hdr;
    assert_eq!((r.dst_port, r.src_port), (1024, FIRST_LOCAL_PORT));
    d.send_op(1024, r.src_port, op::RESPONSE, 4096, 0);
    let mut s = t.join().unwrap().unwrap();
    s.write_all(b"ping").unwrap();
    assert_eq!(data(&d.pump_host()), b"ping");

    let h = d.dev.handle();
    let t = std::thread::spawn(move || h.connect(1025));
    let got = d.pump_host_until_some();
    assert_eq!(got[0].hdr.src_port, FIRST_LOCAL_PORT + 1);
    d.send_op(1025, got[0].hdr.src_port, op::RST, 0, 0);
    let err = t.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn shutdown_from_guest_closes_the_host_end_after_flushing() {
    let mut d = Driver::new();
    let mut s = established(&mut d, 5001, 1234, 4096);
    d.send(Driver::hdr(1234, 5001, op::RW, 4096, 0), b"last words");
    let mut sh = Driver::hdr(1234, 5001, op::SHUTDOWN, 4096, 0);
    sh.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    d.send(sh, &[]);
    d.give_rx(2, 4096);
    assert_eq!(ops(&d.recv()), vec![op::RST]);
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"last words");
    assert_eq!(d.dev.muxer().connection_count(), 0);
}

#[test]
fn host_half_close_becomes_shutdown_send_and_host_close_full_shutdown() {
    let mut d = Driver::new();
    let s = established(&mut d, 5001, 1234, 4096);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let got = d.pump_host();
    assert_eq!(ops(&got), vec![op::SHUTDOWN]);
    assert_eq!(got[0].hdr.flags, SHUTDOWN_SEND);
    let s2 = established(&mut d, 5002, 1235, 4096);
    (&s2).write_all(b"bye").unwrap();
    drop(s2);
    let got = d.pump_host();
    assert_eq!(
        ops(&got),
        vec![op::RW, op::SHUTDOWN],
        "data first, then the shutdown"
    );
    assert_eq!(got[1].hdr.flags, SHUTDOWN_SEND | SHUTDOWN_RCV);
    drop(s);
}

#[test]
fn malformed_chains_are_returned_without_panicking() {
    let mut d = Driver::new();
    let _l = d.dev.handle().listen(5001).unwrap();
    let hdr = Driver::hdr(1234, 5001, op::REQUEST, 4096, 0).to_bytes();
    let h = d.alloc(&hdr);
    // 1. Header split short: 10 bytes only.
    d.add_chain(TX_QUEUE, &[(h, 10, false)]);
    // 2. Header in a device-writable descriptor (wrong direction).
    d.add_chain(TX_QUEUE, &[(h, HDR_SIZE as u32, true)]);
    // 3. Buffer outside guest memory.
    d.add_chain(TX_QUEUE, &[(0xffff_f000_0000, HDR_SIZE as u32, false)]);
    // 4. Header claims 1 MiB of payload.
    let mut big = Driver::hdr(1234, 5001, op::RW, 4096, 0);
    big.len = 1 << 20;
    let b = d.alloc(&big.to_bytes());
    d.add_chain(TX_QUEUE, &[(b, HDR_SIZE as u32, false)]);
    // 5. Header claims 100 bytes, chain holds 4.
    let mut short = Driver::hdr(1234, 5001, op::RW, 4096, 0);
    short.len = 100;
    let s = d.alloc(&short.to_bytes());
    let p = d.alloc(b"abcd");
    d.add_chain(TX_QUEUE, &[(s, HDR_SIZE as u32, false), (p, 4, false)]);
    // 6. A descriptor loop: next points back to itself.
    let head = 5u16;
    d.add_raw(TX_QUEUE, &[(h, 8, F_NEXT, head)]);
    // 7. Next index beyond the queue size.
    d.add_raw(TX_QUEUE, &[(h, 8, F_NEXT, 4000)]);
    d.dev.process_queue(TX_QUEUE);
    let used = d.used(TX_QUEUE);
    assert_eq!(used.len(), 7, "every chain is returned: {used:?}");
    assert!(used.iter().all(|&(_, len)| len == 0));
    d.give_rx(4, 4096);
    assert!(d.recv().is_empty(), "nothing was accepted");
    assert_eq!(d.dev.muxer().connection_count(), 0);
    // A well-formed request still works afterwards.
    d.send_op(1234, 5001, op::REQUEST, 4096, 0);
    d.give_rx(1, 4096);
    assert_eq!(ops(&d.recv()), vec![op::RESPONSE]);
}

#[test]
fn rx_buffers_smaller_than_a_packet_split_it_and_tiny_ones_are_skipped() {
    let mut d = Driver::new();
    let mut s = established(&mut d, 5001, 1234, 64 * 1024);
    s.write_all(&[9u8; 100]).unwrap();
    let tiny = d.alloc(&[0u8; 8]);
    d.add_chain(RX_QUEUE, &[(tiny, 8, true)]);
    d.give_rx(3, 40); // 40 payload bytes each
    d.dev.process_backend();
    let used = d.used(RX_QUEUE);
    // The 8-byte buffer is returned empty; three 40-byte buffers carry 40 + 40 + 20.
    assert_eq!(used.len(), 4);
    assert_eq!(used[0].1, 0);
    let lens: Vec<u32> = used[1..].iter().map(|u| u.1 - HDR_SIZE as u32).collect();
    assert_eq!(lens, vec![40, 40, 20]);
}

#[test]
fn unix_socket_bridge_speaks_connect_ok() {
    let dir = tempfile_dir();
    let path = dir.join("vsock.sock");
    let mut d = Driver::new();
    d.dev
        .set_uds_listener(UnixListener::bind(&path).unwrap())
        .unwrap();
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c.write_all(b"CONNECT 1024\nearly").unwrap();
    let got = d.pump_host_until_some();
    assert_eq!(ops(&got), vec![op::REQUEST]);
    let local = got[0].hdr.src_port;
    d.send_op(1024, local, op::RESPONSE, 4096, 0);
    let mut line = [0u8; 14];
    c.read_exact(&mut line).unwrap();
    assert_eq!(&line, format!("OK {local}\n").as_bytes());
    let got = d.pump_host();
    assert_eq!(data(&got), b"early", "bytes sent before OK are not lost");
    d.send(Driver::hdr(1024, local, op::RW, 4096, 0), b"pong");
    let mut b = [0u8; 4];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "vessel-vsock-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_descriptor_tables_and_headers_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        let mut d = Driver::new();
        let _l = d.dev.handle().listen(5001).unwrap();
        for _ in 0..8 {
            // A header that is valid-ish half the time, random otherwise.
            let mut hdr = Driver::hdr(1234, 5001, (rng.next() % 9) as u16, rng.next() as u32, 0);
            hdr.len = if rng.next() % 2 == 0 {
                (rng.next() % 128) as u32
            } else {
                rng.next() as u32
            };
            if rng.next() % 4 == 0 {
                hdr.type_ = rng.next() as u16;
            }
            let h = d.alloc(&hdr.to_bytes());
            let p = d.alloc(&[0x5a; 128]);
            let n = 1 + (rng.next() % 4) as usize;
            let descs: Vec<(u64, u32, u16, u16)> = (0..n)
                .map(|i| {
                    let addr = match rng.next() % 4 {
                        0 => rng.next(),
                        1 => p,
                        _ => h,
                    };
                    let len = match rng.next() % 3 {
                        0 => rng.next() as u32,
                        1 => (rng.next() % 64) as u32,
                        _ => HDR_SIZE as u32,
                    };
                    let mut flags = (rng.next() % 8) as u16;
                    if i + 1 < n {
                        flags |= F_NEXT;
                    }
                    (addr, len, flags, (rng.next() % 300) as u16)
                })
                .collect();
            d.add_raw(TX_QUEUE, &descs);
        }
        d.dev.process_queue(TX_QUEUE);
        d.give_rx(4, (rng.next() % 64) as u32);
        d.dev.process_backend();
        let _ = d.recv();
        assert!(d.dev.muxer().connection_count() <= 8, "round {round}");
    }
}
