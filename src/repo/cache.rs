//! The local SQLite cache (`cache/cache.sqlite`): the merged index (chunk -> pack), derived from
//! the repository's index files and rebuildable at any time. Non-normative (format-spec/cache.md).
//! A schema or repository mismatch drops and rebuilds it; a schema-1 or -2 cache is migrated in
//! place. Each chunk row also records the chunk its encoding references (`ref`: a delta's base,
//! a dictionary), which prune keeps and readers fetch first.
//! It also remembers packs found damaged (`damaged_packs`): their chunks are not deduplicated
//! against, so the next backup stores them again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::format::crypto::Keys;
use crate::format::index::{self, PackRecord};
use crate::id::{ChunkId, IndexId, PackId, RepoId};
use crate::store::{Handle, Store, StoreExt};

const SCHEMA_VERSION: i64 = 3;

/// Chunks whose row points into a pack marked damaged (used in `contains` and `add_index`).
const IN_DAMAGED_PACK: &str =
    "EXISTS (SELECT 1 FROM packs p JOIN damaged_packs d ON d.id = p.id WHERE p.pid = chunks.pack)";

/// Where a chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Pack holding it.
    pub pack: PackId,
    /// Offset of the sealed blob.
    pub offset: u32,
    /// Sealed length.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// The chunk its encoding references, as the index records it (`blob::reference`).
    pub reference: Option<ChunkId>,
}

/// The cache database.
pub struct Cache {
    conn: Connection,
    path: PathBuf,
}

/// Problems found while loading index files into the cache.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Index files newly loaded.
    pub loaded: usize,
    /// Index files that could not be read or decoded, with the error.
    pub bad: Vec<(IndexId, Error)>,
}

impl Cache {
    fn wrap<T>(&self, r: rusqlite::Result<T>) -> Result<T> {
        r.map_err(|source| Error::cache(&self.path, source))
    }

    /// A cache in memory, empty, for a repository whose cache file cannot be written (a full
    /// disk, a read-only repository): filled from the index files by [`Cache::sync`], dropped at
    /// exit.
    pub fn open_memory(repo: RepoId) -> Result<Self> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| Error::cache(&path, e))?;
        let cache = Cache { conn, path };
        cache.create(repo)?;
        Ok(cache)
    }

    /// Whether this cache lives in memory ([`Cache::open_memory`]).
    pub fn in_memory(&self) -> bool {
        self.path.as_os_str() == ":memory:"
    }

    /// Opens (creating or rebuilding if stale) the cache at `path` for repository `repo`. A file
    /// SQLite reports as not a database or corrupt is deleted and rebuilt: it is derived state.
    pub fn open(path: &Path, repo: RepoId) -> Result<Self> {
        match Self::open_once(path, repo) {
            Err(Error::Cache { err: source, .. })
                if matches!(
                    source.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
                ) =>
            {
                tracing::warn!("cache {} is damaged ({source}); rebuilding it", path.display());
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                Self::open_once(path, repo)
            }
            r => r,
        }
    }

    /// A private scratch index (verify): one process, no journal, no per-statement file locks.
    pub fn open_scratch(path: &Path, repo: RepoId) -> Result<Self> {
        let cache = Self::open_once(path, repo)?;
        cache.wrap(cache.conn.execute_batch(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE; PRAGMA cache_size=-8000;",
        ))?;
        Ok(cache)
    }

    fn open_once(path: &Path, repo: RepoId) -> Result<Self> {
        let e = |source| Error::cache(path, source);
        let conn = Connection::open(path).map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(e)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-4000;")
            .map_err(e)?;
        let cache = Cache { conn, path: path.to_path_buf() };
        let ok: Option<(i64, Vec<u8>)> = cache
            .conn
            .query_row("SELECT (SELECT v FROM meta WHERE k='schema'), (SELECT v FROM meta WHERE k='repo')", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .ok();
        match ok {
            Some((SCHEMA_VERSION, r)) if r == repo.0 => {}
            // Schema 1 lacks `damaged_packs` and `chunks.ref`, schema 2 the latter: add what is
            // missing (a column already there is left alone) and keep the loaded index (index
            // files older than references record none).
            Some((1 | 2, r)) if r == repo.0 => {
                let has_ref: bool = cache.wrap(cache.conn.query_row(
                    "SELECT count(*) > 0 FROM pragma_table_info('chunks') WHERE name = 'ref'",
                    [],
                    |r| r.get(0),
                ))?;
                let add_ref = if has_ref { "" } else { "ALTER TABLE chunks ADD COLUMN ref BLOB;" };
                cache.wrap(cache.conn.execute_batch(&format!(
                    "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS damaged_packs(id BLOB PRIMARY KEY, reason TEXT NOT NULL) WITHOUT ROWID;
                     {add_ref} UPDATE meta SET v = 3 WHERE k = 'schema'; COMMIT;"
                )))?
            }
            _ => cache.create(repo)?,
        }
        Ok(cache)
    }

    fn create(&self, repo: RepoId) -> Result<()> {
        self.wrap(self.conn.execute_batch(
            "DROP TABLE IF EXISTS meta; DROP TABLE IF EXISTS index_files; DROP TABLE IF EXISTS packs;
             DROP TABLE IF EXISTS chunks; DROP TABLE IF EXISTS damaged_packs;
             CREATE TABLE meta(k TEXT PRIMARY KEY, v ANY) STRICT;
             CREATE TABLE index_files(id BLOB PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE packs(pid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, size INTEGER NOT NULL);
             CREATE TABLE chunks(id BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,
                                 stored_len INTEGER NOT NULL, raw_len INTEGER NOT NULL, ref BLOB) WITHOUT ROWID;
             CREATE TABLE damaged_packs(id BLOB PRIMARY KEY, reason TEXT NOT NULL) WITHOUT ROWID;",
        ))?;
        self.wrap(self.conn.execute("INSERT INTO meta VALUES('schema', ?1)", [SCHEMA_VERSION]))?;
        self.wrap(self.conn.execute("INSERT INTO meta VALUES('repo', ?1)", [repo.0.to_vec()]))?;
        Ok(())
    }

    /// Empties the index tables (rebuild).
    pub fn clear(&self) -> Result<()> {
        self.wrap(self.conn.execute_batch("DELETE FROM index_files; DELETE FROM chunks; DELETE FROM packs;"))
    }

    /// Brings the cache in line with the repository's `index/` directory: loads new index files;
    /// if one it knew has disappeared, rebuilds from scratch.
    pub fn sync(&mut self, store: &dyn Store, keys: &Keys) -> Result<SyncReport> {
        let listed: Vec<IndexId> = store.index_ids()?;
        let known: HashSet<IndexId> = {
            let mut st = self.wrap(self.conn.prepare("SELECT id FROM index_files"))?;
            let rows = self.wrap(st.query_map([], |r| r.get::<_, Vec<u8>>(0)))?;
            let mut s = HashSet::new();
            for r in rows {
                if let Some(id) = IndexId::from_slice(&self.wrap(r)?) {
                    s.insert(id);
                }
            }
            s
        };
        let listed_set: HashSet<IndexId> = listed.iter().copied().collect();
        let mut report = SyncReport::default();
        if known.iter().any(|k| !listed_set.contains(k)) {
            return self.rebuild(store, keys);
        }
        let todo: Vec<IndexId> = listed.into_iter().filter(|i| !known.contains(i)).collect();
        for id in todo {
            match read_index_file(store, keys, &id) {
                Ok(records) => {
                    self.add_index(&id, &records)?;
                    report.loaded += 1;
                }
                Err(e) => report.bad.push((id, e)),
            }
        }
        Ok(report)
    }

    /// Records an index file's content.
    pub fn add_index(&mut self, id: &IndexId, records: &[PackRecord]) -> Result<()> {
        let tx = self.conn.transaction().map_err(|source| Error::cache(&self.path, source))?;
        insert_index(&tx, id, records).and_then(|_| tx.commit()).map_err(|source| Error::cache(&self.path, source))
    }

    /// Empties the index tables and reloads every index file in `store`, in one transaction: other
    /// processes see the old rows or the new ones, never an empty cache. Damage marks stay.
    pub fn rebuild(&mut self, store: &dyn Store, keys: &Keys) -> Result<SyncReport> {
        let path = self.path.clone();
        let e = |source| Error::cache(&path, source);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(e)?;
        tx.execute_batch("DELETE FROM index_files; DELETE FROM chunks; DELETE FROM packs;").map_err(e)?;
        let mut report = SyncReport::default();
        for id in store.index_ids()? {
            match read_index_file(store, keys, &id) {
                Ok(records) => {
                    insert_index(&tx, &id, &records).map_err(e)?;
                    report.loaded += 1;
                }
                Err(err) => report.bad.push((id, err)),
            }
        }
        tx.commit().map_err(e)?;
        Ok(report)
    }

    /// Marks a pack damaged (verify or a read found it so); returns whether it was not marked yet.
    pub fn mark_damaged(&self, pack: &PackId, reason: &str) -> Result<bool> {
        let n =
            self.wrap(self.conn.execute(
                "INSERT OR IGNORE INTO damaged_packs(id, reason) VALUES(?1, ?2)",
                params![&pack.0[..], reason],
            ))?;
        Ok(n > 0)
    }

    /// Clears a pack's damage mark (it read back whole, or `repair packs` dropped it).
    pub fn unmark_damaged(&self, pack: &PackId) -> Result<()> {
        self.wrap(self.conn.execute("DELETE FROM damaged_packs WHERE id=?1", [&pack.0[..]])).map(|_| ())
    }

    /// Packs marked damaged, with the reason recorded.
    pub fn damaged_packs(&self) -> Result<Vec<(PackId, String)>> {
        let mut st = self.wrap(self.conn.prepare("SELECT id, reason FROM damaged_packs ORDER BY id"))?;
        let rows = self.wrap(st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, reason) = self.wrap(r)?;
            if let Some(id) = PackId::from_slice(&id) {
                out.push((id, reason));
            }
        }
        Ok(out)
    }

    /// Every chunk row in id order, for comparison with the index files (verify).
    pub fn for_each_row(&self, mut f: impl FnMut(ChunkId, Location) -> Result<()>) -> Result<()> {
        let mut st = self.wrap(self.conn.prepare(
            "SELECT c.id, p.id, c.offset, c.stored_len, c.raw_len, c.ref FROM chunks c LEFT JOIN packs p ON p.pid = c.pack
             ORDER BY c.id",
        ))?;
        let mut rows = self.wrap(st.query([]))?;
        while let Some(r) = self.wrap(rows.next())? {
            let row = (|| -> rusqlite::Result<_> {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<Vec<u8>>>(5)?,
                ))
            })();
            // A damaged row (wrong type, out-of-range number, dangling pack) compares unequal.
            let (id, pack, offset, stored_len, raw_len, reference) = match row {
                Ok(v) => v,
                Err(_) => (r.get::<_, Vec<u8>>(0).unwrap_or_default(), None, -1, -1, -1, Some(Vec::new())),
            };
            let id = ChunkId::from_slice(&id).unwrap_or_default();
            let loc = Location {
                pack: pack.and_then(|p| PackId::from_slice(&p)).unwrap_or_default(),
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
                stored_len: u32::try_from(stored_len).unwrap_or(u32::MAX),
                raw_len: u32::try_from(raw_len).unwrap_or(u32::MAX),
                reference: reference.map(|r| ChunkId::from_slice(&r).unwrap_or_default()),
            };
            f(id, loc)?;
        }
        Ok(())
    }

    /// Up to `limit` chunk rows with ids above `after` (from the first when `None`), in id
    /// order, each as [`Cache::lookup`] gives it: a cursor over the index (verify).
    pub fn rows_after(&self, after: Option<&ChunkId>, limit: usize) -> Result<Vec<(ChunkId, Location)>> {
        let mut st = self.wrap(self.conn.prepare_cached(
            "SELECT c.id, p.id, c.offset, c.stored_len, c.raw_len, c.ref FROM chunks c JOIN packs p ON p.pid = c.pack
             WHERE c.id > ?1 ORDER BY c.id LIMIT ?2",
        ))?;
        let after: &[u8] = after.map_or(&[], |a| &a.0[..]);
        let rows = self.wrap(st.query_map(params![after, limit as i64], |r| {
            let reference: Option<Vec<u8>> = r.get(5)?;
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                Location {
                    pack: PackId::from_slice(&r.get::<_, Vec<u8>>(1)?).unwrap_or_default(),
                    offset: r.get(2)?,
                    stored_len: r.get(3)?,
                    raw_len: r.get(4)?,
                    reference: reference.map(|b| ChunkId::from_slice(&b).unwrap_or_default()),
                },
            ))
        }))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, loc) = self.wrap(r)?;
            out.push((ChunkId::from_slice(&id).unwrap_or_default(), loc));
        }
        Ok(out)
    }

    /// Runs many lookups under one read transaction: one file lock instead of one per statement.
    pub fn batch<T>(&self, f: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        self.wrap(self.conn.execute_batch("BEGIN"))?;
        let r = f(self);
        let end = self.wrap(self.conn.execute_batch("COMMIT"));
        let v = r?;
        end?;
        Ok(v)
    }

    /// Location of a chunk.
    pub fn lookup(&self, id: &ChunkId) -> Result<Option<Location>> {
        let mut st = self.wrap(self.conn.prepare_cached(
            "SELECT p.id, c.offset, c.stored_len, c.raw_len, c.ref FROM chunks c JOIN packs p ON p.pid = c.pack WHERE c.id=?1",
        ))?;
        let row = st
            .query_row([&id.0[..]], |r| {
                let pack: Vec<u8> = r.get(0)?;
                let reference: Option<Vec<u8>> = r.get(4)?;
                Ok(Location {
                    pack: PackId::from_slice(&pack).unwrap_or_default(),
                    offset: r.get(1)?,
                    stored_len: r.get(2)?,
                    raw_len: r.get(3)?,
                    reference: match reference {
                        None => None,
                        Some(b) => Some(ChunkId::from_slice(&b).ok_or_else(|| {
                            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Blob, "bad ref".into())
                        })?),
                    },
                })
            })
            .optional();
        match row {
            // A damaged row (a value of the wrong type or out of range) is no location: the
            // caller rebuilds the cache from the index files before calling the chunk missing.
            Err(
                e @ (rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)),
            ) => {
                tracing::warn!("cache {}: the row of chunk {id} is damaged ({e})", self.path.display());
                Ok(None)
            }
            r => self.wrap(r),
        }
    }

    /// Locations of many chunks, in input order (`lookup` for each). The ids are probed in sorted
    /// order under one read transaction: a file's chunk ids are random, and probing them in file
    /// order touches one random B-tree page each (more pages than the page cache holds, so most
    /// are read again); sorted, consecutive probes share their pages. Each pack's id is read once.
    pub fn lookup_many(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_unstable_by_key(|&i| ids[i]);
        let mut out = vec![None; ids.len()];
        self.batch(|c| {
            let mut st =
                c.wrap(c.conn.prepare_cached("SELECT pack, offset, stored_len, raw_len, ref FROM chunks WHERE id=?1"))?;
            let mut pack_st = c.wrap(c.conn.prepare_cached("SELECT id FROM packs WHERE pid=?1"))?;
            let mut packs: HashMap<i64, Option<PackId>> = HashMap::new();
            let mut prev: Option<(ChunkId, Option<Location>)> = None;
            for i in order {
                let id = ids[i];
                if let Some((p, l)) = prev.filter(|(p, _)| *p == id) {
                    out[i] = l;
                    prev = Some((p, l));
                    continue;
                }
                let row = st
                    .query_row([&id.0[..]], |r| {
                        let reference = match r.get::<_, Option<Vec<u8>>>(4)? {
                            None => None,
                            Some(b) => Some(ChunkId::from_slice(&b).ok_or_else(|| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    4,
                                    rusqlite::types::Type::Blob,
                                    "bad ref".into(),
                                )
                            })?),
                        };
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, u32>(1)?,
                            r.get::<_, u32>(2)?,
                            r.get::<_, u32>(3)?,
                            reference,
                        ))
                    })
                    .optional();
                let loc = match row {
                    Ok(Some((pid, offset, stored_len, raw_len, reference))) => {
                        let pack = match packs.get(&pid) {
                            Some(p) => *p,
                            None => {
                                // A damaged pack row (an id of the wrong type) locates nothing.
                                let p = match pack_st.query_row([pid], |r| r.get::<_, Vec<u8>>(0)).optional() {
                                    Ok(b) => b.map(|b| PackId::from_slice(&b).unwrap_or_default()),
                                    Err(
                                        rusqlite::Error::InvalidColumnType(..)
                                        | rusqlite::Error::FromSqlConversionFailure(..),
                                    ) => None,
                                    Err(e) => return Err(Error::cache(&c.path, e)),
                                };
                                packs.insert(pid, p);
                                p
                            }
                        };
                        pack.map(|pack| Location { pack, offset, stored_len, raw_len, reference })
                    }
                    Ok(None) => None,
                    // As in `lookup`: a damaged row is no location (the caller rechecks).
                    Err(
                        e @ (rusqlite::Error::InvalidColumnType(..)
                        | rusqlite::Error::FromSqlConversionFailure(..)
                        | rusqlite::Error::IntegralValueOutOfRange(..)),
                    ) => {
                        tracing::warn!("cache {}: the row of chunk {id} is damaged ({e})", c.path.display());
                        None
                    }
                    Err(e) => return Err(Error::cache(&c.path, e)),
                };
                out[i] = loc;
                prev = Some((id, loc));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// `contains` for many chunks, in input order, probed in sorted order (see `lookup_many`).
    pub fn contains_many(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_unstable_by_key(|&i| ids[i]);
        let mut out = vec![false; ids.len()];
        self.batch(|c| {
            // With no pack marked damaged (always so in verify's scratch index) a row is enough:
            // one B-tree probe per id instead of three.
            let any_damaged: bool =
                c.wrap(c.conn.query_row("SELECT EXISTS (SELECT 1 FROM damaged_packs)", [], |r| r.get(0)))?;
            let mut plain = c.wrap(c.conn.prepare_cached("SELECT 1 FROM chunks WHERE id=?1"))?;
            let mut prev: Option<(ChunkId, bool)> = None;
            for i in order {
                let id = ids[i];
                out[i] = match prev {
                    Some((p, known)) if p == id => known,
                    _ if any_damaged => c.contains(&id)?,
                    _ => c.wrap(plain.exists([&id.0[..]]))?,
                };
                prev = Some((id, out[i]));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Whether a chunk is stored in a pack not marked damaged (a backup stores it otherwise).
    pub fn contains(&self, id: &ChunkId) -> Result<bool> {
        let mut st = self
            .wrap(self.conn.prepare_cached(&format!("SELECT 1 FROM chunks WHERE id=?1 AND NOT {IN_DAMAGED_PACK}")))?;
        self.wrap(st.exists([&id.0[..]]))
    }

    /// Every indexed pack with its size.
    pub fn packs(&self) -> Result<Vec<(PackId, u64)>> {
        let mut st = self.wrap(self.conn.prepare("SELECT id, size FROM packs ORDER BY id"))?;
        let rows = self.wrap(st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, size) = self.wrap(r)?;
            if let Some(id) = PackId::from_slice(&id) {
                out.push((id, size as u64));
            }
        }
        Ok(out)
    }

    /// Indexes the chunks by pack, so `pack_entries` reads a pack's rows instead of scanning
    /// every row (verify's scratch index asks it once per pack; built after loading, so the
    /// loading inserts maintain one B-tree, not two). The index holds every column
    /// `pack_entries` returns: reading it needs no probe of the table per row.
    pub fn index_by_pack(&self) -> Result<()> {
        self.wrap(self.conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack, offset, stored_len, raw_len, ref)",
        ))
    }

    /// The chunks the index places in `pack`, in offset order.
    pub fn pack_entries(&self, pack: &PackId) -> Result<Vec<crate::format::pack::Entry>> {
        let mut st = self.wrap(self.conn.prepare_cached(
            "SELECT c.id, c.offset, c.stored_len, c.raw_len, c.ref FROM chunks c JOIN packs p ON p.pid=c.pack
             WHERE p.id=?1 ORDER BY c.offset",
        ))?;
        let rows = self.wrap(st.query_map([&pack.0[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, Option<Vec<u8>>>(4)?,
            ))
        }))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, offset, stored_len, raw_len, reference) = self.wrap(r)?;
            out.push(crate::format::pack::Entry {
                id: ChunkId::from_slice(&id).unwrap_or_default(),
                offset,
                stored_len,
                raw_len,
                reference: reference.map(|r| ChunkId::from_slice(&r).unwrap_or_default()),
            });
        }
        Ok(out)
    }

    /// Every (chunk, the chunk it references) pair the index records, streamed.
    pub fn for_each_reference(&self, mut f: impl FnMut(ChunkId, ChunkId)) -> Result<()> {
        let mut st = self.wrap(self.conn.prepare("SELECT id, ref FROM chunks WHERE ref IS NOT NULL"))?;
        let rows = self.wrap(st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))))?;
        for r in rows {
            let (id, reference) = self.wrap(r)?;
            f(ChunkId::from_slice(&id).unwrap_or_default(), ChunkId::from_slice(&reference).unwrap_or_default());
        }
        Ok(())
    }

    /// The references that do not resolve to a chunk stored whole: (chunk, referenced chunk,
    /// whether the referenced chunk is indexed at all). The pairs are read in the order of the
    /// referenced id, so consecutive probes share B-tree pages (as in `lookup_many`), and only
    /// the broken ones are kept: every page of a database is a reference (a slice or a delta), and
    /// holding them all cost 32 MB at 1 GiB.
    pub fn broken_references(&self) -> Result<Vec<(ChunkId, ChunkId, bool)>> {
        self.batch(|c| {
            let mut pairs = c.wrap(c.conn.prepare("SELECT id, ref FROM chunks WHERE ref IS NOT NULL ORDER BY ref"))?;
            let mut probe = c.wrap(c.conn.prepare_cached("SELECT ref IS NOT NULL FROM chunks WHERE id=?1"))?;
            let rows = c.wrap(pairs.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))))?;
            let mut out = Vec::new();
            // (referenced id, what its row says: None = no row, Some(chained)).
            let mut prev: Option<(Vec<u8>, Option<bool>)> = None;
            for row in rows {
                let (id, reference) = c.wrap(row)?;
                let state = match &prev {
                    Some((r, state)) if *r == reference => *state,
                    _ => {
                        let state = c.wrap(probe.query_row([&reference[..]], |r| r.get::<_, bool>(0)).optional())?;
                        prev = Some((reference.clone(), state));
                        state
                    }
                };
                if state != Some(false) {
                    out.push((
                        ChunkId::from_slice(&id).unwrap_or_default(),
                        ChunkId::from_slice(&reference).unwrap_or_default(),
                        state.is_some(),
                    ));
                }
            }
            Ok(out)
        })
    }

    /// Counts: (chunks, packs, sum of pack sizes, sum of raw chunk lengths).
    pub fn totals(&self) -> Result<(u64, u64, u64, u64)> {
        self.wrap(self.conn.query_row(
            "SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM packs),
                    (SELECT coalesce(sum(size),0) FROM packs), (SELECT coalesce(sum(raw_len),0) FROM chunks)",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)? as u64,
                ))
            },
        ))
    }
}

/// Inserts one index file's records. The first location of a chunk wins, except over a location
/// in a pack marked damaged: a chunk stored again after damage is read from its new copy.
fn insert_index(conn: &Connection, id: &IndexId, records: &[PackRecord]) -> rusqlite::Result<()> {
    let mut ins_pack = conn.prepare_cached("INSERT OR IGNORE INTO packs(id, size) VALUES(?1, ?2)")?;
    let mut get_pack = conn.prepare_cached("SELECT pid FROM packs WHERE id=?1")?;
    let mut ins = conn.prepare_cached(&format!(
        "INSERT INTO chunks(id, pack, offset, stored_len, raw_len, ref) VALUES(?1,?2,?3,?4,?5,?6)
         ON CONFLICT(id) DO UPDATE SET pack=excluded.pack, offset=excluded.offset,
             stored_len=excluded.stored_len, raw_len=excluded.raw_len, ref=excluded.ref
         WHERE {IN_DAMAGED_PACK} AND NOT EXISTS (SELECT 1 FROM packs p JOIN damaged_packs d ON d.id = p.id
                                                 WHERE p.pid = excluded.pack)"
    ))?;
    let mut rows = Vec::with_capacity(records.iter().map(|p| p.entries.len()).sum());
    for p in records {
        ins_pack.execute(params![&p.id.0[..], p.size as i64])?;
        let pid: i64 = get_pack.query_row([&p.id.0[..]], |r| r.get(0))?;
        rows.extend(p.entries.iter().map(|e| (pid, e)));
    }
    // In id order, so consecutive inserts land on the same B-tree pages instead of one random
    // page each. Stable: a chunk listed twice keeps its first location, as in record order.
    rows.sort_by_key(|(_, e)| e.id);
    for (pid, e) in rows {
        ins.execute(params![&e.id.0[..], pid, e.offset, e.stored_len, e.raw_len, e.reference.map(|r| r.0.to_vec())])?;
    }
    conn.execute("INSERT OR IGNORE INTO index_files(id) VALUES(?1)", [&id.0[..]])?;
    Ok(())
}

/// Reads, checks (name = content hash) and opens an index file.
pub fn read_index_file(store: &dyn Store, keys: &Keys, id: &IndexId) -> Result<Vec<PackRecord>> {
    let bytes = store.get(Handle::Index(*id))?;
    let what = || format!("index file {id}");
    if crate::id::content_hash(&bytes) != id.0 {
        return Err(Error::corrupt(what(), "content does not match its name (hash mismatch)"));
    }
    index::open(keys, &bytes, &what)
}
