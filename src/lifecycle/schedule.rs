//! Schedules and catch-up: when a type is due. All calendar arithmetic is in the local time zone
//! (generic over `TimeZone` so tests can pin one with DST). A slot that falls in a DST gap (02:30 on
//! a spring-forward night) moves to the first valid instant after it; an ambiguous one (autumn)
//! takes the earlier instant. "Due" compares the last success with the most recent slot, so a
//! machine that was off or asleep runs once when it comes back, not once per missed slot.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Weekday,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::span::Span;

/// A parsed schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Every day at a time.
    Daily(NaiveTime),
    /// Every week on a day at a time.
    Weekly(Weekday, NaiveTime),
    /// Every month on a day (1..=28) at a time.
    Monthly(u32, NaiveTime),
    /// At minute 0 of every hour.
    Hourly,
    /// A fixed interval (at least a minute) after the last success.
    Every(Span),
    /// Whenever the content changed (checked on every run), with a fallback interval.
    OnChange,
}

impl Schedule {
    /// Parses a schedule expression: "daily HH:MM", "weekly sun HH:MM", "monthly D HH:MM",
    /// "hourly", "every 6h" or "on-change". The error says what is accepted.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let hhmm = |t: &str| -> Option<NaiveTime> {
            let (h, m) = t.split_once(':')?;
            if h.is_empty() || h.len() > 2 || m.len() != 2 {
                return None;
            }
            NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
        };
        let day = |d: &str| -> Option<Weekday> {
            use Weekday::*;
            let d = d.to_ascii_lowercase();
            [Mon, Tue, Wed, Thu, Fri, Sat, Sun].into_iter().find(|w| w.to_string().to_ascii_lowercase() == d)
        };
        let parsed = match parts.as_slice() {
            ["hourly"] => Some(Schedule::Hourly),
            ["on-change"] => Some(Schedule::OnChange),
            ["daily", t] => hhmm(t).map(Schedule::Daily),
            ["weekly", d, t] => day(d).zip(hhmm(t)).map(|(d, t)| Schedule::Weekly(d, t)),
            ["monthly", d, t] => d
                .parse::<u32>()
                .ok()
                .filter(|d| (1..=28).contains(d))
                .zip(hhmm(t))
                .map(|(d, t)| Schedule::Monthly(d, t)),
            ["every", d] => {
                d.parse::<Span>().ok().filter(|d| d.duration() >= Duration::minutes(1)).map(Schedule::Every)
            }
            _ => None,
        };
        parsed.ok_or_else(|| {
            format!(
                "{s:?} is not a schedule; use \"daily HH:MM\", \"weekly sun HH:MM\", \"monthly D HH:MM\", \"hourly\", \"every 6h\" or \"on-change\""
            )
        })
    }

    /// The nominal interval between runs (the default RPO).
    pub fn interval(&self) -> Duration {
        match self {
            Schedule::Daily(_) | Schedule::OnChange => Duration::days(1),
            Schedule::Weekly(..) => Duration::weeks(1),
            Schedule::Monthly(..) => Duration::days(31),
            Schedule::Hourly => Duration::hours(1),
            Schedule::Every(d) => d.duration(),
        }
    }

    /// The slot of the calendar day `date` (None when the schedule has no slot that day).
    fn slot_on<Tz: TimeZone>(&self, tz: &Tz, date: NaiveDate) -> Option<DateTime<Tz>> {
        let time = match self {
            Schedule::Daily(t) => *t,
            Schedule::Weekly(d, t) if date.weekday() == *d => *t,
            Schedule::Monthly(day, t) if date.day() == *day => *t,
            _ => return None,
        };
        Some(local(tz, date.and_time(time)))
    }

    /// The most recent slot at or before `now` (None for interval and on-change schedules).
    pub fn last_slot<Tz: TimeZone>(&self, now: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let tz = now.timezone();
        if let Schedule::Hourly = self {
            // Minute 0 in the offset in force at `now`, not a local wall-clock hour looked up
            // again: on an autumn night both 02:00s are slots, and the earlier-instant rule for
            // ambiguous times would otherwise put the second 02:xx hour's slot an hour back.
            let into_hour = Duration::seconds(i64::from(now.minute()) * 60 + i64::from(now.second()))
                + Duration::nanoseconds(i64::from(now.nanosecond()));
            return Some(now.clone() - into_hour);
        }
        if matches!(self, Schedule::Every(_) | Schedule::OnChange) {
            return None;
        }
        let today = now.naive_local().date();
        (0..=31).filter_map(|back| self.slot_on(&tz, today - Duration::days(back))).find(|s| s <= now)
    }

    /// The first slot strictly after `t`.
    pub fn next_slot<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let tz = t.timezone();
        if let Schedule::Hourly = self {
            return self.last_slot(t).map(|s| s + Duration::hours(1));
        }
        if matches!(self, Schedule::Every(_) | Schedule::OnChange) {
            return None;
        }
        let today = t.naive_local().date();
        (0..=62).filter_map(|fwd| self.slot_on(&tz, today + Duration::days(fwd))).find(|s| s > t)
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Schedule, String> {
        Schedule::parse(s)
    }
}

/// The canonical expression ("weekly sun 03:00"): what `config check` and `status` show.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |t: &NaiveTime| t.format("%H:%M");
        match self {
            Schedule::Daily(x) => write!(f, "daily {}", t(x)),
            Schedule::Weekly(d, x) => write!(f, "weekly {} {}", d.to_string().to_ascii_lowercase(), t(x)),
            Schedule::Monthly(d, x) => write!(f, "monthly {d} {}", t(x)),
            Schedule::Hourly => f.write_str("hourly"),
            Schedule::Every(d) => write!(f, "every {d}"),
            Schedule::OnChange => f.write_str("on-change"),
        }
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Schedule, D::Error> {
        Schedule::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A local date-time as an instant: gaps move forward to the first valid minute, ambiguous times
/// take the earlier instant.
fn local<Tz: TimeZone>(tz: &Tz, naive: NaiveDateTime) -> DateTime<Tz> {
    let mut n = naive;
    for _ in 0..180 {
        match tz.from_local_datetime(&n) {
            LocalResult::Single(t) => return t,
            LocalResult::Ambiguous(a, _) => return a,
            LocalResult::None => n += Duration::minutes(1),
        }
    }
    tz.from_utc_datetime(&naive)
}

/// Whether a type is due, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Run it now?
    pub due: bool,
    /// Why (or why not).
    pub reason: String,
    /// When it will next be due (now, if due).
    pub next: DateTime<chrono::FixedOffset>,
}

/// Decides whether a type with `schedule` and `catch_up_after` is due at `now`, given its last
/// successful run. No schedule means "only with --now".
pub fn due<Tz: TimeZone>(
    schedule: Option<&Schedule>,
    catch_up_after: Option<Duration>,
    last_success: Option<DateTime<Tz>>,
    now: &DateTime<Tz>,
) -> Due
where
    Tz::Offset: Copy,
{
    // Times are reported in the offset in force at that time (`last + 6h` across a DST change
    // is shown in the new offset, not in the offset `last` had).
    let fixed = |t: &DateTime<Tz>| t.fixed_offset();
    let Some(s) = schedule else {
        return Due {
            due: false,
            reason: "no schedule (runs with --now only)".into(),
            next: fixed(now) + Duration::days(36500),
        };
    };
    let Some(last) = last_success else {
        return Due { due: true, reason: "never backed up".into(), next: fixed(now) };
    };
    if let Some(c) = catch_up_after {
        if *now - last >= c {
            return Due {
                due: true,
                reason: format!("catch-up: last success {} ago", human_duration(*now - last)),
                next: fixed(now),
            };
        }
    }
    let catch_up_at = catch_up_after.map(|c| fixed(&(last + c)));
    let (due, reason, next) = match s {
        Schedule::OnChange => (true, "on-change: checked on every run".to_string(), fixed(now)),
        Schedule::Every(d) => {
            let at = fixed(&(last + d.duration()));
            (at <= fixed(now), format!("every {}", human_duration(d.duration())), at)
        }
        _ => {
            let slot = s.last_slot(now);
            match slot {
                Some(slot) if last < slot => (
                    true,
                    format!("slot {} passed since the last success", slot.fixed_offset().format("%Y-%m-%d %H:%M")),
                    fixed(now),
                ),
                _ => {
                    let n = s.next_slot(now).map(|t| t.fixed_offset()).unwrap_or_else(|| fixed(now) + s.interval());
                    (false, format!("next slot {}", n.format("%Y-%m-%d %H:%M")), n)
                }
            }
        }
    };
    let next = match catch_up_at {
        Some(c) if c < next => c,
        _ => next,
    };
    Due { due, reason, next }
}

/// "3d 4h", "15m", "42s".
pub fn human_duration(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, h, m) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60);
    if days > 0 {
        format!("{days}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_show_back() {
        for ok in ["daily 03:00", "weekly sun 03:00", "hourly", "every 6h", "on-change", "monthly 1 04:30", "every 1m"]
        {
            assert_eq!(Schedule::parse(ok).map(|s| s.to_string()).as_deref(), Ok(ok));
        }
        assert_eq!(Schedule::parse("weekly SUN 3:05").unwrap().to_string(), "weekly sun 03:05");
        for bad in
            ["daily 25:00", "weekly funday 03:00", "sometimes", "every 0h", "daily 3", "every 30s", "monthly 29 03:00"]
        {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.contains("is not a schedule"), "{bad}: {e}");
        }
        assert_eq!(Schedule::parse("every 90m").unwrap().interval(), Duration::minutes(90));
    }
}
