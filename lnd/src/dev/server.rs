//! `dmadev`: serves one fabric directory. Each node connects over the Unix socket, hands over its
//! queue region and memory (memfds), then talks through shared rings and doorbell frames.

use super::bell::Bell;
use super::engine::{AttachError, Engine, Port};
use super::mailbox::{self, Mailbox};
use super::proto::{self, recv_frame, send_frame, Frame};
use super::ring::{self, Rings};
use super::device::{Completion, DevStatus};
use super::linkio::{LinkConfig, Links};
use crate::mem::Mem;
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Completions held back for a node whose completion ring is full, beyond one per mailbox
/// slot. A node's own descriptors, mailbox and peers bound what can legitimately wait; a node
/// past this is not reading its ring and is let go.
const OVERFLOW_MAX: usize = 4 * ring::CQ_N as usize;

/// How long the device waits for a mailbox a peer is writing into (it holds the engine).
const DEVICE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(2);

/// What peers need to write into a node's mailbox themselves: its queue region and its bell.
#[derive(Clone)]
struct Shared {
    q: Arc<Mem>,
    bell: Arc<Bell>,
}

/// Attached nodes' [`Shared`] parts, by fabric address.
type SharedMap = Arc<Mutex<HashMap<u32, Shared>>>;

/// The device side of one node's rings.
struct ShmPort {
    q: Arc<Mem>,
    sock: UnixStream,
    bell: Arc<Bell>,
    overflow: VecDeque<Completion>,
    /// Mailbox slots, as the node declared them at attach (read once: the node could change
    /// the word later).
    mb_n: u32,
}

impl ShmPort {
    fn rings(&self) -> Rings<'_> {
        Rings { mem: &self.q }
    }

    fn push(&mut self, c: Completion) {
        let r = Rings { mem: &self.q };
        if !self.overflow.is_empty() || r.cq_pending() >= ring::CQ_N {
            if self.overflow.len() >= OVERFLOW_MAX + self.mb_n as usize {
                // Closing the connection ends the node's loop, which detaches it.
                if self.sock.shutdown(std::net::Shutdown::Both).is_ok() {
                    warn!(held = self.overflow.len(), "node does not take its completions; letting it go");
                }
                return;
            }
            self.overflow.push_back(c);
            r.word(ring::CQ_OVERFLOW).store(1, Ordering::Release);
            return;
        }
        let tail = r.word(ring::CQ_TAIL).load(Ordering::Relaxed);
        r.write_comp(tail, &c);
        r.word(ring::CQ_TAIL).store(tail.wrapping_add(1), Ordering::Release);
        self.kick();
    }

    fn kick(&self) {
        if self.rings().disarm() {
            self.bell.ring();
        }
    }
}

impl Port for ShmPort {
    fn complete(&mut self, c: Completion) {
        self.push(c);
    }

    fn deliver(&mut self, from: u32, data: &[u8]) -> Result<(), DevStatus> {
        Mailbox::new(&self.q, self.mb_n).push(mailbox::DEVICE_ID, None, from, data, DEVICE_PATIENCE)?;
        self.kick();
        Ok(())
    }

    fn set_direct(&mut self, on: bool) {
        self.rings().word(ring::DIRECT).store(on as u32, Ordering::Release);
    }

    fn peer_gone(&mut self, addr: u32) {
        if let Some(id) = mailbox::node_id(addr) {
            if Mailbox::new(&self.q, self.mb_n).break_lock(id) {
                warn!(addr, "a node died holding a mailbox lock: broken");
            }
        }
    }

    fn flush(&mut self) {
        while let Some(&c) = self.overflow.front() {
            let r = Rings { mem: &self.q };
            if r.cq_pending() >= ring::CQ_N {
                return;
            }
            self.overflow.pop_front();
            let tail = r.word(ring::CQ_TAIL).load(Ordering::Relaxed);
            r.write_comp(tail, &c);
            r.word(ring::CQ_TAIL).store(tail.wrapping_add(1), Ordering::Release);
        }
        self.kick();
    }
}

/// A running device: listening socket plus the shared engine.
pub struct DevServer {
    listener: UnixListener,
    path: PathBuf,
    engine: Arc<Mutex<Engine>>,
    shared: SharedMap,
    /// Fabric links to other hosts' devices, when this device is one of several.
    links: Option<Arc<Links>>,
}

impl DevServer {
    /// Binds `<dir>/dmadev.sock`, replacing a stale socket nobody listens on.
    pub fn bind(dir: &Path, secret: u64) -> std::io::Result<DevServer> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(proto::SOCK_NAME);
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{}: another dmadev is serving this fabric", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        let mut engine = Engine::new(secret);
        if std::env::var("LNETLAB_DMA_DIRECT").is_ok_and(|v| v == "0") {
            engine.set_direct(false);
        }
        Ok(DevServer { listener, path, engine: Arc::new(Mutex::new(engine)), shared: Arc::default(), links: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn engine(&self) -> Arc<Mutex<Engine>> {
        self.engine.clone()
    }

    /// Joins the fabric across hosts: accepts and dials links as `cfg` says. Returns the
    /// address it accepts links on.
    pub fn link(&mut self, cfg: LinkConfig) -> std::io::Result<Option<std::net::SocketAddr>> {
        let (links, bound) = Links::start(self.engine.clone(), cfg)?;
        self.links = Some(links);
        Ok(bound)
    }

    /// Accepts nodes forever, one thread each.
    pub fn run(self) -> std::io::Result<()> {
        info!(path = %self.path.display(), "dmadev serving");
        for conn in self.listener.incoming() {
            let sock = match conn {
                Ok(s) => s,
                Err(e) => {
                    warn!("accept: {e}");
                    continue;
                }
            };
            let engine = self.engine.clone();
            let shared = self.shared.clone();
            let links = self.links.clone();
            std::thread::spawn(move || {
                if let Err(e) = serve_node(sock, engine, shared, links) {
                    warn!("node connection ended: {e}");
                }
            });
        }
        Ok(())
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn refuse(sock: &UnixStream, ty: u32, why: &str) -> std::io::Error {
    refuse_with(sock, ty, proto::ST_REFUSED, why)
}

fn refuse_with(sock: &UnixStream, ty: u32, status: u32, why: &str) -> std::io::Error {
    let mut body = status.to_le_bytes().to_vec();
    body.extend_from_slice(why.as_bytes());
    let _ = send_frame(sock, ty, &body, None);
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string())
}

/// A node asks for a peer's mailbox to write into it itself: the peer's queue region and bell,
/// while the peer is attached and the engine allows direct writes.
fn answer_peer(sock: &UnixStream, body: &[u8], engine: &Mutex<Engine>, shared: &SharedMap) -> std::io::Result<()> {
    let Some(addr) = proto::u32_at(body, 0) else {
        return Err(refuse(sock, proto::F_PEER_OK, "peer: short body"));
    };
    let found = {
        let e = engine.lock().unwrap();
        // A node on another host is reached through the device (over its link) only.
        if !e.direct_allowed() || e.is_remote(addr) {
            Err(proto::ST_NO_DIRECT)
        } else {
            shared.lock().unwrap().get(&addr).cloned().filter(|_| e.is_attached(addr)).ok_or(proto::ST_NO_PEER)
        }
    };
    match found {
        Err(st) => {
            send_frame(sock, proto::F_PEER_OK, &st.to_le_bytes(), None)?;
        }
        Ok(s) => {
            let gen = Rings { mem: &s.q }.word(ring::GEN).load(Ordering::Acquire);
            let mut b = proto::ST_OK.to_le_bytes().to_vec();
            b.extend_from_slice(&gen.to_le_bytes());
            b.extend_from_slice(&(s.q.len() as u64).to_le_bytes());
            let qfd = s.q.fd().ok_or_else(|| std::io::Error::other("queue region without an fd"))?;
            send_frame(sock, proto::F_PEER_OK, &b, Some(qfd.as_raw_fd()))?;
            send_frame(sock, proto::F_BELL, &[], Some(s.bell.fd()))?;
        }
    }
    Ok(())
}

fn serve_node(sock: UnixStream, engine: Arc<Mutex<Engine>>, shared: SharedMap, links: Option<Arc<Links>>) -> std::io::Result<()> {
    let hello = recv_frame(&sock)?.ok_or_else(|| std::io::Error::other("closed before hello"))?;
    if hello.ty == proto::F_PEER {
        return answer_peer(&sock, &hello.body, &engine, &shared);
    }
    if hello.ty == proto::F_LINK_CUT {
        let (Some(host), Some(on)) = (proto::u32_at(&hello.body, 0), proto::u32_at(&hello.body, 4)) else {
            return Err(refuse(&sock, proto::F_CUT_OK, "link cut: short body"));
        };
        let Some(links) = links else {
            return Err(refuse(&sock, proto::F_CUT_OK, "link cut: this device has no fabric links"));
        };
        links.set_cut(host, on != 0);
        send_frame(&sock, proto::F_CUT_OK, &proto::ST_OK.to_le_bytes(), None)?;
        return Ok(());
    }
    if hello.ty == proto::F_CUT {
        // A control client, not a node: cut or heal two addresses, answer, and go.
        let (Some(a), Some(b), Some(on)) = (proto::u32_at(&hello.body, 0), proto::u32_at(&hello.body, 4), proto::u32_at(&hello.body, 8)) else {
            return Err(refuse(&sock, proto::F_CUT_OK, "cut: short body"));
        };
        info!(a, b, on = on != 0, "fabric cut");
        engine.lock().unwrap().set_cut(a, b, on != 0);
        send_frame(&sock, proto::F_CUT_OK, &proto::ST_OK.to_le_bytes(), None)?;
        return Ok(());
    }
    let (addr, qlen, fd) = match hello {
        Frame { ty: proto::F_HELLO, body, fd: Some(fd) } => match (proto::u32_at(&body, 0), proto::u64_at(&body, 4)) {
            (Some(a), Some(l)) => (a, l, fd),
            _ => return Err(refuse(&sock, proto::F_HELLO_OK, "hello: short body")),
        },
        _ => return Err(refuse(&sock, proto::F_HELLO_OK, "expected hello with a queue memfd")),
    };
    if !(ring::QUEUE_BYTES as u64..=ring::queue_bytes(ring::MB_MAX) as u64).contains(&qlen) {
        return Err(refuse(&sock, proto::F_HELLO_OK, &format!("queue region of {qlen} bytes, expected {}..={}", ring::QUEUE_BYTES, ring::queue_bytes(ring::MB_MAX))));
    }
    let q = Arc::new(Mem::map_sealed_fd(fd, qlen as usize).map_err(|e| refuse(&sock, proto::F_HELLO_OK, &format!("map queue: {e}")))?);
    let mb_n = Rings::new(&q, false).map_err(|e| refuse(&sock, proto::F_HELLO_OK, &e))?.mailbox_len();
    if qlen as usize != ring::queue_bytes(mb_n) {
        return Err(refuse(&sock, proto::F_HELLO_OK, &format!("queue region of {qlen} bytes for a mailbox of {mb_n} slots, expected {}", ring::queue_bytes(mb_n))));
    }
    let bell = match recv_frame(&sock)? {
        Some(Frame { ty: proto::F_BELL, fd: Some(fd), .. }) => Arc::new(Bell::from_fd(fd).map_err(|e| refuse(&sock, proto::F_HELLO_OK, &format!("bell: {e}")))?),
        _ => return Err(refuse(&sock, proto::F_HELLO_OK, "expected the node's bell (an eventfd) after its hello")),
    };
    let port = ShmPort { q: q.clone(), sock: sock.try_clone()?, bell: bell.clone(), overflow: VecDeque::new(), mb_n };
    let mut eng = engine.lock().unwrap();
    if let Err(e) = eng.attach(addr, Box::new(port)) {
        let status = match e {
            AttachError::AddrInUse(_) => proto::ST_ADDR_IN_USE,
            AttachError::DeviceDown => proto::ST_REFUSED,
        };
        return Err(refuse_with(&sock, proto::F_HELLO_OK, status, &e.to_string()));
    }
    shared.lock().unwrap().insert(addr, Shared { q: q.clone(), bell });
    drop(eng);
    send_frame(&sock, proto::F_HELLO_OK, &proto::ST_OK.to_le_bytes(), None)?;
    info!(addr, "node attached");
    let res = node_loop(&sock, &engine, addr, &q);
    {
        let mut eng = engine.lock().unwrap();
        // Peers with a mapping of this region find it gone at their next write.
        Rings { mem: &q }.word(ring::GEN).fetch_add(1, Ordering::SeqCst);
        shared.lock().unwrap().retain(|&a, s| a != addr || !Arc::ptr_eq(&s.q, &q));
        eng.detach(addr);
    }
    info!(addr, "node detached");
    res
}

fn node_loop(sock: &UnixStream, engine: &Mutex<Engine>, addr: u32, q: &Mem) -> std::io::Result<()> {
    let r = Rings::new(q, false).map_err(std::io::Error::other)?;
    // Poll a while before sleeping, as long as that pays (see `Spin`): a doorbell costs a
    // wakeup, often more than the work.
    let spin = super::spin::Spin::default();
    loop {
        drain(&r, engine, addr)?;
        if spin.spin(|| r.sq_pending() != 0) {
            continue;
        }
        r.word(ring::SQ_ARMED).store(1, Ordering::SeqCst);
        if r.sq_pending() != 0 {
            r.word(ring::SQ_ARMED).store(0, Ordering::SeqCst);
            continue;
        }
        let slept = std::time::Instant::now();
        let Some(f) = recv_frame(sock)? else { return Ok(()) };
        match f.ty {
            proto::F_DOORBELL => spin.woken_after(slept.elapsed()),
            proto::F_REG => {
                let (Some(len), Some(fd)) = (proto::u64_at(&f.body, 0), f.fd) else {
                    refuse(sock, proto::F_REG_OK, "register: need length and memfd");
                    continue;
                };
                match Mem::map_sealed_fd(fd, len as usize) {
                    Ok(m) => {
                        let key = engine.lock().unwrap().register(addr, Arc::new(m));
                        let mut body = 0u32.to_le_bytes().to_vec();
                        body.extend_from_slice(&key.to_le_bytes());
                        send_frame(sock, proto::F_REG_OK, &body, None)?;
                    }
                    Err(e) => {
                        refuse(sock, proto::F_REG_OK, &format!("register: {e}"));
                    }
                }
            }
            proto::F_UNREG => {
                let key = proto::u32_at(&f.body, 0).unwrap_or(0);
                let st = match engine.lock().unwrap().unregister(addr, key) {
                    Ok(()) => 0u32,
                    Err(s) => s as u32,
                };
                send_frame(sock, proto::F_UNREG_OK, &st.to_le_bytes(), None)?;
            }
            t => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unknown frame type {t}"))),
        }
    }
}

/// Executes every queued descriptor of node `addr`. Copies run with the engine unlocked, so
/// other nodes' short messages and setups are not held up behind a 1 MiB memcpy.
/// Returns whether a pull was copied.
fn drain(r: &Rings<'_>, engine: &Mutex<Engine>, addr: u32) -> std::io::Result<bool> {
    let mut copied = false;
    if let Some(p) = engine.lock().unwrap().port_mut(addr) {
        p.flush();
    }
    loop {
        let head = r.word(ring::SQ_HEAD).load(Ordering::Relaxed);
        let tail = r.word(ring::SQ_TAIL).load(Ordering::Acquire);
        if head == tail {
            return Ok(copied);
        }
        if tail.wrapping_sub(head) > ring::SQ_N {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "submission ring indices corrupt"));
        }
        let job = match r.read_desc(head) {
            Ok(d) => engine.lock().unwrap().submit(addr, d),
            Err(c) => {
                if let Some(p) = engine.lock().unwrap().port_mut(addr) {
                    p.complete(c)
                }
                None
            }
        };
        r.word(ring::SQ_HEAD).store(head.wrapping_add(1), Ordering::Release);
        if let Some(job) = job {
            copied = true;
            let late = engine.lock().unwrap().pull_delay(&job);
            if let Some(d) = late {
                std::thread::sleep(d);
            }
            let ok = job.copy();
            engine.lock().unwrap().finish_pull(job, ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::device::CompKind;
    use std::io::Read;

    /// Issue 19 item 4: a node that never takes its completions cannot make the device queue
    /// them without bound: past a limit the device lets the node go (closes its connection).
    #[test]
    #[cfg_attr(miri, ignore = "socket shutdown is not available under Miri")]
    fn a_node_that_never_reads_its_completions_is_let_go() {
        let q = Mem::heap(ring::QUEUE_BYTES);
        Rings::new(&q, true).unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut port = ShmPort { q: q.clone(), sock: ours, bell: Arc::new(Bell::new().unwrap()), overflow: VecDeque::new(), mb_n: ring::MB_MIN };
        let c = Completion { kind: CompKind::TxDone, status: DevStatus::Ok, tag: 1, cookie: 2, len: 3, peer: 4 };
        for _ in 0..ring::CQ_N as usize + 100_000 {
            port.complete(c);
        }
        assert!(port.overflow.len() <= 4 * ring::CQ_N as usize + ring::MB_MIN as usize, "{} completions queued", port.overflow.len());
        theirs.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(theirs.read(&mut b).unwrap(), 0, "the node's connection is closed");
    }
}
