//! The local repository directory: immutable, content-named files written atomically.
//!
//! Contract (every caller relies on it):
//! - `put` and `publish` never replace an existing file: the final name is created with
//!   `link(2)`, which fails on an existing name, after the bytes are fsynced under a temporary
//!   name; the directory is fsynced afterwards, so a file is either absent or whole after a crash.
//! - `list` reports a read error as an error, never as an empty directory.
//! - Nothing here knows about packs, compression or encryption.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};


use crate::error::{Error, IoContext, Result};

pub mod lock;

/// The kinds of files in a repository and the directory each lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `packs/ab/abcd…`
    Pack,
    /// `index/abcd…`
    Index,
    /// `snapshots/abcd…`
    Snapshot,
    /// `keys/abcd…`
    Key,
    /// `locks/abcd…`
    Lock,
}

impl FileKind {
    /// Directory name under the repository root.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Pack => "packs",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Key => "keys",
            FileKind::Lock => "locks",
        }
    }
}

/// A repository directory on the local file system.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

/// Fsyncs a directory so a rename or link inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).ctx(dir)
}

impl LocalStore {
    /// A store rooted at `root` (not checked).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory skeleton (init).
    pub fn create_layout(&self) -> Result<()> {
        for d in ["packs", "index", "snapshots", "keys", "locks", "tmp", "cache"] {
            let p = self.root.join(d);
            fs::create_dir_all(&p).ctx(&p)?;
        }
        for i in 0..256 {
            let p = self.root.join("packs").join(format!("{i:02x}"));
            fs::create_dir_all(&p).ctx(&p)?;
        }
        fsync_dir(&self.root.join("packs"))?;
        fsync_dir(&self.root)
    }

    /// Path of a file of `kind` named `name` (hex).
    pub fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        match kind {
            FileKind::Pack => self.root.join("packs").join(&name[..2.min(name.len())]).join(name),
            _ => self.root.join(kind.dir()).join(name),
        }
    }

    /// A fresh temporary file in `tmp/`, opened for writing.
    pub fn temp_file(&self) -> Result<(PathBuf, File)> {
        let mut r = [0u8; 12];
        crate::util::os_random(&mut r);
        let p = self.root.join("tmp").join(format!("{}.tmp", hex::encode(r)));
        let f = OpenOptions::new().write(true).read(true).create_new(true).open(&p).ctx(&p)?;
        Ok((p, f))
    }

    /// Moves a fully written and fsynced temporary file to its final name without replacing an
    /// existing file. An existing file of the same name and size is taken as the same content
    /// (names are content hashes) and the temporary file is dropped.
    pub fn publish(&self, tmp: &Path, kind: FileKind, name: &str) -> Result<()> {
        let dst = self.path(kind, name);
        let dir = dst.parent().expect("has parent").to_path_buf();
        if !dir.exists() {
            fs::create_dir_all(&dir).ctx(&dir)?;
        }
        match fs::hard_link(tmp, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let a = fs::metadata(tmp).ctx(tmp)?.len();
                let b = fs::metadata(&dst).ctx(&dst)?.len();
                if a != b {
                    return Err(Error::corrupt(
                        dst.display().to_string(),
                        format!("exists with size {b}, expected {a} for the same content name"),
                    ));
                }
            }
            Err(e) => return Err(Error::io(&dst, e)),
        }
        fs::remove_file(tmp).ctx(tmp)?;
        fsync_dir(&dir)
    }

    /// Writes `bytes` as a new immutable file.
    pub fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        let (tmp, mut f) = self.temp_file()?;
        let r = f.write_all(bytes).and_then(|_| f.sync_all()).ctx(&tmp);
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        drop(f);
        self.publish(&tmp, kind, name)
    }

    /// Reads a whole file.
    pub fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let p = self.path(kind, name);
        fs::read(&p).ctx(&p)
    }

    /// Reads `len` bytes at `offset`; a short file is corruption, not a short read.
    pub fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.path(kind, name);
        let f = File::open(&p).ctx(&p)?;
        let mut buf = vec![0u8; len];
        read_exact_at(&f, &mut buf, offset, &p)?;
        Ok(buf)
    }

    /// Size of a file, `None` if absent.
    pub fn size(&self, kind: FileKind, name: &str) -> Result<Option<u64>> {
        let p = self.path(kind, name);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    /// Names of all files of `kind`. Temporary files and foreign names are skipped.
    pub fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        let base = self.root.join(kind.dir());
        let mut out = Vec::new();
        let push_dir = |dir: &Path, out: &mut Vec<String>| -> Result<()> {
            for e in fs::read_dir(dir).ctx(dir)? {
                let e = e.ctx(dir)?;
                if let Some(n) = e.file_name().to_str() {
                    if n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()) {
                        out.push(n.to_string());
                    }
                }
            }
            Ok(())
        };
        if kind == FileKind::Pack {
            for e in fs::read_dir(&base).ctx(&base)? {
                let e = e.ctx(&base)?;
                if e.file_type().ctx(e.path())?.is_dir() {
                    push_dir(&e.path(), &mut out)?;
                }
            }
        } else {
            push_dir(&base, &mut out)?;
        }
        out.sort();
        Ok(out)
    }

    /// Removes a file (locks, prune later). Absent is fine.
    pub fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let p = self.path(kind, name);
        match fs::remove_file(&p) {
            Ok(()) => fsync_dir(p.parent().expect("has parent")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    /// Deletes leftovers of interrupted writes in `tmp/` older than `min_age`.
    pub fn clean_tmp(&self, min_age: std::time::Duration) -> Result<()> {
        let dir = self.root.join("tmp");
        for e in fs::read_dir(&dir).ctx(&dir)? {
            let e = e.ctx(&dir)?;
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a >= min_age);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// `pread` that treats a short read as corruption of `path`.
pub fn read_exact_at(f: &File, buf: &mut [u8], offset: u64, path: &Path) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(Error::corrupt(
                    path.display().to_string(),
                    format!("truncated: wanted {} bytes at offset {offset}", buf.len()),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(())
}

/// Reads the last `n` bytes of a file (pack trailers).
pub fn read_tail(path: &Path, n: usize) -> Result<(Vec<u8>, u64)> {
    let mut f = File::open(path).ctx(path)?;
    let size = f.seek(SeekFrom::End(0)).ctx(path)?;
    if size < n as u64 {
        return Err(Error::corrupt(path.display().to_string(), format!("only {size} bytes long")));
    }
    f.seek(SeekFrom::Start(size - n as u64)).ctx(path)?;
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf).ctx(path)?;
    Ok((buf, size))
}
