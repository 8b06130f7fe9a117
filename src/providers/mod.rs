//! Providers: the ports through which trawl embeds text and summarises snippets, with a
//! local in-process default and OpenAI-compatible HTTP implementations.
//!
//! Nothing here touches the database: callers store what providers return, together with
//! the model name and dimension that produced it.

pub mod http;
pub mod local;
pub mod static_model;
pub mod summary;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, EmbeddingKind, EmbeddingProvider};

/// Errors from a provider, classified for the queue's retry policy.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "the model in {dir} cannot be loaded: {detail}; run `trawl setup` to install it, or set TRAWL_MODEL_DIR"
    )]
    ModelLoad { dir: String, detail: String },
    /// The configuration asks for an engine this build does not have.
    #[error("{0}")]
    Unavailable(String),
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

/// Runs an in-process embedder over `texts` on a blocking thread, off the runtime's.
async fn on_blocking_thread(
    texts: Vec<String>,
    embed: impl FnOnce(&[&str]) -> Result<Vec<Vec<f32>>, ProviderError> + Send + 'static,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embed(&refs)
    })
    .await
    .map_err(|e| ProviderError::Inference(format!("embedding task: {e}")))?
}

/// The model name vectors of the static table distilled from `model` are stored under.
pub fn static_model_name(model: &str) -> String {
    format!("{model}+static{}", static_model::STATIC_DIMS)
}

/// Requests to HTTP providers give up after this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// The configured embedder: the local model's static table, the local model, or an HTTP
/// endpoint.
#[derive(Clone)]
pub enum Embedder {
    Static {
        model: String,
        embedder: Arc<static_model::StaticEmbedder>,
    },
    Local {
        model: String,
        embedder: Arc<local::LocalEmbedder>,
    },
    Http {
        model: String,
        embedder: http::HttpEmbedder,
    },
}

impl Embedder {
    /// Loads the local model or sets up the HTTP client, as `config` says.
    pub fn from_config(config: &Config) -> Result<Embedder, ProviderError> {
        let model = config.embedding.model.clone();
        Ok(match config.embedding.provider {
            EmbeddingProvider::Local if config.embedding.kind == EmbeddingKind::Static => {
                let dir = config.model_dir();
                Embedder::Static {
                    model: config.vector_model(),
                    embedder: Arc::new(static_model::StaticEmbedder::load(
                        &dir,
                        &static_model::table_path(&dir),
                    )?),
                }
            }
            EmbeddingProvider::Local => Embedder::Local {
                model,
                embedder: Arc::new(local::LocalEmbedder::load_with(
                    &config.model_dir(),
                    config.embedding.runtime,
                    &config.onnxruntime_lib(),
                )?),
            },
            EmbeddingProvider::Http => {
                let client = http::HttpClient::new(
                    &config.embedding.base_url,
                    &config.embedding.api_key,
                    HTTP_TIMEOUT,
                )?;
                Embedder::Http {
                    embedder: http::HttpEmbedder::new(client, &model),
                    model,
                }
            }
        })
    }

    /// [`Embedder::from_config`] on a blocking thread: loading the local model reads and
    /// maps its weights.
    pub async fn load(config: Config) -> Result<Embedder, ProviderError> {
        tokio::task::spawn_blocking(move || Embedder::from_config(&config))
            .await
            .map_err(|e| ProviderError::Inference(format!("loading the model: {e}")))?
    }

    /// The model name vectors are stored under; vectors of two models never mix.
    pub fn model(&self) -> &str {
        match self {
            Embedder::Static { model, .. }
            | Embedder::Local { model, .. }
            | Embedder::Http { model, .. } => model,
        }
    }

    /// Embeds `texts`; the vectors come back in the same order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ProviderError> {
        match self {
            // A look-up and a mean: no thread hop needed for a query, but a stage's large
            // batch still leaves the runtime's threads free.
            Embedder::Static { embedder, .. } if texts.len() <= 8 => {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                embedder.embed(&refs)
            }
            Embedder::Static { embedder, .. } => {
                let embedder = embedder.clone();
                on_blocking_thread(texts, move |refs| embedder.embed(refs)).await
            }
            Embedder::Local { embedder, .. } => {
                let embedder = embedder.clone();
                on_blocking_thread(texts, move |refs| embedder.embed(refs)).await
            }
            Embedder::Http { embedder, .. } => embedder.embed(&texts).await,
        }
    }
}
