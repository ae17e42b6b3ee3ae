//! `restore TYPE@TIME --pgdata DIR`: a base backup laid out as a PostgreSQL data directory, with
//! the recovery settings that make the server replay archived WAL (`wal-fetch`) to that time.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};

use crate::error::{Error, Result};
use crate::format::manifest::{NodeKind, Snapshot};
use crate::repo::Repo;

/// The tar file a base-backup snapshot holds (`pg_basebackup -Ft -D -`, one tablespace).
pub const BASE_TAR: &str = "base.tar";

/// What to lay out.
#[derive(Debug, Clone)]
pub struct PgdataOptions {
    /// The data directory: created (mode 0700) or an existing empty one.
    pub dir: PathBuf,
    /// Recover to this time (`recovery_target_time`); `None`: to the end of the archive.
    pub target_time: Option<DateTime<FixedOffset>>,
    /// The `restore_command` PostgreSQL runs for each WAL file (`cairn ... wal-fetch %f %p`).
    pub restore_command: String,
}

/// What was laid out.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PgdataReport {
    /// Bytes of the base backup's tar.
    pub bytes: u64,
    /// The recovery settings appended to `postgresql.auto.conf`.
    pub settings: Vec<String>,
}

/// A string as a single-quoted `postgresql.conf` value.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Lays out base-backup snapshot `snap` in `opts.dir` and writes `recovery.signal` and the
/// recovery settings. Refuses a non-empty directory: a data directory is never merged into.
pub fn restore_pgdata(repo: &Repo, snap: &Snapshot, opts: &PgdataOptions) -> Result<PgdataReport> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = &opts.dir;
    if !snap.source.contains_key(super::START_FILE_FACT) {
        return Err(Error::Invalid(format!(
            "snapshot of type {:?} is not a pg_basebackup base backup (no {} recorded)",
            snap.backup_type,
            super::START_FILE_FACT
        )));
    }
    match std::fs::read_dir(dir) {
        Ok(mut d) => {
            if d.next().is_some() {
                return Err(Error::Invalid(format!(
                    "{}: not empty; a data directory is restored only into an empty or new directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io(dir, e))?;
        }
        Err(e) => return Err(Error::io(dir, e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(dir, e))?;
    let node = crate::ops::restore::find_node(repo, snap, BASE_TAR)?;
    if node.kind != NodeKind::File {
        return Err(Error::corrupt(BASE_TAR, "not a regular file in the snapshot"));
    }
    // The tar is unpacked as it is read back: a base backup can be larger than the free space
    // left after the data directory itself.
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let (reader, mut writer) = (ChanReader { rx, buf: Vec::new(), pos: 0 }, ChanWriter(tx));
    let target = dir.clone();
    let unpacker = std::thread::spawn(move || -> std::io::Result<()> {
        let mut a = tar::Archive::new(reader);
        a.set_preserve_permissions(true);
        a.set_preserve_mtime(true);
        a.set_overwrite(false);
        a.unpack(&target)
    });
    let written = crate::ops::restore::write_content(repo, &node, &mut writer);
    drop(writer);
    let unpacked = unpacker.join().map_err(|_| Error::Invalid("the tar unpacker failed unexpectedly".into()))?;
    let bytes = written?;
    unpacked.map_err(|e| Error::Invalid(format!("{}: unpacking {BASE_TAR}: {e}", dir.display())))?;
    if bytes != node.size {
        return Err(Error::corrupt(BASE_TAR, format!("{bytes} bytes read, {} recorded", node.size)));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(dir, e))?;
    for sub in ["pg_wal", "pg_wal/archive_status"] {
        let p = dir.join(sub);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&p).map_err(|e| Error::io(&p, e))?;
    }
    let mut settings = vec![format!("restore_command = {}", conf_quote(&opts.restore_command))];
    if let Some(t) = opts.target_time {
        settings
            .push(format!("recovery_target_time = {}", conf_quote(&t.format("%Y-%m-%d %H:%M:%S%.f%:z").to_string())));
        settings.push("recovery_target_action = 'promote'".into());
    }
    let auto = dir.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&auto).map_err(|e| Error::io(&auto, e))?;
    let text = format!("\n# point-in-time recovery, written by cairn restore\n{}\n", settings.join("\n"));
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| Error::io(&auto, e))?;
    let signal = dir.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(|e| Error::io(&signal, e))?;
    sync_tree(dir)?;
    Ok(PgdataReport { bytes, settings })
}

/// The writing end of an in-process pipe (`std::io::pipe` is newer than the supported Rust).
struct ChanWriter(std::sync::mpsc::SyncSender<Vec<u8>>);

impl Write for ChanWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(b.to_vec())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the tar unpacker stopped"))?;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The reading end: end of stream once the writer is dropped.
struct ChanReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(v) => (self.buf, self.pos) = (v, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// fsyncs every file and directory under `dir`: the server is started on it next, maybe after
/// a power cut.
fn sync_tree(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        let m = std::fs::symlink_metadata(&p).map_err(|e| Error::io(&p, e))?;
        if m.is_dir() {
            sync_tree(&p)?;
        } else if m.is_file() {
            std::fs::File::open(&p).and_then(|f| f.sync_all()).map_err(|e| Error::io(&p, e))?;
        }
    }
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(
            super::conf_quote("cairn --config '/a b' wal-fetch %f %p"),
            "'cairn --config ''/a b'' wal-fetch %f %p'"
        );
    }
}
