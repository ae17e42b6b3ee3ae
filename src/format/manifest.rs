//! Snapshot files and the tree stream they point to. Both are `bincode` 2.0.1 (serde) with
//! `config::standard()` (little endian, variable-length integers), pinned in Cargo.toml and
//! guarded by the vectors in format-spec/vectors/. format-spec/manifest.md has every field.
//!
//! Snapshot file: `seal(Snapshot, 0, 0x02 || bincode(Snapshot) || varint(seq))`; version 1
//! (`0x01 || bincode(Snapshot)`, no `seq`) is still read.
//! Tree stream (stored as ordinary chunks, listed in `Snapshot::tree`): a sequence of
//! `u32le len || bincode(Node)` records in depth-first order, children sorted by name bytes.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::crypto::{Keys, ObjectKind};
use crate::id::{ChunkId, SnapshotId};

mod records;

pub use records::{InStep, RecordParser, SPILL_RECORD};

/// Version byte of the snapshot plaintext cairn writes.
pub const SNAPSHOT_VERSION: u8 = 2;
/// The first version, without `seq`: still read (as `seq` 0), written only by the vectors.
pub const SNAPSHOT_VERSION_1: u8 = 1;
/// Largest accepted tree record (a file of 16 GiB in 4 KiB pages has 128 MiB of chunk ids).
pub const MAX_RECORD: usize = 256 << 20;

fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RECORD>,
> {
    // The limit changes no encoded byte; it stops a crafted length prefix from asking for an
    // absurd allocation before the input runs out.
    bincode::config::standard().with_limit::<MAX_RECORD>()
}

/// Why a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SnapshotKind {
    /// Routine, scheduled.
    #[default]
    Daily,
    /// Before a change (migration, upgrade), kept until verified.
    PreChange,
    /// By hand.
    Manual,
}

impl SnapshotKind {
    /// CLI / JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Daily => "daily",
            SnapshotKind::PreChange => "pre-change",
            SnapshotKind::Manual => "manual",
        }
    }
    /// Parses a CLI / JSON name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(SnapshotKind::Daily),
            "pre-change" => Some(SnapshotKind::PreChange),
            "manual" => Some(SnapshotKind::Manual),
            _ => None,
        }
    }
}

/// Snapshot statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Regular files in the tree.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Sum of file sizes.
    pub logical_bytes: u64,
    /// Files taken from the parent snapshot without reading.
    pub unchanged_files: u64,
    /// Chunks this snapshot added to the repository.
    pub new_chunks: u64,
    /// Bytes of plaintext those chunks hold.
    pub new_raw_bytes: u64,
    /// Bytes they take in packs (compressed, sealed).
    pub new_bytes: u64,
    /// Files that could not be read.
    pub errors: u64,
}

/// A file that could not be stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeError {
    /// Path inside the snapshot.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// A snapshot: metadata and the chunk list of its tree stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Local time with offset, RFC 3339 with nanoseconds.
    pub time: String,
    /// Backup type (`db`, `logs`, `config`, or a user name).
    pub backup_type: String,
    /// Why it was taken.
    pub kind: SnapshotKind,
    /// Free text (pre-change, manual).
    pub description: Option<String>,
    /// Change ticket (pre-change).
    pub ticket: Option<String>,
    /// Who took it.
    pub creator: Option<String>,
    /// Why it is kept (manual).
    pub purpose: Option<String>,
    /// Host name.
    pub host: String,
    /// Source paths as given, made absolute.
    pub paths: Vec<String>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Statistics.
    pub stats: Stats,
    /// Chunks of the tree stream, in order.
    pub tree: Vec<ChunkId>,
    /// Length of the tree stream in bytes.
    pub tree_len: u64,
    /// The snapshot this one was compared against for unchanged files.
    pub parent: Option<SnapshotId>,
    /// Files that could not be stored.
    pub errors: Vec<NodeError>,
    /// Source-specific facts (SQLite page size, schema hash, row counts, pg_dump version...).
    pub source: BTreeMap<String, String>,
    /// Program that wrote it, e.g. "cairn 0.1.0".
    pub program: String,
    /// Commit sequence number (version 2): 1 + the highest `seq` among the repository's readable
    /// snapshots when it was written; 0 for a version 1 snapshot, which has none. Skipped by
    /// serde because it is appended after the version 1 fields (see `encode`), so that one struct
    /// reads both versions.
    #[serde(skip)]
    pub seq: u64,
}

impl Snapshot {
    /// Encodes the plaintext: version 2, or version 1 for a snapshot without a sequence number
    /// (`seq` 0: a version 1 snapshot rewritten by `mark-verified` stays what it was).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_v1();
        if self.seq == 0 {
            return out;
        }
        out[0] = SNAPSHOT_VERSION;
        out.extend(bincode::encode_to_vec(self.seq, bincode_config()).expect("serializable"));
        out
    }

    /// Encodes the plaintext as version 1 (no `seq`, whatever `self.seq` holds): what cairn
    /// before snapshot version 2 wrote.
    pub fn encode_v1(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION_1];
        out.extend(bincode::serde::encode_to_vec(self, bincode_config()).expect("serializable"));
        out
    }

    /// Decodes a plaintext of version 1 (`seq` becomes 0) or 2.
    pub fn decode(plain: &[u8], what: &dyn Fn() -> String) -> Result<Self> {
        let (&v, body) = plain.split_first().ok_or_else(|| Error::corrupt(what(), "empty snapshot"))?;
        if v != SNAPSHOT_VERSION && v != SNAPSHOT_VERSION_1 {
            return Err(Error::corrupt(what(), format!("unknown snapshot version {v}")));
        }
        let (mut s, mut n): (Snapshot, usize) = bincode::serde::decode_from_slice(body, bincode_config())
            .map_err(|e| Error::corrupt(what(), format!("undecodable: {e}")))?;
        if v == SNAPSHOT_VERSION {
            let (seq, used): (u64, usize) = bincode::decode_from_slice(&body[n..], bincode_config())
                .map_err(|e| Error::corrupt(what(), format!("undecodable seq: {e}")))?;
            if seq == 0 {
                // 0 means "no sequence" (version 1); a version 2 writer starts at 1.
                return Err(Error::corrupt(what(), "version 2 snapshot with seq 0"));
            }
            s.seq = seq;
            n += used;
        }
        if n != body.len() {
            return Err(Error::corrupt(what(), "trailing bytes"));
        }
        Ok(s)
    }

    /// Commit order (format-spec/ordering.md): by `seq`, so version 1 snapshots (seq 0) come
    /// before every version 2 one; equal `seq` (two writers at once, or two version 1
    /// snapshots) by time, then by the text of the time. Callers break a remaining tie by id.
    pub fn commit_cmp(&self, other: &Snapshot) -> Ordering {
        self.seq.cmp(&other.seq).then_with(|| match (self.datetime(), other.datetime()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => self.time.cmp(&other.time),
        })
    }

    /// Seals for storage.
    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        keys.seal(ObjectKind::Snapshot, &[0; 32], &self.encode())
    }

    /// Opens a stored snapshot file.
    pub fn open(keys: &Keys, sealed: &[u8], what: &dyn Fn() -> String) -> Result<Self> {
        Self::decode(&keys.open(ObjectKind::Snapshot, &[0; 32], sealed, what)?, what)
    }

    /// The snapshot time parsed.
    pub fn datetime(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        chrono::DateTime::parse_from_rfc3339(&self.time).ok()
    }
}

/// What a tree node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// Regular file with content.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (stored, never followed).
    Symlink,
}

/// One entry of the tree stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Path relative to the snapshot root, `/`-separated, raw bytes (Unix names need not be UTF-8).
    pub path: Vec<u8>,
    /// Kind.
    pub kind: NodeKind,
    /// Permission bits and file type bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, ns since the epoch (unchanged-file detection only).
    pub ctime_ns: i64,
    /// Inode number (unchanged-file detection only).
    pub inode: u64,
    /// Size in bytes (for files: the bytes actually read).
    pub size: u64,
    /// Symlink target bytes.
    pub target: Vec<u8>,
    /// Content chunks, in order.
    pub chunks: Vec<ChunkId>,
}

impl Node {
    /// Path as text, lossy for display.
    pub fn path_str(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    /// Appends this node's record to a tree stream.
    pub fn encode_record(&self, out: &mut Vec<u8>) {
        self.write_record(&mut |b| out.extend_from_slice(b));
    }

    /// [`Node::encode_record`] handed to `sink` piece by piece: a big file's record (32 bytes per
    /// chunk, 8 MiB for a 1 GiB database) is never held whole. Same bytes, same encoder.
    pub fn write_record(&self, sink: &mut dyn FnMut(&[u8])) {
        let mut size = bincode::enc::write::SizeWriter::default();
        bincode::serde::encode_into_writer(self, &mut size, bincode_config()).expect("serializable");
        sink(&(size.bytes_written as u32).to_le_bytes());
        bincode::serde::encode_into_writer(self, SinkWriter(sink), bincode_config()).expect("serializable");
    }

    /// The start of the record of this node (whose `chunks` is empty) when it lists `count`
    /// chunks held elsewhere: length prefix, fields, the list's length. The `count` ids, 32 bytes
    /// each, follow it in the stream; the whole is what [`Node::encode_record`] writes for the
    /// node with those chunks (the list is the last field; format-spec/manifest.md).
    pub fn record_head(&self, count: u64) -> Result<Vec<u8>> {
        debug_assert!(self.chunks.is_empty(), "the chunks are written after the head");
        let mut body = bincode::serde::encode_to_vec(self, bincode_config()).expect("serializable");
        // An empty list is its length alone: 0, one byte.
        debug_assert_eq!(body.last(), Some(&0));
        body.pop();
        let list_len = bincode::serde::encode_to_vec(count, bincode_config()).expect("serializable");
        let len = body.len() as u64 + list_len.len() as u64 + count * 32;
        if len > MAX_RECORD as u64 {
            return Err(Error::Invalid(format!(
                "{}: {count} chunks make a tree record of {len} bytes, above the limit of {MAX_RECORD}",
                self.path_str()
            )));
        }
        let mut out = Vec::with_capacity(4 + body.len() + list_len.len());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&list_len);
        Ok(out)
    }

    /// Decodes one record body.
    pub fn decode_record(body: &[u8], what: &dyn Fn() -> String) -> Result<Self> {
        let (n, used): (Node, usize) = bincode::serde::decode_from_slice(body, bincode_config())
            .map_err(|e| Error::corrupt(what(), format!("undecodable tree record: {e}")))?;
        if used != body.len() {
            return Err(Error::corrupt(what(), "tree record has trailing bytes"));
        }
        Ok(n)
    }
}

/// Orders paths the way the tree stream does: component by component, so that a directory's
/// whole subtree comes before its next sibling.
pub fn path_cmp(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// Writes bincode's output into a byte sink.
struct SinkWriter<'a>(&'a mut dyn FnMut(&[u8]));

impl bincode::enc::write::Writer for SinkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), bincode::error::EncodeError> {
        (self.0)(bytes);
        Ok(())
    }
}

/// Checks that a stored path is safe to create under a restore target: relative, no `..` or `.`
/// components, no empty components, no NUL.
pub fn check_safe_path(path: &[u8]) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.contains(&0) {
        return Err("path contains NUL".into());
    }
    if path[0] == b'/' {
        return Err("absolute path".into());
    }
    for comp in path.split(|&c| c == b'/') {
        match comp {
            b"" => return Err("empty path component".into()),
            b"." | b".." => return Err(format!("path component {:?}", String::from_utf8_lossy(comp))),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_order_is_depth_first() {
        let mut v: Vec<&[u8]> = vec![b"a.txt", b"a/b", b"a", b"a/b/x", b"b"];
        v.sort_by(|a, b| path_cmp(a, b));
        assert_eq!(v, vec![&b"a"[..], b"a/b", b"a/b/x", b"a.txt", b"b"]);
    }

    #[test]
    fn unsafe_paths_refused() {
        for p in [&b"../x"[..], b"/etc/passwd", b"a/../../b", b"a//b", b"a\0b", b"", b"./a"] {
            assert!(check_safe_path(p).is_err(), "{:?}", p);
        }
        assert!(check_safe_path(b"a/b..c/.hidden").is_ok());
    }

    /// A file node with every field set and `count` chunk ids (records.rs's tests use it too).
    pub(super) fn full_node(count: usize) -> Node {
        Node {
            path: b"data/app.db".to_vec(),
            kind: NodeKind::File,
            mode: 0o100644,
            uid: 1000,
            gid: 1000,
            mtime_ns: -5,
            ctime_ns: 1_700_000_000_000_000_000,
            inode: 99,
            size: count as u64 * 4096,
            target: Vec::new(),
            chunks: (0..count).map(|i| ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect(),
        }
    }

    #[test]
    fn a_head_and_the_ids_are_the_whole_record() {
        // Counts around each width of bincode's varint length (1, 3 and 5 bytes).
        for count in [0usize, 1, 250, 251, 65535, 65536, 70000] {
            let full = full_node(count);
            let mut whole = Vec::new();
            full.encode_record(&mut whole);
            let mut pieced = Node { chunks: Vec::new(), ..full.clone() }.record_head(count as u64).unwrap();
            for c in &full.chunks {
                pieced.extend_from_slice(&c.0);
            }
            assert_eq!(pieced, whole, "{count} chunks");
        }
        let huge = Node { path: b"big.db".to_vec(), chunks: Vec::new(), ..full_node(0) }.record_head(10_000_000);
        assert!(huge.unwrap_err().to_string().contains("big.db"));
    }
}
