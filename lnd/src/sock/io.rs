//! The I/O edge of socklnd: a small trait the LND drives (listen, connect from a privileged port,
//! write, close) and that reports back inputs; [`ThreadIo`] does it with OS sockets and threads.

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, TcpKeepalive, Type};
use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

pub type ConnId = u64;

/// Bytes a reader thread reads at most before handing them over: a 1 MiB frame and its
/// headers fit, so a frame read whole needs no copy to be assembled.
pub const READ_CHUNK: usize = (1 << 20) + 4096;
/// Spent read buffers kept for the readers (a node's idle memory bounds it).
const READ_POOL: usize = 8;
/// Longest sent data may stay unacknowledged (Lustre's default `sock_timeout`).
pub const UNACKED_TIMEOUT: Duration = Duration::from_secs(50);
/// Most connections a [`ThreadIo`] keeps (each holds a reader and a writer thread).
pub const MAX_CONNS: u64 = 1024;
/// Most bytes read but not yet taken by the LND; readers wait beyond it (TCP then pushes back).
pub const MAX_UNREAD: usize = 32 << 20;

/// What the network did.
#[derive(Debug)]
pub enum SockInput {
    Accepted { conn: ConnId, peer: SocketAddrV4, local: SocketAddrV4 },
    Connected { conn: ConnId, local: SocketAddrV4 },
    ConnectFailed { conn: ConnId, error: String },
    Data { conn: ConnId, data: Vec<u8> },
    /// A write with a non-zero tag has been handed to the kernel.
    Written { conn: ConnId, tag: u64 },
    Closed { conn: ConnId, error: Option<String> },
}

/// Sockets as the LND sees them. Connection ids the LND picks for `connect` are below 2^63;
/// ids of accepted connections have the top bit set.
pub trait SockIo: Send {
    fn listen(&mut self, addr: SocketAddrV4) -> std::io::Result<()>;
    /// Connects from `from_ip`, binding a privileged port (1023 down to 512); with `reserved`
    /// false an ephemeral port may stand in when none can be bound.
    fn connect(&mut self, conn: ConnId, to: SocketAddrV4, from_ip: Ipv4Addr, reserved: bool);
    fn write(&mut self, conn: ConnId, data: Vec<u8>, tag: u64);
    fn close(&mut self, conn: ConnId);
    /// Drops a connection at once, unsent data included (a peer that stopped making progress).
    fn abort(&mut self, conn: ConnId) {
        self.close(conn)
    }
    fn poll(&mut self, out: &mut Vec<SockInput>);
    /// Monotonic time, for keepalives (virtual under simulation).
    fn now(&self) -> Instant;
    /// Gives back the buffer of a `Data` input of `conn` once consumed (an I/O may reuse it,
    /// and reads `conn` further only while little of what it read waits).
    fn recycle(&mut self, conn: ConnId, data: Vec<u8>) {
        self.release(conn, data.len(), data)
    }
    /// `n` bytes `conn` read are consumed, and `buf` (any spent buffer: a `Data` input's, or a
    /// frame assembled in one) may be read into again.
    fn release(&mut self, _conn: ConnId, _n: usize, _buf: Vec<u8>) {}
    /// Stops (or resumes) reading `conn`: the LND has a message of it parked, and TCP flow
    /// control should hold the peer back meanwhile. An I/O may deliver a little more.
    fn pause_read(&mut self, _conn: ConnId, _paused: bool) {}
}

impl<T: SockIo + ?Sized> SockIo for Box<T> {
    fn listen(&mut self, addr: SocketAddrV4) -> std::io::Result<()> {
        (**self).listen(addr)
    }
    fn connect(&mut self, conn: ConnId, to: SocketAddrV4, from_ip: Ipv4Addr, reserved: bool) {
        (**self).connect(conn, to, from_ip, reserved)
    }
    fn write(&mut self, conn: ConnId, data: Vec<u8>, tag: u64) {
        (**self).write(conn, data, tag)
    }
    fn close(&mut self, conn: ConnId) {
        (**self).close(conn)
    }
    fn abort(&mut self, conn: ConnId) {
        (**self).abort(conn)
    }
    fn poll(&mut self, out: &mut Vec<SockInput>) {
        (**self).poll(out)
    }
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn release(&mut self, conn: ConnId, n: usize, buf: Vec<u8>) {
        (**self).release(conn, n, buf)
    }
    fn pause_read(&mut self, conn: ConnId, paused: bool) {
        (**self).pause_read(conn, paused)
    }
}

/// Called from I/O threads whenever input is ready (wakes the node's loop).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

enum WriteCmd {
    Data(Vec<u8>, u64),
    Close,
}

struct Shared {
    /// Most connections (each holds two threads); more are closed as soon as accepted.
    max_conns: AtomicU64,
    /// Connections whose reader is running.
    live: AtomicU64,
    /// Bytes read and not yet polled by the LND, and connections not to read for now; readers
    /// wait on `drained` above MAX_UNREAD or while their connection is paused.
    reading: Mutex<Reading>,
    drained: Condvar,
    tx: Mutex<Sender<SockInput>>,
    wake: Wake,
    writers: Mutex<std::collections::HashMap<ConnId, Sender<WriteCmd>>>,
    /// Handles to shut every socket down when the I/O goes away.
    streams: Mutex<std::collections::HashMap<ConnId, TcpStream>>,
    listeners: Mutex<Vec<std::net::TcpListener>>,
    next_accepted: AtomicU64,
    /// Set when the I/O is dropped: late connections are shut at once.
    closed: std::sync::atomic::AtomicBool,
    /// Read buffers given back by the LND, for the reader threads to fill again.
    read_bufs: Mutex<Vec<Vec<u8>>>,
}

#[derive(Default)]
struct Reading {
    /// Bytes read and not yet taken by the LND (all connections).
    unread: usize,
    /// Per connection, bytes read and not yet given back consumed: what a parked connection's
    /// messages wait behind. A connection stops at MAX_UNREAD of its own, so a message LNet
    /// parks bounds what its connection holds even when the LND takes reads before handling them.
    held: std::collections::HashMap<ConnId, usize>,
    paused: std::collections::HashSet<ConnId>,
}

impl Shared {
    fn push(&self, i: SockInput) {
        let _ = self.tx.lock().unwrap().send(i);
        (self.wake)();
    }

    /// Waits until the LND has taken enough of what was read and wants `conn` read (or the
    /// I/O is closing).
    fn wait_for_room(&self, conn: ConnId) {
        let mut r = self.reading.lock().unwrap();
        while (r.unread >= MAX_UNREAD || r.held.get(&conn).is_some_and(|&h| h >= MAX_UNREAD) || r.paused.contains(&conn)) && !self.closed.load(Ordering::SeqCst) {
            r = self.drained.wait_timeout(r, Duration::from_millis(100)).unwrap().0;
        }
    }

    /// Lets `conn`'s reader go again (resumed, or closing: it then reads the end).
    fn unpause(&self, conn: ConnId) {
        if self.reading.lock().unwrap().paused.remove(&conn) {
            self.drained.notify_all();
        }
    }

    fn reader_done(&self, conn: ConnId, error: Option<String>) {
        let mut r = self.reading.lock().unwrap();
        r.paused.remove(&conn);
        r.held.remove(&conn);
        drop(r);
        self.writers.lock().unwrap().remove(&conn);
        self.streams.lock().unwrap().remove(&conn);
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.push(SockInput::Closed { conn, error });
    }
}

/// TCP keepalive as ksocklnd sets it: probe after 30 s idle, every 5 s, give up after 5.
fn keepalive() -> TcpKeepalive {
    let k = TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(5));
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let k = k.with_retries(5);
    k
}

/// Blocking sockets, a reader and a writer thread per connection.
pub struct ThreadIo {
    shared: Arc<Shared>,
    rx: Receiver<SockInput>,
}

impl ThreadIo {
    pub fn new(wake: Wake) -> ThreadIo {
        let (tx, rx) = channel();
        let shared = Arc::new(Shared {
            tx: Mutex::new(tx),
            max_conns: AtomicU64::new(MAX_CONNS),
            live: AtomicU64::new(0),
            reading: Mutex::new(Reading::default()),
            drained: Condvar::new(),
            wake,
            writers: Mutex::new(Default::default()),
            streams: Mutex::new(Default::default()),
            listeners: Mutex::new(Vec::new()),
            next_accepted: AtomicU64::new(1 << 63),
            closed: Default::default(),
            read_bufs: Default::default(),
        });
        ThreadIo { shared, rx }
    }

    /// Caps live connections (default [`MAX_CONNS`]).
    pub fn set_max_conns(&self, n: u64) {
        self.shared.max_conns.store(n, Ordering::Relaxed);
    }
}

/// Registers a connection, then announces it (`Accepted` or `Connected`), then starts its
/// threads: the LND can close it as soon as it hears of it, and no data overtakes the news.
fn start_conn(shared: &Arc<Shared>, conn: ConnId, stream: TcpStream, announce: SockInput) {
    let _ = stream.set_nodelay(true);
    if let Err(e) = SockRef::from(&stream).set_tcp_keepalive(&keepalive()) {
        warn!(conn, "TCP keepalive: {e}");
    }
    // What ksocklnd gets from watching sk_wmem_queued: data the peer never acknowledges ends
    // the connection after sock_timeout instead of minutes of retransmissions.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = SockRef::from(&stream).set_tcp_user_timeout(Some(UNACKED_TIMEOUT)) {
        warn!(conn, "TCP_USER_TIMEOUT: {e}");
    }
    shared.live.fetch_add(1, Ordering::SeqCst);
    {
        let mut streams = shared.streams.lock().unwrap();
        if shared.closed.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
            shared.live.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        if let Ok(s) = stream.try_clone() {
            streams.insert(conn, s);
        }
    }
    let (wtx, wrx) = channel::<WriteCmd>();
    shared.writers.lock().unwrap().insert(conn, wtx);
    shared.push(announce);
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            shared.reader_done(conn, Some(e.to_string()));
            return;
        }
    };
    let sh = shared.clone();
    std::thread::spawn(move || {
        for cmd in wrx {
            match cmd {
                WriteCmd::Data(d, tag) => {
                    if let Err(e) = w.write_all(&d) {
                        debug!(conn, "write: {e}");
                        let _ = w.shutdown(Shutdown::Both);
                        return;
                    }
                    if tag != 0 {
                        sh.push(SockInput::Written { conn, tag });
                    }
                }
                WriteCmd::Close => {
                    let _ = w.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        let _ = w.shutdown(Shutdown::Both);
    });
    let sh = shared.clone();
    let r = stream;
    std::thread::spawn(move || {
        loop {
            sh.wait_for_room(conn);
            // Read straight into a buffer the LND will consume (and give back): no copy here.
            let mut buf = sh.read_bufs.lock().unwrap().pop().unwrap_or_default();
            buf.clear();
            buf.reserve(READ_CHUNK);
            match read_into(&r, &mut buf, true) {
                Ok(0) => return sh.reader_done(conn, None),
                Ok(_) => {
                    // Whatever else is there already, in the same buffer: a frame in one piece
                    // (the parser then takes it without a copy) and one wake-up, not several.
                    while buf.len() < buf.capacity() && read_into(&r, &mut buf, false).is_ok_and(|n| n > 0) {}
                    let n = buf.len();
                    let mut rd = sh.reading.lock().unwrap();
                    rd.unread += n;
                    *rd.held.entry(conn).or_default() += n;
                    drop(rd);
                    sh.push(SockInput::Data { conn, data: buf });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return sh.reader_done(conn, Some(e.to_string())),
            }
        }
    });
}

/// Reads from `r` into the spare capacity of `buf` (waiting for data when `block`, else taking
/// only what is there); the bytes read, 0 at the end. Nothing is zeroed first.
fn read_into(r: &TcpStream, buf: &mut Vec<u8>, block: bool) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    let flags = if block { 0 } else { libc::MSG_DONTWAIT };
    // SAFETY: `spare` is valid for writes of its length; the fd is open while `r` lives.
    let n = unsafe { libc::recv(r.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), flags) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: recv initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

fn v4(a: Option<std::net::SocketAddr>) -> SocketAddrV4 {
    match a {
        Some(std::net::SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    }
}

/// Source ports a kernel peer trusts, tried in this order (as ksocklnd's `lnet_connect`).
fn reserved_ports() -> impl Iterator<Item = u16> {
    (512..=1023u16).rev()
}

fn connect_from(to: SocketAddrV4, from_ip: Ipv4Addr, ports: impl Iterator<Item = u16>, reserved: bool) -> std::io::Result<TcpStream> {
    let mk = || -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        Ok(s)
    };
    // Lustre peers only trust privileged source ports: try 1023 down to 512 as ksocklnd does.
    for port in ports {
        let s = mk()?;
        match s.bind(&SockAddr::from(SocketAddrV4::new(from_ip, port))) {
            Ok(()) => match s.connect_timeout(&SockAddr::from(to), Duration::from_secs(5)) {
                Ok(()) => return Ok(s.into()),
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
                Err(e) => return Err(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => break,
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => return Err(e),
            Err(_) => continue,
        }
    }
    if reserved {
        // A kernel peer (accept=secure) refuses anything else: say so rather than try.
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("no reserved source port (1023..512) on {from_ip} could be bound to connect to {to} (needs root or CAP_NET_BIND_SERVICE; unprivileged clusters need the unprivileged mode)"),
        ));
    }
    debug!(%to, "unprivileged mode: connecting from an ephemeral port");
    let s = mk()?;
    s.bind(&SockAddr::from(SocketAddrV4::new(from_ip, 0)))?;
    s.connect_timeout(&SockAddr::from(to), Duration::from_secs(5))?;
    Ok(s.into())
}

impl Drop for ThreadIo {
    /// Closes the listeners and every connection; the I/O threads then end on their own.
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        {
            let _guard = self.shared.streams.lock().unwrap();
            self.shared.closed.store(true, Ordering::SeqCst);
        }
        for l in self.shared.listeners.lock().unwrap().drain(..) {
            // SAFETY: shutting down a listening socket we own makes its blocked accept() fail.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
        for (_, s) in self.shared.streams.lock().unwrap().drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.shared.writers.lock().unwrap().clear();
        self.shared.drained.notify_all();
    }
}

impl SockIo for ThreadIo {
    fn release(&mut self, conn: ConnId, n: usize, buf: Vec<u8>) {
        if n > 0 {
            let mut r = self.shared.reading.lock().unwrap();
            if let Some(h) = r.held.get_mut(&conn) {
                *h -= n.min(*h);
                self.shared.drained.notify_all();
            }
        }
        let mut pool = self.shared.read_bufs.lock().unwrap();
        if pool.len() < READ_POOL && buf.capacity() >= READ_CHUNK {
            pool.push(buf);
        }
    }

    fn listen(&mut self, addr: SocketAddrV4) -> std::io::Result<()> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.bind(&SockAddr::from(addr)).map_err(|e| std::io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
        s.listen(128)?;
        let l: std::net::TcpListener = s.into();
        self.shared.listeners.lock().unwrap().push(l.try_clone()?);
        let sh = self.shared.clone();
        std::thread::spawn(move || {
            let (mut failed, mut warned) = (0u64, None::<std::time::Instant>);
            for c in l.incoming() {
                match c {
                    Ok(stream) => {
                        let peer = v4(stream.peer_addr().ok());
                        if sh.live.load(Ordering::SeqCst) >= sh.max_conns.load(Ordering::Relaxed) {
                            warn!(%peer, "refusing connection: {} connections already open", sh.live.load(Ordering::SeqCst));
                            let _ = stream.shutdown(Shutdown::Both);
                            continue;
                        }
                        let conn = sh.next_accepted.fetch_add(1, Ordering::Relaxed);
                        let local = v4(stream.local_addr().ok());
                        start_conn(&sh, conn, stream, SockInput::Accepted { conn, peer, local });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return, // shut down
                    Err(e) => {
                        // Out of descriptors (EMFILE) stays so until a connection closes: wait
                        // instead of spinning on it, and say so once a second, not per try (a
                        // 300-node run wrote 26 million such lines).
                        failed += 1;
                        if warned.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
                            warn!("accept on {addr}: {e} ({failed} failed accepts)");
                            (failed, warned) = (0, Some(std::time::Instant::now()));
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
            }
        });
        Ok(())
    }

    fn connect(&mut self, conn: ConnId, to: SocketAddrV4, from_ip: Ipv4Addr, reserved: bool) {
        let sh = self.shared.clone();
        std::thread::spawn(move || match connect_from(to, from_ip, reserved_ports(), reserved) {
            Ok(stream) => {
                let local = v4(stream.local_addr().ok());
                start_conn(&sh, conn, stream, SockInput::Connected { conn, local });
            }
            Err(e) => sh.push(SockInput::ConnectFailed { conn, error: format!("connect to {to}: {e}") }),
        });
    }

    fn write(&mut self, conn: ConnId, data: Vec<u8>, tag: u64) {
        let w = self.shared.writers.lock().unwrap().get(&conn).cloned();
        match w {
            Some(w) => {
                if w.send(WriteCmd::Data(data, tag)).is_err() {
                    self.shared.push(SockInput::Closed { conn, error: Some("writer gone".into()) });
                }
            }
            None => self.shared.push(SockInput::Closed { conn, error: Some("not connected".into()) }),
        }
    }

    fn close(&mut self, conn: ConnId) {
        self.shared.unpause(conn);
        // The writer flushes what is queued (e.g. a refusing HELLO), then shuts the socket.
        let w = self.shared.writers.lock().unwrap().remove(&conn);
        let s = self.shared.streams.lock().unwrap().remove(&conn);
        match w {
            Some(w) if w.send(WriteCmd::Close).is_ok() => {}
            _ => {
                if let Some(s) = s {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }

    fn abort(&mut self, conn: ConnId) {
        self.shared.unpause(conn);
        // Shutting the socket down unblocks a writer stuck on a peer that stopped reading.
        let s = self.shared.streams.lock().unwrap().remove(&conn);
        self.shared.writers.lock().unwrap().remove(&conn);
        if let Some(s) = s {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn poll(&mut self, out: &mut Vec<SockInput>) {
        let from = out.len();
        out.extend(self.rx.try_iter());
        let taken: usize = out[from..].iter().map(|i| if let SockInput::Data { data, .. } = i { data.len() } else { 0 }).sum();
        if taken > 0 {
            let mut r = self.shared.reading.lock().unwrap();
            r.unread -= taken.min(r.unread);
            self.shared.drained.notify_all();
        }
    }

    fn pause_read(&mut self, conn: ConnId, paused: bool) {
        if paused {
            self.shared.reading.lock().unwrap().paused.insert(conn);
        } else {
            self.shared.unpause(conn);
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
#[path = "io_tests.rs"]
mod tests;
