//! The SMSG mailbox as several writers share it: the device and, when it allows, peers writing
//! straight from their own processes. A lock word names the writer; a slot is published by
//! moving the tail, so a writer that dies mid-copy leaves nothing half-written behind.

use super::device::{DevStatus, SMSG_MAX};
use super::ring::{self, Rings};
use crate::mem::Mem;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The lock id the device writes under (a node's id is its fabric address + 1).
pub const DEVICE_ID: u32 = u32::MAX;

/// The lock id of the node at fabric address `addr`; `None` for the one address that would
/// collide with the device's.
pub fn node_id(addr: u32) -> Option<u32> {
    addr.checked_add(1).filter(|&id| id != DEVICE_ID)
}

/// One SMSG taken from a mailbox: who sent it, its length, and how many completions the
/// receiver's ring had been given when it was written (so the two merge in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHdr {
    pub from: u32,
    pub len: u32,
    pub after_cq: u32,
}

/// A writer's view of one node's mailbox.
pub struct Mailbox<'a> {
    r: Rings<'a>,
    n: u32,
}

impl<'a> Mailbox<'a> {
    /// `n`: the mailbox's slots as read once at attach (a node may rewrite its own header word).
    pub fn new(q: &'a Mem, n: u32) -> Mailbox<'a> {
        Mailbox { r: Rings { mem: q }, n }
    }

    /// Takes the lock for writer `id`, waiting up to `patience` (spinning, then yielding): a
    /// holder copies at most one SMSG, but may be descheduled; a dead holder's lock is broken
    /// by the device ([`Mailbox::break_lock`]).
    fn lock(&self, id: u32, patience: Duration) -> bool {
        let w = self.r.word(ring::MB_LOCK);
        let mut t0 = None;
        let mut spins = 0u32;
        loop {
            if w.compare_exchange_weak(0, id, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return true;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
                continue;
            }
            let t = *t0.get_or_insert_with(Instant::now);
            if t.elapsed() >= patience {
                return false;
            }
            std::thread::yield_now();
        }
    }

    fn unlock(&self) {
        self.r.word(ring::MB_LOCK).store(0, Ordering::Release);
    }

    /// Releases the lock if writer `id` (gone for good) holds it.
    pub fn break_lock(&self, id: u32) -> bool {
        self.r.word(ring::MB_LOCK).compare_exchange(id, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Writes `data` from node `from` into the next slot and publishes it. With `gen`, the
    /// region must still belong to that generation of its owner (else `NoSuchPeer`: the owner
    /// left or attached again). `MailboxFull` when no slot is free or the lock stays held.
    pub fn push(&self, id: u32, gen: Option<u32>, from: u32, data: &[u8], patience: Duration) -> Result<(), DevStatus> {
        if data.len() > SMSG_MAX {
            return Err(DevStatus::TooLong);
        }
        if !self.lock(id, patience) {
            return Err(DevStatus::MailboxFull);
        }
        let res = self.push_locked(gen, from, data);
        self.unlock();
        res
    }

    fn push_locked(&self, gen: Option<u32>, from: u32, data: &[u8]) -> Result<(), DevStatus> {
        if gen.is_some_and(|g| self.r.word(ring::GEN).load(Ordering::Acquire) != g) {
            return Err(DevStatus::NoSuchPeer);
        }
        let head = self.r.word(ring::MB_HEAD).load(Ordering::Acquire);
        let tail = self.r.word(ring::MB_TAIL).load(Ordering::Relaxed);
        if tail.wrapping_sub(head) >= self.n {
            return Err(DevStatus::MailboxFull);
        }
        let q = self.r.mem;
        q.write(Rings::mailbox_off(tail, self.n), data).map_err(|_| DevStatus::TooLong)?;
        let after_cq = self.r.word(ring::CQ_TAIL).load(Ordering::Acquire);
        let mut h = [0u8; ring::MBH_SZ as usize];
        h[..4].copy_from_slice(&from.to_le_bytes());
        h[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[8..12].copy_from_slice(&after_cq.to_le_bytes());
        q.write(Rings::mailbox_hdr_off(tail, self.n), &h).map_err(|_| DevStatus::TooLong)?;
        self.r.word(ring::MB_TAIL).store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// The header of the oldest SMSG not yet taken, if any (the reader's side).
    pub fn peek(&self) -> Option<SlotHdr> {
        let head = self.r.word(ring::MB_HEAD).load(Ordering::Relaxed);
        if head == self.r.word(ring::MB_TAIL).load(Ordering::Acquire) {
            return None;
        }
        let mut h = [0u8; ring::MBH_SZ as usize];
        self.r.mem.read(Rings::mailbox_hdr_off(head, self.n), &mut h).ok()?;
        let u = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
        Some(SlotHdr { from: u(0), len: u(4), after_cq: u(8) })
    }

    /// Copies the oldest SMSG (as [`Mailbox::peek`] described it) into `out` and frees its
    /// slot; returns its bytes (a writer's length beyond `SMSG_MAX` is cut to it).
    pub fn take<'o>(&self, h: &SlotHdr, out: &'o mut [u8]) -> &'o [u8] {
        let head = self.r.word(ring::MB_HEAD).load(Ordering::Relaxed);
        let len = (h.len as usize).min(SMSG_MAX).min(out.len());
        let ok = self.r.mem.read(Rings::mailbox_off(head, self.n), &mut out[..len]).is_ok();
        self.r.word(ring::MB_HEAD).store(head.wrapping_add(1), Ordering::Release);
        if ok {
            &out[..len]
        } else {
            &[]
        }
    }
}

/// Whether an SMSG written when the ring had been given `after_cq` completions comes before
/// completion number `cq_head` (the next one the node would read): only once every completion
/// posted before it has been read.
pub fn smsg_first(after_cq: u32, cq_head: u32) -> bool {
    (after_cq.wrapping_sub(cq_head) as i32) <= 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn region() -> (Arc<Mem>, u32) {
        let q = Mem::heap(ring::QUEUE_BYTES);
        let n = Rings::new(&q, true).unwrap().mailbox_len();
        (q, n)
    }

    #[test]
    fn writers_publish_in_order_and_a_full_mailbox_says_so() {
        let (q, n) = region();
        let mb = Mailbox::new(&q, n);
        let p = Duration::from_millis(10);
        mb.push(4, None, 3, b"one", p).unwrap();
        mb.push(DEVICE_ID, None, 5, b"two!", p).unwrap();
        let mut out = vec![0u8; SMSG_MAX];
        let h = mb.peek().unwrap();
        assert_eq!((h.from, h.len), (3, 3));
        assert_eq!(mb.take(&h, &mut out), b"one");
        let h = mb.peek().unwrap();
        assert_eq!((h.from, mb.take(&h, &mut out)), (5, &b"two!"[..]));
        assert!(mb.peek().is_none());
        for _ in 0..n {
            mb.push(4, None, 3, b"x", p).unwrap();
        }
        assert_eq!(mb.push(4, None, 3, b"x", p), Err(DevStatus::MailboxFull));
        assert_eq!(mb.push(4, None, 3, &vec![0; SMSG_MAX + 1], p), Err(DevStatus::TooLong));
    }

    #[test]
    fn a_stale_generation_is_refused_and_a_dead_writers_lock_is_broken() {
        let (q, n) = region();
        let mb = Mailbox::new(&q, n);
        let g = Rings { mem: &q }.word(ring::GEN).load(Ordering::SeqCst);
        let p = Duration::from_millis(5);
        mb.push(4, Some(g), 3, b"a", p).unwrap();
        Rings::new(&q, true).unwrap(); // the owner attached again
        assert_eq!(mb.push(4, Some(g), 3, b"b", p), Err(DevStatus::NoSuchPeer));
        // Writer 9 took the lock and died: others time out until the device breaks it.
        assert!(mb.lock(9, p));
        assert_eq!(mb.push(4, None, 3, b"c", p), Err(DevStatus::MailboxFull));
        assert!(!mb.break_lock(4), "only the dead writer's lock is broken");
        assert!(mb.break_lock(9));
        mb.push(4, None, 3, b"c", p).unwrap();
        assert_eq!(Rings { mem: &q }.mb_pending(), 2, "the refused pushes left nothing");
    }

    /// Completions and SMSGs merge in the order they were posted.
    #[test]
    fn smsgs_sort_among_completions_by_position() {
        assert!(smsg_first(5, 5), "written after completion 4: goes before 5");
        assert!(!smsg_first(6, 5), "written after completion 5 was posted");
        assert!(smsg_first(3, 5));
        assert!(!smsg_first(1, u32::MAX), "wrapping");
    }

    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri")]
    fn concurrent_writers_lose_and_tear_nothing() {
        let (q, n) = region();
        let writers = 4u32;
        let per = 5000u32;
        let mut hs = Vec::new();
        for w in 0..writers {
            let q = q.clone();
            hs.push(std::thread::spawn(move || {
                let mb = Mailbox::new(&q, n);
                let mut i = 0;
                while i < per {
                    let msg = [w as u8; 64].iter().chain(i.to_le_bytes().iter()).copied().collect::<Vec<u8>>();
                    match mb.push(w + 1, None, w, &msg, Duration::from_secs(5)) {
                        Ok(()) => i += 1,
                        Err(DevStatus::MailboxFull) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        let mb = Mailbox::new(&q, n);
        let mut next = vec![0u32; writers as usize];
        let mut out = vec![0u8; SMSG_MAX];
        while next.iter().sum::<u32>() < writers * per {
            let Some(h) = mb.peek() else { std::thread::yield_now(); continue };
            let d = mb.take(&h, &mut out);
            assert_eq!(d.len(), 68);
            assert!(d[..64].iter().all(|&b| b == h.from as u8), "torn message from {}", h.from);
            let i = u32::from_le_bytes(d[64..].try_into().unwrap());
            assert_eq!(i, next[h.from as usize], "writer {}'s messages in order", h.from);
            next[h.from as usize] += 1;
        }
        hs.into_iter().for_each(|h| h.join().unwrap());
    }
}
