//! socklnd's clock work, run on every poll: keepalive NOOPs, handshake and progress timeouts
//! (Lustre's 5 s acceptor/HELLO timeout and 50 s `sock_timeout`), reconnects after a back-off
//! and forgetting idle peers.

use super::conn::noop;
use super::io::{ConnId, SockIo};
use super::{SockLnd, State};
use crate::lnet::Lnet;
use crate::wire::Nid;
use tracing::warn;

impl<I: SockIo> SockLnd<I> {
    /// Keepalive NOOPs on idle V3 connections (a V2 kernel peer drops a NOOP it cannot match:
    /// `ksocknal_send_keepalive_locked` sends them on V3 and later only).
    pub(super) fn keepalives(&mut self) {
        let now = self.io.now();
        let idle: Vec<ConnId> = self.conns.iter().filter(|(_, c)| c.state == State::Up && c.version >= 3 && now.duration_since(c.last_tx) >= self.cfg.keepalive).map(|(id, _)| *id).collect();
        for id in idle {
            self.stats.keepalives_sent += 1;
            self.write(id, noop(1).to_vec(), 0);
        }
    }

    /// Drops connections that missed the handshake deadline, or whose half-received frame or
    /// pending writes made no progress for `sock_timeout`.
    pub(super) fn timeouts(&mut self, lnet: &mut Lnet) {
        let now = self.io.now();
        let st = self.cfg.sock_timeout;
        let late: Vec<(ConnId, &'static str)> = self
            .conns
            .iter()
            .filter_map(|(&id, c)| {
                let why = match c.state {
                    // Not while we keep it waiting ourselves (a parked message).
                    State::Up if c.parser.mid_message() && c.parked.is_none() && now.duration_since(c.last_rx) >= st => "no progress receiving a message",
                    State::Up if c.tx_pending > 0 && now.duration_since(c.tx_progress) >= st => "no progress sending",
                    State::Up | State::Connecting => return None,
                    _ if now >= c.handshake_by => "handshake timed out",
                    _ => return None,
                };
                Some((id, why))
            })
            .collect();
        for (id, why) in late {
            self.stats.timeouts += 1;
            let who = self.conns[&id].remote;
            warn!(conn = id, peer = %who, "closing connection: {why}");
            self.io.abort(id);
            self.close_conn_with(lnet, id, why, crate::lnet::errno::ETIMEDOUT);
        }
    }

    /// Retries peers whose back-off ended with messages still queued; forgets idle ones.
    pub(super) fn retries(&mut self) {
        let now = self.io.now();
        let due: Vec<Nid> = self.peers.iter().filter(|(_, p)| p.retry_at.is_some_and(|t| t <= now)).map(|(n, _)| *n).collect();
        for nid in due {
            let p = self.peers.get_mut(&nid).unwrap();
            p.retry_at = None;
            p.failing = false;
            if p.queue.is_empty() {
                self.gc_peer(nid);
            } else {
                self.dispatch(nid);
            }
        }
    }
}
