//! One OST's objects, kept as files in the OST's own directory (its "disk"), with `LAST_ID`
//! (the last object id handed out) and `last_rcvd` (the last transaction number) beside them.
//! Data survives an OSS restart; the configured size is enforced; no offset or size a request
//! names can overflow or allocate more than it writes.

use crate::ptlrpc::wire::rc::{EFBIG, EINVAL, EIO, ENOENT, ENOSPC};
use std::collections::HashMap;
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
    /// `last_rcvd`: the last transaction number, kept across restarts.
    last_rcvd: File,
    last_transno: u64,
    last_committed: u64,
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
        Ok(Ost { index, dir, limit, used, last_id, sizes, last_rcvd, last_transno, last_committed: last_transno, synced_bytes: 0, durable_len: HashMap::new() })
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

    pub fn exists(&self, oid: u64) -> bool {
        self.sizes.contains_key(&oid)
    }

    pub fn create(&mut self) -> Result<u64, i32> {
        let oid = self.last_id + 1;
        std::fs::write(self.dir.join("LAST_ID"), oid.to_le_bytes()).map_err(io_err)?;
        self.last_id = oid;
        File::create(self.path(oid)).map_err(io_err)?;
        self.sizes.insert(oid, 0);
        Ok(oid)
    }

    pub fn destroy(&mut self, oid: u64) -> Result<(), i32> {
        let size = self.sizes.remove(&oid).ok_or(ENOENT)?;
        self.used -= size;
        std::fs::remove_file(self.path(oid)).map_err(io_err)
    }

    /// Accounts object `oid` at `new` bytes: EFBIG past the largest object, ENOSPC past the
    /// OST's size.
    fn resize(&mut self, oid: u64, new: u64) -> Result<(), i32> {
        let old = *self.sizes.get(&oid).ok_or(ENOENT)?;
        if new > MAX_OBJECT_BYTES {
            return Err(EFBIG);
        }
        let used = self.used - old + new;
        if new > old && used > self.limit {
            return Err(ENOSPC);
        }
        self.used = used;
        self.sizes.insert(oid, new);
        Ok(())
    }

    /// The end of `[off, off + len)`, or EFBIG when it lies past the largest object.
    pub fn extent_end(off: u64, len: u64) -> Result<u64, i32> {
        off.checked_add(len).filter(|&e| e <= MAX_OBJECT_BYTES).ok_or(EFBIG)
    }

    pub fn write(&mut self, oid: u64, off: u64, data: &[u8]) -> Result<(), i32> {
        let f = self.file(oid)?;
        let end = Self::extent_end(off, data.len() as u64)?;
        let size = self.sizes[&oid];
        if end > size {
            self.resize(oid, end)?;
        }
        f.write_all_at(data, off).map_err(|e| {
            if end > size {
                let _ = self.resize(oid, size);
            }
            io_err(e)
        })
    }

    /// Reads up to `len` bytes at `off`: the bytes that exist (holes read as zeros), none past
    /// the end — a short read, as `ofd_preprw_read` does.
    pub fn read(&self, oid: u64, off: u64, len: usize) -> Result<Vec<u8>, i32> {
        let f = self.file(oid)?;
        let size = self.sizes[&oid];
        let n = size.saturating_sub(off).min(len as u64) as usize;
        let mut v = vec![0u8; n];
        f.read_exact_at(&mut v, off).map_err(io_err)?;
        Ok(v)
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
        let f = self.file(oid)?;
        let old = self.sizes[&oid];
        self.resize(oid, size)?;
        f.set_len(size).map_err(|e| {
            let _ = self.resize(oid, old);
            io_err(e)
        })
    }

    /// Makes bytes `[start, end]` of object `oid` durable (end inclusive, as `vfs_fsync_range`;
    /// `dt_object_sync` for `ofd_sync_hdl`): `sync_file_range` over the part that exists, and
    /// `fdatasync` as well when the object's length changed since its last sync (the length is
    /// metadata only that persists). Returns the bytes of the range that exist.
    pub fn sync_range(&mut self, oid: u64, start: u64, end: u64) -> Result<u64, i32> {
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
        for oid in self.sizes.keys() {
            self.file(*oid)?.sync_data().map_err(io_err)?;
        }
        self.last_rcvd.sync_data().map_err(io_err)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|_| EIO)?;
        self.durable_len = self.sizes.clone();
        self.last_committed = self.last_transno;
        Ok(())
    }

    /// A new transaction number for a change just made (kept in `last_rcvd`).
    pub fn next_transno(&mut self) -> u64 {
        self.last_transno += 1;
        let _ = self.last_rcvd.write_all_at(&self.last_transno.to_le_bytes(), 0);
        self.last_transno
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
