//! Checks shared by the config sections (the model's, and each mixer's own in its file):
//! each error names the key and, where there is one, the fix.

use anyhow::{Result, bail};

pub(crate) fn must_be_positive(values: &[(&str, usize)]) -> Result<()> {
    for (key, value) in values {
        if *value == 0 {
            bail!("{key} must be at least 1 (got 0)");
        }
    }
    Ok(())
}

pub(crate) fn check_conv_width(key: &str, k: usize) -> Result<()> {
    if k < 2 {
        bail!("{key} must be at least 2 (got {k}); the paper uses 4");
    }
    Ok(())
}

pub(crate) fn check_dt_range(section: &str, min: f64, max: f64, floor: f64) -> Result<()> {
    if !(0.0 < min && min <= max && max.is_finite()) {
        bail!("{section} needs 0 < dt_min <= dt_max (got dt_min = {min}, dt_max = {max})");
    }
    if !(0.0..=max).contains(&floor) {
        bail!("{section}.dt_init_floor must be in [0, dt_max] (got {floor})");
    }
    Ok(())
}

pub(crate) fn largest_divisor_at_most(n: usize, k: usize) -> usize {
    (1..=k).rev().find(|d| n.is_multiple_of(*d)).unwrap_or(1)
}
