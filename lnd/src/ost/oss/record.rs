//! What an OSS remembers of a connected client (`obd_export`), how its export handles are
//! numbered, the state of an OST's recovery, and a request waiting for a service thread.

use crate::wire::ProcessId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// A connected client of one OST.
pub(super) struct Export {
    pub peer: ProcessId,
    pub uuid: String,
    pub ost: u32,
    /// The client's connection count when it last connected (`exp_conn_cnt`).
    pub conn_cnt: u32,
    /// Every request up to this xid has its reply (`exp_last_xid`; 0 after each connect).
    pub last_xid: u64,
    /// The xid of the last change executed (`lcd_last_xid`).
    pub last_mod_xid: u64,
    /// Connect flags both sides have (`exp_connect_data.ocd_connect_flags`).
    pub flags: u64,
    /// When its last request arrived (`exp_last_request_time`): the ping evictor's clock.
    pub last_request: Instant,
    /// Reply data of CREATEs (`tg_reply_data`): xid -> (object id, transno), so a resend whose
    /// reply was lost gets the object its first attempt made. Kept across reconnects; dropped
    /// once the client's `pb_last_xid` says it has the reply.
    pub creates: BTreeMap<u64, (u64, u64)>,
}

/// The most CREATE replies an export keeps for reconstruction (far more than a client has in
/// flight); past it the oldest go, so a client that never advances `pb_last_xid` cannot grow them.
pub(super) const MAX_REPLY_DATA: usize = 1024;

/// Export handles of one OSS instance start from its LNet incarnation, so a restarted OSS never
/// hands out a handle an old connection still uses.
pub(super) fn base(incarnation: u64) -> u64 {
    (incarnation.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xffff_ffff_0000_0000) | 0x4f53_0000
}

/// One OST's recovery in progress.
pub(super) struct Recovery<R> {
    /// Clients that must finish replaying (from the OST's `clients` on disk).
    pub expected: BTreeSet<String>,
    pub connected: BTreeSet<String>,
    pub done: BTreeSet<String>,
    /// Replays waiting for their turn, by (transno, xid): (client, request, portal).
    pub queue: BTreeMap<(u64, u64), (String, R, u32)>,
    /// Requests served once recovery is over, in arrival order (the replay-done pings among them).
    pub held: Vec<(R, u32)>,
    /// The transaction number the next replay should have.
    pub next: u64,
    /// When clients that have not connected are given up (set at the first look, on the OSS's
    /// clock); twice as long for those that connected and went quiet.
    pub deadline: Option<Instant>,
}

impl<R> Recovery<R> {
    pub fn new(clients: &BTreeSet<String>, last_committed: u64) -> Recovery<R> {
        Recovery { expected: clients.clone(), connected: BTreeSet::new(), done: BTreeSet::new(), queue: BTreeMap::new(), held: Vec::new(), next: last_committed + 1, deadline: None }
    }
}

/// A BRW request (`R`) waiting for a service thread, with what its handler parsed.
pub(super) struct Queued<R> {
    pub req: R,
    pub body: crate::ptlrpc::wire::PtlrpcBody,
    pub obdo: crate::ptlrpc::wire::Obdo,
    pub ost: u32,
}
