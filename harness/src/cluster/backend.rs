//! What a backend is: it brings a planned cluster up and, where it can, kills, starts, freezes
//! and thaws nodes and devices. This trait knows no implementation (they live in `backends/`).

use super::control::Cluster;
use super::plan::Plan;
use super::spec::{ClusterSpec, FaultKind};
use std::path::Path;
use std::time::Duration;

/// Brings a planned cluster up and hands back a running [`Cluster`] whose nodes speak the
/// lnetd control protocol; dropping it tears everything down.
pub trait Backend {
    fn name(&self) -> &'static str;
    /// How this backend numbers TCP NIDs (`None`: per-run loopback addresses). A backend may
    /// claim the addresses here (the docker backend creates its networks), so it can fail.
    fn tcp_addressing(&self, _spec: &ClusterSpec) -> anyhow::Result<Option<Box<dyn Fn(usize, &str, usize) -> std::net::Ipv4Addr>>> {
        Ok(None)
    }
    /// `scratch` holds fabrics and OST storage; `art` is the run's artifacts directory.
    fn up(&self, plan: &Plan, scratch: &Path, art: &Path, timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster>;
    /// Does the cluster run on virtual time (so wall-clock readings must stay out of traces)?
    fn virtual_time(&self) -> bool {
        false
    }
    /// Can this backend inject faults of `kind` (`timed`: in windows while workloads run)?
    fn can_inject(&self, _kind: FaultKind, _timed: bool) -> bool {
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
    /// Kills the DMA device of net `net` (its nodes lose it).
    fn kill_device(&self, _cluster: &mut Cluster, net: &str) -> anyhow::Result<()> {
        anyhow::bail!("the {} backend cannot kill the device of {net}", self.name())
    }
    /// Starts the DMA device of `net` again; its nodes attach to it on their own.
    fn start_device(&self, _cluster: &mut Cluster, net: &str, _timeout: Duration) -> anyhow::Result<()> {
        anyhow::bail!("the {} backend cannot start the device of {net}", self.name())
    }

    /// Cuts (`on`) or heals the wires between nodes `a` and `b`, both ways, where the backend
    /// has wires of its own (the simulator's network and fabrics). Every backend also cuts a
    /// partition with LNet drop rules on both sides; by default that is all.
    fn cut(&self, _cluster: &mut Cluster, _a: usize, _b: usize, _on: bool) -> anyhow::Result<()> {
        Ok(())
    }

    /// Can it partition one DMA fabric alone (a `partition` with `net:`)?
    fn can_cut_fabric(&self) -> bool {
        false
    }

    /// Cuts (`on`) or heals DMA fabric `net` between fabric addresses `a` and `b`: the device
    /// fails what one sends the other as if nobody were there.
    fn cut_fabric(&self, _cluster: &mut Cluster, net: &str, _a: u32, _b: u32, _on: bool) -> anyhow::Result<()> {
        anyhow::bail!("the {} backend cannot partition the {net} fabric alone", self.name())
    }

    /// Can it cut the fabric link between two hosts' devices (`fabric_link`)?
    fn can_cut_link(&self) -> bool {
        false
    }

    /// Cuts (`on`) or restores the link of DMA net `net` between the devices of hosts `a` and
    /// `b` (indexes into the plan's hosts).
    fn cut_link(&self, _cluster: &mut Cluster, net: &str, a: usize, b: usize, _on: bool) -> anyhow::Result<()> {
        anyhow::bail!("the {} backend cannot cut the {net} fabric link between hosts {a} and {b}", self.name())
    }

    // What the fault methods above ask of a backend.

    /// Kills node `i` at once (no goodbye).
    fn signal_kill(&self, cluster: &Cluster, i: usize) -> anyhow::Result<()> {
        anyhow::bail!("the {} backend cannot kill node {}", self.name(), cluster.nodes[i].name)
    }
    /// Starts node `i` again and waits until it is ready.
    fn launch_again(&self, cluster: &mut Cluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
        cluster.respawn(i, timeout)
    }
    /// Freezes or thaws node `i`.
    fn freeze_node(&self, cluster: &Cluster, i: usize, _frozen: bool) -> anyhow::Result<()> {
        anyhow::bail!("the {} backend cannot pause node {}", self.name(), cluster.nodes[i].name)
    }
}

