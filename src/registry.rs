//! The one table of layer kinds. Each sequence mixer module (a file in `model/`) has one entry:
//! its variant in the model's `SeqMixer` enum, its module and type, its config section (the
//! TOML table and the settings struct, defined in the module) if it has settings, and the
//! layer kinds it builds, each with its pattern symbol, config name, the config keys it reads,
//! one-line summary, the Hugging Face architectures that import into it and its fused kernels.
//! Then the channel mixers: kind, symbol and name, the module and type that implement it (none
//! for "none"), its config section, and a summary.
//!
//! The table is read by expanding it into a macro of the reader's (an X-macro):
//! `model::registry` writes the `MixerKind` and `FfnKind` enums and the registry of symbols and
//! names the pattern parser and `describe --list` read; `model/mod.rs` declares the mixer
//! modules; `model::config` writes a field of `ModelConfig` per config section;
//! `model::mixer` writes `SeqMixer`, `LayerState`, `ChannelMixer` and every dispatch
//! over them. A new mixer is one entry here.

/// Expands the table into `$reader! { sequence mixers { … } channel mixers { … } }`.
macro_rules! layer_table {
    ($reader:ident) => {
        $reader! {
            sequence mixers {
                Attention => attention::Attention {
                    Attention = 'A', "attention" {
                        section: "",
                        summary: "causal softmax attention (MHA/GQA; RoPE, learned or no positions)",
                        hf_import: ["llama", "mixtral", "jamba", "qwen3_next"],
                        fused_kernels: ["FlashAttention-2 forward + backward"],
                    }
                    Local = 'L', "local" {
                        section: "model.window",
                        summary: "sliding-window causal attention over the last model.window tokens",
                        hf_import: [],
                        fused_kernels: ["FlashAttention-2 forward + backward (windowed)"],
                    }
                }
                Mamba => mamba::Mamba, [model.mamba] = MambaConfig {
                    Mamba = 'M', "mamba" {
                        section: "model.mamba",
                        summary: "Mamba-1 selective state-space model (Gu & Dao 2023)",
                        hf_import: ["mamba", "jamba"],
                        fused_kernels: ["selective scan", "causal conv"],
                    }
                }
                Mamba2 => mamba2::Mamba2, [model.mamba2] = Mamba2Config {
                    Mamba2 = 'S', "mamba2" {
                        section: "model.mamba2",
                        summary: "Mamba-2 / SSD, scalar decay per head, chunked scan (Dao & Gu 2024)",
                        hf_import: ["mamba2"],
                        fused_kernels: ["SSD state passing", "gated RMSNorm", "causal conv"],
                    }
                }
                Hymba => hymba::Hymba, [model.hymba] = HymbaConfig {
                    Hymba = 'H', "hymba" {
                        section: "model.hymba",
                        summary: "attention and Mamba-1 heads in parallel on one input (Hymba, Dong et al. 2024)",
                        hf_import: [],
                        fused_kernels: ["those of A and M"],
                    }
                }
                GatedDeltaNet => gated_deltanet::GatedDeltaNet, [model.gdn] = GatedDeltaNetConfig {
                    GatedDeltaNet = 'G', "gdn" {
                        section: "model.gdn",
                        summary: "Gated DeltaNet: delta rule with a decay gate, chunked WY form (Yang et al. 2024)",
                        hf_import: ["qwen3_next"],
                        fused_kernels: ["UT-transform inverse", "causal conv", "RMSNorm"],
                    }
                    DeltaNet = 'D', "deltanet" {
                        section: "model.gdn",
                        summary: "DeltaNet: the delta rule without decay, chunked WY form (Yang et al. 2024)",
                        hf_import: [],
                        fused_kernels: ["UT-transform inverse", "causal conv", "RMSNorm"],
                    }
                }
            }
            channel mixers {
                Mlp = 'f', "mlp" => mlp::Mlp {
                    summary: "MLP of width model.d_ff (GELU or SwiGLU, model.mlp)",
                }
                Moe = 'e', "moe" => moe::Moe, [model.moe] = MoeConfig {
                    summary: "Mixture of Experts, model.moe (top-k routing, shared expert, capacity)",
                }
                None = 'n', "none" {
                    summary: "no channel mixer: the block is x + mixer(norm(x)) (the Mamba paper's layout)",
                }
            }
        }
    };
}
pub(crate) use layer_table;
