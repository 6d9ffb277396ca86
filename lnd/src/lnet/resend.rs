//! Resending a PUT or GET to a Multi-Rail peer over another path when its LND failed it for a
//! reason that allows it (`lnet_attempt_msg_resend`): at most `lnet_retry_count` times, within
//! `lnet_transaction_timeout` of the first send.

use super::health::HealthStatus;
use super::mr::Retry;
use super::*;
use tracing::info;

impl Lnet {
    /// A retry record for a send to `target` if it is a Multi-Rail peer and resends are on
    /// (Lustre resends to a peer with one NI never: `lp_nnis <= 1`).
    pub(super) fn retry_for(&self, target: ProcessId, hdr: &HdrRepr, md: MdHandle) -> Option<Box<Retry>> {
        if self.mr.is_empty() || self.tunables.retries() == 0 || self.mr.nids_of(target.nid).is_none() {
            return None;
        }
        Some(Box::new(Retry { target, hdr: hdr.clone(), md, tries: 0, deadline_ms: self.now_ms + self.tunables.transaction_timeout_ms }))
    }

    pub(super) fn set_retry(&mut self, id: MsgId, retry: Option<Box<Retry>>) {
        if retry.is_some() {
            if let Some(m) = self.msgs.get_mut(id.0) {
                m.retry = retry;
            }
        }
    }

    /// A send failed with class `hs`: if it may go again, it does, over the best path but the
    /// one that failed; returns the message if it stays finalized.
    pub(super) fn try_mr_resend(&mut self, mut msg: Msg, hs: HealthStatus) -> Option<Msg> {
        if hs == HealthStatus::Ok || !hs.resendable() {
            return Some(msg);
        }
        let (Some(r), Some((ni, hop))) = (msg.retry.as_mut(), msg.credit) else { return Some(msg) };
        if r.tries >= self.tunables.retries() || self.now_ms >= r.deadline_ms || self.mds.get(r.md.0).is_none() {
            return Some(msg);
        }
        let (target, md) = (r.target, r.md);
        let Ok(p) = self.select(target.nid, Some((ni, hop))) else { return Some(msg) };
        let r = msg.retry.as_mut().expect("checked");
        r.tries += 1;
        let mut hdr = r.hdr.clone();
        hdr.dest_nid = p.dest;
        hdr.src_nid = self.src_nid(p.ni, p.dest);
        info!(dest = %target.nid, failed = %hop, via = %p.hop, class = hs.name(), try_ = r.tries, "send failed; resending over another path");
        self.counters.resends += 1;
        self.nis[p.ni].resent += 1;
        let len = self.mds.get(md.0).map_or(0, |m| m.length);
        let (iov, get_sink) = match hdr.body {
            HdrBody::Get { .. } => (Vec::new(), (p.hop == p.dest).then(|| self.iov_of(md, 0, len))),
            _ => (self.iov_of(md, 0, hdr.payload_length as u64), None),
        };
        if matches!(hdr.body, HdrBody::Get { .. }) || matches!(hdr.body, HdrBody::Put { ack_wmd, .. } if !ack_wmd.is_none()) {
            self.track_response(md, p.hop);
        }
        msg.credit = None;
        let id = MsgId(self.msgs.insert(msg));
        let to = ProcessId::new(p.dest, target.pid);
        self.msgs.get_mut(id.0).expect("inserted").pending = Some(LndSend { msg: id, ni: p.ni, target: to, next_hop: p.hop, hdr, iov, get_sink });
        self.post_send(id);
        None
    }
}
