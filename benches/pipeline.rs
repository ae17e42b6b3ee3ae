//! Pipeline micro-benchmarks (criterion): each stage of a backup on its own, then a whole
//! snapshot. Inputs come from the SplitMix64 generator of format-spec/chunking.md, so every run
//! sees the same bytes. Sample sizes are small (10 samples, ~3 s each) so `cargo bench --bench
//! pipeline` finishes in a few minutes on a 2-core machine; results are for comparing revisions
//! on one machine, not absolute figures.

#![allow(clippy::unwrap_used, reason = "a benchmark fails by panicking")]
#![allow(missing_docs, reason = "criterion_main! generates an undocumented main")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use rayon::prelude::*;
use zeroize::Zeroizing;

use cairn::format::blob;
use cairn::format::chunker::{Cutter, StreamChunker, SQLITE_MAGIC};
use cairn::format::crypto::ObjectKind;
use cairn::format::keyfile::KdfParams;
use cairn::format::repo_config::{default_chunkers, Encryption};
use cairn::fuzzing::{test_keys, SplitMix64};
use cairn::{init, snapshot, InitOptions, Repo, SnapshotOptions, Source};

const MIB: usize = 1 << 20;

fn random(seed: u64, n: usize) -> Vec<u8> {
    SplitMix64::bytes(seed, n)
}

/// Log-like text: timestamps, levels, components, paths and numbers (compresses about 4-6x).
fn text(seed: u64, n: usize) -> Vec<u8> {
    const LEVELS: [&str; 4] = ["INFO ", "DEBUG", "WARN ", "ERROR"];
    const COMPONENTS: [&str; 6] = ["http", "db", "obd", "sync", "auth", "sched"];
    const PATHS: [&str; 5] = ["/api/v1/trips", "/api/v1/readings", "/health", "/api/v1/sensors", "/login"];
    let mut g = SplitMix64(seed);
    let mut out = Vec::with_capacity(n + 200);
    let mut t = 1_795_000_000_000u64;
    while out.len() < n {
        t += g.below(900);
        let line = format!(
            "2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z {} [{}] GET {} status={} dur_ms={} bytes={} id={:08x}\n",
            1 + (t / 86_400_000) % 28,
            (t / 3_600_000) % 24,
            (t / 60_000) % 60,
            (t / 1000) % 60,
            t % 1000,
            LEVELS[g.below(4) as usize],
            COMPONENTS[g.below(6) as usize],
            PATHS[g.below(5) as usize],
            [200, 200, 200, 304, 404, 500][g.below(6) as usize],
            g.below(300),
            g.below(65536),
            g.next_u64() as u32
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(n);
    out
}

/// A SQLite-looking file: the header with page size 4096, then `body`.
fn sqlite_like(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    v[..16].copy_from_slice(SQLITE_MAGIC);
    v[16..18].copy_from_slice(&4096u16.to_be_bytes());
    v
}

fn configure<'a>(c: &'a mut Criterion, name: &str, bytes: usize) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(bytes as u64));
    g
}

fn chunk_all(data: &[u8], cutter: &Cutter, sqlite: bool) -> usize {
    let mut c = StreamChunker::new(data, cutter.clone(), sqlite).expect("in memory");
    let mut n = 0;
    while let Some(ch) = c.next_chunk().expect("in memory") {
        n += ch.len();
    }
    n
}

fn chunker(c: &mut Criterion) {
    let data = random(1, 64 * MIB);
    let db_file = sqlite_like(&data);
    let seed = test_keys(true).gear_seed();
    let ch = default_chunkers();
    let mut g = configure(c, "chunker", data.len());
    for name in ["default", "db"] {
        let cutter = Cutter::new(ch[name], seed);
        g.bench_function(format!("fastcdc-{name}"), |b| b.iter(|| chunk_all(&data, &cutter, true)));
    }
    let cutter = Cutter::new(ch["db"], seed);
    g.bench_function("sqlite-pages-4096", |b| b.iter(|| chunk_all(&db_file, &cutter, true)));
    g.finish();
}

fn chunk_ids(c: &mut Criterion) {
    let data = random(2, 64 * MIB);
    let keys = test_keys(true);
    let mut g = configure(c, "chunk-id", data.len());
    for size in [32 << 10, 256 << 10] {
        g.bench_function(format!("keyed-blake3-{}KiB", size >> 10), |b| {
            b.iter(|| data.chunks(size).map(|p| keys.chunk_id(p).0[0] as u64).sum::<u64>())
        });
    }
    g.bench_function("keyed-blake3-256KiB-rayon", |b| {
        b.iter(|| data.par_chunks(256 << 10).map(|p| keys.chunk_id(p).0[0] as u64).sum::<u64>())
    });
    g.finish();
}

fn compress(c: &mut Criterion) {
    let inputs = [("text", text(3, 16 * MIB)), ("random", random(3, 16 * MIB))];
    let mut g = configure(c, "zstd-3", 16 * MIB);
    for (name, data) in &inputs {
        let stored: usize = data.chunks(256 << 10).map(|p| blob::encode(p, 3).len()).sum();
        eprintln!("zstd-3/{name}: {} -> {} bytes ({:.2}x)", data.len(), stored, data.len() as f64 / stored as f64);
        g.bench_function(format!("blob-encode-{name}-256KiB"), |b| {
            b.iter(|| data.chunks(256 << 10).map(|p| blob::encode(p, 3).len()).sum::<usize>())
        });
    }
    g.finish();
}

fn seal(c: &mut Criterion) {
    let data = random(4, 16 * MIB);
    let mut g = configure(c, "seal", data.len());
    for (name, enc) in [("xchacha20poly1305", true), ("plain-tag", false)] {
        let keys = test_keys(enc);
        g.bench_function(format!("{name}-256KiB"), |b| {
            b.iter(|| data.chunks(256 << 10).map(|p| keys.seal(ObjectKind::Chunk, &[7; 32], p).len()).sum::<usize>())
        });
    }
    g.finish();
}

/// A ~64 MiB application tree: a 32 MiB SQLite-looking database of log-like rows, 16 log files
/// of 1 MiB, 256 files of 64 KiB of random bytes (already compressed data).
fn make_tree(root: &Path) -> usize {
    let app = root.join("app");
    std::fs::create_dir_all(app.join("data")).unwrap();
    std::fs::create_dir_all(app.join("logs")).unwrap();
    std::fs::create_dir_all(app.join("media")).unwrap();
    let mut total = 0;
    let mut put = |p: PathBuf, bytes: Vec<u8>| {
        total += bytes.len();
        std::fs::write(p, bytes).unwrap();
    };
    put(app.join("data/app.db"), sqlite_like(&text(5, 32 * MIB)));
    for i in 0..16 {
        put(app.join(format!("logs/app-{i:02}.log")), text(100 + i, MIB));
    }
    for i in 0..256 {
        put(app.join(format!("media/{i:03}.bin")), random(1000 + i, 64 << 10));
    }
    total
}

fn fresh_repo(dir: &Path) -> Repo {
    let opts = InitOptions {
        encryption: Encryption::XChaCha20Poly1305,
        compression_level: 3,
        pack_size: 16 << 20,
        kdf: KdfParams { m_cost_kib: 1024, t_cost: 1, p_cost: 1 },
    };
    init(dir, &opts, Some(b"bench")).unwrap();
    Repo::open(dir, &|| Ok(Zeroizing::new(b"bench".to_vec()))).unwrap()
}

fn end_to_end(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    let total = make_tree(src.path());
    let source = || Source::Paths(vec![src.path().join("app")]);
    let opts = SnapshotOptions { backup_type: "bench".into(), ..Default::default() };
    let mut g = configure(c, "snapshot", total);
    g.bench_function("first-64MiB-tree", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().unwrap();
                let repo = fresh_repo(&d.path().join("repo"));
                (d, repo)
            },
            |(d, mut repo)| {
                snapshot(&mut repo, source(), &opts).unwrap();
                (d, repo)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("unchanged-64MiB-tree", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().unwrap();
                let mut repo = fresh_repo(&d.path().join("repo"));
                snapshot(&mut repo, source(), &opts).unwrap();
                (d, repo)
            },
            |(d, mut repo)| {
                snapshot(&mut repo, source(), &opts).unwrap();
                (d, repo)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, chunker, chunk_ids, compress, seal, end_to_end);
criterion_main!(benches);
