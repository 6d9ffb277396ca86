//! A node's wake-up line: an eventfd that the device, and peers writing straight into its
//! mailbox, ring when the node has said it sleeps (`CQ_ARMED`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

#[derive(Debug)]
pub struct Bell {
    fd: OwnedFd,
}

impl Bell {
    pub fn new() -> std::io::Result<Bell> {
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        Ok(Bell { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Adopts an fd received from elsewhere, refusing anything but an eventfd (a node could
    /// hand the device a pipe that blocks its writer).
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Bell> {
        let what = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        if what.as_os_str() != "anon_inode:[eventfd]" {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bell is {}, not an eventfd", what.display())));
        }
        Ok(Bell { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write from a local buffer. A full counter (never in practice) only
        // means the bell is already ringing.
        unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr() as *const libc::c_void, 8) };
    }

    fn drain(&self) {
        let mut b = [0u8; 8];
        // SAFETY: an 8-byte read into a local buffer; nonblocking.
        unsafe { libc::read(self.fd.as_raw_fd(), b.as_mut_ptr() as *mut libc::c_void, 8) };
    }

    /// Sleeps until the bell rings or `sock` becomes readable (a frame or a hang-up), or
    /// `timeout` passes. Returns (rung, sock readable).
    pub fn wait_with(&self, sock: RawFd, timeout: Option<Duration>) -> std::io::Result<(bool, bool)> {
        let mut fds = [
            libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: sock, events: libc::POLLIN, revents: 0 },
        ];
        let ms = timeout.map(|t| t.as_millis().clamp(if t.is_zero() { 0 } else { 1 }, i32::MAX as u128) as i32).unwrap_or(-1);
        // SAFETY: poll over a local array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted { Ok((false, false)) } else { Err(e) };
        }
        let rung = fds[0].revents & libc::POLLIN != 0;
        if rung {
            self.drain();
        }
        Ok((rung, fds[1].revents != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "eventfd is not available under Miri")]
    fn a_rung_bell_wakes_and_a_pipe_is_no_bell() {
        let b = Bell::new().unwrap();
        let (a, _s) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(b.wait_with(a.as_raw_fd(), Some(Duration::from_millis(1))).unwrap(), (false, false));
        let dup = Bell::from_fd(b.fd.try_clone().unwrap()).unwrap();
        dup.ring();
        assert_eq!(b.wait_with(a.as_raw_fd(), Some(Duration::from_secs(5))).unwrap(), (true, false));
        assert_eq!(b.wait_with(a.as_raw_fd(), Some(Duration::ZERO)).unwrap(), (false, false), "drained");
        drop(_s);
        assert_eq!(b.wait_with(a.as_raw_fd(), Some(Duration::from_secs(5))).unwrap(), (false, true), "hang-up seen");
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(Bell::from_fd(f.into()).unwrap_err().to_string().contains("not an eventfd"));
    }
}
