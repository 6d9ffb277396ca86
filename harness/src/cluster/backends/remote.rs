//! The `remote` backend: nodes an orchestrator started (the pods of `lnetlab export --k8s`, say),
//! each an `lnetd --await-config --control ADDR` waiting for its configuration. The harness
//! finds them (by DNS name, or in an endpoints file), takes their TCP addresses from where they
//! are, then configures and drives each over its control endpoint with the run's token.
//! `--backend remote:dns:SUFFIX:PORT` (node `n` at `n.SUFFIX:PORT`) or `remote:file:PATH`.

use crate::cluster::backend::Backend;
use crate::cluster::control::{Cluster, NodeLine, NodeProc};
use crate::cluster::plan::Plan;
use crate::cluster::spec::{ClusterSpec, FaultKind, NetKind};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

/// How long to wait for a node's name to resolve and its endpoint to answer (pods start in any
/// order, and their DNS records appear only once they run).
const FIND_WAIT: Duration = Duration::from_secs(120);

/// Where the nodes are, from `remote:file:PATH`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsFile {
    /// Node name -> `host:port` of its control endpoint (the host is its TCP address, unless
    /// `addresses` says otherwise).
    pub nodes: BTreeMap<String, String>,
    /// Node name -> its TCP address, where the control endpoint is reached elsewhere (a port
    /// an orchestrator published).
    #[serde(default)]
    pub addresses: BTreeMap<String, Ipv4Addr>,
    /// DMA net -> the fabric directory on the nodes' hosts (default `/fabric-NET`).
    #[serde(default)]
    pub fabrics: BTreeMap<String, String>,
    /// Where the OSS nodes keep their OSTs (default `/targets`).
    #[serde(default)]
    pub targets: Option<String>,
    /// socklnd's port (default 988, from ports below 1024 as Lustre's `accept=secure`);
    /// `unprivileged` for nodes that run without root.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub unprivileged: bool,
}

enum Find {
    Dns { suffix: String, port: u16 },
    File(EndpointsFile),
}

pub struct RemoteBackend {
    find: Find,
    token: String,
}

impl RemoteBackend {
    /// Nodes found as `f` says, driven with `token`.
    pub fn with_endpoints(f: EndpointsFile, token: String) -> RemoteBackend {
        RemoteBackend { find: Find::File(f), token }
    }

    /// From what follows `remote:` in `--backend`.
    pub fn parse(how: &str) -> anyhow::Result<RemoteBackend> {
        let token = lnd::daemon::endpoint::token_from_env().map_err(|e| anyhow::anyhow!("backend remote: {e}"))?;
        let find = match how.split_once(':') {
            Some(("dns", rest)) => {
                let (suffix, port) = rest.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("backend remote:dns:SUFFIX:PORT: no port in `{rest}`"))?;
                let port = port.parse().map_err(|_| anyhow::anyhow!("backend remote:dns: `{port}` is not a port"))?;
                anyhow::ensure!(!suffix.is_empty(), "backend remote:dns:SUFFIX:PORT: empty SUFFIX");
                Find::Dns { suffix: suffix.to_string(), port }
            }
            Some(("file", path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("backend remote:file: {path}: {e}"))?;
                Find::File(serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("backend remote:file: {path}: {e}"))?)
            }
            _ => anyhow::bail!("backend `remote:{how}`: use remote:dns:SUFFIX:PORT or remote:file:PATH"),
        };
        Ok(RemoteBackend { find, token })
    }

    fn endpoint_name(&self, node: &str) -> anyhow::Result<String> {
        match &self.find {
            Find::Dns { suffix, port } => Ok(format!("{node}.{suffix}:{port}")),
            Find::File(f) => f.nodes.get(node).cloned().ok_or_else(|| anyhow::anyhow!("backend remote: the endpoints file names no node `{node}`")),
        }
    }

    /// Node `node`'s control endpoint, resolved (retried while its name does not resolve yet).
    fn resolve(&self, node: &str) -> anyhow::Result<SocketAddr> {
        let name = self.endpoint_name(node)?;
        let t0 = Instant::now();
        loop {
            match name.to_socket_addrs().map(|mut a| a.find(SocketAddr::is_ipv4)) {
                Ok(Some(a)) => return Ok(a),
                Ok(None) | Err(_) if t0.elapsed() < FIND_WAIT => std::thread::sleep(Duration::from_millis(500)),
                Ok(None) => anyhow::bail!("node {node}: {name} has no IPv4 address"),
                Err(e) => anyhow::bail!("node {node}: cannot resolve {name} within {FIND_WAIT:?}: {e}"),
            }
        }
    }

    fn fabric(&self, net: &str) -> String {
        match &self.find {
            Find::File(f) => f.fabrics.get(net).cloned().unwrap_or_else(|| format!("/fabric-{net}")),
            Find::Dns { .. } => format!("/fabric-{net}"),
        }
    }

    fn targets(&self) -> PathBuf {
        match &self.find {
            Find::File(EndpointsFile { targets: Some(t), .. }) => PathBuf::from(t),
            _ => PathBuf::from("/targets"),
        }
    }

    /// Connects to `addr`, presents the token and sends the node its configuration; its lines
    /// go to the cluster channel as node `i`'s.
    fn attach(&self, i: usize, name: &str, addr: SocketAddr, args: &[String], tx: std::sync::mpsc::Sender<(usize, NodeLine)>) -> anyhow::Result<NodeProc> {
        let (mut w, r) = open_control(name, addr, &self.token, FIND_WAIT)?;
        writeln!(w, "{}", serde_json::json!({"op": "config", "args": args}))?;
        crate::cluster::control::forward_lines(i, r, tx);
        Ok(NodeProc::remote(name, Box::new(w)))
    }
}

/// Connects to node `name`'s control endpoint at `addr` (retried for `wait`: it may not be up
/// yet) and presents `token`; returns the writer and the reader, once the node took it.
pub fn open_control(name: &str, addr: SocketAddr, token: &str, wait: Duration) -> anyhow::Result<(TcpStream, BufReader<TcpStream>)> {
    let t0 = Instant::now();
    let s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(_) if t0.elapsed() < wait => std::thread::sleep(Duration::from_millis(300)),
            Err(e) => anyhow::bail!("node {name}: control endpoint {addr}: {e}"),
        }
    };
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    writeln!(w, "{}", serde_json::json!({ "token": token }))?;
    let mut first = String::new();
    r.read_line(&mut first)?;
    anyhow::ensure!(first.contains("\"ok\""), "node {name} ({addr}) refused the run's token: {}", first.trim());
    Ok((w, r))
}

impl Backend for RemoteBackend {
    fn name(&self) -> &'static str {
        "remote"
    }

    /// A node's TCP NID is the address its endpoint resolves to (one TCP net per node: a pod
    /// has one address).
    fn tcp_addressing(&self, spec: &ClusterSpec) -> anyhow::Result<Option<Box<dyn Fn(usize, &str, usize) -> Ipv4Addr>>> {
        let tcp: Vec<&String> = spec.nets.iter().filter(|(_, n)| n.kind == NetKind::Tcp).map(|(k, _)| k).collect();
        let mut at: HashMap<(usize, usize), Ipv4Addr> = HashMap::new();
        for (k, net) in tcp.iter().enumerate() {
            for (pos, n) in spec.nodes.iter().filter(|n| n.nis.contains(net)).enumerate() {
                if n.nis.iter().filter(|x| tcp.contains(x)).count() > 1 {
                    anyhow::bail!("backend remote: node {} is on several TCP nets, but a remote node has one address", n.name);
                }
                let ip = match &self.find {
                    Find::File(f) if f.addresses.contains_key(&n.name) => f.addresses[&n.name],
                    _ => match self.resolve(&n.name)? {
                        SocketAddr::V4(a) => *a.ip(),
                        SocketAddr::V6(_) => unreachable!("IPv4 chosen"),
                    },
                };
                at.insert((k, pos), ip);
            }
        }
        Ok(Some(Box::new(move |k, _, pos| at.get(&(k, pos)).copied().unwrap_or(Ipv4Addr::UNSPECIFIED))))
    }

    fn up(&self, plan: &Plan, _scratch: &Path, _art: &Path, timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster> {
        let (tx, rx) = channel();
        let mut nodes = Vec::new();
        let mut target_dirs = HashMap::new();
        let (port, unprivileged) = match &self.find {
            Find::File(f) => (f.port.unwrap_or(988), f.unprivileged),
            Find::Dns { .. } => (988, false),
        };
        for (i, n) in plan.nodes.iter().enumerate() {
            let mut args = plan.lnetd_args(n, &|net| self.fabric(net));
            args.extend(["--port".into(), port.to_string(), "--t0".into(), plan.t0_unix_us.to_string()]);
            if unprivileged {
                args.extend(["--tcp-ports".into(), "unprivileged".into()]);
            }
            for t in &n.targets {
                target_dirs.insert((n.name.clone(), t.ost), self.targets().join(format!("{}-ost{}", n.name, t.ost)));
            }
            let addr = self.resolve(&n.name)?;
            progress(&format!("configuring {} at {addr}", n.name));
            nodes.push(self.attach(i, &n.name, addr, &args, tx.clone())?);
        }
        let mut c = Cluster::assemble(nodes, rx, Vec::new(), target_dirs);
        c.wait_ready(timeout, progress, &|name| format!("the log of node {name} (where its orchestrator keeps it)"))?;
        Ok(c)
    }

    /// Only what goes over the control channel: LNet rules (drops, delays, lossy links,
    /// partitions). Nodes and devices belong to the orchestrator.
    fn can_inject(&self, kind: FaultKind, _timed: bool) -> bool {
        matches!(kind, FaultKind::LnetDrop | FaultKind::LnetDelay | FaultKind::Link | FaultKind::Partition)
    }
}
