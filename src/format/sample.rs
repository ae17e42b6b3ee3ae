//! The spec-defined pseudo-random generator and the pack sample of `verify --read-data=P%`.
//!
//! A library generator (`rand`'s `StdRng`) may change its output between versions, so a seed
//! printed by one cairn would choose other packs in the next. SplitMix64 is fixed by
//! format-spec/chunking.md, and the way a sample is drawn from it by format-spec/verify.md; the
//! vector `format-spec/vectors/sample.json` pins both.

/// SplitMix64 (Steele, Lea, Flood 2014), as defined in format-spec/chunking.md.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `out` with outputs, each written as 8 little-endian bytes (the last one cut short).
    pub fn fill(&mut self, out: &mut [u8]) {
        for c in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    /// `n` bytes from a generator seeded with `seed`.
    pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        SplitMix64(seed).fill(&mut v);
        v
    }

    /// `next_u64() mod n`, a value in `0..n` (`n > 0`). The modulo bias is below 2^-32 for any
    /// `n` under 2^32, far under anything a sample of packs could show.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// How many of `len` items a `percent` sample takes: `ceil(len * percent / 100)` in IEEE-754
/// double precision, at most `len` (format-spec/verify.md).
pub fn sample_size(len: usize, percent: f64) -> usize {
    (((len as f64) * percent / 100.0).ceil() as usize).min(len)
}

/// The items a `percent` sample with `seed` takes, in the order they are read: the items sorted
/// ascending, then a partial Fisher-Yates shuffle driven by [`SplitMix64`] (format-spec/verify.md).
/// At 100% nothing is drawn: all items, sorted.
/// For packs, `T` is the pack id (or a tuple that starts with it, ids being unique).
pub fn sample<T: Ord + Clone>(items: &[T], percent: f64, seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort();
    if percent >= 100.0 {
        return v;
    }
    let n = sample_size(v.len(), percent);
    let mut rng = SplitMix64(seed);
    for i in 0..n {
        let j = i + rng.below((v.len() - i) as u64) as usize;
        v.swap(i, j);
    }
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_output() {
        // First output for seed 0 of the reference implementation (Vigna's splitmix64.c).
        assert_eq!(SplitMix64(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn sample_is_a_deterministic_subset_of_the_asked_size() {
        let items: Vec<u32> = (0..37).rev().collect();
        let s = sample(&items, 25.0, 7);
        assert_eq!(s.len(), 10);
        assert_eq!(s, sample(&items, 25.0, 7));
        let mut u = s.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), 10, "no item twice");
        assert!(s.iter().all(|x| *x < 37));
        // The input order does not matter, only the set.
        let mut shuffled = items.clone();
        shuffled.rotate_left(11);
        assert_eq!(sample(&shuffled, 25.0, 7), s);
        assert_ne!(sample(&items, 25.0, 8), s);
        assert_eq!(sample(&items, 100.0, 7), (0..37).collect::<Vec<_>>());
        assert_eq!(sample::<u32>(&[], 50.0, 7), Vec::<u32>::new());
        assert_eq!(sample_size(3, 0.1), 1);
    }
}
