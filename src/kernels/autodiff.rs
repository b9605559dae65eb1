//! `Autodiff<B>`: a fused kernel of `B` becomes one node of the autodiff graph whose backward
//! is `B`'s backward kernel; without a kernel, autodiff differentiates the plain-ops twin.

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, broadcast_shape};
use burn::tensor::TensorMetadata;
use burn::tensor::ops::{FloatTensor, IntTensor};
use std::sync::Arc;

use super::{
    Backend, DeltaChunkOperands, ScanOperands, SsdOperands, plain_add_rms_norm, plain_causal_attention,
    plain_causal_conv, plain_cross_entropy, plain_delta_chunks, plain_gated_rms_norm, plain_rms_norm,
    plain_rope, plain_selective_scan, plain_silu, plain_ssd_scan, plain_state_passing, plain_ut_transform,
};

impl<B: Backend, C: CheckpointStrategy> Backend for Autodiff<B, C> {
    const FUSED_SCAN: bool = B::FUSED_SCAN;

    fn selective_scan(s: ScanOperands<Self>, chunk: usize) -> FloatTensor<Self> {
        if !B::FUSED_SCAN {
            return plain_selective_scan::<Self>(s, chunk);
        }
        let parents =
            [s.x.node.clone(), s.delta.node.clone(), s.a.node.clone(), s.b.node.clone(), s.c.node.clone()];
        let inner = ScanOperands::<B> {
            x: s.x.primitive,
            delta: s.delta.primitive,
            a: s.a.primitive,
            b: s.b.primitive,
            c: s.c.primitive,
        };
        // Compute-bound: under gradient checkpointing the node keeps its state rather than
        // running the scan again.
        match ScanBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, checkpoints) = B::selective_scan_saving(inner.clone());
                prep.finish((inner, checkpoints), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selective_scan(inner, chunk)),
        }
    }

    const FUSED_SILU: bool = B::FUSED_SILU;

    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !B::FUSED_SILU {
            return plain_silu::<Self>(x);
        }
        match SiluBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::silu(x.primitive.clone());
                prep.finish(x.primitive, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::silu(x.primitive)),
        }
    }

    fn contiguous(mut x: FloatTensor<Self>) -> FloatTensor<Self> {
        // The same values under the same node: only their layout changes.
        x.primitive = B::contiguous(x.primitive);
        x
    }

    const FUSED_ROPE: bool = B::FUSED_ROPE;

    fn rope(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        if !B::FUSED_ROPE {
            return plain_rope::<Self>(x, cos, sin);
        }
        // The tables are constants: the node's only parent is `x`.
        match RopeBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::rope(x.primitive, cos.primitive.clone(), sin.primitive.clone());
                prep.finish((cos.primitive, sin.primitive), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rope(x.primitive, cos.primitive, sin.primitive)),
        }
    }

    const FUSED_SSD_SCAN: bool = B::FUSED_SSD_SCAN;

    fn ssd_scan(s: SsdOperands<Self>, chunk: usize) -> FloatTensor<Self> {
        if !B::FUSED_SSD_SCAN {
            return plain_ssd_scan::<Self>(s, chunk);
        }
        let parents =
            [s.x.node.clone(), s.dt.node.clone(), s.a.node.clone(), s.b.node.clone(), s.c.node.clone()];
        let inner = SsdOperands::<B> {
            x: s.x.primitive,
            dt: s.dt.primitive,
            a: s.a.primitive,
            b: s.b.primitive,
            c: s.c.primitive,
        };
        match SsdScanBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, checkpoints) = B::ssd_scan_saving(inner.clone());
                prep.finish((inner, checkpoints), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::ssd_scan(inner, chunk)),
        }
    }

    const FUSED_ATTENTION: bool = B::FUSED_ATTENTION;

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> FloatTensor<Self> {
        if !B::FUSED_ATTENTION {
            return plain_causal_attention::<Self>(q, k, v, window);
        }
        let parents = [q.node.clone(), k.node.clone(), v.node.clone()];
        match AttentionBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, lse) = B::causal_attention_saving(
                    q.primitive.clone(),
                    k.primitive.clone(),
                    v.primitive.clone(),
                    window,
                );
                let state = AttentionState {
                    q: q.primitive,
                    k: k.primitive,
                    v: v.primitive,
                    out: out.clone(),
                    lse,
                    window,
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::causal_attention(q.primitive, k.primitive, v.primitive, window))
            }
        }
    }

    const FUSED_CROSS_ENTROPY: bool = B::FUSED_CROSS_ENTROPY;

    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        if !B::FUSED_CROSS_ENTROPY {
            return plain_cross_entropy::<Self>(logits, targets);
        }
        // The node keeps its state (the logits stay alive for it, as for the plain log-softmax)
        // rather than running the forward again under gradient checkpointing.
        match CrossEntropyBackward.prepare::<C>([logits.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (nll, lse) = B::cross_entropy_saving(logits.primitive.clone(), targets.clone());
                prep.finish((logits.primitive, targets, lse), nll)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::cross_entropy(logits.primitive, targets)),
        }
    }

    const FUSED_RMS_NORM: bool = B::FUSED_RMS_NORM;

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        if !B::FUSED_RMS_NORM {
            return plain_rms_norm::<Self>(x, weight, eps);
        }
        // The node keeps its state (one float per row besides the input it needs anyway).
        match RmsNormBackward.prepare::<C>([x.node.clone(), weight.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, rstd) = B::rms_norm_saving(x.primitive.clone(), weight.primitive.clone(), eps);
                prep.finish((x.primitive, weight.primitive, rstd), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(x.primitive, weight.primitive, eps)),
        }
    }

    fn add_rms_norm(
        residual: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> [FloatTensor<Self>; 2] {
        if !B::FUSED_RMS_NORM {
            return plain_add_rms_norm::<Self>(residual, delta, weight, eps);
        }
        let [sum, y, rstd] =
            B::add_rms_norm_saving(residual.primitive, delta.primitive, weight.primitive.clone(), eps);
        // A node has one output, so the kernel's two outputs become two nodes: the add, whose
        // backward hands the sum's gradient to both operands, and the norm of the sum.
        let parents = [residual.node, delta.node];
        let sum = ResidualAddBackward.prepare::<C>(parents).compute_bound().stateless(sum);
        let norm = AddRmsNormBackward.prepare::<C>([sum.node.clone(), weight.node]).compute_bound();
        let y = match norm.stateful() {
            OpsKind::Tracked(prep) => {
                // The state names the sum's node (for `Gradients::remove`) with a reference
                // count of its own: burn frees graph nodes by counting the `rc`s that live
                // tensors hold, and a step holding the sum's own would keep the graph of a
                // forward pass that never runs backward alive.
                let mut sum_ref = sum.clone();
                sum_ref.rc = Arc::new(*sum.rc);
                prep.finish((sum_ref, weight.primitive, rstd), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        [sum, y]
    }

    fn gated_rms_norm(
        y: FloatTensor<Self>,
        z: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        group: usize,
        eps: f64,
    ) -> FloatTensor<Self> {
        if !B::FUSED_RMS_NORM {
            return plain_gated_rms_norm::<Self>(y, z, weight, group, eps);
        }
        // The node keeps y and z (the gate is recomputed backward) and one float per group.
        let parents = [y.node.clone(), z.node.clone(), weight.node.clone()];
        match GatedRmsNormBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [out, rstd] = B::gated_rms_norm_saving(
                    y.primitive.clone(),
                    z.primitive.clone(),
                    weight.primitive.clone(),
                    group,
                    eps,
                );
                prep.finish((y.primitive, z.primitive, weight.primitive, rstd, group), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::gated_rms_norm(y.primitive, z.primitive, weight.primitive, group, eps))
            }
        }
    }

    const FUSED_CAUSAL_CONV: bool = B::FUSED_CAUSAL_CONV;

    fn causal_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !B::FUSED_CAUSAL_CONV {
            return plain_causal_conv::<Self>(x, weight, bias);
        }
        let parents = [x.node.clone(), weight.node.clone(), bias.node.clone()];
        match CausalConvBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::causal_conv(x.primitive.clone(), weight.primitive.clone(), bias.primitive);
                prep.finish((x.primitive, weight.primitive), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::causal_conv(x.primitive, weight.primitive, bias.primitive))
            }
        }
    }

    const FUSED_STATE_PASSING: bool = B::FUSED_STATE_PASSING;

    fn ssd_state_passing(
        states: FloatTensor<Self>,
        decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !B::FUSED_STATE_PASSING {
            return plain_state_passing::<Self>(states, decay, h0);
        }
        let parents = [states.node.clone(), decay.node.clone(), h0.node.clone()];
        match StatePassingBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let entering = B::ssd_state_passing(states.primitive, decay.primitive.clone(), h0.primitive);
                prep.finish((decay.primitive, entering.clone()), entering)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::ssd_state_passing(states.primitive, decay.primitive, h0.primitive))
            }
        }
    }

    const FUSED_UT_TRANSFORM: bool = B::FUSED_UT_TRANSFORM;

    fn ut_transform(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        cum: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !B::FUSED_UT_TRANSFORM {
            return plain_ut_transform::<Self>(k, v, beta, cum);
        }
        let parents = [k.node.clone(), v.node.clone(), beta.node.clone(), cum.node.clone()];
        // The node keeps the operands, `T` and the output: `C²` floats per chunk besides what
        // the backward reads anyway, as the plain-ops graph keeps `T` too.
        match UtTransformBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [out, inverse] = B::ut_transform_saving(
                    k.primitive.clone(),
                    v.primitive.clone(),
                    beta.primitive.clone(),
                    cum.primitive.clone(),
                );
                let state = UtTransformState {
                    k: k.primitive,
                    v: v.primitive,
                    beta: beta.primitive,
                    cum: cum.primitive,
                    inverse,
                    out: out.clone(),
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::ut_transform(k.primitive, v.primitive, beta.primitive, cum.primitive))
            }
        }
    }

    const FUSED_DELTA_CHUNKS: bool = B::FUSED_DELTA_CHUNKS;

    fn delta_chunks(x: DeltaChunkOperands<Self>) -> FloatTensor<Self> {
        if !B::FUSED_DELTA_CHUNKS {
            return plain_delta_chunks::<Self>(x);
        }
        let parents = [
            x.u.node.clone(),
            x.w.node.clone(),
            x.q.node.clone(),
            x.k.node.clone(),
            x.attn.node.clone(),
            x.decay.node.clone(),
            x.s0.node.clone(),
        ];
        let inner = DeltaChunkOperands::<B> {
            u: x.u.primitive,
            w: x.w.primitive,
            q: x.q.primitive,
            k: x.k.primitive,
            attn: x.attn.primitive,
            decay: x.decay.primitive,
            s0: x.s0.primitive,
        };
        // The node keeps the operands and the state entering each chunk (`dk · dv` floats per
        // chunk and head, as the plain-ops graph keeps each state too).
        match DeltaChunksBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [out, states] = B::delta_chunks_saving(inner.clone());
                prep.finish((inner, states), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::delta_chunks(inner)),
        }
    }

    fn own_matmul() -> bool {
        B::own_matmul()
    }

    /// The forced matmul as a node whose backward runs the same strategy: `d_lhs = d_out ·
    /// rhsᵀ` and `d_rhs = lhsᵀ · d_out` (the transposes are strided views), each summed over
    /// the batch dimensions its operand was broadcast along.
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        match MatmulBackward.prepare::<C>([lhs.node.clone(), rhs.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::matmul(lhs.primitive.clone(), rhs.primitive.clone());
                prep.finish((lhs.primitive, rhs.primitive), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::matmul(lhs.primitive, rhs.primitive)),
        }
    }

    const FUSED_MOE_ROUTE: bool = B::FUSED_MOE_ROUTE;

    /// Discrete: no node, the logits' primitive is routed as it is.
    fn moe_route(logits: FloatTensor<Self>, top_k: usize) -> [IntTensor<Self>; 3] {
        B::moe_route(logits.primitive, top_k)
    }
}

/// Gives each parent that requires a gradient (`Some` id) its gradient.
fn register_parents<B: Backend, const N: usize>(
    parents: [Option<NodeId>; N],
    gradients: [FloatTensor<B>; N],
    grads: &mut Gradients,
) {
    for (parent, grad) in parents.into_iter().zip(gradients) {
        if let Some(id) = parent {
            grads.register::<B>(id, grad);
        }
    }
}

/// What the attention backward needs: the inputs, the output and the rows' log-sum-exps (the
/// `t × t` probabilities are recomputed from them).
#[derive(Clone, Debug)]
struct AttentionState<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    window: usize,
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: Backend> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_out = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let g = B::causal_attention_backward(s.q, s.k, s.v, s.out, s.lse, d_out, s.window);
        register_parents::<B, 3>(ops.parents.map(|p| p.map(|node| node.id)), g, grads);
    }
}

/// The backward node of the fused scan. Its state is the operands (the kernel recomputes the
/// states from them) and the forward's per-chunk state checkpoints.
#[derive(Debug)]
struct ScanBackward;

impl<B: Backend> Backward<B, 5> for ScanBackward {
    type State = (ScanOperands<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (operands, checkpoints) = ops.state;
        let g = B::selective_scan_backward(operands, checkpoints, dy);
        register_parents::<B, 5>(
            ops.parents.map(|p| p.map(|node| node.id)),
            [g.x, g.delta, g.a, g.b, g.c],
            grads,
        );
    }
}

/// The backward node of the fused SiLU: its state is the input.
#[derive(Debug)]
struct SiluBackward;

impl<B: Backend> Backward<B, 1> for SiluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let dx = B::silu_backward(ops.state, dy);
        register_parents::<B, 1>(ops.parents.map(|p| p.map(|node| node.id)), [dx], grads);
    }
}

/// The backward node of the fused rotary embedding: its state is the tables.
#[derive(Debug)]
struct RopeBackward;

impl<B: Backend> Backward<B, 1> for RopeBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (cos, sin) = ops.state;
        let dx = B::rope_backward(dy, cos, sin);
        register_parents::<B, 1>(ops.parents.map(|p| p.map(|node| node.id)), [dx], grads);
    }
}

/// The backward node of the fused SSD scan: the operands and the forward's per-chunk state
/// checkpoints, from which the loop recomputes the states.
#[derive(Debug)]
struct SsdScanBackward;

impl<B: Backend> Backward<B, 5> for SsdScanBackward {
    type State = (SsdOperands<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (operands, checkpoints) = ops.state;
        let g = B::ssd_scan_backward(operands, checkpoints, dy);
        register_parents::<B, 5>(
            ops.parents.map(|p| p.map(|node| node.id)),
            [g.x, g.dt, g.a, g.b, g.c],
            grads,
        );
    }
}

/// The backward node of the fused cross-entropy: its state is the logits (in their own dtype),
/// the targets and the rows' log-sum-exps, from which the softmax is recomputed.
#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: Backend> Backward<B, 1> for CrossEntropyBackward {
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_nll = grads.consume::<B>(&ops.node);
        let (logits, targets, lse) = ops.state;
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, B::cross_entropy_backward(logits, targets, lse, d_nll));
        }
    }
}

/// The backward node of the fused RMSNorm: its state is the input, the weight and each row's
/// `1/rms`.
#[derive(Debug)]
struct RmsNormBackward;

impl<B: Backend> Backward<B, 2> for RmsNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, weight, rstd) = ops.state;
        register_parents::<B, 2>(
            ops.parents.map(|p| p.map(|node| node.id)),
            B::rms_norm_backward(x, weight, rstd, dy),
            grads,
        );
    }
}

/// The backward node of the residual add fused into a norm: both operands get the sum's
/// gradient, which [`AddRmsNormBackward`] has completed.
#[derive(Debug)]
struct ResidualAddBackward;

impl<B: Backend> Backward<B, 2> for ResidualAddBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_sum = grads.consume::<B>(&ops.node);
        register_parents::<B, 2>(ops.parents.map(|p| p.map(|node| node.id)), [d_sum.clone(), d_sum], grads);
    }
}

/// The backward node of the RMSNorm of a residual sum (see [`Backend::add_rms_norm`]). Its
/// state is the sum as an autodiff tensor, the weight and each row's `1/rms`.
///
/// The sum has two uses: this norm, and the residual path onward (the next layer's add), whose
/// backward runs first (it is deeper in the graph). Autodiff would add the two gradients with
/// a separate kernel when this node registers its own; instead this node takes the gradient
/// registered so far and the backward kernel adds it in as it writes `dx`. A use whose
/// gradient arrives later is still added by `Gradients::register`, so the order only decides
/// what is saved, never the result.
#[derive(Debug)]
struct AddRmsNormBackward;

impl<B: Backend> Backward<B, 2> for AddRmsNormBackward {
    type State = (FloatTensor<Autodiff<B>>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (sum, weight, rstd) = ops.state;
        let partial = grads.remove::<B>(&sum);
        let x = sum.primitive;
        let g = match partial {
            Some(d_x) => B::rms_norm_backward_accumulate(x, weight, rstd, dy, d_x),
            None => B::rms_norm_backward(x, weight, rstd, dy),
        };
        register_parents::<B, 2>(ops.parents.map(|p| p.map(|node| node.id)), g, grads);
    }
}

/// The backward node of Mamba-2's fused gated RMSNorm: its state is `y`, `z`, the weight,
/// each group's `1/rms` and the group size.
#[derive(Debug)]
struct GatedRmsNormBackward;

impl<B: Backend> Backward<B, 3> for GatedRmsNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_out = grads.consume::<B>(&ops.node);
        let (y, z, weight, rstd, group) = ops.state;
        let g = B::gated_rms_norm_backward(y, z, weight, rstd, d_out, group);
        register_parents::<B, 3>(ops.parents.map(|p| p.map(|node| node.id)), g, grads);
    }
}

/// The backward node of a matmul through the forced strategy: its state is both operands.
#[derive(Debug)]
struct MatmulBackward;

impl<B: Backend> Backward<B, 2> for MatmulBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_out = grads.consume::<B>(&ops.node);
        let (lhs, rhs) = ops.state;
        let (lhs_shape, rhs_shape) = (lhs.shape(), rhs.shape());
        let [lhs_node, rhs_node] = ops.parents;
        if let Some(node) = lhs_node {
            let d_lhs = B::matmul(d_out.clone(), B::float_transpose(rhs));
            grads.register::<B>(node.id, broadcast_shape::<B>(d_lhs, &lhs_shape));
        }
        if let Some(node) = rhs_node {
            let d_rhs = B::matmul(B::float_transpose(lhs), d_out);
            grads.register::<B>(node.id, broadcast_shape::<B>(d_rhs, &rhs_shape));
        }
    }
}

/// The backward node of the fused causal convolution: its state is the input and the taps.
#[derive(Debug)]
struct CausalConvBackward;

impl<B: Backend> Backward<B, 3> for CausalConvBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        register_parents::<B, 3>(
            ops.parents.map(|p| p.map(|node| node.id)),
            B::causal_conv_backward(x, weight, dy),
            grads,
        );
    }
}

/// The backward node of the fused SSD state passing: its state is the chunk decays and the
/// forward's output (the carries the decays multiplied).
#[derive(Debug)]
struct StatePassingBackward;

impl<B: Backend> Backward<B, 3> for StatePassingBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_entering = grads.consume::<B>(&ops.node);
        let (decay, entering) = ops.state;
        let g = B::ssd_state_passing_backward(decay, entering, d_entering);
        register_parents::<B, 3>(ops.parents.map(|p| p.map(|node| node.id)), g, grads);
    }
}

/// What the UT transform's backward needs: the operands, `T` and the output.
#[derive(Clone, Debug)]
struct UtTransformState<B: Backend> {
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    beta: FloatTensor<B>,
    cum: FloatTensor<B>,
    inverse: FloatTensor<B>,
    out: FloatTensor<B>,
}

/// The backward node of the fused UT transform.
#[derive(Debug)]
struct UtTransformBackward;

impl<B: Backend> Backward<B, 4> for UtTransformBackward {
    type State = UtTransformState<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_out = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let g = B::ut_transform_backward(s.k, s.v, s.beta, s.cum, s.inverse, s.out, d_out);
        register_parents::<B, 4>(ops.parents.map(|p| p.map(|node| node.id)), g, grads);
    }
}

/// The backward node of the delta rule's fused pass over chunks: its state is the operands and
/// the state entering each chunk.
#[derive(Debug)]
struct DeltaChunksBackward;

impl<B: Backend> Backward<B, 7> for DeltaChunksBackward {
    type State = (DeltaChunkOperands<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 7>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_out = grads.consume::<B>(&ops.node);
        let (operands, states) = ops.state;
        let g = B::delta_chunks_backward(operands, states, d_out);
        register_parents::<B, 7>(
            ops.parents.map(|p| p.map(|node| node.id)),
            [g.u, g.w, g.q, g.k, g.attn, g.decay, g.s0],
            grads,
        );
    }
}
