//! The CLI edge: turns arguments into library calls and renders results. `anyhow` lives here only.
//!
//! [`args`] defines the arguments, `cmd/` holds one module per command (or small family), each
//! building options, calling the library and rendering text or `--json`; [`main`] is the one
//! place that turns an outcome into an exit code.

pub mod args;
mod cmd;
mod render;

use std::cell::OnceCell;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Parser;
use zeroize::Zeroizing;

use crate::lifecycle::config::Config;
use crate::lifecycle::password::PasswordSources;
use crate::repo::Repo;
use crate::store::rclone::RcloneStore as Rclone;
use args::{Cli, Command, ConfigWhat, RepairWhat};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: an error.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: bad command-line usage (clap's own code).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: damage found (verify; `repair packs` dropped data nothing else holds; a command
/// stopped by an unreadable snapshot file; a backup that saved its snapshots while the repository
/// holds unreadable snapshot files).
pub const EXIT_DAMAGE: i32 = 3;
/// Exit code: wrong password or unusable key.
pub const EXIT_PASSWORD: i32 = 4;
/// Exit code: a snapshot was saved, but some files could not be read (partial).
pub const EXIT_PARTIAL: i32 = 5;

/// How a command that ran to its end finished; an `Err` is the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Everything done.
    Ok,
    /// The command worked and found damage (verify), or lost data (repair packs).
    Damaged,
    /// The command worked, but left something undone that it has already reported.
    Incomplete,
    /// A snapshot was saved without some files that could not be read (already reported).
    Partial,
    /// The exit code is the command's answer (`status`: its verdict, already rendered).
    Code(i32),
}

// `status` computes its damage code in the library; it must stay every command's damage code.
const _: () = assert!(EXIT_DAMAGE == crate::lifecycle::status::verdict::EXIT_DAMAGE);

/// Maps a command's outcome to the process exit code.
pub fn exit_code(outcome: &Result<Finish>) -> i32 {
    match outcome {
        Ok(Finish::Ok) => EXIT_OK,
        Ok(Finish::Damaged) => EXIT_DAMAGE,
        Ok(Finish::Incomplete) => EXIT_ERROR,
        Ok(Finish::Partial) => EXIT_PARTIAL,
        Ok(Finish::Code(c)) => *c,
        Err(e) => match e.downcast_ref::<crate::Error>() {
            Some(crate::Error::WrongPassword(_)) | Some(crate::Error::NoPassword) => EXIT_PASSWORD,
            Some(crate::Error::Damaged { .. }) => EXIT_DAMAGE,
            _ => EXIT_ERROR,
        },
    }
}

/// The whole program after process setup: parse, set up logging, run, report an error; returns
/// the exit code (0 ok, 1 error, 2 usage, 3 damage found, 4 wrong password, 5 partial
/// snapshot: some files could not be read).
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version arrive here too, on stdout and with success.
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(render::colour(&std::io::stderr()))
        .with_timer(render::LocalTimer)
        .init();
    let outcome = run(cli);
    // The one place a command's error is printed: the library returns it and does not log it too.
    if let Err(e) = &outcome {
        eprintln!("error: {e:#}");
    }
    exit_code(&outcome)
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<Finish> {
    let ctx = Ctx { cli, config: OnceCell::new() };
    match &ctx.cli.command {
        Command::Init(a) => cmd::init::run(&ctx, a),
        Command::Backup(a) => cmd::backup::run(&ctx, a),
        Command::Config { what: ConfigWhat::Check } => cmd::config::check(&ctx),
        Command::Forget(a) if !a.snapshots.is_empty() => cmd::forget::forget_named(&ctx, a),
        Command::Forget(a) => cmd::forget::forget(&ctx, a.dry_run, &a.types),
        Command::MarkVerified { snapshot, by } => cmd::forget::mark_verified(&ctx, snapshot, by),
        Command::Prune { dry_run, repack_below } => cmd::prune::run(&ctx, *dry_run, *repack_below),
        Command::Status { metrics_file } => cmd::status::status(&ctx, metrics_file.as_deref()),
        Command::History { removed: true, limit, .. } => cmd::forget::removed(&ctx, *limit),
        Command::History { backup_type, limit, all, .. } => {
            cmd::status::history(&ctx, backup_type.as_deref(), *limit, *all)
        }
        Command::Sync { dry_run } => cmd::sync::sync(&ctx, *dry_run),
        Command::Clone => cmd::sync::clone(&ctx),
        Command::Daemon => cmd::daemon::run(&ctx),
        Command::Notify { test: _ } => cmd::notify::test(&ctx),
        Command::Export(a) => cmd::export::run(&ctx, a),
        Command::Serve(a) => cmd::serve::run(&ctx, a),
        Command::Snapshot(a) => cmd::snapshot::run(&ctx, a),
        Command::Snapshots { backup_type, kind } => {
            cmd::browse::snapshots(&ctx, backup_type.as_deref(), kind.as_deref())
        }
        Command::Ls { snapshot, path } => cmd::browse::ls(&ctx, snapshot, path.as_deref()),
        Command::Cat { snapshot, path } => cmd::browse::cat(&ctx, snapshot, path),
        Command::Restore { snapshot, pgdata: Some(dir), .. } => cmd::wal::restore_pgdata(&ctx, snapshot, dir),
        Command::Restore { snapshot, target, include, table, schema, into, globals, .. } => {
            if into.is_some() || *globals || !table.is_empty() || !schema.is_empty() {
                cmd::restore::postgres(&ctx, snapshot, target.as_deref(), into.as_deref(), table, schema, *globals)
            } else {
                let target =
                    target.as_deref().ok_or_else(|| anyhow!("--target DIR, --into URL or --pgdata DIR is required"))?;
                cmd::restore::run(&ctx, snapshot, target, include)
            }
        }
        Command::WalPush { path, backup_type, lock_wait } => {
            cmd::wal::push(&ctx, path, backup_type.as_deref(), *lock_wait)
        }
        Command::WalFetch { file, dest, backup_type } => cmd::wal::fetch(&ctx, file, dest, backup_type.as_deref()),
        Command::Verify { read_data, seed, restore_test } => {
            cmd::verify::run(&ctx, read_data.as_deref(), *seed, *restore_test)
        }
        Command::Unlock { force } => cmd::unlock::run(&ctx, *force),
        Command::Repair { what: RepairWhat::Index } => cmd::repair::index(&ctx),
        Command::Repair { what: RepairWhat::Snapshots } => cmd::repair::snapshots(&ctx),
        Command::Repair { what: RepairWhat::Packs } => cmd::repair::packs(&ctx),
        Command::Key { cmd } => cmd::key::run(&ctx, cmd),
        Command::Completions { shell } => cmd::generate::completions(*shell),
        Command::Man { dir } => cmd::generate::man(dir.as_deref()),
    }
}

/// What every command may need, each loaded on first use.
struct Ctx {
    cli: Cli,
    config: OnceCell<Option<Config>>,
}

impl Ctx {
    /// The configuration file, if one is given or found (./cairn.json, ./config.json).
    fn config(&self) -> crate::Result<Option<&Config>> {
        if self.config.get().is_none() {
            let c = match Config::locate(self.cli.config.as_deref())? {
                Some(p) => Some(Config::load(&p)?),
                None => None,
            };
            let _ = self.config.set(c);
        }
        Ok(self.config.get().expect("set").as_ref())
    }

    fn require_config(&self) -> Result<&Config> {
        self.config()?.ok_or_else(|| {
            anyhow!("no configuration: pass --config FILE, set CAIRN_CONFIG, or create ./cairn.json (see examples/cairn.json)")
        })
    }

    /// --repo / CAIRN_REPO, else the config's repository.
    fn repo_path(&self) -> Result<PathBuf> {
        if let Some(r) = &self.cli.repo {
            return Ok(r.clone());
        }
        if let Some(c) = self.config()? {
            return Ok(c.backup.repository.clone());
        }
        bail!("no repository given: pass --repo DIR, set CAIRN_REPO, or use a config file with \"repository\"")
    }

    /// Runs `f` with this process's password sources.
    fn with_passwords<T>(&self, f: impl FnOnce(&PasswordSources) -> T) -> T {
        let config = || self.config();
        f(&PasswordSources::from_process(self.cli.password_file.as_deref(), &config))
    }

    /// The repository password (see [`PasswordSources::password`]).
    fn password(&self) -> crate::Result<Zeroizing<Vec<u8>>> {
        self.with_passwords(|p| p.password())
    }

    /// The local repository, or with --remote the remote's mirror that fetches packs on demand.
    fn open(&self) -> Result<Repo> {
        if let Some(name) = &self.cli.remote {
            let remote = self.remote(name)?;
            let dir =
                crate::ops::clone::refresh_mirror(&remote, &remote.target, &crate::ops::clone::default_cache_root())?;
            return Ok(Repo::open_mirror(&dir, std::sync::Arc::new(remote), &|| self.password())?);
        }
        let path = self.repo_path()?;
        Ok(Repo::open(&path, &|| self.password())?)
    }

    /// A remote by config name, or an rclone target given directly.
    fn remote(&self, name: &str) -> Result<Rclone> {
        Ok(crate::lifecycle::remotes::find(self.config()?, name)?)
    }

    /// The remotes a command applies to: --remote NAME, or every configured one.
    fn remotes(&self) -> Result<Vec<Rclone>> {
        Ok(crate::lifecycle::remotes::selected(self.config()?, self.cli.remote.as_deref())?)
    }

    fn json(&self) -> bool {
        self.cli.json
    }

    fn quiet(&self) -> bool {
        self.cli.quiet
    }

    /// Argon2id cost of the key files this run writes (`--kdf-memory`, else the defaults).
    fn kdf(&self) -> crate::Result<crate::format::keyfile::KdfParams> {
        self.cli.kdf()
    }
}
