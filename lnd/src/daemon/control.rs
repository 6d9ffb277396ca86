//! `lnetd`'s control protocol: one JSON command per line in, one JSON reply per line out, events
//! as `{"event":{…}}` lines. Owns the node's buffer arena so commands name sizes, not addresses.

use crate::lnet::{opt, Event, Insert, MdHandle, MdSpec, MeHandle};
use crate::mem::{iov_read, iov_write, Seg};
use crate::node::Node;
use crate::wire::ProcessId;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// One buffer segment to allocate: `len` bytes starting `pad` bytes into a fresh allocation
/// (so tests can ask for unaligned buffers).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegReq {
    pub len: u32,
    #[serde(default)]
    pub pad: u32,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum MdOpt {
    Put,
    Get,
    ManageRemote,
    Truncate,
    AckDisable,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Cmd {
    /// Match entry + MD on a portal (a target buffer).
    Post {
        portal: u32,
        match_bits: u64,
        #[serde(default)]
        ignore_bits: u64,
        #[serde(default)]
        match_id: Option<ProcessId>,
        segs: Vec<SegReq>,
        #[serde(default)]
        options: Vec<MdOpt>,
        #[serde(default)]
        threshold: Option<u32>,
        #[serde(default)]
        unlink: bool,
        #[serde(default)]
        data_hex: Option<String>,
        #[serde(default)]
        user_ptr: u64,
        #[serde(default)]
        head: bool,
    },
    /// A free-floating MD (PUT source or GET sink).
    Bind {
        segs: Vec<SegReq>,
        #[serde(default)]
        data_hex: Option<String>,
        #[serde(default)]
        threshold: Option<u32>,
        #[serde(default)]
        unlink: bool,
        #[serde(default)]
        user_ptr: u64,
    },
    Put {
        md: u64,
        target: ProcessId,
        portal: u32,
        match_bits: u64,
        #[serde(default)]
        offset: u32,
        #[serde(default)]
        ack: bool,
        #[serde(default)]
        hdr_data: u64,
    },
    Get {
        md: u64,
        target: ProcessId,
        portal: u32,
        match_bits: u64,
        #[serde(default)]
        offset: u32,
    },
    /// The MD's bytes, hex.
    Read { md: u64 },
    Unlink { md: u64 },
    /// Gives the MD's buffer back (unlinking the MD first if it is still live).
    Free { md: u64 },
    Stats,
    /// What this node's client jobs and LNet are waiting for (asked when a run stalls).
    Waiting,
    /// Start the OSS role with these targets (directories are the OSTs' disks), committing
    /// every `commit_interval_ms` (default 5 s).
    OssStart {
        targets: Vec<TargetReq>,
        #[serde(default)]
        commit_interval_ms: Option<u64>,
    },
    /// Commit every OST now (a clean restart does this before the node is killed).
    Commit,
    /// Power loss of the OSS role: what its OSTs had not committed is dropped, and the role
    /// stops (the node is about to be killed or restarted; it answers no OST request now).
    Crash,
    /// Run a client I/O job; progress and the final report come as output lines.
    Io { job: crate::ost::osc::IoJob },
    /// Add an LNet fault rule (`lctl net_drop_add` / `net_delay_add`).
    Fault { rule: crate::lnet::fault::FaultRule },
    /// Remove the fault rules with this tag, or every rule (`lctl net_drop_del`, `-a`).
    FaultDel {
        #[serde(default)]
        tag: Option<String>,
        #[serde(default)]
        all: bool,
    },
    /// The active fault rules and their counts (`lctl net_drop_list`).
    FaultList,
    /// LNet ping of `nid` (`lnetctl ping`): answered at once with a token, then by a
    /// `{"ping_done":{…}}` line carrying the peer's NIs or why not.
    Ping {
        nid: crate::wire::Nid,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// `lnetctl discover`: an LNet ping of `nid` whose answer (a `ping_done` line with
    /// `discovered`) also makes it a Multi-Rail peer if its ping info says it is one.
    Discover {
        nid: crate::wire::Nid,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// The NIs, their credits and LND counters (`lnetctl net show`).
    NetShow,
    /// The peers and their credits (`lnetctl peer show`).
    PeerShow,
    /// Sets the node's log filter (`lnetctl set`-like; `info`, `debug`, `lnd::sock=trace`).
    LogLevel { level: String },
    /// Run an lst-style test from this node; live stats and the final report come as lines.
    Selftest { job: crate::selftest::StJob },
    Quit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetReq {
    pub index: u32,
    pub dir: std::path::PathBuf,
    pub size: u64,
}

struct Buf {
    allocs: Vec<(u64, u64)>,
    iov: Vec<Seg>,
}

pub struct Controller {
    pub node: Node,
    oss: Option<crate::ost::oss::Oss>,
    oscs: Vec<crate::ost::osc::Osc>,
    sts: Vec<crate::selftest::StEngine>,
    pings: super::inspect::Pings,
    trace: Option<std::io::BufWriter<std::fs::File>>,
    last_progress: std::time::Instant,
    /// Last LND counters written to the trace (to record which protocol paths moved).
    last_paths: Vec<(&'static str, Vec<(&'static str, u64)>)>,
    /// The clock roles use for timeouts (virtual under simulation).
    pub clock: crate::Clock,
    /// How often running I/O jobs report progress (`None`: never, as in simulation where
    /// wall-clock output would break determinism).
    pub progress_every: Option<std::time::Duration>,
    bufs: HashMap<u64, Buf>,
    mes: HashMap<u64, MeHandle>,
    pub quit: bool,
    /// Origin of the LNet core's millisecond clock (set on first use, from `clock`).
    epoch: Option<std::time::Instant>,
    /// When the run started, on `clock`: trace lines carry `t_us`, microseconds since then
    /// (since the first trace line when unset).
    trace_origin: Option<std::time::Instant>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Controller {
    pub fn new(mut node: Node) -> Controller {
        // Every node serves lnet-selftest bulk tests from (and into) its sink buffer.
        if let Err(e) = crate::selftest::install_sink(&mut node) {
            tracing::warn!("no selftest sink on this node: {e}");
        }
        Controller { node, oss: None, oscs: Vec::new(), sts: Vec::new(), pings: Default::default(), trace: None, last_progress: std::time::Instant::now(), progress_every: Some(std::time::Duration::from_millis(300)), last_paths: Vec::new(), clock: crate::wall_clock(), bufs: HashMap::new(), mes: HashMap::new(), quit: false, epoch: None, trace_origin: None }
    }

    /// Writes one JSON object per event and RPC to `path` (the node's trace).
    pub fn set_trace(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        self.trace = Some(std::io::BufWriter::new(std::fs::File::create(path)?));
        Ok(())
    }

    /// Like [`Controller::set_trace`], adding to what `path` holds (a node started again).
    pub fn append_trace(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        self.trace = Some(std::io::BufWriter::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?));
        Ok(())
    }

    /// Writes out what the trace holds in its buffer.
    pub fn flush_trace(&mut self) {
        if let Some(t) = &mut self.trace {
            use std::io::Write;
            let _ = t.flush();
        }
    }

    /// How long until a message held by a delay rule is due (for a driver that sleeps).
    pub fn next_due(&self) -> Option<std::time::Duration> {
        let due = self.node.next_due_ms()?;
        let now = self.epoch.map(|e| (self.clock)().saturating_duration_since(e).as_millis() as u64).unwrap_or(0);
        Some(std::time::Duration::from_millis(due.saturating_sub(now)))
    }

    /// Sets when the run started, on this controller's clock (trace times count from it).
    pub fn set_trace_origin(&mut self, t: std::time::Instant) {
        self.trace_origin = Some(t);
    }

    fn trace(&mut self, v: &Value) {
        if let Some(t) = &mut self.trace {
            use std::io::Write;
            let now = (self.clock)();
            let t_us = now.saturating_duration_since(*self.trace_origin.get_or_insert(now)).as_micros() as u64;
            let line = match v {
                Value::Object(m) => {
                    let mut m = m.clone();
                    m.insert("t_us".into(), t_us.into());
                    Value::Object(m).to_string()
                }
                v => v.to_string(),
            };
            // One write per whole line: the buffer then only ever hands the file whole lines,
            // so a node killed mid-run leaves a trace that ends at a line's end.
            let _ = t.write_all(format!("{line}\n").as_bytes());
        }
    }

    /// Handles one command line; the reply echoes its `id`.
    pub fn handle_line(&mut self, line: &str) -> Value {
        let mut v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return json!({"ok": false, "error": format!("bad JSON: {e}")}),
        };
        let id = v.as_object_mut().and_then(|o| o.remove("id")).unwrap_or(Value::Null);
        let res = serde_json::from_value::<Cmd>(v).map_err(|e| format!("bad command: {e}")).and_then(|c| self.handle(c));
        let mut out = match res {
            Ok(Value::Object(m)) => Value::Object(m),
            Ok(other) => json!({ "value": other }),
            Err(e) => json!({"ok": false, "error": e}),
        };
        let o = out.as_object_mut().unwrap();
        o.entry("ok").or_insert(Value::Bool(true));
        o.insert("id".into(), id);
        out
    }

    fn alloc(&mut self, segs: &[SegReq], data: Option<&str>) -> Result<Buf, String> {
        let mut b = Buf { allocs: Vec::new(), iov: Vec::new() };
        for s in segs {
            let total = s.len as u64 + s.pad as u64;
            let Some(off) = self.node.arena.alloc(total) else {
                self.free(&b);
                return Err(format!("out of node memory for {total} bytes ({} free)", self.node.arena.free_bytes()));
            };
            b.allocs.push((off, total));
            b.iov.push(Seg { off: off + s.pad as u64, len: s.len });
            self.node.mem.fill(off, total, 0).map_err(err)?;
        }
        if let Some(h) = data {
            let d = crate::daemon::unhex(h)?;
            let room: u64 = b.iov.iter().map(|s| s.len as u64).sum();
            if d.len() as u64 > room {
                self.free(&b);
                return Err(format!("data_hex holds {} bytes, buffer {room}", d.len()));
            }
            iov_write(&self.node.mem, &b.iov, &d).map_err(err)?;
        }
        Ok(b)
    }

    fn free(&mut self, b: &Buf) {
        for &(off, len) in &b.allocs {
            self.node.arena.free(off, len);
        }
    }

    fn handle(&mut self, c: Cmd) -> Result<Value, String> {
        match c {
            Cmd::Post { portal, match_bits, ignore_bits, match_id, segs, options, threshold, unlink, data_hex, user_ptr, head } => {
                let buf = self.alloc(&segs, data_hex.as_deref())?;
                let options = options.iter().fold(0, |a, o| {
                    a | match o {
                        MdOpt::Put => opt::OP_PUT,
                        MdOpt::Get => opt::OP_GET,
                        MdOpt::ManageRemote => opt::MANAGE_REMOTE,
                        MdOpt::Truncate => opt::TRUNCATE,
                        MdOpt::AckDisable => opt::ACK_DISABLE,
                    }
                });
                let pos = if head { Insert::Head } else { Insert::Tail };
                let lnet = &mut self.node.lnet;
                let me = lnet.me_attach(portal, match_id.unwrap_or(ProcessId::ANY), match_bits, ignore_bits, unlink, pos).map_err(err)?;
                let spec = MdSpec { iov: buf.iov.clone(), options, threshold, max_size: 0, user_ptr };
                let md = lnet.md_attach(me, spec).map_err(err)?;
                self.bufs.insert(md.0, buf);
                self.mes.insert(md.0, me);
                Ok(json!({"md": md.0}))
            }
            Cmd::Bind { segs, data_hex, threshold, unlink, user_ptr } => {
                let buf = self.alloc(&segs, data_hex.as_deref())?;
                let spec = MdSpec { iov: buf.iov.clone(), options: 0, threshold, max_size: 0, user_ptr };
                let md = self.node.lnet.md_bind(spec, unlink);
                self.bufs.insert(md.0, buf);
                Ok(json!({"md": md.0}))
            }
            Cmd::Put { md, target, portal, match_bits, offset, ack, hdr_data } => {
                let m = self.node.lnet.put(MdHandle(md), ack, target, portal, match_bits, offset, hdr_data).map_err(err)?;
                Ok(json!({"msg": m.0}))
            }
            Cmd::Get { md, target, portal, match_bits, offset } => {
                let m = self.node.lnet.get(MdHandle(md), target, portal, match_bits, offset).map_err(err)?;
                Ok(json!({"msg": m.0}))
            }
            Cmd::Read { md } => {
                let b = self.bufs.get(&md).ok_or_else(|| format!("no buffer for md {md}"))?;
                let mut out = Vec::new();
                iov_read(&self.node.mem, &b.iov, &mut out).map_err(err)?;
                Ok(json!({"data_hex": crate::daemon::hex(&out), "len": out.len()}))
            }
            Cmd::Unlink { md } => {
                self.node.lnet.md_unlink(MdHandle(md)).map_err(err)?;
                Ok(json!({}))
            }
            Cmd::Free { md } => {
                let b = self.bufs.remove(&md).ok_or_else(|| format!("no buffer for md {md}"))?;
                if self.node.lnet.md_len(MdHandle(md)).is_some() {
                    if let Err(e) = self.node.lnet.md_unlink(MdHandle(md)) {
                        self.bufs.insert(md, b);
                        return Err(err(e));
                    }
                }
                self.free(&b);
                Ok(json!({}))
            }
            Cmd::Stats => Ok(json!({
                "lnet": self.node.lnet.counters,
                "nis": self.node.lnet.ni_info(),
                "peer_nis": self.node.lnet.peer_info(),
                "fault_hits": self.node.lnet.fault_hits(),
                "lnds": self.node.lnds.iter().map(|l| json!({"name": l.name(), "stats": l.stats(), "busy": l.busy()})).collect::<Vec<_>>(),
                "mds": self.node.lnet.md_count(),
                "idle": self.node.idle(),
                "free_bytes": self.node.arena.free_bytes(),
                "oss": self.oss.as_ref().map(|o| { let mut v = o.state(); v["replays"] = o.replays.into(); v["evictions"] = o.evictions.into(); v["early_replies"] = o.early_replies.into(); v["io_queue_max"] = o.queued_max.into(); v }),
            })),
            Cmd::Waiting => Ok(json!({
                "jobs": self.oscs.iter().map(|o| o.waiting()).collect::<Vec<_>>(),
                "lnet_in_flight": self.node.lnet.msgs_in_flight(),
                "lnet_held": self.node.lnet.held(),
                "lnds_busy": self.node.lnds.iter().map(|l| json!({"name": l.name(), "busy": l.busy()})).collect::<Vec<_>>(),
            })),
            Cmd::OssStart { targets, commit_interval_ms } => {
                if self.oss.is_some() {
                    return Err("the OSS role is already running".into());
                }
                let mut osts = Vec::new();
                for t in targets {
                    osts.push(crate::ost::store::Ost::open(t.index, t.dir.clone(), t.size).map_err(|e| format!("OST{:04x} at {}: {e}", t.index, t.dir.display()))?);
                }
                let n = osts.len();
                let mut oss = crate::ost::oss::Oss::start(&mut self.node, osts)?;
                oss.clock = self.clock.clone();
                if let Some(ms) = commit_interval_ms {
                    oss.commit_interval = std::time::Duration::from_millis(ms);
                }
                self.oss = Some(oss);
                Ok(json!({"osts": n}))
            }
            Cmd::Commit => {
                let oss = self.oss.as_mut().ok_or("no OSS role here")?;
                oss.commit();
                Ok(json!({}))
            }
            Cmd::Crash => {
                let oss = self.oss.take().ok_or("no OSS role here")?;
                oss.crash().map_err(|e| format!("reopening the OSTs after the crash: {e}"))?;
                Ok(json!({}))
            }
            Cmd::Io { job } => {
                let mut o = crate::ost::osc::Osc::new(job)?;
                o.clock = self.clock.clone();
                o.pump(&mut self.node);
                self.oscs.push(o);
                Ok(json!({}))
            }
            Cmd::Fault { rule } => {
                self.node.lnet.add_fault_rule(rule)?;
                Ok(json!({}))
            }
            Cmd::FaultDel { tag, all } => match (tag, all) {
                (None, true) => Ok(json!({"removed": self.node.lnet.remove_all_fault_rules()})),
                (Some(t), false) => Ok(json!({"removed": self.node.lnet.remove_fault_rules(&t)})),
                _ => Err("fault_del: give a tag or all (one of them)".into()),
            },
            Cmd::FaultList => Ok(super::inspect::fault_list(&self.node)),
            Cmd::Ping { nid, timeout_ms } => {
                let now = (self.clock)();
                let token = self.pings.start(&mut self.node, nid, std::time::Duration::from_millis(timeout_ms.unwrap_or(3000)), now)?;
                Ok(json!({"token": token}))
            }
            Cmd::Discover { nid, timeout_ms } => {
                let now = (self.clock)();
                let token = self.pings.discover(&mut self.node, nid, std::time::Duration::from_millis(timeout_ms.unwrap_or(3000)), now)?;
                Ok(json!({"token": token}))
            }
            Cmd::NetShow => Ok(super::inspect::net_show(&self.node)),
            Cmd::PeerShow => Ok(super::inspect::peer_show(&self.node)),
            Cmd::LogLevel { level } => {
                super::set_log_level(&level)?;
                tracing::info!(%level, "log level set");
                Ok(json!({"level": level}))
            }
            Cmd::Selftest { job } => {
                let mut st = crate::selftest::StEngine::new(&mut self.node, job)?;
                st.clock = self.clock.clone();
                st.pump(&mut self.node);
                self.sts.push(st);
                Ok(json!({}))
            }
            Cmd::Quit => {
                self.quit = true;
                Ok(json!({}))
            }
        }
    }

    /// Pending events as output lines (role events go to their role, and to the trace), then
    /// I/O progress and finished jobs.
    pub fn drain_events(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        let now = (self.clock)();
        let epoch = *self.epoch.get_or_insert(now);
        self.node.lnet.set_time_ms(now.saturating_duration_since(epoch).as_millis() as u64);
        while let Some(f) = self.node.lnet.poll_fault_record() {
            self.trace(&json!(f));
        }
        while let Some(ev) = self.node.poll_event() {
            let rec = json!({"ev": ev.kind, "peer": ev.peer, "portal": ev.portal, "mlength": ev.mlength, "status": ev.status});
            self.trace(&rec);
            if let Some(oss) = self.oss.as_mut() {
                if oss.on_event(&mut self.node, &ev) {
                    continue;
                }
            }
            if self.oscs.iter_mut().any(|o| o.on_event(&mut self.node, &ev)) {
                continue;
            }
            if self.sts.iter_mut().any(|s| s.on_event(&mut self.node, &ev)) {
                continue;
            }
            if self.pings.on_event(&mut self.node, &ev, now) {
                continue;
            }
            self.on_event(&ev);
            out.push(json!({ "event": ev }));
        }
        out.extend(self.pings.poll(&mut self.node, now));
        if self.trace.is_some() {
            self.trace_paths();
        }
        let rpcs: Vec<Value> = self.oss.iter_mut().flat_map(|o| o.trace.drain(..)).chain(self.oscs.iter_mut().flat_map(|o| o.trace.drain(..))).collect();
        for r in &rpcs {
            self.trace(r);
        }
        let progress = self.progress_every.is_some_and(|p| self.last_progress.elapsed() > p);
        for o in self.oscs.iter_mut() {
            o.pump(&mut self.node); // resends RPCs whose reply is overdue
        }
        if let Some(oss) = self.oss.as_mut() {
            oss.tick(&mut self.node); // bulk deadlines, the ping evictor
        }
        let mut i = 0;
        while i < self.oscs.len() {
            if self.oscs[i].done() {
                let o = self.oscs.remove(i);
                out.push(json!({"io_done": o.report}));
            } else {
                if progress {
                    out.push(json!({"io_progress": self.oscs[i].report}));
                }
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.sts.len() {
            self.sts[i].pump(&mut self.node);
            if self.sts[i].done() {
                let s = self.sts.remove(i);
                out.push(json!({"st_done": s.report}));
            } else {
                if progress {
                    out.push(json!({"st_progress": self.sts[i].snapshot()}));
                }
                i += 1;
            }
        }
        if progress {
            self.last_progress = std::time::Instant::now();
            if let Some(t) = &mut self.trace {
                use std::io::Write;
                let _ = t.flush();
            }
        }
        out
    }

    /// Records which LND paths were taken since the last call (immediate, pulled PUT, staged GET,
    /// NAKs, credit stalls, routed messages...), as counter deltas.
    fn trace_paths(&mut self) {
        let c = &self.node.lnet.counters;
        let lnet = vec![("lnet_credit_stalls", c.credit_stalls), ("resends", c.resends), ("route_count", c.route_count), ("recovery_pings", c.recovery_pings), ("response_timeouts", c.response_timeouts)];
        let now: Vec<(&'static str, Vec<(&'static str, u64)>)> = self.node.lnds.iter().map(|l| (l.name(), l.path_counters())).chain(std::iter::once(("lnet", lnet))).collect();
        let mut recs = Vec::new();
        for (i, (lnd, counters)) in now.iter().enumerate() {
            for (j, &(k, x)) in counters.iter().enumerate() {
                let before = self.last_paths.get(i).and_then(|p| p.1.get(j)).map_or(0, |p| p.1);
                if x > before {
                    recs.push(json!({"lnd": lnd, "path": k, "n": x - before}));
                }
            }
        }
        self.last_paths = now;
        for r in recs {
            self.trace(&r);
        }
    }

    fn on_event(&mut self, ev: &Event) {
        if ev.unlinked {
            // The buffer stays readable until `free`.
            self.mes.remove(&ev.md.0);
        }
    }
}
