//! Content-defined chunking (FastCDC 2020 from the `fastcdc` crate, pinned `=3.2.1`, module
//! `v2020`, function `cut_gear`) and SQLite page chunking.
//!
//! Boundaries are exactly those of `fastcdc::v2020::StreamCDC` with the same parameters and seed:
//! the cut function always sees `max` bytes (or the rest of the input at its end). We drive
//! `cut_gear` over our own buffer because `StreamCDC` moves its whole buffer after every chunk.
//!
//! A file whose first 16 bytes are the SQLite header is cut at its page size instead: SQLite
//! changes scattered pages in place, so page-aligned chunks are the only ones that stay equal
//! when neighbouring pages change (format-spec/chunking.md has the measurement).

use std::io::{self, Read};

use fastcdc::v2020::{get_gear_with_seed, logarithm2, MASKS};
use serde::{Deserialize, Serialize};

/// The SQLite database header, first 16 bytes of every database file.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Chunking parameters, as recorded per backup type in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", deny_unknown_fields)]
pub enum ChunkerParams {
    /// FastCDC 2020, sizes in bytes.
    #[serde(rename = "fastcdc-v2020")]
    FastCdc {
        /// Minimum chunk size.
        min: u32,
        /// Target average.
        avg: u32,
        /// Maximum chunk size.
        max: u32,
        /// Normalization level 0..=3.
        normalization: u8,
    },
    /// Fixed-size chunks (used for SQLite pages; size taken from the file header when detected).
    #[serde(rename = "fixed")]
    Fixed {
        /// Chunk size.
        size: u32,
    },
}

impl ChunkerParams {
    /// Checks the parameters against the crate's limits.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::*;
        match *self {
            ChunkerParams::FastCdc { min, avg, max, normalization } => {
                if !(MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
                    || !(AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
                    || !(MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
                    || min > avg
                    || avg > max
                    || normalization > 3
                {
                    return Err(format!(
                        "fastcdc-v2020 parameters out of range: min {min} avg {avg} max {max} normalization {normalization} \
                         (limits: min {MINIMUM_MIN}..{MINIMUM_MAX}, avg {AVERAGE_MIN}..{AVERAGE_MAX}, max {MAXIMUM_MIN}..{MAXIMUM_MAX}, normalization 0..3)"
                    ));
                }
                Ok(())
            }
            ChunkerParams::Fixed { size } => {
                if (512..=16 * 1024 * 1024).contains(&size) {
                    Ok(())
                } else {
                    Err(format!("fixed chunk size {size} out of range 512..16777216"))
                }
            }
        }
    }

    /// Largest chunk these parameters produce.
    pub fn max_size(&self) -> usize {
        match *self {
            ChunkerParams::FastCdc { max, .. } => max as usize,
            ChunkerParams::Fixed { size } => size as usize,
        }
    }
}

/// Page size of a SQLite database from its 100-byte header, if `head` is one.
pub fn sqlite_page_size(head: &[u8]) -> Option<u32> {
    if head.len() < 18 || &head[..16] != SQLITE_MAGIC {
        return None;
    }
    let raw = u16::from_be_bytes([head[16], head[17]]) as u32;
    let size = if raw == 1 { 65536 } else { raw };
    (size.is_power_of_two() && (512..=65536).contains(&size)).then_some(size)
}

/// A prepared cut function.
#[derive(Clone)]
pub enum Cutter {
    /// FastCDC with precomputed masks and (seeded) gear tables.
    Cdc {
        /// Parameters.
        min: usize,
        /// Average.
        avg: usize,
        /// Maximum.
        max: usize,
        /// Masks: small, large, and their left-shifted twins.
        masks: [u64; 4],
        /// Gear table and its left-shifted twin.
        gear: Box<([u64; 256], [u64; 256])>,
    },
    /// Fixed-size cuts.
    Fixed(usize),
}

impl Cutter {
    /// Prepares the cut function; `seed` keys the gear table (0 = the crate's table).
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        match params {
            ChunkerParams::FastCdc { min, avg, max, normalization } => {
                let bits = logarithm2(avg);
                let n = normalization as u32;
                let mask_s = MASKS[(bits + n) as usize];
                let mask_l = MASKS[(bits - n) as usize];
                let (g, gls) = get_gear_with_seed(seed);
                Cutter::Cdc {
                    min: min as usize,
                    avg: avg as usize,
                    max: max as usize,
                    masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
                    gear: Box::new((*g, *gls)),
                }
            }
            ChunkerParams::Fixed { size } => Cutter::Fixed(size as usize),
        }
    }

    /// The most bytes the cut function wants to see at once.
    pub fn window(&self) -> usize {
        match self {
            Cutter::Cdc { max, .. } => *max,
            Cutter::Fixed(s) => *s,
        }
    }

    /// Length of the next chunk at the start of `data`, which holds `window()` bytes unless it is
    /// the end of the input.
    pub fn cut(&self, data: &[u8]) -> usize {
        match self {
            Cutter::Cdc { min, avg, max, masks, gear } => {
                let (_, n) = fastcdc::v2020::cut_gear(
                    &data[..data.len().min(*max)],
                    *min,
                    *avg,
                    *max,
                    masks[0],
                    masks[1],
                    masks[2],
                    masks[3],
                    &gear.0,
                    &gear.1,
                );
                n
            }
            Cutter::Fixed(s) => data.len().min(*s),
        }
    }
}

/// Streams chunks out of a reader with one buffer of a few windows, so memory is flat.
pub struct StreamChunker<R> {
    reader: R,
    cutter: Cutter,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes consumed from the reader so far.
    pub bytes_read: u64,
}

impl<R: Read> StreamChunker<R> {
    /// A chunker over `reader`. When `sqlite_detect` is set and the input starts with a SQLite
    /// header, the cutter switches to fixed chunks of the database's page size.
    pub fn new(mut reader: R, mut cutter: Cutter, sqlite_detect: bool) -> io::Result<Self> {
        let cap = (cutter.window() * 4).max(1 << 20);
        let mut buf = vec![0u8; cap];
        let mut end = 0;
        let mut eof = false;
        if sqlite_detect {
            while end < 100 {
                let n = read_retry(&mut reader, &mut buf[end..100])?;
                if n == 0 {
                    eof = true;
                    break;
                }
                end += n;
            }
            if let Some(ps) = sqlite_page_size(&buf[..end]) {
                cutter = Cutter::Fixed(ps as usize);
            }
        }
        Ok(StreamChunker { reader, cutter, buf, start: 0, end, eof, bytes_read: end as u64 })
    }

    /// Whether the SQLite page cutter was chosen.
    pub fn is_fixed(&self) -> bool {
        matches!(self.cutter, Cutter::Fixed(_))
    }

    fn fill(&mut self) -> io::Result<()> {
        let want = self.cutter.window();
        if self.end - self.start >= want || self.eof {
            return Ok(());
        }
        if self.buf.len() - self.start < want {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            let n = read_retry(&mut self.reader, &mut self.buf[self.end..])?;
            if n == 0 {
                self.eof = true;
            } else {
                self.end += n;
                self.bytes_read += n as u64;
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.fill()?;
        if self.start == self.end {
            return Ok(None);
        }
        let n = self.cutter.cut(&self.buf[self.start..self.end]);
        let chunk = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        Ok(Some(chunk))
    }
}

fn read_retry<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A push-driven chunker for byte streams we produce ourselves (the tree stream).
pub struct PushChunker {
    cutter: Cutter,
    buf: Vec<u8>,
}

impl PushChunker {
    /// A chunker with the given cut function.
    pub fn new(cutter: Cutter) -> Self {
        PushChunker { cutter, buf: Vec::new() }
    }

    /// Appends bytes and returns the chunks that are now final.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        let w = self.cutter.window();
        while self.buf.len() - start >= w {
            let n = self.cutter.cut(&self.buf[start..]);
            out.push(self.buf[start..start + n].to_vec());
            start += n;
        }
        self.buf.drain(..start);
        out
    }

    /// The remaining chunks at the end of the stream.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.buf.len() {
            let n = self.cutter.cut(&self.buf[start..]);
            out.push(self.buf[start..start + n].to_vec());
            start += n;
        }
        self.buf.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x9E3779B97F4A7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn matches_fastcdc_streamcdc() {
        let d = data(3_000_000);
        let p = ChunkerParams::FastCdc { min: 16384, avg: 65536, max: 262144, normalization: 1 };
        for seed in [0u64, 12345] {
            let theirs: Vec<usize> = fastcdc::v2020::StreamCDC::with_level_and_seed(
                &d[..],
                16384,
                65536,
                262144,
                fastcdc::v2020::Normalization::Level1,
                seed,
            )
            .map(|c| c.unwrap().length)
            .collect();
            let mut c = StreamChunker::new(&d[..], Cutter::new(p, seed), false).unwrap();
            let mut ours = Vec::new();
            while let Some(ch) = c.next_chunk().unwrap() {
                ours.push(ch.len());
            }
            assert_eq!(ours, theirs);
            let mut pc = PushChunker::new(Cutter::new(p, seed));
            let mut pushed = Vec::new();
            for part in d.chunks(77777) {
                pushed.extend(pc.push(part).into_iter().map(|c| c.len()));
            }
            pushed.extend(pc.finish().into_iter().map(|c| c.len()));
            assert_eq!(pushed, theirs);
        }
    }

    #[test]
    fn sqlite_header_switches_to_pages() {
        let mut d = data(4096 * 10 + 100);
        d[..16].copy_from_slice(SQLITE_MAGIC);
        d[16..18].copy_from_slice(&4096u16.to_be_bytes());
        let p = ChunkerParams::FastCdc { min: 16384, avg: 65536, max: 262144, normalization: 1 };
        let mut c = StreamChunker::new(&d[..], Cutter::new(p, 0), true).unwrap();
        assert!(c.is_fixed());
        let mut lens = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            lens.push(ch.len());
        }
        assert_eq!(lens.len(), 11);
        assert!(lens[..10].iter().all(|&l| l == 4096));
        assert_eq!(lens[10], 100);
    }
}
