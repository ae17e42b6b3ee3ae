//! Output a log file can hold: no escape codes off a terminal or with NO_COLOR, each error once,
//! a type's line when that type ends, one time convention, unchanged runs folded in `history`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use crate::lifecycle::closed_port;
use crate::util::{write_config, ChildGuard, Env, Run};

/// An app with a type that stores ("a"), one that fails ("missing", a SQLite file that is not
/// there) and a notification channel that refuses connections (a warning on a run with a
/// failure; with `on_success` on every run).
fn app(env: &Env, on_success: bool) -> PathBuf {
    let app = env.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("notes.txt"), "keep me\n").unwrap();
    write_config(
        &app,
        json!({
            "name": "out", "repository": "repo", "password_file": "cairn-password",
            "types": {
                "a": { "paths": ["notes.txt"] },
                "missing": { "sqlite": "nope.db" }
            },
            "notify": { "webhook": format!("http://127.0.0.1:{}/hook", closed_port()), "on_success": on_success }
        }),
    )
}

/// `cairn --config CFG ARGS` with stdout and stderr as pipes.
fn piped(env: &Env, cfg: &Path, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut c = env.cfg_cmd(cfg, args);
    c.envs(vars.iter().copied());
    env.run_cmd(c)
}

fn show(r: &Run) -> String {
    format!("exit {}\nstdout: {}\nstderr: {}", r.code, r.stdout, r.stderr)
}

fn assert_clean(r: &Run, what: &str) {
    for (name, s) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        assert!(!s.contains('\x1b'), "{what}: escape code on {name}:\n{s:?}");
    }
}

/// `cairn --config CFG ARGS` on a pseudo-terminal (util-linux `script`), stdout and stderr both.
fn on_terminal(env: &Env, cfg: &Path, args: &[&str], vars: &[(&str, &str)]) -> String {
    let base = env.cfg_cmd(cfg, args);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let mut line = quote(base.get_program());
    for a in base.get_args() {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let mut c = Command::new("script");
    c.env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.envs(vars.iter().copied()).current_dir(env.path()).stdin(Stdio::null()).args(["-qefc", &line, "/dev/null"]);
    let out = c.output().expect("spawn script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn piped_output_carries_no_escape_codes_and_no_color_is_honoured_on_a_terminal() {
    let env = Env::new();
    let cfg = app(&env, true);
    // A backup that fails one type and warns (the notification is not delivered), with the
    // debug log on: every line cairn writes, on pipes.
    let r = piped(&env, &cfg, &["-vv", "backup", "--now"], &[]).code(1);
    assert!(r.stdout.contains("missing: FAILED") && r.stderr.contains("notification not delivered"), "{}", r.stderr);
    assert!(r.stderr.contains("DEBUG"), "the log is on: {}", r.stderr);
    assert_clean(&r, "failing backup");
    // One that only warns.
    let only_a = ["-vv", "backup", "--now", "--type", "a"];
    let r = piped(&env, &cfg, &only_a, &[]).ok();
    assert!(
        r.stderr.contains("warning: notification not delivered") && r.stdout.contains("a: snapshot"),
        "{}",
        show(&r)
    );
    assert_clean(&r, "warning backup");
    for args in
        [&["-vv", "history"][..], &["-vv", "status"], &["-vv", "snapshots"], &["-vv", "backup", "--json", "--now"]]
    {
        assert_clean(&piped(&env, &cfg, args, &[]), &args.join(" "));
    }

    // On a terminal the log is coloured, unless NO_COLOR is set to something.
    let coloured = on_terminal(&env, &cfg, &only_a, &[]);
    assert!(coloured.contains("DEBUG") && coloured.contains('\x1b'), "a terminal gets colour: {coloured:?}");
    let empty = on_terminal(&env, &cfg, &only_a, &[("NO_COLOR", "")]);
    assert!(empty.contains('\x1b'), "an empty NO_COLOR does not count: {empty:?}");
    let plain = on_terminal(&env, &cfg, &only_a, &[("NO_COLOR", "1")]);
    assert!(plain.contains("DEBUG") && plain.contains("a: snapshot"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "NO_COLOR on a terminal: {plain:?}");
}

#[test]
fn a_failure_is_printed_once_with_and_without_quiet() {
    let env = Env::new();
    let cfg = app(&env, false);
    for args in [&["-q", "backup", "--now"][..], &["backup", "--now"]] {
        let r = piped(&env, &cfg, args, &[]).code(1);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert_eq!(all.matches("nope.db does not exist").count(), 1, "{args:?}: {}", show(&r));
        assert_eq!(
            all.matches("Connection refused").count(),
            1,
            "{args:?}: the undelivered notification once: {}",
            show(&r)
        );
    }
    // An error before the repository opens (a wrong password), once.
    std::fs::write(cfg.with_file_name("cairn-password"), "wrong\n").unwrap();
    let r = piped(&env, &cfg, &["-q", "backup", "--now", "--type", "a"], &[]).code(4);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert_eq!(all.matches("wrong password").count(), 1, "{}", show(&r));
}

#[test]
fn each_types_line_is_printed_when_that_type_ends() {
    let env = Env::new();
    let app = env.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("notes.txt"), "keep me\n").unwrap();
    let go = app.join("go");
    let cfg = write_config(
        &app,
        json!({
            "name": "out", "repository": "repo", "password_file": "cairn-password",
            "types": {
                "a": { "paths": ["notes.txt"] },
                // Blocks until the test has read a's line.
                "b": { "command": ["sh", "-c", format!("while [ ! -e '{}' ]; do sleep 0.05; done; printf done", go.display())] }
            }
        }),
    );
    let mut c = env.cfg_cmd(&cfg, &["backup", "--now"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ChildGuard(c.spawn().unwrap());
    let (tx, rx) = mpsc::channel();
    let out = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // b cannot end before `go` exists: a's line must come first and on its own.
    let first = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.starts_with("created repository") => continue,
            Ok(l) => break Some(l),
            Err(_) => break None,
        }
    };
    std::fs::write(&go, "").unwrap();
    let first = first.expect("no line while b is still running: a's line waited for b");
    assert!(first.starts_with("a: snapshot ") && first.contains(" saved: "), "{first}");
    let rest: Vec<String> = rx.iter().collect();
    reader.join().unwrap();
    assert!(child.0.wait().unwrap().success(), "{rest:?}");
    assert!(rest.iter().any(|l| l.starts_with("b: snapshot ")), "{rest:?}");

    // --json stays one document at the end.
    std::fs::write(app.join("notes.txt"), "changed\n").unwrap();
    let r = env.run_cmd(env.cfg_cmd(&cfg, &["--json", "backup", "--now"])).ok();
    assert_eq!(r.json()["ran"].as_array().unwrap().len(), 2, "{}", r.stdout);
}

/// A human time: local with its offset, whole seconds (`2026-03-01 14:05:09+03:00`).
fn assert_shown_time(s: &str, offset: &str) {
    let t = chrono::DateTime::parse_from_rfc3339(&s.replacen(' ', "T", 1))
        .unwrap_or_else(|e| panic!("{s:?} is not a whole RFC 3339 time: {e}"));
    assert_eq!(t.offset().to_string(), offset, "{s}");
}

#[test]
fn unchanged_runs_fold_in_history_and_times_carry_their_offset() {
    let env = Env::new();
    let app = env.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("notes.txt"), "keep me\n").unwrap();
    let cfg = write_config(
        &app,
        json!({
            "name": "out", "repository": "repo", "password_file": "cairn-password",
            "types": { "cfg": { "paths": ["notes.txt"], "schedule": "on-change" } }
        }),
    );
    // A zone without daylight saving and no tzdata needed: UTC+3 all year.
    let tz = [("TZ", "XYZ-3")];
    for _ in 0..21 {
        piped(&env, &cfg, &["backup"], &tz).ok();
    }
    let r = piped(&env, &cfg, &["history"], &tz).ok();
    let lines: Vec<&str> = r.stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "one stored run and one line for 20 unchanged ones:\n{}", r.stdout);
    assert!(lines[0].contains(" success "), "{}", lines[0]);
    assert!(lines[1].contains(" unchanged ") && lines[1].contains("20 runs, the last at "), "{}", lines[1]);
    for l in &lines {
        assert_shown_time(&l[..25], "+03:00");
    }
    let last = lines[1].split("the last at ").nth(1).unwrap();
    assert_shown_time(&last[..25], "+03:00");

    let all = piped(&env, &cfg, &["history", "--all"], &tz).ok();
    assert_eq!(all.stdout.lines().count(), 1 + 21, "{}", all.stdout);
    let rows = piped(&env, &cfg, &["--json", "history"], &tz).ok().json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 21, "--json keeps every row");
    for row in rows {
        let t = chrono::DateTime::parse_from_rfc3339(row["start"].as_str().unwrap()).unwrap();
        assert_eq!(t.offset().to_string(), "+03:00");
    }
    // --limit counts lines after folding.
    let one = piped(&env, &cfg, &["history", "--limit", "1"], &tz).ok();
    assert!(one.stdout.lines().nth(1).unwrap().contains("20 runs"), "{}", one.stdout);

    // Snapshots and the log's own timestamps follow the same convention.
    let snaps = piped(&env, &cfg, &["snapshots"], &tz).ok();
    let row = snaps.stdout.lines().nth(1).unwrap();
    assert_shown_time(&row[11..36], "+03:00");
    let logged = piped(&env, &cfg, &["-vv", "backup"], &tz).ok();
    let first = logged.stderr.lines().find(|l| l.contains("DEBUG")).expect("a debug line");
    let stamp = first.split_whitespace().next().unwrap();
    let t = chrono::DateTime::parse_from_rfc3339(stamp).unwrap_or_else(|e| panic!("{first}: {e}"));
    assert_eq!(t.offset().to_string(), "+03:00", "{first}");
}
