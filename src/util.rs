//! Small helpers shared by several modules.

/// This machine's host name, or "unknown".
pub fn hostname() -> String {
    hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "unknown".into())
}

/// Fills `buf` from the operating system's random generator (keys, salts, nonces of key files,
/// file names). Panics if the OS cannot provide randomness: nothing secret may be made without it.
pub fn os_random(buf: &mut [u8]) {
    use rand::TryRng;
    rand::rngs::SysRng.try_fill_bytes(buf).expect("the operating system's random generator failed");
}

/// Whether process `pid` is alive on this host.
pub fn pid_alive(pid: u32) -> bool {
    // kill(pid, 0) probes without signalling; EPERM still means it exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), `None` where the kernel has none: a pid
/// recorded under another boot id names a process that no longer exists, whatever runs under
/// that pid now.
pub fn boot_id() -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`);
/// `None` if there is no such process or no `/proc`. Together with the boot id it tells a live
/// holder from a later process that was given the same pid.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (the command name) is in parentheses and may itself hold spaces and ')': fields
    // are counted after its last ')'. Field 3 is the first one after it, so field 22 is the 20th.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// This process's start time ([`process_start_time`]), read once.
pub fn own_start_time() -> Option<u64> {
    static T: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *T.get_or_init(|| process_start_time(std::process::id()))
}

/// Whether the process `pid` that started at tick `start` (if known) is gone: no such pid, or the
/// pid now belongs to a process that started at another time.
pub fn process_gone(pid: u32, start: Option<u64>) -> bool {
    if !pid_alive(pid) {
        return true;
    }
    matches!((start, process_start_time(pid)), (Some(a), Some(b)) if a != b)
}

/// Size and room of the file system holding a path, as `statvfs` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DiskSpace {
    /// Bytes in the file system.
    pub total: u64,
    /// Bytes an unprivileged writer may still use (root's reserve excluded).
    pub available: u64,
}

impl DiskSpace {
    /// Used share in percent, counting root's reserve as used (what `df` shows).
    pub fn used_percent(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        100.0 * (1.0 - self.available as f64 / self.total as f64)
    }
}

/// The file system holding `path` (or, when it does not exist yet, its nearest existing
/// ancestor); `None` where `statvfs` fails.
pub fn disk_space(path: &std::path::Path) -> Option<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid C string and `st` a properly sized, writable statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frag = st.f_frsize as u64;
    Some(DiskSpace { total: st.f_blocks as u64 * frag, available: st.f_bavail as u64 * frag })
}

/// Human-readable byte count.
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// A time as cairn shows it to a person: local time with its offset, to the second
/// (`2026-03-01 14:05:09+01:00`, RFC 3339 with a space for the `T`). The one convention of every
/// human-readable time (history, snapshots, status, backup lines); stored and `--json` times are
/// RFC 3339 with their full fraction. The fraction is dropped by formatting, never by cutting
/// the text.
pub fn show_time<Tz: chrono::TimeZone>(t: &chrono::DateTime<Tz>) -> String {
    t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S%:z").to_string()
}

/// [`show_time`] of a stored RFC 3339 time; one that does not parse is shown whole, as stored.
pub fn show_time_str(s: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(s).map_or_else(|_| s.to_string(), |t| show_time(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_whole_with_their_offset() {
        let s = "2026-03-01T14:05:09.123456789+01:00";
        let shown = show_time_str(s);
        let back = chrono::DateTime::parse_from_rfc3339(&shown.replacen(' ', "T", 1)).expect("RFC 3339");
        assert_eq!(back.timestamp(), chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp());
        assert_eq!(show_time_str("not a time"), "not a time");
    }

    #[test]
    fn disk_space_of_a_missing_path_is_its_nearest_existing_ancestor() {
        let here = std::env::temp_dir();
        let d = disk_space(&here).expect("statvfs of the temp dir");
        assert!(d.total > 0 && d.available <= d.total, "{d:?}");
        let missing = disk_space(&here.join("no/such/dir")).expect("falls back to the temp dir");
        assert_eq!(missing.total, d.total);
        assert!((0.0..=100.0).contains(&d.used_percent()));
    }
}
