//! Argon2id version 1.3 (RFC 9106), computing what the argon2 crate computes, with its
//! compression function on two 64-bit words at a time. Built with `simd128`, a component
//! runs that as WebAssembly SIMD, which Cranelift turns into SSE/AVX: the crate's
//! one-word-at-a-time code gets no help from the autovectorizer there, and a login spends
//! nearly all of its time in this function. Natively, the same code runs on plain pairs
//! of words, which is how the tests compare it with the crate.

use blake2::digest::{Digest, Update, VariableOutput as _};
use blake2::{Blake2b512, Blake2bVar};

use lanes::Pair;

const SYNC_POINTS: usize = 4;
const VERSION: u32 = 0x13;
/// Argon2id's number in H0 and in the address blocks.
const ARGON2ID: u32 = 2;
/// Words in a 1 KiB block.
const WORDS: usize = 128;
/// Pairs of words in a block.
const PAIRS: usize = WORDS / 2;

/// One 1 KiB block, as pairs of words.
#[derive(Clone, Copy)]
struct Block([Pair; PAIRS]);

impl Block {
    const ZERO: Block = Block([Pair::ZERO; PAIRS]);

    fn from_bytes(bytes: &[u8; 1024]) -> Block {
        let mut block = Block::ZERO;
        for (pair, chunk) in block.0.iter_mut().zip(bytes.chunks_exact(16)) {
            *pair = Pair::from_le_bytes(chunk);
        }
        block
    }

    fn word(&self, i: usize) -> u64 {
        self.0[i / 2].word(i % 2)
    }
}

/// Why a hash could not be computed: parameters out of Argon2's ranges.
#[derive(Debug, PartialEq, Eq)]
pub struct BadParams;

/// The Argon2id tag of `password` and `salt` with `m_cost` KiB, `t_cost` passes and
/// `p_cost` lanes, into `out` (4 bytes or more). No secret and no associated data.
pub fn hash_into(
    password: &[u8],
    salt: &[u8],
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    out: &mut [u8],
) -> Result<(), BadParams> {
    let lanes = usize::try_from(p_cost).map_err(|_| BadParams)?;
    if lanes == 0 || t_cost == 0 || out.len() < 4 || u64::from(m_cost) < 8 * u64::from(p_cost) {
        return Err(BadParams);
    }
    let out_len = u32::try_from(out.len()).map_err(|_| BadParams)?;
    let length = |bytes: &[u8]| u32::try_from(bytes.len()).map_err(|_| BadParams);
    let mut h0 = Blake2b512::new();
    for field in [p_cost, out_len, m_cost, t_cost, VERSION, ARGON2ID] {
        Digest::update(&mut h0, field.to_le_bytes());
    }
    Digest::update(&mut h0, length(password)?.to_le_bytes());
    Digest::update(&mut h0, password);
    Digest::update(&mut h0, length(salt)?.to_le_bytes());
    Digest::update(&mut h0, salt);
    // No secret key, no associated data.
    Digest::update(&mut h0, 0u32.to_le_bytes());
    Digest::update(&mut h0, 0u32.to_le_bytes());
    let h0 = h0.finalize();

    let segment = usize::try_from(m_cost).map_err(|_| BadParams)? / (SYNC_POINTS * lanes);
    let lane_length = segment * SYNC_POINTS;
    let mut memory = vec![Block::ZERO; lane_length * lanes];
    let mut bytes = [0u8; 1024];
    for lane in 0..lanes {
        for i in 0..2u32 {
            let lane_number = u32::try_from(lane).map_err(|_| BadParams)?;
            long_hash(
                &[&h0, &i.to_le_bytes(), &lane_number.to_le_bytes()],
                &mut bytes,
            )?;
            memory[lane * lane_length + i as usize] = Block::from_bytes(&bytes);
        }
    }
    let geometry = Geometry {
        lanes,
        lane_length,
        segment,
        passes: t_cost as usize,
    };
    for pass in 0..geometry.passes {
        for slice in 0..SYNC_POINTS {
            for lane in 0..lanes {
                fill_segment(&mut memory, &geometry, pass, slice, lane);
            }
        }
    }

    let mut last = memory[lane_length - 1];
    for lane in 1..lanes {
        last.xor_with(&memory[lane * lane_length + lane_length - 1]);
    }
    for (chunk, pair) in bytes.chunks_exact_mut(16).zip(last.0.iter()) {
        chunk.copy_from_slice(&pair.to_le_bytes());
    }
    long_hash(&[&bytes], out)
}

/// The sizes of the memory being filled, in blocks.
struct Geometry {
    lanes: usize,
    lane_length: usize,
    segment: usize,
    passes: usize,
}

/// Fills one segment of one lane: each block is the compression of the one before it with
/// one chosen earlier, by address blocks in the first half of the first pass (so that the
/// memory accessed there says nothing about the password) and by the previous block's
/// contents after that.
fn fill_segment(memory: &mut [Block], g: &Geometry, pass: usize, slice: usize, lane: usize) {
    let independent = pass == 0 && slice < SYNC_POINTS / 2;
    let mut input = Block::ZERO;
    let mut addresses = Block::ZERO;
    if independent {
        for (i, value) in [pass, lane, slice, memory.len(), g.passes, ARGON2ID as usize]
            .into_iter()
            .enumerate()
        {
            input.0[i / 2].set_word(i % 2, value as u64);
        }
    }
    let first = if pass == 0 && slice == 0 {
        if independent {
            next_addresses(&mut input, &mut addresses);
        }
        2
    } else {
        0
    };
    let lane_start = lane * g.lane_length;
    let segment_start = lane_start + slice * g.segment;
    let mut work = Work::new();
    let mut previous = if segment_start + first == lane_start {
        lane_start + g.lane_length - 1
    } else {
        segment_start + first - 1
    };
    for index in first..g.segment {
        let pseudo_random = if independent {
            if index % WORDS == 0 {
                next_addresses(&mut input, &mut addresses);
            }
            addresses.word(index % WORDS)
        } else {
            memory[previous].word(0)
        };
        let reference = reference_block(g, pass, slice, lane, index, pseudo_random);
        let current = segment_start + index;
        work.permute(&memory[previous], &memory[reference]);
        work.finish(&mut memory[current], pass > 0);
        previous = current;
    }
}

/// The index in memory of the block that the `index`-th block of this segment mixes in
/// (RFC 9106, 3.4.1.2).
fn reference_block(
    g: &Geometry,
    pass: usize,
    slice: usize,
    lane: usize,
    index: usize,
    pseudo_random: u64,
) -> usize {
    let reference_lane = if pass == 0 && slice == 0 {
        lane
    } else {
        (pseudo_random >> 32) as usize % g.lanes
    };
    let same_lane = reference_lane == lane;
    // The blocks that may be referenced: every finished segment (those of other lanes only
    // up to the last sync point), and in this lane the blocks of this segment so far, never
    // the one just before the block being made.
    let finished = if pass == 0 {
        slice * g.segment
    } else {
        g.lane_length - g.segment
    };
    let area = if same_lane {
        finished + index - 1
    } else if index == 0 {
        finished - 1
    } else {
        finished
    };
    let low = pseudo_random & 0xFFFF_FFFF;
    let x = (low * low) >> 32;
    let relative = area - 1 - ((area as u64 * x) >> 32) as usize;
    let start = if pass == 0 || slice == SYNC_POINTS - 1 {
        0
    } else {
        (slice + 1) * g.segment
    };
    reference_lane * g.lane_length + (start + relative) % g.lane_length
}

/// The next block of addresses for data-independent indexing: the counter in `input`
/// advances, and `addresses` becomes G(0, G(0, input)).
fn next_addresses(input: &mut Block, addresses: &mut Block) {
    let counter = input.word(6).wrapping_add(1);
    input.0[3].set_word(0, counter);
    *addresses = compress(&Block::ZERO, &compress(&Block::ZERO, input));
}

impl Block {
    fn xor_with(&mut self, other: &Block) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.xor(*b);
        }
    }
}

/// G: the permutation P over the rows of `x ⊕ y`, then over its columns, xored with
/// `x ⊕ y`.
fn compress(x: &Block, y: &Block) -> Block {
    let mut work = Work::new();
    work.permute(x, y);
    let mut out = Block::ZERO;
    work.finish(&mut out, false);
    out
}

/// G's intermediate blocks, kept between calls so that filling memory copies no block:
/// R = x ⊕ y, and Q = P(R) as it is built.
struct Work {
    r: Block,
    q: Block,
}

impl Work {
    fn new() -> Work {
        Work {
            r: Block::ZERO,
            q: Block::ZERO,
        }
    }

    /// R = x ⊕ y, and Q = P over R's rows and then over the columns.
    fn permute(&mut self, x: &Block, y: &Block) {
        for ((r, x), y) in self.r.0.iter_mut().zip(x.0.iter()).zip(y.0.iter()) {
            *r = x.xor(*y);
        }
        // A row is 16 consecutive words: pairs 8i..8i+8. Column i is words 2i and 2i+1 of
        // every row: pairs i, i+8, ..., i+56.
        for row in 0..8 {
            let at = |k| 8 * row + k;
            let v = permuted(&self.r, at);
            store(&mut self.q, v, at);
        }
        for column in 0..8 {
            let at = |k| column + 8 * k;
            let v = permuted(&self.q, at);
            store(&mut self.q, v, at);
        }
    }

    /// Writes Q ⊕ R to `out`, or xors it into `out` when `accumulate` (passes after the
    /// first, in version 1.3).
    fn finish(&self, out: &mut Block, accumulate: bool) {
        for ((out, q), r) in out.0.iter_mut().zip(self.q.0.iter()).zip(self.r.0.iter()) {
            let g = q.xor(*r);
            *out = if accumulate { out.xor(g) } else { g };
        }
    }
}

/// P on the 16 words in the eight pairs `at(0..8)` of `block`.
#[inline(always)]
fn permuted(block: &Block, at: impl Fn(usize) -> usize) -> [Pair; 8] {
    let mut v = [Pair::ZERO; 8];
    for (k, pair) in v.iter_mut().enumerate() {
        *pair = block.0[at(k)];
    }
    let [a0, a1, b0, b1, c0, c1, d0, d1] = &mut v;
    permute(a0, a1, b0, b1, c0, c1, d0, d1);
    v
}

/// Puts `v` in the pairs `at(0..8)` of `block`.
#[inline(always)]
fn store(block: &mut Block, v: [Pair; 8], at: impl Fn(usize) -> usize) {
    for (k, pair) in v.into_iter().enumerate() {
        block.0[at(k)] = pair;
    }
}

/// P on 16 words held as pairs (v0 v1) (v2 v3) … (v14 v15): BLAKE2b's round with
/// multiplications, first down the columns of the 4×4 matrix, then along its diagonals.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn permute(
    a0: &mut Pair,
    a1: &mut Pair,
    b0: &mut Pair,
    b1: &mut Pair,
    c0: &mut Pair,
    c1: &mut Pair,
    d0: &mut Pair,
    d1: &mut Pair,
) {
    mix(a0, b0, c0, d0);
    mix(a1, b1, c1, d1);
    // Diagonals: b moves one word left, c two, d three, so each column of pairs holds a
    // diagonal of the matrix.
    let (mut e0, mut e1) = (b0.straddle(*b1), b1.straddle(*b0));
    let (mut f0, mut f1) = (*c1, *c0);
    let (mut g0, mut g1) = (d1.straddle(*d0), d0.straddle(*d1));
    mix(a0, &mut e0, &mut f0, &mut g0);
    mix(a1, &mut e1, &mut f1, &mut g1);
    (*b0, *b1) = (e1.straddle(e0), e0.straddle(e1));
    (*c0, *c1) = (f1, f0);
    (*d0, *d1) = (g0.straddle(g1), g1.straddle(g0));
}

/// BLAKE2b's G with Argon2's multiplications, on two columns at once.
#[inline(always)]
fn mix(a: &mut Pair, b: &mut Pair, c: &mut Pair, d: &mut Pair) {
    *a = a.bla_mka(*b);
    *d = d.xor(*a).rotate_right_32();
    *c = c.bla_mka(*d);
    *b = b.xor(*c).rotate_right_24();
    *a = a.bla_mka(*b);
    *d = d.xor(*a).rotate_right_16();
    *c = c.bla_mka(*d);
    *b = b.xor(*c).rotate_right_63();
}

/// H′: BLAKE2b stretched to `out.len()` bytes (RFC 9106, 3.3).
fn long_hash(inputs: &[&[u8]], out: &mut [u8]) -> Result<(), BadParams> {
    let length = u32::try_from(out.len()).map_err(|_| BadParams)?;
    if out.len() <= 64 {
        let mut h = Blake2bVar::new(out.len()).map_err(|_| BadParams)?;
        Update::update(&mut h, &length.to_le_bytes());
        for input in inputs {
            Update::update(&mut h, input);
        }
        return h.finalize_variable(out).map_err(|_| BadParams);
    }
    let mut h = Blake2b512::new();
    Digest::update(&mut h, length.to_le_bytes());
    for input in inputs {
        Digest::update(&mut h, input);
    }
    let mut v = h.finalize();
    out[..32].copy_from_slice(&v[..32]);
    let mut at = 32;
    while out.len() - at > 64 {
        v = Blake2b512::digest(v);
        out[at..at + 32].copy_from_slice(&v[..32]);
        at += 32;
    }
    let mut last = Blake2bVar::new(out.len() - at).map_err(|_| BadParams)?;
    Update::update(&mut last, &v);
    last.finalize_variable(&mut out[at..])
        .map_err(|_| BadParams)
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    //! Two words in one WebAssembly `v128`.

    use core::arch::wasm32::*;

    #[derive(Clone, Copy)]
    pub struct Pair(v128);

    /// Bytes 0..4 and 8..12: the low 32 bits of each word.
    const LOW_HALVES: v128 = u8x16(0, 1, 2, 3, 8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11);

    impl Pair {
        pub const ZERO: Pair = Pair(u64x2(0, 0));

        pub fn from_le_bytes(bytes: &[u8]) -> Pair {
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&bytes[8 * i..8 * i + 8]);
                u64::from_le_bytes(w)
            };
            Pair(u64x2(word(0), word(1)))
        }

        pub fn to_le_bytes(self) -> [u8; 16] {
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&self.word(0).to_le_bytes());
            out[8..].copy_from_slice(&self.word(1).to_le_bytes());
            out
        }

        pub fn word(self, i: usize) -> u64 {
            if i == 0 {
                u64x2_extract_lane::<0>(self.0)
            } else {
                u64x2_extract_lane::<1>(self.0)
            }
        }

        pub fn set_word(&mut self, i: usize, value: u64) {
            self.0 = if i == 0 {
                u64x2_replace_lane::<0>(self.0, value)
            } else {
                u64x2_replace_lane::<1>(self.0, value)
            };
        }

        #[inline(always)]
        pub fn xor(self, other: Pair) -> Pair {
            Pair(v128_xor(self.0, other.0))
        }

        /// a + b + 2·lo(a)·lo(b), per word.
        #[inline(always)]
        pub fn bla_mka(self, other: Pair) -> Pair {
            // The low halves of both words side by side, for one widening multiply (one
            // pmuludq under Cranelift). With a mask it can see, LLVM turns the shuffle and
            // the widening multiply back into a 64-bit multiply of masked words, which
            // Cranelift must build from three: measured 1.2× slower per login.
            let mask = core::hint::black_box(LOW_HALVES);
            let a = i8x16_swizzle(self.0, mask);
            let b = i8x16_swizzle(other.0, mask);
            let product = u64x2_extmul_low_u32x4(a, b);
            let sum = u64x2_add(self.0, other.0);
            Pair(u64x2_add(sum, u64x2_add(product, product)))
        }

        #[inline(always)]
        pub fn rotate_right_32(self) -> Pair {
            Pair(i32x4_shuffle::<1, 0, 3, 2>(self.0, self.0))
        }

        #[inline(always)]
        pub fn rotate_right_24(self) -> Pair {
            Pair(i8x16_shuffle::<
                3,
                4,
                5,
                6,
                7,
                0,
                1,
                2,
                11,
                12,
                13,
                14,
                15,
                8,
                9,
                10,
            >(self.0, self.0))
        }

        #[inline(always)]
        pub fn rotate_right_16(self) -> Pair {
            Pair(i8x16_shuffle::<
                2,
                3,
                4,
                5,
                6,
                7,
                0,
                1,
                10,
                11,
                12,
                13,
                14,
                15,
                8,
                9,
            >(self.0, self.0))
        }

        #[inline(always)]
        pub fn rotate_right_63(self) -> Pair {
            Pair(v128_or(u64x2_add(self.0, self.0), u64x2_shr(self.0, 63)))
        }

        /// The second word of `self` and the first of `next`.
        #[inline(always)]
        pub fn straddle(self, next: Pair) -> Pair {
            Pair(i64x2_shuffle::<1, 2>(self.0, next.0))
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    //! Two words as two `u64`s: what the tests check against the argon2 crate.

    #[derive(Clone, Copy)]
    pub struct Pair([u64; 2]);

    impl Pair {
        pub const ZERO: Pair = Pair([0; 2]);

        pub fn from_le_bytes(bytes: &[u8]) -> Pair {
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&bytes[8 * i..8 * i + 8]);
                u64::from_le_bytes(w)
            };
            Pair([word(0), word(1)])
        }

        pub fn to_le_bytes(self) -> [u8; 16] {
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&self.0[0].to_le_bytes());
            out[8..].copy_from_slice(&self.0[1].to_le_bytes());
            out
        }

        pub fn word(self, i: usize) -> u64 {
            self.0[i]
        }

        pub fn set_word(&mut self, i: usize, value: u64) {
            self.0[i] = value;
        }

        fn each(self, other: Pair, f: impl Fn(u64, u64) -> u64) -> Pair {
            Pair([f(self.0[0], other.0[0]), f(self.0[1], other.0[1])])
        }

        pub fn xor(self, other: Pair) -> Pair {
            self.each(other, |a, b| a ^ b)
        }

        /// a + b + 2·lo(a)·lo(b), per word.
        pub fn bla_mka(self, other: Pair) -> Pair {
            self.each(other, |a, b| {
                let product = (a & 0xFFFF_FFFF) * (b & 0xFFFF_FFFF);
                a.wrapping_add(b).wrapping_add(product.wrapping_mul(2))
            })
        }

        pub fn rotate_right_32(self) -> Pair {
            Pair(self.0.map(|w| w.rotate_right(32)))
        }

        pub fn rotate_right_24(self) -> Pair {
            Pair(self.0.map(|w| w.rotate_right(24)))
        }

        pub fn rotate_right_16(self) -> Pair {
            Pair(self.0.map(|w| w.rotate_right(16)))
        }

        pub fn rotate_right_63(self) -> Pair {
            Pair(self.0.map(|w| w.rotate_right(63)))
        }

        /// The second word of `self` and the first of `next`.
        pub fn straddle(self, next: Pair) -> Pair {
            Pair([self.0[1], next.0[0]])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(password: &[u8], salt: &[u8], m: u32, t: u32, p: u32, len: usize) -> Vec<u8> {
        let params = argon2::Params::new(m, t, p, Some(len)).unwrap();
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = vec![0u8; len];
        argon.hash_password_into(password, salt, &mut out).unwrap();
        out
    }

    #[test]
    fn agrees_with_the_argon2_crate_across_shapes() {
        for (m, t, p, len) in [
            (8, 1, 1, 4),
            (64, 1, 1, 32),
            (64, 2, 1, 64),
            (64, 3, 2, 65),
            (256, 2, 1, 32),
            (257, 1, 3, 100),
            (1024, 4, 4, 32),
            // More than one address block per segment in the first pass.
            (2048, 2, 1, 32),
        ] {
            for (password, salt) in [
                (&b"correct horse battery"[..], &b"saltsaltsaltsalt"[..]),
                (&b""[..], &b"12345678"[..]),
                (&[0xFF; 300][..], &[7; 64][..]),
            ] {
                let mut out = vec![0u8; len];
                hash_into(password, salt, m, t, p, &mut out).unwrap();
                assert_eq!(
                    out,
                    reference(password, salt, m, t, p, len),
                    "m={m} t={t} p={p} len={len}"
                );
            }
        }
    }

    #[test]
    fn refuses_parameters_out_of_range() {
        let mut out = [0u8; 32];
        assert_eq!(
            hash_into(b"p", b"saltsalt", 7, 1, 1, &mut out),
            Err(BadParams)
        );
        assert_eq!(
            hash_into(b"p", b"saltsalt", 64, 0, 1, &mut out),
            Err(BadParams)
        );
        assert_eq!(
            hash_into(b"p", b"saltsalt", 64, 1, 0, &mut out),
            Err(BadParams)
        );
        assert_eq!(
            hash_into(b"p", b"saltsalt", 64, 1, 1, &mut out[..3]),
            Err(BadParams)
        );
    }
}
