//! The mutator: byte, token and splice mutations over a corpus.

/// xorshift64*: fast, seedable, and good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // A zero state would stay zero.
        Self((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Bytes that often sit on a parser's edge.
const INTERESTING: &[u8] = &[
    0, 0xff, 0x7f, 0x80, 0xc0, 0xe2, b'/', b'.', b'%', b'\\', b'"', b'&', b'=', b'+', b'\n', b'\r',
    b':', b'{', b'[', b'~', b' ',
];

/// One mutated copy of `base` (with `other` for splicing), at most `max` bytes.
pub fn mutate(rng: &mut Rng, base: &[u8], other: &[u8], dict: &[&[u8]], max: usize) -> Vec<u8> {
    let mut out = base.to_vec();
    let rounds = 1 + rng.below(6);
    for _ in 0..rounds {
        let len = out.len();
        match rng.below(12) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, bytes);
            }
            4 | 5 if !dict.is_empty() => {
                let at = rng.below(len + 1);
                let token = dict[rng.below(dict.len())];
                if rng.chance(2) && len > 0 {
                    let end = (at + 1 + rng.below(8)).min(len);
                    out.splice(at.min(len)..end, token.iter().copied());
                } else {
                    out.splice(at..at, token.iter().copied());
                }
            }
            6 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                out.drain(at..end);
            }
            7 if len > 0 => {
                // Duplicate a range elsewhere (repeated parameters, nesting).
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                let piece = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, piece);
            }
            8 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            9 if len > 0 => {
                out.truncate(rng.below(len));
            }
            10 if !dict.is_empty() => {
                // A token many times: deep nesting, long `../` chains.
                let token = dict[rng.below(dict.len())];
                let times = 1 + rng.below(256);
                let at = rng.below(len + 1);
                let repeated: Vec<u8> = token.repeat(times);
                out.splice(at..at, repeated);
            }
            11 if len > 1 => {
                let a = rng.below(len);
                let b = rng.below(len);
                out.swap(a, b);
            }
            _ => {
                let at = rng.below(len + 1);
                out.insert(at, INTERESTING[rng.below(INTERESTING.len())]);
            }
        }
        if out.len() > max {
            out.truncate(max);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutations() {
        let dict: &[&[u8]] = &[b"..", b"%2e"];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..100)
                .map(|_| mutate(&mut rng, b"/workspace/a.txt", b"x=y", dict, 4096))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn mutations_respect_the_size_limit() {
        let mut rng = Rng::new(1);
        let big = vec![b'a'; 100];
        for _ in 0..10_000 {
            assert!(mutate(&mut rng, &big, &big, &[b"[[[["], 128).len() <= 128);
        }
    }
}
