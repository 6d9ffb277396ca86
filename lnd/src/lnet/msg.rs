//! What the LNet core hands out: LND calls (send/recv), user events, and error numbers.

use super::md::MdHandle;
use crate::mem::Seg;
use crate::wire::{HdrRepr, Nid, ProcessId};

/// Negative errno values carried in event and finalize statuses, as Lustre does.
pub mod errno {
    pub const EIO: i32 = -5;
    pub const ENOMEM: i32 = -12;
    pub const EINVAL: i32 = -22;
    pub const ENODATA: i32 = -61;
    pub const EPROTO: i32 = -71;
    pub const EMSGSIZE: i32 = -90;
    pub const ENETDOWN: i32 = -100;
    pub const ENETUNREACH: i32 = -101;
    pub const ECONNRESET: i32 = -104;
    pub const ETIMEDOUT: i32 = -110;
    pub const ECONNREFUSED: i32 = -111;
    pub const EHOSTUNREACH: i32 = -113;
    pub const ECANCELED: i32 = -125;

    /// A short name for logs and traces.
    pub fn name(e: i32) -> &'static str {
        match e {
            0 => "ok",
            EIO => "EIO",
            ENOMEM => "ENOMEM",
            EINVAL => "EINVAL",
            ENODATA => "ENODATA",
            EPROTO => "EPROTO",
            EMSGSIZE => "EMSGSIZE",
            ENETDOWN => "ENETDOWN",
            ENETUNREACH => "ENETUNREACH",
            ECONNRESET => "ECONNRESET",
            ETIMEDOUT => "ETIMEDOUT",
            ECONNREFUSED => "ECONNREFUSED",
            EHOSTUNREACH => "EHOSTUNREACH",
            ECANCELED => "ECANCELED",
            _ => "error",
        }
    }
}

/// A message in flight inside the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct MsgId(pub u64);

/// Index of a network interface in [`super::Lnet`].
pub type NiIdx = usize;

/// Event kinds (`lnet_event_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventKind {
    Send,
    Put,
    Get,
    Reply,
    Ack,
    Unlink,
}

/// An event on an MD, as LNet users see them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub md: MdHandle,
    pub user_ptr: u64,
    /// The other end: initiator for PUT/GET events, target for SEND/ACK/REPLY.
    pub peer: ProcessId,
    pub portal: u32,
    pub match_bits: u64,
    pub rlength: u64,
    pub mlength: u64,
    pub offset: u64,
    pub hdr_data: u64,
    /// 0 or a negative errno.
    pub status: i32,
    /// This is the MD's last event: it is gone.
    pub unlinked: bool,
}

/// The LNet core asks an LND to transmit a message.
#[derive(Clone, Debug)]
pub struct LndSend {
    pub msg: MsgId,
    pub ni: NiIdx,
    /// The final destination.
    pub target: ProcessId,
    /// Who the LND hands the bytes to: the target itself or a router.
    pub next_hop: Nid,
    pub hdr: HdrRepr,
    /// Payload source, `hdr.payload_length` bytes.
    pub iov: Vec<Seg>,
    /// For a GET: the initiator's sink buffers (the MD), so an RDMA LND can have the reply land
    /// there directly. `None` for other types, and for GETs going through a router.
    pub get_sink: Option<Vec<Seg>>,
}

/// The LNet core's answer to `parse`: what the LND must do with the received message.
#[derive(Clone, Debug)]
pub struct LndRecv {
    /// The message to finalize when done; `None` = discard the payload and release the rx.
    pub msg: Option<MsgId>,
    pub ni: NiIdx,
    /// The LND's own rx context, as passed to `parse`.
    pub private: u64,
    /// Set for an RDMA-optimized GET: `iov` holds the matched *source* buffers and the LND sends
    /// the reply data from them (finalizing `msg`, the REPLY).
    pub rdma_req: bool,
    /// Sink for received data, or source for `rdma_req`.
    pub iov: Vec<Seg>,
    pub mlen: u64,
    pub rlen: u64,
}

/// Work the core hands to the driver, to dispatch to LNDs in order.
#[derive(Clone, Debug)]
pub enum Action {
    Send(LndSend),
    Recv(LndRecv),
}
