//! Registered memory: a bounds-checked byte region, heap-backed (tests, simulation) or a shared
//! memfd mapping (the emulated device maps the same pages). Access is by copy, never by reference.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

/// Out-of-range access to a region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access [{off}, +{len}) outside region of {size} bytes")]
pub struct OutOfBounds {
    pub off: u64,
    pub len: u64,
    pub size: u64,
}

enum Backing {
    /// `ptr` owns a boxed `[u64]` slice covering `len` bytes (from `Box::into_raw`; 8-byte
    /// aligned, as the rings' atomic words need), freed on drop.
    Heap,
    Mmap { fd: OwnedFd },
}

/// A fixed-size byte region. Another process (the device) may copy into it concurrently, as DMA
/// would; we therefore only touch it with `ptr::copy` and never hand out `&[u8]` into it.
pub struct Mem {
    ptr: *mut u8,
    len: usize,
    backing: Backing,
}

// SAFETY: the region is plain bytes accessed only through bounds-checked raw copies.
unsafe impl Send for Mem {}
unsafe impl Sync for Mem {}

impl std::fmt::Debug for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mem({} bytes, {})", self.len, if self.fd().is_some() { "memfd" } else { "heap" })
    }
}

impl Mem {
    /// A zeroed heap region.
    pub fn heap(len: usize) -> Arc<Mem> {
        // The pointer is the allocation's own (no Box is kept to move it and invalidate the
        // pointer under Stacked Borrows); `Drop` turns it back into the Box.
        let ptr = Box::into_raw(vec![0u64; len.div_ceil(8)].into_boxed_slice()) as *mut u8;
        Arc::new(Mem { ptr, len, backing: Backing::Heap })
    }

    /// A zeroed shared region backed by a new memfd, mapped read-write. Its size is sealed, so
    /// whoever else maps it (the device) can rely on every page staying there.
    pub fn memfd(name: &str, len: usize) -> std::io::Result<Arc<Mem>> {
        let cname = std::ffi::CString::new(name).unwrap_or_default();
        // SAFETY: plain syscalls; the fd is owned right after creation.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Mem::map_fd(fd, len).map(Arc::new)
    }

    /// Like [`Mem::map_fd`], for a memfd another process owns: refused unless sealed against
    /// shrinking (else that process could truncate it under us, and our next access faults).
    pub fn map_sealed_fd(fd: OwnedFd, len: usize) -> std::io::Result<Mem> {
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "memfd is not sealed against shrinking (F_SEAL_SHRINK)"));
        }
        Mem::map_fd(fd, len)
    }

    /// Maps `len` bytes of a memfd received from a peer (the device side of registration).
    pub fn map_fd(fd: OwnedFd, len: usize) -> std::io::Result<Mem> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if (st.st_size as u64) < len as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("memfd holds {} bytes, {} claimed", st.st_size, len),
            ));
        }
        let ptr = if len == 0 {
            std::ptr::NonNull::<u8>::dangling().as_ptr()
        } else {
            // SAFETY: mapping a file we own; checked size above.
            let p = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0)
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            p as *mut u8
        };
        Ok(Mem { ptr, len, backing: Backing::Mmap { fd } })
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd behind a shared region, to pass to the device.
    pub fn fd(&self) -> Option<&OwnedFd> {
        match &self.backing {
            Backing::Mmap { fd } => Some(fd),
            Backing::Heap => None,
        }
    }

    /// Checks `[off, off+len)` lies inside the region.
    pub fn check(&self, off: u64, len: u64) -> Result<(), OutOfBounds> {
        match off.checked_add(len) {
            Some(end) if end <= self.len as u64 => Ok(()),
            _ => Err(OutOfBounds { off, len, size: self.len as u64 }),
        }
    }

    pub fn read(&self, off: u64, out: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(off, out.len() as u64)?;
        // SAFETY: bounds checked; raw copy tolerates concurrent writers of plain bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off as usize), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    pub fn write(&self, off: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        self.check(off, data.len() as u64)?;
        // SAFETY: as in `read`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off as usize), data.len()) };
        Ok(())
    }

    pub fn fill(&self, off: u64, len: u64, byte: u8) -> Result<(), OutOfBounds> {
        self.check(off, len)?;
        unsafe { std::ptr::write_bytes(self.ptr.add(off as usize), byte, len as usize) };
        Ok(())
    }

    /// Copies `len` bytes from `src[src_off..]` to `self[dst_off..]`: the device's one memcpy.
    pub fn copy_from(&self, dst_off: u64, src: &Mem, src_off: u64, len: u64) -> Result<(), OutOfBounds> {
        self.check(dst_off, len)?;
        src.check(src_off, len)?;
        // SAFETY: both ranges checked; `copy` allows overlap when src and dst are one region.
        unsafe { std::ptr::copy(src.ptr.add(src_off as usize), self.ptr.add(dst_off as usize), len as usize) };
        Ok(())
    }

    /// Writes `[off, off+len)` to `fd` (a blocking socket), all of it: the fabric link sends a
    /// transmit's bytes straight from the owner's pages.
    pub fn write_to_fd(&self, off: u64, len: u64, fd: std::os::fd::RawFd) -> std::io::Result<()> {
        self.check(off, len).map_err(std::io::Error::other)?;
        let mut done = 0u64;
        while done < len {
            // SAFETY: bounds checked; the kernel only reads these bytes.
            let n = unsafe { libc::write(fd, self.ptr.add((off + done) as usize) as *const libc::c_void, (len - done) as usize) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            done += n as u64;
        }
        Ok(())
    }

    /// Reads exactly `len` bytes from `fd` (a blocking socket) into `[off, off+len)`: the
    /// fabric link lands pulled bytes straight in the puller's pages.
    pub fn read_from_fd(&self, off: u64, len: u64, fd: std::os::fd::RawFd) -> std::io::Result<()> {
        self.check(off, len).map_err(std::io::Error::other)?;
        let mut done = 0u64;
        while done < len {
            // SAFETY: bounds checked; the kernel writes plain bytes into the range.
            let n = unsafe { libc::read(fd, self.ptr.add((off + done) as usize) as *mut libc::c_void, (len - done) as usize) };
            match n {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n if n < 0 => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                n => done += n as u64,
            }
        }
        Ok(())
    }

    /// Copies out a range into a new vector.
    pub fn to_vec(&self, off: u64, len: usize) -> Result<Vec<u8>, OutOfBounds> {
        let mut v = vec![0u8; len];
        self.read(off, &mut v)?;
        Ok(v)
    }

    /// An atomic u32 living in the region (ring indices shared with the device).
    pub fn atomic_u32(&self, off: u64) -> Result<&std::sync::atomic::AtomicU32, OutOfBounds> {
        self.check(off, 4)?;
        if off % 4 != 0 {
            return Err(OutOfBounds { off, len: 4, size: self.len as u64 });
        }
        // SAFETY: aligned, in bounds, lives as long as `self`; AtomicU32 has u32's layout.
        Ok(unsafe { &*(self.ptr.add(off as usize) as *const std::sync::atomic::AtomicU32) })
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        match self.backing {
            Backing::Mmap { .. } => {
                if self.len > 0 {
                    unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
                }
            }
            // SAFETY: `ptr` is the boxed slice of `len.div_ceil(8)` words `Mem::heap` leaked,
            // dropped only here.
            Backing::Heap => drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr as *mut u64, self.len.div_ceil(8))) }),
        }
    }
}

/// A contiguous piece of a node's memory: offset and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Seg {
    pub off: u64,
    pub len: u32,
}

/// Total bytes in an iovec.
pub fn iov_len(iov: &[Seg]) -> u64 {
    iov.iter().map(|s| s.len as u64).sum()
}

/// The sub-iovec covering `[off, off+len)` of `iov` (like `lnet_extract_iov`).
pub fn iov_slice(iov: &[Seg], off: u64, len: u64) -> Vec<Seg> {
    let mut out = Vec::new();
    iov_slice_into(iov, off, len, &mut out);
    out
}

/// [`iov_slice`] into `out` (appended), so a caller can reuse its vectors.
pub fn iov_slice_into(iov: &[Seg], mut off: u64, mut len: u64, out: &mut Vec<Seg>) {
    for s in iov {
        if len == 0 {
            break;
        }
        if off >= s.len as u64 {
            off -= s.len as u64;
            continue;
        }
        let take = (s.len as u64 - off).min(len);
        out.push(Seg { off: s.off + off, len: take as u32 });
        off = 0;
        len -= take;
    }
}

/// Copies `data` into the memory described by `iov` (up to its length); returns bytes copied.
pub fn iov_write(mem: &Mem, iov: &[Seg], mut data: &[u8]) -> Result<usize, OutOfBounds> {
    let mut n = 0;
    for s in iov {
        if data.is_empty() {
            break;
        }
        let take = (s.len as usize).min(data.len());
        mem.write(s.off, &data[..take])?;
        data = &data[take..];
        n += take;
    }
    Ok(n)
}

/// Gathers the bytes described by `iov` into `out` (appending).
pub fn iov_read(mem: &Mem, iov: &[Seg], out: &mut Vec<u8>) -> Result<(), OutOfBounds> {
    for s in iov {
        let start = out.len();
        out.resize(start + s.len as usize, 0);
        mem.read(s.off, &mut out[start..])?;
    }
    Ok(())
}

/// A first-fit allocator handing out pieces of one region (the node's registered arena).
#[derive(Debug)]
pub struct Arena {
    free: Vec<(u64, u64)>, // sorted (off, len)
    align: u64,
}

impl Arena {
    pub fn new(size: u64, align: u64) -> Arena {
        Arena { free: vec![(0, size)], align: align.max(1) }
    }

    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let want = len.max(1).div_ceil(self.align) * self.align;
        let i = self.free.iter().position(|&(_, l)| l >= want)?;
        let (off, l) = self.free[i];
        if l == want {
            self.free.remove(i);
        } else {
            self.free[i] = (off + want, l - want);
        }
        Some(off)
    }

    /// Like [`Arena::alloc`] but from the top of the highest free block (long-lived buffers
    /// stay out of the way of ordinary allocations).
    pub fn alloc_top(&mut self, len: u64) -> Option<u64> {
        let want = len.max(1).div_ceil(self.align) * self.align;
        let i = self.free.iter().rposition(|&(_, l)| l >= want)?;
        let (off, l) = self.free[i];
        if l == want {
            self.free.remove(i);
        } else {
            self.free[i] = (off, l - want);
        }
        Some(off + l - want)
    }

    pub fn free(&mut self, off: u64, len: u64) {
        let len = len.max(1).div_ceil(self.align) * self.align;
        let i = self.free.partition_point(|&(o, _)| o < off);
        self.free.insert(i, (off, len));
        // merge with next, then previous
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }

    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|f| f.1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let m = Mem::heap(16);
        assert!(m.write(10, &[1; 6]).is_ok());
        assert_eq!(m.write(11, &[1; 6]), Err(OutOfBounds { off: 11, len: 6, size: 16 }));
        assert!(m.read(u64::MAX, &mut [0; 2]).is_err());
        let n = Mem::heap(4);
        assert!(n.copy_from(0, &m, 14, 4).is_err());
        assert!(n.copy_from(0, &m, 12, 4).is_ok());
        assert_eq!(n.to_vec(0, 4).unwrap(), vec![1, 1, 1, 1]);
    }

    /// Issue 19 item 5: the heap region's pointer must stay valid once its allocation is owned
    /// by the `Mem` (Stacked Borrows, checked under Miri: `cargo +nightly miri test -p lnd --lib mem::`).
    #[test]
    fn heap_region_stays_valid_after_the_move() {
        let m = Mem::heap(64);
        let other = m.clone();
        m.write(3, b"dma").unwrap();
        assert_eq!(other.to_vec(3, 3).unwrap(), b"dma");
        let n = Mem::heap(8);
        n.copy_from(0, &m, 3, 3).unwrap();
        assert_eq!(n.to_vec(0, 4).unwrap(), b"dma\0");
        drop(m);
        assert_eq!(other.to_vec(2, 4).unwrap(), b"\0dma");
    }

    /// Issue 19 item 4: a node's memfd cannot shrink under the device's mapping (SIGBUS in
    /// `dmadev`): it is sealed, and the device maps only sealed ones.
    #[test]
    #[cfg_attr(miri, ignore = "memfd_create and mmap are not available under Miri")]
    fn memfd_is_sealed_against_shrinking() {
        let m = Mem::memfd("t", 8192).unwrap();
        let fd = m.fd().unwrap().as_raw_fd();
        assert_ne!(unsafe { libc::ftruncate(fd, 4096) }, 0, "shrinking a node memfd must fail");
        assert_eq!(m.len(), 8192);
        let dup = m.fd().unwrap().try_clone().unwrap();
        assert!(Mem::map_sealed_fd(dup, 8192).is_ok());
        // A memfd without seals is refused.
        let raw = unsafe { libc::memfd_create(c"u".as_ptr(), libc::MFD_CLOEXEC) };
        let raw = unsafe { OwnedFd::from_raw_fd(raw) };
        assert_eq!(unsafe { libc::ftruncate(raw.as_raw_fd(), 4096) }, 0);
        assert!(Mem::map_sealed_fd(raw, 4096).is_err());
    }

    #[test]
    #[cfg_attr(miri, ignore = "memfd_create and mmap are not available under Miri")]
    fn memfd_is_shared_between_mappings() {
        let m = Mem::memfd("t", 4096).unwrap();
        let fd = m.fd().unwrap().try_clone().unwrap();
        let other = Mem::map_fd(fd, 4096).unwrap();
        m.write(100, b"hello").unwrap();
        assert_eq!(other.to_vec(100, 5).unwrap(), b"hello");
        let fd = m.fd().unwrap().try_clone().unwrap();
        assert!(Mem::map_fd(fd, 8192).is_err(), "claiming more than the memfd holds must fail");
    }

    #[test]
    fn iov_helpers() {
        let iov = [Seg { off: 0, len: 4 }, Seg { off: 100, len: 4 }, Seg { off: 200, len: 4 }];
        assert_eq!(iov_slice(&iov, 2, 4), vec![Seg { off: 2, len: 2 }, Seg { off: 100, len: 2 }]);
        assert_eq!(iov_slice(&iov, 8, 10), vec![Seg { off: 200, len: 4 }]);
        assert!(iov_slice(&iov, 12, 1).is_empty());
        let m = Mem::heap(256);
        assert_eq!(iov_write(&m, &iov[..2], b"abcdefghij").unwrap(), 8);
        let mut out = Vec::new();
        iov_read(&m, &iov[..2], &mut out).unwrap();
        assert_eq!(out, b"abcdefgh");
    }

    #[test]
    fn arena_reuses_and_merges() {
        let mut a = Arena::new(1024, 64);
        let x = a.alloc(100).unwrap();
        let y = a.alloc(64).unwrap();
        assert_eq!((x, y), (0, 128));
        assert!(a.alloc(2000).is_none());
        a.free(x, 100);
        a.free(y, 64);
        assert_eq!(a.free_bytes(), 1024);
        assert_eq!(a.alloc(1024), Some(0));
        a.free(0, 1024);
        assert_eq!(a.alloc_top(100), Some(1024 - 128));
        assert_eq!(a.alloc(896), Some(0));
        assert!(a.alloc(1).is_none());
    }
}
