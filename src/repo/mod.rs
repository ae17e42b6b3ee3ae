//! An open repository: its store, config, keys and cache. Holds no business logic; the
//! operations live in `backup`, `restore`, `verify`, `keys`.

use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

pub mod cache;
pub mod chunks;
pub mod pack;
pub mod packer;
mod reader;
pub mod recheck;
pub mod tree;
mod verifications;

use crate::error::{Error, Result};
use crate::format::chunker::Cutter;
use crate::format::crypto::{Keys, MasterKey};
use crate::format::keyfile::{KdfParams, KeyFile};
use crate::format::manifest::Snapshot;
use crate::format::pack::{read_trailer_with, Entry};
use crate::format::repo_config::{
    default_chunkers, Compression, CompressionAlgorithm, Encryption, RepoConfig, FORMAT_NAME, FORMAT_VERSION,
};
use crate::id::{content_hash, ChunkId, KeyId, PackId, RepoId, SnapshotId};
use crate::repo::cache::{Cache, Location, SyncReport};
use crate::repo::packer::IndexBatch;
pub use crate::repo::reader::{ChunkReader, Dependent};
use crate::repo::recheck::Recheck;
pub use crate::repo::tree::TreeReader;
use crate::store::fetching::FetchingStore;
use crate::store::{Handle, LocalStore, Store, StoreExt};

/// Supplies the password when one is needed (never asked for unencrypted repositories).
pub type PasswordFn<'a> = &'a dyn Fn() -> Result<Zeroizing<Vec<u8>>>;

/// Options for `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Encrypt (default) or not.
    pub encryption: Encryption,
    /// zstd level.
    pub compression_level: i32,
    /// Target pack size.
    pub pack_size: u64,
    /// Argon2id cost of the initial key file (the real defaults unless the caller chose others).
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encryption: Encryption::XChaCha20Poly1305,
            compression_level: 3,
            pack_size: 16 << 20,
            kdf: KdfParams::default(),
        }
    }
}

/// An open repository.
pub struct Repo {
    // The local directory: where the pack writer streams and publishes packs, locks are taken,
    // and the local state (cache, history) lives.
    store: LocalStore,
    config: RepoConfig,
    keys: Arc<Keys>,
    cache: Cache,
    // Every read goes through here: the local store itself, or a fetching store when the
    // directory is a partial mirror of a remote.
    objects: Arc<dyn Store>,
    // What a failed chunk read consults before calling the data corrupt (recheck.rs).
    recheck: Arc<Recheck>,
    // A partial mirror of a remote: it may lack snapshots the repository has.
    mirror: bool,
}

/// Readable snapshots (oldest first) and unreadable ones with their error.
pub type SnapshotList = (Vec<(SnapshotId, Snapshot)>, Vec<(SnapshotId, Error)>);

/// Whether `dir` looks like a repository (has a `config`).
pub fn is_repository(dir: &Path) -> bool {
    LocalStore::new(dir).size(Handle::Config).ok().flatten().is_some()
}

/// Creates a repository at `dir` (which must not exist or be empty). `password` is required
/// for encrypted repositories.
pub fn init(dir: &Path, opts: &InitOptions, password: Option<&[u8]>) -> Result<RepoConfig> {
    if !LocalStore::is_absent_or_empty(dir)? {
        return Err(Error::Invalid(format!(
            "{}: directory exists and is not empty{}",
            dir.display(),
            if is_repository(dir) { " (it is already a cairn repository)" } else { "" }
        )));
    }
    let master = MasterKey::random();
    let mut id = [0u8; 32];
    crate::util::os_random(&mut id);
    let id = RepoId(id);
    let config = RepoConfig {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        id,
        created: chrono::Local::now().to_rfc3339(),
        encryption: opts.encryption,
        plain_master_key: (opts.encryption == Encryption::None).then(|| hex::encode(master.0)),
        compression: Compression { algorithm: CompressionAlgorithm::Zstd, level: opts.compression_level },
        pack_size: opts.pack_size,
        chunkers: default_chunkers(),
        sqlite_pages: true,
    };
    config.validate().map_err(Error::Invalid)?;
    let keyfile = match opts.encryption {
        Encryption::XChaCha20Poly1305 => {
            let pw = password.ok_or(Error::NoPassword)?;
            Some(KeyFile::wrap(&master, id, pw, opts.kdf, "initial")?)
        }
        Encryption::None => None,
    };
    LocalStore::create_atomically(dir, |store| {
        if let Some(kf) = keyfile {
            let mut r = [0u8; 32];
            crate::util::os_random(&mut r);
            store.put(Handle::Key(KeyId(r)), &kf.to_bytes())?;
        }
        store.put(Handle::Config, &config.to_bytes())
    })?;
    Ok(config)
}

/// Reads and validates the config of the repository at `dir`.
pub fn read_config(dir: &Path) -> Result<RepoConfig> {
    let not = |detail: String| Error::NotARepository { path: dir.to_path_buf(), detail };
    if !dir.exists() {
        return Err(not("repository does not exist (create it with `cairn init`)".into()));
    }
    if !dir.is_dir() {
        return Err(not("not a directory".into()));
    }
    read_config_from(&LocalStore::new(dir), dir)
}

/// Reads and validates the config in `store`; `path` names the repository in errors.
pub fn read_config_from(store: &dyn Store, path: &Path) -> Result<RepoConfig> {
    let not = |detail: String| Error::NotARepository { path: path.to_path_buf(), detail };
    let bytes = match store.get(Handle::Config) {
        Ok(b) => b,
        Err(Error::ObjectNotFound { .. }) => return Err(not("not a cairn repository (no config file)".into())),
        Err(e) => return Err(e),
    };
    let config: RepoConfig = serde_json::from_slice(&bytes)
        .map_err(|e| not(format!("config is not a valid cairn repository config: {e}")))?;
    config.validate().map_err(not)?;
    Ok(config)
}

/// Where a store keeps its key files, for messages.
fn keys_location(store: &dyn Store) -> String {
    let one = store.location(Handle::Key(KeyId::default()));
    one.strip_suffix(&format!("/{}", KeyId::default().to_hex())).map(str::to_string).unwrap_or(one)
}

/// Finds the master key: from the config (unencrypted) or by trying the password on each key file.
pub fn unlock(store: &dyn Store, config: &RepoConfig, password: PasswordFn) -> Result<(MasterKey, Option<String>)> {
    match config.encryption {
        Encryption::None => {
            let keys = store.key_ids()?;
            if !keys.is_empty() {
                return Err(Error::NotARepository {
                    path: keys_location(store).trim_end_matches("/keys").into(),
                    detail: "config says unencrypted but key files exist: the config may have been altered; refusing to open".into(),
                });
            }
            let mut k = [0u8; 32];
            hex::decode_to_slice(config.plain_master_key.as_deref().unwrap_or(""), &mut k)
                .map_err(|_| Error::corrupt("config", "bad plain_master_key"))?;
            Ok((MasterKey(k), None))
        }
        Encryption::XChaCha20Poly1305 => {
            let names: Vec<String> = store.key_ids()?.iter().map(KeyId::to_hex).collect();
            if names.is_empty() {
                return Err(Error::corrupt(keys_location(store), "no key files: the repository cannot be opened"));
            }
            let mut files = Vec::new();
            let mut damaged = Vec::new();
            for n in &names {
                let bytes = store.get(Handle::Key(n.parse().expect("listed names are hex")))?;
                match KeyFile::parse(&bytes, n) {
                    Ok(kf) => files.push((n.clone(), kf)),
                    Err(e) => damaged.push(e),
                }
            }
            if files.is_empty() {
                return Err(damaged.remove(0));
            }
            let pw = password()?;
            // A key file planted from another repository must not lock the owner out: skip it,
            // and only report it if no key of this repository opens.
            let mut foreign = None;
            for (n, kf) in &files {
                if let Some((mk, id)) = kf.unwrap_key(&pw, n)? {
                    if id != config.id {
                        tracing::warn!("key file {n} belongs to another repository; ignoring it");
                        foreign = Some(Error::corrupt(format!("key file {n}"), "belongs to another repository"));
                        continue;
                    }
                    for d in damaged {
                        tracing::warn!("{d}");
                    }
                    return Ok((mk, Some(n.clone())));
                }
            }
            Err(foreign.unwrap_or_else(|| Error::WrongPassword(keys_location(store).into())))
        }
    }
}

impl Repo {
    /// Opens the repository at `dir`.
    pub fn open(dir: &Path, password: PasswordFn) -> Result<Repo> {
        let store = LocalStore::new(dir);
        Self::open_with(store.clone(), Arc::new(store), dir, password, false)
    }

    /// Opens the partial mirror of `remote` at `dir` (refreshed by `ops::clone::refresh_mirror`):
    /// packs it lacks are fetched from the remote on first use.
    pub fn open_mirror(dir: &Path, remote: Arc<dyn Store>, password: PasswordFn) -> Result<Repo> {
        let store = LocalStore::new(dir);
        Self::open_with(store.clone(), Arc::new(FetchingStore::new(store, remote)), dir, password, true)
    }

    fn open_with(
        store: LocalStore,
        objects: Arc<dyn Store>,
        dir: &Path,
        password: PasswordFn,
        mirror: bool,
    ) -> Result<Repo> {
        let config = read_config(dir)?;
        let (master, _) = unlock(objects.as_ref(), &config, password)?;
        let keys = Arc::new(Keys::derive(&master, config.id, config.encryption == Encryption::XChaCha20Poly1305));
        // The index cache is local state, not a repository object (format-spec/cache.md).
        let cache_path = store.root().join("cache").join("cache.sqlite");
        let cache = match store.local_state_dir("cache").and_then(|_| Cache::open(&cache_path, config.id)) {
            Ok(c) => c,
            Err(e) if e.is_unwritable() => memory_cache(&e, config.id)?,
            Err(e) => return Err(e),
        };
        let recheck = Arc::new(Recheck::new(cache_path, config.id, objects.clone(), keys.clone()));
        Ok(Repo { store, config, keys, cache, objects, recheck, mirror })
    }

    /// Another handle on the same repository: the keys already derived (no password, no key
    /// derivation) and a connection of its own to the index cache. `serve` answers each request
    /// from one, so new snapshots and index files show without a restart.
    pub fn reopen(&self) -> Result<Repo> {
        let cache_path = self.store.root().join("cache").join("cache.sqlite");
        let cache = match Cache::open(&cache_path, self.config.id) {
            Ok(c) => c,
            Err(e) if e.is_unwritable() || self.cache.in_memory() => memory_cache(&e, self.config.id)?,
            Err(e) => return Err(e),
        };
        Ok(Repo {
            store: self.store.clone(),
            config: self.config.clone(),
            keys: self.keys.clone(),
            cache,
            objects: self.objects.clone(),
            recheck: self.recheck.clone(),
            mirror: self.mirror,
        })
    }

    /// The local directory: where packs are written, locks taken and local state kept.
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// The repository config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The working keys.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// The local index cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Empties the index cache and rebuilds it from the index files in the local store.
    pub fn rebuild_cache(&mut self) -> Result<SyncReport> {
        match self.cache.rebuild(&self.store, &self.keys) {
            Err(e) if e.is_unwritable() && !self.cache.in_memory() => {
                self.cache = memory_cache(&e, self.config.id)?;
                self.cache.rebuild(&self.store, &self.keys)
            }
            r => r,
        }
    }

    /// Rebuilds the cache from the index files through a connection of its own (callers that
    /// hold the repository shared, such as verify).
    pub fn repair_cache(&self) -> Result<SyncReport> {
        self.recheck.rebuild_now()
    }

    /// An index writer over the local store that also records what it writes in the cache
    /// (borrows the cache for as long as it lives).
    pub fn index_batch(&mut self) -> IndexBatch<'_> {
        IndexBatch::new(self.store.clone(), self.keys.clone(), Some(&mut self.cache))
    }

    /// Whether this is a partial mirror of a remote (`--remote`), which may lack snapshots the
    /// repository has (not uploaded yet, or left out by the remote's own retention).
    pub fn is_mirror(&self) -> bool {
        self.mirror
    }

    /// The store every read goes through (the local store, or a fetching mirror of a remote).
    pub fn objects(&self) -> &Arc<dyn Store> {
        &self.objects
    }

    /// Reads, opens and checks a pack's trailer (without its chunks): its entries and size.
    pub fn pack_trailer(&self, pack: &PackId) -> Result<(Vec<Entry>, u64)> {
        let h = Handle::Pack(*pack);
        let size = self.objects.size(h)?.ok_or_else(|| Error::ObjectNotFound { what: self.objects.location(h) })?;
        read_trailer_with(size, &self.keys, pack, &|offset, len| self.objects.get_range(h, offset, len))
    }

    /// Loads new index files into the cache; unreadable ones are logged (verify reports them).
    pub fn sync_index(&mut self) -> Result<()> {
        let r = match self.cache.sync(self.objects.as_ref(), &self.keys) {
            Err(e) if e.is_unwritable() && !self.cache.in_memory() => {
                self.cache = memory_cache(&e, self.config.id)?;
                self.cache.sync(self.objects.as_ref(), &self.keys)?
            }
            r => r?,
        };
        for (id, e) in r.bad {
            tracing::warn!("skipping index file {id}: {e}");
        }
        Ok(())
    }

    /// A cut function for `backup_type`, keyed with this repository's gear seed.
    pub fn cutter(&self, backup_type: &str) -> Cutter {
        Cutter::new(self.config.chunker_for(backup_type), self.keys.gear_seed())
    }

    /// A reader for chunks (cheap to clone, usable from worker threads).
    pub fn chunk_reader(&self) -> ChunkReader {
        ChunkReader::new(self.objects.clone(), self.keys.clone(), self.recheck.clone())
    }

    /// Resolves chunk locations. A chunk the cache lacks is looked up again after a rebuild of
    /// the cache from the index files (a damaged row may have hidden it) before it is called missing.
    pub fn locate(&self, chunks: &[ChunkId]) -> Result<Vec<(ChunkId, Location)>> {
        let found: Vec<Option<Location>> = self.cache.lookup_many(chunks)?;
        chunks
            .iter()
            .zip(found)
            .map(|(id, l)| {
                let l = match l {
                    Some(l) => Some(l),
                    None => self.recheck.locate_missing(id)?,
                };
                l.map(|l| (*id, l))
                    .ok_or_else(|| Error::corrupt(format!("chunk {id}"), "not in the index (missing data)"))
            })
            .collect()
    }

    /// Ids of all snapshot files.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        self.objects.snapshot_ids()
    }

    /// Reads and checks one snapshot file.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let bytes = self.objects.get(Handle::Snapshot(*id))?;
        let what = || format!("snapshot {id}");
        if content_hash(&bytes) != id.0 {
            return Err(Error::corrupt(what(), "content does not match its name (hash mismatch)"));
        }
        Snapshot::open(&self.keys, &bytes, &what)
    }

    /// All readable snapshots, oldest first; unreadable ones are returned separately.
    pub fn snapshots(&self) -> Result<SnapshotList> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for id in self.snapshot_ids()? {
            match self.load_snapshot(&id) {
                Ok(s) => ok.push((id, s)),
                Err(e) => bad.push((id, e)),
            }
        }
        ok.sort_by(|a, b| snapshot_order(&a.1, &b.1).then(a.0.cmp(&b.0)));
        let verifs: Vec<_> = self.verifications()?.into_iter().map(|(_, v)| v).collect();
        crate::format::verification::apply(&mut ok, &verifs);
        Ok((ok, bad))
    }

    /// The error for snapshot files that could not be read when `what` needs all of them: it
    /// names each file and why, and points at `repair snapshots`.
    pub fn damaged_snapshots(&self, what: &str, bad: &[(SnapshotId, Error)]) -> Error {
        let files: Vec<String> =
            bad.iter().map(|(id, e)| format!("{} ({e})", self.objects.location(Handle::Snapshot(*id)))).collect();
        Error::Damaged {
            what: what.to_string(),
            detail: format!(
                "{} unreadable snapshot file{}: {}; `cairn repair snapshots` moves undecodable snapshot files \
                 to quarantine/snapshots/ (or name a readable snapshot by its id)",
                bad.len(),
                if bad.len() == 1 { "" } else { "s" },
                files.join("; ")
            ),
        }
    }

    /// Resolves `latest`, `TYPE:latest`, `TYPE@TIME` or an id prefix. `latest` is the newest by
    /// commit order over every snapshot file: if any cannot be read, it might be the newest, so
    /// `latest` is refused (naming the file) rather than silently resolved to an older snapshot.
    /// `TYPE@TIME` is the newest snapshot of TYPE taken at or before TIME (`util::parse_point_in_time`);
    /// it is refused on unreadable snapshot files for the same reason.
    pub fn resolve(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        let at = match spec.rsplit_once('@') {
            Some((ty, t)) if !ty.is_empty() => {
                Some((ty, crate::util::parse_point_in_time(t).map_err(|e| Error::Invalid(format!("{spec:?}: {e}")))?))
            }
            _ => None,
        };
        let (all, bad) = self.snapshots()?;
        if !bad.is_empty() && (spec == "latest" || spec.ends_with(":latest") || at.is_some()) {
            return Err(self.damaged_snapshots(&format!("cannot resolve {spec:?}"), &bad));
        }
        let pick_latest = |ty: Option<&str>| {
            all.iter().rev().find(|(_, s)| ty.is_none_or(|t| s.backup_type == t)).cloned().ok_or_else(|| {
                Error::NotFound(match ty {
                    Some(t) => format!("no snapshot of type {t:?}"),
                    None => "the repository has no snapshots".into(),
                })
            })
        };
        if spec == "latest" {
            return pick_latest(None);
        }
        if let Some(t) = spec.strip_suffix(":latest") {
            return pick_latest(Some(t));
        }
        if let Some((ty, when)) = at {
            // Taken at or before `when`: by capture time, newest first; commit order breaks ties.
            return all
                .iter()
                .filter(|(_, s)| s.backup_type == ty && s.datetime().is_some_and(|d| d <= when))
                .max_by(|a, b| {
                    let (da, db) = (a.1.datetime(), b.1.datetime());
                    da.cmp(&db).then_with(|| snapshot_order(&a.1, &b.1))
                })
                .cloned()
                .ok_or_else(|| {
                    let first = all.iter().filter(|(_, s)| s.backup_type == ty).filter_map(|(_, s)| s.datetime()).min();
                    Error::NotFound(match first {
                        Some(f) => format!(
                            "no snapshot of type {ty:?} at or before {}; its oldest is from {}",
                            crate::util::show_time(&when),
                            crate::util::show_time(&f)
                        ),
                        None => format!("no snapshot of type {ty:?}"),
                    })
                });
        }
        let p = spec.to_ascii_lowercase();
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{spec:?} is not a snapshot id, `latest`, `TYPE:latest` or `TYPE@TIME`"
            )));
        }
        let hits: Vec<_> = all.iter().filter(|(id, _)| id.to_hex().starts_with(&p)).collect();
        let bad_hits: Vec<(SnapshotId, Error)> =
            bad.into_iter().filter(|(id, _)| id.to_hex().starts_with(&p)).collect();
        if !bad_hits.is_empty() {
            return Err(self.damaged_snapshots(&format!("cannot resolve {spec:?}"), &bad_hits));
        }
        match hits.len() {
            0 => Err(Error::NotFound(format!("no snapshot with id starting {spec:?}"))),
            1 => Ok(hits[0].clone()),
            n => Err(Error::Invalid(format!("snapshot id prefix {spec:?} is ambiguous ({n} matches)"))),
        }
    }

    /// Streams the nodes of a snapshot's tree.
    pub fn tree(&self, snap: &Snapshot) -> Result<TreeReader> {
        Ok(TreeReader::new(self.chunk_reader(), self.locate(&snap.tree)?))
    }
}

/// The in-memory cache used when the cache file cannot be written (`e` says why, once).
fn memory_cache(e: &Error, repo: RepoId) -> Result<Cache> {
    tracing::warn!("{e}; using an in-memory index built from the index files (read-only use)");
    Cache::open_memory(repo)
}

/// Snapshot order: commit order (`seq`, then time; format-spec/ordering.md). The newest by this
/// order is `latest`, whatever the clock said when each was taken.
pub fn snapshot_order(a: &Snapshot, b: &Snapshot) -> std::cmp::Ordering {
    a.commit_cmp(b)
}
