//! `lnetlab ctl NODE …` and `lnetlab workload …`: live control of a running cluster from
//! another invocation, through the control socket its lnetlab serves (`cluster/serve.rs`).
//! `client.rs` finds and reaches the cluster; `show.rs` prints replies as lnetctl does.

pub mod client;
pub mod show;

use crate::cluster::report::{table, Report};
use crate::cluster::serve::Request;
use clap::{Args, Subcommand};
use lnd::wire::Nid;
use serde_json::{json, Value};
use std::time::Duration;

/// How long a node has to answer a command that is not a ping.
const NODE_ANSWER_MS: u64 = 5000;

#[derive(Args, Debug)]
pub struct CtlArgs {
    pub node: String,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

#[derive(Args, Debug)]
pub struct WorkloadArgs {
    /// A workload of the running cluster's spec, or a YAML file holding only `workloads:`.
    pub what: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Stop waiting for the report after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct FaultFileArgs {
    /// A YAML file holding only `faults:` (as in a spec); windows count from now.
    pub file: std::path::PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Stop waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

#[derive(Subcommand, Debug)]
pub enum CtlCmd {
    /// LNet ping of NID from NODE: the peer's NIs and their status (like `lnetctl ping`).
    Ping {
        nid: String,
        /// Give up after this many milliseconds without a reply.
        #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=60000))]
        timeout: u64,
    },
    /// Discover NID from NODE (like `lnetctl discover`): ping it and, if it says it is
    /// Multi-Rail, take its NIDs on NODE's nets as one peer's.
    Discover {
        nid: String,
        /// Give up after this many milliseconds without a reply.
        #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=60000))]
        timeout: u64,
    },
    /// NODE's NIs (`net show [-v]`, like `lnetctl net show`).
    Net {
        #[command(subcommand)]
        show: Show,
    },
    /// The peers NODE has sent to, with their credits (`peer show [-v]`).
    Peer {
        #[command(subcommand)]
        show: Show,
    },
    /// NODE's LNet counters (`stats show`, like `lnetctl stats show`).
    Stats {
        #[command(subcommand)]
        show: StatsShow,
    },
    /// LNet drop and delay rules on NODE's incoming messages (`fault add|del|list`, like
    /// `lctl net_drop_add`, `net_delay_add`, `net_drop_del`, `net_drop_list`).
    Fault {
        #[command(subcommand)]
        op: FaultOp,
    },
    /// Sets NODE's log filter: `info`, `debug`, `trace`, or directives like `lnd::sock=trace,info`.
    LogLevel { level: String },
}

#[derive(Subcommand, Debug)]
pub enum Show {
    Show {
        /// With credits, queues and LND counters.
        #[arg(short, long)]
        verbose: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum StatsShow {
    Show,
}

#[derive(Subcommand, Debug)]
pub enum FaultOp {
    /// Adds a rule: drop (or, with --delay-ms, hold) one in --rate or every --interval-th
    /// matching message.
    Add(FaultArgs),
    /// Removes the rules tagged TAG, or every rule (--all).
    Del {
        tag: Option<String>,
        #[arg(long, conflicts_with = "tag")]
        all: bool,
    },
    /// The rules, with the messages each matched and hit.
    List,
}

#[derive(Args, Debug)]
pub struct FaultArgs {
    /// Only messages from this NID.
    #[arg(long)]
    src: Option<String>,
    /// Only messages to this NID.
    #[arg(long)]
    dst: Option<String>,
    /// Only PUTs and GETs to this portal.
    #[arg(long)]
    portal: Option<u32>,
    /// Only this message type: PUT, GET, ACK or REPLY.
    #[arg(long = "type")]
    msg_type: Option<String>,
    /// Hit one in RATE matching messages, at random (seeded by --seed).
    #[arg(long)]
    rate: Option<u32>,
    /// Hit every INTERVAL-th matching message.
    #[arg(long)]
    interval: Option<u32>,
    /// Hold hit messages this long instead of dropping them.
    #[arg(long)]
    delay_ms: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A name to remove the rule by (default: ctl-N, the next free N).
    #[arg(long)]
    tag: Option<String>,
}

fn nid(what: &str, s: &str) -> anyhow::Result<Nid> {
    s.parse().map_err(|e| anyhow::anyhow!("{what} `{s}`: {e}"))
}

/// Sends `cmd` to `node` of the cluster `st`; the node's reply and (with `then`) its follow-up line.
fn node_cmd(st: &Value, node: &str, cmd: Value, then: Option<&str>, timeout_ms: u64) -> anyhow::Result<Value> {
    let req = Request::Node { node: node.to_string(), cmd, then: then.map(String::from), timeout_ms };
    client::request(st, &req, Duration::from_millis(timeout_ms) + Duration::from_secs(5)).map_err(|e| match e {
        // `node N: OP failed: WHY` from the node channel: the node's own words suffice.
        client::CtlError::Refused(m) if m.starts_with(&format!("node {node}: ")) && m.contains(" failed: ") => anyhow::anyhow!("{node}: {}", m.split_once(" failed: ").map_or(m.as_str(), |x| x.1)),
        e => e.into(),
    })
}

/// Runs one `lnetlab ctl NODE …` command and prints its answer.
pub fn run(node: &str, cmd: CtlCmd) -> anyhow::Result<()> {
    let st = client::find(Some(node))?;
    let ask = |cmd: Value| node_cmd(&st, node, cmd, None, NODE_ANSWER_MS).map(|mut v| v["reply"].take());
    let op = if matches!(cmd, CtlCmd::Discover { .. }) { "discover" } else { "ping" };
    let out = match cmd {
        CtlCmd::Ping { nid: n, timeout } | CtlCmd::Discover { nid: n, timeout } => {
            let target = nid("NID", &n)?;
            let v = node_cmd(&st, node, json!({"op": op, "nid": target, "timeout_ms": timeout}), Some("ping_done"), timeout)?;
            if let Some(e) = v["then"]["error"].as_str() {
                anyhow::bail!("{node}: {e}");
            }
            show::ping(&v["then"])
        }
        CtlCmd::Net { show: Show::Show { verbose } } => show::net(&ask(json!({"op": "net_show"}))?, verbose),
        CtlCmd::Peer { show: Show::Show { verbose } } => show::peer(&ask(json!({"op": "peer_show"}))?, verbose),
        CtlCmd::Stats { show: StatsShow::Show } => show::stats(&ask(json!({"op": "stats"}))?),
        CtlCmd::Fault { op: FaultOp::List } => show::faults(&ask(json!({"op": "fault_list"}))?),
        CtlCmd::Fault { op: FaultOp::Del { tag, all } } => {
            if tag.is_none() && !all {
                anyhow::bail!("fault del: give a TAG or --all");
            }
            let r = ask(json!({"op": "fault_del", "tag": tag, "all": all}))?;
            let n = r["removed"].as_u64().unwrap_or(0);
            if n == 0 && !all {
                anyhow::bail!("{node}: no fault rule tagged `{}`", tag.unwrap_or_default());
            }
            println!("{node}: removed {n} fault rule(s)");
            return Ok(());
        }
        CtlCmd::Fault { op: FaultOp::Add(a) } => {
            let tag = match a.tag {
                Some(t) => t,
                None => {
                    let have = ask(json!({"op": "fault_list"}))?;
                    let used = have["rules"].as_array().into_iter().flatten().filter_map(|r| r["rule"]["tag"].as_str()?.strip_prefix("ctl-")?.parse::<u64>().ok()).max();
                    format!("ctl-{}", used.map_or(1, |u| u + 1))
                }
            };
            let rule = json!({
                "src": a.src.as_deref().map(|s| nid("--src", s)).transpose()?, "dst": a.dst.as_deref().map(|s| nid("--dst", s)).transpose()?,
                "portal": a.portal, "type": a.msg_type.map(|t| t.to_uppercase()), "rate": a.rate, "interval": a.interval,
                "seed": a.seed, "delay_ms": a.delay_ms, "tag": tag,
            });
            ask(json!({"op": "fault", "rule": rule})).map_err(|e| anyhow::anyhow!("fault add refused: {e}"))?;
            println!("{node}: added {} rule `{tag}`", if a.delay_ms.is_some() { "delay" } else { "drop" });
            return Ok(());
        }
        CtlCmd::LogLevel { level } => {
            ask(json!({"op": "log_level", "level": level}))?;
            println!("{node}: log level {level}");
            return Ok(());
        }
    };
    print!("{}", show::yaml(&out));
    Ok(())
}

/// `lnetlab workload NAME|FILE`: runs the running cluster's workload NAME, or the workloads of
/// FILE (a YAML file with only `workloads:`), and prints the report; false if it failed.
pub fn workload(a: &WorkloadArgs) -> anyhow::Result<bool> {
    let (what, within) = (a.what.as_str(), Duration::from_secs(a.timeout));
    let st = client::find(None)?;
    let p = std::path::Path::new(what);
    let req = if p.is_file() {
        let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        Request::Workload { name: None, file: Some(what.to_string()), text: Some(text) }
    } else if what.ends_with(".yaml") || what.ends_with(".yml") || what.contains('/') {
        anyhow::bail!("{what}: no such file");
    } else {
        Request::Workload { name: Some(what.to_string()), file: None, text: None }
    };
    let v = client::request(&st, &req, within)?;
    let r: Report = serde_json::from_value(v["report"].clone()).map_err(|e| anyhow::anyhow!("the cluster's report does not parse: {e}"))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", table(&r));
    }
    Ok(r.ok)
}

/// `lnetlab fault FILE`: applies FILE's fault timeline to the running cluster and prints what
/// happened when (rules added, windows opened and closed) and the fault counts by kind.
pub fn fault_file(a: &FaultFileArgs) -> anyhow::Result<()> {
    let f = a.file.display();
    let text = std::fs::read_to_string(&a.file).map_err(|e| anyhow::anyhow!("{f}: {e}"))?;
    let st = client::find(None)?;
    let v = client::request(&st, &Request::Faults { file: f.to_string(), text }, Duration::from_secs(a.timeout))?;
    let r = &v["faults"];
    if a.json {
        println!("{r}");
        return Ok(());
    }
    for rec in r["records"].as_array().into_iter().flatten() {
        let t = rec["t_us"].as_u64().map_or_else(|| "?".into(), |t| format!("{:.3}s", t as f64 / 1e6));
        let on = rec["node"].as_str().or(rec["net"].as_str()).or(rec["what"].as_str()).unwrap_or("");
        println!("{t:>9}  {:<20} {} {on}", rec["fault"].as_str().unwrap_or("?"), rec["action"].as_str().unwrap_or("?"));
    }
    for s in r["skipped"].as_array().into_iter().flatten() {
        println!("skipped: {}", s.as_str().unwrap_or("?"));
    }
    let counts: Vec<String> = r["counts"].as_object().into_iter().flatten().map(|(k, n)| format!("{k} {n}")).collect();
    println!("faults so far (whole cluster): {}", if counts.is_empty() { "none".into() } else { counts.join(", ") });
    println!("untimed rules stay installed: `lnetlab ctl NODE fault list`, `fault del TAG` (tags live<N>-…)");
    Ok(())
}
