//! Multi-Rail state: the peers known to have several NIs, the (local NI, peer NI) paths to one
//! ranked as Lustre ranks them (health, selection priority, credits, round robin), and what a
//! message needs to be sent again over another path.

use super::md::MdHandle;
use super::msg::NiIdx;
use crate::wire::{HdrRepr, Nid, ProcessId};
use std::collections::HashMap;

/// Lowest selection priority (`LNET_MAX_SELECTION_PRIORITY`); a lower value is preferred.
pub const LOWEST_PRIORITY: u32 = u32::MAX;

/// A peer with several NIs (`lnetctl peer add --prim_nid P --nid A,B`): users address it by its
/// primary NID, what arrives from any of its NIDs is reported as from the primary one.
#[derive(Debug, Default)]
pub struct MrPeers {
    /// Every NID of every Multi-Rail peer → the peer's primary NID.
    pub primary: HashMap<Nid, Nid>,
    /// Primary NID → all the peer's NIDs (the primary first).
    pub nids: HashMap<Nid, Vec<Nid>>,
}

impl MrPeers {
    pub fn is_empty(&self) -> bool {
        self.nids.is_empty()
    }

    /// The primary NID of the peer `nid` belongs to (`nid` itself for a single-rail peer).
    pub fn primary_of(&self, nid: Nid) -> Nid {
        if self.primary.is_empty() {
            return nid;
        }
        self.primary.get(&nid).copied().unwrap_or(nid)
    }

    /// The NIDs of the Multi-Rail peer whose primary NID is `nid`.
    pub fn nids_of(&self, nid: Nid) -> Option<&[Nid]> {
        self.nids.get(&nid).map(|v| v.as_slice())
    }
}

/// One way to a peer: a local NI and one of the peer's NIs on the same net.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathCand {
    pub ni: NiIdx,
    pub peer_ni: Nid,
    /// Local NI: health, selection priority, free credits (NI credits less its queue), round
    /// robin sequence (sends so far).
    pub ni_health: u32,
    pub ni_priority: u32,
    pub ni_credits: i64,
    pub ni_seq: u64,
    /// Peer NI: the same, its credits those this NI holds for it.
    pub peer_health: u32,
    pub peer_priority: u32,
    pub peer_credits: i64,
    pub peer_seq: u64,
    /// The net's: the best health of the peer's NIs on it (`lpn_healthv`) and of ours
    /// (`lnet_get_net_healthv_locked`); filled in by [`rank_nets`].
    pub peer_net_health: u32,
    pub net_health: u32,
}

/// Fills in each candidate's net health figures from the others on the same net.
pub fn rank_nets(cands: &mut [PathCand]) {
    for i in 0..cands.len() {
        let net = cands[i].peer_ni.net();
        let same = cands.iter().filter(|c| c.peer_ni.net() == net);
        let (p, n) = same.fold((0, 0), |(p, n), c| (p.max(c.peer_health), n.max(c.ni_health)));
        cands[i].peer_net_health = p;
        cands[i].net_health = n;
    }
}

/// Orders candidates as Lustre 2.15 does: the net first (`lnet_find_best_ni_on_local_net`: the
/// healthier peer net, the healthier local net, the lower net priority — here the NI's —, the
/// net used least recently), then the local NI on it (`lnet_get_best_ni`: health, priority,
/// credits, round robin), then the peer NI (`lnet_select_peer_ni`: health, priority, credits,
/// round robin). `Less` = `a` is the better path.
pub fn compare(a: &PathCand, b: &PathCand) -> std::cmp::Ordering {
    b.peer_net_health
        .cmp(&a.peer_net_health)
        .then(b.net_health.cmp(&a.net_health))
        .then(a.ni_priority.cmp(&b.ni_priority))
        .then(a.ni_seq.cmp(&b.ni_seq))
        .then(b.ni_health.cmp(&a.ni_health))
        .then(a.ni_priority.cmp(&b.ni_priority))
        .then(b.ni_credits.cmp(&a.ni_credits))
        .then(a.ni_seq.cmp(&b.ni_seq))
        .then(a.ni.cmp(&b.ni))
        .then(b.peer_health.cmp(&a.peer_health))
        .then(a.peer_priority.cmp(&b.peer_priority))
        .then(b.peer_credits.cmp(&a.peer_credits))
        .then(a.peer_seq.cmp(&b.peer_seq))
        .then(a.peer_ni.0.cmp(&b.peer_ni.0))
}

/// The best of `cands` (`None` if there is none); ranks their nets first.
pub fn best(cands: &mut [PathCand]) -> Option<PathCand> {
    rank_nets(cands);
    cands.iter().min_by(|a, b| compare(a, b)).copied()
}

/// Where a message goes: out of NI `ni` to the next hop `hop`, addressed to `dest` (a peer NI
/// of the target, which Multi-Rail may have chosen other than the NID the user gave).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    pub ni: NiIdx,
    pub hop: Nid,
    pub dest: Nid,
}

/// What a message needs to go again: the target as the user gave it, the header as first
/// built (its NIDs are chosen again), its MD, tries so far and its deadline.
#[derive(Debug)]
pub struct Retry {
    pub target: ProcessId,
    pub hdr: HdrRepr,
    pub md: MdHandle,
    pub tries: u32,
    pub deadline_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(ni: NiIdx, peer: u32) -> PathCand {
        // NI n on net n; peer NIs on the net of their NI.
        let peer_ni: Nid = format!("{peer}@dma{ni}").parse().unwrap();
        PathCand { ni, peer_ni, ni_health: 1000, ni_priority: LOWEST_PRIORITY, ni_credits: 8, ni_seq: 0, peer_health: 1000, peer_priority: LOWEST_PRIORITY, peer_credits: 8, peer_seq: 0, peer_net_health: 0, net_health: 0 }
    }

    /// `lnet_get_best_ni`: health first — a healthier NI wins over priority, credits and turn.
    #[test]
    fn the_healthiest_local_ni_wins_first() {
        let a = PathCand { ni_health: 900, ni_priority: 0, ni_credits: 100, ..cand(1, 1) };
        let b = PathCand { ni_seq: 50, ..cand(2, 2) };
        assert_eq!(best(&mut [a, b]).unwrap().ni, 2);
    }

    /// `lnet_get_best_ni`: at equal health the lower `ni_sel_priority` value wins, before credits.
    #[test]
    fn at_equal_health_the_ni_priority_decides_before_credits() {
        let a = PathCand { ni_priority: 0, ni_credits: 1, ..cand(1, 1) };
        let b = PathCand { ni_credits: 100, ..cand(2, 2) };
        assert_eq!(best(&mut [a, b]).unwrap().ni, 1);
    }

    /// `lnet_get_best_ni`: then the NI with more credits (negative ones mean queued sends), then
    /// round robin (`ni_seq`).
    #[test]
    fn then_credits_then_round_robin() {
        let a = PathCand { ni_credits: -2, ..cand(1, 1) };
        let b = cand(2, 2);
        assert_eq!(best(&mut [a, b]).unwrap().ni, 2);
        let a = PathCand { ni_seq: 3, ..cand(1, 1) };
        let b = PathCand { ni_seq: 4, ..cand(2, 2) };
        assert_eq!(best(&mut [a, b]).unwrap().ni, 1, "the NI used less often");
    }

    /// `lnet_select_peer_ni`: on the chosen NI, the healthiest peer NI, then its priority, its
    /// credits, and the one used least recently.
    #[test]
    fn peer_nis_are_ranked_by_health_priority_credits_and_turn() {
        let a = PathCand { peer_health: 500, peer_priority: 0, ..cand(1, 1) };
        let b = cand(1, 2);
        assert_eq!(best(&mut [a, b]).unwrap().peer_ni, cand(1, 2).peer_ni);
        let a = PathCand { peer_priority: 1, peer_credits: 1, ..cand(1, 1) };
        let b = PathCand { peer_priority: 2, peer_credits: 8, ..cand(1, 2) };
        assert_eq!(best(&mut [a, b]).unwrap().peer_ni, cand(1, 1).peer_ni);
        let a = PathCand { peer_credits: 7, ..cand(1, 1) };
        assert_eq!(best(&mut [a, cand(1, 2)]).unwrap().peer_ni, cand(1, 2).peer_ni);
        let a = PathCand { peer_seq: 9, ..cand(1, 1) };
        assert_eq!(best(&mut [a, cand(1, 2)]).unwrap().peer_ni, cand(1, 2).peer_ni);
    }

    /// `lnet_find_best_ni_on_local_net`: the peer net whose best peer NI is healthier wins even
    /// when the local NI on the other is the healthier.
    #[test]
    fn the_healthier_peer_net_wins_before_the_local_ni() {
        let a = PathCand { peer_health: 900, ..cand(1, 1) };
        let b = PathCand { ni_health: 100, ..cand(2, 2) };
        assert_eq!(best(&mut [a, b]).unwrap().ni, 2);
        // Two peer NIs on one net: the net is as healthy as its best; on it, the healthier wins.
        let a = PathCand { peer_health: 0, ..cand(1, 1) };
        assert_eq!(best(&mut [a, cand(1, 2)]).unwrap().peer_ni, cand(1, 2).peer_ni, "the healthy peer NI on the net");
    }
}
