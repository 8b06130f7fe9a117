//! Working copies: where a repository's files are read from. A local directory is read in
//! place; git URLs are cloned under trawl's home ([`git`]).

pub mod directory;
pub mod git;

/// Creates `dir` (and any missing parents) readable by trawl's user alone, 0700, and
/// makes an existing `dir` so (never its parents, which may be anybody's): working copies
/// and indexes hold the code of private repositories.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A relative path with `.` dropped and each `..` taking off the part before it; `None`
/// when a `..` would climb above where the path starts.
pub fn lexically_normal(path: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::path::Component;
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}
