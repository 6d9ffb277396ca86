//! Read-only views of the core for `lnetctl`-style inspection: the NIs and their credits, the
//! peers each NI has sent to and their credits, and the fault rules with what they matched.

use super::fault::FaultRule;
use super::health::HealthStats;
use super::Lnet;
use crate::wire::Nid;

/// One NI (`lnetctl net show`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NiInfo {
    pub nid: Nid,
    /// NI-wide transmit credits configured and free now.
    pub credits: u32,
    pub credits_available: u32,
    pub peer_credits: u32,
    /// Sends waiting for an NI credit.
    pub tx_queued: usize,
    /// `health value` of `lnetctl net show -v`, and its health stats.
    pub health_value: u32,
    pub health_stats: HealthStats,
    /// Selection priority (lower is preferred; `u32::MAX` by default).
    pub priority: u32,
    /// Messages sent (resends among them) and received on it.
    pub send_count: u64,
    pub resend_count: u64,
    pub recv_count: u64,
    /// Payload bytes sent, and the lowest health value it fell to.
    pub send_bytes: u64,
    pub health_lowest: u32,
}

/// One peer NI as seen from one of our NIs (`lnetctl peer show`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerInfo {
    pub nid: Nid,
    /// Our NI it is reached on.
    pub local_nid: Nid,
    pub max_tx_credits: u32,
    pub available_tx_credits: u32,
    /// Sends waiting for one of its credits.
    pub tx_queued: usize,
    /// `health value` of `lnetctl peer show -v`, and its health stats.
    pub health_value: u32,
    pub health_stats: HealthStats,
    /// The peer's primary NID (its own NID unless it is a Multi-Rail peer).
    pub primary_nid: Nid,
    /// The lowest health it fell to.
    pub health_lowest: u32,
}

/// One active fault rule (`lctl net_drop_list`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FaultRuleInfo {
    pub rule: FaultRule,
    /// Messages that matched it, and how many of them it dropped or held.
    pub seen: u64,
    pub hits: u64,
}

impl Lnet {
    /// Every NI but the loopback one, in the order they were added.
    pub fn ni_info(&self) -> Vec<NiInfo> {
        self.nis
            .iter()
            .skip(1)
            .map(|n| NiInfo { nid: n.cfg.nid, credits: n.cfg.credits, credits_available: n.credits, peer_credits: n.cfg.peer_credits, tx_queued: n.waiting.len(), health_value: n.health.0, health_stats: n.stats, priority: n.sel_priority, send_count: n.sent, resend_count: n.resent, recv_count: n.received, send_bytes: n.sent_bytes, health_lowest: n.lowest })
            .collect()
    }

    /// The peers our NIs have sent to, sorted by NI then peer NID.
    pub fn peer_info(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = Vec::new();
        for n in self.nis.iter().skip(1) {
            let info = |nid: Nid, avail: u32| {
                let p = n.peer_ni.get(&nid).copied().unwrap_or_default();
                PeerInfo { nid, local_nid: n.cfg.nid, max_tx_credits: n.cfg.peer_credits, available_tx_credits: avail, tx_queued: n.peer_waiting.get(&nid).map_or(0, |q| q.len()), health_value: p.health.0, health_stats: p.stats, primary_nid: self.mr.primary_of(nid), health_lowest: p.lowest }
            };
            let mut peers: Vec<PeerInfo> = n.peer_credits.iter().map(|(&nid, &avail)| info(nid, avail)).collect();
            // Peer NIs that health has seen, and those of Multi-Rail peers, that no send has
            // used yet.
            let mut unused: Vec<Nid> = n.peer_ni.keys().copied().chain(self.mr.nids.values().flatten().copied().filter(|p| p.net() == n.cfg.nid.net())).filter(|nid| !n.peer_credits.contains_key(nid)).collect();
            unused.sort_by_key(|p| p.0);
            unused.dedup();
            peers.extend(unused.into_iter().map(|nid| info(nid, n.cfg.peer_credits)));
            peers.sort_by_key(|p| p.nid.0);
            out.extend(peers);
        }
        out
    }

    /// The active fault rules, in the order they were added.
    pub fn fault_rules(&self) -> Vec<FaultRuleInfo> {
        self.fault_rules.iter().map(|r| FaultRuleInfo { rule: r.rule.clone(), seen: r.seen, hits: r.hits }).collect()
    }

    /// Removes every fault rule; returns how many there were (`lctl net_drop_del -a`).
    pub fn remove_all_fault_rules(&mut self) -> usize {
        std::mem::take(&mut self.fault_rules).len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::NiConfig;
    use super::*;

    #[test]
    fn an_ni_shows_its_credits_and_a_rule_its_counts() {
        let mut l = Lnet::new(12345, 1, 0);
        let nid: Nid = "3@dma0".parse().unwrap();
        l.add_ni(NiConfig { nid, lnd: 1, credits: 256, peer_credits: 8 });
        assert_eq!(l.ni_info(), vec![NiInfo { nid, credits: 256, credits_available: 256, peer_credits: 8, tx_queued: 0, health_value: 1000, health_stats: Default::default(), priority: u32::MAX, send_count: 0, resend_count: 0, recv_count: 0, send_bytes: 0, health_lowest: 1000 }]);
        assert!(l.peer_info().is_empty(), "no peer before the first send");
        let rule: FaultRule = serde_json::from_value(serde_json::json!({"interval": 2, "tag": "t"})).unwrap();
        l.add_fault_rule(rule.clone()).unwrap();
        assert_eq!(l.fault_rules(), vec![FaultRuleInfo { rule, seen: 0, hits: 0 }]);
        assert_eq!(l.remove_all_fault_rules(), 1);
        assert!(l.fault_rules().is_empty());
    }
}
