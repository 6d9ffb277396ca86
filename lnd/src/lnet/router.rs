//! Router buffer pools (tiny / small / large, Lustre's three) and the messages waiting for a
//! buffer; `forward.rs` moves messages through them.

use super::msg::NiIdx;
use crate::mem::Seg;
use crate::wire::HdrRepr;
use std::collections::VecDeque;

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
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Buf {
    Tiny,
    Small(Seg),
    Large(Seg),
}

#[derive(Debug)]
pub(super) struct Fwd {
    pub(super) buf: Buf,
    pub(super) hdr: HdrRepr,
}

#[derive(Debug)]
pub(super) struct Blocked {
    pub(super) ni: NiIdx,
    pub(super) hdr: HdrRepr,
    pub(super) private: u64,
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
}

impl Router {
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

