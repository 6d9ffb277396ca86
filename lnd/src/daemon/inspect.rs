//! What `lnetlab ctl` asks a running node, like `lnetctl`: LNet pings (a GET of the peer's ping
//! info, answered later as a `ping_done` line), its NIs, peers and fault rules as data.

use crate::lnet::{opt, Event, EventKind, MdHandle, MdSpec};
use crate::mem::Seg;
use crate::node::{parse_ping_info, Node, PING_MATCH_BITS};
use crate::ptlrpc::{tag_of, user_ptr};
use crate::wire::{Nid, ProcessId};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The `user_ptr` tag of ping MDs (beside the OSS 1, OSC 2 and selftest 3).
pub const TAG_PING: u64 = 7;
/// Room for the ping info of a peer with up to 31 NIs (and 0@lo).
const PING_BUF: u32 = 16 + 16 * 32;

struct Pending {
    token: u64,
    nid: Nid,
    started: Instant,
    deadline: Instant,
    buf: Seg,
    /// Its answer has gone out; the buffer waits for the MD's last event.
    answered: bool,
    /// `lnetctl discover`: a Multi-Rail peer's NIs on our nets become its peer NIs.
    discover: bool,
}

/// What discovery learns from a peer's ping info (`lnet_peer_merge_data`): a Multi-Rail peer
/// with two NIDs or more on our nets becomes one, its first NI the primary NID.
fn learn_peer(node: &mut Node, info: &crate::node::PingInfo) -> Result<Value, String> {
    let ours: Vec<crate::wire::Net> = node.lnet.nids().iter().map(|n| n.net()).collect();
    let primary = info.nis.first().map(|n| n.0).ok_or("ping info with no NI")?;
    let reachable: Vec<Nid> = info.nis.iter().map(|n| n.0).filter(|n| ours.contains(&n.net())).collect();
    let mr = info.features & crate::node::PING_FEAT_MULTI_RAIL != 0;
    if mr && reachable.len() > 1 {
        node.lnet.add_peer(primary, &reachable)?;
    }
    Ok(json!({"primary_nid": primary, "multi_rail": mr, "nids": if mr && reachable.len() > 1 { reachable } else { vec![] }}))
}

/// A completion status as words (Linux errno values, as LNet reports them).
fn errno_name(status: i32) -> String {
    let name = match -status {
        5 => "EIO",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH: no such peer or it is down",
        125 => "ECANCELED",
        _ => return format!("status {status}"),
    };
    format!("status {status}, {name}")
}

/// Pings in flight from this node.
#[derive(Default)]
pub struct Pings {
    pending: HashMap<u64, Pending>,
    next: u64,
    out: Vec<Value>,
}

impl Pings {
    /// Starts an LNet ping of `nid`; its answer comes as a `ping_done` line with the token.
    pub fn start(&mut self, node: &mut Node, nid: Nid, timeout: Duration, now: Instant) -> Result<u64, String> {
        self.start_as(node, nid, timeout, now, false)
    }

    /// Discovers `nid` (`lnetctl discover`): pings it and, if its ping info says Multi-Rail,
    /// configures it as a Multi-Rail peer with its NIDs on our nets (primary: its first NI).
    /// The answer is a `ping_done` line with `discovered`.
    pub fn discover(&mut self, node: &mut Node, nid: Nid, timeout: Duration, now: Instant) -> Result<u64, String> {
        self.start_as(node, nid, timeout, now, true)
    }

    fn start_as(&mut self, node: &mut Node, nid: Nid, timeout: Duration, now: Instant, discover: bool) -> Result<u64, String> {
        let off = node.arena.alloc(PING_BUF as u64).ok_or_else(|| format!("no node memory for a ping buffer ({} bytes free)", node.arena.free_bytes()))?;
        let buf = Seg { off, len: PING_BUF };
        self.next += 1;
        let token = self.next;
        let md = node.lnet.md_bind(MdSpec { iov: vec![buf], options: opt::TRUNCATE, threshold: Some(2), max_size: 0, user_ptr: user_ptr(TAG_PING, token) }, true);
        if let Err(e) = node.lnet.get(md, ProcessId::new(nid, ProcessId::PID_LUSTRE), 0, PING_MATCH_BITS, 0) {
            let _ = node.lnet.md_unlink(md);
            node.arena.free(off, PING_BUF as u64);
            // The MD never carried a message: its unlink event is not for us to wait on.
            return Err(format!("ping {nid}: {e}"));
        }
        self.pending.insert(md.0, Pending { token, nid, started: now, deadline: now + timeout, buf, answered: false, discover });
        Ok(token)
    }

    fn answer(&mut self, p: &mut Pending, now: Instant, res: Result<Value, String>) {
        if p.answered {
            return;
        }
        p.answered = true;
        let ms = now.saturating_duration_since(p.started).as_secs_f64() * 1e3;
        let mut v = json!({"token": p.token, "nid": p.nid, "ms": (ms * 1000.0).round() / 1000.0});
        match res {
            Ok(info) => v["info"] = info,
            Err(e) => v["error"] = e.into(),
        }
        self.out.push(json!({ "ping_done": v }));
    }

    /// Handles one of our MDs' events; false if it is not a ping's.
    pub fn on_event(&mut self, node: &mut Node, ev: &Event, now: Instant) -> bool {
        if tag_of(ev) != TAG_PING {
            return false;
        }
        let Some(mut p) = self.pending.remove(&ev.md.0) else { return true };
        if ev.status != 0 {
            let why = if ev.kind == EventKind::Send { "sending the GET failed" } else { "the REPLY failed" };
            let e = format!("ping {}: {why} ({})", p.nid, errno_name(ev.status));
            self.answer(&mut p, now, Err(e));
        } else if ev.kind == EventKind::Reply {
            let mut b = Vec::new();
            let res = crate::mem::iov_read(&node.mem, &[Seg { off: p.buf.off, len: ev.mlength as u32 }], &mut b).map_err(|e| e.to_string()).and_then(|_| parse_ping_info(&b));
            let res = res.and_then(|i| {
                let mut v = json!({"pid": i.pid, "features": i.features, "nis": i.nis.iter().map(|(n, s)| json!({"nid": n, "status": s})).collect::<Vec<_>>()});
                if p.discover {
                    v["discovered"] = learn_peer(node, &i)?;
                }
                Ok(v)
            });
            let res = res.map_err(|e| format!("ping {}: {e}", p.nid));
            self.answer(&mut p, now, res);
        }
        if ev.unlinked {
            node.arena.free(p.buf.off, PING_BUF as u64);
        } else {
            if p.answered {
                // A failed send leaves the MD one use short of its threshold: unlink it now
                // (the buffer is freed on the unlink event).
                let _ = node.lnet.md_unlink(ev.md);
            }
            self.pending.insert(ev.md.0, p);
        }
        true
    }

    /// Pings past their deadline answer with a timeout; then the answers due, as output lines.
    pub fn poll(&mut self, node: &mut Node, now: Instant) -> Vec<Value> {
        let late: Vec<u64> = self.pending.iter().filter(|(_, p)| !p.answered && now >= p.deadline).map(|(k, _)| *k).collect();
        for k in late {
            let mut p = self.pending.remove(&k).expect("just seen");
            let within = p.deadline.saturating_duration_since(p.started).as_millis();
            let e = format!("ping {}: no reply within {within} ms", p.nid);
            self.answer(&mut p, now, Err(e));
            self.pending.insert(k, p);
            if node.lnet.md_unlink(MdHandle(k)).is_err() {
                // Gone already: nothing will land in the buffer any more.
                let p = self.pending.remove(&k).expect("just put back");
                node.arena.free(p.buf.off, PING_BUF as u64);
            }
        }
        std::mem::take(&mut self.out)
    }
}

/// `net show`: each NI with its LND, credits and (for `-v`) the LND's counters.
pub fn net_show(node: &Node) -> Value {
    let nis: Vec<Value> = node
        .lnet
        .ni_info()
        .into_iter()
        .enumerate()
        .map(|(k, ni)| {
            let lnd = &node.lnds[node.lnet.ni_lnd(k + 1)];
            let mut v = serde_json::to_value(&ni).unwrap_or_default();
            v["lnd"] = lnd.name().into();
            v["lnd_stats"] = lnd.stats();
            v
        })
        .collect();
    json!({"nis": nis, "routing": node.lnet.is_router()})
}

/// `peer show`: the peer NIs we have sent to, with their credits.
pub fn peer_show(node: &Node) -> Value {
    json!({"peers": node.lnet.peer_info()})
}

/// `fault list`: the active rules with what they matched and hit, and hits by tag so far.
pub fn fault_list(node: &Node) -> Value {
    json!({"rules": node.lnet.fault_rules(), "hits": node.lnet.fault_hits()})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::inproc::InProcFabric;
    use crate::dmalnd::DmaLndConfig;

    fn pair() -> (Node, Node) {
        let f = InProcFabric::new(7);
        let a = Node::with_dma(f.attach(1, 4 << 20).unwrap(), "1@dma0".parse().unwrap(), 12345, 1, DmaLndConfig::default());
        let b = Node::with_dma(f.attach(2, 4 << 20).unwrap(), "2@dma0".parse().unwrap(), 12345, 2, DmaLndConfig::default());
        (a, b)
    }

    /// Steps both nodes, feeding `a`'s events to its pings, until it has answered or gives up.
    fn run(a: &mut Node, b: &mut Node, pings: &mut Pings, now: Instant) -> Vec<Value> {
        for _ in 0..1000 {
            a.step();
            b.step();
            while let Some(ev) = a.poll_event() {
                assert!(pings.on_event(a, &ev, now), "only ping events here: {ev:?}");
            }
            let out = pings.poll(a, now);
            if !out.is_empty() {
                return out;
            }
        }
        Vec::new()
    }

    #[test]
    fn a_ping_answers_with_the_peers_nis_and_frees_its_buffer() {
        let (mut a, mut b) = pair();
        let free = a.arena.free_bytes();
        let mut pings = Pings::default();
        let now = Instant::now();
        let t = pings.start(&mut a, "2@dma0".parse().unwrap(), Duration::from_secs(5), now).unwrap();
        let out = run(&mut a, &mut b, &mut pings, now);
        assert_eq!(out.len(), 1, "{out:?}");
        let d = &out[0]["ping_done"];
        assert_eq!(d["token"], t);
        assert_eq!(d["info"]["nis"], json!([{"nid": "2@dma", "status": "up"}]), "{d}");
        for _ in 0..10 {
            a.step();
            while let Some(ev) = a.poll_event() {
                pings.on_event(&mut a, &ev, now);
            }
        }
        assert!(pings.pending.is_empty());
        assert_eq!(a.arena.free_bytes(), free, "the ping buffer is given back");
    }

    #[test]
    fn a_ping_nobody_answers_times_out_and_one_without_a_route_fails_at_once() {
        let (mut a, mut b) = pair();
        let mut pings = Pings::default();
        let now = Instant::now();
        pings.start(&mut a, "9@dma0".parse().unwrap(), Duration::from_millis(100), now).unwrap();
        // Past its deadline: a timeout, unless the LND said first that 9@dma0 is not there.
        let out = run(&mut a, &mut b, &mut pings, now + Duration::from_millis(200));
        assert_eq!(out.len(), 1, "{out:?}");
        let e = out[0]["ping_done"]["error"].as_str().unwrap().to_string();
        assert!(e.contains("9@dma"), "{e}");
        let tcp: Nid = "10.0.0.5@tcp".parse().unwrap();
        let free = a.arena.free_bytes();
        let e = pings.start(&mut a, tcp, Duration::from_secs(1), now).unwrap_err();
        assert!(e.contains(&tcp.to_string()), "{e}");
        assert_eq!(a.arena.free_bytes(), free, "a ping that cannot start keeps no buffer");
    }
}
