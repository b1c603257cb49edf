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
        // A product's bit k depends only on the input's bits up to k, and maps pick buckets
        // from the low bits: fold the high half down and multiply again, so a difference
        // anywhere in the last word reaches them.
        (self.0 ^ (self.0 >> 32)).wrapping_mul(K).rotate_left(26)
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

    /// Keys that differ only in their high bits, or only in a string's first or last
    /// byte, still spread over the low bits a map indexes by.
    #[test]
    fn structured_keys_spread() {
        let spread = |buckets: HashSet<u64>, of: usize| {
            assert!(buckets.len() * 10 > of * 8, "{} buckets of {of}", buckets.len());
        };
        spread((0..256_u32).map(|i| bucket(Ssrc::from(i << 24))).collect(), 256);
        spread((0..256_u32).map(|i| bucket(Ssrc::from(i))).collect(), 256);
        let mid = |s: String| MidRid(Mid::from(s.as_str()), Some(Rid::from("h")));
        spread((0..100).map(|i| bucket(mid(format!("{i}")))).collect(), 100);
        // Sixteen characters: the difference is in the second word's last byte.
        let chars = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let last = |c: u8| format!("abcdefghijklmno{}", c as char);
        spread(chars.iter().map(|c| bucket(mid(last(*c)))).collect(), 36);
        let rid = |c: u8| {
            let rid = format!("layer_{}", c as char);
            MidRid(Mid::from("0"), Some(Rid::from(rid.as_str())))
        };
        spread(chars.iter().map(|c| bucket(rid(*c))).collect(), 36);
    }

    /// Every byte of a write counts, the remainder of a word included.
    #[test]
    fn every_byte_counts() {
        for len in 1..=17 {
            let base = vec![7_u8; len];
            let mut seen = HashSet::new();
            for i in 0..len {
                let mut bytes = base.clone();
                bytes[i] = 8;
                let mut h = LocalHasher::default();
                h.write(&bytes);
                assert!(seen.insert(h.finish()), "len {len}: byte {i} changed nothing");
            }
            let mut h = LocalHasher::default();
            h.write(&base);
            assert!(!seen.contains(&h.finish()), "len {len}");
        }
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
