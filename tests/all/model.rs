//! Model oracles: causality and time-mixing, KV-cache decoding == full forward, gradients ==
//! finite differences, built parameter count == analytic count.

use crate::common::*;
use archlab::config::RunConfig;
use archlab::kernels::Backend;
use archlab::model::LanguageModel;
use archlab::model::block::{ChannelMixer, FfnSublayer};
use archlab::model::lm::ids_tensor;
use burn::module::Module;

fn logits_of<B: Backend>(model: &LanguageModel<B>, ids: &[u32], b: usize, device: &B::Device) -> Vec<f32> {
    let t = ids.len() / b;
    model.forward(ids_tensor::<B>(ids, [b, t], device)).into_data().convert::<f32>().into_vec().unwrap()
}

#[test]
fn causal_and_time_mixing() {
    let device = Default::default();
    for (name, cfg) in variants() {
        let model = LanguageModel::<Cpu>::new(&cfg, 1, false, &device);
        let (t, v) = (16, cfg.vocab_size);
        for pos in [0usize, 5, 15] {
            let ids = random_ids(t, v, pos as u64);
            let mut changed = ids.clone();
            changed[pos] = (changed[pos] + 1) % v as u32;
            let a = logits_of(&model, &ids, 1, &device);
            let b = logits_of(&model, &changed, 1, &device);
            // Causality: outputs before `pos` must not move at all.
            for i in 0..pos * v {
                assert_eq!(
                    a[i],
                    b[i],
                    "{name}: output at position {} changed when token {pos} changed",
                    i / v
                );
            }
            // Time mixing: some output after `pos` must move (a token-wise model would fail).
            if pos + 1 < t {
                let moved = (pos + 1..t).any(|p| (0..v).any(|j| (a[p * v + j] - b[p * v + j]).abs() > 1e-6));
                assert!(moved, "{name}: changing token {pos} changed no later output");
            }
        }
    }
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    let device = Default::default();
    for (name, cfg) in variants() {
        let model = LanguageModel::<Cpu>::new(&cfg, 2, false, &device);
        let (b, t, v) = (2, 20, cfg.vocab_size);
        let ids = random_ids(b * t, v, 9);
        let full = logits_of(&model, &ids, b, &device);

        // Prefill 7 tokens, then feed the rest one at a time (and once a chunk of 3).
        let mut state = model.decode_state();
        let mut pieces = Vec::new();
        let mut at = 0;
        let mut lens = [7, 1, 1, 3].into_iter().chain(std::iter::repeat(1));
        while at < t {
            let len = lens.next().unwrap().min(t - at);
            let chunk: Vec<u32> = (0..b).flat_map(|r| ids[r * t + at..r * t + at + len].to_vec()).collect();
            let out = model.forward_step(ids_tensor::<Cpu>(&chunk, [b, len], &device), &mut state);
            pieces.push((at, len, out.into_data().convert::<f32>().into_vec::<f32>().unwrap()));
            at += len;
        }
        let mut max_err = 0f32;
        for (start, len, data) in pieces {
            for r in 0..b {
                for i in 0..len {
                    for j in 0..v {
                        let got = data[(r * len + i) * v + j];
                        let want = full[(r * t + start + i) * v + j];
                        max_err = max_err.max((got - want).abs());
                    }
                }
            }
        }
        assert!(max_err < 1e-4, "{name}: cached decoding differs from full forward by {max_err}");
    }
}

#[test]
fn parameter_count_matches_the_analytic_formula() {
    let device = Default::default();
    for (name, cfg) in variants() {
        let model = LanguageModel::<Cpu>::new(&cfg, 0, false, &device);
        let counts = cfg.param_counts();
        assert_eq!(model.num_params(), counts.total, "{name}");
        // Active = total minus, in every MoE layer, the E − k experts a token does not visit.
        let mut idle = 0;
        for layer in &model.layers {
            if let Some(FfnSublayer { mixer: ChannelMixer::Moe(moe), .. }) = &layer.ffn {
                idle += (moe.experts.len() - moe.top_k) * moe.experts[0].num_params();
            }
        }
        assert_eq!(counts.active, counts.total - idle, "{name}: active parameters");
    }
    for preset in archlab::config::presets::NAMES {
        let mut cfg = RunConfig::resolve(preset, None, &[]).unwrap().model;
        if cfg.vocab_size == 0 {
            cfg.vocab_size = 8192;
        }
        if cfg.n_layers > 8 {
            cfg.n_layers = 2; // mamba-130m: the count is per layer; 24 full layers are slow to build
        }
        let model = LanguageModel::<Cpu>::new(&cfg, 0, false, &device);
        assert_eq!(model.num_params(), cfg.param_counts().total, "{preset}");
    }
}

#[test]
fn same_seed_same_weights_different_seed_different_weights() {
    let device = Default::default();
    let cfg = variants().remove(0).1;
    let ids = random_ids(12, cfg.vocab_size, 0);
    let a = logits_of(&LanguageModel::<Cpu>::new(&cfg, 3, false, &device), &ids, 1, &device);
    let b = logits_of(&LanguageModel::<Cpu>::new(&cfg, 3, false, &device), &ids, 1, &device);
    let c = logits_of(&LanguageModel::<Cpu>::new(&cfg, 4, false, &device), &ids, 1, &device);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// Partial RoPE (`model.partial_rotary_factor`) rotates the first `factor · head_dim` channels
/// of each head by position and leaves the rest as they are; with factor 1 every channel turns.
#[test]
fn partial_rope_rotates_only_the_leading_channels() {
    use archlab::model::attention::Rope;
    use burn::tensor::{Tensor, TensorData};
    let device = Default::default();
    let (hd, rotary) = (8, 4);
    let data: Vec<f32> = (0..2 * hd).map(|i| 0.1 * i as f32 + 0.3).collect();
    let x = archlab::model::layers::float_tensor::<Cpu, 4>(TensorData::new(data, [1, 1, 2, hd]), &device);
    let values = |t: Tensor<Cpu, 4>| t.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    let partial = Rope::<Cpu>::new(rotary, 16, 10_000.0, &device);
    let (at0, at5) = (values(partial.apply(x.clone(), 0)), values(partial.apply(x.clone(), 5)));
    let x = values(x);
    for tok in 0..2 {
        let row = |v: &[f32]| v[tok * hd..(tok + 1) * hd].to_vec();
        assert_eq!(row(&at5)[rotary..], row(&x)[rotary..], "token {tok}: unrotated channels moved");
        assert_eq!(row(&at0)[rotary..], row(&x)[rotary..]);
        assert!((0..rotary).any(|c| (row(&at5)[c] - row(&at0)[c]).abs() > 1e-3), "token {tok}: no rotation");
    }
}

/// The decoding state each layer actually holds after a prompt equals what `describe` predicts
/// (`layer_counts`: bytes per token of context × tokens seen, plus fixed bytes), for every
/// variant; and every sequence mixer of the registry is among the variants, so a new mixer's
/// registry line is not enough to pass without its entry in the model tables.
#[test]
fn decoding_state_bytes_match_the_analytic_counts_for_every_registered_mixer() {
    use archlab::model::registry::SEQ_MIXERS;
    let device = Default::default();
    let mut seen_kinds = Vec::new();
    for (name, cfg) in variants() {
        let model = LanguageModel::<Cpu>::new(&cfg, 3, false, &device);
        let t = 11; // longer than the variants' windows (≤ 5)
        let ids = random_ids(t, cfg.vocab_size, 4);
        let mut state = model.decode_state();
        model.forward_step(ids_tensor::<Cpu>(&ids, [1, t], &device), &mut state);
        let tokens = t + cfg.hymba.meta_tokens;
        for (i, (count, layer)) in cfg.layer_counts(t).iter().zip(&state.layers).enumerate() {
            seen_kinds.push(count.mixer);
            let predicted = count.state_bytes_per_token * tokens + count.state_bytes_fixed;
            assert_eq!(layer.bytes(), predicted, "{name}: layer {i} ({})", count.mixer.name());
        }
        for (block, count) in model.layers.iter().zip(cfg.layer_counts(t)) {
            assert_eq!(block.mixer.kind(), count.mixer, "{name}: the built layer is the counted one");
        }
    }
    for m in SEQ_MIXERS {
        assert!(
            seen_kinds.contains(&m.kind),
            "no model variant uses {} ({}): add one to tests/common",
            m.symbol,
            m.name
        );
    }
}

/// Sequences of different lengths decoded together (stacked decoding states, rows dropped,
/// reordered and joined by a new one mid-way) give each sequence the logits it gets alone,
/// for every variant: per-row positions, padded KV caches (global and sliding-window, the
/// window shorter than some prompts) and every recurrent state.
#[test]
fn batched_decoding_of_different_lengths_equals_decoding_each_alone() {
    use archlab::model::DecodeState;
    let device = Default::default();
    let values = |t: burn::tensor::Tensor<Cpu, 3>| t.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    for (name, cfg) in variants() {
        let model = LanguageModel::<Cpu>::new(&cfg, 5, false, &device);
        let v = cfg.vocab_size;
        // Prompt lengths; the fourth sequence joins after three steps.
        let prompts: Vec<Vec<u32>> = [3usize, 9, 6, 4].iter().map(|&n| random_ids(n, v, n as u64)).collect();
        let steps = 6;
        let next: Vec<Vec<u32>> = (0..prompts.len()).map(|i| random_ids(steps, v, 100 + i as u64)).collect();
        let prefill = |ids: &[u32]| {
            let mut state = model.decode_state();
            model.forward_step(ids_tensor::<Cpu>(ids, [1, ids.len()], &device), &mut state);
            state
        };

        // Alone: logits of each decoding step of each sequence.
        let alone: Vec<Vec<Vec<f32>>> =
            (0..prompts.len())
                .map(|i| {
                    let mut state = prefill(&prompts[i]);
                    (0..steps)
                        .map(|s| {
                            values(model.forward_step(
                                ids_tensor::<Cpu>(&next[i][s..s + 1], [1, 1], &device),
                                &mut state,
                            ))
                        })
                        .collect()
                })
                .collect();

        // Together: 0, 1, 2 for three steps; then 1 leaves, 2 and 0 swap, 3 joins.
        let mut rows: Vec<usize> = vec![0, 1, 2];
        let mut step_of = vec![0usize; prompts.len()];
        let mut state = DecodeState::stack(rows.iter().map(|&i| prefill(&prompts[i])).collect());
        let mut max_err = 0f32;
        for s in 0..steps + 3 {
            if s == 3 {
                state = DecodeState::stack(vec![state.select(&[2, 0]), prefill(&prompts[3])]);
                rows = vec![2, 0, 3];
            }
            let live: Vec<usize> = rows.iter().copied().filter(|&i| step_of[i] < steps).collect();
            if live.len() < rows.len() {
                let keep: Vec<usize> = (0..rows.len()).filter(|&r| step_of[rows[r]] < steps).collect();
                state = state.select(&keep);
                rows = live;
            }
            if rows.is_empty() {
                break;
            }
            let ids: Vec<u32> = rows.iter().map(|&i| next[i][step_of[i]]).collect();
            let out =
                values(model.forward_step(ids_tensor::<Cpu>(&ids, [rows.len(), 1], &device), &mut state));
            for (r, &i) in rows.iter().enumerate() {
                let want = &alone[i][step_of[i]];
                for j in 0..v {
                    max_err = max_err.max((out[r * v + j] - want[j]).abs());
                }
                step_of[i] += 1;
            }
        }
        assert_eq!(step_of, [steps, 3, steps, steps], "{name}: steps decoded per sequence (1 left after 3)");
        assert!(max_err < 1e-5, "{name}: batched decoding differs from decoding alone by {max_err}");
    }
}
