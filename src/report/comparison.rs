//! The comparison report's content, section by section, built from [`ComparisonResults`]
//! alone (so `archlab report DIR` can redraw it without a model).

use std::collections::{BTreeMap, HashSet};

use crate::compare::results::{ArchResult, ComparisonResults, SeedRun};
use crate::compare::stats::{MeanCi, compare_pair, mean_ci};
use crate::eval::health::LayerHealth;
use crate::model::mixer::Diagnostic;
use crate::train::{human, human_bytes};

use super::document::{Document, Table};
use super::plot::{BarChart, LineChart, Series, bar_chart, line_chart};

/// The ten columns of the main results table, in order.
pub const RESULT_COLUMNS: [&str; 10] = [
    "Architecture",
    "Params (active)",
    "Val loss ± 95% CI",
    "PPL",
    "bits/byte",
    "Tokens/s",
    "Peak memory",
    "Wall time",
    "NaN skips",
    "Notes",
];

pub fn document(r: &ComparisonResults) -> Document {
    let mut doc = Document::new(&r.title);
    let slugs = unique_slugs(&r.archs);
    if !r.missing.is_empty() {
        doc.heading("Incomplete");
        doc.paragraph(format!(
            "{} runs had not finished when this report was drawn; it covers only those that had \
             (an architecture with an unfinished learning-rate grid is left out). Not finished:",
            r.missing.len()
        ));
        doc.list(r.missing.clone());
    }
    settings(&mut doc, r);
    size_matching(&mut doc, r);
    results(&mut doc, r);
    verdicts(&mut doc, r);
    if r.task.is_some() {
        accuracy(&mut doc, r);
    }
    lr_grids(&mut doc, r);
    loss_curves(&mut doc, r);
    diagnostics(&mut doc, r, &slugs);
    health(&mut doc, r);
    if let Some(bench) = &r.bench {
        doc.heading("Sequence-length scaling");
        super::bench::append(&mut doc, bench);
    }
    samples(&mut doc, r);
    doc
}

// ---------------------------------------------------------------------------------------------
// Settings and size matching
// ---------------------------------------------------------------------------------------------

fn settings(doc: &mut Document, r: &ComparisonResults) {
    doc.heading("Settings");
    doc.paragraph("Shared by every run:");
    let mut t = Table::new(["Setting", "Value"]);
    for (key, value) in &r.settings {
        t.row(vec![filled(key), filled(value)]);
    }
    if let Some(task) = &r.task {
        t.row(vec!["task".into(), filled(task)]);
    }
    if let Some(first) = r.archs.first() {
        let seeds: Vec<String> = first.runs.iter().map(|run| run.seed.to_string()).collect();
        let seeds = if seeds.is_empty() { "n/a (no runs)".to_string() } else { seeds.join(", ") };
        t.row(vec!["seed values".into(), seeds]);
    }
    doc.table(t);
}

fn size_matching(doc: &mut Document, r: &ComparisonResults) {
    doc.heading("Size matching");
    doc.paragraph(format!(
        "Every architecture was sized to the same {} budget of {}: one knob per architecture was \
         set so that the achieved value comes closest to it.",
        match_by_words(&r.match_by),
        if r.match_by == "state" { human_bytes(r.budget as u64) } else { human(r.budget) }
    ));
    let mut t = Table::new([
        "Architecture",
        "Pattern",
        "Knob",
        "Achieved",
        "Error",
        "Params (total)",
        "Params (non-embedding)",
        "Train FLOPs/token",
        "Decoding state",
    ])
    .numeric(3..=8);
    for a in &r.archs {
        t.row(vec![
            a.name.clone(),
            filled(&a.pattern),
            filled(&a.knob),
            if r.match_by == "state" { human_bytes(a.achieved as u64) } else { human(a.achieved) },
            format!("{:+.2}%", 100.0 * a.budget_error),
            human(a.params_total as f64),
            human(a.params_non_embedding as f64),
            human(a.train_flops_per_token),
            a.state_bytes.map_or("n/a (not recorded)".into(), |b| human_bytes(b as u64)),
        ]);
    }
    doc.table(t);
}

fn match_by_words(match_by: &str) -> String {
    match match_by {
        "params" => "parameter".into(),
        "active" => "active-parameter".into(),
        "flops" => "training-FLOPs-per-token".into(),
        "state" => "decoding-state (bytes per sequence at the training length)".into(),
        other => format!("`{other}`"),
    }
}

// ---------------------------------------------------------------------------------------------
// The results table
// ---------------------------------------------------------------------------------------------

fn results(doc: &mut Document, r: &ComparisonResults) {
    doc.heading("Results");
    doc.paragraph(
        "Final validation loss: mean over seeds ± the half-width of its 95% confidence interval \
         (Student t). PPL is exp(mean loss); throughput and wall time are means over seeds, peak \
         memory the largest, NaN skips the total.",
    );
    let mut t = Table::new(RESULT_COLUMNS).numeric(1..=8);
    for a in &r.archs {
        t.row(result_row(a, r.task.is_some()));
    }
    doc.table(t);
}

fn result_row(a: &ArchResult, task: bool) -> Vec<String> {
    let no_runs = a.runs.is_empty();
    let missing = |why: &str| if no_runs { "n/a (no runs)".to_string() } else { format!("n/a ({why})") };
    let loss = loss_ci(a);
    let summaries = || a.runs.iter().map(|run| &run.summary);

    let loss_cell = match (loss.n, loss.half_width) {
        (0, _) => missing("no finite loss"),
        (_, Some(hw)) => format!("{:.4} ± {hw:.4}", loss.mean),
        (_, None) => format!("{:.4} ± n/a (1 seed)", loss.mean),
    };
    let ppl = if loss.n == 0 { missing("no finite loss") } else { format!("{:.2}", loss.mean.exp()) };
    let bpb = if task {
        "n/a (task)".to_string()
    } else {
        finite_mean(summaries().map(|s| s.final_val_bpb))
            .map_or_else(|| missing("no finite value"), |v| format!("{v:.4}"))
    };
    let tokens_per_s = finite_mean(summaries().map(|s| s.steady_tokens_per_s).filter(|&v| v > 0.0))
        .map_or_else(|| missing("not measured"), human);
    let peak = summaries().map(|s| s.peak_memory_bytes).max().filter(|&b| b > 0);
    let peak = peak.map_or_else(|| missing("not measured"), human_bytes);
    let wall =
        finite_mean(summaries().map(|s| s.wall_time_s)).map_or_else(|| missing("not recorded"), duration);
    let nan_skips = summaries().map(|s| s.nan_skips).sum::<usize>().to_string();

    vec![a.name.clone(), params_cell(a), loss_cell, ppl, bpb, tokens_per_s, peak, wall, nan_skips, notes(a)]
}

/// "4.10M (1.20M)" for a mixture of experts, "1.20M" when every parameter is active.
fn params_cell(a: &ArchResult) -> String {
    if a.params_active == 0 || a.params_active == a.params_total {
        human(a.params_total as f64)
    } else {
        format!("{} ({})", human(a.params_total as f64), human(a.params_active as f64))
    }
}

fn loss_ci(a: &ArchResult) -> MeanCi {
    a.loss_ci()
}

fn seed_losses(a: &ArchResult) -> Vec<(u64, f64)> {
    a.runs.iter().map(|r| (r.seed, r.summary.final_val_loss)).collect()
}

fn finite_mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let finite: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
}

fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

/// `text`, or "n/a" when empty: no table cell is ever blank.
fn filled(text: &str) -> String {
    if text.trim().is_empty() { "n/a".into() } else { text.to_string() }
}

// ---------------------------------------------------------------------------------------------
// Notes
// ---------------------------------------------------------------------------------------------

/// What else a reader should know about an architecture's runs, "; "-separated; never empty
/// (the learning rate is always there).
fn notes(a: &ArchResult) -> String {
    let mut notes = vec![lr_note(a)];
    let diverged = a.diverged_seeds();
    if diverged > 0 {
        notes.push(format!("{diverged} of {} seeds diverged (left out)", a.runs.len()));
    }
    notes.extend(health_note(a));
    notes.extend(diagnostics_note(a));
    notes.join("; ")
}

fn lr_note(a: &ArchResult) -> String {
    if a.lr_trials.is_empty() {
        format!("lr {}", lr(a.lr))
    } else {
        let grid: Vec<String> = a.lr_trials.iter().map(|t| lr(t.lr)).collect();
        format!("lr {} (best of grid {})", lr(a.lr), grid.join(", "))
    }
}

/// A learning rate in short scientific notation: 3e-3, 6.25e-4.
fn lr(x: f64) -> String {
    format!("{x:e}")
}

fn health_note(a: &ArchResult) -> Option<String> {
    let layers = health_by_layer(a);
    if layers.is_empty() {
        return None;
    }
    let problems: Vec<String> = layers
        .iter()
        .flat_map(|(layer, probes)| {
            let mixer = &probes[0].mixer;
            let leaks =
                probes.iter().any(|p| !p.causal).then(|| format!("layer {layer} ({mixer}) not causal"));
            let inert =
                probes.iter().any(|p| !p.mixes).then(|| format!("layer {layer} ({mixer}) does not mix"));
            leaks.into_iter().chain(inert)
        })
        .collect();
    Some(if problems.is_empty() { "health ok".into() } else { format!("HEALTH: {}", problems.join(", ")) })
}

/// The headline quantities the mixers report ([`Diagnostic::headline`]), each as its range
/// over layers and seeds beside its reference value, e.g. "hymba attention β 0.81–0.92 (ref
/// 1)", "moe load evenness 0.987".
fn diagnostics_note(a: &ArchResult) -> Option<String> {
    let mut groups: Vec<(String, Vec<f64>, Option<f64>)> = Vec::new(); // (mixer + name, values, reference)
    for d in a.runs.iter().flat_map(|r| r.summary.all_diagnostics()).filter(|d| d.headline) {
        let key = format!("{} {}", d.mixer, d.name);
        match groups.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, values, _)) => values.push(d.value),
            None => groups.push((key, vec![d.value], d.reference)),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(key, values, reference)| {
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let range = if compact(lo) == compact(hi) {
                compact(lo)
            } else {
                format!("{}–{}", compact(lo), compact(hi))
            };
            let reference = reference.map(|r| format!(" (ref {})", compact(r))).unwrap_or_default();
            format!("{key} {range}{reference}")
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Verdicts
// ---------------------------------------------------------------------------------------------

/// Architectures ordered best first by mean final validation loss (those without one last).
fn ranked(r: &ComparisonResults) -> Vec<(&ArchResult, MeanCi)> {
    let mut ranked: Vec<(&ArchResult, MeanCi)> = r.archs.iter().map(|a| (a, loss_ci(a))).collect();
    let key = |ci: &MeanCi| if ci.mean.is_finite() { ci.mean } else { f64::INFINITY };
    ranked.sort_by(|x, y| key(&x.1).total_cmp(&key(&y.1)));
    ranked
}

fn verdicts(doc: &mut Document, r: &ComparisonResults) {
    doc.heading("Verdicts");
    if r.archs.len() < 2 {
        doc.paragraph("Only one architecture: nothing to compare.");
        return;
    }
    let ranked = ranked(r);
    let order: Vec<String> = ranked
        .iter()
        .map(
            |(a, ci)| {
                if ci.n == 0 { format!("{} (n/a)", a.name) } else { format!("{} ({:.4})", a.name, ci.mean) }
            },
        )
        .collect();
    doc.paragraph(format!(
        "By mean final validation loss, best first: {}. Each pair: the difference of mean losses with \
         its 95% confidence interval, paired by seed when both ran the same seeds (same data order), \
         else Welch's interval.",
        order.join(", ")
    ));
    let mut lines = Vec::new();
    for (i, (a, _)) in ranked.iter().enumerate() {
        for (b, _) in &ranked[i + 1..] {
            let verdict = compare_pair(&seed_losses(a), &seed_losses(b)).verdict(&a.name, &b.name);
            lines.push(format!("{} vs {}: {verdict}", a.name, b.name));
        }
    }
    doc.list(lines);
}

// ---------------------------------------------------------------------------------------------
// Synthetic-task accuracy
// ---------------------------------------------------------------------------------------------

fn accuracy(doc: &mut Document, r: &ComparisonResults) {
    doc.heading("Accuracy");
    doc.paragraph(
        "On a synthetic task bits per byte mean nothing; what counts is whether the answer tokens \
         are right. Token accuracy: fraction of answer tokens predicted exactly; sequence accuracy: \
         fraction of sequences with every answer token right. Means over seeds, in percent.",
    );
    let mut t = Table::new(["Architecture", "Answer-token accuracy ± 95% CI", "Seeds"]).numeric(1..=2);
    for a in &r.archs {
        t.row(vec![a.name.clone(), accuracy_cell(a), final_accuracies(a).len().to_string()]);
    }
    doc.table(t);
    accuracy_vs_state(doc, r);

    let by_length: Vec<(&ArchResult, AccuracyByLength)> =
        r.archs.iter().map(|a| (a, length_accuracy(a))).filter(|(_, m)| !m.is_empty()).collect();
    if by_length.is_empty() {
        doc.paragraph("No accuracy by sequence length was recorded.");
        return;
    }
    doc.subheading("Length generalisation");
    let mut t = Table::new(["Architecture", "Seq len", "Token accuracy", "Chance", "Sequence accuracy"])
        .numeric(1..=4);
    let percent = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{:.2}%", 100.0 * v));
    for (a, lengths) in &by_length {
        for (seq_len, m) in &lengths.by_len {
            t.row(vec![
                a.name.clone(),
                seq_len.to_string(),
                percent(Some(m.token)),
                percent(m.chance),
                percent(Some(m.sequence)),
            ]);
        }
    }
    doc.table(t);
    let verdicts: Vec<String> = by_length.iter().filter_map(|(a, l)| l.extrapolation(&a.name)).collect();
    if !verdicts.is_empty() {
        doc.paragraph(format!(
            "An architecture extrapolates when its token accuracy stays at {:.0}% or more at four times \
             the training length and beyond: {}.",
            100.0 * EXTRAPOLATES,
            verdicts.join("; ")
        ));
    }
    let series = by_length
        .iter()
        .map(|(a, lengths)| Series {
            name: a.name.clone(),
            points: lengths.by_len.iter().map(|(&t, m)| (t as f64, 100.0 * m.sequence)).collect(),
            band: Vec::new(),
        })
        .collect();
    let chart = LineChart {
        title: "Sequence accuracy vs length".into(),
        x_label: "sequence length (tokens)".into(),
        y_label: "sequence accuracy (%)".into(),
        x_log: true,
        y_log: false,
        series,
        markers: Vec::new(),
    };
    doc.figure(
        "accuracy-length",
        "Held-out sequence accuracy at the training length and longer ones (mean over seeds).",
        line_chart(&chart),
    );
}

/// An architecture's held-out answer-token accuracy, mean ± 95% CI over seeds, in percent.
fn accuracy_cell(a: &ArchResult) -> String {
    let ci = mean_ci(&final_accuracies(a));
    match (ci.n, ci.half_width) {
        (0, _) => "n/a (not recorded)".to_string(),
        (_, Some(hw)) => format!("{:.2}% ± {:.2}%", 100.0 * ci.mean, 100.0 * hw),
        (_, None) => format!("{:.2}% ± n/a (1 seed)", 100.0 * ci.mean),
    }
}

/// A task suite's overview (`compare --tasks`): every architecture's accuracy on every task,
/// and where each task's own report is.
pub fn suite_document(title: &str, suite: &[(String, ComparisonResults)]) -> Document {
    let mut doc = Document::new(title);
    doc.paragraph(
        "One comparison per task: the same architectures, sizes, seeds and settings, each task in a \
         directory of its own with its full report. Held-out answer-token accuracy at the training \
         length, mean ± 95% CI over seeds.",
    );
    doc.table(suite_table(suite));
    doc.list(
        suite.iter().map(|(task, r)| format!("task:{task}: `{task}/report.md` ({})", r.title)).collect(),
    );
    doc
}

/// Architectures down, tasks across: each cell the held-out answer-token accuracy.
pub fn suite_table(suite: &[(String, ComparisonResults)]) -> Table {
    let header =
        std::iter::once("Architecture".to_string()).chain(suite.iter().map(|(t, _)| format!("task:{t}")));
    let mut t = Table::new(header).numeric(1..=suite.len());
    let names: Vec<&String> =
        suite.first().map(|(_, r)| r.archs.iter().map(|a| &a.name).collect()).unwrap_or_default();
    for name in names {
        let cells = suite
            .iter()
            .map(|(_, r)| r.archs.iter().find(|a| &a.name == name).map_or("—".to_string(), accuracy_cell));
        t.row(std::iter::once(name.clone()).chain(cells).collect());
    }
    t
}

/// Each seed's held-out answer-token accuracy at the training length (the finite ones).
fn final_accuracies(a: &ArchResult) -> Vec<f64> {
    a.runs.iter().filter_map(|run| run.summary.final_val_accuracy).filter(|v| v.is_finite()).collect()
}

/// Zoology's figure (Arora et al. 2023, "Zoology", Fig. 2): answer-token accuracy at the
/// training length against the decoding state each architecture carries per sequence, one line
/// per architecture family: a sweep's points (`mamba d_state=4`, `mamba d_state=16`, … as an
/// experiment file labels them) join the line of the name before the first space.
fn accuracy_vs_state(doc: &mut Document, r: &ComparisonResults) {
    let mut families: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for a in &r.archs {
        let accuracy = mean_ci(&final_accuracies(a));
        let (Some(bytes), false) = (a.state_bytes, accuracy.n == 0) else { continue };
        let point = (bytes as f64, 100.0 * accuracy.mean);
        let family = a.name.split_whitespace().next().unwrap_or(&a.name).to_string();
        match families.iter_mut().find(|(f, _)| *f == family) {
            Some((_, points)) => points.push(point),
            None => families.push((family, vec![point])),
        }
    }
    if families.iter().map(|(_, points)| points.len()).sum::<usize>() < 2 {
        return;
    }
    let series = families
        .into_iter()
        .map(|(name, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { name, points, band: Vec::new() }
        })
        .collect();
    let chart = LineChart {
        title: "Accuracy vs decoding state".into(),
        x_label: "decoding state per sequence at the training length (bytes)".into(),
        y_label: "answer-token accuracy (%)".into(),
        x_log: true,
        y_log: false,
        series,
        markers: Vec::new(),
    };
    doc.figure(
        "accuracy-state",
        "Held-out answer-token accuracy at the training length (mean over seeds) against each \
         architecture's decoding state per sequence (f32, at the training length): the recall a \
         given memory buys, as in Zoology's figure 2.",
        line_chart(&chart),
    );
}

/// Token accuracy at every length from four times the training length on that an
/// architecture must keep to be called extrapolating.
const EXTRAPOLATES: f64 = 0.9;

/// Mean accuracies over seeds at one evaluated length.
struct LengthMeans {
    token: f64,
    sequence: f64,
    chance: Option<f64>,
}

/// An architecture's accuracy by evaluated sequence length, and the length it trained at
/// (`None` in summaries that did not record it).
struct AccuracyByLength {
    by_len: BTreeMap<usize, LengthMeans>,
    trained: Option<usize>,
}

impl AccuracyByLength {
    fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }

    /// "`name`: yes/no (token accuracy … at …)", when lengths of 4× the training one were
    /// evaluated.
    fn extrapolation(&self, name: &str) -> Option<String> {
        let trained = self.trained?;
        let far: Vec<(usize, f64)> =
            self.by_len.iter().filter(|&(&t, _)| t >= 4 * trained).map(|(&t, m)| (t, m.token)).collect();
        let &(worst_len, worst) = far.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
        let verdict = if worst >= EXTRAPOLATES { "yes" } else { "no" };
        Some(format!("{name}: {verdict} (lowest token accuracy {:.1}% at T = {worst_len})", 100.0 * worst))
    }
}

fn length_accuracy(a: &ArchResult) -> AccuracyByLength {
    let mut sums: BTreeMap<usize, (f64, f64, Option<f64>, usize)> = BTreeMap::new();
    let mut trained = None;
    for l in a.runs.iter().flat_map(|r| &r.summary.length_accuracy) {
        let s = sums.entry(l.seq_len).or_insert((0.0, 0.0, l.chance, 0));
        *s = (s.0 + l.token_accuracy, s.1 + l.sequence_accuracy, s.2.or(l.chance), s.3 + 1);
        if l.trained {
            trained = Some(l.seq_len);
        }
    }
    let by_len = sums
        .into_iter()
        .map(|(t, (tok, seq, chance, n))| {
            (t, LengthMeans { token: tok / n as f64, sequence: seq / n as f64, chance })
        })
        .collect();
    AccuracyByLength { by_len, trained }
}

// ---------------------------------------------------------------------------------------------
// Learning-rate grids
// ---------------------------------------------------------------------------------------------

fn lr_grids(doc: &mut Document, r: &ComparisonResults) {
    let with_grid: Vec<&ArchResult> = r.archs.iter().filter(|a| !a.lr_trials.is_empty()).collect();
    if with_grid.is_empty() {
        return;
    }
    doc.heading("Learning-rate grid");
    doc.paragraph(
        "Each architecture's learning rate was chosen by a grid on the first seed, on a held-out \
         selection set (the end of the validation split) that no reported loss is scored on; the \
         winner was then used on every seed, its grid run kept as the first.",
    );
    let mut t =
        Table::new(["Architecture", "Learning rate", "Selection loss", "Val loss (first seed)", "Chosen"])
            .numeric(1..=3);
    let loss = |v: f64| if v.is_finite() { format!("{v:.4}") } else { "diverged".into() };
    for a in with_grid {
        for trial in &a.lr_trials {
            // Comparisons written before the selection set chose on the validation loss.
            let selection = trial.selection_loss.map(loss).unwrap_or_else(|| "— (chose on val)".into());
            let chosen = if trial.lr == a.lr { "yes" } else { "no" };
            t.row(vec![a.name.clone(), lr(trial.lr), selection, loss(trial.val_loss), chosen.into()]);
        }
    }
    doc.table(t);
}

// ---------------------------------------------------------------------------------------------
// Plots: loss curves, MoE load, Hymba scales
// ---------------------------------------------------------------------------------------------

fn loss_curves(doc: &mut Document, r: &ComparisonResults) {
    let series: Vec<Series> = r.archs.iter().map(|a| curve_series(&a.name, &a.runs)).collect();
    if series.iter().all(|s| s.points.is_empty()) {
        return;
    }
    doc.heading("Validation loss");
    let chart = LineChart {
        title: "Validation loss vs tokens".into(),
        x_label: "training tokens".into(),
        y_label: "validation loss (nats, log scale)".into(),
        x_log: false,
        y_log: true,
        series,
        markers: Vec::new(),
    };
    doc.figure(
        "val-loss",
        "Validation loss against training tokens: the mean over seeds, shaded from the lowest to the highest seed.",
        line_chart(&chart),
    );
}

/// The mean curve over seeds, with a min–max band where at least two seeds were evaluated.
fn curve_series(name: &str, runs: &[SeedRun]) -> Series {
    let mut at: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for p in runs.iter().flat_map(|r| &r.curve).filter(|p| p.val_loss.is_finite()) {
        at.entry(p.tokens).or_default().push(p.val_loss);
    }
    let mut series = Series { name: name.to_string(), points: Vec::new(), band: Vec::new() };
    for (tokens, losses) in at {
        let x = tokens as f64;
        series.points.push((x, losses.iter().sum::<f64>() / losses.len() as f64));
        if losses.len() >= 2 {
            let lo = losses.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = losses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            series.band.push((x, lo, hi));
        }
    }
    series
}

/// What the mixers report about themselves (`Summary::diagnostics`: Hymba's branch scales, an
/// MoE layer's expert loads, …): a table, and per architecture and mixer a chart of the
/// quantities that have a reference value, layer by layer. Nothing here knows which mixer
/// reported what.
fn diagnostics(doc: &mut Document, r: &ComparisonResults, slugs: &[String]) {
    let reported: Vec<(usize, &ArchResult, &SeedRun, Vec<Diagnostic>)> = r
        .archs
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let run = a.runs.first()?;
            let d = run.summary.all_diagnostics();
            (!d.is_empty()).then_some((i, a, run, d))
        })
        .collect();
    if reported.is_empty() {
        return;
    }
    doc.heading("Mixer diagnostics");
    doc.paragraph(
        "What each layer's mixers report about themselves at the end of the first seed's run, beside \
         a reference value: for a learned gate or scale its initial value (one that collapses \
         towards 0 has been switched off by training, one that never moved is not learning), for a \
         statistic its ideal (an even router gives each expert 1/E). Hymba: β is the mean \
         per-channel scale of a branch, |Δβ| its mean per-channel distance from the initial value. \
         MoE: load is an expert's share of the routed (token, expert) assignments over the whole run; \
         evenness is the load's entropy over ln E (1 = even).",
    );
    let mut t =
        Table::new(["Architecture", "Layer", "Mixer", "Quantity", "Value", "Reference"]).numeric(4..=5);
    for (_, a, _, diagnostics) in &reported {
        for d in diagnostics {
            t.row(vec![
                a.name.clone(),
                d.layer.to_string(),
                d.mixer.clone(),
                d.name.clone(),
                compact(d.value),
                d.reference.map(compact).unwrap_or_default(),
            ]);
        }
    }
    doc.table(t);
    for (i, a, run, diagnostics) in reported {
        let mut mixers: Vec<&str> = Vec::new();
        for d in diagnostics.iter().filter(|d| d.reference.is_some()) {
            if !mixers.contains(&d.mixer.as_str()) {
                mixers.push(&d.mixer);
            }
        }
        for mixer in &mixers {
            let charted: Vec<&Diagnostic> =
                diagnostics.iter().filter(|d| d.reference.is_some() && d.mixer == *mixer).collect();
            let mut groups: Vec<(String, Vec<(String, f64)>)> = Vec::new();
            for d in &charted {
                let group = format!("layer {}", d.layer);
                match groups.iter_mut().find(|(g, _)| *g == group) {
                    Some((_, bars)) => bars.push((d.name.clone(), d.value)),
                    None => groups.push((group, vec![(d.name.clone(), d.value)])),
                }
            }
            let reference = charted[0].reference.unwrap_or_default();
            let one_reference = charted.iter().all(|d| d.reference == Some(reference));
            let chart = BarChart {
                title: format!("{}: {mixer} diagnostics (seed {})", a.name, run.seed),
                y_label: "value".into(),
                groups,
                reference: one_reference.then(|| (format!("reference {}", compact(reference)), reference)),
            };
            // One chart per architecture keeps the name it has always had.
            let name = if mixers.len() == 1 {
                format!("diagnostics-{}", slugs[i])
            } else {
                format!("diagnostics-{}-{}", slugs[i], slug(mixer))
            };
            doc.figure(
                name,
                format!(
                    "{}: {mixer} diagnostics per layer; the dashed line is their reference value.",
                    a.name
                ),
                bar_chart(&chart),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------------

/// Each layer's probe results across seeds, by layer index.
fn health_by_layer(a: &ArchResult) -> BTreeMap<usize, Vec<&LayerHealth>> {
    let mut layers: BTreeMap<usize, Vec<&LayerHealth>> = BTreeMap::new();
    for h in a.runs.iter().flat_map(|r| &r.summary.health) {
        layers.entry(h.layer).or_default().push(h);
    }
    layers
}

fn health(doc: &mut Document, r: &ComparisonResults) {
    doc.heading("Health");
    let probed: Vec<(&ArchResult, BTreeMap<usize, Vec<&LayerHealth>>)> =
        r.archs.iter().map(|a| (a, health_by_layer(a))).filter(|(_, l)| !l.is_empty()).collect();
    if probed.is_empty() {
        doc.paragraph("No causality / mixing probe was recorded.");
        return;
    }
    doc.paragraph(
        "Each layer's sequence mixer, probed on the final weights: perturbing position p must leave \
         every earlier output unchanged (causal; max leak is the largest earlier change) and must \
         change some later one (mixes; reach is the largest later change). Counts are over seeds.",
    );
    let mut t =
        Table::new(["Architecture", "Layer", "Mixer", "Causal", "Mixes", "Max leak", "Reach (min–max)"])
            .numeric(1..=1)
            .numeric(5..=6);
    for (a, layers) in &probed {
        for (layer, probes) in layers {
            let n = probes.len();
            let causal = probes.iter().filter(|p| p.causal).count();
            let mixes = probes.iter().filter(|p| p.mixes).count();
            let leak = probes.iter().map(|p| p.max_leak).fold(0.0, f64::max);
            let reach_lo = probes.iter().map(|p| p.max_reach).fold(f64::INFINITY, f64::min);
            let reach_hi = probes.iter().map(|p| p.max_reach).fold(f64::NEG_INFINITY, f64::max);
            t.row(vec![
                a.name.clone(),
                layer.to_string(),
                filled(&probes[0].mixer),
                seed_count(causal, n),
                seed_count(mixes, n),
                compact(leak),
                if reach_lo == reach_hi {
                    compact(reach_lo)
                } else {
                    format!("{} – {}", compact(reach_lo), compact(reach_hi))
                },
            ]);
        }
    }
    doc.table(t);
    let unprobed: Vec<&str> = r
        .archs
        .iter()
        .filter(|a| !probed.iter().any(|(p, _)| p.name == a.name))
        .map(|a| a.name.as_str())
        .collect();
    if !unprobed.is_empty() {
        doc.paragraph(format!("Not probed: {}.", unprobed.join(", ")));
    }
}

/// Three significant digits, in scientific notation outside [0.001, 10⁴): "0", "0.31", "3.2e-7".
fn compact(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    if !(1e-3..1e4).contains(&x.abs()) {
        return format!("{x:.1e}");
    }
    let decimals = (2.0 - x.abs().log10().floor()).max(0.0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// "yes (3/3 seeds)", or "NO (1/3 seeds)" when any seed failed.
fn seed_count(passed: usize, n: usize) -> String {
    let word = if passed == n { "yes" } else { "NO" };
    format!("{word} ({passed}/{n} seeds)")
}

// ---------------------------------------------------------------------------------------------
// Samples
// ---------------------------------------------------------------------------------------------

fn samples(doc: &mut Document, r: &ComparisonResults) {
    doc.heading("Samples");
    doc.paragraph("Generated by each architecture's first seed (best checkpoint) from the same prompt.");
    for a in &r.archs {
        doc.subheading(a.name.clone());
        match a.sample.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(text) => doc.code(text),
            None => doc.paragraph("No sample was recorded."),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// File names
// ---------------------------------------------------------------------------------------------

/// A file-name-safe, distinct slug per architecture ("A*M" → "a-m"; repeats get "-2", "-3").
fn unique_slugs(archs: &[ArchResult]) -> Vec<String> {
    let mut used = HashSet::new();
    archs
        .iter()
        .map(|a| {
            let base = slug(&a.name);
            let mut candidate = base.clone();
            let mut k = 2;
            while !used.insert(candidate.clone()) {
                candidate = format!("{base}-{k}");
                k += 1;
            }
            candidate
        })
        .collect()
}

fn slug(name: &str) -> String {
    let raw: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let parts: Vec<&str> = raw.split('-').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() { "arch".into() } else { parts.join("-") }
}
