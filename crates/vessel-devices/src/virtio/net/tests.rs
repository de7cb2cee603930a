//! The device driven through its queues by [`super::test_utils::Driver`]: over the fake
//! backend (TX and RX paths, buffer shortage, malformed chains, features and offloads), and
//! over a real tap in a scratch network namespace (skipped, saying why, without root or
//! `/dev/net/tun`).

use std::os::fd::{AsRawFd, RawFd};

use super::device::features::*;
use super::device::{
    add_used_at_once, tap_offloads, OFFERED_FEATURES, RX_QUEUE, TX_QUEUE, VIRTIO_NET_S_LINK_UP,
};
use super::event_handler::BACKEND;
use super::packet::{HDR_LEN, MAX_PACKET_LEN, NUM_BUFFERS_OFFSET};
use super::test_utils::{frame, packet, Driver, F_NEXT, F_WRITE, MAC};
use crate::event::{EventHandler, Serving};
use crate::virtio::{VirtioDevice, INT_USED_RING, VIRTIO_F_VERSION_1};

/// Whether `fd` is readable now.
fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd that lives across the call; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}

#[test]
fn config_space_holds_the_mac_and_link_up_and_features_leave_mtu_out() {
    let d = Driver::new();
    let mut cfg = [0xffu8; 12];
    d.dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..6], &MAC);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), VIRTIO_NET_S_LINK_UP);
    assert_eq!(&cfg[8..], &[0; 4], "no max_virtqueue_pairs without MQ");
    let mut status = [0u8; 2];
    d.dev.read_config(6, &mut status);
    assert_eq!(status, [1, 0]);
    let f = d.dev.features();
    assert_eq!(f & (1 << 3), 0, "VIRTIO_NET_F_MTU not offered");
    assert_eq!(f & (1 << 22), 0, "VIRTIO_NET_F_MQ not offered");
    assert_eq!(f & (1 << 17), 0, "VIRTIO_NET_F_CTRL_VQ not offered");
    for bit in [VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF] {
        assert_ne!(f & bit, 0);
    }
    assert_eq!(d.dev.device_type(), 1);
    assert_eq!(d.dev.queue_max_sizes().len(), 2);
}

#[test]
fn a_tx_chain_reaches_the_backend_with_its_header_unchanged() {
    let mut d = Driver::new();
    let mut p = packet(&frame(1514, 7));
    // A partial checksum the host is to finish: flags NEEDS_CSUM, csum_start 34, offset 16.
    p[0] = 1;
    p[6..8].copy_from_slice(&34u16.to_le_bytes());
    p[8..10].copy_from_slice(&16u16.to_le_bytes());
    // Header split from the frame, and the frame split again, as Linux may lay it out.
    let head = d.send(&p, &[HDR_LEN, 600]);
    assert_eq!(d.fake().lock().tx, vec![p]);
    assert_eq!(d.used(TX_QUEUE), vec![(u32::from(head), 0)]);
    assert_ne!(d.irq.status() & INT_USED_RING, 0);
    assert_eq!(d.dev.stats().tx_frames, 1);
}

#[test]
fn a_frame_the_backend_cannot_take_is_dropped_and_its_chain_returned() {
    let mut d = Driver::new();
    d.fake().lock().tx_error = Some(std::io::ErrorKind::WouldBlock);
    let head = d.send(&packet(&frame(60, 1)), &[]);
    assert_eq!(d.used(TX_QUEUE), vec![(u32::from(head), 0)]);
    assert_eq!(d.dev.stats().tx_dropped, 1);
    d.fake().lock().tx_error = None;
    d.send(&packet(&frame(60, 2)), &[]);
    assert_eq!(d.fake().lock().tx, vec![packet(&frame(60, 2))]);
}

#[test]
fn a_backend_frame_fills_one_buffer_with_num_buffers_one() {
    let mut d = Driver::new();
    let mut p = packet(&frame(1514, 3));
    p[0] = 2; // DATA_VALID, kept as the host gave it
    d.fake().push(p.clone());
    d.give_rx(4, 2048);
    let got = d.recv();
    assert_eq!(got.len(), 1);
    let (bytes, n) = &got[0];
    assert_eq!(*n, 1);
    assert_eq!(&bytes[..NUM_BUFFERS_OFFSET], &p[..NUM_BUFFERS_OFFSET]);
    assert_eq!(&bytes[HDR_LEN..], &p[HDR_LEN..]);
    assert_eq!(d.rx_bufs.len(), 3, "three buffers still offered");
    assert_eq!(d.dev.stats().rx_frames, 1);
}

#[test]
fn a_gso_sized_frame_spans_merged_buffers_and_says_how_many() {
    let mut d = Driver::new();
    let p = packet(&frame(65_000, 9));
    d.fake().push(p.clone());
    d.give_rx(20, 4096);
    let got = d.recv();
    assert_eq!(got.len(), 1);
    let want_bufs = p.len().div_ceil(4096) as u16; // 65012 bytes: 16 buffers
    assert_eq!(got[0].1, want_bufs);
    assert_eq!(want_bufs, 16);
    assert_eq!(&got[0].0[HDR_LEN..], &p[HDR_LEN..]);
    assert_eq!(d.rx_bufs.len(), 4);

    // The largest packet the device carries fits too.
    let big = packet(&frame(MAX_PACKET_LEN - HDR_LEN, 4));
    d.fake().push(big.clone());
    d.give_rx(16, 4096);
    let got = d.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.len(), MAX_PACKET_LEN);
    assert_eq!(&got[0].0[HDR_LEN..], &big[HDR_LEN..]);
}

#[test]
fn without_buffers_the_tap_is_not_watched_and_frames_wait_for_buffers() {
    let mut d = Driver::new();
    assert!(d.dev.rx_armed(), "watched once activated");
    let frames: Vec<Vec<u8>> = (0..3).map(|i| packet(&frame(100 + i, i as u8))).collect();
    for f in &frames {
        d.fake().push(f.clone());
    }
    assert!(
        readable(d.dev.event_fd()),
        "a ready backend wakes the device thread"
    );
    d.dev.handle_event(BACKEND);
    // One frame was read and is held; the backend is no longer watched, though it is readable.
    assert_eq!(d.fake().lock().reads, 1);
    assert!(!d.dev.rx_armed());
    assert!(!readable(d.dev.event_fd()), "nothing left to spin on");
    assert!(d.recv().is_empty());

    d.offer_rx(3, 2048);
    d.dev.queue_evts[RX_QUEUE].write(1).unwrap();
    d.dev.handle_event(RX_QUEUE as u32);
    let got: Vec<Vec<u8>> = d.recv().into_iter().map(|(p, _)| p).collect();
    assert_eq!(got.len(), 3);
    for (g, f) in got.iter().zip(&frames) {
        assert_eq!(&g[HDR_LEN..], &f[HDR_LEN..]);
    }
    assert!(d.dev.rx_armed());
    assert!(!readable(d.dev.event_fd()), "backend drained");
}

/// A merged frame's used entries appear to the driver all at once: the used index moves past
/// every one of them in a single store (a driver polling on another vCPU that saw the first
/// entry alone would read its `num_buffers` and drop the frame), across the 16-bit index's wrap
/// and the ring's; with an invalid head among them, none is published.
#[test]
fn a_merged_frame_s_used_entries_are_published_together_or_not_at_all() {
    use virtio_queue::QueueT;
    use vm_memory::{Address, Bytes, GuestAddress};
    let d = Driver::new();
    let mut q = Driver::<super::test_utils::FakeBackend>::queue(RX_QUEUE);
    let ring = q.used_ring();
    let idx = |d: &Driver| d.mem.read_obj::<u16>(GuestAddress(ring + 2)).unwrap();
    let size = q.size();
    q.set_next_used(u16::MAX - 1);
    add_used_at_once(&mut q, &d.mem, &[(3, 4096), (7, 4096), (1, 17)]).unwrap();
    assert_eq!(
        idx(&d),
        1,
        "one store moved the index 3 past 65534, wrapping"
    );
    assert_eq!(q.next_used(), 1);
    let elem = |slot: u16| {
        let a = GuestAddress(ring + 4 + u64::from(slot % size) * 8);
        (
            d.mem.read_obj::<u32>(a).unwrap(),
            d.mem.read_obj::<u32>(a.unchecked_add(4)).unwrap(),
        )
    };
    assert_eq!(elem(u16::MAX - 1), (3, 4096));
    assert_eq!(elem(u16::MAX), (7, 4096));
    assert_eq!(elem(0), (1, 17));
    // Head `size` is out of range: nothing is published, the queue's position stays.
    let err = add_used_at_once(&mut q, &d.mem, &[(2, 100), (size, 100)]).unwrap_err();
    assert!(
        matches!(err, virtio_queue::Error::InvalidDescriptorIndex),
        "{err:?}"
    );
    assert_eq!((idx(&d), q.next_used()), (1, 1));
}

#[test]
fn a_frame_waits_for_more_buffers_when_the_queue_runs_dry_mid_frame() {
    let mut d = Driver::new();
    let p = packet(&frame(10_000, 5));
    d.fake().push(p.clone());
    d.give_rx(1, 4096);
    assert!(d.recv().is_empty());
    assert!(!d.dev.rx_armed());
    d.give_rx(2, 4096);
    let got = d.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, 3);
    assert_eq!(&got[0].0[HDR_LEN..], &p[HDR_LEN..]);
}

#[test]
fn unmerged_a_frame_bigger_than_its_chain_is_dropped_and_the_chain_kept() {
    let mut d = Driver::with_features(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC);
    d.fake().push(packet(&frame(3000, 1)));
    let small = packet(&frame(60, 2));
    d.fake().push(small.clone());
    d.give_rx(1, 1526);
    let got = d.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, 1);
    assert_eq!(got[0].0, {
        let mut s = small.clone();
        s[NUM_BUFFERS_OFFSET] = 1;
        s
    });
    assert_eq!(d.dev.stats().rx_dropped, 1);

    // Several descriptors in one chain (Linux's "big packets" without MRG_RXBUF) hold one frame.
    let big = packet(&frame(3000, 3));
    d.fake().push(big.clone());
    let a = d.alloc(&[0; 2048]);
    let b = d.alloc(&[0; 2048]);
    let head = d.add_chain(RX_QUEUE, &[(a, 2048, true), (b, 2048, true)]);
    d.dev.process_queue(RX_QUEUE);
    let used = d.used(RX_QUEUE);
    assert_eq!(used, vec![(u32::from(head), big.len() as u32)]);
}

#[test]
fn malformed_chains_are_returned_unused_and_counted() {
    let mut d = Driver::new();
    let good = d.alloc(&packet(&frame(60, 1)));
    let far = 0xffff_0000_0000u64;
    let tx_bad: Vec<Vec<(u64, u32, u16, u16)>> = vec![
        vec![(good, 72, F_WRITE, 0)], // device-writable TX descriptor
        vec![(far, 72, 0, 0)],        // outside guest memory
        vec![(good, 8, 0, 0)],        // shorter than the header
        vec![(good, 40_000, F_NEXT, 1), (good, 40_000, 0, 0)], // too long
        vec![(good, u32::MAX, 0, 0)], // length past the end of memory
    ];
    let mut heads = Vec::new();
    for c in &tx_bad {
        let h = d.add_raw(TX_QUEUE, c);
        heads.push((u32::from(h), 0));
    }
    d.dev.process_queue(TX_QUEUE);
    assert_eq!(d.used(TX_QUEUE), heads);
    assert!(d.fake().lock().tx.is_empty());
    assert_eq!(d.dev.stats().bad_chains, tx_bad.len() as u64);

    // A descriptor chained to itself ends at the ring size and is still returned once.
    let slot = (tx_bad.iter().map(Vec::len).sum::<usize>()) as u16;
    assert_eq!(d.add_raw(TX_QUEUE, &[(good, 16, F_NEXT, slot)]), slot);
    d.dev.process_queue(TX_QUEUE);
    assert_eq!(d.used(TX_QUEUE).len(), 1);

    let buf = d.alloc(&[0; 2048]);
    let rx_bad: Vec<Vec<(u64, u32, u16, u16)>> = vec![
        vec![(buf, 2048, 0, 0)],       // device-readable RX descriptor
        vec![(far, 2048, F_WRITE, 0)], // outside guest memory
        vec![(buf, 8, F_WRITE, 0)],    // cannot hold a header
    ];
    let mut bad_heads = Vec::new();
    for c in &rx_bad {
        bad_heads.push(u32::from(d.add_raw(RX_QUEUE, c)));
    }
    let p = packet(&frame(500, 8));
    d.fake().push(p.clone());
    d.give_rx(1, 2048);
    let used = d.used(RX_QUEUE);
    assert_eq!(
        used[..3].to_vec(),
        bad_heads.iter().map(|&h| (h, 0)).collect::<Vec<_>>()
    );
    assert_eq!(used.len(), 4);
    assert_eq!(used[3].1, p.len() as u32);
}

#[test]
fn tap_offloads_follow_what_the_guest_acked() {
    use libc::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
    assert_eq!(
        tap_offloads(OFFERED_FEATURES),
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    );
    assert_eq!(tap_offloads(VIRTIO_F_VERSION_1), 0);
    assert_eq!(
        tap_offloads(VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6),
        0
    );
    assert_eq!(tap_offloads(VIRTIO_NET_F_GUEST_CSUM), TUN_F_CSUM);
    assert_eq!(
        tap_offloads(VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO6),
        TUN_F_CSUM | TUN_F_TSO6
    );
    // Host-side offloads (the guest's TX) never change the tap's.
    assert_eq!(tap_offloads(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4), 0);

    let mut d = Driver::with_features(
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4,
    );
    assert_eq!(d.fake().lock().offloads, vec![TUN_F_CSUM | TUN_F_TSO4]);
    d.dev.reset();
    assert_eq!(d.fake().lock().offloads.last(), Some(&0));
    assert!(!d.dev.rx_armed());
    assert_eq!(d.dev.acked_features(), 0);
}

#[test]
fn the_device_thread_watches_both_kicks_and_the_backend_and_shutdown_closes_it() {
    let mut d = Driver::new();
    assert_eq!(d.dev.serving(), Serving::EventLoop);
    let sources = d.dev.event_sources();
    let ids: Vec<u32> = sources.iter().map(|s| s.id).collect();
    assert_eq!(ids, [0, 1, BACKEND]);
    assert_eq!(sources[2].fd, d.dev.event_fd());
    let kicks = d.dev.queue_events();
    assert_eq!(kicks.len(), 2);
    assert_eq!(kicks[1].1.as_raw_fd(), sources[1].fd);

    // A TX kick through the eventfd is consumed and served.
    let p = packet(&frame(60, 1));
    let a = d.alloc(&p);
    d.add_chain(TX_QUEUE, &[(a, p.len() as u32, false)]);
    d.dev.queue_evts[TX_QUEUE].write(1).unwrap();
    d.dev.handle_event(TX_QUEUE as u32);
    assert!(d.dev.queue_evts[TX_QUEUE].read().is_err(), "kick consumed");
    assert_eq!(d.fake().lock().tx.len(), 1);

    d.dev.shutdown();
    assert!(d.fake().lock().closed);
    d.fake().push(packet(&frame(60, 2)));
    assert!(
        !readable(d.dev.event_fd()),
        "a closed device watches nothing"
    );
}

#[test]
fn before_activation_a_ready_backend_is_not_watched() {
    let backend = super::test_utils::FakeBackend::new();
    let mut dev = super::Net::new(MAC, backend.clone()).unwrap();
    backend.push(packet(&frame(60, 1)));
    assert!(!readable(dev.event_fd()));
    dev.handle_event(BACKEND);
    assert_eq!(backend.lock().reads, 0);
}

/// Tests against a real tap in a scratch network namespace.
mod real_tap {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::virtio::net::Tap;

    const ETHERTYPE: u16 = 0x88b5; // IEEE 802 local experimental
    const TAP: &str = "vtest0";

    /// Why a real-tap test cannot run here, if it cannot.
    fn skip_reason() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root".into());
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Some("no /dev/net/tun".into());
        }
        None
    }

    /// Runs `f` on a thread of its own in a new network namespace (the unshare affects only
    /// that thread; descriptors opened there work from any thread).
    fn in_scratch_netns<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        std::thread::spawn(move || {
            // SAFETY: unshare takes flags only; it changes this thread's namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "unshare(CLONE_NEWNET): {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "namespace thread panicked".to_string())?
    }

    /// The index of interface `name` in the calling thread's namespace (0: none).
    fn ifindex(name: &str) -> u32 {
        let c = std::ffi::CString::new(name).unwrap();
        // SAFETY: `c` is NUL-terminated and outlives the call.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    }

    /// Sets interface `name` up (SIOCSIFFLAGS through a datagram socket).
    fn link_up(name: &str) {
        // SAFETY: plain socket(2); the result is checked.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(s >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `ifreq` is plain old data; all zeroes is valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, b) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = b as libc::c_char;
        }
        // SAFETY: `s` is open; SIOCGIFFLAGS/SIOCSIFFLAGS read and write one `ifreq`, `ifr`,
        // alive across both calls; `s` is closed once, after them.
        unsafe {
            assert_eq!(libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr), 0);
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as i16;
            assert_eq!(libc::ioctl(s, libc::SIOCSIFFLAGS, &mut ifr), 0);
            libc::close(s);
        }
    }

    /// An AF_PACKET socket bound to interface `name` (all protocols), non-blocking.
    fn packet_socket(name: &str) -> std::os::fd::OwnedFd {
        use std::os::fd::FromRawFd;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let s = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        assert!(
            s >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `s` was just opened and is owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(s) };
        // SAFETY: `sockaddr_ll` is plain old data; all zeroes is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex(name) as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size given, alive across the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        fd
    }

    /// An Ethernet frame of our test type from `src` to `dst`.
    fn eth(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETHERTYPE.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn wait_readable(fd: RawFd, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if readable(fd) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn frames_cross_a_real_tap_both_ways() {
        let name = "frames_cross_a_real_tap_both_ways";
        if let Some(why) = skip_reason() {
            println!("{name}: skipped: {why}");
            return;
        }
        let opened = in_scratch_netns(|| {
            let tap = Tap::open(TAP).map_err(|e| vessel_error_chain(&e))?;
            link_up(TAP);
            Ok::<_, String>((tap, packet_socket(TAP)))
        });
        let (tap, sock) = match opened {
            Ok(Ok(v)) => v,
            Ok(Err(e)) | Err(e) => {
                println!("{name}: skipped: {e}");
                return;
            }
        };
        let mut d = Driver::with_backend(tap, OFFERED_FEATURES);

        // Guest to host: the tap takes the header off, the namespace sees the frame.
        let out = eth([0xff; 6], MAC, &frame(200, 1));
        d.send(&packet(&out), &[HDR_LEN]);
        assert_eq!(d.dev.stats().tx_frames, 1, "{:?}", d.dev.stats());
        let mut buf = vec![0u8; 4096];
        let end = Instant::now() + Duration::from_secs(5);
        let seen = loop {
            // SAFETY: `buf` is writable for its length across the call.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 && buf[12..14] == ETHERTYPE.to_be_bytes() {
                break buf[..n as usize].to_vec();
            }
            assert!(Instant::now() < end, "frame never reached the namespace");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(seen, out);

        // Host to guest: a frame sent on the interface comes out of the tap into RX buffers.
        d.give_rx(16, 4096);
        let back = eth(MAC, [0x02, 0, 0, 0, 0, 9], &frame(300, 2));
        // SAFETY: `back` is readable for its length across the call.
        let n = unsafe { libc::send(sock.as_raw_fd(), back.as_ptr().cast(), back.len(), 0) };
        assert_eq!(
            n,
            back.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
        let end = Instant::now() + Duration::from_secs(5);
        let got = loop {
            assert!(
                wait_readable(d.dev.event_fd(), Duration::from_secs(5)),
                "the device's event fd never became readable"
            );
            d.dev.handle_event(BACKEND);
            // The namespace may send its own frames (IPv6 neighbour discovery): skip them.
            let ours = d
                .recv()
                .into_iter()
                .find(|(p, _)| p[HDR_LEN + 12..HDR_LEN + 14] == ETHERTYPE.to_be_bytes());
            if let Some(p) = ours {
                break p;
            }
            assert!(Instant::now() < end, "frame never reached the guest");
            d.give_rx(4, 4096);
        };
        assert_eq!(got.1, 1);
        assert_eq!(&got.0[HDR_LEN..], &back[..]);

        d.dev.shutdown();
    }

    #[test]
    fn a_tap_the_device_created_vanishes_when_closed_and_offloads_apply() {
        let name = "a_tap_the_device_created_vanishes_when_closed_and_offloads_apply";
        if let Some(why) = skip_reason() {
            println!("{name}: skipped: {why}");
            return;
        }
        let r = in_scratch_netns(|| {
            let mut tap = Tap::open(TAP).map_err(|e| vessel_error_chain(&e))?;
            let before = ifindex(TAP);
            tap.set_offload(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6)
                .map_err(|e| vessel_error_chain(&e))?;
            // Opening the same name again attaches to the same single-queue tap: refused
            // while in use (EBUSY).
            let second = Tap::open(TAP).is_err();
            tap.close();
            let after = ifindex(TAP);
            Ok::<_, String>((before, second, after))
        });
        match r {
            Ok(Ok((before, second, after))) => {
                assert_ne!(before, 0, "tap created");
                assert!(second, "a busy tap is not shared");
                assert_eq!(after, 0, "tap gone with its fd");
            }
            Ok(Err(e)) | Err(e) => println!("{name}: skipped: {e}"),
        }
        let bad = Tap::open("x".repeat(16).as_str()).unwrap_err().to_string();
        assert!(bad.contains("not 1..=15 bytes"), "{bad}");
    }

    fn vessel_error_chain(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut src = e.source();
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        s
    }
}
