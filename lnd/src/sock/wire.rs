//! ksocklnd wire formats (spec §3): the acceptor connection request, HELLO V2/V3 and the 24-byte
//! `ksock_msg` header. Sender byte order on the wire: we emit little-endian and accept peers
//! whose magic reads byte-swapped.

use crate::wire::Nid;

pub const ACCEPTOR_MAGIC: u32 = 0xacce_7100;
pub const ACCEPTOR_VERSION: u32 = 1;
pub const PROTO_MAGIC: u32 = 0x4572_6963;
pub const TCP_MAGIC_V1: u32 = 0xeebc_0ded;
pub const CONNREQ_LEN: usize = 16;
pub const HELLO_LEN: usize = 56;
pub const KSOCK_HDR_LEN: usize = 24;
/// Most IPs a HELLO may list (Linux accepts ≤ 16).
pub const MAX_HELLO_IPS: u32 = 16;

pub const KSOCK_MSG_NOOP: u32 = 0xC0;
pub const KSOCK_MSG_LNET: u32 = 0xC1;

/// Connection types, from the sender's point of view.
pub mod ctype {
    pub const ANY: u32 = 0;
    pub const CONTROL: u32 = 1;
    pub const BULK_IN: u32 = 2;
    pub const BULK_OUT: u32 = 3;
    pub const NONE: u32 = 0xFFFF_FFFF;

    /// The same connection seen from the other end.
    pub fn invert(t: u32) -> u32 {
        match t {
            BULK_IN => BULK_OUT,
            BULK_OUT => BULK_IN,
            t => t,
        }
    }

    pub fn name(t: u32) -> &'static str {
        match t {
            ANY => "any",
            CONTROL => "control",
            BULK_IN => "bulk_in",
            BULK_OUT => "bulk_out",
            NONE => "none",
            _ => "invalid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SockWireError {
    #[error("bad magic {0:#010x}")]
    Magic(u32),
    #[error("acceptor version {0} unsupported")]
    AcceptorVersion(u32),
    #[error("HELLO version {0} unsupported")]
    HelloVersion(u32),
    #[error("HELLO lists {0} IPs (max {MAX_HELLO_IPS})")]
    TooManyIps(u32),
    #[error("ksock message type {0:#x} unknown")]
    MsgType(u32),
}

pub use crate::wire::order::Order;

/// The acceptor preamble the active side sends first (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnReq {
    pub version: u32,
    /// The passive (target) node's NID.
    pub nid: Nid,
}

impl ConnReq {
    pub fn parse(b: &[u8; CONNREQ_LEN]) -> Result<ConnReq, SockWireError> {
        let o = Order::detect(b, ACCEPTOR_MAGIC).ok_or(SockWireError::Magic(u32::from_le_bytes(b[..4].try_into().unwrap())))?;
        let version = o.u32(b, 4);
        if version != ACCEPTOR_VERSION {
            return Err(SockWireError::AcceptorVersion(version));
        }
        Ok(ConnReq { version, nid: Nid(o.u64(b, 8)) })
    }

    pub fn emit(&self) -> [u8; CONNREQ_LEN] {
        let mut b = [0u8; CONNREQ_LEN];
        b[..4].copy_from_slice(&ACCEPTOR_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..].copy_from_slice(&self.nid.0.to_le_bytes());
        b
    }
}

/// `ksock_hello_msg_nid4` (V2/V3), 56 bytes plus 4 per listed IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub src_nid: Nid,
    pub dst_nid: Nid,
    pub src_pid: u32,
    pub dst_pid: u32,
    pub src_incarnation: u64,
    pub dst_incarnation: u64,
    pub ctype: u32,
    pub ips: Vec<u32>,
}

/// What the first 8 bytes of a HELLO say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloStart {
    /// V2/V3 in this byte order: read `HELLO_LEN - 8` more, then the IPs.
    V2V3 { version: u32, order: Order },
    /// A V1 peer (LNet-header shaped HELLO).
    V1,
    /// A V2+ magic with a version we do not speak.
    Unknown(u32),
}

impl Hello {
    pub fn start(b: &[u8; 8]) -> Result<HelloStart, SockWireError> {
        if let Some(o) = Order::detect(b, PROTO_MAGIC) {
            let version = o.u32(b, 4);
            return Ok(match version {
                2 | 3 => HelloStart::V2V3 { version, order: o },
                v => HelloStart::Unknown(v),
            });
        }
        if Order::detect(b, TCP_MAGIC_V1).is_some() {
            return Ok(HelloStart::V1);
        }
        Err(SockWireError::Magic(u32::from_le_bytes(b[..4].try_into().unwrap())))
    }

    /// Parses the fixed 56 bytes (IPs follow separately: `nips` of them).
    pub fn parse_fixed(b: &[u8; HELLO_LEN], order: Order) -> Result<(Hello, u32), SockWireError> {
        let nips = order.u32(b, 52);
        if nips > MAX_HELLO_IPS {
            return Err(SockWireError::TooManyIps(nips));
        }
        let h = Hello {
            version: order.u32(b, 4),
            src_nid: Nid(order.u64(b, 8)),
            dst_nid: Nid(order.u64(b, 16)),
            src_pid: order.u32(b, 24),
            dst_pid: order.u32(b, 28),
            src_incarnation: order.u64(b, 32),
            dst_incarnation: order.u64(b, 40),
            ctype: order.u32(b, 48),
            ips: Vec::new(),
        };
        Ok((h, nips))
    }

    pub fn emit(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HELLO_LEN + 4 * self.ips.len());
        b.extend_from_slice(&PROTO_MAGIC.to_le_bytes());
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.src_nid.0.to_le_bytes());
        b.extend_from_slice(&self.dst_nid.0.to_le_bytes());
        b.extend_from_slice(&self.src_pid.to_le_bytes());
        b.extend_from_slice(&self.dst_pid.to_le_bytes());
        b.extend_from_slice(&self.src_incarnation.to_le_bytes());
        b.extend_from_slice(&self.dst_incarnation.to_le_bytes());
        b.extend_from_slice(&self.ctype.to_le_bytes());
        b.extend_from_slice(&(self.ips.len() as u32).to_le_bytes());
        for ip in &self.ips {
            b.extend_from_slice(&ip.to_le_bytes());
        }
        b
    }
}

/// The 24-byte `ksock_msg` header in front of every V2/V3 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KsockHdr {
    pub ty: u32,
    pub csum: u32,
    /// Zero-copy request cookie: non-zero = "ACK me".
    pub zc_req: u64,
    /// Zero-copy ACK being returned, or 1 = keepalive.
    pub zc_ack: u64,
}

impl KsockHdr {
    pub fn parse(b: &[u8], order: Order) -> Result<KsockHdr, SockWireError> {
        let ty = order.u32(b, 0);
        if ty != KSOCK_MSG_NOOP && ty != KSOCK_MSG_LNET {
            return Err(SockWireError::MsgType(ty));
        }
        Ok(KsockHdr { ty, csum: order.u32(b, 4), zc_req: order.u64(b, 8), zc_ack: order.u64(b, 16) })
    }

    pub fn emit(&self) -> [u8; KSOCK_HDR_LEN] {
        let mut b = [0u8; KSOCK_HDR_LEN];
        b[..4].copy_from_slice(&self.ty.to_le_bytes());
        b[4..8].copy_from_slice(&self.csum.to_le_bytes());
        b[8..16].copy_from_slice(&self.zc_req.to_le_bytes());
        b[16..24].copy_from_slice(&self.zc_ack.to_le_bytes());
        b
    }
}

/// Linux `crc32_le` with seed 0xFFFFFFFF and no final inversion, as socklnd V2 checksums use
/// (the bitwise NOT of the usual IEEE CRC-32).
pub fn ksock_crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    !h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_connreq() {
        // {0xacce7100, 1, 127.0.0.1@tcp} from spec §3.1, little-endian.
        let want = [0x00, 0x71, 0xce, 0xac, 1, 0, 0, 0, 0x01, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x02, 0x00];
        let c = ConnReq { version: 1, nid: "127.0.0.1@tcp".parse().unwrap() };
        assert_eq!(c.emit(), want);
        assert_eq!(ConnReq::parse(&want).unwrap(), c);
        // A big-endian sender's preamble reads the same.
        let mut be = [0u8; 16];
        be[..4].copy_from_slice(&ACCEPTOR_MAGIC.to_be_bytes());
        be[4..8].copy_from_slice(&1u32.to_be_bytes());
        be[8..].copy_from_slice(&c.nid.0.to_be_bytes());
        assert_eq!(ConnReq::parse(&be).unwrap(), c);
        let mut bad = want;
        bad[4] = 2;
        assert_eq!(ConnReq::parse(&bad), Err(SockWireError::AcceptorVersion(2)));
    }

    #[test]
    fn golden_v3_hello() {
        // spec §3.3: V3 HELLO from 127.0.0.2@tcp to 127.0.0.1@tcp, pid 12345, incarnation 0x1122334455667788,
        // ctype CONTROL, no IPs.
        let want: [u8; 56] = [
            0x63, 0x69, 0x72, 0x45, 3, 0, 0, 0, // magic, version 3
            0x02, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x02, 0x00, // src_nid
            0x01, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x02, 0x00, // dst_nid
            0x39, 0x30, 0, 0, 0, 0, 0, 0, // src_pid 12345, dst_pid 0
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // src incarnation
            0, 0, 0, 0, 0, 0, 0, 0, // dst incarnation
            1, 0, 0, 0, 0, 0, 0, 0, // ctype CONTROL, nips 0
        ];
        let h = Hello {
            version: 3,
            src_nid: "127.0.0.2@tcp".parse().unwrap(),
            dst_nid: "127.0.0.1@tcp".parse().unwrap(),
            src_pid: 12345,
            dst_pid: 0,
            src_incarnation: 0x1122_3344_5566_7788,
            dst_incarnation: 0,
            ctype: ctype::CONTROL,
            ips: vec![],
        };
        assert_eq!(h.emit(), want);
        let start = Hello::start(want[..8].try_into().unwrap()).unwrap();
        let HelloStart::V2V3 { version: 3, order } = start else { panic!("{start:?}") };
        assert_eq!(Hello::parse_fixed(&want, order).unwrap(), (h, 0));
        let mut v9 = want;
        v9[4] = 9;
        assert_eq!(Hello::start(v9[..8].try_into().unwrap()).unwrap(), HelloStart::Unknown(9));
        let mut many = want;
        many[52] = 17;
        assert_eq!(Hello::parse_fixed(&many, order), Err(SockWireError::TooManyIps(17)));
        assert_eq!(Hello::start(&[0xed, 0x0d, 0xbc, 0xee, 1, 0, 0, 0]).unwrap(), HelloStart::V1);
    }

    #[test]
    fn golden_noop_and_types() {
        let keepalive = KsockHdr { ty: KSOCK_MSG_NOOP, csum: 0, zc_req: 0, zc_ack: 1 };
        let want = [0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(keepalive.emit(), want);
        let o = Order { swapped: false };
        assert_eq!(KsockHdr::parse(&want, o).unwrap(), keepalive);
        let mut bad = want;
        bad[0] = 0xc2;
        assert_eq!(KsockHdr::parse(&bad, o), Err(SockWireError::MsgType(0xc2)));
        assert_eq!(ctype::invert(ctype::BULK_IN), ctype::BULK_OUT);
        assert_eq!(ctype::invert(ctype::CONTROL), ctype::CONTROL);
    }

    #[test]
    fn crc_is_not_of_ieee() {
        // IEEE CRC-32 of "123456789" is 0xCBF43926; socklnd's value is its bitwise NOT.
        assert_eq!(ksock_crc(&[b"1234", b"56789"]), !0xCBF4_3926);
    }

    proptest! {
        #[test]
        fn hello_round_trip(v in 2u32..4, s in any::<u64>(), d in any::<u64>(), sp in any::<u32>(), inc in any::<u64>(), ct in 0u32..4, ips in proptest::collection::vec(any::<u32>(), 0..16)) {
            let h = Hello { version: v, src_nid: Nid(s), dst_nid: Nid(d), src_pid: sp, dst_pid: 0, src_incarnation: inc, dst_incarnation: 0, ctype: ct, ips: ips.clone() };
            let b = h.emit();
            let HelloStart::V2V3 { order, .. } = Hello::start(b[..8].try_into().unwrap()).unwrap() else { panic!() };
            let (mut p, n) = Hello::parse_fixed(b[..56].try_into().unwrap(), order).unwrap();
            prop_assert_eq!(n as usize, ips.len());
            p.ips = b[56..].chunks(4).map(|c| order.u32(c, 0)).collect();
            prop_assert_eq!(p, h);
        }

        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 56)) {
            let _ = ConnReq::parse(b[..16].try_into().unwrap());
            let _ = Hello::start(b[..8].try_into().unwrap());
            let _ = Hello::parse_fixed(b[..56].try_into().unwrap(), Order { swapped: b[0] & 1 == 1 });
            let _ = KsockHdr::parse(&b, Order { swapped: false });
        }
    }
}
