//! The model file's SHA-256 (every receipt's `provenance.model_sha256`), remembered per file.
//!
//! Hashing a 1.2 GB 2B-4T file takes a core 0.6-0.9 s, and a comparison's loading waited
//! 0.4-0.5 s of it after the oracle had started; a CI job compares the same file on every
//! commit. So the digest is kept in `$XDG_CACHE_HOME/xval/sha256/` (else `~/.cache/xval/
//! sha256/`), one small file per model file, under what identifies the file's bytes without
//! reading them: its canonical path, device, inode, size, and modification and status-change
//! times in nanoseconds. Any write to the file changes its status-change time (which no
//! program can set back), so a changed file is hashed again. A digest is stored only when that
//! identity was the same before and after hashing (the file did not change meanwhile). Cache
//! errors are never errors: the digest is then computed. `XVAL_NO_DIGEST_CACHE=1` (any
//! non-empty value) always hashes.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

/// `hash()`'s result for the file at `path`, from the cache where it holds one for the file as
/// it is now, else computed (and remembered).
pub fn model_sha256(path: &Path, hash: impl FnOnce() -> String) -> String {
    let dir = std::env::var_os("XVAL_NO_DIGEST_CACHE")
        .filter(|v| !v.is_empty())
        .is_none()
        .then(|| xval_cpp_sys::external::user_cache_dir().map(|d| d.join("sha256")))
        .flatten();
    sha256_in(dir.as_deref(), path, hash)
}

/// [`model_sha256`] with the cache in `dir` (none: always `hash()`).
fn sha256_in(dir: Option<&Path>, path: &Path, hash: impl FnOnce() -> String) -> String {
    let Some(dir) = dir else { return hash() };
    let Some(before) = identity(path) else {
        return hash();
    };
    let entry = dir.join(hex(&Sha256::digest(before.as_bytes())));
    if let Some(d) = read_entry(&entry, &before) {
        return d;
    }
    let digest = hash();
    if identity(path).as_deref() == Some(&before) {
        // Best effort: a read-only or full cache only costs the next run the hashing.
        let _ = write_entry(dir, &entry, &before, &digest);
    }
    digest
}

/// What identifies the bytes of the file at `path` without reading them (see the module doc);
/// none where the platform or the file does not say.
#[cfg(unix)]
fn identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let canonical = fs::canonicalize(path).ok()?;
    let m = fs::metadata(&canonical).ok()?;
    if !m.is_file() {
        return None;
    }
    Some(format!(
        "{} dev {} ino {} size {} mtime {}.{:09} ctime {}.{:09}",
        canonical.display(),
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

#[cfg(not(unix))]
fn identity(_path: &Path) -> Option<String> {
    None
}

/// The digest an entry holds for `key`: its first line must be `key`, its second 64 hex
/// digits.
fn read_entry(entry: &Path, key: &str) -> Option<String> {
    let text = fs::read_to_string(entry).ok()?;
    let mut lines = text.lines();
    if lines.next()? != key {
        return None;
    }
    let digest = lines.next()?;
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digest.to_ascii_lowercase())
}

/// Write an entry under a private name, then rename it into place: concurrent runs never read
/// half an entry.
fn write_entry(dir: &Path, entry: &Path, key: &str, digest: &str) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = entry.with_extension(format!("{}.tmp", std::process::id()));
    fs::write(&tmp, format!("{key}\n{digest}\n"))?;
    fs::rename(&tmp, entry).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    #[test]
    fn a_file_is_hashed_once_until_it_changes() {
        let d = tempfile::tempdir().unwrap();
        let (cache, model) = (d.path().join("cache"), d.path().join("m.gguf"));
        fs::write(&model, b"weights").unwrap();
        let hashed = Cell::new(0);
        let run = || {
            sha256_in(Some(&cache), &model, || {
                hashed.set(hashed.get() + 1);
                sha(&fs::read(&model).unwrap())
            })
        };
        assert_eq!(run(), sha(b"weights"));
        assert_eq!(run(), sha(b"weights"));
        assert_eq!(hashed.get(), 1, "the second run reads the cache");
        // Rewritten (same size): its times change, so it is hashed again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&model, b"WEIGHTS").unwrap();
        assert_eq!(run(), sha(b"WEIGHTS"));
        assert_eq!(hashed.get(), 2);
        // Another path to the same file is the same file.
        let link = d.path().join("link.gguf");
        std::os::unix::fs::symlink(&model, &link).unwrap();
        let via_link = sha256_in(Some(&cache), &link, || unreachable!("cached"));
        assert_eq!(via_link, sha(b"WEIGHTS"));
    }

    #[test]
    fn entries_that_do_not_match_are_not_used() {
        let d = tempfile::tempdir().unwrap();
        let (cache, model) = (d.path().join("cache"), d.path().join("m.gguf"));
        fs::write(&model, b"weights").unwrap();
        let key = identity(&model).unwrap();
        let entry = cache.join(hex(&Sha256::digest(key.as_bytes())));
        fs::create_dir_all(&cache).unwrap();
        let hashed = Cell::new(0);
        let fresh = || {
            sha256_in(Some(&cache), &model, || {
                hashed.set(hashed.get() + 1);
                sha(b"weights")
            })
        };
        // Another file's key in this entry, a digest of the wrong length, one not in hex: each
        // hashed again (and the entry rewritten).
        for (i, text) in [
            format!("/elsewhere\n{}\n", "0".repeat(64)),
            format!("{key}\nabc\n"),
            format!("{key}\n{}\n", "z".repeat(64)),
        ]
        .iter()
        .enumerate()
        {
            fs::write(&entry, text).unwrap();
            assert_eq!(fresh(), sha(b"weights"));
            assert_eq!(hashed.get(), i + 1);
        }
        // A well-formed entry for this file is used as it stands (so the cache is what
        // answered, not the hashing).
        fs::write(&entry, format!("{key}\n{}\n", "AB".repeat(32))).unwrap();
        assert_eq!(
            sha256_in(Some(&cache), &model, || unreachable!("cached")),
            "ab".repeat(32)
        );
        // No cache directory: always hashed.
        assert_eq!(sha256_in(None, &model, || sha(b"weights")), sha(b"weights"));
    }
}
