//! The fault rules at work in the core: each arriving message checked against the active rules,
//! dropped or held, and held messages released on the driver's clock.

use super::fault::*;
use super::*;

impl Lnet {
    /// Adds a fault rule (`lctl net_drop_add`, or `net_delay_add` when it has `delay_ms`).
    pub fn add_fault_rule(&mut self, rule: FaultRule) -> Result<(), String> {
        self.fault_rules.push(ActiveRule::new(rule)?);
        self.has_send_rules = self.fault_rules.iter().any(|r| r.health.is_some());
        Ok(())
    }

    /// Removes the fault rules tagged `tag`; returns how many there were.
    pub fn remove_fault_rules(&mut self, tag: &str) -> usize {
        let n = self.fault_rules.len();
        self.fault_rules.retain(|r| r.rule.tag.as_deref() != Some(tag));
        self.has_send_rules = self.fault_rules.iter().any(|r| r.health.is_some());
        n - self.fault_rules.len()
    }

    /// The health status a rule with `health_error` fails this outgoing message with, as its
    /// LND would have (`lnet_send_error_simulation`); such rules match sends only.
    pub(super) fn send_fault(&mut self, hdr: &HdrRepr) -> Option<super::health::HealthStatus> {
        let i = self.fault_rules.iter_mut().position(|r| r.health.is_some() && r.hits(hdr))?;
        let hs = self.fault_rules[i].health_status();
        self.count_fault(i, Verdict::Drop, hdr);
        Some(hs)
    }

    /// Rule `i` did `v` to the message `hdr`: counted, credited to its tag, logged.
    fn count_fault(&mut self, i: usize, v: Verdict, hdr: &HdrRepr) {
        match v {
            Verdict::Drop => self.counters.faults_dropped += 1,
            Verdict::Delay(_) => self.counters.faults_delayed += 1,
        }
        let tag = self.fault_rules[i].rule.tag.clone().unwrap_or_default();
        *self.fault_hits.entry(tag.clone()).or_default() += 1;
        self.fault_log.push_back(FaultRecord::new(v, hdr, tag));
    }

    /// What a fault rule does to this incoming message: drops win over delays, the longest
    /// delay over shorter ones. The deciding rule's tag is credited with the fault.
    pub(super) fn fault_verdict(&mut self, hdr: &HdrRepr) -> Option<Verdict> {
        let mut best: Option<(Verdict, usize)> = None;
        for (i, r) in self.fault_rules.iter_mut().enumerate() {
            if r.health.is_some() || !r.hits(hdr) {
                continue;
            }
            let v = r.rule.delay_ms.map_or(Verdict::Drop, Verdict::Delay);
            let better = match (best.map(|b| b.0), v) {
                (None, _) => true,
                (Some(Verdict::Delay(_)), Verdict::Drop) => true,
                (Some(Verdict::Delay(a)), Verdict::Delay(b)) => b > a,
                (Some(Verdict::Drop), _) => false,
            };
            if better {
                best = Some((v, i));
            }
        }
        let (v, i) = best?;
        self.count_fault(i, v, hdr);
        Some(v)
    }

    /// Faults injected so far, by the tag of the rule that injected them ("" for untagged
    /// rules); removed rules keep their counts.
    pub fn fault_hits(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.fault_hits
    }

    /// Tells the core the driver's clock (milliseconds, any fixed origin); held messages whose
    /// time has come are delivered.
    pub fn set_time_ms(&mut self, now: u64) {
        self.now_ms = now;
        while self.held.front().is_some_and(|h| h.0 <= now) {
            let (_, ni, hdr, from, private, rdma_req) = self.held.pop_front().unwrap();
            self.deliver_held(ni, hdr, from, private, rdma_req);
        }
        self.recover();
        self.expire_responses();
    }

    /// The driver's clock as last told (milliseconds).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// When the next held message is due, or the health monitor has work (for a driver that
    /// sleeps).
    pub fn next_release_ms(&self) -> Option<u64> {
        self.held.front().map(|h| h.0).into_iter().chain(self.next_monitor_ms()).min()
    }

    /// Messages held by delay rules.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Next record of what a fault rule did.
    pub fn poll_fault_record(&mut self) -> Option<FaultRecord> {
        self.fault_log.pop_front()
    }
}
