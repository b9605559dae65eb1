//! `Autodiff<B>`: a fused kernel of `B` becomes one node of the autodiff graph whose backward
//! is `B`'s backward kernel; without a kernel, autodiff differentiates the plain-ops twin.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;

use super::{Backend, ScanOperands, plain_causal_attention, plain_selective_scan};

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
        for (parent, grad) in ops.parents.into_iter().zip(g) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
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
        for (parent, grad) in ops.parents.into_iter().zip([g.x, g.delta, g.a, g.b, g.c]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}
