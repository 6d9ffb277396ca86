//! The device's node-side interface: descriptors, completions, status codes and the
//! [`DmaDevice`] trait every provider implements.

use crate::mem::{Mem, Seg};
use std::sync::Arc;

/// Largest short message (SMSG) the device carries, in bytes.
pub const SMSG_MAX: usize = 4096;
/// Most fragments in one transmit or pull.
pub const MAX_FRAGS: usize = 256;

/// Completion status codes (0 = success). Stable numbers: they cross the shared rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, thiserror::Error)]
#[repr(u8)]
pub enum DevStatus {
    #[error("ok")]
    Ok = 0,
    #[error("region key unknown or not owned by the caller")]
    BadKey = 1,
    #[error("range outside the region or the transmit")]
    OutOfBounds = 2,
    #[error("no such transmit (never set up, cancelled or owner gone)")]
    NoSuchTx = 3,
    #[error("transmit already consumed by an earlier pull")]
    TxConsumed = 4,
    #[error("no node at that fabric address")]
    NoSuchPeer = 5,
    #[error("peer mailbox full")]
    MailboxFull = 6,
    #[error("message longer than SMSG_MAX or too many fragments")]
    TooLong = 7,
    #[error("malformed descriptor")]
    BadDesc = 8,
    #[error("transmit cancelled by its owner")]
    Cancelled = 9,
    #[error("device fault")]
    Fault = 10,
    #[error("the fabric link to the peer's host is down")]
    LinkDown = 11,
}

impl DevStatus {
    pub fn from_u8(v: u8) -> DevStatus {
        use DevStatus::*;
        [Ok, BadKey, OutOfBounds, NoSuchTx, TxConsumed, NoSuchPeer, MailboxFull, TooLong, BadDesc, Cancelled, Fault, LinkDown]
            .get(v as usize)
            .copied()
            .unwrap_or(Fault)
    }
    pub fn is_ok(self) -> bool {
        self == DevStatus::Ok
    }
}

/// One operation submitted to the device. `tag` is echoed in its completions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Copy `data` into the mailbox of node `dst`.
    Smsg { dst: u32, data: Vec<u8> },
    /// Like `Smsg`, but first write (LE) the cookie of our transmit set up with tag `tx_tag`
    /// at byte `at` of `data` — a chained descriptor: "tx set up, now tell the receiver" in one
    /// doorbell, without waiting for `TxReady`.
    SmsgTx { dst: u32, data: Vec<u8>, at: u16, tx_tag: u64 },
    /// Make `frags` of region `key` pullable once, by node `peer` only; completes with
    /// `TxReady { cookie }`.
    TxSetup { key: u32, frags: Vec<Seg>, peer: u32 },
    /// Withdraw a transmit that will not be pulled.
    TxCancel { cookie: u64 },
    /// Copy `[tx_off, tx_off + len(frags))` of transmit `cookie` owned by node `src` into `frags`
    /// of our region `key`.
    Pull { src: u32, cookie: u64, tx_off: u64, key: u32, frags: Vec<Seg> },
    /// Completes (`Fenced`) once everything this node submitted before it is finished: after
    /// it, the device touches none of the buffers those descriptors named (a pull included).
    Fence,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desc {
    pub tag: u64,
    pub op: Op,
}

/// What a completion reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(u8)]
pub enum CompKind {
    SmsgSent = 1,
    /// A short message arrived from `peer`; its bytes are passed alongside.
    SmsgRecv = 2,
    TxReady = 3,
    /// Our transmit `cookie` was pulled by `peer` (`len` bytes) — the transmitter's completion.
    TxDone = 4,
    /// Our pull finished — the receiver's completion.
    PullDone = 5,
    TxCancelled = 6,
    /// The node at `peer` left the fabric (its process ended): its regions, transmits and
    /// mailbox are gone, and a node attaching at that address later is a new incarnation.
    PeerDown = 7,
    /// Everything submitted before the `Fence` with this tag is finished.
    Fenced = 8,
}

impl CompKind {
    pub fn from_u8(v: u8) -> Option<CompKind> {
        use CompKind::*;
        Some(match v {
            1 => SmsgSent,
            2 => SmsgRecv,
            3 => TxReady,
            4 => TxDone,
            5 => PullDone,
            6 => TxCancelled,
            7 => PeerDown,
            8 => Fenced,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub kind: CompKind,
    pub status: DevStatus,
    pub tag: u64,
    pub cookie: u64,
    pub len: u32,
    pub peer: u32,
}

/// Node-side errors talking to the device.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("submission queue full")]
    SqFull,
    #[error("device connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("device refused: {0}")]
    Refused(String),
    /// Another attachment holds this fabric address (perhaps a dead one the device has not
    /// noticed yet).
    #[error("fabric address {0} is held by another attachment")]
    AddrInUse(u32),
    #[error("device protocol: {0}")]
    Protocol(String),
}

/// The node's view of its DMA device (consumer side, as in rust-vmm's queue traits).
pub trait DmaDevice: Send {
    /// Our fabric address (the address part of our `N@dma` NID).
    fn addr(&self) -> u32;
    /// The registered memory all LNet buffers of this node live in.
    fn mem(&self) -> &Arc<Mem>;
    /// The device key of [`DmaDevice::mem`].
    fn key(&self) -> u32;
    /// Free submission slots.
    fn sq_space(&self) -> usize;
    /// Queues one descriptor (not yet seen by the device until [`DmaDevice::doorbell`]).
    fn submit(&mut self, d: &Desc) -> Result<(), DevError>;
    /// Tells the device new descriptors are queued.
    fn doorbell(&mut self);
    /// Hands every pending completion to `f`; SMSG bytes ride along (empty otherwise).
    fn poll(&mut self, f: &mut dyn FnMut(&Completion, &[u8])) -> usize;
}

impl<T: DmaDevice + ?Sized> DmaDevice for Box<T> {
    fn addr(&self) -> u32 {
        (**self).addr()
    }
    fn mem(&self) -> &Arc<Mem> {
        (**self).mem()
    }
    fn key(&self) -> u32 {
        (**self).key()
    }
    fn sq_space(&self) -> usize {
        (**self).sq_space()
    }
    fn submit(&mut self, d: &Desc) -> Result<(), DevError> {
        (**self).submit(d)
    }
    fn doorbell(&mut self) {
        (**self).doorbell()
    }
    fn poll(&mut self, f: &mut dyn FnMut(&Completion, &[u8])) -> usize {
        (**self).poll(f)
    }
}
