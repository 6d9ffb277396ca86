//! Multi-Rail path selection (`lnet_select_pathway`): configuring Multi-Rail peers, and for a
//! message the best (local NI, peer NI) pair to one of them, or the single-rail route.

use super::health::MAX_HEALTH;
use super::mr::{best, Path, PathCand, LOWEST_PRIORITY};
use super::{Lnet, LnetError, NiIdx, LO_NI};
use crate::wire::{Net, Nid};

impl Lnet {
    /// `lnetctl peer add --prim_nid primary --nid nids`: a peer with several NIs. Returns an
    /// error if one of the NIDs already belongs to another peer.
    pub fn add_peer(&mut self, primary: Nid, nids: &[Nid]) -> Result<(), String> {
        let mut all = vec![primary];
        all.extend(nids.iter().copied().filter(|n| *n != primary));
        for n in &all {
            if let Some(p) = self.mr.primary.get(n).filter(|p| **p != primary) {
                return Err(format!("{n} already belongs to the peer {p}"));
            }
        }
        for n in &all {
            self.mr.primary.insert(*n, primary);
        }
        self.mr.nids.insert(primary, all);
        Ok(())
    }

    /// The peer's primary NID for `nid` (`LNetPrimaryNID`).
    pub fn primary_nid(&self, nid: Nid) -> Nid {
        self.mr.primary_of(nid)
    }

    /// `lnetctl net set --priority`: the NI's selection priority (lower is preferred).
    pub fn set_ni_priority(&mut self, ni: NiIdx, priority: u32) {
        self.nis[ni].sel_priority = priority;
    }

    /// Every way to the Multi-Rail peer `primary` from a local NI on the same net, but
    /// `avoid` (the path that just failed).
    pub(super) fn mr_candidates(&self, primary: Nid, avoid: Option<(NiIdx, Nid)>, out: &mut Vec<PathCand>) {
        let Some(nids) = self.mr.nids_of(primary) else { return };
        for &p in nids {
            for (i, ni) in self.nis.iter().enumerate().skip(1) {
                if ni.cfg.nid.net() != p.net() || avoid == Some((i, p)) {
                    continue;
                }
                let pc = ni.cfg.peer_credits;
                let peer = ni.peer_ni.get(&p);
                let queued = |q: Option<&std::collections::VecDeque<_>>| q.map_or(0, |q| q.len()) as i64;
                out.push(PathCand {
                    ni: i,
                    peer_ni: p,
                    ni_health: ni.health.0,
                    ni_priority: ni.sel_priority,
                    ni_credits: ni.credits as i64 - ni.waiting.len() as i64,
                    ni_seq: ni.seq,
                    peer_health: peer.map_or(MAX_HEALTH, |s| s.health.0),
                    peer_priority: peer.map_or(LOWEST_PRIORITY, |s| s.sel_priority),
                    peer_credits: ni.peer_credits.get(&p).map_or(pc, |c| *c) as i64 - queued(ni.peer_waiting.get(&p)),
                    peer_seq: peer.map_or(0, |s| s.seq),
                    peer_net_health: 0,
                    net_health: 0,
                });
            }
        }
    }

    /// Picks the NI, next hop and destination NID for `dest` (`lnet_select_pathway`): a local
    /// NID by loopback; the primary NID of a Multi-Rail peer by [`compare`] over its paths; a
    /// NID on a local net directly; else through a gateway, live ones first. `avoid` excludes
    /// one (NI, peer NI) pair of a Multi-Rail peer (a resend's failed path).
    pub(super) fn select(&mut self, dest: Nid, avoid: Option<(NiIdx, Nid)>) -> Result<Path, LnetError> {
        if !self.mr.is_empty() && self.mr.nids_of(dest).is_some() {
            let mut cands = std::mem::take(&mut self.cand_buf);
            cands.clear();
            self.mr_candidates(dest, avoid, &mut cands);
            let best = best(&mut cands);
            self.cand_buf = cands;
            if let Some(c) = best {
                self.nis[c.ni].seq += 1;
                self.nis[c.ni].peer_ni.entry(c.peer_ni).or_default().seq += 1;
                return Ok(Path { ni: c.ni, hop: c.peer_ni, dest: c.peer_ni });
            }
            if avoid.is_some() {
                return Err(LnetError::NoRoute(dest));
            }
        }
        let (ni, hop) = self.route(dest)?;
        Ok(Path { ni, hop, dest })
    }

    /// Single-rail routing: a local NID by loopback, a NID on a local net directly, else through
    /// a gateway on a local net, live ones first.
    pub(super) fn route(&self, dest: Nid) -> Result<(NiIdx, Nid), LnetError> {
        if self.is_local(dest) {
            return Ok((LO_NI, dest));
        }
        if let Some(i) = self.ni_on(dest.net()) {
            return Ok((i, dest));
        }
        let mut best = None;
        for &(net, gw) in &self.routes {
            if net != dest.net() {
                continue;
            }
            if let Some(i) = self.ni_on(gw.net()) {
                if !self.gw_down.contains(&gw) {
                    return Ok((i, gw));
                }
                best.get_or_insert((i, gw));
            }
        }
        best.ok_or(LnetError::NoRoute(dest))
    }

    /// The (first) local NI on `net`, if any.
    pub(super) fn ni_on(&self, net: Net) -> Option<NiIdx> {
        self.nis.iter().position(|n| n.cfg.nid.net() == net)
    }
}

