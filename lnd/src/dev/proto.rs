//! The control channel between a node and `dmadev` over a Unix socket: small framed messages
//! (hello, register, doorbell), with memfds passed as SCM_RIGHTS.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

pub const F_HELLO: u32 = 1; // addr u32, queue_len u64  + fd
pub const F_HELLO_OK: u32 = 2; // status u32, then UTF-8 reason
pub const F_REG: u32 = 3; // len u64 + fd
pub const F_REG_OK: u32 = 4; // status u32, key u32
pub const F_DOORBELL: u32 = 5;
pub const F_UNREG: u32 = 6; // key u32
pub const F_UNREG_OK: u32 = 7; // status u32
pub const F_CUT: u32 = 8; // addr a u32, addr b u32, on u32 (instead of a hello: a control client)
pub const F_CUT_OK: u32 = 9; // status u32, then UTF-8 reason
pub const F_BELL: u32 = 10; // + eventfd: the node's bell (right after its hello; after F_PEER_OK)
pub const F_PEER: u32 = 11; // addr u32 (instead of a hello: a node asks for a peer's mailbox)
pub const F_PEER_OK: u32 = 12; // status u32, generation u32, queue_len u64 + queue fd; then F_BELL
pub const F_LINK_CUT: u32 = 13; // host u32, on u32 (instead of a hello: cut the fabric link to a host); F_CUT_OK
/// Reply statuses: done, refused (a reason follows), the fabric address is held.
pub const ST_OK: u32 = 0;
pub const ST_REFUSED: u32 = 1;
pub const ST_ADDR_IN_USE: u32 = 2;
/// F_PEER: nobody at that address, or direct writes are not allowed now.
pub const ST_NO_PEER: u32 = 3;
pub const ST_NO_DIRECT: u32 = 4;
const MAX_FRAME: u32 = 4096;
/// Socket name inside a fabric directory.
pub const SOCK_NAME: &str = "dmadev.sock";

/// A received frame.
#[derive(Debug)]
pub struct Frame {
    pub ty: u32,
    pub body: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

/// Sends one frame; `fd` rides as SCM_RIGHTS on the header.
pub fn send_frame(sock: &UnixStream, ty: u32, body: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&ty.to_le_bytes());
    hdr[4..].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let mut buf = Vec::with_capacity(8 + body.len());
    buf.extend_from_slice(&hdr);
    buf.extend_from_slice(body);
    match fd {
        None => (&*sock).write_all(&buf),
        Some(fd) => {
            let sent = sendmsg_fd(sock.as_raw_fd(), &buf, fd)?;
            (&*sock).write_all(&buf[sent..])
        }
    }
}

fn sendmsg_fd(sock: RawFd, buf: &[u8], fd: RawFd) -> std::io::Result<usize> {
    // SAFETY: building a msghdr over stack buffers that outlive the call.
    unsafe {
        let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::copy_nonoverlapping(&fd as *const RawFd as *const u8, libc::CMSG_DATA(c), std::mem::size_of::<RawFd>());
        let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Reads the 8-byte header with recvmsg (collecting any fd), then the body.
/// `Ok(None)` on a clean end of stream.
pub fn recv_frame(sock: &UnixStream) -> std::io::Result<Option<Frame>> {
    let mut hdr = [0u8; 8];
    let mut got = 0usize;
    let mut fd = None;
    while got < 8 {
        let (n, f) = recvmsg_fd(sock.as_raw_fd(), &mut hdr[got..])?;
        if f.is_some() {
            fd = f;
        }
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "frame header cut short"));
        }
        got += n;
    }
    let ty = u32::from_le_bytes(hdr[..4].try_into().unwrap());
    let len = u32::from_le_bytes(hdr[4..].try_into().unwrap());
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes (max {MAX_FRAME})")));
    }
    let mut body = vec![0u8; len as usize];
    (&*sock).read_exact(&mut body)?;
    Ok(Some(Frame { ty, body, fd }))
}

fn recvmsg_fd(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    // SAFETY: msghdr over local buffers; fds taken from a well-formed SCM_RIGHTS cmsg only.
    unsafe {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
        let space = libc::CMSG_SPACE((4 * std::mem::size_of::<RawFd>()) as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let n = loop {
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            break n as usize;
        };
        let mut fd = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let mut raw: RawFd = 0;
                    std::ptr::copy_nonoverlapping(data.add(i * 4), &mut raw as *mut RawFd as *mut u8, 4);
                    let owned = OwnedFd::from_raw_fd(raw);
                    if fd.is_none() {
                        fd = Some(owned); // extra fds are closed on drop
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n, fd))
    }
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap()))
}
pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::Mem;

    #[test]
    #[cfg_attr(miri, ignore = "memfd_create and fd passing are not available under Miri")]
    fn frames_carry_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        let m = Mem::memfd("x", 4096).unwrap();
        m.write(0, b"shared").unwrap();
        send_frame(&a, F_REG, &4096u64.to_le_bytes(), Some(m.fd().unwrap().as_raw_fd())).unwrap();
        send_frame(&a, F_DOORBELL, &[], None).unwrap();
        let f = recv_frame(&b).unwrap().unwrap();
        assert_eq!((f.ty, u64_at(&f.body, 0)), (F_REG, Some(4096)));
        let other = Mem::map_fd(f.fd.unwrap(), 4096).unwrap();
        assert_eq!(other.to_vec(0, 6).unwrap(), b"shared");
        let d = recv_frame(&b).unwrap().unwrap();
        assert!(d.ty == F_DOORBELL && d.fd.is_none());
        drop(a);
        assert!(recv_frame(&b).unwrap().is_none());
    }

    #[test]
    #[cfg_attr(miri, ignore = "recvmsg is not available under Miri")]
    fn oversized_frames_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]).unwrap();
        let e = recv_frame(&b).unwrap_err();
        assert!(e.to_string().contains("frame of"), "{e}");
    }
}
