//! A virtual TCP network for simulation: [`SimIo`] implements the socklnd I/O edge over shared
//! in-memory queues; bytes move only when the scheduler calls [`SimNet::deliver`]. Endpoints can
//! be cut apart (what crosses waits, as TCP retransmits) and killed (their peers are reset).

use crate::sock::io::{ConnId, SockInput, SockIo};
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Inner {
    listeners: HashMap<SocketAddrV4, usize>,
    /// (node, conn) -> (peer node, peer conn)
    links: HashMap<(usize, ConnId), (usize, ConnId)>,
    ready: HashMap<usize, VecDeque<SockInput>>,
    /// (from endpoint, to endpoint, input), oldest first.
    in_flight: VecDeque<(usize, usize, SockInput)>,
    /// Endpoint pairs cut apart (both orders stored): what crosses stays in flight.
    cut: std::collections::HashSet<(usize, usize)>,
    next_accept: u64,
    next_port: HashMap<usize, u16>,
    /// Endpoints handed out so far (one per socklnd instance: a node on two TCP nets has two).
    endpoints: usize,
    now: Duration,
}

/// The network all simulated nodes share.
#[derive(Clone)]
pub struct SimNet {
    inner: Arc<Mutex<Inner>>,
    base: Instant,
}

impl Default for SimNet {
    fn default() -> Self {
        SimNet::new()
    }
}

impl SimNet {
    pub fn new() -> SimNet {
        SimNet { inner: Arc::new(Mutex::new(Inner { next_accept: 1 << 63, ..Default::default() })), base: Instant::now() }
    }

    /// A new I/O edge for one socklnd instance. Each instance has its own endpoint: inputs are
    /// queued per endpoint, so two TCP NIs of one node never take each other's connections.
    pub fn io(&self) -> SimIo {
        let mut g = self.inner.lock().unwrap();
        g.endpoints += 1;
        SimIo { net: self.clone(), node: g.endpoints - 1 }
    }

    /// Moves up to `n` in-flight items (oldest first, so every connection stays in order) to
    /// their nodes; returns how many moved.
    /// Items held by a cut are passed over (they keep their place).
    pub fn deliver(&self, n: usize) -> usize {
        let mut g = self.inner.lock().unwrap();
        let (mut moved, mut at) = (0, 0);
        while moved < n && at < g.in_flight.len() {
            let (from, to, _) = g.in_flight[at];
            if g.cut.contains(&(from, to)) {
                at += 1;
                continue;
            }
            let (_, to, i) = g.in_flight.remove(at).expect("in range");
            g.ready.entry(to).or_default().push_back(i);
            moved += 1;
        }
        moved
    }

    /// Items in flight that a cut does not hold.
    pub fn in_flight(&self) -> usize {
        let g = self.inner.lock().unwrap();
        if g.cut.is_empty() {
            return g.in_flight.len();
        }
        g.in_flight.iter().filter(|(f, t, _)| !g.cut.contains(&(*f, *t))).count()
    }

    /// Cuts (`on`) or heals the network between endpoints `a` and `b`, both ways. Bytes,
    /// connects and closes across the cut wait in flight until it heals, as TCP keeps
    /// retransmitting through a short partition.
    pub fn set_cut(&self, a: usize, b: usize, on: bool) {
        let mut g = self.inner.lock().unwrap();
        for p in [(a, b), (b, a)] {
            if on {
                g.cut.insert(p);
            } else {
                g.cut.remove(&p);
            }
        }
    }

    /// The endpoints' process died: their listeners go, their connections are reset (each
    /// peer sees its end closed with an error) and nothing more reaches them.
    pub fn kill_endpoints(&self, eps: &[usize]) {
        let mut g = self.inner.lock().unwrap();
        g.listeners.retain(|_, ep| !eps.contains(ep));
        // In a fixed order: the resets go in flight one after another.
        let mut mine: Vec<(usize, ConnId)> = g.links.keys().filter(|k| eps.contains(&k.0)).copied().collect();
        mine.sort_unstable();
        for k in mine {
            let Some((peer, pconn)) = g.links.remove(&k) else { continue };
            g.links.remove(&(peer, pconn));
            if !eps.contains(&peer) {
                g.in_flight.push_back((k.0, peer, SockInput::Closed { conn: pconn, error: Some("connection reset by peer".into()) }));
            }
        }
        g.in_flight.retain(|(_, to, _)| !eps.contains(to));
        for ep in eps {
            g.ready.remove(ep);
        }
    }

    /// Advances virtual time.
    pub fn advance(&self, d: Duration) {
        self.inner.lock().unwrap().now += d;
    }

    pub fn now(&self) -> Instant {
        self.base + self.inner.lock().unwrap().now
    }

    /// Virtual time zero: when the simulation began.
    pub fn start(&self) -> Instant {
        self.base
    }
}

pub struct SimIo {
    net: SimNet,
    /// This edge's endpoint on the network.
    node: usize,
}

impl SimIo {
    /// This edge's endpoint (to cut or kill it).
    pub fn endpoint(&self) -> usize {
        self.node
    }
}

impl SockIo for SimIo {
    fn listen(&mut self, addr: SocketAddrV4) -> std::io::Result<()> {
        let mut g = self.net.inner.lock().unwrap();
        if g.listeners.contains_key(&addr) {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("{addr} already has a listener")));
        }
        g.listeners.insert(addr, self.node);
        Ok(())
    }

    fn connect(&mut self, conn: ConnId, to: SocketAddrV4, from_ip: Ipv4Addr, _reserved: bool) {
        let mut g = self.net.inner.lock().unwrap();
        let port = g.next_port.entry(self.node).or_insert(1024);
        *port = if *port <= 512 { 1023 } else { *port - 1 };
        let local = SocketAddrV4::new(from_ip, *port);
        match g.listeners.get(&to).copied() {
            Some(peer) => {
                let aid = g.next_accept;
                g.next_accept += 1;
                g.links.insert((self.node, conn), (peer, aid));
                g.links.insert((peer, aid), (self.node, conn));
                g.in_flight.push_back((self.node, peer, SockInput::Accepted { conn: aid, peer: local, local: to }));
                g.in_flight.push_back((peer, self.node, SockInput::Connected { conn, local }));
            }
            None => g.in_flight.push_back((self.node, self.node, SockInput::ConnectFailed { conn, error: format!("connect to {to}: connection refused") })),
        }
    }

    fn write(&mut self, conn: ConnId, data: Vec<u8>, tag: u64) {
        let mut g = self.net.inner.lock().unwrap();
        match g.links.get(&(self.node, conn)).copied() {
            Some((peer, pconn)) => {
                g.in_flight.push_back((self.node, peer, SockInput::Data { conn: pconn, data }));
                if tag != 0 {
                    g.in_flight.push_back((self.node, self.node, SockInput::Written { conn, tag }));
                }
            }
            None => g.in_flight.push_back((self.node, self.node, SockInput::Closed { conn, error: Some("not connected".into()) })),
        }
    }

    fn close(&mut self, conn: ConnId) {
        let mut g = self.net.inner.lock().unwrap();
        if let Some((peer, pconn)) = g.links.remove(&(self.node, conn)) {
            g.links.remove(&(peer, pconn));
            g.in_flight.push_back((self.node, peer, SockInput::Closed { conn: pconn, error: None }));
        }
    }

    fn poll(&mut self, out: &mut Vec<SockInput>) {
        let mut g = self.net.inner.lock().unwrap();
        if let Some(q) = g.ready.get_mut(&self.node) {
            out.extend(q.drain(..));
        }
    }

    fn now(&self) -> Instant {
        self.net.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(io: &mut SimIo) -> Vec<SockInput> {
        let mut v = Vec::new();
        io.poll(&mut v);
        v
    }

    /// A connected pair: (network, server edge, client edge, the server's accepted conn id).
    fn pair() -> (SimNet, SimIo, SimIo, ConnId) {
        let net = SimNet::new();
        let (mut s, mut c) = (net.io(), net.io());
        let addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 988);
        s.listen(addr).unwrap();
        c.connect(1, addr, Ipv4Addr::new(10, 0, 0, 2), true);
        net.deliver(usize::MAX);
        let Some(SockInput::Accepted { conn, .. }) = inputs(&mut s).pop() else { panic!("accepted") };
        assert!(matches!(inputs(&mut c)[..], [SockInput::Connected { conn: 1, .. }]));
        (net, s, c, conn)
    }

    /// Bytes across a cut wait in flight, in order, and arrive once it heals; they are not
    /// counted as deliverable meanwhile (the scheduler may skip idle time).
    #[test]
    fn a_cut_holds_bytes_until_healed() {
        let (net, mut s, mut c, _) = pair();
        net.set_cut(s.endpoint(), c.endpoint(), true);
        c.write(1, b"one".to_vec(), 0);
        c.write(1, b"two".to_vec(), 0);
        assert_eq!((net.in_flight(), net.deliver(usize::MAX)), (0, 0));
        assert!(inputs(&mut s).is_empty());
        net.set_cut(c.endpoint(), s.endpoint(), false);
        assert_eq!(net.deliver(usize::MAX), 2);
        let got: Vec<Vec<u8>> = inputs(&mut s).into_iter().map(|i| match i { SockInput::Data { data, .. } => data, _ => panic!("data") }).collect();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    }

    /// A killed endpoint's peers see their connections reset, its listener goes (a new
    /// connect is refused) and nothing more reaches it.
    #[test]
    fn killing_an_endpoint_resets_its_peers_and_frees_its_address() {
        let (net, s, mut c, _) = pair();
        c.write(1, b"lost".to_vec(), 0);
        net.kill_endpoints(&[s.endpoint()]);
        net.deliver(usize::MAX);
        assert!(matches!(&inputs(&mut c)[..], [SockInput::Closed { conn: 1, error: Some(_) }]), "reset");
        c.connect(2, SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 988), Ipv4Addr::new(10, 0, 0, 2), true);
        net.deliver(usize::MAX);
        assert!(matches!(&inputs(&mut c)[..], [SockInput::ConnectFailed { conn: 2, .. }]), "nobody listens there");
        let mut s2 = net.io();
        s2.listen(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 988)).expect("the address is free for a new incarnation");
        assert!(inputs(&mut s2).is_empty());
    }
}
