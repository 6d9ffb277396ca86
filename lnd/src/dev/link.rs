//! The fabric link's wire format: how two `dmadev`s (one per host) carry a fabric between
//! hosts over TCP. A view-free `Repr` with `parse`/`emit`, as every wire format here; the link
//! itself (forwarding, flow control) builds on it.
//!
//! ```text
//! frame: len u32 (bytes after this field) | type u8 | body             (all little-endian)
//! HELLO      0x01  version u8, host u32, n u32, addr[n] u32   the addresses this device serves
//! ADDR_UP    0x02  addr u32                                   a node attached on the sender's host
//! ADDR_DOWN  0x03  addr u32                                   a node left it (PeerDown over there)
//! SMSG       0x04  seq u64, src u32, dst u32, data[..]       for dst's mailbox on the receiver's host
//! SMSG_DONE  0x05  seq u64, status u8                        the SMSG's fate (the sender's SmsgSent)
//! PULL       0x06  id u64, puller u32, owner u32, cookie u64, tx_off u64, len u64
//!                                                             checked by the owner's device as a local pull
//! PULL_DATA  0x07  id u64, off u64, data[..]                 a piece of the pulled bytes
//! PULL_END   0x08  id u64, status u8                         the pull's outcome
//! CREDIT     0x09  bytes u32                                 the receiver has consumed this many
//!                                                             data bytes: the sender may send as many more
//! ```
//! A sender keeps at most its window of SMSG and PULL_DATA bytes unacknowledged by CREDIT, so a
//! fast host cannot swamp a slow one; every other frame is small and rides free.

use super::device::{DevStatus, SMSG_MAX};
use crate::wire::order::{le_u32 as u32_at, le_u64 as u64_at};

pub const VERSION: u8 = 1;
/// Largest frame body: a PULL_DATA of `CHUNK` bytes plus its header, with room to spare.
pub const MAX_FRAME: u32 = CHUNK as u32 + 64;
/// Bytes of pulled data per PULL_DATA frame: LNet's MTU, so a 1 MiB bulk is one frame (a
/// quarter of it cost a fifth of the link's loopback bandwidth in syscalls).
pub const CHUNK: usize = 1 << 20;
/// Bytes before a frame's body: the length field and the type.
pub const HEAD: usize = 5;
/// The fields of an SMSG before its data (seq, src, dst) and of a PULL_DATA (id, off).
pub const SMSG_FIELDS: usize = 16;
pub const PULL_DATA_FIELDS: usize = 16;
/// Most addresses a HELLO may list.
pub const MAX_ADDRS: u32 = 1 << 16;

pub mod ty {
    pub const HELLO: u8 = 0x01;
    pub const ADDR_UP: u8 = 0x02;
    pub const ADDR_DOWN: u8 = 0x03;
    pub const SMSG: u8 = 0x04;
    pub const SMSG_DONE: u8 = 0x05;
    pub const PULL: u8 = 0x06;
    pub const PULL_DATA: u8 = 0x07;
    pub const PULL_END: u8 = 0x08;
    pub const CREDIT: u8 = 0x09;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkFrame<'a> {
    Hello { host: u32, addrs: Vec<u32> },
    AddrUp { addr: u32 },
    AddrDown { addr: u32 },
    Smsg { seq: u64, src: u32, dst: u32, data: &'a [u8] },
    SmsgDone { seq: u64, status: DevStatus },
    Pull { id: u64, puller: u32, owner: u32, cookie: u64, tx_off: u64, len: u64 },
    PullData { id: u64, off: u64, data: &'a [u8] },
    PullEnd { id: u64, status: DevStatus },
    Credit { bytes: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("frame of {0} bytes (at most {MAX_FRAME})")]
    TooLong(u32),
    #[error("frame shorter than its {0}-byte length field and type")]
    Short(usize),
    #[error("unknown frame type {0:#04x}")]
    Type(u8),
    #[error("frame type {ty:#04x} has {got} body bytes, expected {want}")]
    Length { ty: u8, got: usize, want: usize },
    #[error("link version {0}, this device speaks {VERSION}")]
    Version(u8),
    #[error("HELLO lists {0} addresses (at most {MAX_ADDRS})")]
    Addrs(u32),
    #[error("SMSG of {0} bytes (at most {SMSG_MAX})")]
    SmsgTooLong(usize),
    #[error("PULL_DATA of {0} bytes (at most {CHUNK})")]
    ChunkTooLong(usize),
    #[error("unknown device status {0}")]
    Status(u8),
}

/// A status byte, refused when no [`DevStatus`] has it.
fn status(b: u8) -> Result<DevStatus, LinkError> {
    match DevStatus::from_u8(b) {
        s if s as u8 == b => Ok(s),
        _ => Err(LinkError::Status(b)),
    }
}


impl<'a> LinkFrame<'a> {
    pub fn ty(&self) -> u8 {
        match self {
            LinkFrame::Hello { .. } => ty::HELLO,
            LinkFrame::AddrUp { .. } => ty::ADDR_UP,
            LinkFrame::AddrDown { .. } => ty::ADDR_DOWN,
            LinkFrame::Smsg { .. } => ty::SMSG,
            LinkFrame::SmsgDone { .. } => ty::SMSG_DONE,
            LinkFrame::Pull { .. } => ty::PULL,
            LinkFrame::PullData { .. } => ty::PULL_DATA,
            LinkFrame::PullEnd { .. } => ty::PULL_END,
            LinkFrame::Credit { .. } => ty::CREDIT,
        }
    }

    /// Data bytes this frame costs against the sender's window (SMSG and PULL_DATA only).
    pub fn window_cost(&self) -> usize {
        match self {
            LinkFrame::Smsg { data, .. } | LinkFrame::PullData { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// The length a frame announces in its first four bytes, checked before its body is read.
    pub fn announced_len(head: [u8; 4]) -> Result<u32, LinkError> {
        let n = u32::from_le_bytes(head);
        if n > MAX_FRAME {
            return Err(LinkError::TooLong(n));
        }
        if n == 0 {
            return Err(LinkError::Short(4));
        }
        Ok(n)
    }

    /// Parses one frame body (type byte first: what follows the length field).
    pub fn parse(b: &'a [u8]) -> Result<LinkFrame<'a>, LinkError> {
        let Some((&t, body)) = b.split_first() else { return Err(LinkError::Short(4)) };
        let exact = |want: usize| if body.len() == want { Ok(()) } else { Err(LinkError::Length { ty: t, got: body.len(), want }) };
        let at_least = |want: usize| if body.len() >= want { Ok(()) } else { Err(LinkError::Length { ty: t, got: body.len(), want }) };
        Ok(match t {
            ty::HELLO => {
                at_least(9)?;
                if body[0] != VERSION {
                    return Err(LinkError::Version(body[0]));
                }
                let n = u32_at(body, 5);
                if n > MAX_ADDRS {
                    return Err(LinkError::Addrs(n));
                }
                exact(9 + 4 * n as usize)?;
                LinkFrame::Hello { host: u32_at(body, 1), addrs: (0..n as usize).map(|i| u32_at(body, 9 + 4 * i)).collect() }
            }
            ty::ADDR_UP | ty::ADDR_DOWN => {
                exact(4)?;
                let addr = u32_at(body, 0);
                if t == ty::ADDR_UP {
                    LinkFrame::AddrUp { addr }
                } else {
                    LinkFrame::AddrDown { addr }
                }
            }
            ty::SMSG => {
                at_least(SMSG_FIELDS)?;
                let data = &body[SMSG_FIELDS..];
                if data.len() > SMSG_MAX {
                    return Err(LinkError::SmsgTooLong(data.len()));
                }
                LinkFrame::Smsg { seq: u64_at(body, 0), src: u32_at(body, 8), dst: u32_at(body, 12), data }
            }
            ty::SMSG_DONE => {
                exact(9)?;
                LinkFrame::SmsgDone { seq: u64_at(body, 0), status: status(body[8])? }
            }
            ty::PULL => {
                exact(40)?;
                LinkFrame::Pull { id: u64_at(body, 0), puller: u32_at(body, 8), owner: u32_at(body, 12), cookie: u64_at(body, 16), tx_off: u64_at(body, 24), len: u64_at(body, 32) }
            }
            ty::PULL_DATA => {
                at_least(PULL_DATA_FIELDS)?;
                let data = &body[PULL_DATA_FIELDS..];
                if data.len() > CHUNK {
                    return Err(LinkError::ChunkTooLong(data.len()));
                }
                LinkFrame::PullData { id: u64_at(body, 0), off: u64_at(body, 8), data }
            }
            ty::PULL_END => {
                exact(9)?;
                LinkFrame::PullEnd { id: u64_at(body, 0), status: status(body[8])? }
            }
            ty::CREDIT => {
                exact(4)?;
                LinkFrame::Credit { bytes: u32_at(body, 0) }
            }
            t => return Err(LinkError::Type(t)),
        })
    }

    /// Appends the whole frame (length field first) to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(self.ty());
        let u32s = |out: &mut Vec<u8>, v: &[u32]| v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        let u64s = |out: &mut Vec<u8>, v: &[u64]| v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        match self {
            LinkFrame::Hello { host, addrs } => {
                out.push(VERSION);
                u32s(out, &[*host, addrs.len() as u32]);
                u32s(out, addrs);
            }
            LinkFrame::AddrUp { addr } | LinkFrame::AddrDown { addr } => u32s(out, &[*addr]),
            LinkFrame::Smsg { seq, src, dst, data } => {
                u64s(out, &[*seq]);
                u32s(out, &[*src, *dst]);
                out.extend_from_slice(data);
            }
            LinkFrame::SmsgDone { seq, status } | LinkFrame::PullEnd { id: seq, status } => {
                u64s(out, &[*seq]);
                out.push(*status as u8);
            }
            LinkFrame::Pull { id, puller, owner, cookie, tx_off, len } => {
                u64s(out, &[*id]);
                u32s(out, &[*puller, *owner]);
                u64s(out, &[*cookie, *tx_off, *len]);
            }
            LinkFrame::PullData { id, off, data } => {
                u64s(out, &[*id, *off]);
                out.extend_from_slice(data);
            }
            LinkFrame::Credit { bytes } => u32s(out, &[*bytes]),
        }
        let n = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&n.to_le_bytes());
    }
}

/// The head of a PULL_DATA frame of `n` data bytes (length field, type, id, offset): what the
/// sender writes before the bytes it streams from the transmitter's pages.
pub fn pull_data_head(id: u64, off: u64, n: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEAD + PULL_DATA_FIELDS);
    LinkFrame::PullData { id, off, data: &[] }.emit(&mut b);
    let len = (b.len() - 4 + n) as u32;
    b[..4].copy_from_slice(&len.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(f: &LinkFrame<'_>) {
        let mut b = Vec::new();
        f.emit(&mut b);
        let n = LinkFrame::announced_len(b[..4].try_into().unwrap()).unwrap();
        assert_eq!(n as usize, b.len() - 4);
        assert_eq!(&LinkFrame::parse(&b[4..]).unwrap(), f);
    }

    #[test]
    fn every_frame_round_trips() {
        let data = [7u8; 33];
        for f in [
            LinkFrame::Hello { host: 2, addrs: vec![1, 5, 9] },
            LinkFrame::Hello { host: 0, addrs: vec![] },
            LinkFrame::AddrUp { addr: 4 },
            LinkFrame::AddrDown { addr: 4 },
            LinkFrame::Smsg { seq: 1, src: 2, dst: 3, data: &data },
            LinkFrame::SmsgDone { seq: 1, status: DevStatus::MailboxFull },
            LinkFrame::Pull { id: 9, puller: 1, owner: 2, cookie: 0xdead_beef, tx_off: 4096, len: 1 << 20 },
            LinkFrame::PullData { id: 9, off: 65536, data: &data },
            LinkFrame::PullEnd { id: 9, status: DevStatus::TxConsumed },
            LinkFrame::Credit { bytes: 1 << 20 },
        ] {
            round_trip(&f);
        }
    }

    /// Golden bytes: the link's wire format is fixed (hosts of different builds meet on it).
    #[test]
    fn golden_smsg_and_credit_bytes() {
        let mut b = Vec::new();
        LinkFrame::Smsg { seq: 0x0102, src: 3, dst: 4, data: b"hi" }.emit(&mut b);
        LinkFrame::Credit { bytes: 65536 }.emit(&mut b);
        assert_eq!(
            b,
            [
                19, 0, 0, 0, 0x04, // length, SMSG
                0x02, 0x01, 0, 0, 0, 0, 0, 0, // seq
                3, 0, 0, 0, 4, 0, 0, 0, b'h', b'i', // src, dst, data
                5, 0, 0, 0, 0x09, 0, 0, 1, 0 // length, CREDIT, 65536
            ]
        );
        assert_eq!(LinkFrame::Smsg { seq: 0, src: 0, dst: 0, data: &[0; 100] }.window_cost(), 100);
        assert_eq!(LinkFrame::Credit { bytes: 5 }.window_cost(), 0);
    }

    #[test]
    fn bad_frames_are_named() {
        assert_eq!(LinkFrame::announced_len((MAX_FRAME + 1).to_le_bytes()), Err(LinkError::TooLong(MAX_FRAME + 1)));
        assert_eq!(LinkFrame::parse(&[0x7f]), Err(LinkError::Type(0x7f)));
        assert_eq!(LinkFrame::parse(&[ty::HELLO, 9, 0, 0, 0, 0, 0, 0, 0, 0]), Err(LinkError::Version(9)));
        assert!(matches!(LinkFrame::parse(&[ty::CREDIT, 1, 0]), Err(LinkError::Length { want: 4, got: 2, .. })));
        assert_eq!(LinkFrame::parse(&[ty::PULL_END, 0, 0, 0, 0, 0, 0, 0, 0, 99]), Err(LinkError::Status(99)));
        let mut big = vec![ty::SMSG];
        big.extend(vec![0u8; 16 + SMSG_MAX + 1]);
        assert_eq!(LinkFrame::parse(&big), Err(LinkError::SmsgTooLong(SMSG_MAX + 1)));
        let mut hello = vec![ty::HELLO, VERSION, 0, 0, 0, 0];
        hello.extend_from_slice(&(MAX_ADDRS + 1).to_le_bytes());
        assert_eq!(LinkFrame::parse(&hello), Err(LinkError::Addrs(MAX_ADDRS + 1)));
    }

    proptest! {
        #[test]
        fn parse_never_panics(t in 0u8..12, body in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut b = vec![t];
            b.extend(body);
            if let Ok(f) = LinkFrame::parse(&b) {
                // What parses emits back to the same bytes.
                let mut out = Vec::new();
                f.emit(&mut out);
                prop_assert_eq!(&out[4..], &b[..]);
            }
        }
    }
}
