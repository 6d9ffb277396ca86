//! socklnd's sans-IO core against a scripted [`SockIo`]: timeouts, port checks, refused
//! handshakes, keepalives and acceptor answers, with virtual time.

use super::io::{ConnId, SockInput, SockIo};
use super::wire::{ctype, ConnReq, Hello, KsockHdr, ACCEPTOR_MAGIC, KSOCK_MSG_NOOP, PROTO_MAGIC};
use super::{SockConfig, SockLnd};
use crate::lnd::Lnd;
use crate::lnet::{Action, EventKind, Lnet, MdSpec, NiConfig};
use crate::mem::{Mem, Seg};
use crate::wire::{Nid, ProcessId};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Script {
    inputs: VecDeque<SockInput>,
    /// Every write: (conn, bytes, tag).
    writes: Vec<(ConnId, Vec<u8>, u64)>,
    closed: Vec<ConnId>,
    /// Connects asked for: (conn, reserved port required).
    connects: Vec<(ConnId, bool)>,
    elapsed: Duration,
}

#[derive(Clone)]
struct ScriptIo {
    s: Arc<Mutex<Script>>,
    base: Instant,
}

impl SockIo for ScriptIo {
    fn listen(&mut self, _addr: SocketAddrV4) -> std::io::Result<()> {
        Ok(())
    }
    fn connect(&mut self, conn: ConnId, _to: SocketAddrV4, _from_ip: Ipv4Addr, reserved: bool) {
        self.s.lock().unwrap().connects.push((conn, reserved));
    }
    fn write(&mut self, conn: ConnId, data: Vec<u8>, tag: u64) {
        self.s.lock().unwrap().writes.push((conn, data, tag));
    }
    fn close(&mut self, conn: ConnId) {
        self.s.lock().unwrap().closed.push(conn);
    }
    fn poll(&mut self, out: &mut Vec<SockInput>) {
        out.extend(self.s.lock().unwrap().inputs.drain(..));
    }
    fn now(&self) -> Instant {
        self.base + self.s.lock().unwrap().elapsed
    }
}

const ME: &str = "127.0.0.1@tcp";
const PEER: &str = "127.0.0.2@tcp";
const PASSIVE: ConnId = 1 << 63;

/// One LNet with a socklnd over a script (the node loop, without a node).
struct T {
    lnet: Lnet,
    lnd: SockLnd<ScriptIo>,
    io: ScriptIo,
}

fn nid(s: &str) -> Nid {
    s.parse().unwrap()
}

fn t_with(cfg: SockConfig) -> T {
    let io = ScriptIo { s: Default::default(), base: Instant::now() };
    let mut lnet = Lnet::new(ProcessId::PID_LUSTRE, 1, 0);
    let ni = lnet.add_ni(NiConfig { nid: nid(ME), lnd: 1, credits: 256, peer_credits: 8 });
    let lnd = SockLnd::new(io.clone(), ni, nid(ME), ProcessId::PID_LUSTRE, 1, cfg, Mem::heap(1 << 16)).unwrap();
    T { lnet, lnd, io }
}

fn t() -> T {
    t_with(SockConfig::default())
}

fn hello(src: &str, version: u32, ct: u32, pid: u32) -> Vec<u8> {
    Hello { version, src_nid: nid(src), dst_nid: nid(ME), src_pid: pid, dst_pid: 0, src_incarnation: 7, dst_incarnation: 0, ctype: ct, ips: vec![] }.emit()
}

fn preamble() -> Vec<u8> {
    ConnReq { version: 1, nid: nid(ME) }.emit().to_vec()
}

impl T {
    /// Polls the LND and carries LNet's actions to it until quiet.
    fn step(&mut self) {
        loop {
            let mut any = self.lnd.poll(&mut self.lnet);
            while let Some(a) = self.lnet.poll_action() {
                any = true;
                match a {
                    Action::Send(s) => self.lnd.send(&mut self.lnet, s),
                    Action::Recv(r) => self.lnd.recv(&mut self.lnet, r),
                }
            }
            if !any {
                return;
            }
        }
    }
    fn input(&mut self, i: SockInput) {
        self.io.s.lock().unwrap().inputs.push_back(i);
        self.step();
    }
    fn data(&mut self, conn: ConnId, data: Vec<u8>) {
        self.input(SockInput::Data { conn, data });
    }
    fn accept(&mut self, conn: ConnId, port: u16) {
        let peer = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), port);
        self.input(SockInput::Accepted { conn, peer, local: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 988) });
    }
    fn advance(&mut self, d: Duration) {
        self.io.s.lock().unwrap().elapsed += d;
        self.step();
    }
    fn closed(&self, conn: ConnId) -> bool {
        self.io.s.lock().unwrap().closed.contains(&conn)
    }
    fn writes(&self, conn: ConnId) -> Vec<Vec<u8>> {
        self.io.s.lock().unwrap().writes.iter().filter(|w| w.0 == conn).map(|w| w.1.clone()).collect()
    }
    fn stat(&self, key: &str) -> u64 {
        self.lnd.stats()[key].as_u64().unwrap_or_else(|| panic!("no stat {key}"))
    }
    /// A passive connection from PEER brought up with a HELLO of `version`.
    fn passive_up(&mut self, conn: ConnId, version: u32) {
        self.accept(conn, 1000);
        let ct = if version == 2 { ctype::ANY } else { ctype::CONTROL };
        self.data(conn, [preamble(), hello(PEER, version, ct, ProcessId::PID_LUSTRE)].concat());
        assert_eq!(self.stat("conns_up"), 1);
    }
    /// A PUT of 10 bytes to PEER.
    fn put(&mut self) {
        let md = self.lnet.md_bind(MdSpec { iov: vec![Seg { off: 0, len: 10 }], options: 0, threshold: None, max_size: 0, user_ptr: 0 }, false);
        self.lnet.put(md, false, ProcessId::new(nid(PEER), ProcessId::PID_LUSTRE), 4, 0, 0, 0).unwrap();
        self.step();
    }
    fn connected(&mut self, conn: ConnId) {
        self.input(SockInput::Connected { conn, local: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1023) });
    }
    /// A PUT to PEER, and its first connection established (HELLO sent, none back yet).
    fn put_and_connect(&mut self) -> ConnId {
        self.put();
        let (c, _) = self.connects()[0];
        self.connected(c);
        c
    }
    fn connects(&self) -> Vec<(ConnId, bool)> {
        self.io.s.lock().unwrap().connects.clone()
    }
    fn events(&mut self) -> Vec<crate::lnet::Event> {
        std::iter::from_fn(|| self.lnet.poll_event()).collect()
    }
}

/// Item 11: a half-sent HELLO is closed after the 5 s handshake timeout, not held forever.
#[test]
fn half_hello_is_closed_after_the_handshake_timeout() {
    let mut t = t();
    t.accept(PASSIVE, 1000);
    t.data(PASSIVE, [preamble(), hello(PEER, 3, ctype::CONTROL, 12345)[..20].to_vec()].concat());
    t.advance(Duration::from_millis(4900));
    assert!(!t.closed(PASSIVE), "closed before the timeout");
    t.advance(Duration::from_millis(200));
    assert!(t.closed(PASSIVE), "a half HELLO held the connection past the handshake timeout");
}

/// Item 11: an active connection whose peer never answers the HELLO gives up after 5 s.
#[test]
fn unanswered_active_hello_times_out() {
    let mut t = t();
    let c = t.put_and_connect();
    t.advance(Duration::from_millis(5100));
    assert!(t.closed(c), "no HELLO reply and still waiting");
}

/// Item 11: a frame that stops half-way, or a write the kernel never takes, is given up after
/// `sock_timeout` (50 s) of no progress.
#[test]
fn stalled_rx_and_tx_time_out() {
    let mut t = t();
    t.passive_up(PASSIVE, 3);
    let k = KsockHdr { ty: super::wire::KSOCK_MSG_LNET, csum: 0, zc_req: 0, zc_ack: 0 }.emit();
    t.data(PASSIVE, [&k[..], &[0u8; 6]].concat());
    t.advance(Duration::from_secs(49));
    assert!(!t.closed(PASSIVE));
    t.advance(Duration::from_secs(2));
    assert!(t.closed(PASSIVE), "half a frame held the connection past sock_timeout");

    let mut t = t_with(SockConfig { typed_conns: false, ..Default::default() });
    t.passive_up(PASSIVE, 3);
    t.put();
    assert!(t.io.s.lock().unwrap().writes.iter().any(|w| w.2 != 0), "frame written");
    t.advance(Duration::from_secs(51));
    assert!(t.closed(PASSIVE), "a write that never completed held the connection");
    let ev = t.events();
    assert!(ev.iter().any(|e| e.kind == EventKind::Send && e.status != 0), "{ev:?}");
}

/// Item 12: in the default (secure) mode a peer connecting from a port above 1023 is refused
/// before it is read; the active side asks for a reserved port.
#[test]
fn unprivileged_peers_are_refused_and_we_connect_from_reserved_ports() {
    let mut t = t();
    t.accept(PASSIVE, 40000);
    assert!(t.closed(PASSIVE), "unprivileged source port accepted");
    assert_eq!(t.stat("bad_peers"), 1);
    t.put();
    assert!(t.connects().iter().all(|&(_, reserved)| reserved));
}

/// Item 13: peer entries go once their connections have closed and nothing is queued.
#[test]
fn peer_entries_are_freed() {
    let mut t = t();
    for i in 0..50u64 {
        let c = PASSIVE + i;
        t.accept(c, 1000);
        t.data(c, [preamble(), hello(&format!("127.0.1.{i}@tcp"), 3, ctype::CONTROL, 12345)].concat());
        t.input(SockInput::Closed { conn: c, error: None });
    }
    assert_eq!(t.stat("peers"), 0);
}

/// Item 14: a HELLO answered with ctype NONE (lost race) keeps the messages queued and retries.
#[test]
fn refused_handshake_keeps_messages_and_retries() {
    let mut t = t_with(SockConfig { typed_conns: false, ..Default::default() });
    let c = t.put_and_connect();
    t.data(c, hello(PEER, 3, ctype::NONE, 12345));
    assert!(t.closed(c));
    let ev = t.events();
    assert!(ev.is_empty(), "the queued PUT failed: {ev:?}");
    t.advance(Duration::from_secs(2));
    let cs = t.connects();
    assert_eq!(cs.len(), 2, "no retry");
    let c2 = cs[1].0;
    t.connected(c2);
    t.data(c2, hello(PEER, 3, ctype::CONTROL, 12345));
    assert!(t.io.s.lock().unwrap().writes.iter().any(|w| w.0 == c2 && w.2 != 0), "PUT not sent on the retry");
}

/// Item 14: no keepalive NOOPs on a V2 connection (a V2 kernel peer drops the connection).
#[test]
fn no_keepalives_on_v2() {
    let mut t = t();
    t.passive_up(PASSIVE, 2);
    let n = t.writes(PASSIVE).len();
    t.advance(Duration::from_secs(31));
    assert_eq!(t.writes(PASSIVE).len(), n, "a NOOP went to a V2 peer");
    assert_eq!(t.stat("keepalives_sent"), 0);
}

/// Item 14: a NOOP's first cookie is the start of an ACK range, not a request to ACK.
#[test]
fn noop_cookies_are_not_ack_requests() {
    let mut t = t();
    t.passive_up(PASSIVE, 3);
    let n = t.writes(PASSIVE).len();
    t.data(PASSIVE, KsockHdr { ty: KSOCK_MSG_NOOP, csum: 0, zc_req: 5, zc_ack: 9 }.emit().to_vec());
    assert_eq!(t.writes(PASSIVE).len(), n, "answered a NOOP as if it asked for an ACK");
    assert!(!t.closed(PASSIVE));
}

/// Item 14: the acceptor answers an LNet magic or an unknown acceptor version with its own
/// magic and version (Lustre's `lnet_accept`), then hangs up.
#[test]
fn acceptor_answers_version_queries() {
    let mut want = ACCEPTOR_MAGIC.to_le_bytes().to_vec();
    want.extend(1u32.to_le_bytes());
    want.extend([0u8; 8]);
    for first in [[PROTO_MAGIC.to_le_bytes(), 3u32.to_le_bytes()].concat(), [ACCEPTOR_MAGIC.to_le_bytes(), 9u32.to_le_bytes()].concat()] {
        let mut t = t();
        t.accept(PASSIVE, 1000);
        t.data(PASSIVE, first.clone());
        assert_eq!(t.writes(PASSIVE), vec![want.clone()], "answer to {first:x?}");
        assert!(t.closed(PASSIVE));
    }
}

/// Item 14: the active side checks the pid in the peer's HELLO as well as its NID.
#[test]
fn active_hello_with_wrong_pid_is_refused() {
    let mut t = t_with(SockConfig { typed_conns: false, ..Default::default() });
    let c = t.put_and_connect();
    t.data(c, hello(PEER, 3, ctype::CONTROL, 999));
    assert!(t.closed(c), "a peer claiming another pid was accepted");
    assert_eq!(t.stat("conns_up"), 0);
}
