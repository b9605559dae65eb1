//! The language model: token ids → embeddings → blocks → final norm → logits.

use crate::kernels::Backend;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{DType, Int, Tensor};

use super::block::{Block, LayerState, Residual};
use super::config::{ModelConfig, Positions};
use super::layers::{Embedding, Linear, Norm, int_tensor, normal_param};
use super::mixer::Diagnostic;
use super::moe::{MoeAux, Routing, RoutingStats};
use crate::data::batcher::TokenBatch;
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct LanguageModel<B: Backend> {
    pub embed_tokens: Embedding<B>,
    /// Learned absolute positions (GPT-2); `None` with RoPE.
    pub embed_positions: Option<Embedding<B>>,
    pub layers: Vec<Block<B>>,
    /// Hymba's learned meta tokens `[m, d]`, prepended to every sequence before the first
    /// layer (their outputs are dropped); `None` without.
    pub meta_tokens: Option<Param<Tensor<B, 2>>>,
    pub norm: Norm<B>,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    pub dropout: Dropout,
    pub bf16: bool,
}

/// The training objective of one batch, with its parts.
pub struct Objective<B: Backend> {
    /// What the optimizer minimises: `ce` plus the mean over MoE layers of their weighted
    /// auxiliary losses (`ce` alone for a model without MoE layers).
    pub loss: Tensor<B, 1>,
    /// Mean next-token cross-entropy, the number to compare across models.
    pub ce: Tensor<B, 1>,
    /// The auxiliary part, `loss − ce`; `None` without MoE layers.
    pub aux: Option<Tensor<B, 1>>,
    /// Routing of each MoE layer, `(layer index, routing)`; on the device until read
    /// ([`Objective::routing_stats`]).
    pub routing: Vec<(usize, Routing<B>)>,
}

impl<B: Backend> Objective<B> {
    /// Routing counts of each MoE layer, `(layer index, stats)`, read to the host (a sync
    /// when the routing ran on the device: read them after the step's loss).
    pub fn routing_stats(&self) -> Vec<(usize, RoutingStats)> {
        self.routing.iter().map(|(layer, r)| (*layer, r.stats())).collect()
    }
}

/// Decoding state of the whole model: one entry per layer, plus each sequence's next position.
#[derive(Clone, Debug)]
pub struct DecodeState<B: Backend> {
    pub layers: Vec<LayerState<B>>,
    /// Tokens each sequence (row) has seen. Empty until the first tokens arrive.
    pub seen: Vec<usize>,
}

impl<B: Backend> DecodeState<B> {
    /// Sequences in the batch (0 before the first tokens).
    pub fn rows(&self) -> usize {
        self.seen.len()
    }

    /// Several prefilled sequences' states as one batch, their rows in order, so that they
    /// decode together; they may have seen different numbers of tokens.
    ///
    /// # Panics
    /// If `states` is empty or a state has not been prefilled.
    pub fn stack(states: Vec<Self>) -> Self {
        assert!(states.iter().all(|s| s.rows() > 0), "decoding states stacked before their prefill");
        let seen = states.iter().flat_map(|s| s.seen.iter().copied()).collect();
        let mut per_layer: Vec<Vec<LayerState<B>>> = Vec::new();
        for state in states {
            per_layer.resize_with(state.layers.len(), Vec::new);
            for (l, layer) in state.layers.into_iter().enumerate() {
                per_layer[l].push(layer);
            }
        }
        Self { layers: per_layer.into_iter().map(LayerState::stack).collect(), seen }
    }

    /// Rows `rows` of a batched state, in that order: the sequences that go on decoding.
    pub fn select(self, rows: &[usize]) -> Self {
        Self {
            seen: rows.iter().map(|&r| self.seen[r]).collect(),
            layers: self.layers.into_iter().map(|l| l.select(rows)).collect(),
        }
    }
}

impl<B: Backend> LanguageModel<B> {
    /// Builds the model with weights drawn from `seed` (see `init` for the policy).
    ///
    /// # Panics
    /// If `cfg.vocab_size` is 0 (resolve it from the tokenizer first).
    pub fn new(cfg: &ModelConfig, seed: u64, bf16: bool, device: &B::Device) -> Self {
        assert!(cfg.vocab_size > 0, "model.vocab_size must be resolved before building the model");
        let std = cfg.init_std;
        let mut model = Self {
            embed_tokens: Embedding::new(
                cfg.vocab_size,
                cfg.d_model,
                std,
                &mut Rng::fork(seed, "init/embed"),
                device,
            ),
            embed_positions: (cfg.positions == Positions::Learned).then(|| {
                Embedding::new(
                    cfg.max_seq_len,
                    cfg.d_model,
                    std,
                    &mut Rng::fork(seed, "init/positions"),
                    device,
                )
            }),
            layers: (0..cfg.n_layers).map(|i| Block::new(cfg, i, seed, device)).collect(),
            meta_tokens: (cfg.hymba.meta_tokens > 0).then(|| {
                normal_param(
                    [cfg.hymba.meta_tokens, cfg.d_model],
                    std,
                    &mut Rng::fork(seed, "init/meta_tokens"),
                    device,
                )
            }),
            norm: Norm::new(cfg.norm, cfg.d_model, cfg.bias, cfg.norm_eps, device),
            lm_head: (!cfg.tie_embeddings).then(|| {
                Linear::new(
                    cfg.d_model,
                    cfg.vocab_size,
                    false,
                    std,
                    &mut Rng::fork(seed, "init/lm_head"),
                    device,
                )
            }),
            dropout: DropoutConfig::new(cfg.dropout).init(),
            bf16: false,
        };
        if bf16 {
            model = model.with_bf16_matmuls();
        }
        model
    }

    /// Switches every linear layer (and the head) to bf16 matmuls with fp32 master weights,
    /// and each sequence mixer's own matmuls as its precision policy says
    /// ([`super::mixer::SequenceMixer::use_bf16_matmuls`]).
    pub fn with_bf16_matmuls(mut self) -> Self {
        self.bf16 = true;
        for layer in &mut self.layers {
            layer.mixer.use_bf16_matmuls();
            for lin in layer.ffn.as_mut().map(|f| f.mixer.linears_mut()).unwrap_or_default() {
                lin.bf16 = true;
            }
        }
        if let Some(head) = &mut self.lm_head {
            head.bf16 = true;
        }
        self
    }

    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    /// Token (and learned position) embeddings of `ids` at positions `start..`, with dropout.
    pub fn embed(&self, ids: Tensor<B, 2, Int>, start: usize) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        let x = self.embed_tokens.forward(ids);
        let x = match &self.embed_positions {
            Some(pos) => {
                let d = x.dims()[2];
                let table = pos.weight.val().narrow(0, start, t).reshape([1, t, d]);
                x + table
            }
            None => x,
        };
        self.dropout.forward(x)
    }

    /// [`Self::embed`] with each row's tokens at their own positions `starts[row]..`.
    fn embed_at(&self, ids: Tensor<B, 2, Int>, starts: &[usize]) -> Tensor<B, 3> {
        match &self.embed_positions {
            Some(pos) if starts.iter().any(|&s| s != starts[0]) => {
                let [b, t] = ids.dims();
                let x = self.embed_tokens.forward(ids);
                let d = x.dims()[2];
                let positions: Vec<usize> = starts.iter().flat_map(|&s| s..s + t).collect();
                let index = super::mixer::row_indices::<B>(&positions, &x.device());
                self.dropout.forward(x + pos.weight.val().select(0, index).reshape([b, t, d]))
            }
            _ => self.embed(ids, starts[0]),
        }
    }

    /// Final norm and output projection: fp32 logits.
    fn head(&self, x: Residual<B>) -> Tensor<B, 3> {
        let logits = self.head_logits(x);
        if self.bf16 { logits.cast(DType::F32) } else { logits }
    }

    /// [`Self::head`] in the compute dtype: bf16 logits under bf16, for the loss, whose fused
    /// kernel reads them as they are (an fp32 copy would be the step's largest tensor).
    pub fn head_logits(&self, x: Residual<B>) -> Tensor<B, 3> {
        let (_, x) = x.add_norm(&self.norm);
        match &self.lm_head {
            Some(head) => head.forward_compute_dtype(x),
            None => {
                // Tied: logits = x · Eᵀ.
                let w = self.embed_tokens.weight.val().transpose();
                super::layers::rows_times(x, |rows| super::layers::matmul(rows, w, self.bf16))
            }
        }
    }

    /// # Shapes
    /// - ids: `[b, t]` → logits `[b, t, vocab]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let (x, _) = self.blocks(self.embed(ids, 0), true);
        self.head(x)
    }

    /// The layer stack on embedded tokens, with the meta tokens in front when `fresh` (a new
    /// sequence) and dropped again after; also returns each MoE layer's auxiliary output.
    fn blocks(&self, x: Tensor<B, 3>, fresh: bool) -> (Residual<B>, Vec<(usize, MoeAux<B>)>) {
        let t = x.dims()[1];
        let (x, m) = self.with_meta_tokens(x, fresh);
        let mut x = Residual::new(x);
        let mut aux = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (y, a) = layer.forward_residual(x);
            x = y;
            if let Some(a) = a {
                aux.push((i, a));
            }
        }
        (if m > 0 { x.narrow(m, t) } else { x }, aux)
    }

    /// `x` with the meta tokens in front when `fresh` (a new sequence), and their number.
    pub fn with_meta_tokens(&self, x: Tensor<B, 3>, fresh: bool) -> (Tensor<B, 3>, usize) {
        match self.meta_tokens.as_ref().filter(|_| fresh) {
            Some(meta) => {
                let [b, _, d] = x.dims();
                let m = meta.dims()[0];
                (Tensor::cat(vec![meta.val().unsqueeze::<3>().expand([b, m, d]), x], 1), m)
            }
            None => (x, 0),
        }
    }

    /// What every layer's sequence mixer reports about itself, read to the host
    /// ([`super::mixer::SequenceMixer::diagnostics`]).
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.layers.iter().enumerate().flat_map(|(i, l)| l.mixer.diagnostics(i)).collect()
    }

    /// Mean next-token cross-entropy (nats per token): the evaluation loss.
    ///
    /// # Shapes
    /// - ids, targets: `[b, t]` → `[1]`
    pub fn loss(&self, ids: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        cross_entropy(self.forward(ids), targets)
    }

    /// The training objective: cross-entropy plus the MoE layers' auxiliary losses. The
    /// auxiliary losses are averaged over MoE layers, so their coefficients do not depend on
    /// depth (Switch and Mixtral each weight one loss term; HF pools all layers into one).
    pub fn objective(&self, ids: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Objective<B> {
        self.objective_masked(ids, targets, None)
    }

    /// [`Self::objective`] with the cross-entropy averaged over the positions where `mask`
    /// (`[b, t]`, 1 or 0) is 1 only: a synthetic task's answers.
    pub fn objective_masked(
        &self,
        ids: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
        mask: Option<Tensor<B, 2>>,
    ) -> Objective<B> {
        let (x, moe) = self.blocks(self.embed(ids, 0), true);
        let ce = objective_ce(self.head_logits(x), targets, mask);
        let (aux_terms, routing): (Vec<_>, Vec<_>) =
            moe.into_iter().map(|(i, a)| (a.aux_loss, (i, a.routing))).unzip();
        let aux = (!aux_terms.is_empty()).then(|| Tensor::cat(aux_terms, 0).mean());
        let loss = match &aux {
            Some(a) => ce.clone() + a.clone(),
            None => ce.clone(),
        };
        Objective { loss, ce, aux, routing }
    }

    /// An empty decoding state (nothing seen yet).
    pub fn decode_state(&self) -> DecodeState<B> {
        DecodeState { layers: self.layers.iter().map(|l| l.mixer.empty_state()).collect(), seen: Vec::new() }
    }

    /// Runs new tokens through the model given the state of the tokens before them; returns
    /// their logits. A prompt is one call (prefill); each generated token is one more call,
    /// costing O(t) attention work instead of a full re-forward. The rows of a stacked state
    /// ([`DecodeState::stack`]) each continue at their own position.
    ///
    /// # Shapes
    /// - ids: `[b, t_new]` → logits `[b, t_new, vocab]`
    ///
    /// # Panics
    /// If `state` holds another number of sequences than `ids`.
    pub fn forward_step(&self, ids: Tensor<B, 2, Int>, state: &mut DecodeState<B>) -> Tensor<B, 3> {
        let [b, t] = ids.dims();
        let fresh = state.seen.is_empty();
        if fresh {
            state.seen = vec![0; b];
        }
        assert_eq!(state.rows(), b, "the decoding state holds {} sequences, the input {b}", state.rows());
        // A new sequence starts with the meta tokens, which fill the layers' state like a prompt.
        let (x, m) = self.with_meta_tokens(self.embed_at(ids, &state.seen), fresh);
        let mut x = Residual::new(x);
        for (layer, layer_state) in self.layers.iter().zip(state.layers.iter_mut()) {
            x = layer.forward_step(x, layer_state);
        }
        state.seen.iter_mut().for_each(|s| *s += t);
        self.head(if m > 0 { x.narrow(m, t) } else { x })
    }
}

/// The cross-entropy part of the training objective: over every position, or over the
/// positions where `mask` is 1.
pub fn objective_ce<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: Option<Tensor<B, 2>>,
) -> Tensor<B, 1> {
    match mask {
        Some(mask) => masked_cross_entropy(logits, targets, mask),
        None => cross_entropy(logits, targets),
    }
}

/// Mean cross-entropy of `logits` (`[b, t, v]`, any float dtype) against `targets` (`[b, t]`).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    rows_nll(logits, targets).mean()
}

/// Mean cross-entropy over the positions where `mask` (`[b, t]`, 1 or 0) is 1.
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [b, t, _] = logits.dims();
    let mask = mask.reshape([b * t]);
    (rows_nll(logits, targets) * mask.clone()).sum() / mask.sum().clamp_min(1.0)
}

/// Every position's negative log-likelihood, `[b · t]`, through the fused kernel where the
/// backend has one.
fn rows_nll<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    crate::kernels::cross_entropy(logits.reshape([b * t, v]), targets.reshape([b * t]))
}

/// An answer mask as a `[b, t]` float tensor of ones and zeros.
pub fn mask_tensor<B: Backend>(answer: &[bool], shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    let data: Vec<f32> = answer.iter().map(|&a| if a { 1.0 } else { 0.0 }).collect();
    crate::model::layers::float_tensor(burn::tensor::TensorData::new(data, shape), device)
}

/// Uploads a batch as `(inputs, targets)`, each `[b, t]`.
pub fn batch_tensors<B: Backend>(
    batch: &TokenBatch,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let shape = [batch.batch, batch.seq_len];
    (ids_tensor(&batch.inputs, shape, device), ids_tensor(&batch.targets, shape, device))
}

/// Token ids as an int tensor of the given shape.
pub fn ids_tensor<B: Backend>(ids: &[u32], shape: [usize; 2], device: &B::Device) -> Tensor<B, 2, Int> {
    int_tensor(ids.iter().map(|&i| i as i64).collect(), shape, device)
}
