//! Test-only stand-in for a file system without `fallocate` (as ramfs, vfat or many FUSE
//! file systems are): for a registered path, every fallocate the drivers issue answers
//! `EOPNOTSUPP` without reaching the kernel, and the attempts are counted.

use std::sync::Mutex;

/// Where the pretended lack of fallocate shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// In the create-time probe and at run time: a file system that never had fallocate.
    Always,
    /// Only at run time: the probe passes, the requests fail (as on a file system whose
    /// answer the probe cannot see, e.g. a FUSE server that refuses some ranges).
    RunTime,
}

struct Entry {
    path: String,
    scope: Scope,
    attempts: u64,
}

static PATHS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Makes fallocate on `path` answer `EOPNOTSUPP` within `scope`.
pub(crate) fn no_fallocate(path: &str, scope: Scope) {
    let mut p = PATHS.lock().unwrap();
    p.retain(|e| e.path != path);
    p.push(Entry {
        path: path.to_string(),
        scope,
        attempts: 0,
    });
}

/// Fallocate calls refused on `path` so far (probe included).
pub(crate) fn attempts(path: &str) -> u64 {
    let p = PATHS.lock().unwrap();
    p.iter().find(|e| e.path == path).map_or(0, |e| e.attempts)
}

/// Whether a fallocate on `path` (the create-time probe if `probe`) is refused; counts it if
/// `count`.
pub(crate) fn refused(path: &str, probe: bool, count: bool) -> bool {
    let Ok(mut p) = PATHS.lock() else {
        return false;
    };
    let Some(e) = p.iter_mut().find(|e| e.path == path) else {
        return false;
    };
    if probe && e.scope == Scope::RunTime {
        return false;
    }
    if count {
        e.attempts += 1;
    }
    true
}
