//! One OST's objects, kept as files in the OST's own directory (its "disk"), with `LAST_ID`
//! (the last object id handed out), `last_rcvd` (the last committed transaction number) and
//! `clients` (who was connected) beside them. Changes are volatile until committed (`journal`):
//! a commit (OST_SYNC, the commit interval, a full cache, a clean shutdown) writes them to the
//! files; a crash loses them. The configured size is enforced; no offset or size a request names
//! can overflow or allocate more than it writes.

use crate::ptlrpc::wire::falloc;
use crate::ptlrpc::wire::rc::{EFBIG, EINVAL, EIO, ENOENT, ENOSPC, EOPNOTSUPP};
use super::journal::{Change, Journal};
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// The largest object (`ocd_maxbytes`, ldiskfs's 16 TiB): writes and truncates past it get
/// EFBIG.
pub const MAX_OBJECT_BYTES: u64 = 1 << 44;

pub struct Ost {
    pub index: u32,
    dir: PathBuf,
    limit: u64,
    used: u64,
    last_id: u64,
    sizes: HashMap<u64, u64>,
    /// Where space preallocated past an object's size (OST_FALLOCATE with KEEP_SIZE) ends; an
    /// object takes max(size, this) of the OST. Not remembered across a restart.
    reserved: HashMap<u64, u64>,
    /// `last_rcvd`: the last committed transaction number, kept across restarts.
    last_rcvd: File,
    last_transno: u64,
    last_committed: u64,
    /// Changes not yet committed (lost by a crash).
    journal: Journal,
    /// Clients connected (their UUIDs), kept on disk at once: after a restart they are the
    /// clients recovery waits for (`lr_server_data`'s client slots).
    clients: super::clients::ClientSlots,
    /// Bytes object syncs made durable (what a SYNC covered), for tests and stats.
    synced_bytes: u64,
    /// Each object's length at its last sync.
    durable_len: HashMap<u64, u64>,
}

fn io_err(e: std::io::Error) -> i32 {
    -(e.raw_os_error().unwrap_or(5))
}

fn read_u64(path: &std::path::Path) -> u64 {
    std::fs::read(path).ok().and_then(|b| b.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))).unwrap_or(0)
}

impl Ost {
    /// Opens (or formats) the OST in `dir`, finding the objects already there.
    pub fn open(index: u32, dir: PathBuf, limit: u64) -> std::io::Result<Ost> {
        std::fs::create_dir_all(&dir)?;
        let mut sizes = HashMap::new();
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if let Some(oid) = e.file_name().to_str().and_then(|n| n.strip_prefix("obj.")).and_then(|n| n.parse::<u64>().ok()) {
                sizes.insert(oid, e.metadata()?.len());
            }
        }
        let used = sizes.values().sum();
        // Ids are never handed out twice, even when the newest objects were destroyed.
        let last_id = read_u64(&dir.join("LAST_ID")).max(sizes.keys().max().copied().unwrap_or(0));
        let last_transno = read_u64(&dir.join("last_rcvd"));
        let last_rcvd = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join("last_rcvd"))?;
        let clients = super::clients::ClientSlots::open(&dir.join("clients"))?;
        Ok(Ost { index, dir, limit, used, last_id, sizes, reserved: HashMap::new(), last_rcvd, last_transno, last_committed: last_transno, journal: Journal::default(), clients, synced_bytes: 0, durable_len: HashMap::new() })
    }

    /// Power loss: everything not committed is gone; the OST as the disk has it.
    pub fn crash(mut self) -> std::io::Result<Ost> {
        let lost = self.journal.take().len();
        tracing::warn!(ost = self.index, lost, last_committed = self.last_committed, last_transno = self.last_transno, "crash: uncommitted changes lost");
        self.last_transno = self.last_committed;
        let (index, dir, limit) = (self.index, self.dir.clone(), self.limit);
        drop(self);
        Ost::open(index, dir, limit)
    }

    /// Commits the open transaction: its changes go to the object files in the order made,
    /// then `LAST_ID` and `last_rcvd`; every transaction so far is committed.
    pub fn commit(&mut self) -> Result<(), i32> {
        if self.journal.is_empty() && self.last_committed == self.last_transno {
            return Ok(());
        }
        let mut first_err = None;
        for (oid, c) in self.journal.take() {
            if let Err(e) = self.apply(oid, c) {
                tracing::warn!(ost = self.index, oid, "commit: {e}");
                first_err.get_or_insert(e);
            }
        }
        std::fs::write(self.dir.join("LAST_ID"), self.last_id.to_le_bytes()).map_err(io_err)?;
        self.last_rcvd.write_all_at(&self.last_transno.to_le_bytes(), 0).map_err(io_err)?;
        self.last_committed = self.last_transno;
        first_err.map_or(Ok(()), Err)
    }

    fn apply(&mut self, oid: u64, c: Change) -> Result<(), i32> {
        let open = || OpenOptions::new().read(true).write(true).open(self.path(oid)).map_err(io_err);
        match c {
            Change::Create => File::create(self.path(oid)).map(|_| ()).map_err(io_err),
            Change::Write { off, data } => open()?.write_all_at(&data, off).map_err(io_err),
            Change::Truncate { size } => open()?.set_len(size).map_err(io_err),
            Change::Fallocate { start, end, mode, size } => allocate(&open()?, start, end, mode, size),
            Change::Destroy => std::fs::remove_file(self.path(oid)).map_err(io_err),
        }
    }

    /// Bytes of write data the cache holds uncommitted.
    pub fn uncommitted_bytes(&self) -> u64 {
        self.journal.bytes
    }

    /// Whether anything is uncommitted.
    pub fn dirty(&self) -> bool {
        !self.journal.is_empty() || self.last_committed != self.last_transno
    }

    /// The clients connected when the OST last knew (recovery waits for them after a restart).
    pub fn clients(&self) -> &BTreeSet<String> {
        self.clients.names()
    }

    /// Records client `uuid` as connected (`add`) or gone, on disk at once.
    pub fn set_client(&mut self, uuid: &str, add: bool) {
        if let Err(e) = self.clients.set(uuid, add) {
            tracing::warn!(ost = self.index, "cannot record the clients: {e}");
        }
    }

    fn path(&self, oid: u64) -> PathBuf {
        self.dir.join(format!("obj.{oid}"))
    }

    fn file(&self, oid: u64) -> Result<File, i32> {
        if !self.sizes.contains_key(&oid) {
            return Err(ENOENT);
        }
        OpenOptions::new().read(true).write(true).open(self.path(oid)).map_err(io_err)
    }

    /// The object's file as the disk has it (`None`: created since the last commit).
    fn durable(&self, oid: u64) -> Result<Option<File>, i32> {
        if !self.sizes.contains_key(&oid) {
            return Err(ENOENT);
        }
        if self.journal.created(oid) {
            return Ok(None);
        }
        self.file(oid).map(Some)
    }

    pub fn exists(&self, oid: u64) -> bool {
        self.sizes.contains_key(&oid)
    }

    pub fn create(&mut self) -> Result<u64, i32> {
        let oid = self.last_id + 1;
        self.create_at(oid)?;
        Ok(oid)
    }

    /// Creates object `oid` unless it exists (a replayed CREATE makes the object its first
    /// execution made); later ids are handed out past it.
    pub fn create_at(&mut self, oid: u64) -> Result<(), i32> {
        if oid == 0 {
            return Err(EINVAL);
        }
        if self.sizes.contains_key(&oid) {
            return Ok(());
        }
        self.last_id = self.last_id.max(oid);
        self.sizes.insert(oid, 0);
        self.journal.push(oid, Change::Create);
        Ok(())
    }

    pub fn destroy(&mut self, oid: u64) -> Result<(), i32> {
        let size = self.sizes.remove(&oid).ok_or(ENOENT)?;
        self.used -= size.max(self.reserved.remove(&oid).unwrap_or(0));
        self.durable_len.remove(&oid);
        self.journal.push(oid, Change::Destroy);
        Ok(())
    }

    fn reserved(&self, oid: u64) -> u64 {
        self.reserved.get(&oid).copied().unwrap_or(0)
    }

    /// Accounts object `oid` at `size` bytes with space reserved up to `reserved`: EFBIG past
    /// the largest object, ENOSPC when it grows past the OST's size.
    fn account(&mut self, oid: u64, size: u64, reserved: u64) -> Result<(), i32> {
        let old = (*self.sizes.get(&oid).ok_or(ENOENT)?).max(self.reserved(oid));
        if size.max(reserved) > MAX_OBJECT_BYTES {
            return Err(EFBIG);
        }
        let new = size.max(reserved);
        let used = self.used - old + new;
        if new > old && used > self.limit {
            return Err(ENOSPC);
        }
        self.used = used;
        self.sizes.insert(oid, size);
        if reserved > size {
            self.reserved.insert(oid, reserved);
        } else {
            self.reserved.remove(&oid);
        }
        Ok(())
    }

    /// Object `oid` at `new` bytes; shrinking it frees what was reserved past the new size.
    fn resize(&mut self, oid: u64, new: u64) -> Result<(), i32> {
        let (size, r) = (*self.sizes.get(&oid).ok_or(ENOENT)?, self.reserved(oid));
        self.account(oid, new, if new < size { r.min(new) } else { r })
    }

    /// The end of `[off, off + len)`, or EFBIG when it lies past the largest object.
    pub fn extent_end(off: u64, len: u64) -> Result<u64, i32> {
        off.checked_add(len).filter(|&e| e <= MAX_OBJECT_BYTES).ok_or(EFBIG)
    }

    pub fn write(&mut self, oid: u64, off: u64, data: &[u8]) -> Result<(), i32> {
        self.write_vec(oid, off, data.to_vec())
    }

    /// [`Ost::write`] of bytes the caller hands over (no copy into the journal).
    pub fn write_vec(&mut self, oid: u64, off: u64, data: Vec<u8>) -> Result<(), i32> {
        let size = self.size(oid)?;
        let end = Self::extent_end(off, data.len() as u64)?;
        if end > size {
            self.resize(oid, end)?;
        }
        self.journal.push(oid, Change::Write { off, data });
        Ok(())
    }

    /// Reads up to `len` bytes at `off`: the bytes that exist (holes read as zeros), none past
    /// the end — a short read, as `ofd_preprw_read` does; uncommitted changes included.
    pub fn read(&self, oid: u64, off: u64, len: usize) -> Result<Vec<u8>, i32> {
        let f = self.durable(oid)?;
        let size = self.sizes[&oid];
        let n = size.saturating_sub(off).min(len as u64) as usize;
        let mut v = vec![0u8; n];
        if let Some(f) = f {
            let on_disk = f.metadata().map_err(io_err)?.len();
            let m = on_disk.saturating_sub(off).min(n as u64) as usize;
            f.read_exact_at(&mut v[..m], off).map_err(io_err)?;
        }
        self.journal.overlay(oid, off, &mut v);
        Ok(v)
    }

    /// The ids of the objects the OST holds, in order.
    pub fn oids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.sizes.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// How many objects the OST holds.
    pub fn objects(&self) -> usize {
        self.sizes.len()
    }

    pub fn size(&self, oid: u64) -> Result<u64, i32> {
        self.sizes.get(&oid).copied().ok_or(ENOENT)
    }

    /// Sets the size of `oid` (a PUNCH to OBD_OBJECT_EOF: it can also extend the object).
    pub fn truncate(&mut self, oid: u64, size: u64) -> Result<(), i32> {
        self.resize(oid, size)?;
        self.journal.push(oid, Change::Truncate { size });
        Ok(())
    }

    /// OST_FALLOCATE (`ofd_object_fallocate`) on `[start, end)` of `oid`: preallocates (the size
    /// grows to `end` unless KEEP_SIZE; with it the space past the size is reserved), punches a
    /// hole (PUNCH_HOLE, always KEEP_SIZE) or zeroes (ZERO_RANGE). Space is accounted before
    /// anything is allocated. Where the file system cannot, the same effect by hand: zeros
    /// written, the length set.
    pub fn fallocate(&mut self, oid: u64, start: u64, end: u64, mode: u32) -> Result<(), i32> {
        // In `ofd_fallocate_hdl`'s order: the range, then the mode.
        if start >= end {
            return Err(EINVAL);
        }
        if mode & !falloc::SUPPORTED != 0 {
            return Err(EOPNOTSUPP);
        }
        let mode = if mode & falloc::PUNCH_HOLE != 0 { mode | falloc::KEEP_SIZE } else { mode };
        if end > MAX_OBJECT_BYTES {
            return Err(EFBIG);
        }
        let (size, r) = (self.size(oid)?, self.reserved(oid));
        if mode & falloc::PUNCH_HOLE == 0 {
            if mode & falloc::KEEP_SIZE != 0 {
                self.account(oid, size, r.max(end))?;
            } else {
                self.account(oid, size.max(end), r)?;
            }
        }
        self.journal.push(oid, Change::Fallocate { start, end, mode, size });
        Ok(())
    }

    /// Makes bytes `[start, end]` of object `oid` durable (end inclusive, as `vfs_fsync_range`;
    /// `dt_object_sync` for `ofd_sync_hdl`): `sync_file_range` over the part that exists, and
    /// `fdatasync` as well when the object's length changed since its last sync (the length is
    /// metadata only that persists). Returns the bytes of the range that exist. As an ext4
    /// fsync commits the journal, it first commits every transaction.
    pub fn sync_range(&mut self, oid: u64, start: u64, end: u64) -> Result<u64, i32> {
        self.size(oid)?;
        self.commit()?;
        let f = self.file(oid)?;
        let size = self.sizes[&oid];
        let last = end.min(size.saturating_sub(1));
        let n = if size == 0 || start > last { 0 } else { last - start + 1 };
        if n > 0 {
            use std::os::fd::AsRawFd;
            let how = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: a plain syscall on a descriptor we own; offsets are below the file size.
            if unsafe { libc::sync_file_range(f.as_raw_fd(), start as i64, n as i64, how) } != 0 {
                return Err(io_err(std::io::Error::last_os_error()));
            }
        }
        if self.durable_len.get(&oid) != Some(&size) {
            f.sync_data().map_err(io_err)?;
            self.durable_len.insert(oid, size);
        }
        self.synced_bytes += n;
        Ok(n)
    }

    /// Makes the whole OST durable (`dt_sync`), which commits every transaction so far.
    pub fn sync_all(&mut self) -> Result<(), i32> {
        self.commit()?;
        for oid in self.sizes.keys() {
            self.file(*oid)?.sync_data().map_err(io_err)?;
        }
        self.last_rcvd.sync_data().map_err(io_err)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|_| EIO)?;
        self.durable_len = self.sizes.clone();
        Ok(())
    }

    /// A new transaction number for a change just made (on disk once committed).
    pub fn next_transno(&mut self) -> u64 {
        self.last_transno += 1;
        self.last_transno
    }

    /// A replayed change keeps the transaction number of its first execution.
    pub fn replayed_transno(&mut self, transno: u64) -> u64 {
        self.last_transno = self.last_transno.max(transno);
        transno
    }

    /// The last transaction known to be on disk (`pb_last_committed`).
    pub fn last_committed(&self) -> u64 {
        self.last_committed
    }

    /// Bytes of objects made durable by object syncs so far.
    pub fn synced_bytes(&self) -> u64 {
        self.synced_bytes
    }

    pub fn used(&self) -> u64 {
        self.used
    }
}

/// A clean shutdown (an unmount) commits what is open; a crash does not come here.
impl Drop for Ost {
    fn drop(&mut self) {
        if let Err(e) = self.commit() {
            tracing::warn!(ost = self.index, "commit at shutdown: {e}");
        }
    }
}

/// `fallocate(2)` on `f`, or its effect by hand where the file system does not support the mode.
fn allocate(f: &File, start: u64, end: u64, mode: u32, size: u64) -> Result<(), i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we own; start < end <= MAX_OBJECT_BYTES fit i64.
    if unsafe { libc::fallocate(f.as_raw_fd(), mode as i32, start as i64, (end - start) as i64) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(io_err(e));
    }
    if mode & (falloc::PUNCH_HOLE | falloc::ZERO_RANGE) != 0 {
        let zeros = vec![0u8; 1 << 20];
        let mut at = start;
        while at < end.min(size) {
            let n = (end.min(size) - at).min(zeros.len() as u64) as usize;
            f.write_all_at(&zeros[..n], at).map_err(io_err)?;
            at += n as u64;
        }
    }
    if mode & falloc::KEEP_SIZE == 0 && end > size {
        f.set_len(end).map_err(io_err)?;
    }
    Ok(())
}

/// A PUNCH's `[start, end)` checked as `ofd_punch_hdl` does: only a truncate (end =
/// OBD_OBJECT_EOF) is a PUNCH; anything else is EPROTO (holes are OST_FALLOCATE's).
pub fn punch_start(start: u64, end: u64) -> Result<u64, i32> {
    if end != crate::ptlrpc::wire::OBD_OBJECT_EOF {
        return Err(crate::ptlrpc::wire::rc::EPROTO);
    }
    if start > MAX_OBJECT_BYTES {
        return Err(EINVAL);
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_persist_and_space_is_enforced() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Ost::open(0, d.path().join("ost0"), 10_000).unwrap();
        let a = o.create().unwrap();
        o.write(a, 100, b"hello").unwrap();
        assert_eq!(o.read(a, 98, 9).unwrap(), b"\0\0hello", "a read stops at the end");
        assert_eq!(o.read(a, 200, 9).unwrap(), b"");
        assert_eq!(o.size(a), Ok(105));
        assert_eq!(o.write(a, 9_999, b"xx"), Err(ENOSPC));
        o.truncate(a, 102).unwrap();
        assert_eq!(o.size(a), Ok(102));
        o.truncate(a, 4000).unwrap();
        assert_eq!((o.size(a), o.used()), (Ok(4000), 4000), "a truncate can extend");
        o.truncate(a, 102).unwrap();
        assert_eq!(o.sync_range(a, 100, 101), Ok(2));
        assert_eq!(o.sync_range(a, 50, crate::ptlrpc::wire::OBD_OBJECT_EOF), Ok(52), "up to the end");
        assert_eq!(o.sync_range(a, 102, 200), Ok(0), "past the end");
        assert_eq!(o.sync_range(a, 60, 50), Ok(0), "an empty range");
        assert_eq!(o.synced_bytes(), 54);
        o.sync_all().unwrap();
        let t = o.next_transno();
        drop(o);
        let mut o = Ost::open(0, d.path().join("ost0"), 10_000).unwrap();
        assert_eq!(o.read(a, 100, 2).unwrap(), b"he");
        assert!(o.next_transno() > t, "transaction numbers go on after a restart");
        let b = o.create().unwrap();
        assert!(b > a, "object ids are not reused after restart");
        o.destroy(a).unwrap();
        assert_eq!(o.read(a, 0, 1), Err(ENOENT));
        o.destroy(b).unwrap();
        assert_eq!(o.used(), 0);
        drop(o);
        // LAST_ID: the destroyed newest object's id is not handed out again.
        let mut o = Ost::open(0, d.path().join("ost0"), 10_000).unwrap();
        assert!(o.create().unwrap() > b);
    }

    /// The write-back cache: reads see uncommitted changes; a crash loses them (objects made,
    /// bytes written, truncates, destroys) and the transaction numbers they took; a commit
    /// keeps them, and a clean shutdown commits.
    #[test]
    fn a_crash_loses_what_was_not_committed() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Ost::open(0, d.path().join("ost0"), 1 << 20).unwrap();
        let a = o.create().unwrap();
        o.write(a, 0, &[1; 100]).unwrap();
        let t1 = o.next_transno();
        o.commit().unwrap();
        assert_eq!((o.last_committed(), o.dirty()), (t1, false));
        o.write(a, 50, &[2; 100]).unwrap();
        o.truncate(a, 120).unwrap();
        let b = o.create().unwrap();
        o.write(b, 10, b"new").unwrap();
        o.next_transno();
        assert_eq!(o.read(a, 40, 100).unwrap(), [[1u8; 10].as_slice(), &[2; 70]].concat(), "reads see the cache");
        assert_eq!(o.read(b, 0, 20).unwrap(), b"\0\0\0\0\0\0\0\0\0\0new");
        assert!(o.uncommitted_bytes() >= 103);
        let mut o = o.crash().unwrap();
        assert_eq!(o.read(a, 0, 200).unwrap(), vec![1; 100], "the committed write only");
        assert_eq!((o.read(b, 0, 1), o.last_committed()), (Err(ENOENT), t1));
        assert_eq!(o.next_transno(), t1 + 1, "numbers after the committed one");
        assert_eq!(o.create().unwrap(), b, "the lost object's id comes again (recovery replays first)");
        o.create_at(b + 5).unwrap();
        assert_eq!(o.create().unwrap(), b + 6, "ids go on past a replayed one");
        o.destroy(a).unwrap();
        drop(o);
        let o = Ost::open(0, d.path().join("ost0"), 1 << 20).unwrap();
        assert_eq!((o.read(a, 0, 1), o.exists(b + 5), o.last_committed()), (Err(ENOENT), true, t1 + 1), "a clean shutdown commits");
    }

    /// OST_FALLOCATE: preallocation grows the size, KEEP_SIZE reserves space past it (counted
    /// against the OST, freed by a shrinking truncate or a destroy), a punched hole reads as
    /// zeros; bad ranges and modes are refused, and nothing may reserve past the OST's size.
    #[test]
    fn fallocate_modes_and_space() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Ost::open(0, d.path().join("ost0"), 1 << 20).unwrap();
        let a = o.create().unwrap();
        o.write(a, 0, &[7; 8192]).unwrap();
        o.fallocate(a, 4096, 16384, 0).unwrap();
        assert_eq!((o.size(a), o.used()), (Ok(16384), 16384), "preallocation extends");
        o.fallocate(a, 0, 65536, falloc::KEEP_SIZE).unwrap();
        assert_eq!((o.size(a), o.used()), (Ok(16384), 65536), "KEEP_SIZE reserves past the size");
        o.write(a, 20000, &[1; 100]).unwrap();
        assert_eq!(o.used(), 65536, "a write into reserved space takes no more");
        o.fallocate(a, 1000, 3000, falloc::PUNCH_HOLE).unwrap();
        let back = o.read(a, 0, 8192).unwrap();
        assert!(back[..1000].iter().all(|&b| b == 7) && back[1000..3000].iter().all(|&b| b == 0) && back[3000..].iter().all(|&b| b == 7));
        assert_eq!(o.size(a), Ok(20100), "a hole keeps the size");
        o.fallocate(a, 0, 100, falloc::ZERO_RANGE | falloc::KEEP_SIZE).unwrap();
        assert_eq!(o.read(a, 0, 1000).unwrap()[..100], [0; 100]);
        assert_eq!((o.fallocate(a, 10, 10, 0), o.fallocate(a, 10, 5, 0)), (Err(EINVAL), Err(EINVAL)));
        assert_eq!(o.fallocate(a, 0, 10, 0x8), Err(EOPNOTSUPP), "FALLOC_FL_COLLAPSE_RANGE");
        assert_eq!(o.fallocate(a, 0, u64::MAX, 0), Err(EFBIG));
        assert_eq!(o.fallocate(a, 0, 2 << 20, falloc::KEEP_SIZE), Err(ENOSPC));
        assert_eq!(o.fallocate(a + 1, 0, 10, 0), Err(ENOENT));
        assert_eq!(o.used(), 65536);
        o.truncate(a, 100).unwrap();
        assert_eq!(o.used(), 100, "a shrinking truncate frees the reservation");
        o.fallocate(a, 0, 4096, falloc::KEEP_SIZE).unwrap();
        o.destroy(a).unwrap();
        assert_eq!(o.used(), 0);
    }

    /// Offsets and sizes near 2^64 are refused, not overflowed (before: `off + len` and
    /// `end - start` could wrap and a punch allocated its whole range).
    #[test]
    fn absurd_offsets_and_punches_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Ost::open(0, d.path().join("ost0"), 1 << 20).unwrap();
        let a = o.create().unwrap();
        o.write(a, 0, &[1; 100]).unwrap();
        assert_eq!(o.write(a, u64::MAX - 10, b"xxxxxxxxxxxxxxxxxxxx"), Err(EFBIG));
        assert_eq!(o.write(a, 1 << 62, b"x"), Err(EFBIG));
        assert_eq!(o.truncate(a, u64::MAX), Err(EFBIG));
        assert_eq!(o.truncate(a, 1 << 40), Err(ENOSPC));
        assert_eq!((o.size(a), o.used()), (Ok(100), 100));
        assert_eq!(punch_start(50, 10), Err(crate::ptlrpc::wire::rc::EPROTO));
        assert_eq!(punch_start(10, 50), Err(crate::ptlrpc::wire::rc::EPROTO));
        assert_eq!(punch_start(u64::MAX - 1, u64::MAX), Err(EINVAL));
        assert_eq!(punch_start(10, u64::MAX), Ok(10));
    }
}
