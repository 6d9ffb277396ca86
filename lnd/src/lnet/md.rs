//! Memory descriptors, match entries and portal matching (`lib-md.c`/`lib-me.c`/`lib-ptl.c` in
//! Lustre): which buffer an incoming PUT or GET lands in, at what offset and for how many bytes.

use crate::mem::{iov_len, Seg};
use crate::wire::{Nid, ProcessId};

/// MD option bits, numbered as Lustre's `LNET_MD_*`.
pub mod opt {
    pub const OP_PUT: u32 = 0x1;
    pub const OP_GET: u32 = 0x2;
    pub const MANAGE_REMOTE: u32 = 0x4;
    pub const TRUNCATE: u32 = 0x10;
    pub const ACK_DISABLE: u32 = 0x20;
    pub const MAX_SIZE: u32 = 0x80;
}

/// A handle on an MD (also what travels, with our incarnation, as a wire handle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MdHandle(pub u64);

/// A handle on a match entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MeHandle(pub u64);

/// What the user asks for when binding or attaching an MD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdSpec {
    /// Buffer segments in the node's registered memory.
    pub iov: Vec<Seg>,
    /// `opt::*` bits.
    pub options: u32,
    /// Operations before the MD is exhausted; `None` = infinite. Every operation that attaches
    /// to the MD counts, as in Lustre: a PUT sent and its ACK are two, a GET and its REPLY two.
    pub threshold: Option<u32>,
    /// With `opt::MAX_SIZE`: the largest single match.
    pub max_size: u32,
    /// Echoed in every event of this MD.
    pub user_ptr: u64,
}

#[derive(Debug)]
pub(crate) struct Md {
    pub spec: MdSpec,
    pub length: u64,
    /// Local running offset (advances by each match unless MANAGE_REMOTE).
    pub offset: u64,
    pub threshold: Option<u32>,
    /// In-flight messages holding the MD.
    pub refs: u32,
    /// Unlink once no message holds it.
    pub zombie: bool,
    /// Unlink automatically when exhausted.
    pub auto_unlink: bool,
    pub me: Option<MeHandle>,
    /// Waiting for an ACK or REPLY: until when, from which next hop (`lnet_rsp_tracker`).
    pub rsp: Option<(u64, Nid)>,
}

impl Md {
    pub fn new(spec: MdSpec, auto_unlink: bool, me: Option<MeHandle>) -> Md {
        let length = iov_len(&spec.iov);
        let threshold = spec.threshold;
        Md { spec, length, offset: 0, threshold, refs: 0, zombie: false, auto_unlink, me, rsp: None }
    }

    pub fn exhausted(&self) -> bool {
        self.threshold == Some(0)
            || (self.spec.options & opt::MAX_SIZE != 0 && self.length.saturating_sub(self.offset) < self.spec.max_size as u64)
    }

    /// Takes one operation off the threshold.
    pub fn consume(&mut self) {
        if let Some(t) = self.threshold.as_mut() {
            *t = t.saturating_sub(1);
        }
    }
}

/// Where to insert a new match entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    Head,
    Tail,
    Before(MeHandle),
    After(MeHandle),
}

#[derive(Debug)]
pub(crate) struct Me {
    pub portal: u32,
    pub match_id: ProcessId,
    pub match_bits: u64,
    pub ignore_bits: u64,
    /// Unlink the ME together with its MD.
    pub unlink: bool,
    pub md: Option<MdHandle>,
}

impl Me {
    /// Does an incoming message from `src` with `bits` select this ME?
    pub fn selects(&self, src: ProcessId, bits: u64) -> bool {
        (self.match_bits ^ bits) & !self.ignore_bits == 0
            && (self.match_id.pid == ProcessId::PID_ANY || self.match_id.pid == src.pid)
            && (self.match_id.nid == crate::wire::Nid::ANY || self.match_id.nid == src.nid)
    }
}

/// The result of trying one MD (`lnet_try_match_md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MdMatch {
    /// Not this MD; try the next ME.
    None,
    /// Matched: data goes at `offset` for `mlength` bytes.
    Ok { offset: u64, mlength: u64 },
    /// Matched, but the message is too long and the MD does not truncate: drop it.
    Drop,
}

/// Checks operation `op` (`opt::OP_PUT`/`OP_GET`) of `rlength` bytes at remote `roffset`.
pub(crate) fn try_match(md: &Md, op: u32, rlength: u64, roffset: u64) -> MdMatch {
    if md.exhausted() || md.spec.options & op == 0 {
        return MdMatch::None;
    }
    // An offset past the end leaves no room: the match (if any) is at the end.
    let offset = if md.spec.options & opt::MANAGE_REMOTE != 0 { roffset } else { md.offset }.min(md.length);
    let room = if md.spec.options & opt::MAX_SIZE != 0 {
        (md.spec.max_size as u64).min(md.length.saturating_sub(offset))
    } else {
        md.length.saturating_sub(offset)
    };
    if rlength <= room {
        MdMatch::Ok { offset, mlength: rlength }
    } else if md.spec.options & opt::TRUNCATE != 0 {
        MdMatch::Ok { offset, mlength: room }
    } else {
        MdMatch::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Nid;
    use proptest::prelude::*;

    fn md(len: u32, options: u32) -> Md {
        Md::new(MdSpec { iov: vec![Seg { off: 0, len }], options, threshold: None, max_size: 0, user_ptr: 0 }, false, None)
    }

    #[test]
    fn lengths_offsets_truncation() {
        let m = md(100, opt::OP_PUT);
        assert_eq!(try_match(&m, opt::OP_GET, 1, 0), MdMatch::None);
        assert_eq!(try_match(&m, opt::OP_PUT, 100, 0), MdMatch::Ok { offset: 0, mlength: 100 });
        assert_eq!(try_match(&m, opt::OP_PUT, 101, 0), MdMatch::Drop);
        let t = md(100, opt::OP_PUT | opt::TRUNCATE);
        assert_eq!(try_match(&t, opt::OP_PUT, 150, 0), MdMatch::Ok { offset: 0, mlength: 100 });
        let r = md(100, opt::OP_PUT | opt::MANAGE_REMOTE | opt::TRUNCATE);
        assert_eq!(try_match(&r, opt::OP_PUT, 50, 70), MdMatch::Ok { offset: 70, mlength: 30 });
        assert_eq!(try_match(&r, opt::OP_PUT, 50, 500), MdMatch::Ok { offset: 100, mlength: 0 });
        let mut l = md(100, opt::OP_PUT);
        l.offset = 60;
        assert_eq!(try_match(&l, opt::OP_PUT, 40, 0), MdMatch::Ok { offset: 60, mlength: 40 });
        let mut s = md(100, opt::OP_PUT | opt::MAX_SIZE);
        s.spec.max_size = 30;
        assert_eq!(try_match(&s, opt::OP_PUT, 31, 0), MdMatch::Drop);
        s.offset = 80;
        assert!(s.exhausted());
        assert_eq!(try_match(&s, opt::OP_PUT, 1, 0), MdMatch::None);
        let mut th = md(10, opt::OP_PUT);
        th.threshold = Some(1);
        th.consume();
        assert_eq!(try_match(&th, opt::OP_PUT, 1, 0), MdMatch::None);
    }

    /// The case proptest found (`len = 0, opts = 21, rlen = 0, roff = 1`): with MANAGE_REMOTE, a
    /// zero-length message at a remote offset past the end matched at that offset, beyond the MD.
    #[test]
    fn zero_length_match_past_the_end_stays_inside_the_md() {
        let m = md(0, opt::OP_PUT | opt::MANAGE_REMOTE | opt::TRUNCATE);
        assert_eq!(try_match(&m, opt::OP_PUT, 0, 1), MdMatch::Ok { offset: 0, mlength: 0 });
        let r = md(100, opt::OP_PUT | opt::MANAGE_REMOTE);
        assert_eq!(try_match(&r, opt::OP_PUT, 0, 500), MdMatch::Ok { offset: 100, mlength: 0 });
        assert_eq!(try_match(&r, opt::OP_PUT, 1, 500), MdMatch::Drop);
    }

    #[test]
    fn match_id_and_bits() {
        let src = ProcessId::new("3@dma".parse().unwrap(), 12345);
        let me = |nid: Nid, pid, bits, ignore| Me { portal: 1, match_id: ProcessId::new(nid, pid), match_bits: bits, ignore_bits: ignore, unlink: false, md: None };
        assert!(me(Nid::ANY, ProcessId::PID_ANY, 0xf0, 0x0f).selects(src, 0xf7));
        assert!(!me(Nid::ANY, ProcessId::PID_ANY, 0xf0, 0x0f).selects(src, 0xe0));
        assert!(me(src.nid, 12345, 1, 0).selects(src, 1));
        assert!(!me(src.nid, 1, 1, 0).selects(src, 1));
        assert!(!me("4@dma".parse().unwrap(), ProcessId::PID_ANY, 1, 0).selects(src, 1));
    }

    proptest! {
        #[test]
        fn match_never_exceeds_md(len in 0u32..4096, opts in 0u32..0x100, rlen in 0u64..8192, roff in 0u64..8192, loff in 0u64..4096, max in 0u32..4096) {
            let mut m = md(len, opts);
            m.offset = loff.min(len as u64);
            m.spec.max_size = max;
            if let MdMatch::Ok { offset, mlength } = try_match(&m, opts & 3, rlen, roff) {
                prop_assert!(offset + mlength <= len as u64);
                prop_assert!(mlength <= rlen);
                if opts & opt::TRUNCATE == 0 { prop_assert_eq!(mlength, rlen); }
            }
        }

        #[test]
        fn ignore_bits_mask_exactly(bits in any::<u64>(), ignore in any::<u64>(), msg in any::<u64>()) {
            let me = Me { portal: 0, match_id: ProcessId::ANY, match_bits: bits, ignore_bits: ignore, unlink: false, md: None };
            let src = ProcessId::new(Nid(1), 1);
            prop_assert_eq!(me.selects(src, msg), (bits & !ignore) == (msg & !ignore));
        }
    }
}
