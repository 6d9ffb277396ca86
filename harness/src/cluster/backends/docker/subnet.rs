//! Subnets of a run's TCP nets, allocated atomically: a network is created on a candidate and
//! the next is tried when the Engine says the pool overlaps, so two runs starting together both
//! get one. A taken explicit `subnet:` is an error, never replaced.

use super::engine::Engine;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// An IPv4 network; host `pos` of it is `net + 2 + pos` (`net + 1` is the bridge's gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub net: Ipv4Addr,
    pub len: u8,
}

impl Subnet {
    /// `a.b.c.d/len`, checked as the spec's subnets are.
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (net, len) = crate::cluster::limits::parse_subnet(s)?;
        Ok(Subnet { net, len })
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) + 1)
    }

    /// The address of the `pos`-th node on the net (validation made sure it fits).
    pub fn host(&self, pos: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) + 2 + pos as u32)
    }

    /// Do the two networks share an address?
    pub fn overlaps(&self, o: &Subnet) -> bool {
        let len = self.len.min(o.len);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        u32::from(self.net) & mask == u32::from(o.net) & mask
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// How many automatic candidates one net tries before giving up.
pub const AUTO_TRIES: usize = 64;
/// Automatic subnets come from 10.200.0.0/24 ... 10.239.255.0/24.
const AUTO_SPAN: u32 = 40 * 256;

/// The automatic candidates for a net: the lowest /24s of the span that no network in `used`
/// overlaps, [`AUTO_TRIES`] of them. `used` is only a hint (read before anyone creates):
/// runs starting together get the same list and sort it out by creating ([`create_network`]).
pub fn auto_candidates(used: &[Subnet]) -> Vec<Subnet> {
    (0..AUTO_SPAN)
        .map(|i| Subnet { net: Ipv4Addr::new(10, 200 + (i / 256) as u8, (i % 256) as u8, 0), len: 24 })
        .filter(|s| !used.iter().any(|u| u.overlaps(s)))
        .take(AUTO_TRIES)
        .collect()
}

/// The subnets of the Engine's networks now.
pub fn used_subnets(e: &Engine) -> Vec<Subnet> {
    let nets = e.rt.block_on(e.docker.list_networks(None::<bollard::query_parameters::ListNetworksOptions>)).unwrap_or_default();
    nets.iter().flat_map(|n| n.ipam.iter().flat_map(|i| i.config.iter().flatten())).filter_map(|c| c.subnet.as_deref()).filter_map(|s| Subnet::parse(s).ok()).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SubnetError {
    #[error("net {net}: subnet {subnet} is taken by another Docker network (`docker network ls`); give a free one, or drop `subnet:` to have one allocated")]
    Taken { net: String, subnet: Subnet },
    #[error("net {net}: no free subnet: the {tries} candidates from {first} on are all taken (remove unused networks with `docker network prune`, or give one with `subnet:`)")]
    Exhausted { net: String, tries: usize, first: Subnet },
    #[error("net {net}: creating network {name} on {subnet}: {err}")]
    Engine { net: String, name: String, subnet: Subnet, err: String },
}

/// Creates bridge network `name` for LNet net `net` on the first of `candidates` no other
/// network overlaps; `explicit`: the spec asked for the only candidate, so taken is an error.
pub fn create_network(e: &Engine, name: &str, net: &str, labels: &HashMap<String, String>, candidates: &[Subnet], explicit: bool) -> Result<Subnet, SubnetError> {
    for s in candidates {
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(labels.clone()),
            ipam: Some(Ipam { config: Some(vec![IpamConfig { subnet: Some(s.to_string()), gateway: Some(s.gateway().to_string()), ..Default::default() }]), ..Default::default() }),
            ..Default::default()
        };
        match e.rt.block_on(e.docker.create_network(req)) {
            Ok(_) => return Ok(*s),
            Err(err) if err.to_string().contains("overlaps") => {
                if explicit {
                    return Err(SubnetError::Taken { net: net.to_string(), subnet: *s });
                }
                tracing::debug!("subnet {s} taken; trying the next");
            }
            Err(err) => return Err(SubnetError::Engine { net: net.to_string(), name: name.to_string(), subnet: *s, err: err.to_string() }),
        }
    }
    Err(SubnetError::Exhausted { net: net.to_string(), tries: candidates.len(), first: candidates.first().copied().unwrap_or(Subnet { net: Ipv4Addr::UNSPECIFIED, len: 0 }) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_a_16_do_not_wrap() {
        let s = Subnet::parse("10.1.0.0/16").unwrap();
        assert_eq!((s.gateway(), s.host(0), s.host(300)), (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 1, 46)));
    }

    #[test]
    fn automatic_candidates_are_bounded_and_skip_known_networks() {
        let used = [Subnet::parse("10.200.0.0/16").unwrap(), Subnet::parse("10.201.1.0/24").unwrap()];
        let c = auto_candidates(&used);
        assert_eq!(c.len(), AUTO_TRIES);
        assert_eq!((c[0].net, c[1].net, c[2].net), (Ipv4Addr::new(10, 201, 0, 0), Ipv4Addr::new(10, 201, 2, 0), Ipv4Addr::new(10, 201, 3, 0)));
        assert!(Subnet::parse("10.0.0.0/8").unwrap().overlaps(&c[0]) && !c[0].overlaps(&c[1]));
    }
}
