//! ting patch: a fast hash for maps touched for every packet whose keys are chosen by this
//! side, or that hold a handful of entries per connection. SipHash (the std default)
//! defends against keys chosen to collide; these maps have none to fear, and hashing was a
//! measurable share of a forwarding server's time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`LocalHasher`].
pub(crate) type LocalHashMap<K, V> = HashMap<K, V, BuildHasherDefault<LocalHasher>>;

/// Multiplicative hashing a word at a time.
#[derive(Default, Clone, Copy)]
pub(crate) struct LocalHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl LocalHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for LocalHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // Maps pick buckets from the low bits, which a product mixes least.
        self.0.rotate_left(26)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

#[cfg(test)]
mod test {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;
    use crate::rtp_::{Mid, MidRid, Rid, Ssrc};

    fn bucket<T: std::hash::Hash>(key: T) -> u64 {
        BuildHasherDefault::<LocalHasher>::default().hash_one(key) & 1023
    }

    /// Keys that differ only in their high bits, or only in a string's last byte, still
    /// spread over the low bits a map indexes by.
    #[test]
    fn structured_keys_spread() {
        let high: HashSet<u64> = (0..256_u32).map(|i| bucket(Ssrc::from(i << 24))).collect();
        assert!(high.len() > 200, "{} buckets of 256", high.len());
        let low: HashSet<u64> = (0..256_u32).map(|i| bucket(Ssrc::from(i))).collect();
        assert!(low.len() > 200, "{} buckets of 256", low.len());
        let mids: HashSet<u64> = (0..100)
            .map(|i| bucket(MidRid(Mid::from(format!("{i}").as_str()), Some(Rid::from("h")))))
            .collect();
        assert!(mids.len() > 90, "{} buckets of 100", mids.len());
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut map = LocalHashMap::default();
        for i in 0..1000_u32 {
            map.insert(Ssrc::from(i.wrapping_mul(0x0101_0101)), i);
        }
        for i in 0..1000_u32 {
            assert_eq!(map.get(&Ssrc::from(i.wrapping_mul(0x0101_0101))), Some(&i));
        }
    }
}
