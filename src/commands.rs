//! One function per CLI command: resolve inputs (failing early with clear errors), pick the
//! device, run the library code, print the result.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use archlab::kernels::{self, Backend};

use crate::cli::*;
use archlab::config::RunConfig;
use archlab::data::prepare::{self, Dataset};
use archlab::data::sources::Source;
use archlab::data::stories;
use archlab::data::stream::TrainData;
use archlab::data::tokenizer::{Tokenizer, TokenizerSpec};
use archlab::device;
use archlab::eval::generate::{SamplingConfig, generate};
use archlab::eval::{ValMetrics, evaluate};
use archlab::train::{self, TrainOptions, human, human_bytes};
use archlab::with_backend;

pub fn run(cli: Cli) -> Result<()> {
    let matmul = cli.matmul.or_else(|| std::env::var(kernels::MATMUL_ENV).ok().filter(|v| !v.is_empty()));
    if let Some(name) = matmul {
        kernels::select_matmul(&name)?;
    }
    match cli.command {
        Command::Train(a) => train_cmd(a),
        Command::Eval(a) => eval_cmd(a),
        Command::Score(a) => score_cmd(a),
        Command::Generate(a) => generate_cmd(a),
        Command::Config(a) => {
            print!("{}", resolve(&a, &[])?.to_toml());
            Ok(())
        }
        Command::Describe(a) => describe_cmd(a),
        Command::Import(a) => import_cmd(a),
        Command::Export(a) => export_cmd(a),
        Command::Serve(a) => serve_cmd(a),
        Command::Data(DataCommand::Prepare(a)) => prepare_cmd(a),
        Command::Data(DataCommand::Tokenizer(a)) => tokenizer_cmd(a),
        Command::Data(DataCommand::Stories(a)) => stories_cmd(a),
        Command::Compare(a) => archlab::compare::run(a.into()),
        Command::Report(a) => report_cmd(a),
        Command::Bench(a) => archlab::bench::run(a.into()),
        Command::BenchPoint(a) => archlab::bench::run_point(a.into()),
        Command::TrainRun(a) => archlab::compare::worker::train_run(a.into()),
        Command::Gemm(a) => gemm_cmd(a),
    }
}

/// `archlab gemm` measures CubeCL's matmuls, so it needs a CubeCL backend.
fn gemm_cmd(a: GemmArgs) -> Result<()> {
    #[cfg(feature = "cube-kernels")]
    return archlab::bench::gemm::run(a.into());
    #[cfg(not(feature = "cube-kernels"))]
    {
        let _ = a;
        bail!("archlab gemm measures CubeCL's matmuls; rebuild with `--features cuda` or `--features wgpu`")
    }
}

fn resolve(args: &ConfigArgs, extra: &[String]) -> Result<RunConfig> {
    let mut sets = args.sets.clone();
    sets.extend_from_slice(extra);
    RunConfig::resolve(&args.preset, args.config.as_deref(), &sets)
}

fn report_cmd(a: ReportArgs) -> Result<()> {
    let files = archlab::compare::redraw_report(&a.dir)?;
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn describe_cmd(a: DescribeArgs) -> Result<()> {
    if a.list {
        print!("{}", archlab::model::registry::table());
        return Ok(());
    }
    let extra: Vec<String> = a.pattern.iter().map(|p| format!("model.pattern={p:?}")).collect();
    let mut cfg = resolve(&a.config, &extra)?;
    cfg.model.vocab_size = archlab::compare::plan::planned_vocab(&cfg)?;
    let m = &cfg.model;
    let t = a.seq_len.unwrap_or(cfg.train.seq_len);
    let layers = m.layer_counts(t);
    let pattern = m.layer_pattern();
    println!(
        "pattern {pattern}: {} layers, d_model {}, vocab {}, T = {t}\n",
        layers.len(),
        m.d_model,
        m.vocab_size
    );
    println!(
        "| layer | mixer | ffn | params | active | train FLOPs/token | state bytes/token | fixed state bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, l) in layers.iter().enumerate() {
        println!(
            "| {i} | {} | {} | {} | {} | {} | {} | {} |",
            l.mixer.name(),
            l.ffn.name(),
            l.params,
            l.active,
            human(l.train_flops),
            l.state_bytes_per_token,
            l.state_bytes_fixed
        );
    }
    let c = m.param_counts();
    let per_token: usize = layers.iter().map(|l| l.state_bytes_per_token).sum();
    let fixed: usize = layers.iter().map(|l| l.state_bytes_fixed).sum();
    println!(
        "\nparameters: {} total ({}), {} non-embedding, {} active ({} in embeddings, head and final norm)",
        c.total,
        human(c.total as f64),
        c.non_embedding,
        c.active,
        c.total - layers.iter().map(|l| l.params).sum::<usize>()
    );
    println!(
        "training FLOPs per token at T = {t}: {} (6·N_active + mixers' own work)",
        human(m.train_flops_per_token(t))
    );
    println!(
        "decoding state per sequence (f32): {per_token} bytes per token of context + {fixed} bytes fixed \
         ({}B at T = {t})",
        human((per_token * t + fixed) as f64)
    );
    Ok(())
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    let (cfg, run_dir) = if a.resume {
        let dir = a.run_dir.clone().expect("clap: --resume requires --run-dir");
        if !a.config.sets.is_empty() || a.config.config.is_some() {
            bail!("--resume continues a run with its saved config; drop --set/--config (or start a new run)");
        }
        (RunConfig::load(&dir.join("config.toml"))?, dir)
    } else {
        let extra: Vec<String> = a.precision.iter().map(|p| format!("train.precision={p}")).collect();
        let mut cfg = resolve(&a.config, &extra)?;
        if let Some(from) = &a.init_from {
            let parent = train::finetune::parent(from)?;
            cfg = train::finetune::config(cfg, &a.config.sets, &parent)?;
        }
        let dir = a.run_dir.clone().unwrap_or_else(|| train::default_run_dir(&a.config.preset));
        (cfg, dir)
    };
    let resolved = device::resolve(a.device)?;
    device::check_data_parallel(resolved, a.devices)?;
    let opts = TrainOptions {
        devices: a.devices,
        run_dir: run_dir.clone(),
        resume: a.resume,
        stop_after: a.stop_after,
        progress: !a.quiet,
        device_name: resolved.name().into(),
        on_gpu: resolved != device::Resolved::Cpu,
        device_memory: device::memory_probe(resolved),
    };
    let outcome = with_backend!(resolved, |B, dev| train::train::<B>(&cfg, &dev, &opts))?;
    match outcome.summary {
        None => println!(
            "stopped after step {}; continue with: archlab train --resume --run-dir {}",
            outcome.losses.last().map_or(0, |l| l.0 + 1),
            run_dir.display()
        ),
        Some(s) => {
            println!();
            println!(
                "| run | params (non-emb, active) | steps | tokens | val loss | ppl | bits/byte | tok/s | peak mem | wall | NaN skips |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|");
            println!(
                "| {} | {} ({}, {}) | {} | {} | {:.4} | {:.2} | {:.4} | {} | {} | {:.0} s | {} |",
                run_dir.display(),
                human(s.params_total as f64),
                human(s.params_non_embedding as f64),
                human(s.params_active as f64),
                s.steps,
                human(s.tokens_seen as f64),
                s.final_val_loss,
                s.final_val_ppl,
                s.final_val_bpb,
                human(s.steady_tokens_per_s),
                human_bytes(s.peak_memory_bytes),
                s.wall_time_s,
                s.nan_skips
            );
            if let Some(parent) = &s.init_from {
                println!("fine-tuned from {parent}");
            }
            print_diagnostics(&s.all_diagnostics());
            println!(
                "\nrun files: {}/{{config.toml, metrics.jsonl, summary.json, best.ckpt, last.ckpt}}",
                run_dir.display()
            );
            println!("sample:    archlab generate --run {}", run_dir.display());
        }
    }
    Ok(())
}

/// One line per layer and mixer: what it reports about itself, each quantity beside its
/// reference value where it has one.
fn print_diagnostics(diagnostics: &[archlab::model::mixer::Diagnostic]) {
    let mut lines: Vec<((usize, &str), Vec<String>)> = Vec::new();
    for d in diagnostics {
        let reference = d.reference.map(|r| format!(" (ref {r:.3})")).unwrap_or_default();
        let item = format!("{} {:.3}{reference}", d.name, d.value);
        let key = (d.layer, d.mixer.as_str());
        match lines.iter_mut().find(|(k, _)| *k == key) {
            Some((_, items)) => items.push(item),
            None => lines.push((key, vec![item])),
        }
    }
    for ((layer, mixer), items) in lines {
        println!("layer {layer} ({mixer}): {}", items.join(", "));
    }
}

/// A trained run, ready for inference.
struct LoadedRun {
    cfg: RunConfig,
    tokenizer: Tokenizer,
    /// Whether it runs on a GPU now (bf16 under `precision = "auto"`).
    on_gpu: bool,
}

/// A run directory's config.
fn load_config(dir: &Path) -> Result<RunConfig> {
    if !dir.join("config.toml").exists() {
        bail!(
            "{} is not a run directory (no config.toml); pass a folder written by `archlab train`",
            dir.display()
        );
    }
    RunConfig::load(&dir.join("config.toml"))
}

/// A run trained on text, with its tokenizer.
fn load_run(dir: &Path) -> Result<LoadedRun> {
    let cfg = load_config(dir)?;
    if cfg.data.source.starts_with("task:") {
        bail!(
            "{} was trained on the synthetic task {}: it has no text to score or generate; \
             `archlab eval --run` scores it on its held-out sequences",
            dir.display(),
            cfg.data.source
        );
    }
    let tokenizer = Tokenizer::from_json_file(&dir.join("tokenizer.json"))?;
    Ok(LoadedRun { cfg, tokenizer, on_gpu: false })
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    if a.data.is_some() {
        return eval_corpus_cmd(a);
    }
    let cfg = load_config(&a.model.run)?;
    let data = TrainData::open(&cfg.data, cfg.train.seq_len)?;
    let resolved = device::resolve(a.device)?;
    let on_gpu = resolved != device::Resolved::Cpu;
    let (m, lengths) = with_backend!(resolved, |B, dev| eval_on::<
        <B as burn::tensor::backend::AutodiffBackend>::InnerBackend,
    >(&a, &cfg, on_gpu, &data, &dev))?;
    let (dir, ckpt) = (a.model.run.display(), &a.model.checkpoint);
    match m.accuracy {
        None => {
            println!("| run | checkpoint | val loss | ppl | bits/byte |");
            println!("|---|---|---|---|---|");
            println!("| {dir} | {ckpt} | {:.4} | {:.2} | {:.4} |", m.loss, m.ppl, m.bpb);
        }
        // A task: the loss on its answers, then the accuracy at every evaluated length.
        Some(_) => {
            println!("{dir} ({ckpt}): held-out answer loss {:.4} at the training length", m.loss);
            println!("| seq len | token accuracy | chance | sequence accuracy |");
            println!("|---|---|---|---|");
            for l in lengths {
                let chance = l.chance.map_or("—".into(), |c| format!("{:.2}%", 100.0 * c));
                let trained = if l.trained { " (trained)" } else { "" };
                println!(
                    "| {}{trained} | {:.2}% | {chance} | {:.2}% |",
                    l.seq_len,
                    100.0 * l.token_accuracy,
                    100.0 * l.sequence_accuracy
                );
            }
        }
    }
    Ok(())
}

/// The run's validation metrics, as training reports them, and for a task its accuracy at
/// every evaluated length.
fn eval_on<B: Backend>(
    a: &EvalArgs,
    cfg: &RunConfig,
    on_gpu: bool,
    data: &TrainData,
    device: &B::Device,
) -> Result<(ValMetrics, Vec<train::metrics::LengthAccuracy>)> {
    let model = train::checkpoint::load_model::<B>(&a.model.run, &a.model.checkpoint, cfg, device, on_gpu)?;
    let t = &cfg.train;
    let batches = data.validation(cfg.eval.batches, t.batch_size, t.seq_len, cfg.data.corpus_seed)?;
    let metrics = evaluate(&model, &batches, data.token_bytes().as_deref(), device);
    let lengths = match data.task() {
        Some(task) => train::length_accuracy(&model, task, cfg, device),
        None => Vec::new(),
    };
    Ok((metrics, lengths))
}

/// `eval --data`: the whole of another corpus, with the run's tokenizer.
fn eval_corpus_cmd(a: EvalArgs) -> Result<()> {
    let spec = a.data.as_deref().expect("called with --data");
    let mut run = load_run(&a.model.run)?;
    let source = Source::resolve(spec, run.cfg.data.builtin_bytes, run.cfg.data.corpus_seed)?;
    let text_field = a.text_field.as_deref().unwrap_or(&run.cfg.data.text_field);
    let resolved = device::resolve(a.device)?;
    run.on_gpu = resolved != device::Resolved::Cpu;
    let corpus = archlab::eval::corpus::tokenize(&source, text_field, &run.tokenizer, spec)?;
    let s = with_backend!(resolved, |B, dev| {
        let model = train::checkpoint::load_model::<
            <B as burn::tensor::backend::AutodiffBackend>::InnerBackend,
        >(&a.model.run, &a.model.checkpoint, &run.cfg, &dev, run.on_gpu)?;
        let t = &run.cfg.train;
        let max = a.max_tokens.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let bytes = run.tokenizer.token_bytes();
        anyhow::Ok(archlab::eval::corpus::score_stream(
            &model,
            &corpus.tokens,
            t.seq_len,
            t.batch_size,
            max,
            &bytes,
            &dev,
        ))
    })?;
    let all = corpus.tokens.len() - 1;
    println!(
        "| run | checkpoint | data | documents | tokens scored | bytes scored | loss | ppl | bits/byte |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {spec} | {} | {} of {all} | {} | {:.4} | {:.2} | {:.4} |",
        a.model.run.display(),
        a.model.checkpoint,
        corpus.documents,
        s.targets,
        s.bytes,
        s.metrics.loss,
        s.metrics.ppl,
        s.metrics.bpb
    );
    Ok(())
}

/// `score`: one JSON line per token of every sequence.
fn score_cmd(a: ScoreArgs) -> Result<()> {
    let mut run = load_run(&a.model.run)?;
    // Every input is read and checked before the model loads.
    let sequences: Vec<Vec<u32>> = match (&a.text, &a.file, &a.tokens) {
        (Some(text), _, _) => vec![run.tokenizer.encode(text)?],
        (_, Some(file), _) => {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            vec![run.tokenizer.encode(&text)?]
        }
        (_, _, Some(json)) => parse_token_ids(json)?,
        _ => unreachable!("clap requires one input"),
    };
    let (max, vocab) = (run.cfg.model.max_seq_len, run.cfg.model.vocab_size);
    for (i, ids) in sequences.iter().enumerate() {
        archlab::eval::score::check_length(ids.len(), max).with_context(|| format!("sequence {i}"))?;
        if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
            bail!(
                "sequence {i}: token id {id} is outside the model's vocabulary of {vocab} (ids 0..{})",
                vocab - 1
            );
        }
    }
    let resolved = device::resolve(a.device)?;
    run.on_gpu = resolved != device::Resolved::Cpu;
    let scored = with_backend!(resolved, |B, dev| {
        let model = train::checkpoint::load_model::<
            <B as burn::tensor::backend::AutodiffBackend>::InnerBackend,
        >(&a.model.run, &a.model.checkpoint, &run.cfg, &dev, run.on_gpu)?;
        let text = archlab::eval::score::Text::new(&run.tokenizer);
        sequences
            .iter()
            .enumerate()
            .map(|(i, ids)| {
                archlab::eval::score::score_tokens(&model, &text, ids, max, a.top_k, &dev)
                    .with_context(|| format!("sequence {i}"))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut out = std::io::stdout().lock();
    for (sequence, tokens) in scored.iter().enumerate() {
        for (position, t) in tokens.iter().enumerate() {
            let line = serde_json::json!({
                "sequence": sequence,
                "position": position,
                "id": t.id,
                "token": t.token,
                "offset": t.offset,
                "logprob": t.logprob,
                "top": t.top,
            });
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// `--tokens`: `[1, 2, 3]` (one sequence) or `[[1, 2], [3]]` (several).
fn parse_token_ids(json: &str) -> Result<Vec<Vec<u32>>> {
    let bad = || {
        anyhow::anyhow!(
            "--tokens must be a JSON array of token ids, [1, 2, 3], or an array of such arrays, [[1, 2], [3, 4]]"
        )
    };
    let value: serde_json::Value = serde_json::from_str(json).map_err(|_| bad())?;
    let ids = |v: &serde_json::Value| -> Result<Vec<u32>> {
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(bad))
            .collect()
    };
    let array = value.as_array().ok_or_else(bad)?;
    if array.first().is_some_and(|v| v.is_array()) {
        array.iter().map(ids).collect()
    } else {
        Ok(vec![ids(&value)?])
    }
}

fn generate_cmd(a: GenerateArgs) -> Result<()> {
    if a.temperature.is_nan() || a.temperature < 0.0 || !(0.0 < a.top_p && a.top_p <= 1.0) {
        bail!("--temperature must be ≥ 0 and --top-p in (0, 1]");
    }
    let mut run = load_run(&a.model.run)?;
    let resolved = device::resolve(a.device)?;
    run.on_gpu = resolved != device::Resolved::Cpu;
    with_backend!(
        resolved,
        |B, dev| generate_on::<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend>(&a, &run, &dev)
    )
}

fn generate_on<B: Backend>(a: &GenerateArgs, run: &LoadedRun, device: &B::Device) -> Result<()> {
    let model =
        train::checkpoint::load_model::<B>(&a.model.run, &a.model.checkpoint, &run.cfg, device, run.on_gpu)?;
    let cfg = SamplingConfig {
        max_new_tokens: a.max_tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
        stop_at_eot: true,
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{}", a.prompt)?;
    generate(&model, &run.tokenizer, &a.prompt, run.cfg.model.context_limit(), &cfg, device, |piece| {
        let _ = write!(out, "{piece}");
        let _ = out.flush();
    })?;
    writeln!(out)?;
    Ok(())
}

/// Turns a Hugging Face checkpoint into a run directory: `config.toml` (the model read from
/// `config.json`, everything else from the `tiny` preset and `--set`), `tokenizer.json`, and the
/// weights as `best.ckpt` / `last.ckpt`. `eval` and `generate` then work as on a trained run.
fn export_cmd(a: ExportArgs) -> Result<()> {
    let run = load_run(&a.model.run)?;
    // Everything that can be refused is refused before the weights load.
    let family = archlab::hf::export::family(&run.cfg.model)?;
    if a.out.exists() {
        bail!("{} already exists; choose another --out or remove it", a.out.display());
    }
    // On the CPU in f32, whatever the run trained in: the export stores f32 weights.
    let model = train::checkpoint::load_model::<device::CpuBackend>(
        &a.model.run,
        &a.model.checkpoint,
        &run.cfg,
        &Default::default(),
        false,
    )?;
    archlab::hf::export::export(&model, &run.cfg.model, &run.tokenizer, &a.out)?;
    let bytes = std::fs::metadata(a.out.join("model.safetensors")).map(|m| m.len()).unwrap_or(0);
    println!(
        "exported {} ({}.ckpt) as {} to {}: config.json, model.safetensors ({}), tokenizer.json, tokenizer_config.json",
        a.model.run.display(),
        a.model.checkpoint,
        family.class(),
        a.out.display(),
        human_bytes(bytes)
    );
    Ok(())
}

/// `serve`: the port is taken first, then the model loads on its own thread, then HTTP runs
/// until Ctrl-C.
fn serve_cmd(a: ServeArgs) -> Result<()> {
    use archlab::serve::engine::{self, Limits};
    use archlab::serve::{self, ServerConfig};
    use std::sync::Arc;

    if a.max_batch == 0 || a.max_batch_tokens == 0 {
        bail!("--max-batch and --max-batch-tokens must be at least 1 (--max-batch 1 turns batching off)");
    }
    let mut run = load_run(&a.model.run)?;
    let ckpt = a.model.run.join(format!("{}.ckpt", a.model.checkpoint));
    if !ckpt.exists() {
        bail!("{} has no {}.ckpt; has the run started?", a.model.run.display(), a.model.checkpoint);
    }
    // A taken port fails here, before minutes of model loading.
    let listener = std::net::TcpListener::bind((a.host.as_str(), a.port)).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "another program listens there: choose another --port (0 picks a free one)"
        } else {
            "check --host and --port"
        };
        anyhow::anyhow!("cannot listen on {}:{}: {e}; {hint}", a.host, a.port)
    })?;
    let addr = listener.local_addr()?;
    let model_cfg = &run.cfg.model;
    let max_prompt = model_cfg.context_limit().unwrap_or(model_cfg.max_seq_len).min(model_cfg.max_seq_len);
    let cfg = ServerConfig {
        model_name: a.model.run.file_name().map_or("archlab".into(), |n| n.to_string_lossy().into_owned()),
        vocab_size: model_cfg.vocab_size,
        max_prompt,
        context_limit: model_cfg.context_limit(),
        max_logprobs: a.max_logprobs,
        max_body_bytes: a.max_body_bytes,
    };
    let limits = Limits { max_batch: a.max_batch, max_batch_tokens: a.max_batch_tokens, max_prompt };
    let resolved = device::resolve(a.device)?;
    run.on_gpu = resolved != device::Resolved::Cpu;
    let tokenizer = Arc::new(run.tokenizer.clone());
    let (jobs, queue) = std::sync::mpsc::channel();
    let (ready_tx, ready) = std::sync::mpsc::channel::<Result<()>>();
    let (dir, which, run_cfg, on_gpu, tok) =
        (a.model.run.clone(), a.model.checkpoint.clone(), run.cfg.clone(), run.on_gpu, tokenizer.clone());
    let model_thread = with_backend!(resolved, |B, dev| {
        type Inner = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;
        std::thread::Builder::new().name("archlab-model".into()).spawn(move || {
            match train::checkpoint::load_model::<Inner>(&dir, &which, &run_cfg, &dev, on_gpu) {
                Ok(model) => {
                    let _ = ready_tx.send(Ok(()));
                    engine::run(&model, &tok, limits, &queue, &dev);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?
    });
    ready.recv().map_err(|_| anyhow::anyhow!("the model thread stopped while loading"))??;
    eprintln!(
        "archlab: serving {} ({}.ckpt) at http://{addr}/v1/completions; Ctrl-C stops",
        a.model.run.display(),
        a.model.checkpoint
    );
    serve::serve(listener, cfg, tokenizer, jobs)?;
    model_thread.join().map_err(|_| anyhow::anyhow!("the model thread panicked"))?;
    eprintln!("archlab: stopped");
    Ok(())
}

fn import_cmd(a: ImportArgs) -> Result<()> {
    use archlab::train::checkpoint::{self, TrainState};
    type Cpu = burn::backend::Autodiff<device::CpuBackend>;

    let dir = archlab::hf::resolve_source(&a.source)?;
    let tokenizer_src = match &a.tokenizer {
        Some(path) => path.clone(),
        None => dir.join("tokenizer.json"),
    };
    if !tokenizer_src.exists() {
        bail!("{} has no tokenizer.json; pass one with --tokenizer PATH", dir.display());
    }
    let tokenizer = Tokenizer::from_json_file(&tokenizer_src)?;
    if a.out.join("config.toml").exists() {
        bail!("{} already holds a run; choose another --out", a.out.display());
    }
    let base = RunConfig::resolve("tiny", None, &a.sets)?;
    let mut cfg = archlab::hf::read_config(&dir, &base)?;
    if tokenizer.vocab_size() > cfg.model.vocab_size {
        bail!(
            "the tokenizer has {} entries but the model only {}; pass the model's own tokenizer",
            tokenizer.vocab_size(),
            cfg.model.vocab_size
        );
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let tokenizer_path = a.out.join("tokenizer.json");
    archlab::util::atomic::write(&tokenizer_path, tokenizer.to_json()?.as_bytes())?;
    let absolute = std::fs::canonicalize(&tokenizer_path)?;
    cfg.data.tokenizer = absolute.display().to_string();
    cfg.validate()?;

    let model = archlab::hf::load_model::<Cpu>(&dir, &cfg.model, &Default::default())?;
    let skipped = archlab::hf::skipped_tensors(&dir)?;
    if let Some((first, why)) = skipped.first() {
        println!("skipped:  {} tensors ({first}, …): {why}", skipped.len());
    }
    let state = TrainState::default();
    checkpoint::save(&a.out.join("last.ckpt"), &state, &model, None)?;
    checkpoint::save(&a.out.join("best.ckpt"), &state, &model, None)?;
    archlab::util::atomic::write(&a.out.join("config.toml"), cfg.to_toml().as_bytes())?;
    let counts = cfg.model.param_counts();
    println!(
        "imported {} ({} layers {}, {} parameters) → {}",
        dir.display(),
        cfg.model.n_layers,
        match cfg.model.pattern.as_str() {
            "" => format!("of {}", cfg.model.mixer.name()),
            pattern => format!("as {pattern}"),
        },
        human(counts.total as f64),
        a.out.display()
    );
    let m = &cfg.model;
    let uses_mamba2 = m.layers()?.iter().any(|l| l.mixer == archlab::config::MixerKind::Mamba2);
    if uses_mamba2 && m.mamba2.n_groups > 1 {
        let per_group = m.mamba2.norm_per_group;
        println!(
            "note:     Mamba-2's gated norm runs {} (model.mamba2.norm_per_group = {per_group}); {}",
            if per_group {
                "per group of channels, as mamba_ssm and transformers 5.18+"
            } else {
                "over the whole inner width, as transformers 5.17 and before"
            },
            if per_group {
                "to match transformers 5.17 or older, import with --set model.mamba2.norm_per_group=false"
            } else {
                "drop --set model.mamba2.norm_per_group=false to match mamba_ssm"
            }
        );
    }
    println!("sample:   archlab generate --run {}", a.out.display());
    Ok(())
}

fn prepare_cmd(a: PrepareArgs) -> Result<()> {
    let mut extra = Vec::new();
    if let Some(s) = &a.source {
        extra.push(format!("data.source={}", toml_string(s)));
    }
    if let Some(t) = &a.tokenizer {
        extra.push(format!("data.tokenizer={}", toml_string(t)));
    }
    let cfg = resolve(&a.config, &extra)?;
    let data = match &a.out {
        Some(out) => {
            let spec = TokenizerSpec::parse(&cfg.data.tokenizer)?;
            let source = Source::resolve(&cfg.data.source, cfg.data.builtin_bytes, cfg.data.corpus_seed)?;
            prepare::prepare(&cfg.data, &source, &spec, out, true)?;
            Dataset::open(out)?
        }
        None => prepare::ensure_prepared(&cfg.data)?,
    };
    let m = &data.meta;
    println!(
        "prepared {}: {} documents, {} train + {} val tokens, vocab {}, {:.2} bytes/token",
        data.dir.display(),
        m.documents,
        m.train_tokens,
        m.val_tokens,
        m.vocab_size,
        data.train.bytes_per_token()
    );
    println!("use it with: --set data.source={}", toml_string(&data.dir.display().to_string()));
    Ok(())
}

fn tokenizer_cmd(a: TokenizerArgs) -> Result<()> {
    TokenizerSpec::parse(&format!("bpe:{}", a.vocab))?;
    let source = Source::resolve(&a.source, a.builtin_bytes, 0)?;
    let mut docs = Vec::new();
    source.for_each_doc(&a.text_field, |d| {
        docs.push(d);
        Ok(())
    })?;
    if docs.is_empty() {
        bail!("the corpus {} is empty: no documents with text were found", a.source);
    }
    let tok = Tokenizer::train_bpe(docs.iter(), a.vocab)?;
    archlab::util::atomic::write(&a.out, tok.to_json()?.as_bytes())
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("trained a {}-entry BPE on {} documents → {}", tok.vocab_size(), docs.len(), a.out.display());
    Ok(())
}

fn stories_cmd(a: StoriesArgs) -> Result<()> {
    let text = stories::generate(a.seed, a.bytes).join("\n\n");
    match a.out {
        Some(path) => archlab::util::atomic::write(&path, text.as_bytes()),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
