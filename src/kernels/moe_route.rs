//! MoE top-k routing on the host: the twin of the fused routing kernel (`moe_route_kernel.rs`).

/// The routing decision without a capacity limit, as the fused routing op returns it
/// ([`super::Backend::moe_route`]; this is its host-side twin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    /// `[n, k]`: each token's experts, best first; ties go to the lower expert index.
    pub choices: Vec<usize>,
    /// `[n · k]`: how many earlier assignments (in token order, a token's choices in order)
    /// went to the same expert. With a capacity `c`, an assignment is kept when this is `< c`.
    pub positions: Vec<usize>,
    /// `[E]`: assignments per expert.
    pub counts: Vec<usize>,
}

impl HostRoute {
    /// Routes the tokens of `logits` (`[n, E]`, row-major) to their top `k` experts.
    pub fn new(logits: &[f64], n_experts: usize, top_k: usize) -> Self {
        assert!(
            n_experts > 0 && logits.len().is_multiple_of(n_experts) && top_k <= n_experts,
            "router logits must be [tokens, experts] with k ≤ experts"
        );
        let n = logits.len() / n_experts;
        let mut choices = Vec::with_capacity(n * top_k);
        let mut positions = Vec::with_capacity(n * top_k);
        let mut counts = vec![0usize; n_experts];
        let mut order: Vec<usize> = (0..n_experts).collect();
        // −0 and +0 are one value (IEEE equality, as the device kernel compares), which
        // `total_cmp` alone would order.
        let key = |v: f64| if v == 0.0 { 0.0 } else { v };
        for row in logits.chunks(n_experts) {
            // A stable sort by descending logit: ties keep the lower index first.
            order.sort_by(|&a, &b| key(row[b]).total_cmp(&key(row[a])));
            for &e in &order[..top_k] {
                choices.push(e);
                positions.push(counts[e]);
                counts[e] += 1;
            }
            order.sort_unstable();
        }
        Self { choices, positions, counts }
    }
}
