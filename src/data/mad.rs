//! Tasks of the MAD suite (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
//! Architectures", arXiv 2403.17844; generators in `athms/mad-lab`, `mad/data/instances.py`),
//! posed as MAD poses them, with MAD's own vocabulary layout (ids from 0, special tokens at the
//! top of the vocabulary; none of `tasks.rs`'s special ids):
//!
//! - `in-context-recall` (multi-query): key-value pairs, keys the lower half of the
//!   vocabulary and values the upper half, drawn with replacement; a key keeps its value within
//!   the sequence. Scored: the value of every pair whose key was seen before, and the final
//!   pair's (a key seen before). Trained on every next token (MAD's training format).
//! - `noisy-recall`: the same, the top `noise_vocab` ids being noise; each pair slot (but one)
//!   is two noise tokens with probability `noise_fraction`. Noise is never scored.
//! - `fuzzy-recall` (MAD's fuzzy in-context recall, multi-query): keys and values are runs of
//!   1 to `motif_size` distinct tokens (keys from the lower half of the vocabulary, values from
//!   the upper half, the last id a left padding); in training sequences keys have every length,
//!   in held-out ones only the longest. Scored: every token of the value of a key seen before,
//!   and the final pair's value. Trained on every next token.
//! - `mad-selective-copy`: `copy_len` data tokens with blanks inserted at random places, the
//!   copy token, then `copy_len` blanks at which the data tokens are to be emitted in order
//!   (ids: copy `V − 1`, blank `V − 2`, data the rest). Targets are not shifted inputs: only
//!   the last `copy_len` positions have one, in training too.
//! - `memorization`: one fixed key → value table for every sequence (facts held in the
//!   weights, not the context): `[key, insert]` pairs, the value to be emitted at each insert
//!   token (`V − 1`). Trained and scored on those positions only.
//!
//! A recall row of `T` inputs is MAD's sequence of `T + 1` tokens cut as MAD cuts it
//! (`inputs[:-1]`, `targets[1:]`): MAD's `seq_len = 128` is `train.seq_len = 127` here. MAD
//! needs an even sequence length; when `T + 1` is odd the sequence starts with one extra key
//! token that belongs to no pair (it is never a scored target). The fixed table of
//! `memorization` comes from archlab's generator with a fixed seed, so it is another table than
//! MAD's NumPy one, drawn the same way (a shuffle of the value half assigned to the key half).
//!
//! Not here: `compression`,
//! which MAD scores with an autoencoder backbone (the mixer stack's last position, decoded to
//! every position by an MLP): a causal language model that sees the tokens it must reproduce
//! would only copy them, so the task cannot be posed faithfully here.

use crate::rng::Rng;

/// One row in MAD's format: `T` inputs, `T` targets, and which targets are scored at test.
pub struct Row {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub answer: Vec<bool>,
}

/// Key and value ids of a recall task whose keys and values share `non_special` ids.
fn halves(non_special: u32) -> (std::ops::Range<u32>, std::ops::Range<u32>) {
    (0..non_special / 2, non_special / 2..non_special)
}

fn pick(rng: &mut Rng, range: &std::ops::Range<u32>) -> u32 {
    range.start + rng.below(range.len()) as u32
}

/// (Noisy) multi-query in-context recall with `seq_len` inputs: `noise` ids at the top of the
/// `vocab` are noise, each pair slot but one is noise with probability `noise_fraction`.
pub fn in_context_recall(rng: &mut Rng, vocab: u32, noise: u32, noise_fraction: f64, seq_len: usize) -> Row {
    let (keys, values) = halves(vocab - noise);
    let noise_ids = vocab - noise..vocab;
    let len = seq_len + 1; // MAD's sequence; the row is its cut
    let mut tokens = Vec::with_capacity(len);
    let mut scored = Vec::with_capacity(len);
    if len % 2 == 1 {
        tokens.push(pick(rng, &keys));
        scored.push(false);
    }
    let pairs = len / 2;
    // MAD keeps one slot free of noise, so that some key is there to be queried at the end.
    let clean = rng.below(pairs);
    let mut value_of = std::collections::HashMap::new();
    let mut presented: Vec<u32> = Vec::new();
    for i in 0..pairs - 1 {
        if noise_fraction > 0.0 && i != clean && rng.uniform() < noise_fraction {
            tokens.extend([pick(rng, &noise_ids), pick(rng, &noise_ids)]);
            scored.extend([false, false]);
            continue;
        }
        let k = pick(rng, &keys);
        let v = *value_of.entry(k).or_insert_with(|| pick(rng, &values));
        tokens.extend([k, v]);
        scored.extend([false, presented.contains(&k)]);
        if !presented.contains(&k) {
            presented.push(k);
        }
    }
    // The final pair re-uses a key presented before (one is, unless every slot was noise,
    // which the clean slot prevents).
    let k = presented[rng.below(presented.len())];
    tokens.extend([k, value_of[&k]]);
    scored.extend([false, true]);
    Row { inputs: tokens[..seq_len].to_vec(), targets: tokens[1..].to_vec(), answer: scored[1..].to_vec() }
}

/// MAD's fuzzy in-context recall (multi-query) with `seq_len` inputs: MAD's sequence is
/// left-padded to `seq_len + 1` tokens and cut, so MAD's `seq_len` is archlab's. `training`:
/// keys of every length 1..=`motif` (a held-out row asks with keys of length `motif` only).
pub fn fuzzy_recall(rng: &mut Rng, vocab: u32, motif: usize, training: bool, seq_len: usize) -> Row {
    let pad = vocab - 1;
    let (keys, values) = halves(vocab - 1);
    let key_len = |rng: &mut Rng| if training { 1 + rng.below(motif) } else { motif };
    let motif_of = |rng: &mut Rng, range: &std::ops::Range<u32>, len: usize| -> Vec<u32> {
        rng.distinct(range.len(), len).into_iter().map(|i| range.start + i as u32).collect()
    };
    let probe_key = {
        let n = key_len(rng);
        motif_of(rng, &keys, n)
    };
    let probe_value = {
        let n = 1 + rng.below(motif);
        motif_of(rng, &values, n)
    };
    let probe_len = probe_key.len() + probe_value.len();
    // Where the probe pair goes among the others (MAD's `probe_idx`).
    let probe_at = rng.below(seq_len - 2 * probe_len);
    let mut tokens: Vec<u32> = Vec::new();
    let mut scored: Vec<bool> = Vec::new();
    let mut value_of: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
    let mut probe_added = false;
    let push_pair = |tokens: &mut Vec<u32>, scored: &mut Vec<bool>, k: &[u32], v: &[u32], repeat: bool| {
        tokens.extend_from_slice(k);
        tokens.extend_from_slice(v);
        scored.extend(std::iter::repeat_n(false, k.len()));
        scored.extend(std::iter::repeat_n(repeat, v.len()));
    };
    // MAD's bound leaves room for one more pair and the final one; until the probe pair is in,
    // room for it too (MAD could leave the loop before the probe's place: the final query would
    // then ask for a key never seen).
    let room = |probe_added: bool| seq_len - probe_len - 2 * motif - if probe_added { 0 } else { probe_len };
    while tokens.len() < room(probe_added) {
        if tokens.len() >= probe_at && !probe_added {
            push_pair(&mut tokens, &mut scored, &probe_key, &probe_value, false);
            value_of.push((probe_key.clone(), probe_value.clone()));
            probe_added = true;
            continue;
        }
        let k = {
            let n = key_len(rng);
            motif_of(rng, &keys, n)
        };
        let v_len = 1 + rng.below(motif);
        let seen = value_of.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone());
        let v = match (&seen, k == probe_key) {
            (Some(v), _) => v.clone(),
            (None, true) => probe_value.clone(),
            (None, false) => motif_of(rng, &values, v_len),
        };
        probe_added |= k == probe_key;
        push_pair(&mut tokens, &mut scored, &k, &v, seen.is_some());
        if seen.is_none() {
            value_of.push((k, v));
        }
    }
    if !probe_added {
        push_pair(&mut tokens, &mut scored, &probe_key, &probe_value, false);
    }
    push_pair(&mut tokens, &mut scored, &probe_key, &probe_value, true);
    // Left padding up to MAD's `seq_len + 1`.
    let padding = seq_len + 1 - tokens.len();
    let tokens: Vec<u32> = std::iter::repeat_n(pad, padding).chain(tokens).collect();
    let scored: Vec<bool> = std::iter::repeat_n(false, padding).chain(scored).collect();
    Row { inputs: tokens[..seq_len].to_vec(), targets: tokens[1..].to_vec(), answer: scored[1..].to_vec() }
}

/// MAD's selective copying: `copy_len` data tokens among blanks, the copy token, `copy_len`
/// blanks at which the data come back.
pub fn selective_copy(rng: &mut Rng, vocab: u32, copy_len: usize, seq_len: usize) -> Row {
    let (copy, blank) = (vocab - 1, vocab - 2);
    let data: Vec<u32> = (0..copy_len).map(|_| rng.below(blank as usize) as u32).collect();
    let blanks = seq_len - 2 * copy_len - 1;
    // MAD inserts each blank before a uniformly drawn data position (NumPy `insert`); where the
    // data sit among the first `copy_len + blanks` slots is the same as choosing their slots.
    let mut at = rng.distinct(copy_len + blanks, copy_len);
    at.sort_unstable();
    let mut inputs = vec![blank; seq_len];
    for (&pos, &t) in at.iter().zip(&data) {
        inputs[pos] = t;
    }
    inputs[copy_len + blanks] = copy;
    let mut targets = vec![blank; seq_len];
    let mut answer = vec![false; seq_len];
    for (i, &t) in data.iter().enumerate() {
        targets[seq_len - copy_len + i] = t;
        answer[seq_len - copy_len + i] = true;
    }
    Row { inputs, targets, answer }
}

/// MAD's memorization: `[key, insert]` pairs from one fixed table, the value due at the insert.
pub fn memorization(rng: &mut Rng, vocab: u32, seq_len: usize) -> Row {
    let table = fact_table(vocab);
    let insert = vocab - 1;
    let mut row = Row { inputs: Vec::new(), targets: Vec::new(), answer: Vec::new() };
    for _ in 0..seq_len / 2 {
        let (k, v) = table[rng.below(table.len())];
        row.inputs.extend([k, insert]);
        row.targets.extend([insert, v]);
        row.answer.extend([false, true]);
    }
    row
}

/// The fixed key → value table of `memorization`: the same for every run and seed.
pub fn fact_table(vocab: u32) -> Vec<(u32, u32)> {
    let (keys, values) = halves(vocab - 1);
    let rng = &mut Rng::new(12345); // MAD's table seed
    let mut shuffled: Vec<u32> = values.collect();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i + 1));
    }
    keys.zip(shuffled).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_scores_exactly_the_values_of_keys_seen_before() {
        for (noise, fraction) in [(0, 0.0), (16, 0.2), (16, 0.8)] {
            for seed in 0..20 {
                for seq_len in [127, 128, 31] {
                    let row = in_context_recall(&mut Rng::new(seed), 32, noise, fraction, seq_len);
                    assert_eq!(
                        (row.inputs.len(), row.targets.len(), row.answer.len()),
                        (seq_len, seq_len, seq_len)
                    );
                    assert_eq!(row.inputs[1..], row.targets[..seq_len - 1], "targets are the inputs shifted");
                    assert!(*row.answer.last().unwrap(), "the final value is scored");
                    let (keys, values) = halves(32 - noise);
                    let mut seen = std::collections::HashMap::new();
                    // Every scored target is the value its key had when first seen in a pair.
                    for p in 0..seq_len {
                        let (x, y) = (row.inputs[p], row.targets[p]);
                        if keys.contains(&x) && values.contains(&y) {
                            let first = *seen.entry(x).or_insert(y);
                            assert_eq!(first, y, "a key keeps its value");
                            assert_eq!(row.answer[p], first == y && seen_before(&row, p), "position {p}");
                        } else {
                            assert!(!row.answer[p], "position {p}: only values after keys are scored");
                        }
                    }
                }
            }
        }
    }

    /// Whether the key at input position `p` appeared in an earlier pair.
    fn seen_before(row: &Row, p: usize) -> bool {
        (0..p).any(|q| row.inputs[q] == row.inputs[p] && row.targets[q] == row.targets[p])
    }

    #[test]
    fn fuzzy_recall_asks_for_values_of_keys_seen_before_and_pads_on_the_left() {
        let (keys, values) = halves(15);
        for seed in 0..40 {
            for (training, seq_len) in [(true, 128), (false, 128), (true, 24), (false, 30)] {
                let row = fuzzy_recall(&mut Rng::new(seed), 16, 3, training, seq_len);
                assert_eq!((row.inputs.len(), row.targets.len()), (seq_len, seq_len));
                assert_eq!(row.inputs[1..], row.targets[..seq_len - 1]);
                // The whole sequence, parsed into runs of key tokens and value tokens.
                let all: Vec<u32> = row.inputs.iter().chain(row.targets.last()).copied().collect();
                let first = all.iter().position(|&t| t != 15).unwrap();
                assert!(
                    all[..first].iter().all(|&t| t == 15) && !all[first..].contains(&15),
                    "left padding only"
                );
                let mut pairs: Vec<(Vec<u32>, Vec<u32>, usize)> = Vec::new(); // key, value, value start
                let mut i = first;
                while i < all.len() {
                    let k0 = i;
                    while keys.contains(&all[i]) {
                        i += 1;
                    }
                    let v0 = i;
                    while i < all.len() && values.contains(&all[i]) {
                        i += 1;
                    }
                    assert!(
                        v0 > k0 && i > v0 && v0 - k0 <= 3 && i - v0 <= 3,
                        "seed {seed}: motifs of 1 to 3"
                    );
                    if !training {
                        assert_eq!(v0 - k0, 3, "held-out keys have the longest length");
                    }
                    pairs.push((all[k0..v0].to_vec(), all[v0..i].to_vec(), v0));
                }
                // Scored targets: exactly the value tokens of keys seen before (which keep their
                // value), and the final pair, whose key was seen before.
                let mut scored = vec![false; all.len()];
                for (n, (k, v, at)) in pairs.iter().enumerate() {
                    let earlier = pairs[..n].iter().find(|(k2, _, _)| k2 == k);
                    if let Some((_, v2, _)) = earlier {
                        assert_eq!(v2, v, "a key keeps its value");
                        (0..v.len()).for_each(|j| scored[at + j] = true);
                    }
                    assert!(n + 1 < pairs.len() || earlier.is_some(), "seed {seed}: the final key was seen");
                }
                assert_eq!(row.answer, scored[1..], "seed {seed} training {training}");
            }
        }
    }

    #[test]
    fn noise_takes_its_share_of_pair_slots_and_only_noise_ids() {
        let row = in_context_recall(&mut Rng::new(1), 32, 16, 0.6, 4095);
        let noisy = row.inputs.iter().filter(|&&t| t >= 16).count() as f64 / 4096.0;
        assert!((noisy - 0.6).abs() < 0.05, "{noisy}");
        assert!(row.answer.iter().zip(&row.targets).all(|(&a, &t)| !a || t < 16), "noise is never scored");
    }

    #[test]
    fn selective_copy_emits_the_data_in_order_after_the_copy_token() {
        for seed in 0..20 {
            let row = selective_copy(&mut Rng::new(seed), 16, 16, 256);
            let copy = row.inputs.iter().position(|&t| t == 15).unwrap();
            assert_eq!(copy, 256 - 17);
            let data: Vec<u32> = row.inputs[..copy].iter().copied().filter(|&t| t < 14).collect();
            assert_eq!(data.len(), 16);
            assert_eq!(row.targets[256 - 16..], data[..]);
            assert_eq!(row.answer.iter().filter(|&&a| a).count(), 16);
            assert!(row.inputs[copy + 1..].iter().all(|&t| t == 14), "blanks after the copy token");
        }
    }

    #[test]
    fn memorization_asks_the_same_facts_in_every_row() {
        let table = fact_table(256);
        assert_eq!(table.len(), 127);
        assert_eq!(table, fact_table(256), "fixed");
        let mut values: Vec<u32> = table.iter().map(|&(_, v)| v).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), table.len(), "distinct values");
        for seed in 0..5 {
            let row = memorization(&mut Rng::new(seed), 256, 32);
            for p in (1..32).step_by(2) {
                assert_eq!(row.inputs[p], 255);
                let fact = table.iter().find(|&&(k, _)| k == row.inputs[p - 1]).unwrap();
                assert_eq!((row.targets[p], row.answer[p]), (fact.1, true));
                assert!(!row.answer[p - 1]);
            }
        }
    }
}
