//! Target recovery after a restart (`target_recovery_thread`, `check_for_next_transno`): the
//! clients the OST knew (its `clients` on disk) reconnect and replay what it had not committed;
//! replays run in transaction-number order across clients, a gap is skipped once every client
//! waits; a client's "replay done" ping (MSG_REQ_REPLAY_DONE) and any other request are held and
//! answered when recovery ends. Clients that never come back within the recovery window are
//! evicted (their uncommitted changes are lost, as in Lustre). Its state is `record::Recovery`.

use super::{Oss, Req};
use crate::node::Node;
use crate::ptlrpc::wire::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use tracing::{info, warn};

impl Oss {
    /// The recovery window (`recovery_time_soft`, obd_timeout × 3 in Lustre: 300 s); shorter
    /// here, one obd_timeout, as tests use short ones.
    fn recovery_window(&self) -> Duration {
        self.obd_timeout
    }

    /// A request to OST `ost` while it recovers: replays queue, the replay-done ping and other
    /// requests wait; plain pings are answered. Returns the request if `ost` is not recovering.
    pub(super) fn recovering(&mut self, node: &mut Node, req: Req, body: &PtlrpcBody, portal: u32, ost: u32) -> Option<Req> {
        let Some(uuid) = self.exports.get(&req.handle).map(|e| e.uuid.clone()) else { return Some(req) };
        let Some(r) = self.recovery.get_mut(&ost) else { return Some(req) };
        if body.flags & MSG_REPLAY != 0 {
            r.queue.insert((body.transno, req.xid), (uuid, req, portal));
        } else if body.opc == opc::OBD_PING && body.flags & MSG_REQ_REPLAY_DONE == 0 {
            return Some(req);
        } else {
            if body.flags & MSG_REQ_REPLAY_DONE != 0 {
                r.done.insert(uuid);
            }
            r.held.retain(|(h, _)| (h.handle, h.xid) != (req.handle, req.xid)); // a resend replaces its first attempt
            r.held.push((req, portal));
        }
        self.recovery_step(node, ost);
        None
    }

    /// Serves what recovery of `ost` can serve now, and ends it when every client is done.
    pub(super) fn recovery_step(&mut self, node: &mut Node, ost: u32) {
        loop {
            let Some(r) = self.recovery.get_mut(&ost) else { return };
            if r.expected.iter().all(|c| r.done.contains(c)) {
                let r = self.recovery.remove(&ost).expect("looked up above");
                info!(ost, clients = r.done.len(), "recovery over");
                self.trace.push(json!({"recovery": "over", "ost": ost, "clients": r.done.len()}));
                let now = (self.clock)();
                for (mut req, portal) in r.held {
                    req.deadline = now + Duration::from_secs(1).max(req.deadline.saturating_duration_since(now));
                    self.serve_parsed(node, req, portal, ost);
                }
                return;
            }
            let Some((&(transno, xid), (uuid, ..))) = r.queue.first_key_value() else { return };
            // Every client still replaying has its next replay here (or is done): a gap in
            // the numbers is a change no client holds; go on past it.
            let waiting: BTreeSet<&String> = r.queue.values().map(|(u, ..)| u).collect();
            let all_wait = r.expected.iter().all(|c| r.done.contains(c) || waiting.contains(c));
            if transno > r.next && !all_wait {
                return;
            }
            if transno > r.next {
                info!(ost, from = r.next, to = transno, next_client = %uuid, "recovery: skipping transnos no client replays");
            }
            // A replay resent after its reply was lost (or late) comes again below `next`: it is
            // served again (the reply cache answers it) but counted once, as its client does.
            if transno >= r.next {
                self.replays += 1;
            }
            r.next = r.next.max(transno + 1);
            let (uuid, req, portal) = r.queue.remove(&(transno, xid)).expect("the first key");
            self.trace.push(json!({"replay": opc::name(req.opc), "ost": ost, "transno": transno, "xid": xid, "client": uuid}));
            self.serve_parsed(node, req, portal, ost);
        }
    }

    /// Past the recovery window: clients that never connected are evicted; past twice the
    /// window, those that connected but stopped replaying too.
    pub(super) fn recovery_deadlines(&mut self, node: &mut Node) {
        let now = (self.clock)();
        let window = self.recovery_window();
        let mut osts: Vec<u32> = self.recovery.keys().copied().collect();
        osts.sort_unstable();
        for ost in osts {
            let r = self.recovery.get_mut(&ost).expect("listed");
            let deadline = *r.deadline.get_or_insert(now + window);
            if now < deadline {
                continue;
            }
            let waiting: BTreeSet<String> = r.queue.values().map(|(u, ..)| u.clone()).collect();
            let hard = now >= deadline + window;
            let gone: Vec<String> = r.expected.iter().filter(|c| !r.done.contains(*c) && !waiting.contains(*c) && (hard || !r.connected.contains(*c))).cloned().collect();
            for c in &gone {
                r.expected.remove(c);
                warn!(ost, uuid = %c, "recovery: client did not finish within the window; evicted (its uncommitted changes are lost)");
                self.trace.push(json!({"recovery": "evicted", "ost": ost, "uuid": c}));
                if let Some(o) = self.osts.get_mut(&ost) {
                    o.set_client(c, false);
                }
            }
            self.recovery_step(node, ost);
        }
    }

    /// Whether OST `ost` is recovering and `uuid` is a client it waits for (its CONNECT reply
    /// says MSG_CONNECT_RECOVERING); `None`: recovering, and `uuid` is a new client (-EBUSY).
    pub(super) fn recovery_connect(&mut self, ost: u32, uuid: &str) -> Option<bool> {
        match self.recovery.get_mut(&ost) {
            None => Some(false),
            Some(r) if r.expected.contains(uuid) => {
                r.connected.insert(uuid.to_string());
                r.done.remove(uuid); // a reconnect replays again
                Some(true)
            }
            Some(_) => None,
        }
    }

    /// Commits every OST (OST_SYNC of the whole OSS; what a clean restart does first).
    pub fn commit(&mut self) {
        let mut osts: Vec<u32> = self.osts.keys().copied().collect();
        osts.sort_unstable();
        for i in osts {
            if let Err(e) = self.osts.get_mut(&i).expect("listed").commit() {
                warn!(ost = i, "commit: {e}");
            }
        }
        self.last_commit = Some((self.clock)());
    }

    /// Commits when the commit interval has passed since the last commit (the journal's
    /// commit timer), or when an OST's cache holds more than CACHE_LIMIT.
    pub(super) fn commit_due(&mut self) {
        let now = (self.clock)();
        let last = *self.last_commit.get_or_insert(now);
        let full = self.osts.values().any(|o| o.uncommitted_bytes() > super::CACHE_LIMIT);
        if full || (now.saturating_duration_since(last) >= self.commit_interval && self.osts.values().any(|o| o.dirty())) {
            self.commit();
        }
    }
}
