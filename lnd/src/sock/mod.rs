//! socklnd: LNet over TCP, byte-compatible with Lustre's ksocklnd (acceptor preamble, V3 HELLO,
//! typed connections, `ksock_msg` framing, zero-copy ACKs answered, keepalives). Sans-IO: sockets
//! live behind [`io::SockIo`].

pub mod conn;
mod flow;
mod handshake;
pub mod io;
pub mod pcap;
mod peer;
mod timers;
pub mod wire;

#[cfg(test)]
mod tests;

use crate::lnd::Lnd;
use crate::lnet::slab::Slab;
use crate::lnet::{errno, Lnet, LndRecv, LndSend, MsgId, NiIdx, Parsed};
use crate::mem::{iov_read, iov_write, Mem};
use crate::wire::{LndType, Nid, ProcessId};
use conn::{lnet_frame_header, noop, ConnEvent, ConnParser, PAYLOAD_AT};
use io::{ConnId, SockInput, SockIo};
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use wire::{ctype, ConnReq, ACCEPTOR_VERSION};

#[derive(Debug, Clone)]
pub struct SockConfig {
    /// The acceptor port (Lustre: 988).
    pub port: u16,
    /// Frames this long or longer go on the bulk connection.
    pub min_bulk: usize,
    /// Idle time before a keepalive NOOP.
    pub keepalive: Duration,
    /// Open CONTROL, BULK_IN and BULK_OUT connections (Lustre's `typed_conns=1`).
    pub typed_conns: bool,
    /// Wait this long after a failed or refused connect before trying the peer again.
    pub reconnect_after: Duration,
    /// Most time from accept (or connect) to a completed HELLO exchange (Lustre: 5 s).
    pub handshake_timeout: Duration,
    /// Most time a started frame or a queued write may go without progress (Lustre: 50 s).
    pub sock_timeout: Duration,
    /// Which source ports we use and accept.
    pub ports: PortPolicy,
}

/// Source ports: Lustre peers trust only reserved ones (`accept=secure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortPolicy {
    /// Connect only from 1023..512; refuse peers connecting from above 1023 (Lustre's default).
    #[default]
    Secure,
    /// Test mode for clusters run without root: connect from any port and accept any. Kernel
    /// peers in secure mode refuse such a node.
    Unprivileged,
}

impl std::str::FromStr for PortPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "secure" => Ok(PortPolicy::Secure),
            "unprivileged" => Ok(PortPolicy::Unprivileged),
            _ => Err(format!("`{s}`: expected `secure` or `unprivileged`")),
        }
    }
}

impl Default for SockConfig {
    fn default() -> Self {
        SockConfig {
            port: 988,
            min_bulk: 1024,
            keepalive: Duration::from_secs(30),
            typed_conns: true,
            reconnect_after: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(5),
            sock_timeout: Duration::from_secs(50),
            ports: PortPolicy::Secure,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SockStats {
    pub conns_active: u64,
    pub conns_passive: u64,
    pub handshakes_refused: u64,
    pub conns_failed: u64,
    pub bad_peers: u64,
    pub frames_tx: u64,
    pub frames_rx: u64,
    pub zc_acks_sent: u64,
    pub keepalives_sent: u64,
    pub peer_restarts: u64,
    pub timeouts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Handshake,
    Up,
}

struct Conn {
    parser: ConnParser,
    state: State,
    passive: bool,
    /// Our view of the type (what we asked for, or invert(peer's) when passive).
    ctype: u32,
    peer: Option<Nid>,
    remote: SocketAddrV4,
    local: SocketAddrV4,
    last_tx: Instant,
    /// The HELLO exchange must be over by then.
    handshake_by: Instant,
    /// The peer's HELLO version once up (keepalives are V3 only).
    version: u32,
    /// Last bytes in.
    last_rx: Instant,
    /// Tagged writes not yet taken by the kernel, and when one last was.
    tx_pending: usize,
    tx_progress: Instant,
    /// The peer answered our HELLO with ctype NONE: keep its messages and retry later.
    refused: bool,
    /// Bytes read and not yet parsed, and parsed events not yet handled: they wait while a
    /// message of this connection is parked by LNet (`parked`, its rx).
    backlog: VecDeque<Vec<u8>>,
    pending: VecDeque<ConnEvent>,
    parked: Option<u64>,
    /// We asked the I/O to stop reading this socket.
    read_paused: bool,
    /// The bytes stopped making sense; the connection goes once what came before is handled.
    broken: Option<String>,
}

impl Conn {
    fn new(passive: bool, state: State, ctype: u32, peer: Option<Nid>, remote: SocketAddrV4, local: SocketAddrV4, now: Instant, handshake: Duration) -> Conn {
        Conn {
            parser: ConnParser::new(passive),
            state,
            passive,
            ctype,
            peer,
            remote,
            local,
            last_tx: now,
            handshake_by: now + handshake,
            version: 0,
            last_rx: now,
            tx_pending: 0,
            tx_progress: now,
            refused: false,
            backlog: VecDeque::new(),
            pending: VecDeque::new(),
            parked: None,
            read_paused: false,
            broken: None,
        }
    }
}

struct Tx {
    msg: MsgId,
    frame: Vec<u8>,
}

#[derive(Default)]
struct Peer {
    incarnation: Option<u64>,
    conns: Vec<ConnId>,
    queue: VecDeque<Tx>,
    retry_at: Option<Instant>,
    /// The last attempt failed (unreachable): sends fail at once until `retry_at`.
    failing: bool,
    /// We connect to this peer ourselves (Lustre keeps such peers: they have a conn_cb).
    active: bool,
    /// The pid the peer must claim in its HELLO (LNET_PID_LUSTRE unless we target another).
    pid: u32,
    /// Protocol version to offer (lowered if the peer told us it speaks an older one).
    version: u32,
}

pub struct SockLnd<I: SockIo> {
    io: I,
    ni: NiIdx,
    nid: Nid,
    pid: u32,
    incarnation: u64,
    cfg: SockConfig,
    mem: Arc<Mem>,
    conns: HashMap<ConnId, Conn>,
    peers: HashMap<Nid, Peer>,
    next_conn: ConnId,
    /// Writes in flight: tag -> (conn, message).
    writes: Slab<(ConnId, MsgId)>,
    /// Frames LNet has not taken yet, with the connection they came on.
    rxs: Slab<(ConnId, Vec<u8>)>,
    /// Connections LNet released a parked message of, to go on at the next poll.
    unparked: Vec<ConnId>,
    inputs: Vec<SockInput>,
    events: Vec<ConnEvent>,
    capture: Option<Arc<Mutex<pcap::Capture>>>,
    pub stats: SockStats,
}

fn ip_of(nid: Nid) -> Ipv4Addr {
    Ipv4Addr::from(nid.addr())
}

impl<I: SockIo> SockLnd<I> {
    /// A socklnd for NI `ni` (`nid` must be `a.b.c.d@tcpN`); starts listening on its address.
    pub fn new(mut io: I, ni: NiIdx, nid: Nid, pid: u32, incarnation: u64, cfg: SockConfig, mem: Arc<Mem>) -> std::io::Result<SockLnd<I>> {
        if nid.net().lnd() != LndType::SOCKLND {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{nid} is not a tcp NID")));
        }
        io.listen(SocketAddrV4::new(ip_of(nid), cfg.port))?;
        Ok(SockLnd {
            io,
            ni,
            nid,
            pid,
            incarnation,
            cfg,
            mem,
            conns: HashMap::new(),
            peers: HashMap::new(),
            next_conn: 1,
            writes: Slab::default(),
            rxs: Slab::default(),
            unparked: Vec::new(),
            inputs: Vec::new(),
            events: Vec::new(),
            capture: None,
            stats: SockStats::default(),
        })
    }

    /// Records every write in a pcap capture (for checking our bytes with tshark).
    pub fn set_capture(&mut self, c: Arc<Mutex<pcap::Capture>>) {
        self.capture = Some(c);
    }

    pub fn io(&self) -> &I {
        &self.io
    }

    fn write(&mut self, conn: ConnId, data: Vec<u8>, tag: u64) {
        let now = self.io.now();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last_tx = now;
            if let Some(cap) = &self.capture {
                cap.lock().unwrap().segment(c.local, c.remote, &data);
            }
        }
        self.io.write(conn, data, tag);
    }

    fn on_input(&mut self, lnet: &mut Lnet, i: SockInput) {
        match i {
            SockInput::Accepted { conn, peer, local } => self.accepted(conn, peer, local),
            SockInput::Connected { conn, local } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    self.io.close(conn);
                    return;
                };
                c.state = State::Handshake;
                c.local = local;
                c.handshake_by = self.io.now() + self.cfg.handshake_timeout;
                let (peer, ct) = (c.peer.expect("active conns know their peer"), c.ctype);
                let version = self.peers.get(&peer).map(|p| p.version).unwrap_or(3);
                // Preamble and HELLO as separate writes (separate segments on the wire).
                self.write(conn, ConnReq { version: ACCEPTOR_VERSION, nid: peer }.emit().to_vec(), 0);
                let h = self.hello(peer, ct, version);
                self.write(conn, h, 0);
            }
            SockInput::ConnectFailed { conn, error } => {
                self.stats.conns_failed += 1;
                warn!(conn, "{error}");
                self.close_conn(lnet, conn, "connect failed");
            }
            SockInput::Data { conn, data } => self.take_data(lnet, conn, data),
            SockInput::Written { tag, .. } => {
                if let Some((conn, msg)) = self.writes.remove(tag) {
                    let now = self.io.now();
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.tx_pending = c.tx_pending.saturating_sub(1);
                        c.tx_progress = now;
                    }
                    lnet.finalize(msg, 0);
                }
            }
            SockInput::Closed { conn, error } => {
                let why = error.unwrap_or_else(|| "peer closed".into());
                self.close_conn(lnet, conn, &why);
            }
        }
    }

    fn on_event(&mut self, lnet: &mut Lnet, conn: ConnId, e: ConnEvent) {
        let c = self.conns.get(&conn).expect("checked by caller");
        let (passive, state, my_type, expect) = (c.passive, c.state, c.ctype, c.peer);
        match e {
            ConnEvent::AcceptorQuery => self.acceptor_query(lnet, conn),
            ConnEvent::ConnReq(nid) => {
                if nid != self.nid {
                    self.refuse(lnet, conn, format!("acceptor request for {nid}: no matching NI (we are {})", self.nid));
                }
            }
            ConnEvent::UnknownVersion(v) => {
                if passive {
                    // Tell the peer what we speak, then hang up (as Linux does).
                    let h = self.hello(self.nid, ctype::NONE, 3);
                    self.write(conn, h, 0);
                    self.refuse(lnet, conn, format!("HELLO version {v} unsupported"));
                } else if let Some(nid) = expect {
                    if v == 2 {
                        self.peer_mut(nid).version = 2;
                    }
                    self.refuse(lnet, conn, format!("peer {nid} speaks version {v}"));
                }
            }
            ConnEvent::Hello(h) if passive && state == State::Handshake => self.passive_hello(lnet, conn, h),
            ConnEvent::Hello(h) if !passive && state == State::Handshake => self.active_hello(lnet, conn, h, expect.expect("active conns know their peer"), my_type),
            ConnEvent::Hello(_) => self.refuse(lnet, conn, "second HELLO on an established connection".into()),
            ConnEvent::Noop(k) => {
                if state != State::Up {
                    return self.refuse(lnet, conn, "NOOP before the handshake".into());
                }
                // A NOOP's cookies are an ACK range (`zc_req`..`zc_ack`), never a request: we
                // ask for no zero-copy ACKs, so only the keepalive [0, 1] is expected.
                if k.zc_ack > 1 {
                    debug!(conn, from = k.zc_req, to = k.zc_ack, "zero-copy ACK for cookies we never asked for; ignored");
                }
            }
            ConnEvent::Lnet { ksock, hdr, frame } => {
                if state != State::Up {
                    return self.refuse(lnet, conn, "LNet frame before the handshake".into());
                }
                self.stats.frames_rx += 1;
                debug!(conn, kind = ?hdr.msg_type(), bytes = frame.len(), "frame in");
                if ksock.zc_req != 0 {
                    // The whole message is in: release the sender's pinned pages now.
                    self.zc_ack(conn, ksock.zc_req);
                }
                let from = expect.expect("up conns know their peer");
                let rx = self.rxs.insert((conn, frame));
                match lnet.parse(self.ni, hdr, from, rx, false) {
                    Ok(Parsed::Recv(Some(_))) => {}
                    // LNet holds it: this connection waits until it lets go.
                    Ok(Parsed::Recv(None)) => self.park(conn, rx),
                    Ok(Parsed::Dropped(_)) => {
                        self.rxs.remove(rx);
                    }
                    Err(e) => {
                        self.rxs.remove(rx);
                        self.refuse(lnet, conn, format!("lnet_parse: {e}"));
                    }
                }
            }
        }
    }

    fn zc_ack(&mut self, conn: ConnId, cookie: u64) {
        self.stats.zc_acks_sent += 1;
        self.write(conn, noop(cookie).to_vec(), 0);
    }

    /// Connections currently established.
    pub fn conns_up(&self) -> usize {
        self.conns.values().filter(|c| c.state == State::Up).count()
    }
}

impl<I: SockIo> Lnd for SockLnd<I> {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn stats(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.stats).unwrap_or_default();
        v["conns_up"] = self.conns_up().into();
        v["peers"] = self.peers.len().into();
        v["rx_held_bytes"] = self.rx_held_bytes().into();
        v
    }

    fn path_counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![("conns_active", s.conns_active), ("conns_passive", s.conns_passive), ("frames_rx", s.frames_rx), ("frames_tx", s.frames_tx), ("handshakes_refused", s.handshakes_refused), ("peer_restarts", s.peer_restarts)]
    }

    fn busy(&self) -> usize {
        let waiting: usize = self.conns.values().map(|c| c.backlog.len() + c.pending.len()).sum();
        self.writes.len() + self.rxs.len() + waiting + self.peers.values().map(|p| p.queue.len()).sum::<usize>()
    }

    fn send(&mut self, lnet: &mut Lnet, m: LndSend) {
        if m.next_hop.net() != self.nid.net() {
            // ksocknal_launch_packet: no route to the peer is REMOTE_ERROR.
            lnet.finalize_hs(m.msg, errno::EHOSTUNREACH, crate::lnet::health::HealthStatus::RemoteError);
            return;
        }
        let mut frame = Vec::with_capacity(PAYLOAD_AT + m.hdr.payload_length as usize);
        frame.extend_from_slice(&lnet_frame_header(&m.hdr, 0));
        if iov_read(&self.mem, &m.iov, &mut frame).is_err() || frame.len() != PAYLOAD_AT + m.hdr.payload_length as usize {
            lnet.finalize(m.msg, errno::EIO);
            return;
        }
        let nid = m.next_hop;
        // The pid the peer must claim (lnet_handle_send: a router is LNET_PID_LUSTRE).
        let pid = if m.target.nid == nid { m.target.pid } else { ProcessId::PID_LUSTRE };
        let p = self.peer_mut(nid);
        p.pid = pid;
        p.queue.push_back(Tx { msg: m.msg, frame });
        self.dispatch(nid);
        // A peer that was unreachable a moment ago gets nothing through: fail rather than hold.
        if let Some(p) = self.peers.get(&nid) {
            let now = self.io.now();
            if p.failing && p.retry_at.is_some_and(|t| now < t) && p.conns.is_empty() {
                self.fail_queue(lnet, nid, errno::EHOSTUNREACH);
            }
        }
    }

    fn recv(&mut self, lnet: &mut Lnet, m: LndRecv) {
        let Some((conn, frame)) = self.rxs.remove(m.private) else {
            warn!(private = m.private, "recv for unknown rx");
            return;
        };
        self.released(conn, m.private);
        if let Some(msg) = m.msg {
            let payload = &frame[PAYLOAD_AT..];
            let n = (m.mlen as usize).min(payload.len());
            let st = match iov_write(&self.mem, &m.iov, &payload[..n]) {
                Ok(_) => 0,
                Err(_) => errno::EIO,
            };
            lnet.finalize(msg, st);
        }
        // Its buffer (often the very one the frame was read into) is read into again.
        self.io.release(conn, 0, frame);
    }

    fn poll(&mut self, lnet: &mut Lnet) -> bool {
        let mut inputs = std::mem::take(&mut self.inputs);
        self.io.poll(&mut inputs);
        let any = !inputs.is_empty();
        for i in inputs.drain(..) {
            self.on_input(lnet, i);
        }
        self.inputs = inputs;
        let any = self.flow(lnet) || any;
        self.timeouts(lnet);
        self.retries();
        self.keepalives();
        any
    }
}
