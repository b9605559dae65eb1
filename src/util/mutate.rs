//! Mutation fuzzing for the readers' tests: random edits of a valid input (bit flips, bytes
//! set to 0 / 0xff / random, truncation, insertion, a chunk repeated, an 8-byte field set to
//! a huge length), the kind of damage a file meets on disk or a crafted file carries. Each
//! reader's tests feed hundreds of mutants through it and require an error or a value, never a
//! panic or an overflow (tests build with overflow checks). Deterministic: seeded by the caller.

use crate::rng::Rng;

/// `n` mutants of `valid`, each made by one to four random edits.
pub fn mutants(valid: &[u8], n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::fork(seed, "mutants");
    (0..n)
        .map(|_| {
            let mut bytes = valid.to_vec();
            for _ in 0..1 + rng.below(4) {
                edit(&mut bytes, &mut rng);
            }
            bytes
        })
        .collect()
}

fn edit(bytes: &mut Vec<u8>, rng: &mut Rng) {
    let len = bytes.len();
    let at = if len == 0 { 0 } else { rng.below(len) };
    match rng.below(7) {
        0 if len > 0 => bytes[at] ^= 1 << rng.below(8),
        1 if len > 0 => bytes[at] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'9']),
        2 => bytes.truncate(at),
        3 => {
            let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.below(256) as u8).collect();
            bytes.splice(at..at, extra);
        }
        4 if len > 0 => {
            let end = (at + 1 + rng.below(64)).min(len);
            let chunk = bytes[at..end].to_vec();
            bytes.splice(at..at, chunk);
        }
        5 if len >= 8 => {
            let at = rng.below(len - 7);
            let huge = *rng.pick(&[u64::MAX, u64::MAX / 2, 1 << 40, 1 << 32, u32::MAX as u64 + 1]);
            bytes[at..at + 8].copy_from_slice(&huge.to_le_bytes());
        }
        _ if len > 0 => bytes[at] = rng.below(256) as u8,
        _ => bytes.push(rng.below(256) as u8),
    }
}

/// Mutants of a text, as strings (invalid UTF-8 replaced): for parsers of text.
pub fn text_mutants(valid: &str, n: usize, seed: u64) -> Vec<String> {
    mutants(valid.as_bytes(), n, seed).into_iter().map(|b| String::from_utf8_lossy(&b).into_owned()).collect()
}
