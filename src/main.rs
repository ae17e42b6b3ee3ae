//! The `cairn` binary: process setup, then [`cairn::run`], whose result is the exit code
//! (0 ok, 1 error, 2 usage, 3 verify found damage, 4 wrong password).

fn main() {
    // Die quietly on a closed pipe (`cairn snapshots --json | head -1`) like other Unix tools,
    // instead of panicking in println!.
    // SAFETY: restoring the default disposition of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // glibc raises its mmap threshold to the size of the largest block freed (a 16 MiB pack read
    // by verify), after which pack buffers come from the heap arenas of every worker thread and
    // stay there: verify of a 256 MiB database peaked at 78 MB instead of 57 MB. A fixed
    // threshold of 1 MiB keeps pack-sized buffers in mmap (returned on free) and the page batches
    // of a backup (256 KiB, reused at a high rate) in the heap; measured: 128 KiB made them mmap churn.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a malloc tuning call made before any thread starts or allocation matters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        // Pages are allocated by the reader threads, sealed by the rayon workers and freed by the
        // main thread: with an arena per thread (up to 8 per core) each keeps its own free
        // memory. Two arenas: a backup of a 1 GiB database peaked at 73 MB instead of 80 MB
        // (MALLOC_ARENA_MAX=1 measured the same as 2), at no measurable cost in time.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    std::process::exit(cairn::run());
}
