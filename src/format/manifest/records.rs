//! Reading the tree stream record by record (format-spec/manifest.md): whole, or with a big
//! record's chunk ids handed to a sink as they arrive, never held whole.

use serde::Deserialize;

use super::{bincode_config, Node, NodeKind, MAX_RECORD};
use crate::error::{Error, Result};

/// A parser's buffer above this is released once drained (it held one big record).
const KEEP_BUFFER: usize = 1 << 20;
/// Records longer than this (a file of more than 32,768 chunks) are never held whole by
/// [`RecordParser::next_spilling`]: their chunk ids go to its sink as they arrive.
pub const SPILL_RECORD: usize = 1 << 20;

/// The fields of a [`Node`] before its chunk list. A struct is encoded as its fields in order, so
/// these decode the first bytes of a record body, and the list's length follows them.
#[derive(Deserialize)]
struct NodeHead {
    path: Vec<u8>,
    kind: NodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
    size: u64,
    target: Vec<u8>,
}

/// A record whose chunk ids are being handed to a sink.
struct Streaming {
    /// The node, without its chunks.
    node: Node,
    /// How many ids the record lists.
    count: u64,
    /// Bytes of the record consumed so far (length prefix, head, ids handed over).
    done: usize,
    /// Bytes of ids still to come.
    remaining: usize,
}

/// A tree's nodes as read, each with what comes with it.
pub type Nodes<L> = Box<dyn Iterator<Item = Result<(Node, L)>> + Send>;

/// A parent snapshot's tree read in step with a walk in tree order: [`InStep::find`] skips the
/// nodes before a path and takes the one at it. A read error ends the tree (logged): the caller
/// goes on as without a parent. `L` is what comes with each node (its spilled chunk list).
pub struct InStep<L> {
    nodes: Option<Nodes<L>>,
    peeked: Option<(Node, L)>,
    /// What an unreadable tree means for the caller, for the log.
    consequence: &'static str,
}

impl<L> InStep<L> {
    /// Over `nodes` (none: no parent).
    pub fn new(nodes: Option<Nodes<L>>, consequence: &'static str) -> Self {
        InStep { nodes, peeked: None, consequence }
    }

    /// The node at `path`, consuming the tree up to and including it.
    pub fn find(&mut self, path: &[u8]) -> Option<(Node, L)> {
        loop {
            if self.peeked.is_none() {
                match self.nodes.as_mut()?.next() {
                    Some(Ok(n)) => self.peeked = Some(n),
                    Some(Err(e)) => {
                        tracing::warn!("parent snapshot's tree unreadable, {}: {e}", self.consequence);
                        self.nodes = None;
                        return None;
                    }
                    None => {
                        self.nodes = None;
                        return None;
                    }
                }
            }
            let (p, _) = self.peeked.as_ref().expect("peeked");
            match super::path_cmp(&p.path, path) {
                std::cmp::Ordering::Less => self.peeked = None,
                std::cmp::Ordering::Equal => return self.peeked.take(),
                std::cmp::Ordering::Greater => return None,
            }
        }
    }
}

/// Splits a tree stream byte buffer into records, pulling more bytes on demand.
pub struct RecordParser {
    buf: Vec<u8>,
    pos: usize,
    streaming: Option<Streaming>,
}

impl Default for RecordParser {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordParser {
    /// An empty parser.
    pub fn new() -> Self {
        RecordParser { buf: Vec::new(), pos: 0, streaming: None }
    }
    /// Adds stream bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }
    /// The next complete record, `Ok(None)` if more bytes are needed.
    pub fn next(&mut self, what: &dyn Fn() -> String) -> Result<Option<Node>> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(avail[..4].try_into().expect("4")) as usize;
        if len > MAX_RECORD {
            return Err(Error::corrupt(what(), format!("tree record of {len} bytes")));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let node = Node::decode_record(&avail[4..4 + len], what)?;
        self.pos += 4 + len;
        self.release_drained();
        Ok(Some(node))
    }

    /// [`RecordParser::next`] for a reader that cannot hold a big record: the chunk ids of a
    /// record longer than [`SPILL_RECORD`] go to `sink` in pieces of whole ids as they are fed,
    /// and its node comes back without them, with their count. Same records, same errors.
    pub fn next_spilling(
        &mut self,
        what: &dyn Fn() -> String,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Option<(Node, Option<u64>)>> {
        if self.streaming.is_none() && !self.start_streaming(what)? {
            return Ok(self.next(what)?.map(|n| (n, None)));
        }
        let Some(s) = self.streaming.as_mut() else { return Ok(None) };
        let n = ((self.buf.len() - self.pos) / 32 * 32).min(s.remaining);
        if n > 0 {
            sink(&self.buf[self.pos..self.pos + n])?;
            self.pos += n;
            s.done += n;
            s.remaining -= n;
        }
        if s.remaining > 0 {
            return Ok(None);
        }
        let s = self.streaming.take().expect("streaming");
        self.release_drained();
        Ok(Some((s.node, Some(s.count))))
    }

    /// Starts streaming the next record if it is longer than [`SPILL_RECORD`] and its head is
    /// buffered. False: a record to read whole, or too few bytes to tell.
    fn start_streaming(&mut self, what: &dyn Fn() -> String) -> Result<bool> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 4 {
            return Ok(false);
        }
        let len = u32::from_le_bytes(avail[..4].try_into().expect("4")) as usize;
        if len <= SPILL_RECORD || len > MAX_RECORD {
            return Ok(false);
        }
        let body = &avail[4..avail.len().min(4 + len)];
        let undecodable = |e: bincode::error::DecodeError| -> Result<bool> {
            match e {
                bincode::error::DecodeError::UnexpectedEnd { .. } if body.len() < len => Ok(false),
                e => Err(Error::corrupt(what(), format!("undecodable tree record: {e}"))),
            }
        };
        let (head, used): (NodeHead, usize) = match bincode::serde::decode_from_slice(body, bincode_config()) {
            Ok(v) => v,
            Err(e) => return undecodable(e),
        };
        let (count, count_len): (u64, usize) = match bincode::decode_from_slice(&body[used..], bincode_config()) {
            Ok(v) => v,
            Err(e) => return undecodable(e),
        };
        let ids = len - used - count_len;
        if count.checked_mul(32) != Some(ids as u64) {
            return Err(Error::corrupt(what(), format!("tree record lists {count} chunks in {ids} bytes")));
        }
        let NodeHead { path, kind, mode, uid, gid, mtime_ns, ctime_ns, inode, size, target } = head;
        let node = Node { path, kind, mode, uid, gid, mtime_ns, ctime_ns, inode, size, target, chunks: Vec::new() };
        let done = 4 + used + count_len;
        self.pos += done;
        self.streaming = Some(Streaming { node, count, done, remaining: ids });
        Ok(true)
    }

    /// A big record grew the buffer; what stays buffered is usually a few records.
    fn release_drained(&mut self) {
        if self.pos == self.buf.len() && self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// Bytes fed but not consumed, and those of a record whose ids are being handed over.
    pub fn leftover(&self) -> usize {
        self.buf.len() - self.pos + self.streaming.as_ref().map_or(0, |s| s.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::tests::full_node;
    use crate::id::ChunkId;

    /// Every record of `stream`, fed in pieces of growing size, with `next` or `next_spilling`
    /// (the spilled ids put back into the node), and the number of records that spilled.
    fn parse_all(stream: &[u8], spilling: bool) -> Result<(Vec<Node>, usize)> {
        let mut p = RecordParser::new();
        let (mut out, mut spilled, mut ids) = (Vec::new(), 0, Vec::new());
        let (mut rest, mut step) = (stream, 1usize);
        loop {
            let got = if spilling {
                p.next_spilling(&|| "test".into(), &mut |b| {
                    assert_eq!(b.len() % 32, 0, "whole ids");
                    ids.extend(b.chunks_exact(32).map(|c| ChunkId(c.try_into().unwrap())));
                    Ok(())
                })?
            } else {
                p.next(&|| "test".into())?.map(|n| (n, None))
            };
            match got {
                Some((mut n, Some(count))) => {
                    assert!(n.chunks.is_empty());
                    assert_eq!(count, ids.len() as u64);
                    n.chunks = std::mem::take(&mut ids);
                    out.push(n);
                    spilled += 1;
                }
                Some((n, None)) => out.push(n),
                None if rest.is_empty() => break,
                None => {
                    let n = step.min(rest.len());
                    p.feed(&rest[..n]);
                    rest = &rest[n..];
                    step = step * 3 / 2 + 7;
                }
            }
        }
        if p.leftover() > 0 {
            return Err(Error::corrupt("test", format!("{} bytes of an incomplete record", p.leftover())));
        }
        Ok((out, spilled))
    }

    #[test]
    fn a_big_record_spills_its_ids_and_parses_to_the_same_nodes() {
        let small = Node { path: b"a".to_vec(), ..full_node(3) };
        let big = full_node(SPILL_RECORD / 32 + 1);
        let nodes = vec![small.clone(), big.clone(), small, Node { path: b"z.db".to_vec(), ..full_node(70000) }];
        let mut stream = Vec::new();
        for n in &nodes {
            n.encode_record(&mut stream);
        }
        let (held, none) = parse_all(&stream, false).unwrap();
        let (spilled, two) = parse_all(&stream, true).unwrap();
        assert_eq!((held, none), (nodes.clone(), 0));
        assert_eq!((spilled, two), (nodes, 2));

        // Damage is named, not a panic: a cut record, a chunk count its length does not hold.
        let mut one = Vec::new();
        big.encode_record(&mut one);
        let err = parse_all(&one[..one.len() - 40], true).unwrap_err().to_string();
        assert!(err.contains("incomplete record"), "{err}");
        let count_at = one.len() - big.chunks.len() * 32 - 3;
        assert_eq!(one[count_at], 251, "a three-byte count");
        one[count_at + 1] ^= 1;
        let err = parse_all(&one, true).unwrap_err().to_string();
        assert!(err.contains("tree record lists") && err.contains("chunks in"), "{err}");
        let err = parse_all(&one, false).unwrap_err().to_string();
        assert!(err.contains("tree record"), "{err}");
    }
}
