//! The client's bookkeeping: an RPC in flight and its MDs, RPCs parked for a reconnect or a
//! later time, and the import of each target.

use crate::lnet::MdHandle;
use crate::mem::Seg;
use std::time::Instant;

/// One RPC of a job: what it asks of which target.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Connect { t: usize },
    Create { file: u64, stripe: u32 },
    Write { file: u64, chunk: u64 },
    Read { file: u64, chunk: u64 },
    Sync { file: u64, stripe: u32 },
    Getattr { file: u64, stripe: u32, want: u64 },
    Punch { file: u64, stripe: u32, from: u64 },
    /// OST_FALLOCATE of [0, len) (mode 0: the size becomes len).
    Fallocate { file: u64, stripe: u32, len: u64 },
    Destroy { file: u64, stripe: u32 },
    Disconnect { t: usize },
    /// OBD_PING on an idle import (`ptlrpc_ping`).
    Ping { t: usize },
}

impl Op {
    /// The request's Lustre opcode name and what it is about (for a stalled run's report).
    pub fn label(&self) -> String {
        match *self {
            Op::Connect { .. } => "OST_CONNECT".into(),
            Op::Create { file, stripe } => format!("OST_CREATE file {file} stripe {stripe}"),
            Op::Write { file, chunk } => format!("OST_WRITE file {file} chunk {chunk}"),
            Op::Read { file, chunk } => format!("OST_READ file {file} chunk {chunk}"),
            Op::Sync { file, stripe } => format!("OST_SYNC file {file} stripe {stripe}"),
            Op::Getattr { file, stripe, .. } => format!("OST_GETATTR file {file} stripe {stripe}"),
            Op::Punch { file, stripe, .. } => format!("OST_PUNCH file {file} stripe {stripe}"),
            Op::Fallocate { file, stripe, .. } => format!("OST_FALLOCATE file {file} stripe {stripe}"),
            Op::Destroy { file, stripe } => format!("OST_DESTROY file {file} stripe {stripe}"),
            Op::Disconnect { .. } => "OST_DISCONNECT".into(),
            Op::Ping { .. } => "OBD_PING".into(),
        }
    }
}

/// Our connection to one target (`obd_import`).
#[derive(Debug, Clone, Default)]
pub(super) struct Import {
    pub handle: u64,
    /// Connects so far (`imp_conn_cnt`); every request carries it.
    pub conn_cnt: u32,
    pub reconnecting: bool,
    /// The target checksums bulk data with CRC32C (OBD_CONNECT_CKSUM).
    pub cksum: bool,
    /// When a request last went to the target (the pinger pings after a quiet ping interval).
    pub last_sent: Option<Instant>,
}

/// An RPC waiting to go again: after its target's reconnect (a resend, with its xid), or not
/// before a time (a new request).
#[derive(Debug, Clone, Copy)]
pub(super) struct Parked {
    pub t: usize,
    pub op: Op,
    pub tries: u32,
    pub xid: Option<u64>,
    pub not_before: Option<Instant>,
}

/// The bulk MD of an attempt and its buffer.
pub(super) struct Bulk {
    pub md: MdHandle,
    pub seg: Seg,
    /// Bytes the server PUT into it (a READ).
    pub got: Option<u64>,
    /// LNet is done with the MD (its last event came).
    pub gone: bool,
}

pub(super) struct Rpc {
    pub op: Op,
    pub t: usize,
    pub xid: u64,
    pub reply_md: MdHandle,
    pub bulk: Option<Bulk>,
    pub tries: u32,
    pub sent_at: Instant,
    /// The export handle it was sent with.
    pub handle: u64,
    /// The CRC32C a WRITE sent.
    pub cksum: Option<u32>,
}

/// How an RPC goes again: a resend keeps its xid (MSG_RESENT), a redo is a new request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Again {
    pub xid: Option<u64>,
    pub tries: u32,
}

