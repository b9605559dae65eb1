//! What a routed channel mixer (`moe`) returns besides its output: the auxiliary loss the
//! training loss adds, and the routing counts behind it, which travel to the host as
//! [`RoutingStats`] and from there into the generic diagnostics ([`Diagnostic`]). Kept apart
//! from `moe.rs` so that the channel-mixer contract (`mixer::ChannelMixing`) can name it
//! without the contract and the MoE module importing each other.

use burn::tensor::{ElementConversion, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::diagnostic::Diagnostic;
use super::registry::FfnKind;
use crate::kernels::Backend;

/// What one MoE layer returns besides its output.
#[derive(Debug)]
pub struct MoeAux<B: Backend> {
    /// `balance_coef · balance + z_loss_coef · z`, to be added to the training loss.
    pub aux_loss: Tensor<B, 1>,
    pub routing: Routing<B>,
}

/// One forward pass's routing counts and unweighted auxiliary losses, read to the host by
/// [`Routing::stats`].
#[derive(Debug)]
pub enum Routing<B: Backend> {
    /// Decided on the host (grouped and dense-masked dispatch): already there.
    Host(RoutingStats),
    /// Decided on the device (batched dispatch) and left there, so that the forward pass
    /// never waits for the host; the trainer reads it after the step's loss.
    Device {
        tokens: usize,
        /// `[E]`: assignments per expert, before capacity.
        counts: Tensor<B, 1, Int>,
        capacity: Option<usize>,
        /// `[1]` each, detached.
        balance: Tensor<B, 1>,
        z: Tensor<B, 1>,
    },
}

impl<B: Backend> Routing<B> {
    /// The counts and losses on the host (a device read for [`Routing::Device`]).
    pub fn stats(&self) -> RoutingStats {
        match self {
            Routing::Host(stats) => stats.clone(),
            Routing::Device { tokens, counts, capacity, balance, z } => {
                let routed: Vec<u64> =
                    counts.clone().into_data().convert::<i64>().iter::<i64>().map(|c| c as u64).collect();
                let dropped =
                    capacity.map_or(0, |c| routed.iter().map(|&r| r.saturating_sub(c as u64)).sum());
                let scalar = |t: &Tensor<B, 1>| t.clone().into_scalar().elem::<f64>();
                RoutingStats {
                    tokens: *tokens as u64,
                    routed,
                    dropped,
                    balance_loss_sum: scalar(balance),
                    z_loss_sum: scalar(z),
                    passes: 1,
                }
            }
        }
    }
}

/// Routing counts and the unweighted auxiliary losses of one forward pass, on the host.
/// Counts add up over micro-batches and steps ([`RoutingStats::merge`]); a training run keeps
/// its running total in the checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingStats {
    pub tokens: u64,
    /// Assignments each expert was chosen for (top-k choices, before capacity).
    pub routed: Vec<u64>,
    /// Assignments dropped because their expert was full.
    pub dropped: u64,
    /// Sums over the merged passes (divide by `passes` for the mean).
    #[serde(with = "crate::util::json_f64")]
    pub balance_loss_sum: f64,
    #[serde(with = "crate::util::json_f64")]
    pub z_loss_sum: f64,
    pub passes: u64,
}

impl RoutingStats {
    pub fn merge(&mut self, other: &RoutingStats) {
        if self.routed.is_empty() {
            self.routed = vec![0; other.routed.len()];
        }
        for (a, b) in self.routed.iter_mut().zip(&other.routed) {
            *a += b;
        }
        self.tokens += other.tokens;
        self.dropped += other.dropped;
        self.balance_loss_sum += other.balance_loss_sum;
        self.z_loss_sum += other.z_loss_sum;
        self.passes += other.passes;
    }

    /// Fraction of assignments per expert (sums to 1; 1/E each when perfectly even).
    pub fn load(&self) -> Vec<f64> {
        let total = self.routed.iter().sum::<u64>().max(1) as f64;
        self.routed.iter().map(|&c| c as f64 / total).collect()
    }

    /// Entropy of [`Self::load`] divided by ln E: 1 for an even load, 0 when one expert takes
    /// everything.
    pub fn load_entropy(&self) -> f64 {
        let e = self.routed.len();
        if e < 2 {
            return 1.0;
        }
        let h: f64 = self.load().iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum();
        h / (e as f64).ln()
    }

    /// Fraction of assignments dropped by the capacity limit.
    pub fn dropped_fraction(&self) -> f64 {
        let total = self.routed.iter().sum::<u64>();
        if total == 0 { 0.0 } else { self.dropped as f64 / total as f64 }
    }

    pub fn mean_balance_loss(&self) -> f64 {
        self.balance_loss_sum / self.passes.max(1) as f64
    }

    pub fn mean_z_loss(&self) -> f64 {
        self.z_loss_sum / self.passes.max(1) as f64
    }

    /// What layer `layer`'s routing did over these tokens, as diagnostics
    /// ([`routing_diagnostics`]).
    pub fn diagnostics(&self, layer: usize) -> Vec<Diagnostic> {
        routing_diagnostics(
            layer,
            &self.load(),
            self.load_entropy(),
            self.dropped_fraction(),
            [self.mean_balance_loss(), self.mean_z_loss()],
        )
    }
}

/// An MoE layer's routing as diagnostics: each expert's share of the routed assignments
/// against an even 1/E, and as headlines the load's evenness (its entropy over ln E: 1 when
/// even, 0 when one expert takes all) and the fraction of assignments the capacity limit
/// dropped; then the mean unweighted balancing and z-losses (`[balance, z]`).
pub fn routing_diagnostics(
    layer: usize,
    load: &[f64],
    evenness: f64,
    dropped: f64,
    losses: [f64; 2],
) -> Vec<Diagnostic> {
    let name = FfnKind::Moe.name();
    let even = 1.0 / load.len().max(1) as f64;
    let experts = load
        .iter()
        .enumerate()
        .map(|(e, &share)| Diagnostic::new(layer, name, &format!("load of expert {e}"), share).against(even));
    experts
        .chain([
            Diagnostic::new(layer, name, "load evenness", evenness).headline(),
            Diagnostic::new(layer, name, "dropped fraction", dropped).headline(),
            Diagnostic::new(layer, name, "balance loss", losses[0]),
            Diagnostic::new(layer, name, "z-loss", losses[1]),
        ])
        .collect()
}
