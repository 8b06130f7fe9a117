//! OpenAI-compatible HTTP providers: `/v1/embeddings` (OpenAI, Ollama, vLLM, TEI) and
//! `/v1/chat/completions` (for summaries).
//!
//! Every request has a timeout; 429 and 5xx answers and network errors are retried with
//! exponential backoff (honouring `Retry-After`), then reported as transient so the stage
//! is retried by the queue; any other 4xx is refused at once with the server's message.

use std::time::Duration;

use serde_json::{Value, json};

use super::ProviderError;

/// Attempts per request, the first included.
const ATTEMPTS: u32 = 4;
/// The wait before the second attempt; it doubles after each.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// No wait is longer than this, whatever `Retry-After` says.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Texts per embeddings request.
pub const EMBED_BATCH: usize = 64;

/// The API root of an OpenAI-compatible `base_url`: as given (without a trailing `/`)
/// when it has a path, its `/v1` when it names only the server, so both
/// `http://localhost:11434` and `http://localhost:11434/v1` work.
pub fn api_root(base_url: &str) -> String {
    let trimmed = base_url.trim_end_matches('/');
    match reqwest::Url::parse(trimmed) {
        Ok(url) if url.path().trim_matches('/').is_empty() && url.query().is_none() => {
            format!("{trimmed}/v1")
        }
        _ => trimmed.to_string(),
    }
}

/// A JSON client for one OpenAI-compatible base URL.
#[derive(Clone)]
pub struct HttpClient {
    base_url: String,
    api_key: String,
    client: reqwest::Client,
    backoff_base: Duration,
}

impl HttpClient {
    /// `base_url` is the API root, e.g. `https://api.openai.com/v1` or
    /// `http://localhost:11434/v1`; a bare server (`http://localhost:11434`) means its
    /// `/v1` (see [`api_root`]).
    pub fn new(
        base_url: &str,
        api_key: &str,
        timeout: Duration,
    ) -> Result<HttpClient, ProviderError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ProviderError::Refused {
                url: base_url.to_string(),
                detail: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(HttpClient {
            base_url: api_root(base_url),
            api_key: api_key.to_string(),
            client,
            backoff_base: BACKOFF_BASE,
        })
    }

    /// Shortens the waits between attempts (tests).
    pub fn with_backoff_base(mut self, base: Duration) -> HttpClient {
        self.backoff_base = base;
        self
    }

    /// POSTs `body` to `path` and returns the JSON answer, retrying what can succeed later.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ProviderError> {
        let url = format!("{}/{}", self.base_url, path.trim_start_matches('/'));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.client.post(&url).json(body);
            if !self.api_key.is_empty() {
                req = req.bearer_auth(&self.api_key);
            }
            let (detail, retry_after) = match req.send().await {
                Err(e) => (format!("{e}"), None),
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        return resp
                            .json::<Value>()
                            .await
                            .map_err(|e| ProviderError::Refused {
                                url: url.clone(),
                                detail: format!("the answer is not the expected JSON: {e}"),
                            });
                    }
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = resp.text().await.unwrap_or_default();
                    let detail = format!("HTTP {status}: {}", error_message(&text));
                    if status.as_u16() != 429 && !status.is_server_error() {
                        let hint = match status.as_u16() {
                            401 | 403 => {
                                "; check the API key (TRAWL_EMBEDDING_API_KEY / TRAWL_LLM_API_KEY)"
                            }
                            404 => "; check the base URL and the model name",
                            _ => "",
                        };
                        return Err(ProviderError::Refused {
                            url,
                            detail: format!("{detail}{hint}"),
                        });
                    }
                    (detail, retry_after)
                }
            };
            if attempt >= ATTEMPTS {
                return Err(ProviderError::Transient {
                    url,
                    detail: format!("{detail} (after {attempt} attempts)"),
                });
            }
            let backoff = self.backoff_base * 2u32.pow(attempt - 1);
            let wait = retry_after.unwrap_or(backoff).min(BACKOFF_MAX);
            tracing::debug!(%url, attempt, ?wait, %detail, "provider request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The `error.message` of an OpenAI-style error body, or the body itself, shortened.
fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"))
            .and_then(|m| m.as_str().map(str::to_string))
    });
    let msg = from_json.unwrap_or_else(|| body.trim().to_string());
    msg.chars().take(300).collect()
}

/// An OpenAI-compatible embeddings endpoint.
#[derive(Clone)]
pub struct HttpEmbedder {
    client: HttpClient,
    model: String,
}

impl HttpEmbedder {
    pub fn new(client: HttpClient, model: &str) -> HttpEmbedder {
        HttpEmbedder {
            client,
            model: model.to_string(),
        }
    }

    /// Embeds `texts` in requests of [`EMBED_BATCH`]; vectors come back in input order.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            let answer = self
                .client
                .post(
                    "embeddings",
                    &json!({ "model": self.model, "input": batch }),
                )
                .await?;
            let bad = |detail: &str| ProviderError::Refused {
                url: self.client.base_url.clone(),
                detail: format!("unexpected embeddings answer: {detail}"),
            };
            let data = answer
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("no data array"))?;
            if data.len() != batch.len() {
                return Err(bad(&format!(
                    "{} vectors for {} inputs",
                    data.len(),
                    batch.len()
                )));
            }
            let mut vectors = vec![Vec::new(); batch.len()];
            for (pos, item) in data.iter().enumerate() {
                let index = item
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(pos, |i| i as usize);
                let v: Vec<f32> = item
                    .get("embedding")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("an item without an embedding"))?
                    .iter()
                    .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                    .collect();
                *vectors
                    .get_mut(index)
                    .ok_or_else(|| bad("an index out of range"))? = v;
            }
            out.extend(vectors);
        }
        Ok(out)
    }
}

/// An OpenAI-compatible chat endpoint that writes one-paragraph summaries.
#[derive(Clone)]
pub struct ChatSummarizer {
    client: HttpClient,
    model: String,
}

impl ChatSummarizer {
    pub fn new(client: HttpClient, model: &str) -> ChatSummarizer {
        ChatSummarizer {
            client,
            model: model.to_string(),
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// A one-paragraph summary of what `code` does.
    pub async fn summarize(&self, context: &str, code: &str) -> Result<String, ProviderError> {
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "max_tokens": 200,
            "messages": [
                {"role": "system", "content": "You summarise source code for a code search index. Answer with one plain paragraph (at most 3 sentences) saying what the code does and why someone would call it. No preamble, no markdown."},
                {"role": "user", "content": format!("{context}\n\n```\n{code}\n```")}
            ]
        });
        let answer = self.client.post("chat/completions", &body).await?;
        let text = answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default();
        if text.is_empty() {
            return Err(ProviderError::Refused {
                url: self.client.base_url.clone(),
                detail: "the chat answer has no message content".into(),
            });
        }
        Ok(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_server_url_means_its_v1() {
        assert_eq!(
            api_root("http://localhost:11434"),
            "http://localhost:11434/v1"
        );
        assert_eq!(
            api_root("http://localhost:11434/"),
            "http://localhost:11434/v1"
        );
        assert_eq!(
            api_root("http://localhost:11434/v1/"),
            "http://localhost:11434/v1"
        );
        assert_eq!(
            api_root("https://api.openai.com/v1"),
            "https://api.openai.com/v1"
        );
        assert_eq!(
            api_root("https://example.com/openai/deployments/x"),
            "https://example.com/openai/deployments/x"
        );
    }
}
