//! Library errors. Policy: every variant that concerns a file names it; corruption is its own
//! variant so callers (verify, restore) can tell damage from operational failure; `anyhow` is used
//! only in the CLI.

use std::path::PathBuf;

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    // The cause is part of the message and deliberately not a `source()`: anyhow's `{:#}`
    // would print it twice.
    #[error("{}: {}", path.display(), io_cause(err))]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        err: std::io::Error,
    },
    /// The file system holding `path` is full (ENOSPC, or SQLite's SQLITE_FULL).
    #[error("{path}: no space left on device (ENOSPC); free some space there and run again (`cairn forget` and `cairn prune` work on a full disk)")]
    NoSpace {
        /// The file or directory being written.
        path: PathBuf,
    },
    /// Stored bytes that fail a check (hash, authentication tag, grammar).
    #[error("{what} is corrupt: {detail}")]
    Corrupt {
        /// What was being read, e.g. "pack 1a2b…" or a path.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Damage found that stops this command until it is repaired (exit code 3, like `verify`
    /// finding damage): e.g. an unreadable snapshot file when `latest` is asked for. The detail
    /// names the damaged files and the way out.
    #[error("{what}: {detail}")]
    Damaged {
        /// What could not be done.
        what: String,
        /// The damaged files and what to do.
        detail: String,
    },
    /// The directory is not a cairn repository, or is of an unsupported version.
    #[error("{path}: {detail}")]
    NotARepository {
        /// The path given as repository.
        path: PathBuf,
        /// Why it was refused.
        detail: String,
    },
    /// The password does not open any key file.
    #[error("wrong password: no key file in {0} opens with it")]
    WrongPassword(PathBuf),
    /// No password source was available.
    #[error("a password is needed: set CAIRN_PASSWORD_FILE, pass --password-file, set CAIRN_PASSWORD, configure password_command, or run on a terminal")]
    NoPassword,
    /// The repository is locked by another process.
    #[error("repository is locked: {0}")]
    Locked(String),
    /// A resource stayed busy (a locked database); worth retrying later.
    #[error("{0}")]
    Busy(String),
    /// A source that cannot be reached now but may be later (a database server refusing
    /// connections or starting up); worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// A named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A store holds no object of this name (`store::Store::get` and friends). Typed so that
    /// callers tell an absent object from a failed read without matching message text.
    #[error("{what}: not found")]
    ObjectNotFound {
        /// Where it was looked for: a path, or a remote and a repository-relative name.
        what: String,
    },
    /// The caller asked for something impossible or malformed.
    #[error("{0}")]
    Invalid(String),
    /// SQLite cache failure.
    #[error("cache {}: {}", path.display(), sqlite_cause(err))]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// The underlying error.
        err: rusqlite::Error,
    },
}

impl Error {
    /// Whether retrying later may succeed (busy database, repository lock, I/O error), as opposed
    /// to a permanent problem (missing file, bad config, corruption, wrong password).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Busy(_) | Error::Locked(_) | Error::Unavailable(_) => true,
            // A read-only or over-quota file system does not heal between retries seconds apart.
            Error::Io { err, .. } => !matches!(
                err.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::ReadOnlyFilesystem
                    | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }
}

/// Shorthand result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns; a full file system becomes [`Error::NoSpace`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::StorageFull {
            return Error::NoSpace { path: path.into() };
        }
        Error::Io { path: path.into(), err: source }
    }
    /// Wraps an SQLite error with its database file; a failure of the file system under it
    /// becomes the error naming that cause ([`Error::sqlite_os`]).
    pub fn cache(path: impl Into<PathBuf>, err: rusqlite::Error) -> Self {
        let path = path.into();
        Error::sqlite_os(&path, &err).unwrap_or(Error::Cache { path, err })
    }
    /// The file-system cause behind an SQLite failure on `path`, as the error [`Error::io`]
    /// would give for it: SQLite reports ENOSPC, EROFS and EACCES only as its own result codes
    /// (SQLITE_FULL, SQLITE_READONLY, SQLITE_CANTOPEN, and a bare "disk I/O error" when writing
    /// its WAL or shared-memory file fails), so the file system is asked. `None`: not one of those.
    pub fn sqlite_os(path: &std::path::Path, err: &rusqlite::Error) -> Option<Error> {
        use rusqlite::ErrorCode as C;
        let code = err.sqlite_error_code()?;
        if code == C::DiskFull || (matches!(code, C::SystemIoFailure | C::CannotOpen) && no_free_blocks(path)) {
            return Some(Error::NoSpace { path: path.into() });
        }
        if matches!(code, C::SystemIoFailure | C::ReadOnly | C::CannotOpen | C::PermissionDenied) {
            if let Some(e) = write_denied(path) {
                return Some(Error::io(path, e));
            }
        }
        None
    }
    /// Whether this is a failure to write because the file system is full or read-only (or the
    /// file cannot be written): a reader can go on without writing local state.
    pub fn is_unwritable(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            Error::NoSpace { .. } => true,
            Error::Io { err, .. } => matches!(err.kind(), K::ReadOnlyFilesystem | K::PermissionDenied | K::StorageFull),
            Error::Cache { err, .. } => matches!(
                err.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::PermissionDenied
                )
            ),
            _ => false,
        }
    }
    /// A corruption error.
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into(), detail: detail.into() }
    }
}

/// The cause of an I/O error in words to act on: the errors a bad disk gives are named (with
/// their errno) together with what to do; any other as the operating system words it.
pub fn io_cause(err: &std::io::Error) -> String {
    let (what, hint) = match err.raw_os_error() {
        Some(libc::ENOSPC) => ("no space left on device (ENOSPC)", "free some space there and run again"),
        Some(libc::EACCES) => ("permission denied (EACCES)", "the user cairn runs as may not use it; fix its owner or mode, or run cairn as the user owning it"),
        Some(libc::EPERM) => ("operation not permitted (EPERM)", "the user cairn runs as may not do this here"),
        Some(libc::EROFS) => ("read-only file system (EROFS)", "the file system is mounted read-only (a disk remounted read-only after errors, or a read-only mount): remount it read-write or check the disk"),
        Some(libc::EDQUOT) => ("disk quota exceeded (EDQUOT)", "this user's quota there is used up: free some space or raise the quota"),
        Some(libc::EIO) => ("input/output error (EIO)", "the device failed to read or write: check the disk (dmesg, smartctl) before trusting it"),
        _ => return err.to_string(),
    };
    format!("{what}; {hint}")
}

/// An SQLite error in words: SQLite's own message, or, where it left none (its backup API
/// reports a failed step on a handle whose message reads "not an error"), the description of
/// the result code.
pub fn sqlite_cause(err: &rusqlite::Error) -> String {
    match err {
        rusqlite::Error::SqliteFailure(f, msg) if msg.as_deref().is_none_or(|m| m == "not an error") => {
            format!("SQLite {f}")
        }
        e => e.to_string(),
    }
}

/// Why this process may not read and write `path` (when it does not exist: create entries in its
/// nearest existing directory), as the error the system gives (EACCES, EROFS ...); `None` when it
/// may. For naming the cause of a failure that a library reported without its errno (SQLite).
fn write_denied(path: &std::path::Path) -> Option<std::io::Error> {
    use std::os::unix::ffi::OsStrExt;
    let p = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid C string; faccessat only reads it.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::R_OK | libc::W_OK, libc::AT_EACCESS) };
    (r != 0).then(std::io::Error::last_os_error)
}

/// Whether the file system holding `path` (or its directory) has no block left for this user.
fn no_free_blocks(path: &std::path::Path) -> bool {
    crate::util::disk_space(path).is_some_and(|d| d.available == 0)
}

/// Adds a path to `std::io::Result`s.
pub trait IoContext<T> {
    /// Attaches `path` to the error.
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
