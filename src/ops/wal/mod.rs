//! Archived PostgreSQL WAL (format-spec/wal.md): each file PostgreSQL hands to `archive_command`
//! (a 16 MiB segment, a `.history` or `.backup` file) is one snapshot of the hidden type
//! `TYPE.wal`, where TYPE is the `pg_basebackup` type it belongs to, recording the file name as
//! the fact `wal.file`. Packs, index files and snapshot files carry it, so encryption, dedup,
//! sync to remotes, verify and prune need nothing new; retention of `TYPE.wal` follows TYPE's
//! base backups ([`expire`]). The snapshot file is the commit point: a push killed before it
//! leaves at most an unreferenced pack, which `wal-fetch` cannot see.

mod pgdata;

pub use pgdata::{restore_pgdata, PgdataOptions, BASE_TAR};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::manifest::{NodeKind, Snapshot};
use crate::id::SnapshotId;
use crate::ops::retention::Decision;
use crate::ops::snapshot::{self, SnapshotOptions, Source};
use crate::repo::Repo;
use crate::store::lock::Lock;
use crate::store::{Handle, Store};

/// What a base-backup type's archived WAL type is called after: `db` -> `db.wal`.
pub const WAL_SUFFIX: &str = ".wal";
/// The snapshot fact naming the archived file (`000000010000000000000003`).
pub const FILE_FACT: &str = "wal.file";
/// The fact of a base backup naming the WAL file its replay starts from (from `backup_label`).
pub const START_FILE_FACT: &str = "pg_basebackup.start_wal_file";

/// The WAL type of base-backup type `base`.
pub fn wal_type(base: &str) -> String {
    format!("{base}{WAL_SUFFIX}")
}

/// The base-backup type whose WAL type `t` is, if it is one.
pub fn base_of(t: &str) -> Option<&str> {
    t.strip_suffix(WAL_SUFFIX).filter(|b| !b.is_empty())
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Whether `name` is a file PostgreSQL archives: a segment (24 upper-case hex digits), a
/// timeline history (`8 hex.history`), a backup history (`segment.8 hex.backup`) or a partial
/// segment (`segment.partial`).
pub fn is_wal_name(name: &str) -> bool {
    let seg = |s: &str| s.len() == 24 && is_hex(s);
    if seg(name) {
        return true;
    }
    if let Some(t) = name.strip_suffix(".history") {
        return t.len() == 8 && is_hex(t);
    }
    if let Some(s) = name.strip_suffix(".partial") {
        return seg(s);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        return rest.split_once('.').is_some_and(|(s, off)| seg(s) && off.len() == 8 && is_hex(off));
    }
    false
}

/// The position in the WAL stream a segment-like file stands for (log and segment number, the
/// timeline left out), or `None` for a timeline history file, which is always kept.
pub fn position(name: &str) -> Option<&str> {
    (name.len() >= 24 && is_hex(&name[..24])).then(|| &name[8..24])
}

/// How `wal-push` went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushOutcome {
    /// The file's name.
    pub file: String,
    /// The snapshot holding it.
    #[serde(serialize_with = "crate::id::as_hex::one")]
    pub snapshot: SnapshotId,
    /// Already archived with this content: nothing written.
    pub already: bool,
    /// Its size.
    pub bytes: u64,
    /// Bytes new to the repository (after dedup, compressed).
    pub new_bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Takes a shared lock, waiting up to `wait` while an exclusive one (prune, forget, repair) is
/// held: `archive_command` must not fail because maintenance runs, and backups (shared) never
/// stop it.
fn lock_waiting(repo: &Repo, purpose: &str, wait: Duration) -> Result<Lock> {
    let start = Instant::now();
    loop {
        match Lock::acquire(repo.store(), false, purpose) {
            Err(Error::Locked(m)) if start.elapsed() < wait => {
                tracing::info!("waiting for the repository lock: {m}");
                std::thread::sleep(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

/// The snapshot of `wal_ty` holding `file`, if any (the newest, should there be several).
fn find<'a>(all: &'a [(SnapshotId, Snapshot)], wal_ty: &str, file: &str) -> Option<&'a (SnapshotId, Snapshot)> {
    all.iter().rev().find(|(_, s)| s.backup_type == wal_ty && s.source.get(FILE_FACT).is_some_and(|f| f == file))
}

/// The content of the single file a WAL snapshot holds, written to `out`; checks its size.
fn content(repo: &Repo, snap: &Snapshot, file: &str, out: &mut (dyn Write + Send)) -> Result<u64> {
    let node = crate::ops::restore::find_node(repo, snap, file)?;
    if node.kind != NodeKind::File {
        return Err(Error::corrupt(format!("archived WAL {file}"), "not a regular file in its snapshot"));
    }
    let n = crate::ops::restore::write_content(repo, &node, out)?;
    if n != node.size {
        return Err(Error::corrupt(format!("archived WAL {file}"), format!("{n} bytes read, {} recorded", node.size)));
    }
    Ok(n)
}

/// Archives the WAL file at `path` for base-backup type `base` (`wal-push %p`). Returns only
/// after the snapshot file holding it is published (packs, index and snapshot fsynced). The same
/// file with the same content again is a success that writes nothing; with other content it is
/// an error naming the file. `lock_wait`: how long to wait for maintenance's exclusive lock.
pub fn push(repo: &mut Repo, base: &str, path: &Path, lock_wait: Duration) -> Result<PushOutcome> {
    let start = Instant::now();
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    if !is_wal_name(&file) {
        return Err(Error::Invalid(format!(
            "{}: not a WAL file name (a segment such as 000000010000000000000001, a .history, .backup or .partial file)",
            path.display()
        )));
    }
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let _lock = lock_waiting(repo, "wal-push", lock_wait)?;
    repo.sync_index()?;
    let ty = wal_type(base);
    let (all, _) = repo.snapshots()?;
    if let Some((id, s)) = find(&all, &ty, &file) {
        let mut stored = Vec::with_capacity(data.len());
        content(repo, s, &file, &mut stored)?;
        if stored == data {
            return Ok(PushOutcome {
                file,
                snapshot: *id,
                already: true,
                bytes: data.len() as u64,
                new_bytes: 0,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        return Err(Error::Invalid(format!(
            "WAL file {file} ({}) is already archived in snapshot {} with different content ({} bytes stored, {} \
             offered): refusing to replace it; two clusters may be archiving into one repository type",
            path.display(),
            id.short(),
            stored.len(),
            data.len()
        )));
    }
    let mut facts = BTreeMap::new();
    facts.insert(FILE_FACT.to_string(), file.clone());
    let opts = SnapshotOptions {
        backup_type: ty,
        creator: crate::util::account_name(),
        source_meta: facts,
        // No parent: a segment never repeats an older one's content, and reading a parent's tree
        // would cost every push a tree read.
        parent: Some(None),
        next_seq: Some(snapshot::next_seq(&all)),
        stream_mode: Some(0o600),
        ..Default::default()
    };
    let len = data.len() as u64;
    let out = snapshot::snapshot(
        repo,
        Source::Reader { name: file.clone(), reader: Box::new(std::io::Cursor::new(data)) },
        &opts,
    )?;
    Ok(PushOutcome {
        file,
        snapshot: out.id,
        already: false,
        bytes: len,
        new_bytes: out.snapshot.stats.new_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Restores archived WAL file `file` of base-backup type `base` to `dest` (`wal-fetch %f %p`):
/// every chunk authenticated and re-hashed, written to a temporary file beside `dest`, fsynced
/// and renamed. `Ok(None)` when the repository holds no such file (recovery asks for files past
/// the end of the archive: that is how it learns where the archive ends).
pub fn fetch(repo: &mut Repo, base: &str, file: &str, dest: &Path) -> Result<Option<u64>> {
    if !is_wal_name(file) {
        return Err(Error::Invalid(format!("{file:?}: not a WAL file name")));
    }
    let _lock = lock_waiting(repo, "wal-fetch", Duration::from_secs(60))?;
    repo.sync_index()?;
    let (all, _) = repo.snapshots()?;
    let Some((_, snap)) = find(&all, &wal_type(base), file) else { return Ok(None) };
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{name}.cairn-tmp"));
    let written = (|| -> Result<u64> {
        let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let n = content(repo, snap, file, &mut w)?;
        let f = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
        Ok(n)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(Some)
}

/// WAL no kept base backup needs: for each base-backup type in `decisions` that keeps at least
/// one base backup recording where its WAL starts, the WAL snapshots of its type before the
/// oldest such start (history files are always kept). Removes their snapshot files unless
/// `dry_run`; returns a decision for each. Called by `forget` under its exclusive lock, so a
/// `wal-push` (shared lock) never races it.
pub fn expire(
    repo: &Repo,
    all: &[(SnapshotId, Snapshot)],
    decisions: &[Decision],
    dry_run: bool,
) -> Result<Vec<Decision>> {
    let by_id: BTreeMap<SnapshotId, &Snapshot> = all.iter().map(|(id, s)| (*id, s)).collect();
    let mut oldest: BTreeMap<&str, String> = BTreeMap::new();
    for d in decisions.iter().filter(|d| d.keep && base_of(&d.backup_type).is_none()) {
        let Some(start) = by_id.get(&d.id).and_then(|s| s.source.get(START_FILE_FACT)) else { continue };
        let Some(pos) = position(start) else { continue };
        let e = oldest.entry(d.backup_type.as_str()).or_insert_with(|| pos.to_string());
        if pos < e.as_str() {
            *e = pos.to_string();
        }
    }
    let mut out = Vec::new();
    for (base, start) in oldest {
        let ty = wal_type(base);
        for (id, s) in all.iter().filter(|(_, s)| s.backup_type == ty) {
            let Some(pos) = s.source.get(FILE_FACT).and_then(|f| position(f)) else { continue };
            if pos >= start.as_str() {
                continue;
            }
            if !dry_run {
                repo.store().remove(Handle::Snapshot(*id))?;
            }
            out.push(Decision {
                id: *id,
                time: s.time.clone(),
                backup_type: ty.clone(),
                kind: s.kind.as_str().into(),
                keep: false,
                reasons: vec![format!(
                    "WAL {} is older than the oldest kept {base} base backup (its WAL starts at position {start})",
                    s.source.get(FILE_FACT).map(String::as_str).unwrap_or("?")
                )],
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_are_recognised_and_ordered_by_position() {
        for ok in [
            "000000010000000000000003",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "0000000100000000000000A0.partial",
        ] {
            assert!(is_wal_name(ok), "{ok}");
        }
        for bad in ["", "00000001000000000000000", "000000010000000000000003x", "0000000100000000000000a0", "../x"] {
            assert!(!is_wal_name(bad), "{bad}");
        }
        assert_eq!(position("000000020000000100000003"), Some("0000000100000003"));
        assert_eq!(position("00000002.history"), None);
        assert!(position("000000010000000000000009") < position("00000001000000000000000A"));
        assert_eq!(base_of("db.wal"), Some("db"));
        assert_eq!(base_of(".wal"), None);
        assert_eq!(wal_type("db"), "db.wal");
    }
}
