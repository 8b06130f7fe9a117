//! Scanning a directory: the files trawl may index, with .gitignore and .ignore honoured,
//! `.git` and build output skipped, symlinks never followed (so a link can neither lead out
//! of the repository nor into a loop). Reading and hashing happen here; deciding what
//! changed is the SYNC stage's.

use std::io::Read as _;
use std::path::{Path, PathBuf};

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

/// Lists the regular files under `root` that ignore rules allow.
pub fn scan(root: &Path) -> std::io::Result<Vec<ScannedFile>> {
    let meta = std::fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .follow_links(false)
        .require_git(false)
        .filter_entry(|e| {
            !(e.file_type().is_some_and(|t| t.is_dir())
                && SKIPPED_DIRS.contains(&e.file_name().to_string_lossy().as_ref()))
        })
        .build();
    for entry in walker {
        let Ok(entry) = entry else { continue };
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            continue;
        }
        // Links are never followed (they may leave the repository or loop); they and other
        // special files are listed with the reason they are not read.
        let skip = if file_type.is_symlink() {
            Some("symbolic link: not followed".to_string())
        } else if !file_type.is_file() {
            Some("not a regular file".to_string())
        } else {
            None
        };
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str() else { continue };
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

/// What reading a file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Hex sha-256 of the bytes.
    Text { hash: String },
    /// Not indexed, and why.
    Skipped { reason: String },
}

/// Reads and hashes one file, skipping binaries (a NUL byte in the first 8 KiB) and files
/// over `max_size`.
pub fn read(root: &Path, path: &str, max_size: u64) -> Content {
    let abs: PathBuf = root.join(path);
    let mut file = match std::fs::File::open(&abs) {
        Ok(f) => f,
        Err(e) => {
            return Content::Skipped {
                reason: format!("unreadable: {e}"),
            };
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > max_size {
        return Content::Skipped {
            reason: format!("too large: {size} bytes (limit {max_size})"),
        };
    }
    let mut bytes = Vec::with_capacity(size as usize);
    if let Err(e) = file.read_to_end(&mut bytes) {
        return Content::Skipped {
            reason: format!("unreadable: {e}"),
        };
    }
    if bytes.len() as u64 > max_size {
        return Content::Skipped {
            reason: format!("too large: {} bytes (limit {max_size})", bytes.len()),
        };
    }
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Content::Skipped {
            reason: "binary".into(),
        };
    }
    Content::Text {
        hash: hex(&sha2::Sha256::digest(&bytes)),
    }
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
        let found: Vec<(String, Option<String>)> = scan(root)
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.skip))
            .collect();
        let link = Some("symbolic link: not followed".to_string());
        assert_eq!(
            found,
            vec![
                (".gitignore".to_string(), None),
                ("etc-link".to_string(), link.clone()),
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
    fn languages_by_extension() {
        assert_eq!(language_of("src/lib.rs"), Some("rust"));
        assert_eq!(language_of("a/b.TSX"), Some("tsx"));
        assert_eq!(language_of("README"), None);
        assert_eq!(language_of("notes.txt"), None);
    }
}
