//! Process limits a local cluster needs (open files, threads), checked before anything starts:
//! a soft limit below the need is raised up to the hard one (children inherit it); a hard limit
//! below it is an error that says which `ulimit` to raise, instead of node N failing to start.

use super::super::plan::Plan;
use super::super::spec::NetKind;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{nodes} nodes need about {need} {what} (`ulimit {flag}`), but the hard limit is {hard}: raise it (e.g. `ulimit {flag} {need}` as root or in /etc/security/limits.conf), or run fewer nodes")]
pub struct LimitError {
    pub nodes: usize,
    pub what: &'static str,
    pub flag: &'static str,
    pub need: u64,
    pub hard: u64,
}

/// Open files and threads (of this user) a cluster of `plan` needs on this machine: the harness
/// holds two pipes per node and a reader thread; an lnetd has a few threads of its own, and
/// a server about nine descriptors and six threads per TCP peer.
pub fn needs(plan: &Plan) -> (u64, u64) {
    let nodes = plan.nodes.len() as u64;
    let on_tcp = |net: &String| plan.spec.nets.get(net).is_some_and(|n| n.kind == NetKind::Tcp);
    let tcp = plan.nodes.iter().filter(|n| n.nids.iter().any(|(net, _)| on_tcp(net))).count() as u64;
    // Measured: an OSS with 260 TCP and 40 DMA clients held 2356 descriptors and 1564 threads
    // (ksocklnd's three typed connections per peer, each with its threads and wake-ups).
    (3 * nodes + 10 * tcp + 256, 8 * nodes + 6 * tcp + 64)
}

/// The soft limit to set (None: it already suffices), or why the cluster cannot run.
pub fn decide(nodes: usize, what: &'static str, flag: &'static str, need: u64, soft: u64, hard: u64) -> Result<Option<u64>, LimitError> {
    if soft >= need {
        Ok(None)
    } else if hard >= need {
        Ok(Some(need))
    } else {
        Err(LimitError { nodes, what, flag, need, hard })
    }
}

fn adjust(resource: libc::__rlimit_resource_t, nodes: usize, what: &'static str, flag: &'static str, need: u64) -> Result<(), LimitError> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid resource and a struct we own.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        return Ok(()); // cannot tell: let the start-up say what fails
    }
    if let Some(cur) = decide(nodes, what, flag, need, r.rlim_cur, r.rlim_max)? {
        let want = libc::rlimit { rlim_cur: cur, rlim_max: r.rlim_max };
        // SAFETY: as above.
        unsafe { libc::setrlimit(resource, &want) };
        tracing::info!("raised the {what} limit from {} to {cur} for {nodes} nodes", r.rlim_cur);
    }
    Ok(())
}

/// Raises the soft limits `plan` needs, or says which hard limit is too low.
pub fn ensure(plan: &Plan) -> Result<(), LimitError> {
    let (files, threads) = needs(plan);
    let n = plan.nodes.len();
    adjust(libc::RLIMIT_NOFILE, n, "open files", "-n", files)?;
    adjust(libc::RLIMIT_NPROC, n, "processes and threads", "-u", threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soft_limit_is_raised_and_a_hard_one_named() {
        assert_eq!(decide(10, "open files", "-n", 94, 1024, 4096), Ok(None));
        assert_eq!(decide(1000, "open files", "-n", 3064, 1024, 4096), Ok(Some(3064)));
        let e = decide(1000, "open files", "-n", 3064, 1024, 2048).unwrap_err();
        assert_eq!(e.to_string(), "1000 nodes need about 3064 open files (`ulimit -n`), but the hard limit is 2048: raise it (e.g. `ulimit -n 3064` as root or in /etc/security/limits.conf), or run fewer nodes");
    }
}
