//! The CLI edge: turns arguments into library calls and renders results. `anyhow` lives here only.

pub mod args;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::json;
use zeroize::Zeroizing;

use crate::ops::snapshot::{self, SnapshotOptions, Source};
use crate::lifecycle::config::Config;
use crate::format::manifest::{NodeKind, Snapshot, SnapshotKind};
use crate::repo::{self, InitOptions, Repo};
use crate::format::repo_config::Encryption;
use crate::util::human_bytes;
use crate::ops::verify::{self, VerifyOptions};
use args::{Cli, Command, ConfigWhat, KeyCmd, RepairWhat};

/// Exit code: verify found damage.
pub const EXIT_DAMAGE: i32 = 3;
/// Exit code: wrong password or unusable key.
pub const EXIT_PASSWORD: i32 = 4;

/// Maps an error to the process exit code.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<crate::Error>() {
        Some(crate::Error::WrongPassword(_)) | Some(crate::Error::NoPassword) => EXIT_PASSWORD,
        _ => 1,
    }
}

struct Ctx {
    cli: Cli,
    config: std::cell::OnceCell<Option<Config>>,
}

fn read_password_file(p: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut v = Zeroizing::new(std::fs::read(p).with_context(|| format!("reading password file {}", p.display()))?);
    while v.last().is_some_and(|&c| c == b'\n' || c == b'\r') {
        v.pop();
    }
    if v.is_empty() {
        bail!("password file {} is empty", p.display());
    }
    Ok(v)
}

impl Ctx {
    /// The configuration file, if one is given or found (./cairn.json, ./config.json).
    fn config(&self) -> Result<Option<&Config>> {
        if self.config.get().is_none() {
            let c = match Config::locate(self.cli.config.as_deref())? {
                Some(p) => Some(Config::load(&p)?),
                None => None,
            };
            let _ = self.config.set(c);
        }
        Ok(self.config.get().expect("set").as_ref())
    }

    fn require_config(&self) -> Result<&Config> {
        self.config()?.ok_or_else(|| {
            anyhow!("no configuration: pass --config FILE, set CAIRN_CONFIG, or create ./cairn.json (see examples/cairn.json)")
        })
    }

    /// --repo / CAIRN_REPO, else the config's repository.
    fn repo_path(&self) -> Result<PathBuf> {
        if let Some(r) = &self.cli.repo {
            return Ok(r.clone());
        }
        if let Some(c) = self.config()? {
            return Ok(c.backup.repository.clone());
        }
        bail!("no repository given: pass --repo DIR, set CAIRN_REPO, or use a config file with \"repository\"")
    }

    /// The password, from (in order) --password-file / CAIRN_PASSWORD_FILE, CAIRN_PASSWORD, or a
    /// prompt on a terminal. Never from a command-line argument.
    fn password(&self) -> crate::Result<Zeroizing<Vec<u8>>> {
        if let Some(p) = &self.cli.password_file {
            return read_password_file(p).map_err(|e| crate::Error::Invalid(format!("{e:#}")));
        }
        if let Ok(p) = std::env::var("CAIRN_PASSWORD") {
            if !p.is_empty() {
                return Ok(Zeroizing::new(p.into_bytes()));
            }
        }
        let cfg = self.config().map_err(|e| crate::Error::Invalid(format!("{e:#}")))?;
        if let Some(p) = cfg.and_then(|c| c.backup.password_file.as_ref()) {
            return read_password_file(p).map_err(|e| crate::Error::Invalid(format!("{e:#}")));
        }
        if let Some(cmd) = cfg.and_then(|c| c.backup.password_command.as_ref()) {
            let out = std::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| crate::Error::Invalid(format!("password_command {:?}: {e}", cmd[0])))?;
            if !out.status.success() {
                return Err(crate::Error::Invalid(format!("password_command {:?} failed: {}", cmd[0], out.status)));
            }
            let mut v = Zeroizing::new(out.stdout);
            while v.last().is_some_and(|&c| c == b'\n' || c == b'\r') {
                v.pop();
            }
            if v.is_empty() {
                return Err(crate::Error::Invalid(format!("password_command {:?} printed nothing", cmd[0])));
            }
            return Ok(v);
        }
        if std::io::stdin().is_terminal() {
            let p =
                rpassword::prompt_password("repository password: ").map_err(|e| crate::Error::io("<terminal>", e))?;
            return Ok(Zeroizing::new(p.into_bytes()));
        }
        Err(crate::Error::NoPassword)
    }

    fn new_password(&self, file: &Option<PathBuf>) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(p) = file {
            return read_password_file(p);
        }
        if let Ok(p) = std::env::var("CAIRN_NEW_PASSWORD") {
            if !p.is_empty() {
                return Ok(Zeroizing::new(p.into_bytes()));
            }
        }
        if std::io::stdin().is_terminal() {
            let a = rpassword::prompt_password("new password: ")?;
            let b = rpassword::prompt_password("new password again: ")?;
            if a != b {
                bail!("the passwords do not match");
            }
            if a.is_empty() {
                bail!("empty password");
            }
            return Ok(Zeroizing::new(a.into_bytes()));
        }
        bail!("a new password is needed: pass --new-password-file, set CAIRN_NEW_PASSWORD_FILE or CAIRN_NEW_PASSWORD, or run on a terminal")
    }

    fn open(&self) -> Result<Repo> {
        if let Some(name) = &self.cli.remote {
            let remote = self.remote(name)?;
            let dir = crate::remote::mirror::refresh(&remote, &crate::remote::mirror::default_cache_root())?;
            let mut repo = Repo::open(&dir, &|| self.password())?;
            repo.fetch_packs_from(remote);
            return Ok(repo);
        }
        let path = self.repo_path()?;
        Ok(Repo::open(&path, &|| self.password())?)
    }

    /// A remote by config name, or an rclone target given directly.
    fn remote(&self, name: &str) -> Result<crate::remote::rclone::Rclone> {
        if let Some(r) = self.config()?.and_then(|c| c.backup.remotes.iter().find(|r| r.name == name)) {
            return Ok(crate::remote::rclone::Rclone::new(&r.name, &r.rclone, &r.flags));
        }
        if name.contains(':') {
            return Ok(crate::remote::rclone::Rclone::new(name, name, &[]));
        }
        let known: Vec<String> =
            self.config()?.map(|c| c.backup.remotes.iter().map(|r| r.name.clone()).collect()).unwrap_or_default();
        bail!(
            "no remote {name:?} (configured: {}); give a configured name or an rclone target like gdrive:backups",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        )
    }

    /// The remotes a command applies to: --remote NAME, or every configured one.
    fn remotes(&self) -> Result<Vec<crate::remote::rclone::Rclone>> {
        if let Some(n) = &self.cli.remote {
            return Ok(vec![self.remote(n)?]);
        }
        Ok(self
            .config()?
            .map(|c| {
                c.backup
                    .remotes
                    .iter()
                    .map(|r| crate::remote::rclone::Rclone::new(&r.name, &r.rclone, &r.flags))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn out(&self, v: &serde_json::Value) {
        println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
    }

    fn spinner(&self, msg: &str) -> Option<indicatif::ProgressBar> {
        if self.cli.json || self.cli.quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(pb)
    }
}

fn globset(pats: &[String], what: &str) -> Result<Option<GlobSet>> {
    if pats.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in pats {
        b.add(Glob::new(p.trim_end_matches('/')).with_context(|| format!("bad {what} pattern {p:?}"))?);
    }
    Ok(Some(b.build()?))
}

fn snapshot_json(id: &crate::id::SnapshotId, s: &Snapshot) -> serde_json::Value {
    json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": s.time,
        "type": s.backup_type,
        "kind": s.kind.as_str(),
        "description": s.description,
        "ticket": s.ticket,
        "creator": s.creator,
        "purpose": s.purpose,
        "host": s.host,
        "paths": s.paths,
        "labels": s.labels,
        "stats": s.stats,
        "parent": s.parent.map(|p| p.to_hex()),
        "errors": s.errors,
        "source": s.source,
        "program": s.program,
    })
}

fn fmt_time(s: &Snapshot) -> String {
    s.datetime().map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| s.time.clone())
}

fn mode_string(kind: NodeKind, mode: u32) -> String {
    let t = match kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::File => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let b = (mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// Runs the CLI; returns the exit code for success paths that are not plain 0 (verify damage).
pub fn run(cli: Cli) -> Result<i32> {
    let ctx = Ctx { cli, config: std::cell::OnceCell::new() };
    match &ctx.cli.command {
        Command::Config { what: ConfigWhat::Check } => {
            let c = ctx.require_config()?;
            let mut v = c.resolved_json();
            if let Some(r) = &ctx.cli.repo {
                v["backup"]["repository"] = json!(r);
            }
            ctx.out(&v);
            Ok(0)
        }
        Command::Backup(a) => cmd_backup(&ctx, a),
        Command::Daemon => cmd_daemon(&ctx),
        Command::Sync { dry_run } => {
            let repo_path = ctx.repo_path()?;
            let repo = Repo::open(&repo_path, &|| ctx.password())?;
            let remotes = ctx.remotes()?;
            if remotes.is_empty() {
                bail!("no remotes configured: add \"remotes\" to the config or pass --remote gdrive:path");
            }
            let results = sync_all(&ctx, &repo, &remotes, *dry_run);
            if ctx.cli.json {
                ctx.out(&serde_json::to_value(&results)?);
            } else {
                for r in &results {
                    match (&r.error, &r.report) {
                        (Some(e), _) => println!("{}: FAILED: {e}", r.remote),
                        (None, Some(rep)) => {
                            println!(
                                "{}: {}{} files uploaded ({}), {} repaired, {} deleted, {} foreign files left alone, {:.2}s",
                                r.remote,
                                if *dry_run { "dry run: " } else { "" },
                                rep.uploaded.len(),
                                human_bytes(rep.uploaded_bytes),
                                rep.repaired.len(),
                                rep.deleted.len(),
                                rep.foreign.len(),
                                rep.duration_s
                            );
                            for f in &rep.foreign {
                                println!("  foreign (not written by this repository, not deleted): {f}");
                            }
                            for f in &rep.duplicates {
                                println!("  duplicate name on the remote: {f}");
                            }
                        }
                        (None, None) => {}
                    }
                }
            }
            let failed = results.iter().filter(|r| r.error.is_some()).count();
            if failed > 0 {
                bail!("{failed} of {} remotes failed to sync", results.len());
            }
            Ok(0)
        }
        Command::Clone => {
            let name = ctx.cli.remote.clone().ok_or_else(|| anyhow!("clone needs --remote NAME"))?;
            let dest =
                ctx.cli.repo.clone().ok_or_else(|| anyhow!("clone needs --repo DIR for the new local repository"))?;
            let remote = ctx.remote(&name)?;
            let start = std::time::Instant::now();
            crate::remote::mirror::clone_all(&remote, &dest)?;
            let repo = Repo::open(&dest, &|| ctx.password())?;
            let (snaps, _) = repo.snapshots()?;
            println!(
                "cloned remote {} into {}: {} snapshots in {:.2}s",
                remote.name,
                dest.display(),
                snaps.len(),
                start.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        Command::Forget { dry_run, types } => {
            let repo = ctx.open()?;
            let cfg = ctx.config()?;
            let policy = |t: &str| cfg.and_then(|c| c.type_config(t)).and_then(|c| c.retention.clone());
            let sel = (!types.is_empty()).then_some(types.as_slice());
            let decisions = crate::ops::prune::forget(&repo, sel, &policy, *dry_run)?;
            if ctx.cli.json {
                ctx.out(&json!({"dry_run": dry_run, "decisions": decisions}));
            } else {
                println!("{:<10} {:<26} {:<10} {:<10} {:<12} WHY", "ID", "TIME", "TYPE", "KIND", "ACTION");
                for d in &decisions {
                    let action = if d.keep {
                        "keep"
                    } else if *dry_run {
                        "would remove"
                    } else {
                        "remove"
                    };
                    println!(
                        "{:<10} {:<26} {:<10} {:<10} {:<12} {}",
                        &d.id[..8],
                        &d.time[..d.time.len().min(25)],
                        d.backup_type,
                        d.kind,
                        action,
                        d.reasons.join(", ")
                    );
                }
                let n = decisions.iter().filter(|d| !d.keep).count();
                println!(
                    "{} snapshots {}, {} kept",
                    n,
                    if *dry_run { "would be removed" } else { "removed" },
                    decisions.len() - n
                );
            }
            Ok(0)
        }
        Command::Prune { dry_run, repack_below } => {
            let mut repo = ctx.open()?;
            if !(0.0..=100.0).contains(repack_below) {
                bail!("--repack-below must be a percentage 0..100");
            }
            let r = crate::ops::prune::prune(
                &mut repo,
                crate::ops::prune::PruneOptions { dry_run: *dry_run, repack_below: repack_below / 100.0 },
            )?;
            if ctx.cli.json {
                ctx.out(&serde_json::to_value(&r)?);
            } else {
                println!(
                    "{}{} snapshots reference {} chunks; of {} packs: {} deleted, {} repacked into {}, {} unindexed deleted; {} removed, {} written, {} freed in {:.2}s",
                    if *dry_run { "dry run: " } else { "" },
                    r.snapshots,
                    r.live_chunks,
                    r.packs_before,
                    r.packs_deleted,
                    r.packs_repacked,
                    r.packs_written,
                    r.unindexed_deleted,
                    human_bytes(r.bytes_deleted),
                    human_bytes(r.bytes_written),
                    human_bytes(r.bytes_freed.max(0) as u64),
                    r.duration_s
                );
            }
            Ok(0)
        }
        Command::MarkVerified { snapshot, by } => {
            let repo = ctx.open()?;
            let (id, _) = repo.resolve(snapshot)?;
            let new = crate::ops::prune::mark_verified(&repo, &id, by)?;
            if ctx.cli.json {
                ctx.out(&json!({"old": id.to_hex(), "new": new.to_hex(), "verified_by": by}));
            } else {
                println!("snapshot {} verified by {by} (now {})", id.short(), new.short());
            }
            Ok(0)
        }
        Command::Status { metrics_file } => {
            let mut repo = ctx.open()?;
            repo.sync_index()?;
            let st = crate::lifecycle::status::status(&repo, ctx.config()?)?;
            if let Some(m) = metrics_file {
                crate::lifecycle::status::write_metrics(m, &st)?;
            }
            if ctx.cli.json {
                ctx.out(&serde_json::to_value(&st)?);
            } else {
                print!("{}", crate::lifecycle::status::render(&st));
            }
            Ok(0)
        }
        Command::History { backup_type, limit } => {
            let path = ctx.repo_path()?;
            crate::repo::read_config(&path)?;
            let h = crate::lifecycle::history::History::open(&path)?;
            let runs = h.list(backup_type.as_deref(), *limit)?;
            if ctx.cli.json {
                ctx.out(&serde_json::to_value(&runs)?);
            } else {
                println!(
                    "{:<26} {:<10} {:<10} {:>8} {:>10} {:>10} {:<10} ERROR",
                    "START", "TYPE", "RESULT", "FILES", "READ", "ADDED", "SNAPSHOT"
                );
                for r in runs.iter().rev() {
                    println!(
                        "{:<26} {:<10} {:<10} {:>8} {:>10} {:>10} {:<10} {}",
                        &r.start[..r.start.len().min(25)],
                        r.backup_type,
                        format!("{:?}", r.result).to_lowercase(),
                        r.files,
                        human_bytes(r.bytes_read),
                        human_bytes(r.bytes_added),
                        r.snapshot.as_deref().map(|s| &s[..8]).unwrap_or("-"),
                        r.error.clone().unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
        Command::Export(a) => cmd_export(&ctx, a),
        Command::Init(a) => {
            let path = ctx.repo_path()?;
            let encryption = if a.encryption == "none" { Encryption::None } else { Encryption::XChaCha20Poly1305 };
            let opts = InitOptions {
                encryption,
                compression_level: a.compression_level,
                pack_size: a.pack_size_mib << 20,
                kdf: ctx.cli.kdf()?,
            };
            let pw = match encryption {
                Encryption::None => None,
                Encryption::XChaCha20Poly1305 => Some(init_password(&ctx)?),
            };
            let config = repo::init(&path, &opts, pw.as_ref().map(|p| p.as_slice()))?;
            if ctx.cli.json {
                ctx.out(&json!({"repository": path, "id": config.id.to_hex(), "encryption": config.encryption}));
            } else if !ctx.cli.quiet {
                println!("created repository {} at {}", config.id.short(), path.display());
                match encryption {
                    Encryption::XChaCha20Poly1305 => println!(
                        "encrypted: keep the password safe. Without it nothing in this repository can be read, by you or anyone."
                    ),
                    Encryption::None => println!("NOT encrypted: anyone who can read the repository can read your data."),
                }
            }
            Ok(0)
        }
        Command::Snapshot(a) => {
            let mut repo = ctx.open()?;
            let mut labels = BTreeMap::new();
            for l in &a.labels {
                let (k, v) = l.split_once('=').ok_or_else(|| anyhow!("label {l:?} is not KEY=VALUE"))?;
                labels.insert(k.to_string(), v.to_string());
            }
            if let Some(r) = &a.retention {
                let ok = r == "permanent"
                    || r == "until_verified"
                    || r.strip_prefix("days_").is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0));
                if !ok {
                    bail!("--retention {r:?}: use permanent, until_verified or days_N");
                }
                labels.insert("retention".into(), r.clone());
            }
            let opts = SnapshotOptions {
                backup_type: a.backup_type.clone(),
                kind: SnapshotKind::parse(&a.kind).expect("validated by clap"),
                description: a.description.clone(),
                ticket: a.ticket.clone(),
                creator: a.creator.clone().or_else(|| std::env::var("USER").ok()),
                purpose: a.purpose.clone(),
                labels,
                force_read: a.force_read,
                excludes: globset(&a.exclude, "exclude")?,
                source_meta: BTreeMap::new(),
                chunker: None,
                skip_if_unchanged_within: None,
            };
            let source = match &a.stdin {
                Some(name) => Source::Reader { name: name.clone(), reader: Box::new(std::io::stdin()) },
                None => Source::Paths(a.paths.clone()),
            };
            let pb = ctx.spinner(&format!("snapshot of {}", a.backup_type));
            let r = snapshot::snapshot(&mut repo, source, &opts)?;
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            let s = &r.snapshot;
            if ctx.cli.json {
                let mut v = snapshot_json(&r.id, s);
                v["duration_s"] = json!(r.duration.as_secs_f64());
                ctx.out(&v);
            } else if !ctx.cli.quiet {
                println!(
                    "snapshot {} ({}) saved: {} files, {} dirs, {} read, {} new in {} chunks ({} stored), {} unchanged files, {:.2}s",
                    r.id.short(),
                    s.backup_type,
                    s.stats.files,
                    s.stats.dirs,
                    human_bytes(s.stats.logical_bytes),
                    human_bytes(s.stats.new_raw_bytes),
                    s.stats.new_chunks,
                    human_bytes(s.stats.new_bytes),
                    s.stats.unchanged_files,
                    r.duration.as_secs_f64()
                );
            }
            if !s.errors.is_empty() {
                for e in &s.errors {
                    eprintln!("error: {}: {}", e.path, e.message);
                }
                bail!(
                    "snapshot {} saved, but {} entries could not be read (listed above and in the snapshot)",
                    r.id.short(),
                    s.errors.len()
                );
            }
            Ok(0)
        }
        Command::Snapshots { backup_type } => {
            let repo = ctx.open()?;
            let (all, bad) = repo.snapshots()?;
            let list: Vec<_> =
                all.iter().filter(|(_, s)| backup_type.as_ref().is_none_or(|t| &s.backup_type == t)).collect();
            if ctx.cli.json {
                ctx.out(&serde_json::Value::Array(list.iter().map(|(id, s)| snapshot_json(id, s)).collect()));
            } else {
                println!(
                    "{:<10} {:<20} {:<10} {:<10} {:<16} {:>8} {:>10} {:>10}",
                    "ID", "TIME", "TYPE", "KIND", "HOST", "FILES", "SIZE", "ADDED"
                );
                for (id, s) in &list {
                    println!(
                        "{:<10} {:<20} {:<10} {:<10} {:<16} {:>8} {:>10} {:>10}",
                        id.short(),
                        fmt_time(s),
                        s.backup_type,
                        s.kind.as_str(),
                        s.host,
                        s.stats.files,
                        human_bytes(s.stats.logical_bytes),
                        human_bytes(s.stats.new_bytes)
                    );
                }
                println!("{} snapshots", list.len());
            }
            for (id, e) in &bad {
                eprintln!("warning: snapshot {} unreadable: {e}", id.short());
            }
            Ok(0)
        }
        Command::Ls { snapshot, path } => {
            let mut repo = ctx.open()?;
            repo.sync_index()?;
            let (id, snap) = repo.resolve(snapshot)?;
            let prefix = path.as_deref().map(|p| p.trim_matches('/').as_bytes().to_vec());
            let mut nodes = Vec::new();
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for n in repo.tree(&snap)? {
                let n = n?;
                if let Some(p) = &prefix {
                    let under = n.path == *p || (n.path.starts_with(p) && n.path.get(p.len()) == Some(&b'/'));
                    if !under {
                        continue;
                    }
                }
                if ctx.cli.json {
                    nodes.push(json!({
                        "path": n.path_str(), "kind": format!("{:?}", n.kind).to_lowercase(), "mode": n.mode & 0o7777,
                        "size": n.size, "mtime_ns": n.mtime_ns, "uid": n.uid, "gid": n.gid,
                        "target": (n.kind == NodeKind::Symlink).then(|| String::from_utf8_lossy(&n.target).into_owned()),
                        "chunks": n.chunks.len(),
                    }));
                } else {
                    let t = chrono::DateTime::from_timestamp_nanos(n.mtime_ns).with_timezone(&chrono::Local);
                    let mut line = format!(
                        "{} {:>12} {} {}",
                        mode_string(n.kind, n.mode),
                        n.size,
                        t.format("%Y-%m-%d %H:%M:%S"),
                        n.path_str()
                    );
                    if n.kind == NodeKind::Symlink {
                        line.push_str(&format!(" -> {}", String::from_utf8_lossy(&n.target)));
                    }
                    writeln!(out, "{line}")?;
                }
            }
            if ctx.cli.json {
                ctx.out(&json!({"snapshot": id.to_hex(), "nodes": nodes}));
            }
            if prefix.is_some() && !ctx.cli.json && nodes.is_empty() {
                // Nothing printed is ambiguous for a path filter; say so.
            }
            Ok(0)
        }
        Command::Restore { snapshot, target, include } => {
            let mut repo = ctx.open()?;
            let _lock = crate::store::lock::Lock::acquire(&repo.store, false, "restore")?;
            repo.sync_index()?;
            let (id, snap) = repo.resolve(snapshot)?;
            let opts = crate::ops::restore::RestoreOptions { include: globset(include, "include")? };
            let pb = ctx.spinner(&format!("restoring {}", id.short()));
            let start = std::time::Instant::now();
            let r = crate::ops::restore::restore(&repo, &snap, target, &opts)?;
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            if ctx.cli.json {
                ctx.out(&json!({"snapshot": id.to_hex(), "report": r, "duration_s": start.elapsed().as_secs_f64()}));
            } else if !ctx.cli.quiet {
                println!(
                    "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {} in {:.2}s",
                    id.short(),
                    target.display(),
                    r.files,
                    r.dirs,
                    r.symlinks,
                    human_bytes(r.bytes),
                    start.elapsed().as_secs_f64()
                );
            }
            if !r.errors.is_empty() {
                for (p, e) in &r.errors {
                    eprintln!("error: {p}: {e}");
                }
                bail!("{} entries could not be restored", r.errors.len());
            }
            Ok(0)
        }
        Command::Cat { snapshot, path } => {
            let mut repo = ctx.open()?;
            repo.sync_index()?;
            let (_, snap) = repo.resolve(snapshot)?;
            let node = crate::ops::restore::find_node(&repo, &snap, path)?;
            if node.kind != NodeKind::File {
                bail!("{path}: not a regular file");
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            crate::ops::restore::write_content(&repo, &node, &mut out)?;
            out.flush()?;
            Ok(0)
        }
        Command::Verify { read_data, seed, restore_test } => {
            if let (Some(name), Ok(local)) = (&ctx.cli.remote, ctx.repo_path()) {
                if crate::repo::is_repository(&local) {
                    let remote = ctx.remote(name)?;
                    let has_retention = ctx
                        .config()?
                        .and_then(|c| c.backup.remotes.iter().find(|r| r.name == remote.name))
                        .is_some_and(|r| r.retention.is_some());
                    let exclude = if has_retention {
                        let repo = Repo::open(&local, &|| ctx.password())?;
                        remote_exclusions(&ctx, &repo, &remote.name)?
                    } else {
                        Default::default()
                    };
                    let c = crate::remote::sync::check(&local, &remote, &exclude)?;
                    if ctx.cli.json && read_data.is_none() {
                        let mut v = serde_json::to_value(&c)?;
                        v["ok"] = json!(!c.is_damaged());
                        ctx.out(&v);
                    } else if !ctx.cli.json {
                        for (what, list) in
                            [("MISSING", &c.missing), ("MISMATCH", &c.mismatched), ("DUPLICATE", &c.duplicates)]
                        {
                            for f in list {
                                println!("{what} on remote {}: {f}", c.remote);
                            }
                        }
                        println!(
                            "remote {}: {} files compared, {} missing, {} mismatched, {} duplicates, {} not yet synced, {} extra",
                            c.remote,
                            c.checked,
                            c.missing.len(),
                            c.mismatched.len(),
                            c.duplicates.len(),
                            c.pending.len(),
                            c.extra.len()
                        );
                    }
                    if read_data.is_none() || c.is_damaged() {
                        return Ok(if c.is_damaged() { EXIT_DAMAGE } else { 0 });
                    }
                }
            }
            let repo = ctx.open()?;
            let pct = match read_data {
                None => None,
                Some(s) => {
                    let v: f64 = s
                        .trim_end_matches('%')
                        .parse()
                        .map_err(|_| anyhow!("--read-data={s}: expected a percentage such as 10%"))?;
                    if !(v > 0.0 && v <= 100.0) {
                        bail!("--read-data={s}: percentage must be in (0, 100]");
                    }
                    Some(v)
                }
            };
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
            });
            let pb = ctx.spinner("verifying");
            let start = std::time::Instant::now();
            let mut repo = repo;
            if *restore_test {
                repo.sync_index()?;
            }
            let r = verify::verify(&repo, &VerifyOptions { read_data: pct, seed, restore_test: *restore_test })?;
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            if ctx.cli.json {
                let mut v = serde_json::to_value(&r)?;
                v["ok"] = json!(!r.is_damaged());
                v["duration_s"] = json!(start.elapsed().as_secs_f64());
                ctx.out(&v);
            } else {
                for d in &r.damaged_packs {
                    println!("DAMAGED pack {}: {}", d.pack, d.problem);
                    println!("  {} chunks affected", d.chunks.len());
                    for c in d.chunks.iter().take(10) {
                        println!("    chunk {c}");
                    }
                    if d.chunks.len() > 10 {
                        println!("    ... and {} more", d.chunks.len() - 10);
                    }
                    for a in &d.affected {
                        println!("  breaks snapshot {} file {}", &a.snapshot[..8], a.path);
                    }
                }
                for p in &r.problems {
                    println!("DAMAGED {p}");
                }
                for t in &r.restore_tests {
                    println!(
                        "restore test {} snapshot {}: {}",
                        t.backup_type,
                        &t.snapshot[..t.snapshot.len().min(8)],
                        if t.ok { format!("ok ({})", t.detail) } else { format!("FAILED: {}", t.detail) }
                    );
                }
                if !ctx.cli.quiet {
                    for n in &r.notes {
                        println!("note: {n}");
                    }
                    let sample = match (pct, r.seed) {
                        (Some(p), Some(s)) => format!(" ({p}% sample, --seed {s})"),
                        _ => String::new(),
                    };
                    println!(
                        "checked {} index files, {} packs, {} snapshots; read {} packs ({}), {} chunks re-hashed{sample} in {:.2}s",
                        r.index_files,
                        r.packs,
                        r.snapshots,
                        r.packs_read,
                        human_bytes(r.bytes_read),
                        r.chunks_checked,
                        start.elapsed().as_secs_f64()
                    );
                    println!("{}", if r.is_damaged() { "repository is DAMAGED" } else { "no errors found" });
                }
            }
            Ok(if r.is_damaged() { EXIT_DAMAGE } else { 0 })
        }
        Command::Repair { what: RepairWhat::Index } => {
            let mut repo = ctx.open()?;
            let (n, bad) = verify::repair_index(&mut repo)?;
            if ctx.cli.json {
                ctx.out(&json!({"packs_indexed": n, "unreadable_packs": bad}));
            } else {
                println!("index rebuilt from {n} packs");
                for (p, e) in &bad {
                    println!("unreadable pack {p}: {e}");
                }
            }
            Ok(if bad.is_empty() { 0 } else { 1 })
        }
        Command::Key { cmd } => {
            let path = ctx.repo_path()?;
            let pw = || ctx.password();
            match cmd {
                KeyCmd::List => {
                    let keys = crate::ops::keys::list(&path, &pw)?;
                    if ctx.cli.json {
                        ctx.out(&serde_json::to_value(&keys)?);
                    } else {
                        for k in keys {
                            println!(
                                "{}{} {} {} {}",
                                if k.current { "*" } else { " " },
                                &k.id[..16],
                                k.created,
                                k.host,
                                k.label
                            );
                        }
                    }
                }
                KeyCmd::Add { label, new_password_file } => {
                    let np = ctx.new_password(new_password_file)?;
                    let id = crate::ops::keys::add(&path, &pw, &np, label, ctx.cli.kdf()?)?;
                    println!("added key {}", &id[..16]);
                }
                KeyCmd::Remove { id } => {
                    let id = crate::ops::keys::remove(&path, &pw, id)?;
                    println!("removed key {}", &id[..16]);
                }
                KeyCmd::Passwd { new_password_file } => {
                    let np = ctx.new_password(new_password_file)?;
                    let id = crate::ops::keys::passwd(&path, &pw, &np, ctx.cli.kdf()?)?;
                    println!("password changed (new key {})", &id[..16]);
                }
            }
            Ok(0)
        }
    }
}

/// The password for a new repository: any configured source, else a double prompt.
fn init_password(ctx: &Ctx) -> Result<Zeroizing<Vec<u8>>> {
    match ctx.password() {
        Ok(p) => Ok(p),
        Err(crate::Error::NoPassword) => ctx.new_password(&None),
        Err(e) => Err(e.into()),
    }
}

fn cmd_backup(ctx: &Ctx, a: &args::BackupArgs) -> Result<i32> {
    let cfg = ctx.require_config()?;
    for t in &a.types {
        if cfg.type_config(t).is_none() {
            let known: Vec<&str> = cfg.types.iter().map(|(n, _)| n.as_str()).collect();
            bail!("{}: no backup type {t:?} (configured: {})", cfg.file.display(), known.join(", "));
        }
    }
    let mut repo = open_or_create(ctx, cfg)?;
    let opts = crate::lifecycle::runner::RunOptions {
        now: a.now,
        types: a.types.clone(),
        flags: crate::lifecycle::job::RunFlags { no_vacuum: a.no_vacuum, force_read: a.force_read },
        ..Default::default()
    };
    let mut report = crate::lifecycle::runner::run_backups(&mut repo, cfg, &opts)?;
    if !a.no_sync && report.ran.iter().any(|r| r.result == crate::lifecycle::history::Outcome::Success) {
        report.sync = sync_all(ctx, &repo, &ctx.remotes()?, false);
    }
    print_backup_report(ctx, &report);
    if let Some(m) = &a.metrics_file {
        let st = crate::lifecycle::status::status(&repo, Some(cfg))?;
        crate::lifecycle::status::write_metrics(m, &st)?;
    }
    let failed = report.failed();
    if failed > 0 {
        bail!("{failed} of {} backup types failed", report.ran.len());
    }
    Ok(0)
}

/// Opens the configured repository, creating it on first use.
fn open_or_create(ctx: &Ctx, cfg: &Config) -> Result<Repo> {
    let path = ctx.repo_path()?;
    let fresh = !path.exists() || std::fs::read_dir(&path).map(|mut d| d.next().is_none()).unwrap_or(false);
    if fresh {
        let encryption = if cfg.backup.encryption.as_deref() == Some("none") {
            Encryption::None
        } else {
            Encryption::XChaCha20Poly1305
        };
        let pw = match encryption {
            Encryption::None => None,
            Encryption::XChaCha20Poly1305 => Some(init_password(ctx)?),
        };
        let c = repo::init(
            &path,
            &InitOptions { encryption, kdf: ctx.cli.kdf()?, ..Default::default() },
            pw.as_ref().map(|p| p.as_slice()),
        )?;
        if !ctx.cli.quiet && !ctx.cli.json {
            println!(
                "created repository {} at {} ({})",
                c.id.short(),
                path.display(),
                if encryption == Encryption::None { "NOT encrypted" } else { "encrypted" }
            );
        }
    }
    ctx.open()
}

fn print_backup_report(ctx: &Ctx, report: &crate::lifecycle::runner::BackupReport) {
    if ctx.cli.json {
        ctx.out(&serde_json::to_value(report).expect("serializable"));
        return;
    }
    for r in &report.ran {
        let name = &r.backup_type;
        let retries = if r.retries > 0 { format!(" after {} retries", r.retries) } else { String::new() };
        match (&r.result, &r.stats) {
            (crate::lifecycle::history::Outcome::Unchanged, _) if ctx.cli.quiet => {}
            (crate::lifecycle::history::Outcome::Unchanged, _) => {
                println!(
                    "{name}: unchanged since snapshot {}, nothing stored, {:.2}s",
                    &r.snapshot.clone().unwrap_or_default()[..8],
                    r.duration_s
                )
            }
            (_, Some(s)) if ctx.cli.quiet && r.file_errors.is_empty() => {
                let _ = s;
            }
            (_, Some(s)) => {
                let dedup = if s.logical_bytes > 0 {
                    (100.0 * (1.0 - s.new_raw_bytes as f64 / s.logical_bytes as f64)).clamp(0.0, 100.0)
                } else {
                    100.0
                };
                println!(
                    "{name}: snapshot {} saved: {} files, {} read, {} new ({} stored, {dedup:.1}% deduplicated), {:.2}s{retries}",
                    &r.snapshot.clone().unwrap_or_default()[..8],
                    s.files,
                    human_bytes(s.logical_bytes),
                    human_bytes(s.new_raw_bytes),
                    human_bytes(s.new_bytes),
                    r.duration_s
                );
                for e in &r.file_errors {
                    eprintln!("{name}: error: {}: {}", e.path, e.message);
                }
            }
            (_, None) => println!("{name}: FAILED{retries}: {}", r.error.clone().unwrap_or_default()),
        }
    }
    if !ctx.cli.quiet {
        for (t, why) in &report.skipped {
            println!("{t}: not due ({why})");
        }
        if !report.forgotten.is_empty() {
            println!("retention removed {} snapshots", report.forgotten.len());
        }
        if let Some(p) = &report.prune {
            println!(
                "prune: {} packs deleted, {} repacked, {} freed",
                p.packs_deleted + p.unindexed_deleted,
                p.packs_repacked,
                human_bytes(p.bytes_freed.max(0) as u64)
            );
        }
    }
    for r in &report.sync {
        match &r.error {
            None => println!(
                "sync {}: {} files uploaded ({}), {} deleted",
                r.remote,
                r.uploaded,
                human_bytes(r.uploaded_bytes),
                r.deleted
            ),
            Some(e) => println!("sync {}: FAILED (the backup is safe locally; the next run catches up): {e}", r.remote),
        }
    }
    if let Some(e) = &report.maintenance_error {
        eprintln!("warning: {e}");
    }
    for e in &report.notify_errors {
        eprintln!("warning: notification not delivered: {e}");
    }
}

/// Snapshot files a configured remote's own retention leaves out (none without a retention).
fn remote_exclusions(ctx: &Ctx, repo: &Repo, name: &str) -> Result<std::collections::HashSet<String>> {
    let ret =
        ctx.config()?.and_then(|c| c.backup.remotes.iter().find(|r| r.name == name)).and_then(|r| r.retention.clone());
    Ok(match ret {
        Some(r) => crate::remote::sync::retention_exclusions(repo, &r)?,
        None => Default::default(),
    })
}

/// Syncs each remote, recording each in the history; a failure is reported, never raised.
fn sync_all(
    ctx: &Ctx,
    repo: &Repo,
    remotes: &[crate::remote::rclone::Rclone],
    dry_run: bool,
) -> Vec<crate::lifecycle::runner::SyncOutcome> {
    let _ = ctx;
    let mut out = Vec::new();
    for remote in remotes {
        let start = chrono::Local::now();
        let r = remote_exclusions(ctx, repo, &remote.name).and_then(|ex| {
            crate::remote::sync::sync(repo.store.root(), remote, dry_run, &ex).map_err(anyhow::Error::from)
        });
        let mut o = crate::lifecycle::runner::SyncOutcome { remote: remote.name.clone(), ..Default::default() };
        let mut run = crate::lifecycle::history::Run {
            id: 0,
            backup_type: format!("sync:{}", remote.name),
            start: start.to_rfc3339(),
            end: chrono::Local::now().to_rfc3339(),
            result: crate::lifecycle::history::Outcome::Success,
            error: None,
            files: 0,
            bytes_read: 0,
            bytes_added: 0,
            snapshot: None,
            retries: 0,
        };
        match r {
            Ok(rep) => {
                o.uploaded = rep.uploaded.len();
                o.uploaded_bytes = rep.uploaded_bytes;
                o.deleted = rep.deleted.len();
                o.foreign = rep.foreign.clone();
                run.files = rep.uploaded.len() as u64;
                run.bytes_added = rep.uploaded_bytes;
                o.report = Some(rep);
            }
            Err(e) => {
                tracing::error!("sync to {} failed: {e}", remote.name);
                o.error = Some(e.to_string());
                run.result = crate::lifecycle::history::Outcome::Failed;
                run.error = o.error.clone();
            }
        }
        if !dry_run {
            if let Ok(h) = crate::lifecycle::history::History::open(repo.store.root()) {
                let _ = h.record(&run);
            }
        }
        out.push(o);
    }
    out
}

static TERM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn cmd_daemon(ctx: &Ctx) -> Result<i32> {
    use std::sync::atomic::Ordering;
    let cfg = ctx.require_config()?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
    }
    let mut repo = open_or_create(ctx, cfg)?;
    tracing::info!("daemon started for {} types", cfg.types.len());
    if !ctx.cli.quiet {
        println!("cairn daemon: {} types, repository {}", cfg.types.len(), repo.store.root().display());
    }
    while !TERM.load(Ordering::SeqCst) {
        match crate::lifecycle::runner::run_backups(&mut repo, cfg, &crate::lifecycle::runner::RunOptions::default()) {
            Ok(mut report) => {
                if report.ran.iter().any(|r| r.result == crate::lifecycle::history::Outcome::Success) {
                    report.sync = sync_all(ctx, &repo, &ctx.remotes()?, false);
                }
                if !report.ran.is_empty() {
                    print_backup_report(ctx, &report);
                }
            }
            Err(e) => tracing::error!("backup round failed: {e}"),
        }
        // Sleep until the next due time, in short steps: wall-clock jumps and suspend are noticed
        // within a minute, and a signal within a second.
        let history = crate::lifecycle::history::History::open(repo.store.root())?;
        let (snaps, _) = repo.snapshots()?;
        let mut next = chrono::Local::now().fixed_offset() + chrono::Duration::minutes(60);
        for (name, t) in &cfg.types {
            if t.schedule.as_deref() == Some("on-change") {
                next = next.min(chrono::Local::now().fixed_offset() + chrono::Duration::minutes(5));
                continue;
            }
            let d = crate::lifecycle::runner::due_now(t, crate::lifecycle::runner::last_success(&history, &snaps, name)?);
            // A type still due after this round failed: try again in five minutes, not at once.
            next = next.min(if d.due {
                chrono::Local::now().fixed_offset() + chrono::Duration::minutes(5)
            } else {
                d.next
            });
        }
        tracing::info!("next run due at {next}");
        let started = std::time::Instant::now();
        let wall_start = chrono::Local::now().fixed_offset();
        while !TERM.load(Ordering::SeqCst) {
            let now = chrono::Local::now().fixed_offset();
            if now >= next {
                break;
            }
            let drift = (now - wall_start).num_seconds() - started.elapsed().as_secs() as i64;
            if drift.abs() > 60 || started.elapsed().as_secs() >= 60 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    if !ctx.cli.quiet {
        println!("cairn daemon: stopping");
    }
    Ok(0)
}

fn cmd_export(ctx: &Ctx, a: &args::ExportArgs) -> Result<i32> {
    let mut repo = ctx.open()?;
    let _lock = crate::store::lock::Lock::acquire(&repo.store, false, "export")?;
    repo.sync_index()?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => ctx.config()?.map(|c| c.backup.name.clone()).unwrap_or_else(|| "cairn".into()),
    };
    let mut chosen = Vec::new();
    if a.latest {
        let (all, _) = repo.snapshots()?;
        let mut latest: BTreeMap<String, (crate::id::SnapshotId, Snapshot)> = BTreeMap::new();
        for (id, s) in all {
            latest.insert(s.backup_type.clone(), (id, s));
        }
        chosen.extend(latest.into_values());
    }
    for spec in &a.snapshots {
        chosen.push(repo.resolve(spec)?);
    }
    if chosen.is_empty() {
        bail!("nothing to export: the repository has no snapshots");
    }
    let mut out = Vec::new();
    for (id, s) in &chosen {
        let files = if a.layout == "dated" {
            let keep_days = ctx
                .config()?
                .and_then(|c| c.type_config(&s.backup_type))
                .and_then(|t| t.retention.as_ref())
                .and_then(|r| {
                    r.keep_within
                        .as_deref()
                        .and_then(crate::lifecycle::config::parse_duration)
                        .map(|d| d.num_days())
                        .or(r.keep_daily.map(i64::from))
                })
                .unwrap_or(30);
            crate::ops::export::export_dated(&repo, id, s, &a.out, keep_days)?
        } else {
            vec![crate::ops::export::export(&repo, s, &name, &a.out)?]
        };
        for f in files {
            if !ctx.cli.json && !ctx.cli.quiet {
                println!("{} ({}) -> {}", id.short(), s.backup_type, f.display());
            }
            out.push(json!({"snapshot": id.to_hex(), "type": s.backup_type, "file": f}));
        }
    }
    if ctx.cli.json {
        ctx.out(&serde_json::Value::Array(out));
    }
    Ok(0)
}
