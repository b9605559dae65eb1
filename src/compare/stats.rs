//! Seed statistics: mean ± 95% confidence interval, and pairwise verdicts.
//!
//! A comparison trains every architecture on a few seeds, and the question the report answers
//! is "is A really better than B, or is the gap within seed noise?". With 2–5 seeds the normal
//! approximation (±1.96 σ/√n) is badly overconfident, so every interval here uses the Student
//! t distribution with the right degrees of freedom, computed exactly rather than from a table.

/// Mean and 95% confidence interval of a sample.
#[derive(Clone, Debug, PartialEq)]
pub struct MeanCi {
    pub n: usize,
    /// The sample mean (NaN for an empty sample).
    pub mean: f64,
    /// The sample standard deviation (n − 1 denominator; NaN when n < 2).
    pub sd: f64,
    /// Half-width of the 95% confidence interval of the mean, Student t with n − 1 degrees of
    /// freedom; `None` when n < 2 (one value says nothing about its spread).
    pub half_width: Option<f64>,
}

/// Mean, sample standard deviation and 95% Student-t confidence half-width of `xs`.
pub fn mean_ci(xs: &[f64]) -> MeanCi {
    let n = xs.len();
    let mean = mean(xs);
    if n < 2 {
        return MeanCi { n, mean, sd: f64::NAN, half_width: None };
    }
    let sd = sample_sd(xs, mean);
    let half_width = t_quantile_975((n - 1) as f64) * sd / (n as f64).sqrt();
    MeanCi { n, mean, sd, half_width: Some(half_width) }
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() { f64::NAN } else { xs.iter().sum::<f64>() / xs.len() as f64 }
}

/// Sample standard deviation about a known mean (two-pass: no catastrophic cancellation).
fn sample_sd(xs: &[f64], mean: f64) -> f64 {
    let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
    (ss / (xs.len() - 1) as f64).sqrt()
}

// ---------------------------------------------------------------------------------------------
// Student t quantile
// ---------------------------------------------------------------------------------------------

/// The 0.975 quantile of Student's t distribution with `df` degrees of freedom: the critical
/// value of a two-sided 95% interval. `df` may be non-integer (Welch–Satterthwaite); it must be
/// positive (NaN otherwise).
///
/// Method: the two-sided tail of the t distribution is a regularized incomplete beta function,
/// `P(|T| > t) = I_x(df/2, 1/2)` with `x = df / (df + t²)` (Abramowitz & Stegun 26.7.1 and
/// 26.5.27). `I_x` is evaluated by its continued fraction (Numerical Recipes 3rd ed. §6.4,
/// modified Lentz), and `P(|T| > t) = 0.05` is solved for t by Newton's method on the t
/// density, safeguarded by a bisection bracket. The result agrees with `scipy.stats.t.ppf` to
/// better than 1e-10 relative for df from 0.1 to 3e6. For df > 1e5, where the beta function's Γ ratios lose digits, the
/// Cornish–Fisher expansion about the normal quantile (A&S 26.7.5) is exact to f64 precision.
pub fn t_quantile_975(df: f64) -> f64 {
    const TAIL: f64 = 0.05;
    if df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if df > 1e5 {
        return cornish_fisher_975(df);
    }
    // The t quantile always exceeds the normal one; grow the upper end until it brackets.
    let mut lo = Z_975;
    let mut hi = 2.0 * Z_975;
    while two_sided_tail(hi, df) > TAIL {
        lo = hi;
        hi *= 2.0;
    }
    let mut t = cornish_fisher_975(df).clamp(lo, hi);
    for _ in 0..200 {
        let f = two_sided_tail(t, df) - TAIL;
        if f > 0.0 {
            lo = t
        } else {
            hi = t
        }
        // d/dt P(|T| > t) = −2 · density(t).
        let newton = t + f / (2.0 * t_density(t, df));
        let next = if newton > lo && newton < hi { newton } else { 0.5 * (lo + hi) };
        if (next - t).abs() <= 1e-15 * t {
            return next;
        }
        t = next;
    }
    t
}

/// The 0.975 quantile of the standard normal distribution.
const Z_975: f64 = 1.959_963_984_540_054;

/// Cornish–Fisher expansion of the t quantile in powers of 1/df (Abramowitz & Stegun 26.7.5),
/// four correction terms. The starting point of the Newton iteration, and the answer itself
/// for very large df.
fn cornish_fisher_975(df: f64) -> f64 {
    let z = Z_975;
    let z2 = z * z;
    let g1 = z * (z2 + 1.0) / 4.0;
    let g2 = z * ((5.0 * z2 + 16.0) * z2 + 3.0) / 96.0;
    let g3 = z * (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) / 384.0;
    let g4 = z * ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) / 92160.0;
    z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df
}

/// `P(|T| > t)` for Student's t with `df` degrees of freedom.
fn two_sided_tail(t: f64, df: f64) -> f64 {
    // x and 1 − x computed separately, so neither loses digits to cancellation.
    let x = df / (df + t * t);
    let one_minus_x = t * t / (df + t * t);
    regularized_incomplete_beta(x, one_minus_x, df / 2.0, 0.5)
}

/// Density of Student's t distribution.
fn t_density(t: f64, df: f64) -> f64 {
    let log_norm = ln_gamma((df + 1.0) / 2.0) - ln_gamma(df / 2.0) - 0.5 * (df * std::f64::consts::PI).ln();
    (log_norm - (df + 1.0) / 2.0 * (t * t / df).ln_1p()).exp()
}

/// The regularized incomplete beta function `I_x(a, b)`, given both `x` and `1 − x`.
/// The continued fraction converges fast only for `x < (a + 1) / (a + b + 2)`; beyond that the
/// symmetry `I_x(a, b) = 1 − I_{1−x}(b, a)` is used (Numerical Recipes 3rd ed. §6.4).
fn regularized_incomplete_beta(x: f64, one_minus_x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if one_minus_x <= 0.0 {
        return 1.0;
    }
    let log_front = a * x.ln() + b * one_minus_x.ln() - ln_beta(a, b);
    if x < (a + 1.0) / (a + b + 2.0) {
        log_front.exp() * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - log_front.exp() * beta_continued_fraction(one_minus_x, b, a) / b
    }
}

/// The continued fraction of the incomplete beta function, by the modified Lentz method
/// (Numerical Recipes 3rd ed. §5.2 and §6.4, `betacf`).
fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-16;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step.
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        // Odd step.
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// ln Γ(x) for x > 0: the Lanczos approximation with g = 7, n = 9 (relative error ~1e-15),
/// and the reflection formula below 1/2.
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    // The published coefficients, digit for digit (more than an f64 holds).
    #[allow(clippy::excessive_precision)]
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_93,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_13,
        -176.615_029_162_140_59,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_571_6e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let series: f64 = COEF[0] + COEF.iter().enumerate().skip(1).map(|(i, c)| c / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

// ---------------------------------------------------------------------------------------------
// Pairwise comparison
// ---------------------------------------------------------------------------------------------

/// How a [`PairComparison`]'s interval was computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairMethod {
    /// Per-seed differences, t with n − 1 df: both architectures saw the same data order on
    /// each seed, so pairing cancels the data-order part of the noise.
    Paired,
    /// Welch's unequal-variance interval (Welch–Satterthwaite df), for unmatched seed sets.
    Welch,
    /// Too few values on one side for any interval.
    None,
}

/// The difference of two architectures' validation losses (lower is better).
#[derive(Clone, Debug, PartialEq)]
pub struct PairComparison {
    /// mean(a) − mean(b): negative when `a` is better.
    pub delta: f64,
    /// Half-width of the 95% confidence interval of `delta`; `None` for [`PairMethod::None`].
    pub half_width: Option<f64>,
    pub method: PairMethod,
    /// Number of finite values used on each side.
    pub n_a: usize,
    pub n_b: usize,
}

/// Compares two architectures from their `(seed, val_loss)` results; lower is better.
/// Non-finite losses (diverged runs) are left out. With the same seeds on both sides (at least
/// two) the comparison is paired; otherwise, with at least two values on each side, Welch's;
/// otherwise only the difference of means is known.
pub fn compare_pair(a: &[(u64, f64)], b: &[(u64, f64)]) -> PairComparison {
    let a = finite_sorted_by_seed(a);
    let b = finite_sorted_by_seed(b);
    let (n_a, n_b) = (a.len(), b.len());
    let values = |runs: &[(u64, f64)]| runs.iter().map(|r| r.1).collect::<Vec<f64>>();
    let (va, vb) = (values(&a), values(&b));
    let delta = mean(&va) - mean(&vb);
    let same_seeds = a.iter().map(|r| r.0).eq(b.iter().map(|r| r.0));

    let (method, half_width) = if same_seeds && n_a >= 2 {
        let diffs: Vec<f64> = va.iter().zip(&vb).map(|(x, y)| x - y).collect();
        (PairMethod::Paired, mean_ci(&diffs).half_width)
    } else if n_a >= 2 && n_b >= 2 {
        (PairMethod::Welch, Some(welch_half_width(&va, &vb)))
    } else {
        (PairMethod::None, None)
    };
    PairComparison { delta, half_width, method, n_a, n_b }
}

fn finite_sorted_by_seed(runs: &[(u64, f64)]) -> Vec<(u64, f64)> {
    let mut kept: Vec<(u64, f64)> = runs.iter().copied().filter(|r| r.1.is_finite()).collect();
    kept.sort_by_key(|r| r.0);
    kept
}

/// 95% half-width of mean(a) − mean(b) without assuming equal variances (Welch 1947), with
/// the Welch–Satterthwaite degrees of freedom. Needs at least two values on each side.
fn welch_half_width(a: &[f64], b: &[f64]) -> f64 {
    let var_of_mean = |xs: &[f64]| {
        let sd = sample_sd(xs, mean(xs));
        sd * sd / xs.len() as f64
    };
    let (va, vb) = (var_of_mean(a), var_of_mean(b));
    let se2 = va + vb;
    if se2 == 0.0 {
        return 0.0;
    }
    let df = se2 * se2 / (va * va / (a.len() - 1) as f64 + vb * vb / (b.len() - 1) as f64);
    t_quantile_975(df) * se2.sqrt()
}

impl PairComparison {
    /// A one-line verdict in words, e.g. "dense beats mamba by 0.043 ± 0.012 nats (paired
    /// over 3 seeds)", "difference within noise: Δ = 0.004 ± 0.020 nats (…)", or, with a
    /// single seed, "one seed each: no confidence interval (use --seeds 3)".
    pub fn verdict(&self, name_a: &str, name_b: &str) -> String {
        if self.n_a == 0 || self.n_b == 0 {
            let missing = if self.n_a == 0 { name_a } else { name_b };
            return format!("no comparison: {missing} has no finite validation loss");
        }
        let Some(half_width) = self.half_width else {
            let raw = format!("Δ = {} nats", fmt_nats(self.delta, self.delta.abs()));
            return if self.n_a == 1 && self.n_b == 1 {
                format!("one seed each: no confidence interval (use --seeds 3); {raw}")
            } else {
                format!(
                    "too few seeds for a confidence interval ({name_a}: {}, {name_b}: {}; use --seeds 3); {raw}",
                    self.n_a, self.n_b
                )
            };
        };
        let design = match self.method {
            PairMethod::Paired => format!("paired over {} seeds", self.n_a),
            _ => format!("Welch, {} vs {} seeds", self.n_a, self.n_b),
        };
        let ci = fmt_nats(half_width, half_width);
        if self.delta.abs() > half_width {
            let (winner, loser) = if self.delta < 0.0 { (name_a, name_b) } else { (name_b, name_a) };
            let gap = fmt_nats(self.delta.abs(), half_width);
            format!("{winner} beats {loser} by {gap} ± {ci} nats ({design})")
        } else {
            let delta = fmt_nats(self.delta, half_width);
            format!("difference within noise: Δ = {delta} ± {ci} nats ({design})")
        }
    }
}

/// Formats a loss difference with three decimals, or more when `scale` (the interval, or the
/// value itself) is so small that three decimals would print it as zero.
fn fmt_nats(x: f64, scale: f64) -> String {
    let decimals =
        if scale > 0.0 && scale < 1e-3 { (1.0 - scale.log10().floor()).min(6.0) as usize } else { 3 };
    format!("{x:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_rel(actual: f64, expected: f64, tol: f64) {
        let rel = ((actual - expected) / expected).abs();
        assert!(rel <= tol, "{actual} vs {expected}: relative error {rel:e} > {tol:e}");
    }

    /// Reference values from scipy 1.17.1:
    /// python -c 'import scipy.stats as st; [print(df, repr(st.t.ppf(0.975, df))) for df in
    ///            [1, 1.5, 2, 3, 4.5, 7.3, 10, 30, 100, 1000, 2e4, 1e5, 1e6]]'
    #[test]
    fn t_quantiles_match_scipy() {
        let cases = [
            (1.0, 12.706204736174694),
            (1.5, 6.016663104427929),
            (2.0, 4.302652729749462),
            (3.0, 3.1824463052837078),
            (4.5, 2.6589123472044034),
            (7.3, 2.345066736547703),
            (10.0, 2.228138851986274),
            (30.0, 2.0422724563012378),
            (100.0, 1.9839715185235518),
            (1000.0, 1.9623390808264083),
            (2e4, 1.9600826051581348),
            (1e5, 1.9599877075346095),
            (1e6, 1.959966356814107),
        ];
        for (df, expected) in cases {
            assert_rel(t_quantile_975(df), expected, 1e-9);
        }
    }

    #[test]
    fn t_quantile_rejects_nonpositive_df() {
        assert!(t_quantile_975(0.0).is_nan());
        assert!(t_quantile_975(-3.0).is_nan());
        assert!(t_quantile_975(f64::NAN).is_nan());
    }

    /// Reference values from scipy 1.17.1:
    /// python -c 'import numpy as np, scipy.stats as st
    /// for xs in [[2.31,2.45,2.38],[3.1,2.9,3.4,3.0,3.25]]:
    ///     x=np.array(xs); m=x.mean(); lo,hi=st.t.interval(0.95, len(x)-1, loc=m, scale=st.sem(x))
    ///     print(repr(m), repr(x.std(ddof=1)), repr((hi-lo)/2))'
    #[test]
    fn mean_sd_and_interval_match_scipy() {
        let cases = [
            (vec![2.31, 2.45, 2.38], 2.38, 0.07000000000000006, 0.17388963982252337),
            (vec![3.1, 2.9, 3.4, 3.0, 3.25], 3.13, 0.1987460691435179, 0.2467758388400223),
        ];
        for (xs, mean, sd, half_width) in cases {
            let ci = mean_ci(&xs);
            assert_eq!(ci.n, xs.len());
            assert_rel(ci.mean, mean, 1e-9);
            assert_rel(ci.sd, sd, 1e-9);
            assert_rel(ci.half_width.unwrap(), half_width, 1e-6);
        }
    }

    #[test]
    fn one_value_has_no_interval() {
        let ci = mean_ci(&[2.5]);
        assert_eq!((ci.n, ci.mean, ci.half_width), (1, 2.5, None));
        assert!(ci.sd.is_nan());
        assert!(mean_ci(&[]).mean.is_nan());
    }

    /// Reference values from scipy 1.17.1:
    /// python -c 'import numpy as np, scipy.stats as st; a=[2.31,2.45,2.38]
    /// for b in [[2.36,2.47,2.44],[2.35,2.50,2.42]]:
    ///     ci=st.ttest_rel(a,b).confidence_interval(0.95)
    ///     print(repr(np.mean(np.array(a)-np.array(b))), repr((ci.high-ci.low)/2))'
    #[test]
    fn paired_comparison_matches_scipy() {
        let a = [(1, 2.31), (2, 2.45), (3, 2.38)];
        let within_noise = [(1, 2.36), (2, 2.47), (3, 2.44)];
        let c = compare_pair(&a, &within_noise);
        assert_eq!(c.method, PairMethod::Paired);
        assert_rel(c.delta, -0.0433333333333333, 1e-9);
        assert_rel(c.half_width.unwrap(), 0.05171145012542258, 1e-6);
        assert_eq!(
            c.verdict("dense", "mamba"),
            "difference within noise: Δ = -0.043 ± 0.052 nats (paired over 3 seeds)"
        );

        // Listed in another order: pairing goes by seed, not by position.
        let clear = [(3, 2.42), (1, 2.35), (2, 2.50)];
        let c = compare_pair(&a, &clear);
        assert_eq!(c.method, PairMethod::Paired);
        assert_rel(c.delta, -0.0433333333333333, 1e-9);
        assert_rel(c.half_width.unwrap(), 0.014342175765831236, 1e-6);
        assert_eq!(
            c.verdict("dense", "mamba"),
            "dense beats mamba by 0.043 ± 0.014 nats (paired over 3 seeds)"
        );
        assert_eq!(compare_pair(&clear, &a).verdict("mamba", "dense"), c.verdict("dense", "mamba"));
    }

    /// Reference values from scipy 1.17.1:
    /// python -c 'import numpy as np, scipy.stats as st; a=[2.31,2.45,2.38]; b=[2.40,2.52,2.47,2.55]
    /// r=st.ttest_ind(a,b,equal_var=False); ci=r.confidence_interval(0.95)
    /// print(repr(np.mean(a)-np.mean(b)), repr((ci.high-ci.low)/2), repr(r.df))'
    /// → -0.10500000000000043 0.1409962255356756 4.266814784891937
    #[test]
    fn welch_comparison_matches_scipy() {
        let a = [(1, 2.31), (2, 2.45), (3, 2.38)];
        let b = [(1, 2.40), (2, 2.52), (3, 2.47), (4, 2.55)];
        let c = compare_pair(&a, &b);
        assert_eq!((c.method, c.n_a, c.n_b), (PairMethod::Welch, 3, 4));
        assert_rel(c.delta, -0.10500000000000043, 1e-9);
        assert_rel(c.half_width.unwrap(), 0.1409962255356756, 1e-6);
        assert_eq!(
            c.verdict("a", "b"),
            "difference within noise: Δ = -0.105 ± 0.141 nats (Welch, 3 vs 4 seeds)"
        );
    }

    #[test]
    fn single_seeds_and_diverged_runs_give_no_interval() {
        let c = compare_pair(&[(1, 2.0)], &[(1, 2.1)]);
        assert_eq!(c.method, PairMethod::None);
        assert!(c.verdict("a", "b").starts_with("one seed each: no confidence interval (use --seeds 3)"));

        // A diverged seed is dropped, leaving one value on that side.
        let c = compare_pair(&[(1, 2.0), (2, 2.1)], &[(1, f64::NAN), (2, 2.3)]);
        assert_eq!((c.method, c.n_a, c.n_b), (PairMethod::None, 2, 1));
        assert!(c.verdict("a", "b").starts_with("too few seeds"));

        let c = compare_pair(&[(1, 2.0)], &[(1, f64::INFINITY)]);
        assert_eq!(c.verdict("a", "b"), "no comparison: b has no finite validation loss");
    }

    #[test]
    fn tiny_differences_keep_significant_digits() {
        let c = PairComparison {
            delta: -0.00042,
            half_width: Some(0.00011),
            method: PairMethod::Paired,
            n_a: 3,
            n_b: 3,
        };
        assert_eq!(c.verdict("a", "b"), "a beats b by 0.00042 ± 0.00011 nats (paired over 3 seeds)");
    }
}
