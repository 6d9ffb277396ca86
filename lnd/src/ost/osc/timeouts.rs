//! RPC deadlines: a fixed timeout, or adaptive ones as ptlrpc keeps them per import (the
//! service estimate each reply reports, the network latency seen around it) with early replies
//! from a busy server moving a request's deadline out (`ptlrpc_at_recv_early_reply`).

use super::state::Rpc;
use super::Osc;
use crate::ptlrpc::wire::{LustreMsg, PtlrpcBody};
use std::time::{Duration, Instant};
use tracing::debug;

impl Osc {
    /// The timeout a new request to target `t` gets (its `pb_timeout`): the job's fixed one, or
    /// `at_est2timeout` of the target's service estimate within `at_min`..`at_max`.
    pub(super) fn rpc_timeout(&self, t: usize) -> Duration {
        match &self.job.at {
            Some(cfg) => cfg.timeout_for(self.imports[t].service_est.get(cfg)),
            None => Duration::from_millis(self.job.timeout_ms.max(1)),
        }
    }

    /// When a request sent at `sent` with `timeout` is late: adaptive timeouts add the network
    /// latency the import has seen (`rq_deadline = rq_sent + rq_timeout + net latency`).
    pub(super) fn deadline(&self, t: usize, sent: Instant, timeout: Duration) -> Instant {
        let latency = self.job.at.as_ref().map_or(Duration::ZERO, |cfg| self.imports[t].net_latency.get(cfg));
        sent + timeout + latency
    }

    /// An early reply to `rpc` (its body alone, at offset 0 of the reply buffer): the server
    /// is still on it and asks for `pb_timeout` seconds from when it was sent.
    pub(super) fn early_reply(&mut self, id: u64, bytes: &[u8]) {
        let Some(rpc) = self.rpcs.get(&id) else { return };
        let body = match LustreMsg::parse(bytes).and_then(|m| m.body()) {
            Ok(b) => b,
            Err(e) => return debug!(job = %self.job.name, xid = rpc.xid, "bad early reply: {e}"),
        };
        let timeout = Duration::from_secs(body.timeout as u64);
        let deadline = self.deadline(rpc.t, rpc.sent_at, timeout);
        let rpc = self.rpcs.get_mut(&id).expect("looked up above");
        debug!(job = %self.job.name, xid = rpc.xid, timeout = body.timeout, "early reply: deadline moved out");
        rpc.deadline = rpc.deadline.max(deadline);
        self.report.early_replies += 1;
    }

    /// A reply's adaptive-timeout figures (`ptlrpc_at_adj_service`, `ptlrpc_at_adj_net_latency`):
    /// the server's service estimate, and the round trip less the time it served the request.
    pub(super) fn at_measured(&mut self, rpc: &Rpc, body: &PtlrpcBody) {
        let Some(cfg) = self.job.at else { return };
        let now = (self.clock)();
        let imp = &mut self.imports[rpc.t];
        imp.service_est.measured(&cfg, now, Duration::from_secs(body.timeout as u64));
        let rtt = now.saturating_duration_since(rpc.sent_at);
        imp.net_latency.measured(&cfg, now, rtt.saturating_sub(Duration::from_secs(body.service_time as u64)));
    }
}
