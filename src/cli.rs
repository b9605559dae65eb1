//! Command-line interface (clap derive). Only argument definitions live here, and their
//! conversion into the library's request types; `commands` does the work. The library itself
//! knows nothing of clap.

use std::path::PathBuf;

use archlab::bench::{BenchRequest, PointRequest};
use archlab::compare::spec::SlurmOptions;
use archlab::compare::{ArchSelection, CompareRequest, Emit};
use archlab::device::DeviceArg;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

/// `--device`: one of [`DeviceArg::NAMES`], listed in `--help`.
fn device_parser() -> impl TypedValueParser<Value = DeviceArg> {
    PossibleValuesParser::new(DeviceArg::NAMES).map(|s| s.parse().expect("a listed device name"))
}

/// One value of `--bench-seq-lens`: a length, or `none` (no measurement).
type SeqLen = Option<usize>;

fn seq_len_parser() -> impl TypedValueParser<Value = SeqLen> {
    clap::builder::NonEmptyStringValueParser::new().try_map(|s| match s.as_str() {
        "none" => Ok(None),
        n => n
            .parse::<usize>()
            .map(Some)
            .map_err(|_| format!("`{n}` is not a sequence length (a number, or none)")),
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "archlab",
    version,
    about = "Train, evaluate and compare small language-model architectures"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Run the models' matmuls (linear layers, head, MoE experts, SSD), forward and backward,
    /// with this CubeCL matmul strategy, a name `archlab gemm` prints, instead of burn's
    /// autotuned choice (CUDA and wgpu; CPU backends ignore it). Also read from
    /// ARCHLAB_MATMUL. [default: autotune]
    #[arg(long, global = true, value_name = "STRATEGY")]
    pub matmul: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model and print its result table.
    Train(TrainArgs),
    /// Evaluate a trained run on its validation set, or on any corpus (--data).
    Eval(EvalArgs),
    /// Per-token log-probabilities of a text or of token ids, as JSON lines.
    Score(ScoreArgs),
    /// Sample text from a trained run.
    Generate(GenerateArgs),
    /// Print the fully resolved config (preset + file + overrides) as TOML.
    Config(ConfigArgs),
    /// Print a layer pattern's resolved layer table: mixers, channel mixers, parameters
    /// (total / non-embedding / active), FLOPs per token and decoding-state size.
    Describe(DescribeArgs),
    /// Import a Hugging Face checkpoint (Mamba, Mamba2, Llama, Mixtral, Jamba, Qwen3-Next) as a
    /// run directory for eval, score and generate.
    Import(ImportArgs),
    /// Write a run as a Hugging Face checkpoint folder (config.json, model.safetensors,
    /// tokenizer.json) that `transformers` loads: Llama, Mixtral, Mamba, Mamba2, Jamba or
    /// Qwen3-Next, whichever computes the same model.
    Export(ExportArgs),
    /// Serve the model over HTTP as OpenAI's completions API (`POST /v1/completions`), for
    /// lm-evaluation-harness's `local-completions` model and other OpenAI clients.
    Serve(ServeArgs),
    /// Data preparation: tokenizers, token shards, the built-in corpus.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train several architectures fairly (same data, tokens, schedule; sized to one budget;
    /// several seeds) and write a report with confidence intervals and verdicts.
    Compare(CompareArgs),
    /// Redraw the report (report.md, report.html, plots/) of a comparison directory; of one
    /// still under way, the report of the runs that have finished, naming the others.
    Report(ReportArgs),
    /// Sequence-length scaling: training tokens/s, peak memory and inference tokens/s per
    /// architecture at each sequence length, with out-of-memory points reported.
    Bench(BenchArgs),
    /// One measurement of `bench`, run in its own process (internal).
    #[command(hide = true)]
    BenchPoint(BenchPointArgs),
    /// One training run of `compare`, in its own process (internal): the run whose resolved
    /// config is `RUN_DIR/config.toml`.
    #[command(hide = true)]
    TrainRun(TrainRunArgs),
    /// bf16 matmul throughput of every CubeCL matmul strategy beside burn's own (fused and
    /// autotuned) at a training step's shapes, each checked against the autotuned result:
    /// the instrument for the GEMM gap to cuBLAS (docs/gemm-gap.md).
    Gemm(GemmArgs),
}

/// What `compare` and `bench` share: which architectures, at which size, matched how.
#[derive(Args, Debug, Clone)]
pub struct ArchArgs {
    /// Architectures: dense, mamba, mamba2, moe, sandwich (AMMMMMMA), sandwich2 (ASSSSSSA),
    /// hybrid (AMAM…), local (sliding-window hybrid LLLA…), hymba, jamba, gdn (Gated
    /// DeltaNet), deltanet, gdn-hybrid (GGGA…, 3:1); or a layer pattern such as AMMA or
    /// (LLLA)2. Default: dense mamba2 moe sandwich2.
    pub archs: Vec<String>,
    /// The size the architectures start from: tiny (CPU, minutes) or 27m (the seeds' models).
    /// [default: tiny]
    #[arg(long)]
    pub size: Option<String>,
    /// Size every architecture to the same budget of: params (total), active (parameters a
    /// token uses; MoE counts k experts), flops (training FLOPs per token), or state (decoding-
    /// state bytes per sequence at the training length). [default: active]
    #[arg(long = "match", value_parser = ["params", "active", "flops", "state"])]
    pub match_by: Option<String>,
    /// The budget, e.g. 25M or 1.5e6 (default: the dense model's value at --size).
    #[arg(long)]
    pub budget: Option<String>,
    /// Config overrides applied to every architecture, e.g. --set train.seq_len=256.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[arg(long, default_value = "auto", value_parser = device_parser())]
    pub device: DeviceArg,
    /// auto: bf16 on GPU, f32 on CPU.
    #[arg(long, value_parser = ["auto", "bf16", "f32"])]
    pub precision: Option<String>,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub arch: ArchArgs,
    /// A TOML experiment file (architectures, sweeps, budget, seeds, LR grid, overrides);
    /// command-line flags given explicitly win over it.
    #[arg(long)]
    pub experiment: Option<PathBuf>,
    /// Seeds per architecture (each seed: its own initialisation and data order, shared by
    /// all architectures).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Learning rates to try per architecture on the first seed, e.g. 1e-3,3e-3,1e-2; the
    /// best on a held-out selection set (the end of the validation split, never reported) is
    /// used for every seed.
    #[arg(long, value_delimiter = ',')]
    pub lr_grid: Vec<f64>,
    /// Optimizer steps per run (shorthand for --set train.max_steps=N).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Sequence lengths of the scaling measurement shown in the report; given without a value
    /// (or as "none"), no measurement, whatever an experiment file says.
    #[arg(long, value_delimiter = ',', num_args = 0.., value_parser = seq_len_parser())]
    pub bench_seq_lens: Option<Vec<SeqLen>>,
    /// Synthetic tasks to compare on, e.g. mqar,parity (docs/tasks.md): one comparison per
    /// task in DIR/<task>/, the same architectures and settings, and an overview report of
    /// every task's accuracy in DIR.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// The comparison directory (default: runs/compare-<time>). Rerunning with the same
    /// directory continues an interrupted comparison; finished runs are kept. Given alone,
    /// without architectures or settings, it continues whatever comparison DIR holds.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Runs to train at once on this machine, each in a process of its own (docs/cluster.md);
    /// the report then says that throughput and memory were measured with runs side by side.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Train each run on N devices in data parallel (as `train --devices`).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub devices: usize,
    /// Train only run N of the comparison planned in --dir (a Slurm array task, or by hand):
    /// the plan is read from DIR/compare.json.
    #[arg(long, value_name = "N", conflicts_with_all = ["finish", "emit", "jobs"])]
    pub run_index: Option<usize>,
    /// Finish the comparison in --dir once every run has: the scaling measurement, the text
    /// samples and the report (the last job of `--emit slurm`).
    #[arg(long, conflicts_with_all = ["emit", "jobs"])]
    pub finish: bool,
    /// Write the plan (DIR/compare.json) and scripts that run it on a scheduler, instead of
    /// training: `slurm` writes chained sbatch job arrays and DIR/slurm/submit.sh.
    #[arg(long, value_name = "SCHEDULER", value_parser = PossibleValuesParser::new(["slurm"]))]
    pub emit: Option<String>,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

/// Job settings of `--emit slurm` (over an experiment file's `[slurm]` section).
#[derive(Args, Debug)]
pub struct SlurmArgs {
    /// The partition every job runs in.
    #[arg(long)]
    pub slurm_partition: Option<String>,
    /// The account the jobs are charged to.
    #[arg(long)]
    pub slurm_account: Option<String>,
    /// The time limit of one run's task, e.g. 2:00:00.
    #[arg(long)]
    pub slurm_time: Option<String>,
    /// GPUs per task.
    #[arg(long)]
    pub slurm_gpus: Option<usize>,
    /// CPU cores per task.
    #[arg(long)]
    pub slurm_cpus: Option<usize>,
    /// Memory per task, e.g. 32G.
    #[arg(long)]
    pub slurm_mem: Option<String>,
    /// A further #SBATCH line, e.g. --slurm-line=--qos=high (repeatable).
    #[arg(long, value_name = "SBATCH_OPTION", allow_hyphen_values = true)]
    pub slurm_line: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A comparison directory written by `archlab compare`.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub arch: ArchArgs,
    /// Sequence lengths to measure.
    #[arg(long, value_delimiter = ',', default_value = "256,1024,4096,16384")]
    pub seq_lens: Vec<usize>,
    /// Tokens per training step, kept fixed across sequence lengths (batch = this / T, at least 1).
    #[arg(long, default_value_t = 16384)]
    pub tokens_per_step: usize,
    /// Timed training steps per point (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Also measure inference: prefill of T tokens and decoding of --decode-tokens tokens.
    #[arg(long)]
    pub inference: bool,
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Give up on a point after this many seconds (reported as failed).
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Where bench.json, bench.md and the plots go.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
    /// Train on the batches of this file of raw little-endian u32 token ids instead of random
    /// ids: step s takes the s-th run of batch·(T+1) tokens (inputs the first T of each row,
    /// targets shifted by one), cycling when the file ends. `tools/torch_baseline.py` reads
    /// the same file the same way.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// The device's dense peak in TFLOP/s for MFU, e.g. 989 for an H100 SXM in bf16. Without
    /// it the peak comes from a table of known GPUs (nvidia-smi's name); none on a CPU.
    #[arg(long, value_name = "TFLOPS")]
    pub peak_tflops: Option<f64>,
}

/// `archlab gemm`'s default problems (see [`archlab::bench::gemm::DEFAULT_SHAPES`]; the gemm
/// module exists only with a CubeCL backend).
pub const DEFAULT_GEMM_SHAPES: &str = "8192x8192x8192,16384x2048x768:nn,16384x768x2048:nt,\
768x2048x16384:tn,16384x50257x768:nn,4096x4096x4096,1024x1024x1024";

#[derive(Args, Debug)]
pub struct GemmArgs {
    /// Problems `MxNxK[:layout]`: `[M, K] · [K, N]`, with layout `nn` (default), `nt` (the
    /// right operand a transposed view, as in an input gradient) or `tn` (the left one, as in
    /// a weight gradient).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_GEMM_SHAPES)]
    pub shapes: Vec<String>,
    /// `cuda` or `wgpu`: the matmuls measured are CubeCL's.
    #[arg(long, default_value = "cuda", value_parser = device_parser())]
    pub device: DeviceArg,
    /// Element type of operands and output; accumulation is f32 either way.
    #[cfg(feature = "cube-kernels")]
    #[arg(long, default_value = "bf16",
          value_parser = PossibleValuesParser::new(["bf16", "f32"]).map(|s| s.parse::<archlab::bench::gemm::GemmDType>().expect("a listed type")))]
    pub dtype: archlab::bench::gemm::GemmDType,
    /// Only burn's own matmuls (fused and autotuned), not every strategy.
    #[arg(long)]
    pub autotuned_only: bool,
    /// Also list the strategies that could not run a problem, with their reasons.
    #[arg(long)]
    pub all: bool,
    /// Time each strategy for at least this long at steady state.
    #[arg(long, default_value_t = 0.2)]
    pub min_time_s: f64,
    /// Where gemm.json and gemm.md go.
    #[arg(long, default_value = "runs/gemm")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct TrainRunArgs {
    #[arg(long)]
    pub run_dir: PathBuf,
    #[arg(long, default_value = "auto", value_parser = device_parser())]
    pub device: DeviceArg,
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub quiet: bool,
    /// The comparison process that started this run; the run ends with it.
    #[arg(long)]
    pub parent: Option<u32>,
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
}

impl From<TrainRunArgs> for archlab::compare::worker::TrainRunRequest {
    fn from(a: TrainRunArgs) -> Self {
        Self {
            run_dir: a.run_dir,
            device: a.device,
            resume: a.resume,
            quiet: a.quiet,
            parent: a.parent,
            devices: a.devices,
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchPointArgs {
    /// The resolved config (TOML) of the architecture to measure.
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub seq_len: usize,
    #[arg(long)]
    pub batch: usize,
    #[arg(long)]
    pub steps: usize,
    #[arg(long)]
    pub inference: bool,
    #[arg(long)]
    pub decode_tokens: usize,
    #[arg(long, default_value = "auto", value_parser = device_parser())]
    pub device: DeviceArg,
    /// Train on this token file's batches (see `bench --tokens`) instead of random ids.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Where to write the point's JSON.
    #[arg(long)]
    pub out: PathBuf,
}

/// How a config is put together: a preset, then a TOML file, then `--set` overrides.
#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Starting point: tiny (CPU, minutes), 27m (the seeds' d=384 × 8 layers, T=512), 27m-256,
    /// mamba-tiny, mamba2-tiny, mamba-27m, mamba2-27m, mamba-130m, moe-tiny, moe-27m, gdn-tiny, gdn-27m.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// A TOML file with [data], [model], [train], [eval] sections, applied over the preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. --set model.d_model=512 (repeatable). Unknown keys are errors.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Layer pattern, one symbol per layer: A attention, L local attention, M Mamba, S Mamba-2,
    /// H Hymba, G Gated DeltaNet, D DeltaNet; each optionally followed by f (MLP), e (MoE) or
    /// n (no FFN); (…)N repeats. Omit to describe the preset as it is.
    pub pattern: Option<String>,
    /// Print the layer kinds a pattern can use (symbol, name, what it is, HF import, fused
    /// kernels) and exit.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Context length for the FLOPs per token (default: train.seq_len).
    #[arg(long)]
    pub seq_len: Option<usize>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// auto: CUDA if present, else CPU.
    #[arg(long, default_value = "auto", value_parser = device_parser())]
    pub device: DeviceArg,
    /// Shorthand for --set train.precision=… (auto: bf16 on GPU, f32 on CPU).
    #[arg(long, value_parser = ["auto", "bf16", "f32"])]
    pub precision: Option<String>,
    /// Where the run's files go (default: runs/<preset>-<time>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its last checkpoint (its saved config is used).
    #[arg(long, requires = "run_dir")]
    pub resume: bool,
    /// Fine-tune: start from the weights of this run (its best.ckpt) or checkpoint file; the
    /// model and tokenizer are the parent's, data and training settings this command's.
    #[arg(long, value_name = "RUN_OR_CHECKPOINT", conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
    /// Stop after this many steps, writing a checkpoint (resume later with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Train on N devices in data parallel: each batch split across N GPUs (or N peers sharing
    /// the CPU), gradients all-reduced, one optimizer (docs/cluster.md).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub devices: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A folder saved by `transformers` (config.json + *.safetensors [+ tokenizer.json]), or
    /// hf:<owner>/<name> to download one (feature `hub`), e.g. hf:state-spaces/mamba-130m-hf.
    pub source: String,
    /// The run directory to create.
    #[arg(long)]
    pub out: PathBuf,
    /// The tokenizer.json to use when the checkpoint folder has none.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Data, training and evaluation settings for the imported run (the model comes from the
    /// checkpoint); e.g. --set data.source=books.txt for `archlab eval`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// The trained model a command reads: a run and one of its checkpoints.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A run directory written by `archlab train` or `archlab import`.
    #[arg(long)]
    pub run: PathBuf,
    /// Which checkpoint: best or last.
    #[arg(long, default_value = "best", value_parser = ["best", "last"])]
    pub checkpoint: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The folder to create (it must not exist yet).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value = "auto", value_parser = device_parser())]
    pub device: DeviceArg,
    /// The address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The port (0: any free port; the address is printed when the server is ready).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Prompts scored together in one forward pass (1: no batching).
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Padded tokens in one forward pass (bounds the logits' memory).
    #[arg(long, default_value_t = 16384)]
    pub max_batch_tokens: usize,
    /// The largest `logprobs` (alternatives per position) a request may ask for.
    #[arg(long, default_value_t = 20)]
    pub max_logprobs: usize,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value = "auto", value_parser = device_parser())]
    pub device: DeviceArg,
    /// Score this corpus instead of the run's validation batches: any source `data.source`
    /// takes (a .txt / .jsonl / .parquet file or folder, builtin:stories), tokenized with the
    /// run's tokenizer, every token of it.
    #[arg(long)]
    pub data: Option<String>,
    /// With --data: score only the first N tokens (the output says how many of how many).
    #[arg(long, requires = "data", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tokens: Option<u64>,
    /// With --data: the field holding the text in .jsonl / .parquet sources (default: the
    /// run's data.text_field).
    #[arg(long, requires = "data")]
    pub text_field: Option<String>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text", "file", "tokens"])))]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value = "auto", value_parser = device_parser())]
    pub device: DeviceArg,
    /// The text to score, tokenized with the run's tokenizer.
    #[arg(long)]
    pub text: Option<String>,
    /// A file whose whole text is scored as one sequence.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Token ids as JSON: one sequence `[1, 2, 3]` or several `[[1, 2], [3, 4, 5]]`.
    #[arg(long)]
    pub tokens: Option<String>,
    /// Also list the K most likely tokens at every position.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value = "Once upon a time")]
    pub prompt: String,
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    /// 0 for greedy decoding. (A negative value is read as a value, and refused.)
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1.0: off).
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "auto", value_parser = device_parser())]
    pub device: DeviceArg,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Tokenize a corpus into token shards (train/val) with a progress bar.
    Prepare(PrepareArgs),
    /// Train a byte-level BPE tokenizer on a corpus and save it as tokenizer.json.
    Tokenizer(TokenizerArgs),
    /// Write the built-in story corpus as text.
    Stories(StoriesArgs),
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Corpus (overrides data.source): builtin:stories, a .txt/.jsonl/.parquet file or folder, hf:<dataset>.
    #[arg(long)]
    pub source: Option<String>,
    /// Tokenizer (overrides data.tokenizer): byte, bpe:<vocab>, or a tokenizer.json.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Output folder (default: under data.cache_dir, where `train` finds it).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TokenizerArgs {
    /// Corpus to train on (same forms as data.source).
    #[arg(long, default_value = "builtin:stories")]
    pub source: String,
    #[arg(long, default_value_t = 8192)]
    pub vocab: usize,
    /// Field or column holding the text in .jsonl / .parquet.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Size of the built-in corpus when --source builtin:stories.
    #[arg(long, default_value_t = 4_000_000)]
    pub builtin_bytes: usize,
    #[arg(long, default_value = "tokenizer.json")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct StoriesArgs {
    #[arg(long, default_value_t = 10_000)]
    pub bytes: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl From<ArchArgs> for ArchSelection {
    fn from(a: ArchArgs) -> Self {
        ArchSelection {
            archs: a.archs,
            size: a.size,
            match_by: a.match_by,
            budget: a.budget,
            sets: a.sets,
            device: a.device,
            precision: a.precision,
        }
    }
}

impl From<CompareArgs> for CompareRequest {
    fn from(a: CompareArgs) -> Self {
        CompareRequest {
            arch: a.arch.into(),
            experiment: a.experiment,
            seeds: a.seeds,
            lr_grid: a.lr_grid,
            steps: a.steps,
            bench_seq_lens: a.bench_seq_lens.map(|lens| lens.into_iter().flatten().collect()),
            tasks: a.tasks,
            dir: a.dir,
            quiet: a.quiet,
            jobs: a.jobs,
            devices: a.devices,
            run_index: a.run_index,
            finish: a.finish,
            emit: a.emit.map(|e| Emit::parse(&e).expect("a listed scheduler")),
            slurm: SlurmOptions {
                partition: a.slurm.slurm_partition,
                account: a.slurm.slurm_account,
                time: a.slurm.slurm_time,
                gpus: a.slurm.slurm_gpus,
                cpus: a.slurm.slurm_cpus,
                mem: a.slurm.slurm_mem,
                lines: a.slurm.slurm_line,
            },
        }
    }
}

impl From<BenchArgs> for BenchRequest {
    fn from(a: BenchArgs) -> Self {
        BenchRequest {
            arch: a.arch.into(),
            seq_lens: a.seq_lens,
            tokens_per_step: a.tokens_per_step,
            steps: a.steps,
            inference: a.inference,
            decode_tokens: a.decode_tokens,
            timeout_s: a.timeout_s,
            out: a.out,
            tokens: a.tokens,
            peak_tflops: a.peak_tflops,
        }
    }
}

impl From<BenchPointArgs> for PointRequest {
    fn from(a: BenchPointArgs) -> Self {
        PointRequest {
            config: a.config,
            seq_len: a.seq_len,
            batch: a.batch,
            steps: a.steps,
            inference: a.inference,
            decode_tokens: a.decode_tokens,
            device: a.device,
            tokens: a.tokens,
            out: a.out,
        }
    }
}

#[cfg(feature = "cube-kernels")]
impl From<GemmArgs> for archlab::bench::gemm::GemmRequest {
    fn from(a: GemmArgs) -> Self {
        archlab::bench::gemm::GemmRequest {
            shapes: a.shapes,
            device: a.device,
            dtype: a.dtype,
            autotuned_only: a.autotuned_only,
            all: a.all,
            min_time_s: a.min_time_s,
            out: a.out,
        }
    }
}

#[cfg(all(test, feature = "cube-kernels"))]
mod tests {
    #[test]
    fn the_default_gemm_shapes_are_the_library_defaults() {
        assert_eq!(super::DEFAULT_GEMM_SHAPES, archlab::bench::gemm::DEFAULT_SHAPES);
    }
}
