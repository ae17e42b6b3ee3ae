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

/// Who runs this process: `$USER`, else the account name of the real user id (cron and
/// systemd often start jobs without `$USER`), else `None`.
pub fn account_name() -> Option<String> {
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return Some(u);
    }
    let mut buf = vec![0u8; 4096];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // getpwuid_r: the reentrant form, writing into our buffer (threads run during a backup).
    let r = unsafe { libc::getpwuid_r(libc::getuid(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
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

/// This machine's id (`/etc/machine-id`), `None` where there is none (many containers): with
/// the host name it tells this machine from another of the same name sharing a repository.
pub fn machine_id() -> Option<String> {
    let s = std::fs::read_to_string("/etc/machine-id").ok()?;
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid`), `None` without `/proc`: a pid
/// means a process only inside its namespace, and two containers of the same host name (and boot)
/// have different ones.
pub fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// Where a pid names a process: 16 hex digits hashed from this host name, machine id and pid
/// namespace. Writers put it beside their pid in temporary names, so that a cleaner in another
/// container, or on another machine of the same name sharing the repository, leaves their files
/// alone instead of judging a pid it cannot see.
pub fn pid_realm() -> &'static str {
    static R: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let mut h = blake3::Hasher::new();
        for part in [hostname(), machine_id().unwrap_or_default(), pid_namespace().unwrap_or(0).to_string()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize().as_bytes()[..8])
    })
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
    /// Free bytes, root's reserve included.
    pub free: u64,
}

impl DiskSpace {
    /// Used share in percent as `df` shows it: used over what an unprivileged writer could have,
    /// so root's reserve counts neither as used nor as room (a file system whose reserve is large
    /// would otherwise look full while `df` says half).
    pub fn used_percent(&self) -> f64 {
        let used = self.total.saturating_sub(self.free);
        let usable = used + self.available;
        if usable == 0 {
            return 0.0;
        }
        100.0 * used as f64 / usable as f64
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
    // The field widths differ between 32- and 64-bit targets (a Pi runs both).
    #[allow(clippy::useless_conversion)]
    let (frag, blocks, avail, free) =
        (u64::from(st.f_frsize), u64::from(st.f_blocks), u64::from(st.f_bavail), u64::from(st.f_bfree));
    Some(DiskSpace { total: blocks * frag, available: avail * frag, free: free * frag })
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

/// Parses the time of a `TYPE@TIME` snapshot name: `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]]`, local
/// time unless an offset (`Z`, `+01:00`) follows. A local time that a daylight-saving change
/// skipped is refused; one it repeats means its later instant, so "at or before" includes both.
pub fn parse_point_in_time(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    use chrono::{NaiveDateTime, TimeZone};
    let t = s.trim();
    let norm = t.replacen(' ', "T", 1);
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(&norm) {
        return Ok(d);
    }
    // RFC 3339 wants seconds; accept an offset after HH:MM too.
    let split = norm.rfind(['+', 'Z', 'z']).or_else(|| norm.rfind('-').filter(|&i| i > 10));
    if let Some(i) = split.filter(|&i| i > 10) {
        let (dt, off) = norm.split_at(i);
        if let Ok(d) = chrono::DateTime::parse_from_rfc3339(&format!("{dt}:00{off}")) {
            return Ok(d);
        }
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&norm, f).ok())
        .ok_or_else(|| format!("{t:?} is not a time: use YYYY-MM-DDTHH:MM[:SS], local time unless an offset such as +01:00 or Z follows"))?;
    match chrono::Local.from_local_datetime(&naive) {
        chrono::LocalResult::Single(d) => Ok(d.fixed_offset()),
        chrono::LocalResult::Ambiguous(_, later) => Ok(later.fixed_offset()),
        chrono::LocalResult::None => {
            Err(format!("{t:?} does not exist in local time (a daylight-saving change skips it); give an offset"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_in_time_parse_with_and_without_offset() {
        let z = parse_point_in_time("2026-12-01T14:35Z").unwrap();
        assert_eq!(z.to_rfc3339(), "2026-12-01T14:35:00+00:00");
        let o = parse_point_in_time("2026-12-01 14:35:07+01:00").unwrap();
        assert_eq!(o.to_rfc3339(), "2026-12-01T14:35:07+01:00");
        let m = parse_point_in_time("2026-12-01T14:35-05:00").unwrap();
        assert_eq!(m.to_rfc3339(), "2026-12-01T14:35:00-05:00");
        let local = parse_point_in_time("2026-12-01T14:35").unwrap();
        assert_eq!(local.naive_local().to_string(), "2026-12-01 14:35:00");
        let frac = parse_point_in_time("2026-12-01T14:35:01.5").unwrap();
        assert_eq!(frac.timestamp_subsec_millis(), 500);
        for bad in ["yesterday", "2026-12-01", "2026-13-01T00:00", "14:35", ""] {
            let e = parse_point_in_time(bad).unwrap_err();
            assert!(e.contains("is not a time"), "{bad}: {e}");
        }
    }

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
        // 42 used, 50 available, 160 reserved for root: `df` says 46%.
        let g = 1 << 30;
        let big_reserve = DiskSpace { total: 252 * g, available: 50 * g, free: 210 * g };
        assert_eq!(big_reserve.used_percent().round(), 46.0);
    }
}
