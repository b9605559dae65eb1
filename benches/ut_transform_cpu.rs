//! The delta rule's UT transform on the CPU: the backend's host loop (`crates/cpu-loops/src/ut_transform.rs`)
//! against the plain-ops twin (`ut_transform.rs`), forward and backward through autodiff, at
//! the shapes Gated DeltaNet gives it: chunks of 64, key heads of 64, value heads of 128, and
//! as many chunks as `tiny` (batch 4, T 128, 2 heads) and the larger CPU shape (batch 8, T 256,
//! 3 heads) have per layer.
//!
//! Run: `cargo bench --profile dev --bench ut_transform_cpu`. Prints a Markdown table: the
//! median of 9 interleaved timings after 2 warm-ups of each, per path and shape.

use std::time::Instant;

use archlab::kernels::{self, ut_transform};
use archlab::rng::Rng;
use burn::tensor::{Tensor, TensorData};

type B = burn::backend::Autodiff<archlab::device::CpuBackend>;

const WARMUP: usize = 2;
const ROUNDS: usize = 9;

type Transform = fn(Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 3>;

/// One forward and backward of `transform` on `(n, C, dk, dv)`; returns seconds.
fn time_once(transform: Transform, (n, c, dk, dv): (usize, usize, usize, usize), seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let dev = Default::default();
    let mut normal = |len: usize| (0..len).map(|_| rng.normal() as f32).collect::<Vec<_>>();
    let t3 = |v: Vec<f32>, w: usize| Tensor::<B, 3>::from_data(TensorData::new(v, [n, c, w]), &dev);
    let t2 = |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [n, c]), &dev);
    let keys = t3(normal(n * c * dk), dk);
    let keys = (keys.clone() / keys.powf_scalar(2.0).sum_dim(2).sqrt()).require_grad();
    let values = t3(normal(n * c * dv), dv).require_grad();
    let beta = burn::tensor::activation::sigmoid(t2(normal(n * c))).require_grad();
    let cum = (t2(normal(n * c)).abs() * -0.1).cumsum(1).require_grad();
    let w = t3(normal(n * c * (dv + dk)), dv + dk);
    let start = Instant::now();
    let out = transform(keys.clone(), values, beta, cum);
    let grads = (out * w).sum().backward();
    let _ = keys.grad(&grads).expect("a key gradient").into_data(); // waits for the work
    start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let paths: [(&str, Transform); 2] =
        [("host loop", kernels::ut_transform::<B>), ("plain ops", ut_transform::ut_transform::<B>)];
    let shapes =
        [("tiny: b 4, T 128, 2 heads", (16, 64, 64, 128)), ("b 8, T 256, 3 heads", (96, 64, 64, 128))];
    println!("| shape | (n, C, dk, dv) | host loop | plain ops | plain / host |");
    println!("|---|---|---:|---:|---:|");
    for (name, shape) in shapes {
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..WARMUP + ROUNDS {
            for (i, (_, path)) in paths.iter().enumerate() {
                let t = time_once(*path, shape, round as u64);
                if round >= WARMUP {
                    times[i].push(t);
                }
            }
        }
        let [host, plain] = times.map(median);
        println!(
            "| {name} | {shape:?} | {:.2} ms | {:.2} ms | {:.2}× |",
            host * 1e3,
            plain * 1e3,
            plain / host
        );
    }
}
