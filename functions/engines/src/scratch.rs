//! Private scratch directories for the tools' own state (LibreOffice's profiles): made
//! like mkdtemp, with an unguessable name and mode 0700, under a root the server sets
//! inside its data directory, and removed with that root when the server stops.

use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Sets where scratch directories go (once, at start-up); made private if missing.
pub fn set_root(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let _ = ROOT.set(dir.to_path_buf());
    Ok(())
}

/// The root: the one set, or a private directory of this process under the system's temp
/// directory (the one-shot commands, the tests of this crate).
pub fn root() -> PathBuf {
    ROOT.get_or_init(|| {
        let dir = private_in(&std::env::temp_dir(), "runconvert")
            .unwrap_or_else(|_| std::env::temp_dir().join(format!("runconvert-{}", std::process::id())));
        dir
    })
    .clone()
}

/// A new private directory under the root, named `<prefix>-<random>`.
pub fn private_dir(prefix: &str) -> std::io::Result<PathBuf> {
    private_in(&root(), prefix)
}

fn private_in(parent: &Path, prefix: &str) -> std::io::Result<PathBuf> {
    for _ in 0..16 {
        // RandomState is seeded from the OS per instance: an unpredictable name.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let dir = parent.join(format!("{prefix}-{:016x}", h.finish()));
        // mkdir fails on anything that exists, a planted symlink included.
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot make a private directory"))
}

/// Removes every scratch directory (at a clean stop).
pub fn remove_all() {
    if let Some(root) = ROOT.get() {
        let _ = std::fs::remove_dir_all(root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn directories_are_private_and_unpredictable() {
        let a = private_dir("t").unwrap();
        let b = private_dir("t").unwrap();
        assert_ne!(a, b);
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let _ = std::fs::remove_dir_all(a);
        let _ = std::fs::remove_dir_all(b);
    }
}
