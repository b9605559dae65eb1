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
        "Measured on {} in {} precision ({}) with {} tokens per training step (batch × T held fixed \
         where possible; the batch shrinks, down to 1, as T grows), training on {}. Peak memory is \
         each measurement's own process: device memory on a GPU, resident set size on the CPU.",
        bench.device,
        bench.precision,
        match bench.matmul.as_str() {
            crate::kernels::AUTOTUNE_MATMUL => "burn's autotuned matmuls".to_string(),
            "cpu" => "the CPU backend's matmuls".to_string(),
            forced => format!("every model matmul through CubeCL's `{forced}` strategy"),
        },
        bench.tokens_per_step,
        bench.tokens.as_deref().map_or("random token ids".to_string(), |f| format!("the batches of `{f}`"))
    ));
    doc.paragraph(
        "Warm-up is the first training step alone (kernel compilation and autotuning on a GPU, \
         allocator growth, optimizer state); it is not in the throughput. Train tok/s is the mean \
         over the timed steps that follow, Median step their median time, each step synchronised \
         with the device.",
    );
    doc.paragraph(format!("MFU: achieved TFLOP/s = FLOPs/token × train tok/s; {}.", mfu_basis(bench)));
    if !bench.flops_formula.is_empty() {
        doc.paragraph(format!("FLOPs: {}.", bench.flops_formula));
    }
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
        "Median step",
        "Warm-up",
        "TFLOP/s",
        "MFU",
        "Peak memory",
        "Prefill tok/s",
        "Decode tok/s",
        "Status",
    ])
    .numeric(1..=10);
    for p in &bench.points {
        let missing = match p.status {
            BenchStatus::Ok => "n/a (not measured)",
            BenchStatus::OutOfMemory => "n/a (OOM)",
            BenchStatus::Failed(_) => "n/a (failed)",
        };
        let rate = |v: Option<f64>| v.filter(|x| x.is_finite()).map_or(missing.to_string(), human);
        let time = |v: Option<f64>| v.filter(|x| x.is_finite()).map_or(missing.to_string(), format_step_time);
        // Older bench.json files have no median: show the mean step time rather than nothing.
        let step = p.median_step_s.or(p.step_time_s);
        let mfu = match (p.mfu, &p.status) {
            (Some(m), _) if m.is_finite() => format!("{:.1}%", m * 100.0),
            (_, BenchStatus::Ok) if p.achieved_tflops.is_some() => "n/a (no peak)".to_string(),
            _ => missing.to_string(),
        };
        t.row(vec![
            p.arch.clone(),
            p.seq_len.to_string(),
            p.batch.to_string(),
            rate(p.train_tokens_per_s),
            time(step),
            time(p.warmup_s),
            p.achieved_tflops.filter(|x| x.is_finite()).map_or(missing.to_string(), format_tflops),
            mfu,
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

/// Three significant digits: a CPU reaches hundredths of a TFLOP/s, a GPU hundreds.
fn format_tflops(x: f64) -> String {
    match x {
        x if x >= 100.0 => format!("{x:.0}"),
        x if x >= 10.0 => format!("{x:.1}"),
        x if x >= 1.0 => format!("{x:.2}"),
        x if x >= 0.001 => format!("{x:.3}"),
        x => format!("{x:.1e}"),
    }
}

/// What MFU is measured against, or why it is not given.
fn mfu_basis(bench: &BenchResults) -> String {
    match bench.peak_tflops {
        Some(p) => format!("MFU = achieved / peak, peak {p} TFLOP/s ({})", bench.peak_source),
        None if bench.peak_source.is_empty() => "MFU not given (no peak recorded)".to_string(),
        None => format!("MFU not given: {}", bench.peak_source),
    }
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
