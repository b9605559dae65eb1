//! Activation checkpointing (`train.activation_checkpointing`): each block's activations are
//! recomputed in the backward pass instead of being kept from the forward pass.
//!
//! ```text
//! forward, untracked:  x₀ = embed(ids) → h₁ = block₀(x₀) → … → h_L        keeps only h₀ … h_L
//! backward, per segment, last first:
//!   head:      loss(h_L)                  backward → ∂h_L, the head's gradients
//!   block i:   ⟨blockᵢ(hᵢ), ∂hᵢ₊₁⟩ + auxᵢ    backward → ∂hᵢ,  block i's gradients
//!   embed:     ⟨x₀, ∂h₀⟩                   backward → the embeddings' gradients
//! ```
//!
//! Peak memory holds the residual stream at every block boundary plus one block's activations,
//! instead of every block's activations; the price is one more forward pass of the blocks
//! (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost", with one segment per
//! block as in Megatron-LM's full recompute).
//!
//! Why per block rather than burn's checkpointing strategy: burn decides per operation
//! (memory-bound operations recomputed, compute-bound ones kept) for a whole backend type, so
//! it would keep every matmul's output, and turning it on means a second `Autodiff` backend type
//! whose training code is compiled again. This recompute works on any backend and for every
//! mixer, fused kernels included, because it only calls each block's ordinary forward.
//!
//! Both forward passes of a block must draw the same dropout masks and MoE router jitter: the
//! backend's generator is seeded per (step seed, segment) before each pass of a segment.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Int, Tensor};

use crate::kernels::{AutodiffBackend, Backend};
use crate::model::LanguageModel;
use crate::model::block::Residual;
use crate::model::lm::objective_ce;
use crate::model::moe::Routing;
use crate::rng::Rng;

/// What a recomputed backward pass reports besides its gradients (detached).
pub struct RecomputedObjective<B: AutodiffBackend> {
    /// Mean next-token cross-entropy.
    pub ce: Tensor<B, 1>,
    /// Mean over MoE layers of their weighted auxiliary losses; `None` without MoE layers.
    pub aux: Option<Tensor<B, 1>>,
    /// Routing of each MoE layer, `(layer index, routing)`.
    pub routing: Vec<(usize, Routing<B>)>,
}

/// How a micro-batch's loss counts in its step: divided by the step's `accum` micro-batches,
/// and, in data parallel, each part weighted by a peer's share: of the scored tokens for the
/// cross-entropy, of all tokens for the MoE auxiliary loss (1 each on one device, where the
/// weights are left out so that the arithmetic is the plain `loss / accum`).
#[derive(Clone, Copy, Debug)]
pub struct LossScale {
    pub accum: usize,
    pub ce_weight: f64,
    pub aux_weight: f64,
}

impl LossScale {
    /// One of `accum` micro-batches of a step, on one device.
    pub fn mean_of(accum: usize) -> Self {
        Self { accum, ce_weight: 1.0, aux_weight: 1.0 }
    }

    fn apply<B: Backend>(weight: f64, divisor: usize, x: Tensor<B, 1>) -> Tensor<B, 1> {
        let x = if weight == 1.0 { x } else { x.mul_scalar(weight) };
        x.div_scalar(divisor as f64)
    }

    pub fn ce<B: Backend>(&self, ce: Tensor<B, 1>) -> Tensor<B, 1> {
        Self::apply(self.ce_weight, self.accum, ce)
    }

    /// One of `n_moe` MoE layers' auxiliary losses (the objective takes their mean).
    pub fn aux<B: Backend>(&self, aux: Tensor<B, 1>, n_moe: usize) -> Tensor<B, 1> {
        Self::apply(self.aux_weight, self.accum * n_moe, aux)
    }
}

/// Runs the training objective (`LanguageModel::objective_masked`) and its backward pass with
/// every block recomputed, adding the gradients of the loss as `scale` counts it into
/// `grads`. `seed` decides the dropout masks and router jitter of this micro-batch.
pub fn backward_recomputed<B: AutodiffBackend>(
    model: &LanguageModel<B>,
    ids: Tensor<B, 2, Int>,
    targets: Tensor<B, 2, Int>,
    mask: Option<Tensor<B, 2>>,
    scale: LossScale,
    seed: u64,
    grads: &mut GradientsAccumulator<LanguageModel<B>>,
) -> RecomputedObjective<B> {
    let device = ids.device();
    let n_layers = model.layers.len();
    let seed_segment = |segment: usize| seed_segment::<B>(&device, seed, segment);
    let t = ids.dims()[1];

    // Forward: the embeddings with their graph (small: a gather, the meta tokens' concat),
    // then the blocks untracked, keeping only the stream at each block boundary.
    seed_segment(n_layers + 1);
    let (embedded, m) = model.with_meta_tokens(model.embed(ids, 0), true);
    let mut boundaries = Vec::with_capacity(n_layers + 1);
    let mut h = Residual::new(embedded.clone().detach());
    let mut n_moe = 0;
    for (i, layer) in model.layers.iter().enumerate() {
        seed_segment(i);
        let (next, aux) = layer.clone().no_grad().forward_residual(h.clone());
        n_moe += usize::from(aux.is_some());
        boundaries.push(h);
        h = next;
    }
    boundaries.push(h);

    // The head: the loss from the last boundary.
    seed_segment(n_layers);
    let (last, stream) = leaves(boundaries.pop().expect("one boundary per block, plus the last"));
    let ce = objective_ce(model.head_logits(if m > 0 { last.narrow(m, t) } else { last }), targets, mask);
    let mut upstream =
        backward_segment(model, scale.ce(ce.clone()), Some(&stream), grads).expect("the head has an input");

    // The blocks, last first: recompute, then back-propagate the stream's gradient through them.
    let mut aux_terms = Vec::with_capacity(n_moe);
    let mut routing = Vec::with_capacity(n_moe);
    for (i, layer) in model.layers.iter().enumerate().rev() {
        seed_segment(i);
        let (input, stream) = leaves(boundaries.pop().expect("one boundary per block"));
        let (output, aux) = layer.forward_residual(input);
        let mut surrogate = inner_product(output, upstream);
        if let Some(aux) = aux {
            surrogate = surrogate + scale.aux(aux.aux_loss.clone(), n_moe);
            aux_terms.push(aux.aux_loss.detach());
            routing.push((i, aux.routing));
        }
        upstream = backward_segment(model, surrogate, Some(&stream), grads).expect("a block has an input");
    }

    // The embeddings (and meta tokens), whose graph was kept from the forward pass.
    let surrogate = inner_product(Residual::new(embedded), upstream);
    backward_segment(model, surrogate, None, grads);

    routing.reverse();
    let aux = (!aux_terms.is_empty()).then(|| Tensor::cat(aux_terms, 0).mean());
    RecomputedObjective { ce: ce.detach(), aux, routing }
}

/// Seeds the backend's generator for one segment of a micro-batch drawn with `seed`: the
/// blocks are segments `0..n_layers`, the head `n_layers`, the embeddings `n_layers + 1`.
pub fn seed_segment<B: Backend>(device: &B::Device, seed: u64, segment: usize) {
    B::seed(device, Rng::fork(seed, &format!("segment{segment}")).next_u64());
}

/// A boundary's tensors as fresh leaves of the autodiff graph, whose gradients are the
/// stream's gradient at that boundary.
struct StreamLeaves<B: AutodiffBackend> {
    sum: Tensor<B, 3>,
    pending: Option<Tensor<B, 3>>,
}

/// The gradient of the objective with respect to a boundary's `sum` and `pending`, as
/// constants of the next segment's surrogate.
struct StreamGrad<B: AutodiffBackend> {
    sum: Tensor<B, 3>,
    pending: Option<Tensor<B, 3>>,
}

fn leaves<B: AutodiffBackend>(boundary: Residual<B>) -> (Residual<B>, StreamLeaves<B>) {
    let sum = boundary.sum.detach().require_grad();
    let pending = boundary.pending.map(|p| p.detach().require_grad());
    (Residual { sum: sum.clone(), pending: pending.clone() }, StreamLeaves { sum, pending })
}

/// `⟨output, ∂output⟩`, whose gradient with respect to the segment's inputs and weights is
/// the chain rule's next step.
fn inner_product<B: AutodiffBackend>(output: Residual<B>, grad: StreamGrad<B>) -> Tensor<B, 1> {
    let sum = (output.sum * grad.sum).sum();
    match (output.pending, grad.pending) {
        (Some(p), Some(g)) => sum + (p * g).sum(),
        (None, None) => sum,
        _ => unreachable!("a segment's output and its gradient have the same parts"),
    }
}

/// Back-propagates `objective` through one segment: adds the weights' gradients into `grads`
/// and returns the gradient at the segment's input boundary, if it has one.
fn backward_segment<B: AutodiffBackend>(
    model: &LanguageModel<B>,
    objective: Tensor<B, 1>,
    input: Option<&StreamLeaves<B>>,
    grads: &mut GradientsAccumulator<LanguageModel<B>>,
) -> Option<StreamGrad<B>> {
    let mut raw = objective.backward();
    let stream = input.map(|leaves| StreamGrad {
        sum: take_grad(&leaves.sum, &mut raw),
        pending: leaves.pending.as_ref().map(|p| take_grad(p, &mut raw)),
    });
    grads.accumulate(model, GradientsParams::from_grads(raw, model));
    stream
}

/// A leaf's gradient (zeros where the leaf did not reach the objective).
fn take_grad<B: AutodiffBackend>(leaf: &Tensor<B, 3>, raw: &mut B::Gradients) -> Tensor<B, 3> {
    match leaf.grad_remove(raw) {
        Some(g) => Tensor::from_inner(g),
        None => leaf.zeros_like(),
    }
}
