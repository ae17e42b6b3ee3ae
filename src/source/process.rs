//! A child process's standard output as a `Read` that fails, instead of ending, when the process
//! exits unsuccessfully: a dump tool that dies half-way must not become a snapshot that looks whole.
//! A diagnosis of the tool's stderr (`pg_dump`'s: `source::postgres`) tells a failure worth
//! retrying (the server not up yet) from one that retrying cannot fix (a wrong password).

use std::io::{self, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

/// What a failed tool's stderr says: its cause in a few words, and whether trying again later may
/// succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// Whether a later attempt may succeed (the server was starting up, refused or did not answer).
    pub transient: bool,
    /// The cause, e.g. "authentication failed".
    pub cause: &'static str,
}

/// The error a failed child ends its stream with, inside the `io::Error` the read returns, so that
/// the reader's consumer can tell a transient failure from a permanent one.
#[derive(Debug)]
pub struct ChildFailure {
    /// Whether a later attempt may succeed.
    pub transient: bool,
    /// What happened, with the tool's stderr.
    pub message: String,
}

impl std::fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ChildFailure {}

impl ChildFailure {
    /// The failure carried by `e`, if it is one.
    pub fn of(e: &io::Error) -> Option<&ChildFailure> {
        e.get_ref().and_then(|i| i.downcast_ref::<ChildFailure>())
    }
}

/// Reads a child's stdout; at end of stream, waits for it and turns a failure into an error.
pub struct ChildReader {
    what: String,
    diagnose: Option<fn(&str) -> Option<Diagnosis>>,
    child: Child,
    stdout: ChildStdout,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    done: bool,
}

impl ChildReader {
    /// Spawns `cmd` with stdout and stderr piped; `what` names it in errors.
    pub fn spawn(mut cmd: Command, what: &str) -> crate::Result<Self> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| crate::Error::Invalid(format!("cannot run {what}: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let (stderr, t) = drain_stderr(child.stderr.take().expect("piped"));
        Ok(ChildReader {
            what: what.into(),
            diagnose: None,
            child,
            stdout,
            stderr,
            stderr_thread: Some(t),
            done: false,
        })
    }

    /// Names the cause of a failure from the child's stderr with `diagnose`; without one (or
    /// when it does not recognise the text) a failure is permanent.
    pub fn diagnosed_by(mut self, diagnose: fn(&str) -> Option<Diagnosis>) -> Self {
        self.diagnose = Some(diagnose);
        self
    }

    fn finish(&mut self) -> io::Result<()> {
        self.done = true;
        let status = self.child.wait()?;
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        if status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&self.stderr.lock().expect("not poisoned")).trim().to_string();
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        };
        let diagnosis = self.diagnose.and_then(|d| d(&err));
        let cause = match diagnosis {
            Some(d) if d.transient => format!(": {} (transient: retried)", d.cause),
            Some(d) => format!(": {} (permanent: not retried)", d.cause),
            None => String::new(),
        };
        let message =
            format!("{} {how}{cause}{}", self.what, if err.is_empty() { String::new() } else { format!(": {err}") });
        Err(io::Error::other(ChildFailure { transient: diagnosis.is_some_and(|d| d.transient), message }))
    }
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads a child's stderr on its own thread, so a chatty stderr cannot block the child; keeps
/// the first 64 KiB for the error message.
pub(crate) fn drain_stderr(mut err: std::process::ChildStderr) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let sink = stderr.clone();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut s = sink.lock().expect("not poisoned");
            if s.len() < 64 * 1024 {
                s.extend_from_slice(&buf[..n]);
            }
        }
    });
    (stderr, t)
}
