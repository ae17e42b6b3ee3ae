//! Where the repository password comes from, in order: a password file (`--password-file` /
//! `CAIRN_PASSWORD_FILE`), `CAIRN_PASSWORD`, the config's `password_file`, its `password_command`,
//! a prompt on a terminal. Never a command-line argument: argv is visible to every local user.

use std::io::IsTerminal;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::lifecycle::config::Config;

/// Reads a password file; trailing newlines are not part of the password.
pub fn read_password_file(p: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut v = Zeroizing::new(
        std::fs::read(p).map_err(|e| Error::Invalid(format!("reading password file {}: {e}", p.display())))?,
    );
    trim_newlines(&mut v);
    if v.is_empty() {
        return Err(Error::Invalid(format!("password file {} is empty", p.display())));
    }
    Ok(v)
}

fn trim_newlines(v: &mut Vec<u8>) {
    while v.last().is_some_and(|&c| c == b'\n' || c == b'\r') {
        v.pop();
    }
}

/// The password sources of one process. The configuration is asked for lazily: a password given
/// directly works even when no configuration exists or it does not load.
pub struct PasswordSources<'a> {
    /// `--password-file` / `CAIRN_PASSWORD_FILE`.
    pub file: Option<&'a Path>,
    /// `CAIRN_PASSWORD`, if set and not empty.
    pub env: Option<Zeroizing<String>>,
    /// `CAIRN_NEW_PASSWORD`, if set and not empty (for a new key or repository).
    pub new_env: Option<Zeroizing<String>>,
    /// The configuration, if any; called only when the sources before it are absent.
    pub config: &'a dyn Fn() -> Result<Option<&'a Config>>,
    /// Whether prompting on the terminal is possible.
    pub terminal: bool,
}

fn non_empty_env(name: &str) -> Option<Zeroizing<String>> {
    std::env::var(name).ok().filter(|p| !p.is_empty()).map(Zeroizing::new)
}

impl<'a> PasswordSources<'a> {
    /// The sources as this process sees them: its environment, and stdin being a terminal.
    pub fn from_process(file: Option<&'a Path>, config: &'a dyn Fn() -> Result<Option<&'a Config>>) -> Self {
        PasswordSources {
            file,
            env: non_empty_env("CAIRN_PASSWORD"),
            new_env: non_empty_env("CAIRN_NEW_PASSWORD"),
            config,
            terminal: std::io::stdin().is_terminal(),
        }
    }

    /// The password of an existing repository: the first source present, else
    /// [`Error::NoPassword`].
    pub fn password(&self) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(p) = self.file {
            return read_password_file(p);
        }
        if let Some(p) = &self.env {
            return Ok(Zeroizing::new(p.as_bytes().to_vec()));
        }
        let cfg = (self.config)()?;
        if let Some(p) = cfg.and_then(|c| c.backup.password_file.as_ref()) {
            return read_password_file(p);
        }
        if let Some(cmd) = cfg.and_then(|c| c.backup.password_command.as_ref()) {
            return password_command(cmd);
        }
        if self.terminal {
            let p = rpassword::prompt_password("repository password: ").map_err(|e| Error::io("<terminal>", e))?;
            return Ok(Zeroizing::new(p.into_bytes()));
        }
        Err(Error::NoPassword)
    }

    /// A new password (for a new key file): `file` (`--new-password-file` /
    /// `CAIRN_NEW_PASSWORD_FILE`), `CAIRN_NEW_PASSWORD`, or typed twice on a terminal.
    pub fn new_password(&self, file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(p) = file {
            return read_password_file(p);
        }
        if let Some(p) = &self.new_env {
            return Ok(Zeroizing::new(p.as_bytes().to_vec()));
        }
        if self.terminal {
            let prompt = |text| rpassword::prompt_password(text).map_err(|e| Error::io("<terminal>", e));
            let a = Zeroizing::new(prompt("new password: ")?);
            let b = Zeroizing::new(prompt("new password again: ")?);
            if a != b {
                return Err(Error::Invalid("the passwords do not match".into()));
            }
            if a.is_empty() {
                return Err(Error::Invalid("empty password".into()));
            }
            return Ok(Zeroizing::new(a.as_bytes().to_vec()));
        }
        Err(Error::Invalid(
            "a new password is needed: pass --new-password-file, set CAIRN_NEW_PASSWORD_FILE or CAIRN_NEW_PASSWORD, or run on a terminal".into(),
        ))
    }

    /// The password for a repository about to be created: any configured source, else a new
    /// password typed twice.
    pub fn for_new_repository(&self) -> Result<Zeroizing<Vec<u8>>> {
        match self.password() {
            Err(Error::NoPassword) => self.new_password(None),
            r => r,
        }
    }
}

/// Runs the configured `password_command` (no shell, stdin closed) and takes its output.
fn password_command(cmd: &[String]) -> Result<Zeroizing<Vec<u8>>> {
    let out = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Invalid(format!("password_command {:?}: {e}", cmd[0])))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!("password_command {:?} failed: {}", cmd[0], out.status)));
    }
    let mut v = Zeroizing::new(out.stdout);
    trim_newlines(&mut v);
    if v.is_empty() {
        return Err(Error::Invalid(format!("password_command {:?} printed nothing", cmd[0])));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none<'a>() -> Result<Option<&'a Config>> {
        Ok(None)
    }

    fn sources(file: Option<&Path>) -> PasswordSources<'_> {
        PasswordSources { file, env: None, new_env: None, config: &none, terminal: false }
    }

    #[test]
    fn file_comes_first_and_loses_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "secret\r\n\n").unwrap();
        let mut s = sources(Some(&f));
        s.env = Some(Zeroizing::new("other".into()));
        assert_eq!(s.password().unwrap().as_slice(), b"secret");
    }

    #[test]
    fn empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "\n").unwrap();
        let e = sources(Some(&f)).password().unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
    }

    #[test]
    fn env_then_nothing() {
        let mut s = sources(None);
        assert!(matches!(s.password(), Err(Error::NoPassword)));
        s.env = Some(Zeroizing::new("pw".into()));
        assert_eq!(s.password().unwrap().as_slice(), b"pw");
    }

    #[test]
    fn config_is_not_loaded_when_a_direct_source_exists() {
        fn broken<'a>() -> Result<Option<&'a Config>> {
            Err(Error::Invalid("broken config".into()))
        }
        let mut s = PasswordSources { file: None, env: None, new_env: None, config: &broken, terminal: false };
        assert!(s.password().unwrap_err().to_string().contains("broken config"));
        s.env = Some(Zeroizing::new("pw".into()));
        assert_eq!(s.password().unwrap().as_slice(), b"pw");
    }

    #[test]
    fn command_output_is_the_password() {
        let cmd = ["printf".to_string(), "from-cmd\\n".to_string()];
        assert_eq!(password_command(&cmd).unwrap().as_slice(), b"from-cmd");
        let e = password_command(&["false".to_string()]).unwrap_err();
        assert!(e.to_string().contains("failed"), "{e}");
    }

    #[test]
    fn new_repository_falls_back_to_a_new_password() {
        let mut s = sources(None);
        s.new_env = Some(Zeroizing::new("fresh".into()));
        assert_eq!(s.for_new_repository().unwrap().as_slice(), b"fresh");
        s.new_env = None;
        let e = s.for_new_repository().unwrap_err();
        assert!(!matches!(e, Error::NoPassword), "a missing new password is a plain error (exit 1)");
    }
}
