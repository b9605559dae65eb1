//! Crash-safe file writes: write a sibling temporary file, flush it to disk, then rename it
//! over the target. A reader (or a resumed run) sees either the old file or the new one,
//! never a torn one.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Atomically replaces `path` with `bytes`: the data and then the directory entry reach the
/// disk before this returns (a crash after it keeps the new file), and a failed write leaves
/// neither a partial target nor a temporary file behind.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

/// [`write`] for contents produced piece by piece (a token shard of gigabytes): `fill` writes
/// them into a buffered writer.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    let file_name = path.file_name().context("atomic write needs a file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = (|| -> Result<()> {
        let f = fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = std::io::BufWriter::new(f);
        let f = fill(&mut w)
            .and_then(|()| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all().map(|()| f))
            .map_err(|e| write_error(path, e))?;
        drop(f);
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // The rename lives in the directory: sync it too, or a crash can forget it.
    if let Ok(d) = fs::File::open(dir) {
        d.sync_all().with_context(|| format!("cannot sync directory {}", dir.display()))?;
    }
    Ok(())
}

/// The error of a failed write to `path`, with the fix when the disk or a limit is full.
pub fn write_error(path: &Path, e: std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
    let fix = match e.kind() {
        StorageFull | QuotaExceeded | FileTooLarge => {
            ": the disk is full or a file-size limit was reached; free space (or raise the limit) and run again"
        }
        _ => "",
    };
    anyhow::Error::new(e).context(format!("cannot write {}{fix}", path.display()))
}

/// Atomically writes `value` as pretty JSON.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("archlab-atomic-{}", std::process::id()));
        let path = dir.join("a.json");
        super::write(&path, b"one").unwrap();
        super::write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A write that fails (here: the disk is full) reports it and leaves no temporary file.
    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("archlab-atomic-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // /dev/full accepts opens and fails every write with ENOSPC; reach it through a
        // symlinked temporary name, the one `write` will create.
        let target = dir.join("a.json");
        let tmp = dir.join(format!(".a.json.{}.tmp", std::process::id()));
        if std::path::Path::new("/dev/full").exists() {
            std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
            let err = super::write(&target, &vec![7u8; 1 << 16]).unwrap_err();
            assert!(format!("{err:#}").contains("the disk is full"), "{err:#}");
            assert!(!tmp.exists() && !tmp.is_symlink(), "the temporary file was left behind");
            assert!(!target.exists());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
