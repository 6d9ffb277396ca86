//! Short messages written by the sending node itself into its peer's mailbox, as a NIC would:
//! the device hands out a peer's queue region and bell once (and only while it allows direct
//! writes — no faults, capture or cuts to apply), and every write stays bounds-checked.

use super::bell::Bell;
use super::device::{DevError, DevStatus};
use super::mailbox::Mailbox;
use super::proto::{self, recv_frame, send_frame};
use super::ring::{self, Rings};
use crate::mem::Mem;
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a writer waits for a mailbox another writer holds (a descheduled holder; a dead
/// one's lock is broken by the device).
const PATIENCE: Duration = Duration::from_secs(1);
/// How long to send through the device before asking again about a peer that was absent, or
/// when the device refused direct writes.
const ABSENT_RETRY: Duration = Duration::from_millis(50);
const NO_DIRECT_RETRY: Duration = Duration::from_secs(1);

struct Mapped {
    q: Mem,
    bell: Bell,
    gen: u32,
    mb_n: u32,
}

enum Entry {
    Mapped(Mapped),
    /// Ask again after this instant.
    Absent(Instant),
}

/// What a node knows of its peers' mailboxes.
pub(crate) struct Peers {
    dir: PathBuf,
    map: HashMap<u32, Entry>,
    /// Direct sends made and fallen back, for statistics.
    pub sent: u64,
    pub routed: u64,
}

/// What the device answered about a peer.
enum Answer {
    Mapped(Mapped),
    NoPeer,
    NoDirect,
}

fn ask(dir: &Path, addr: u32) -> Result<Answer, DevError> {
    let sock = UnixStream::connect(dir.join(proto::SOCK_NAME))?;
    send_frame(&sock, proto::F_PEER, &addr.to_le_bytes(), None)?;
    let r = recv_frame(&sock)?.ok_or_else(|| DevError::Protocol("device closed before answering a peer query".into()))?;
    if r.ty != proto::F_PEER_OK {
        return Err(DevError::Protocol(format!("expected a peer answer, got frame type {}", r.ty)));
    }
    match proto::u32_at(&r.body, 0) {
        Some(proto::ST_OK) => {}
        Some(proto::ST_NO_PEER) => return Ok(Answer::NoPeer),
        Some(proto::ST_NO_DIRECT) => return Ok(Answer::NoDirect),
        _ => return Err(DevError::Refused(String::from_utf8_lossy(r.body.get(4..).unwrap_or_default()).into_owned())),
    }
    let (Some(gen), Some(qlen), Some(qfd)) = (proto::u32_at(&r.body, 4), proto::u64_at(&r.body, 8), r.fd) else {
        return Err(DevError::Protocol("peer answer lacks generation, length or region".into()));
    };
    if !(ring::QUEUE_BYTES as u64..=ring::queue_bytes(ring::MB_MAX) as u64).contains(&qlen) {
        return Err(DevError::Protocol(format!("peer queue region of {qlen} bytes")));
    }
    let q = Mem::map_sealed_fd(qfd, qlen as usize)?;
    let mb_n = Rings::new(&q, false).map_err(DevError::Protocol)?.mailbox_len();
    if ring::queue_bytes(mb_n) != qlen as usize {
        return Err(DevError::Protocol(format!("peer queue region of {qlen} bytes for {mb_n} slots")));
    }
    let bell = match recv_frame(&sock)? {
        Some(f) if f.ty == proto::F_BELL && f.fd.is_some() => Bell::from_fd(f.fd.unwrap())?,
        _ => return Err(DevError::Protocol("peer answer without its bell".into())),
    };
    Ok(Answer::Mapped(Mapped { q, bell, gen, mb_n }))
}

impl Peers {
    pub fn new(dir: &Path) -> Peers {
        Peers { dir: dir.to_path_buf(), map: HashMap::new(), sent: 0, routed: 0 }
    }

    /// Writes `data` from `from` (lock id `id`) into `dst`'s mailbox. `None`: not possible
    /// now (absent peer, direct writes off, the peer attached again) — send it through the
    /// device, which gives the authoritative answer.
    pub fn send(&mut self, id: u32, from: u32, dst: u32, data: &[u8]) -> Option<DevStatus> {
        let now = Instant::now();
        let ask_now = match self.map.get(&dst) {
            Some(Entry::Absent(t)) => now >= *t,
            Some(Entry::Mapped(_)) => false,
            None => true,
        };
        if ask_now {
            let e = match ask(&self.dir, dst) {
                Ok(Answer::Mapped(m)) => Entry::Mapped(m),
                Ok(Answer::NoPeer) => Entry::Absent(now + ABSENT_RETRY),
                Ok(Answer::NoDirect) => Entry::Absent(now + NO_DIRECT_RETRY),
                Err(e) => {
                    tracing::debug!(dst, "peer query: {e}");
                    Entry::Absent(now + ABSENT_RETRY)
                }
            };
            self.map.insert(dst, e);
        }
        let res = match self.map.get(&dst) {
            Some(Entry::Mapped(m)) => {
                let r = Rings { mem: &m.q };
                if r.word(ring::DIRECT).load(Ordering::Acquire) == 0 {
                    Err(Some(now + NO_DIRECT_RETRY))
                } else {
                    match Mailbox::new(&m.q, m.mb_n).push(id, Some(m.gen), from, data, PATIENCE) {
                        Ok(()) => {
                            if r.disarm() {
                                m.bell.ring();
                            }
                            Ok(DevStatus::Ok)
                        }
                        // The peer left or attached again: ask again next time.
                        Err(DevStatus::NoSuchPeer) => Err(Some(now)),
                        Err(e) => Ok(e),
                    }
                }
            }
            _ => Err(None),
        };
        match res {
            Ok(st) => {
                self.sent += 1;
                Some(st)
            }
            Err(again) => {
                if let Some(t) = again {
                    self.map.insert(dst, Entry::Absent(t));
                }
                self.routed += 1;
                None
            }
        }
    }

    /// Forgets what we knew of `addr` (it left the fabric).
    pub fn forget(&mut self, addr: u32) {
        self.map.remove(&addr);
    }
}
