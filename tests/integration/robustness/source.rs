//! The robustness run's source tree: random files and a SQLite database, changed at random, and
//! the model of a tree (what a snapshot of it must restore to).

use std::collections::BTreeMap;
use std::path::Path;

use super::{Robust, DB, MAX_TREE_BYTES};
use crate::util::{prng_bytes, walk};

/// SplitMix64: a tiny seeded generator, so a failing sequence replays from its seed alone.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub(super) fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// What one path of a snapshot must restore to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    Dir,
    File {
        len: u64,
        hash: String,
    },
    /// A SQLite database: its rows, in id order.
    Db {
        rows: String,
    },
}

/// Path (relative to the source root, `/`-separated) -> what it holds.
pub(super) type Tree = BTreeMap<String, Entry>;

impl Robust {
    /// Regular files (not the database) and directories of the source tree, relative; total bytes.
    pub(super) fn listing_src(&self) -> (Vec<String>, Vec<String>, u64) {
        let (mut files, mut dirs, mut bytes) = (Vec::new(), Vec::new(), 0);
        for p in walk(&self.src) {
            let rel = p.strip_prefix(&self.src).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            bytes += m.len();
            if m.is_dir() {
                dirs.push(rel);
            } else if rel != DB {
                files.push(rel);
            }
        }
        files.sort();
        dirs.sort();
        (files, dirs, bytes)
    }

    /// The tree under `root` as the model records it (`rows`: read the database's rows).
    pub(super) fn scan(&self, root: &Path, rows: bool) -> Tree {
        let mut t = Tree::new();
        for p in walk(root) {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let e = if m.is_dir() {
                Entry::Dir
            } else if rel == DB && rows {
                Entry::Db { rows: String::new() }
            } else {
                assert!(m.is_file(), "{rel}: neither file nor directory");
                let bytes = std::fs::read(&p).unwrap();
                Entry::File { len: bytes.len() as u64, hash: blake3::hash(&bytes).to_hex().to_string() }
            };
            t.insert(rel, e);
        }
        // Rows after the walk: opening a database may create a journal beside it.
        if let Some(e @ Entry::Db { .. }) = t.get_mut(DB) {
            *e = Entry::Db { rows: db_rows(&root.join(DB)) };
        }
        t
    }

    fn random_name(&mut self) -> String {
        const PARTS: [&str; 12] =
            ["a", "log", "x_y", "data", "Z9", "é", "n-1", "sub dir", ".hidden", "0", "long_name_", "q"];
        let mut s = String::new();
        for _ in 0..1 + self.rng.below(3) {
            let part = *self.rng.pick::<&str>(&PARTS);
            s.push_str(part);
        }
        if self.rng.chance(50) {
            let ext = *self.rng.pick::<&str>(&[".bin", ".txt", ".log", ""]);
            s.push_str(ext);
        }
        s
    }

    /// A new relative path: in an existing directory or a new nested one (never the database's).
    fn random_path(&mut self) -> String {
        let (_, mut dirs, _) = self.listing_src();
        dirs.retain(|d| d != "db");
        dirs.push(String::new());
        let mut p = self.rng.pick(&dirs).clone();
        for _ in 0..self.rng.below(3) {
            if self.rng.chance(40) {
                let n = self.random_name();
                p = if p.is_empty() { n } else { format!("{p}/{n}") };
            }
        }
        let n = self.random_name();
        if p.is_empty() {
            n
        } else {
            format!("{p}/{n}")
        }
    }

    fn random_size(&mut self) -> usize {
        match self.rng.below(20) {
            0..=3 => 0,
            4..=12 => self.rng.below(16 << 10) as usize,
            13..=18 => (16 << 10) + self.rng.below(240 << 10) as usize,
            _ => (1 << 20) + self.rng.below(2 << 20) as usize,
        }
    }

    /// Writes `bytes` to `rel` (creating parents), in place or through a rename.
    fn write(&mut self, rel: &str, bytes: &[u8]) {
        let p = self.src.join(rel);
        if p.is_dir() {
            return;
        }
        let parent = p.parent().unwrap();
        if parent.is_file() {
            return;
        }
        std::fs::create_dir_all(parent).unwrap();
        if self.rng.chance(50) {
            std::fs::write(&p, bytes).unwrap();
        } else {
            let tmp = parent.join(".robust-tmp");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, &p).unwrap();
        }
    }

    pub(super) fn mutate(&mut self) {
        let n = 1 + self.rng.below(5);
        for _ in 0..n {
            let (files, mut dirs, bytes) = self.listing_src();
            dirs.retain(|d| d != "db");
            let what = self.rng.below(10);
            let full = bytes > MAX_TREE_BYTES;
            match what {
                // New file (or a copy of an existing one, for dedup).
                0..=2 if !full => {
                    let rel = self.random_path();
                    let bytes = if !files.is_empty() && self.rng.chance(20) {
                        std::fs::read(self.src.join(self.rng.pick(&files))).unwrap()
                    } else {
                        let size = self.random_size();
                        prng_bytes(self.rng.next(), size)
                    };
                    self.note(format!("write {rel:?} ({} B)", bytes.len()));
                    self.write(&rel, &bytes);
                }
                // Modify: overwrite, append, truncate, or flip a range in place (same size).
                3..=4 if !files.is_empty() => {
                    let rel = self.rng.pick(&files).clone();
                    let p = self.src.join(&rel);
                    let mut b = std::fs::read(&p).unwrap();
                    let how = self.rng.below(4);
                    match how {
                        0 if !full => b = prng_bytes(self.rng.next(), self.random_size()),
                        1 if !full => b.extend(prng_bytes(self.rng.next(), self.rng.below(64 << 10) as usize)),
                        2 => b.truncate(self.rng.below(b.len() as u64 + 1) as usize),
                        _ => {
                            let at = self.rng.below(b.len() as u64 + 1) as usize;
                            let end = (at + 1 + self.rng.below(4096) as usize).min(b.len());
                            for x in &mut b[at..end] {
                                *x ^= 0xa5;
                            }
                        }
                    }
                    self.note(format!("modify {rel:?} (how {how}) -> {} B", b.len()));
                    self.write(&rel, &b);
                }
                5 if !files.is_empty() => {
                    let rel = self.rng.pick(&files).clone();
                    self.note(format!("delete {rel:?}"));
                    std::fs::remove_file(self.src.join(&rel)).unwrap();
                }
                6 if !dirs.is_empty() => {
                    let d = self.rng.pick(&dirs).clone();
                    self.note(format!("delete dir {d:?}"));
                    std::fs::remove_dir_all(self.src.join(&d)).unwrap();
                }
                7 if !files.is_empty() => {
                    let from = self.rng.pick(&files).clone();
                    let to = self.random_path();
                    let (pf, pt) = (self.src.join(&from), self.src.join(&to));
                    if !pt.exists() && pt.parent().is_some_and(|d| !d.is_file()) {
                        self.note(format!("rename {from:?} -> {to:?}"));
                        std::fs::create_dir_all(pt.parent().unwrap()).unwrap();
                        std::fs::rename(pf, pt).unwrap();
                    }
                }
                _ => self.update_db(),
            }
        }
    }

    /// Inserts, updates and deletes rows of the database (connection closed afterwards, so no
    /// `-journal` is left beside it).
    fn update_db(&mut self) {
        let c = rusqlite::Connection::open(self.src.join(DB)).unwrap();
        let ins = self.rng.below(300);
        let big = self.rng.chance(10);
        let tx = c.unchecked_transaction().unwrap();
        for _ in 0..ins {
            let len = if big { 4000 + self.rng.below(8000) } else { self.rng.below(200) };
            let v = prng_bytes(self.rng.next(), len as usize);
            tx.execute("INSERT INTO t(v, n) VALUES (?1, ?2)", rusqlite::params![v, self.rng.below(1000) as i64])
                .unwrap();
        }
        let upd = self.rng.below(50) as i64;
        let del = self.rng.below(40) as i64;
        let m = self.rng.below(7) as i64 + 2;
        tx.execute("UPDATE t SET n = n + 1 WHERE id % ?1 = 0 AND id < ?2", rusqlite::params![m, upd * m]).unwrap();
        tx.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY (id * 7919) % 1009 LIMIT ?1)", [del]).unwrap();
        tx.commit().unwrap();
        drop(c);
        let bytes = std::fs::metadata(self.src.join(DB)).unwrap().len();
        self.note(format!("db: +{ins} rows, updates every {m}th below {}, -{del} rows ({bytes} B file)", upd * m));
    }
}

/// The rows of table `t`, in id order, as one comparable string.
pub(super) fn db_rows(db: &Path) -> String {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("{}: {e}", db.display()));
    let check: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok", "{}: quick_check", db.display());
    let mut st = c.prepare("SELECT id, hex(v), n FROM t ORDER BY id").unwrap();
    let rows = st
        .query_map([], |r| Ok(format!("{}:{}:{}", r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))
        .unwrap();
    let mut h = blake3::Hasher::new();
    let mut n = 0;
    for row in rows {
        h.update(row.unwrap().as_bytes());
        h.update(b"\n");
        n += 1;
    }
    format!("{n} rows, {}", h.finalize().to_hex())
}
