//! `cairn history` without the flood: an on-change type checked every 10 minutes records an
//! `unchanged` run each time, 144 a day, which would bury the runs that matter. Each type's
//! consecutive `unchanged` runs are shown as one line; `--all` and `--json` keep every row.

use std::collections::HashMap;

use crate::error::Result;
use crate::lifecycle::history::{Outcome, Run};

/// One line of `cairn history`: one run, or a type's consecutive `unchanged` runs folded.
#[derive(Debug, Clone)]
pub struct HistoryLine {
    /// The run shown; of a fold, the last one (its snapshot is the one still current).
    pub run: Run,
    /// Start of the first run of the line (the run's own start when nothing is folded).
    pub first_start: String,
    /// Runs on this line (1: not folded).
    pub count: usize,
}

/// Folds each type's consecutive `unchanged` runs into one line. "Consecutive" counts among the
/// type's own runs: another type's runs in between do not split a fold, a run of the same type
/// with another result does. `runs` are oldest first; so are the lines, each at the place of
/// its first run.
pub fn fold_unchanged(runs: Vec<Run>) -> Vec<HistoryLine> {
    let mut lines: Vec<HistoryLine> = Vec::new();
    // Per type, the line its current unchanged fold is collected on.
    let mut open: HashMap<String, usize> = HashMap::new();
    for r in runs {
        if r.result == Outcome::Unchanged {
            if let Some(&i) = open.get(&r.backup_type) {
                lines[i].count += 1;
                lines[i].run = r;
                continue;
            }
            open.insert(r.backup_type.clone(), lines.len());
        } else {
            open.remove(&r.backup_type);
        }
        lines.push(HistoryLine { first_start: r.start.clone(), count: 1, run: r });
    }
    lines
}

/// Each run on a line of its own (`--all`).
pub fn unfolded(runs: Vec<Run>) -> Vec<HistoryLine> {
    runs.into_iter().map(|r| HistoryLine { first_start: r.start.clone(), count: 1, run: r }).collect()
}

/// The newest `limit` lines, oldest first, from `newest(n)` (the newest `n` runs, newest first),
/// folded unless `all`. Reads more runs until each fold among those lines is whole: a fold is
/// whole once an older run of its type (one with another result) is among the runs read, or
/// every run has been read.
pub fn newest_lines(newest: &dyn Fn(usize) -> Result<Vec<Run>>, limit: usize, all: bool) -> Result<Vec<HistoryLine>> {
    let mut n = limit.max(1);
    loop {
        let runs = newest(n)?;
        let exhausted = runs.len() < n;
        let oldest_first: Vec<Run> = runs.into_iter().rev().collect();
        let mut lines = if all { unfolded(oldest_first) } else { fold_unchanged(oldest_first) };
        let keep = lines.len().saturating_sub(limit);
        let whole = |i: usize| {
            let l = &lines[i];
            l.run.result != Outcome::Unchanged || lines[..i].iter().any(|p| p.run.backup_type == l.run.backup_type)
        };
        if all || exhausted || (lines.len() >= limit && (keep..lines.len()).all(whole)) {
            lines.drain(..keep);
            return Ok(lines);
        }
        n = n.saturating_mul(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &str, result: Outcome, start: &str) -> Run {
        Run::new(t, start, start, result)
    }

    #[test]
    fn another_types_runs_do_not_split_a_fold_and_another_result_does() {
        use Outcome::*;
        let lines = fold_unchanged(vec![
            run("cfg", Unchanged, "1"),
            run("db", Success, "2"),
            run("cfg", Unchanged, "3"),
            run("cfg", Unchanged, "4"),
            run("cfg", Success, "5"),
            run("cfg", Unchanged, "6"),
        ]);
        let got: Vec<(&str, &str, &str, usize)> = lines
            .iter()
            .map(|l| (l.run.backup_type.as_str(), l.first_start.as_str(), l.run.start.as_str(), l.count))
            .collect();
        assert_eq!(got, [("cfg", "1", "4", 3), ("db", "2", "2", 1), ("cfg", "5", "5", 1), ("cfg", "6", "6", 1)]);
    }

    #[test]
    fn the_newest_lines_read_back_until_their_folds_are_whole() {
        use Outcome::*;
        // Oldest first: one success, then 30 unchanged runs of cfg and a db run among them.
        let mut runs = vec![run("cfg", Success, "0")];
        runs.extend((1..=30).map(|i| {
            run(if i == 25 { "db" } else { "cfg" }, if i == 25 { Failed } else { Unchanged }, &i.to_string())
        }));
        let newest = |n: usize| Ok(runs.iter().rev().take(n).cloned().collect());
        let lines = newest_lines(&newest, 2, false).unwrap();
        let got: Vec<(&str, usize)> = lines.iter().map(|l| (l.run.backup_type.as_str(), l.count)).collect();
        assert_eq!(got, [("cfg", 29), ("db", 1)]);
        assert_eq!(newest_lines(&newest, 2, true).unwrap().len(), 2);
    }
}
