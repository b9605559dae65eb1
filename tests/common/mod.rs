//! Shared helpers for the integration tests: backends and small configs.
#![allow(dead_code)]

use std::path::PathBuf;

use archlab::config::{
    FfnKind, MixerKind, MlpKind, ModelConfig, MoeConfig, NormKind, Positions, Precision, RunConfig,
};
use archlab::kernels::AutodiffBackend;
use archlab::rng::Rng;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// The CPU backend archlab uses (Flex).
pub type Cpu = archlab::device::CpuBackend;
pub type CpuAd = burn::backend::Autodiff<Cpu>;
pub type Cpu64 = burn::backend::NdArray<f64>;
pub type Cpu64Ad = burn::backend::Autodiff<Cpu64>;

/// A fresh, empty temporary directory unique to this test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("archlab-test-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config small enough for CI: a 2-layer d=64 model on a 400 kB built-in corpus. The data
/// cache is shared by all tests (same key → same folder) so the corpus is prepared once.
pub fn small_config() -> RunConfig {
    let mut cfg = RunConfig::resolve("tiny", None, &[]).unwrap();
    cfg.data.builtin_bytes = 400_000;
    cfg.data.cache_dir = std::env::temp_dir().join("archlab-test-data-cache").display().to_string();
    cfg.model.d_model = 64;
    cfg.model.n_layers = 2;
    cfg.model.n_heads = 4;
    cfg.model.d_ff = 192;
    cfg.model.max_seq_len = 128;
    cfg.train.batch_size = 8;
    cfg.train.seq_len = 64;
    cfg.train.max_steps = 40;
    cfg.train.warmup_steps = 5;
    cfg.train.lr = 3e-3;
    cfg.train.precision = Precision::F32;
    cfg.train.checkpoint_every = 0;
    cfg.train.log_every = 1;
    cfg.eval.every = 20;
    cfg.eval.batches = 2;
    cfg.validate().unwrap();
    cfg
}

/// Whether the shared data folder beside the project is present.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}

/// Every architectural variant the dense model offers.
pub fn variants() -> Vec<(&'static str, ModelConfig)> {
    let mut base = RunConfig::resolve("tiny", None, &[]).unwrap().model;
    base.vocab_size = 50;
    base.d_model = 32;
    base.n_layers = 2;
    base.n_heads = 4;
    base.d_ff = 48;
    base.max_seq_len = 24;
    let mut v = vec![("llama (rope, rms, swiglu, tied)", base.clone())];
    let mut gpt2 = base.clone();
    gpt2.positions = Positions::Learned;
    gpt2.norm = NormKind::Layer;
    gpt2.mlp = MlpKind::Gelu;
    gpt2.bias = true;
    gpt2.tie_embeddings = false;
    v.push(("gpt2 (learned, layernorm, gelu, biases, untied)", gpt2));
    let mut gqa = base.clone();
    gqa.n_kv_heads = 2;
    v.push(("gqa (4 query heads, 2 kv heads)", gqa));
    v.extend(ssm_variants(&base));
    v.extend(moe_variants(&base));
    v.extend(hybrid_variants(&base));
    let mut gated = base.clone();
    gated.n_kv_heads = 2;
    gated.attn_output_gate = true;
    gated.qk_norm = true;
    gated.partial_rotary_factor = 0.5;
    v.push(("gated attention (output gate, qk-norm, half RoPE, GQA)", gated));
    // Every layer kind of the registry is covered: one the variants above miss (a mixer just
    // added to the registry) gets a two-layer model of its own, so its registry line alone
    // buys it every check that iterates these variants.
    for info in archlab::model::registry::SEQ_MIXERS {
        let covered = v.iter().any(|(_, cfg)| cfg.layers().unwrap().iter().any(|l| l.mixer == info.kind));
        if !covered {
            v.push((info.name, with_pattern(base.clone(), &format!("{0}{0}", info.symbol))));
        }
    }
    v
}

/// `base` with a layer pattern, sized for tests: windows of 4, small SSM states, Mamba-2 chunks
/// of 4 (shorter than the tests' sequences).
pub fn with_pattern(mut base: ModelConfig, pattern: &str) -> ModelConfig {
    base.pattern = pattern.to_string();
    base.n_layers = archlab::model::pattern::Pattern::parse(pattern).unwrap().len();
    base.window = 4;
    base.mamba.d_state = 4;
    base.mamba2.d_state = 8;
    base.mamba2.head_dim = 16;
    base.mamba2.chunk_size = 4;
    small_gdn(&mut base);
    base
}

/// (Gated) DeltaNet layers sized for tests: 2 key heads of 4, 4 value heads of 8 (grouped as
/// Qwen3-Next's), chunks of 4.
pub fn small_gdn(m: &mut ModelConfig) {
    m.gdn.head_dim = 4;
    m.gdn.n_heads = 2;
    m.gdn.n_v_heads = 4;
    m.gdn.v_head_dim = 8;
    m.gdn.chunk_size = 4;
}

/// Sliding-window attention, Hymba (global attention branch, meta tokens), and a mixed
/// pattern with every mixer and channel mixer. Windows of 5 and 4 are shorter than the
/// tests' sequences, so the blocked path (training) and the band-masked path (decoding) both run.
pub fn hybrid_variants(base: &ModelConfig) -> Vec<(&'static str, ModelConfig)> {
    let mut local = base.clone();
    local.mixer = MixerKind::Local;
    local.window = 5;
    let mut hymba = base.clone();
    hymba.mixer = MixerKind::Hymba;
    hymba.mamba.d_state = 4;
    hymba.hymba.meta_tokens = 3;
    hymba.hymba.scale_init = 0.7;
    let mut mixed = with_pattern(moe_variants(base).remove(0).1, "LMeSnHA");
    mixed.hymba.window = 4;
    let linear_hybrid = with_pattern(base.clone(), "GGGADn");
    vec![
        ("local attention (window 5)", local),
        ("hymba (global attention branch, 3 meta tokens)", hymba),
        ("pattern LMeSnHA (window 4, MoE, no-FFN, windowed Hymba)", mixed),
        ("pattern GGGADn (3:1 Gated DeltaNet : attention, a DeltaNet layer)", linear_hybrid),
    ]
}

/// MoE channel mixers: Mixtral-style top-2 of 4 SwiGLU experts with a gated shared expert, and
/// a Switch-style top-1 of 4 GELU experts with biases and a capacity limit (it drops tokens
/// while training, which the gradient checks run under).
pub fn moe_variants(base: &ModelConfig) -> Vec<(&'static str, ModelConfig)> {
    let mut mixtral = base.clone();
    mixtral.ffn = FfnKind::Moe;
    mixtral.moe = MoeConfig {
        n_experts: 4,
        top_k: 2,
        expert_d_ff: 24,
        shared_expert_d_ff: 16,
        shared_expert_gate: true,
        ..MoeConfig::default()
    };
    let mut switch = base.clone();
    switch.ffn = FfnKind::Moe;
    switch.mlp = MlpKind::Gelu;
    switch.bias = true;
    switch.moe = MoeConfig { n_experts: 4, top_k: 1, capacity_factor: 1.0, ..MoeConfig::default() };
    vec![
        ("moe top-2 of 4, swiglu, gated shared expert", mixtral),
        ("moe top-1 of 4, gelu, biases, capacity 1.0", switch),
    ]
}

/// Pure Mamba-1 and Mamba-2 stacks (no MLP), and Mamba-1 with an MLP, at the same tiny width.
/// Chunks of 4 so that the sequence lengths the tests use are split unevenly.
pub fn ssm_variants(base: &ModelConfig) -> Vec<(&'static str, ModelConfig)> {
    let mut mamba = base.clone();
    mamba.mixer = MixerKind::Mamba;
    mamba.ffn = FfnKind::None;
    mamba.mamba.d_state = 4;
    mamba.mamba.chunk_size = 4;
    mamba.mamba.conv_bias = true;
    let mut with_mlp = mamba.clone();
    with_mlp.ffn = FfnKind::Mlp;
    with_mlp.mamba.bias = true;
    let mut mamba2 = base.clone();
    mamba2.mixer = MixerKind::Mamba2;
    mamba2.ffn = FfnKind::None;
    mamba2.mamba2.d_state = 8;
    mamba2.mamba2.head_dim = 16;
    mamba2.mamba2.n_groups = 2;
    mamba2.mamba2.chunk_size = 4;
    let mut gdn = base.clone();
    gdn.mixer = MixerKind::GatedDeltaNet;
    small_gdn(&mut gdn);
    let mut deltanet = gdn.clone();
    deltanet.mixer = MixerKind::DeltaNet;
    deltanet.ffn = FfnKind::None;
    deltanet.gdn.allow_neg_eigval = true;
    deltanet.gdn.conv_bias = true;
    vec![
        ("mamba (pure, d_state 4)", mamba),
        ("mamba + swiglu MLP, projection biases", with_mlp),
        ("mamba2 (4 heads, 2 groups, d_state 8)", mamba2),
        ("gated deltanet (2 key heads, 4 value heads, chunk 4) + swiglu MLP", gdn),
        ("deltanet (β in (0, 2), conv bias, no FFN)", deltanet),
    ]
}

pub fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

/// Gradients of every float parameter of `module`, in visiting order, flattened to f64. A
/// parameter the loss did not reach (an MoE expert no token was routed to) gets zeros; a
/// finite-difference comparison still catches one that was wrongly cut off.
pub fn param_grads<B: AutodiffBackend, M: Module<B>>(module: &M, grads: &B::Gradients) -> Vec<Vec<f64>> {
    struct Grads<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        out: Vec<Vec<f64>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let g = match param.val().grad(self.grads) {
                Some(g) => g.into_data().convert::<f64>().into_vec::<f64>().unwrap(),
                None => vec![0.0; param.shape().num_elements()],
            };
            self.out.push(g);
        }
    }
    let mut g = Grads::<B> { grads, out: Vec::new() };
    module.visit(&mut g);
    g.out
}

/// Options for a quiet CPU training run into a fresh temporary directory.
pub fn train_options(name: &str) -> archlab::train::TrainOptions {
    archlab::train::TrainOptions {
        run_dir: temp_dir(name),
        resume: false,
        stop_after: None,
        progress: false,
        device_name: "cpu".into(),
        on_gpu: false,
        device_memory: None,
        devices: 1,
    }
}

/// Whether a CUDA test can run here. Without a usable GPU it says it skips, or fails where
/// `ARCHLAB_REQUIRE_CUDA` is set (on a GPU machine, so that a broken driver or a build without
/// the `cuda` feature cannot turn the CUDA tests into silent passes).
pub fn cuda_usable() -> bool {
    #[cfg(feature = "cuda")]
    let why = match archlab::device::cuda_available() {
        true => return true,
        false => "no usable CUDA GPU (is the driver loaded? nvidia-smi)",
    };
    #[cfg(not(feature = "cuda"))]
    let why = "archlab was built without the `cuda` feature (cargo test --features cuda)";
    assert!(std::env::var_os("ARCHLAB_REQUIRE_CUDA").is_none(), "ARCHLAB_REQUIRE_CUDA is set but {why}");
    eprintln!("skipping: {why}");
    false
}

/// Runs the calling test again in a process of its own, unless this is that process: returns
/// `true` in the child (run the test's body) and `false` in the parent (done: the child
/// passed). For tests that need the backend's global random generator to themselves: other
/// tests of this binary seed it (every training step does) from other threads.
pub fn in_own_process(test: &str) -> bool {
    const CHILD: &str = "ARCHLAB_TEST_OWN_PROCESS";
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{test} failed in its own process:\n{log}");
    assert!(log.contains("1 passed"), "{test} did not run in its own process:\n{log}");
    false
}
