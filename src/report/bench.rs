//! The sequence-length scaling section (`archlab bench`): a table of every measured point and
//! throughput / memory / decoding charts against sequence length, with the points that ran
//! out of memory or failed marked on the charts and listed. Shared by `bench.md` and the
//! comparison report.

use crate::compare::results::{BenchPoint, BenchResults, BenchStatus};
use crate::train::{human, human_bytes};

use super::document::{Document, Table};
use super::plot::{LineChart, Series, line_chart};

/// Appends the scaling section's blocks (no heading) to `doc`.
pub fn append(doc: &mut Document, bench: &BenchResults) {
    doc.paragraph(format!(
        "Measured on {} in {} precision with {} tokens per training step (batch × T held fixed where \
         possible; the batch shrinks, down to 1, as T grows). Peak memory is each measurement's own \
         process: device memory on a GPU, resident set size on the CPU.",
        bench.device, bench.precision, bench.tokens_per_step
    ));
    doc.table(table(bench));

    let by_arch = points_by_arch(bench);
    doc.figure(
        "bench-throughput",
        "Training throughput against sequence length (log–log); crosses mark points that did not run.",
        line_chart(&throughput_chart(&by_arch)),
    );
    doc.figure(
        "bench-memory",
        "Peak memory against sequence length (log–log); crosses mark points that did not run.",
        line_chart(&memory_chart(&by_arch)),
    );
    if bench.points.iter().any(|p| p.decode_tokens_per_s.is_some()) {
        doc.figure(
            "bench-decode",
            "Decoding throughput (one token at a time with the KV cache / SSM state) against prompt length.",
            line_chart(&decode_chart(&by_arch)),
        );
    }

    let failures: Vec<String> = bench.points.iter().filter_map(failure_line).collect();
    if failures.is_empty() {
        doc.paragraph("Every point ran.");
    } else {
        doc.paragraph("Points that did not run:");
        doc.list(failures);
    }
}

pub fn table(bench: &BenchResults) -> Table {
    let mut t = Table::new([
        "Architecture",
        "T",
        "Batch",
        "Train tok/s",
        "Step time",
        "Peak memory",
        "Prefill tok/s",
        "Decode tok/s",
        "Status",
    ])
    .numeric(1..=7);
    for p in &bench.points {
        let missing = match p.status {
            BenchStatus::Ok => "n/a (not measured)",
            BenchStatus::OutOfMemory => "n/a (OOM)",
            BenchStatus::Failed(_) => "n/a (failed)",
        };
        let rate = |v: Option<f64>| v.filter(|x| x.is_finite()).map_or(missing.to_string(), human);
        t.row(vec![
            p.arch.clone(),
            p.seq_len.to_string(),
            p.batch.to_string(),
            rate(p.train_tokens_per_s),
            p.step_time_s.filter(|x| x.is_finite()).map_or(missing.to_string(), format_step_time),
            p.peak_memory_bytes.filter(|&b| b > 0).map_or(missing.to_string(), human_bytes),
            rate(p.prefill_tokens_per_s),
            rate(p.decode_tokens_per_s),
            status_text(&p.status),
        ]);
    }
    t
}

fn format_step_time(s: f64) -> String {
    if s < 1.0 { format!("{:.1} ms", s * 1e3) } else { format!("{s:.2} s") }
}

pub fn status_text(status: &BenchStatus) -> String {
    match status {
        BenchStatus::Ok => "ok".into(),
        BenchStatus::OutOfMemory => "out of memory".into(),
        BenchStatus::Failed(msg) if msg.trim().is_empty() => "failed".into(),
        BenchStatus::Failed(msg) => format!("failed: {}", msg.trim()),
    }
}

fn failure_line(p: &BenchPoint) -> Option<String> {
    match &p.status {
        BenchStatus::Ok => None,
        other => Some(format!("{} at T = {} (batch {}): {}", p.arch, p.seq_len, p.batch, status_text(other))),
    }
}

/// Points grouped by architecture (in order of first appearance), each sorted by sequence length.
fn points_by_arch(bench: &BenchResults) -> Vec<(&str, Vec<&BenchPoint>)> {
    let mut groups: Vec<(&str, Vec<&BenchPoint>)> = Vec::new();
    for p in &bench.points {
        match groups.iter_mut().find(|g| g.0 == p.arch) {
            Some(g) => g.1.push(p),
            None => groups.push((&p.arch, vec![p])),
        }
    }
    for g in &mut groups {
        g.1.sort_by_key(|p| p.seq_len);
    }
    groups
}

/// A log–log chart of `value` against T, one series per architecture, with the points that
/// did not run marked at their T.
fn scaling_chart(
    by_arch: &[(&str, Vec<&BenchPoint>)],
    title: &str,
    y_label: &str,
    value: impl Fn(&BenchPoint) -> Option<f64>,
) -> LineChart {
    let series = by_arch
        .iter()
        .map(|(arch, points)| Series {
            name: arch.to_string(),
            points: points
                .iter()
                .filter(|p| p.status == BenchStatus::Ok)
                .filter_map(|p| Some((p.seq_len as f64, value(p)?)))
                .collect(),
            band: Vec::new(),
        })
        .collect();
    let markers = by_arch
        .iter()
        .flat_map(|(arch, points)| points.iter().map(move |p| (arch, p)))
        .filter_map(|(arch, p)| {
            let what = match p.status {
                BenchStatus::Ok => return None,
                BenchStatus::OutOfMemory => "OOM",
                BenchStatus::Failed(_) => "failed",
            };
            Some((format!("{arch} {what}"), p.seq_len as f64, f64::NAN))
        })
        .collect();
    LineChart {
        title: title.into(),
        x_label: "sequence length T (tokens)".into(),
        y_label: y_label.into(),
        x_log: true,
        y_log: true,
        series,
        markers,
    }
}

fn throughput_chart(by_arch: &[(&str, Vec<&BenchPoint>)]) -> LineChart {
    scaling_chart(by_arch, "Training throughput vs sequence length", "tokens / s", |p| p.train_tokens_per_s)
}

/// Memory in MiB, or GiB when some point needs more than one: byte counts with SI tick
/// suffixes ("1G") would read as decimal gigabytes.
fn memory_chart(by_arch: &[(&str, Vec<&BenchPoint>)]) -> LineChart {
    let max = by_arch.iter().flat_map(|g| &g.1).filter_map(|p| p.peak_memory_bytes).max().unwrap_or(0);
    let (unit, divisor) =
        if max >= 1 << 30 { ("GiB", (1u64 << 30) as f64) } else { ("MiB", (1u64 << 20) as f64) };
    scaling_chart(by_arch, "Peak memory vs sequence length", &format!("peak memory ({unit})"), |p| {
        p.peak_memory_bytes.filter(|&b| b > 0).map(|b| b as f64 / divisor)
    })
}

fn decode_chart(by_arch: &[(&str, Vec<&BenchPoint>)]) -> LineChart {
    scaling_chart(by_arch, "Decoding throughput vs prompt length", "tokens / s", |p| p.decode_tokens_per_s)
}
