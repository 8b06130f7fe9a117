//! The local embedder: all-MiniLM-L6-v2 (a BERT) run in-process with candle, from the
//! model directory `trawl setup` fills. Output matches sentence-transformers: token
//! embeddings mean-pooled over the attention mask, then L2-normalised.
//!
//! The shipped tokenizer.json pads and truncates to 128 tokens; both are reset here (no
//! padding, truncation at the model's 256-token window) so inputs are never cut silently
//! at 128.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Tokenizer, TruncationParams};

use super::ProviderError;

/// sentence-transformers' max_seq_length for all-MiniLM-L6-v2.
pub const MAX_TOKENS: usize = 256;
/// Texts per forward pass, at most.
const MAX_BATCH: usize = 32;
/// Tokens per forward pass (texts × padded width), at most, beyond one text.
const BATCH_TOKENS: usize = 2_048;

/// Keeps glibc from returning tensor buffers to the kernel after every forward pass.
///
/// A batch allocates and frees buffers of a few MiB per layer; above glibc's default mmap
/// threshold each one is a fresh mmap and munmap (page faults included), which cost about a
/// third of inference time. Raising the mmap threshold to its maximum (32 MiB) and the trim
/// threshold keeps them in the heap for reuse. Process-wide and idempotent.
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
    model: BertModel,
    tokenizer: Tokenizer,
    dimension: usize,
    device: Device,
}

impl LocalEmbedder {
    /// Loads config.json, tokenizer.json and model.safetensors from `dir`.
    pub fn load(dir: &Path) -> Result<LocalEmbedder, ProviderError> {
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
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| fail(format!("config.json: {e}")))?;
        let (tokenizer_path, _) = read("tokenizer.json")?;
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
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
            model,
            tokenizer,
            dimension: config.hidden_size,
            device,
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
        let err = |e: &dyn std::fmt::Display| ProviderError::Inference(e.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| err(&e))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            // Batches hold about BATCH_TOKENS tokens: more short texts, fewer long ones.
            let mut end = start + 1;
            while end < order.len()
                && end - start < MAX_BATCH
                && (end - start + 1) * encodings[order[end]].get_ids().len().max(1) <= BATCH_TOKENS
            {
                end += 1;
            }
            let batch = &order[start..end];
            let width = batch
                .iter()
                .map(|&i| encodings[i].get_ids().len())
                .max()
                .unwrap_or(1)
                .max(1);
            let mut ids = vec![0u32; batch.len() * width];
            let mut mask = vec![0u32; batch.len() * width];
            for (row, &i) in batch.iter().enumerate() {
                let t = encodings[i].get_ids();
                ids[row * width..row * width + t.len()].copy_from_slice(t);
                mask[row * width..row * width + t.len()].fill(1);
            }
            let shape = (batch.len(), width);
            let input_ids = Tensor::from_vec(ids, shape, &self.device).map_err(|e| err(&e))?;
            let mask = Tensor::from_vec(mask, shape, &self.device).map_err(|e| err(&e))?;
            let type_ids = input_ids.zeros_like().map_err(|e| err(&e))?;
            let hidden = self
                .model
                .forward(&input_ids, &type_ids, Some(&mask))
                .map_err(|e| err(&e))?;
            // Mean over real tokens, then L2 normalise (sentence-transformers' pooling).
            let maskf = mask
                .to_dtype(DType::F32)
                .and_then(|m| m.unsqueeze(2))
                .map_err(|e| err(&e))?;
            let summed = hidden
                .broadcast_mul(&maskf)
                .and_then(|h| h.sum(1))
                .map_err(|e| err(&e))?;
            let counts = maskf.sum(1).map_err(|e| err(&e))?;
            let pooled = summed.broadcast_div(&counts).map_err(|e| err(&e))?;
            let rows: Vec<Vec<f32>> = pooled.to_vec2().map_err(|e| err(&e))?;
            for (row, &i) in rows.into_iter().zip(batch) {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                out[i] = row.into_iter().map(|x| x / norm).collect();
            }
            start = end;
        }
        Ok(out)
    }
}
