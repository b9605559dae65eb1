//! The short causal depthwise convolution in front of Mamba's SSM (Gu & Dao 2023, §3.4): each
//! channel is convolved with its own `k`-tap filter over the current and `k − 1` previous
//! steps. PyTorch writes it as `Conv1d(groups=channels, padding=k−1)` truncated to the first
//! `t` outputs; here it is `k` shifted multiply-adds on the time-major `[b, t, ch]` stream, which
//! needs no transposes and is the same arithmetic on every backend. From a zero history (a
//! whole sequence) it runs as a fused kernel where the backend has one (`kernels/conv_kernel.rs`).

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::kernels::Backend;
use crate::kernels::conv::taps;

use super::layers::param;
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct CausalConv1d<B: Backend> {
    /// `[ch, k]`; tap `k − 1` multiplies the current step (PyTorch's `weight[:, 0, :]`).
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> CausalConv1d<B> {
    /// PyTorch's default `Conv1d` initialisation, U(±1/√fan_in) with fan_in = k for a depthwise
    /// filter (weight and bias alike), which `mamba_ssm` keeps.
    pub fn new(channels: usize, k: usize, bias: bool, rng: &mut Rng, device: &B::Device) -> Self {
        let bound = 1.0 / (k as f64).sqrt();
        let mut uniform = || ((rng.uniform() * 2.0 - 1.0) * bound) as f32;
        Self {
            weight: param([channels, k], device, &mut uniform),
            bias: bias.then(|| param([channels], device, &mut uniform)),
        }
    }

    pub fn kernel_size(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Convolves `x` given the `k − 1` steps before it (`history`, zeros at the start of a
    /// sequence); returns the output and the last `k − 1` steps of input, the history of
    /// whatever comes next.
    ///
    /// # Shapes
    /// - x: `[b, t, ch]`, history: `[b, k − 1, ch]` → (`[b, t, ch]`, `[b, k − 1, ch]`)
    pub fn forward(&self, x: Tensor<B, 3>, history: Option<Tensor<B, 3>>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [b, t, ch] = x.dims();
        let k = self.kernel_size();
        let Some(history) = history else {
            let next_history = if t >= k - 1 {
                x.clone().narrow(1, t - (k - 1), k - 1)
            } else {
                Tensor::cat(vec![Tensor::zeros([b, k - 1 - t, ch], (&x.device(), x.dtype())), x.clone()], 1)
            };
            return (crate::kernels::causal_conv(x, self.weight.val(), self.bias_or_zeros()), next_history);
        };
        let padded = Tensor::cat(vec![history, x], 1); // [b, k − 1 + t, ch]
        let y = taps(padded.clone(), self.weight.val(), self.bias_or_zeros(), t);
        (y, padded.narrow(1, t, k - 1))
    }

    /// The bias, or zeros without one (adding zeros changes no value).
    fn bias_or_zeros(&self) -> Tensor<B, 1> {
        match &self.bias {
            Some(bias) => bias.val(),
            None => {
                Tensor::zeros([self.weight.dims()[0]], (&self.weight.device(), self.weight.val().dtype()))
            }
        }
    }
}
