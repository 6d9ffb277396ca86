//! Fabric links over TCP between the `dmadev`s of different hosts: a connection opens with the
//! run's token, then both sides' HELLOs; a writer thread per link sends frames in order within
//! the window the other side grants (CREDIT), and a reader hands frames to the engine, landing
//! pulled bytes straight in the puller's memory.

use super::engine::Engine;
use super::remote::{LinkOut, LinkPort, PullReq};
use super::link::{self, LinkFrame};
use super::device::DevStatus;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// Data bytes (SMSG and PULL_DATA) a side may have in flight before the other grants more.
pub const WINDOW: usize = 8 << 20;
/// How long a new connection has to present its token and HELLO.
const HELLO_WAIT: Duration = Duration::from_secs(5);

/// This device's part in the fabric across hosts.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// This host's number (every device of a fabric has its own).
    pub host: u32,
    /// Where to accept links from other hosts' devices.
    pub listen: Option<String>,
    /// Hosts to dial, and where their devices listen.
    pub dial: Vec<(u32, String)>,
    /// `NAME:PORT` resolving to every device of the fabric (a headless Service): each address
    /// is a host numbered by it; those below ours are dialled (the others dial us).
    pub discover: Option<String>,
    /// The run's secret: a link opens with it, as a control connection does.
    pub token: String,
}

/// This machine's IPv4 addresses (every interface's).
pub fn local_addresses() -> std::io::Result<Vec<std::net::Ipv4Addr>> {
    let mut out = Vec::new();
    let mut ifs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    if unsafe { libc::getifaddrs(&mut ifs) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut p = ifs;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned; an AF_INET address is a sockaddr_in.
        unsafe {
            let a = (*p).ifa_addr;
            if !a.is_null() && (*a).sa_family as i32 == libc::AF_INET {
                let sin = &*(a as *const libc::sockaddr_in);
                out.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            p = (*p).ifa_next;
        }
    }
    unsafe { libc::freeifaddrs(ifs) };
    Ok(out)
}

/// The address of ours that `name:port` resolves to (a device numbering its host by the
/// address its peers find it at), waited for up to `wait` (a new task's DNS record lags).
pub fn own_address_among(name: &str, wait: Duration) -> std::io::Result<std::net::Ipv4Addr> {
    use std::net::ToSocketAddrs;
    let mine = local_addresses()?;
    let t0 = std::time::Instant::now();
    loop {
        let found: Vec<std::net::Ipv4Addr> = name.to_socket_addrs().map(|a| a.filter_map(|x| if let SocketAddr::V4(v) = x { Some(*v.ip()) } else { None }).collect()).unwrap_or_default();
        if let Some(ip) = found.iter().find(|ip| mine.contains(ip)) {
            return Ok(*ip);
        }
        if t0.elapsed() > wait {
            return Err(std::io::Error::other(format!("{name} resolves to {found:?}, none of them this machine's ({mine:?})")));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The token a first line presents (`{"token": "..."}`), if it is one.
pub fn presented_token(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    v.get("token")?.as_str().map(str::to_owned)
}

/// Running links: cut ones are dropped and neither dialled nor accepted until healed.
pub struct Links {
    engine: Arc<Mutex<Engine>>,
    cfg: LinkConfig,
    cut: Mutex<HashSet<u32>>,
    live: Mutex<HashMap<u32, TcpStream>>,
}

/// The writer's queue: control frames (CREDIT, SMSG_DONE) ride free and first; the rest go in
/// order within the window.
#[derive(Default)]
struct Queue {
    st: Mutex<QState>,
    cv: Condvar,
}

#[derive(Default)]
struct QState {
    ctl: VecDeque<Vec<u8>>,
    data: VecDeque<LinkOut>,
    window: usize,
    closed: bool,
}

fn cost(o: &LinkOut) -> usize {
    match o {
        LinkOut::Frame(b) if b.get(4) == Some(&link::ty::SMSG) => b.len().saturating_sub(link::HEAD + link::SMSG_FIELDS),
        LinkOut::Data { segs, .. } => crate::mem::iov_len(segs) as usize,
        _ => 0,
    }
}

struct QueuePort(Arc<Queue>);

impl LinkPort for QueuePort {
    fn send(&mut self, out: LinkOut) {
        let mut s = self.0.st.lock().unwrap();
        match out {
            LinkOut::Frame(b) if matches!(b.get(4), Some(&link::ty::CREDIT) | Some(&link::ty::SMSG_DONE)) => s.ctl.push_back(b),
            o => s.data.push_back(o),
        }
        self.0.cv.notify_one();
    }
}

impl Links {
    /// Starts accepting (if `cfg.listen`) and dialling; returns the address it listens on.
    pub fn start(engine: Arc<Mutex<Engine>>, cfg: LinkConfig) -> std::io::Result<(Arc<Links>, Option<SocketAddr>)> {
        let listener = cfg.listen.as_deref().map(TcpListener::bind).transpose()?;
        let bound = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let links = Arc::new(Links { engine, cfg, cut: Mutex::default(), live: Mutex::default() });
        if let Some(l) = listener {
            info!(addr = ?bound, host = links.cfg.host, "fabric link listening");
            let me = links.clone();
            std::thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    let me = me.clone();
                    std::thread::spawn(move || {
                        let peer = conn.peer_addr().map(|p| p.to_string()).unwrap_or_default();
                        if let Err(e) = me.accept(conn) {
                            warn!(peer, "fabric link refused or ended: {e}");
                        }
                    });
                }
            });
        }
        for (host, addr) in links.cfg.dial.clone() {
            let me = links.clone();
            std::thread::spawn(move || me.dial_forever(host, &addr));
        }
        if let Some(d) = links.cfg.discover.clone() {
            let me = links.clone();
            std::thread::spawn(move || me.discover_forever(&d));
        }
        Ok((links, bound))
    }

    /// Resolves `name:port` every few seconds; dials each new device numbered below this one.
    fn discover_forever(self: Arc<Self>, name: &str) {
        use std::net::ToSocketAddrs;
        let mut dialling = HashSet::new();
        loop {
            match name.to_socket_addrs() {
                Ok(addrs) => {
                    for a in addrs {
                        let SocketAddr::V4(v4) = a else { continue };
                        let host = u32::from(*v4.ip());
                        if host < self.cfg.host && dialling.insert(host) {
                            info!(host = %v4.ip(), "fabric link: found a device to dial");
                            let me = self.clone();
                            std::thread::spawn(move || me.dial_forever(host, &a.to_string()));
                        }
                    }
                }
                Err(e) => tracing::debug!(name, "fabric link discovery: {e}"),
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// Cuts (`on`) or restores the link to `host`: cutting drops it at once (what crossed it
    /// fails, its nodes are reported gone); restoring lets it be dialled or accepted again.
    pub fn set_cut(&self, host: u32, on: bool) {
        if on {
            self.cut.lock().unwrap().insert(host);
            if let Some(s) = self.live.lock().unwrap().get(&host) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        } else {
            self.cut.lock().unwrap().remove(&host);
        }
        info!(host, cut = on, "fabric link cut");
    }

    fn is_cut(&self, host: u32) -> bool {
        self.cut.lock().unwrap().contains(&host)
    }

    fn dial_forever(&self, host: u32, addr: &str) {
        let mut backoff = Duration::from_millis(20);
        loop {
            if !self.is_cut(host) {
                match self.dial(host, addr) {
                    Ok(()) => backoff = Duration::from_millis(20),
                    Err(e) => tracing::debug!(host, addr, "fabric link: {e}"),
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    fn dial(&self, host: u32, addr: &str) -> std::io::Result<()> {
        let sa: SocketAddr = addr.parse().map_err(|e| std::io::Error::other(format!("link address `{addr}`: {e}")))?;
        let s = TcpStream::connect_timeout(&sa, Duration::from_secs(1))?;
        let mut w = s.try_clone()?;
        w.write_all(format!("{}\n", serde_json::json!({ "token": self.cfg.token })).as_bytes())?;
        let mut r = BufReader::new(s.try_clone()?);
        self.run(host, s, &mut r, None)
    }

    fn accept(&self, s: TcpStream) -> std::io::Result<()> {
        s.set_read_timeout(Some(HELLO_WAIT))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut line = Vec::new();
        (&mut r).take(512).read_until(b'\n', &mut line)?;
        let ok = presented_token(&String::from_utf8_lossy(&line)).is_some_and(|t| same_secret(t.as_bytes(), self.cfg.token.as_bytes()));
        if !ok {
            let _ = s.shutdown(std::net::Shutdown::Both);
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no valid token"));
        }
        let body = read_frame(&mut r)?;
        let (host, addrs) = match LinkFrame::parse(&body) {
            Ok(LinkFrame::Hello { host, addrs }) => (host, addrs),
            Ok(f) => return Err(std::io::Error::other(format!("expected HELLO, got frame type {:#04x}", f.ty()))),
            Err(e) => return Err(std::io::Error::other(e)),
        };
        if host == self.cfg.host {
            return Err(std::io::Error::other(format!("the peer claims to be host {host}, this device's own")));
        }
        if self.is_cut(host) {
            return Err(std::io::Error::other(format!("the link to host {host} is cut (fabric_link)")));
        }
        s.set_read_timeout(None)?;
        self.run(host, s, &mut r, Some(addrs))
    }

    /// One link's life: register it, exchange HELLOs, read until it ends, then let it go.
    fn run(&self, host: u32, s: TcpStream, r: &mut BufReader<TcpStream>, hello: Option<Vec<u32>>) -> std::io::Result<()> {
        {
            let mut live = self.live.lock().unwrap();
            if live.contains_key(&host) {
                return Err(std::io::Error::other(format!("a link to host {host} is already up")));
            }
            live.insert(host, s.try_clone()?);
        }
        s.set_nodelay(true)?;
        let q = Arc::new(Queue::default());
        q.st.lock().unwrap().window = WINDOW;
        let writer = {
            let (q, s, engine) = (q.clone(), s.try_clone()?, self.engine.clone());
            std::thread::spawn(move || write_loop(&q, s, &engine))
        };
        self.engine.lock().unwrap().link_up(self.cfg.host, host, Box::new(QueuePort(q.clone())));
        let res = self.read_loop(host, &s, r, hello, &q);
        self.live.lock().unwrap().remove(&host);
        let _ = s.shutdown(std::net::Shutdown::Both);
        // The engine forgets the link first, so nothing is queued after the writer's last look.
        self.engine.lock().unwrap().link_down(host);
        {
            let mut st = q.st.lock().unwrap();
            st.closed = true;
            q.cv.notify_all();
        }
        let _ = writer.join();
        res
    }

    fn read_loop(&self, host: u32, s: &TcpStream, r: &mut BufReader<TcpStream>, hello: Option<Vec<u32>>, q: &Queue) -> std::io::Result<()> {
        match hello {
            Some(addrs) => self.engine.lock().unwrap().link_hello(host, &addrs),
            None => match LinkFrame::parse(&read_frame(r)?) {
                Ok(LinkFrame::Hello { host: h, addrs }) if h == host => self.engine.lock().unwrap().link_hello(host, &addrs),
                Ok(f) => return Err(std::io::Error::other(format!("expected HELLO from host {host}, got {f:?}"))),
                Err(e) => return Err(std::io::Error::other(e)),
            },
        }
        info!(host, "fabric link up");
        let mut consumed = 0usize;
        let mut body = Vec::new();
        loop {
            let mut head = [0u8; link::HEAD];
            r.read_exact(&mut head)?;
            let n = LinkFrame::announced_len(head[..4].try_into().unwrap()).map_err(std::io::Error::other)? as usize;
            // A body: the type byte and what follows.
            if head[4] == link::ty::PULL_DATA && n > link::PULL_DATA_FIELDS {
                consumed += self.pull_data(host, s, r, n - 1 - link::PULL_DATA_FIELDS)?;
            } else {
                body.clear();
                body.push(head[4]);
                body.resize(n, 0);
                r.read_exact(&mut body[1..])?;
                let f = LinkFrame::parse(&body).map_err(|e| std::io::Error::other(format!("from host {host}: {e}")))?;
                consumed += f.window_cost();
                match f {
                    LinkFrame::Credit { bytes } => {
                        let mut st = q.st.lock().unwrap();
                        st.window += bytes as usize;
                        q.cv.notify_one();
                    }
                    f => {
                        if let Some((delay, req)) = self.engine.lock().unwrap().link_frame(host, f) {
                            let engine = self.engine.clone();
                            std::thread::spawn(move || serve_late(&engine, delay, req));
                        }
                    }
                }
            }
            if consumed >= WINDOW / 4 {
                let mut b = Vec::new();
                LinkFrame::Credit { bytes: consumed as u32 }.emit(&mut b);
                let mut st = q.st.lock().unwrap();
                st.ctl.push_back(b);
                q.cv.notify_one();
                consumed = 0;
            }
        }
    }

    /// A PULL_DATA frame of `n` bytes: read straight into the puller's memory where the pull
    /// is waiting and the bytes fit, else read and dropped. Returns the window bytes consumed.
    fn pull_data(&self, host: u32, s: &TcpStream, r: &mut BufReader<TcpStream>, n: usize) -> std::io::Result<usize> {
        if n > link::CHUNK {
            return Err(std::io::Error::other(format!("from host {host}: {}", link::LinkError::ChunkTooLong(n))));
        }
        let mut h = [0u8; link::PULL_DATA_FIELDS];
        r.read_exact(&mut h)?;
        let id = u64::from_le_bytes(h[..8].try_into().unwrap());
        let off = u64::from_le_bytes(h[8..].try_into().unwrap());
        let sink = self.engine.lock().unwrap().pull_sink(host, id, off, n);
        match sink {
            Some((mem, segs)) => {
                for sg in &segs {
                    let (mut at, mut left) = (sg.off, sg.len as u64);
                    while left > 0 {
                        let buf = r.buffer();
                        if buf.is_empty() {
                            mem.read_from_fd(at, left, s.as_raw_fd())?;
                            break;
                        }
                        let k = (buf.len() as u64).min(left);
                        mem.write(at, &buf[..k as usize]).map_err(std::io::Error::other)?;
                        r.consume(k as usize);
                        at += k;
                        left -= k;
                    }
                }
                self.engine.lock().unwrap().pull_got(id, n);
            }
            None => {
                std::io::copy(&mut r.by_ref().take(n as u64), &mut std::io::sink())?;
            }
        }
        Ok(n)
    }
}

fn serve_late(engine: &Mutex<Engine>, delay: Duration, req: PullReq) {
    std::thread::sleep(delay);
    let again = engine.lock().unwrap().serve_pull(req, false);
    debug_assert!(again.is_none());
}

/// Reads one frame (type byte and body) after its checked length field.
fn read_frame(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head)?;
    let n = LinkFrame::announced_len(head).map_err(std::io::Error::other)? as usize;
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// Sends what the engine queued: control frames first, the rest in order while the window
/// lasts. A served pull is finished only once its bytes are on the wire; once the link closes
/// (the engine no longer queues to it), pulls still queued fail (`LinkDown`) so owners hear.
fn write_loop(q: &Queue, s: TcpStream, engine: &Mutex<Engine>) {
    let fd = s.as_raw_fd();
    let mut w = BufWriter::with_capacity(64 << 10, s);
    let mut failed = false;
    loop {
        let (batch, closed) = {
            let mut st = q.st.lock().unwrap();
            while !(st.closed || !st.ctl.is_empty() || st.data.front().is_some_and(|o| cost(o) <= st.window)) {
                st = q.cv.wait(st).unwrap();
            }
            let mut batch: Vec<LinkOut> = st.ctl.drain(..).map(LinkOut::Frame).collect();
            while let Some(c) = st.data.front().map(cost) {
                if !st.closed && c > st.window {
                    break;
                }
                st.window = st.window.saturating_sub(c);
                batch.push(st.data.pop_front().unwrap());
            }
            (batch, st.closed)
        };
        for o in batch {
            match o {
                LinkOut::Served(sv) => {
                    let st = if failed || closed || w.flush().is_err() { DevStatus::LinkDown } else { DevStatus::Ok };
                    engine.lock().unwrap().finish_served(sv, st);
                }
                _ if failed || closed => {}
                o => failed = send(&mut w, fd, o).is_err(),
            }
        }
        if closed {
            return;
        }
        failed = failed || w.flush().is_err();
        if failed {
            // The reader sees the end too, and lets the link go.
            let _ = w.get_ref().shutdown(std::net::Shutdown::Both);
        }
    }
}

fn send(w: &mut BufWriter<TcpStream>, fd: std::os::fd::RawFd, o: LinkOut) -> std::io::Result<()> {
    match o {
        LinkOut::Frame(b) => w.write_all(&b),
        LinkOut::Data { head, mem, segs, corrupt: None } => {
            w.write_all(&head)?;
            w.flush()?;
            for sg in segs {
                mem.write_to_fd(sg.off, sg.len as u64, fd)?;
            }
            Ok(())
        }
        LinkOut::Data { head, mem, segs, corrupt: Some(at) } => {
            let mut b = Vec::new();
            crate::mem::iov_read(&mem, &segs, &mut b).map_err(std::io::Error::other)?;
            if let Some(x) = b.get_mut(at as usize) {
                *x ^= 0x40;
            }
            w.write_all(&head)?;
            w.write_all(&b)
        }
        LinkOut::Served(_) => unreachable!("finished by the writer loop"),
    }
}
