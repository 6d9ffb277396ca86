//! Issue 14: one DMA fabric across hosts. Two devices linked over loopback TCP, a node on
//! each: short messages are forwarded into the far mailbox, a pull of a transmit owned on the
//! other host is checked by the owner's device (key, bounds, consumed) and streamed, both ends
//! get their completions; a cut link fails what crosses it and reports the far nodes gone, a
//! restored link lets them back; a link without the run's token is refused.

use lnd::dev::client::{cut_link, ShmDevice};
use lnd::dev::engine::Engine;
use lnd::dev::linkio::LinkConfig;
use lnd::dev::server::DevServer;
use lnd::dev::{ring, CompKind, Completion, DevStatus, Desc, DmaDevice, Op};
use lnd::mem::Seg;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "fabric-link-test-9c1e77a0";
const WAIT: Duration = Duration::from_secs(20);

/// One host's device: its fabric directory, engine and link address.
struct Host {
    dir: tempfile::TempDir,
    engine: Arc<Mutex<Engine>>,
    link: SocketAddr,
}

fn host(n: u32, dial: &[(u32, SocketAddr)]) -> Host {
    host_with(n, dial, None)
}

fn host_with(n: u32, dial: &[(u32, SocketAddr)], discover: Option<String>) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let mut server = DevServer::bind(dir.path(), 40 + n as u64).unwrap();
    let cfg = LinkConfig { host: n, listen: Some("127.0.0.1:0".into()), dial: dial.iter().map(|(h, a)| (*h, a.to_string())).collect(), discover, token: TOKEN.into() };
    let link = server.link(cfg).unwrap().unwrap();
    let engine = server.engine();
    std::thread::spawn(move || server.run());
    Host { dir, engine, link }
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < WAIT, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls `d` until a completion of `kind` comes; returns it with its bytes (others are kept).
fn next(d: &mut ShmDevice, kind: CompKind, seen: &mut Vec<Completion>) -> (Completion, Vec<u8>) {
    let t0 = Instant::now();
    loop {
        let mut hit = None;
        d.poll(&mut |c, b| {
            if c.kind == kind && hit.is_none() {
                hit = Some((*c, b.to_vec()));
            } else {
                seen.push(*c);
            }
        });
        if let Some(h) = hit {
            return h;
        }
        assert!(t0.elapsed() < WAIT, "no {kind:?} completion; saw {seen:?}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn submit(d: &mut ShmDevice, tag: u64, op: Op) {
    d.submit(&Desc { tag, op }).unwrap();
    d.doorbell();
}

fn linked(h: &Host, addr: u32) -> bool {
    h.engine.lock().unwrap().is_remote(addr)
}

#[test]
#[cfg_attr(miri, ignore = "sockets and memfds are not available under Miri")]
fn a_fabric_spans_two_hosts_and_survives_a_cut_link() {
    let h0 = host(0, &[]);
    let h1 = host(1, &[(0, h0.link)]);
    const MB: usize = 24 << 20;
    let mut a = ShmDevice::connect_within(h0.dir.path(), 1, MB, ring::MB_MIN, WAIT).unwrap();
    let mut b = ShmDevice::connect_within(h1.dir.path(), 2, MB, ring::MB_MIN, WAIT).unwrap();
    until("each device knows the other's node", || linked(&h0, 2) && linked(&h1, 1));
    let mut seen = Vec::new();

    // A short message lands in the far mailbox; the sender hears it went.
    submit(&mut a, 5, Op::Smsg { dst: 2, data: b"hello over the link".to_vec() });
    let (c, bytes) = next(&mut b, CompKind::SmsgRecv, &mut seen);
    assert_eq!((c.peer, bytes.as_slice()), (1, &b"hello over the link"[..]));
    let (c, _) = next(&mut a, CompKind::SmsgSent, &mut seen);
    assert_eq!((c.status, c.tag), (DevStatus::Ok, 5));

    // B sets up 16 MiB (twice the link's window) for A; A pulls it from the other host.
    let len = 16u32 << 20;
    let pattern: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    b.mem().write(0, &pattern).unwrap();
    let (bk, ak) = (b.key(), a.key());
    submit(&mut b, 7, Op::TxSetup { key: bk, frags: vec![Seg { off: 0, len: len / 2 }, Seg { off: (len / 2) as u64, len: len / 2 }], peer: 1 });
    let (ready, _) = next(&mut b, CompKind::TxReady, &mut seen);
    assert_eq!(ready.status, DevStatus::Ok);
    // Out of the transmit's bounds: refused by the owner's device, the transmit stays.
    submit(&mut a, 8, Op::Pull { src: 2, cookie: ready.cookie, tx_off: 1, key: ak, frags: vec![Seg { off: 0, len }] });
    assert_eq!(next(&mut a, CompKind::PullDone, &mut seen).0.status, DevStatus::OutOfBounds);
    submit(&mut a, 9, Op::Pull { src: 2, cookie: ready.cookie, tx_off: 0, key: ak, frags: vec![Seg { off: 4096, len }] });
    let (done, _) = next(&mut a, CompKind::PullDone, &mut seen);
    assert_eq!((done.status, done.len, done.tag, done.peer), (DevStatus::Ok, len, 9, 2));
    assert_eq!(a.mem().to_vec(4096, len as usize).unwrap(), pattern, "every byte crossed intact");
    let (txd, _) = next(&mut b, CompKind::TxDone, &mut seen);
    assert_eq!((txd.status, txd.len, txd.tag, txd.peer), (DevStatus::Ok, len, 7, 1));
    // Consumed: a second pull is refused as on one host.
    submit(&mut a, 10, Op::Pull { src: 2, cookie: ready.cookie, tx_off: 0, key: ak, frags: vec![Seg { off: 0, len: 8 }] });
    assert_eq!(next(&mut a, CompKind::PullDone, &mut seen).0.status, DevStatus::TxConsumed);
    let st = h0.engine.lock().unwrap().stats;
    assert_eq!((st.link_pulls, st.link_bytes, st.link_smsgs), (1, len as u64, 1), "the puller's device counts what crossed");

    // The link is cut: each side hears the other's node is gone, and sends fail at once.
    cut_link(h1.dir.path(), 0, true).unwrap();
    assert_eq!(next(&mut a, CompKind::PeerDown, &mut seen).0.peer, 2);
    assert_eq!(next(&mut b, CompKind::PeerDown, &mut seen).0.peer, 1);
    submit(&mut a, 11, Op::Smsg { dst: 2, data: vec![1; 8] });
    assert_eq!(next(&mut a, CompKind::SmsgSent, &mut seen).0.status, DevStatus::NoSuchPeer);
    assert!(h0.engine.lock().unwrap().stats.link_downs >= 1);
    // Restored: the dialling side links again and the nodes see each other as new peers.
    cut_link(h1.dir.path(), 0, false).unwrap();
    until("the link is back", || linked(&h0, 2) && linked(&h1, 1));
    submit(&mut b, 12, Op::Smsg { dst: 1, data: vec![2; 8] });
    assert_eq!(next(&mut a, CompKind::SmsgRecv, &mut seen).1, vec![2; 8]);
    assert_eq!(next(&mut b, CompKind::SmsgSent, &mut seen).0.status, DevStatus::Ok);

    // A node that leaves one host is gone on the other too.
    drop(b);
    assert_eq!(next(&mut a, CompKind::PeerDown, &mut seen).0.peer, 2);
    until("host 0 forgot node 2", || !linked(&h0, 2));
}

/// A link that does not open with the run's token is refused: the device never hears its HELLO.
#[test]
#[cfg_attr(miri, ignore = "sockets are not available under Miri")]
fn a_link_without_the_run_token_is_refused() {
    use std::io::{Read, Write};
    let h0 = host(0, &[]);
    for first in ["{\"token\":\"another-run-0123456789\"}\n".to_string(), "\n".to_string()] {
        let mut s = std::net::TcpStream::connect(h0.link).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(first.as_bytes()).unwrap();
        let mut hello = Vec::new();
        lnd::dev::link::LinkFrame::Hello { host: 5, addrs: vec![77] }.emit(&mut hello);
        let _ = s.write_all(&hello);
        let mut b = [0u8; 64];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "closed without a word");
        assert!(!linked(&h0, 77), "a refused link announced nobody");
    }
}

/// On an orchestrator each device is numbered by its address and finds the others by a name
/// that resolves to all of them (a headless Service): the higher-numbered one dials.
#[test]
#[cfg_attr(miri, ignore = "sockets are not available under Miri")]
fn devices_found_by_name_link_up() {
    let low = u32::from(std::net::Ipv4Addr::new(127, 0, 0, 1));
    let h0 = host(low, &[]);
    let h1 = host_with(low + 1, &[], Some(format!("localhost:{}", h0.link.port())));
    let _a = ShmDevice::connect_within(h0.dir.path(), 1, 1 << 16, ring::MB_MIN, WAIT).unwrap();
    let _b = ShmDevice::connect_within(h1.dir.path(), 2, 1 << 16, ring::MB_MIN, WAIT).unwrap();
    until("the devices found each other", || linked(&h0, 2) && linked(&h1, 1));
}

/// Asymmetry and the fault injectors hold across the link: a transmit set up for another node
/// cannot be pulled from the other host; the owner's device fails pulls (`dma_pullfail`, both
/// ends hear) and damages pulled bytes (`dma_corrupt`) as it would on one machine.
#[test]
#[cfg_attr(miri, ignore = "sockets and memfds are not available under Miri")]
fn asymmetry_and_device_faults_hold_across_the_link() {
    use lnd::dev::engine::FaultConfig;
    let h0 = host(0, &[]);
    let h1 = host(1, &[(0, h0.link)]);
    let mut a = ShmDevice::connect_within(h0.dir.path(), 1, 1 << 20, ring::MB_MIN, WAIT).unwrap();
    let mut b = ShmDevice::connect_within(h1.dir.path(), 2, 1 << 20, ring::MB_MIN, WAIT).unwrap();
    until("linked", || linked(&h0, 2) && linked(&h1, 1));
    let mut seen = Vec::new();
    let (ak, bk) = (a.key(), b.key());
    let setup = |b: &mut ShmDevice, tag: u64, peer: u32, seen: &mut Vec<Completion>| {
        submit(b, tag, Op::TxSetup { key: bk, frags: vec![Seg { off: 0, len: 4096 }], peer });
        let (c, _) = next(b, CompKind::TxReady, seen);
        assert_eq!(c.status, DevStatus::Ok);
        c.cookie
    };
    let pull = |a: &mut ShmDevice, cookie: u64, seen: &mut Vec<Completion>| {
        submit(a, 1, Op::Pull { src: 2, cookie, tx_off: 0, key: ak, frags: vec![Seg { off: 0, len: 4096 }] });
        next(a, CompKind::PullDone, seen).0.status
    };
    // Set up for node 3: node 1 may not pull it, from any host.
    let c = setup(&mut b, 1, 3, &mut seen);
    assert_eq!(pull(&mut a, c, &mut seen), DevStatus::NoSuchTx);
    // The owner's device fails every pull: both ends hear it.
    h1.engine.lock().unwrap().set_faults(FaultConfig { pullfail: 1, ..Default::default() }, 7);
    let c = setup(&mut b, 2, 1, &mut seen);
    assert_eq!(pull(&mut a, c, &mut seen), DevStatus::Fault);
    assert_eq!(next(&mut b, CompKind::TxDone, &mut seen).0.status, DevStatus::Fault);
    assert_eq!(h1.engine.lock().unwrap().stats.pullfails, 1);
    // ... and damages every pulled transfer: one byte differs, the pull itself succeeds.
    h1.engine.lock().unwrap().set_faults(FaultConfig { corrupt: 1, ..Default::default() }, 7);
    b.mem().write(0, &[0x5a; 4096]).unwrap();
    let c = setup(&mut b, 3, 1, &mut seen);
    assert_eq!(pull(&mut a, c, &mut seen), DevStatus::Ok);
    let got = a.mem().to_vec(0, 4096).unwrap();
    assert_eq!(got.iter().filter(|&&x| x != 0x5a).count(), 1, "one byte damaged");
    assert_eq!(h1.engine.lock().unwrap().stats.corrupted, 1);
}
