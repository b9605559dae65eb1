//! State-space oracles: every form of the Mamba-1 selective scan, of the Mamba-2 SSD scan and
//! of the (gated) delta rule agrees with the sequential reference (values and gradients,
//! random inputs, lengths that are and are not multiples of the chunk), and the mixers built on
//! them are causal, mix across time, and decode token by token exactly as they run in one pass.

use crate::common::*;
use archlab::config::{MixerKind, ModelConfig, RunConfig};
use archlab::kernels::selective_scan::{self, ScanInputs};
use archlab::kernels::{AutodiffBackend, Backend};
use archlab::model::delta_rule::{self, DeltaInputs};
use archlab::model::gated_deltanet::{DeltaNetState, GatedDeltaNet};
use archlab::model::mamba::{Mamba, MambaState};
use archlab::model::mamba2::{Mamba2, Mamba2State};
use archlab::model::ssd::{self, SsdInputs};
use archlab::rng::Rng;
use burn::tensor::{Tensor, TensorData};

fn random<B: Backend, const D: usize>(shape: [usize; D], scale: f64, rng: &mut Rng) -> Tensor<B, D> {
    let n = shape.iter().product::<usize>();
    let data: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
    archlab::model::layers::float_tensor(TensorData::new(data, shape), &Default::default())
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec().unwrap()
}

/// |a − b| ≤ tol · (1 + |a|) everywhere.
fn assert_close(a: &[f64], b: &[f64], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + x.abs())).fold(0.0f64, f64::max);
    let tol = tol as f64;
    assert!(worst <= tol, "{what}: worst relative difference {worst:e} > {tol:e}");
    assert!(a.iter().all(|x| x.is_finite()), "{what}: non-finite values");
}

/// Random selective-scan inputs; Δ = softplus(N(0,1)) > 0 and A = −exp(N(0, 0.5)) < 0, as
/// the mixer produces them.
fn scan_inputs<B: Backend>(b: usize, t: usize, d: usize, n: usize, seed: u64) -> ScanInputs<B> {
    let mut rng = Rng::new(seed);
    let delta = archlab::model::activation::softplus(random::<B, 3>([b, t, d], 1.0, &mut rng));
    ScanInputs {
        x: random([b, t, d], 1.0, &mut rng),
        delta,
        a: random::<B, 2>([d, n], 0.5, &mut rng).exp().neg(),
        b: random([b, t, n], 1.0, &mut rng),
        c: random([b, t, n], 1.0, &mut rng),
    }
}

fn require_grad_scan<B: AutodiffBackend>(s: ScanInputs<B>) -> ScanInputs<B> {
    ScanInputs {
        x: s.x.require_grad(),
        delta: s.delta.require_grad(),
        a: s.a.require_grad(),
        b: s.b.require_grad(),
        c: s.c.require_grad(),
    }
}

const LENGTHS_AND_CHUNKS: [(usize, usize); 7] =
    [(1, 0), (5, 2), (16, 4), (16, 0), (37, 8), (37, 5), (64, 64)];

/// Values and gradients agree in f32 to rounding, and in f64 to 1e-10: the f64 run is the
/// sharp check (a wrong term would show at any precision); the f32 one guards against
/// precision-specific trouble such as overflow in the decays. Gradients of A sum over every
/// batch, step and channel, so their f32 rounding reaches ~1e-5 relative.
#[test]
fn selective_scan_chunked_equals_reference_values_and_gradients() {
    compare_selective_scans::<CpuAd>(1e-4);
    compare_selective_scans::<Cpu64Ad>(1e-10);
}

fn compare_selective_scans<B: AutodiffBackend>(tol: f32) {
    let (b, d, n) = (2, 6, 4);
    for (t, chunk) in LENGTHS_AND_CHUNKS {
        for with_h0 in [false, true] {
            let what = format!("t={t} chunk={chunk} h0={with_h0}");
            let inputs = require_grad_scan(scan_inputs::<B>(b, t, d, n, t as u64));
            let mut rng = Rng::new(99);
            let h0 = with_h0.then(|| random::<B, 3>([b, d, n], 1.0, &mut rng).require_grad());
            let (w_y, w_h) =
                (random::<B, 3>([b, t, d], 1.0, &mut rng), random::<B, 3>([b, d, n], 1.0, &mut rng));

            let run = |chunked: bool| {
                let (y, h) = if chunked {
                    selective_scan::chunked(inputs.clone(), h0.clone(), chunk)
                } else {
                    selective_scan::reference(inputs.clone(), h0.clone())
                };
                let loss = (y.clone() * w_y.clone()).sum() + (h.clone() * w_h.clone()).sum();
                let grads = loss.backward();
                let g = |v: &Tensor<B, 3>| values(v.grad(&grads).unwrap());
                let mut all =
                    vec![values(y), values(h), g(&inputs.x), g(&inputs.delta), g(&inputs.b), g(&inputs.c)];
                all.push(values(inputs.a.grad(&grads).unwrap()));
                if let Some(h0) = &h0 {
                    all.push(g(h0));
                }
                all
            };
            assert_same_results(&run(false), &run(true), tol, &what);
        }
    }
}

/// Reference vs chunked results in the order the comparisons collect them.
fn assert_same_results(reference: &[Vec<f64>], chunked: &[Vec<f64>], tol: f32, what: &str) {
    let names = ["y", "h_last", "dx", "dΔ", "dB", "dC", "dA", "dh0"];
    assert_eq!(reference.len(), chunked.len());
    for ((r, c), name) in reference.iter().zip(chunked).zip(names) {
        assert_close(r, c, tol, &format!("{what} {name}"));
    }
}

#[test]
fn selective_scan_step_by_step_equals_reference() {
    let (b, t, d, n) = (2, 11, 5, 3);
    let s = scan_inputs::<Cpu>(b, t, d, n, 7);
    let (y_ref, h_ref) = selective_scan::reference(s.clone(), None);
    let mut h = Tensor::<Cpu, 3>::zeros([b, d, n], &Default::default());
    let mut ys = Vec::new();
    let at = |v: &Tensor<Cpu, 3>, i: usize| v.clone().narrow(1, i, 1).squeeze_dim::<2>(1);
    for i in 0..t {
        let (y, next) =
            selective_scan::step(at(&s.x, i), at(&s.delta, i), s.a.clone(), at(&s.b, i), at(&s.c, i), h);
        h = next;
        ys.push(y.unsqueeze_dim::<3>(1));
    }
    assert_close(&values(y_ref), &values(Tensor::cat(ys, 1)), 1e-6, "y");
    assert_close(&values(h_ref), &values(h), 1e-6, "h");
}

fn ssd_inputs<B: Backend>(
    b: usize,
    t: usize,
    heads: usize,
    p: usize,
    g: usize,
    n: usize,
    seed: u64,
) -> SsdInputs<B> {
    let mut rng = Rng::new(seed);
    SsdInputs {
        x: random([b, t, heads, p], 1.0, &mut rng),
        dt: archlab::model::activation::softplus(random::<B, 3>([b, t, heads], 1.0, &mut rng)),
        a: random::<B, 1>([heads], 0.5, &mut rng).exp().neg(),
        b: random([b, t, g, n], 1.0, &mut rng),
        c: random([b, t, g, n], 1.0, &mut rng),
    }
}

/// As for the selective scan: f32 to rounding, f64 to 1e-10.
#[test]
fn ssd_chunked_equals_reference_values_and_gradients() {
    compare_ssd_scans::<CpuAd>(1e-4);
    compare_ssd_scans::<Cpu64Ad>(1e-10);
}

/// With bf16 matmuls (mixed precision), values and gradients stay within bf16's rounding of
/// the fp32 recurrence. The yardstick is the problem's own sensitivity to bf16: the recurrence
/// run on inputs rounded to bf16. The bf16 SSD rounds those same inputs and, besides, three
/// intermediate operands (the masked scores, the decayed B, the entering states), so its error
/// may be a few times that, not more: at most 4×, everywhere, for values and every gradient.
/// A wrong matmul is off by the size of the values, far beyond either.
#[test]
fn ssd_chunked_with_bf16_matmuls_stays_within_bf16_rounding() {
    let (b, heads, p, g, n) = (2, 4, 3, 2, 5);
    let round = |t: Tensor<CpuAd, 4>| t.cast(burn::tensor::DType::BF16).cast(burn::tensor::DType::F32);
    for (t, chunk) in LENGTHS_AND_CHUNKS {
        let chunk = chunk.max(1);
        let s = ssd_inputs::<CpuAd>(b, t, heads, p, g, n, 100 + t as u64);
        let mut rng = Rng::new(5);
        let w_y = random::<CpuAd, 4>([b, t, heads, p], 1.0, &mut rng);
        let exact = ssd_results(&s, &w_y, |s| ssd::reference(s, None).0);
        let rounded_inputs = SsdInputs {
            x: round(s.x.clone()),
            dt: round(s.dt.clone().unsqueeze_dim(3)).squeeze_dim(3),
            a: s.a.clone(),
            b: round(s.b.clone()),
            c: round(s.c.clone()),
        };
        let yardstick = ssd_results(&rounded_inputs, &w_y, |s| ssd::reference(s, None).0);
        let mixed = ssd_results(&s, &w_y, |s| ssd::chunked(s, None, chunk, true).0);
        for (((name, e), r), m) in
            ["y", "dx", "dΔ", "dB", "dC", "dA"].iter().zip(&exact).zip(&yardstick).zip(&mixed)
        {
            let err =
                |v: &[f64]| e.iter().zip(v).map(|(a, b)| (a - b).abs() / (1.0 + a.abs())).fold(0.0, f64::max);
            let (allowed, got) = (4.0 * err(r), err(m));
            assert!(
                got <= allowed,
                "t={t} chunk={chunk} {name}: bf16 SSD off by {got:e}, inputs rounded to bf16 by {:e}",
                allowed / 4.0
            );
        }
    }
}

/// `[y, dx, dΔ, dB, dC, dA]` of the loss Σ y·w, with `scan` computing y (each input its own
/// leaf, so that rounded inputs get gradients too).
fn ssd_results(
    s: &SsdInputs<CpuAd>,
    w_y: &Tensor<CpuAd, 4>,
    scan: impl Fn(SsdInputs<CpuAd>) -> Tensor<CpuAd, 4>,
) -> Vec<Vec<f64>> {
    let leaf4 =
        |t: &Tensor<CpuAd, 4>| Tensor::<CpuAd, 4>::from_data(t.to_data(), &Default::default()).require_grad();
    let s = SsdInputs {
        x: leaf4(&s.x),
        dt: Tensor::from_data(s.dt.to_data(), &Default::default()).require_grad(),
        a: Tensor::from_data(s.a.to_data(), &Default::default()).require_grad(),
        b: leaf4(&s.b),
        c: leaf4(&s.c),
    };
    let y = scan(s.clone());
    let grads = (y.clone() * w_y.clone()).sum().backward();
    let g4 = |v: &Tensor<CpuAd, 4>| values(v.grad(&grads).unwrap());
    vec![
        values(y),
        g4(&s.x),
        values(s.dt.grad(&grads).unwrap()),
        g4(&s.b),
        g4(&s.c),
        values(s.a.grad(&grads).unwrap()),
    ]
}

/// The bf16 path is the one taken: its output differs from the fp32 one by bf16 rounding,
/// not by nothing.
#[test]
fn ssd_bf16_matmuls_round_their_operands() {
    let s = ssd_inputs::<Cpu>(2, 37, 4, 3, 2, 5, 9);
    let (y32, _) = ssd::chunked(s.clone(), None, 8, false);
    let (y16, _) = ssd::chunked(s, None, 8, true);
    let (y32, y16) = (values(y32), values(y16));
    let worst = y32.iter().zip(&y16).map(|(a, b)| (a - b).abs() / (1.0 + a.abs())).fold(0.0, f64::max);
    assert!(worst > 1e-4 && worst < 3e-2, "bf16 against fp32 differ by {worst:e}");
}

fn compare_ssd_scans<B: AutodiffBackend>(tol: f32) {
    let (b, heads, p, g, n) = (2, 4, 3, 2, 5);
    for (t, chunk) in LENGTHS_AND_CHUNKS {
        let chunk = chunk.max(1);
        for with_h0 in [false, true] {
            let what = format!("t={t} chunk={chunk} h0={with_h0}");
            let s = ssd_inputs::<B>(b, t, heads, p, g, n, 100 + t as u64);
            let s = SsdInputs {
                x: s.x.require_grad(),
                dt: s.dt.require_grad(),
                a: s.a.require_grad(),
                b: s.b.require_grad(),
                c: s.c.require_grad(),
            };
            let mut rng = Rng::new(5);
            let h0 = with_h0.then(|| random::<B, 4>([b, heads, p, n], 1.0, &mut rng).require_grad());
            let w_y = random::<B, 4>([b, t, heads, p], 1.0, &mut rng);
            let w_h = random::<B, 4>([b, heads, p, n], 1.0, &mut rng);
            let run = |chunked: bool| {
                let (y, h) = if chunked {
                    ssd::chunked(s.clone(), h0.clone(), chunk, false)
                } else {
                    ssd::reference(s.clone(), h0.clone())
                };
                let loss = (y.clone() * w_y.clone()).sum() + (h.clone() * w_h.clone()).sum();
                let grads = loss.backward();
                let g4 = |v: &Tensor<B, 4>| values(v.grad(&grads).unwrap());
                let mut all = vec![
                    values(y),
                    values(h),
                    g4(&s.x),
                    values(s.dt.grad(&grads).unwrap()),
                    g4(&s.b),
                    g4(&s.c),
                ];
                all.push(values(s.a.grad(&grads).unwrap()));
                if let Some(h0) = &h0 {
                    all.push(g4(h0));
                }
                all
            };
            assert_same_results(&run(false), &run(true), tol, &what);
        }
    }
}

#[test]
fn ssd_step_by_step_equals_reference() {
    let (b, t, heads, p, g, n) = (2, 9, 6, 2, 3, 4);
    let s = ssd_inputs::<Cpu>(b, t, heads, p, g, n, 3);
    let (y_ref, h_ref) = ssd::reference(s.clone(), None);
    let mut h = Tensor::<Cpu, 4>::zeros([b, heads, p, n], &Default::default());
    let mut ys = Vec::new();
    for i in 0..t {
        let at4 = |v: &Tensor<Cpu, 4>| v.clone().narrow(1, i, 1).squeeze_dim::<3>(1);
        let dt = s.dt.clone().narrow(1, i, 1).squeeze_dim::<2>(1);
        let (y, next) = ssd::step(at4(&s.x), dt, s.a.clone(), at4(&s.b), at4(&s.c), h);
        h = next;
        ys.push(y.unsqueeze_dim::<4>(1));
    }
    assert_close(&values(y_ref), &values(Tensor::cat(ys, 1)), 1e-6, "y");
    assert_close(&values(h_ref), &values(h), 1e-6, "h");
}

/// A small model config with the given mixer.
fn ssm_config(mixer: MixerKind) -> ModelConfig {
    let mut m = RunConfig::resolve("mamba-tiny", None, &[]).unwrap().model;
    m.mixer = mixer;
    m.d_model = 16;
    m.mamba.d_state = 4;
    m.mamba.chunk_size = 3;
    m.mamba2.d_state = 8;
    m.mamba2.head_dim = 8;
    m.mamba2.n_groups = 2;
    m.mamba2.chunk_size = 4;
    m.gdn.head_dim = 4;
    m.gdn.n_heads = 2;
    m.gdn.n_v_heads = 4;
    m.gdn.v_head_dim = 6;
    m.gdn.chunk_size = 4;
    m
}

/// The two mixers behind one interface, for the tests below.
enum Mixer {
    One(Mamba<Cpu>),
    Two(Mamba2<Cpu>),
    Delta(GatedDeltaNet<Cpu>),
}

enum State {
    One(MambaState<Cpu>),
    Two(Mamba2State<Cpu>),
    Delta(DeltaNetState<Cpu>),
}

impl Mixer {
    fn new(kind: MixerKind) -> Self {
        let cfg = ssm_config(kind);
        let mut rng = Rng::new(11);
        let device = Default::default();
        match kind {
            MixerKind::Mamba => Mixer::One(Mamba::new(&cfg, 1.0, &mut rng, &device)),
            MixerKind::Mamba2 => Mixer::Two(Mamba2::new(&cfg, 1.0, &mut rng, &device)),
            MixerKind::GatedDeltaNet => Mixer::Delta(GatedDeltaNet::new(&cfg, true, 1.0, &mut rng, &device)),
            MixerKind::DeltaNet => Mixer::Delta(GatedDeltaNet::new(&cfg, false, 1.0, &mut rng, &device)),
            other => panic!("{other:?} is no state-space mixer"),
        }
    }
    fn forward(&self, x: Tensor<Cpu, 3>) -> Tensor<Cpu, 3> {
        match self {
            Mixer::One(m) => m.forward(x),
            Mixer::Two(m) => m.forward(x),
            Mixer::Delta(m) => m.forward(x),
        }
    }
    fn sequential(&self, x: Tensor<Cpu, 3>) -> Tensor<Cpu, 3> {
        match self {
            Mixer::One(m) => {
                m.forward_with(x, &mut MambaState::empty(), selective_scan::ScanAlgorithm::Sequential)
            }
            Mixer::Two(m) => m.forward_with(x, &mut Mamba2State::empty(), true),
            Mixer::Delta(m) => m.forward_with(x, &mut DeltaNetState::empty(), true),
        }
    }
    fn empty(&self) -> State {
        match self {
            Mixer::One(_) => State::One(MambaState::empty()),
            Mixer::Two(_) => State::Two(Mamba2State::empty()),
            Mixer::Delta(_) => State::Delta(DeltaNetState::empty()),
        }
    }
    fn step(&self, x: Tensor<Cpu, 3>, state: &mut State) -> Tensor<Cpu, 3> {
        match (self, state) {
            (Mixer::One(m), State::One(s)) => m.forward_step(x, s),
            (Mixer::Two(m), State::Two(s)) => m.forward_step(x, s),
            (Mixer::Delta(m), State::Delta(s)) => m.forward_step(x, s),
            _ => unreachable!(),
        }
    }
}

const KINDS: [MixerKind; 4] =
    [MixerKind::Mamba, MixerKind::Mamba2, MixerKind::GatedDeltaNet, MixerKind::DeltaNet];

#[test]
fn mixers_are_causal_and_mix_across_time() {
    let (t, d) = (13, 16);
    for kind in KINDS {
        let mixer = Mixer::new(kind);
        let mut rng = Rng::new(4);
        let x = random::<Cpu, 3>([1, t, d], 1.0, &mut rng);
        let base = values(mixer.forward(x.clone()));
        for pos in [0, 4, 12] {
            let bump = random::<Cpu, 3>([1, 1, d], 1.0, &mut rng);
            let changed =
                x.clone().slice_assign([0..1, pos..pos + 1, 0..d], x.clone().narrow(1, pos, 1) + bump);
            let out = values(mixer.forward(changed));
            for i in 0..pos * d {
                assert_eq!(
                    base[i],
                    out[i],
                    "{kind:?}: output at step {} moved when step {pos} changed",
                    i / d
                );
            }
            if pos + 1 < t {
                let later_moved =
                    (pos + 1..t).any(|s| (0..d).any(|j| (base[s * d + j] - out[s * d + j]).abs() > 1e-6));
                assert!(
                    later_moved,
                    "{kind:?}: changing step {pos} changed no later output (no recurrence?)"
                );
            }
        }
    }
}

#[test]
fn mixer_chunked_forward_equals_sequential_reference() {
    for kind in KINDS {
        let mixer = Mixer::new(kind);
        let x = random::<Cpu, 3>([2, 10, 16], 1.0, &mut Rng::new(8));
        assert_close(
            &values(mixer.sequential(x.clone())),
            &values(mixer.forward(x)),
            1e-5,
            &format!("{kind:?}"),
        );
    }
}

#[test]
fn mixer_decoding_with_state_equals_full_forward() {
    let (t, d) = (12, 16);
    for kind in KINDS {
        let mixer = Mixer::new(kind);
        let x = random::<Cpu, 3>([2, t, d], 1.0, &mut Rng::new(21));
        let full = values(mixer.forward(x.clone()));
        // A prefill of 5 (chunked path with a state carried out), one step, a chunk of 2
        // (chunked path with a state carried in and out), then single steps.
        let mut state = mixer.empty();
        let mut pieces = Vec::new();
        let mut at = 0;
        for len in [5, 1, 2, 1, 1, 1, 1] {
            pieces.push(mixer.step(x.clone().narrow(1, at, len), &mut state));
            at += len;
        }
        assert_eq!(at, t);
        assert_close(&full, &values(Tensor::cat(pieces, 1)), 1e-5, &format!("{kind:?}"));
    }
}

/// A Mamba-2 model built for mixed precision runs its SSD's matmuls in bf16 as well as its
/// projections: every layer is switched, and switching the SSD back to fp32 changes the
/// logits (so the bf16 SSD is what runs). Its accuracy is the SSD-level test's above.
#[test]
fn mamba2_model_under_bf16_runs_its_ssd_in_bf16() {
    use archlab::model::LanguageModel;
    use archlab::model::block::SeqMixer;
    let mut cfg = ssm_config(MixerKind::Mamba2);
    cfg.vocab_size = 64;
    let dev = Default::default();
    let mut rng = Rng::new(4);
    let ids: Vec<i64> = (0..2 * 21).map(|_| rng.below(64) as i64).collect();
    let ids = || archlab::model::layers::int_tensor::<Cpu, 2>(ids.clone(), [2, 21], &dev);
    let mixed = LanguageModel::<Cpu>::new(&cfg, 1, true, &dev);
    let mut ssd_fp32 = LanguageModel::<Cpu>::new(&cfg, 1, true, &dev);
    assert!(!mixed.layers.is_empty());
    for (layer, other) in mixed.layers.iter().zip(&mut ssd_fp32.layers) {
        match (&layer.mixer, &mut other.mixer) {
            (SeqMixer::Mamba2(m), SeqMixer::Mamba2(o)) => {
                assert!(m.ssd_bf16, "every Mamba-2 layer's SSD switched to bf16");
                o.ssd_bf16 = false;
            }
            _ => panic!("a Mamba-2 model"),
        }
    }
    let (a, b) = (values(mixed.forward(ids())), values(ssd_fp32.forward(ids())));
    assert!(a.iter().all(|v| v.is_finite()));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(worst > 1e-6, "the SSD's precision made no difference to the logits: {worst:e}");
}

/// Random delta-rule inputs as the mixer makes them: unit-norm keys and queries (queries scaled
/// by dk^-1/2), g = −exp(N(0, 0.5))·softplus(N(0, 1)) ≤ 0, β = σ(N(0, 1)) (twice that with
/// negative eigenvalues); `gated = false` gives DeltaNet's g = 0.
fn delta_inputs<B: Backend>(
    shape: (usize, usize, usize, usize, usize),
    gated: bool,
    neg_eigval: bool,
    seed: u64,
) -> DeltaInputs<B> {
    use archlab::model::activation::{sigmoid, softplus};
    let (b, t, h, dk, dv) = shape;
    let mut rng = Rng::new(seed);
    let q = delta_rule::l2_normalize(random::<B, 4>([b, t, h, dk], 1.0, &mut rng)) * (dk as f64).powf(-0.5);
    let k = delta_rule::l2_normalize(random::<B, 4>([b, t, h, dk], 1.0, &mut rng));
    let v = random([b, t, h, dv], 1.0, &mut rng);
    let rate = random::<B, 3>([1, 1, h], 0.5, &mut rng).exp();
    let g = softplus(random::<B, 3>([b, t, h], 1.0, &mut rng)) * rate.neg();
    let g = if gated { g } else { g.zeros_like() };
    let beta = sigmoid(random::<B, 3>([b, t, h], 1.0, &mut rng));
    let beta = if neg_eigval { beta * 2.0 } else { beta };
    DeltaInputs { q, k, v, g, beta }
}

/// Chunked (WY form) against the token-by-token recurrence: values, the final state and every
/// gradient (q, k, v, g, β and the initial state), f32 to 1e-4 relative and f64 to 1e-10, on
/// lengths that are and are not multiples of the chunk, for Gated DeltaNet, DeltaNet (g = 0)
/// and β ∈ (0, 2).
#[test]
fn delta_rule_chunked_equals_reference_values_and_gradients() {
    compare_delta_rules::<CpuAd>(1e-4);
    compare_delta_rules::<Cpu64Ad>(1e-10);
}

fn compare_delta_rules<B: AutodiffBackend>(tol: f32) {
    let (b, h, dk, dv) = (2, 3, 4, 5);
    let cases = [(1, 1), (5, 2), (16, 4), (37, 8), (37, 5), (23, 64), (64, 16)];
    for (t, chunk) in cases {
        for (gated, neg) in [(true, false), (false, false), (true, true)] {
            for with_s0 in [false, true] {
                let what = format!("t={t} chunk={chunk} gated={gated} neg_eigval={neg} s0={with_s0}");
                let x = delta_inputs::<B>((b, t, h, dk, dv), gated, neg, 300 + t as u64);
                let x = DeltaInputs {
                    q: x.q.require_grad(),
                    k: x.k.require_grad(),
                    v: x.v.require_grad(),
                    g: x.g.require_grad(),
                    beta: x.beta.require_grad(),
                };
                let mut rng = Rng::new(6);
                let s0 = with_s0.then(|| random::<B, 4>([b, h, dk, dv], 1.0, &mut rng).require_grad());
                let w_o = random::<B, 4>([b, t, h, dv], 1.0, &mut rng);
                let w_s = random::<B, 4>([b, h, dk, dv], 1.0, &mut rng);
                let run = |chunked: bool| {
                    let (o, s) = if chunked {
                        delta_rule::chunked(x.clone(), s0.clone(), chunk)
                    } else {
                        delta_rule::reference(x.clone(), s0.clone())
                    };
                    let loss = (o.clone() * w_o.clone()).sum() + (s.clone() * w_s.clone()).sum();
                    let grads = loss.backward();
                    let g4 = |v: &Tensor<B, 4>| values(v.grad(&grads).unwrap());
                    let g3 = |v: &Tensor<B, 3>| values(v.grad(&grads).unwrap());
                    let mut all = vec![values(o), values(s), g4(&x.q), g4(&x.k), g4(&x.v), g3(&x.beta)];
                    if gated {
                        all.push(g3(&x.g));
                    }
                    if let Some(s0) = &s0 {
                        all.push(g4(s0));
                    }
                    all
                };
                let names = ["o", "s_last", "dq", "dk", "dv", "dβ", "dg|ds0", "ds0"];
                let (reference, chunked) = (run(false), run(true));
                for ((r, c), name) in reference.iter().zip(&chunked).zip(names) {
                    assert_close(r, c, tol, &format!("{what} {name}"));
                }
            }
        }
    }
}

/// Running `[0, t1)` and then `[t1, t)` from the carried state equals one pass, in both forms.
#[test]
fn delta_rule_state_carries_across_calls() {
    let x = delta_inputs::<Cpu>((2, 19, 3, 4, 5), true, false, 9);
    let (o_ref, s_ref) = delta_rule::reference(x.clone(), None);
    let part = |x: &DeltaInputs<Cpu>, start: usize, len: usize| DeltaInputs {
        q: x.q.clone().narrow(1, start, len),
        k: x.k.clone().narrow(1, start, len),
        v: x.v.clone().narrow(1, start, len),
        g: x.g.clone().narrow(1, start, len),
        beta: x.beta.clone().narrow(1, start, len),
    };
    let (o1, s1) = delta_rule::chunked(part(&x, 0, 7), None, 4);
    let (o2, s2) = delta_rule::chunked(part(&x, 7, 12), Some(s1), 4);
    assert_close(&values(o_ref), &values(Tensor::cat(vec![o1, o2], 1)), 1e-5, "o");
    assert_close(&values(s_ref), &values(s2), 1e-5, "s");
}

/// With β = 1, no decay and orthonormal keys, the memory stores every pair exactly:
/// `Sᵀ k_i = v_i` for each written (k_i, v_i), read from the final state.
#[test]
fn delta_rule_recalls_orthonormal_keys_exactly() {
    let (t, dk, dv) = (6, 8, 3);
    let mut rng = Rng::new(12);
    // Rows of a permuted, sign-flipped identity: orthonormal.
    let mut order: Vec<usize> = (0..dk).collect();
    for i in (1..dk).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut keys = vec![0f32; t * dk];
    for i in 0..t {
        keys[i * dk + order[i]] = if i % 2 == 0 { 1.0 } else { -1.0 };
    }
    let k = archlab::model::layers::float_tensor::<Cpu, 4>(
        TensorData::new(keys.clone(), [1, t, 1, dk]),
        &Default::default(),
    );
    let v = random::<Cpu, 4>([1, t, 1, dv], 1.0, &mut rng);
    let x = DeltaInputs {
        q: k.clone(),
        k: k.clone(),
        v: v.clone(),
        g: Tensor::zeros([1, t, 1], &Default::default()),
        beta: Tensor::ones([1, t, 1], &Default::default()),
    };
    for chunked in [false, true] {
        let (_, s) = if chunked {
            delta_rule::chunked(x.clone(), None, 4)
        } else {
            delta_rule::reference(x.clone(), None)
        };
        let s = s.reshape([dk, dv]);
        let recalled = k.clone().reshape([t, dk]).matmul(s); // row i: Sᵀ k_i
        assert_close(
            &values(v.clone().reshape([t, dv])),
            &values(recalled),
            1e-6,
            &format!("chunked={chunked}"),
        );
    }
}

/// Grouped heads: with 2 key heads and 4 value heads, value heads 2h and 2h + 1 read key head h
/// (Qwen3-Next's `repeat_interleave`), and a layer with grouped heads is causal and decodes
/// exactly (the mixer tests above run with 2 key and 4 value heads).
#[test]
fn grouped_key_heads_map_to_consecutive_value_heads() {
    let x = random::<Cpu, 4>([1, 3, 2, 5], 1.0, &mut Rng::new(2));
    let mapped = values(archlab::model::gated_deltanet::key_to_value_heads(x.clone(), 4));
    let x = values(x);
    for t in 0..3 {
        for j in 0..4 {
            for c in 0..5 {
                assert_eq!(mapped[(t * 4 + j) * 5 + c], x[(t * 2 + j / 2) * 5 + c], "t={t} value head {j}");
            }
        }
    }
}

/// Mamba-2's gated norm with two groups: per group by default (mamba_ssm, current
/// `transformers`) and over the whole inner width with `norm_per_group = false` (older
/// `transformers`). Each equals the plain-ops norm with its group size, and the two differ.
#[test]
fn mamba2_gated_norm_per_group_or_over_the_whole_width() {
    let device = Default::default();
    let mut cfg = ssm_config(MixerKind::Mamba2);
    assert_eq!(cfg.mamba2.n_groups, 2);
    let di = cfg.mamba2.inner(cfg.d_model);
    let mut rng = Rng::new(31);
    let (y, z) = (random::<Cpu, 3>([2, 5, di], 1.0, &mut rng), random::<Cpu, 3>([2, 5, di], 1.0, &mut rng));
    let mut outputs = Vec::new();
    for (per_group, group) in [(true, di / 2), (false, di)] {
        cfg.mamba2.norm_per_group = per_group;
        let m = Mamba2::<Cpu>::new(&cfg, 1.0, &mut Rng::new(11), &device);
        assert_eq!(m.norm.group_size, group);
        let out = values(m.norm.forward(y.clone(), z.clone()));
        let plain = archlab::kernels::norm::gated_rms_norm(
            y.clone(),
            z.clone(),
            m.norm.weight.val(),
            group,
            cfg.norm_eps,
        );
        assert_close(&values(plain), &out, 1e-6, &format!("per_group={per_group}"));
        outputs.push(out);
    }
    let worst = outputs[0].iter().zip(&outputs[1]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst > 1e-3, "per-group and whole-width norms agree ({worst:e}): the key changes nothing");
}
