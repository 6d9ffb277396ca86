//! The client's bookkeeping: an RPC in flight and its MDs, RPCs parked for a reconnect or a
//! later time, and the import of each target.

use crate::lnet::MdHandle;
use crate::mem::Seg;
use std::collections::BTreeMap;
use crate::ptlrpc::at::Estimate;
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
    /// OBD_PING with MSG_REQ_REPLAY_DONE: our replays to a recovering target are all sent; its
    /// reply comes when the target's recovery is over.
    ReplayDone { t: usize },
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
            Op::ReplayDone { .. } => "OBD_PING (replay done)".into(),
        }
    }

    /// Whether the op changes the target (the server gives it a transno; kept for replay).
    pub fn modifies(&self) -> bool {
        matches!(self, Op::Create { .. } | Op::Write { .. } | Op::Punch { .. } | Op::Fallocate { .. } | Op::Destroy { .. })
    }
}

/// A request the server executed but has not committed (`rq_replay`): what replaying it needs.
#[derive(Debug, Clone)]
pub(super) struct Retained {
    pub op: Op,
    pub xid: u64,
    /// A WRITE's pages.
    pub data: Option<Vec<u8>>,
    /// A CREATE's object (the replay makes this one again).
    pub oid: Option<u64>,
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
    /// The target's `pb_last_committed`, the highest seen (`imp_peer_committed_transno`).
    pub committed: u64,
    /// Requests executed and not yet committed, by transno (`imp_replay_list`).
    pub replay: BTreeMap<u64, Retained>,
    /// Replaying to a recovering target (`LUSTRE_IMP_REPLAY`): new requests wait.
    pub recovering: bool,
    /// The target's service time as its replies report it (`iat_service_estimate`).
    pub service_est: Estimate,
    /// Round trips less service times (`iat_net_latency`).
    pub net_latency: Estimate,
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
    /// When it is late (moved out by early replies).
    pub deadline: Instant,
    /// The export handle it was sent with.
    pub handle: u64,
    /// The CRC32C a WRITE sent.
    pub cksum: Option<u32>,
    /// A WRITE's pages (kept for replay once it is executed).
    pub data: Option<Vec<u8>>,
    /// A replay of the request with this transno (MSG_REPLAY).
    pub replay: Option<u64>,
}

/// How an RPC goes again: a resend keeps its xid (MSG_RESENT), a redo is a new request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Again {
    pub xid: Option<u64>,
    pub tries: u32,
    /// Replay the retained request with this transno (MSG_REPLAY, its xid and transno).
    pub replay: Option<u64>,
}

