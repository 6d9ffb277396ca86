//! What a run's Docker objects carry (`lnetlab.*` labels: run, owner pid, start time, host
//! identity) and removing them: a run's own at teardown, killed runs' when provably dead.

use super::engine::Engine;
use bollard::query_parameters as qp;
use std::collections::HashMap;

pub const LABEL_CLUSTER: &str = "lnetlab.cluster";
pub const LABEL_RUN: &str = "lnetlab.run";
/// The pid of the lnetlab process that owns the objects...
pub const LABEL_PID: &str = "lnetlab.pid";
/// ...its start time (so a reused pid is not taken for it)...
pub const LABEL_START: &str = "lnetlab.start";
/// ...and where that pid means something: boot and pid namespace ([`host_identity`]). Objects
/// are stale only when all three say the owner is gone from here.
pub const LABEL_HOST: &str = "lnetlab.host";
/// The run's scratch directory on the host, removed with the run's objects if it was killed.
pub const LABEL_SCRATCH: &str = "lnetlab.scratch";

/// Where our pids mean something: this boot of this kernel, and our pid namespace.
pub fn host_identity() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default();
    format!("{}/{ns}", boot.trim())
}

/// The labels of every object of run `run` of cluster `cluster`, owned by this process.
pub fn labels(cluster: &str, run: &str) -> HashMap<String, String> {
    let me = crate::procs::ProcId::me();
    HashMap::from([
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
        (LABEL_RUN.to_string(), run.to_string()),
        (LABEL_PID.to_string(), me.pid.to_string()),
        (LABEL_START.to_string(), me.start.to_string()),
        (LABEL_HOST.to_string(), host_identity()),
    ])
}

/// Do an object's labels prove its run's lnetlab is gone? Only when it ran here (same boot and
/// pid namespace) and no process has its pid and start time; objects of other hosts,
/// namespaces, older versions or compose files are never taken for dead.
fn provably_dead(l: &HashMap<String, String>) -> bool {
    let pid = l.get(LABEL_PID).and_then(|p| p.parse::<i32>().ok());
    let start = l.get(LABEL_START).and_then(|p| p.parse::<u64>().ok());
    match (pid, start, l.get(LABEL_HOST)) {
        (Some(pid), Some(start), Some(host)) if *host == host_identity() => !crate::procs::ProcId { pid, start }.alive(),
        _ => false,
    }
}

/// Runs whose owning lnetlab process is gone (killed): their objects are reaped.
pub fn stale_runs(e: &Engine) -> anyhow::Result<Vec<String>> {
    let f = HashMap::from([("label", vec![LABEL_RUN])]);
    let cs = e.rt.block_on(e.docker.list_containers(Some(qp::ListContainersOptionsBuilder::default().all(true).filters(&f).build())))?;
    let nets = e.rt.block_on(e.docker.list_networks(Some(qp::ListNetworksOptionsBuilder::default().filters(&f).build())))?;
    let vols = e.rt.block_on(e.docker.list_volumes(Some(qp::ListVolumesOptionsBuilder::default().filters(&f).build())))?.volumes.unwrap_or_default();
    // Swarm services too, where this Engine manages a swarm (an error says it does not).
    let svcs = e.rt.block_on(e.docker.list_services(Some(qp::ListServicesOptionsBuilder::default().filters(&f).build()))).unwrap_or_default();
    let mut all: Vec<HashMap<String, String>> = cs.into_iter().filter_map(|c| c.labels).collect();
    all.extend(svcs.into_iter().filter_map(|s| s.spec.and_then(|s| s.labels)));
    let secrets = e.rt.block_on(e.docker.list_secrets(Some(qp::ListSecretsOptionsBuilder::default().filters(&f).build()))).unwrap_or_default();
    all.extend(secrets.into_iter().filter_map(|s| s.spec.and_then(|s| s.labels)));
    all.extend(nets.into_iter().filter_map(|n| n.labels));
    all.extend(vols.into_iter().map(|v| v.labels));
    let mut stale = Vec::new();
    for l in all {
        let Some(run) = l.get(LABEL_RUN) else { continue };
        if provably_dead(&l) && !stale.contains(run) {
            stale.push(run.clone());
        }
    }
    Ok(stale)
}

/// Removes what killed runs left behind; returns how many objects went.
pub fn reap_stale(e: &Engine) -> anyhow::Result<usize> {
    let mut n = 0;
    for r in stale_runs(e)? {
        // What will not go now is tried again by the next run.
        match reap(e, Some(&r)) {
            Ok(k) => n += k,
            Err(err) => eprintln!("lnetlab: reaping killed run {r}: {err:#}"),
        }
    }
    Ok(n)
}

/// How long removing a network or volume is retried: the Engine may still count an endpoint
/// or a mount of a container it has just force-removed ("has active endpoints", "in use").
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes every container, network and volume carrying `lnetlab.run` (or only `run`'s);
/// returns how many went, or names what would not go.
pub fn reap(e: &Engine, run: Option<&str>) -> anyhow::Result<usize> {
    let filter = match run {
        Some(r) => format!("{LABEL_RUN}={r}"),
        None => LABEL_RUN.to_string(),
    };
    let f = HashMap::from([("label", vec![filter.as_str()])]);
    e.rt.block_on(async {
        let mut n = 0;
        let mut stuck = Vec::new();
        // Services first (of the swarm backend), or the swarm would start their tasks again;
        // then their secret. (Neither exists where this Engine manages no swarm.)
        let mut swarm: Vec<(&str, String)> = e.docker.list_services(Some(qp::ListServicesOptionsBuilder::default().filters(&f).build())).await.unwrap_or_default().into_iter().filter_map(|s| s.id).map(|id| ("service", id)).collect();
        swarm.extend(e.docker.list_secrets(Some(qp::ListSecretsOptionsBuilder::default().filters(&f).build())).await.unwrap_or_default().into_iter().filter_map(|s| s.id).map(|id| ("secret", id)));
        for (kind, id) in swarm {
            let r = if kind == "service" { e.docker.delete_service(&id).await } else { e.docker.delete_secret(&id).await };
            match r {
                Ok(()) => n += 1,
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(err) => stuck.push(format!("{kind} {id}: {err}")),
            }
        }
        let cs = e.docker.list_containers(Some(qp::ListContainersOptionsBuilder::default().all(true).filters(&f).build())).await?;
        for c in cs {
            // A killed run also left its scratch directory (only ever one of ours: checked).
            if let Some(dir) = c.labels.as_ref().and_then(|l| l.get(LABEL_SCRATCH)).map(std::path::PathBuf::from) {
                if dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with("lnetlab-run-")) {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            if let Some(id) = c.id {
                match e.docker.remove_container(&id, Some(qp::RemoveContainerOptionsBuilder::default().force(true).v(true).build())).await {
                    Ok(()) => n += 1,
                    Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                    Err(err) => stuck.push(format!("container {id}: {err}")),
                }
            }
        }
        // Networks and volumes go once the Engine has let go of the containers' endpoints and
        // mounts; 404 is gone already.
        let mut left: Vec<(&str, String)> = e.docker.list_networks(Some(qp::ListNetworksOptionsBuilder::default().filters(&f).build())).await?.into_iter().filter_map(|x| x.id).map(|id| ("network", id)).collect();
        left.extend(e.docker.list_volumes(Some(qp::ListVolumesOptionsBuilder::default().filters(&f).build())).await?.volumes.unwrap_or_default().into_iter().map(|v| ("volume", v.name)));
        let t0 = tokio::time::Instant::now();
        loop {
            let mut failed = Vec::new();
            for (kind, id) in left {
                let r = if kind == "network" { e.docker.remove_network(&id).await } else { e.docker.remove_volume(&id, None::<qp::RemoveVolumeOptions>).await };
                match r {
                    Ok(()) => n += 1,
                    Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                    Err(err) => failed.push((kind, id, err)),
                }
            }
            if failed.is_empty() || t0.elapsed() > RELEASE_WAIT {
                stuck.extend(failed.iter().map(|(kind, id, err)| format!("{kind} {id}: {err}")));
                break;
            }
            tracing::debug!("{} networks and volumes not released yet; trying again", failed.len());
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            left = failed.into_iter().map(|(kind, id, _)| (kind, id)).collect();
        }
        if !stuck.is_empty() {
            anyhow::bail!("could not remove {}", stuck.join("; "));
        }
        Ok::<usize, anyhow::Error>(n)
    })
}
