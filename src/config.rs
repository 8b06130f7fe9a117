//! The one typed configuration of trawl, and how it is put together.
//!
//! Precedence, lowest first: built-in defaults (named constants below) < `trawl.toml`
//! (path from `--config` or `TRAWL_CONFIG`) < `TRAWL_*` environment variables < command-line
//! flags. Every layer is merged as a TOML value tree and the result is deserialised once,
//! with unknown keys refused, so each layer is checked by the same rules.
//!
//! This module never reads the process environment itself: [`Config::load`] takes the
//! environment as a parameter, so tests pin the precedence without touching global state.
//! It does no I/O beyond reading the config file it is pointed at.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default name of the local embedding model (the directory under `<home>/models`).
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";
/// Files above this size are skipped by SYNC, with the reason recorded.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1024 * 1024;
/// Connections per process; workers and the API share one pool.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// How long to wait for a database connection before saying it is unreachable.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 5;
/// Stage jobs one worker process runs at once.
pub const DEFAULT_WORKER_CONCURRENCY: usize = 2;
/// A job whose worker stopped sending heartbeats is taken up again after this long.
pub const DEFAULT_ORPHAN_TIMEOUT_SECS: u64 = 30;
/// The interval of `trawl scheduler` between background syncs of one repository.
pub const DEFAULT_SCHEDULE_EVERY_SECS: u64 = 3600;
/// Where `trawl serve` listens by default: loopback only.
pub const DEFAULT_BIND: &str = "127.0.0.1:7700";
/// Attempts a stage gets in all before it fails for good.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The delay before a stage's second attempt; it doubles with each attempt after.
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 2_000;
/// No retry waits longer than this.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 300_000;
/// How often an idle worker looks for retries whose backoff has passed.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 1_000;
/// How long a stopping worker lets running stages finish before releasing them.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// A git remote that sends nothing for this long (or an ssh connect that takes longer) is
/// given up on.
pub const DEFAULT_GIT_CONNECT_TIMEOUT_SECS: u64 = 30;
/// No git command runs longer than this; it is killed and the stage retried.
pub const DEFAULT_GIT_TIMEOUT_SECS: u64 = 600;
/// Commits of a git source's history the history pipeline fetches.
pub const DEFAULT_HISTORY_DEPTH: u32 = 1000;

/// Environment variables that set a config key, and the key they set.
///
/// `DATABASE_URL` is read only when `TRAWL_DATABASE_URL` is absent (see [`Config::load`]).
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("TRAWL_HOME", "home"),
    ("TRAWL_DATABASE_URL", "database.url"),
    ("TRAWL_DATABASE_MAX_CONNECTIONS", "database.max_connections"),
    (
        "TRAWL_DATABASE_CONNECT_TIMEOUT_SECS",
        "database.connect_timeout_secs",
    ),
    ("TRAWL_PG_BIN", "database.pg_bin"),
    ("TRAWL_INDEX_DIR", "index.dir"),
    ("TRAWL_MAX_FILE_SIZE", "sync.max_file_size"),
    ("TRAWL_SYNC_DENY", "sync.deny"),
    ("TRAWL_EMBEDDING_PROVIDER", "embedding.provider"),
    ("TRAWL_EMBEDDING_MODEL", "embedding.model"),
    ("TRAWL_EMBEDDING_KIND", "embedding.kind"),
    ("TRAWL_MODEL_DIR", "embedding.model_dir"),
    ("TRAWL_EMBEDDING_RUNTIME", "embedding.runtime"),
    ("TRAWL_ONNXRUNTIME", "embedding.onnxruntime"),
    ("TRAWL_EMBEDDING_BASE_URL", "embedding.base_url"),
    ("TRAWL_EMBEDDING_API_KEY", "embedding.api_key"),
    ("TRAWL_LLM_BASE_URL", "enrich.base_url"),
    ("TRAWL_LLM_MODEL", "enrich.model"),
    ("TRAWL_LLM_API_KEY", "enrich.api_key"),
    ("TRAWL_WORKER_CONCURRENCY", "worker.concurrency"),
    ("TRAWL_ORPHAN_TIMEOUT_SECS", "worker.orphan_timeout_secs"),
    ("TRAWL_MAX_ATTEMPTS", "worker.max_attempts"),
    ("TRAWL_BACKOFF_BASE_MS", "worker.backoff_base_ms"),
    ("TRAWL_BACKOFF_MAX_MS", "worker.backoff_max_ms"),
    ("TRAWL_POLL_INTERVAL_MS", "worker.poll_interval_ms"),
    (
        "TRAWL_SHUTDOWN_TIMEOUT_SECS",
        "worker.shutdown_timeout_secs",
    ),
    ("TRAWL_WORKER_STAGES", "worker.stages"),
    ("TRAWL_WORKER_QUEUES", "worker.queues"),
    ("TRAWL_PIPELINE_REFERENCES", "pipelines.references.enabled"),
    ("TRAWL_PIPELINE_HISTORY", "pipelines.history.enabled"),
    ("TRAWL_HISTORY_DEPTH", "pipelines.history.depth"),
    ("TRAWL_SCHEDULE_EVERY_SECS", "scheduler.every_secs"),
    ("TRAWL_BIND", "serve.bind"),
    ("TRAWL_API_TOKEN", "serve.token"),
    ("TRAWL_ALLOWED_ROOTS", "serve.allowed_roots"),
    ("TRAWL_GIT_TOKEN", "git.token"),
    ("TRAWL_GIT_TOKEN_HOSTS", "git.token_hosts"),
    ("TRAWL_GIT_CONNECT_TIMEOUT_SECS", "git.connect_timeout_secs"),
    ("TRAWL_GIT_TIMEOUT_SECS", "git.timeout_secs"),
];

/// Keys whose values are secrets: `trawl config` prints them redacted.
const SECRET_KEYS: &[&str] = &[
    "embedding.api_key",
    "enrich.api_key",
    "serve.token",
    "git.token",
];

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// trawl's home: the embedded cluster, models, the tantivy index, git working copies.
    pub home: PathBuf,
    pub database: DatabaseConfig,
    pub index: IndexConfig,
    pub sync: SyncConfig,
    pub embedding: EmbeddingConfig,
    pub enrich: EnrichConfig,
    pub worker: WorkerConfig,
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub git: GitConfig,
    #[serde(default)]
    pub pipelines: PipelinesConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A Postgres URL; empty means the embedded cluster under `home`.
    #[serde(default)]
    pub url: String,
    /// The pool's size. A process running a worker raises it to what the worker's slots
    /// need (`pipeline::worker::connections_needed`), saying so.
    pub max_connections: u32,
    pub connect_timeout_secs: u64,
    /// Directory holding `initdb`, `pg_ctl` and `postgres` for the embedded cluster;
    /// empty means where `trawl setup` installed them.
    #[serde(default)]
    pub pg_bin: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// The tantivy index directory; empty means `<home>/index`.
    #[serde(default)]
    pub dir: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Files larger than this many bytes are skipped.
    pub max_file_size: u64,
    /// Files never read, as they usually hold secrets: globs matched against a file's
    /// name, or its path from the root when the pattern holds a `/`. The default is
    /// `sources::directory::DEFAULT_DENY`; `[]` reads everything.
    #[serde(default = "default_deny")]
    pub deny: Vec<String>,
}

fn default_deny() -> Vec<String> {
    crate::sources::directory::DEFAULT_DENY
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingProvider {
    /// In-process inference on the model under `model_dir`.
    Local,
    /// An OpenAI-compatible `/v1/embeddings` endpoint at `base_url`.
    Http,
}

/// Which local embedding runs: the static table distilled from the model, or the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingKind {
    /// A table of one vector per token, distilled from the model by `trawl setup`
    /// (`static256.bin`): a look-up and a mean per text, thousands of times faster than the
    /// transformer. Vectors are stored as model `<model>+static256`.
    #[default]
    Static,
    /// The transformer itself (on ONNX Runtime, or candle in builds with the `candle`
    /// feature): slower, stored as model `<model>`.
    Transformer,
}

/// What runs the local model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingRuntime {
    /// ONNX Runtime when set-up installed it and the model directory holds model.onnx;
    /// otherwise candle with a warning in builds with the `candle` feature, and an error
    /// (run `trawl setup`) in builds without it.
    #[default]
    Auto,
    /// ONNX Runtime (loaded from `embedding.onnxruntime`) on model.onnx: the fast path.
    Onnx,
    /// candle on model.safetensors: pure Rust, about half as fast. Only in builds with the
    /// `candle` feature (`cargo build --features candle`); others refuse it when the model
    /// is loaded.
    Candle,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    pub provider: EmbeddingProvider,
    pub model: String,
    /// For the local provider: the static table distilled from the model (default) or
    /// the transformer.
    #[serde(default)]
    pub kind: EmbeddingKind,
    /// Directory with config.json, tokenizer.json and model.safetensors (and model.onnx
    /// and static256.bin, which set-up builds); empty means `<home>/models/<model>`.
    #[serde(default)]
    pub model_dir: String,
    #[serde(default)]
    pub runtime: EmbeddingRuntime,
    /// The ONNX Runtime library; empty means the one set-up installs,
    /// `<home>/onnxruntime/libonnxruntime.so`.
    #[serde(default)]
    pub onnxruntime: String,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub api_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichConfig {
    /// An OpenAI-compatible chat endpoint; empty means heuristic summaries.
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub api_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Stage jobs one worker process runs at once.
    pub concurrency: usize,
    /// A job whose worker sent no heartbeat for this long is taken up by another.
    pub orphan_timeout_secs: u64,
    /// Attempts per stage, the first included.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub poll_interval_ms: u64,
    pub shutdown_timeout_secs: u64,
    /// The stages this worker takes (for instance only `code_embeddings` on a machine
    /// with the model's hardware); empty means every stage.
    #[serde(default)]
    pub stages: Vec<crate::domain::Stage>,
    /// The queues this worker takes jobs from: `stages` (the five stages and batch jobs)
    /// and each pipeline's (`references`, `history`); empty means every queue.
    #[serde(default)]
    pub queues: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    pub every_secs: u64,
}

/// `trawl serve`: where the HTTP API, MCP endpoint, dashboard and metrics listen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address and port; loopback by default. A non-loopback address needs a token.
    pub bind: String,
    /// The bearer token every route but /healthz and the dashboard page / requires; empty
    /// means none (loopback only).
    pub token: String,
    /// Directories under which HTTP clients (POST /api/v1/repositories) may register
    /// directory sources (absolute paths). Empty: none, so they may add git URLs only. The CLI, run by the
    /// machine's own user, indexes any directory it can read.
    pub allowed_roots: Vec<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: DEFAULT_BIND.to_string(),
            token: String::new(),
            allowed_roots: Vec::new(),
        }
    }
}

/// Git sources: the credential for private https remotes and the time limits of git.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitConfig {
    /// A token for private https remotes, sent as HTTP basic auth (`x-access-token`) to
    /// the hosts in `token_hosts` only, over https only. A secret.
    pub token: String,
    /// The hosts (`github.com`, `git.example.com:8443`) the token is for. Empty: the token
    /// is sent nowhere.
    pub token_hosts: Vec<String>,
    /// An ssh connect, or an https transfer that receives nothing, is given up after this
    /// many seconds.
    pub connect_timeout_secs: u64,
    /// Any one git command is killed after this many seconds.
    pub timeout_secs: u64,
}

impl Default for GitConfig {
    fn default() -> Self {
        GitConfig {
            token: String::new(),
            token_hosts: Vec::new(),
            connect_timeout_secs: DEFAULT_GIT_CONNECT_TIMEOUT_SECS,
            timeout_secs: DEFAULT_GIT_TIMEOUT_SECS,
        }
    }
}

/// The downstream pipelines (see `domain::pipelines`): each on or off for every repository
/// (a repository's own setting, `trawl pipelines enable|disable --repo`, wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesConfig {
    pub references: PipelineConfig,
    pub history: HistoryConfig,
}

impl Default for PipelinesConfig {
    fn default() -> Self {
        PipelinesConfig {
            references: PipelineConfig { enabled: true },
            history: HistoryConfig {
                enabled: true,
                depth: DEFAULT_HISTORY_DEPTH,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    pub enabled: bool,
    /// How many commits of a git source's history are fetched (its working copy stays a
    /// shallow clone of depth 1; the history pipeline keeps its own, this deep).
    pub depth: u32,
}

impl PipelinesConfig {
    /// Each pipeline's flag, by name: what a run records (`RunSettings::pipelines`).
    pub fn flags(&self) -> BTreeMap<String, bool> {
        [
            ("references".to_string(), self.references.enabled),
            ("history".to_string(), self.history.enabled),
        ]
        .into()
    }
}

/// Why a configuration could not be loaded. Always permanent: fix the input and retry.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin} sets {key} to {value:?}, which is not valid: {message}")]
    BadValue {
        origin: String,
        key: String,
        value: String,
        message: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("no home directory: set TRAWL_HOME to the directory trawl should keep its data in")]
    NoHome,
}

/// Where the config file comes from when `--config` is not given.
pub const CONFIG_ENV: &str = "TRAWL_CONFIG";

impl Config {
    /// Built-in defaults, given trawl's home directory.
    pub fn defaults(home: PathBuf) -> Config {
        Config {
            home,
            database: DatabaseConfig {
                url: String::new(),
                max_connections: DEFAULT_MAX_CONNECTIONS,
                connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
                pg_bin: String::new(),
            },
            index: IndexConfig { dir: String::new() },
            sync: SyncConfig {
                max_file_size: DEFAULT_MAX_FILE_SIZE,
                deny: default_deny(),
            },
            embedding: EmbeddingConfig {
                provider: EmbeddingProvider::Local,
                model: DEFAULT_MODEL.to_string(),
                kind: EmbeddingKind::Static,
                model_dir: String::new(),
                runtime: EmbeddingRuntime::Auto,
                onnxruntime: String::new(),
                base_url: String::new(),
                api_key: String::new(),
            },
            enrich: EnrichConfig {
                base_url: String::new(),
                model: String::new(),
                api_key: String::new(),
            },
            worker: WorkerConfig {
                concurrency: DEFAULT_WORKER_CONCURRENCY,
                orphan_timeout_secs: DEFAULT_ORPHAN_TIMEOUT_SECS,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
                backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
                poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
                shutdown_timeout_secs: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
                stages: Vec::new(),
                queues: Vec::new(),
            },
            scheduler: SchedulerConfig {
                every_secs: DEFAULT_SCHEDULE_EVERY_SECS,
            },
            serve: ServeConfig::default(),
            git: GitConfig::default(),
            pipelines: PipelinesConfig::default(),
        }
    }

    /// Loads the configuration: defaults < file < environment < `overrides` (flags, as
    /// dotted keys). `env` is the process environment as pairs; `file` is the `--config`
    /// flag. The result is not yet validated: call [`Config::validate`].
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        overrides: &[(&str, String)],
    ) -> Result<Config, ConfigError> {
        let home = default_home(env).ok_or(ConfigError::NoHome)?;
        let mut tree = toml::Value::try_from(Config::defaults(home)).expect("defaults serialise");

        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env.get(CONFIG_ENV).map(PathBuf::from));
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let layer: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.message().to_string(),
            })?;
            merge(&mut tree, layer);
            // Catch unknown keys and wrong types here, naming the file.
            Config::deserialize(tree.clone()).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.message().to_string(),
            })?;
        }

        let mut env_layer: Vec<(String, &str, &String)> = ENV_KEYS
            .iter()
            .filter_map(|(var, key)| env.get(*var).map(|v| (var.to_string(), *key, v)))
            .collect();
        if let (false, Some(url)) = (
            env.contains_key("TRAWL_DATABASE_URL"),
            env.get("DATABASE_URL"),
        ) {
            env_layer.push(("DATABASE_URL".to_string(), "database.url", url));
        }
        for (var, key, value) in env_layer {
            set_key(
                &mut tree,
                key,
                value,
                &format!("environment variable {var}"),
            )?;
        }
        for (key, value) in overrides {
            set_key(&mut tree, key, value, "command-line flag")?;
        }
        Config::deserialize(tree).map_err(|e| ConfigError::Invalid(e.message().to_string()))
    }

    /// Checks what types alone cannot: ranges and required companions.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if !self.home.is_absolute() {
            return bad("home must be an absolute path");
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections must be at least 1");
        }
        if self.worker.concurrency == 0 {
            return bad("worker.concurrency must be at least 1");
        }
        if self.worker.max_attempts == 0 {
            return bad("worker.max_attempts must be at least 1");
        }
        if self.sync.max_file_size == 0 {
            return bad("sync.max_file_size must be at least 1 byte");
        }
        crate::sources::directory::DenyList::new(&self.sync.deny).map_err(ConfigError::Invalid)?;
        if self.embedding.provider == EmbeddingProvider::Http && self.embedding.base_url.is_empty()
        {
            return bad(
                "embedding.provider is http but embedding.base_url is empty: set TRAWL_EMBEDDING_BASE_URL",
            );
        }
        for (name, url) in [
            ("embedding.base_url", &self.embedding.base_url),
            ("enrich.base_url", &self.enrich.base_url),
        ] {
            if !url.is_empty() && url::Url::parse(url).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "{name} is not a URL: {url:?}"
                )));
            }
        }
        if let Some(root) = self.serve.allowed_roots.iter().find(|r| !r.is_absolute()) {
            return Err(ConfigError::Invalid(format!(
                "serve.allowed_roots holds {}, which is not an absolute path",
                root.display()
            )));
        }
        if self.git.connect_timeout_secs == 0 || self.git.timeout_secs == 0 {
            return bad("git.connect_timeout_secs and git.timeout_secs must be at least 1");
        }
        if let Some(q) = self.worker.queues.iter().find(|q| {
            q.as_str() != "stages" && crate::domain::pipelines::Pipeline::parse(q).is_none()
        }) {
            return Err(ConfigError::Invalid(format!(
                "worker.queues holds {q:?}, which is not a queue: the queues are stages, {}",
                crate::domain::pipelines::Pipeline::names()
            )));
        }
        if self.pipelines.history.depth == 0 {
            return bad("pipelines.history.depth must be at least 1");
        }
        if !self.enrich.base_url.is_empty() && self.enrich.model.is_empty() {
            return bad("enrich.base_url is set but enrich.model is empty: set TRAWL_LLM_MODEL");
        }
        Ok(())
    }

    /// True when trawl runs its own local cluster (no database URL configured).
    pub fn uses_embedded_database(&self) -> bool {
        self.database.url.is_empty()
    }

    /// The model name vectors of the configured embedder are stored under: the local
    /// static tier's is `<model>+static256`; the others' is `embedding.model`.
    pub fn vector_model(&self) -> String {
        if self.embedding.provider == EmbeddingProvider::Local
            && self.embedding.kind == EmbeddingKind::Static
        {
            crate::providers::static_model_name(&self.embedding.model)
        } else {
            self.embedding.model.clone()
        }
    }

    /// What a run this process asks for is recorded with (see `domain::settings`).
    pub fn run_settings(&self) -> crate::domain::settings::RunSettings {
        crate::domain::settings::RunSettings {
            provider: match self.embedding.provider {
                EmbeddingProvider::Local => "local",
                EmbeddingProvider::Http => "http",
            }
            .into(),
            vector_model: self.vector_model(),
            max_file_size: self.sync.max_file_size,
            deny: self.sync.deny.clone(),
            pipelines: self.pipelines.flags(),
        }
    }

    /// The sync rules of `run`: the ones it was asked for with, or this process's for a run
    /// recorded without them.
    pub fn sync_rules_of(
        &self,
        settings: Option<&crate::domain::settings::RunSettings>,
    ) -> SyncConfig {
        match settings {
            Some(s) => SyncConfig {
                max_file_size: s.max_file_size,
                deny: s.deny.clone(),
            },
            None => self.sync.clone(),
        }
    }

    /// The tantivy index directory.
    pub fn index_dir(&self) -> PathBuf {
        non_empty_or(&self.index.dir, || self.home.join("index"))
    }

    /// The keyword (tantivy) index: a directory of its own under the index directory.
    pub fn keyword_index_dir(&self) -> PathBuf {
        self.index_dir().join("keyword")
    }

    /// The local embedding model's directory.
    pub fn model_dir(&self) -> PathBuf {
        non_empty_or(&self.embedding.model_dir, || {
            self.home.join("models").join(&self.embedding.model)
        })
    }

    /// The ONNX Runtime library the local embedder loads.
    pub fn onnxruntime_lib(&self) -> PathBuf {
        non_empty_or(&self.embedding.onnxruntime, || {
            self.home.join("onnxruntime").join("libonnxruntime.so")
        })
    }

    /// The configuration as TOML, with secrets and database passwords redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut tree = toml::Value::try_from(self).expect("config serialises");
        for key in SECRET_KEYS {
            if let Some(toml::Value::String(s)) = get_mut(&mut tree, key)
                && !s.is_empty()
            {
                *s = "<redacted>".to_string();
            }
        }
        for key in ["database.url", "embedding.base_url", "enrich.base_url"] {
            if let Some(toml::Value::String(s)) = get_mut(&mut tree, key) {
                *s = redact_url(s);
            }
        }
        toml::to_string_pretty(&tree).expect("config serialises")
    }
}

fn non_empty_or(s: &str, default: impl FnOnce() -> PathBuf) -> PathBuf {
    if s.is_empty() {
        default()
    } else {
        PathBuf::from(s)
    }
}

/// trawl's home when `TRAWL_HOME` is not set: `/var/lib/trawl` for root (the embedded
/// cluster then runs as an unprivileged user, who cannot enter `/root`), otherwise
/// `$XDG_DATA_HOME/trawl` or `~/.local/share/trawl`.
fn default_home(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    if let Some(home) = env.get("TRAWL_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/lib/trawl"));
    }
    if let Some(xdg) = env.get("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(xdg).join("trawl"));
    }
    env.get("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/trawl"))
}

/// Masks the credentials of a URL (user name, password, secret query parameters); text
/// that is not a URL passes unchanged. See [`crate::redact`].
pub fn redact_url(s: &str) -> String {
    crate::redact::url(s)
}

fn merge(base: &mut toml::Value, layer: toml::Value) {
    match (base, layer) {
        (toml::Value::Table(b), toml::Value::Table(l)) => {
            for (k, v) in l {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, l) => *b = l,
    }
}

fn get_mut<'a>(tree: &'a mut toml::Value, dotted: &str) -> Option<&'a mut toml::Value> {
    dotted
        .split('.')
        .try_fold(tree, |node, part| node.get_mut(part))
}

/// Sets a dotted key from a string, parsed as the type the key already has.
fn set_key(tree: &mut toml::Value, key: &str, raw: &str, origin: &str) -> Result<(), ConfigError> {
    let bad = |message: String| ConfigError::BadValue {
        origin: origin.to_string(),
        key: key.to_string(),
        value: raw.to_string(),
        message,
    };
    let slot = get_mut(tree, key).ok_or_else(|| bad("unknown key".to_string()))?;
    *slot = match slot {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| bad("expected a whole number".to_string()))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(bad("expected true or false".to_string())),
        }),
        toml::Value::Float(_) => toml::Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| bad("expected a number".to_string()))?,
        ),
        // Lists from the environment: comma-separated, blanks dropped.
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trawl.toml");
        std::fs::write(
            &file,
            "[worker]\nconcurrency = 3\n[sync]\nmax_file_size = 10\n[database]\nmax_connections = 4\n",
        )
        .unwrap();
        let e = env(&[
            ("TRAWL_HOME", "/h"),
            ("TRAWL_WORKER_CONCURRENCY", "5"),
            ("TRAWL_DATABASE_MAX_CONNECTIONS", "6"),
        ]);
        let c = Config::load(Some(&file), &e, &[("database.max_connections", "7".into())]).unwrap();
        assert_eq!(c.home, PathBuf::from("/h"));
        assert_eq!(c.sync.max_file_size, 10, "file beats default");
        assert_eq!(c.worker.concurrency, 5, "env beats file");
        assert_eq!(c.database.max_connections, 7, "flag beats env");
        assert_eq!(
            c.scheduler.every_secs, DEFAULT_SCHEDULE_EVERY_SECS,
            "default stays"
        );
    }

    #[test]
    fn config_file_comes_from_trawl_config_when_no_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.toml");
        std::fs::write(&file, "[worker]\nconcurrency = 9\n").unwrap();
        let e = env(&[
            ("TRAWL_HOME", "/h"),
            ("TRAWL_CONFIG", file.to_str().unwrap()),
        ]);
        assert_eq!(Config::load(None, &e, &[]).unwrap().worker.concurrency, 9);
    }

    #[test]
    fn trawl_database_url_wins_over_database_url() {
        let e = env(&[("TRAWL_HOME", "/h"), ("DATABASE_URL", "postgres://a/b")]);
        assert_eq!(
            Config::load(None, &e, &[]).unwrap().database.url,
            "postgres://a/b"
        );
        let e = env(&[
            ("TRAWL_HOME", "/h"),
            ("DATABASE_URL", "postgres://a/b"),
            ("TRAWL_DATABASE_URL", "postgres://c/d"),
        ]);
        let c = Config::load(None, &e, &[]).unwrap();
        assert_eq!(c.database.url, "postgres://c/d");
        assert!(!c.uses_embedded_database());
    }

    #[test]
    fn unknown_key_in_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trawl.toml");
        std::fs::write(&file, "[worker]\nconcurency = 3\n").unwrap();
        let err = Config::load(Some(&file), &env(&[("TRAWL_HOME", "/h")]), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("trawl.toml") && msg.contains("concurency"),
            "{msg}"
        );
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let e = env(&[("TRAWL_HOME", "/h"), ("TRAWL_WORKER_CONCURRENCY", "many")]);
        let msg = Config::load(None, &e, &[]).unwrap_err().to_string();
        assert!(
            msg.contains("TRAWL_WORKER_CONCURRENCY") && msg.contains("whole number"),
            "{msg}"
        );
    }

    #[test]
    fn validate_refuses_zero_and_missing_companions() {
        let mut c = Config::defaults(PathBuf::from("/h"));
        c.validate().unwrap();
        c.worker.concurrency = 0;
        assert!(c.validate().is_err());
        let mut c = Config::defaults(PathBuf::from("/h"));
        c.embedding.provider = EmbeddingProvider::Http;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("TRAWL_EMBEDDING_BASE_URL")
        );
        let c = Config::defaults(PathBuf::from("relative"));
        assert!(c.validate().is_err());
    }

    #[test]
    fn redacted_output_hides_secrets_and_passwords() {
        let mut c = Config::defaults(PathBuf::from("/h"));
        c.database.url = "postgres://user:hunter2@db:5432/trawl".into();
        c.embedding.api_key = "sk-secret".into();
        let out = c.to_redacted_toml();
        assert!(
            !out.contains("hunter2") && !out.contains("sk-secret"),
            "{out}"
        );
        assert!(out.contains("user:***@db:5432"), "{out}");
        assert!(out.contains("<redacted>"), "{out}");
    }

    #[test]
    fn derived_paths_default_under_home() {
        let c = Config::defaults(PathBuf::from("/h"));
        assert_eq!(c.index_dir(), PathBuf::from("/h/index"));
        assert_eq!(c.model_dir(), PathBuf::from("/h/models/all-MiniLM-L6-v2"));
    }
}
