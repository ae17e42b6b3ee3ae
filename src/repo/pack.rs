//! Pack files on disk: writing one through `tmp/` and reading a published pack's trailer. The
//! byte grammar is `format::pack`; this module only moves those bytes to and from files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::crypto::{Keys, ObjectKind};
use crate::format::pack::{encode_tail, encode_trailer, read_trailer_with, Entry, MAX_PACK, PACK_MAGIC};
use crate::id::{ChunkId, PackId};
use crate::store::{read_exact_at, FileKind, LocalStore};

/// Reads, opens and checks a pack's trailer without reading its chunks, from a local file (the
/// grammar and checks are `format::pack::read_trailer_with`'s; this only supplies preads).
pub fn read_trailer(path: &Path, keys: &Keys, pack: &PackId) -> Result<(Vec<Entry>, u64)> {
    let f = File::open(path).ctx(path)?;
    let size = f.metadata().ctx(path)?.len();
    read_trailer_with(size, keys, pack, &|offset, len| {
        let mut buf = vec![0u8; len];
        read_exact_at(&f, &mut buf, offset, path)?;
        Ok(buf)
    })
}

/// Writes one pack to a temporary file. Dropping it unfinished removes the temporary file.
pub struct PackWriter {
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    len: u64,
    entries: Vec<Entry>,
    published: bool,
}

/// A pack that has been published.
#[derive(Debug)]
pub struct WrittenPack {
    /// Its id (= file name).
    pub id: PackId,
    /// Its size in bytes.
    pub size: u64,
    /// Its chunks.
    pub entries: Vec<Entry>,
}

impl PackWriter {
    /// Starts a pack in the store's `tmp/`.
    pub fn new(store: &LocalStore) -> Result<Self> {
        let (tmp, f) = store.temp_file()?;
        let mut w = PackWriter {
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, f)),
            len: 0,
            entries: Vec::new(),
            published: false,
        };
        w.write(PACK_MAGIC)?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out.as_mut().expect("open until finished").write_all(b).ctx(&self.tmp)?;
        self.len += b.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no chunk was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Chunks added so far.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// Appends a sealed chunk; `reference` is the chunk its encoding references, if any
    /// (`blob::reference` of its payload), recorded in the trailer.
    pub fn add(&mut self, id: ChunkId, sealed: &[u8], raw_len: u32, reference: Option<ChunkId>) -> Result<()> {
        if self.len + sealed.len() as u64 + (1 << 20) > MAX_PACK {
            return Err(Error::Invalid("pack would exceed 4 GiB".into()));
        }
        let offset = self.len as u32;
        self.write(sealed)?;
        self.entries.push(Entry { id, offset, stored_len: sealed.len() as u32, raw_len, reference });
        Ok(())
    }

    /// Writes the trailer, fsyncs, and publishes the pack under its content hash. On error
    /// nothing is published and the temporary file is removed.
    pub fn finish(mut self, store: &LocalStore, keys: &Keys) -> Result<WrittenPack> {
        let sealed = keys.seal(ObjectKind::PackTrailer, &[0; 32], &encode_trailer(&self.entries));
        self.write(&encode_tail(&sealed))?;
        let out = self.out.take().expect("open until finished");
        let f = out.into_inner().map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        f.sync_all().ctx(&self.tmp)?;
        drop(f);
        // The id is hashed from the bytes read back from the file, in large blocks (BLAKE3's SIMD
        // path) and on the finishing thread: it names what the disk returned, not what we meant.
        let mut h = blake3::Hasher::new();
        h.update_reader(File::open(&self.tmp).ctx(&self.tmp)?).ctx(&self.tmp)?;
        let id = PackId(*h.finalize().as_bytes());
        store.publish(&self.tmp, FileKind::Pack, &id.to_hex())?;
        self.published = true;
        Ok(WrittenPack { id, size: self.len, entries: std::mem::take(&mut self.entries) })
    }

    /// Drops the temporary file (on error paths); the same as dropping the writer.
    pub fn abandon(self) {}
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if !self.published {
            self.out.take();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
