//! Command-line arguments ("low args": parsing and validation only, no I/O).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::format::keyfile::KdfParams;

/// Shown under `--help` and in the man page; the codes are defined in `cli::exit_code`.
const EXIT_CODES: &str = "Exit codes: 0 success, 1 error, 2 usage error, 3 damage found (verify, repair packs, an unreadable snapshot file), \
4 wrong password (or none available), 5 partial: a snapshot was saved but some files could not be read.";

/// cairn: deduplicating, encrypted backups of a small application's database, logs and config.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Repository directory.
    #[arg(long, global = true, env = "CAIRN_REPO")]
    pub repo: Option<PathBuf>,
    /// Configuration file (default ./cairn.json, then ./config.json).
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// File holding the repository password.
    #[arg(long, global = true, env = "CAIRN_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Read from this remote (a name from the config, or an rclone target such as
    /// `gdrive:backups/obd`) instead of the local repository: snapshots, ls, restore, cat, export,
    /// verify.
    #[arg(long, global = true)]
    pub remote: Option<String>,
    /// Argon2id memory cost, in KiB, of the key files this run writes (init, the first backup of
    /// a configuration, key add, key passwd); default 32768 (32 MiB). Lower values make a stolen
    /// repository's password cheaper to guess: meant for test suites and machines with almost no
    /// memory. The cost is recorded in the key file (`key list` shows it).
    #[arg(long, global = true, value_name = "KIB",
          value_parser = clap::value_parser!(u32).range(KdfParams::MIN_MEMORY_KIB as i64..=KdfParams::MAX_MEMORY_KIB as i64))]
    pub kdf_memory: Option<u32>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail (repeat for debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Argon2id cost for new key files: the defaults, or `--kdf-memory` (never an environment
    /// variable: nothing but an explicit option may lower a real repository's key derivation).
    pub fn kdf(&self) -> crate::Result<KdfParams> {
        self.kdf_memory.map_or(Ok(KdfParams::default()), KdfParams::with_memory_kib)
    }
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository (encrypted unless --encryption none).
    Init(InitArgs),
    /// Run the configured backups (all types, or those named with --type).
    Backup(BackupArgs),
    /// Validate the configuration file and print it resolved.
    Config {
        /// What to do.
        #[command(subcommand)]
        what: ConfigWhat,
    },
    /// Apply each type's retention policy: say what is kept and why, remove the rest; or, given
    /// snapshot ids, remove those snapshots.
    Forget(ForgetArgs),
    /// Delete data no snapshot references and repack sparse packs.
    Prune {
        /// Only say what would be done.
        #[arg(long)]
        dry_run: bool,
        /// Repack packs whose live share is below this percentage.
        #[arg(long, default_value_t = 50.0)]
        repack_below: f64,
    },
    /// Mark a pre-change snapshot verified (it then follows its own retention).
    MarkVerified {
        /// Snapshot id prefix.
        snapshot: String,
        /// Who verified the change.
        #[arg(long)]
        by: String,
    },
    /// Per type: last good backup and its age, next due, failures; repository size and dedup;
    /// what needs attention, as the exit code too.
    #[command(after_help = crate::lifecycle::status::verdict::EXIT_CODES_HELP)]
    Status {
        /// Also write Prometheus metrics to this file.
        #[arg(long)]
        metrics_file: Option<PathBuf>,
    },
    /// The activity log.
    History {
        /// Only this type.
        #[arg(long = "type")]
        backup_type: Option<String>,
        /// At most this many lines (runs with --json).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Instead list the snapshots removed by name (`forget SNAPSHOT`): who, why, when.
        #[arg(long, conflicts_with = "backup_type")]
        removed: bool,
        /// Every run on a line of its own: consecutive `unchanged` runs of a type are otherwise
        /// folded into one line.
        #[arg(long)]
        all: bool,
    },
    /// Upload to remotes what they lack (all configured remotes, or --remote NAME).
    Sync {
        /// Only say what would be uploaded and deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy a whole remote repository into a new local one (--remote NAME --repo DIR).
    Clone,
    /// Run the schedule in the foreground (for systemd); exits cleanly on SIGTERM or SIGINT.
    Daemon,
    /// Send a test event through every configured notification channel and say which worked
    /// (exit 1 if any failed).
    Notify {
        /// Send the test event (required: the only action for now).
        #[arg(long, required = true)]
        test: bool,
    },
    /// A read-only status page and JSON API (`/api/status`, `/api/history`, `/api/snapshots`) on
    /// the repository and config; runs beside the daemon.
    Serve(ServeArgs),
    /// Write conventional archives (obd_backup_db_2026-01-25_030000.db.gz, ...tar.gz).
    Export(ExportArgs),
    /// Take a snapshot of paths or of standard input.
    Snapshot(SnapshotArgs),
    /// List snapshots.
    Snapshots {
        /// Only this backup type.
        #[arg(long = "type")]
        backup_type: Option<String>,
        /// Only this kind: daily, pre-change or manual.
        #[arg(long, value_parser = ["daily", "pre-change", "manual"])]
        kind: Option<String>,
    },
    /// List the files in a snapshot.
    Ls {
        /// Snapshot id prefix, `latest`, `TYPE:latest` or `TYPE@TIME` (newest at or before; local time unless an offset is given).
        snapshot: String,
        /// Only this path and what is under it.
        path: Option<String>,
    },
    /// Restore a snapshot into a directory.
    Restore {
        /// Snapshot id prefix, `latest`, `TYPE:latest` or `TYPE@TIME` (newest at or before; local time unless an offset is given).
        snapshot: String,
        /// Directory to restore into (created if missing); with --table, --schema or --globals the
        /// SQL is written there.
        #[arg(long, required_unless_present_any = ["into", "pgdata"])]
        target: Option<PathBuf>,
        /// Restore only paths matching this glob (or under a matching directory); repeatable.
        #[arg(long)]
        include: Vec<String>,
        /// PostgreSQL (custom dump): only this table (pg_restore --table); repeatable.
        #[arg(long)]
        table: Vec<String>,
        /// PostgreSQL (custom dump): only this schema (pg_restore --schema); repeatable.
        #[arg(long)]
        schema: Vec<String>,
        /// PostgreSQL: restore into this existing database (a libpq connection string) with
        /// pg_restore (psql for plain dumps and globals), in one transaction.
        #[arg(long, conflicts_with_all = ["target", "include"])]
        into: Option<String>,
        /// PostgreSQL: the roles and other globals captured beside the dump (alone, or with
        /// --table/--schema as well).
        #[arg(long)]
        globals: bool,
        /// Lay a pg_basebackup snapshot out as a PostgreSQL data directory (new or empty) with
        /// the recovery settings that replay archived WAL to TIME (`TYPE@TIME`), or to the end
        /// of the archive; then start PostgreSQL on it.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["target", "include"])]
        pgdata: Option<PathBuf>,
    },
    /// Archive one WAL file into the repository: PostgreSQL's `archive_command`
    /// (`cairn --config /etc/cairn.json wal-push %p`). Exit 0 only once it is stored and synced.
    WalPush {
        /// The WAL file (`%p`: a segment, .history, .backup or .partial file).
        path: PathBuf,
        /// The pg_basebackup type it belongs to (default: the configuration's only one).
        #[arg(long = "type")]
        backup_type: Option<String>,
        /// Seconds to wait while prune, forget or repair holds the repository exclusively.
        #[arg(long, default_value_t = 120)]
        lock_wait: u64,
    },
    /// Restore one archived WAL file: PostgreSQL's `restore_command`
    /// (`cairn --config /etc/cairn.json wal-fetch %f %p`). Exit 1, quietly, when it is not archived.
    WalFetch {
        /// The WAL file's name (`%f`).
        file: String,
        /// Where to write it (`%p`); written beside it and renamed when whole.
        dest: PathBuf,
        /// The pg_basebackup type it belongs to (default: the configuration's only one).
        #[arg(long = "type")]
        backup_type: Option<String>,
    },
    /// Write one file of a snapshot to standard output.
    Cat {
        /// Snapshot id prefix, `latest`, `TYPE:latest` or `TYPE@TIME` (newest at or before; local time unless an offset is given).
        snapshot: String,
        /// Path inside the snapshot.
        path: String,
    },
    /// Remove stale locks (holder gone: other boot, dead or reused pid), or with --force every lock.
    Unlock {
        /// Also remove locks whose holder may still be running.
        #[arg(long)]
        force: bool,
    },
    /// Check the repository; exit code 3 when damage is found (3 also from any command stopped
    /// by an unreadable snapshot file, and from a backup while the repository holds one).
    Verify {
        /// Also read packs in full: all of them, or a percentage (`--read-data=10%`).
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "100%")]
        read_data: Option<String>,
        /// Seed for the --read-data sample (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Also restore the latest snapshot of each SQLite type to a scratch file and check it:
        /// `integrity_check`, and schema and row counts equal to those recorded at backup time.
        #[arg(long)]
        restore_test: bool,
    },
    /// Repair derived state.
    Repair {
        /// What to repair.
        #[command(subcommand)]
        what: RepairWhat,
    },
    /// Manage the key files that unlock an encrypted repository.
    Key {
        /// Key command.
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Print a shell completion script (e.g. `cairn completions bash > /etc/bash_completion.d/cairn`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; `cairn man | man -l -`).
    Man {
        /// Instead write one page per command (cairn.1, cairn-backup.1, ...) into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `backup` options.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Run now, whatever the schedule says.
    #[arg(long)]
    pub now: bool,
    /// Only these types; repeatable.
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Stream the SQLite pages (no temporary copy) even where the config asks for VACUUM INTO.
    #[arg(long)]
    pub no_vacuum: bool,
    /// Read every file even if it looks unchanged.
    #[arg(long)]
    pub force_read: bool,
    /// Also write Prometheus metrics to this file.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// Do not sync remotes after the backup.
    #[arg(long)]
    pub no_sync: bool,
    /// Take the types (each through its own source) as `pre-change` or `manual` snapshots
    /// instead of routine ones; implies --now.
    #[arg(long, value_parser = ["daily", "pre-change", "manual"])]
    pub kind: Option<String>,
    /// The change (pre-change) or what the snapshot holds (manual).
    #[arg(long, requires = "kind")]
    pub description: Option<String>,
    /// Change ticket.
    #[arg(long, requires = "kind")]
    pub ticket: Option<String>,
    /// Why it is kept (manual).
    #[arg(long, requires = "kind")]
    pub purpose: Option<String>,
    /// `days_N` or `permanent` (also `until_verified` for pre-change); pre-change days count
    /// from the verification.
    #[arg(long, requires = "kind")]
    pub retention: Option<String>,
    /// Who takes it (default: $USER, else the account name).
    #[arg(long, requires = "kind")]
    pub creator: Option<String>,
}

/// `forget` options.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove (id prefixes); without them, each type's retention policy is applied.
    pub snapshots: Vec<String>,
    /// Only say what would be removed (retention).
    #[arg(long, conflicts_with = "snapshots")]
    pub dry_run: bool,
    /// Only these types; repeatable (retention).
    #[arg(long = "type", conflicts_with = "snapshots")]
    pub types: Vec<String>,
    /// Also remove a permanent snapshot or a pre-change one not yet verified.
    #[arg(long, requires = "snapshots")]
    pub force: bool,
    /// Who removes them, for the history (default: $USER, else the account name).
    #[arg(long, requires = "snapshots")]
    pub by: Option<String>,
    /// Why, for the history.
    #[arg(long, requires = "snapshots")]
    pub reason: Option<String>,
}

/// `config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigWhat {
    /// Validate and print the resolved configuration.
    Check,
}

/// `serve` options.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port. Any address but 127.0.0.1 and ::1 needs a token.
    #[arg(long, default_value = "127.0.0.1:8377")]
    pub listen: std::net::SocketAddr,
    /// File holding the token (first line), asked of every request on a non-loopback address
    /// and of downloads; else the environment variable CAIRN_SERVE_TOKEN. Never on the command
    /// line, where `ps` shows it.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Let downloads of snapshot content through without the token on loopback.
    #[arg(long)]
    pub no_download_token: bool,
}

/// `export` options.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Snapshots (id prefix, `latest`, `TYPE:latest`, `TYPE@TIME`).
    #[arg(required_unless_present = "latest")]
    pub snapshots: Vec<String>,
    /// Export the newest scheduled (daily) snapshot of each type, or of the kind --kind names.
    #[arg(long)]
    pub latest: bool,
    /// With --latest: the kind to pick (daily, pre-change, manual).
    #[arg(long, requires = "latest", value_parser = ["daily", "pre-change", "manual"])]
    pub kind: Option<String>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// `flat` (default: NAME_backup_TYPE_TIME.ext files) or `dated` (YYYYMMDD/ dirs and backup_metadata.json).
    #[arg(long, default_value = "flat", value_parser = ["flat", "dated"])]
    pub layout: String,
    /// Name prefix (default: the config's `name`, else "cairn").
    #[arg(long)]
    pub name: Option<String>,
}

/// `init` options.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// `xchacha20poly1305` (default) or `none`.
    #[arg(long, default_value = "xchacha20poly1305", value_parser = ["xchacha20poly1305", "none"])]
    pub encryption: String,
    /// zstd level 1..19.
    #[arg(long, default_value_t = 3)]
    pub compression_level: i32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16)]
    pub pack_size_mib: u64,
}

/// `snapshot` options.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Backup type (db, logs, config, or any name).
    #[arg(long = "type")]
    pub backup_type: String,
    /// daily, pre-change or manual.
    #[arg(long, default_value = "daily", value_parser = ["daily", "pre-change", "manual"])]
    pub kind: String,
    /// Description (pre-change and manual snapshots).
    #[arg(long)]
    pub description: Option<String>,
    /// Change ticket.
    #[arg(long)]
    pub ticket: Option<String>,
    /// Who takes it (default: $USER).
    #[arg(long)]
    pub creator: Option<String>,
    /// Why it is kept (manual snapshots).
    #[arg(long)]
    pub purpose: Option<String>,
    /// Retention of a manual or pre-change snapshot: `permanent`, `days_N` or `until_verified`.
    #[arg(long)]
    pub retention: Option<String>,
    /// KEY=VALUE label; repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Read every file even when size, mtime, ctime and inode are unchanged.
    #[arg(long)]
    pub force_read: bool,
    /// Skip paths matching this glob (matched against the path inside the snapshot); repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Read standard input and store it as a file of this name.
    #[arg(long, value_name = "NAME", conflicts_with = "paths")]
    pub stdin: Option<String>,
    /// Files and directories.
    #[arg(required_unless_present = "stdin")]
    pub paths: Vec<PathBuf>,
}

/// `repair` subcommands.
#[derive(Subcommand, Debug)]
pub enum RepairWhat {
    /// Rebuild the index files and the local cache from the pack trailers.
    Index,
    /// Drop the packs verify or restore found damaged, after salvaging every chunk that still
    /// checks out into a new pack; names the chunks lost and the files that used them (exit 3).
    Packs,
    /// Move snapshot files that cannot be decoded into quarantine/snapshots/ (never deleted),
    /// naming each; afterwards forget, prune and `latest` work again.
    Snapshots,
}

/// `key` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// List key files.
    List,
    /// Add a key file for a new password (from --new-password-file, CAIRN_NEW_PASSWORD or a prompt).
    Add {
        /// Label for the key.
        #[arg(long, default_value = "")]
        label: String,
        /// File holding the new password.
        #[arg(long, env = "CAIRN_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Remove a key file (not the one in use, not the last).
    Remove {
        /// Key id or prefix.
        id: String,
    },
    /// Change the password: replace the key file in use with one for a new password.
    Passwd {
        /// File holding the new password.
        #[arg(long, env = "CAIRN_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
}
