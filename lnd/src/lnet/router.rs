//! Router buffer pools (tiny / small / large, Lustre's three), per-peer router credits, and the
//! messages waiting for either; `forward.rs` moves messages through them.

use super::msg::NiIdx;
use crate::mem::Seg;
use crate::wire::{HdrRepr, Nid};
use std::collections::{HashMap, VecDeque};

/// Router buffers, pre-allocated in node memory by the node builder.
#[derive(Debug, Clone, Default)]
pub struct RouterPools {
    /// Messages without payload in flight at once.
    pub tiny: usize,
    /// Buffers of `small_size` bytes.
    pub small: Vec<Seg>,
    pub small_size: u32,
    /// Buffers of LNET_MTU bytes.
    pub large: Vec<Seg>,
    /// Router buffers one peer may hold at once (Lustre's `peer_buffer_credits`); 0 means the
    /// per-peer credits of the NI the message came in on, as Lustre defaults it.
    pub peer_buffer_credits: u32,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Buf {
    Tiny,
    Small(Seg),
    Large(Seg),
}

/// The peer a routed message came from, on the NI it came in on (Lustre's `lnet_peer_ni`).
pub(super) type RxPeer = (NiIdx, Nid);

#[derive(Debug)]
pub(super) struct Fwd {
    pub(super) buf: Buf,
    pub(super) hdr: HdrRepr,
    /// Holds one of this peer's router credits until the message is sent on.
    pub(super) peer: RxPeer,
}

#[derive(Debug)]
pub(super) struct Blocked {
    pub(super) ni: NiIdx,
    pub(super) hdr: HdrRepr,
    pub(super) private: u64,
    pub(super) from: Nid,
}

/// One peer's router credits in use (`lpni_rtrcredits` counted up) and its messages waiting
/// for one (`lpni_rtrq`), their rx kept by the LND so the peer feels the back-pressure.
#[derive(Debug, Default)]
pub(super) struct RtrPeer {
    pub(super) used: u32,
    pub(super) waiting: VecDeque<Blocked>,
}

#[derive(Debug)]
pub(super) struct Router {
    pub(super) tiny: usize,
    pub(super) small: Vec<Seg>,
    pub(super) small_size: u32,
    pub(super) large: Vec<Seg>,
    /// Messages waiting for a buffer, a queue per pool (tiny, small, large) so none waits
    /// behind a message for another pool (`lnet_msg2bufpool`); their LND keeps the rx meanwhile.
    pub(super) blocked: [VecDeque<Blocked>; 3],
    /// Router credits per peer (0: the NI's per-peer credits).
    pub(super) peer_buffer_credits: u32,
    /// Peers holding router credits or waiting for one (others have all theirs).
    pub(super) peers: HashMap<RxPeer, RtrPeer>,
}

impl Router {
    pub(super) fn new(pools: RouterPools) -> Router {
        Router {
            tiny: pools.tiny,
            small: pools.small,
            small_size: pools.small_size,
            large: pools.large,
            blocked: Default::default(),
            peer_buffer_credits: pools.peer_buffer_credits,
            peers: HashMap::new(),
        }
    }

    /// Router credits of a peer on an NI with `ni_peer_credits` per peer (`lnet_peer_buffer_credits`).
    pub(super) fn peer_limit(&self, ni_peer_credits: u32) -> u32 {
        if self.peer_buffer_credits > 0 {
            self.peer_buffer_credits
        } else {
            ni_peer_credits.max(1)
        }
    }

    /// The pool a message of `len` bytes is for: its queue in `blocked`.
    pub(super) fn pool(&self, len: u32) -> usize {
        match len {
            0 => 0,
            l if l <= self.small_size => 1,
            _ => 2,
        }
    }

    pub(super) fn alloc(&mut self, len: u32) -> Option<Buf> {
        if len == 0 {
            if self.tiny == 0 {
                return None;
            }
            self.tiny -= 1;
            return Some(Buf::Tiny);
        }
        if len <= self.small_size {
            if let Some(s) = self.small.pop() {
                return Some(Buf::Small(s));
            }
        }
        self.large.pop().map(Buf::Large)
    }

    pub(super) fn free(&mut self, b: Buf) {
        match b {
            Buf::Tiny => self.tiny += 1,
            Buf::Small(s) => self.small.push(s),
            Buf::Large(s) => self.large.push(s),
        }
    }
}

