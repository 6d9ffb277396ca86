//! A small generational slab: stable `u64` handles (generation << 32 | index) that go stale
//! when their slot is reused, so a late ACK or REPLY cannot hit a recycled MD.

#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, v: T) -> u64 {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            let s = &mut self.slots[i as usize];
            s.0 = s.0.wrapping_add(1);
            s.1 = Some(v);
            ((s.0 as u64) << 32) | i as u64
        } else {
            self.slots.push((1, Some(v)));
            (1u64 << 32) | (self.slots.len() - 1) as u64
        }
    }

    fn slot(&self, h: u64) -> Option<usize> {
        let i = (h & 0xffff_ffff) as usize;
        match self.slots.get(i) {
            Some((g, Some(_))) if *g as u64 == h >> 32 => Some(i),
            _ => None,
        }
    }

    pub fn get(&self, h: u64) -> Option<&T> {
        self.slot(h).and_then(|i| self.slots[i].1.as_ref())
    }

    pub fn get_mut(&mut self, h: u64) -> Option<&mut T> {
        self.slot(h).and_then(|i| self.slots[i].1.as_mut())
    }

    pub fn remove(&mut self, h: u64) -> Option<T> {
        let i = self.slot(h)?;
        self.free.push(i as u32);
        self.len -= 1;
        self.slots[i].1.take()
    }

    /// Removes the entry only if `take` says so; otherwise leaves it in place.
    pub fn remove_if(&mut self, h: u64, take: impl FnOnce(&T) -> bool) -> Option<T> {
        if take(self.get(h)?) {
            self.remove(h)
        } else {
            None
        }
    }

    /// Removes and returns every entry `pred` selects.
    pub fn drain_where(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        for (i, (_, slot)) in self.slots.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(&mut pred) {
                out.push(slot.take().unwrap());
                self.free.push(i as u32);
                self.len -= 1;
            }
        }
        out
    }

    /// Handles of the entries `pred` selects.
    pub fn handles_where(&self, mut pred: impl FnMut(&T) -> bool) -> Vec<u64> {
        self.slots.iter().enumerate().filter(|(_, (_, v))| v.as_ref().is_some_and(&mut pred)).map(|(i, (g, _))| ((*g as u64) << 32) | i as u64).collect()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Every entry, in slot order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|(_, v)| v.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_handles_miss() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_ne!(a, b);
        assert!(s.get(a).is_none());
        assert_eq!(s.get(b), Some(&"b"));
        assert!(s.get(u64::MAX).is_none());
        assert_eq!(s.len(), 1);
    }
}
