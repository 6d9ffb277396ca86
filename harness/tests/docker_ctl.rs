//! `lnetlab ctl` on the Docker backend (`cargo test --features cluster`): the quickstart brought
//! up in containers with `lnetlab up --backend docker`, pinged across the DMA fabric and TCP,
//! its counters read, a drop rule added, hit and removed, a workload run, all through the
//! control socket of the lnetlab that holds the containers' attached streams.
#![cfg(feature = "cluster")]

mod common;
use common::*;

use serde_json::Value;
use serde_yaml_ng::Value as Y;
use std::process::Output;

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn run(&self, args: &[&str]) -> Output {
        lnetlab().args(args).env("XDG_STATE_HOME", self.dir.path().join("state")).env_remove("LNETLAB_STATE_DIR").output().unwrap()
    }
    fn ctl(&self, args: &[&str]) -> Y {
        let mut a = vec!["ctl"];
        a.extend_from_slice(args);
        let o = self.run(&a);
        assert!(o.status.success(), "ctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_yaml_ng::from_slice(&o.stdout).unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

fn ping_nis(y: &Y) -> Vec<String> {
    y["ping"][0]["peer ni"].as_sequence().unwrap().iter().map(|n| n["nid"].as_str().unwrap().to_string()).collect()
}

#[test]
fn ctl_reaches_the_nodes_of_a_docker_cluster() {
    let sb = Sandbox { dir: tempfile::tempdir().unwrap() };
    let art = sb.dir.path().join("runs");
    let up = sb.run(&["up", root().join("clusters/quickstart.yaml").to_str().unwrap(), "--backend", "docker", "--seed", "6", "--artifacts", art.to_str().unwrap()]);
    assert!(up.status.success(), "{}{}", String::from_utf8_lossy(&up.stdout), String::from_utf8_lossy(&up.stderr));
    let st: Value = serde_json::from_slice(&sb.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["backend"], "docker", "{st}");
    let nids = |node: &str| -> Vec<String> { st["nodes"].as_array().unwrap().iter().find(|n| n["name"] == node).unwrap()["nids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect() };
    let oss = nids("oss1");
    let (oss_dma, oss_tcp) = (oss.iter().find(|n| n.ends_with("@dma")).unwrap().clone(), oss.iter().find(|n| n.ends_with("@tcp")).unwrap().clone());
    assert_eq!(ping_nis(&sb.ctl(&["c1", "ping", &oss_dma])), oss);
    assert_eq!(ping_nis(&sb.ctl(&["c3", "ping", &oss_tcp])), oss);
    let sent = sb.ctl(&["c3", "stats", "show"])["statistics"]["send_count"].as_u64().unwrap();
    assert!(sent >= 1);
    let types: Vec<String> = sb.ctl(&["oss1", "net", "show"])["net"].as_sequence().unwrap().iter().map(|n| n["net type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["lo", "dma", "tcp"]);

    let c3 = &nids("c3")[0];
    assert!(sb.run(&["ctl", "oss1", "fault", "add", "--src", c3, "--type", "GET", "--portal", "0", "--interval", "1", "--tag", "t"]).status.success());
    let o = sb.run(&["ctl", "c3", "ping", &oss_tcp, "--timeout", "1500"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).lines().count() == 1, "{o:?}");
    let rules = sb.ctl(&["oss1", "fault", "list"]);
    assert_eq!(rules["fault rules"][0]["hits"].as_u64(), Some(1), "{rules:?}");
    assert!(sb.run(&["ctl", "oss1", "fault", "del", "t"]).status.success());
    assert_eq!(ping_nis(&sb.ctl(&["c3", "ping", &oss_tcp])), oss);

    let o = sb.run(&["workload", "write-read", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((r["ok"].as_bool(), r["backend"].as_str()), (Some(true), Some("docker")), "{r}");

    let o = sb.run(&["ctl", "nosuch", "stats", "show"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no node `nosuch`"));
    assert!(sb.run(&["down"]).status.success());
    let o = sb.run(&["ctl", "c1", "stats", "show"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no cluster is up"), "{o:?}");
}
