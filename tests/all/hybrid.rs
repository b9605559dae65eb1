//! Hybrids: every seed pattern builds, trains, and has the parameter count `describe` reports;
//! sliding-window attention is the band it claims to be; Hymba's branch scales learn.

use crate::common::*;
use archlab::config::{MixerKind, RunConfig};
use archlab::model::LanguageModel;
use archlab::model::attention::{Attention, KvCache};
use archlab::model::block::SeqMixer;
use archlab::model::lm::ids_tensor;
use archlab::model::pattern::SEED_PATTERNS;
use archlab::rng::Rng;
use archlab::train::train;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};

/// Each seed pattern resolves through `--set model.pattern=…` (which sets the depth), builds
/// with exactly the per-layer and total parameter counts `describe` prints, and trains a few
/// steps on the built-in corpus with finite, falling loss.
#[test]
fn every_seed_pattern_builds_counts_and_trains() {
    let device = Default::default();
    for pattern in SEED_PATTERNS {
        let mut cfg = small_config();
        let sets = [format!("model.pattern={pattern:?}")];
        cfg.model = RunConfig::resolve("tiny", None, &sets).unwrap().model;
        cfg.model.d_model = 32;
        cfg.model.n_heads = 2;
        cfg.model.d_ff = 64;
        cfg.model.mamba.d_state = 4;
        cfg.model.max_seq_len = 64;
        cfg.train.seq_len = 32;
        cfg.train.batch_size = 4;
        cfg.train.max_steps = 8;
        cfg.train.lr = 1e-2;
        cfg.eval.every = 8;
        cfg.eval.batches = 1;
        assert_eq!(cfg.model.n_layers, pattern.len(), "{pattern}: the pattern sets the depth");
        cfg.validate().unwrap();

        let mut counted = cfg.model.clone();
        counted.vocab_size = 256;
        let model = LanguageModel::<Cpu>::new(&counted, 0, false, &device);
        let rows = counted.layer_counts(32);
        for (i, (layer, row)) in model.layers.iter().zip(&rows).enumerate() {
            assert_eq!(layer.num_params(), row.params, "{pattern}: layer {i}");
            let is_attention = matches!(layer.mixer, SeqMixer::Attention(_));
            assert_eq!(is_attention, pattern.as_bytes()[i] == b'A', "{pattern}: layer {i} kind");
        }
        assert_eq!(model.num_params(), counted.param_counts().total, "{pattern}");

        let opts = train_options(&format!("pattern-{pattern}"));
        let out = train::<CpuAd>(&cfg, &device, &opts).unwrap();
        let losses: Vec<f64> = out.losses.iter().map(|l| l.1).collect();
        assert!(losses.iter().all(|l| l.is_finite()), "{pattern}: {losses:?}");
        assert!(losses.last().unwrap() < &losses[0], "{pattern}: loss did not fall: {losses:?}");
        assert_eq!(out.summary.unwrap().params_total, counted.param_counts().total);
    }
}

fn attention(window: usize) -> Attention<Cpu> {
    let mut cfg = variants().remove(2).1; // GQA: 4 query heads, 2 key/value heads, RoPE
    cfg.max_seq_len = 64;
    Attention::new(&cfg, window, 0.02, &mut Rng::new(3), &Default::default())
}

fn input(t: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..2 * t * 32).map(|_| rng.normal() as f32).collect()
}

fn run(attn: &Attention<Cpu>, x: &[f32], t: usize) -> Vec<f32> {
    let x = Tensor::<Cpu, 3>::from_data(TensorData::new(x.to_vec(), [2, t, 32]), &Default::default());
    attn.forward(x).into_data().into_vec().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// With a window at least as long as the sequence, local attention is global attention.
#[test]
fn a_window_covering_the_sequence_equals_global_attention() {
    for t in [7, 16, 23] {
        let x = input(t, t as u64);
        let global = run(&attention(0), &x, t);
        for w in [t, t + 5] {
            let diff = max_diff(&run(&attention(w), &x, t), &global);
            assert!(diff < 1e-5, "t = {t}, window {w}: differs from global attention by {diff}");
        }
    }
}

/// The defining property: the output at position p depends on tokens p − W < j ≤ p and on no
/// other. Changing a token exactly W positions back changes nothing (bit for bit); changing
/// one W − 1 back does. Checked for the blocked path at lengths that are and are not
/// multiples of the window.
#[test]
fn local_attention_sees_exactly_its_window() {
    let w = 5;
    let attn = attention(w);
    for t in [20, 23] {
        let x = input(t, 1);
        let base = run(&attn, &x, t);
        for (back, visible) in [(w, false), (w + 3, false), (w - 1, true), (1, true)] {
            let p = t - 1;
            let j = p - back;
            let mut changed = x.clone();
            for c in 0..32 {
                changed[j * 32 + c] += 1.0; // batch row 0
            }
            let out = run(&attn, &changed, t);
            let row = |v: &[f32]| v[p * 32..(p + 1) * 32].to_vec();
            let moved = max_diff(&row(&out), &row(&base));
            if visible {
                assert!(moved > 1e-4, "t = {t}: token {back} back is inside the window but changed nothing");
            } else {
                assert_eq!(
                    moved, 0.0,
                    "t = {t}: token {back} back is outside the window but moved the output"
                );
            }
        }
    }
}

/// Decoding keeps at most W − 1 keys whatever the context length, and still equals the full
/// (blocked) forward.
#[test]
fn local_attention_cache_is_bounded_by_the_window() {
    let (w, t) = (4, 19);
    let attn = attention(w);
    let x = input(t, 7);
    let full = run(&attn, &x, t);
    let device = Default::default();
    let mut cache = KvCache::empty();
    let mut steps = Vec::new();
    for i in 0..t {
        let token: Vec<f32> =
            (0..2).flat_map(|r| x[(r * t + i) * 32..(r * t + i + 1) * 32].to_vec()).collect();
        let out =
            attn.forward_cached(Tensor::from_data(TensorData::new(token, [2, 1, 32]), &device), &mut cache);
        assert!(cache.len() < w, "cache holds {} entries with window {w}", cache.len());
        steps.push(out.into_data().into_vec::<f32>().unwrap());
    }
    assert_eq!(cache.seen, vec![t, t], "both rows saw every token");
    for (i, step) in steps.iter().enumerate() {
        for r in 0..2 {
            let want = &full[(r * t + i) * 32..(r * t + i + 1) * 32];
            let diff = max_diff(&step[r * 32..(r + 1) * 32], want);
            assert!(diff < 1e-5, "position {i}: decoding differs by {diff}");
        }
    }
}

/// Hymba's branch scales are trained: both get gradients, and after training they have moved
/// from their initial value, which the run's log and summary report side by side.
#[test]
fn hymba_branch_scales_learn_and_are_reported() {
    let device = Default::default();
    let mut cfg = small_config();
    cfg.model.mixer = MixerKind::Hymba;
    cfg.model.mamba.d_state = 4;
    cfg.model.hymba.meta_tokens = 4;
    cfg.model.hymba.window = 16;
    cfg.train.max_steps = 30;
    cfg.eval.every = 30;

    let mut model_cfg = cfg.model.clone();
    model_cfg.vocab_size = 256;
    let model = LanguageModel::<CpuAd>::new(&model_cfg, 1, false, &device);
    let ids = ids_tensor::<CpuAd>(&random_ids(2 * 24, 256, 1), [2, 24], &device);
    let grads = model.loss(ids.clone(), ids).backward();
    for layer in &model.layers {
        let SeqMixer::Hymba(h) = &layer.mixer else { panic!("all layers are Hymba") };
        for (name, scale) in [("attn", &h.attn_scale), ("ssm", &h.ssm_scale)] {
            let g: Vec<f32> = scale.val().grad(&grads).expect("a gradient").into_data().into_vec().unwrap();
            assert!(g.iter().any(|v| v.abs() > 1e-7), "{name} scale gets no gradient");
        }
    }
    let meta = model.meta_tokens.as_ref().unwrap().val().grad(&grads).unwrap();
    assert!(meta.abs().max().into_scalar() > 0.0, "meta tokens get no gradient");

    let opts = train_options("hymba-scales");
    let summary = train::<CpuAd>(&cfg, &device, &opts).unwrap().summary.unwrap();
    // Four quantities per layer: each branch's mean β (learned, init 1) and its mean |Δβ|.
    assert_eq!(summary.diagnostics.len(), 4 * cfg.model.n_layers);
    for d in &summary.diagnostics {
        eprintln!("{d:?}");
        assert_eq!(d.mixer, "hymba");
        match d.reference {
            Some(init) => assert_eq!(init, 1.0),
            None => assert!(d.value > 1e-4, "scales did not move: {d:?}"),
        }
    }
    let log = std::fs::read_to_string(opts.run_dir.join("metrics.jsonl")).unwrap();
    assert!(log.lines().filter(|l| l.contains("\"kind\":\"train\"")).all(|l| l.contains("\"SSM |Δβ|\"")));
}

/// Decoding with every layer's cache (KV caches, SSM states) equals the full forward, for each
/// seed pattern and for patterns with local attention, Mamba-2, Hymba and (Gated) DeltaNet layers.
#[test]
fn decoding_equals_the_full_forward_for_every_pattern() {
    let device = Default::default();
    let extra = ["LLMMLL", "SASA", "HLMe", "(MMMA)2", "(GGGA)2", "DSGe"];
    for pattern in SEED_PATTERNS.iter().chain(&extra) {
        let mut cfg = with_pattern(variants().remove(0).1, pattern);
        cfg.moe.n_experts = 4;
        cfg.validate().unwrap();
        let model = LanguageModel::<Cpu>::new(&cfg, 5, false, &device);
        let (b, t, v) = (2, 11, cfg.vocab_size);
        let ids = random_ids(b * t, v, 3);
        let full: Vec<f32> =
            model.forward(ids_tensor::<Cpu>(&ids, [b, t], &device)).into_data().into_vec().unwrap();
        let mut state = model.decode_state();
        let mut worst = 0f32;
        for i in 0..t {
            let col: Vec<u32> = (0..b).map(|r| ids[r * t + i]).collect();
            let out: Vec<f32> = model
                .forward_step(ids_tensor::<Cpu>(&col, [b, 1], &device), &mut state)
                .into_data()
                .into_vec()
                .unwrap();
            for r in 0..b {
                let want = &full[(r * t + i) * v..(r * t + i + 1) * v];
                worst = worst.max(max_diff(&out[r * v..(r + 1) * v], want));
            }
        }
        assert!(worst < 1e-4, "{pattern}: decoding differs from the forward by {worst}");
    }
}
