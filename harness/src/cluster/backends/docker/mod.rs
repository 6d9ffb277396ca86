//! The `docker` backend: every node a container of our own `FROM scratch` image (`image.rs`), one
//! bridge network per TCP net on a subnet allocated atomically (`subnet.rs`), the DMA fabric as
//! a volume shared by its containers (one device container and volume per host a spec names,
//! the devices linked over a network of their own), each OSS's targets on volumes of its own. Everything
//! carries `lnetlab.*` labels (`reap.rs`); at teardown nodes are waited for and artifacts copied
//! out through the API before removal (`collect.rs`); killed runs are reaped when provably dead.

pub mod collect;
pub mod engine;
pub mod image;
pub mod reap;
pub mod subnet;

pub use engine::Engine;
pub use image::{ensure_image, ensure_image_from, prune_images, NodeBinaries};
pub use reap::{host_identity, reap, reap_stale, stale_runs, LABEL_CLUSTER, LABEL_HOST, LABEL_PID, LABEL_RUN, LABEL_SCRATCH, LABEL_START};

use crate::cluster::backend::Backend;
use crate::cluster::control::{Cluster, NodeLine, NodeProc};
use crate::cluster::devfaults;
use crate::cluster::plan::{random_seed, Plan};
use crate::cluster::spec::{ClusterSpec, NetKind};
use bollard::models::{ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkingConfig, VolumeCreateRequest};
use bollard::query_parameters as qp;
use collect::Teardown;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subnet::Subnet;

/// Node containers created and started at once during bring-up.
const START_WORKERS: usize = 8;
use tokio::io::AsyncWriteExt;

/// `lnetlab down --all`: removes what killed runs left and dangling node images; with `prune`,
/// every node image no container uses, else says how many are kept. Returns lines to print.
pub fn clean_up(prune: bool) -> anyhow::Result<Vec<String>> {
    let e = Engine::connect()?;
    let n = reap_stale(&e)?;
    let mut out = vec![format!("removed {n} docker objects of lnetlab runs that are gone")];
    let (gone, bytes) = prune_images(&e, if prune { 0 } else { usize::MAX }, "")?;
    if !gone.is_empty() {
        out.push(format!("removed {} node images ({} MB): {}", gone.len(), bytes >> 20, gone.join(", ")));
    }
    let (kept, kept_bytes) = image::node_images(&e)?;
    if kept > 0 {
        let why = if prune { " (in use by containers)" } else { "; `lnetlab down --all --prune` removes those no container uses" };
        out.push(format!("{kept} node images kept ({} MB){why}", kept_bytes >> 20));
    }
    Ok(out)
}

pub struct DockerBackend {
    pub engine: Arc<Engine>,
    pub run_id: String,
    /// Where the node binaries are (`None`: `$LNETLAB_NODE_BINARIES` or beside lnetlab).
    node_binaries: Option<PathBuf>,
    /// The TCP nets' networks, created when the addresses were handed out.
    nets: Mutex<Vec<(String, Subnet)>>,
    /// The cluster's line channel, for re-attaching restarted nodes.
    tx: Mutex<Option<Sender<(usize, NodeLine)>>>,
    /// The device containers: (DMA net, host index, container, fabric volume).
    devices: Mutex<Vec<(String, Option<usize>, String, String)>>,
    /// The run's secret, which opens the devices' fabric links.
    token: String,
}

impl DockerBackend {
    pub fn new() -> anyhow::Result<DockerBackend> {
        DockerBackend::with_node_binaries(None)
    }

    /// A backend whose image is built from the node binaries in `dir`.
    pub fn with_node_binaries(dir: Option<PathBuf>) -> anyhow::Result<DockerBackend> {
        let engine = Arc::new(Engine::connect()?);
        let reaped = reap_stale(&engine)?;
        if reaped > 0 {
            eprintln!("  docker: reaped {reaped} objects left by killed runs");
        }
        let r = random_seed();
        let token = crate::procs::this_run_token().unwrap_or_default();
        Ok(DockerBackend { engine, run_id: format!("{:08x}", r as u32), node_binaries: dir, nets: Default::default(), tx: Default::default(), devices: Default::default(), token })
    }

    /// The container of node `name`.
    pub fn container(&self, name: &str) -> String {
        format!("lnetlab-{}-{name}", self.run_id)
    }

    /// The networks of `spec`'s TCP nets: created on first call (each on a free subnet, or the
    /// spec's), the same ones after.
    fn networks(&self, spec: &ClusterSpec) -> anyhow::Result<Vec<(String, Subnet)>> {
        let mut nets = self.nets.lock().unwrap();
        if !nets.is_empty() {
            return Ok(nets.clone());
        }
        let lab = reap::labels(&spec.name, &self.run_id);
        for (net, ns) in spec.nets.iter().filter(|(_, n)| n.kind == NetKind::Tcp) {
            let (candidates, explicit) = match ns.subnet.as_deref() {
                Some(s) => (vec![Subnet::parse(s).map_err(|e| anyhow::anyhow!("net {net}: subnet {s}: {e}"))?], true),
                None => (subnet::auto_candidates(&subnet::used_subnets(&self.engine)), false),
            };
            let s = subnet::create_network(&self.engine, &format!("lnetlab-{}-{net}", self.run_id), net, &lab, &candidates, explicit)?;
            nets.push((net.clone(), s));
        }
        Ok(nets.clone())
    }

    /// The device containers of DMA net `net` and their fabric volumes.
    fn devices_of(&self, net: &str) -> Vec<(String, String)> {
        self.devices.lock().unwrap().iter().filter(|d| d.0 == net).map(|d| (d.2.clone(), d.3.clone())).collect()
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
            Some(ip) => e.rt.block_on(e.docker.connect_network(&netname, NetworkConnectRequest { container: c, endpoint_config: Some(endpoint(ip)) }))?,
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

impl Drop for DockerBackend {
    /// Networks made for addresses of a cluster that never came up go with the backend.
    fn drop(&mut self) {
        if !self.nets.lock().unwrap().is_empty() {
            if let Err(err) = reap(&self.engine, Some(&self.run_id)) {
                eprintln!("lnetlab: docker teardown of run {}: {err:#}", self.run_id);
            }
        }
    }
}

fn endpoint(ip: Ipv4Addr) -> EndpointSettings {
    EndpointSettings { ipam_config: Some(EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }), ..Default::default() }
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

    /// Kills every device container of `net` (each host's).
    fn kill_device(&self, _cluster: &mut Cluster, net: &str) -> anyhow::Result<()> {
        let e = &self.engine;
        for c in self.devices_of(net) {
            e.rt.block_on(e.docker.kill_container(&c.0, Some(qp::KillContainerOptionsBuilder::default().signal("SIGKILL").build())))?;
        }
        Ok(())
    }

    fn can_cut_link(&self) -> bool {
        true
    }

    /// Asks `net`'s device of host `a`, inside its container, to cut or restore its link to `b`'s.
    fn cut_link(&self, _cluster: &mut Cluster, net: &str, a: usize, b: usize, on: bool) -> anyhow::Result<()> {
        let devs = self.devices.lock().unwrap();
        let d = devs.iter().find(|d| d.0 == net && d.1 == Some(a)).ok_or_else(|| anyhow::anyhow!("no device of {net} on host {a}"))?;
        let arg = format!("{b} {}", if on { "on" } else { "off" });
        anyhow::ensure!(exec_ok(&self.engine, &d.2, &["/dmadev", "--fabric", "/fabric", "--link-cut", &arg]), "the {net} device of host {a} did not take `--link-cut {arg}`");
        Ok(())
    }

    fn can_cut_fabric(&self) -> bool {
        true
    }

    /// Asks the device of `net` from inside its container (`dmadev --cut`).
    fn cut_fabric(&self, _cluster: &mut Cluster, net: &str, a: u32, b: u32, on: bool) -> anyhow::Result<()> {
        let arg = format!("{a} {b} {}", if on { "on" } else { "off" });
        for (cname, _) in self.devices_of(net) {
            anyhow::ensure!(exec_ok(&self.engine, &cname, &["/dmadev", "--fabric", "/fabric", "--cut", &arg]), "the {net} device did not take `--cut {arg}`");
        }
        Ok(())
    }

    fn start_device(&self, _cluster: &mut Cluster, net: &str, timeout: Duration) -> anyhow::Result<()> {
        let e = &self.engine;
        for (cname, volume) in self.devices_of(net) {
            e.rt.block_on(e.docker.start_container(&cname, None::<qp::StartContainerOptions>))?;
            wait_device(e, &cname, &volume, timeout).map_err(|_| anyhow::anyhow!("the {net} device did not come back within {timeout:?}"))?;
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

    fn tcp_addressing(&self, spec: &ClusterSpec) -> anyhow::Result<Option<Box<dyn Fn(usize, &str, usize) -> Ipv4Addr>>> {
        let nets = self.networks(spec)?;
        Ok(Some(Box::new(move |_, net, pos| nets.iter().find(|(n, _)| n == net).expect("every TCP net has its network").1.host(pos))))
    }

    fn up(&self, plan: &Plan, scratch: &Path, art: &Path, timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster> {
        let e = &self.engine;
        let run = &self.run_id;
        let name = |s: &str| format!("lnetlab-{run}-{s}");
        let mut lab = reap::labels(&plan.spec.name, run);
        lab.insert(LABEL_SCRATCH.to_string(), scratch.display().to_string());
        let art = std::fs::canonicalize(art)?;
        for d in ["nodes", "traces", "containers"] {
            std::fs::create_dir_all(art.join(d))?;
        }
        // Anything created from here on is removed by this guard, whatever happens.
        let mut teardown = Teardown { engine: e.clone(), run: run.clone(), art: art.clone(), nodes: Vec::new(), devices: Vec::new(), grace: Duration::ZERO };
        self.networks(&plan.spec)?;
        let image = ensure_image_from(e, self.node_binaries.as_deref())?;
        progress(&format!("docker: image {image}, run {run}"));
        // Hosts' devices link over a network of their own (static addresses: host k at .k+2).
        let links_net = match plan.hosts.is_empty() {
            true => None,
            false => Some(subnet::create_network(e, &name("links"), "links", &lab, &subnet::auto_candidates(&subnet::used_subnets(e)), false)?),
        };
        let create = |cname: &str, body: ContainerCreateBody| -> anyhow::Result<()> {
            e.rt.block_on(e.docker.create_container(Some(qp::CreateContainerOptionsBuilder::default().name(cname).build()), body)).map_err(|err| anyhow::anyhow!("create {cname}: {err}"))?;
            Ok(())
        };
        // One dmadev container per DMA net (and host); logs stay in the container until teardown.
        for net in &plan.dma_nets {
            let mut links: Vec<(usize, Ipv4Addr, String)> = Vec::new();
            for host in plan.devices_of(net) {
                let dname = plan.device_name(net, host);
                let volume = name(&format!("{dname}-fabric"));
                e.rt.block_on(e.docker.create_volume(VolumeCreateRequest { name: Some(volume.clone()), labels: Some(lab.clone()), ..Default::default() }))?;
                let cname = name(&format!("dmadev-{dname}"));
                let mut cmd = [vec!["--fabric".into(), "/fabric".into(), "--log".into(), format!("/art/dmadev-{dname}.log")], devfaults::dmadev_args(plan, net), plan.fabric_capture(&dname, Path::new("/art")).map(|f| vec!["--pcap".into(), f.display().to_string()]).unwrap_or_default()].concat();
                let mut host_config = HostConfig { binds: Some(vec![format!("{volume}:/fabric")]), network_mode: Some("none".into()), ..Default::default() };
                let (mut env, mut networking_config) = (None, None);
                if let (Some(h), Some(s)) = (host, &links_net) {
                    let ip = s.host(h);
                    let stats = format!("/art/{}", devfaults::stats_file(&dname));
                    cmd.extend(["--host".into(), h.to_string(), "--link-listen".into(), format!("0.0.0.0:{LINK_PORT}"), "--stats".into(), stats.clone()]);
                    cmd.extend(links.iter().flat_map(|(j, a, _)| ["--link".to_string(), format!("{j}={a}:{LINK_PORT}")]));
                    env = Some(vec![format!("{}={}", lnd::daemon::endpoint::TOKEN_ENV, self.token)]);
                    host_config.network_mode = Some(name("links"));
                    networking_config = Some(NetworkingConfig { endpoints_config: Some(HashMap::from([(name("links"), endpoint(ip))])) });
                    links.push((h, ip, cname.clone()));
                }
                let body = ContainerCreateBody { image: Some(image.clone()), entrypoint: Some(vec!["/dmadev".into()]), cmd: Some(cmd), env, labels: Some(lab.clone()), host_config: Some(host_config), networking_config, ..Default::default() };
                create(&cname, body)?;
                teardown.devices.push(cname.clone());
                self.devices.lock().unwrap().push((net.clone(), host, cname.clone(), volume.clone()));
                e.rt.block_on(e.docker.start_container(&cname, None::<qp::StartContainerOptions>))?;
                wait_device(e, &cname, &volume, timeout).map_err(|_| anyhow::anyhow!("dmadev for {dname} did not start; see {}", art.join(format!("dmadev-{dname}.log")).display()))?;
            }
            if links.len() > 1 {
                progress(&format!("linking the {} hosts of {net}", links.len()));
                let want = (links.len() - 1).to_string();
                let t0 = Instant::now();
                for (h, _, cname) in &links {
                    let stats = format!("/art/{}", devfaults::stats_file(&plan.device_name(net, Some(*h))));
                    while !exec_ok(e, cname, &["/dmadev", "--fabric", "/fabric", "--probe-links", &want, "--stats", &stats]) {
                        anyhow::ensure!(t0.elapsed() < timeout, "the {net} device of host {} did not link to the others within {timeout:?}", plan.hosts[*h]);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let mut nodes = Vec::new();
        let mut target_dirs = HashMap::new();
        let mut todo = Vec::with_capacity(plan.nodes.len());
        for (i, n) in plan.nodes.iter().enumerate() {
            let cname = name(&n.name);
            let mut args = plan.lnetd_args(n, &|net| format!("/fabric-{net}"));
            let mut binds = Vec::new();
            let mut tcp_nets = Vec::new();
            for (net, nid) in &n.nids {
                if plan.dma_nets.contains(net) {
                    let dname = plan.device_name(net, (!plan.hosts.is_empty()).then_some(n.host));
                    binds.push(format!("{}:/fabric-{net}", name(&format!("{dname}-fabric"))));
                } else {
                    tcp_nets.push((net.clone(), Ipv4Addr::from(nid.addr())));
                }
            }
            for t in &n.targets {
                let vol = name(&format!("{}-ost{}", n.name, t.ost));
                e.rt.block_on(e.docker.create_volume(VolumeCreateRequest { name: Some(vol.clone()), labels: Some(lab.clone()), ..Default::default() }))?;
                binds.push(format!("{vol}:/targets/ost{}", t.ost));
                target_dirs.insert((n.name.clone(), t.ost), PathBuf::from(format!("/targets/ost{}/data", t.ost)));
            }
            args.extend(["--log".into(), format!("/art/nodes/{}.log", n.name), "--trace".into(), format!("/art/traces/{}.jsonl", n.name), "--t0".into(), plan.t0_unix_us.to_string()]);
            if let Some(f) = plan.node_capture(n, Path::new("/art")) {
                args.extend(["--pcap".into(), f.display().to_string()]);
            }
            let (first, rest) = match tcp_nets.split_first() {
                Some((f, r)) => (Some(f.clone()), r.to_vec()),
                None => (None, Vec::new()),
            };
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
            todo.push((i, cname, body, rest));
        }
        // Created, wired, attached and started by a few workers at once: one at a time, a
        // thousand containers take minutes of round trips to the Engine.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done: Vec<std::sync::Mutex<Option<(bool, anyhow::Result<Box<dyn Write + Send>>)>>> = todo.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|sc| {
            for _ in 0..START_WORKERS.min(todo.len()) {
                let tx = tx.clone();
                sc.spawn(|| {
                    let tx = tx;
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((i, cname, body, rest)) = todo.get(k) else { return };
                        let mut created = false;
                        let r = (|| {
                            create(cname, body.clone())?;
                            created = true;
                            for (net, ip) in rest {
                                e.rt.block_on(e.docker.connect_network(&name(net), NetworkConnectRequest { container: cname.clone(), endpoint_config: Some(endpoint(*ip)) }))?;
                            }
                            let stdin = attach(e, cname, *i, tx.clone())?;
                            e.rt.block_on(e.docker.start_container(cname, None::<qp::StartContainerOptions>)).map_err(|err| anyhow::anyhow!("start {cname}: {err}"))?;
                            Ok(stdin)
                        })();
                        *done[k].lock().unwrap() = Some((created, r));
                    }
                });
            }
        });
        let mut first_err = None;
        for ((i, cname, _, _), d) in todo.iter().zip(done) {
            let (created, r) = d.into_inner().unwrap().unwrap_or((false, Err(anyhow::anyhow!("{cname}: not started"))));
            if created {
                teardown.nodes.push(cname.clone());
            }
            match r {
                Ok(stdin) => nodes.push(NodeProc::remote(&plan.nodes[*i].name, stdin)),
                Err(err) => {
                    first_err.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_err {
            return Err(err);
        }
        *self.tx.lock().unwrap() = Some(tx);
        // Device faults are counted from the devices' logs, copied out of their containers.
        let (eng, devices, art2) = (e.clone(), teardown.devices.clone(), art.clone());
        let count_device_faults = move || {
            for d in &devices {
                let _ = collect::collect_art(&eng, d, &art2);
            }
            devfaults::device_counts_from_logs(&art2)
        };
        let (eng, all, art3) = (e.clone(), [&teardown.nodes[..], &teardown.devices[..]].concat(), art.clone());
        let sync = move || {
            for c in &all {
                let _ = collect::collect_art(&eng, c, &art3);
            }
        };
        // From here the nodes are told to quit when the cluster goes down: wait for them.
        teardown.grace = collect::QUIT_GRACE;
        let keep: Vec<Box<dyn std::any::Any + Send>> = vec![Box::new(teardown)];
        let mut c = Cluster::assemble(nodes, rx, keep, target_dirs);
        c.device_faults = Some(Box::new(count_device_faults));
        c.sync_artifacts = Some(Box::new(sync));
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
    exec_ok(e, cname, &["/dmadev", "--fabric", "/fabric", "--probe"])
}

/// Where hosts' devices accept their links.
const LINK_PORT: u16 = 7100;

/// Waits until device container `cname` serves its fabric (its socket on `volume` takes
/// connections, or it says so in the container).
fn wait_device(e: &Engine, cname: &str, volume: &str, timeout: Duration) -> anyhow::Result<()> {
    let vol = e.rt.block_on(e.docker.inspect_volume(volume))?;
    let sock = PathBuf::from(vol.mountpoint).join(lnd::dev::proto::SOCK_NAME);
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() && !device_serving(e, cname) {
        anyhow::ensure!(t0.elapsed() < timeout, "not serving");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs `cmd` in container `cname`: did it exit 0 (within a second)?
fn exec_ok(e: &Engine, cname: &str, cmd: &[&str]) -> bool {
    e.rt.block_on(async {
        let cfg = bollard::models::ExecConfig { cmd: Some(cmd.iter().map(|s| s.to_string()).collect()), ..Default::default() };
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
