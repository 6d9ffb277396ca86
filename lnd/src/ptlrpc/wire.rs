//! ptlrpc wire formats (spec §5): `lustre_msg_v2` with its buffers, `ptlrpc_body_v3`, and the OST
//! bodies (`obdo`, `obd_ioobj`, `niobuf_remote`). Emitted little-endian; a swapped magic is read
//! with swapped fields.

pub const LUSTRE_MSG_MAGIC_V2: u32 = 0x0BD0_0BD3;
pub const PTLRPC_BODY_LEN: usize = 184;
pub const OBDO_LEN: usize = 208;
pub const IOOBJ_LEN: usize = 24;
pub const NIOBUF_LEN: usize = 16;
const MAX_BUFS: u32 = 32;

pub use super::cksum::crc32c;

pub mod portal {
    pub const OSC_REPLY: u32 = 4;
    pub const OST_IO: u32 = 6;
    /// Where osc sends OST_CREATE (`osc_create`); the OSS serves it beside OST_REQUEST.
    pub const OST_CREATE: u32 = 7;
    pub const OST_BULK: u32 = 8;
    pub const OST_REQUEST: u32 = 28;
}

pub mod opc {
    pub const OST_GETATTR: u32 = 1;
    pub const OST_SETATTR: u32 = 2;
    pub const OST_READ: u32 = 3;
    pub const OST_WRITE: u32 = 4;
    pub const OST_CREATE: u32 = 5;
    pub const OST_DESTROY: u32 = 6;
    pub const OST_CONNECT: u32 = 8;
    pub const OST_DISCONNECT: u32 = 9;
    pub const OST_PUNCH: u32 = 10;
    pub const OST_SYNC: u32 = 16;
    pub const OST_FALLOCATE: u32 = 22;
    pub const OBD_PING: u32 = 400;

    pub fn name(o: u32) -> &'static str {
        match o {
            OST_GETATTR => "OST_GETATTR",
            OST_SETATTR => "OST_SETATTR",
            OST_READ => "OST_READ",
            OST_WRITE => "OST_WRITE",
            OST_CREATE => "OST_CREATE",
            OST_DESTROY => "OST_DESTROY",
            OST_CONNECT => "OST_CONNECT",
            OST_DISCONNECT => "OST_DISCONNECT",
            OST_PUNCH => "OST_PUNCH",
            OST_SYNC => "OST_SYNC",
            OST_FALLOCATE => "OST_FALLOCATE",
            OBD_PING => "OBD_PING",
            _ => "UNKNOWN",
        }
    }
}

pub const PTL_RPC_MSG_REQUEST: u32 = 4711;
pub const PTL_RPC_MSG_ERR: u32 = 4712;
pub const PTL_RPC_MSG_REPLY: u32 = 4713;
pub const LUSTRE_OST_VERSION: u32 = 0x0003_0003;
pub const LUSTRE_OBD_VERSION: u32 = 0x0001_0003;
/// `lm_secflvr` of the null policy from an OST (security part 2 in bits 24..31).
pub const SECFLVR_NULL_OST: u32 = 2 << 24;

/// OBD_MD_* bits of `o_valid`.
pub mod valid {
    pub const FLID: u64 = 0x1;
    pub const FLSIZE: u64 = 0x10;
    pub const FLBLOCKS: u64 = 0x20;
    pub const FLFLAGS: u64 = 0x800;
    pub const FLCKSUM: u64 = 0x10_0000;
    pub const FLGROUP: u64 = 0x100_0000;
}

/// `o_flags` checksum type CRC32C (`OBD_FL_CKSUM_CRC32C`; 0x2000 is ADLER, 0x1000 CRC32).
pub const OBD_FL_CKSUM_CRC32C: u32 = 0x0000_4000;
/// All the `o_flags` bits that name a checksum type (`OBD_FL_CKSUM_ALL`).
pub const OBD_FL_CKSUM_ALL: u32 = 0x0000_f000;
/// `ocd_cksum_types` bit for CRC32C (`OBD_CKSUM_CRC32C`).
pub const OBD_CKSUM_CRC32C: u32 = 0x4;
/// `lustre_msg` flags: sent before, no reply seen (`MSG_RESENT`); a replay (`MSG_REPLAY`).
pub const MSG_RESENT: u32 = 0x2;
pub const MSG_REPLAY: u32 = 0x4;
/// A client's replays are all sent (`MSG_REQ_REPLAY_DONE`; with no locks, `MSG_LOCK_REPLAY_DONE`
/// too): on the OBD_PING that ends its part of recovery.
pub const MSG_REQ_REPLAY_DONE: u32 = 0x40;
pub const MSG_LOCK_REPLAY_DONE: u32 = 0x80;
/// `lm_flags`: the sender does adaptive timeouts (`MSGHDR_AT_SUPPORT`): early replies go to
/// offset 0 of its reply buffer, the final reply to `EARLY_REPLY_SIZE`.
pub const MSGHDR_AT_SUPPORT: u32 = 0x1;
/// The size of an early reply, a `lustre_msg_v2` holding only the ptlrpc_body (header 40 + 184):
/// where a final reply lands when the request advertised MSGHDR_AT_SUPPORT.
pub const EARLY_REPLY_SIZE: u64 = 224;
/// CONNECT reply `pb_op_flags`: the target is recovering and this client must replay.
pub const MSG_CONNECT_RECOVERING: u32 = 0x1;
/// CONNECT reply `pb_op_flags`: the target knew this client (`MSG_CONNECT_RECONNECT`) and keeps
/// what replay needs (`MSG_CONNECT_REPLAYABLE`).
pub const MSG_CONNECT_RECONNECT: u32 = 0x2;
pub const MSG_CONNECT_REPLAYABLE: u32 = 0x4;
/// OST_FALLOCATE modes (`o_falloc_mode`, Linux's FALLOC_FL_*): the ones `ofd_fallocate_hdl`
/// takes; none set is a preallocation that extends the size.
pub mod falloc {
    pub const KEEP_SIZE: u32 = 0x01;
    pub const PUNCH_HOLE: u32 = 0x02;
    pub const ZERO_RANGE: u32 = 0x10;
    pub const SUPPORTED: u32 = KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE;
}
/// The end of a PUNCH that truncates (`OBD_OBJECT_EOF`): the only one an OST takes.
pub const OBD_OBJECT_EOF: u64 = u64::MAX;
/// Lustre's `PTLRPC_BULK_OPS_COUNT`: xids go up by this much, so a BRW could use the ones in
/// between as match bits for more bulk MDs.
pub const BULK_OPS_COUNT: u64 = 128;
pub const OBD_BRW_READ: u32 = 0x1;
pub const OBD_BRW_WRITE: u32 = 0x2;

/// Negative errnos a ptlrpc reply carries (Linux numbering, as on the wire).
pub mod rc {
    pub const EPERM: i32 = -1;
    pub const ENOENT: i32 = -2;
    pub const EIO: i32 = -5;
    pub const EAGAIN: i32 = -11;
    pub const ENOMEM: i32 = -12;
    pub const EBUSY: i32 = -16;
    pub const ENODEV: i32 = -19;
    pub const EINVAL: i32 = -22;
    pub const EFBIG: i32 = -27;
    pub const ENOSPC: i32 = -28;
    pub const EPROTO: i32 = -71;
    pub const EBADMSG: i32 = -74;
    pub const EOPNOTSUPP: i32 = -95;
    pub const ENOTCONN: i32 = -107;
    pub const EALREADY: i32 = -114;
}

/// `ocd_connect_flags` bits we use (`OBD_CONNECT_*`).
pub mod connect {
    pub const INDEX: u64 = 0x2;
    pub const VERSION: u64 = 0x20;
    pub const BRW_SIZE: u64 = 0x4_0000;
    pub const CKSUM: u64 = 0x2000_0000;
    pub const FULL20: u64 = 0x10_0000_0000;
    pub const MAXBYTES: u64 = 0x80_0000_0000;
    pub const BULK_MBITS: u64 = 0x2000_0000_0000_0000;
    /// What our OSS grants (the intersection with what a client asks for).
    pub const OST_SUPPORTED: u64 = INDEX | VERSION | BRW_SIZE | CKSUM | FULL20 | MAXBYTES | BULK_MBITS;
}

/// `obd_connect_data` (192 bytes), the fields we use; CONNECT's buffer 4 both ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectData {
    pub flags: u64,
    pub version: u32,
    pub index: u32,
    pub brw_size: u32,
    pub cksum_types: u32,
    pub instance: u32,
    pub maxbytes: u64,
}

pub const CONNECT_DATA_LEN: usize = 192;

impl ConnectData {
    pub fn parse(b: &[u8], swap: bool) -> Result<ConnectData, PtlrpcError> {
        if b.len() < 72 {
            return Err(PtlrpcError::BufLen { idx: 4, len: b.len(), want: 72 });
        }
        let r = Rd { b, swap };
        Ok(ConnectData { flags: r.u64(0), version: r.u32(8), index: r.u32(16), brw_size: r.u32(20), cksum_types: r.u32(52), instance: r.u32(60), maxbytes: r.u64(64) })
    }

    pub fn emit(&self) -> Vec<u8> {
        let mut b = vec![0u8; CONNECT_DATA_LEN];
        put64(&mut b, 0, self.flags);
        put32(&mut b, 8, self.version);
        put32(&mut b, 16, self.index);
        put32(&mut b, 20, self.brw_size);
        put32(&mut b, 52, self.cksum_types);
        put32(&mut b, 60, self.instance);
        put64(&mut b, 64, self.maxbytes);
        b
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PtlrpcError {
    #[error("lustre_msg of {0} bytes is too short")]
    Short(usize),
    #[error("lustre_msg magic {0:#010x} is not LUSTRE_MSG_MAGIC_V2")]
    Magic(u32),
    #[error("lustre_msg has {0} buffers (max {MAX_BUFS})")]
    BufCount(u32),
    #[error("lustre_msg buffers need {need} bytes, message has {have}")]
    Overrun { need: usize, have: usize },
    #[error("buffer {idx} is {len} bytes, need at least {want}")]
    BufLen { idx: usize, len: usize, want: usize },
}

fn r8(n: usize) -> usize {
    (n + 7) & !7
}

/// Fields of one buffer in the sender's order.
#[derive(Clone, Copy)]
struct Rd<'a> {
    b: &'a [u8],
    swap: bool,
}

impl Rd<'_> {
    fn u32(&self, o: usize) -> u32 {
        crate::wire::order::Order { swapped: self.swap }.u32(self.b, o)
    }
    fn u64(&self, o: usize) -> u64 {
        crate::wire::order::Order { swapped: self.swap }.u64(self.b, o)
    }
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// A `lustre_msg_v2`: header fields and its buffers (buffer 0 is the ptlrpc_body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LustreMsg {
    pub secflvr: u32,
    pub flags: u32,
    pub bufs: Vec<Vec<u8>>,
    /// Fields were byte-swapped on the wire.
    pub swapped: bool,
}

impl LustreMsg {
    pub fn new(secflvr: u32, bufs: Vec<Vec<u8>>) -> LustreMsg {
        LustreMsg { secflvr, flags: 0, bufs, swapped: false }
    }

    pub fn parse(b: &[u8]) -> Result<LustreMsg, PtlrpcError> {
        if b.len() < 32 {
            return Err(PtlrpcError::Short(b.len()));
        }
        let magic = u32::from_le_bytes(b[8..12].try_into().unwrap());
        let swap = match magic {
            LUSTRE_MSG_MAGIC_V2 => false,
            m if m == LUSTRE_MSG_MAGIC_V2.swap_bytes() => true,
            m => return Err(PtlrpcError::Magic(m)),
        };
        let r = Rd { b, swap };
        let n = r.u32(0);
        if n == 0 || n > MAX_BUFS {
            return Err(PtlrpcError::BufCount(n));
        }
        let hdr = r8(32 + 4 * n as usize);
        if b.len() < hdr {
            return Err(PtlrpcError::Overrun { need: hdr, have: b.len() });
        }
        let mut off = hdr;
        let mut bufs = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let len = r.u32(32 + 4 * i) as usize;
            let end = off.checked_add(len).filter(|&e| e <= b.len()).ok_or(PtlrpcError::Overrun { need: off.saturating_add(len), have: b.len() })?;
            bufs.push(b[off..end].to_vec());
            off += r8(len);
        }
        Ok(LustreMsg { secflvr: r.u32(4), flags: r.u32(20), bufs, swapped: swap })
    }

    pub fn emit(&self) -> Vec<u8> {
        let n = self.bufs.len();
        let hdr = r8(32 + 4 * n);
        let total = hdr + self.bufs.iter().map(|b| r8(b.len())).sum::<usize>();
        let mut out = vec![0u8; total];
        put32(&mut out, 0, n as u32);
        put32(&mut out, 4, self.secflvr);
        put32(&mut out, 8, LUSTRE_MSG_MAGIC_V2);
        put32(&mut out, 20, self.flags);
        let mut off = hdr;
        for (i, b) in self.bufs.iter().enumerate() {
            put32(&mut out, 32 + 4 * i, b.len() as u32);
            out[off..off + b.len()].copy_from_slice(b);
            off += r8(b.len());
        }
        out
    }

    /// Buffer `idx`, checked to hold at least `want` bytes.
    pub fn buf(&self, idx: usize, want: usize) -> Result<&[u8], PtlrpcError> {
        match self.bufs.get(idx) {
            Some(b) if b.len() >= want => Ok(b),
            Some(b) => Err(PtlrpcError::BufLen { idx, len: b.len(), want }),
            None => Err(PtlrpcError::BufLen { idx, len: 0, want }),
        }
    }

    pub fn body(&self) -> Result<PtlrpcBody, PtlrpcError> {
        PtlrpcBody::parse(self.buf(0, 152)?, self.swapped)
    }
}

/// `ptlrpc_body_v3` (the fields we use; the rest are zero on emit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PtlrpcBody {
    pub handle: u64,
    pub msg_type: u32,
    pub version: u32,
    pub opc: u32,
    pub status: i32,
    pub last_xid: u64,
    pub last_committed: u64,
    pub transno: u64,
    pub flags: u32,
    /// `pb_op_flags`: MSG_CONNECT_* in CONNECT replies.
    pub op_flags: u32,
    pub conn_cnt: u32,
    /// Seconds the sender gives the request (`pb_timeout`): the server's deadline for it. In a
    /// reply, the server's service estimate; in an early reply, the request's new timeout.
    pub timeout: u32,
    /// `pb_service_time`: in a reply, the seconds the server spent on the request.
    pub service_time: u32,
    pub mbits: u64,
}

impl PtlrpcBody {
    pub fn parse(b: &[u8], swap: bool) -> Result<PtlrpcBody, PtlrpcError> {
        if b.len() < 152 {
            return Err(PtlrpcError::BufLen { idx: 0, len: b.len(), want: 152 });
        }
        let r = Rd { b, swap };
        Ok(PtlrpcBody {
            handle: r.u64(0),
            msg_type: r.u32(8),
            version: r.u32(12),
            opc: r.u32(16),
            status: r.u32(20) as i32,
            last_xid: r.u64(24),
            last_committed: r.u64(40),
            transno: r.u64(48),
            flags: r.u32(56),
            op_flags: r.u32(60),
            conn_cnt: r.u32(64),
            timeout: r.u32(68),
            service_time: r.u32(72),
            mbits: r.u64(120),
        })
    }

    pub fn emit(&self) -> Vec<u8> {
        let mut b = vec![0u8; PTLRPC_BODY_LEN];
        put64(&mut b, 0, self.handle);
        put32(&mut b, 8, self.msg_type);
        put32(&mut b, 12, self.version);
        put32(&mut b, 16, self.opc);
        put32(&mut b, 20, self.status as u32);
        put64(&mut b, 24, self.last_xid);
        put64(&mut b, 40, self.last_committed);
        put64(&mut b, 48, self.transno);
        put32(&mut b, 56, self.flags);
        put32(&mut b, 60, self.op_flags);
        put32(&mut b, 64, self.conn_cnt);
        put32(&mut b, 68, self.timeout);
        put32(&mut b, 72, self.service_time);
        put64(&mut b, 120, self.mbits);
        b
    }
}

/// `obdo` as `ost_body` (208 bytes); fields we use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Obdo {
    pub valid: u64,
    pub oid: u64,
    pub seq: u64,
    pub size: u64,
    pub blocks: u64,
    pub flags: u32,
    /// `o_nlink`, which carries the bulk checksum in BRW RPCs (`o_cksum`) and the mode in
    /// OST_FALLOCATE (`o_falloc_mode`).
    pub cksum: u32,
    pub stripe_idx: u32,
}

impl Obdo {
    pub fn parse(b: &[u8], swap: bool) -> Result<Obdo, PtlrpcError> {
        if b.len() < OBDO_LEN {
            return Err(PtlrpcError::BufLen { idx: 1, len: b.len(), want: OBDO_LEN });
        }
        let r = Rd { b, swap };
        Ok(Obdo { valid: r.u64(0), oid: r.u64(8), seq: r.u64(16), size: r.u64(32), blocks: r.u64(64), flags: r.u32(96), cksum: r.u32(100), stripe_idx: r.u32(120) })
    }

    pub fn emit(&self) -> Vec<u8> {
        let mut b = vec![0u8; OBDO_LEN];
        put64(&mut b, 0, self.valid);
        put64(&mut b, 8, self.oid);
        put64(&mut b, 16, self.seq);
        put64(&mut b, 32, self.size);
        put64(&mut b, 64, self.blocks);
        put32(&mut b, 96, self.flags);
        put32(&mut b, 100, self.cksum);
        put32(&mut b, 120, self.stripe_idx);
        b
    }
}

/// `obd_ioobj`: which object a BRW touches and with how many niobufs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoObj {
    pub oid: u64,
    pub seq: u64,
    pub max_brw: u32,
    pub bufcnt: u32,
}

impl IoObj {
    pub fn parse(b: &[u8], swap: bool) -> IoObj {
        let r = Rd { b, swap };
        IoObj { oid: r.u64(0), seq: r.u64(8), max_brw: r.u32(16), bufcnt: r.u32(20) }
    }
    pub fn emit(&self) -> Vec<u8> {
        let mut b = vec![0u8; IOOBJ_LEN];
        put64(&mut b, 0, self.oid);
        put64(&mut b, 8, self.seq);
        put32(&mut b, 16, self.max_brw);
        put32(&mut b, 20, self.bufcnt);
        b
    }
}

/// `niobuf_remote`: one contiguous piece of a BRW.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NioBuf {
    pub offset: u64,
    pub len: u32,
    pub flags: u32,
}

impl NioBuf {
    pub fn parse_all(b: &[u8], swap: bool) -> Vec<NioBuf> {
        b.chunks_exact(NIOBUF_LEN)
            .map(|c| {
                let r = Rd { b: c, swap };
                NioBuf { offset: r.u64(0), len: r.u32(8), flags: r.u32(12) }
            })
            .collect()
    }
    pub fn emit(&self) -> Vec<u8> {
        let mut b = vec![0u8; NIOBUF_LEN];
        put64(&mut b, 0, self.offset);
        put32(&mut b, 8, self.len);
        put32(&mut b, 12, self.flags);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ost_write_example_layout() {
        // spec §5.5: 1 object, 1 niobuf of 4096 B -> buflens [184, 208, 24, 16, 0, 0], header 56,
        // ptlrpc_body @56, ost_body @240, ioobj @448, niobuf @472, total 488.
        let m = LustreMsg::new(
            0,
            vec![
                PtlrpcBody { msg_type: PTL_RPC_MSG_REQUEST, version: LUSTRE_OST_VERSION, opc: opc::OST_WRITE, ..Default::default() }.emit(),
                Obdo::default().emit(),
                IoObj { oid: 5, bufcnt: 1, ..Default::default() }.emit(),
                NioBuf { offset: 0, len: 4096, flags: OBD_BRW_WRITE }.emit(),
                vec![],
                vec![],
            ],
        );
        let b = m.emit();
        assert_eq!(b.len(), 488);
        assert_eq!(&b[0..4], &6u32.to_le_bytes());
        assert_eq!(&b[8..12], &[0xd3, 0x0b, 0xd0, 0x0b]);
        assert_eq!(&b[32..56], &[184, 0, 0, 0, 208, 0, 0, 0, 24, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[56 + 8..56 + 12], &4711u32.to_le_bytes());
        assert_eq!(&b[56 + 16..56 + 20], &4u32.to_le_bytes());
        assert_eq!(&b[448..456], &5u64.to_le_bytes());
        assert_eq!(&b[472 + 8..472 + 12], &4096u32.to_le_bytes());
        let p = LustreMsg::parse(&b).unwrap();
        assert_eq!(p, m);
        assert_eq!(p.body().unwrap().opc, opc::OST_WRITE);
    }

    #[test]
    fn odd_bufcount_pads_header_and_swapped_magic_reads() {
        let m = LustreMsg::new(SECFLVR_NULL_OST, vec![vec![1, 2, 3]]);
        let b = m.emit();
        assert_eq!(b.len(), 40 + 8);
        assert_eq!(b[40..43], [1, 2, 3]);
        let mut be = b.clone();
        for o in [0usize, 4, 8, 32] {
            let v = u32::from_le_bytes(be[o..o + 4].try_into().unwrap());
            be[o..o + 4].copy_from_slice(&v.to_be_bytes());
        }
        let p = LustreMsg::parse(&be).unwrap();
        assert!(p.swapped);
        assert_eq!((p.secflvr, p.bufs[0].clone()), (SECFLVR_NULL_OST, vec![1, 2, 3]));
    }

    #[test]
    fn bad_messages_are_refused() {
        assert_eq!(LustreMsg::parse(&[0; 8]), Err(PtlrpcError::Short(8)));
        let mut b = LustreMsg::new(0, vec![vec![0; 16]]).emit();
        b[8] = 0;
        assert!(matches!(LustreMsg::parse(&b), Err(PtlrpcError::Magic(_))));
        let mut b = LustreMsg::new(0, vec![vec![0; 16]]).emit();
        b[32..36].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(LustreMsg::parse(&b), Err(PtlrpcError::Overrun { .. })));
        b[0..4].copy_from_slice(&99u32.to_le_bytes());
        assert_eq!(LustreMsg::parse(&b), Err(PtlrpcError::BufCount(99)));
    }

    /// Item 3: Lustre's bits (lustre_idl.h): OBD_FL_CKSUM_CRC32C is 0x4000 (0x2000 is ADLER,
    /// which we sent before); OBD_CONNECT_CKSUM with ocd_cksum_types at byte 52.
    #[test]
    fn checksum_flags_and_connect_data_are_lustres() {
        assert_eq!((OBD_FL_CKSUM_CRC32C, OBD_CKSUM_CRC32C, connect::CKSUM, connect::BULK_MBITS), (0x4000, 0x4, 0x2000_0000, 0x2000_0000_0000_0000));
        let c = ConnectData { flags: connect::CKSUM | connect::BULK_MBITS, cksum_types: OBD_CKSUM_CRC32C, index: 3, ..Default::default() };
        let b = c.emit();
        assert_eq!(b.len(), 192);
        assert_eq!(&b[0..8], &(connect::CKSUM | connect::BULK_MBITS).to_le_bytes());
        assert_eq!((&b[16..20], &b[52..56]), (&3u32.to_le_bytes()[..], &4u32.to_le_bytes()[..]));
        assert_eq!(ConnectData::parse(&b, false), Ok(c));
    }

    /// OST_FALLOCATE (22, `osc_fallocate_base`): [start, end) in o_size and o_blocks with
    /// FLSIZE|FLBLOCKS, the mode in o_nlink (`o_falloc_mode`), to OST_IO.
    #[test]
    fn ost_fallocate_round_trip() {
        let o = Obdo { valid: valid::FLID | valid::FLGROUP | valid::FLSIZE | valid::FLBLOCKS, oid: 9, seq: 1, size: 4096, blocks: 1 << 20, cksum: falloc::KEEP_SIZE, ..Default::default() };
        let body = PtlrpcBody { msg_type: PTL_RPC_MSG_REQUEST, version: LUSTRE_OST_VERSION, opc: opc::OST_FALLOCATE, ..Default::default() };
        let b = LustreMsg::new(0, vec![body.emit(), o.emit()]).emit();
        // Header 40 (two buffers), ptlrpc_body @40, obdo @224.
        assert_eq!((b.len(), &b[40 + 16..40 + 20]), (224 + 208, &22u32.to_le_bytes()[..]));
        assert_eq!((&b[224 + 32..224 + 40], &b[224 + 64..224 + 72], &b[224 + 100..224 + 104]), (&4096u64.to_le_bytes()[..], &(1u64 << 20).to_le_bytes()[..], &1u32.to_le_bytes()[..]));
        let m = LustreMsg::parse(&b).unwrap();
        assert_eq!((m.body().unwrap().opc, Obdo::parse(m.buf(1, OBDO_LEN).unwrap(), false).unwrap()), (opc::OST_FALLOCATE, o));
        assert_eq!(opc::name(opc::OST_FALLOCATE), "OST_FALLOCATE");
        assert_eq!((falloc::KEEP_SIZE, falloc::PUNCH_HOLE, falloc::ZERO_RANGE), (libc::FALLOC_FL_KEEP_SIZE as u32, libc::FALLOC_FL_PUNCH_HOLE as u32, libc::FALLOC_FL_ZERO_RANGE as u32));
    }

    /// An early reply is a lustre_msg_v2 with the ptlrpc_body alone: 224 bytes, the size the
    /// final reply is placed after; its pb_timeout and pb_service_time at body offsets 68, 72.
    #[test]
    fn early_reply_layout() {
        let body = PtlrpcBody { msg_type: PTL_RPC_MSG_REPLY, version: LUSTRE_OST_VERSION, opc: opc::OST_WRITE, timeout: 37, service_time: 7, ..Default::default() };
        let mut m = LustreMsg::new(SECFLVR_NULL_OST, vec![body.emit()]);
        m.flags = MSGHDR_AT_SUPPORT;
        let b = m.emit();
        assert_eq!(b.len() as u64, EARLY_REPLY_SIZE);
        assert_eq!((&b[20..24], &b[40 + 68..40 + 72], &b[40 + 72..40 + 76]), (&1u32.to_le_bytes()[..], &37u32.to_le_bytes()[..], &7u32.to_le_bytes()[..]));
        let p = LustreMsg::parse(&b).unwrap();
        assert_eq!((p.flags, p.body().unwrap()), (MSGHDR_AT_SUPPORT, body));
    }

    proptest! {
        #[test]
        fn round_trip(bufs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..7), fl in any::<u32>()) {
            let m = LustreMsg::new(fl, bufs);
            prop_assert_eq!(LustreMsg::parse(&m.emit()).unwrap(), m);
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = b;
            if b.len() >= 12 { b[8..12].copy_from_slice(&LUSTRE_MSG_MAGIC_V2.to_le_bytes()); }
            if let Ok(m) = LustreMsg::parse(&b) { let _ = m.body(); }
        }
    }
}
