//! What the engine keeps of other hosts: the links to their devices (a [`LinkPort`] each, the
//! frames it sends), the nodes behind them, and the SMSGs and pulls crossing them.

use super::link::LinkFrame;
use crate::mem::{Mem, Seg};
use std::collections::HashMap;
use std::sync::Arc;

/// What the engine hands a link to send, in this order.
pub enum LinkOut {
    /// A whole frame (length field first).
    Frame(Vec<u8>),
    /// A PULL_DATA frame whose bytes are read from the transmitter's pages as it is sent
    /// (`head`: length, type, id, offset); `corrupt`: flip this byte of it (`dma_corrupt`).
    Data { head: Vec<u8>, mem: Arc<Mem>, segs: Vec<Seg>, corrupt: Option<u64> },
    /// Every byte of a served pull has been handed to the link: tell both ends
    /// ([`Engine::finish_served`]); the owner's memory is in use until then.
    Served(Served),
}

/// Where the engine sends a linked host's frames (the link's writer queue).
pub trait LinkPort: Send {
    fn send(&mut self, out: LinkOut);
}

/// A pull a remote puller asked of a local transmit, all of whose bytes are queued.
pub struct Served {
    pub(super) host: u32,
    pub(super) id: u64,
    pub(super) owner: u32,
    pub(super) puller: u32,
    pub(super) cookie: u64,
    pub(super) tx_tag: u64,
    pub(super) len: u64,
}

/// A pull a remote device asked for (PULL), as received.
#[derive(Clone, Copy, Debug)]
pub struct PullReq {
    pub host: u32,
    pub id: u64,
    pub puller: u32,
    pub owner: u32,
    pub cookie: u64,
    pub tx_off: u64,
    pub len: u64,
}

/// An SMSG sent over a link, waiting for its SMSG_DONE.
pub(super) struct Forwarded {
    pub(super) host: u32,
    pub(super) from: u32,
    pub(super) dst: u32,
    pub(super) tag: u64,
    pub(super) len: u32,
}

/// A pull of a remote transmit, waiting for its bytes and PULL_END.
pub(super) struct Asked {
    pub(super) host: u32,
    pub(super) puller: u32,
    pub(super) owner: u32,
    pub(super) cookie: u64,
    pub(super) tag: u64,
    pub(super) sink: Arc<Mem>,
    pub(super) frags: Vec<Seg>,
    pub(super) want: u64,
    pub(super) got: u64,
}

/// Links, the addresses behind them, and what is crossing them.
#[derive(Default)]
pub(super) struct Links {
    pub(super) ports: HashMap<u32, Box<dyn LinkPort>>,
    /// Fabric address -> the host whose device serves it.
    pub(super) remote: HashMap<u32, u32>,
    /// Hosts whose HELLO came (a link that never got one was never up).
    pub(super) greeted: std::collections::HashSet<u32>,
    pub(super) next: u64,
    pub(super) smsgs: HashMap<u64, Forwarded>,
    pub(super) pulls: HashMap<u64, Asked>,
}

impl Links {
    pub(super) fn host_of(&self, addr: u32) -> Option<u32> {
        self.remote.get(&addr).copied()
    }

    pub(super) fn send(&mut self, host: u32, f: &LinkFrame<'_>) {
        if let Some(p) = self.ports.get_mut(&host) {
            let mut b = Vec::new();
            f.emit(&mut b);
            p.send(LinkOut::Frame(b));
        }
    }

    pub(super) fn seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}
