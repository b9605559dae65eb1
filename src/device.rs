//! Choosing the compute backend at run time.
//!
//! `--device auto` (the default) uses CUDA when the binary was built with it and a driver is
//! present, and otherwise the CPU, saying so in one line. `--device cuda` without a driver is
//! an error that says what is missing, not a panic deep inside the runtime.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// The CPU backend. Flex trained the tiny preset faster than NdArray in every run of
/// `benches/cpu_backends.rs` (see `bench/results/cpu-backend.md`).
pub type CpuBackend = burn::backend::Flex<f32>;

#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32, i32>;

#[cfg(feature = "wgpu")]
pub type WgpuBackend = burn::backend::Wgpu<f32, i32>;

/// The device a user asks for (`--device`); [`resolve`] turns it into the backend that runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceArg {
    /// CUDA when the binary has it and a driver is present, otherwise the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
    Wgpu,
}

impl DeviceArg {
    /// Every choice by its name, as `--device` takes it.
    pub const NAMES: [&'static str; 4] = ["auto", "cpu", "cuda", "wgpu"];

    /// The name `--device` takes for this choice.
    pub fn name(self) -> &'static str {
        match self {
            DeviceArg::Auto => "auto",
            DeviceArg::Cpu => "cpu",
            DeviceArg::Cuda => "cuda",
            DeviceArg::Wgpu => "wgpu",
        }
    }
}

impl std::str::FromStr for DeviceArg {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => DeviceArg::Auto,
            "cpu" => DeviceArg::Cpu,
            "cuda" => DeviceArg::Cuda,
            "wgpu" => DeviceArg::Wgpu,
            other => bail!("unknown device {other:?}: expected one of {}", Self::NAMES.join(", ")),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda,
    #[cfg(feature = "wgpu")]
    Wgpu,
}

impl Resolved {
    pub fn name(self) -> &'static str {
        match self {
            Resolved::Cpu => "cpu",
            #[cfg(feature = "cuda")]
            Resolved::Cuda => "cuda",
            #[cfg(feature = "wgpu")]
            Resolved::Wgpu => "wgpu",
        }
    }
}

/// Picks the backend; prints a one-line notice when `auto` falls back to the CPU.
pub fn resolve(arg: DeviceArg) -> Result<Resolved> {
    match arg {
        DeviceArg::Cpu => Ok(Resolved::Cpu),
        DeviceArg::Auto => match cuda_status() {
            CudaStatus::Ready => cuda_resolved(),
            CudaStatus::NotBuilt => Ok(Resolved::Cpu),
            CudaStatus::Missing(why) => {
                eprintln!("archlab: no usable CUDA GPU ({why}); running on the CPU");
                Ok(Resolved::Cpu)
            }
        },
        DeviceArg::Cuda => match cuda_status() {
            CudaStatus::Ready => cuda_resolved(),
            CudaStatus::NotBuilt => {
                bail!(
                    "this archlab was built without CUDA support; rebuild with `cargo build --release --features cuda`"
                )
            }
            CudaStatus::Missing(why) => bail!("--device cuda: {why}; use --device cpu or --device auto"),
        },
        DeviceArg::Wgpu => {
            #[cfg(feature = "wgpu")]
            return Ok(Resolved::Wgpu);
            #[cfg(not(feature = "wgpu"))]
            bail!(
                "this archlab was built without wgpu support; rebuild with `cargo build --release --features wgpu`"
            )
        }
    }
}

/// Whether a CUDA GPU is usable right now (driver, device and NVRTC present). GPU tests use
/// this to skip themselves on machines without one.
pub fn cuda_available() -> bool {
    matches!(cuda_status(), CudaStatus::Ready)
}

/// The wgpu device when a graphics adapter is present (a Vulkan, Metal or DX12 driver; Mesa's
/// software Vulkan driver lavapipe counts), `None` otherwise. wgpu panics when it finds no
/// adapter, so the probe runs one tiny operation and catches that.
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> Option<burn::backend::wgpu::WgpuDevice> {
    use burn::tensor::Tensor;
    let device = burn::backend::wgpu::WgpuDevice::default();
    let probe = std::panic::catch_unwind(|| Tensor::<WgpuBackend, 1>::zeros([1], &device).into_data());
    probe.ok().map(|_| device)
}

#[cfg(feature = "cuda")]
fn cuda_resolved() -> Result<Resolved> {
    Ok(Resolved::Cuda)
}

#[cfg(not(feature = "cuda"))]
fn cuda_resolved() -> Result<Resolved> {
    unreachable!("cuda_status() is NotBuilt without the cuda feature")
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
enum CudaStatus {
    Ready,
    #[cfg_attr(feature = "cuda", allow(dead_code))]
    NotBuilt,
    Missing(String),
}

/// Checks that `n` devices of `resolved`'s kind can train one model in data parallel
/// (`train --devices N`), before any work: GPUs must be present (CUDA: counted by the
/// driver); on the CPU the peers share the cores; wgpu is not supported.
pub fn check_data_parallel(resolved: Resolved, n: usize) -> Result<()> {
    if n <= 1 {
        return Ok(());
    }
    match resolved {
        Resolved::Cpu => Ok(()),
        #[cfg(feature = "wgpu")]
        Resolved::Wgpu => {
            bail!("--devices {n} on wgpu: data parallel runs on CUDA GPUs or the CPU; use --device cuda")
        }
        #[cfg(feature = "cuda")]
        Resolved::Cuda => match cuda_device_count() {
            Some(present) if present >= n => Ok(()),
            Some(present) => bail!(
                "--devices {n} but this machine has {present} CUDA GPU{}; use --devices {present} or fewer",
                if present == 1 { "" } else { "s" }
            ),
            None => bail!("--devices {n}: cannot count the CUDA GPUs here"),
        },
    }
}

#[cfg(feature = "cuda")]
fn cuda_device_count() -> Option<usize> {
    cudarc::driver::result::init().ok()?;
    cudarc::driver::result::device::get_count().ok().map(|n| n as usize)
}

#[cfg(feature = "cuda")]
fn cuda_status() -> CudaStatus {
    // SAFETY: these only try to dlopen the driver / NVRTC libraries; nothing is called yet.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    if !driver {
        return CudaStatus::Missing("the CUDA driver library libcuda.so.1 was not found".into());
    }
    if let Err(e) = cudarc::driver::result::init() {
        return CudaStatus::Missing(format!("the CUDA driver did not initialise ({e:?})"));
    }
    match cudarc::driver::result::device::get_count() {
        Ok(n) if n > 0 => {}
        Ok(_) => return CudaStatus::Missing("the CUDA driver reports no GPU".into()),
        Err(e) => return CudaStatus::Missing(format!("cannot count CUDA devices ({e:?})")),
    }
    // SAFETY: as above, a dlopen probe.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return CudaStatus::Missing(
            "NVRTC (libnvrtc.so) is not on the loader path; add the CUDA toolkit's lib folder to \
             LD_LIBRARY_PATH, e.g. /usr/local/cuda/targets/x86_64-linux/lib"
                .into(),
        );
    }
    CudaStatus::Ready
}

#[cfg(not(feature = "cuda"))]
fn cuda_status() -> CudaStatus {
    CudaStatus::NotBuilt
}

/// Where compiled GPU kernels are kept between runs, given `ARCHLAB_KERNEL_CACHE` (`off`, or a
/// folder) and the user's cache folder: one subfolder per archlab binary, named after the
/// binary's size and modification time (`kernels-<hex>`). `None` when turned off.
///
/// CubeCL keys its kernel cache by a kernel's name and settings, not by its code; a rebuilt
/// archlab whose kernel bodies changed would otherwise load the previous build's PTX and run
/// it without a word. Per-binary folders make that impossible, at the price of one cold start
/// after each rebuild (and old folders to delete by hand, all under one parent).
pub fn kernel_cache_dir(
    setting: Option<&str>,
    user_cache: Option<PathBuf>,
    exe: (u64, u128),
) -> Option<PathBuf> {
    let parent = match setting {
        Some("off") => return None,
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => user_cache?.join("archlab"),
    };
    let (size, modified_ns) = exe;
    let mut hash = crate::util::hash::Fnv64::default();
    hash.update(&size.to_le_bytes());
    hash.update(&modified_ns.to_le_bytes());
    Some(parent.join(format!("kernels-{:016x}", hash.finish())))
}

/// Keeps the GPU kernels archlab compiles (NVRTC's PTX on CUDA) on disk between runs, so that
/// a shape's kernels are compiled once, not in every process: each `bench` point and each run
/// of a comparison is a process of its own, and compilation is, with autotuning, what makes a
/// new shape cost 10–40 s on an H100 (docs/gpu.md; the split between the two is unmeasured).
/// CubeCL can do this but leaves it off. Its autotune results are already kept (under the
/// project's `target/`, else the user cache folder).
///
/// Must run before anything touches a CubeCL device (CubeCL reads its configuration once).
/// A `cubecl.toml` or `burn.toml` that sets `[compilation] cache` itself is left alone; so is
/// everything when the cache's parent folder cannot be created (CubeCL would panic on it
/// mid-run). The folder comes from [`kernel_cache_dir`]; `ARCHLAB_KERNEL_CACHE=off` turns the
/// cache off.
#[cfg(feature = "cube-kernels")]
pub fn enable_kernel_cache() -> Option<PathBuf> {
    use cubecl::config::cache::CacheConfig;
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};

    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    let dir = if config.compilation.cache.is_none() {
        let setting = std::env::var("ARCHLAB_KERNEL_CACHE").ok();
        let user_cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        let exe = std::env::current_exe().and_then(std::fs::metadata).ok().map(|m| {
            let modified = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            (m.len(), modified.map_or(0, |d| d.as_nanos()))
        });
        // Only the parent is made here (once, for all builds); CubeCL makes the binary's own
        // folder when a CUDA device first compiles, so runs that never touch one leave none.
        exe.and_then(|exe| kernel_cache_dir(setting.as_deref(), user_cache, exe))
            .filter(|dir| dir.parent().is_some_and(|p| std::fs::create_dir_all(p).is_ok()))
    } else {
        None
    };
    if let Some(dir) = &dir {
        config.compilation.cache = Some(CacheConfig::File(dir.clone()));
    }
    CubeClRuntimeConfig::set(config);
    dir
}

/// A sampler of [`device_memory_bytes`] for `resolved`, for training loops that record a peak
/// (`None` on the CPU).
pub fn memory_probe(resolved: Resolved) -> Option<fn() -> Option<u64>> {
    match resolved {
        Resolved::Cpu => None,
        #[cfg(feature = "cuda")]
        Resolved::Cuda => Some(|| device_memory_bytes(Resolved::Cuda)),
        #[cfg(feature = "wgpu")]
        Resolved::Wgpu => Some(|| device_memory_bytes(Resolved::Wgpu)),
    }
}

/// Bytes of device memory held by the GPU allocator right now (`None` on the CPU, where the
/// process's peak RSS is reported instead). Sampled during training to report a peak.
pub fn device_memory_bytes(resolved: Resolved) -> Option<u64> {
    match resolved {
        Resolved::Cpu => None,
        #[cfg(feature = "cuda")]
        Resolved::Cuda => allocator_reserved_bytes::<burn::cubecl::cuda::CudaRuntime>(),
        // On a software driver (lavapipe) this "device" memory is host memory; the count is
        // still the allocator's.
        #[cfg(feature = "wgpu")]
        Resolved::Wgpu => allocator_reserved_bytes::<burn::cubecl::wgpu::WgpuRuntime>(),
    }
}

/// What CubeCL's allocator has reserved on `R`'s default device: the same count on every
/// CubeCL runtime, CUDA and wgpu alike.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn allocator_reserved_bytes<R: burn::cubecl::Runtime>() -> Option<u64>
where
    R::Device: Default,
{
    R::client(&Default::default()).memory_usage().ok().map(|u| u.bytes_reserved)
}

/// Runs `$body` with `$B` bound to the autodiff backend type of `$resolved` and `$device` to
/// its default device.
#[macro_export]
macro_rules! with_backend {
    ($resolved:expr, |$B:ident, $device:ident| $body:expr) => {{
        match $resolved {
            $crate::device::Resolved::Cpu => {
                type $B = burn::backend::Autodiff<$crate::device::CpuBackend>;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::Resolved::Cuda => {
                type $B = burn::backend::Autodiff<$crate::device::CudaBackend>;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::device::Resolved::Wgpu => {
                type $B = burn::backend::Autodiff<$crate::device::WgpuBackend>;
                let $device = Default::default();
                $body
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::kernel_cache_dir;

    #[test]
    fn kernel_cache_is_per_binary_and_can_be_moved_or_turned_off() {
        let home = Some(PathBuf::from("/home/u/.cache"));
        let dir = kernel_cache_dir(None, home.clone(), (1000, 5)).unwrap();
        assert!(dir.starts_with("/home/u/.cache/archlab"), "{dir:?}");
        assert!(dir.file_name().unwrap().to_str().unwrap().starts_with("kernels-"), "{dir:?}");
        assert_eq!(kernel_cache_dir(None, home.clone(), (1000, 5)), Some(dir.clone()), "stable");
        // A rebuilt binary (another size or modification time) never reads this one's kernels.
        assert_ne!(kernel_cache_dir(None, home.clone(), (1000, 6)), Some(dir.clone()));
        assert_ne!(kernel_cache_dir(None, home.clone(), (1001, 5)), Some(dir.clone()));
        let moved = kernel_cache_dir(Some("/scratch/k"), home.clone(), (1000, 5)).unwrap();
        assert_eq!(moved.parent(), Some(std::path::Path::new("/scratch/k")));
        assert_eq!(kernel_cache_dir(Some("off"), home, (1000, 5)), None);
        assert_eq!(kernel_cache_dir(None, None, (1000, 5)), None, "no cache folder, no cache");
    }
}
