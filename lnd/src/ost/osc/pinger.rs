//! The client's pinger (`ptlrpc_pinger_main`): an import that has sent nothing for a ping
//! interval (obd_timeout / 4) sends OBD_PING, so the server knows the client is alive; a ping
//! answered -ENOTCONN or not at all makes the client connect again.

use super::state::Op;
use super::{Osc, Phase};
use crate::node::Node;
use std::time::Duration;

impl Osc {
    /// Pings every connected import that has been quiet for a ping interval and has no ping
    /// in flight; none once the job has started disconnecting.
    pub(super) fn ping_idle(&mut self, node: &mut Node) {
        if matches!(self.phase, Phase::Connect | Phase::Disconnect | Phase::Done) {
            return;
        }
        let interval = crate::ptlrpc::pinger::ping_interval(Duration::from_millis(self.job.obd_timeout_ms));
        let now = (self.clock)();
        for t in 0..self.imports.len() {
            let imp = &self.imports[t];
            let quiet = imp.last_sent.is_some_and(|at| now.saturating_duration_since(at) >= interval);
            if imp.handle == 0 || imp.reconnecting || !quiet || self.rpcs.values().any(|r| matches!(r.op, Op::Ping { t: p } if p == t)) {
                continue;
            }
            if let Err(e) = self.start(node, Op::Ping { t }, None) {
                self.fail(format!("ping OST{:04x}: {e}", self.job.targets[t].0));
            }
        }
    }
}
