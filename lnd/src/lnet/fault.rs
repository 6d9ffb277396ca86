//! LNet fault rules, like Lustre's `lctl net_drop_add` / `net_delay_add`: drop or hold incoming
//! messages that match a source, destination, portal and type, one in `rate` (or every
//! `interval`-th), from a seeded generator so a run can be replayed.

use super::health::HealthStatus;
use crate::wire::{HdrBody, HdrRepr, MsgType, Nid};

/// The message types a rule can match.
pub const MSG_TYPES: [&str; 4] = ["PUT", "GET", "ACK", "REPLY"];

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    #[serde(default)]
    pub src: Option<Nid>,
    #[serde(default)]
    pub dst: Option<Nid>,
    #[serde(default)]
    pub portal: Option<u32>,
    /// PUT, GET, ACK or REPLY.
    #[serde(default, rename = "type")]
    pub msg_type: Option<String>,
    /// Drop one in `rate` matching messages at random...
    #[serde(default)]
    pub rate: Option<u32>,
    /// ...or exactly every `interval`-th.
    #[serde(default)]
    pub interval: Option<u32>,
    #[serde(default)]
    pub seed: u64,
    /// Hold a matching message this long instead of dropping it (`net_delay_add`).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// A name to remove the rule by later (partitions are healed this way).
    #[serde(default)]
    pub tag: Option<String>,
    /// Fail matching *outgoing* messages with this health status instead of dropping arriving
    /// ones (`lctl net_drop_add -e`): a class name (`local_dropped`, ...) or `random`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_error: Option<String>,
}

#[derive(Debug)]
pub(super) struct ActiveRule {
    pub rule: FaultRule,
    rng: crate::rng::OneIn,
    pub seen: u64,
    pub hits: u64,
    /// The status of a `health_error` rule (`None` inside: `random`), and its generator.
    pub health: Option<Option<HealthStatus>>,
    choice: crate::rng::Rng,
}

fn type_name(t: MsgType) -> &'static str {
    match t {
        MsgType::Ack => "ACK",
        MsgType::Put => "PUT",
        MsgType::Get => "GET",
        MsgType::Reply => "REPLY",
        MsgType::Hello => "HELLO",
    }
}

fn portal_of(hdr: &HdrRepr) -> Option<u32> {
    match hdr.body {
        HdrBody::Put { ptl_index, .. } | HdrBody::Get { ptl_index, .. } => Some(ptl_index),
        _ => None,
    }
}

impl ActiveRule {
    pub fn new(rule: FaultRule) -> Result<ActiveRule, String> {
        if rule.rate.is_some() == rule.interval.is_some() {
            return Err("a fault rule needs exactly one of rate and interval".into());
        }
        if rule.rate == Some(0) || rule.interval == Some(0) {
            return Err("rate and interval must be at least 1".into());
        }
        if let Some(t) = &rule.msg_type {
            if !MSG_TYPES.contains(&t.as_str()) {
                return Err(format!("unknown message type `{t}` (PUT, GET, ACK, REPLY)"));
            }
        }
        let rng = crate::rng::OneIn::new(rule.rate.unwrap_or(0), rule.seed);
        if rule.delay_ms == Some(0) {
            return Err("delay_ms must be at least 1".into());
        }
        let health = match rule.health_error.as_deref() {
            None => None,
            Some("random") => Some(None),
            Some(n) => Some(Some(HealthStatus::from_name(n).ok_or_else(|| {
                let names: Vec<&str> = HealthStatus::FAILURES.iter().map(|h| h.name()).collect();
                format!("unknown health_error `{n}` ({}, random)", names.join(", "))
            })?)),
        };
        if health.is_some() && rule.delay_ms.is_some() {
            return Err("a rule with health_error fails sends; it cannot delay them".into());
        }
        let choice = crate::rng::Rng::new(rule.seed ^ 0x4845_414c_5448);
        Ok(ActiveRule { rule, rng, seen: 0, hits: 0, health, choice })
    }

    /// Does this rule hit `hdr`? (Advances the rule's generator for matching messages.)
    pub fn hits(&mut self, hdr: &HdrRepr) -> bool {
        let r = &self.rule;
        let portal = portal_of(hdr);
        let matches = r.src.is_none_or(|n| n == hdr.src_nid)
            && r.dst.is_none_or(|n| n == hdr.dest_nid)
            && r.portal.is_none_or(|p| Some(p) == portal)
            && r.msg_type.as_deref().is_none_or(|t| t == type_name(hdr.msg_type()));
        if !matches {
            return false;
        }
        self.seen += 1;
        let hit = match (r.rate, r.interval) {
            (Some(_), _) => self.rng.fire().is_some(),
            (_, Some(i)) => self.seen % i as u64 == 0,
            _ => false,
        };
        if hit {
            self.hits += 1;
        }
        hit
    }
}

impl ActiveRule {
    /// The class a `health_error` rule fails a send with; `random` draws one of the ten
    /// (`lnet_fault_match_health`).
    pub fn health_status(&mut self) -> HealthStatus {
        match self.health {
            Some(Some(h)) => h,
            _ => HealthStatus::FAILURES[self.choice.below(HealthStatus::FAILURES.len())],
        }
    }
}

/// What a rule does to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    /// Hold for this many milliseconds.
    Delay(u64),
}

/// One fault a rule injected, for traces.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FaultRecord {
    pub fault: &'static str,
    pub src: Nid,
    pub msg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The tag of the rule that injected it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rule: String,
}

impl FaultRecord {
    pub fn new(v: Verdict, hdr: &HdrRepr, rule: String) -> FaultRecord {
        let portal = portal_of(hdr);
        let (fault, delay_ms) = match v {
            Verdict::Drop => ("lnet_drop", None),
            Verdict::Delay(ms) => ("lnet_delay", Some(ms)),
        };
        FaultRecord { fault, src: hdr.src_nid, msg: type_name(hdr.msg_type()), portal, delay_ms, rule }
    }
}
