//! `bench cluster`: bringing up an 8-node cluster with the docker backend (until every lnetd is
//! ready) against starting 8 bare containers of the same image with `docker run`, same run.

use super::metric::Metric;
use crate::cluster::backend::Backend;
use crate::cluster::backends::docker::{ensure_image, DockerBackend, LABEL_RUN};
use crate::cluster::plan::plan;
use crate::cluster::spec::ClusterSpec;
use std::process::Command;
use std::time::{Duration, Instant};

const SPEC: &str = "
name: bench8
nets: {dma0: {kind: dma}, tcp0: {kind: tcp}}
nodes:
  - {name: oss1, roles: [oss], nis: [dma0, tcp0], targets: [{ost: 0, size: 64MiB}]}
  - {name: c1, roles: [client], nis: [dma0]}
  - {name: c2, roles: [client], nis: [dma0]}
  - {name: c3, roles: [client], nis: [dma0]}
  - {name: c4, roles: [client], nis: [dma0]}
  - {name: c5, roles: [client], nis: [tcp0]}
  - {name: c6, roles: [client], nis: [tcp0]}
  - {name: c7, roles: [client], nis: [tcp0]}
";

pub fn run() -> anyhow::Result<Vec<Metric>> {
    let spec = ClusterSpec::parse(SPEC, std::path::Path::new("<bench8>"))?;
    let backend = DockerBackend::new()?;
    let image = ensure_image(&backend.engine)?; // built (or found) outside the timing
    let addressing = backend.tcp_addressing(&spec)?.expect("docker addressing");
    let p = plan(&spec, 1, addressing.as_ref());
    let art = tempfile::tempdir()?;
    let scratch = tempfile::tempdir()?;
    let t0 = Instant::now();
    let cluster = backend.up(&p, scratch.path(), art.path(), Duration::from_secs(120), &|_| {})?;
    let ours = t0.elapsed().as_secs_f64();
    cluster.down();

    let label = format!("{LABEL_RUN}=bench-bare-{}", std::process::id());
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..8 {
        let o = Command::new("docker").args(["run", "-d", "--network", "none", "--label", &label, "--entrypoint", "/dmadev", &image, "--fabric", "/f"]).output()?;
        if !o.status.success() {
            anyhow::bail!("docker run: {}", String::from_utf8_lossy(&o.stderr));
        }
        ids.push(String::from_utf8_lossy(&o.stdout).trim().to_string());
    }
    let bare = t0.elapsed().as_secs_f64();
    let mut rm = Command::new("docker");
    rm.args(["rm", "-f"]).args(&ids);
    let _ = rm.output();
    Ok(vec![Metric::new("docker_run_8_bare_s", bare, "s", None), Metric::new("docker_up_8_nodes_s", ours, "s", Some(bare))])
}
