//! LNet health at work: who pays for a failed send (`lnet_health_check`), the recovery queues
//! whose NIs and peer NIs are pinged until healthy again (`lnet_recover_local_nis`,
//! `lnet_recover_peer_nis`), and ACKs and REPLYs timed out at the LNet level
//! (`lnet_finalize_expired_responses`).

use super::health::{next_recovery_ping_ms, HealthStatus};
use super::*;
use tracing::info;

pub use super::health::{PID_LUSTRE, PING_MATCH_BITS, PING_PORTAL};
use super::health::{PingState, Pinged};

impl Lnet {
    /// `lnet_health_check` for a send that ended with class `hs` on NI `ni` to peer NI `hop`.
    /// A success raises the NI; a failure lowers whichever end its class blames — the local NI
    /// only on a node with more than one NI, the peer NI only of a Multi-Rail peer or a
    /// gateway, never one of our own NIDs — and queues it for recovery. Recovery pings leave
    /// health to their own handler.
    pub(super) fn health_check(&mut self, ni: NiIdx, hop: Nid, hs: HealthStatus, recovery_ping: bool) {
        let s = self.tunables.sensitivity;
        if recovery_ping || ni == LO_NI {
            return;
        }
        if hs == HealthStatus::Ok {
            self.nis[ni].health.succeed(s);
            return;
        }
        self.counters.health_failures += 1;
        let multi_ni = self.nis.len() > 2;
        let peer_counts = !self.is_local(hop) && (self.mr.nids_of(self.mr.primary_of(hop)).is_some() || self.routes.iter().any(|r| r.1 == hop));
        if hs.hurts_local_ni() {
            self.nis[ni].stats.count(hs);
            if multi_ni && s > 0 {
                let n = &mut self.nis[ni];
                n.health.fail(s);
                n.lowest = n.lowest.min(n.health.0);
                self.queue_local(ni);
            }
        }
        if hs.hurts_peer_ni() {
            let p = self.nis[ni].peer_ni.entry(hop).or_default();
            p.stats.count(hs);
            if peer_counts && s > 0 {
                p.fail(s);
                self.queue_peer(hop);
            }
        }
    }

    /// Something arrived on NI `ni` from peer NI `from`: the peer NI's health rises, and the
    /// ping counts of both restart (`lnet_health_check`'s success path for a received message).
    pub(super) fn health_received(&mut self, ni: NiIdx, from: Nid) {
        let s = self.tunables.sensitivity;
        let Some(n) = self.nis.get_mut(ni) else { return };
        n.received += 1;
        // (No hashing while nothing ever failed here: the common case.)
        if let Some(p) = (!n.peer_ni.is_empty()).then(|| n.peer_ni.get_mut(&from)).flatten() {
            p.health.succeed(s);
        }
        if let Some(st) = self.recovery.peers.get_mut(&from) {
            st.count = 0;
        }
        if let Some(st) = self.recovery.local.get_mut(&ni) {
            st.count = 0;
        }
    }

    /// `lnet_ni_add_to_recoveryq_locked`.
    fn queue_local(&mut self, ni: NiIdx) {
        if !self.recovery.local.contains_key(&ni) {
            self.nis[ni].stats.recoveries += 1;
            info!(ni = %self.nis[ni].cfg.nid, health = self.nis[ni].health.0, "local NI queued for recovery");
            self.recovery.local.insert(ni, PingState { next_ms: self.now_ms, ..Default::default() });
        }
    }

    /// `lnet_peer_ni_add_to_recoveryq_locked`.
    fn queue_peer(&mut self, nid: Nid) {
        if !self.recovery.peers.contains_key(&nid) {
            if let Some(p) = self.ni_on(nid.net()).and_then(|i| self.nis[i].peer_ni.get_mut(&nid)) {
                p.stats.recoveries += 1;
            }
            info!(peer_ni = %nid, "peer NI queued for recovery");
            self.recovery.peers.insert(nid, PingState { next_ms: self.now_ms, ..Default::default() });
        }
    }

    fn peer_health(&self, nid: Nid) -> u32 {
        self.ni_on(nid.net()).and_then(|i| self.nis[i].peer_ni.get(&nid)).map_or(health::MAX_HEALTH, |p| p.health.0)
    }

    /// The monitor's pass (about once a second): NIs back at full health leave their queue;
    /// the others whose time has come and that have no ping out are pinged — a local NI pings
    /// its own NID through itself, a peer NI is pinged from the local NI on its net — and the
    /// next ping of each is put off 2^count seconds (`lnet_get_next_recovery_ping`).
    pub(super) fn recover(&mut self) {
        let now = self.now_ms;
        if now < self.recovery.next_scan_ms || (self.recovery.local.is_empty() && self.recovery.peers.is_empty()) {
            return;
        }
        self.recovery.next_scan_ms = now + self.tunables.recovery_interval_ms;
        let nis = &self.nis;
        self.recovery.local.retain(|i, _| nis[*i].health.degraded());
        let healthy: Vec<Nid> = self.recovery.peers.keys().copied().filter(|n| !(self.peer_health(*n) < health::MAX_HEALTH)).collect();
        for n in healthy {
            self.recovery.peers.remove(&n);
        }
        let due = |st: &PingState| !st.pending && now >= st.next_ms;
        let local: Vec<NiIdx> = self.recovery.local.iter().filter(|(_, st)| due(st)).map(|(i, _)| *i).collect();
        let peers: Vec<Nid> = self.recovery.peers.iter().filter(|(_, st)| due(st)).map(|(n, _)| *n).collect();
        for i in local {
            let nid = self.nis[i].cfg.nid;
            self.send_ping(Pinged::Local(i), i, nid);
        }
        for nid in peers {
            if let Some(i) = self.ni_on(nid.net()) {
                self.send_ping(Pinged::Peer(nid), i, nid);
            }
        }
    }

    /// A recovery ping: a GET of nothing from the ping portal of `nid`, out of NI `ni`.
    fn send_ping(&mut self, who: Pinged, ni: NiIdx, nid: Nid) {
        let st = match who {
            Pinged::Local(i) => self.recovery.local.get_mut(&i),
            Pinged::Peer(n) => self.recovery.peers.get_mut(&n),
        };
        let Some(st) = st else { return };
        st.pending = true;
        st.count = st.count.saturating_add(1);
        st.next_ms = next_recovery_ping_ms(st.count, self.now_ms, self.tunables.recovery_interval_ms);
        self.counters.recovery_pings += 1;
        let md = self.md_bind(MdSpec { iov: Vec::new(), options: 0, threshold: Some(2), max_size: 0, user_ptr: 0 }, true);
        self.recovery.pings.insert(md.0, who);
        let target = ProcessId::new(nid, PID_LUSTRE);
        let body = HdrBody::Get { return_wmd: self.wire_handle(md), match_bits: PING_MATCH_BITS, ptl_index: PING_PORTAL, src_offset: 0, sink_length: 0 };
        let hdr = self.hdr_to(ni, target, 0, body);
        let ev = self.event(EventKind::Send, md, target, PING_PORTAL, PING_MATCH_BITS, 0, 0, 0, 0);
        self.attach_md(md);
        self.track_response(md, nid);
        self.launch(Some(md), Some(ev), ni, nid, target, hdr, Vec::new(), Some(Vec::new()));
    }

    /// An event of a recovery ping's MD (`lnet_handle_recovery_reply`): a REPLY ends it well
    /// (a local NI gains the sensitivity; a peer NI gained it on receipt); a failed send or
    /// REPLY ends it badly (the next ping waits its backoff). Either way the ping is over.
    pub(super) fn ping_event(&mut self, ev: &Event) {
        let done_ok = ev.kind == EventKind::Reply && ev.status == 0;
        if ev.status == 0 && ev.kind == EventKind::Send {
            return;
        }
        let Some(who) = self.ping_over(ev.md) else { return };
        if let (Pinged::Local(i), true) = (who, done_ok) {
            let s = self.tunables.sensitivity;
            self.nis[i].health.succeed(s);
        }
    }

    /// The recovery ping of MD `md` is over: its MD goes (no user hears of it) and its NI may be
    /// pinged again. Returns whom it pinged, if it was one.
    fn ping_over(&mut self, md: MdHandle) -> Option<Pinged> {
        let who = self.recovery.pings.remove(&md.0)?;
        self.drop_ping_md(md);
        let st = match who {
            Pinged::Local(i) => self.recovery.local.get_mut(&i),
            Pinged::Peer(n) => self.recovery.peers.get_mut(&n),
        };
        if let Some(st) = st {
            st.pending = false;
        }
        Some(who)
    }

    /// Unlinks a recovery ping's MD without telling any user.
    fn drop_ping_md(&mut self, h: MdHandle) {
        if let Some(md) = self.mds.get_mut(h.0) {
            md.zombie = true;
            md.threshold = Some(0);
            if md.refs == 0 {
                self.mds.remove(h.0);
            }
        }
    }

    /// `lnet_attach_rsp_tracker`: MD `md` waits for an ACK or REPLY from next hop `hop`, until
    /// the transaction timeout.
    pub(super) fn track_response(&mut self, md: MdHandle, hop: Nid) {
        if !self.tunables.response_tracking {
            return;
        }
        let deadline = self.now_ms + self.tunables.transaction_timeout_ms;
        if let Some(m) = self.mds.get_mut(md.0) {
            if m.rsp.is_none() {
                self.recovery.tracked += 1;
            }
            m.rsp = Some((deadline, hop));
        }
        if self.recovery.tracked == 1 || self.recovery.next_rsp_scan_ms == 0 {
            self.recovery.next_rsp_scan_ms = self.now_ms + self.tunables.transaction_timeout_ms / 2;
        }
    }

    /// The ACK or REPLY came (or the send failed, which its event says): no timeout.
    pub(super) fn untrack_response(&mut self, md: MdHandle) {
        if let Some(m) = self.mds.get_mut(md.0) {
            m.rsp = None;
        }
    }

    /// `lnet_finalize_expired_responses`, every half transaction timeout: an MD still waiting
    /// past its deadline is unlinked — its user sees an UNLINK event with -ETIMEDOUT — and the
    /// peer NI it waited on pays a remote failure; a recovery ping's ends as failed.
    pub(super) fn expire_responses(&mut self) {
        let now = self.now_ms;
        if self.recovery.tracked == 0 || now < self.recovery.next_rsp_scan_ms {
            return;
        }
        self.recovery.next_rsp_scan_ms = now + (self.tunables.transaction_timeout_ms / 2).max(1);
        let expired: Vec<(u64, Nid)> = self.mds.handles_where(|m| m.rsp.is_some_and(|(d, _)| d <= now)).into_iter().map(|h| (h, self.mds.get(h).and_then(|m| m.rsp).expect("just seen").1)).collect();
        for &(h, hop) in &expired {
            self.mds.get_mut(h).expect("just seen").rsp = None;
            self.counters.response_timeouts += 1;
            let s = self.tunables.sensitivity;
            let ours = self.is_local(hop);
            if let Some(i) = self.ni_on(hop.net()) {
                let p = self.nis[i].peer_ni.entry(hop).or_default();
                p.stats.response_timeouts += 1;
                if s > 0 && !ours {
                    p.fail(s);
                    self.queue_peer(hop);
                }
            }
            if self.ping_over(MdHandle(h)).is_some() {
                continue;
            }
            info!(md = h, peer_ni = %hop, "no ACK or REPLY within the transaction timeout; unlinking");
            let _ = self.unlink_with(MdHandle(h), errno::ETIMEDOUT);
        }
        self.recovery.tracked = self.mds.values().filter(|m| m.rsp.is_some()).count();
    }

    /// When the monitor next has work (recovery pings, response deadlines), for a driver that
    /// sleeps.
    pub(super) fn next_monitor_ms(&self) -> Option<u64> {
        let rec = (!self.recovery.local.is_empty() || !self.recovery.peers.is_empty()).then_some(self.recovery.next_scan_ms);
        let rsp = (self.recovery.tracked > 0).then_some(self.recovery.next_rsp_scan_ms);
        rec.into_iter().chain(rsp).min()
    }

    /// NIs and peer NIs on the recovery queues (`lnetctl debug recoveryq`).
    pub fn recovery_queue(&self) -> (Vec<Nid>, Vec<Nid>) {
        (self.recovery.local.keys().map(|i| self.nis[*i].cfg.nid).collect(), self.recovery.peers.keys().copied().collect())
    }
}
