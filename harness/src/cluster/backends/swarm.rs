//! The `swarm` backend: the cluster as services of the Docker Swarm this Engine manages. An
//! attachable overlay network; one `dmadev` per swarm node and DMA net (a global service, linked
//! to the others through `tasks.SERVICE`); each cluster node a service of one task placed by its
//! `host:` (constraint `node.labels.lnetlab-host.NAME==true`), an `lnetd --await-config` whose
//! control port is published on its swarm node. Swarm has no static addresses: the harness asks
//! each node where it is on the overlay, then configures and drives it over its control endpoint
//! (the `remote` backend). Everything is labelled as the docker backend labels it, its logs are
//! saved, and it is all removed at teardown.

use super::docker::{ensure_image, reap, Engine};
use super::remote::{open_control, EndpointsFile, RemoteBackend};
use crate::cluster::backend::Backend;
use crate::cluster::control::Cluster;
use crate::cluster::devfaults;
use crate::cluster::plan::{random_seed, Plan};
use crate::cluster::spec::{ClusterSpec, FaultKind, NetKind};
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, Mount, MountType, MountVolumeOptions, NetworkAttachmentConfig, NetworkCreateRequest, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
    SecretSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters as qp;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The node label that places a cluster node on a swarm node: `lnetlab-host.NAME=true`.
pub const HOST_LABEL: &str = "lnetlab-host";
const CONTROL_PORT: u16 = 7000;
/// Where a task finds the run's token (under `/run/secrets/`).
const TOKEN_FILE: &str = "lnetlab-token";
const LINK_PORT: u16 = 7100;
/// How long tasks get to start (an image to load, a node to place).
const START_WAIT: Duration = Duration::from_secs(120);

pub struct SwarmBackend {
    engine: Engine,
    run_id: String,
    token: String,
    /// The image the services run (the node image, or `LNETLAB_SWARM_IMAGE`: one in a registry).
    image: String,
    /// The swarm secret holding the token (every task reads it from a file, not its environment).
    secret: Mutex<Option<String>>,
    /// Services created, by cluster node (or `dmadev-NET`), and the network.
    services: Mutex<Vec<(String, String)>>,
    network: Mutex<Option<String>>,
    remote: Mutex<Option<RemoteBackend>>,
    art: Mutex<Option<PathBuf>>,
}

impl SwarmBackend {
    pub fn new() -> anyhow::Result<SwarmBackend> {
        let engine = Engine::connect()?;
        let state = engine.rt.block_on(engine.docker.info())?.swarm.and_then(|s| s.control_available).unwrap_or(false);
        anyhow::ensure!(state, "--backend swarm needs this Docker Engine to be a swarm manager (`docker swarm init`, or run lnetlab on a manager)");
        let image = match std::env::var("LNETLAB_SWARM_IMAGE") {
            Ok(i) if !i.is_empty() => i,
            _ => ensure_image(&engine)?,
        };
        let token = crate::procs::this_run_token().ok_or_else(|| anyhow::anyhow!("no run token: /dev/urandom unreadable"))?;
        Ok(SwarmBackend { engine, run_id: format!("{:08x}", random_seed() as u32), token, image, secret: Default::default(), services: Default::default(), network: Default::default(), remote: Default::default(), art: Default::default() })
    }

    fn obj(&self, what: &str) -> String {
        format!("lnetlab-{}-{what}", self.run_id)
    }

    fn labels(&self, spec: &ClusterSpec) -> HashMap<String, String> {
        super::docker::reap::labels(&spec.name, &self.run_id)
    }

    fn volume(&self, name: &str, target: &str, labels: &HashMap<String, String>) -> Mount {
        Mount { typ: Some(MountType::VOLUME), source: Some(self.obj(name)), target: Some(target.into()), volume_options: Some(MountVolumeOptions { labels: Some(labels.clone()), ..Default::default() }), ..Default::default() }
    }

    /// Creates one service; remembers it for teardown.
    #[allow(clippy::too_many_arguments)]
    fn service(&self, key: &str, labels: &HashMap<String, String>, command: &str, args: Vec<String>, mounts: Vec<Mount>, global: bool, constraints: Vec<String>, publish: Option<u16>) -> anyhow::Result<String> {
        let name = self.obj(key);
        let net = self.network.lock().unwrap().clone().expect("network first");
        let secret = self.secret(labels)?;
        let spec = ServiceSpec {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.image.clone()),
                    labels: Some(labels.clone()),
                    command: Some(vec![command.into()]),
                    args: Some(args),
                    env: Some(vec![format!("{}=/run/secrets/{TOKEN_FILE}", lnd::daemon::endpoint::TOKEN_FILE_ENV)]),
                    secrets: Some(vec![TaskSpecContainerSpecSecrets {
                        secret_id: Some(secret.0),
                        secret_name: Some(secret.1),
                        file: Some(TaskSpecContainerSpecFile { name: Some(TOKEN_FILE.into()), uid: Some("0".into()), gid: Some("0".into()), mode: Some(0o400) }),
                    }]),
                    mounts: Some(mounts),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy { condition: Some(TaskSpecRestartPolicyConditionEnum::NONE), ..Default::default() }),
                placement: Some(TaskSpecPlacement { constraints: Some(constraints), ..Default::default() }),
                networks: Some(vec![NetworkAttachmentConfig { target: Some(net), ..Default::default() }]),
                ..Default::default()
            }),
            mode: Some(if global { ServiceSpecMode { global: Some(HashMap::new()), ..Default::default() } } else { ServiceSpecMode { replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }), ..Default::default() } }),
            endpoint_spec: publish.map(|p| EndpointSpec {
                ports: Some(vec![EndpointPortConfig { target_port: Some(CONTROL_PORT as i64), published_port: Some(p as i64), publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = &self.engine;
        e.rt.block_on(e.docker.create_service(spec, None))?;
        self.services.lock().unwrap().push((key.to_string(), name.clone()));
        Ok(name)
    }

    /// The run's token as a swarm secret (made on first use): its id and name.
    fn secret(&self, labels: &HashMap<String, String>) -> anyhow::Result<(String, String)> {
        use base64::Engine as _;
        let mut s = self.secret.lock().unwrap();
        let name = self.obj("token");
        if let Some(id) = s.as_ref() {
            return Ok((id.clone(), name));
        }
        let e = &self.engine;
        let spec = SecretSpec { name: Some(name.clone()), labels: Some(labels.clone()), data: Some(base64::engine::general_purpose::STANDARD.encode(&self.token)), ..Default::default() };
        let id = e.rt.block_on(e.docker.create_secret(spec))?.id;
        *s = Some(id.clone());
        Ok((id, name))
    }

    /// The running task of service `name` and the address of the swarm node it runs on.
    fn running(&self, name: &str) -> anyhow::Result<String> {
        let e = &self.engine;
        let t0 = Instant::now();
        loop {
            let f = HashMap::from([("service".to_string(), vec![name.to_string()])]);
            let tasks = e.rt.block_on(e.docker.list_tasks(Some(qp::ListTasksOptions { filters: Some(f) })))?;
            for t in &tasks {
                let st = t.status.as_ref();
                match st.and_then(|s| s.state) {
                    Some(TaskState::RUNNING) => {
                        let node = e.rt.block_on(e.docker.inspect_node(t.node_id.as_deref().unwrap_or_default()))?;
                        return Ok(node.status.and_then(|s| s.addr).unwrap_or_else(|| "127.0.0.1".into()));
                    }
                    Some(TaskState::FAILED | TaskState::REJECTED) => {
                        anyhow::bail!("service {name}: task {:?}: {}", st.and_then(|s| s.state), st.and_then(|s| s.err.clone()).unwrap_or_default())
                    }
                    _ => {}
                }
            }
            if t0.elapsed() > START_WAIT {
                let why = tasks.iter().filter_map(|t| t.status.as_ref().and_then(|s| s.message.clone().or(s.err.clone()))).collect::<Vec<_>>().join("; ");
                anyhow::bail!("service {name} has no running task after {START_WAIT:?} ({why}); a node placed by `host:` needs a swarm node labelled {HOST_LABEL}.NAME=true (docker node update --label-add {HOST_LABEL}.NAME=true NODE)");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The overlay network's subnet (the Engine allocates it as the first task joins).
    fn subnet(&self, net: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
        let e = &self.engine;
        let t0 = Instant::now();
        loop {
            let info = e.rt.block_on(e.docker.inspect_network(net, Some(qp::InspectNetworkOptionsBuilder::default().verbose(true).build())))?;
            if let Some(s) = info.ipam.and_then(|i| i.config).and_then(|c| c.into_iter().find_map(|c| c.subnet)) {
                return crate::cluster::limits::parse_subnet(&s).map_err(|x| anyhow::anyhow!("overlay subnet {s}: {x}"));
            }
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(10), "overlay network {net} has no subnet");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks an unconfigured node at `addr` where it is on the overlay (`subnet`).
    fn address_on(&self, node: &str, addr: &str, subnet: (Ipv4Addr, u8)) -> anyhow::Result<Ipv4Addr> {
        let sa = addr.to_socket_addrs()?.find(std::net::SocketAddr::is_ipv4).ok_or_else(|| anyhow::anyhow!("node {node}: no IPv4 address for {addr}"))?;
        let (mut w, mut r) = open_control(node, sa, &self.token, START_WAIT)?;
        r.get_ref().set_read_timeout(Some(Duration::from_secs(10)))?;
        writeln!(w, "{}", serde_json::json!({ "op": "addresses" }))?;
        let mut l = String::new();
        r.read_line(&mut l)?;
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_default();
        let list = v["addresses"].as_array().ok_or_else(|| anyhow::anyhow!("node {node} ({addr}) did not say where it is: {}", l.trim()))?;
        let mask = u32::MAX.checked_shl(32 - subnet.1 as u32).unwrap_or(0);
        let mine = list.iter().filter_map(|a| a.as_str()?.parse::<Ipv4Addr>().ok()).find(|ip| u32::from(*ip) & mask == u32::from(subnet.0) & mask);
        mine.ok_or_else(|| anyhow::anyhow!("node {node} has no address on the overlay {}/{} ({list:?})", subnet.0, subnet.1))
    }

    /// Saves each service's container logs into the artifacts, then removes services,
    /// containers, network and volumes of this run.
    fn teardown(&self) {
        let e = &self.engine;
        let services = std::mem::take(&mut *self.services.lock().unwrap());
        if let Some(art) = self.art.lock().unwrap().clone() {
            for (key, name) in &services {
                let file = if key.starts_with("dmadev-") { art.join(format!("{key}.log")) } else { art.join("nodes").join(format!("{key}.log")) };
                let _ = super::docker::collect::save_logs_of_service(e, name, &file);
            }
        }
        for (_, name) in &services {
            let _ = e.rt.block_on(e.docker.delete_service(name));
        }
        if let Err(err) = reap(e, Some(&self.run_id)) {
            eprintln!("lnetlab: swarm teardown: {err:#}");
        }
        // The manager removes an overlay network a moment after it said so: wait, so that
        // nothing of the run is there when we return.
        if let Some(net) = self.network.lock().unwrap().take() {
            let t0 = Instant::now();
            while e.rt.block_on(e.docker.inspect_network(&net, None::<qp::InspectNetworkOptions>)).is_ok() && t0.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for SwarmBackend {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A TCP port nothing on this machine listens on now (for a published control port).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?.local_addr()?.port())
}

impl Backend for SwarmBackend {
    fn name(&self) -> &'static str {
        "swarm"
    }

    /// Creates the overlay network and the nodes' services (waiting for their configuration),
    /// asks each node where it is, and numbers the TCP NIDs by those addresses.
    fn tcp_addressing(&self, spec: &ClusterSpec) -> anyhow::Result<Option<Box<dyn Fn(usize, &str, usize) -> Ipv4Addr>>> {
        let e = &self.engine;
        let labels = self.labels(spec);
        let netname = self.obj("net");
        e.rt.block_on(e.docker.create_network(NetworkCreateRequest { name: netname.clone(), driver: Some("overlay".into()), attachable: Some(true), labels: Some(labels.clone()), ..Default::default() }))?;
        *self.network.lock().unwrap() = Some(netname.clone());
        let mut ports = Vec::new();
        for n in &spec.nodes {
            let mut mounts: Vec<Mount> = n.nis.iter().filter(|x| spec.nets.get(*x).is_some_and(|s| s.kind == NetKind::Dma)).map(|net| self.volume(&format!("fabric-{net}"), &format!("/fabric-{net}"), &labels)).collect();
            if !n.targets.is_empty() {
                mounts.push(self.volume(&format!("{}-targets", n.name), "/targets", &labels));
            }
            let constraints = spec.host_of(n).map(|h| vec![format!("node.labels.{HOST_LABEL}.{h}==true")]).unwrap_or_default();
            let port = free_port()?;
            self.service(&n.name, &labels, "/lnetd", vec!["--await-config".into(), "--control".into(), format!("0.0.0.0:{CONTROL_PORT}")], mounts, false, constraints, Some(port))?;
            ports.push(port);
        }
        let mut f = EndpointsFile { targets: Some("/targets".into()), port: Some(988), ..Default::default() };
        let mut subnet = None;
        for (n, port) in spec.nodes.iter().zip(ports) {
            let at = format!("{}:{port}", self.running(&self.obj(&n.name))?);
            // The overlay has its subnet once a task is on it.
            let subnet = match subnet {
                Some(s) => s,
                None => *subnet.insert(self.subnet(&netname)?),
            };
            let ip = self.address_on(&n.name, &at, subnet)?;
            f.nodes.insert(n.name.clone(), at);
            f.addresses.insert(n.name.clone(), ip);
        }
        for (net, _) in spec.nets.iter().filter(|(_, s)| s.kind == NetKind::Dma) {
            f.fabrics.insert(net.clone(), format!("/fabric-{net}"));
        }
        let remote = RemoteBackend::with_endpoints(f, self.token.clone());
        let addressing = remote.tcp_addressing(spec)?;
        *self.remote.lock().unwrap() = Some(remote);
        Ok(addressing)
    }

    /// Starts each DMA net's devices (a global service), then configures and drives the nodes.
    fn up(&self, plan: &Plan, scratch: &Path, art: &Path, timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster> {
        *self.art.lock().unwrap() = Some(art.to_path_buf());
        std::fs::create_dir_all(art.join("nodes"))?;
        let labels = self.labels(&plan.spec);
        for net in &plan.dma_nets {
            let key = format!("dmadev-{net}");
            let mut args = vec!["--fabric".to_string(), "/fabric".into()];
            if !plan.hosts.is_empty() {
                // Each swarm node's device links to the others, found through the service's tasks.
                args.extend(["--host".into(), "auto".into(), "--link-listen".into(), format!("0.0.0.0:{LINK_PORT}"), "--link-dns".into(), format!("tasks.{}:{LINK_PORT}", self.obj(&key))]);
            }
            args.extend(devfaults::dmadev_args(plan, net));
            let mounts = vec![self.volume(&format!("fabric-{net}"), "/fabric", &labels)];
            let svc = self.service(&key, &labels, "/dmadev", args, mounts, true, Vec::new(), None)?;
            progress(&format!("{svc} (the {net} devices) starting"));
            self.running(&svc)?;
        }
        let remote = self.remote.lock().unwrap();
        let remote = remote.as_ref().ok_or_else(|| anyhow::anyhow!("swarm: nodes were not found (tcp_addressing first)"))?;
        remote.up(plan, scratch, art, timeout, progress)
    }

    fn can_inject(&self, kind: FaultKind, _timed: bool) -> bool {
        matches!(kind, FaultKind::LnetDrop | FaultKind::LnetDelay | FaultKind::Link | FaultKind::Partition)
    }
}
