//! `archlab gemm`: bf16 matmul throughput of every CubeCL matmul strategy at the shapes of a
//! training step, beside what archlab's models actually get (burn's fused and autotuned
//! matmul). It is the instrument for the GEMM gap (burn at 28% of cuBLAS on an H100):
//! if some strategy is far ahead of the autotuner's pick, the gap is the autotuner's choice
//! and archlab can force that strategy; if none comes near cuBLAS, the gap is in the kernels
//! themselves. `tools/gemm_vs_torch.py` puts cuBLAS (through PyTorch) beside it in one call,
//! and `docs/gemm-gap.md` says what the autotuner tries and why cuBLAS cannot simply be
//! called instead.
//!
//! Every measured output is checked against the autotuned result (relative error of the
//! largest difference): a strategy that is fast but wrong is reported as such, not ranked.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend as BurnBackend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive, bf16};
use burn_cubecl::kernel::matmul::init_matmul_output;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime};
use cubek::matmul::launch::Strategy;
use serde::{Deserialize, Serialize};

use crate::device::Resolved;
pub use crate::kernels::matmul_strategy::strategies;
use crate::kernels::matmul_strategy::{launch, panic_message};
use crate::util::atomic;

/// How the operands of `out[m, n] = lhs[m, k] · rhs[k, n]` lie in memory: the three matmuls
/// of a linear layer's training step. Transposed operands are strided views, as burn's
/// autodiff hands them to the matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Forward, `x · W`: both row-major.
    Nn,
    /// Input gradient, `dy · Wᵀ`: rhs is a transposed view.
    Nt,
    /// Weight gradient, `xᵀ · dy`: lhs is a transposed view.
    Tn,
}

/// The element type of operands and output (the accumulation is f32 either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GemmDType {
    /// What archlab's models multiply in under bf16 (tensor cores on CUDA).
    Bf16,
    /// For backends without bf16, as wgpu's shader compilers are.
    F32,
}

impl std::str::FromStr for GemmDType {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bf16" => Ok(GemmDType::Bf16),
            "f32" => Ok(GemmDType::F32),
            other => bail!("unknown element type {other:?}: expected bf16 or f32"),
        }
    }
}

impl GemmDType {
    fn dtype(self) -> DType {
        match self {
            GemmDType::Bf16 => DType::BF16,
            GemmDType::F32 => DType::F32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GemmDType::Bf16 => "bf16",
            GemmDType::F32 => "f32",
        }
    }

    /// A value as the device holds it.
    fn round(self, v: f32) -> f64 {
        match self {
            GemmDType::Bf16 => bf16::from_f32(v).to_f64(),
            GemmDType::F32 => v as f64,
        }
    }
}

/// One matmul problem: `[m, k] · [k, n]` in the given layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub layout: Layout,
}

impl GemmShape {
    /// Parses `MxNxK` or `MxNxK:nn|nt|tn` (the layout defaults to `nn`).
    pub fn parse(text: &str) -> Result<Self> {
        let (dims, layout) = text.split_once(':').unwrap_or((text, "nn"));
        let layout = match layout {
            "nn" => Layout::Nn,
            "nt" => Layout::Nt,
            "tn" => Layout::Tn,
            other => bail!("GEMM shape {text:?}: layout {other:?} is not nn, nt or tn"),
        };
        let parts: Vec<&str> = dims.split('x').collect();
        let parse = |s: &str| s.parse::<usize>().ok().filter(|&v| v > 0);
        match parts.as_slice() {
            [m, n, k] => match (parse(m), parse(n), parse(k)) {
                (Some(m), Some(n), Some(k)) => Ok(Self { m, n, k, layout }),
                _ => {
                    bail!("GEMM shape {text:?}: M, N and K must be positive integers, e.g. 4096x4096x4096:nn")
                }
            },
            _ => bail!("GEMM shape {text:?} is not MxNxK[:layout], e.g. 16384x2048x768:nt"),
        }
    }

    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

impl std::fmt::Display for GemmShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layout = match self.layout {
            Layout::Nn => "nn",
            Layout::Nt => "nt",
            Layout::Tn => "tn",
        };
        write!(f, "{}x{}x{}:{layout}", self.m, self.n, self.k)
    }
}

/// What one strategy did on one problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmRow {
    pub shape: GemmShape,
    /// `burn fused` (what a model on `--device cuda` runs: burn's fusion backend),
    /// `burn autotune` (the autotuner of the raw backend), or a CubeCL strategy's name.
    pub strategy: String,
    pub status: GemmStatus,
    /// The first call: kernel compilation, and for the autotuned rows the tuning too.
    pub first_call_s: f64,
    /// Steady state, per call.
    pub seconds_per_call: Option<f64>,
    pub tflops: Option<f64>,
    /// `max |out − reference| / max |reference|`. The reference is `burn autotune`'s output;
    /// on its own row, the host's f64 product where the problem is small enough
    /// ([`HOST_CHECK_MACS`]), and empty above that.
    pub max_rel_err: Option<f64>,
    /// Why the strategy could not run (its setup error or panic), first line.
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GemmStatus {
    Ok,
    /// Ran, but its output differs from the reference by more than [`MAX_REL_ERR`].
    Wrong,
    /// Refused the problem (unsupported on this device or shape) or panicked.
    Failed,
}

/// Outputs in bf16 have 8 significant bits (a relative rounding of 2⁻⁹ per element), so two
/// correct kernels that accumulate in a different order differ by a few units of that at
/// most; a wrong tile or a missed edge differs by the size of the values. (f32 outputs agree
/// far closer, and are held to the same bound: it is there to catch wrong kernels.)
pub const MAX_REL_ERR: f64 = 2e-2;

/// The largest problem (multiply-adds) whose reference is checked on the host.
pub const HOST_CHECK_MACS: usize = 1 << 30;

/// `lhs · rhs` in f64 on the host, from the operands as stored (see [`operands`]) rounded to
/// the element type as the device sees them.
fn host_matmul(lhs: &TensorData, rhs: &TensorData, shape: GemmShape, dtype: GemmDType) -> Vec<f32> {
    let GemmShape { m, n, k, layout } = shape;
    let round = |d: &TensorData| -> Vec<f64> {
        d.to_vec::<f32>().expect("f32 operands").into_iter().map(|v| dtype.round(v)).collect()
    };
    let (a, b) = (round(lhs), round(rhs));
    // Both operands as rows of length k (lhs `[m, k]`, rhs transposed to `[n, k]`), so that
    // every dot product reads contiguous memory.
    let rows_of = |v: &[f64], rows: usize, cols: usize, transposed: bool| -> Vec<f64> {
        if !transposed {
            return v.to_vec();
        }
        let mut t = vec![0.0; v.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = v[r * cols + c];
            }
        }
        t
    };
    let a = rows_of(&a, k, m, layout == Layout::Tn); // stored [k, m] for tn
    let b = rows_of(&b, k, n, layout != Layout::Nt); // stored [n, k] for nt already
    let mut out = vec![0.0f32; m * n];
    for (i, a_row) in a.chunks(k).enumerate() {
        for (j, b_row) in b.chunks(k).enumerate() {
            out[i * n + j] = a_row.iter().zip(b_row).map(|(x, y)| x * y).sum::<f64>() as f32;
        }
    }
    out
}

/// `max |a − b| / max |b|` over two equal-length slices.
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs())).max(f64::MIN_POSITIVE);
    let worst = a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    worst / scale
}

/// How long to time each strategy at steady state (at least 3 calls, at most 200; a single
/// call when the first one already took this long).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub min_time: Duration,
}

/// Runs every problem through `burn fused` (`Fused`, burn's fusion backend over the same
/// runtime), `burn autotune` (the raw backend) and, unless `autotuned_only`, every strategy
/// of [`strategies`]. `progress` hears each row as it is measured.
pub fn sweep<R, BT, Fused>(
    device: &R::Device,
    shapes: &[GemmShape],
    dtype: GemmDType,
    autotuned_only: bool,
    timing: Timing,
    mut progress: impl FnMut(&GemmRow),
) -> Result<Vec<GemmRow>>
where
    R: CubeRuntime,
    BT: BoolElement,
    Fused: BurnBackend<Device = R::Device>,
{
    type Raw<R, BT> = CubeBackend<R, f32, i32, BT>;
    let mut rows = Vec::new();
    for &shape in shapes {
        let (lhs_data, rhs_data) = operands(shape);
        let raw_lhs = operand::<Raw<R, BT>>(&lhs_data, shape.layout == Layout::Tn, dtype, device);
        let raw_rhs = operand::<Raw<R, BT>>(&rhs_data, shape.layout == Layout::Nt, dtype, device);

        // The reference, and what the raw backend's autotuner makes of the problem.
        let (reference, first_call_s, per_call) = burn_matmul(&raw_lhs, &raw_rhs, shape, timing, device)?;
        let reference_host = host(reference)?;
        // The reference is itself checked where the host can afford it (1024³ takes a few
        // seconds); above that, `max_rel_err` of this row is left empty.
        let checked = (shape.m * shape.n * shape.k <= HOST_CHECK_MACS)
            .then(|| relative_error(&reference_host, &host_matmul(&lhs_data, &rhs_data, shape, dtype)));
        let mut row = measured(shape, "burn autotune", first_call_s, per_call, checked.unwrap_or(0.0));
        row.max_rel_err = checked;
        progress(&row);
        rows.push(row);

        // The model path: burn's fusion backend, which may pick a fused matmul of its own.
        let fused_lhs = operand::<Fused>(&lhs_data, shape.layout == Layout::Tn, dtype, device);
        let fused_rhs = operand::<Fused>(&rhs_data, shape.layout == Layout::Nt, dtype, device);
        let (out, first_call_s, per_call) = burn_matmul(&fused_lhs, &fused_rhs, shape, timing, device)?;
        let err = relative_error(&host(out)?, &reference_host);
        let row = measured(shape, "burn fused", first_call_s, per_call, err);
        progress(&row);
        rows.push(row);

        if autotuned_only {
            continue;
        }
        let (lhs, rhs) = (primitive(raw_lhs), primitive(raw_rhs));
        for strategy in strategies() {
            let row =
                measure_strategy::<R, BT>(shape, &strategy, &lhs, &rhs, &reference_host, timing, device);
            progress(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// burn's own `matmul` on `B`: the first call's output and seconds (compilation and tuning
/// included), and the steady-state seconds per call.
fn burn_matmul<B: BurnBackend>(
    lhs: &Tensor<B, 2>,
    rhs: &Tensor<B, 2>,
    shape: GemmShape,
    timing: Timing,
    device: &B::Device,
) -> Result<(Tensor<B, 2>, f64, f64)> {
    let started = Instant::now();
    let out = lhs.clone().matmul(rhs.clone());
    sync::<B>(device)?;
    let first_call_s = started.elapsed().as_secs_f64();
    let per_call =
        time_calls(timing, max_calls(shape), || sync::<B>(device), || lhs.clone().matmul(rhs.clone()))?;
    Ok((out, first_call_s, per_call))
}

fn measure_strategy<R: CubeRuntime, BT: BoolElement>(
    shape: GemmShape,
    strategy: &Strategy,
    lhs: &CubeTensor<R>,
    rhs: &CubeTensor<R>,
    reference: &[f32],
    timing: Timing,
    device: &R::Device,
) -> GemmRow {
    let name = strategy.to_string();
    let out = init_matmul_output(lhs, rhs, lhs.dtype);
    let sync = || sync::<CubeBackend<R, f32, i32, BT>>(device);
    let failed = |first_call_s: f64, error: String| GemmRow {
        shape,
        strategy: name.clone(),
        status: GemmStatus::Failed,
        first_call_s,
        seconds_per_call: None,
        tflops: None,
        max_rel_err: None,
        error: Some(error.lines().next().unwrap_or("").chars().take(200).collect()),
    };
    // A strategy may refuse the problem (an error) or, on a device it was not written for,
    // panic; either way the sweep goes on to the next one.
    let started = Instant::now();
    let first = catch_unwind(AssertUnwindSafe(|| {
        launch(strategy, lhs, rhs, &out)?;
        sync().map_err(|e| e.to_string())
    }));
    let first_call_s = started.elapsed().as_secs_f64();
    match first {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return failed(first_call_s, error),
        Err(panic) => return failed(first_call_s, format!("panicked: {}", panic_message(&panic))),
    }
    let timed = catch_unwind(AssertUnwindSafe(|| {
        // Every call writes the same output, so nothing needs keeping.
        time_calls(timing, 200, sync, || {
            let _ = launch(strategy, lhs, rhs, &out);
        })
    }));
    let per_call = match timed {
        Ok(Ok(t)) => t,
        Ok(Err(error)) => return failed(first_call_s, error.to_string()),
        Err(panic) => return failed(first_call_s, format!("panicked: {}", panic_message(&panic))),
    };
    let out = Tensor::<CubeBackend<R, f32, i32, BT>, 2>::from_primitive(TensorPrimitive::Float(out));
    match host(out) {
        Ok(values) => {
            let err = relative_error(&values, reference);
            measured(shape, &name, first_call_s, per_call, err)
        }
        Err(error) => failed(first_call_s, error.to_string()),
    }
}

fn measured(shape: GemmShape, strategy: &str, first_call_s: f64, per_call: f64, err: f64) -> GemmRow {
    GemmRow {
        shape,
        strategy: strategy.to_string(),
        status: if err <= MAX_REL_ERR { GemmStatus::Ok } else { GemmStatus::Wrong },
        first_call_s,
        seconds_per_call: Some(per_call),
        tflops: Some(shape.flops() / per_call / 1e12),
        max_rel_err: Some(err),
        error: None,
    }
}

/// Seconds per call at steady state: one call to calibrate, then enough calls to fill
/// `timing.min_time` (at least 3, at most `max_calls`), synchronised once at the end. Each
/// call's output is kept until then: burn's fusion backend is lazy, and an output dropped
/// before the sync need not be computed at all.
fn time_calls<T>(
    timing: Timing,
    max_calls: usize,
    sync: impl Fn() -> Result<()>,
    mut call: impl FnMut() -> T,
) -> Result<f64> {
    sync()?;
    let started = Instant::now();
    let kept = call();
    sync()?;
    let once = started.elapsed();
    drop(kept);
    if once >= timing.min_time {
        return Ok(once.as_secs_f64());
    }
    let calls = (timing.min_time.as_secs_f64() / once.as_secs_f64().max(1e-6)).ceil() as usize;
    let calls = calls.clamp(3, max_calls.max(3));
    let mut kept = Vec::with_capacity(calls);
    let started = Instant::now();
    for _ in 0..calls {
        kept.push(call());
    }
    sync()?;
    let elapsed = started.elapsed();
    drop(kept);
    Ok(elapsed.as_secs_f64() / calls as f64)
}

/// At most 200 timed calls, fewer where their kept outputs would pass 2 GiB.
fn max_calls(shape: GemmShape) -> usize {
    let output_bytes = (shape.m * shape.n * 2).max(1);
    ((2usize << 30) / output_bytes).clamp(3, 200)
}

/// The problem's operands as stored: `lhs` `[m, k]` (`[k, m]` for `tn`), `rhs` `[k, n]`
/// (`[n, k]` for `nt`), values in [−1, 1) from a fixed generator.
fn operands(shape: GemmShape) -> (TensorData, TensorData) {
    let GemmShape { m, n, k, layout } = shape;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut values = |rows: usize, cols: usize| {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| {
                // xorshift64*: fast, and the values only need to be spread, not random.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
                bits as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        TensorData::new(v, [rows, cols])
    };
    let lhs = if layout == Layout::Tn { values(k, m) } else { values(m, k) };
    let rhs = if layout == Layout::Nt { values(n, k) } else { values(k, n) };
    (lhs, rhs)
}

/// An operand on the device, transposed as a strided view when `transposed`.
fn operand<B: BurnBackend>(
    data: &TensorData,
    transposed: bool,
    dtype: GemmDType,
    device: &B::Device,
) -> Tensor<B, 2> {
    let t = Tensor::<B, 2>::from_data(data.clone(), device).cast(dtype.dtype());
    if transposed { t.transpose() } else { t }
}

fn primitive<R: CubeRuntime, BT: BoolElement>(t: Tensor<CubeBackend<R, f32, i32, BT>, 2>) -> CubeTensor<R> {
    t.into_primitive().tensor()
}

fn host<B: BurnBackend>(t: Tensor<B, 2>) -> Result<Vec<f32>> {
    t.cast(DType::F32)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a matmul result back: {e:?}"))
}

fn sync<B: BurnBackend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| anyhow::anyhow!("the device failed during the matmul: {e:?}"))
}

/// The rows as a Markdown table, problem by problem, fastest first; failed strategies are
/// counted, not listed, unless `all`.
pub fn table(rows: &[GemmRow], all: bool) -> String {
    let mut out = String::new();
    let mut shapes: Vec<GemmShape> = Vec::new();
    for r in rows {
        if !shapes.contains(&r.shape) {
            shapes.push(r.shape);
        }
    }
    for shape in shapes {
        let mut of: Vec<&GemmRow> = rows.iter().filter(|r| r.shape == shape).collect();
        of.sort_by(|a, b| b.tflops.unwrap_or(-1.0).total_cmp(&a.tflops.unwrap_or(-1.0)));
        out += &format!("\n### {shape} ({:.1} GFLOP)\n\n", shape.flops() / 1e9);
        out +=
            "| strategy | TFLOP/s | ms/call | first call s | rel err | status |\n|---|---|---|---|---|---|\n";
        let mut failed = 0;
        for r in of {
            if r.status == GemmStatus::Failed && !all {
                failed += 1;
                continue;
            }
            let cell = |v: Option<f64>, digits: usize| v.map_or("—".into(), |v| format!("{v:.digits$}"));
            out += &format!(
                "| {} | {} | {} | {:.2} | {} | {} |\n",
                r.strategy,
                cell(r.tflops, 1),
                cell(r.seconds_per_call.map(|s| s * 1e3), 3),
                r.first_call_s,
                r.max_rel_err.map_or("—".into(), |e| format!("{e:.1e}")),
                match r.status {
                    GemmStatus::Ok => "ok".to_string(),
                    GemmStatus::Wrong => "WRONG".to_string(),
                    GemmStatus::Failed => format!("failed: {}", r.error.as_deref().unwrap_or("")),
                }
            );
        }
        if failed > 0 {
            out += &format!(
                "\n{failed} strategies could not run this problem on this device (`--all` lists why).\n"
            );
        }
    }
    out
}

/// The JSON `archlab gemm` writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct GemmReport {
    pub device: String,
    pub dtype: String,
    pub rows: Vec<GemmRow>,
}

/// `archlab gemm`'s default problems, most telling first (a sweep cut short by a time limit
/// keeps the first): the GEMM gap's reference problem (8192³, where burn reached 224 TFLOP/s against
/// cuBLAS's 796), then the three matmuls of a d=768 model's MLP projection (`d_ff` 2048) at
/// 16 384 tokens a step (forward `nn`, input gradient `nt`, weight gradient `tn`), its 50 257-word
/// vocabulary head, and two smaller squares.
pub const DEFAULT_SHAPES: &str = "8192x8192x8192,16384x2048x768:nn,16384x768x2048:nt,\
768x2048x16384:tn,16384x50257x768:nn,4096x4096x4096,1024x1024x1024";

/// What to measure: `archlab gemm`'s flags.
#[derive(Clone, Debug)]
pub struct GemmRequest {
    /// Problems `MxNxK[:layout]` (see [`GemmShape::parse`]).
    pub shapes: Vec<String>,
    /// `Cuda` or `Wgpu`: the matmuls measured are CubeCL's.
    pub device: crate::device::DeviceArg,
    pub dtype: GemmDType,
    /// Only burn's own matmuls (fused and autotuned), not every strategy.
    pub autotuned_only: bool,
    /// Also list the strategies that could not run a problem, with their reasons.
    pub all: bool,
    /// Time each strategy for at least this long at steady state.
    pub min_time_s: f64,
    /// Where gemm.json and gemm.md go.
    pub out: std::path::PathBuf,
}

/// The `gemm` command: measure, write `gemm.json` and `gemm.md` under `--out`, print the table.
pub fn run(a: GemmRequest) -> Result<()> {
    let shapes = parse_shapes(&a.shapes)?;
    if !(a.min_time_s.is_finite() && a.min_time_s > 0.0) {
        bail!("--min-time-s {} must be a positive number of seconds, e.g. 0.2", a.min_time_s);
    }
    let timing = Timing { min_time: Duration::from_secs_f64(a.min_time_s) };
    let dtype = a.dtype;
    let (json_path, md_path) = (a.out.join("gemm.json"), a.out.join("gemm.md"));
    let dtype_name = dtype.name();
    let write = |device: &str, rows: &[GemmRow]| -> Result<String> {
        let report = GemmReport {
            device: device.to_string(),
            dtype: format!("{dtype_name} operands and output, f32 accumulation"),
            rows: rows.to_vec(),
        };
        atomic::write_json(&json_path, &report)?;
        let text = table(rows, a.all);
        let md = format!(
            "# archlab gemm on {device}, {dtype_name}\n\nCommand: `archlab gemm --device {device} --dtype {dtype_name} --shapes {}`\n{text}",
            a.shapes.join(",")
        );
        atomic::write(&md_path, md.as_bytes())?;
        Ok(text)
    };
    // Every row is written as soon as it is measured, so that a sweep cut short (a time
    // limit, a crashing strategy) keeps what it had.
    let mut done: Vec<GemmRow> = Vec::new();
    let mut write_error = None;
    let mut progress = |device: &str, r: &GemmRow| {
        let speed = r.tflops.map_or("—".to_string(), |t| format!("{t:.1} TFLOP/s"));
        let status = match r.status {
            GemmStatus::Ok => "ok",
            GemmStatus::Wrong => "WRONG",
            GemmStatus::Failed => "failed",
        };
        eprintln!("  {:<22} {:<60} {speed:>16}  {status}", r.shape.to_string(), r.strategy);
        done.push(r.clone());
        if let Err(e) = write(device, &done) {
            write_error.get_or_insert(e);
        }
    };
    let (device, rows) = match crate::device::resolve(a.device)? {
        Resolved::Cpu => bail!(
            "archlab gemm measures CubeCL's GPU matmuls: use --device cuda, or --device wgpu \
             (Metal, Vulkan, DX12)"
        ),
        #[cfg(feature = "cuda")]
        Resolved::Cuda => {
            let device = Default::default();
            let rows = sweep::<cubecl::cuda::CudaRuntime, u8, crate::device::CudaBackend>(
                &device,
                &shapes,
                dtype,
                a.autotuned_only,
                timing,
                |r| progress("cuda", r),
            )?;
            ("cuda", rows)
        }
        #[cfg(feature = "wgpu")]
        Resolved::Wgpu => {
            if dtype == GemmDType::Bf16 {
                bail!("--device wgpu: wgpu's shader compilers have no bf16; use --dtype f32");
            }
            let device = crate::device::wgpu_device()
                .context("--device wgpu: no graphics adapter found (a Vulkan, Metal or DX12 driver)")?;
            let rows = sweep::<burn::backend::wgpu::WgpuRuntime, u32, crate::device::WgpuBackend>(
                &device,
                &shapes,
                dtype,
                a.autotuned_only,
                timing,
                |r| progress("wgpu", r),
            )?;
            ("wgpu", rows)
        }
    };
    if let Some(e) = write_error {
        return Err(e.context("writing the results"));
    }
    let text = write(device, &rows)?;
    println!("{text}");
    println!("wrote {} and {}", json_path.display(), md_path.display());
    Ok(())
}

/// Parses a comma-separated list of shapes, failing on the first bad one.
pub fn parse_shapes(list: &[String]) -> Result<Vec<GemmShape>> {
    if list.is_empty() {
        bail!("--shapes is empty; give MxNxK[:nn|nt|tn] problems, e.g. 4096x4096x4096");
    }
    list.iter().map(|s| GemmShape::parse(s.trim()).with_context(|| "in --shapes".to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_with_and_without_a_layout() {
        let s = GemmShape::parse("16384x768x2048:nt").unwrap();
        assert_eq!(s, GemmShape { m: 16384, n: 768, k: 2048, layout: Layout::Nt });
        assert_eq!(s.to_string(), "16384x768x2048:nt");
        assert_eq!(GemmShape::parse("8x4x2").unwrap().layout, Layout::Nn);
        let defaults: Vec<String> = DEFAULT_SHAPES.split(',').map(String::from).collect();
        assert_eq!(parse_shapes(&defaults).unwrap().len(), 7);
    }

    #[test]
    fn bad_shapes_name_the_problem() {
        for (bad, says) in [
            ("8x4", "is not MxNxK"),
            ("8x0x2", "positive integers"),
            ("8x4x2:tt", "layout \"tt\""),
            ("axbxc", "positive integers"),
        ] {
            let err = GemmShape::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(parse_shapes(&[]).is_err());
    }

    #[test]
    fn relative_error_is_the_worst_difference_over_the_largest_value() {
        assert_eq!(relative_error(&[1.0, 2.0, -4.0], &[1.0, 2.0, -4.0]), 0.0);
        assert!((relative_error(&[1.5, 2.0, -4.0], &[1.0, 2.0, -4.0]) - 0.125).abs() < 1e-12);
        assert!(relative_error(&[0.0, 3.0], &[0.0, 0.0]) > 1e6, "a zero reference does not hide errors");
    }

    #[test]
    fn the_sweep_covers_the_autotune_set_and_more() {
        let names: Vec<String> = strategies().iter().map(|s| s.to_string()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "every strategy once: {names:?}");
        assert_eq!(names.len(), 45);
        for wanted in ["matmul_naive", "specialized_tma_mma", "double_tma_cmma", "simple_async_cyclic_mma"] {
            assert!(names.iter().any(|n| n.contains(wanted)), "{wanted} missing from {names:?}");
        }
    }

    #[test]
    fn operands_follow_the_layout() {
        let shape = GemmShape { m: 3, n: 5, k: 2, layout: Layout::Tn };
        let (lhs, rhs) = operands(shape);
        assert_eq!(lhs.shape.as_slice(), &[2, 3]);
        assert_eq!(rhs.shape.as_slice(), &[2, 5]);
        let (_, rhs) = operands(GemmShape { layout: Layout::Nt, ..shape });
        assert_eq!(rhs.shape.as_slice(), &[5, 2]);
        let values = lhs.into_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| (-1.0..1.0).contains(v)), "{values:?}");
    }
}
