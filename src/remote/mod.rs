//! Remotes: mirrors of the repository's immutable files, reached through the real `rclone`
//! binary. The local repository is the source of truth; a remote alone is a complete repository.

pub mod mirror;
pub mod rclone;
pub mod sync;
