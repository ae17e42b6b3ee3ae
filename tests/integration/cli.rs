//! The command line itself: completions and man pages generated from the argument definitions,
//! and the usage exit code.

use crate::util::Env;

/// Every subcommand a user can type, as `cairn --help` lists them.
const SUBCOMMANDS: &[&str] = &[
    "init",
    "backup",
    "config",
    "forget",
    "prune",
    "mark-verified",
    "status",
    "history",
    "sync",
    "clone",
    "daemon",
    "export",
    "snapshot",
    "snapshots",
    "ls",
    "restore",
    "cat",
    "verify",
    "repair",
    "key",
    "completions",
    "man",
];

#[test]
fn completions_know_every_subcommand() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = env.run(&["completions", shell]).ok().stdout;
        assert!(out.len() > 1000, "{shell}: {} bytes", out.len());
        for sub in SUBCOMMANDS {
            assert!(out.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(out.contains("password-file"), "{shell} completions lack global options");
    }
    let bash = env.run(&["completions", "bash"]).stdout;
    assert!(bash.contains("complete -F"), "not a bash completion script");
    // Generated without a repository, config or password.
    assert!(!env.repo().exists());
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let r = Env::new().run(&["completions", "tcsh"]).code(2);
    assert!(r.stderr.contains("possible values"), "{}", r.stderr);
}

#[test]
fn man_page_lists_the_subcommands() {
    let env = Env::new();
    let page = env.run(&["man"]).ok().stdout;
    assert!(page.contains(".TH cairn 1"), "not a roff man page: {}", &page[..page.len().min(200)]);
    for sub in SUBCOMMANDS {
        assert!(page.contains(&format!("cairn\\-{}(1)", sub.replace('-', "\\-"))), "man page lacks {sub}");
    }
    assert!(page.contains("\\-\\-password\\-file"));

    let dir = env.path().join("man");
    env.run(&["man", "--dir", dir.to_str().unwrap()]).ok();
    for page in ["cairn.1", "cairn-backup.1", "cairn-key.1", "cairn-key-passwd.1", "cairn-verify.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") && text.contains(".TH"), "{page}");
    }
    let verify = std::fs::read_to_string(dir.join("cairn-verify.1")).unwrap();
    assert!(verify.contains("\\-\\-read\\-data"), "verify page lacks its options");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let env = Env::new();
    let r = env.run(&["no-such-command"]).code(2);
    assert!(r.stderr.contains("unrecognized subcommand"), "{}", r.stderr);
    env.run(&["prune", "--repack-below"]).code(2);
    let help = env.run(&["--help"]).ok();
    assert!(help.stdout.contains("Usage: cairn"), "{}", help.stdout);
    assert!(env.run(&["--version"]).ok().stdout.starts_with("cairn "));
}
