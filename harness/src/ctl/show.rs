//! Node replies as `lnetctl` prints them: YAML under `ping:`, `net:`, `peer:`, `statistics:`
//! (keys in lnetctl's order and words), and the fault rules like `lctl net_drop_list`.

use lnd::wire::Nid;
use serde_json::Value;
use serde_yaml_ng::{Mapping, Value as Y};

fn map(pairs: Vec<(&str, Y)>) -> Y {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(Y::String(k.to_string()), v);
    }
    Y::Mapping(m)
}

fn s(v: impl ToString) -> Y {
    Y::String(v.to_string())
}

fn n(v: &Value) -> Y {
    match v.as_u64() {
        Some(x) => Y::Number(x.into()),
        None => Y::Null,
    }
}

/// The YAML text of `v`.
pub fn yaml(v: &Y) -> String {
    serde_yaml_ng::to_string(v).unwrap_or_default()
}

/// `lnetctl ping`: the peer's primary NID and its NIs with their status.
pub fn ping(done: &Value) -> Y {
    let nis: Vec<Y> = done["info"]["nis"].as_array().into_iter().flatten().map(|ni| map(vec![("nid", s(ni["nid"].as_str().unwrap_or("?"))), ("status", s(ni["status"].as_str().unwrap_or("?")))])).collect();
    let primary = nis.first().and_then(|m| m.get("nid")).cloned().unwrap_or_else(|| s(done["nid"].as_str().unwrap_or("?")));
    let mr = done["info"]["features"].as_u64().is_some_and(|f| f & lnd::node::PING_FEAT_MULTI_RAIL as u64 != 0);
    let peer = map(vec![("primary nid", primary), ("Multi-Rail", Y::Bool(mr)), ("peer ni", Y::Sequence(nis)), ("time ms", done["ms"].as_f64().map_or(Y::Null, |x| Y::Number(x.into())))]);
    map(vec![("ping", Y::Sequence(vec![peer]))])
}

fn net_type(nid: &str) -> String {
    nid.parse::<Nid>().map(|n| n.net().to_string()).unwrap_or_else(|_| "?".into())
}

/// `lnetctl net show [-v]`: NIs grouped by net, `0@lo` first; with `-v` their credits
/// (`tunables`), free credits and queue, and their LND's counters.
pub fn net(reply: &Value, verbose: bool) -> Y {
    let mut nets: Vec<(String, Vec<Y>)> = vec![("lo".into(), vec![map(vec![("nid", s("0@lo")), ("status", s("up"))])])];
    for ni in reply["nis"].as_array().into_iter().flatten() {
        let nid = ni["nid"].as_str().unwrap_or("?");
        let mut pairs = vec![("nid", s(nid)), ("status", s("up"))];
        if verbose {
            pairs.push(("lnd", s(ni["lnd"].as_str().unwrap_or("?"))));
            pairs.push(("tunables", map(vec![("peer_credits", n(&ni["peer_credits"])), ("credits", n(&ni["credits"]))])));
            pairs.push(("available credits", n(&ni["credits_available"])));
            pairs.push(("tx queued", n(&ni["tx_queued"])));
            if !ni["send_count"].is_null() {
                pairs.push(("statistics", map(vec![("send_count", n(&ni["send_count"])), ("recv_count", n(&ni["recv_count"])), ("resend_count", n(&ni["resend_count"]))])));
            }
            if !ni["health_value"].is_null() {
                pairs.push(("health stats", health_stats(ni, true)));
            }
            if !ni["priority"].is_null() {
                pairs.push(("selection priority", n(&ni["priority"])));
            }
            let stats: Vec<(&str, Y)> = ni["lnd_stats"].as_object().into_iter().flatten().map(|(k, v)| (k.as_str(), if v.is_u64() { n(v) } else { s(v) })).collect();
            pairs.push(("lnd statistics", map(stats)));
        }
        let t = net_type(nid);
        match nets.iter_mut().find(|(k, _)| *k == t) {
            Some((_, v)) => v.push(map(pairs)),
            None => nets.push((t, vec![map(pairs)])),
        }
    }
    let nets: Vec<Y> = nets.into_iter().map(|(t, nis)| map(vec![("net type", s(t)), ("local NI(s)", Y::Sequence(nis))])).collect();
    let mut top = vec![("net", Y::Sequence(nets))];
    if verbose {
        top.push(("routing", map(vec![("enable", Y::Number(u64::from(reply["routing"] == true).into()))])));
    }
    map(top)
}

/// `health stats` of an NI (`local`) or a peer NI, in lnetctl's words.
fn health_stats(v: &Value, local: bool) -> Y {
    let h = &v["health_stats"];
    let mut pairs = vec![("health value", n(&v["health_value"]))];
    if !h.is_null() {
        if local {
            pairs.extend([("interrupts", n(&h["interrupts"])), ("dropped", n(&h["dropped"])), ("aborted", n(&h["aborted"])), ("no route", n(&h["no_route"])), ("timeouts", n(&h["timeouts"])), ("error", n(&h["error"]))]);
        } else {
            pairs.extend([("dropped", n(&h["dropped"])), ("timeout", n(&h["timeouts"])), ("error", n(&h["error"])), ("network timeout", n(&h["network_timeout"])), ("response timeouts", n(&h["response_timeouts"]))]);
        }
        pairs.push(("recovery count", n(&h["recoveries"])));
    }
    map(pairs)
}

/// `lnetctl peer show [-v]`: every peer, by primary NID (a Multi-Rail peer's NIs together),
/// with its peer NIs; with `-v` their credits and health.
pub fn peer(reply: &Value, verbose: bool) -> Y {
    let mut by_primary: Vec<(String, Vec<Y>)> = Vec::new();
    for p in reply["peers"].as_array().into_iter().flatten() {
        let nid = p["nid"].as_str().unwrap_or("?");
        let mut ni = vec![("nid", s(nid)), ("state", s("NA"))];
        if verbose {
            ni.push(("local nid", s(p["local_nid"].as_str().unwrap_or("?"))));
            ni.push(("max_ni_tx_credits", n(&p["max_tx_credits"])));
            ni.push(("available_tx_credits", n(&p["available_tx_credits"])));
            ni.push(("tx_q_num_of_buf", n(&p["tx_queued"])));
            if !p["health_value"].is_null() {
                ni.push(("health stats", health_stats(p, false)));
            }
        }
        let primary = p["primary_nid"].as_str().unwrap_or(nid).to_string();
        match by_primary.iter_mut().find(|(k, _)| *k == primary) {
            Some((_, v)) => v.push(map(ni)),
            None => by_primary.push((primary, vec![map(ni)])),
        }
    }
    let peers: Vec<Y> = by_primary.into_iter().map(|(primary, nis)| map(vec![("primary nid", s(primary)), ("Multi-Rail", Y::Bool(nis.len() > 1)), ("peer ni", Y::Sequence(nis))])).collect();
    map(vec![("peer", Y::Sequence(peers))])
}

/// `lnetctl stats show`: LNet's counters in lnetctl's order, then ours (credit stalls, faults).
pub fn stats(reply: &Value) -> Y {
    let c = &reply["lnet"];
    let keys = [("errors", "errors"), ("send_count", "send_count"), ("resend_count", "resends"), ("recv_count", "recv_count"), ("route_count", "route_count"), ("drop_count", "drop_count"), ("send_length", "send_length"), ("recv_length", "recv_length"), ("route_length", "route_length"), ("drop_length", "drop_length"), ("credit_stalls", "credit_stalls"), ("faults_dropped", "faults_dropped"), ("faults_delayed", "faults_delayed"), ("health_failures", "health_failures"), ("response_timeout_count", "response_timeouts"), ("recovery_pings", "recovery_pings")];
    let mut pairs: Vec<(&str, Y)> = keys.iter().map(|(k, f)| (*k, n(&c[*f]))).collect();
    pairs.insert(0, ("mds_alloc", n(&reply["mds"])));
    map(vec![("statistics", map(pairs))])
}

/// `lctl net_drop_list`-like: each rule, what it matches (`ANY` for no constraint), how it
/// fires, and the messages it matched and hit.
pub fn faults(reply: &Value) -> Y {
    let any = |v: &Value| if v.is_null() { s("ANY") } else if v.is_u64() { n(v) } else { s(v.as_str().unwrap_or("?")) };
    let rules: Vec<Y> = reply["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let rule = &r["rule"];
            let mut p = vec![("tag", any(&rule["tag"])), ("kind", s(if rule["delay_ms"].is_null() { "drop" } else { "delay" })), ("src", any(&rule["src"])), ("dst", any(&rule["dst"])), ("portal", any(&rule["portal"])), ("type", any(&rule["type"]))];
            if !rule["rate"].is_null() {
                p.push(("rate", n(&rule["rate"])));
            }
            if !rule["interval"].is_null() {
                p.push(("interval", n(&rule["interval"])));
            }
            if !rule["delay_ms"].is_null() {
                p.push(("delay_ms", n(&rule["delay_ms"])));
            }
            p.push(("matched", n(&r["seen"])));
            p.push(("hits", n(&r["hits"])));
            map(p)
        })
        .collect();
    map(vec![("fault rules", Y::Sequence(rules))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nis_group_by_net_and_counters_keep_lnetctls_order() {
        let r = json!({"nis": [{"nid": "1@dma", "lnd": "dmalnd", "credits": 256, "credits_available": 250, "peer_credits": 8, "tx_queued": 0, "lnd_stats": {"immediate": 3}}, {"nid": "10.0.0.1@tcp", "lnd": "socklnd", "credits": 256, "credits_available": 256, "peer_credits": 8, "tx_queued": 0, "lnd_stats": {}}], "routing": false});
        let y = net(&r, true);
        let text = yaml(&y);
        assert_eq!(y["net"].as_sequence().unwrap().iter().map(|n| n["net type"].as_str().unwrap()).collect::<Vec<_>>(), ["lo", "dma", "tcp"], "{text}");
        assert_eq!(y["net"][1]["local NI(s)"][0]["available credits"].as_u64(), Some(250), "{text}");
        assert!(net(&r, false)["net"][1]["local NI(s)"][0].get("tunables").is_none());
        let st = yaml(&stats(&json!({"lnet": {"errors": 0, "send_count": 4, "recv_count": 5}, "mds": 2})));
        let order: Vec<&str> = st.lines().skip(1).map(|l| l.trim().split(':').next().unwrap()).collect();
        assert_eq!(&order[..4], ["mds_alloc", "errors", "send_count", "resend_count"], "{st}");
    }
}
