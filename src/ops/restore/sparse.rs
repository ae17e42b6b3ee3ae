//! Writing a restored file sparse: whole filesystem blocks of zeros are skipped (left as holes)
//! instead of written, and the file is given its full length at the end. A 20 GiB file that was
//! mostly holes comes back as holes, not as 20 GiB of allocated zeros.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};

/// Largest block size we treat as the hole granularity (and the size of the zero buffer the
/// comparison uses); filesystems reporting more are treated as 64 KiB-blocked, which only means
/// some zero runs are written instead of skipped.
const MAX_BLOCK: usize = 64 << 10;
static ZEROS: [u8; MAX_BLOCK] = [0; MAX_BLOCK];

/// Most bytes held before they are written out.
const STAGE_MAX: usize = 1 << 20;

/// A positional writer into a freshly created (empty) file that skips aligned all-zero blocks.
/// Bytes are staged so that a zero block split across two chunks is still recognised.
pub struct SparseFile<'f> {
    file: &'f File,
    /// Block size used for hole detection (a power of two, 512..=64 KiB).
    blk: usize,
    /// File offset of `stage[0]`.
    base: u64,
    stage: Vec<u8>,
    cap: usize,
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk now, without waiting: the
/// fsync that ends every restored file then waits only for the tail, instead of for the whole
/// file at once after the last byte is written. Only a hint: an error is ignored.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a file descriptor we own; no memory is passed.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Whether `b` is all zero bytes (`b.len() <= MAX_BLOCK`).
fn is_zero(b: &[u8]) -> bool {
    b == &ZEROS[..b.len()]
}

impl<'f> SparseFile<'f> {
    /// A writer at offset 0 of `file`, which must be empty; `size_hint` bounds the staging
    /// buffer so small files do not each allocate a large one.
    pub fn new(file: &'f File, size_hint: u64) -> io::Result<Self> {
        let bs = file.metadata()?.blksize() as usize;
        let blk = if bs.is_power_of_two() && (512..=MAX_BLOCK).contains(&bs) { bs } else { 4096 };
        // A multiple of the block size, so staged runs start block-aligned after each flush.
        let cap = (size_hint.min(STAGE_MAX as u64) as usize).div_ceil(blk).max(1) * blk;
        Ok(SparseFile { file, blk, base: 0, stage: Vec::with_capacity(cap), cap })
    }

    /// Writes the staged bytes, skipping aligned zero blocks. `end` says the stage holds the
    /// file's last bytes: a zero tail shorter than a block is skipped too ([`Self::finish`]
    /// sets the length).
    fn drain(&mut self, end: bool) -> io::Result<()> {
        let blk = self.blk as u64;
        let mut i = 0usize;
        let mut run: Option<usize> = None;
        while i < self.stage.len() {
            let abs = self.base + i as u64;
            let to_edge = (blk - abs % blk) as usize;
            let n = to_edge.min(self.stage.len() - i);
            let seg = &self.stage[i..i + n];
            let aligned_whole = n == self.blk;
            let last_tail = end && i + n == self.stage.len();
            if (aligned_whole || last_tail) && is_zero(seg) {
                if let Some(s) = run.take() {
                    self.file.write_all_at(&self.stage[s..i], self.base + s as u64)?;
                }
            } else if run.is_none() {
                run = Some(i);
            }
            i += n;
        }
        if let Some(s) = run {
            self.file.write_all_at(&self.stage[s..], self.base + s as u64)?;
        }
        if !end {
            start_writeback(self.file, self.base, self.stage.len() as u64);
        }
        self.base += self.stage.len() as u64;
        self.stage.clear();
        Ok(())
    }

    /// Writes what is staged and sets the file's length to everything written (trailing holes
    /// included). Returns that length.
    pub fn finish(mut self) -> io::Result<u64> {
        self.drain(true)?;
        self.file.set_len(self.base)?;
        Ok(self.base)
    }
}

impl Write for SparseFile<'_> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        while !buf.is_empty() {
            let room = self.cap - self.stage.len();
            let n = room.min(buf.len());
            self.stage.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.stage.len() == self.cap {
                self.drain(false)?;
            }
        }
        Ok(total)
    }

    /// Staged bytes are written by [`SparseFile::finish`]; flushing early would split blocks.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(parts: &[Vec<u8>]) -> (Vec<u8>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::options().read(true).write(true).create_new(true).open(&p).unwrap();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut w = SparseFile::new(&f, total as u64).unwrap();
        for part in parts {
            w.write_all(part).unwrap();
        }
        assert_eq!(w.finish().unwrap(), total as u64);
        f.sync_all().unwrap();
        let mut back = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut back).unwrap();
        (back, f.metadata().unwrap().blocks() * 512)
    }

    #[test]
    fn content_survives_any_split_and_holes_are_not_allocated() {
        let mut data = vec![0u8; 8 << 20];
        data[5000..5100].fill(7);
        data[3 << 20] = 1;
        let last = data.len() - 3;
        data[last] = 9;
        for split in [1usize, 4095, 4096, 100_000, 1 << 20, 8 << 20] {
            let parts: Vec<Vec<u8>> = data.chunks(split).map(|c| c.to_vec()).collect();
            let (back, allocated) = roundtrip(&parts);
            assert!(back == data, "split {split}: content differs");
            assert!(allocated < 1 << 20, "split {split}: {allocated} bytes allocated for 3 islands");
        }
    }

    #[test]
    fn zero_tail_and_empty_file_get_their_length() {
        let (back, _) = roundtrip(&[vec![1u8; 10], vec![0u8; 3 << 20]]);
        assert_eq!(back.len(), 10 + (3 << 20));
        assert!(back[..10].iter().all(|&b| b == 1) && back[10..].iter().all(|&b| b == 0));
        assert_eq!(roundtrip(&[]).0.len(), 0);
        assert_eq!(roundtrip(&[vec![0u8; 100]]).0, vec![0u8; 100]);
    }
}
