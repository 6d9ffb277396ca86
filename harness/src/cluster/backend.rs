//! Backends run a planned cluster: `process` (local processes, the default) now; `docker` and
//! `sim` plug in behind the same trait as their issues land.

use super::plan::Plan;
use super::process::Cluster;
use std::path::Path;
use std::time::Duration;

/// Brings a planned cluster up and hands back a running [`Cluster`] whose nodes speak the
/// lnetd control protocol; dropping it tears everything down.
pub trait Backend {
    fn name(&self) -> &'static str;
    /// How this backend numbers TCP NIDs (`None`: per-run loopback addresses).
    fn tcp_addressing(&self, _spec: &super::spec::ClusterSpec) -> Option<Box<dyn Fn(usize, &str, usize) -> std::net::Ipv4Addr>> {
        None
    }
    /// `scratch` holds fabrics and OST storage; `art` is the run's artifacts directory.
    fn up(&self, plan: &Plan, scratch: &Path, art: &Path, timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster>;
}

/// Every node a local `lnetd` process on its own loopback address, one `dmadev` per DMA net.
pub struct ProcessBackend;

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }
    fn up(&self, plan: &Plan, scratch: &Path, art: &Path, timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster> {
        Cluster::up(plan, scratch, art, timeout, progress)
    }
}

/// The backend called `name`.
pub fn by_name(name: &str) -> anyhow::Result<Box<dyn Backend>> {
    match name {
        "process" => Ok(Box::new(ProcessBackend)),
        "sim" => Ok(Box::new(super::sim::SimBackend)),
        #[cfg(feature = "cluster")]
        "docker" => Ok(Box::new(super::docker::DockerBackend::new()?)),
        #[cfg(not(feature = "cluster"))]
        "docker" => anyhow::bail!("backend `docker` needs lnetlab built with `--features cluster`"),
        other => anyhow::bail!("backend `{other}` is not available (available: process, sim, docker)"),
    }
}
