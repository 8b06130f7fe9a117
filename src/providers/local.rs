//! The local embedder: all-MiniLM-L6-v2 (a BERT) run in-process, from the model directory
//! `trawl setup` fills. Output matches sentence-transformers: token embeddings mean-pooled
//! over the attention mask, then L2-normalised.
//!
//! ONNX Runtime (loaded at run time from the library set-up installs) runs `model.onnx`,
//! which set-up builds from the weights with pooling and normalisation inside the graph;
//! measured here it embeds about twice as fast as candle, and faster than
//! sentence-transformers on PyTorch. Builds with the `candle` feature have a second engine:
//! candle runs `model.safetensors` in pure Rust, the fallback when ONNX Runtime or
//! model.onnx is missing (or `embedding.runtime` says so). Without the feature,
//! `embedding.runtime = "candle"` is refused and "auto" needs ONNX Runtime and model.onnx.
//!
//! The shipped tokenizer.json pads and truncates to 128 tokens; both are reset here (no
//! padding, truncation at the model's 256-token window) so inputs are never cut silently
//! at 128.

use std::path::{Path, PathBuf};

use std::sync::{Mutex, OnceLock};

#[cfg(feature = "candle")]
use candle_core::{DType, Device, Tensor};
#[cfg(feature = "candle")]
use candle_nn::VarBuilder;
#[cfg(feature = "candle")]
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use tokenizers::{Tokenizer, TruncationParams};

use super::ProviderError;
use crate::config::EmbeddingRuntime;

/// sentence-transformers' max_seq_length for all-MiniLM-L6-v2.
pub const MAX_TOKENS: usize = 256;
/// The ONNX model set-up builds next to the weights.
pub const ONNX_MODEL: &str = "model.onnx";

/// How an engine likes its batches: texts per forward pass, and tokens per forward pass
/// (texts × padded width) beyond one text.
#[derive(Debug, Clone, Copy)]
struct Batching {
    max_texts: usize,
    max_tokens: usize,
}

/// candle: bigger batches amortise its per-op overhead.
#[cfg(feature = "candle")]
const CANDLE_BATCHING: Batching = Batching {
    max_texts: 32,
    max_tokens: 2_048,
};
/// ONNX Runtime: 8 texts per run measured fastest (16 and 32 were 5-15% slower).
const ONNX_BATCHING: Batching = Batching {
    max_texts: 8,
    max_tokens: 2_048,
};

/// Keeps glibc from returning tensor buffers to the kernel after every forward pass.
///
/// A batch allocates and frees buffers of a few MiB per layer; above glibc's default mmap
/// threshold each one is a fresh mmap and munmap (page faults included), which cost about a
/// third of inference time. Raising the mmap threshold to its maximum (32 MiB) and the trim
/// threshold keeps them in the heap for reuse. Process-wide and idempotent.
#[cfg(feature = "candle")]
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    }
}

/// A loaded model and its tokenizer.
pub struct LocalEmbedder {
    engine: Engine,
    tokenizer: Tokenizer,
    dimension: usize,
}

enum Engine {
    #[cfg(feature = "candle")]
    Candle {
        model: Box<BertModel>,
        device: Device,
    },
    /// `run` needs the session exclusively; one forward pass uses every core anyway.
    Onnx { session: Mutex<Session> },
}

/// What `embedding.runtime = "candle"` gets from a build without the `candle` feature.
pub const NO_CANDLE: &str = "this build has no candle engine: set embedding.runtime = \"onnx\" (or \"auto\"), or build with `--features candle`";

/// The part of config.json the ONNX engine needs.
#[derive(serde::Deserialize)]
struct ModelConfig {
    hidden_size: usize,
}

/// ONNX Runtime allows one environment per process: every model shares it.
static ONNX_ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn onnx_environment(lib: &Path) -> Result<&'static ort::environment::Environment, String> {
    ONNX_ENV
        .get_or_init(|| {
            ort::init_from(lib)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))?
                .with_name("trawl")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl LocalEmbedder {
    /// Loads the model in `dir` on the engine `runtime` asks for; `onnxruntime` is the ONNX
    /// Runtime library.
    pub fn load_with(
        dir: &Path,
        runtime: EmbeddingRuntime,
        onnxruntime: &Path,
    ) -> Result<LocalEmbedder, ProviderError> {
        match runtime {
            EmbeddingRuntime::Onnx => LocalEmbedder::load_onnx(dir, onnxruntime),
            #[cfg(feature = "candle")]
            EmbeddingRuntime::Auto => {
                if dir.join(ONNX_MODEL).is_file() && onnxruntime.is_file() {
                    return LocalEmbedder::load_onnx(dir, onnxruntime);
                }
                tracing::warn!(
                    model = %dir.join(ONNX_MODEL).display(),
                    onnxruntime = %onnxruntime.display(),
                    "ONNX Runtime or model.onnx is missing: embedding with candle, about half as fast (run `trawl setup`)"
                );
                LocalEmbedder::load(dir)
            }
            // Nothing to fall back on: load_onnx names what is missing and `trawl setup`.
            #[cfg(not(feature = "candle"))]
            EmbeddingRuntime::Auto => LocalEmbedder::load_onnx(dir, onnxruntime),
            #[cfg(feature = "candle")]
            EmbeddingRuntime::Candle => LocalEmbedder::load(dir),
            #[cfg(not(feature = "candle"))]
            EmbeddingRuntime::Candle => Err(ProviderError::Unavailable(NO_CANDLE.into())),
        }
    }

    /// Which engine runs the model: "onnx" or "candle".
    pub fn engine(&self) -> &'static str {
        match self.engine {
            #[cfg(feature = "candle")]
            Engine::Candle { .. } => "candle",
            Engine::Onnx { .. } => "onnx",
        }
    }

    /// Loads config.json, tokenizer.json and model.onnx from `dir` onto ONNX Runtime.
    pub fn load_onnx(dir: &Path, onnxruntime: &Path) -> Result<LocalEmbedder, ProviderError> {
        let fail = |detail: String| ProviderError::ModelLoad {
            dir: dir.display().to_string(),
            detail,
        };
        let (config, tokenizer) = load_config_and_tokenizer::<ModelConfig>(dir)?;
        let model = dir.join(ONNX_MODEL);
        if !model.is_file() {
            #[cfg(feature = "candle")]
            let detail = format!(
                "{ONNX_MODEL} is missing (`trawl setup` builds it), or set embedding.runtime = \"candle\""
            );
            #[cfg(not(feature = "candle"))]
            let detail = format!(
                "{ONNX_MODEL} is missing: run `trawl setup`, which builds it (this build has no candle engine to run model.safetensors instead)"
            );
            return Err(fail(detail));
        }
        if !onnxruntime.is_file() {
            #[cfg(feature = "candle")]
            let detail = format!(
                "the ONNX Runtime library {} is missing: run `trawl setup`, set TRAWL_ONNXRUNTIME, or set embedding.runtime = \"candle\"",
                onnxruntime.display()
            );
            #[cfg(not(feature = "candle"))]
            let detail = format!(
                "the ONNX Runtime library {} is missing: run `trawl setup`, or set TRAWL_ONNXRUNTIME (this build has no candle engine to run the model without it)",
                onnxruntime.display()
            );
            return Err(fail(detail));
        }
        let env = onnx_environment(onnxruntime).map_err(fail)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let session = Session::builder(env)
            .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::All)?))
            .and_then(|b| Ok(b.with_intra_threads(threads)?))
            .and_then(|mut b| b.commit_from_file(&model))
            .map_err(|e| fail(format!("{ONNX_MODEL}: {e}")))?;
        Ok(LocalEmbedder {
            engine: Engine::Onnx {
                session: Mutex::new(session),
            },
            tokenizer,
            dimension: config.hidden_size,
        })
    }

    /// Loads config.json, tokenizer.json and model.safetensors from `dir` onto candle.
    #[cfg(feature = "candle")]
    pub fn load(dir: &Path) -> Result<LocalEmbedder, ProviderError> {
        let fail = |detail: String| ProviderError::ModelLoad {
            dir: dir.display().to_string(),
            detail,
        };
        let (config, tokenizer) = load_config_and_tokenizer::<BertConfig>(dir)?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(fail("model.safetensors is missing".into()));
        }
        let device = Device::Cpu;
        keep_freed_memory();
        // SAFETY: the weights file is memory-mapped read-only; trawl never writes it while
        // the model is loaded (set-up replaces the directory by rename, not in place).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let model =
            BertModel::load(vb, &config).map_err(|e| fail(format!("model.safetensors: {e}")))?;
        Ok(LocalEmbedder {
            engine: Engine::Candle {
                model: Box::new(model),
                device,
            },
            tokenizer,
            dimension: config.hidden_size,
        })
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Embeds each text; vectors are unit length, in the order of `texts`.
    ///
    /// Texts are tokenised, sorted by length and run in batches padded to their longest
    /// member (padding is masked out of attention and pooling), so short texts do not pay
    /// for long ones.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| inference(&e))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        let batching = match self.engine {
            #[cfg(feature = "candle")]
            Engine::Candle { .. } => CANDLE_BATCHING,
            Engine::Onnx { .. } => ONNX_BATCHING,
        };
        self.embed_ids(&ids, batching)
    }

    /// The tokenizer the model was trained with (its vocabulary included).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embeds sequences of token ids of at most 3 tokens each (`[CLS] token [SEP]`, say)
    /// in large batches: what distilling a static table asks of the model.
    pub fn embed_short_ids(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, ProviderError> {
        self.embed_ids(
            seqs,
            Batching {
                max_texts: 256,
                max_tokens: 4_096,
            },
        )
    }

    /// Embeds token id sequences (special tokens included), in batches of `batching`.
    fn embed_ids(
        &self,
        seqs: &[&[u32]],
        batching: Batching,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let mut out = vec![Vec::new(); seqs.len()];
        for batch in batches(&lengths, batching) {
            let width = batch.iter().map(|&i| lengths[i]).max().unwrap_or(1).max(1);
            let mut ids = vec![0i64; batch.len() * width];
            let mut mask = vec![0i64; batch.len() * width];
            for (row, &i) in batch.iter().enumerate() {
                let t = seqs[i];
                for (slot, &id) in ids[row * width..].iter_mut().zip(t) {
                    *slot = i64::from(id);
                }
                mask[row * width..row * width + t.len()].fill(1);
            }
            let rows = match &self.engine {
                #[cfg(feature = "candle")]
                Engine::Candle { model, device } => {
                    candle_forward(model, device, ids, mask, batch.len(), width)?
                }
                Engine::Onnx { session } => {
                    let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
                    onnx_forward(
                        &mut session,
                        &ids,
                        &mask,
                        batch.len(),
                        width,
                        self.dimension,
                    )?
                }
            };
            for (row, &i) in rows.into_iter().zip(&batch) {
                out[i] = row;
            }
        }
        Ok(out)
    }
}

fn inference(e: &dyn std::fmt::Display) -> ProviderError {
    ProviderError::Inference(e.to_string())
}

/// config.json (as much of it as `C` reads) and tokenizer.json of the model in `dir`, the
/// tokenizer set to pad nothing and to truncate at the model's window.
fn load_config_and_tokenizer<C: serde::de::DeserializeOwned>(
    dir: &Path,
) -> Result<(C, Tokenizer), ProviderError> {
    let fail = |detail: String| ProviderError::ModelLoad {
        dir: dir.display().to_string(),
        detail,
    };
    let read = |name: &str| -> Result<(PathBuf, String), ProviderError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| fail(format!("{name}: {e}")))?;
        Ok((path, text))
    };
    let (_, config_text) = read("config.json")?;
    let config: C =
        serde_json::from_str(&config_text).map_err(|e| fail(format!("config.json: {e}")))?;
    let (tokenizer_path, _) = read("tokenizer.json")?;
    let mut tokenizer =
        Tokenizer::from_file(&tokenizer_path).map_err(|e| fail(format!("tokenizer.json: {e}")))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_TOKENS,
            ..Default::default()
        }))
        .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
    Ok((config, tokenizer))
}

/// The texts (by index) in batches: sorted by token length, each batch within `batching`'s
/// bounds (a single text always makes a batch).
fn batches(lengths: &[usize], batching: Batching) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut out = Vec::new();
    let mut start = 0;
    while start < order.len() {
        // The longest text of a batch is its last (sorted), so its width is known.
        let mut end = start + 1;
        while end < order.len()
            && end - start < batching.max_texts
            && (end - start + 1) * lengths[order[end]].max(1) <= batching.max_tokens
        {
            end += 1;
        }
        out.push(order[start..end].to_vec());
        start = end;
    }
    out
}

/// One batch through candle's BERT, then mean pooling over real tokens and L2
/// normalisation (sentence-transformers' pooling).
#[cfg(feature = "candle")]
fn candle_forward(
    model: &BertModel,
    device: &Device,
    ids: Vec<i64>,
    mask: Vec<i64>,
    rows: usize,
    width: usize,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    let err = |e: candle_core::Error| inference(&e);
    let ids: Vec<u32> = ids.into_iter().map(|x| x as u32).collect();
    let mask: Vec<u32> = mask.into_iter().map(|x| x as u32).collect();
    let input_ids = Tensor::from_vec(ids, (rows, width), device).map_err(err)?;
    let mask = Tensor::from_vec(mask, (rows, width), device).map_err(err)?;
    let type_ids = input_ids.zeros_like().map_err(err)?;
    let hidden = model
        .forward(&input_ids, &type_ids, Some(&mask))
        .map_err(err)?;
    let maskf = mask
        .to_dtype(DType::F32)
        .and_then(|m| m.unsqueeze(2))
        .map_err(err)?;
    let summed = hidden
        .broadcast_mul(&maskf)
        .and_then(|h| h.sum(1))
        .map_err(err)?;
    let counts = maskf.sum(1).map_err(err)?;
    let pooled = summed.broadcast_div(&counts).map_err(err)?;
    let pooled: Vec<Vec<f32>> = pooled.to_vec2().map_err(err)?;
    Ok(pooled
        .into_iter()
        .map(|row| {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.into_iter().map(|x| x / norm).collect()
        })
        .collect())
}

/// One batch through model.onnx, whose output is already pooled and normalised.
fn onnx_forward(
    session: &mut Session,
    ids: &[i64],
    mask: &[i64],
    rows: usize,
    width: usize,
    dimension: usize,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    let err = |e: ort::Error| inference(&e);
    let outputs = session
        .run(ort::inputs![
            "input_ids" => TensorRef::from_array_view(([rows, width], ids)).map_err(err)?,
            "attention_mask" => TensorRef::from_array_view(([rows, width], mask)).map_err(err)?,
        ])
        .map_err(err)?;
    let (shape, data) = outputs["sentence_embedding"]
        .try_extract_tensor::<f32>()
        .map_err(err)?;
    if **shape != [rows as i64, dimension as i64] {
        return Err(ProviderError::Inference(format!(
            "model.onnx gave vectors of shape {:?}, not [{rows}, {dimension}]",
            &**shape
        )));
    }
    Ok(data.chunks_exact(dimension).map(<[f32]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "candle"))]
    #[test]
    fn runtime_candle_is_refused_without_the_candle_feature() {
        let err = LocalEmbedder::load_with(
            Path::new("/nonexistent/model"),
            EmbeddingRuntime::Candle,
            Path::new("/nonexistent/libonnxruntime.so"),
        )
        .err()
        .expect("no candle engine in this build")
        .to_string();
        assert_eq!(
            err,
            "this build has no candle engine: set embedding.runtime = \"onnx\" (or \"auto\"), or build with `--features candle`"
        );
    }

    #[cfg(not(feature = "candle"))]
    #[test]
    fn auto_without_onnx_fails_and_points_to_setup_without_the_candle_feature() {
        let dir = tempfile::tempdir().unwrap();
        // A model directory as far as config and tokenizer go, without model.onnx.
        std::fs::write(dir.path().join("config.json"), r#"{"hidden_size": 384}"#).unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), MINIMAL_TOKENIZER).unwrap();
        let err = LocalEmbedder::load_with(
            dir.path(),
            EmbeddingRuntime::Auto,
            Path::new("/nonexistent/libonnxruntime.so"),
        )
        .err()
        .expect("no model.onnx, no engine")
        .to_string();
        assert!(
            err.contains("model.onnx is missing") && err.contains("trawl setup"),
            "{err}"
        );
        assert!(!err.contains("embedding.runtime = \"candle\""), "{err}");
        std::fs::write(dir.path().join(ONNX_MODEL), b"").unwrap();
        let err = LocalEmbedder::load_with(
            dir.path(),
            EmbeddingRuntime::Auto,
            Path::new("/nonexistent/libonnxruntime.so"),
        )
        .err()
        .expect("no ONNX Runtime, no engine")
        .to_string();
        assert!(
            err.contains("/nonexistent/libonnxruntime.so") && err.contains("trawl setup"),
            "{err}"
        );
        assert!(!err.contains("embedding.runtime = \"candle\""), "{err}");
    }

    /// The smallest tokenizer.json the tokenizers crate reads: a word-level model.
    #[cfg(not(feature = "candle"))]
    const MINIMAL_TOKENIZER: &str = r#"{
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "fn": 1}, "unk_token": "[UNK]"}
    }"#;

    #[test]
    fn batches_respect_both_bounds() {
        let b = Batching {
            max_texts: 2,
            max_tokens: 10,
        };
        // Sorted by length; the pair (4, 6) would be 2 × 6 = 12 tokens, over the bound.
        assert_eq!(
            batches(&[6, 1, 4, 2], b),
            vec![vec![1, 3], vec![2], vec![0]]
        );
        assert!(batches(&[], b).is_empty());
    }
}
