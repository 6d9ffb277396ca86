//! `lnetlab export FILE --k8s -o DIR`: the cluster as Kubernetes manifests. A Namespace; the
//! run's token as a Secret; the spec as a ConfigMap; each DMA net's devices as a DaemonSet (one
//! `dmadev` per Kubernetes node, linked to the others found through a headless Service); each
//! node as a Pod (`lnetd --await-config`, placed by `host:` on nodes labelled
//! `lnetlab.io/host=NAME`, reachable as NAME.lnetlab under a headless Service); and the harness
//! as a Job that finds, configures and drives them over their control endpoints and prints the
//! report (the `remote` backend). The run's token is no manifest's: every Pod reads it from the
//! Secret `lnetlab-token`, which the user creates per run (`kubectl create secret`).

use super::devfaults;
use super::plan::Plan;
use super::spec::Role;
use serde_json::{json, Value};
use std::path::Path;

/// Where every node's control endpoint listens, and every device its links.
pub const CONTROL_PORT: u16 = 7000;
pub const LINK_PORT: u16 = 7100;
/// The headless Service that gives each node Pod its DNS name (`NODE.lnetlab`).
const NODE_SERVICE: &str = "lnetlab";

/// What the manifests need besides the plan.
pub struct K8sOpts<'a> {
    /// The node image (`lnetd`, `dmadev`).
    pub image: &'a str,
    /// The image holding `/lnetlab` for the Job.
    pub harness_image: &'a str,
    /// The spec file's text, as the Job reads it.
    pub spec_text: &'a str,
}

/// A name Kubernetes takes for a Pod's hostname and a Service (an RFC 1123 label).
fn dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !s.starts_with('-') && !s.ends_with('-')
}

fn labels(plan: &Plan, role: &str) -> Value {
    json!({"app.kubernetes.io/part-of": "lnetlab", "lnetlab.io/cluster": plan.spec.name, "lnetlab.io/role": role})
}

fn meta(name: &str, ns: &str, labels: Value) -> Value {
    json!({"name": name, "namespace": ns, "labels": labels})
}

fn token_env() -> Value {
    json!({"name": lnd::daemon::endpoint::TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": "lnetlab-token", "key": "token"}}})
}

/// The fabric directory of DMA net `net` on each Kubernetes node, shared by its device and the
/// node Pods there (the device socket, through which the shared memory passes).
fn fabric_volume(ns: &str, net: &str) -> Value {
    json!({"name": format!("fabric-{net}"), "hostPath": {"path": format!("/run/lnetlab/{ns}/fabric-{net}"), "type": "DirectoryOrCreate"}})
}

/// The cluster's namespace, `lnetlab-NAME`.
pub fn namespace(plan: &Plan) -> anyhow::Result<String> {
    let name = &plan.spec.name;
    let ns = format!("lnetlab-{}", name.to_ascii_lowercase().replace(['.', '_'], "-"));
    anyhow::ensure!(dns_label(&ns), "cluster name `{name}`: the namespace `{ns}` is not a valid Kubernetes name (lowercase letters, digits, `-`)");
    Ok(ns)
}

/// The manifests, one `(file name, documents)` per kind, in the order to apply them.
pub fn manifests(plan: &Plan, o: &K8sOpts<'_>) -> anyhow::Result<Vec<(String, Vec<Value>)>> {
    let ns = namespace(plan)?;
    for n in &plan.nodes {
        anyhow::ensure!(dns_label(&n.name), "node `{}`: a Pod's hostname must be lowercase letters, digits and `-` (at most 63): rename the node for Kubernetes", n.name);
    }
    let mut out = Vec::new();
    out.push(("00-namespace.yaml".into(), vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels(plan, "namespace")}})]));
    out.push((
        "01-config.yaml".into(),
        vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("lnetlab-spec", &ns, labels(plan, "spec")), "data": {"spec.yaml": o.spec_text}}),
        ],
    ));
    let mut services = vec![json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta(NODE_SERVICE, &ns, labels(plan, "node")),
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": {"lnetlab.io/role": "node"},
                 "ports": [{"name": "control", "port": CONTROL_PORT, "protocol": "TCP"}]}
    })];
    let mut devices = Vec::new();
    for net in &plan.dma_nets {
        let svc = format!("dmadev-{net}");
        services.push(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": meta(&svc, &ns, labels(plan, "device")),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": {"lnetlab.io/role": "device", "lnetlab.io/net": net},
                     "ports": [{"name": "link", "port": LINK_PORT, "protocol": "TCP"}]}
        }));
        let mut args = vec!["--fabric".to_string(), "/fabric".into(), "--host".into(), "$(POD_IP)".into(), "--link-listen".into(), format!("0.0.0.0:{LINK_PORT}"), "--link-dns".into(), format!("{svc}:{LINK_PORT}")];
        args.extend(devfaults::dmadev_args(plan, net));
        let mut l = labels(plan, "device");
        l["lnetlab.io/net"] = json!(net);
        devices.push(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta(&svc, &ns, l.clone()),
            "spec": {
                "selector": {"matchLabels": {"lnetlab.io/role": "device", "lnetlab.io/net": net}},
                "template": {"metadata": {"labels": l}, "spec": {
                    "containers": [{"name": "dmadev", "image": o.image, "command": ["/dmadev"], "args": args,
                        "env": [token_env(), {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        "ports": [{"name": "link", "containerPort": LINK_PORT, "protocol": "TCP"}],
                        "volumeMounts": [{"name": format!("fabric-{net}"), "mountPath": "/fabric"}]}],
                    "volumes": [fabric_volume(&ns, net)]
                }}
            }
        }));
    }
    out.push(("02-services.yaml".into(), services));
    if !devices.is_empty() {
        out.push(("03-devices.yaml".into(), devices));
    }
    let mut pods = Vec::new();
    for n in &plan.nodes {
        let mut mounts = Vec::new();
        let mut volumes = Vec::new();
        for (net, _) in n.nids.iter().filter(|(net, _)| plan.dma_nets.contains(net)) {
            mounts.push(json!({"name": format!("fabric-{net}"), "mountPath": format!("/fabric-{net}")}));
            volumes.push(fabric_volume(&ns, net));
        }
        if n.is(Role::Oss) {
            mounts.push(json!({"name": "targets", "mountPath": "/targets"}));
            volumes.push(json!({"name": "targets", "emptyDir": {}}));
        }
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": meta(&n.name, &ns, labels(plan, "node")),
            "spec": {
                "hostname": n.name, "subdomain": NODE_SERVICE, "restartPolicy": "Never",
                "containers": [{"name": "lnetd", "image": o.image, "command": ["/lnetd"],
                    "args": ["--await-config", "--control", format!("0.0.0.0:{CONTROL_PORT}")],
                    "env": [token_env()],
                    "ports": [{"name": "control", "containerPort": CONTROL_PORT, "protocol": "TCP"}],
                    "volumeMounts": mounts}],
                "volumes": volumes
            }
        });
        if !plan.hosts.is_empty() {
            pod["spec"]["nodeSelector"] = json!({"lnetlab.io/host": plan.hosts[n.host]});
        }
        pods.push(pod);
    }
    out.push(("04-nodes.yaml".into(), pods));
    let backend = format!("remote:dns:{NODE_SERVICE}.{ns}.svc.cluster.local:{CONTROL_PORT}");
    out.push((
        "05-run.yaml".into(),
        vec![json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": meta("lnetlab-run", &ns, labels(plan, "harness")),
            "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels(plan, "harness")}, "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "lnetlab", "image": o.harness_image, "command": ["/lnetlab"],
                    "args": ["run", "/spec/spec.yaml", "--backend", backend, "--seed", plan.seed.to_string(), "--json", "--artifacts", "/art"],
                    "env": [token_env()],
                    "volumeMounts": [{"name": "spec", "mountPath": "/spec", "readOnly": true}, {"name": "art", "mountPath": "/art"}]}],
                "volumes": [{"name": "spec", "configMap": {"name": "lnetlab-spec"}}, {"name": "art", "emptyDir": {}}]
            }}}
        })],
    ));
    Ok(out)
}

/// Writes the manifests into `dir` (created), with a header saying where they came from and
/// how to apply them; returns the files written.
pub fn write(plan: &Plan, o: &K8sOpts<'_>, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    let ns = namespace(plan)?;
    for (name, docs) in manifests(plan, o)? {
        let mut text = format!(
            "# Generated by `lnetlab export {} --k8s` (seed {}). First the run's secret, then the files in order:\n#   kubectl apply -f 00-namespace.yaml\n#   kubectl -n {ns} create secret generic lnetlab-token --from-literal=token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')\n#   kubectl apply -f DIR; kubectl -n {ns} logs -f job/lnetlab-run\n",
            plan.spec.source.display(),
            plan.seed
        );
        for d in docs {
            text.push_str("---\n");
            text.push_str(&serde_yaml_ng::to_string(&d)?);
        }
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        files.push(p);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::dns_label;

    #[test]
    fn names_kubernetes_takes() {
        assert!(dns_label("c1") && dns_label("oss-1") && dns_label("lnetlab-two-hosts"));
        assert!(!dns_label("C1") && !dns_label("c_1") && !dns_label("c.1") && !dns_label("-c") && !dns_label(""));
    }
}
