//! One OST's objects, kept as files in the OST's own directory (its "disk"). Data survives an
//! OSS restart; the configured size is enforced.

use crate::lnet::errno;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub const ENOENT: i32 = -2;
pub const ENOSPC: i32 = -28;

pub struct Ost {
    pub index: u32,
    dir: PathBuf,
    limit: u64,
    used: u64,
    next_oid: u64,
    sizes: HashMap<u64, u64>,
}

fn io_err(e: std::io::Error) -> i32 {
    -(e.raw_os_error().unwrap_or(5))
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
        let next_oid = sizes.keys().max().map(|m| m + 1).unwrap_or(1);
        Ok(Ost { index, dir, limit, used, next_oid, sizes })
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

    pub fn create(&mut self) -> Result<u64, i32> {
        let oid = self.next_oid;
        File::create(self.path(oid)).map_err(io_err)?;
        self.next_oid += 1;
        self.sizes.insert(oid, 0);
        Ok(oid)
    }

    pub fn destroy(&mut self, oid: u64) -> Result<(), i32> {
        let size = self.sizes.remove(&oid).ok_or(ENOENT)?;
        self.used -= size;
        std::fs::remove_file(self.path(oid)).map_err(io_err)
    }

    fn resize(&mut self, oid: u64, new: u64) -> Result<(), i32> {
        let old = *self.sizes.get(&oid).ok_or(ENOENT)?;
        if new > old && self.used + (new - old) > self.limit {
            return Err(ENOSPC);
        }
        self.used = self.used + new - old;
        self.sizes.insert(oid, new);
        Ok(())
    }

    pub fn write(&mut self, oid: u64, off: u64, data: &[u8]) -> Result<(), i32> {
        let f = self.file(oid)?;
        let end = off + data.len() as u64;
        let size = self.sizes[&oid];
        if end > size {
            self.resize(oid, end)?;
        }
        f.write_all_at(data, off).map_err(io_err)
    }

    /// Reads `len` bytes; holes and bytes past the end read as zeros.
    pub fn read(&self, oid: u64, off: u64, len: usize) -> Result<Vec<u8>, i32> {
        let f = self.file(oid)?;
        let mut v = vec![0u8; len];
        let size = self.sizes[&oid];
        if off < size {
            let n = ((size - off) as usize).min(len);
            f.read_exact_at(&mut v[..n], off).map_err(io_err)?;
        }
        Ok(v)
    }

    pub fn size(&self, oid: u64) -> Result<u64, i32> {
        self.sizes.get(&oid).copied().ok_or(ENOENT)
    }

    pub fn truncate(&mut self, oid: u64, size: u64) -> Result<(), i32> {
        let f = self.file(oid)?;
        self.resize(oid, size)?;
        f.set_len(size).map_err(io_err)
    }

    /// Deallocates `[start, end)`: a punch to or past the end truncates, otherwise zeros.
    pub fn punch(&mut self, oid: u64, start: u64, end: u64) -> Result<(), i32> {
        let size = self.size(oid)?;
        if end >= size {
            return self.truncate(oid, start.min(size));
        }
        let f = self.file(oid)?;
        f.write_all_at(&vec![0u8; (end - start) as usize], start).map_err(io_err)
    }

    pub fn sync(&self) -> Result<(), i32> {
        for oid in self.sizes.keys() {
            self.file(*oid)?.sync_data().map_err(io_err)?;
        }
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|_| errno::EIO)
    }

    pub fn used(&self) -> u64 {
        self.used
    }
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
        assert_eq!(o.read(a, 98, 9).unwrap(), b"\0\0hello\0\0");
        assert_eq!(o.size(a), Ok(105));
        assert_eq!(o.write(a, 9_999, b"xx"), Err(ENOSPC));
        o.punch(a, 101, 103).unwrap();
        assert_eq!(o.read(a, 100, 5).unwrap(), b"h\0\0lo");
        o.punch(a, 102, u64::MAX).unwrap();
        assert_eq!(o.size(a), Ok(102));
        o.sync().unwrap();
        drop(o);
        let mut o = Ost::open(0, d.path().join("ost0"), 10_000).unwrap();
        assert_eq!(o.read(a, 100, 2).unwrap(), b"h\0");
        let b = o.create().unwrap();
        assert!(b > a, "object ids are not reused after restart");
        o.destroy(a).unwrap();
        assert_eq!(o.read(a, 0, 1), Err(ENOENT));
        assert_eq!(o.used(), 0);
    }
}
