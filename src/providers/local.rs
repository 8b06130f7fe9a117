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

    /// Embeds each text; vectors are unit length.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let err = |e: &dyn std::fmt::Display| ProviderError::Inference(e.to_string());
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            let enc = self.tokenizer.encode(*text, true).map_err(|e| err(&e))?;
            let ids = enc.get_ids();
            let n = ids.len();
            let input_ids = Tensor::new(ids, &self.device)
                .and_then(|t| t.reshape((1, n)))
                .map_err(|e| err(&e))?;
            let type_ids = input_ids.zeros_like().map_err(|e| err(&e))?;
            let mask = input_ids.ones_like().map_err(|e| err(&e))?;
            let hidden = self
                .model
                .forward(&input_ids, &type_ids, Some(&mask))
                .map_err(|e| err(&e))?;
            // Mean over tokens (no padding: every token counts), then L2 normalise.
            let pooled = hidden
                .mean(1)
                .and_then(|t| t.squeeze(0))
                .map_err(|e| err(&e))?;
            let v: Vec<f32> = pooled.to_vec1().map_err(|e| err(&e))?;
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            out.push(v.into_iter().map(|x| x / norm).collect());
        }
        Ok(out)
    }
}
