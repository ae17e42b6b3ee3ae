//! The `cairn` binary: process setup, then [`cairn::run`], whose result is the exit code
//! (0 ok, 1 error, 2 usage, 3 verify found damage, 4 wrong password).

fn main() {
    // Die quietly on a closed pipe (`cairn snapshots --json | head -1`) like other Unix tools,
    // instead of panicking in println!.
    // SAFETY: restoring the default disposition of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(cairn::run());
}
