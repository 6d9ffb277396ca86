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
    /// Does the cluster run on virtual time (so wall-clock readings must stay out of traces)?
    fn virtual_time(&self) -> bool {
        false
    }
    /// Can this backend inject faults of `kind` (`timed`: in windows while workloads run)?
    fn can_inject(&self, _kind: super::spec::FaultKind, _timed: bool) -> bool {
        true
    }
    /// Kills node `i` (SIGKILL: no goodbye; a frozen node is thawed first) and waits until it
    /// is gone; its exit is expected (`Cluster::down`) until [`Backend::start_node`].
    fn kill_node(&self, cluster: &mut Cluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
        cluster.down.insert(i);
        if cluster.paused.remove(&i) {
            self.freeze_node(cluster, i, false)?;
        }
        if let Err(e) = self.signal_kill(cluster, i) {
            cluster.down.remove(&i);
            return Err(e);
        }
        cluster.wait_node_exit(i, timeout)
    }
    /// Starts a killed node again (same addresses, fabric and storage) and waits until it is
    /// ready; its roles are the caller's to start.
    fn start_node(&self, cluster: &mut Cluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
        self.launch_again(cluster, i, timeout)?;
        cluster.down.remove(&i);
        Ok(())
    }
    /// Freezes (`paused`) or thaws node `i`; returns whether anything changed.
    fn pause(&self, cluster: &mut Cluster, i: usize, paused: bool) -> anyhow::Result<bool> {
        if cluster.paused.contains(&i) == paused {
            return Ok(false);
        }
        self.freeze_node(cluster, i, paused)?;
        if paused {
            cluster.paused.insert(i);
        } else {
            cluster.paused.remove(&i);
        }
        Ok(true)
    }
    /// Kills the DMA device of net `net` (its nodes lose it). The default kills the local
    /// `dmadev` process.
    fn kill_device(&self, cluster: &mut Cluster, net: &str) -> anyhow::Result<()> {
        cluster.kill_device(net)
    }
    /// Starts the DMA device of `net` again; its nodes attach to it on their own.
    fn start_device(&self, cluster: &mut Cluster, net: &str, timeout: Duration) -> anyhow::Result<()> {
        cluster.start_device(net, timeout)
    }

    // What the fault methods above ask of a backend; the defaults act on local processes.

    /// SIGKILLs node `i`.
    fn signal_kill(&self, cluster: &Cluster, i: usize) -> anyhow::Result<()> {
        signal(self.name(), cluster, i, libc::SIGKILL, "kill")
    }
    /// Starts node `i` again and waits until it is ready.
    fn launch_again(&self, cluster: &mut Cluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
        cluster.respawn(i, timeout)
    }
    /// Freezes or thaws node `i` (SIGSTOP / SIGCONT).
    fn freeze_node(&self, cluster: &Cluster, i: usize, frozen: bool) -> anyhow::Result<()> {
        if frozen {
            signal(self.name(), cluster, i, libc::SIGSTOP, "pause")
        } else {
            signal(self.name(), cluster, i, libc::SIGCONT, "resume")
        }
    }
}

/// Sends `sig` to node `i`'s local process (`what` names the action in errors).
fn signal(backend: &str, cluster: &Cluster, i: usize, sig: libc::c_int, what: &str) -> anyhow::Result<()> {
    let name = &cluster.nodes[i].name;
    let pid = cluster.pids()[i].ok_or_else(|| anyhow::anyhow!("node {name} has no local process to {what} on the {backend} backend"))?;
    // SAFETY: signalling a child process we started and have not reaped.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        anyhow::bail!("cannot {what} node {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
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
