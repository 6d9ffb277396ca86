//! LNet fault rules, like Lustre's `lctl net_drop_add`: drop incoming messages that match a
//! source, destination, portal and type, one in `rate` (or every `interval`-th), from a seeded
//! generator so a run can be replayed.

use crate::wire::{HdrBody, HdrRepr, MsgType, Nid};

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DropRule {
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
}

#[derive(Debug)]
pub(super) struct ActiveRule {
    pub rule: DropRule,
    rng: u64,
    seen: u64,
    pub dropped: u64,
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

impl ActiveRule {
    pub fn new(rule: DropRule) -> Result<ActiveRule, String> {
        if rule.rate.is_some() == rule.interval.is_some() {
            return Err("a drop rule needs exactly one of rate and interval".into());
        }
        if rule.rate == Some(0) || rule.interval == Some(0) {
            return Err("rate and interval must be at least 1".into());
        }
        if let Some(t) = &rule.msg_type {
            if !["PUT", "GET", "ACK", "REPLY"].contains(&t.as_str()) {
                return Err(format!("unknown message type `{t}` (PUT, GET, ACK, REPLY)"));
            }
        }
        let rng = rule.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Ok(ActiveRule { rule, rng, seen: 0, dropped: 0 })
    }

    /// Does this rule drop `hdr`? (Advances the rule's generator for matching messages.)
    pub fn drops(&mut self, hdr: &HdrRepr) -> bool {
        let r = &self.rule;
        let portal = match hdr.body {
            HdrBody::Put { ptl_index, .. } | HdrBody::Get { ptl_index, .. } => Some(ptl_index),
            _ => None,
        };
        let matches = r.src.is_none_or(|n| n == hdr.src_nid)
            && r.dst.is_none_or(|n| n == hdr.dest_nid)
            && r.portal.is_none_or(|p| Some(p) == portal)
            && r.msg_type.as_deref().is_none_or(|t| t == type_name(hdr.msg_type()));
        if !matches {
            return false;
        }
        self.seen += 1;
        let drop = match (r.rate, r.interval) {
            (Some(rate), _) => {
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % rate as u64 == 0
            }
            (_, Some(i)) => self.seen % i as u64 == 0,
            _ => false,
        };
        if drop {
            self.dropped += 1;
        }
        drop
    }
}
