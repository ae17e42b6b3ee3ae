//! Schedules and catch-up: when a type is due. All calendar arithmetic is in the local time zone
//! (generic over `TimeZone` so tests can pin one with DST). A slot that falls in a DST gap (02:30 on
//! a spring-forward night) moves to the first valid instant after it; an ambiguous one (autumn)
//! takes the earlier instant. "Due" compares the last success with the most recent slot, so a
//! machine that was off or asleep runs once when it comes back, not once per missed slot.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Weekday,
};

use crate::lifecycle::config::parse_duration;

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
    /// A fixed interval after the last success.
    Every(Duration),
    /// Whenever the content changed (checked on every run), with a fallback interval.
    OnChange,
}

impl Schedule {
    /// Parses a schedule expression (syntax checked by `config::check_schedule`).
    pub fn parse(s: &str) -> Option<Schedule> {
        crate::lifecycle::config::check_schedule(s).ok()?;
        let p: Vec<&str> = s.split_whitespace().collect();
        let t = |x: &str| NaiveTime::parse_from_str(x, "%H:%M").ok();
        Some(match p.as_slice() {
            ["hourly"] => Schedule::Hourly,
            ["on-change"] => Schedule::OnChange,
            ["daily", x] => Schedule::Daily(t(x)?),
            ["weekly", d, x] => Schedule::Weekly(d.parse().ok()?, t(x)?),
            ["monthly", d, x] => Schedule::Monthly(d.parse().ok()?, t(x)?),
            ["every", d] => Schedule::Every(parse_duration(d)?),
            _ => return None,
        })
    }

    /// The nominal interval between runs (the default RPO).
    pub fn interval(&self) -> Duration {
        match self {
            Schedule::Daily(_) | Schedule::OnChange => Duration::days(1),
            Schedule::Weekly(..) => Duration::weeks(1),
            Schedule::Monthly(..) => Duration::days(31),
            Schedule::Hourly => Duration::hours(1),
            Schedule::Every(d) => *d,
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
            let at = fixed(&(last + *d));
            (at <= fixed(now), format!("every {}", human_duration(*d)), at)
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
