//! The I/O edge of socklnd: a small trait the LND drives (listen, connect from a privileged port,
//! write, close) and that reports back inputs; [`ThreadIo`] does it with OS sockets and threads.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

pub type ConnId = u64;

/// Bytes a reader thread asks the socket for at once.
const READ_CHUNK: usize = 256 * 1024;

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
    /// Connects from `from_ip`, binding a privileged port (1023 down to 512) when allowed.
    fn connect(&mut self, conn: ConnId, to: SocketAddrV4, from_ip: Ipv4Addr);
    fn write(&mut self, conn: ConnId, data: Vec<u8>, tag: u64);
    fn close(&mut self, conn: ConnId);
    fn poll(&mut self, out: &mut Vec<SockInput>);
    /// Monotonic time, for keepalives (virtual under simulation).
    fn now(&self) -> Instant;
    /// Gives back the buffer of a `Data` input once consumed (an I/O may reuse it).
    fn recycle(&mut self, _data: Vec<u8>) {}
}

impl<T: SockIo + ?Sized> SockIo for Box<T> {
    fn listen(&mut self, addr: SocketAddrV4) -> std::io::Result<()> {
        (**self).listen(addr)
    }
    fn connect(&mut self, conn: ConnId, to: SocketAddrV4, from_ip: Ipv4Addr) {
        (**self).connect(conn, to, from_ip)
    }
    fn write(&mut self, conn: ConnId, data: Vec<u8>, tag: u64) {
        (**self).write(conn, data, tag)
    }
    fn close(&mut self, conn: ConnId) {
        (**self).close(conn)
    }
    fn poll(&mut self, out: &mut Vec<SockInput>) {
        (**self).poll(out)
    }
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn recycle(&mut self, data: Vec<u8>) {
        (**self).recycle(data)
    }
}

/// Called from I/O threads whenever input is ready (wakes the node's loop).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

enum WriteCmd {
    Data(Vec<u8>, u64),
    Close,
}

struct Shared {
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

impl Shared {
    fn push(&self, i: SockInput) {
        let _ = self.tx.lock().unwrap().send(i);
        (self.wake)();
    }
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
}

fn start_conn(shared: &Arc<Shared>, conn: ConnId, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    {
        let mut streams = shared.streams.lock().unwrap();
        if shared.closed.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if let Ok(s) = stream.try_clone() {
            streams.insert(conn, s);
        }
    }
    let (wtx, wrx) = channel::<WriteCmd>();
    shared.writers.lock().unwrap().insert(conn, wtx);
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            shared.push(SockInput::Closed { conn, error: Some(e.to_string()) });
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
    let mut r = stream;
    std::thread::spawn(move || {
        loop {
            // Read straight into a buffer the LND will consume (and give back): no copy here.
            let mut buf = sh.read_bufs.lock().unwrap().pop().unwrap_or_default();
            buf.resize(READ_CHUNK, 0);
            match r.read(&mut buf) {
                Ok(0) => {
                    sh.writers.lock().unwrap().remove(&conn);
                    sh.streams.lock().unwrap().remove(&conn);
                    sh.push(SockInput::Closed { conn, error: None });
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    sh.push(SockInput::Data { conn, data: buf });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    sh.writers.lock().unwrap().remove(&conn);
                    sh.streams.lock().unwrap().remove(&conn);
                    sh.push(SockInput::Closed { conn, error: Some(e.to_string()) });
                    return;
                }
            }
        }
    });
}

fn v4(a: Option<std::net::SocketAddr>) -> SocketAddrV4 {
    match a {
        Some(std::net::SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    }
}

fn connect_from(to: SocketAddrV4, from_ip: Ipv4Addr) -> std::io::Result<TcpStream> {
    let mk = || -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        Ok(s)
    };
    // Lustre peers only trust privileged source ports: try 1023 down to 512 as ksocklnd does.
    for port in (512..=1023u16).rev() {
        let s = mk()?;
        match s.bind(&SockAddr::from(SocketAddrV4::new(from_ip, port))) {
            Ok(()) => match s.connect_timeout(&SockAddr::from(to), Duration::from_secs(5)) {
                Ok(()) => return Ok(s.into()),
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
                Err(e) => return Err(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => break,
            Err(_) => continue,
        }
    }
    warn!(%to, "no privileged source port available; connecting from an ephemeral port");
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
    }
}

impl SockIo for ThreadIo {
    fn recycle(&mut self, data: Vec<u8>) {
        let mut pool = self.shared.read_bufs.lock().unwrap();
        if pool.len() < 64 && data.capacity() >= READ_CHUNK {
            pool.push(data);
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
            for c in l.incoming() {
                match c {
                    Ok(stream) => {
                        let conn = sh.next_accepted.fetch_add(1, Ordering::Relaxed);
                        let peer = v4(stream.peer_addr().ok());
                        let local = v4(stream.local_addr().ok());
                        // Announce before reading, so no data can overtake the announcement.
                        sh.push(SockInput::Accepted { conn, peer, local });
                        start_conn(&sh, conn, stream);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return, // shut down
                    Err(e) => warn!("accept on {addr}: {e}"),
                }
            }
        });
        Ok(())
    }

    fn connect(&mut self, conn: ConnId, to: SocketAddrV4, from_ip: Ipv4Addr) {
        let sh = self.shared.clone();
        std::thread::spawn(move || match connect_from(to, from_ip) {
            Ok(stream) => {
                let local = v4(stream.local_addr().ok());
                start_conn(&sh, conn, stream);
                sh.push(SockInput::Connected { conn, local });
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

    fn poll(&mut self, out: &mut Vec<SockInput>) {
        out.extend(self.rx.try_iter());
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}
