//! Which parent page a new page of a database resembles: for each chunk of a SQLite file cut at
//! its page size, the chunk the parent snapshot held at the same position of the same path. The
//! backup stores a changed page as a delta against it (`repo::chunks`). Only a hint: a wrong one
//! costs compression, never correctness (every stored chunk round-trips before it is kept).

use crate::error::Result;
use crate::format::manifest::{InStep, NodeKind};
use crate::id::ChunkId;
use crate::repo::tree::{ChunkList, ListedNode};

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The page size a database's first page declares, when `first` is exactly one such page (so
/// the file was cut at page boundaries, chunking.md).
pub fn page_size_of_first_chunk(first: &[u8]) -> Option<usize> {
    if first.len() < 100 || &first[..16] != SQLITE_MAGIC {
        return None;
    }
    let size = match u16::from_be_bytes([first[16], first[17]]) {
        1 => 65536,
        n => n as usize,
    };
    (size == first.len()).then_some(size)
}

/// The current file as far as the plan goes.
struct Current {
    /// Its path.
    path: Vec<u8>,
    /// The parent's chunks of the same path (empty: no parent file), or the list holding them.
    parent: Vec<ChunkId>,
    listed: Option<ChunkList>,
    /// Position of the next chunk in the file.
    index: usize,
    /// The page size, once the first chunk showed a database cut at pages (`Some(None)`: not one).
    page_size: Option<Option<usize>>,
}

/// Walks the parent snapshot's tree in step with the backup (both in tree order).
pub struct PagePlan {
    parent: InStep<Option<ChunkList>>,
    current: Option<Current>,
}

impl PagePlan {
    /// A plan over the parent snapshot's tree (`None`: no parent, no bases).
    pub fn new(parent: Option<Box<dyn Iterator<Item = Result<ListedNode>> + Send>>) -> Self {
        PagePlan { parent: InStep::new(parent, "pages stored whole"), current: None }
    }

    /// A file starts (again, after a retry: the same path keeps the same parent chunks).
    pub fn file_start(&mut self, path: &[u8]) {
        if let Some(c) = self.current.as_mut().filter(|c| c.path == path) {
            c.index = 0;
            c.page_size = None;
            return;
        }
        // Taken, not copied; a 1 GiB database's ids (8 MiB) stay in their list's file.
        let (parent, listed) = match self.parent.find(path) {
            Some((n, listed)) if n.kind == NodeKind::File => (n.chunks, listed),
            _ => (Vec::new(), None),
        };
        self.current = Some(Current { path: path.to_vec(), parent, listed, index: 0, page_size: None });
    }

    /// The next chunk of the current file: the parent's page at its position, if it has one.
    pub fn chunk(&mut self, data: &[u8]) -> Option<ChunkId> {
        let c = self.current.as_mut()?;
        let i = c.index;
        c.index += 1;
        if c.parent.is_empty() && c.listed.as_ref().is_none_or(|l| l.is_empty()) {
            return None;
        }
        let size = *c.page_size.get_or_insert_with(|| page_size_of_first_chunk(data));
        if size != Some(data.len()) {
            return None;
        }
        match c.listed.as_mut() {
            None => c.parent.get(i).copied(),
            Some(l) => match l.get(i as u64) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!("parent's page list unreadable, the file's pages stored whole: {e}");
                    c.listed = None;
                    None
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::Node;

    fn node(path: &str, chunks: &[u8]) -> Node {
        Node {
            path: path.as_bytes().to_vec(),
            kind: NodeKind::File,
            mode: 0o100600,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            size: 0,
            target: Vec::new(),
            chunks: chunks.iter().map(|b| ChunkId([*b; 32])).collect(),
        }
    }

    fn first_page(size: usize) -> Vec<u8> {
        let mut p = vec![0u8; size];
        p[..16].copy_from_slice(SQLITE_MAGIC);
        p[16..18].copy_from_slice(&(if size == 65536 { 1 } else { size as u16 }).to_be_bytes());
        p
    }

    #[test]
    fn pages_map_to_the_parent_page_at_the_same_position() {
        let tree = vec![
            Ok((node("a.db", &[1, 2, 3]), None)),
            Ok((node("b.txt", &[4, 5]), None)),
            Ok((node("c.db", &[6, 7]), None)),
        ];
        let mut plan = PagePlan::new(Some(Box::new(tree.into_iter())));
        plan.file_start(b"a.db");
        assert_eq!(plan.chunk(&first_page(4096)), Some(ChunkId([1; 32])));
        assert_eq!(plan.chunk(&[0; 4096]), Some(ChunkId([2; 32])));
        assert_eq!(plan.chunk(&[0; 100]), None, "not a whole page");
        assert_eq!(plan.chunk(&[0; 4096]), None, "past the parent's end");
        // A retried file starts over against the same parent.
        plan.file_start(b"a.db");
        assert_eq!(plan.chunk(&first_page(4096)), Some(ChunkId([1; 32])));
        // Not a database: no bases.
        plan.file_start(b"b.txt");
        assert_eq!(plan.chunk(&[0; 4096]), None);
        assert_eq!(plan.chunk(&[0; 4096]), None);
        // A new file has no parent.
        plan.file_start(b"b2.db");
        assert_eq!(plan.chunk(&first_page(4096)), None);
        plan.file_start(b"c.db");
        assert_eq!(plan.chunk(&first_page(65536)), Some(ChunkId([6; 32])));
        assert_eq!(plan.chunk(&[0; 65536]), Some(ChunkId([7; 32])));
        assert_eq!(page_size_of_first_chunk(&first_page(4096)[..2048]), None);
    }

    #[test]
    fn a_parent_list_in_a_spill_file_plans_the_same_bases_as_one_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::LocalStore::new(dir.path().join("repo"));
        store.create_layout().unwrap();
        let n = crate::store::spill::LIST_BLOCK * 2 + 9;
        let ids: Vec<ChunkId> = (0..n).map(|i| ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect();
        let held = Node { chunks: ids.clone(), ..node("a.db", &[]) };
        let mut list = ChunkList::new(&store);
        for id in &ids {
            list.push(*id).unwrap();
        }
        assert!(list.is_spilled());
        let listed = (node("a.db", &[]), Some(list));
        let mut plans = [(held, None), listed].map(|p| PagePlan::new(Some(Box::new(vec![Ok(p)].into_iter()))));
        // The whole file, a retry cut short, then the file again and past the parent's end.
        for pages in [n, 1000, n + 5] {
            let bases: Vec<Vec<Option<ChunkId>>> = plans
                .iter_mut()
                .map(|plan| {
                    plan.file_start(b"a.db");
                    (0..pages).map(|i| plan.chunk(&if i == 0 { first_page(512) } else { vec![0; 512] })).collect()
                })
                .collect();
            assert_eq!(bases[0], bases[1]);
            assert_eq!(bases[0][..n.min(pages)], ids.iter().map(|c| Some(*c)).collect::<Vec<_>>()[..n.min(pages)]);
        }
    }
}
