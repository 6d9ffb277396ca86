//! Ending a run's containers without losing a line: nodes asked to quit are waited for (bounded,
//! through the Engine's wait API), then every container's `/art` is copied out through the API
//! (`docker cp`, no bind mount: the files are ours, the Engine may be remote) with its logs,
//! and only then is the run's every object removed.

use super::engine::Engine;
use super::reap::reap;
use bollard::query_parameters as qp;
use futures_util::{StreamExt, TryStreamExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long nodes asked to quit get to finish (lnetd drains for at most 2 s).
pub const QUIT_GRACE: Duration = Duration::from_secs(5);

/// Copies container `c`'s `/art` into `art` (files created by us, so owned by whoever runs
/// lnetlab); entries that would leave `art` are skipped.
pub fn collect_art(e: &Engine, c: &str, art: &Path) -> anyhow::Result<()> {
    let opts = qp::DownloadFromContainerOptionsBuilder::default().path("/art").build();
    let bytes: Vec<u8> = e.rt.block_on(e.docker.download_from_container(c, Some(opts)).try_fold(Vec::new(), |mut v, b| async move {
        v.extend_from_slice(&b);
        Ok(v)
    }))?;
    let mut a = tar::Archive::new(&bytes[..]);
    for entry in a.entries()? {
        let mut entry = entry?;
        // Entries are `art/...`: drop that first component.
        let rel: PathBuf = entry.path()?.components().skip(1).collect();
        if rel.as_os_str().is_empty() || !rel.components().all(|x| matches!(x, Component::Normal(_))) {
            continue;
        }
        let dest = art.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => std::fs::create_dir_all(&dest)?,
            tar::EntryType::Regular => {
                if let Some(p) = dest.parent() {
                    std::fs::create_dir_all(p)?;
                }
                let mut f = std::fs::File::create(&dest)?;
                std::io::copy(&mut entry, &mut f)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Waits until every container of `cs` has stopped, for at most `grace`.
fn wait_exit(e: &Engine, cs: &[String], grace: Duration) {
    if grace.is_zero() || cs.is_empty() {
        return;
    }
    e.rt.block_on(async {
        let waits = cs.iter().map(|c| async move {
            let opts = qp::WaitContainerOptionsBuilder::default().condition("not-running").build();
            let _ = e.docker.wait_container(c, Some(opts)).next().await;
        });
        if tokio::time::timeout(grace, futures_util::future::join_all(waits)).await.is_err() {
            tracing::warn!("nodes still running {grace:?} after quit; removing them anyway");
        }
    });
}

/// Writes container `c`'s output (stdout and stderr) to `file`.
pub fn save_logs(e: &Engine, c: &str, file: &Path) {
    let logs: Vec<_> = e.rt.block_on(async {
        e.docker
            .logs(c, Some(qp::LogsOptionsBuilder::default().stdout(true).stderr(true).build()))
            .filter_map(|x| async move { x.ok() })
            .collect::<Vec<_>>()
            .await
    });
    let text: String = logs.iter().map(|l| l.to_string()).collect();
    let _ = std::fs::write(file, text);
}

/// The output of every container swarm service `name` ran, to `file`.
pub fn save_logs_of_service(e: &Engine, name: &str, file: &Path) -> anyhow::Result<()> {
    let f = std::collections::HashMap::from([("label", vec![format!("com.docker.swarm.service.name={name}")])]);
    let f: std::collections::HashMap<&str, Vec<&str>> = f.iter().map(|(k, v)| (*k, v.iter().map(String::as_str).collect())).collect();
    let cs = e.rt.block_on(e.docker.list_containers(Some(qp::ListContainersOptionsBuilder::default().all(true).filters(&f).build())))?;
    for c in cs.iter().filter_map(|c| c.id.as_deref()) {
        save_logs(e, c, file);
    }
    Ok(())
}

/// Removes a run's objects when its cluster goes: nodes waited for, artifacts and logs saved.
pub struct Teardown {
    pub engine: Arc<Engine>,
    pub run: String,
    pub art: PathBuf,
    /// Node containers (asked to quit when the cluster goes down).
    pub nodes: Vec<String>,
    /// Device containers (stopped with the rest).
    pub devices: Vec<String>,
    /// How long nodes get to exit; zero until the cluster is up (before that nobody told
    /// them to quit, and a failed bring-up should not wait).
    pub grace: Duration,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let e = &self.engine;
        wait_exit(e, &self.nodes, self.grace);
        for c in self.nodes.iter().chain(&self.devices) {
            if let Err(err) = collect_art(e, c, &self.art) {
                eprintln!("lnetlab: artifacts of container {c}: {err:#}");
            }
            save_logs(e, c, &self.art.join("containers").join(format!("{c}.log")));
        }
        if let Err(err) = reap(e, Some(&self.run)) {
            eprintln!("lnetlab: docker teardown of run {}: {err}", self.run);
        }
    }
}
