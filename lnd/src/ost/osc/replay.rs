//! Replay (`ptlrpc_replay`, `ptlrpc_free_committed`): every change the server executed keeps its
//! request — pages included — until a reply's `pb_last_committed` covers its transno; when a
//! reconnect finds the target recovering (MSG_CONNECT_RECOVERING), the import replays them one
//! at a time in transno order (MSG_REPLAY, their xid and transno), then sends the replay-done
//! ping, whose reply ends its recovery; only then do new requests and resends go.

use super::state::{Again, Op, Retained, Rpc};
use super::Osc;
use crate::node::Node;
use crate::ptlrpc::wire::*;
use tracing::{debug, info};

impl Osc {
    /// A reply from target `t` said `last_committed`: requests at or below it are released.
    pub(super) fn free_committed(&mut self, t: usize, last_committed: u64) {
        let imp = &mut self.imports[t];
        if last_committed > imp.committed {
            imp.committed = last_committed;
            imp.replay = imp.replay.split_off(&(last_committed + 1));
        }
    }

    /// The server executed `rpc` as `transno` (not yet committed): keep what replaying needs.
    pub(super) fn retain(&mut self, rpc: &mut Rpc, transno: u64, oid: Option<u64>) {
        if transno <= self.imports[rpc.t].committed || !rpc.op.modifies() {
            return;
        }
        let data = rpc.data.take().or_else(|| self.imports[rpc.t].replay.get(&transno).and_then(|r| r.data.clone()));
        self.imports[rpc.t].replay.insert(transno, Retained { op: rpc.op, xid: rpc.xid, data, oid });
    }

    /// Connected to target `t` and it is recovering: replay (unless the mutant skips it), and
    /// tell the other imports of the same server to reconnect (the server restarted).
    pub(super) fn start_replay(&mut self, node: &mut Node, t: usize) {
        self.imports[t].recovering = true;
        let n = self.imports[t].replay.len();
        info!(job = %self.job.name, ost = self.job.targets[t].0, requests = n, "target recovering: replaying");
        self.trace.push(serde_json::json!({"recovery": "replay", "ost": self.job.targets[t].0, "requests": n}));
        if crate::mutant::active("osc_no_replay") {
            self.imports[t].replay.clear();
        }
        let nid = self.job.targets[t].1;
        for u in 0..self.imports.len() {
            if u != t && self.job.targets[u].1 == nid && self.imports[u].handle != 0 {
                self.fail_import(node, u, "its server restarted");
            }
        }
        self.replay_next(node, t, 0);
    }

    /// Replays the first retained request of target `t` after transno `after`, or sends the
    /// replay-done ping when none is left.
    pub(super) fn replay_next(&mut self, node: &mut Node, t: usize, after: u64) {
        let next = self.imports[t].replay.range(after + 1..).next().map(|(&tr, r)| (tr, r.op, r.xid));
        let r = match next {
            Some((transno, op, xid)) => self.start(node, op, Some(Again { xid: Some(xid), tries: 1, replay: Some(transno) })),
            None => self.start(node, Op::ReplayDone { t }, None),
        };
        if let Err(e) = r {
            self.fail(format!("replay to OST{:04x}: {e}", self.job.targets[t].0));
        }
    }

    /// The reply to a replay (whatever its status, the next one goes) or to the replay-done
    /// ping (recovery is over: the import is usable again).
    pub(super) fn replayed(&mut self, node: &mut Node, rpc: Rpc, status: i32) {
        let t = rpc.t;
        match rpc.replay {
            Some(transno) => {
                self.report.replays += 1;
                debug!(job = %self.job.name, op = ?rpc.op, transno, status, "replayed");
                self.release(node, rpc);
                self.replay_next(node, t, transno);
            }
            None => {
                self.release(node, rpc);
                info!(job = %self.job.name, ost = self.job.targets[t].0, "recovery over");
                let imp = &mut self.imports[t];
                imp.recovering = false;
                imp.reconnecting = false;
            }
        }
    }

    /// A replay the server could not take as sent (damaged pages, no memory): again, same xid.
    pub(super) fn replay_again(&mut self, node: &mut Node, rpc: Rpc) {
        let rpc = self.release(node, rpc);
        let again = Again { xid: Some(rpc.xid), tries: rpc.tries + 1, replay: rpc.replay };
        if let Err(e) = self.start(node, rpc.op, Some(again)) {
            self.fail(format!("{:?}: replayed again: {e}", rpc.op));
        }
    }

    /// Rewrites a replay's request from what was retained: a CREATE names its object, a WRITE
    /// sends the pages it kept.
    #[allow(clippy::type_complexity)]
    pub(super) fn replay_request(&self, t: usize, transno: u64, bufs: &mut [Vec<u8>], bulk: &mut Option<(bool, Vec<u8>, u32)>) {
        let Some(r) = self.imports[t].replay.get(&transno) else { return };
        if let (Some(oid), Op::Create { .. }) = (r.oid, r.op) {
            bufs[0] = Obdo { valid: valid::FLGROUP | valid::FLID, oid, seq: self.job.targets[t].0 as u64, ..Default::default() }.emit();
        }
        if let (Some(data), Some((true, d, len))) = (&r.data, bulk.as_mut()) {
            *d = data.clone();
            *len = data.len() as u32;
            if let Ok(mut o) = Obdo::parse(&bufs[0], false) {
                if o.valid & valid::FLCKSUM != 0 {
                    o.cksum = crc32c(0, data);
                    bufs[0] = o.emit();
                }
            }
        }
    }

    /// Changes this job has had executed and not yet seen committed (for tests).
    pub fn uncommitted(&self) -> usize {
        self.imports.iter().map(|i| i.replay.len()).sum()
    }
}
