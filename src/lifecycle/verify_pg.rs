//! `verify --restore-test` for PostgreSQL types: builds the plan (each type's connection, where
//! its dump is restored, the server binaries) from the configuration and adds the results to
//! the verify report. A failed test is damage; a type not tested is neither passed nor damage.

use crate::error::Result;
use crate::lifecycle::config::{Config, SourceSpec};
use crate::ops::restore_test::{pg_restore_tests, PgPlan, PgTarget};
use crate::ops::verify::VerifyReport;
use crate::repo::Repo;

/// What `cfg` says about restore-testing its PostgreSQL types (none: every type in a scratch
/// cluster, from the snapshots alone).
pub fn plan(cfg: Option<&Config>) -> PgPlan {
    let mut plan = PgPlan::default();
    let Some(cfg) = cfg else { return plan };
    let section = cfg.backup.verify.as_ref().and_then(|v| v.postgres.clone()).unwrap_or_default();
    plan.server_bin = section.server_bin.clone();
    for (name, t) in &cfg.types {
        if let SourceSpec::Postgres(target) = t.source() {
            // The config was checked when it was read: a string that does not parse never gets here.
            let conn = crate::source::pgconn::PgConn::parse(target).ok();
            plan.types.insert(
                name.clone(),
                PgTarget {
                    connect: conn.map(|c| {
                        let f: Box<dyn Fn() -> std::process::Command> =
                            Box::new(move || crate::lifecycle::job::pg::psql_command(&c));
                        f
                    }),
                    place: section.types.get(name).copied().unwrap_or(section.restore_on),
                },
            );
        }
    }
    plan
}

/// Restore-tests the PostgreSQL types and adds the outcomes to `report`.
pub fn add(repo: &Repo, cfg: Option<&Config>, report: &mut VerifyReport) -> Result<()> {
    for t in pg_restore_tests(repo, &plan(cfg))? {
        if !t.ok && !t.not_tested {
            report.problems.push(format!("restore test of {} snapshot {}: {}", t.backup_type, t.snapshot, t.detail));
        }
        report.restore_tests.push(t);
    }
    Ok(())
}
