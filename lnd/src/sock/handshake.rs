//! socklnd connection setup: the acceptor's checks (source port, preamble), the HELLO exchange
//! on both sides (Lustre's `ksocknal_recv_hello` rules), races, duplicates and restarted peers.

use super::io::{ConnId, SockIo};
use super::wire::{ctype, ConnReq, Hello, ACCEPTOR_VERSION};
use super::{Conn, PortPolicy, SockLnd, State};
use crate::lnet::Lnet;
use crate::wire::Nid;
use std::net::SocketAddrV4;
use tracing::{debug, info, warn};

/// Highest source port a peer in secure mode may connect from (LNET_ACCEPTOR_MAX_RESERVED_PORT).
pub const MAX_RESERVED_PORT: u16 = 1023;

impl<I: SockIo> SockLnd<I> {
    /// A new passive connection: refused unless from a reserved port (Lustre's `accept=secure`);
    /// otherwise it has `handshake_timeout` to send its preamble and HELLO.
    pub(super) fn accepted(&mut self, conn: ConnId, peer: SocketAddrV4, local: SocketAddrV4) {
        if self.cfg.ports == PortPolicy::Secure && peer.port() > MAX_RESERVED_PORT {
            self.stats.bad_peers += 1;
            warn!(conn, %peer, "refusing connection from {peer}: insecure source port {} (above {MAX_RESERVED_PORT})", peer.port());
            self.io.close(conn);
            return;
        }
        let now = self.io.now();
        self.conns.insert(conn, Conn::new(true, State::Handshake, ctype::NONE, None, peer, local, now, self.cfg.handshake_timeout));
    }

    /// The peer sent the LNet magic or an acceptor version we do not speak: tell it ours (as
    /// `lnet_accept` does), then hang up.
    pub(super) fn acceptor_query(&mut self, lnet: &mut Lnet, conn: ConnId) {
        self.write(conn, ConnReq { version: ACCEPTOR_VERSION, nid: Nid(0) }.emit().to_vec(), 0);
        self.refuse(lnet, conn, "acceptor protocol query or unknown acceptor version: answered with ours".into());
    }

    pub(super) fn hello(&self, peer: Nid, ct: u32, version: u32) -> Vec<u8> {
        Hello {
            version,
            src_nid: self.nid,
            dst_nid: peer,
            src_pid: self.pid,
            dst_pid: 0,
            src_incarnation: self.incarnation,
            dst_incarnation: 0,
            ctype: ct,
            ips: vec![],
        }
        .emit()
    }

    pub(super) fn refuse(&mut self, lnet: &mut Lnet, conn: ConnId, why: String) {
        self.stats.bad_peers += 1;
        let who = self.conns.get(&conn).map(|c| c.remote.to_string()).unwrap_or_default();
        warn!(conn, peer = %who, "refusing connection: {why}");
        self.close_conn(lnet, conn, "refused");
    }

    /// A peer with a new incarnation restarted: its old connections and their messages go.
    fn check_incarnation(&mut self, lnet: &mut Lnet, nid: Nid, inc: u64, keep: ConnId) {
        let old = self.peer_mut(nid).incarnation.replace(inc);
        if old.is_some_and(|o| o != inc) {
            self.stats.peer_restarts += 1;
            info!(peer = %nid, "peer restarted (new incarnation): closing its old connections");
            // Connections still shaking hands are with the new instance; established ones are
            // with the old one.
            let stale: Vec<ConnId> = self.conns.iter().filter(|(id, c)| **id != keep && c.peer == Some(nid) && c.state == State::Up).map(|(id, _)| *id).collect();
            for id in stale {
                self.close_conn(lnet, id, "peer restarted");
            }
        }
    }

    fn up(&mut self, conn: ConnId, nid: Nid, version: u32) {
        let c = self.conns.get_mut(&conn).unwrap();
        c.state = State::Up;
        c.peer = Some(nid);
        c.version = version;
        debug!(conn, peer = %nid, ctype = ctype::name(c.ctype), version, "connection up");
        let p = self.peer_mut(nid);
        p.conns.push(conn);
        p.retry_at = None;
        p.failing = false;
        self.dispatch(nid);
    }

    /// The reply to our HELLO: the peer must be who we called, NID and pid.
    pub(super) fn active_hello(&mut self, lnet: &mut Lnet, conn: ConnId, h: Hello, nid: Nid, my_type: u32) {
        let pid = self.peers.get(&nid).map(|p| p.pid).unwrap_or(crate::wire::ProcessId::PID_LUSTRE);
        if h.src_nid != nid || h.src_pid != pid {
            return self.refuse(lnet, conn, format!("connected to {pid}-{nid} but it claims to be {}-{}", h.src_pid, h.src_nid));
        }
        if h.ctype == ctype::NONE {
            // Lost a connection race or a duplicate: the peer keeps its own.
            self.stats.handshakes_refused += 1;
            self.conns.get_mut(&conn).unwrap().refused = true;
            self.close_conn(lnet, conn, "peer refused the connection type");
            return;
        }
        if ctype::invert(h.ctype) != my_type {
            return self.refuse(lnet, conn, format!("asked for {} but peer answered {}", ctype::name(my_type), ctype::name(h.ctype)));
        }
        self.check_incarnation(lnet, nid, h.src_incarnation, conn);
        self.up(conn, nid, h.version);
        self.stats.conns_active += 1;
    }

    pub(super) fn passive_hello(&mut self, lnet: &mut Lnet, conn: ConnId, h: Hello) {
        if h.src_nid == Nid::ANY || h.src_nid.net() != self.nid.net() {
            return self.refuse(lnet, conn, format!("HELLO from {} on net {}", h.src_nid, self.nid.net()));
        }
        if h.dst_nid != self.nid && h.dst_nid != Nid::ANY {
            return self.refuse(lnet, conn, format!("HELLO for {} but we are {}", h.dst_nid, self.nid));
        }
        let valid = matches!(h.ctype, ctype::CONTROL | ctype::BULK_IN | ctype::BULK_OUT) || (h.ctype == ctype::ANY && h.version == 2);
        if !valid {
            return self.refuse(lnet, conn, format!("HELLO with invalid connection type {:#x}", h.ctype));
        }
        let mine = ctype::invert(h.ctype);
        let peer = h.src_nid;
        let existing: Vec<(State, bool)> = self.conns.iter().filter(|(id, c)| **id != conn && c.peer == Some(peer) && c.ctype == mine).map(|(_, c)| (c.state, c.passive)).collect();
        let racing = existing.iter().any(|&(s, passive)| !passive && s != State::Up);
        let duplicate = existing.iter().any(|&(s, _)| s == State::Up);
        let reject = (racing && self.nid > peer) || (duplicate && self.peers.get(&peer).and_then(|p| p.incarnation) == Some(h.src_incarnation));
        if reject {
            self.stats.handshakes_refused += 1;
            let r = self.hello(peer, ctype::NONE, h.version);
            self.write(conn, r, 0);
            self.close_conn(lnet, conn, if racing { "connection race: ours wins" } else { "duplicate connection" });
            return;
        }
        self.check_incarnation(lnet, peer, h.src_incarnation, conn);
        let r = self.hello(peer, mine, h.version);
        self.conns.get_mut(&conn).unwrap().ctype = mine;
        self.write(conn, r, 0);
        self.stats.conns_passive += 1;
        self.peer_mut(peer).pid = h.src_pid;
        self.up(conn, peer, h.version);
    }
}
