//! One conformance suite for every [`Store`]: each check below runs against the local directory,
//! memory, rclone (a `:local:` remote through the real `rclone` binary) and the fetching mirror.

use std::any::Any;
use std::sync::Arc;

use super::fetching::FetchingStore;
use super::memory::MemoryStore;
use super::rclone::RcloneStore;
use super::{FileKind, Handle, LocalStore, Store};
use crate::error::Error;
use crate::id::{IndexId, KeyId, LockId, PackId, SnapshotId};

/// A store under test, a twin whose listings fail, and what keeps their directories alive.
struct Fixture {
    store: Arc<dyn Store>,
    broken: Arc<dyn Store>,
    _keep: Vec<Box<dyn Any>>,
}

fn local() -> Fixture {
    let d = tempfile::tempdir().unwrap();
    let s = LocalStore::new(d.path().join("repo"));
    s.create_layout().unwrap();
    Fixture { store: Arc::new(s), broken: Arc::new(broken_local(&d)), _keep: vec![Box::new(d)] }
}

/// A repository whose kind directories are regular files: every listing fails (as root, a
/// permission bit would not stop the reads).
fn broken_local(d: &tempfile::TempDir) -> LocalStore {
    let root = d.path().join("broken");
    std::fs::create_dir_all(&root).unwrap();
    for k in ["keys", "packs", "index", "snapshots", "locks"] {
        std::fs::write(root.join(k), b"not a directory").unwrap();
    }
    LocalStore::new(root)
}

fn memory() -> Fixture {
    let broken = MemoryStore::new();
    broken.fail_listings(true);
    Fixture { store: Arc::new(MemoryStore::new()), broken: Arc::new(broken), _keep: vec![] }
}

fn rclone() -> Fixture {
    assert!(
        std::process::Command::new("rclone").arg("version").output().is_ok_and(|o| o.status.success()),
        "the rclone conformance tests need the rclone binary (apt-get install -y rclone)"
    );
    let d = tempfile::tempdir().unwrap();
    let target = format!(":local:{}", d.path().join("remote").display());
    let store = RcloneStore::new("conformance", &target, &[]);
    // Nothing listens on port 1: the connection is refused at once.
    let broken =
        RcloneStore::new("unreachable", ":webdav,url='http://127.0.0.1:1':repo", &["--low-level-retries=1".into()]);
    Fixture { store: Arc::new(store), broken: Arc::new(broken), _keep: vec![Box::new(d)] }
}

fn fetching() -> Fixture {
    let d = tempfile::tempdir().unwrap();
    let local = LocalStore::new(d.path().join("mirror"));
    local.create_layout().unwrap();
    let remote: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let store = FetchingStore::new(local, remote.clone());
    let broken = FetchingStore::new(broken_local(&d), remote);
    Fixture { store: Arc::new(store), broken: Arc::new(broken), _keep: vec![Box::new(d)] }
}

fn one_of_each() -> Vec<(Handle, Vec<u8>)> {
    vec![
        (Handle::Config, b"{\"config\": true}\n".to_vec()),
        (Handle::Key(KeyId([0x11; 32])), b"key".to_vec()),
        (Handle::Pack(PackId([0x22; 32])), vec![2; 1000]),
        (Handle::Pack(PackId([0xf3; 32])), vec![3; 10]),
        (Handle::Index(IndexId([0x44; 32])), b"index".to_vec()),
        (Handle::Snapshot(SnapshotId([0x55; 32])), b"snapshot".to_vec()),
        (Handle::Lock(LockId([0x66; 32])), b"{}".to_vec()),
    ]
}

fn put_get_and_ranges(f: &Fixture) {
    let s = &f.store;
    let h = Handle::Index(IndexId([1; 32]));
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    s.put(h, &bytes).unwrap();
    assert_eq!(s.get(h).unwrap(), bytes);
    assert_eq!(s.size(h).unwrap(), Some(5000));
    assert_eq!(s.get_range(h, 0, 3).unwrap(), &bytes[..3]);
    let mut buf = b"left over from an earlier object".to_vec();
    s.get_into(h, &mut buf).unwrap();
    assert_eq!(buf, bytes);
    assert_eq!(s.get_range(h, 4000, 1000).unwrap(), &bytes[4000..]);
    assert_eq!(s.get_range(h, 17, 0).unwrap(), b"");
    let empty = Handle::Snapshot(SnapshotId([2; 32]));
    s.put(empty, b"").unwrap();
    assert_eq!(s.get(empty).unwrap(), b"");
    assert_eq!(s.size(empty).unwrap(), Some(0));
}

fn a_name_is_never_overwritten(f: &Fixture) {
    let s = &f.store;
    let h = Handle::Pack(PackId([3; 32]));
    s.put(h, b"first").unwrap();
    s.put(h, b"first").unwrap();
    // Same name, same size: taken as the same content, and the stored one stays.
    s.put(h, b"other").unwrap();
    assert_eq!(s.get(h).unwrap(), b"first");
    let e = s.put(h, b"a different size").unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_eq!(s.get(h).unwrap(), b"first");
}

fn not_found_is_the_typed_variant(f: &Fixture) {
    let s = &f.store;
    for h in [Handle::Pack(PackId([4; 32])), Handle::Config, Handle::Key(KeyId([4; 32]))] {
        assert!(matches!(s.get(h), Err(Error::ObjectNotFound { .. })), "get {h}");
        assert!(matches!(s.get_range(h, 0, 1), Err(Error::ObjectNotFound { .. })), "get_range {h}");
        assert!(matches!(s.get_into(h, &mut Vec::new()), Err(Error::ObjectNotFound { .. })), "get_into {h}");
        assert_eq!(s.size(h).unwrap(), None, "size {h}");
        s.remove(h).unwrap();
    }
    let h = Handle::Snapshot(SnapshotId([4; 32]));
    s.put(h, b"x").unwrap();
    s.remove(h).unwrap();
    s.remove(h).unwrap();
    assert!(matches!(s.get(h), Err(Error::ObjectNotFound { .. })));
}

fn short_reads_are_corruption(f: &Fixture) {
    let s = &f.store;
    let h = Handle::Pack(PackId([5; 32]));
    s.put(h, b"0123456789").unwrap();
    for (offset, len) in [(5, 10), (10, 1), (11, 1), (0, 11)] {
        let e = s.get_range(h, offset, len).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{offset}+{len}: {e}");
    }
    assert_eq!(s.get_range(h, 9, 1).unwrap(), b"9");
}

fn listing_reports_each_kind(f: &Fixture) {
    let s = &f.store;
    for kind in FileKind::LISTING_ORDER {
        assert!(s.list(kind).unwrap().is_empty(), "{kind:?} of an empty store");
    }
    let all = one_of_each();
    for (h, b) in &all {
        s.put(*h, b).unwrap();
    }
    for kind in FileKind::LISTING_ORDER {
        let mut want: Vec<(Handle, u64)> =
            all.iter().filter(|(h, _)| h.kind() == kind).map(|(h, b)| (*h, b.len() as u64)).collect();
        want.sort();
        let got: Vec<(Handle, u64)> = s.list(kind).unwrap().into_iter().map(|st| (st.handle, st.size)).collect();
        assert_eq!(got, want, "{kind:?}");
    }
    let mut inv: Vec<Handle> = s.inventory().unwrap().objects.into_iter().map(|st| st.handle).collect();
    inv.sort();
    let mut want: Vec<Handle> = all.iter().map(|(h, _)| *h).collect();
    want.sort();
    assert_eq!(inv, want);
    s.remove(all[2].0).unwrap();
    assert_eq!(s.list(FileKind::Pack).unwrap().len(), 1);
}

fn a_failed_listing_is_an_error(f: &Fixture) {
    for kind in [FileKind::Pack, FileKind::Index, FileKind::Snapshot, FileKind::Key, FileKind::Lock] {
        assert!(f.broken.list(kind).is_err(), "{kind:?} listed as if empty");
    }
    assert!(f.broken.inventory().is_err());
}

fn copies_both_ways(f: &Fixture) {
    let d = tempfile::tempdir().unwrap();
    let src = LocalStore::new(d.path().join("src"));
    src.create_layout().unwrap();
    let all = one_of_each();
    for (h, b) in &all {
        src.put(*h, b).unwrap();
    }
    let handles: Vec<Handle> = all.iter().map(|(h, _)| *h).collect();
    f.store.copy_in(&src, &handles).unwrap();
    f.store.copy_in(&src, &handles).unwrap();
    let back = LocalStore::new(d.path().join("back"));
    back.create_layout().unwrap();
    back.copy_in(f.store.as_ref(), &handles).unwrap();
    for (h, b) in &all {
        assert_eq!(&f.store.get(*h).unwrap(), b, "{h}");
        assert_eq!(&back.get(*h).unwrap(), b, "{h}");
    }
    let missing = Handle::Index(IndexId([0x77; 32]));
    assert!(back.copy_in(f.store.as_ref(), &[missing]).is_err());
    assert_eq!(back.size(missing).unwrap(), None);
}

macro_rules! conformance {
    ($store:ident) => {
        mod $store {
            #[test]
            fn put_get_and_ranges() {
                super::put_get_and_ranges(&super::$store());
            }
            #[test]
            fn a_name_is_never_overwritten() {
                super::a_name_is_never_overwritten(&super::$store());
            }
            #[test]
            fn not_found_is_the_typed_variant() {
                super::not_found_is_the_typed_variant(&super::$store());
            }
            #[test]
            fn short_reads_are_corruption() {
                super::short_reads_are_corruption(&super::$store());
            }
            #[test]
            fn listing_reports_each_kind() {
                super::listing_reports_each_kind(&super::$store());
            }
            #[test]
            fn a_failed_listing_is_an_error() {
                super::a_failed_listing_is_an_error(&super::$store());
            }
            #[test]
            fn copies_both_ways() {
                super::copies_both_ways(&super::$store());
            }
        }
    };
}

conformance!(local);
conformance!(memory);
conformance!(rclone);
conformance!(fetching);
