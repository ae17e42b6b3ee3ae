//! Restore writes what it must and reads each pack range once: sparse files come back sparse
//! (issue 10 item 14), and many small files are restored in batches, one range read per run of
//! chunks rather than one per file (item 15; its timings are in benches/restore.sh).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::util::{self, Env};

fn blake3_of(p: &Path) -> (u64, String) {
    let mut f = File::open(p).unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    (n, h.finalize().to_hex().to_string())
}

/// A 1 GiB file that is holes except for a few islands of data (one straddling a block edge,
/// one at the very end) restores byte-identical, with only the islands allocated.
#[test]
fn sparse_file_restores_sparse() {
    let env = Env::new();
    env.init();
    let src = env.path().join("vm");
    std::fs::create_dir(&src).unwrap();
    let img = src.join("disk.img");
    let len: u64 = 1 << 30;
    let f = File::create(&img).unwrap();
    f.set_len(len).unwrap();
    for (i, at) in [0u64, 4095, 300 << 20, (700 << 20) + 12_345, len - 50_000].into_iter().enumerate() {
        let n = (len - at).min(50_000) as usize;
        f.write_all_at(&util::prng_bytes(i as u64 + 1, n), at).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let src_allocated = std::fs::metadata(&img).unwrap().blocks() * 512;
    assert!(src_allocated < 4 << 20, "the source itself must be sparse ({src_allocated} bytes allocated)");

    env.run(&["snapshot", "--type", "vm", src.to_str().unwrap()]).ok();
    let out = env.path().join("out");
    env.run(&["restore", "latest", "--target", out.to_str().unwrap()]).ok();

    let back = out.join("vm/disk.img");
    assert_eq!(blake3_of(&back), blake3_of(&img), "restored content differs");
    let m = std::fs::metadata(&back).unwrap();
    assert_eq!(m.len(), len);
    let allocated = m.blocks() * 512;
    assert!(allocated < 8 << 20, "a 1 GiB file with 250 KB of data was restored with {allocated} bytes allocated");
}

/// 3,000 small files (1-4 KiB, varied modes and mtimes, some all zeros, some empty) restore
/// exactly, and their content is read from the packs in a handful of range reads, not one per
/// file.
#[test]
fn many_small_files_restore_with_few_pack_reads() {
    let env = Env::new();
    env.init();
    let src = env.path().join("tree");
    let mut bytes = 0u64;
    for i in 0..3000u64 {
        let dir = src.join(format!("d{:02}", i % 40));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("f{i:05}.txt"));
        let n = match i % 100 {
            0 => 0,
            _ => 1024 + (i * 7919) % 3072,
        } as usize;
        let data = if i % 97 == 0 { vec![0u8; n] } else { util::prng_bytes(i, n) };
        std::fs::write(&p, &data).unwrap();
        bytes += n as u64;
        let mode = [0o644, 0o600, 0o755, 0o444][(i % 4) as usize];
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let t = filetime::FileTime::from_unix_time(1_600_000_000 + i as i64, (i * 1000) as u32);
        filetime::set_file_times(&p, t, t).unwrap();
    }
    std::os::unix::fs::symlink("f00001.txt", src.join("d01/link")).unwrap();
    for i in 0..40 {
        let t = filetime::FileTime::from_unix_time(1_500_000_000 + i, 7);
        filetime::set_file_times(src.join(format!("d{i:02}")), t, t).unwrap();
    }
    env.run(&["snapshot", "--type", "files", src.to_str().unwrap()]).ok();

    let out = env.path().join("out");
    let r = env.run(&["--json", "restore", "latest", "--target", out.to_str().unwrap()]).ok().json();
    let report = &r["report"];
    assert_eq!(report["files"].as_u64(), Some(3000));
    assert_eq!(report["bytes"].as_u64(), Some(bytes));
    util::assert_trees_equal_strict(&src, &out.join("tree"));
    let packs = util::repo_files(&env.repo(), "packs").len() as u64;
    let reads = report["pack_reads"].as_u64().unwrap_or_else(|| panic!("no pack_reads in the report: {report}"));
    assert!(reads <= 4 * packs, "{reads} pack range reads for 3000 files in {packs} packs");
    let temps: Vec<_> =
        util::walk(&out).into_iter().filter(|p| p.to_string_lossy().contains(".cairn-restore-")).collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}
