//! The 72-byte LNet header (`lnet_hdr_nid4`) as Lustre lays it out: a zero-copy view over bytes
//! plus a plain [`HdrRepr`] with `parse` and `emit`. All fields little-endian.

use super::nid::Nid;

/// Bytes in an LNet header on the wire.
pub const HDR_LEN: usize = 72;
/// LNET_MTU: the largest PUT/REPLY payload.
pub const LNET_MTU: u32 = 1 << 20;

/// LNet message types (`lnet_msg_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum MsgType {
    Ack = 0,
    Put = 1,
    Get = 2,
    Reply = 3,
    /// Only legal inside the socklnd V1 handshake.
    Hello = 4,
}

/// An opaque remote handle (`lnet_handle_wire`): only its creator interprets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireHandle {
    pub interface_cookie: u64,
    pub object_cookie: u64,
}

impl WireHandle {
    /// The "no handle" value: both cookies all ones.
    pub const NONE: WireHandle = WireHandle { interface_cookie: u64::MAX, object_cookie: u64::MAX };
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HdrError {
    #[error("LNet header truncated: {0} bytes, need {HDR_LEN}")]
    Truncated(usize),
    #[error("LNet header has unknown message type {0}")]
    BadType(u32),
    #[error("LNet {kind:?} header carries payload_length {len}, must be 0")]
    PayloadNotAllowed { kind: MsgType, len: u32 },
    #[error("LNet {kind:?} payload_length {len} exceeds LNET_MTU ({LNET_MTU})")]
    TooLong { kind: MsgType, len: u32 },
}

mod field {
    pub const DEST_NID: usize = 0;
    pub const SRC_NID: usize = 8;
    pub const DEST_PID: usize = 16;
    pub const SRC_PID: usize = 20;
    pub const TYPE: usize = 24;
    pub const PAYLOAD_LEN: usize = 28;
    pub const WMD: usize = 32; // 16 bytes: ack_wmd / return_wmd / dst_wmd
    pub const MATCH_BITS: usize = 48;
    pub const U56: usize = 56; // ack mlength, put hdr_data (8 bytes), get ptl_index
    pub const U60: usize = 60; // get src_offset
    pub const U64: usize = 64; // put ptl_index, get sink_length
    pub const U68: usize = 68; // put offset
}

/// A zero-copy view over an LNet header.
#[derive(Debug, Clone)]
pub struct Header<T: AsRef<[u8]>> {
    buf: T,
}

macro_rules! le_get {
    ($name:ident, $ty:ty, $off:expr) => {
        pub fn $name(&self) -> $ty {
            let b = self.buf.as_ref();
            <$ty>::from_le_bytes(b[$off..$off + std::mem::size_of::<$ty>()].try_into().unwrap())
        }
    };
}
macro_rules! le_set {
    ($name:ident, $ty:ty, $off:expr) => {
        pub fn $name(&mut self, v: $ty) {
            let b = self.buf.as_mut();
            b[$off..$off + std::mem::size_of::<$ty>()].copy_from_slice(&v.to_le_bytes());
        }
    };
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buf`, checking it holds a whole header.
    pub fn new_checked(buf: T) -> Result<Header<T>, HdrError> {
        let len = buf.as_ref().len();
        if len < HDR_LEN {
            return Err(HdrError::Truncated(len));
        }
        Ok(Header { buf })
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
    le_get!(dest_nid_raw, u64, field::DEST_NID);
    le_get!(src_nid_raw, u64, field::SRC_NID);
    le_get!(dest_pid, u32, field::DEST_PID);
    le_get!(src_pid, u32, field::SRC_PID);
    le_get!(msg_type_raw, u32, field::TYPE);
    le_get!(payload_length, u32, field::PAYLOAD_LEN);
    le_get!(match_bits, u64, field::MATCH_BITS);
    le_get!(u56, u32, field::U56);
    le_get!(u56_64, u64, field::U56);
    le_get!(u60, u32, field::U60);
    le_get!(u64_, u32, field::U64);
    le_get!(u68, u32, field::U68);
    pub fn dest_nid(&self) -> Nid {
        Nid(self.dest_nid_raw())
    }
    pub fn src_nid(&self) -> Nid {
        Nid(self.src_nid_raw())
    }
    pub fn wmd(&self) -> WireHandle {
        let b = self.buf.as_ref();
        WireHandle {
            interface_cookie: u64::from_le_bytes(b[field::WMD..field::WMD + 8].try_into().unwrap()),
            object_cookie: u64::from_le_bytes(b[field::WMD + 8..field::WMD + 16].try_into().unwrap()),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    le_set!(set_dest_nid_raw, u64, field::DEST_NID);
    le_set!(set_src_nid_raw, u64, field::SRC_NID);
    le_set!(set_dest_pid, u32, field::DEST_PID);
    le_set!(set_src_pid, u32, field::SRC_PID);
    le_set!(set_msg_type_raw, u32, field::TYPE);
    le_set!(set_payload_length, u32, field::PAYLOAD_LEN);
    le_set!(set_match_bits, u64, field::MATCH_BITS);
    le_set!(set_u56, u32, field::U56);
    le_set!(set_u56_64, u64, field::U56);
    le_set!(set_u60, u32, field::U60);
    le_set!(set_u64_, u32, field::U64);
    le_set!(set_u68, u32, field::U68);
    pub fn set_wmd(&mut self, h: WireHandle) {
        let b = self.buf.as_mut();
        b[field::WMD..field::WMD + 8].copy_from_slice(&h.interface_cookie.to_le_bytes());
        b[field::WMD + 8..field::WMD + 16].copy_from_slice(&h.object_cookie.to_le_bytes());
    }
}

/// The per-type part of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HdrBody {
    Ack { dst_wmd: WireHandle, match_bits: u64, mlength: u32 },
    Put { ack_wmd: WireHandle, match_bits: u64, hdr_data: u64, ptl_index: u32, offset: u32 },
    Get { return_wmd: WireHandle, match_bits: u64, ptl_index: u32, src_offset: u32, sink_length: u32 },
    Reply { dst_wmd: WireHandle },
}

impl HdrBody {
    pub fn msg_type(&self) -> MsgType {
        match self {
            HdrBody::Ack { .. } => MsgType::Ack,
            HdrBody::Put { .. } => MsgType::Put,
            HdrBody::Get { .. } => MsgType::Get,
            HdrBody::Reply { .. } => MsgType::Reply,
        }
    }
}

/// A parsed LNet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HdrRepr {
    pub dest_nid: Nid,
    pub src_nid: Nid,
    pub dest_pid: u32,
    pub src_pid: u32,
    pub payload_length: u32,
    pub body: HdrBody,
}

impl HdrRepr {
    /// Parses and checks a header the way `lnet_parse` does: known type, no payload on ACK/GET,
    /// PUT/REPLY payload within LNET_MTU.
    pub fn parse<T: AsRef<[u8]>>(h: &Header<T>) -> Result<HdrRepr, HdrError> {
        let len = h.payload_length();
        let body = match h.msg_type_raw() {
            0 => HdrBody::Ack { dst_wmd: h.wmd(), match_bits: h.match_bits(), mlength: h.u56() },
            1 => HdrBody::Put {
                ack_wmd: h.wmd(),
                match_bits: h.match_bits(),
                hdr_data: h.u56_64(),
                ptl_index: h.u64_(),
                offset: h.u68(),
            },
            2 => HdrBody::Get {
                return_wmd: h.wmd(),
                match_bits: h.match_bits(),
                ptl_index: h.u56(),
                src_offset: h.u60(),
                sink_length: h.u64_(),
            },
            3 => HdrBody::Reply { dst_wmd: h.wmd() },
            t => return Err(HdrError::BadType(t)),
        };
        let kind = body.msg_type();
        match kind {
            MsgType::Ack | MsgType::Get if len != 0 => return Err(HdrError::PayloadNotAllowed { kind, len }),
            MsgType::Put | MsgType::Reply if len > LNET_MTU => return Err(HdrError::TooLong { kind, len }),
            _ => {}
        }
        Ok(HdrRepr {
            dest_nid: h.dest_nid(),
            src_nid: h.src_nid(),
            dest_pid: h.dest_pid(),
            src_pid: h.src_pid(),
            payload_length: len,
            body,
        })
    }

    /// Parses a header from the front of `bytes`.
    pub fn parse_bytes(bytes: &[u8]) -> Result<HdrRepr, HdrError> {
        HdrRepr::parse(&Header::new_checked(bytes)?)
    }

    pub fn msg_type(&self) -> MsgType {
        self.body.msg_type()
    }

    /// Writes the header; unused union bytes are zeroed.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut Header<T>) {
        h.buf.as_mut()[..HDR_LEN].fill(0);
        h.set_dest_nid_raw(self.dest_nid.0);
        h.set_src_nid_raw(self.src_nid.0);
        h.set_dest_pid(self.dest_pid);
        h.set_src_pid(self.src_pid);
        h.set_msg_type_raw(self.msg_type() as u32);
        h.set_payload_length(self.payload_length);
        match self.body {
            HdrBody::Ack { dst_wmd, match_bits, mlength } => {
                h.set_wmd(dst_wmd);
                h.set_match_bits(match_bits);
                h.set_u56(mlength);
            }
            HdrBody::Put { ack_wmd, match_bits, hdr_data, ptl_index, offset } => {
                h.set_wmd(ack_wmd);
                h.set_match_bits(match_bits);
                h.set_u56_64(hdr_data);
                h.set_u64_(ptl_index);
                h.set_u68(offset);
            }
            HdrBody::Get { return_wmd, match_bits, ptl_index, src_offset, sink_length } => {
                h.set_wmd(return_wmd);
                h.set_match_bits(match_bits);
                h.set_u56(ptl_index);
                h.set_u60(src_offset);
                h.set_u64_(sink_length);
            }
            HdrBody::Reply { dst_wmd } => h.set_wmd(dst_wmd),
        }
    }

    /// Emits into a fresh 72-byte array.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        self.emit(&mut Header { buf: &mut b[..] });
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A PUT from 127.0.0.2@tcp (pid 12345) to 127.0.0.1@tcp, portal 6, match bits 0x1122,
    /// no ACK, 488 payload bytes: written byte by byte from the spec's table, not by our emitter.
    const PUT_BYTES: [u8; 72] = [
        0x01, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x02, 0x00, // dest_nid 127.0.0.1@tcp
        0x02, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x02, 0x00, // src_nid 127.0.0.2@tcp
        0x39, 0x30, 0x00, 0x00, // dest_pid 12345
        0x39, 0x30, 0x00, 0x00, // src_pid 12345
        0x01, 0x00, 0x00, 0x00, // type PUT
        0xe8, 0x01, 0x00, 0x00, // payload_length 488
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // ack_wmd (none)
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x22, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // match_bits
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // hdr_data
        0x06, 0x00, 0x00, 0x00, // ptl_index
        0x00, 0x00, 0x00, 0x00, // offset
    ];

    #[test]
    fn golden_put() {
        let r = HdrRepr::parse_bytes(&PUT_BYTES).unwrap();
        assert_eq!(r.dest_nid.to_string(), "127.0.0.1@tcp");
        assert_eq!(r.src_nid.to_string(), "127.0.0.2@tcp");
        assert_eq!(r.payload_length, 488);
        assert_eq!(
            r.body,
            HdrBody::Put { ack_wmd: WireHandle::NONE, match_bits: 0x1122, hdr_data: 0, ptl_index: 6, offset: 0 }
        );
        assert_eq!(r.to_bytes(), PUT_BYTES);
    }

    #[test]
    fn get_layout() {
        let r = HdrRepr {
            dest_nid: "7@dma".parse().unwrap(),
            src_nid: "3@dma".parse().unwrap(),
            dest_pid: 12345,
            src_pid: 12345,
            payload_length: 0,
            body: HdrBody::Get {
                return_wmd: WireHandle { interface_cookie: 1, object_cookie: 2 },
                match_bits: 0x8000_0000_0000_0000,
                ptl_index: 8,
                src_offset: 0x10,
                sink_length: 4096,
            },
        };
        let b = r.to_bytes();
        assert_eq!(&b[24..28], &[2, 0, 0, 0]);
        assert_eq!(&b[56..60], &[8, 0, 0, 0]); // ptl_index at 56 for GET
        assert_eq!(&b[60..64], &[0x10, 0, 0, 0]);
        assert_eq!(&b[64..68], &[0, 0x10, 0, 0]);
        assert_eq!(&b[6..8], &[0xd4, 0]); // dma LND type in the NID
        assert_eq!(HdrRepr::parse_bytes(&b).unwrap(), r);
    }

    #[test]
    fn receiver_checks() {
        assert_eq!(HdrRepr::parse_bytes(&PUT_BYTES[..71]), Err(HdrError::Truncated(71)));
        let mut b = PUT_BYTES;
        b[24] = 4;
        assert_eq!(HdrRepr::parse_bytes(&b), Err(HdrError::BadType(4)));
        b[24] = 2; // GET with payload
        assert!(matches!(HdrRepr::parse_bytes(&b), Err(HdrError::PayloadNotAllowed { .. })));
        b[24] = 1;
        b[28..32].copy_from_slice(&(LNET_MTU + 1).to_le_bytes());
        assert!(matches!(HdrRepr::parse_bytes(&b), Err(HdrError::TooLong { .. })));
    }

    fn wmd() -> impl Strategy<Value = WireHandle> {
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| WireHandle { interface_cookie: a, object_cookie: b })
    }

    fn body() -> impl Strategy<Value = (HdrBody, u32)> {
        prop_oneof![
            (wmd(), any::<u64>(), any::<u32>()).prop_map(|(w, m, l)| (HdrBody::Ack { dst_wmd: w, match_bits: m, mlength: l }, 0)),
            (wmd(), any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>(), 0..=LNET_MTU).prop_map(|(w, m, d, p, o, n)| (
                HdrBody::Put { ack_wmd: w, match_bits: m, hdr_data: d, ptl_index: p, offset: o },
                n
            )),
            (wmd(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(w, m, p, o, s)| (
                HdrBody::Get { return_wmd: w, match_bits: m, ptl_index: p, src_offset: o, sink_length: s },
                0
            )),
            (wmd(), 0..=LNET_MTU).prop_map(|(w, n)| (HdrBody::Reply { dst_wmd: w }, n)),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(d in any::<u64>(), s in any::<u64>(), dp in any::<u32>(), sp in any::<u32>(), (body, len) in body()) {
            let r = HdrRepr { dest_nid: Nid(d), src_nid: Nid(s), dest_pid: dp, src_pid: sp, payload_length: len, body };
            prop_assert_eq!(HdrRepr::parse_bytes(&r.to_bytes()).unwrap(), r);
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = HdrRepr::parse_bytes(&b);
        }
    }
}
