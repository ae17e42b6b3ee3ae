//! A child process's standard output as a `Read` that fails, instead of ending, when the process
//! exits unsuccessfully: a dump tool that dies half-way must not become a snapshot that looks whole.

use std::io::{self, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Reads a child's stdout; at end of stream, waits for it and turns a failure into an error.
pub struct ChildReader {
    what: String,
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
        let mut err = child.stderr.take().expect("piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        // Drained on its own thread so a chatty stderr cannot block the child.
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
        Ok(ChildReader { what: what.into(), child, stdout, stderr, stderr_thread: Some(t), done: false })
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
        Err(io::Error::other(format!(
            "{} {how}{}",
            self.what,
            if err.is_empty() { String::new() } else { format!(": {err}") }
        )))
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
