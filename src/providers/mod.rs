//! Providers: the ports through which trawl embeds text and summarises snippets, with a
//! local in-process default and OpenAI-compatible HTTP implementations.
//!
//! Nothing here touches the database: callers store what providers return, together with
//! the model name and dimension that produced it.

pub mod local;

/// Errors from a provider, classified for the queue's retry policy.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "the model in {dir} cannot be loaded: {detail}; run `trawl setup` to install it, or set TRAWL_MODEL_DIR"
    )]
    ModelLoad { dir: String, detail: String },
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the provider at {url} is unreachable or overloaded: {detail}")]
    Transient { url: String, detail: String },
    #[error("the provider at {url} refused the request: {detail}")]
    Refused { url: String, detail: String },
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Transient { .. })
    }
}
