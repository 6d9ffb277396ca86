//! What a spec may ask for, checked after parsing: names safe to use in paths, durations and
//! sizes within bounds, subnets that parse and fit, workloads that fit their OSTs.

use super::spec::*;

/// Longest `at`, `duration`, `every` or `latency` a fault may give.
pub const MAX_FAULT_TIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Most windows one timed fault may open.
pub const MAX_FAULT_COUNT: u32 = 100_000;
/// Largest OST (its storage lives in the temp directory).
pub const MAX_OST: u64 = 1 << 40;
/// The highest OST index (Lustre's are 16 bits: `OST%04x`).
pub const MAX_OST_INDEX: u32 = 0xffff;
/// Longest `commit_interval` of an OSS.
pub const MAX_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Most RPCs (or selftest operations) a client may keep in flight.
pub const MAX_INFLIGHT: usize = 1024;
/// Longest name (cluster, node, workload).
const MAX_NAME: usize = 63;

/// Is `name` usable as one path component and a container name? Letters, digits, `.`, `_`,
/// `-`, starting with a letter or digit.
pub fn safe_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric()) && c.all(|x| x.is_ascii_alphanumeric() || "._-".contains(x)) && name.len() <= MAX_NAME
}

/// 1-based line and column of the value of `key: value` (plain or quoted), `nth` occurrence,
/// skipping comment lines; the first occurrence if there are fewer, 1:1 if none.
pub fn locate_value(text: &str, key: &str, value: &str, nth: usize) -> (usize, usize) {
    let mut found = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim_start().starts_with('#') {
            continue;
        }
        for v in [value.to_string(), format!("'{value}'"), format!("\"{value}\"")] {
            let needle = format!("{key}: {v}");
            let mut from = 0;
            while let Some(c) = l[from..].find(&needle) {
                let end = from + c + needle.len();
                // Whole value only: `name: c1` must not match `name: c10`.
                if l[end..].chars().next().is_none_or(|x| " ,}]#".contains(x)) {
                    found.push((i + 1, from + c + key.len() + 3));
                }
                from = end;
            }
        }
    }
    found.sort();
    found.get(nth).or(found.first()).copied().unwrap_or((1, 1))
}

impl ClusterSpec {
    /// Names, durations, sizes and subnets within bounds (before the whole-spec checks).
    pub(crate) fn check_bounds(&self, text: &str, file: &str) -> Result<(), SpecError> {
        let at = |key: &str, value: &str, nth: usize, msg: String| {
            let (line, col) = locate_value(text, key, value, nth);
            SpecError { file: file.to_string(), line, col, msg }
        };
        let bad_name = |what: &str, n: &str| format!("{what} name `{n}`: use 1 to {MAX_NAME} letters, digits, `.`, `_` or `-`, starting with a letter or digit (it names files and containers)");
        if !safe_name(&self.name) {
            return Err(at("name", &self.name, 0, bad_name("cluster", &self.name)));
        }
        for n in &self.nodes {
            if !safe_name(&n.name) {
                return Err(at("name", &n.name, 0, bad_name("node", &n.name)));
            }
            if let Some(h) = n.host.as_ref().filter(|h| !safe_name(h)) {
                return Err(at("host", h, 0, bad_name("host", h)));
            }
            if n.name.starts_with("dmadev-") {
                return Err(at("name", &n.name, 0, format!("node name `{}`: names starting `dmadev-` belong to the DMA device services", n.name)));
            }
            if let Some(c) = &n.commit_interval {
                let d = parse_duration(c).map_err(|e| at("commit_interval", c, 0, format!("node `{}`: commit_interval: {e}", n.name)))?;
                if d.is_zero() || d > MAX_COMMIT_INTERVAL {
                    return Err(at("commit_interval", c, 0, format!("node `{}`: commit_interval `{c}` must be above 0 and at most 60m", n.name)));
                }
            }
            for t in &n.targets {
                if t.ost > MAX_OST_INDEX {
                    return Err(at("ost", &t.ost.to_string(), 0, format!("OST index {} is above the limit of {MAX_OST_INDEX}", t.ost)));
                }
                if t.size.0 > MAX_OST {
                    return Err(at("ost", &t.ost.to_string(), 0, format!("OST {} size {} is above the limit of {MAX_OST} bytes (1TiB)", t.ost, t.size.0)));
                }
            }
        }
        for w in &self.workloads {
            if !safe_name(&w.name) {
                return Err(at("name", &w.name, 0, bad_name("workload", &w.name)));
            }
            if w.inflight == 0 || w.inflight > MAX_INFLIGHT || w.concurrency > MAX_INFLIGHT {
                let (k, v) = if w.concurrency > MAX_INFLIGHT { ("concurrency", w.concurrency) } else { ("inflight", w.inflight) };
                return Err(at(k, &v.to_string(), 0, format!("workload `{}`: {k} {v} must be 1..={MAX_INFLIGHT}", w.name)));
            }
            for (k, v) in [("duration", &w.duration), ("rpc_timeout", &w.rpc_timeout), ("at_min", &w.at_min), ("at_max", &w.at_max)] {
                if let Some(v) = v {
                    check_time(v).map_err(|e| at(k, v, 0, format!("workload `{}`: {k}: {e}", w.name)))?;
                }
            }
        }
        for f in &self.faults {
            if let Some(c) = f.count.filter(|c| *c > MAX_FAULT_COUNT) {
                return Err(at("count", &c.to_string(), 0, format!("{}: count {c} is above the limit of {MAX_FAULT_COUNT}", f.kind.name())));
            }
            for (k, v) in [("at", &f.at), ("duration", &f.duration), ("every", &f.every), ("latency", &f.latency)] {
                if let Some(v) = v {
                    check_time(v).map_err(|e| at(k, v, 0, format!("{}: {k}: {e}", f.kind.name())))?;
                }
            }
        }
        for (net, n) in &self.nets {
            let on_net = self.nodes.iter().filter(|x| x.nis.contains(net)).count();
            if let Some(s) = &n.subnet {
                check_subnet(s, on_net).map_err(|e| at("subnet", s, 0, format!("net `{net}`: subnet `{s}`: {e}")))?;
            } else if n.kind == NetKind::Tcp && on_net > MAX_AUTO_SUBNET_NODES {
                let key = format!("{net}:");
                // Where the net is declared: block style (`  tcp0:`) or flow style (`{tcp0: …}`).
                let (line, col) = text.lines().enumerate().filter(|(_, l)| !l.trim_start().starts_with('#')).find_map(|(i, l)| l.find(&key).filter(|&c| c == 0 || !l.as_bytes()[c - 1].is_ascii_alphanumeric()).map(|c| (i + 1, c + 1))).unwrap_or((1, 1));
                return Err(SpecError { file: file.to_string(), line, col, msg: format!("net `{net}`: {on_net} nodes do not fit in the /24 allocated for it (at most {MAX_AUTO_SUBNET_NODES}); give it a larger `subnet:`") });
            }
        }
        Ok(())
    }

    /// Every io workload fits in the OSTs it writes to (after the whole-spec checks), counting
    /// what earlier workloads left there (those without `destroy`) and placing each stripe as the
    /// client does: stripe `s` of file `f` on OST `(f * stripe_count + s) mod n` of the OSTs in
    /// index order. Seeds 333, 370 and 409 of `hunt --generate` wrote 90 MiB into a 64 MiB OST
    /// over two workloads and failed with ENOSPC.
    pub(crate) fn check_fit(&self, text: &str, file: &str) -> Result<(), SpecError> {
        let mut osts: Vec<(u32, u64)> = self.nodes.iter().flat_map(|n| &n.targets).map(|t| (t.ost, t.size.0)).collect();
        osts.sort();
        let capacity: u64 = osts.iter().map(|o| o.1).sum();
        let mut kept = vec![0u64; osts.len()];
        for w in self.workloads.iter().filter(|w| w.kind == WorkloadKind::Io) {
            let (line, col) = locate_value(text, "name", &w.name, 0);
            let refuse = |msg: String| SpecError { file: file.to_string(), line, col, msg };
            let bytes = (w.clients.len() as u64).checked_mul(w.files).and_then(|x| x.checked_mul(w.size.0));
            if bytes.is_none_or(|b| b > capacity) {
                let what = bytes.map_or("more than 2^64 bytes".to_string(), |b| format!("{b} bytes"));
                return Err(refuse(format!("workload `{}` writes {what} ({} clients x {} files x {} bytes), which does not fit in the OSTs ({capacity} bytes)", w.name, w.clients.len(), w.files, w.size.0)));
            }
            // Placement is counted per file; past a million files the total above is the check.
            if w.read_back.is_some() || osts.is_empty() || (w.clients.len() as u64).saturating_mul(w.files) > 1_000_000 {
                continue;
            }
            let used = stripe_bytes(w, osts.len());
            for (k, (&(ost, size), u)) in osts.iter().zip(&used).enumerate() {
                if kept[k] + u > size {
                    let before = if kept[k] > 0 { format!(" on top of {} bytes kept by earlier workloads (without `destroy`)", kept[k]) } else { String::new() };
                    return Err(refuse(format!("workload `{}` puts {u} bytes on OST {ost}{before}, more than its {size} bytes", w.name)));
                }
            }
            if !w.destroy {
                kept.iter_mut().zip(&used).for_each(|(k, u)| *k += u);
            }
        }
        Ok(())
    }
}

/// Bytes an io workload puts on each of `n` OSTs (in index order), placed as the client does.
fn stripe_bytes(w: &crate::cluster::spec::WorkloadSpec, n: usize) -> Vec<u64> {
    use lnd::ost::osc::{stripe_object_size, stripe_target};
    let mut used = vec![0u64; n];
    for f in 0..w.clients.len() as u64 * w.files {
        for s in 0..w.stripe_count.max(1) {
            used[stripe_target(f, s, w.stripe_count.max(1), n)] += stripe_object_size(w.size.0, w.stripe_size.0.max(1), w.stripe_count, s);
        }
    }
    used
}

/// A duration a spec may give: parses and is at most [`MAX_FAULT_TIME`].
fn check_time(s: &str) -> Result<(), String> {
    let d = parse_duration(s)?;
    if d > MAX_FAULT_TIME {
        return Err(format!("`{s}` is longer than the limit of 24h"));
    }
    Ok(())
}

/// Most nodes on a TCP net without a `subnet:` (the Docker backend allocates it a /24).
pub const MAX_AUTO_SUBNET_NODES: usize = 253;

/// An IPv4 network `a.b.c.d/len` (8 <= len <= 30) given by its network address.
pub fn parse_subnet(s: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    const LIKE: &str = "expected an IPv4 network like 10.88.0.0/24";
    let (ip, len) = s.split_once('/').ok_or(LIKE)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| LIKE.to_string())?;
    let len: u8 = len.parse().map_err(|_| LIKE.to_string())?;
    if !(8..=30).contains(&len) {
        return Err(format!("a /{len} is not supported (use /8 to /30)"));
    }
    let mask = u32::MAX << (32 - len);
    if u32::from(ip) & !mask != 0 {
        return Err(format!("{ip} is not the network address of a /{len} (did you mean {}/{len}?)", std::net::Ipv4Addr::from(u32::from(ip) & mask)));
    }
    Ok((ip, len))
}

/// A TCP net's subnet: an IPv4 network with room for `nodes` hosts besides the network,
/// gateway and broadcast addresses.
fn check_subnet(s: &str, nodes: usize) -> Result<(), String> {
    let (_, len) = parse_subnet(s)?;
    let hosts = (1u64 << (32 - len)) - 3;
    if nodes as u64 > hosts {
        return Err(format!("{nodes} nodes do not fit in a /{len} (at most {hosts})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_escape_a_directory_are_not_safe() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "-x", "a b", &"x".repeat(64)] {
            assert!(!safe_name(bad), "{bad:?}");
        }
        for good in ["oss1", "c-1", "node_2.a", "Q"] {
            assert!(safe_name(good), "{good}");
        }
    }

    #[test]
    fn values_are_located_whole() {
        let t = "a: x\nnodes:\n  - {name: c10}\n  - {name: c1}\n";
        assert_eq!(locate_value(t, "name", "c1", 0), (4, 12));
        assert_eq!(locate_value(t, "name", "c10", 0), (3, 12));
    }

    #[test]
    fn subnets_parse_and_fit() {
        assert!(check_subnet("10.88.0.0/24", 10).is_ok());
        assert!(check_subnet("10.88.0.0/16", 300).is_ok());
        for bad in ["banana", "10.88.0.0", "10.88.0.0/33", "10.88.0.0/7", "10.88.0.5/24", "10.88.1.0/16", "300.1.1.0/24"] {
            assert!(check_subnet(bad, 1).is_err(), "{bad}");
        }
        assert!(check_subnet("10.88.0.0/24", 254).is_err());
        assert!(check_subnet("10.88.0.0/30", 1).is_ok() && check_subnet("10.88.0.0/30", 2).is_err());
    }
}
