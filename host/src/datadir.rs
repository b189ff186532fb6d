//! The data dir: claiming a directory as wasmkube's, or refusing one that is not, before
//! anything is written to it. Used by `serve` (TLS files) and the embedded store.

use std::path::{Path, PathBuf};

/// The file that marks a directory as a wasmkube data dir.
pub const MARKER: &str = "wasmkube.json";
const MARKER_CONTENT: &str = "{\"kind\":\"wasmkube-data-dir\",\"format\":1}\n";

#[derive(Debug, thiserror::Error)]
#[error("data dir {}: {reason}", .path.display())]
pub struct DataDirError {
    pub path: PathBuf,
    pub reason: String,
}

/// Make `dir` ours: create and mark it when it is new or empty; accept it when it carries
/// our marker; refuse it, untouched, otherwise. With `must_be_new`, only an empty or new
/// directory is accepted.
pub fn claim(dir: &Path, must_be_new: bool) -> Result<(), DataDirError> {
    let fail = |reason: String| DataDirError { path: dir.to_path_buf(), reason };
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create: {e}")))?;
    let empty = std::fs::read_dir(dir).map_err(|e| fail(format!("cannot read: {e}")))?.next().is_none();
    if must_be_new && !empty {
        return Err(fail("is not empty; restore into a new directory".into()));
    }
    let marker = dir.join(MARKER);
    if empty {
        return std::fs::write(&marker, MARKER_CONTENT).map_err(|e| fail(format!("cannot write {MARKER}: {e}")));
    }
    match std::fs::read_to_string(&marker) {
        Ok(content) if content == MARKER_CONTENT => Ok(()),
        Ok(_) => Err(fail(format!("{MARKER} is not a format this wasmkube reads"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(fail(format!(
            "is not empty and holds no {MARKER}, so it is not a wasmkube data dir; nothing was changed. Pass an empty or new directory"
        ))),
        Err(e) => Err(fail(format!("cannot read {MARKER}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_new_and_marked_dirs_and_refuses_foreign_ones() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("new");
        claim(&dir, false).expect("a new dir is claimed");
        claim(&dir, false).expect("a marked dir is accepted");
        assert!(claim(&dir, true).is_err(), "a used dir is not new");
        let foreign = root.path().join("foreign");
        std::fs::create_dir(&foreign).expect("mkdir");
        std::fs::write(foreign.join("x"), "x").expect("write");
        let error = claim(&foreign, false).expect_err("foreign");
        assert!(error.to_string().contains("not a wasmkube data dir"), "{error}");
        assert!(!foreign.join(MARKER).exists(), "nothing written");
    }
}
