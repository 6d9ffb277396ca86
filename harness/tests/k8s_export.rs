//! Issue 14: `lnetlab export FILE --k8s -o DIR` writes Kubernetes manifests — the devices as a
//! DaemonSet, each node a Pod placed by its `host:`, a headless Service naming them, the spec
//! as a ConfigMap and the harness as a Job driving them over their control endpoints. No
//! cluster is reachable here: they are checked for what they say, and against the Kubernetes
//! schemas by kubernetes-validate where it is installed (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn export(spec: &Path, dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lnetlab"))
        .args(["export", spec.to_str().unwrap(), "--k8s", "-o", dir.to_str().unwrap(), "--image", "lnetlab-node:test", "--seed", "4"])
        .env("LNETLAB_CONTROL_TOKEN", "k8s-export-token-never-written")
        .output()
        .unwrap()
}

/// Every document of every file in `dir`.
fn docs(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains("k8s-export-token-never-written"), "{}: the token is in a manifest", f.display());
        for d in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(d).unwrap();
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    out
}

#[test]
fn two_hosts_exports_as_kubernetes_manifests() {
    let out = tempfile::tempdir().unwrap();
    let o = export(&root().join("clusters/two-hosts.yaml"), out.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = docs(out.path());
    let of = |kind: &str| all.iter().filter(|d| d["kind"] == kind).collect::<Vec<_>>();
    let ns = "lnetlab-two-hosts";
    assert_eq!(of("Namespace")[0]["metadata"]["name"], ns);
    assert!(all.iter().filter(|d| d["kind"] != "Namespace").all(|d| d["metadata"]["namespace"] == ns));
    let pods = of("Pod");
    let hosts: Vec<(String, String)> = pods.iter().map(|p| (p["spec"]["hostname"].as_str().unwrap().to_string(), p["spec"]["nodeSelector"]["lnetlab.io/host"].as_str().unwrap().to_string())).collect();
    assert_eq!(hosts, [("oss1", "storage"), ("c1", "compute"), ("c2", "compute"), ("c3", "compute")].map(|(a, b)| (a.to_string(), b.to_string())));
    for p in &pods {
        assert_eq!(p["spec"]["subdomain"], "lnetlab", "{p}");
        let args = &p["spec"]["containers"][0]["args"];
        assert_eq!(args[0], "--await-config", "{p}");
        assert_eq!(p["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"], "lnetlab-token");
    }
    let ds = of("DaemonSet");
    assert_eq!(ds.len(), 1, "one device DaemonSet for dma0");
    let dargs = ds[0]["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(dargs.contains("$(POD_IP)") && dargs.contains("dmadev-dma0:7100"), "{dargs}");
    let svc: Vec<&str> = of("Service").iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(svc, ["lnetlab", "dmadev-dma0"]);
    let job = of("Job")[0];
    let jargs = job["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(jargs.contains("remote:dns:lnetlab.lnetlab-two-hosts.svc.cluster.local:7000") && jargs.contains("/spec/spec.yaml"), "{jargs}");
    let spec = of("ConfigMap")[0]["data"]["spec.yaml"].as_str().unwrap().to_string();
    assert_eq!(spec, std::fs::read_to_string(root().join("clusters/two-hosts.yaml")).unwrap());
    // Against the Kubernetes schemas, strictly (unknown fields refused), where the tool is here.
    if Command::new("kubernetes-validate").arg("--version").output().is_ok() {
        let files: Vec<PathBuf> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().path()).collect();
        let v = Command::new("kubernetes-validate").arg("--strict").arg("--quiet").args(&files).output().unwrap();
        assert!(v.status.success(), "{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    }
}

#[test]
fn names_kubernetes_refuses_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("odd.yaml");
    std::fs::write(&spec, "name: odd\nnets: {tcp0: {kind: tcp}}\nnodes:\n  - {name: Client_1, roles: [client], nis: [tcp0]}\nworkloads: []\n").unwrap();
    let o = export(&spec, &dir.path().join("out"));
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("node `Client_1`") && e.contains("rename the node"), "{e}");
    let o = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["export", spec.to_str().unwrap(), "--k8s", "--image", "x"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("-o DIR"), "{}", String::from_utf8_lossy(&o.stderr));
}
