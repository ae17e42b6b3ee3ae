//! Where repository files live: one [`Store`] trait and its implementations (a local directory,
//! an rclone remote, a local mirror that fetches from a remote, and memory for tests). Nothing in
//! this layer knows about packs, compression or encryption: a store keeps named byte strings.
//!
//! Every store uses the same layout (format-spec/layout.md): `config`, `keys/<name>`,
//! `packs/<xy>/<name>`, `index/<name>`, `snapshots/<name>`, `locks/<name>`. [`Handle::rel_path`]
//! is the one place that spells it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::id::{IndexId, KeyId, LockId, PackId, SnapshotId, VerificationId};

pub mod fetching;
pub mod local;
pub mod lock;
#[cfg(test)]
pub mod memory;
pub mod rclone;
pub mod spill;

#[cfg(test)]
mod conformance;

pub use local::{fsync_dir, read_exact_at, LocalStore};

/// The kinds of files in a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// `config`: the one repository config.
    Config,
    /// `keys/<name>`
    Key,
    /// `packs/<xy>/<name>`
    Pack,
    /// `index/<name>`
    Index,
    /// `snapshots/<name>`
    Snapshot,
    /// `locks/<name>`
    Lock,
    /// `verifications/<name>`: who verified a pre-change snapshot, and when.
    Verification,
}

impl FileKind {
    /// Every kind, in the order a listing of a whole repository reports them: the reverse of the
    /// order a backup writes them (snapshots, index files, packs, keys, config), so that a snapshot
    /// or index file seen in a listing only refers to packs that existed when `packs/` was listed.
    pub const LISTING_ORDER: [FileKind; 7] = [
        FileKind::Lock,
        FileKind::Verification,
        FileKind::Snapshot,
        FileKind::Index,
        FileKind::Pack,
        FileKind::Key,
        FileKind::Config,
    ];

    /// Directory name under the repository root (`config` for the config file itself).
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Pack => "packs",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Key => "keys",
            FileKind::Lock => "locks",
            FileKind::Verification => "verifications",
        }
    }
}

/// The name of one stored object: its kind and its typed 32-byte name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Handle {
    /// The repository config.
    Config,
    /// A key file (random name).
    Key(KeyId),
    /// A pack (content name).
    Pack(PackId),
    /// An index file (content name).
    Index(IndexId),
    /// A snapshot file (content name).
    Snapshot(SnapshotId),
    /// A lock file (random name).
    Lock(LockId),
    /// A verification file (content name).
    Verification(VerificationId),
}

impl Handle {
    /// Its kind.
    pub fn kind(&self) -> FileKind {
        match self {
            Handle::Config => FileKind::Config,
            Handle::Key(_) => FileKind::Key,
            Handle::Pack(_) => FileKind::Pack,
            Handle::Index(_) => FileKind::Index,
            Handle::Snapshot(_) => FileKind::Snapshot,
            Handle::Lock(_) => FileKind::Lock,
            Handle::Verification(_) => FileKind::Verification,
        }
    }

    /// The 32-byte name (`None` for the config).
    pub fn name(&self) -> Option<[u8; 32]> {
        match self {
            Handle::Config => None,
            Handle::Key(n) => Some(n.0),
            Handle::Pack(n) => Some(n.0),
            Handle::Index(n) => Some(n.0),
            Handle::Snapshot(n) => Some(n.0),
            Handle::Lock(n) => Some(n.0),
            Handle::Verification(n) => Some(n.0),
        }
    }

    /// The handle of `kind` named `name`.
    pub fn new(kind: FileKind, name: [u8; 32]) -> Handle {
        match kind {
            FileKind::Config => Handle::Config,
            FileKind::Key => Handle::Key(KeyId(name)),
            FileKind::Pack => Handle::Pack(PackId(name)),
            FileKind::Index => Handle::Index(IndexId(name)),
            FileKind::Snapshot => Handle::Snapshot(SnapshotId(name)),
            FileKind::Lock => Handle::Lock(LockId(name)),
            FileKind::Verification => Handle::Verification(VerificationId(name)),
        }
    }

    /// Whether the name is the plain BLAKE3 of the content (packs, index and snapshot files), so
    /// that a copy can be checked against its name.
    pub fn is_content_named(&self) -> bool {
        matches!(self, Handle::Pack(_) | Handle::Index(_) | Handle::Snapshot(_) | Handle::Verification(_))
    }

    /// Path relative to the repository root, `/`-separated (format-spec/layout.md).
    pub fn rel_path(&self) -> String {
        match (self, self.name()) {
            (Handle::Config, _) | (_, None) => "config".into(),
            (Handle::Pack(_), Some(n)) => {
                let h = hex::encode(n);
                format!("packs/{}/{h}", &h[..2])
            }
            (h, Some(n)) => format!("{}/{}", h.kind().dir(), hex::encode(n)),
        }
    }

    /// The handle a repository-relative path names; `None` for anything else (temporary files,
    /// a syncing tool's conflict copies, files cairn did not write, uppercase names).
    pub fn from_rel_path(rel: &str) -> Option<Handle> {
        if rel == "config" {
            return Some(Handle::Config);
        }
        let mut parts = rel.split('/');
        let kind = match parts.next()? {
            "keys" => FileKind::Key,
            "packs" => FileKind::Pack,
            "index" => FileKind::Index,
            "snapshots" => FileKind::Snapshot,
            "locks" => FileKind::Lock,
            "verifications" => FileKind::Verification,
            _ => return None,
        };
        let sub = if kind == FileKind::Pack { Some(parts.next()?) } else { None };
        let name = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let name = parse_name(name)?;
        if sub.is_some_and(|s| s != &name_hex(&name)[..2]) {
            return None;
        }
        Some(Handle::new(kind, name))
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rel_path())
    }
}

/// A file name of exactly 64 lowercase hex digits, as bytes.
pub fn parse_name(name: &str) -> Option<[u8; 32]> {
    if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(name, &mut out).ok()?;
    Some(out)
}

fn name_hex(n: &[u8; 32]) -> String {
    hex::encode(n)
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Which object.
    pub handle: Handle,
    /// Its size in bytes.
    pub size: u64,
    /// Its MD5 in lowercase hex, when the store reports one without reading the object (Google
    /// Drive and other rclone remotes do; the local and memory stores do not).
    pub md5: Option<String>,
}

/// Everything a store holds: its objects, and the files that are not objects of this format.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// Objects, in [`FileKind::LISTING_ORDER`]; a name may appear twice where the backend allows
    /// two files of one name (Google Drive does).
    pub objects: Vec<Stat>,
    /// Other files (path relative to the root, size): reported, never touched.
    pub foreign: Vec<(String, u64)>,
}

/// A place that keeps a repository's files.
///
/// The contract, which every implementation keeps and the conformance suite
/// (`store/conformance.rs`) checks for each:
///
/// - **Stored means durable.** When `put` returns `Ok`, the object is whole at its final name and
///   survives a crash or power loss: a local file is fsynced, linked into place and its directory
///   fsynced; a remote object is uploaded and the remote has confirmed it with the right size.
///   Before that the name is absent: nobody ever sees a partial object under a final name.
/// - **A name is never overwritten.** `put` of an existing name keeps the existing object. Names
///   of packs, index and snapshot files are content hashes, so the same name means the same
///   content and the second `put` is a success that stores nothing; an existing object of a
///   *different size* is corruption ([`Error::Corrupt`]) and is left as it is. Objects are never
///   modified after they have their name; they only disappear through `remove`.
/// - **Not found is typed.** `get` and `get_range` of an absent name fail with
///   [`Error::ObjectNotFound`], never with a message callers would have to match; `size` returns
///   `Ok(None)`. Any other failure is a different error, and means "unknown", not "absent".
/// - **Short objects are corruption.** `get_range` returns exactly `len` bytes or fails: an
///   object shorter than `offset + len` is [`Error::Corrupt`], never a short read.
/// - **A failed listing is an error.** `list` and `inventory` report only objects that exist,
///   and when a listing cannot be completed they fail: they never return an empty or partial
///   list in its place (prune and sync delete what a listing does not show). A store that does
///   not exist yet (an empty remote path) lists as empty. Files whose names are not this
///   format's (temporary files, other tools' files) are not objects.
/// - **Removing an absent name succeeds**, so an interrupted deletion can simply run again.
///
/// Implementations are `Send + Sync` and used as `Arc<dyn Store>` from many threads at once.
pub trait Store: Send + Sync + fmt::Debug {
    /// Where an object lives, for messages: a path, or a remote and a relative path.
    fn location(&self, h: Handle) -> String;

    /// Stores `bytes` under `h` (see the contract: durable on return, never overwriting).
    fn put(&self, h: Handle, bytes: &[u8]) -> Result<()>;

    /// The whole object.
    fn get(&self, h: Handle) -> Result<Vec<u8>>;

    /// The whole object into `buf` (replacing what it held): a caller reading many large
    /// objects one after another reuses one buffer instead of fresh pages for each. The default
    /// is [`Store::get`].
    fn get_into(&self, h: Handle, buf: &mut Vec<u8>) -> Result<()> {
        *buf = self.get(h)?;
        Ok(())
    }

    /// Exactly `len` bytes at `offset`; a shorter object is corruption.
    fn get_range(&self, h: Handle, offset: u64, len: usize) -> Result<Vec<u8>>;

    /// The object's size, `None` when it is absent.
    fn size(&self, h: Handle) -> Result<Option<u64>>;

    /// Every object of `kind`, sorted by name.
    fn list(&self, kind: FileKind) -> Result<Vec<Stat>>;

    /// Removes an object; an absent one is fine.
    fn remove(&self, h: Handle) -> Result<()>;

    /// Every object of every kind, and the foreign files. The default lists kind by kind in
    /// [`FileKind::LISTING_ORDER`]; a remote answers in one listing.
    fn inventory(&self) -> Result<Inventory> {
        let mut objects = Vec::new();
        for kind in FileKind::LISTING_ORDER {
            objects.extend(self.list(kind)?);
        }
        Ok(Inventory { objects, foreign: Vec::new() })
    }

    /// The local directory holding this store's files in the repository layout, if there is one:
    /// lets another store copy from it in bulk (one rclone run) instead of object by object.
    fn local_dir(&self) -> Option<&Path> {
        None
    }

    /// Copies `handles` from `from` into this store. Each arrives as with `put` (never
    /// overwriting, an existing one of another size is corruption). A remote copies in one run,
    /// and then the caller confirms what arrived with a listing (sync compares sizes and MD5s)
    /// before it relies on them. The default is `get` then `put`, object by object.
    fn copy_in(&self, from: &dyn Store, handles: &[Handle]) -> Result<()> {
        for h in handles {
            self.put(*h, &from.get(*h)?)?;
        }
        Ok(())
    }

    /// Writes `handles` into the local directory `dir`, each at its [`Handle::rel_path`], as
    /// plain files (not yet durable: the caller fsyncs and publishes them). The default is one
    /// `get` per object; a remote downloads them in one run.
    fn download_to(&self, handles: &[Handle], dir: &Path) -> Result<()> {
        for h in handles {
            let p = dir.join(h.rel_path());
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            std::fs::write(&p, self.get(*h)?).map_err(|e| Error::io(&p, e))?;
        }
        Ok(())
    }
}

/// Typed listings on top of [`Store::list`].
pub trait StoreExt: Store {
    /// The names of every object of `kind` (a listing holds only that kind's handles).
    fn names(&self, kind: FileKind) -> Result<Vec<[u8; 32]>> {
        Ok(self.list(kind)?.into_iter().filter_map(|s| s.handle.name()).collect())
    }
    /// Names of every pack.
    fn pack_ids(&self) -> Result<Vec<PackId>> {
        Ok(self.names(FileKind::Pack)?.into_iter().map(PackId).collect())
    }
    /// Names of every index file.
    fn index_ids(&self) -> Result<Vec<IndexId>> {
        Ok(self.names(FileKind::Index)?.into_iter().map(IndexId).collect())
    }
    /// Names of every snapshot file.
    fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self.names(FileKind::Snapshot)?.into_iter().map(SnapshotId).collect())
    }
    /// Names of every key file.
    fn key_ids(&self) -> Result<Vec<KeyId>> {
        Ok(self.names(FileKind::Key)?.into_iter().map(KeyId).collect())
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn location(&self, h: Handle) -> String {
        (**self).location(h)
    }
    fn put(&self, h: Handle, bytes: &[u8]) -> Result<()> {
        (**self).put(h, bytes)
    }
    fn get(&self, h: Handle) -> Result<Vec<u8>> {
        (**self).get(h)
    }
    fn get_into(&self, h: Handle, buf: &mut Vec<u8>) -> Result<()> {
        (**self).get_into(h, buf)
    }
    fn get_range(&self, h: Handle, offset: u64, len: usize) -> Result<Vec<u8>> {
        (**self).get_range(h, offset, len)
    }
    fn size(&self, h: Handle) -> Result<Option<u64>> {
        (**self).size(h)
    }
    fn list(&self, kind: FileKind) -> Result<Vec<Stat>> {
        (**self).list(kind)
    }
    fn remove(&self, h: Handle) -> Result<()> {
        (**self).remove(h)
    }
    fn inventory(&self) -> Result<Inventory> {
        (**self).inventory()
    }
    fn local_dir(&self) -> Option<&Path> {
        (**self).local_dir()
    }
    fn copy_in(&self, from: &dyn Store, handles: &[Handle]) -> Result<()> {
        (**self).copy_in(from, handles)
    }
    fn download_to(&self, handles: &[Handle], dir: &Path) -> Result<()> {
        (**self).download_to(handles, dir)
    }
}

/// The check every store's `put` makes against an object that already exists under the name.
pub(crate) fn same_name_check(location: &str, existing: u64, new: u64) -> Result<()> {
    if existing == new {
        Ok(())
    } else {
        Err(Error::corrupt(location, format!("exists with size {existing}, expected {new} for the same content name")))
    }
}

/// The error of `get_range` past the end of an object.
pub(crate) fn short_object(location: &str, offset: u64, len: usize, size: u64) -> Error {
    Error::corrupt(location, format!("truncated: wanted {len} bytes at offset {offset}, object is {size} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths_round_trip_and_foreign_names_are_not_handles() {
        let n = [0xabu8; 32];
        for kind in FileKind::LISTING_ORDER {
            let h = Handle::new(kind, n);
            assert_eq!(Handle::from_rel_path(&h.rel_path()), Some(h), "{h}");
        }
        assert_eq!(Handle::new(FileKind::Pack, n).rel_path(), format!("packs/ab/{}", hex::encode(n)));
        let upper = hex::encode_upper(n);
        for bad in [
            "notes.txt".to_string(),
            "packs/zz/foreign".into(),
            format!("packs/cd/{}", hex::encode(n)),
            format!("index/{upper}"),
            format!("index/{}.tmp", hex::encode(n)),
            format!("tmp/{}", hex::encode(n)),
            format!("index/x/{}", hex::encode(n)),
        ] {
            assert_eq!(Handle::from_rel_path(&bad), None, "{bad}");
        }
    }
}
