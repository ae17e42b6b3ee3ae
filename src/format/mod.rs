//! Pure codecs for every on-disk byte: crypto framing, key files, blobs, the chunker, the pack
//! grammar, index files, manifests and the repository config. Nothing here does I/O; each codec
//! is specified in `format-spec/` and checked by its golden vectors.

pub mod blob;
pub mod chunker;
pub mod crypto;
pub mod index;
pub mod keyfile;
pub mod manifest;
pub mod pack;
pub mod repo_config;
pub mod sample;
pub mod verification;
