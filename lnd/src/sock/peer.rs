//! socklnd peers: opening their connections, picking one per frame, the send queue, closing
//! connections and what happens to the peer's messages then (retry, fail, forget the peer).

use super::io::{ConnId, SockIo};
use super::wire::ctype;
use super::{ip_of, Conn, Peer, PortPolicy, SockLnd, State, Tx};
use crate::lnet::{errno, Lnet};
use crate::wire::{Nid, ProcessId};
use std::net::SocketAddrV4;
use tracing::debug;

impl<I: SockIo> SockLnd<I> {
    pub(super) fn peer_mut(&mut self, nid: Nid) -> &mut Peer {
        self.peers.entry(nid).or_insert_with(|| Peer { version: 3, pid: ProcessId::PID_LUSTRE, ..Default::default() })
    }

    /// Opens the connections a peer lacks (all three types, or one untyped CONTROL).
    pub(super) fn connect(&mut self, nid: Nid) {
        let now = self.io.now();
        let have: Vec<u32> = self
            .conns
            .values()
            .filter(|c| c.peer == Some(nid))
            .map(|c| c.ctype)
            .collect();
        let p = self.peer_mut(nid);
        p.active = true;
        if p.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let want: &[u32] = if self.cfg.typed_conns { &[ctype::CONTROL, ctype::BULK_IN, ctype::BULK_OUT] } else { &[ctype::CONTROL] };
        for &t in want {
            if have.contains(&t) {
                continue;
            }
            let id = self.next_conn;
            self.next_conn += 1;
            let remote = SocketAddrV4::new(ip_of(nid), self.cfg.port);
            let local = SocketAddrV4::new(ip_of(self.nid), 0);
            // The handshake deadline is set again at `Connected` (the I/O times the connect).
            self.conns.insert(id, Conn::new(false, State::Connecting, t, Some(nid), remote, local, now, self.cfg.handshake_timeout));
            debug!(peer = %nid, ctype = ctype::name(t), conn = id, "connecting");
            self.io.connect(id, remote, ip_of(self.nid), self.cfg.ports == PortPolicy::Secure);
        }
    }

    /// The connection a frame of `len` bytes should go on, if one is up.
    pub(super) fn pick_conn(&self, nid: Nid, len: usize) -> Option<ConnId> {
        let p = self.peers.get(&nid)?;
        let want = if len >= self.cfg.min_bulk { ctype::BULK_OUT } else { ctype::CONTROL };
        let up = |t: u32| p.conns.iter().copied().find(|id| self.conns.get(id).is_some_and(|c| c.state == State::Up && c.ctype == t));
        up(want).or_else(|| up(ctype::CONTROL)).or_else(|| up(ctype::ANY)).or_else(|| up(ctype::BULK_OUT))
    }

    pub(super) fn dispatch(&mut self, nid: Nid) {
        loop {
            let Some(p) = self.peers.get(&nid) else { return };
            let Some(len) = p.queue.front().map(|t| t.frame.len()) else { return };
            let Some(conn) = self.pick_conn(nid, len) else {
                self.connect(nid);
                return;
            };
            let tx = self.peers.get_mut(&nid).unwrap().queue.pop_front().unwrap();
            let tag = self.writes.insert((conn, tx.msg));
            let now = self.io.now();
            let c = self.conns.get_mut(&conn).expect("picked");
            if c.tx_pending == 0 {
                c.tx_progress = now;
            }
            c.tx_pending += 1;
            self.stats.frames_tx += 1;
            debug!(conn, peer = %nid, bytes = tx.frame.len(), "frame out");
            self.write(conn, tx.frame, tag);
        }
    }

    /// Fails everything queued for a peer we cannot reach.
    pub(super) fn fail_queue(&mut self, lnet: &mut Lnet, nid: Nid, status: i32) {
        if let Some(p) = self.peers.get_mut(&nid) {
            let q: Vec<Tx> = p.queue.drain(..).collect();
            for t in q {
                lnet.finalize(t.msg, status);
            }
        }
    }

    pub(super) fn close_conn(&mut self, lnet: &mut Lnet, id: ConnId, why: &str) {
        self.close_conn_with(lnet, id, why, errno::ECONNRESET);
    }

    /// [`Self::close_conn`], failing what it carried with `status` (ksocklnd: a connection
    /// closed for a timeout fails its messages with LOCAL_TIMEOUT, a lost one with
    /// REMOTE_DROPPED — `ksocknal_txlist_done`'s classes of ETIMEDOUT and ECONNRESET).
    pub(super) fn close_conn_with(&mut self, lnet: &mut Lnet, id: ConnId, why: &str, status: i32) {
        let peer = self.conns.get(&id).and_then(|c| c.peer);
        self.shut_conn(lnet, id, why, status);
        if let Some(nid) = peer {
            self.gc_peer(nid);
        }
    }

    pub(super) fn shut_conn(&mut self, lnet: &mut Lnet, id: ConnId, why: &str, status: i32) {
        let Some(c) = self.conns.remove(&id) else { return };
        self.io.close(id);
        debug!(conn = id, peer = ?c.peer.map(|n| n.to_string()), why, "connection closed");
        // Messages already handed to this connection are lost with it.
        for (_, msg) in self.writes.drain_where(|&(conn, _)| conn == id) {
            lnet.finalize(msg, status);
        }
        if let Some(nid) = c.peer {
            let now = self.io.now();
            let retry = self.cfg.reconnect_after;
            self.peer_mut(nid).conns.retain(|&x| x != id);
            if self.peers[&nid].queue.is_empty() {
                return;
            }
            if self.pick_conn(nid, 0).is_some() || self.pick_conn(nid, usize::MAX).is_some() {
                // Another connection can carry what was waiting.
                self.dispatch(nid);
            } else if !self.conns.values().any(|x| x.peer == Some(nid)) {
                if c.state == State::Up {
                    // A working peer dropped us: try to reconnect right away.
                    self.dispatch(nid);
                } else if c.refused {
                    // Lost a race or a duplicate (Lustre's retry_later): the peer's own
                    // connection should arrive; if not, try again after the back-off.
                    self.peer_mut(nid).retry_at = Some(now + retry);
                } else {
                    let p = self.peer_mut(nid);
                    p.retry_at = Some(now + retry);
                    p.failing = true;
                    self.fail_queue(lnet, nid, errno::EHOSTUNREACH);
                }
            }
        }
    }

    /// Forgets a peer that only ever connected to us once it has no connection, nothing queued
    /// and no back-off running (peers we call stay, as Lustre's with a conn_cb do).
    pub(super) fn gc_peer(&mut self, nid: Nid) {
        let now = self.io.now();
        let idle = self.peers.get(&nid).is_some_and(|p| !p.active && p.queue.is_empty() && p.retry_at.is_none_or(|t| t <= now));
        if idle && !self.conns.values().any(|c| c.peer == Some(nid)) {
            self.peers.remove(&nid);
        }
    }
}
