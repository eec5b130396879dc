//! Content-defined chunking: FastCDC (2020) with the gear table keyed by the repository, so
//! that chunk boundaries do not reveal content to someone comparing sizes across repositories.

use fastcdc::v2020::{MASKS, get_gear_with_seed, logarithm2};

use super::format::config::ChunkerParams;

pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Chunker {
    pub fn new(params: &ChunkerParams, seed: u64) -> Self {
        let bits = logarithm2(params.avg_size);
        let (gear, gear_ls) = get_gear_with_seed(seed);
        // Normalization level 1, as FastCDC recommends.
        Self {
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_s: MASKS[(bits + 1) as usize],
            mask_l: MASKS[(bits - 1) as usize],
            gear,
            gear_ls,
        }
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the next chunk at the start of `data`. Returns `None` when more input is
    /// needed to decide (fewer than `max` bytes buffered and not at end of file).
    pub fn next_cut(&self, data: &[u8], eof: bool) -> Option<usize> {
        if data.is_empty() {
            return None;
        }
        if data.len() < self.max && !eof {
            return None;
        }
        let (_, len) = fastcdc::v2020::cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        Some(len.max(1).min(data.len()))
    }

    /// Split a whole buffer (tests and small inputs).
    pub fn split<'a>(&self, mut data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while let Some(n) = self.next_cut(data, true) {
            out.push(&data[..n]);
            data = &data[n..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_the_input_within_bounds() {
        let c = Chunker::new(&ChunkerParams::default(), 42);
        let data = pseudo_random(12 << 20, 1);
        let chunks = c.split(&data);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), data.len());
        for ch in &chunks[..chunks.len() - 1] {
            assert!(
                ch.len() >= 512 * 1024 && ch.len() <= 4 << 20,
                "{}",
                ch.len()
            );
        }
    }

    #[test]
    fn an_insertion_moves_only_nearby_boundaries() {
        let c = Chunker::new(&ChunkerParams::default(), 42);
        let data = pseudo_random(16 << 20, 2);
        let mut edited = data[..5 << 20].to_vec();
        edited.extend_from_slice(b"a new row in the middle");
        edited.extend_from_slice(&data[5 << 20..]);
        let a: std::collections::HashSet<_> = c.split(&data).into_iter().collect();
        let b = c.split(&edited);
        let shared = b.iter().filter(|ch| a.contains(*ch)).count();
        assert!(
            shared + 2 >= b.len(),
            "{shared} of {} chunks shared",
            b.len()
        );
    }

    #[test]
    fn a_different_seed_moves_the_boundaries() {
        let data = pseudo_random(8 << 20, 3);
        let a = Chunker::new(&ChunkerParams::default(), 1).split(&data);
        let b = Chunker::new(&ChunkerParams::default(), 2).split(&data);
        assert_ne!(
            a.iter().map(|c| c.len()).collect::<Vec<_>>(),
            b.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
    }
}
