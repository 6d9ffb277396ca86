//! Seeded generators for simulation and fault injection: the same seed gives the same choices
//! on every machine.

/// xorshift64*: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fires for one in `rate` trials at random (`rate` 0: never).
#[derive(Debug, Clone)]
pub struct OneIn {
    rate: u32,
    rng: Rng,
}

impl OneIn {
    pub fn new(rate: u32, seed: u64) -> OneIn {
        OneIn { rate, rng: Rng::new(seed) }
    }
    /// Whether this trial fires, with a random word to place the fault by.
    pub fn fire(&mut self) -> Option<u64> {
        if self.rate == 0 {
            return None;
        }
        let x = self.rng.next();
        (x % self.rate as u64 == 0).then_some(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_in_fires_about_once_per_rate_and_replays() {
        let mut a = OneIn::new(8, 5);
        let hits: Vec<bool> = (0..8000).map(|_| a.fire().is_some()).collect();
        let n = hits.iter().filter(|h| **h).count();
        assert!((800..1200).contains(&n), "{n} hits in 8000 at 1/8");
        let mut b = OneIn::new(8, 5);
        assert!(hits.iter().all(|h| *h == b.fire().is_some()), "same seed, same choices");
        assert!((0..100).all(|_| OneIn::new(0, 1).fire().is_none()));
    }
}
