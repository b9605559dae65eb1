//! Sampling text from a trained model: temperature, top-k, top-p (nucleus; Holtzman et al.
//! 2020), seeded, with the prompt prefilled once and each new token costing one cached step.

use crate::kernels::Backend;
use anyhow::{Result, bail};

use crate::data::tokenizer::{StreamDecoder, Tokenizer};
use crate::model::LanguageModel;
use crate::model::lm::ids_tensor;
use crate::rng::Rng;

#[derive(Clone, Debug)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1.0: all).
    pub top_p: f64,
    pub seed: u64,
    /// Stop at the tokenizer's end-of-text token.
    pub stop_at_eot: bool,
}

/// Draws one token id from `logits` (one row, fp32).
pub fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut Rng) -> u32 {
    if cfg.temperature <= 0.0 {
        return argmax(logits);
    }
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    if cfg.top_k > 0 {
        order.truncate(cfg.top_k);
    }
    let max = logits[order[0] as usize] as f64;
    let mut probs: Vec<f64> =
        order.iter().map(|&i| ((logits[i as usize] as f64 - max) / cfg.temperature).exp()).collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    if cfg.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                acc += p;
                acc >= cfg.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.uniform() * total;
    for (p, &id) in probs.iter().zip(&order) {
        if u < *p {
            return id;
        }
        u -= p;
    }
    *order.last().expect("at least one candidate")
}

fn argmax(xs: &[f32]) -> u32 {
    xs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0)
}

/// Generates a continuation of `prompt`, calling `on_text` with each newly final piece of text.
/// `context_limit` is `ModelConfig::context_limit` (`None`: no limit). Returns the generated
/// token ids.
pub fn generate<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &Tokenizer,
    prompt: &str,
    context_limit: Option<usize>,
    cfg: &SamplingConfig,
    device: &B::Device,
    mut on_text: impl FnMut(&str),
) -> Result<Vec<u32>> {
    let mut ids = tokenizer.encode(prompt)?;
    if ids.is_empty() {
        // An empty prompt starts a new document.
        ids = tokenizer.eot().into_iter().collect();
        if ids.is_empty() {
            bail!("the prompt is empty and the tokenizer has no end-of-text token to start from");
        }
    }
    let budget = match context_limit {
        Some(limit) if ids.len() >= limit => {
            bail!("the prompt is {} tokens; the model's context is {limit}: shorten the prompt", ids.len())
        }
        Some(limit) => cfg.max_new_tokens.min(limit - ids.len()),
        // A recurrent model carries a fixed-size state: no context limit.
        None => cfg.max_new_tokens,
    };
    let mut rng = Rng::fork(cfg.seed, "sampling");
    let mut state = model.decode_state();
    let mut logits = model.forward_step(ids_tensor::<B>(&ids, [1, ids.len()], device), &mut state);
    let mut out = Vec::with_capacity(budget);
    let mut stream = StreamDecoder::new();
    let eot = tokenizer.eot();
    for _ in 0..budget {
        let [_, t, v] = logits.dims();
        let last: Vec<f32> =
            logits.slice([0..1, t - 1..t, 0..v]).into_data().convert::<f32>().into_vec().expect("f32 data");
        let next = sample(&last, cfg, &mut rng);
        if cfg.stop_at_eot && Some(next) == eot {
            break;
        }
        out.push(next);
        on_text(&stream.push(tokenizer, next)?);
        logits = model.forward_step(ids_tensor::<B>(&[next], [1, 1], device), &mut state);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f64, top_k: usize, top_p: f64) -> SamplingConfig {
        SamplingConfig { max_new_tokens: 1, temperature, top_k, top_p, seed: 0, stop_at_eot: false }
    }

    #[test]
    fn greedy_top_k_and_top_p_restrict_the_support() {
        let logits = [0.0f32, 3.0, 1.0, 2.0];
        let mut rng = Rng::new(0);
        assert_eq!(sample(&logits, &cfg(0.0, 0, 1.0), &mut rng), 1);
        for _ in 0..200 {
            let k2 = sample(&logits, &cfg(1.0, 2, 1.0), &mut rng);
            assert!(k2 == 1 || k2 == 3);
            // p(1) ≈ 0.64 alone does not reach 0.7, so the nucleus is {1, 3}.
            let p = sample(&logits, &cfg(1.0, 0, 0.7), &mut rng);
            assert!(p == 1 || p == 3);
        }
    }

    #[test]
    fn temperature_one_matches_softmax_frequencies() {
        let logits = [0.0f32, (2.0f32).ln()]; // probabilities 1/3, 2/3
        let mut rng = Rng::new(5);
        let n = 30_000;
        let ones = (0..n).filter(|_| sample(&logits, &cfg(1.0, 0, 1.0), &mut rng) == 1).count();
        let freq = ones as f64 / n as f64;
        assert!((freq - 2.0 / 3.0).abs() < 0.01, "{freq}");
    }
}
