//! `lnetd`: runs one node — LNet, `0@lo` and a DMA NI on a fabric's `dmadev` — driven by JSON
//! commands on stdin, answering and reporting events on stdout.

use super::control::Controller;
use crate::dev::client::ShmDevice;
use crate::dmalnd::DmaLndConfig;
use crate::node::Node;
use crate::wire::{LndType, Nid, ProcessId};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;
use tracing::{error, info};

enum Input {
    Line(String),
    Eof,
    Doorbell,
    DeviceGone(String),
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let a = super::parse_args(args, &["fabric", "nid", "mem", "log", "pid", "peer-credits"], &[])?;
    super::init_logging(a.get("log").map(|s| s.as_str()))?;
    let fabric = PathBuf::from(a.get("fabric").ok_or_else(|| anyhow::anyhow!("--fabric DIR is required"))?);
    let nid_s = a.get("nid").ok_or_else(|| anyhow::anyhow!("--nid N@dma is required"))?;
    let nid: Nid = nid_s.parse().map_err(|e| anyhow::anyhow!("--nid {nid_s}: {e}"))?;
    if nid.net().lnd() != LndType::DMALND {
        anyhow::bail!("--nid {nid}: lnetd serves a DMA NI, expected N@dma");
    }
    let mem = match a.get("mem") {
        Some(s) => super::parse_size(s).map_err(anyhow::Error::msg)?,
        None => 64 << 20,
    };
    let pid = match a.get("pid") {
        Some(p) => p.parse().map_err(|_| anyhow::anyhow!("--pid `{p}` is not a number"))?,
        None => ProcessId::PID_LUSTRE,
    };
    let mut cfg = DmaLndConfig::default();
    if let Some(c) = a.get("peer-credits") {
        cfg.peer_credits = c.parse().map_err(|_| anyhow::anyhow!("--peer-credits `{c}` is not a number"))?;
    }
    let dev = ShmDevice::connect(&fabric, nid.addr(), mem as usize).map_err(|e| anyhow::anyhow!("attach {nid} to {}: {e}", fabric.display()))?;
    let waker = dev.waker()?;
    let incarnation = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    let node = Node::with_dma(dev, nid, pid, incarnation, cfg);
    let mut ctl = Controller::new(node);
    info!(%nid, "lnetd up");

    let (tx, rx) = mpsc::channel();
    let txl = tx.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if txl.send(Input::Line(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = txl.send(Input::Eof);
    });
    let bell = waker.clone_for_thread()?;
    std::thread::spawn(move || loop {
        match bell.read_doorbell(None) {
            Ok(_) => {
                if tx.send(Input::Doorbell).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Input::DeviceGone(e.to_string()));
                return;
            }
        }
    });

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "{}", serde_json::json!({"ready": true, "nid": nid, "pid": pid}))?;
    out.flush()?;
    loop {
        ctl.node.step();
        for e in ctl.drain_events() {
            writeln!(out, "{e}")?;
        }
        out.flush()?;
        if ctl.quit {
            return Ok(());
        }
        // Sleep only when no completion is pending (arming first closes the race).
        let timeout = if waker.arm() { Duration::from_secs(1) } else { Duration::ZERO };
        match rx.recv_timeout(timeout) {
            Ok(Input::Line(l)) if l.trim().is_empty() => {}
            Ok(Input::Line(l)) => {
                let r = ctl.handle_line(&l);
                writeln!(out, "{r}")?;
            }
            Ok(Input::Doorbell) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(Input::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                info!("stdin closed; exiting");
                return Ok(());
            }
            Ok(Input::DeviceGone(e)) => {
                error!("DMA device lost: {e}");
                anyhow::bail!("DMA device lost: {e}");
            }
        }
    }
}
