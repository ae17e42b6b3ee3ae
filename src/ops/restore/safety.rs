//! The target side of restore's safety rules (format-spec/restore.md): parent directories made
//! component by component without following a symlink, temporary names beside a file, times set
//! without following links, and stale SQLite sidecars removed beside a restored database.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::ops::restore::RestoreReport;

/// The first bytes of every SQLite 3 database file.
pub(super) const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Files SQLite replays into (or pairs with) a database at open.
const SQLITE_SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Creates the directories leading to `rel` under `target`, refusing symlinks and non-dirs.
pub(super) struct SafeDirs {
    pub(super) target: PathBuf,
    pub(super) known: HashSet<Vec<u8>>,
}

impl SafeDirs {
    pub(super) fn ensure(&mut self, rel: &[u8]) -> Result<PathBuf> {
        let mut cur = self.target.clone();
        let mut prefix: Vec<u8> = Vec::new();
        for comp in rel.split(|&c| c == b'/') {
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(comp);
            cur.push(OsStr::from_bytes(comp));
            if self.known.contains(&prefix) {
                continue;
            }
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => remove_restore_leftovers(&cur),
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::Invalid(format!(
                        "{}: is a symlink in the target; refusing to write through it",
                        cur.display()
                    )))
                }
                Ok(_) => return Err(Error::Invalid(format!("{}: exists and is not a directory", cur.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir(&cur).ctx(&cur)?,
                Err(e) => return Err(Error::io(&cur, e)),
            }
            self.known.insert(prefix.clone());
        }
        Ok(cur)
    }

    /// The target path for a file or symlink at `rel`, its parent directories made safely. A
    /// directory in the way is an error; anything else there is left for the caller to replace
    /// by rename (which never follows a symlink or writes through a hard link).
    pub(super) fn slot(&mut self, rel: &[u8]) -> Result<PathBuf> {
        let parent = match parent_of(rel) {
            Some(p) => self.ensure(p)?,
            None => self.target.clone(),
        };
        let name = rel.rsplit(|&c| c == b'/').next().unwrap_or(rel);
        let p = parent.join(OsStr::from_bytes(name));
        if let Ok(m) = fs::symlink_metadata(&p) {
            if m.file_type().is_dir() {
                return Err(Error::Invalid(format!("{}: a directory is in the way", p.display())));
            }
        }
        Ok(p)
    }

    /// [`SafeDirs::slot`], with whatever non-directory stands there removed.
    pub(super) fn clear_slot(&mut self, rel: &[u8]) -> Result<PathBuf> {
        let p = self.slot(rel)?;
        if fs::symlink_metadata(&p).is_ok() {
            fs::remove_file(&p).ctx(&p)?;
        }
        Ok(p)
    }
}

/// A fresh name beside `p`: `.<name>.cairn-restore-<16 hex>`, with `<name>` cut to its first
/// 223 bytes so the whole stays within NAME_MAX (255) for any name that fits itself.
pub(super) fn temp_beside(p: &Path) -> PathBuf {
    let mut rnd = [0u8; 8];
    crate::util::os_random(&mut rnd);
    let base = p.file_name().unwrap_or_default().as_bytes();
    let mut name = vec![b'.'];
    name.extend_from_slice(&base[..base.len().min(223)]);
    name.extend_from_slice(format!(".cairn-restore-{}", hex::encode(rnd)).as_bytes());
    p.with_file_name(OsStr::from_bytes(&name))
}

/// Removes the temporary files (`.<name>.cairn-restore-<16 hex>`, see [`temp_beside`]) that a
/// killed restore left in `dir`, an existing directory this restore writes into: a completed
/// restore renames every one away, a killed one leaves a partial copy that nothing else would
/// ever remove (a 300 MB file killed half-way left 150 MB behind every time).
pub(super) fn remove_restore_leftovers(dir: &Path) {
    const MARK: &[u8] = b".cairn-restore-";
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let b = name.as_bytes();
        let Some(at) = b.len().checked_sub(MARK.len() + 16) else { continue };
        let ours = b[0] == b'.'
            && at > 1
            && b[at..].starts_with(MARK)
            && b[at + MARK.len()..].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        if ours && e.file_type().is_ok_and(|t| t.is_file()) {
            let p = e.path();
            match fs::remove_file(&p) {
                Ok(()) => tracing::info!(path = %p.display(), "removed a temporary file of an interrupted restore"),
                Err(err) => {
                    tracing::warn!(path = %p.display(), %err, "cannot remove a temporary file of an interrupted restore")
                }
            }
        }
    }
}

/// Removes `<db>-wal`, `-shm` and `-journal` beside a restored database unless this restore
/// wrote them: SQLite would replay a stale one into the restored database.
pub(super) fn remove_stale_sidecars(
    dirs: &mut SafeDirs,
    db_rel: &[u8],
    written: &HashSet<Vec<u8>>,
    report: &mut RestoreReport,
) {
    for suffix in SQLITE_SIDECARS {
        let rel = [db_rel, suffix.as_bytes()].concat();
        if written.contains(&rel) {
            continue;
        }
        let shown = String::from_utf8_lossy(&rel).into_owned();
        let r: Result<bool> = (|| {
            let p = dirs.slot(&rel)?;
            match fs::symlink_metadata(&p) {
                Ok(_) => {
                    fs::remove_file(&p).ctx(&p)?;
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(Error::io(&p, e)),
            }
        })();
        match r {
            Ok(true) => {
                tracing::warn!(
                    "removed stale SQLite sidecar {shown}: not in the snapshot, it would be replayed into the restored database"
                );
                report.sidecars_removed.push(shown);
            }
            Ok(false) => {}
            Err(e) => report.errors.push((shown, format!("stale SQLite sidecar not removed: {e}"))),
        }
    }
}

pub(super) fn parent_of(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&c| c == b'/').map(|i| &path[..i])
}

fn file_time(mtime_ns: i64) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(mtime_ns.div_euclid(1_000_000_000), mtime_ns.rem_euclid(1_000_000_000) as u32)
}

/// Sets atime and mtime with `utimensat(AT_SYMLINK_NOFOLLOW)`: it never follows a symlink and
/// needs no `open()`, so it works on entries whose restored mode denies their owner read access
/// (`filetime::set_file_times` opens the path, which fails on mode 000 files and directories).
pub(super) fn set_mtime(path: &Path, mtime_ns: i64) -> std::io::Result<()> {
    let t = file_time(mtime_ns);
    filetime::set_symlink_file_times(path, t, t)
}

/// Sets atime and mtime of an open file (`futimens`): no path lookup, and it happens before the
/// file's fsync, so the times are as durable as its content.
pub(super) fn set_handle_mtime(f: &fs::File, mtime_ns: i64) -> std::io::Result<()> {
    let t = file_time(mtime_ns);
    filetime::set_file_handle_times(f, Some(t), Some(t))
}
