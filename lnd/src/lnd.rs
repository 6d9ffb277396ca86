//! The LND contract, as in Lustre: LNet calls `send` and (from `lnet_parse`) `recv`; the LND calls
//! back `Lnet::parse` for what arrives and `Lnet::finalize` when a message is done.

use crate::lnet::{Lnet, LndRecv, LndSend};

/// A network driver under the LNet core. Sans-IO towards LNet: it never blocks.
pub trait Lnd: Send {
    /// Short name for logs (`dma`, `lo`, `tcp`).
    fn name(&self) -> &'static str;
    /// Transmit `msg`; finalize it (now or later) with its outcome.
    fn send(&mut self, lnet: &mut Lnet, msg: LndSend);
    /// Act on a parsed message: deliver into `msg.iov` (or, with `rdma_req`, send the reply
    /// data from it), then finalize; with `msg.msg == None` just release the rx.
    fn recv(&mut self, lnet: &mut Lnet, msg: LndRecv);
    /// Take in whatever the LND's transport has delivered; returns whether anything happened.
    fn poll(&mut self, lnet: &mut Lnet) -> bool;
    /// Protocol counters for reports.
    fn stats(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Counters of the paths messages took (immediate, pulled PUT, frames...) by name, sorted:
    /// traces record their deltas after every batch of events, so this must stay cheap.
    fn path_counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Transfers in progress (0 when idle), for leak checks.
    fn busy(&self) -> usize {
        0
    }
    /// When (on the core's clock, ms) the LND wants `poll` again for work of its own (a retry,
    /// a transfer's deadline), for a driver that sleeps between events.
    fn next_due_ms(&self) -> Option<u64> {
        None
    }
    /// The concrete LND, for drivers that manage its transport (a DMA device coming back).
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}
