//! The comparison report: Markdown and self-contained HTML with SVG plots.
//!
//! The content is built once as a [`document::Document`] (sections, tables, figures) from the
//! results alone, then rendered to `report.md` (figures referenced as `plots/*.svg`) and
//! `report.html` (the same SVG inlined, so the page stands on its own). Every file is written
//! atomically: a report being regenerated is never seen half-written.

pub mod plot;

mod bench;
mod comparison;
mod document;
mod html;
mod markdown;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::compare::results::{BenchResults, ComparisonResults};
use crate::util::atomic;
use document::Document;

/// Writes `report.md`, `report.html` and `plots/*.svg` into `dir`; returns the files written.
pub fn write(dir: &Path, results: &ComparisonResults) -> Result<Vec<PathBuf>> {
    let doc = comparison::document(results);
    let mut written = vec![
        write_file(&dir.join("report.md"), &markdown::render(&doc))?,
        write_file(&dir.join("report.html"), &html::render(&doc))?,
    ];
    written.extend(write_figures(dir, &doc)?);
    Ok(written)
}

/// Writes a task suite's overview (`compare --tasks`) into `dir`: `report.md` and
/// `report.html`, one table of every architecture's accuracy on every task; returns the files.
pub fn write_suite(dir: &Path, title: &str, suite: &[(String, ComparisonResults)]) -> Result<Vec<PathBuf>> {
    let doc = comparison::suite_document(title, suite);
    Ok(vec![
        write_file(&dir.join("report.md"), &markdown::render(&doc))?,
        write_file(&dir.join("report.html"), &html::render(&doc))?,
    ])
}

/// The suite's accuracy table alone, as Markdown (what `compare --tasks` prints).
pub fn suite_table(suite: &[(String, ComparisonResults)]) -> String {
    markdown::table_text(&comparison::suite_table(suite))
}

/// Writes the sequence-length scaling report on its own: `bench.md` and `plots/bench-*.svg`
/// (throughput, memory, and decoding when inference was measured); returns the files written.
pub fn write_bench(dir: &Path, bench: &BenchResults) -> Result<Vec<PathBuf>> {
    let mut doc = Document::new("Sequence-length scaling");
    bench::append(&mut doc, bench);
    let mut written = vec![write_file(&dir.join("bench.md"), &markdown::render(&doc))?];
    written.extend(write_figures(dir, &doc)?);
    Ok(written)
}

/// The scaling table of `bench.md` alone, as Markdown (what `archlab bench` prints).
pub fn bench_table(bench: &BenchResults) -> String {
    markdown::table_text(&bench::table(bench))
}

/// How a bench point ended, in words ("ok", "out of memory", "failed: …").
pub fn bench_status(status: &crate::compare::results::BenchStatus) -> String {
    bench::status_text(status)
}

fn write_figures(dir: &Path, doc: &Document) -> Result<Vec<PathBuf>> {
    doc.figures().map(|f| write_file(&dir.join(f.path()), &f.svg)).collect()
}

fn write_file(path: &Path, text: &str) -> Result<PathBuf> {
    atomic::write(path, text.as_bytes())?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::json;

    use super::comparison::RESULT_COLUMNS;
    use super::*;
    use crate::compare::results::{ArchResult, BenchPoint, BenchStatus, CurvePoint, LrTrial, SeedRun};
    use crate::train::metrics::Summary;

    /// A fresh, empty directory per test (tests run in parallel).
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("archlab-report-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A run summary. Built from JSON so that fields added to `Summary` later with a serde
    /// default do not break these tests.
    fn summary(loss: f64, extra: serde_json::Value) -> Summary {
        let mut value = json!({
            "final_val_loss": loss, "final_val_ppl": loss.exp(), "final_val_bpb": loss / 2f64.ln() / 3.7,
            "best_val_loss": loss, "best_step": 300, "steps": 300, "tokens_seen": 614_400,
            "params_total": 900_000, "params_non_embedding": 850_000, "params_embedding": 50_000,
            "params_active": 900_000, "train_flops_per_token": 5.4e6, "wall_time_s": 198.0,
            "steady_tokens_per_s": 3300.0, "warmup_time_s": 4.0, "peak_memory_bytes": 226_492_416u64,
            "peak_memory_kind": "rss", "nan_skips": 1, "device": "cpu", "precision": "f32",
            "health": [
                {"layer": 0, "mixer": "attention", "causal": true, "max_leak": 0.0, "mixes": true, "max_reach": 0.31},
                {"layer": 1, "mixer": "mamba", "causal": true, "max_leak": 0.0, "mixes": true, "max_reach": 0.12}
            ]
        });
        let fields = value.as_object_mut().unwrap();
        for (k, v) in extra.as_object().unwrap() {
            fields.insert(k.clone(), v.clone());
        }
        serde_json::from_value(value).unwrap()
    }

    fn run(seed: u64, loss: f64, extra: serde_json::Value) -> SeedRun {
        let curve = (0..=6)
            .map(|i| CurvePoint {
                step: 50 * i,
                tokens: 102_400 * i as u64,
                val_loss: loss + 3.0 * (-(i as f64) / 1.5).exp() + 0.01 * seed as f64,
            })
            .collect();
        SeedRun { seed, dir: format!("run-{seed}"), summary: summary(loss, extra), curve }
    }

    fn arch(name: &str, losses: [f64; 2], extra: serde_json::Value) -> ArchResult {
        ArchResult {
            name: name.into(),
            pattern: "AFMF".into(),
            knob: "d_model 120, d_ff 344".into(),
            achieved: 901_000.0,
            budget_error: 0.0011,
            params_total: 900_000,
            params_active: 900_000,
            params_non_embedding: 850_000,
            state_bytes: Some(131_072),
            train_flops_per_token: 5.4e6,
            lr: 3e-3,
            lr_trials: Vec::new(),
            runs: vec![run(1, losses[0], extra.clone()), run(2, losses[1], extra)],
            sample: Some(format!("Once upon a time <{name}> & a ```fence``` ran.")),
        }
    }

    fn bench_point(arch: &str, seq_len: usize, status: BenchStatus) -> BenchPoint {
        let ok = status == BenchStatus::Ok;
        // Attention slows down and grows with T, the SSM much less.
        let t = if arch == "mamba" { seq_len as f64 / 8.0 } else { seq_len as f64 };
        let step = 8192.0 / (5e4 / (1.0 + t / 2048.0));
        BenchPoint {
            train_tokens_per_s: ok.then(|| 5e4 / (1.0 + t / 2048.0)),
            step_time_s: ok.then_some(step),
            median_step_s: ok.then_some(step * 0.98),
            warmup_s: ok.then_some(12.5),
            train_flops_per_token: Some(1e8),
            achieved_tflops: ok.then(|| 1e8 * 5e4 / (1.0 + t / 2048.0) / 1e12),
            mfu: ok.then(|| 1e8 * 5e4 / (1.0 + t / 2048.0) / 1e12 / 989.0),
            peak_memory_bytes: ok.then_some((200.0 * t * 1024.0) as u64),
            prefill_tokens_per_s: ok.then_some(2e5),
            decode_tokens_per_s: ok.then(|| 900.0 - t / 10.0),
            ..BenchPoint::new(arch, seq_len, (8192 / seq_len).max(1), status)
        }
    }

    fn bench() -> BenchResults {
        let mut points = Vec::new();
        for arch in ["dense", "mamba"] {
            for t in [256, 1024, 4096] {
                points.push(bench_point(arch, t, BenchStatus::Ok));
            }
        }
        points.push(bench_point("dense", 16384, BenchStatus::OutOfMemory));
        points.push(bench_point("mamba", 16384, BenchStatus::Failed("kernel | launch\nfailed".into())));
        BenchResults {
            device: "NVIDIA H100".into(),
            precision: "bf16".into(),
            matmul: "autotune".into(),
            tokens_per_step: 8192,
            tokens: None,
            peak_tflops: Some(989.0),
            peak_source: "NVIDIA H100 80GB HBM3, bf16 dense (table)".into(),
            flops_formula: crate::bench::FLOPS_FORMULA.into(),
            points,
        }
    }

    fn results() -> ComparisonResults {
        let expert_load = |layer: usize| {
            json!({
                "layer": layer, "tokens": 614_400, "load": [0.31, 0.24, 0.25, 0.20],
                "load_entropy": 0.987, "dropped_fraction": 0.004, "dropped": 2_400,
                "balance_loss": 1.02, "z_loss": 0.3
            })
        };
        let branch_scales = |layer: usize| {
            json!({
                "layer": layer, "init": 1.0, "attn_mean": 0.8 + 0.1 * layer as f64, "ssm_mean": 1.15,
                "attn_mean_abs_change": 0.2, "ssm_mean_abs_change": 0.15
            })
        };
        let moe = json!({ "params_active": 400_000, "moe": [expert_load(0), expert_load(1)] });
        let hymba = json!({
            "hymba": [branch_scales(0), branch_scales(1)],
            "health": [
                {"layer": 0, "mixer": "hymba", "causal": true, "max_leak": 0.0, "mixes": true, "max_reach": 0.2},
                {"layer": 1, "mixer": "hymba", "causal": false, "max_leak": 3e-3, "mixes": true, "max_reach": 0.2}
            ]
        });
        let mut dense = arch("dense", [2.31, 2.33], json!({}));
        dense.lr_trials = [1e-3, 3e-3, 1e-2]
            .map(|lr| LrTrial {
                lr,
                val_loss: 2.3 + (lr - 3e-3f64).abs() * 10.0,
                selection_loss: Some(2.31 + (lr - 3e-3f64).abs() * 9.0),
            })
            .into();
        let mut moe_arch = arch("moe|8x", [2.45, 2.48], moe);
        moe_arch.params_total = 1_600_000;
        moe_arch.params_active = 400_000;
        let hymba_arch = arch("hymba", [2.38, f64::NAN], hymba);
        ComparisonResults {
            title: "dense vs moe vs hymba".into(),
            match_by: "active".into(),
            budget: 9e5,
            settings: vec![("data".into(), "stories".into()), ("tokens".into(), "614.40k".into())],
            task: None,
            archs: vec![dense, moe_arch, hymba_arch],
            bench: Some(bench()),
            missing: Vec::new(),
        }
    }

    /// The data rows of the Markdown table whose header starts with `first_header`.
    fn table_rows(markdown: &str, first_header: &str) -> (Vec<String>, Vec<Vec<String>>) {
        let lines: Vec<&str> = markdown.lines().collect();
        let start = lines.iter().position(|l| l.starts_with(&format!("| {first_header} |"))).expect("table");
        let cells = |line: &str| -> Vec<String> {
            // Split on unescaped pipes only.
            let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
            inner.replace("\\|", "\u{0}").split('|').map(|c| c.trim().replace('\u{0}', "|")).collect()
        };
        let header = cells(lines[start]);
        let rows = lines[start + 2..].iter().take_while(|l| l.starts_with('|')).map(|l| cells(l)).collect();
        (header, rows)
    }

    #[test]
    fn writes_every_file() {
        let dir = temp_dir("files");
        let written = write(&dir, &results()).unwrap();
        let names: Vec<String> =
            written.iter().map(|p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned()).collect();
        for expected in [
            "report.md",
            "report.html",
            "plots/val-loss.svg",
            "plots/diagnostics-moe-8x.svg",
            "plots/diagnostics-hymba.svg",
            "plots/bench-throughput.svg",
            "plots/bench-memory.svg",
            "plots/bench-decode.svg",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        for path in &written {
            assert!(fs::metadata(path).unwrap().len() > 0, "{} is empty", path.display());
        }
        let md = fs::read_to_string(dir.join("report.md")).unwrap();
        for figure in names.iter().filter(|n| n.starts_with("plots/")) {
            assert!(md.contains(&format!("]({figure})")), "report.md does not show {figure}");
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn results_table_has_every_column_and_no_empty_cell() {
        let dir = temp_dir("table");
        write(&dir, &results()).unwrap();
        let md = fs::read_to_string(dir.join("report.md")).unwrap();
        let (header, rows) = table_rows(&md, "Architecture | Params (active)");
        assert_eq!(header, RESULT_COLUMNS);
        assert_eq!(rows.len(), 3);
        for row in &rows {
            assert_eq!(row.len(), RESULT_COLUMNS.len(), "{row:?}");
            assert!(row.iter().all(|c| !c.is_empty()), "empty cell in {row:?}");
        }
        let row = |name: &str| rows.iter().find(|r| r[0] == name).unwrap();
        // Two seeds: mean ± t(1)·sd/√2 = 2.32 ± 12.706·0.01414/1.414.
        assert_eq!(row("dense")[2], "2.3200 ± 0.1271");
        assert!(row("dense")[9].contains("best of grid 1e-3, 3e-3, 1e-2"));
        assert_eq!(row("moe|8x")[1], "1.60M (400.00k)");
        // MoE loads of an older summary (its `moe` field) reach the generic path too.
        assert!(
            row("moe|8x")[9].contains("moe load evenness 0.987, moe dropped fraction 0.004"),
            "{}",
            row("moe|8x")[9]
        );
        // One seed diverged: the other alone gives no interval, and the notes say why.
        assert_eq!(row("hymba")[2], "2.3800 ± n/a (1 seed)");
        assert!(row("hymba")[9].contains("1 of 2 seeds diverged"));
        assert!(row("hymba")[9].contains("layer 1 (hymba) not causal"));
        // The Hymba scales of an older summary (its `hymba` field) reach the generic path.
        assert!(row("hymba")[9].contains("hymba attention β 0.8–0.9 (ref 1)"), "{}", row("hymba")[9]);
        assert_eq!(row("dense")[8], "2");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_svg_is_well_formed() {
        let dir = temp_dir("svg");
        let written = write(&dir, &results()).unwrap();
        let svgs: Vec<&PathBuf> =
            written.iter().filter(|p| p.extension().is_some_and(|e| e == "svg")).collect();
        assert!(svgs.len() >= 6);
        for path in svgs {
            let text = fs::read_to_string(path).unwrap();
            let xml = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let root = xml.root_element();
            assert_eq!(root.tag_name().name(), "svg");
            for attribute in ["width", "height", "viewBox"] {
                assert!(root.attribute(attribute).is_some(), "{} lacks {attribute}", path.display());
            }
            let class_count =
                |class: &str| xml.descendants().filter(|n| n.attribute("class") == Some(class)).count();
            let name = path.file_name().unwrap().to_string_lossy();
            if name.starts_with("diagnostics-") {
                assert!(class_count("bar") >= 4, "{name} has no bars");
            } else {
                let lines = xml.descendants().filter(|n| n.attribute("class") == Some("series"));
                assert!(lines.clone().count() >= 2, "{name} has no series lines");
                assert!(lines.into_iter().all(|n| matches!(n.tag_name().name(), "path" | "polyline")));
            }
            if name.starts_with("bench-") {
                assert_eq!(class_count("marker"), 2, "{name}: the OOM and failed points are marked");
            }
            if name == "val-loss.svg" {
                assert!(class_count("band") >= 2, "the seed spread is shaded");
            }
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn html_is_self_contained() {
        let dir = temp_dir("html");
        write(&dir, &results()).unwrap();
        let html = fs::read_to_string(dir.join("report.html")).unwrap();
        let md = fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.matches("<svg ").count() >= 6, "figures are inlined");
        for external in ["src=\"http", "href=\"http", "<script", "<link", "<img"] {
            assert!(!html.contains(external), "report.html contains {external}");
        }
        // Samples are escaped in HTML and fenced safely in Markdown.
        assert!(html.contains("Once upon a time &lt;dense&gt; &amp; a ```fence``` ran."));
        assert!(md.contains("````text\nOnce upon a time <dense> & a ```fence``` ran.\n````"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn verdicts_cover_every_pair_best_first() {
        let dir = temp_dir("verdicts");
        write(&dir, &results()).unwrap();
        let md = fs::read_to_string(dir.join("report.md")).unwrap();
        let verdicts: Vec<&str> = md.lines().filter(|l| l.starts_with("- ") && l.contains(" vs ")).collect();
        assert_eq!(verdicts.len(), 3, "{verdicts:?}");
        // Ranked by mean loss: dense 2.32, hymba 2.38 (one finite seed), moe 2.465.
        assert!(verdicts[0].starts_with("- dense vs hymba: "));
        assert!(verdicts[1].starts_with(
            "- dense vs moe|8x: dense beats moe|8x by 0.145 ± 0.064 nats (paired over 2 seeds)"
        ));
        assert!(verdicts[2].starts_with("- hymba vs moe|8x: too few seeds"));
        let html = fs::read_to_string(dir.join("report.html")).unwrap();
        assert!(html.contains("dense beats moe|8x"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn task_report_shows_accuracy_instead_of_bits_per_byte() {
        let dir = temp_dir("task");
        let mut r = results();
        r.task = Some("copy".into());
        r.bench = None;
        let accuracy = json!({
            "final_val_accuracy": 0.93,
            "length_accuracy": [
                {"seq_len": 64, "token_accuracy": 0.99, "sequence_accuracy": 0.95, "chance": 0.5, "trained": true},
                {"seq_len": 256, "token_accuracy": 0.71, "sequence_accuracy": 0.12, "chance": 0.5}
            ]
        });
        r.archs[0].runs = vec![run(1, 0.4, accuracy.clone()), run(2, 0.42, accuracy)];
        // A summary written before chance and the trained length were recorded.
        let older = json!({
            "final_val_accuracy": 0.5,
            "length_accuracy": [{"seq_len": 64, "token_accuracy": 0.5, "sequence_accuracy": 0.25}]
        });
        r.archs[2].runs = vec![run(1, 0.5, older)];
        let written = write(&dir, &r).unwrap();
        let md = fs::read_to_string(dir.join("report.md")).unwrap();
        let (_, rows) = table_rows(&md, "Architecture | Params (active)");
        assert!(rows.iter().all(|row| row[4] == "n/a (task)"));
        assert!(md.contains("## Accuracy"));
        assert!(md.contains("| dense | 93.00% ± 0.00% | 2 |"));
        assert!(md.contains("| dense | 256 | 71.00% | 50.00% | 12.00% |"), "{md}");
        assert!(md.contains("dense: no (lowest token accuracy 71.0% at T = 256)"), "{md}");
        let second = &r.archs[2].name;
        assert!(md.contains(&format!("| {second} | 64 | 50.00% | — | 25.00% |")), "{md}");
        assert!(!md.contains(&format!("{second}: no (")), "no verdict without the trained length");
        assert!(written.iter().any(|p| p.ends_with("plots/accuracy-length.svg")));
        // Zoology's figure: accuracy against decoding state, one line per family.
        let state = fs::read_to_string(dir.join("plots/accuracy-state.svg")).unwrap();
        let xml = roxmltree::Document::parse(&state).unwrap();
        let dots = xml.descendants().filter(|n| n.tag_name().name() == "circle").count();
        assert_eq!(dots, 2, "one point per architecture with an accuracy");
        assert!(md.contains("plots/accuracy-state.svg"), "{md}");
        assert!(!written.iter().any(|p| p.to_string_lossy().contains("bench-")));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bench_report_lists_every_point_and_failure() {
        let dir = temp_dir("bench");
        let written = write_bench(&dir, &bench()).unwrap();
        for expected in
            ["bench.md", "plots/bench-throughput.svg", "plots/bench-memory.svg", "plots/bench-decode.svg"]
        {
            assert!(written.contains(&dir.join(expected)), "{expected} not written");
        }
        let md = fs::read_to_string(dir.join("bench.md")).unwrap();
        let (header, rows) = table_rows(&md, "Architecture | T");
        assert_eq!(header.len(), 12);
        assert_eq!(header[4..8], ["Median step", "Warm-up", "TFLOP/s", "MFU"]);
        assert_eq!(rows.len(), 8);
        assert!(rows.iter().flatten().all(|c| !c.is_empty()));
        // dense at T = 256: 5e4 / 1.125 tok/s · 1e8 FLOPs = 4.44 TFLOP/s, 0.4% of 989.
        let first = &rows[0];
        assert_eq!(first[5..8], ["12.50 s", "4.44", "0.4%"]);
        assert!(md.contains("peak 989 TFLOP/s") && md.contains("6·N_matmul"), "{md}");
        assert!(md.contains("- dense at T = 16384 (batch 1): out of memory"));
        assert!(md.contains("- mamba at T = 16384 (batch 1): failed: kernel | launch failed"));
        let oom = rows.iter().find(|r| r[0] == "dense" && r[1] == "16384").unwrap();
        assert_eq!(oom[3], "n/a (OOM)");
        fs::remove_dir_all(dir).unwrap();
    }
}
