//! Learning-rate schedule: linear warmup, then cosine decay to a floor (Loshchilov & Hutter
//! 2017; nanoGPT's `get_lr`). A pure function of the step, so resuming needs no state.

use crate::config::TrainConfig;

/// Learning rate for optimizer step `step` (0-based).
pub fn lr(step: usize, cfg: &TrainConfig) -> f64 {
    let floor = cfg.lr * cfg.min_lr_ratio;
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let decay_steps = cfg.max_steps.saturating_sub(cfg.warmup_steps).max(1);
    let progress = ((step - cfg.warmup_steps) as f64 / decay_steps as f64).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    floor + (cfg.lr - floor) * cosine
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::presets::preset;

    #[test]
    fn warmup_peak_and_floor() {
        let mut cfg = preset("tiny").unwrap().train;
        cfg.lr = 1.0;
        cfg.min_lr_ratio = 0.1;
        cfg.warmup_steps = 10;
        cfg.max_steps = 110;
        assert!((lr(0, &cfg) - 0.1).abs() < 1e-12);
        assert!((lr(9, &cfg) - 1.0).abs() < 1e-12);
        assert!((lr(10, &cfg) - 1.0).abs() < 1e-12);
        assert!((lr(60, &cfg) - 0.55).abs() < 1e-12, "halfway is the mean of peak and floor");
        assert!((lr(110, &cfg) - 0.1).abs() < 1e-12);
        let lrs: Vec<f64> = (10..110).map(|s| lr(s, &cfg)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]), "monotone after warmup");
    }
}
