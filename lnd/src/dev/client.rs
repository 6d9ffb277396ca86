//! The node side of `dmadev`: connect, hand over the queue region and memory, then submit
//! descriptors and reap completions through the shared rings.

use super::proto::{self, recv_frame, send_frame};
use super::ring::{self, Rings};
use super::device::{CompKind, Completion, DevError, Desc, DmaDevice, SMSG_MAX};
use crate::mem::Mem;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A node's connection to a `dmadev` process.
pub struct ShmDevice {
    sock: UnixStream,
    q: Arc<Mem>,
    mem: Arc<Mem>,
    key: u32,
    addr: u32,
    scratch: Vec<u8>,
    /// Our mailbox's slots.
    mb_n: u32,
}

fn status_of(body: &[u8], addr: u32) -> Result<(), DevError> {
    match proto::u32_at(body, 0) {
        Some(proto::ST_OK) => Ok(()),
        Some(proto::ST_ADDR_IN_USE) => Err(DevError::AddrInUse(addr)),
        Some(_) => Err(DevError::Refused(String::from_utf8_lossy(&body[4..]).into_owned())),
        None => Err(DevError::Protocol("empty reply".into())),
    }
}

/// Asks the device serving `fabric_dir` to cut (`on`) or heal the fabric between addresses `a`
/// and `b` (a partition of that fabric alone: sends across fail as to an unreachable peer).
pub fn cut(fabric_dir: &Path, a: u32, b: u32, on: bool) -> Result<(), DevError> {
    let path = fabric_dir.join(proto::SOCK_NAME);
    let sock = UnixStream::connect(&path).map_err(|e| DevError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
    let body: Vec<u8> = [a, b, on as u32].iter().flat_map(|x| x.to_le_bytes()).collect();
    send_frame(&sock, proto::F_CUT, &body, None)?;
    let reply = recv_frame(&sock)?.ok_or_else(|| DevError::Protocol("device closed before answering the cut".into()))?;
    if reply.ty != proto::F_CUT_OK {
        return Err(DevError::Protocol(format!("expected a cut answer, got frame type {}", reply.ty)));
    }
    status_of(&reply.body, a)
}

impl ShmDevice {
    /// Attaches fabric address `addr` to the device serving `fabric_dir`, registering a shared
    /// memory region of `mem_size` bytes for LNet buffers.
    pub fn connect(fabric_dir: &Path, addr: u32, mem_size: usize) -> Result<ShmDevice, DevError> {
        let q = Mem::memfd("lnet-queue", ring::QUEUE_BYTES)?;
        let mem = Mem::memfd("lnet-mem", mem_size)?;
        Self::attach_with(fabric_dir, addr, q, mem)
    }

    /// [`ShmDevice::connect`] with a mailbox of `mailbox` slots (see [`ring::mailbox_slots`]),
    /// retried for up to `wait` while the device is still starting (containers start in any
    /// order) or our address is still held by a previous incarnation the device has not yet
    /// seen go (a node restarted at once).
    pub fn connect_within(fabric_dir: &Path, addr: u32, mem_size: usize, mailbox: u32, wait: Duration) -> Result<ShmDevice, DevError> {
        let q = Mem::memfd("lnet-queue", ring::queue_bytes(mailbox))?;
        let mem = Mem::memfd("lnet-mem", mem_size)?;
        Self::attach_within(fabric_dir, addr, q, mem, wait)
    }

    /// [`ShmDevice::attach_with`] an existing memory (a node's second fabric registers the
    /// memory of its first), retried as [`ShmDevice::connect_within`] is.
    pub fn attach_within(fabric_dir: &Path, addr: u32, q: Arc<Mem>, mem: Arc<Mem>, wait: Duration) -> Result<ShmDevice, DevError> {
        let t0 = std::time::Instant::now();
        loop {
            match Self::attach_with(fabric_dir, addr, q.clone(), mem.clone()) {
                Err(DevError::Io(e)) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) && t0.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(DevError::AddrInUse(_)) if t0.elapsed() < wait => std::thread::sleep(Duration::from_millis(20)),
                r => return r,
            }
        }
    }

    /// The queue region (rings and mailbox) shared with the device.
    pub fn queue(&self) -> &Arc<Mem> {
        &self.q
    }

    /// Attaches with an existing queue region and memory — after the device restarted, so every
    /// buffer the node's MDs point at stays where it is; the rings start empty.
    pub fn attach_with(fabric_dir: &Path, addr: u32, q: Arc<Mem>, mem: Arc<Mem>) -> Result<ShmDevice, DevError> {
        let mem_size = mem.len();
        let path = fabric_dir.join(proto::SOCK_NAME);
        let sock = UnixStream::connect(&path)
            .map_err(|e| DevError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
        let mb_n = Rings::new(&q, true).map_err(DevError::Protocol)?.mailbox_len();
        let mut hello = addr.to_le_bytes().to_vec();
        hello.extend_from_slice(&(q.len() as u64).to_le_bytes());
        send_frame(&sock, proto::F_HELLO, &hello, Some(q.fd().unwrap().as_raw_fd()))?;
        let reply = recv_frame(&sock)?.ok_or_else(|| DevError::Protocol("device closed during hello".into()))?;
        if reply.ty != proto::F_HELLO_OK {
            return Err(DevError::Protocol(format!("unexpected frame {} to hello", reply.ty)));
        }
        status_of(&reply.body, addr)?;
        send_frame(&sock, proto::F_REG, &(mem_size as u64).to_le_bytes(), Some(mem.fd().unwrap().as_raw_fd()))?;
        let reply = recv_frame(&sock)?.ok_or_else(|| DevError::Protocol("device closed during register".into()))?;
        status_of(&reply.body, addr)?;
        let key = proto::u32_at(&reply.body, 4).ok_or_else(|| DevError::Protocol("register reply lacks key".into()))?;
        Ok(ShmDevice { sock, q, mem, key, addr, scratch: vec![0; SMSG_MAX], mb_n })
    }

    fn rings(&self) -> Rings<'_> {
        Rings { mem: &self.q }
    }

    /// A handle for sleeping until completions arrive, usable from another thread.
    pub fn waker(&self) -> std::io::Result<ShmWaker> {
        Ok(ShmWaker { q: self.q.clone(), sock: self.sock.try_clone()? })
    }
}

/// Sleeps on the completion doorbell of one [`ShmDevice`].
pub struct ShmWaker {
    q: Arc<Mem>,
    sock: UnixStream,
}

impl ShmWaker {
    /// Arms the completion doorbell; `false` if completions are already pending (no doorbell
    /// will come for those).
    pub fn arm(&self) -> bool {
        let r = Rings { mem: &self.q };
        r.word(ring::CQ_ARMED).store(1, Ordering::SeqCst);
        if r.cq_pending() != 0 {
            r.word(ring::CQ_ARMED).store(0, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Reads one doorbell frame (blocking up to `timeout`). `Ok(false)` on timeout; an error
    /// when the device has gone away.
    pub fn read_doorbell(&self, timeout: Option<Duration>) -> Result<bool, DevError> {
        self.sock.set_read_timeout(timeout)?;
        match recv_frame(&self.sock) {
            Ok(Some(_)) => Ok(true),
            Ok(None) => Err(DevError::Protocol("device closed the connection".into())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Another handle on the same doorbell (e.g. for a thread that only reads doorbells).
    pub fn clone_for_thread(&self) -> std::io::Result<ShmWaker> {
        Ok(ShmWaker { q: self.q.clone(), sock: self.sock.try_clone()? })
    }

    /// Arms and sleeps until completions are pending or `timeout` passes (after polling for a
    /// short spin budget, see [`super::server::spin_budget`]).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<(), DevError> {
        let spin = super::server::spin_budget();
        let t0 = std::time::Instant::now();
        let r = Rings { mem: &self.q };
        while r.cq_pending() == 0 && t0.elapsed() < spin {
            std::hint::spin_loop();
        }
        if r.cq_pending() == 0 && self.arm() {
            self.read_doorbell(timeout)?;
        }
        Ok(())
    }
}

impl DmaDevice for ShmDevice {
    fn addr(&self) -> u32 {
        self.addr
    }
    fn mem(&self) -> &Arc<Mem> {
        &self.mem
    }
    fn key(&self) -> u32 {
        self.key
    }
    fn sq_space(&self) -> usize {
        (ring::SQ_N - self.rings().sq_pending()) as usize
    }
    fn submit(&mut self, d: &Desc) -> Result<(), DevError> {
        let r = self.rings();
        if r.sq_pending() >= ring::SQ_N {
            return Err(DevError::SqFull);
        }
        let tail = r.word(ring::SQ_TAIL).load(Ordering::Relaxed);
        r.write_desc(tail, d).map_err(|e| DevError::Protocol(e.to_string()))?;
        r.word(ring::SQ_TAIL).store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }
    fn doorbell(&mut self) {
        if self.rings().word(ring::SQ_ARMED).swap(0, Ordering::SeqCst) == 1 {
            let _ = send_frame(&self.sock, proto::F_DOORBELL, &[], None);
        }
    }
    fn poll(&mut self, f: &mut dyn FnMut(&Completion, &[u8])) -> usize {
        let q = self.q.clone();
        let r = Rings { mem: &q };
        let mut n = 0;
        loop {
            let head = r.word(ring::CQ_HEAD).load(Ordering::Relaxed);
            if head == r.word(ring::CQ_TAIL).load(Ordering::Acquire) {
                break;
            }
            if let Some((c, slot)) = r.read_comp(head) {
                if c.kind == CompKind::SmsgRecv {
                    let len = (c.len as usize).min(SMSG_MAX);
                    let ok = q.read(Rings::mailbox_off(slot, self.mb_n), &mut self.scratch[..len]).is_ok();
                    let mb = r.word(ring::MB_HEAD);
                    mb.store(mb.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
                    if ok {
                        f(&c, &self.scratch[..len]);
                    }
                } else {
                    f(&c, &[]);
                }
                n += 1;
            }
            r.word(ring::CQ_HEAD).store(head.wrapping_add(1), Ordering::Release);
        }
        if r.word(ring::CQ_OVERFLOW).swap(0, Ordering::SeqCst) == 1 {
            let _ = send_frame(&self.sock, proto::F_DOORBELL, &[], None);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    /// A control client cuts and heals two addresses of a running device (`dmadev --cut`, what
    /// the harness's fabric partitions use); a short cut frame is refused with a reason.
    #[test]
    #[cfg_attr(miri, ignore = "sockets are not available under Miri")]
    fn a_control_client_cuts_and_heals_the_fabric() {
        let dir = tempfile::tempdir().unwrap();
        let server = super::super::server::DevServer::bind(dir.path(), 1).unwrap();
        let engine = server.engine();
        std::thread::spawn(move || server.run());
        cut(dir.path(), 3, 4, true).unwrap();
        assert!(engine.lock().unwrap().is_cut(4, 3), "both ways");
        cut(dir.path(), 4, 3, false).unwrap();
        assert!(!engine.lock().unwrap().is_cut(3, 4));
        let sock = UnixStream::connect(dir.path().join(proto::SOCK_NAME)).unwrap();
        send_frame(&sock, proto::F_CUT, &[1, 0, 0, 0], None).unwrap();
        let r = recv_frame(&sock).unwrap().unwrap();
        assert_eq!((r.ty, proto::u32_at(&r.body, 0)), (proto::F_CUT_OK, Some(proto::ST_REFUSED)));
        assert!(String::from_utf8_lossy(&r.body[4..]).contains("short"));
    }

    use super::*;

    /// A node killed and started again at once (a restart fault) can find its address still
    /// held by its dead self until the device notices the hang-up: it must wait for the
    /// address, not fail (which ends the new node: "node oss1 exited while node oss1 was
    /// starting" was seen in a loaded test run).
    #[test]
    #[cfg_attr(miri, ignore = "memfds and sockets are not available under Miri")]
    fn a_node_that_comes_back_at_once_gets_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let srv = super::super::server::DevServer::bind(dir.path(), 1).unwrap();
        std::thread::spawn(move || srv.run());
        let wait = Duration::from_secs(10);
        // The old incarnation, not yet noticed gone: it lets go 200 ms after the new one asks.
        let old = ShmDevice::connect_within(dir.path(), 7, 1 << 16, ring::MB_MIN, wait).unwrap();
        let gone = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(old);
        });
        let t0 = std::time::Instant::now();
        let new = ShmDevice::connect_within(dir.path(), 7, 1 << 16, ring::MB_MIN, wait);
        assert!(new.is_ok(), "the new incarnation attaches: {}", new.err().unwrap());
        assert!(t0.elapsed() >= Duration::from_millis(150), "it waited for the old one");
        gone.join().unwrap();
        // A live holder is still refused once the wait is over, with the address named.
        let held = ShmDevice::connect_within(dir.path(), 7, 1 << 16, ring::MB_MIN, Duration::from_millis(100));
        assert!(matches!(&held, Err(DevError::AddrInUse(7))), "{:?}", held.err());
    }
}
