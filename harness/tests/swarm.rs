//! Issue 14: `--backend swarm` runs clusters/two-hosts.yaml as Docker Swarm services on a
//! single-node swarm the test initialises (and leaves, if it made it): every byte verified,
//! and no service, network, volume or container of the run left behind.
#![cfg(feature = "cluster")]

mod common;
use common::*;

use bollard::query_parameters as qp;
use harness::cluster::backends::docker::{Engine, LABEL_RUN};
use std::collections::HashMap;

/// The swarm as the test found it, put back on drop (and the node labels it added removed).
struct Swarm {
    e: Engine,
    created: bool,
    node: String,
    added: Vec<String>,
}

impl Swarm {
    fn up(hosts: &[&str]) -> Swarm {
        let e = Engine::connect().unwrap();
        let active = e.rt.block_on(e.docker.info()).unwrap().swarm.and_then(|s| s.control_available).unwrap_or(false);
        if !active {
            let req = bollard::models::SwarmInitRequest { listen_addr: Some("127.0.0.1:2377".into()), advertise_addr: Some("127.0.0.1".into()), ..Default::default() };
            e.rt.block_on(e.docker.init_swarm(req)).unwrap();
        }
        let node = e.rt.block_on(e.docker.info()).unwrap().swarm.and_then(|s| s.node_id).unwrap();
        let mut s = Swarm { e, created: !active, node, added: Vec::new() };
        for h in hosts {
            let key = format!("lnetlab-host.{h}");
            s.label(&key, true);
            s.added.push(key);
        }
        s
    }

    fn label(&self, key: &str, on: bool) {
        let e = &self.e;
        let n = e.rt.block_on(e.docker.inspect_node(&self.node)).unwrap();
        let mut spec = n.spec.unwrap();
        let labels = spec.labels.get_or_insert_with(HashMap::new);
        if on {
            labels.insert(key.into(), "true".into());
        } else {
            labels.remove(key);
        }
        let version = n.version.and_then(|v| v.index).unwrap() as i64;
        e.rt.block_on(e.docker.update_node(&self.node, spec, qp::UpdateNodeOptions { version })).unwrap();
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for k in std::mem::take(&mut self.added) {
            self.label(&k, false);
        }
        if self.created {
            let _ = self.e.rt.block_on(self.e.docker.leave_swarm(Some(qp::LeaveSwarmOptions { force: true })));
        }
    }
}

#[test]
fn two_hosts_runs_on_a_single_node_swarm_and_leaves_nothing() {
    let swarm = Swarm::up(&["storage", "compute"]);
    let art = tempfile::tempdir().unwrap();
    let out = lnetlab()
        .args(["run", root().join("clusters/two-hosts.yaml").to_str().unwrap(), "--backend", "swarm", "--json", "--seed", "2", "--timeout", "180", "--artifacts", art.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("no report ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["ok"], true, "{r}\n{}", String::from_utf8_lossy(&out.stderr));
    let w = &r["workloads"][0];
    let want = 3 * 4 * (8u64 << 20);
    assert_eq!((w["bytes_written"].as_u64(), w["bytes_verified"].as_u64(), w["errors"].as_u64()), (Some(want), Some(want), Some(0)), "{r}");
    let dir = std::path::PathBuf::from(r["artifacts"].as_str().unwrap());
    assert!(dir.join("nodes/oss1.log").exists() && dir.join("dmadev-dma0.log").exists(), "logs saved");
    let e = &swarm.e;
    let f = HashMap::from([("label".to_string(), vec![LABEL_RUN.to_string()])]);
    let services = e.rt.block_on(e.docker.list_services(Some(qp::ListServicesOptions { filters: Some(f.clone()), ..Default::default() }))).unwrap();
    assert!(services.is_empty(), "services left: {services:?}");
    let secrets = e.rt.block_on(e.docker.list_secrets(Some(qp::ListSecretsOptions { filters: Some(f.clone()) }))).unwrap();
    assert!(secrets.is_empty(), "secrets left: {secrets:?}");
    let f = HashMap::from([("label", vec![LABEL_RUN])]);
    let cs = e.rt.block_on(e.docker.list_containers(Some(qp::ListContainersOptionsBuilder::default().all(true).filters(&f).build()))).unwrap();
    let nets = e.rt.block_on(e.docker.list_networks(Some(qp::ListNetworksOptionsBuilder::default().filters(&f).build()))).unwrap();
    let vols = e.rt.block_on(e.docker.list_volumes(Some(qp::ListVolumesOptionsBuilder::default().filters(&f).build()))).unwrap().volumes.unwrap_or_default();
    assert!(cs.is_empty() && nets.is_empty() && vols.is_empty(), "left: {} containers, {} networks, {} volumes", cs.len(), nets.len(), vols.len());
}

/// `lnetlab image save FILE` writes the node image as a tar `docker load` takes; a registry
/// that is not there is named in the error, and its tag is not left behind.
#[test]
fn the_node_image_saves_for_other_engines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.tar");
    let o = lnetlab().args(["image", "save", file.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = std::process::Command::new("tar").arg("tf").arg(&file).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).lines().any(|l| l == "manifest.json"), "not an image tar");
    let o = lnetlab().args(["image", "save", file.to_str().unwrap(), "--registry", "127.0.0.1:1"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("push to 127.0.0.1:1"), "{}", String::from_utf8_lossy(&o.stderr));
    let e = Engine::connect().unwrap();
    let imgs = e.rt.block_on(e.docker.list_images(None::<qp::ListImagesOptions>)).unwrap();
    assert!(!imgs.iter().flat_map(|i| &i.repo_tags).any(|t| t.starts_with("127.0.0.1:1/")), "the registry's tag was left");
}
