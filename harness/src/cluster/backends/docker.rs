//! The `docker` backend: every node a container of our own `FROM scratch` image (static `lnetd`
//! and `dmadev`, built through the Engine's build API from a tar we make), one bridge network
//! per TCP net with fixed subnets and static IPs, the DMA fabric as a volume shared by its
//! containers, each OSS's targets on volumes of its own. Everything carries `lnetlab.*` labels and
//! is removed at teardown (logs saved first); `reap` removes what a killed run left.

use crate::cluster::backend::Backend;
use crate::cluster::control::{Cluster, NodeLine, NodeProc};
use crate::cluster::devfaults;
use crate::cluster::plan::{random_seed, Plan};
use crate::cluster::spec::{ClusterSpec, NetKind, Role};
use bollard::models::{ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig, NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig, VolumeCreateRequest};
use bollard::query_parameters as qp;
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

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
const IMAGE_REPO: &str = "lnetlab-node";

/// A tokio runtime and a negotiated Engine client.
pub struct Engine {
    pub rt: Arc<tokio::runtime::Runtime>,
    pub docker: Docker,
}

impl Engine {
    pub fn connect() -> anyhow::Result<Engine> {
        let rt = Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?);
        let docker = rt.block_on(async {
            let d = Docker::connect_with_defaults()?;
            d.negotiate_version().await
        })?;
        Ok(Engine { rt, docker })
    }
}

/// The static binaries the image carries: `LNETLAB_STATIC_DIR` if set, else built (cargo is
/// incremental: a no-op when up to date) with `+crt-static` into `target/static`.
pub fn static_binaries() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    if let Some(d) = std::env::var_os("LNETLAB_STATIC_DIR") {
        return Ok(PathBuf::from(d));
    }
    let dir = root.join("target/static/x86_64-unknown-linux-gnu/release");
    {
        let st = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .env("RUSTFLAGS", "-C target-feature=+crt-static -C strip=debuginfo")
            .args(["build", "--release", "-p", "lnd", "--bins", "--target", "x86_64-unknown-linux-gnu", "--target-dir", "target/static"])
            .status()?;
        if !st.success() {
            anyhow::bail!("building the static binaries failed ({st})");
        }
    }
    Ok(dir)
}

fn fnv(h: &mut u64, data: &[u8]) {
    for &b in data {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// Builds (unless it exists) the node image, tagged by a hash of the binaries; returns the tag.
pub fn ensure_image(e: &Engine) -> anyhow::Result<String> {
    let dir = static_binaries()?;
    let lnetd = std::fs::read(dir.join("lnetd"))?;
    let dmadev = std::fs::read(dir.join("dmadev"))?;
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    fnv(&mut h, &lnetd);
    fnv(&mut h, &dmadev);
    let tag = format!("{IMAGE_REPO}:{h:016x}");
    if e.rt.block_on(e.docker.inspect_image(&tag)).is_ok() {
        return Ok(tag);
    }
    let dockerfile = "FROM scratch\nCOPY lnetd dmadev /\nLABEL lnetlab.image=node\nENTRYPOINT [\"/lnetd\"]\n";
    let mut tb = tar::Builder::new(Vec::new());
    for (name, data, mode) in [("Dockerfile", dockerfile.as_bytes(), 0o644), ("lnetd", &lnetd[..], 0o755), ("dmadev", &dmadev[..], 0o755)] {
        let mut hd = tar::Header::new_gnu();
        hd.set_size(data.len() as u64);
        hd.set_mode(mode);
        hd.set_cksum();
        tb.append_data(&mut hd, name, data)?;
    }
    let ctx = tb.into_inner()?;
    let opts = qp::BuildImageOptionsBuilder::default().dockerfile("Dockerfile").t(&tag).rm(true).build();
    let out: Vec<_> = e.rt.block_on(e.docker.build_image(opts, None, Some(bollard::body_full(ctx.into()))).try_collect())?;
    if let Some(err) = out.iter().find_map(|i| i.error_detail.as_ref().and_then(|d| d.message.clone())) {
        anyhow::bail!("image build failed: {err}");
    }
    Ok(tag)
}

/// Where our pids mean something: this boot of this kernel, and our pid namespace.
pub fn host_identity() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default();
    format!("{}/{ns}", boot.trim())
}

fn labels(cluster: &str, run: &str) -> HashMap<String, String> {
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
    let mut all: Vec<HashMap<String, String>> = cs.into_iter().filter_map(|c| c.labels).collect();
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
        n += reap(e, Some(&r))?;
    }
    Ok(n)
}

/// Removes every container, network and volume carrying `lnetlab.run` (or only `run`'s).
pub fn reap(e: &Engine, run: Option<&str>) -> anyhow::Result<usize> {
    let filter = match run {
        Some(r) => format!("{LABEL_RUN}={r}"),
        None => LABEL_RUN.to_string(),
    };
    let f = HashMap::from([("label", vec![filter.as_str()])]);
    e.rt.block_on(async {
        let mut n = 0;
        let cs = e.docker.list_containers(Some(qp::ListContainersOptionsBuilder::default().all(true).filters(&f).build())).await?;
        for c in cs {
            // A killed run also left its scratch directory (only ever one of ours: checked).
            if let Some(dir) = c.labels.as_ref().and_then(|l| l.get(LABEL_SCRATCH)).map(std::path::PathBuf::from) {
                if dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with("lnetlab-run-")) {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            if let Some(id) = c.id {
                let _ = e.docker.remove_container(&id, Some(qp::RemoveContainerOptionsBuilder::default().force(true).v(true).build())).await;
                n += 1;
            }
        }
        for net in e.docker.list_networks(Some(qp::ListNetworksOptionsBuilder::default().filters(&f).build())).await? {
            if let Some(id) = net.id {
                let _ = e.docker.remove_network(&id).await;
                n += 1;
            }
        }
        let vols = e.docker.list_volumes(Some(qp::ListVolumesOptionsBuilder::default().filters(&f).build())).await?;
        for v in vols.volumes.unwrap_or_default() {
            let _ = e.docker.remove_volume(&v.name, None::<qp::RemoveVolumeOptions>).await;
            n += 1;
        }
        Ok::<usize, anyhow::Error>(n)
    })
}

/// Subnets of the TCP nets: the spec's unless another network already uses it, else
/// 10.(200+run%40).k.0/24 (skipping used ones).
fn subnet_of(spec: &ClusterSpec, net: &str, k: usize, salt: u8, used: &[(u8, u8, u8)]) -> (u8, u8, u8) {
    if let Some(s) = spec.nets[net].subnet.as_deref() {
        if let Some(ip) = s.split('/').next().and_then(|a| a.parse::<Ipv4Addr>().ok()) {
            let o = ip.octets();
            if !used.contains(&(o[0], o[1], o[2])) {
                return (o[0], o[1], o[2]);
            }
        }
    }
    let mut b = 200 + salt % 40;
    loop {
        let cand = (10, b, k as u8);
        if !used.contains(&cand) {
            return cand;
        }
        b = 200 + (b - 199) % 40;
    }
}

/// /24 prefixes of the Engine's existing networks.
fn used_subnets(e: &Engine) -> Vec<(u8, u8, u8)> {
    let nets = e.rt.block_on(e.docker.list_networks(None::<qp::ListNetworksOptions>)).unwrap_or_default();
    nets.iter()
        .flat_map(|n| n.ipam.iter().flat_map(|i| i.config.iter().flatten()))
        .filter_map(|c| c.subnet.as_deref()?.split('/').next()?.parse::<Ipv4Addr>().ok())
        .map(|ip| {
            let o = ip.octets();
            (o[0], o[1], o[2])
        })
        .collect()
}

pub struct DockerBackend {
    pub engine: Arc<Engine>,
    pub run_id: String,
    salt: u8,
    used: Vec<(u8, u8, u8)>,
    /// The cluster's line channel, for re-attaching restarted nodes.
    tx: std::sync::Mutex<Option<Sender<(usize, NodeLine)>>>,
}

impl DockerBackend {
    pub fn new() -> anyhow::Result<DockerBackend> {
        let engine = Arc::new(Engine::connect()?);
        let reaped = reap_stale(&engine)?;
        if reaped > 0 {
            eprintln!("  docker: reaped {reaped} objects left by killed runs");
        }
        let r = random_seed();
        let used = used_subnets(&engine);
        Ok(DockerBackend { engine, run_id: format!("{:08x}", r as u32), salt: (r % 251) as u8, used, tx: Default::default() })
    }

    /// The container of node `name`.
    pub fn container(&self, name: &str) -> String {
        format!("lnetlab-{}-{name}", self.run_id)
    }

    /// Fault: SIGKILL a node's container.
    pub fn kill(&self, node: &str) -> anyhow::Result<()> {
        let e = &self.engine;
        e.rt.block_on(e.docker.kill_container(&self.container(node), Some(qp::KillContainerOptionsBuilder::default().signal("SIGKILL").build())))?;
        Ok(())
    }

    /// Fault: freeze and thaw a node (cgroup freezer).
    pub fn pause_container(&self, node: &str, paused: bool) -> anyhow::Result<()> {
        let e = &self.engine;
        let c = self.container(node);
        if paused {
            e.rt.block_on(e.docker.pause_container(&c))?;
        } else {
            e.rt.block_on(e.docker.unpause_container(&c))?;
        }
        Ok(())
    }

    /// Fault: take a node off a TCP net (partition) or put it back with the same address.
    pub fn connect_net(&self, node: &str, net: &str, ip: Option<Ipv4Addr>) -> anyhow::Result<()> {
        let e = &self.engine;
        let netname = format!("lnetlab-{}-{net}", self.run_id);
        let c = self.container(node);
        match ip {
            None => e.rt.block_on(e.docker.disconnect_network(&netname, bollard::models::NetworkDisconnectRequest { container: c, force: Some(true) }))?,
            Some(ip) => e.rt.block_on(e.docker.connect_network(
                &netname,
                NetworkConnectRequest { container: c, endpoint_config: Some(EndpointSettings { ipam_config: Some(EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }), ..Default::default() }) },
            ))?,
        }
        Ok(())
    }

    /// Fault: kill node `i` and start it again (same container, volumes and addresses); waits
    /// until it is ready. Roles must be started again by the caller.
    pub fn restart(&self, cluster: &mut Cluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
        Backend::kill_node(self, cluster, i, timeout)?;
        Backend::start_node(self, cluster, i, timeout)
    }
}

/// Removes this run's objects when the cluster goes (after saving container logs).
struct Teardown {
    engine: Arc<Engine>,
    run: String,
    art: PathBuf,
    containers: Vec<String>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let e = &self.engine;
        for c in &self.containers {
            let logs: Vec<_> = e.rt.block_on(async {
                e.docker
                    .logs(c, Some(qp::LogsOptionsBuilder::default().stdout(true).stderr(true).build()))
                    .filter_map(|x| async move { x.ok() })
                    .collect::<Vec<_>>()
                    .await
            });
            let text: String = logs.iter().map(|l| l.to_string()).collect();
            let _ = std::fs::write(self.art.join("containers").join(format!("{c}.log")), text);
        }
        if let Err(err) = reap(e, Some(&self.run)) {
            eprintln!("lnetlab: docker teardown of run {}: {err}", self.run);
        }
    }
}

/// Sends lines into an attached container's stdin.
struct AttachWriter(tokio::sync::mpsc::UnboundedSender<Vec<u8>>);

impl Write for AttachWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.send(b.to_vec()).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "container stdin closed"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn kill_device(&self, _cluster: &mut Cluster, net: &str) -> anyhow::Result<()> {
        self.kill(&format!("dmadev-{net}"))
    }

    fn start_device(&self, _cluster: &mut Cluster, net: &str, timeout: Duration) -> anyhow::Result<()> {
        let e = &self.engine;
        let cname = self.container(&format!("dmadev-{net}"));
        e.rt.block_on(e.docker.start_container(&cname, None::<qp::StartContainerOptions>))?;
        // Up when its socket takes connections again.
        let vol = e.rt.block_on(e.docker.inspect_volume(&format!("lnetlab-{}-{net}-fabric", self.run_id)))?;
        let sock = PathBuf::from(vol.mountpoint).join(lnd::dev::proto::SOCK_NAME);
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() && !device_serving(e, &cname) {
            if t0.elapsed() > timeout {
                anyhow::bail!("the {net} device did not come back within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn signal_kill(&self, cluster: &Cluster, i: usize) -> anyhow::Result<()> {
        // The old attachment ends; `kill_node` consumes its exit.
        self.kill(&cluster.nodes[i].name)
    }

    fn launch_again(&self, cluster: &mut Cluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let tx = self.tx.lock().unwrap().clone().ok_or_else(|| anyhow::anyhow!("cluster not up"))?;
        let c = self.container(&cluster.nodes[i].name);
        let w = attach(&self.engine, &c, i, tx)?;
        self.engine.rt.block_on(self.engine.docker.start_container(&c, None::<qp::StartContainerOptions>))?;
        cluster.replace_writer(i, w);
        cluster.wait_node_ready(i, timeout)
    }

    fn freeze_node(&self, cluster: &Cluster, i: usize, frozen: bool) -> anyhow::Result<()> {
        self.pause_container(&cluster.nodes[i].name, frozen)
    }

    fn tcp_addressing(&self, spec: &ClusterSpec) -> Option<Box<dyn Fn(usize, &str, usize) -> Ipv4Addr>> {
        let spec = spec.clone();
        let salt = self.salt;
        let used = self.used.clone();
        Some(Box::new(move |k, net, pos| {
            let (a, b, c) = subnet_of(&spec, net, k, salt, &used);
            Ipv4Addr::new(a, b, c, pos as u8 + 2)
        }))
    }

    fn up(&self, plan: &Plan, scratch: &Path, art: &Path, timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster> {
        let e = &self.engine;
        let run = &self.run_id;
        let name = |s: &str| format!("lnetlab-{run}-{s}");
        let mut lab = labels(&plan.spec.name, run);
        lab.insert(LABEL_SCRATCH.to_string(), scratch.display().to_string());
        let art = std::fs::canonicalize(art)?;
        for d in ["nodes", "traces", "containers"] {
            std::fs::create_dir_all(art.join(d))?;
        }
        // Anything created from here on is removed by this guard, whatever happens.
        let mut teardown = Teardown { engine: e.clone(), run: run.clone(), art: art.clone(), containers: Vec::new() };
        let image = ensure_image(e)?;
        progress(&format!("docker: image {image}, run {run}"));
        let mut k = 0;
        for (net, ns) in &plan.spec.nets {
            if ns.kind == NetKind::Tcp {
                let (a, b, c) = subnet_of(&plan.spec, net, k, self.salt, &self.used);
                k += 1;
                let req = NetworkCreateRequest {
                    name: name(net),
                    driver: Some("bridge".into()),
                    labels: Some(lab.clone()),
                    ipam: Some(Ipam { config: Some(vec![IpamConfig { subnet: Some(format!("{a}.{b}.{c}.0/24")), gateway: Some(format!("{a}.{b}.{c}.1")), ..Default::default() }]), ..Default::default() }),
                    ..Default::default()
                };
                e.rt.block_on(e.docker.create_network(req)).map_err(|err| anyhow::anyhow!("network for {net} ({a}.{b}.{c}.0/24): {err}"))?;
            } else {
                e.rt.block_on(e.docker.create_volume(VolumeCreateRequest { name: Some(name(&format!("{net}-fabric"))), labels: Some(lab.clone()), ..Default::default() }))?;
            }
        }
        let create = |cname: &str, body: ContainerCreateBody| -> anyhow::Result<()> {
            e.rt.block_on(e.docker.create_container(Some(qp::CreateContainerOptionsBuilder::default().name(cname).build()), body)).map_err(|err| anyhow::anyhow!("create {cname}: {err}"))?;
            Ok(())
        };
        // One dmadev container per DMA net.
        for net in &plan.dma_nets {
            let cname = name(&format!("dmadev-{net}"));
            let body = ContainerCreateBody {
                image: Some(image.clone()),
                entrypoint: Some(vec!["/dmadev".into()]),
                cmd: Some([vec!["--fabric".into(), "/fabric".into(), "--log".into(), format!("/art/dmadev-{net}.log")], devfaults::dmadev_args(plan, net)].concat()),
                labels: Some(lab.clone()),
                host_config: Some(HostConfig { binds: Some(vec![format!("{}:/fabric", name(&format!("{net}-fabric"))), format!("{}:/art", art.display())]), network_mode: Some("none".into()), ..Default::default() }),
                ..Default::default()
            };
            create(&cname, body)?;
            teardown.containers.push(cname.clone());
            e.rt.block_on(e.docker.start_container(&cname, None::<qp::StartContainerOptions>))?;
            // Ready when its socket takes connections (asked in the container; the volume's
            // host path, where we may read it, answers too).
            let vol = e.rt.block_on(e.docker.inspect_volume(&name(&format!("{net}-fabric"))))?;
            let sock = PathBuf::from(vol.mountpoint).join(lnd::dev::proto::SOCK_NAME);
            let t0 = Instant::now();
            while !sock.exists() && !device_serving(e, &cname) {
                if t0.elapsed() > timeout {
                    anyhow::bail!("dmadev for {net} did not start; see {}", art.join(format!("dmadev-{net}.log")).display());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let mut nodes = Vec::new();
        let mut target_dirs = HashMap::new();
        for (i, n) in plan.nodes.iter().enumerate() {
            let cname = name(&n.name);
            let mut args = Vec::new();
            let mut binds = vec![format!("{}:/art", art.display())];
            let mut tcp_nets = Vec::new();
            for (net, nid) in &n.nids {
                args.extend(["--nid".to_string(), nid.to_string()]);
                if plan.dma_nets.contains(net) {
                    binds.push(format!("{}:/fabric-{net}", name(&format!("{net}-fabric"))));
                    args.extend(["--fabric".into(), format!("/fabric-{net}")]);
                } else {
                    tcp_nets.push((net.clone(), Ipv4Addr::from(nid.addr())));
                }
            }
            for (net, gw) in &n.routes {
                args.extend(["--route".into(), format!("{net} {gw}")]);
            }
            if n.is(Role::Router) {
                args.push("--routing".into());
            }
            for t in &n.targets {
                let vol = name(&format!("{}-ost{}", n.name, t.ost));
                e.rt.block_on(e.docker.create_volume(VolumeCreateRequest { name: Some(vol.clone()), labels: Some(lab.clone()), ..Default::default() }))?;
                binds.push(format!("{vol}:/targets/ost{}", t.ost));
                target_dirs.insert((n.name.clone(), t.ost), PathBuf::from(format!("/targets/ost{}/data", t.ost)));
            }
            args.extend(["--mem".into(), n.mem.to_string(), "--log".into(), format!("/art/nodes/{}.log", n.name), "--trace".into(), format!("/art/traces/{}.jsonl", n.name)]);
            let (first, rest) = match tcp_nets.split_first() {
                Some((f, r)) => (Some(f.clone()), r.to_vec()),
                None => (None, Vec::new()),
            };
            let endpoint = |ip: Ipv4Addr| EndpointSettings { ipam_config: Some(EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }), ..Default::default() };
            let body = ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(args),
                labels: Some(lab.clone()),
                open_stdin: Some(true),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                host_config: Some(HostConfig { binds: Some(binds), network_mode: Some(first.as_ref().map(|f| name(&f.0)).unwrap_or_else(|| "none".into())), ..Default::default() }),
                networking_config: first.as_ref().map(|(net, ip)| NetworkingConfig { endpoints_config: Some(HashMap::from([(name(net), endpoint(*ip))])) }),
                ..Default::default()
            };
            create(&cname, body)?;
            teardown.containers.push(cname.clone());
            for (net, ip) in rest {
                e.rt.block_on(e.docker.connect_network(&name(&net), NetworkConnectRequest { container: cname.clone(), endpoint_config: Some(endpoint(ip)) }))?;
            }
            let stdin = attach(e, &cname, i, tx.clone())?;
            e.rt.block_on(e.docker.start_container(&cname, None::<qp::StartContainerOptions>)).map_err(|err| anyhow::anyhow!("start {cname}: {err}"))?;
            nodes.push(NodeProc::remote(&n.name, stdin));
        }
        *self.tx.lock().unwrap() = Some(tx);
        let keep: Vec<Box<dyn std::any::Any + Send>> = vec![Box::new(teardown)];
        let mut c = Cluster::assemble(nodes, rx, keep, target_dirs);
        c.wait_ready(timeout, progress, &|n| art.join("nodes").join(format!("{n}.log")).display().to_string())?;
        Ok(c)
    }
}

/// Attaches to a container's stdin/stdout before it starts; output lines go to `tx`.
fn attach(e: &Engine, cname: &str, i: usize, tx: Sender<(usize, NodeLine)>) -> anyhow::Result<Box<dyn Write + Send>> {
    let res = e.rt.block_on(e.docker.attach_container(cname, Some(qp::AttachContainerOptionsBuilder::default().stdin(true).stdout(true).stderr(false).stream(true).build())))?;
    let bollard::container::AttachContainerResults { mut output, mut input } = res;
    let (in_tx, mut in_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    e.rt.spawn(async move {
        while let Some(b) = in_rx.recv().await {
            if input.write_all(&b).await.is_err() || input.flush().await.is_err() {
                break;
            }
        }
    });
    e.rt.spawn(async move {
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = output.next().await {
            buf.extend_from_slice(&chunk.into_bytes());
            while let Some(p) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=p).collect();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                    if tx.send((i, NodeLine::Line(v))).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send((i, NodeLine::Exited));
    });
    Ok(Box::new(AttachWriter(in_tx)))
}

/// Does the device in dmadev container `cname` serve its fabric? Asked inside the container
/// (a probe exec), not through the volume's path on the host, which only root may read and a
/// remote or virtualised Engine does not share with us.
fn device_serving(e: &Engine, cname: &str) -> bool {
    e.rt.block_on(async {
        let cfg = bollard::models::ExecConfig { cmd: Some(["/dmadev", "--fabric", "/fabric", "--probe"].map(String::from).to_vec()), ..Default::default() };
        let Ok(x) = e.docker.create_exec(cname, cfg).await else { return false };
        if e.docker.start_exec(&x.id, Some(bollard::exec::StartExecOptions { detach: true, ..Default::default() })).await.is_err() {
            return false;
        }
        for _ in 0..100 {
            match e.docker.inspect_exec(&x.id).await {
                Ok(r) if r.running == Some(false) => return r.exit_code == Some(0),
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(_) => return false,
            }
        }
        false
    })
}
