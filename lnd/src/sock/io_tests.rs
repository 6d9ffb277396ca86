//! ThreadIo against real loopback sockets: reserved source ports, read-ahead bounds, the
//! connection cap.

use std::io::Read;
use super::*;
use std::net::TcpListener;

fn io() -> ThreadIo {
    ThreadIo::new(Arc::new(|| {}))
}

fn poll_until(io: &mut ThreadIo, mut f: impl FnMut(&SockInput) -> bool) -> SockInput {
    let t0 = Instant::now();
    loop {
        let mut v = Vec::new();
        io.poll(&mut v);
        if let Some(i) = v.into_iter().find(|i| f(i)) {
            return i;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Item 11: every connection gets TCP keepalive (Lustre: 30 s idle, 5 s interval), so a
/// peer that vanished without a RST is noticed, idle or not.
#[test]
fn connections_have_tcp_keepalive() {
    let mut io = io();
    io.listen("127.0.77.1:20988".parse().unwrap()).unwrap();
    let _c = TcpStream::connect("127.0.77.1:20988").unwrap();
    let SockInput::Accepted { conn, .. } = poll_until(&mut io, |i| matches!(i, SockInput::Accepted { .. })) else { unreachable!() };
    let t0 = Instant::now();
    while !io.shared.streams.lock().unwrap().contains_key(&conn) {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = io.shared.streams.lock().unwrap()[&conn].try_clone().unwrap();
    let s = socket2::SockRef::from(&s);
    assert!(s.keepalive().unwrap(), "no SO_KEEPALIVE");
    assert_eq!(s.keepalive_time().unwrap(), Duration::from_secs(30));
    assert_eq!(s.keepalive_interval().unwrap(), Duration::from_secs(5));
    // Data the peer never ACKs (sk_wmem_queued in ksocknal_find_timed_out_conn) ends the
    // connection after sock_timeout, not after minutes of retransmissions.
    assert_eq!(s.tcp_user_timeout().unwrap(), Some(Duration::from_secs(50)), "unacknowledged data has no deadline");
}

/// Writes `total` bytes to `c` in 1 MiB pieces on a thread of its own.
fn flood(mut c: TcpStream, total: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let chunk = vec![7u8; 1 << 20];
        let mut sent = 0;
        while sent < total && c.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
    })
}

/// Consumes (polls and gives back) reads until `total` bytes have come, `got` of them already.
fn consume_to(io: &mut ThreadIo, mut got: usize, total: usize) {
    let t0 = Instant::now();
    while got < total {
        assert!(t0.elapsed() < Duration::from_secs(10), "reading stopped at {got}");
        let mut v = Vec::new();
        io.poll(&mut v);
        for i in v {
            if let SockInput::Data { conn, data } = i {
                got += data.len();
                io.recycle(conn, data);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Item 8: what the LND took but has not consumed (a parked connection's backlog) still
/// counts: a connection whose reads are taken and never given back stops at MAX_UNREAD of
/// its own. (Counting only what waits in the channel let a debug run under load hold 51 MB.)
#[test]
fn reads_taken_but_not_consumed_stop_their_connection() {
    let mut io = io();
    io.listen("127.0.77.6:20988".parse().unwrap()).unwrap();
    let c = TcpStream::connect("127.0.77.6:20988").unwrap();
    let total = 3 * MAX_UNREAD;
    let w = flood(c, total);
    // The LND takes everything (as into a parked connection's backlog) and consumes none.
    let mut kept = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2000) {
        let mut v = Vec::new();
        io.poll(&mut v);
        kept.extend(v.into_iter().filter_map(|i| if let SockInput::Data { conn, data } = i { Some((conn, data)) } else { None }));
        std::thread::sleep(Duration::from_millis(2));
    }
    let taken: usize = kept.iter().map(|(_, d)| d.len()).sum();
    assert!(taken <= MAX_UNREAD + READ_CHUNK, "{taken} bytes read for a connection whose reads were not consumed");
    // Consumed: reading goes on to the end.
    let got = taken;
    for (conn, d) in kept {
        io.recycle(conn, d);
    }
    consume_to(&mut io, got, total);
    w.join().unwrap();
}

/// Item 13: readers stop once MAX_UNREAD bytes wait for the LND.
#[test]
fn reads_wait_for_the_lnd() {
    let mut io = io();
    io.listen("127.0.77.2:20988".parse().unwrap()).unwrap();
    let c = TcpStream::connect("127.0.77.2:20988").unwrap();
    let total = 3 * MAX_UNREAD;
    let w = flood(c, total);
    std::thread::sleep(Duration::from_millis(1500));
    let mut v = Vec::new();
    io.poll(&mut v);
    let unread: usize = v.iter().map(|i| if let SockInput::Data { data, .. } = i { data.len() } else { 0 }).sum();
    assert!(unread <= MAX_UNREAD + READ_CHUNK, "{unread} bytes read ahead of the LND");
    for i in v {
        if let SockInput::Data { conn, data } = i {
            io.recycle(conn, data);
        }
    }
    // Once consumed, reading resumes to the end.
    let got = unread;
    consume_to(&mut io, got, total);
    w.join().unwrap();
}

/// Item 13: connections beyond the cap are closed at once.
#[test]
fn accepted_connections_are_capped() {
    let mut io = io();
    io.set_max_conns(2);
    io.listen("127.0.77.3:20988".parse().unwrap()).unwrap();
    let cs: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect("127.0.77.3:20988").unwrap()).collect();
    let mut third = &cs[2];
    third.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(third.read(&mut b).map_err(|e| e.kind()), Ok(0), "third connection kept");
}

/// Item 12: without a free reserved port, a connect fails instead of falling back to an
/// ephemeral port (a kernel peer in secure mode refuses those).
#[test]
fn reserved_connects_do_not_fall_back() {
    let target = TcpListener::bind("127.0.77.4:20988").unwrap();
    let _busy = TcpListener::bind("127.0.77.4:1023").unwrap();
    let to: SocketAddrV4 = "127.0.77.4:20988".parse().unwrap();
    let from = Ipv4Addr::new(127, 0, 77, 4);
    let r = connect_from(to, from, 1023..=1023, true);
    assert!(r.is_err(), "connected from {:?}", r.ok().map(|s| s.local_addr()));
    // The explicit unprivileged mode may use an ephemeral port.
    assert!(connect_from(to, from, 1023..=1023, false).is_ok());
    drop(target);
}
