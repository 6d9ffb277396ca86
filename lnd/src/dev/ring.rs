//! Layout of the queue region a node shares with `dmadev` (and, for short messages, with its
//! peers): a submission ring with an inline data slot per descriptor, a completion ring and the
//! SMSG mailbox (`mailbox.rs`), whose slot count the node picks for the peers it may hear from
//! (`mailbox_slots`). Encoders check every field read.

use super::device::{CompKind, Completion, DevStatus, Desc, Op, MAX_FRAGS, SMSG_MAX};
use crate::mem::{Mem, OutOfBounds, Seg};
use std::sync::atomic::{AtomicU32, Ordering};

pub const SQ_N: u32 = 64;
pub const CQ_N: u32 = 1024;
/// Mailbox slots: at least (and by default) this many, at most `MB_MAX`, a power of two.
pub const MB_MIN: u32 = 256;
pub const MB_MAX: u32 = 1 << 16;
const DESC_SZ: u64 = 64;
const COMP_SZ: u64 = 32;
const SLOT_SZ: u64 = SMSG_MAX as u64;
/// Each mailbox slot's header (sender, length, completion position), after the slots.
pub(crate) const MBH_SZ: u64 = 16;
const MAGIC: u32 = 0x444d_4131; // "DMA1"

// Header words (u32 each).
pub const SQ_HEAD: u64 = 0; // device: next descriptor it will take
pub const SQ_TAIL: u64 = 4; // node: next free slot
pub const CQ_HEAD: u64 = 8; // node: next completion it will read
pub const CQ_TAIL: u64 = 12; // device: next completion slot
pub const MB_HEAD: u64 = 16; // node: mailbox slots released
pub const MB_TAIL: u64 = 20; // device: mailbox slots filled
pub const SQ_ARMED: u64 = 24; // device sleeps: ring the doorbell
pub const CQ_ARMED: u64 = 28; // node sleeps: ring the doorbell
pub const CQ_OVERFLOW: u64 = 32; // device holds completions that did not fit
const MAGIC_OFF: u64 = 36;
const MB_SLOTS: u64 = 40; // node: mailbox slots in this region (fixed at attach)
pub const MB_LOCK: u64 = 44; // writer of the mailbox: 0 free, else its id (see mailbox.rs)
pub const GEN: u64 = 48; // bumped when the region's owner attaches again or leaves
pub const DIRECT: u64 = 52; // device: peers may write SMSGs straight into mailboxes (1)
const HDR_SZ: u64 = 256;

const SQ_OFF: u64 = HDR_SZ;
const SQ_DATA_OFF: u64 = SQ_OFF + SQ_N as u64 * DESC_SZ;
const CQ_OFF: u64 = SQ_DATA_OFF + SQ_N as u64 * SLOT_SZ;
const MB_OFF: u64 = CQ_OFF + CQ_N as u64 * COMP_SZ;
/// Bytes in a queue region with the smallest mailbox.
pub const QUEUE_BYTES: usize = queue_bytes(MB_MIN);

/// Bytes in a queue region whose mailbox has `mb_n` slots.
pub const fn queue_bytes(mb_n: u32) -> usize {
    (MB_OFF + mb_n as u64 * (SLOT_SZ + MBH_SZ)) as usize
}

/// The mailbox a node needs so that every peer can have all its credits' worth of SMSGs (plus
/// the NOOPs and control messages that ride beside them) in it at once: no SMSG a credit
/// allowed ever bounces, however many peers write at the same time. Slots are only touched
/// when used, so a mostly idle node pays for few of them.
pub fn mailbox_slots(peers: usize, peer_credits: u16) -> u32 {
    let want = peers.saturating_mul(peer_credits as usize + 3).min(MB_MAX as usize) as u32;
    want.next_power_of_two().clamp(MB_MIN, MB_MAX)
}

/// A mailbox size a region may declare.
fn valid_slots(n: u32) -> bool {
    n.is_power_of_two() && (MB_MIN..=MB_MAX).contains(&n)
}

/// A typed view of a queue region.
pub struct Rings<'a> {
    pub mem: &'a Mem,
}

impl<'a> Rings<'a> {
    /// Wraps a region, checking its size; `init` writes the magic and the mailbox size the
    /// region's length gives, otherwise both are checked (the size against the length).
    pub fn new(mem: &'a Mem, init: bool) -> Result<Rings<'a>, String> {
        if mem.len() < QUEUE_BYTES {
            return Err(format!("queue region has {} bytes, need {QUEUE_BYTES}", mem.len()));
        }
        let r = Rings { mem };
        if init {
            let slots = ((mem.len() as u64 - MB_OFF) / (SLOT_SZ + MBH_SZ)).min(MB_MAX as u64) as u32;
            let slots = if valid_slots(slots) { slots } else { (slots + 1).next_power_of_two() / 2 };
            mem.write(MB_SLOTS, &slots.to_le_bytes()).map_err(|e| e.to_string())?;
            mem.write(MAGIC_OFF, &MAGIC.to_le_bytes()).map_err(|e| e.to_string())?;
            // A new attachment: peers holding a mapping of the old one must ask again.
            r.word(GEN).fetch_add(1, Ordering::SeqCst);
        } else if r.word(MAGIC_OFF).load(Ordering::Acquire) != MAGIC {
            return Err("queue region lacks the DMA1 magic".into());
        } else {
            let n = r.mailbox_len();
            if !valid_slots(n) || queue_bytes(n) > mem.len() {
                return Err(format!("queue region of {} bytes declares a mailbox of {n} slots (a power of two {MB_MIN}..={MB_MAX} that fits)", mem.len()));
            }
        }
        Ok(r)
    }

    /// The mailbox's slots, as the region declares them (checked by `new`).
    pub fn mailbox_len(&self) -> u32 {
        self.word(MB_SLOTS).load(Ordering::Acquire)
    }

    pub fn word(&self, off: u64) -> &'a AtomicU32 {
        self.mem.atomic_u32(off).expect("header words are in bounds")
    }

    /// Descriptors queued and not yet taken by the device.
    pub fn sq_pending(&self) -> u32 {
        self.word(SQ_TAIL).load(Ordering::Acquire).wrapping_sub(self.word(SQ_HEAD).load(Ordering::Acquire))
    }

    pub fn cq_pending(&self) -> u32 {
        self.word(CQ_TAIL).load(Ordering::Acquire).wrapping_sub(self.word(CQ_HEAD).load(Ordering::Acquire))
    }

    /// Writes a descriptor into submission slot `i`.
    pub fn write_desc(&self, i: u32, d: &Desc) -> Result<(), OutOfBounds> {
        let mut b = [0u8; DESC_SZ as usize];
        let slot = (i % SQ_N) as u64;
        let data_off = SQ_DATA_OFF + slot * SLOT_SZ;
        let (op, ndata, peer, key, cookie, tx_off) = match &d.op {
            Op::Smsg { dst, data } => {
                let n = data.len().min(SMSG_MAX);
                self.mem.write(data_off, &data[..n])?;
                (1u8, data.len() as u32, *dst, 0, 0, 0)
            }
            Op::TxSetup { key, frags, peer } => (2, self.write_frags(data_off, frags)?, *peer, *key, 0, 0),
            Op::TxCancel { cookie } => (3, 0, 0, 0, *cookie, 0),
            Op::Fence => (6, 0, 0, 0, 0, 0),
            Op::SmsgTx { dst, data, at, tx_tag } => {
                let n = data.len().min(SMSG_MAX);
                self.mem.write(data_off, &data[..n])?;
                (5u8, data.len() as u32, *dst, 0, *tx_tag, *at as u64)
            }
            Op::Pull { src, cookie, tx_off, key, frags } => {
                (4, self.write_frags(data_off, frags)?, *src, *key, *cookie, *tx_off)
            }
        };
        b[0] = op;
        b[4..8].copy_from_slice(&ndata.to_le_bytes());
        b[8..16].copy_from_slice(&d.tag.to_le_bytes());
        b[16..20].copy_from_slice(&peer.to_le_bytes());
        b[20..24].copy_from_slice(&key.to_le_bytes());
        b[24..32].copy_from_slice(&cookie.to_le_bytes());
        b[32..40].copy_from_slice(&tx_off.to_le_bytes());
        self.mem.write(SQ_OFF + slot * DESC_SZ, &b)
    }

    fn write_frags(&self, off: u64, frags: &[Seg]) -> Result<u32, OutOfBounds> {
        let n = frags.len().min(MAX_FRAGS);
        let mut b = vec![0u8; n * 16];
        for (i, f) in frags[..n].iter().enumerate() {
            b[i * 16..i * 16 + 8].copy_from_slice(&f.off.to_le_bytes());
            b[i * 16 + 8..i * 16 + 12].copy_from_slice(&f.len.to_le_bytes());
        }
        self.mem.write(off, &b)?;
        // A count beyond MAX_FRAGS is passed on so the device refuses it.
        Ok(if frags.len() > MAX_FRAGS { u32::MAX } else { (n * 16) as u32 })
    }

    /// Reads submission slot `i`; for a malformed descriptor, `Err` carries the completion
    /// that refuses it.
    pub fn read_desc(&self, i: u32) -> Result<Desc, Completion> {
        self.read_desc_raw(i).map_err(|(tag, status, peer)| {
            let op = self.mem.to_vec(SQ_OFF + (i % SQ_N) as u64 * DESC_SZ, 1).map(|v| v[0]).unwrap_or(0);
            let kind = match op {
                2 => CompKind::TxReady,
                3 => CompKind::TxCancelled,
                4 => CompKind::PullDone,
                6 => CompKind::Fenced,
                _ => CompKind::SmsgSent,
            };
            // The peer the descriptor named: an SMSG's refusal is charged to its destination.
            Completion { kind, status, tag, cookie: 0, len: 0, peer }
        })
    }

    fn read_desc_raw(&self, i: u32) -> Result<Desc, (u64, DevStatus, u32)> {
        let slot = (i % SQ_N) as u64;
        let mut b = [0u8; DESC_SZ as usize];
        self.mem.read(SQ_OFF + slot * DESC_SZ, &mut b).map_err(|_| (0, DevStatus::BadDesc, 0))?;
        let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let (ndata, tag, peer, key, cookie, tx_off) = (u32at(4), u64at(8), u32at(16), u32at(20), u64at(24), u64at(32));
        if ndata as usize > SMSG_MAX {
            return Err((tag, DevStatus::TooLong, peer));
        }
        let data = self.mem.to_vec(SQ_DATA_OFF + slot * SLOT_SZ, ndata as usize).map_err(|_| (tag, DevStatus::BadDesc, peer))?;
        let frags = || -> Result<Vec<Seg>, (u64, DevStatus, u32)> {
            if data.len() % 16 != 0 {
                return Err((tag, DevStatus::BadDesc, peer));
            }
            Ok(data
                .chunks_exact(16)
                .map(|c| Seg { off: u64::from_le_bytes(c[..8].try_into().unwrap()), len: u32::from_le_bytes(c[8..12].try_into().unwrap()) })
                .collect())
        };
        let op = match b[0] {
            1 => Op::Smsg { dst: peer, data },
            2 => Op::TxSetup { key, frags: frags()?, peer },
            3 => Op::TxCancel { cookie },
            4 => Op::Pull { src: peer, cookie, tx_off, key, frags: frags()? },
            5 if tx_off <= u16::MAX as u64 => Op::SmsgTx { dst: peer, data, at: tx_off as u16, tx_tag: cookie },
            6 => Op::Fence,
            _ => return Err((tag, DevStatus::BadDesc, peer)),
        };
        Ok(Desc { tag, op })
    }

    pub fn write_comp(&self, i: u32, c: &Completion) {
        let mut b = [0u8; COMP_SZ as usize];
        b[0] = c.kind as u8;
        b[1] = c.status as u8;
        b[4..8].copy_from_slice(&c.len.to_le_bytes());
        b[8..16].copy_from_slice(&c.tag.to_le_bytes());
        b[16..24].copy_from_slice(&c.cookie.to_le_bytes());
        b[24..28].copy_from_slice(&c.peer.to_le_bytes());
        self.mem.write(CQ_OFF + (i % CQ_N) as u64 * COMP_SZ, &b).expect("cq slot in bounds");
    }

    /// Reads completion slot `i`.
    pub fn read_comp(&self, i: u32) -> Option<Completion> {
        let mut b = [0u8; COMP_SZ as usize];
        self.mem.read(CQ_OFF + (i % CQ_N) as u64 * COMP_SZ, &mut b).ok()?;
        let c = Completion {
            kind: CompKind::from_u8(b[0])?,
            status: DevStatus::from_u8(b[1]),
            len: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            tag: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            cookie: u64::from_le_bytes(b[16..24].try_into().unwrap()),
            peer: u32::from_le_bytes(b[24..28].try_into().unwrap()),
        };
        Some(c)
    }

    /// Where mailbox slot `slot` (a running count) lies in a mailbox of `mb_n` slots.
    pub fn mailbox_off(slot: u32, mb_n: u32) -> u64 {
        MB_OFF + (slot % mb_n) as u64 * SLOT_SZ
    }

    /// Where the header of mailbox slot `slot` lies.
    pub fn mailbox_hdr_off(slot: u32, mb_n: u32) -> u64 {
        MB_OFF + mb_n as u64 * SLOT_SZ + (slot % mb_n) as u64 * MBH_SZ
    }

    /// Whether the node had said it sleeps (`CQ_ARMED`), clearing it: whoever gets `true`
    /// rings the node's bell, so one wake-up serves everything posted until it looks again.
    pub fn disarm(&self) -> bool {
        self.word(CQ_ARMED).swap(0, Ordering::AcqRel) == 1
    }

    /// SMSGs in the mailbox not yet taken by the node.
    pub fn mb_pending(&self) -> u32 {
        self.word(MB_TAIL).load(Ordering::Acquire).wrapping_sub(self.word(MB_HEAD).load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frags() -> impl Strategy<Value = Vec<Seg>> {
        proptest::collection::vec((any::<u64>(), any::<u32>()).prop_map(|(off, len)| Seg { off, len }), 0..8)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(dst, data)| Op::Smsg { dst, data }),
            (any::<u32>(), frags(), any::<u32>()).prop_map(|(key, frags, peer)| Op::TxSetup { key, frags, peer }),
            any::<u64>().prop_map(|cookie| Op::TxCancel { cookie }),
            Just(Op::Fence),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64), any::<u16>(), any::<u64>())
                .prop_map(|(dst, data, at, tx_tag)| Op::SmsgTx { dst, data, at, tx_tag }),
            (any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>(), frags())
                .prop_map(|(src, cookie, tx_off, key, frags)| Op::Pull { src, cookie, tx_off, key, frags }),
        ]
    }

    proptest! {
        #[test]
        fn desc_round_trip(tag in any::<u64>(), op in op(), slot in any::<u32>()) {
            let mem = Mem::heap(QUEUE_BYTES);
            let r = Rings::new(&mem, true).unwrap();
            let d = Desc { tag, op };
            r.write_desc(slot, &d).unwrap();
            prop_assert_eq!(r.read_desc(slot).unwrap(), d);
        }

        #[test]
        fn garbage_descs_are_refused_not_panics(bytes in proptest::collection::vec(any::<u8>(), 64)) {
            let mem = Mem::heap(QUEUE_BYTES);
            let r = Rings::new(&mem, true).unwrap();
            mem.write(SQ_OFF, &bytes).unwrap();
            let _ = r.read_desc(0);
        }
    }

    /// Issue 19 item 4: the refusal of a malformed descriptor names the peer the descriptor
    /// named (an SMSG's destination), as the node charges SMSG completions to that peer.
    #[test]
    fn malformed_desc_refusal_names_its_peer() {
        let mem = Mem::heap(QUEUE_BYTES);
        let r = Rings::new(&mem, true).unwrap();
        r.write_desc(0, &Desc { tag: 9, op: Op::Smsg { dst: 7, data: vec![1; 8] } }).unwrap();
        mem.write(SQ_OFF, &[99]).unwrap();
        let c = r.read_desc(0).unwrap_err();
        assert_eq!((c.kind, c.status, c.tag, c.peer), (CompKind::SmsgSent, DevStatus::BadDesc, 9, 7));
    }

    #[test]
    fn completion_round_trip_and_magic() {
        let mem = Mem::heap(QUEUE_BYTES);
        assert!(Rings::new(&mem, false).is_err());
        let r = Rings::new(&mem, true).unwrap();
        let c = Completion { kind: CompKind::TxDone, status: DevStatus::TxConsumed, tag: 5, cookie: 6, len: 7, peer: 8 };
        r.write_comp(CQ_N + 3, &c);
        assert_eq!(r.read_comp(3), Some(c));
        assert!(Rings::new(&Mem::heap(100), true).is_err());
    }

    #[test]
    fn the_mailbox_is_sized_for_the_peers_and_checked_by_the_device() {
        assert_eq!(mailbox_slots(1, 8), MB_MIN, "a small fabric keeps the smallest mailbox");
        assert_eq!(mailbox_slots(999, 8), 16384, "999 peers × 11 → 10989 → 16384");
        assert_eq!(mailbox_slots(100_000, 8), MB_MAX);
        let mem = Mem::heap(queue_bytes(4096));
        assert_eq!(Rings::new(&mem, true).unwrap().mailbox_len(), 4096);
        assert_eq!(Rings::new(&mem, false).unwrap().mailbox_len(), 4096, "the device reads what the node declared");
        // A node that declares more slots than its region holds is refused, not trusted.
        mem.write(MB_SLOTS, &8192u32.to_le_bytes()).unwrap();
        assert!(Rings::new(&mem, false).err().unwrap().contains("8192 slots"));
        mem.write(MB_SLOTS, &300u32.to_le_bytes()).unwrap();
        assert!(Rings::new(&mem, false).is_err(), "not a power of two");
    }
}
