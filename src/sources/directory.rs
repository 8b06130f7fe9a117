//! Scanning a directory: the files trawl may index, with .gitignore and .ignore honoured,
//! `.git` and build output skipped, symlinks never followed (so a link can neither lead out
//! of the repository nor into a loop). Reading and hashing happen here; deciding what
//! changed is the SYNC stage's.

use std::io::Read as _;
use std::path::Path;

use sha2::Digest as _;

/// A file found by a scan, before its content is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedFile {
    /// Relative to the root, '/'-separated.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// Why the file is not read at all (a symbolic link, a special file).
    pub skip: Option<String>,
}

/// Directories never indexed, wherever they appear (vendored code and build output).
const SKIPPED_DIRS: &[&str] = &[
    ".git",
    "node_modules",
    "target",
    "vendor",
    "__pycache__",
    ".venv",
    "dist",
    "build",
];

/// Whether relative path `rel` ('/'-separated) lies in a directory no scan enters.
pub fn in_skipped_dir(rel: &str) -> bool {
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    parts.iter().any(|c| SKIPPED_DIRS.contains(c))
}

/// Files never read because they usually hold secrets (`sync.deny`, which the
/// configuration can change): each a glob matched against a file's name, or against its
/// path from the root when the pattern holds a `/`.
pub const DEFAULT_DENY: &[&str] = &[
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".netrc",
    ".pgpass",
    ".npmrc",
    ".pypirc",
    ".git-credentials",
    "credentials",
    "credentials.json",
    "*.tfstate",
];

/// The compiled `sync.deny` patterns.
#[derive(Debug, Clone)]
pub struct DenyList {
    names: globset::GlobSet,
    paths: globset::GlobSet,
    patterns: Vec<(String, bool)>,
}

impl DenyList {
    pub fn new(patterns: &[String]) -> Result<DenyList, String> {
        let (mut names, mut paths) = (
            globset::GlobSetBuilder::new(),
            globset::GlobSetBuilder::new(),
        );
        let mut kept = Vec::new();
        for p in patterns {
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("sync.deny pattern {p:?} is not a valid glob: {e}"))?;
            let by_path = p.contains('/');
            if by_path {
                paths.add(glob);
            } else {
                names.add(glob);
            }
            kept.push((p.clone(), by_path));
        }
        let build = |b: globset::GlobSetBuilder| b.build().map_err(|e| e.to_string());
        Ok(DenyList {
            names: build(names)?,
            paths: build(paths)?,
            patterns: kept,
        })
    }

    /// The pattern that keeps `rel` (a '/'-separated path from the root) out, if any.
    pub fn matching(&self, rel: &str) -> Option<&str> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let by_name = self.names.matches(name);
        let by_path = self.paths.matches(rel);
        let (names, paths): (Vec<_>, Vec<_>) = self.patterns.iter().partition(|(_, p)| !p);
        by_name
            .first()
            .map(|&i| names[i].0.as_str())
            .or_else(|| by_path.first().map(|&i| paths[i].0.as_str()))
    }
}

/// Lists the regular files under `root` that ignore rules allow; files that `deny` keeps
/// out, links, special files and names that are not UTF-8 are listed with the reason they
/// are not read.
pub fn scan(root: &Path, deny: &DenyList) -> std::io::Result<Vec<ScannedFile>> {
    let meta = std::fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut out = Vec::new();
    for entry in walker(root).build() {
        let Ok(entry) = entry else { continue };
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            continue;
        }
        // Links are never followed (they may leave the repository or loop); they and other
        // special files are listed with the reason they are not read.
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let (rel, utf8) = match rel.to_str() {
            Some(r) => (r.to_string(), true),
            None => (rel.to_string_lossy().into_owned(), false),
        };
        let skip = if !utf8 {
            Some("file name is not valid UTF-8: not read".to_string())
        } else if file_type.is_symlink() {
            Some("symbolic link: not followed".to_string())
        } else if !file_type.is_file() {
            Some("not a regular file".to_string())
        } else {
            deny.matching(&rel)
                .map(|p| format!("may hold secrets (sync.deny pattern {p:?}): not read"))
        };
        let meta = match std::fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        out.push(ScannedFile {
            path: rel.replace('\\', "/"),
            size: if skip.is_some() { 0 } else { meta.len() },
            mtime_ns,
            skip,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The walk of [`scan`] from `dir` (the root, or a directory inside it): ignore files of
/// `dir` and its parents honoured, hidden files kept, links not followed, skipped
/// directories left out.
fn walker(dir: &Path) -> ignore::WalkBuilder {
    let mut w = ignore::WalkBuilder::new(dir);
    w.hidden(false)
        .follow_links(false)
        .require_git(false)
        .filter_entry(|e| {
            !(e.file_type().is_some_and(|t| t.is_dir())
                && SKIPPED_DIRS.contains(&e.file_name().to_string_lossy().as_ref()))
        });
    w
}

/// What of a set of changed paths a scan would look at: see [`changed_files`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Files a scan of the root finds, among the paths or below those that are directories.
    pub files: Vec<String>,
    /// Paths that no longer exist (deleted or renamed away, files or directories).
    pub gone: Vec<String>,
}

/// Sorts changed paths (relative to `root`, '/'-separated) as SYNC's scan would see them:
/// an existing path counts only if the scan finds it (not ignored by a .gitignore or
/// .ignore on the way down, not in a skipped directory); an existing directory stands
/// for every file the scan finds below it. Each directory on the way is listed once.
pub fn changed_files(root: &Path, paths: &[String]) -> Changed {
    let mut listed = std::collections::HashMap::new();
    let mut out = Changed::default();
    for rel in paths {
        let rel = rel.trim_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
            continue;
        }
        let full = root.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            out.gone.push(rel.to_string());
            continue;
        };
        if !visible(&mut listed, root, rel) {
            continue;
        }
        if meta.is_dir() {
            for e in walker(&full).build().flatten() {
                if e.file_type().is_some_and(|t| !t.is_dir())
                    && let Ok(below) = e.path().strip_prefix(root)
                    && let Some(below) = below.to_str()
                {
                    out.files.push(below.replace('\\', "/"));
                }
            }
        } else {
            out.files.push(rel.to_string());
        }
    }
    out.files.sort();
    out.files.dedup();
    out.gone.sort();
    out.gone.dedup();
    out
}

/// Whether a scan of `root` reaches `rel` (relative, '/'-separated): each step down is
/// listed by the walk of its parent. The root itself always is.
fn visible(
    cache: &mut std::collections::HashMap<String, std::collections::HashSet<String>>,
    root: &Path,
    rel: &str,
) -> bool {
    let mut parent = String::new();
    rel.split('/').filter(|n| !n.is_empty()).all(|name| {
        let seen = listing(cache, root, &parent).contains(name);
        parent = if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}/{name}")
        };
        seen
    })
}

/// The directories a scan of `root` walks at `rel` (relative, '/'-separated; "" is the
/// root) and below: none when the scan does not reach `rel` or it is not a directory.
/// `visit` gets each as the walk reaches it, `rel` first and every directory before those
/// inside it, and before its entries are read: a watch added there misses nothing made in
/// it afterwards. Ignored and skipped directories (`target`, `node_modules`, ...) are not
/// walked, so a watcher of these watches only what SYNC would read.
pub fn walked_dirs(root: &Path, rel: &str, mut visit: impl FnMut(&Path)) {
    let rel = rel.trim_matches('/');
    if rel.split('/').any(|c| c == ".." || c == ".")
        || !visible(&mut std::collections::HashMap::new(), root, rel)
    {
        return;
    }
    let from = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    if !std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_dir()) {
        return;
    }
    for entry in walker(&from).build().flatten() {
        if entry.file_type().is_some_and(|t| t.is_dir()) {
            visit(entry.path());
        }
    }
}

/// The names a walk of directory `dir` (relative to `root`) lists directly in it, listed
/// once per `cache`.
fn listing<'a>(
    cache: &'a mut std::collections::HashMap<String, std::collections::HashSet<String>>,
    root: &Path,
    dir: &str,
) -> &'a std::collections::HashSet<String> {
    cache.entry(dir.to_string()).or_insert_with(|| {
        walker(&root.join(dir))
            .max_depth(Some(1))
            .build()
            .flatten()
            .filter(|e| e.depth() == 1)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    })
}

/// What reading a file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Hex sha-256 of the bytes.
    Text { hash: String },
    /// Not indexed, and why.
    Skipped { reason: String },
}

/// Why a file could not be read by [`read_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("unreadable: {0}")]
    Unreadable(String),
    #[error("too large: {size} bytes (limit {limit})")]
    TooLarge { size: u64, limit: u64 },
}

/// Opens `path` ('/'-separated, relative) under `root` without following a symbolic link
/// at any step and without blocking on a FIFO or a device: only a regular file opens. A
/// file swapped for a link (or a directory swapped for a link out of the root) after the
/// scan is refused, not followed.
pub fn open_regular(root: &Path, path: &str) -> std::io::Result<std::fs::File> {
    use std::ffi::CString;
    use std::os::fd::{FromRawFd as _, OwnedFd};
    use std::os::unix::ffi::OsStrExt as _;
    let invalid =
        |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string());
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(invalid("not a plain relative path"));
    }
    let open_at = |dir: libc::c_int, name: &[u8], flags: libc::c_int| -> std::io::Result<OwnedFd> {
        let name = CString::new(name).map_err(|_| invalid("a NUL in the path"))?;
        // SAFETY: a valid NUL-terminated name; the returned descriptor is owned below.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            // O_NOFOLLOW says ELOOP on a link, O_DIRECTORY ENOTDIR: say which it was.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: a valid name and a stat buffer of the right type.
            let is_link = matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
                && unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) }
                    == 0
                && (st.st_mode & libc::S_IFMT) == libc::S_IFLNK;
            return Err(if is_link {
                std::io::Error::other("a symbolic link: not followed")
            } else {
                e
            });
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    use std::os::fd::AsRawFd as _;
    let mut dir = open_at(
        libc::AT_FDCWD,
        root.as_os_str().as_bytes(),
        libc::O_RDONLY | libc::O_DIRECTORY,
    )?;
    let (last, dirs) = parts.split_last().expect("split yields one part at least");
    for part in dirs {
        dir = open_at(
            dir.as_raw_fd(),
            part.as_bytes(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )?;
    }
    let fd = open_at(
        dir.as_raw_fd(),
        last.as_bytes(),
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
    )?;
    let file = std::fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a FIFO, a device or a directory)",
        ));
    }
    Ok(file)
}

/// The bytes of `path` under `root`, opened by [`open_regular`], refused above `max_size`
/// (checked on the open file, then on what was read, so a file that grows is caught too).
pub fn read_bytes(root: &Path, path: &str, max_size: u64) -> Result<Vec<u8>, ReadError> {
    let unreadable = |e: std::io::Error| ReadError::Unreadable(e.to_string());
    let file = open_regular(root, path).map_err(unreadable)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > max_size {
        return Err(ReadError::TooLarge {
            size,
            limit: max_size,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max_size + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > max_size {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            limit: max_size,
        });
    }
    Ok(bytes)
}

/// Reads and hashes one file, skipping binaries (a NUL byte in the first 8 KiB) and files
/// over `max_size`.
pub fn read(root: &Path, path: &str, max_size: u64) -> Content {
    match read_text(root, path, max_size) {
        Ok((hash, _)) => Content::Text { hash },
        Err(reason) => Content::Skipped { reason },
    }
}

/// [`read`], keeping the bytes: the hex sha-256 and the content of a text file, or why the
/// file is skipped.
pub fn read_text(root: &Path, path: &str, max_size: u64) -> Result<(String, Vec<u8>), String> {
    let bytes = read_bytes(root, path, max_size).map_err(|e| e.to_string())?;
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err("binary".into());
    }
    Ok((content_hash(&bytes), bytes))
}

/// The hex sha-256 by which a content is known (`files.content_hash`).
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The language of a file, from its name; None for files indexed as plain text.
/// Every language [`language_of`] can name.
pub const LANGUAGES: &[&str] = &[
    "rust",
    "python",
    "go",
    "javascript",
    "typescript",
    "tsx",
    "java",
    "c",
    "cpp",
    "csharp",
    "ruby",
    "php",
    "bash",
    "lua",
];

pub fn language_of(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    Some(match ext.as_str() {
        "rs" => "rust",
        "py" | "pyi" => "python",
        "go" => "go",
        "js" | "mjs" | "cjs" | "jsx" => "javascript",
        "ts" | "mts" | "cts" => "typescript",
        "tsx" => "tsx",
        "java" => "java",
        "c" | "h" => "c",
        "cc" | "cpp" | "cxx" | "hpp" | "hh" | "hxx" => "cpp",
        "cs" => "csharp",
        "rb" => "ruby",
        "php" => "php",
        "sh" | "bash" => "bash",
        "lua" => "lua",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_paths_are_sorted_as_the_scan_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["src/deep", "out", "node_modules/pkg", "keep/build"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join(".gitignore"), "out/\n*.log\n").unwrap();
        std::fs::write(root.join("src/.gitignore"), "secret.py\n").unwrap();
        for f in [
            "src/a.py",
            "src/deep/b.py",
            "src/secret.py",
            "out/c.py",
            "x.log",
            "node_modules/pkg/i.js",
        ] {
            std::fs::write(root.join(f), "x = 1\n").unwrap();
        }
        let paths: Vec<String> = [
            "src/a.py",
            "src/secret.py",
            "out/c.py",
            "x.log",
            "node_modules/pkg/i.js",
            "src/deep",
            "gone.py",
            "src/old",
            "../outside.py",
        ]
        .map(String::from)
        .to_vec();
        let changed = changed_files(root, &paths);
        assert_eq!(
            changed.files,
            vec!["src/a.py".to_string(), "src/deep/b.py".to_string()],
            "ignored by either .gitignore, in a skipped directory, or outside: left out; a \
             directory stands for its files"
        );
        assert_eq!(
            changed.gone,
            vec!["gone.py".to_string(), "src/old".to_string()]
        );
        assert!(in_skipped_dir("node_modules/pkg/i.js") && in_skipped_dir("a/.git/HEAD"));
        assert!(!in_skipped_dir("node_modules") && !in_skipped_dir("src/target.rs"));
    }

    #[test]
    fn scan_honours_gitignore_skips_vendored_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join("node_modules/x")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("src/a.rs"), "fn a() {}").unwrap();
        std::fs::write(root.join("secret.log"), "x").unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(root.join("node_modules/x/i.js"), "x").unwrap();
        std::fs::write(root.join(".git/config"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        std::os::unix::fs::symlink(root, root.join("src/loop")).unwrap();
        std::fs::write(root.join(".env"), "TOKEN=x").unwrap();
        std::fs::create_dir_all(root.join("keys")).unwrap();
        std::fs::write(root.join("keys/id_rsa"), "x").unwrap();
        std::fs::write(root.join("keys/server.pem"), "x").unwrap();
        let deny = DenyList::new(
            &DEFAULT_DENY
                .iter()
                .map(|s| s.to_string())
                .chain(["keys/*.pem".to_string()])
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let found: Vec<(String, Option<String>)> = scan(root, &deny)
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.skip))
            .collect();
        let link = Some("symbolic link: not followed".to_string());
        let secret = |p: &str| {
            Some(format!(
                "may hold secrets (sync.deny pattern {p:?}): not read"
            ))
        };
        assert_eq!(
            found,
            vec![
                (".env".to_string(), secret(".env")),
                (".gitignore".to_string(), None),
                ("etc-link".to_string(), link.clone()),
                ("keys/id_rsa".to_string(), secret("id_rsa*")),
                ("keys/server.pem".to_string(), secret("*.pem")),
                ("src/a.rs".to_string(), None),
                ("src/loop".to_string(), link),
            ]
        );
    }

    #[test]
    fn read_skips_binaries_and_large_files_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bin"), b"ab\0cd").unwrap();
        std::fs::write(dir.path().join("big"), vec![b'a'; 100]).unwrap();
        std::fs::write(dir.path().join("ok"), "hello").unwrap();
        assert_eq!(
            read(dir.path(), "bin", 1000),
            Content::Skipped {
                reason: "binary".into()
            }
        );
        assert!(
            matches!(read(dir.path(), "big", 10), Content::Skipped { reason } if reason.starts_with("too large"))
        );
        assert_eq!(
            read(dir.path(), "ok", 1000),
            Content::Text {
                hash: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into()
            }
        );
        assert!(
            matches!(read(dir.path(), "missing", 10), Content::Skipped { reason } if reason.starts_with("unreadable"))
        );
    }

    #[test]
    fn open_regular_refuses_links_at_any_step_and_fifos_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(outside.path().join("secret.py"), "KEY = 1").unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/ok.py"), "x = 1").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.py"), root.join("src/a.py"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("lib")).unwrap();
        let fifo = std::ffi::CString::new(root.join("src/pipe.py").to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

        assert_eq!(read_bytes(root, "src/ok.py", 100).unwrap(), b"x = 1");
        for (path, why) in [
            ("src/a.py", "symbolic link"),
            ("lib/secret.py", "symbolic link"),
            ("src/pipe.py", "not a regular file"),
            ("src/../src/ok.py", "plain relative path"),
        ] {
            let err = read_bytes(root, path, 100).unwrap_err().to_string();
            assert!(err.contains(why), "{path}: {err}");
        }
        assert_eq!(
            read_bytes(root, "src/ok.py", 3),
            Err(ReadError::TooLarge { size: 5, limit: 3 })
        );
    }

    #[test]
    fn languages_by_extension() {
        assert_eq!(language_of("src/lib.rs"), Some("rust"));
        assert_eq!(language_of("a/b.TSX"), Some("tsx"));
        assert_eq!(language_of("README"), None);
        assert_eq!(language_of("notes.txt"), None);
    }
}
