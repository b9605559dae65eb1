//! Mixture-of-Experts channel mixer: a router sends each token to `k` of `E` expert MLPs and
//! mixes their outputs with the router's probabilities (Shazeer et al. 2017). k = 1 is the
//! Switch Transformer (Fedus et al. 2021), k = 2 with renormalised weights is Mixtral (Jiang
//! et al. 2024); HF `transformers`' `MixtralSparseMoeBlock` computes the same function.
//!
//! ```text
//! logits = x W_router                 [N, E]   (fp32, also under bf16: Switch's "selective precision")
//! p      = softmax(logits)            [N, E]
//! top-k experts per token, weights w = p[top-k] (/ Σ p[top-k] when renormalised, k ≥ 2)
//! y      = Σ_{kept (token, expert)} w · expert(x)   (+ shared expert)
//! ```
//!
//! Three ways to compute `y`, which must agree (tests/all/moe.rs, values and gradients):
//! - [`Dispatch::Batched`], used on the GPU backends: the routing runs on the device
//!   ([`crate::kernels::moe_route`]); each assignment is scattered into a buffer of `rows`
//!   slots per expert (`[E, rows, d]`, GShard's dispatch tensor without its one-hot
//!   matmul), all experts run at once as one batched matmul per projection, and the outputs
//!   are gathered back and weighted. Nothing is read to the host mid-forward except, when no
//!   capacity limit is set, the largest expert's count (E integers), which sizes the buffer.
//! - [`Dispatch::Grouped`], used on the CPU backends: the routing is decided on the host,
//!   tokens are gathered per expert (a permutation sorted by expert), each expert runs once
//!   on its own tokens, and the weighted results are scattered back. Work is k/E of the dense
//!   form, with no padding.
//! - [`Dispatch::DenseMasked`], the reference: every expert runs on every token and a
//!   `[N, E]` combine matrix (zero where a token was not routed or was dropped) mixes them.
//!
//! The routing decision (top-k, capacity) is discrete, so no gradient is lost by making it
//! outside autodiff. The balancing and z-losses are returned to the caller in
//! [`MoeAux::aux_loss`], never kept as hidden state (docs/ARCHITECTURE.md), together with the counts
//! behind them ([`Routing`]).

use anyhow::bail;
use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, ElementConversion, IndexingUpdateOp, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::activation::sigmoid;
use super::layers::{Linear, float_tensor, int_tensor};
use super::config::ModelConfig;
use super::mixer::{ChannelMixing, ChannelSpec, LayerParams};
pub use super::routing::{MoeAux, Routing, RoutingStats, routing_diagnostics};
use super::mlp::{self, Mlp};
use crate::util::checks::must_be_positive;
use crate::kernels::moe_route::HostRoute;
use crate::kernels::{self, Backend};
use crate::rng::Rng;

/// Mixture-of-Experts channel mixer (see `model::moe`): a router sends each token to `top_k`
/// of `n_experts` expert MLPs (GELU or SwiGLU, as `model.mlp`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoeConfig {
    /// E, the number of experts per layer.
    pub n_experts: usize,
    /// k, the experts each token is sent to (1: Switch Transformer; 2: Mixtral).
    pub top_k: usize,
    /// Width of each expert MLP; 0 means `model.d_ff`.
    pub expert_d_ff: usize,
    /// Rescale the k chosen router probabilities to sum to 1 (Mixtral). Applies to k ≥ 2 only:
    /// with k = 1 the rescaled weight would always be 1 and the LM loss could not train the
    /// router, so top-1 keeps the raw probability (Switch).
    pub renormalize: bool,
    /// Expert capacity `ceil(capacity_factor · tokens · k / E)` while training; a token sent
    /// to a full expert is dropped there (it passes through on the residual) and counted.
    /// 0 means no capacity limit (dropless, Mixtral). Inference is always dropless.
    pub capacity_factor: f64,
    /// Weight of the load-balancing loss `E · Σ_e f_e · P_e` (Switch eq. 4; Mixtral's form
    /// for k ≥ 2, which equals k when the load is even).
    pub balance_coef: f64,
    /// Weight of the router z-loss `mean(logsumexp(logits)²)` (ST-MoE, Zoph et al. 2022).
    pub z_loss_coef: f64,
    /// While training, multiply the router's input by noise uniform in `[1 − ε, 1 + ε]`
    /// (Switch's jitter); 0 disables it.
    pub jitter: f64,
    /// Width of an always-on shared expert (DeepSeekMoE, Qwen2-MoE); 0 means none.
    pub shared_expert_d_ff: usize,
    /// Scale the shared expert by a learned per-token sigmoid gate (Qwen2-MoE).
    pub shared_expert_gate: bool,
}

impl Default for MoeConfig {
    fn default() -> Self {
        Self {
            n_experts: 8,
            top_k: 2,
            expert_d_ff: 0,
            renormalize: true,
            capacity_factor: 0.0,
            balance_coef: 0.01,
            z_loss_coef: 0.001,
            jitter: 0.0,
            shared_expert_d_ff: 0,
            shared_expert_gate: false,
        }
    }
}

impl MoeConfig {
    /// Checks the section for a model whose MLP width is `d_ff` (the experts' default).
    pub fn validate(&self, d_ff: usize) -> anyhow::Result<()> {
        let c = self;
        must_be_positive(&[("model.moe.n_experts", c.n_experts), ("model.moe.top_k", c.top_k)])?;
        if c.top_k > c.n_experts {
            bail!(
                "model.moe.top_k ({}) cannot exceed model.moe.n_experts ({}); lower top_k or add experts",
                c.top_k,
                c.n_experts
            );
        }
        if c.expert_width(d_ff) == 0 {
            bail!("model.moe.expert_d_ff is 0 and so is model.d_ff; set one of them");
        }
        let coefs = [
            ("capacity_factor", c.capacity_factor),
            ("balance_coef", c.balance_coef),
            ("z_loss_coef", c.z_loss_coef),
        ];
        for (key, value) in coefs {
            if !(value >= 0.0 && value.is_finite()) {
                bail!("model.moe.{key} must be a non-negative number (got {value})");
            }
        }
        if c.capacity_factor > 0.0 && c.capacity_factor < 1.0 / c.n_experts as f64 {
            bail!(
                "model.moe.capacity_factor ({}) leaves experts no room for a single token per {} tokens; \
                 use 0 (no limit) or at least 1.0 (Switch uses 1.0–1.25)",
                c.capacity_factor,
                c.n_experts
            );
        }
        if !(0.0..1.0).contains(&c.jitter) {
            bail!("model.moe.jitter must be in [0, 1) (got {}); Switch used 0.01", c.jitter);
        }
        if c.shared_expert_gate && c.shared_expert_d_ff == 0 {
            bail!("model.moe.shared_expert_gate needs a shared expert; set model.moe.shared_expert_d_ff");
        }
        Ok(())
    }

    /// The width of each expert given the model's `d_ff`.
    pub fn expert_width(&self, d_ff: usize) -> usize {
        if self.expert_d_ff == 0 { d_ff } else { self.expert_d_ff }
    }
}

#[derive(Module, Debug)]
pub struct Moe<B: Backend> {
    /// `[d, E]`, no bias (HF `gate`).
    pub router: Linear<B>,
    pub experts: Vec<Mlp<B>>,
    pub shared_expert: Option<Mlp<B>>,
    /// `[d, 1]`: sigmoid gate on the shared expert (Qwen2-MoE).
    pub shared_expert_gate: Option<Linear<B>>,
    pub top_k: usize,
    pub renormalize: bool,
    pub capacity_factor: f64,
    pub jitter: f64,
    pub balance_coef: f64,
    pub z_loss_coef: f64,
}

/// How the experts' outputs are computed (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    Batched,
    Grouped,
    DenseMasked,
}

pub struct MoeOutput<B: Backend> {
    /// `[b, t, d]`
    pub y: Tensor<B, 3>,
    pub aux: MoeAux<B>,
}

/// MoE's analytic side ([`ChannelSpec`]).
pub struct Spec;

impl ChannelSpec for Spec {
    /// The `[model.moe]` section, for a model whose MLP width is `d_ff` (the experts' default).
    fn validate(cfg: &ModelConfig) -> anyhow::Result<()> {
        cfg.moe.validate(cfg.d_ff)
    }

    /// The experts multiplied out (E · expert width), E itself, the shared expert.
    fn sizes(cfg: &ModelConfig) -> Vec<f64> {
        let c = &cfg.moe;
        let experts = c.n_experts as f64 * c.expert_width(cfg.d_ff) as f64;
        vec![experts, c.n_experts as f64, c.shared_expert_d_ff as f64]
    }

    /// E experts, the shared expert and its gate, the router; a token leaves E − k experts idle.
    fn params(cfg: &ModelConfig) -> LayerParams {
        let c = &cfg.moe;
        let (d, e, k) = (cfg.d_model, c.n_experts, c.top_k);
        let expert = mlp::params(cfg, c.expert_width(cfg.d_ff));
        let shared = if c.shared_expert_d_ff > 0 {
            mlp::params(cfg, c.shared_expert_d_ff)
        } else {
            LayerParams::default()
        };
        let gates = d * e + usize::from(c.shared_expert_gate) * d;
        LayerParams {
            matmul: e * expert.matmul + shared.matmul + gates,
            other: e * expert.other + shared.other,
            idle_matmul: (e - k) * expert.matmul,
            idle_other: (e - k) * expert.other,
        }
    }
}

impl<B: Backend> ChannelMixing<B> for Moe<B> {
    fn build(cfg: &ModelConfig, resid_std: f64, rng: &mut Rng, device: &B::Device) -> Self {
        Moe::new(cfg, resid_std, rng, device)
    }

    fn forward(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Option<MoeAux<B>>) {
        let out = Moe::forward(self, x);
        (out.y, Some(out.aux))
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        Moe::linears_mut(self)
    }
}

/// The discrete routing decision for `n` tokens: which experts each token chose, which of
/// those assignments were kept, and the unweighted auxiliary losses computed alongside.
#[derive(Clone, Debug)]
pub struct RoutingPlan {
    pub n_tokens: usize,
    pub n_experts: usize,
    pub top_k: usize,
    /// `[n, k]`, best first; ties go to the lower expert index.
    pub choices: Vec<usize>,
    /// `[n, k]`: false where the capacity limit dropped the assignment.
    pub kept: Vec<bool>,
    pub stats: RoutingStats,
}

impl RoutingPlan {
    /// Routes `n` tokens given their router logits (`[n, E]`, row-major), with at most
    /// `capacity` assignments per expert.
    ///
    /// Capacity is filled in token order, all k choices of a token before the next token.
    /// GShard fills every token's first choice before any second choice, but then whether
    /// token t keeps its second expert depends on the *later* tokens of its own sequence,
    /// which would leak the future into a causal language model during training.
    pub fn new(logits: &[f64], n: usize, n_experts: usize, top_k: usize, capacity: Option<usize>) -> Self {
        assert_eq!(logits.len(), n * n_experts, "router logits must be [tokens, experts]");
        let route = HostRoute::new(logits, n_experts, top_k);
        // Filling in token order, an assignment fits exactly when fewer than `capacity`
        // earlier ones went to its expert: its position is below the capacity.
        let kept: Vec<bool> = route.positions.iter().map(|&p| capacity.is_none_or(|c| p < c)).collect();
        let mut prob_sum = vec![0.0f64; n_experts];
        let mut z_sum = 0.0;
        for row in logits.chunks(n_experts) {
            // Softmax (for P_e of the balancing loss) and logsumexp (for the z-loss), in f64.
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|&l| (l - max).exp()).sum();
            for (p, &l) in prob_sum.iter_mut().zip(row) {
                *p += (l - max).exp() / sum;
            }
            z_sum += (max + sum.ln()).powi(2);
        }
        // Switch eq. 4 / Mixtral: E · Σ_e f_e · P_e, with f_e the fraction of tokens that chose
        // e among their top k (Σ_e f_e = k) and P_e the mean router probability of e.
        let nf = n.max(1) as f64;
        let routed: Vec<u64> = route.counts.iter().map(|&c| c as u64).collect();
        let balance = n_experts as f64
            * routed.iter().zip(&prob_sum).map(|(&c, &p)| (c as f64 / nf) * (p / nf)).sum::<f64>();
        let dropped = kept.iter().filter(|k| !**k).count() as u64;
        let stats = RoutingStats {
            tokens: n as u64,
            routed,
            dropped,
            balance_loss_sum: balance,
            z_loss_sum: z_sum / nf,
            passes: 1,
        };
        Self { n_tokens: n, n_experts, top_k, choices: route.choices, kept, stats }
    }

    /// Kept assignments (`token · k + slot`) grouped by expert, tokens ascending within each
    /// group, and the size of each group: the permutation of the grouped dispatch.
    pub fn grouped_assignments(&self) -> (Vec<usize>, Vec<usize>) {
        let mut groups = vec![Vec::new(); self.n_experts];
        for (a, (&e, &kept)) in self.choices.iter().zip(&self.kept).enumerate() {
            if kept {
                groups[e].push(a);
            }
        }
        let sizes = groups.iter().map(Vec::len).collect();
        (groups.concat(), sizes)
    }

    /// Fraction of tokens each expert was chosen for (`f_e`, Σ = k), as the balancing loss uses.
    fn routed_fraction(&self) -> Vec<f64> {
        let n = self.n_tokens.max(1) as f64;
        self.stats.routed.iter().map(|&c| c as f64 / n).collect()
    }
}

/// Capacity per expert: `ceil(factor · n · k / E)` (Switch eq. 3), at least 1.
pub fn expert_capacity(factor: f64, n_tokens: usize, top_k: usize, n_experts: usize) -> usize {
    ((factor * (n_tokens * top_k) as f64 / n_experts as f64).ceil() as usize).max(1)
}

impl<B: Backend> Moe<B> {
    /// `resid_std` initialises the experts' output projections, which write into the residual.
    pub fn new(cfg: &ModelConfig, resid_std: f64, rng: &mut Rng, device: &B::Device) -> Self {
        let c = &cfg.moe;
        let (d, std) = (cfg.d_model, cfg.init_std);
        let width = c.expert_width(cfg.d_ff);
        let router = Linear::new(d, c.n_experts, false, std, rng, device);
        let experts = (0..c.n_experts).map(|_| Mlp::new(cfg, width, resid_std, rng, device)).collect();
        let shared_expert =
            (c.shared_expert_d_ff > 0).then(|| Mlp::new(cfg, c.shared_expert_d_ff, resid_std, rng, device));
        let shared_expert_gate = c.shared_expert_gate.then(|| Linear::new(d, 1, false, std, rng, device));
        Self {
            router,
            experts,
            shared_expert,
            shared_expert_gate,
            top_k: c.top_k,
            renormalize: c.renormalize,
            capacity_factor: c.capacity_factor,
            jitter: c.jitter,
            balance_coef: c.balance_coef,
            z_loss_coef: c.z_loss_coef,
        }
    }

    /// The batched dispatch where the backend routes on the device, the grouped one otherwise.
    pub fn forward(&self, x: Tensor<B, 3>) -> MoeOutput<B> {
        let dispatch = if B::FUSED_MOE_ROUTE { Dispatch::Batched } else { Dispatch::Grouped };
        self.forward_with(x, dispatch)
    }

    /// # Shapes
    /// - x: `[b, t, d]` → y `[b, t, d]`
    pub fn forward_with(&self, x: Tensor<B, 3>, dispatch: Dispatch) -> MoeOutput<B> {
        let [b, t, d] = x.dims();
        let n = b * t;
        let device = x.device();
        let tokens = x.reshape([n, d]);
        // Jitter and the capacity limit belong to training, like dropout.
        let training = B::ad_enabled(&device);
        let router_input = if training && self.jitter > 0.0 {
            let noise = Distribution::Uniform(1.0 - self.jitter, 1.0 + self.jitter);
            tokens.clone() * Tensor::random([n, d], noise, &device)
        } else {
            tokens.clone()
        };
        let logits = self.router.forward(router_input);
        let e = self.experts.len();
        let capacity = (training && self.capacity_factor > 0.0)
            .then(|| expert_capacity(self.capacity_factor, n, self.top_k, e));
        let probs = softmax(logits.clone(), 1);

        // `chosen`: the fraction of tokens that chose each expert (`f_e` of the balancing loss).
        let (mut y, balance, z, routing) = match dispatch {
            Dispatch::Batched => {
                let (y, counts) = self.batched(tokens.clone(), logits.clone(), probs.clone(), capacity);
                let chosen = counts.clone().float().reshape([1, e]) / n as f64;
                let (balance, z) = aux_terms(logits, probs, over_the_batch(chosen));
                let (balance_value, z_value) = (balance.clone().detach(), z.clone().detach());
                let routing =
                    Routing::Device { tokens: n, counts, capacity, balance: balance_value, z: z_value };
                (y, balance, z, routing)
            }
            Dispatch::Grouped | Dispatch::DenseMasked => {
                let host_logits: Vec<f64> =
                    logits.clone().into_data().convert::<f64>().into_vec().expect("float logits");
                let plan = RoutingPlan::new(&host_logits, n, e, self.top_k, capacity);
                let choices = index_tensor::<B, 2>(&plan.choices, [n, plan.top_k], &device);
                let gates = self.gate_weights(probs.clone(), choices);
                let y = match dispatch {
                    Dispatch::Grouped => self.grouped(tokens.clone(), gates, &plan),
                    _ => self.dense_masked(tokens.clone(), gates, &plan),
                };
                let chosen = float_tensor(TensorData::new(plan.routed_fraction(), [1, e]), &device);
                let (balance, z) = aux_terms(logits, probs, over_the_batch(chosen));
                (y, balance, z, Routing::Host(plan.stats))
            }
        };
        if let Some(shared) = &self.shared_expert {
            let out = shared.forward(tokens.clone());
            y = y + match &self.shared_expert_gate {
                Some(gate) => out * sigmoid(gate.forward(tokens)),
                None => out,
            };
        }
        let aux_loss = balance * self.balance_coef + z * self.z_loss_coef;
        MoeOutput { y: y.reshape([b, t, d]), aux: MoeAux { aux_loss, routing } }
    }

    /// `[n, k]`: the router probabilities of each token's chosen experts (`choices` `[n, k]`),
    /// renormalised to sum to 1 for k ≥ 2 when configured. Differentiable: this is how the LM
    /// loss trains the router.
    fn gate_weights(&self, probs: Tensor<B, 2>, choices: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let w = probs.gather(1, choices);
        if self.renormalize && self.top_k > 1 { w.clone() / w.sum_dim(1) } else { w }
    }

    /// Routes on the device, scatters each kept assignment into its expert's slots of one
    /// `[E · rows, d]` buffer, runs every expert at once on its `rows` slots, and gathers the
    /// outputs back, weighted. Returns `y` `[n, d]` and the assignments per expert (`[E]`).
    ///
    /// `rows` is the capacity when one is set. Dropless, it is the largest expert's count
    /// (read back: E integers) rounded up to a multiple of 8, so that only a few distinct
    /// matmul shapes reach the autotuner; the empty slots are zero rows whose outputs are
    /// never read.
    fn batched(
        &self,
        tokens: Tensor<B, 2>,
        logits: Tensor<B, 2>,
        probs: Tensor<B, 2>,
        capacity: Option<usize>,
    ) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
        let [n, d] = tokens.dims();
        let (e, k, m) = (self.experts.len(), self.top_k, n * self.top_k);
        let (device, dtype) = (tokens.device(), tokens.dtype());
        let (choices, positions, counts) = kernels::moe_route(logits, k);
        let rows = capacity.unwrap_or_else(|| {
            let largest: i64 = counts.clone().max().into_scalar().elem();
            (largest.max(1) as usize).next_multiple_of(8)
        });
        // Slot `expert · rows + position` for a kept assignment; the extra row `E · rows`
        // collects the dropped ones, and is never read.
        let dropped_slot = (e * rows) as i64;
        let dropped = positions.clone().greater_equal_elem(rows as i64);
        let slots = (choices.clone().reshape([m]).mul_scalar(rows as i64) + positions)
            .mask_fill(dropped, dropped_slot);
        let assigned = tokens.unsqueeze_dim::<3>(1).expand([n, k, d]).reshape([m, d]);
        let buffer = Tensor::zeros([e * rows + 1, d], (&device, dtype)).select_assign(
            0,
            slots.clone(),
            assigned,
            IndexingUpdateOp::Add,
        );
        let expert_in = buffer.narrow(0, 0, e * rows).reshape([e, rows, d]);
        let expert_out = Mlp::forward_stacked(&self.experts, expert_in).reshape([e * rows, d]);
        // A dropped assignment reads a zero row: it adds nothing and its gate gets no gradient.
        let expert_out = Tensor::cat(vec![expert_out, Tensor::zeros([1, d], (&device, dtype))], 0);
        let gates = self.gate_weights(probs, choices);
        let weighted = expert_out.select(0, slots).reshape([n, k, d]) * gates.unsqueeze_dim::<3>(2);
        (weighted.sum_dim(1).reshape([n, d]), counts)
    }

    /// Gathers each expert's tokens, runs the expert once on them, scatters the weighted
    /// results back (summing a token's k contributions).
    fn grouped(&self, tokens: Tensor<B, 2>, gates: Tensor<B, 2>, plan: &RoutingPlan) -> Tensor<B, 2> {
        let [n, d] = tokens.dims();
        let device = tokens.device();
        let (assignments, sizes) = plan.grouped_assignments();
        let out = Tensor::zeros([n, d], (&device, tokens.dtype()));
        if assignments.is_empty() {
            return out;
        }
        let token_of: Vec<usize> = assignments.iter().map(|a| a / plan.top_k).collect();
        let mut outputs = Vec::new();
        let mut start = 0;
        for (expert, &size) in self.experts.iter().zip(&sizes) {
            if size > 0 {
                let ids = index_tensor::<B, 1>(&token_of[start..start + size], [size], &device);
                outputs.push(expert.forward(tokens.clone().select(0, ids)));
            }
            start += size;
        }
        let m = assignments.len();
        let weights =
            gates.reshape([n * plan.top_k]).select(0, index_tensor::<B, 1>(&assignments, [m], &device));
        let weighted = Tensor::cat(outputs, 0) * weights.unsqueeze_dim(1);
        out.select_assign(0, index_tensor::<B, 1>(&token_of, [m], &device), weighted, IndexingUpdateOp::Add)
    }

    /// The reference: every expert on every token, mixed by an `[n, E]` combine matrix.
    fn dense_masked(&self, tokens: Tensor<B, 2>, gates: Tensor<B, 2>, plan: &RoutingPlan) -> Tensor<B, 2> {
        let (n, k, e) = (plan.n_tokens, plan.top_k, plan.n_experts);
        let device = tokens.device();
        // mask[token, slot, expert] = 1 where the slot chose that expert and was kept.
        let mut mask = vec![0.0f64; n * k * e];
        for (a, (&expert, &kept)) in plan.choices.iter().zip(&plan.kept).enumerate() {
            if kept {
                mask[a * e + expert] = 1.0;
            }
        }
        let mask: Tensor<B, 3> = float_tensor(TensorData::new(mask, [n, k, e]), &device);
        let combine = (gates.unsqueeze_dim::<3>(2) * mask).sum_dim(1).reshape([n, e]);
        let mut y = Tensor::zeros(tokens.dims(), (&device, tokens.dtype()));
        for (i, expert) in self.experts.iter().enumerate() {
            y = y + expert.forward(tokens.clone()) * combine.clone().narrow(1, i, 1);
        }
        y
    }

    /// Every linear layer that may run in bf16. The router stays fp32: small logit errors
    /// flip top-k choices (Switch's "selective precision").
    pub fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        self.experts.iter_mut().chain(self.shared_expert.as_mut()).flat_map(Mlp::linears_mut).collect()
    }
}

/// The unweighted auxiliary losses `(E · Σ_e f_e · P_e, mean(logsumexp(logits)²))`, each
/// `[1]`, given `chosen` (`f_e`, `[1, E]`, a constant from the discrete choices). The
/// gradient reaches the router through `P_e` and through the logits of the z-loss.
/// The fraction of tokens routed to each expert (`[1, E]`) over the whole batch: in data
/// parallel, each peer's layer sees its shard only, and the peers average their fractions
/// (equal shards, so the mean is the batch's fraction); on one device, `chosen` itself.
fn over_the_batch<B: Backend>(chosen: Tensor<B, 2>) -> Tensor<B, 2> {
    if !crate::train::data_parallel::in_peer() {
        return chosen;
    }
    let shape = chosen.dims();
    let values: Vec<f32> = chosen.clone().into_data().convert::<f32>().into_vec().expect("float fractions");
    let mean = crate::train::data_parallel::mean_over_peers(values);
    float_tensor(TensorData::new(mean, shape), &chosen.device())
}

fn aux_terms<B: Backend>(
    logits: Tensor<B, 2>,
    probs: Tensor<B, 2>,
    chosen: Tensor<B, 2>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let e = logits.dims()[1];
    let balance = (probs.mean_dim(0) * chosen).sum() * e as f64;
    let max = logits.clone().detach().max_dim(1);
    let lse = (logits - max.clone()).exp().sum_dim(1).log() + max;
    (balance, lse.powf_scalar(2.0).mean())
}

fn index_tensor<B: Backend, const D: usize>(
    ids: &[usize],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D, Int> {
    int_tensor(ids.iter().map(|&i| i as i64).collect(), shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_picks_the_largest_logits_and_ties_go_to_the_lower_expert() {
        let logits = [0.1, 0.9, 0.5, 0.9, /* token 1 */ 2.0, -1.0, 0.0, 1.0];
        let plan = RoutingPlan::new(&logits, 2, 4, 2, None);
        assert_eq!(plan.choices, vec![1, 3, 0, 3]);
        assert!(plan.kept.iter().all(|k| *k));
        assert_eq!(plan.stats.routed, vec![1, 1, 0, 2]);
    }

    #[test]
    fn signed_zeros_tie_and_positions_count_earlier_assignments() {
        // Token 0: −0 and +0 tie at the top, so the lower index (−0 at expert 0) goes first.
        let logits = [-0.0, 0.0, -1.0, /* token 1 */ 0.0, 2.0, 1.0];
        let route = HostRoute::new(&logits, 3, 2);
        assert_eq!(route.choices, vec![0, 1, 1, 2]);
        assert_eq!(route.positions, vec![0, 0, 1, 0]);
        assert_eq!(route.counts, vec![1, 2, 1]);
    }

    #[test]
    fn capacity_is_filled_in_token_order_and_drops_are_counted() {
        // Four tokens all preferring expert 0, then expert 1; capacity 2 per expert.
        let logits: Vec<f64> = (0..4).flat_map(|_| [3.0, 2.0, 0.0]).collect();
        let plan = RoutingPlan::new(&logits, 4, 3, 2, Some(2));
        assert_eq!(plan.choices, vec![0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(plan.kept, vec![true, true, true, true, false, false, false, false]);
        assert_eq!(plan.stats.dropped, 4);
        assert_eq!(plan.stats.dropped_fraction(), 0.5);
        let (assignments, sizes) = plan.grouped_assignments();
        assert_eq!(assignments, vec![0, 2, 1, 3]);
        assert_eq!(sizes, vec![2, 2, 0]);
    }

    #[test]
    fn capacity_follows_switch() {
        assert_eq!(expert_capacity(1.0, 64, 2, 8), 16);
        assert_eq!(expert_capacity(1.25, 10, 1, 4), 4); // ceil(3.125)
        assert_eq!(expert_capacity(1.0, 1, 1, 8), 1);
    }

    /// The balancing loss equals k at an even load with uniform probabilities, and grows when
    /// the load concentrates (Switch eq. 4; HF `load_balancing_loss_func`).
    #[test]
    fn balance_loss_is_k_when_even_and_larger_when_skewed() {
        let even: Vec<f64> = vec![0.0; 4 * 4];
        let plan = RoutingPlan::new(&even, 4, 4, 1, None);
        // Uniform logits all tie → everyone picks expert 0: f = (1,0,0,0), P = 1/4 each → 1.
        assert!((plan.stats.balance_loss_sum - 1.0).abs() < 1e-12);
        let diagonal: Vec<f64> =
            (0..4).flat_map(|t| (0..4).map(move |e| if e == t { 5.0 } else { 0.0 })).collect();
        let plan = RoutingPlan::new(&diagonal, 4, 4, 1, None);
        assert!((plan.stats.balance_loss_sum - 1.0).abs() < 1e-12, "{}", plan.stats.balance_loss_sum);
        let skewed: Vec<f64> = (0..4).flat_map(|_| [5.0, 0.0, 0.0, 0.0]).collect();
        let plan = RoutingPlan::new(&skewed, 4, 4, 1, None);
        assert!(plan.stats.balance_loss_sum > 3.5, "{}", plan.stats.balance_loss_sum);
        assert_eq!(plan.stats.load_entropy(), 0.0);
    }

    #[test]
    fn z_loss_is_the_mean_squared_logsumexp() {
        let logits = [0.0, 0.0, 1.0, -1.0];
        let plan = RoutingPlan::new(&logits, 2, 2, 1, None);
        let lse0 = 2f64.ln();
        let lse1 = (1f64.exp() + (-1f64).exp()).ln();
        assert!((plan.stats.z_loss_sum - (lse0 * lse0 + lse1 * lse1) / 2.0).abs() < 1e-12);
    }
}
