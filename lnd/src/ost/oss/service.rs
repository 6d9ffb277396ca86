//! The OST_IO service's threads and adaptive timeouts: bulk requests wait in arrival order for
//! one of the OSS's `io_threads` (Lustre's `ost_io` service threads), a waiting request whose
//! client does adaptive timeouts gets an early reply before its deadline
//! (`ptlrpc_at_send_early_reply`), and every reply reports the service estimate and the time
//! the request took.

use super::record::Queued;
use super::{Oss, Req, Wait};
use crate::node::Node;
use crate::ptlrpc::at::wire_secs;
use crate::ptlrpc::wire::*;
use std::time::{Duration, Instant};
use tracing::debug;

impl Oss {
    /// Bulk transfers under way.
    fn in_service(&self) -> usize {
        self.waits.values().filter(|w| matches!(w, Wait::BulkIn { .. } | Wait::BulkOut { .. })).count()
    }

    /// Serves a BRW now if a thread is free, or queues it (a resend of it meanwhile is "in
    /// progress" and dropped, as for a transfer under way).
    pub(super) fn brw_or_queue(&mut self, node: &mut Node, req: Req, body: &PtlrpcBody, obdo: Obdo, ost: u32) {
        if self.io_queue.is_empty() && self.in_service() < self.io_threads {
            return self.brw(node, req, body, obdo, ost);
        }
        let id = self.id();
        self.active.insert((req.handle, req.xid), id);
        self.waits.insert(id, Wait::Queued(Box::new(Queued { req, body: *body, obdo, ost })));
        self.io_queue.push_back(id);
        self.queued_max = self.queued_max.max(self.io_queue.len());
    }

    /// Starts queued BRWs while threads are free. One that waited so long that its deadline is
    /// within the early margin gets an early reply first, so its transfer has time.
    pub(super) fn start_queued(&mut self, node: &mut Node) {
        while !self.io_queue.is_empty() && self.in_service() < self.io_threads {
            let id = self.io_queue.pop_front().expect("not empty");
            let Some(Wait::Queued(mut q)) = self.waits.remove(&id) else { continue }; // dropped meanwhile
            self.active.remove(&(q.req.handle, q.req.xid));
            let now = (self.clock)();
            if q.req.at && q.req.deadline.saturating_duration_since(now) < self.margin(&q.req) {
                self.early_reply(node, &mut q.req, now);
            }
            self.brw(node, q.req, &q.body, q.obdo, q.ost);
        }
    }

    /// The margin before a deadline at which an early reply goes: `at_early_margin`, or half the
    /// time the request was given when that is shorter (our RPCs take milliseconds, Lustre's
    /// seconds: a 5 s margin on a 5 s timeout would answer every request early at once).
    fn margin(&self, req: &Req) -> Duration {
        self.at.early_margin().min(req.deadline.saturating_duration_since(req.arrival) / 2)
    }

    /// Queued requests: early replies for those near their deadline (clients that do adaptive
    /// timeouts), and those past it dropped unanswered (`ptlrpc_server_handle_request`:
    /// "Dropping timed-out request").
    pub(super) fn check_queued(&mut self, node: &mut Node) {
        let now = (self.clock)();
        // The queue, in arrival order (ids of requests dropped meanwhile find no wait).
        let due: Vec<u64> = self.io_queue.iter().copied().filter(|id| matches!(self.waits.get(id), Some(Wait::Queued(q)) if q.req.deadline.saturating_duration_since(now) < self.margin(&q.req))).collect();
        for id in due {
            let Some(Wait::Queued(mut q)) = self.waits.remove(&id) else { continue };
            if q.req.at && now < q.req.deadline {
                self.early_reply(node, &mut q.req, now);
                self.waits.insert(id, Wait::Queued(q));
            } else if now >= q.req.deadline {
                self.drop_request(&q.req, "its deadline passed while it waited for a service thread");
            } else {
                self.waits.insert(id, Wait::Queued(q));
            }
        }
    }

    /// Sends `req` an early reply: the time spent so far plus `at_extra` (or the service
    /// estimate, if longer), counted from its arrival; the estimate learns of it, as Lustre's
    /// does, so later replies tell clients to allow for the queue.
    fn early_reply(&mut self, node: &mut Node, req: &mut Req, now: Instant) {
        let spent = now.saturating_duration_since(req.arrival);
        let estimate = self.estimates.entry(req.portal).or_default();
        estimate.measured(&self.at, now, spent + self.at.extra());
        let timeout = estimate.get(&self.at).max(spent + self.at.extra()).min(self.at.max().max(spent));
        let deadline = req.arrival + timeout;
        if deadline <= req.deadline {
            return debug!(xid = req.xid, "no time to add (at_max reached): no early reply");
        }
        req.deadline = deadline;
        self.early_replies += 1;
        let body = PtlrpcBody { msg_type: PTL_RPC_MSG_REPLY, version: LUSTRE_OST_VERSION, opc: req.opc, timeout: wire_secs(timeout), service_time: wire_secs(spent), ..Default::default() };
        let mut msg = LustreMsg::new(SECFLVR_NULL_OST, vec![body.emit()]);
        msg.flags = MSGHDR_AT_SUPPORT;
        self.put_reply(node, req, &msg.emit(), 0);
    }

    /// What a reply to `req` reports (`pb_timeout`: the service estimate; `pb_service_time`: the
    /// time `req` took), the estimate learning the latter; and the offset it goes to.
    pub(super) fn reply_timing(&mut self, req: &Req) -> (u32, u32, u32) {
        let now = (self.clock)();
        let took = now.saturating_duration_since(req.arrival);
        let estimate = self.estimates.entry(req.portal).or_default();
        estimate.measured(&self.at, now, took);
        let offset = if req.at { EARLY_REPLY_SIZE as u32 } else { 0 };
        (wire_secs(estimate.get(&self.at)), wire_secs(took), offset)
    }
}
