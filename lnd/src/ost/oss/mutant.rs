//! The OSS's write mutants (see `crate::mutant`): `oss_drop_acked_write=N` acknowledges every Nth
//! WRITE it executes without writing it; `oss_damage_acked_write=N` writes it with its first byte
//! flipped (after checksumming what arrived, so the client is told all is well). Each keeps count
//! of the places it spoilt that no later good write put right, for tests to compare with what
//! the checker reports. A dropped write over bytes an earlier attempt wrote damaged (its bulk
//! checksum failed, so the client redid it) leaves those damaged bytes: it is also counted apart.

use crate::ptlrpc::wire::{crc32c, NioBuf};
use std::collections::{BTreeSet, HashMap};
use tracing::warn;

/// A place in an object: (OST, object id, offset).
type Place = (u32, u64, u64);

#[derive(Default)]
pub(super) struct WriteMutants {
    /// WRITEs executed.
    writes: u64,
    /// Places a dropped write left without its data.
    pub lost: BTreeSet<Place>,
    /// Places a damaged write left wrong.
    pub damaged: BTreeSet<Place>,
    /// Of `lost`, the places that hold bytes damaged on the way (they read back as garbage).
    pub lost_over_damage: BTreeSet<Place>,
    /// The CRC32C of what each place holds after a write that was done (dropping a resend of
    /// data already there loses nothing), and whether those bytes were damaged on the way.
    held: HashMap<Place, (u32, bool)>,
}

/// What to do with a WRITE.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Write,
    /// Acknowledge it, write nothing.
    Drop,
}

impl WriteMutants {
    /// Decides about a WRITE of `data` to `nbs` of `oid` (damaging `data` in place when the
    /// damage mutant picks it); `garbled`: its bulk checksum failed (the client will redo it).
    pub fn on_write(&mut self, ost: u32, oid: u64, nbs: &[NioBuf], data: &mut [u8], garbled: bool) -> Verdict {
        let drop = crate::mutant::param("oss_drop_acked_write", 40);
        let damage = crate::mutant::param("oss_damage_acked_write", 40);
        if drop.is_none() && damage.is_none() {
            return Verdict::Write;
        }
        self.writes += 1;
        let picked = |n: Option<u64>| n.is_some_and(|n| self.writes % n.max(1) == 0);
        let mut at = 0usize;
        let places: Vec<(Place, usize, usize, u32)> = nbs
            .iter()
            .map(|nb| {
                let p = ((ost, oid, nb.offset), at, nb.len as usize, crc32c(0, &data[at..at + nb.len as usize]));
                at += nb.len as usize;
                p
            })
            .collect();
        if picked(drop) {
            warn!(ost, oid, offset = nbs[0].offset, "mutant oss_drop_acked_write: WRITE acknowledged, not written");
            for (place, _, _, crc) in places {
                match self.held.get(&place) {
                    Some(&(c, false)) if c == crc => {}
                    held => {
                        self.lost.insert(place);
                        if held.is_some_and(|h| h.1) {
                            self.lost_over_damage.insert(place);
                        }
                    }
                }
            }
            return Verdict::Drop;
        }
        let spoil = picked(damage);
        for (place, start, len, crc) in places {
            self.lost.remove(&place);
            self.lost_over_damage.remove(&place);
            self.damaged.remove(&place);
            self.held.insert(place, (crc, garbled));
            if spoil && len > 0 {
                data[start] ^= 0xa5;
                self.damaged.insert(place);
                self.held.remove(&place);
            }
        }
        if spoil {
            warn!(ost, oid, offset = nbs[0].offset, "mutant oss_damage_acked_write: WRITE acknowledged, written damaged");
        }
        Verdict::Write
    }
}
