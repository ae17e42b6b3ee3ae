//! Seed 001's dated layout: `out/YYYYMMDD/` holding `*.db`, `*.config` and `*.bak` files, and
//! `out/backup_metadata.json` describing each exported snapshot (format-spec/export.md).
//!
//! Every file name carries its snapshot's tag, `HHMMSS_TYPE_KIND[_DESCRIPTION]`, so two snapshots
//! of one day (a daily and a pre-change, a manual and a pre-change) never share a file, and the
//! metadata keeps one entry per snapshot under `YYYYMMDD_TAG` (seed 001's
//! `YYYYMMDD_HHMM_description` keys). Nothing is ever overwritten with another snapshot's bytes:
//! a name some other snapshot owns is an error. Re-running is cheap: a file whose recorded size
//! and sha256 still match is left as it is.
//!
//! The export also maintains what it wrote: entries of snapshots still in the repository get
//! their status and expiry recomputed (the caller's [`Facts`]), and entries whose snapshot the
//! repository no longer holds are pruned: their files are removed (only when still the bytes
//! cairn wrote), then their directories when empty. Nothing else in `out` is touched, and entries
//! of another repository's export into the same `out` are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{archive_kind, atomic_write, create_private_dir_all, private_mode, ArchiveKind, ContentReader};
use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{Node, NodeKind, Snapshot, SnapshotKind};
use crate::id::SnapshotId;
use crate::repo::Repo;

/// The metadata file's name, in `out`.
pub const METADATA: &str = "backup_metadata.json";

/// A snapshot's verification as the metadata shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// Who verified.
    pub by: String,
    /// When (RFC 3339).
    pub date: String,
}

/// What the lifecycle knows about a snapshot and the files do not: its retention status, its
/// expiry and its verification.
#[derive(Clone, Debug)]
pub struct Facts {
    /// `active`, `expired`, `verified`, `pending_verification` or `retired`.
    pub status: &'static str,
    /// When retention is expected to remove it (None: not by time).
    pub expires: Option<DateTime<FixedOffset>>,
    /// Its verification, if any.
    pub verification: Option<Verification>,
}

/// One file of a dated export.
#[derive(Clone, Debug)]
pub struct DatedFile {
    /// Snapshot it came from.
    pub snapshot: SnapshotId,
    /// Its type.
    pub backup_type: String,
    /// Path.
    pub path: PathBuf,
    /// Written now (false: already there with the recorded sha256).
    pub written: bool,
}

/// What a dated export did.
#[derive(Clone, Debug, Default)]
pub struct DatedReport {
    /// Files of the exported snapshots, written or found intact.
    pub files: Vec<DatedFile>,
    /// Files removed because retention removed their snapshot.
    pub removed: Vec<PathBuf>,
    /// Files of removed snapshots left in place because their bytes changed since the export.
    pub kept_changed: Vec<PathBuf>,
}

/// A dated export: which snapshots to write, and what the repository holds now.
pub struct DatedExport<'a> {
    /// The directory holding the day directories and the metadata.
    pub out: &'a Path,
    /// Snapshots to write.
    pub chosen: &'a [(SnapshotId, Snapshot)],
    /// Every readable snapshot of the repository (for the status of entries already exported).
    pub all: &'a [(SnapshotId, Snapshot)],
    /// Snapshot files that could not be read: present, so their entries are not pruned.
    pub unreadable: &'a [SnapshotId],
    /// Status, expiry and verification of a snapshot.
    pub facts: &'a dyn Fn(&SnapshotId, &Snapshot) -> Facts,
}

fn section(kind: SnapshotKind) -> &'static str {
    match kind {
        SnapshotKind::Daily => "daily",
        SnapshotKind::PreChange => "pre_change",
        SnapshotKind::Manual => "manual",
    }
}

/// Lower-case letters, digits and '_' (at most 40), for names.
fn slug(text: &str) -> String {
    let mut s = String::new();
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' };
        if !(c == '_' && (s.is_empty() || s.ends_with('_'))) {
            s.push(c);
        }
        if s.len() >= 40 {
            break;
        }
    }
    s.trim_end_matches('_').to_string()
}

/// `HHMMSS_TYPE_KIND[_DESCRIPTION]` of a snapshot taken at `t`.
fn tag(s: &Snapshot, t: &DateTime<FixedOffset>) -> String {
    let mut tag = format!("{}_{}_{}", t.format("%H%M%S"), slug(&s.backup_type), s.kind.as_str());
    let what = match s.kind {
        SnapshotKind::Daily => None,
        SnapshotKind::PreChange => s.description.as_deref(),
        SnapshotKind::Manual => s.purpose.as_deref().or(s.description.as_deref()),
    };
    if let Some(d) = what.map(slug).filter(|d| !d.is_empty()) {
        tag.push('_');
        tag.push_str(&d);
    }
    tag
}

/// Where a snapshot file goes, relative to the day directory: its own directory, the tag before
/// its name, and seed 001's extension (`.db` databases, `.config` for the config type, `.bak`).
fn target_rel(kind: ArchiveKind, backup_type: &str, tag: &str, rel: &str) -> String {
    let (dir, base) = match rel.rsplit_once('/') {
        Some((d, b)) => (format!("{d}/"), b),
        None => (String::new(), rel),
    };
    let name = if kind == ArchiveKind::Sqlite || base.ends_with(".db") {
        format!("{}.db", base.strip_suffix(".db").unwrap_or(base))
    } else if base.ends_with(".db-wal") || base.ends_with(".db-shm") {
        base.to_string()
    } else if backup_type == "config" {
        format!("{base}.config")
    } else {
        format!("{base}.bak")
    };
    format!("{dir}{tag}_{name}")
}

/// A path from the metadata, relative to `out`, that stays inside it.
fn inside(out: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components().all(|c| matches!(c, Component::Normal(_))).then(|| out.join(p))
}

/// (size, sha256) of a file, None when it is not there.
fn hash_file(path: &Path) -> Result<Option<(u64, String)>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let k = f.read(&mut buf).ctx(path)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        size += k as u64;
    }
    Ok(Some((size, hex::encode(h.finalize()))))
}

fn recorded(entry: &Value, rel: &str) -> Option<(u64, String)> {
    let f = entry.get("files")?.get(rel)?;
    Some((f.get("size")?.as_u64()?, f.get("hash")?.as_str()?.to_string()))
}

/// The metadata as it is on disk, with the three sections present.
fn load_metadata(path: &Path) -> Result<Map<String, Value>> {
    let mut meta = match std::fs::read(path) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(Error::Invalid(format!("{}: not a JSON object", path.display()))),
            Err(e) => return Err(Error::Invalid(format!("{}: not valid JSON: {e}", path.display()))),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    for s in ["daily", "pre_change", "manual"] {
        match meta.entry(s).or_insert_with(|| json!({})) {
            Value::Object(_) => {}
            _ => return Err(Error::Invalid(format!("{}: {s} is not an object", path.display()))),
        }
    }
    Ok(meta)
}

/// (section, key) of every entry this repository wrote, by snapshot.
fn entries_of(meta: &Map<String, Value>, repo_id: &str) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for s in ["daily", "pre_change", "manual"] {
        for (k, e) in meta[s].as_object().into_iter().flatten() {
            if e.get("repository").and_then(Value::as_str) == Some(repo_id) {
                if let Some(id) = e.get("snapshot").and_then(Value::as_str) {
                    out.insert(id.to_string(), (s.to_string(), k.clone()));
                }
            }
        }
    }
    out
}

/// Which snapshot's entry lists `rel` (relative to `out`), if any.
fn owner_of<'m>(meta: &'m Map<String, Value>, rel: &str) -> Option<&'m str> {
    ["daily", "pre_change", "manual"].iter().find_map(|s| {
        meta[*s].as_object()?.values().find_map(|e| {
            e.get("files")?.get(rel)?;
            Some(e.get("snapshot").and_then(Value::as_str).unwrap_or("(unknown)"))
        })
    })
}

/// The entry's fields that follow from the snapshot and the facts (everything but `files`).
fn entry_fields(repo_id: &str, id: &SnapshotId, s: &Snapshot, f: &Facts) -> Value {
    let expires = f.expires.map(|t| t.to_rfc3339());
    let mut e = json!({
        "snapshot": id.to_hex(),
        "repository": repo_id,
        "type": s.backup_type,
        "kind": s.kind.as_str(),
        "created": s.datetime().map(|t| t.to_rfc3339()).unwrap_or_else(|| s.time.clone()),
        "expires": expires,
        "status": f.status,
        "verified": f.verification.is_some(),
    });
    let retention = s.labels.get("retention").cloned();
    match s.kind {
        SnapshotKind::Daily => {}
        SnapshotKind::PreChange => {
            e["description"] = json!(s.description);
            e["change_ticket"] = json!(s.ticket);
            e["retention"] = json!(retention.unwrap_or_else(|| "until_verified".into()));
            e["verified_by"] = json!(f.verification.as_ref().map(|v| &v.by));
            e["verified_date"] = json!(f.verification.as_ref().map(|v| &v.date));
        }
        SnapshotKind::Manual => {
            e["creator"] = json!(s.creator);
            e["purpose"] = json!(s.purpose);
            e["retention"] = json!(retention.unwrap_or_else(|| "permanent".into()));
            e["notes"] = json!(s.description.clone().unwrap_or_default());
        }
    }
    e
}

/// Writes one file of a snapshot unless it is already there with the recorded size and sha256;
/// returns (size, sha256, written).
fn write_file(
    repo: &Repo,
    node: &Node,
    dest: &Path,
    mode: u32,
    known: Option<(u64, String)>,
) -> Result<(u64, String, bool)> {
    if let Some((size, hash)) = known.filter(|(size, _)| *size == node.size) {
        if hash_file(dest)?.is_some_and(|(s, h)| s == size && h == hash) {
            if std::fs::metadata(dest).ctx(dest)?.permissions().mode() & 0o7777 != mode {
                std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode)).ctx(dest)?;
            }
            return Ok((size, hash, false));
        }
    }
    let parent = dest.parent().expect("a file in a day directory");
    let name = dest.file_name().expect("has a name").to_string_lossy().into_owned();
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    atomic_write(parent, &name, mode, |f| {
        let mut w = io::BufWriter::with_capacity(1 << 20, f);
        let mut r = ContentReader::new(repo, node)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let k = r.read(&mut buf).map_err(|e| Error::io(node.path_str(), e))?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            w.write_all(&buf[..k]).ctx(dest)?;
            size += k as u64;
        }
        w.flush().ctx(dest)?;
        if size != node.size {
            return Err(Error::corrupt(node.path_str(), format!("exported {size} bytes, snapshot says {}", node.size)));
        }
        Ok(())
    })?;
    Ok((size, hex::encode(hasher.finalize()), true))
}

/// Writes `x.chosen` into `x.out` in the dated layout, refreshes the metadata of everything
/// exported before and prunes what the repository no longer holds; the metadata is written last
/// (atomically), so it never lists a file that is not complete.
pub fn export_dated(repo: &Repo, x: &DatedExport<'_>) -> Result<DatedReport> {
    let out = x.out;
    create_private_dir_all(out)?;
    let meta_path = out.join(METADATA);
    let mut meta = load_metadata(&meta_path)?;
    let repo_id = repo.config().id.to_hex();
    let mut report = DatedReport::default();
    for (id, s) in x.chosen {
        let t = s.datetime().ok_or_else(|| Error::corrupt(format!("snapshot {id}"), "bad time"))?;
        let day = t.format("%Y%m%d").to_string();
        let sec = section(s.kind);
        let key = match entries_of(&meta, &repo_id).remove(&id.to_hex()) {
            Some((_, k)) => k,
            None => {
                let k = format!("{day}_{}", tag(s, &t));
                // A key some other snapshot has (the same second, type and kind): this one's id makes it unique.
                if meta[sec].get(&k).is_some() {
                    format!("{k}_{}", id.short())
                } else {
                    k
                }
            }
        };
        let tag = key.strip_prefix(&format!("{day}_")).unwrap_or(&key).to_string();
        let previous = meta[sec].get(&key).cloned().unwrap_or(Value::Null);
        let kind = archive_kind(s);
        let nodes: Vec<Node> = repo.tree(s)?.collect::<Result<Vec<_>>>()?;
        let paths: BTreeSet<&[u8]> = nodes.iter().filter(|n| n.kind == NodeKind::File).map(|n| &n.path[..]).collect();
        let mut files = Map::new();
        for n in nodes.iter().filter(|n| n.kind == NodeKind::File) {
            crate::format::manifest::check_safe_path(&n.path).map_err(|e| Error::corrupt(n.path_str(), e))?;
            let rel = format!("{day}/{}", target_rel(kind, &s.backup_type, &tag, &n.path_str()));
            if let Some(owner) = owner_of(&meta, &rel).filter(|o| *o != id.to_hex()) {
                return Err(Error::Invalid(format!(
                    "{}: {rel} belongs to snapshot {owner}; not overwritten with snapshot {}",
                    meta_path.display(),
                    id.short()
                )));
            }
            let dest = out.join(&rel);
            let (size, hash, written) = write_file(repo, n, &dest, private_mode(n.mode), recorded(&previous, &rel))?;
            let mut f = json!({ "size": size, "hash": hash });
            if rel.ends_with(".db") {
                // Seed 001: "keep WAL files". A consistent copy has its WAL folded in; only a WAL
                // file stored beside the database counts.
                let mut wal = n.path.clone();
                wal.extend_from_slice(b"-wal");
                f["has_wal"] = json!(paths.contains(&wal[..]));
            }
            files.insert(rel, f);
            report.files.push(DatedFile { snapshot: *id, backup_type: s.backup_type.clone(), path: dest, written });
        }
        let mut entry = entry_fields(&repo_id, id, s, &(x.facts)(id, s));
        entry["files"] = Value::Object(files);
        meta[sec].as_object_mut().expect("checked at load").insert(key, entry);
    }
    // A snapshot moved to the quarantine is damaged, not forgotten: its export may be the one
    // good copy. A remote's mirror may lack snapshots the repository still has: no pruning.
    let quarantined: BTreeSet<String> =
        std::fs::read_dir(repo.store().root().join(crate::ops::repair_snapshots::QUARANTINE_SNAPSHOTS))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.get(..64)).map(str::to_string))
            .collect();
    let prune = !repo.is_mirror();
    refresh_and_prune(out, &mut meta, &repo_id, x, (prune, &quarantined), &mut report)?;
    let mut bytes = serde_json::to_vec_pretty(&meta).expect("serializable");
    bytes.push(b'\n');
    atomic_write(out, METADATA, 0o600, |f| f.write_all(&bytes).ctx(&meta_path))?;
    Ok(report)
}

/// Recomputes the facts of this repository's entries whose snapshot is still there; removes the
/// others with their files.
fn refresh_and_prune(
    out: &Path,
    meta: &mut Map<String, Value>,
    repo_id: &str,
    x: &DatedExport<'_>,
    (prune, quarantined): (bool, &BTreeSet<String>),
    report: &mut DatedReport,
) -> Result<()> {
    let present: BTreeMap<String, &(SnapshotId, Snapshot)> = x.all.iter().map(|p| (p.0.to_hex(), p)).collect();
    let unreadable: BTreeSet<String> = x.unreadable.iter().map(|id| id.to_hex()).collect();
    for (hex, (sec, key)) in entries_of(meta, repo_id) {
        let slot = meta[&sec].as_object_mut().expect("checked at load");
        if let Some((id, s)) = present.get(&hex) {
            let fresh = entry_fields(repo_id, id, s, &(x.facts)(id, s));
            let e = slot.get_mut(&key).expect("listed");
            for (k, v) in fresh.as_object().expect("an object") {
                e[k] = v.clone();
            }
            continue;
        }
        if unreadable.contains(&hex) || quarantined.contains(&hex) || !prune {
            continue;
        }
        let entry = slot.remove(&key).expect("listed");
        let mut files_left = false;
        for (rel, f) in entry.get("files").and_then(Value::as_object).into_iter().flatten() {
            let Some(path) = inside(out, rel) else { continue };
            let want = (f.get("size").and_then(Value::as_u64), f.get("hash").and_then(Value::as_str));
            match hash_file(&path)? {
                None => {}
                Some((size, hash)) if (Some(size), Some(hash.as_str())) == want => {
                    std::fs::remove_file(&path).ctx(&path)?;
                    report.removed.push(path.clone());
                }
                Some(_) => {
                    files_left = true;
                    report.kept_changed.push(path.clone());
                }
            }
            // A half file a killed export left under its temporary name is cairn's too.
            if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
                remove_stale_tmp(dir, &name.to_string_lossy());
                remove_empty_dirs(out, dir);
            }
        }
        if files_left {
            // Its changed files stay listed, so a later export neither forgets nor overwrites them.
            let mut kept = entry.clone();
            if let Some(files) = kept.get_mut("files").and_then(Value::as_object_mut) {
                files.retain(|rel, _| inside(out, rel).is_some_and(|p| report.kept_changed.contains(&p)));
            }
            kept["status"] = json!(if sec == "pre_change" { "retired" } else { "expired" });
            slot.insert(key, kept);
        }
    }
    Ok(())
}

/// Removes `dir/.NAME.tmp-PID` files (any PID): what a killed export of NAME left.
fn remove_stale_tmp(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let n = e.file_name();
        let n = n.as_bytes();
        if let Some(pid) = n.strip_prefix(prefix.as_bytes()) {
            if !pid.is_empty() && pid.iter().all(u8::is_ascii_digit) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Removes `dir` and its parents up to (not including) `out` while they are empty.
fn remove_empty_dirs(out: &Path, dir: &Path) {
    let mut d = dir;
    while d != out && d.starts_with(out) {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_time_type_kind_and_description() {
        assert_eq!(slug("v2 Migration: users/roles!"), "v2_migration_users_roles");
        assert_eq!(
            target_rel(ArchiveKind::Sqlite, "db", "141503_db_pre-change_v2", "app.db"),
            "141503_db_pre-change_v2_app.db"
        );
        assert_eq!(
            target_rel(ArchiveKind::Tar, "config", "030000_config_daily", ".env"),
            "030000_config_daily_.env.config"
        );
        assert_eq!(
            target_rel(ArchiveKind::Tar, "logs", "030000_logs_daily", "logs/app.log"),
            "logs/030000_logs_daily_app.log.bak"
        );
        assert_eq!(target_rel(ArchiveKind::Tar, "misc", "t", "x/cache.db-wal"), "x/t_cache.db-wal");
        assert!(inside(Path::new("/o"), "../x").is_none() && inside(Path::new("/o"), "/etc/passwd").is_none());
        assert_eq!(inside(Path::new("/o"), "20260101/a.db"), Some(PathBuf::from("/o/20260101/a.db")));
    }
}
