//! DMA LND short messages (what rides in one SMSG). The first byte that matters is the type:
//! below 0x10 a device-level *control* message, handled by the LND alone; from 0x10 an *LND*
//! message carrying an LNet header for `lnet_parse`.
//!
//! ```text
//! 0 magic u32 | 4 version u8 | 5 type u8 | 6 credits u16 | 8 src_nid u64 | 16 dst_nid u64 | 24 body
//! NOOP      0x01  -
//! TX_READY  0x02  get_tag u64, tx cookie u64, target_tag u64, nob u32     "pull from here"
//! NAK       0x03  tag u64, status i32                                    "no / failed"
//! GET_DONE  0x04  get_tag u64, nob u32, payload[nob]      a small REPLY's bytes, inline
//! IMMEDIATE 0x10  lnet_hdr[72], payload[hdr.payload_length]
//! PUT_REQ   0x11  lnet_hdr[72], src_tag u64, tx cookie u64, nob u32      (tx already set up)
//! GET_REQ   0x12  lnet_hdr[72], get_tag u64
//! ```
//! All little-endian.

use crate::dev::SMSG_MAX;
use crate::wire::{HdrError, HdrRepr, Nid, HDR_LEN};
use crate::wire::order::{le_u32 as u32_at, le_u64 as u64_at};

pub const MAGIC: u32 = 0x444d_4c44; // "DLMD" read LE
pub const VERSION: u8 = 1;
pub const HDR: usize = 24;
/// Byte offset of the transmit cookie in a PUT_REQ (the device patches it in).
pub const PUT_REQ_COOKIE_AT: usize = HDR + HDR_LEN + 8;
/// Largest payload an IMMEDIATE message carries.
pub const MAX_IMMEDIATE: usize = SMSG_MAX - HDR - HDR_LEN;

pub mod ty {
    pub const NOOP: u8 = 0x01;
    pub const TX_READY: u8 = 0x02;
    pub const NAK: u8 = 0x03;
    pub const GET_DONE: u8 = 0x04;
    pub const IMMEDIATE: u8 = 0x10;
    pub const PUT_REQ: u8 = 0x11;
    pub const GET_REQ: u8 = 0x12;
}

/// Is this message type a control message (never shown to LNet)?
pub fn is_control(t: u8) -> bool {
    t < 0x10
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Noop,
    TxReady { get_tag: u64, cookie: u64, target_tag: u64, nob: u32 },
    Nak { tag: u64, status: i32 },
    /// The target of GET `get_tag` sends the reply's bytes in the message itself (at most
    /// `MAX_IMMEDIATE`): nothing to stage or pull.
    GetDone { get_tag: u64, payload: &'a [u8] },
    Immediate { hdr: HdrRepr, payload: &'a [u8] },
    PutReq { hdr: HdrRepr, src_tag: u64, cookie: u64, nob: u32 },
    GetReq { hdr: HdrRepr, get_tag: u64 },
}

impl Body<'_> {
    pub fn ty(&self) -> u8 {
        match self {
            Body::Noop => ty::NOOP,
            Body::TxReady { .. } => ty::TX_READY,
            Body::Nak { .. } => ty::NAK,
            Body::GetDone { .. } => ty::GET_DONE,
            Body::Immediate { .. } => ty::IMMEDIATE,
            Body::PutReq { .. } => ty::PUT_REQ,
            Body::GetReq { .. } => ty::GET_REQ,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgRepr<'a> {
    pub credits: u16,
    pub src_nid: Nid,
    pub dst_nid: Nid,
    pub body: Body<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmaWireError {
    #[error("short message of {0} bytes, shorter than the {HDR}-byte header")]
    Short(usize),
    #[error("bad magic {0:#010x}")]
    Magic(u32),
    #[error("unsupported version {0}")]
    Version(u8),
    #[error("unknown message type {0:#04x}")]
    Type(u8),
    #[error("message type {ty:#04x} is {got} bytes, expected {want}")]
    Length { ty: u8, got: usize, want: usize },
    #[error("embedded LNet header: {0}")]
    Hdr(#[from] HdrError),
}


impl<'a> MsgRepr<'a> {
    pub fn parse(b: &'a [u8]) -> Result<MsgRepr<'a>, DmaWireError> {
        if b.len() < HDR {
            return Err(DmaWireError::Short(b.len()));
        }
        let magic = u32_at(b, 0);
        if magic != MAGIC {
            return Err(DmaWireError::Magic(magic));
        }
        if b[4] != VERSION {
            return Err(DmaWireError::Version(b[4]));
        }
        let t = b[5];
        let exact = |want: usize| if b.len() == want { Ok(()) } else { Err(DmaWireError::Length { ty: t, got: b.len(), want }) };
        let lnet_hdr = || -> Result<HdrRepr, DmaWireError> {
            if b.len() < HDR + HDR_LEN {
                return Err(DmaWireError::Length { ty: t, got: b.len(), want: HDR + HDR_LEN });
            }
            Ok(HdrRepr::parse_bytes(&b[HDR..HDR + HDR_LEN])?)
        };
        let body = match t {
            ty::NOOP => {
                exact(HDR)?;
                Body::Noop
            }
            ty::TX_READY => {
                exact(HDR + 28)?;
                Body::TxReady { get_tag: u64_at(b, 24), cookie: u64_at(b, 32), target_tag: u64_at(b, 40), nob: u32_at(b, 48) }
            }
            ty::NAK => {
                exact(HDR + 12)?;
                Body::Nak { tag: u64_at(b, 24), status: u32_at(b, 32) as i32 }
            }
            ty::GET_DONE => {
                if b.len() < HDR + 12 {
                    return Err(DmaWireError::Length { ty: t, got: b.len(), want: HDR + 12 });
                }
                exact(HDR + 12 + u32_at(b, 32) as usize)?;
                Body::GetDone { get_tag: u64_at(b, 24), payload: &b[HDR + 12..] }
            }
            ty::IMMEDIATE => {
                let hdr = lnet_hdr()?;
                exact(HDR + HDR_LEN + hdr.payload_length as usize)?;
                Body::Immediate { hdr, payload: &b[HDR + HDR_LEN..] }
            }
            ty::PUT_REQ => {
                let hdr = lnet_hdr()?;
                exact(HDR + HDR_LEN + 20)?;
                Body::PutReq { hdr, src_tag: u64_at(b, 96), cookie: u64_at(b, 104), nob: u32_at(b, 112) }
            }
            ty::GET_REQ => {
                let hdr = lnet_hdr()?;
                exact(HDR + HDR_LEN + 8)?;
                Body::GetReq { hdr, get_tag: u64_at(b, 96) }
            }
            t => return Err(DmaWireError::Type(t)),
        };
        Ok(MsgRepr { credits: u16::from_le_bytes([b[6], b[7]]), src_nid: Nid(u64_at(b, 8)), dst_nid: Nid(u64_at(b, 16)), body })
    }

    /// Appends the encoded message to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(VERSION);
        out.push(self.body.ty());
        out.extend_from_slice(&self.credits.to_le_bytes());
        out.extend_from_slice(&self.src_nid.0.to_le_bytes());
        out.extend_from_slice(&self.dst_nid.0.to_le_bytes());
        match self.body {
            Body::Noop => {}
            Body::TxReady { get_tag, cookie, target_tag, nob } => {
                for v in [get_tag, cookie, target_tag] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&nob.to_le_bytes());
            }
            Body::Nak { tag, status } => {
                out.extend_from_slice(&tag.to_le_bytes());
                out.extend_from_slice(&status.to_le_bytes());
            }
            Body::GetDone { get_tag, payload } => {
                out.extend_from_slice(&get_tag.to_le_bytes());
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(payload);
            }
            Body::Immediate { hdr, payload } => {
                out.extend_from_slice(&hdr.to_bytes());
                out.extend_from_slice(payload);
            }
            Body::PutReq { hdr, src_tag, cookie, nob } => {
                out.extend_from_slice(&hdr.to_bytes());
                out.extend_from_slice(&src_tag.to_le_bytes());
                out.extend_from_slice(&cookie.to_le_bytes());
                out.extend_from_slice(&nob.to_le_bytes());
            }
            Body::GetReq { hdr, get_tag } => {
                out.extend_from_slice(&hdr.to_bytes());
                out.extend_from_slice(&get_tag.to_le_bytes());
            }
        }
    }

    /// Patches the credits field of an encoded message (set when it actually leaves).
    pub fn set_credits(buf: &mut [u8], credits: u16) {
        buf[6..8].copy_from_slice(&credits.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{HdrBody, WireHandle};
    use proptest::prelude::*;

    fn hdr(len: u32) -> HdrRepr {
        HdrRepr {
            dest_nid: "2@dma".parse().unwrap(),
            src_nid: "1@dma".parse().unwrap(),
            dest_pid: 12345,
            src_pid: 12345,
            payload_length: len,
            body: HdrBody::Put { ack_wmd: WireHandle::NONE, match_bits: 7, hdr_data: 0, ptl_index: 4, offset: 0 },
        }
    }

    #[test]
    fn golden_nak_bytes() {
        let m = MsgRepr { credits: 3, src_nid: "1@dma".parse().unwrap(), dst_nid: "2@dma".parse().unwrap(), body: Body::Nak { tag: 0x0102, status: -61 } };
        let mut b = Vec::new();
        m.emit(&mut b);
        assert_eq!(
            b,
            [
                0x44, 0x4c, 0x4d, 0x44, 1, 0x03, 3, 0, // magic, version, type, credits
                1, 0, 0, 0, 0, 0, 0xd4, 0, // src 1@dma
                2, 0, 0, 0, 0, 0, 0xd4, 0, // dst 2@dma
                0x02, 0x01, 0, 0, 0, 0, 0, 0, // tag
                0xc3, 0xff, 0xff, 0xff // -ENODATA
            ]
        );
        assert_eq!(MsgRepr::parse(&b).unwrap(), m);
        assert!(is_control(b[5]));
    }

    #[test]
    fn golden_get_done_bytes() {
        let m = MsgRepr { credits: 1, src_nid: "2@dma".parse().unwrap(), dst_nid: "1@dma".parse().unwrap(), body: Body::GetDone { get_tag: 7, payload: b"ab" } };
        let mut b = Vec::new();
        m.emit(&mut b);
        assert_eq!(
            b,
            [
                0x44, 0x4c, 0x4d, 0x44, 1, 0x04, 1, 0, // magic, version, type, credits
                2, 0, 0, 0, 0, 0, 0xd4, 0, // src 2@dma
                1, 0, 0, 0, 0, 0, 0xd4, 0, // dst 1@dma
                7, 0, 0, 0, 0, 0, 0, 0, // get_tag
                2, 0, 0, 0, b'a', b'b' // nob, payload
            ]
        );
        assert_eq!(MsgRepr::parse(&b).unwrap(), m);
        assert!(is_control(b[5]), "handled by the LND: it finishes a GET of ours");
        assert!(matches!(MsgRepr::parse(&b[..HDR + 8]), Err(DmaWireError::Length { .. })));
    }

    #[test]
    fn every_type_round_trips_and_checks_length() {
        let payload = [9u8; 5];
        let bodies = [
            Body::Noop,
            Body::TxReady { get_tag: 1, cookie: 2, target_tag: 3, nob: 4 },
            Body::Nak { tag: 5, status: -5 },
            Body::GetDone { get_tag: 9, payload: &payload },
            Body::GetDone { get_tag: 10, payload: &[] },
            Body::Immediate { hdr: hdr(5), payload: &payload },
            Body::PutReq { hdr: hdr(1 << 20), src_tag: 6, cookie: 7, nob: 1 << 20 },
            Body::GetReq { hdr: hdr(0), get_tag: 8 },
        ];
        for body in bodies {
            let m = MsgRepr { credits: 1, src_nid: Nid(1), dst_nid: Nid(2), body };
            let mut b = Vec::new();
            m.emit(&mut b);
            assert_eq!(MsgRepr::parse(&b).unwrap(), m);
            b.push(0);
            assert!(matches!(MsgRepr::parse(&b), Err(DmaWireError::Length { .. })), "{body:?} with a trailing byte");
        }
        let mut b = Vec::new();
        MsgRepr { credits: 0, src_nid: Nid(1), dst_nid: Nid(2), body: Body::Noop }.emit(&mut b);
        b[5] = 0x7f;
        assert_eq!(MsgRepr::parse(&b), Err(DmaWireError::Type(0x7f)));
        b[0] = 0;
        assert!(matches!(MsgRepr::parse(&b), Err(DmaWireError::Magic(_))));
        assert_eq!(MAX_IMMEDIATE, 4000);
        let mut b = Vec::new();
        MsgRepr { credits: 0, src_nid: Nid(1), dst_nid: Nid(2), body: Body::PutReq { hdr: hdr(9), src_tag: 1, cookie: 0x1122, nob: 9 } }.emit(&mut b);
        assert_eq!(&b[PUT_REQ_COOKIE_AT..PUT_REQ_COOKIE_AT + 8], &0x1122u64.to_le_bytes());
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200), t in 0u8..0x20) {
            let mut b = b;
            if b.len() >= 8 { b[..4].copy_from_slice(&MAGIC.to_le_bytes()); b[4] = VERSION; b[5] = t; }
            let _ = MsgRepr::parse(&b);
        }
    }
}
