//! Size anomalies: a new snapshot whose logical size or new bytes is far outside its type's
//! recent successful runs (a database that shrank by half, ten times the usual new data) is
//! worth a person's look even though the backup itself worked.

use crate::format::manifest::Stats;
use crate::lifecycle::config::AnomalyConfig;
use crate::lifecycle::history::{History, Outcome};
use crate::util::human_bytes;

/// Rows read to find the recent successful runs: on-change types record many "unchanged" rows
/// between two stored snapshots.
const SCAN: usize = 500;

/// The median of `v` (the mean of the two middle values of an even count); `v` is sorted here.
fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        v[n / 2 - 1] / 2 + v[n / 2] / 2 + (v[n / 2 - 1] % 2 + v[n / 2] % 2) / 2
    }
}

/// The anomalies of a new snapshot of `backup_type` with `stats`, judged against the logical
/// sizes and new bytes of the type's recent successful runs (`(logical, new)`, newest first).
/// Each is one message, starting with "anomaly:".
pub fn judge(backup_type: &str, stats: &Stats, recent: &[(u64, u64)], cfg: &AnomalyConfig) -> Vec<String> {
    let recent = &recent[..recent.len().min(cfg.runs() as usize)];
    if recent.len() < AnomalyConfig::MIN_RUNS as usize {
        return Vec::new();
    }
    let floor = cfg.min_bytes();
    let n = recent.len();
    let mut out = Vec::new();
    let logical = median(&mut recent.iter().map(|r| r.0).collect::<Vec<_>>());
    let pct = cfg.shrink_below_percent() as u128;
    let below = |than: u64| (stats.logical_bytes as u128) * 100 < than as u128 * pct;
    // Below the previous run too: a drop is told on the run where it happens, not again on each
    // run until the median has caught up with the new size.
    if below(logical) && below(recent[0].0) && logical - stats.logical_bytes >= floor {
        out.push(format!(
            "anomaly: {backup_type} shrank to {} ({:.0}% of the median {} of its last {n} successful runs; \
             the threshold is {pct}%): was data deleted?",
            human_bytes(stats.logical_bytes),
            100.0 * stats.logical_bytes as f64 / logical.max(1) as f64,
            human_bytes(logical),
        ));
    }
    let new = median(&mut recent.iter().map(|r| r.1).collect::<Vec<_>>());
    let factor = cfg.growth_factor() as u128;
    if stats.new_bytes as u128 > new as u128 * factor && stats.new_bytes - new >= floor {
        out.push(format!(
            "anomaly: {backup_type} added {} of new data, more than {factor}x the median {} of its last {n} \
             successful runs",
            human_bytes(stats.new_bytes),
            human_bytes(new),
        ));
    }
    out
}

/// [`judge`] against the history (read before the new run is recorded). A history that cannot
/// be read judges nothing: an anomaly check never fails a backup.
pub fn check(history: &History, backup_type: &str, stats: &Stats, cfg: &AnomalyConfig) -> Vec<String> {
    let runs = match history.list(Some(backup_type), SCAN) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("{backup_type}: anomaly check skipped: {e}");
            return Vec::new();
        }
    };
    let recent: Vec<(u64, u64)> = runs
        .iter()
        .filter(|r| r.result == Outcome::Success)
        .take(cfg.runs() as usize)
        .map(|r| (r.bytes_read, r.bytes_added))
        .collect();
    judge(backup_type, stats, &recent, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(logical: u64, new: u64) -> Stats {
        Stats { logical_bytes: logical, new_bytes: new, ..Default::default() }
    }

    const M: u64 = 1 << 20;

    #[test]
    fn shrink_and_growth_against_the_median() {
        let cfg = AnomalyConfig::default();
        let hist = [(100 * M, M), (101 * M, M), (99 * M, 2 * M), (100 * M, M)];
        assert!(judge("db", &stats(100 * M, M), &hist, &cfg).is_empty());
        let w = judge("db", &stats(40 * M, M), &hist, &cfg);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("shrank"), "{w:?}");
        // Told once: the run after the drop is not below its predecessor.
        let after = [(40 * M, M), (100 * M, M), (101 * M, M), (99 * M, 2 * M)];
        assert!(judge("db", &stats(41 * M, M), &after, &cfg).is_empty());
        let w = judge("db", &stats(100 * M, 20 * M), &hist, &cfg);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("new data"), "{w:?}");
        // Too few runs to judge; tiny types under the floor never alarm.
        assert!(judge("db", &stats(M, 50 * M), &hist[..2], &cfg).is_empty());
        let tiny = [(4000, 10), (4000, 12), (4000, 11)];
        assert!(judge("cfg", &stats(100, 5000), &tiny, &cfg).is_empty());
        // The median, not the mean: one huge first run does not hide a jump.
        let first = [(10 * M, 10 * M), (10 * M, 100_000), (10 * M, 100_000), (10 * M, 100_000)];
        assert_eq!(judge("db", &stats(10 * M, 3 * M), &first, &cfg).len(), 1);
        assert_eq!(median(&mut [3, 1, 2, 10]), 2);
    }
}
