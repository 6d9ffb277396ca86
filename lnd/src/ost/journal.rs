//! The OST's write-back cache: changes acknowledged but not yet committed (the open journal
//! transaction of ldiskfs), kept in the OSS's memory and laid over the object files on reads.
//! A commit writes them to the files in order; a crash (power loss) loses them.

use std::collections::HashMap;

/// One change not yet on disk.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new, empty object.
    Create,
    Write { off: u64, data: Vec<u8> },
    /// The object's length set to `size` (bytes past it read as zeros).
    Truncate { size: u64 },
    /// OST_FALLOCATE on `[start, end)` with `mode`, the object `size` bytes long before it.
    Fallocate { start: u64, end: u64, mode: u32, size: u64 },
    Destroy,
}

/// The changes of the open transaction, per object in the order made.
#[derive(Debug, Default)]
pub struct Journal {
    /// (sequence, object, change): the order a commit applies them in.
    changes: Vec<(u64, Change)>,
    by_object: HashMap<u64, Vec<usize>>,
    /// Bytes of write data held (a full cache commits early, as a full journal does).
    pub bytes: u64,
}

impl Journal {
    pub fn push(&mut self, oid: u64, c: Change) {
        if let Change::Write { data, .. } = &c {
            self.bytes += data.len() as u64;
        }
        self.by_object.entry(oid).or_default().push(self.changes.len());
        self.changes.push((oid, c));
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Every change, in order, leaving the journal empty (a commit).
    pub fn take(&mut self) -> Vec<(u64, Change)> {
        self.by_object.clear();
        self.bytes = 0;
        std::mem::take(&mut self.changes)
    }

    /// Lays object `oid`'s changes over `buf`, which holds its durable bytes at `off` (zeros
    /// past the durable end): what a read sees. Bytes past the object's length at each step
    /// stay zero, so extending it later reads zeros.
    pub fn overlay(&self, oid: u64, off: u64, buf: &mut [u8]) {
        let end = off + buf.len() as u64;
        let zero = |buf: &mut [u8], a: u64, b: u64| {
            let (a, b) = (a.max(off), b.min(end));
            if a < b {
                buf[(a - off) as usize..(b - off) as usize].fill(0);
            }
        };
        for &i in self.by_object.get(&oid).into_iter().flatten() {
            match &self.changes[i].1 {
                Change::Create | Change::Destroy => buf.fill(0),
                Change::Write { off: w, data } => {
                    let (a, b) = ((*w).max(off), (w + data.len() as u64).min(end));
                    if a < b {
                        buf[(a - off) as usize..(b - off) as usize].copy_from_slice(&data[(a - w) as usize..(b - w) as usize]);
                    }
                }
                Change::Truncate { size } => zero(buf, *size, u64::MAX),
                Change::Fallocate { start, end: e, mode, .. } => {
                    if mode & (crate::ptlrpc::wire::falloc::PUNCH_HOLE | crate::ptlrpc::wire::falloc::ZERO_RANGE) != 0 {
                        zero(buf, *start, *e);
                    }
                }
            }
        }
    }

    /// Whether object `oid` was created in this transaction (it has no file yet).
    pub fn created(&self, oid: u64) -> bool {
        self.by_object.get(&oid).into_iter().flatten().any(|&i| matches!(self.changes[i].1, Change::Create))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads see the changes in the order made: a write, a truncate below it, an extension
    /// (zeros), a punched hole.
    #[test]
    fn overlay_applies_changes_in_order() {
        let mut j = Journal::default();
        j.push(1, Change::Write { off: 2, data: vec![9; 6] });
        j.push(1, Change::Truncate { size: 5 });
        j.push(1, Change::Truncate { size: 10 });
        j.push(2, Change::Write { off: 0, data: vec![1; 10] });
        j.push(1, Change::Write { off: 7, data: vec![3; 2] });
        j.push(1, Change::Fallocate { start: 3, end: 4, mode: crate::ptlrpc::wire::falloc::PUNCH_HOLE, size: 10 });
        let mut buf = vec![5u8; 10];
        j.overlay(1, 0, &mut buf);
        assert_eq!(buf, [5, 5, 9, 0, 9, 0, 0, 3, 3, 0]);
        let mut buf = vec![0u8; 3];
        j.overlay(1, 6, &mut buf);
        assert_eq!(buf, [0, 3, 3]);
        assert_eq!(j.bytes, 18);
        assert!(!j.created(1));
        assert_eq!(j.take().len(), 6);
        assert!(j.is_empty());
    }
}
