//! An OST's client records, as `last_rcvd`'s client slots: one fixed-size slot per connected
//! client, written in place when it connects and cleared when it leaves, so a connect costs one
//! small write whatever the number of clients (rewriting a list cost a server with a thousand
//! clients quadratic time).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes per slot (`LR_CLIENT_SIZE`); the UUID (at most 40 bytes, NUL padded) comes first.
const SLOT: u64 = 128;
const UUID_MAX: usize = 40;

pub struct ClientSlots {
    file: File,
    /// Each recorded client's slot.
    slots: BTreeMap<String, u64>,
    names: BTreeSet<String>,
    /// Slots cleared and free for the next client.
    free: BTreeSet<u64>,
    /// The slot after the last one used.
    end: u64,
}

impl ClientSlots {
    /// Opens (or creates) `path`, reading the clients recorded in it.
    pub fn open(path: &Path) -> std::io::Result<ClientSlots> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let bytes = std::fs::read(path)?;
        let (mut slots, mut free) = (BTreeMap::new(), BTreeSet::new());
        let end = bytes.len() as u64 / SLOT;
        for (i, s) in bytes.chunks_exact(SLOT as usize).enumerate() {
            let uuid = &s[..s[..UUID_MAX].iter().position(|&c| c == 0).unwrap_or(UUID_MAX)];
            match std::str::from_utf8(uuid) {
                Ok(u) if !u.is_empty() && !slots.contains_key(u) => {
                    slots.insert(u.to_string(), i as u64);
                }
                _ => {
                    free.insert(i as u64);
                }
            }
        }
        let names = slots.keys().cloned().collect();
        Ok(ClientSlots { file, slots, names, free, end })
    }

    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// Records `uuid` (`add`) or clears its slot; false if nothing changed.
    pub fn set(&mut self, uuid: &str, add: bool) -> std::io::Result<bool> {
        let mut rec = [0u8; SLOT as usize];
        let slot = match (add, self.slots.get(uuid)) {
            (true, Some(_)) | (false, None) => return Ok(false),
            (true, None) => {
                let n = uuid.len().min(UUID_MAX);
                rec[..n].copy_from_slice(&uuid.as_bytes()[..n]);
                self.free.pop_first().unwrap_or_else(|| {
                    self.end += 1;
                    self.end - 1
                })
            }
            (false, Some(&s)) => s,
        };
        self.file.write_all_at(&rec, slot * SLOT)?;
        if add {
            self.slots.insert(uuid.to_string(), slot);
            self.names.insert(uuid.to_string());
        } else {
            self.slots.remove(uuid);
            self.names.remove(uuid);
            self.free.insert(slot);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients");
        let mut c = ClientSlots::open(&path).unwrap();
        for u in ["a-1", "b-2", "c-3"] {
            assert!(c.set(u, true).unwrap());
        }
        assert!(!c.set("b-2", true).unwrap(), "already recorded");
        assert!(c.set("b-2", false).unwrap());
        assert!(!c.set("b-2", false).unwrap(), "already gone");
        assert!(c.set("d-4", true).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * SLOT, "d-4 took b-2's slot");
        let again = ClientSlots::open(&path).unwrap();
        assert_eq!(again.names().iter().map(String::as_str).collect::<Vec<_>>(), ["a-1", "c-3", "d-4"]);
    }
}
