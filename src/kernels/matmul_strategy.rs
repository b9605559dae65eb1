//! CubeCL's matmul strategies, and archlab's matmuls routed through one of them.
//!
//! burn's matmul autotunes among the strategies its tuner offers and stops at the first batch
//! that launches (docs/gemm-gap.md). `archlab gemm` times every strategy of [`strategies`]; when
//! one beats the autotuner's pick, `--matmul NAME` (or `ARCHLAB_MATMUL=NAME`) makes every
//! matmul of archlab's models (linear layers, the head, MoE experts, the SSD) run it instead,
//! forward and backward, on CUDA and wgpu. That is archlab's lever on the GEMM gap should the
//! gap be the autotuner's choice. Off by default: the model's matmuls then go through burn
//! (fusion, autotune) untouched. A problem the forced strategy refuses runs burn's matmul, with
//! one warning per problem on stderr.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{Result, bail};

use super::AUTOTUNE_MATMUL as AUTOTUNE;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::FloatTensorOps;
use burn_cubecl::kernel::matmul::init_matmul_output;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::Strategy;
use cubek::matmul::routines::double_buffering::DoubleBufferingArgs;
use cubek::matmul::routines::double_unit::DoubleUnitSelectionArgs;
use cubek::matmul::routines::ordered_double_buffering::OrderedSelectionArgs;
use cubek::matmul::routines::simple::SimpleArgs;
use cubek::matmul::routines::simple_unit::SimpleUnitSelectionArgs;
use cubek::matmul::routines::{BlueprintStrategy, TileSizeSelection};
use cubek::std::InputBinding;

/// Every CubeCL strategy for a general matmul (45): the autotuner's 25 (burn-cubecl 0.21,
/// `kernel/matmul/tune/base.rs`, with its non-default arguments; its 4 vector-matrix kernels
/// are for m or n = 1) and the 20 it never offers (strided, tilewise, async and hybrid
/// loaders, TMA double buffering).
pub fn strategies() -> Vec<Strategy> {
    use BlueprintStrategy::Inferred;
    use Strategy as S;
    let rows = || SimpleArgs { multi_rows: true, ..SimpleArgs::default() };
    // The variant stamps its tile matmul (CMMA or MMA) over the arguments' own.
    let specialized =
        || Inferred(DoubleBufferingArgs { specialized: true, ..DoubleBufferingArgs::default() });
    let ordered = |row_count| {
        Inferred(OrderedSelectionArgs {
            partition_k: Some(2),
            row_count: Some(row_count),
            rows_per_plane: Some(2),
            ..OrderedSelectionArgs::default()
        })
    };
    let mut all = vec![S::Naive];
    for tile_size in [TileSizeSelection::MaxTileSize, TileSizeSelection::MinTileSize] {
        all.push(S::SimpleUnit(Inferred(SimpleUnitSelectionArgs { tile_size })));
        all.push(S::DoubleUnit(Inferred(DoubleUnitSelectionArgs { tile_size })));
    }
    all.extend([
        S::SimpleCyclicCmma(Default::default()),
        S::SimpleCyclicMma(Default::default()),
        S::SimpleCyclicCmma(Inferred(rows())),
        S::SimpleCyclicMma(Inferred(rows())),
        S::SimpleStridedCmma(Default::default()),
        S::SimpleStridedMma(Default::default()),
        S::SimpleTilewiseCmma(Default::default()),
        S::SimpleTilewiseMma(Default::default()),
        S::SimpleAsyncStridedCmma(Default::default()),
        S::SimpleAsyncStridedMma(Default::default()),
        S::SimpleAsyncCyclicCmma(Default::default()),
        S::SimpleAsyncCyclicMma(Default::default()),
        S::SimpleTmaCmma(Default::default()),
        S::SimpleTmaMma(Default::default()),
        S::SimpleTmaCmma(Inferred(rows())),
        S::SimpleTmaMma(Inferred(rows())),
        S::DoubleCyclicCmma(Default::default()),
        S::DoubleCyclicMma(Default::default()),
        S::DoubleCyclicCmma(specialized()),
        S::DoubleCyclicMma(specialized()),
        S::DoubleTilewiseCmma(Default::default()),
        S::DoubleTilewiseMma(Default::default()),
        S::DoubleHybridCmma(Default::default()),
        S::DoubleHybridMma(Default::default()),
        S::DoubleAsyncCyclicCmma(Default::default()),
        S::DoubleAsyncCyclicMma(Default::default()),
        S::DoubleAsyncStridedCmma(Default::default()),
        S::DoubleAsyncStridedMma(Default::default()),
        S::DoubleTmaCmma(Default::default()),
        S::DoubleTmaMma(Default::default()),
        S::SpecializedCyclicCmma(Default::default()),
        S::SpecializedCyclicMma(Default::default()),
        S::SpecializedStridedCmma(Default::default()),
        S::SpecializedStridedMma(Default::default()),
        S::SpecializedTmaCmma(Default::default()),
        S::SpecializedTmaMma(Default::default()),
        S::OrderedDoubleCmma(ordered(4)),
        S::OrderedDoubleMma(ordered(4)),
        S::OrderedDoubleCmma(ordered(8)),
        S::OrderedDoubleMma(ordered(8)),
    ]);
    all
}

/// Launches one strategy into `out` (of the operands' dtype), accumulating in f32.
pub fn launch<R: CubeRuntime>(
    strategy: &Strategy,
    lhs: &CubeTensor<R>,
    rhs: &CubeTensor<R>,
    out: &CubeTensor<R>,
) -> std::result::Result<(), String> {
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: lhs.dtype.into(),
        rhs: rhs.dtype.into(),
        out: out.dtype.into(),
    });
    cubek::matmul::launch::launch_ref(
        strategy,
        &out.client,
        InputBinding::new(lhs.clone().binding(), lhs.dtype.into()),
        InputBinding::new(rhs.clone().binding(), rhs.dtype.into()),
        out.clone().binding(),
        &mut dtypes,
    )
    .map_err(|e| format!("{e:?}"))
}

pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// The strategies, built once (their index is the forced choice).
fn all() -> &'static [Strategy] {
    static ALL: OnceLock<Vec<Strategy>> = OnceLock::new();
    ALL.get_or_init(strategies)
}

/// The forced strategy's index in [`all`], or `usize::MAX` for burn's autotuned matmul.
static FORCED: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Routes archlab's matmuls through the strategy called `name` (a name `archlab gemm`
/// prints), or back to burn's autotuned matmul for `autotune`. An unknown name is an error
/// that lists the known ones.
pub fn force(name: &str) -> Result<()> {
    if name == AUTOTUNE {
        FORCED.store(usize::MAX, Ordering::Relaxed);
        return Ok(());
    }
    match all().iter().position(|s| s.to_string() == name) {
        Some(i) => {
            FORCED.store(i, Ordering::Relaxed);
            Ok(())
        }
        None => {
            let names: Vec<String> = all().iter().map(|s| s.to_string()).collect();
            bail!(
                "--matmul {name}: no such CubeCL matmul strategy. Use {AUTOTUNE} (burn's choice) or one \
                 of the names `archlab gemm` prints: {}",
                names.join(", ")
            )
        }
    }
}

/// The strategy archlab's matmuls are routed through, if one is forced.
pub fn forced() -> Option<&'static Strategy> {
    all().get(FORCED.load(Ordering::Relaxed))
}

/// `lhs · rhs` (batch dimensions broadcast, as burn's matmul) with the forced strategy, in
/// the operands' dtype with f32 accumulation; burn's matmul where the strategy refuses the
/// problem or none is forced.
pub(super) fn forced_matmul<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    lhs: CubeTensor<R>,
    rhs: CubeTensor<R>,
) -> CubeTensor<R> {
    let Some(strategy) = forced() else {
        return CubeBackend::<R, F, I, BT>::float_matmul(lhs, rhs);
    };
    let out = init_matmul_output(&lhs, &rhs, lhs.dtype());
    // A strategy may refuse a problem (an error) or, on a device it was not written for, panic.
    match catch_unwind(AssertUnwindSafe(|| launch(strategy, &lhs, &rhs, &out))) {
        Ok(Ok(())) => out,
        Ok(Err(error)) => fall_back::<R, F, I, BT>(strategy, lhs, rhs, error),
        Err(panic) => fall_back::<R, F, I, BT>(strategy, lhs, rhs, panic_message(&panic)),
    }
}

/// How many matmuls the forced strategy refused (and burn's matmul ran instead).
static FALLBACKS: AtomicUsize = AtomicUsize::new(0);

/// How many matmuls the forced strategy has refused in this process (each then ran burn's).
pub fn fallbacks() -> usize {
    FALLBACKS.load(Ordering::Relaxed)
}

/// burn's matmul for a problem the forced strategy refused, saying so once per problem.
fn fall_back<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    strategy: &Strategy,
    lhs: CubeTensor<R>,
    rhs: CubeTensor<R>,
    error: String,
) -> CubeTensor<R> {
    FALLBACKS.fetch_add(1, Ordering::Relaxed);
    static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let problem = format!("{:?} · {:?} ({:?})", lhs.shape().as_slice(), rhs.shape().as_slice(), lhs.dtype());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.get_or_insert_with(HashSet::new).insert(problem.clone()) {
        let reason = error.lines().next().unwrap_or("").chars().take(200).collect::<String>();
        eprintln!(
            "warning: matmul strategy {strategy} cannot run {problem}: {reason}; using burn's matmul for it"
        );
    }
    CubeBackend::<R, F, I, BT>::float_matmul(lhs, rhs)
}
