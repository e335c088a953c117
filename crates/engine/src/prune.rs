//! What the prune commands' `--filter` keeps out of reach: `until=` (only
//! objects created before a time) and `label=` / `label!=`, as Docker's, and
//! the time values Docker accepts there and in `logs --since/--until`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// A prune's `--filter` values.
#[derive(Debug, Default, Clone)]
pub struct PruneFilter {
    /// `until=`: only objects created before this time.
    pub until: Option<SystemTime>,
    /// `label=KEY[=VALUE]`: only objects with every one of these labels.
    pub labels: Vec<String>,
    /// `label!=KEY[=VALUE]`: only objects with none of these labels.
    pub not_labels: Vec<String>,
}

impl PruneFilter {
    /// The keys of container, image, network and system prune.
    pub const KEYS: &'static [&'static str] = &["until", "label", "label!"];
    /// The keys of volume prune: labels only, as Docker's.
    pub const LABEL_KEYS: &'static [&'static str] = &["label", "label!"];

    /// Parse `KEY=VALUE` filter arguments; `allowed` names the keys this
    /// prune takes (volume prune has no `until`).
    pub fn parse(args: &[String], allowed: &[&str]) -> Result<PruneFilter> {
        let mut f = PruneFilter::default();
        for arg in args {
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| Error::Invalid(format!("invalid filter {arg:?}: use KEY=VALUE")))?;
            if !allowed.contains(&key) {
                return Err(Error::Invalid(format!(
                    "invalid filter {key:?}: use {}",
                    allowed.join(", ")
                )));
            }
            match key {
                "until" => f.until = Some(parse_time(value)?),
                "label" => f.labels.push(value.to_string()),
                _ => f.not_labels.push(value.to_string()),
            }
        }
        Ok(f)
    }

    /// Whether no filter was given.
    pub fn is_empty(&self) -> bool {
        self.until.is_none() && self.labels.is_empty() && self.not_labels.is_empty()
    }

    /// Whether an object created at `created` (RFC 3339; unknown: never
    /// old enough for `until`) with `labels` may be pruned.
    pub fn allows(&self, created: Option<&str>, labels: &BTreeMap<String, String>) -> bool {
        if let Some(until) = self.until {
            let old_enough = created
                .and_then(|c| humantime::parse_rfc3339_weak(c).ok())
                .is_some_and(|c| c < until);
            if !old_enough {
                return false;
            }
        }
        self.labels.iter().all(|l| has_label(labels, l))
            && !self.not_labels.iter().any(|l| has_label(labels, l))
    }
}

fn has_label(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

/// A time as Docker takes it in filters and `--since`/`--until`: a duration
/// before now (`10m`, `1h30m`), RFC 3339 or a shorter form of it
/// (`2026-12-05T10:00:00.5Z`, `2026-12-05T10:00+02:00`, `2026-12-05T10`,
/// `2026-12-05`), or Unix seconds (`1764928800`, a fraction allowed). A date
/// or time without a zone is local time, at the host's current UTC offset,
/// as Docker reads it.
pub fn parse_time(s: &str) -> Result<SystemTime> {
    parse_time_with_offset(s, local_utc_offset())
}

/// The host's current offset from UTC in seconds (east positive), from the
/// C library's view of the local zone (`TZ`, else `/etc/localtime`).
fn local_utc_offset() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r only writes the tm it is given.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff
        }
    }
}

/// [`parse_time`] with `local` (seconds east of UTC) for times without a zone.
fn parse_time_with_offset(s: &str, local: i64) -> Result<SystemTime> {
    let bad = || {
        Error::Invalid(format!(
            "invalid time {s:?}: use a duration (10m), RFC 3339 (2026-12-05T10:00:00Z), a date or Unix seconds"
        ))
    };
    if s.is_empty() {
        return Err(bad());
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s.parse().map_err(|_| bad())?;
        let d = Duration::try_from_secs_f64(secs).map_err(|_| bad())?;
        return UNIX_EPOCH.checked_add(d).ok_or_else(bad);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return SystemTime::now().checked_sub(d).ok_or_else(bad);
    }
    // The zone: `Z`, `+HH:MM` / `-HH:MM` after the date, or none (local).
    let (stamp, offset) = if let Some(rest) = s.strip_suffix(['Z', 'z']) {
        (rest, 0)
    } else if let Some(at) = s
        .get(10..)
        .and_then(|t| t.rfind(['+', '-']))
        .map(|i| i + 10)
    {
        let zone = &s[at + 1..];
        let (h, m) = zone.split_once(':').ok_or_else(bad)?;
        let digits = |v: &str| v.len() == 2 && v.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || !digits(m) {
            return Err(bad());
        }
        let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        let sign = if s.as_bytes()[at] == b'-' { -1 } else { 1 };
        (&s[..at], sign * (h * 3600 + m * 60))
    } else {
        (s, local)
    };
    // Fill in what the short forms leave out: YYYY-MM-DD[THH[:MM[:SS[.frac]]]].
    let (date, time) = match stamp.split_once(['T', 't']) {
        Some((d, t)) => (d, t),
        None => (stamp, "00"),
    };
    let (clock, fraction) = match time.split_once('.') {
        Some((c, f)) => (c, Some(f)),
        None => (time, None),
    };
    let clock = match clock.split(':').count() {
        1 => format!("{clock}:00:00"),
        2 => format!("{clock}:00"),
        _ => clock.to_string(),
    };
    let full = match fraction {
        Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => return Err(bad()),
        Some(f) => format!("{date}T{clock}.{f}Z"),
        None => format!("{date}T{clock}Z"),
    };
    let utc_reading = humantime::parse_rfc3339_weak(&full).map_err(|_| bad())?;
    let shift = Duration::from_secs(offset.unsigned_abs());
    if offset >= 0 {
        utc_reading.checked_sub(shift)
    } else {
        utc_reading.checked_add(shift)
    }
    .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_docker_forms() {
        let at = |s: &str| parse_time_with_offset(s, 0).unwrap();
        let day = UNIX_EPOCH + Duration::from_secs(1_764_892_800);
        assert_eq!(at("2025-12-05"), day);
        assert_eq!(at("2025-12-05T00:00:00Z"), day);
        assert_eq!(at("2025-12-05T00:00:00"), day);
        assert_eq!(at("2025-12-05T00:00"), day);
        assert_eq!(at("2025-12-05T00"), day);
        assert_eq!(at("2025-12-05T02:00:00+02:00"), day);
        assert_eq!(at("2025-12-04T21:30-02:30"), day);
        assert_eq!(
            at("2025-12-05T00:00:00.25Z"),
            day + Duration::from_millis(250)
        );
        // Without a zone: local time (here 1 h east of UTC, then 5 h west).
        let hour = Duration::from_secs(3600);
        assert_eq!(
            parse_time_with_offset("2025-12-05T01:00:00", 3600).unwrap(),
            day
        );
        assert_eq!(
            parse_time_with_offset("2025-12-05", 3600).unwrap(),
            day - hour
        );
        assert_eq!(
            parse_time_with_offset("2025-12-04T19", -5 * 3600).unwrap(),
            day
        );
        // With one, the local offset does not matter.
        assert_eq!(parse_time_with_offset("2025-12-05Z", 3600).unwrap(), day);
        assert_eq!(at("1764892800"), day);
        assert_eq!(at("1764892800.5"), day + Duration::from_millis(500));
        let before = SystemTime::now();
        let ago = before.duration_since(at("1h30m")).unwrap_or_default();
        assert!(ago > Duration::from_secs(5390) && ago < Duration::from_secs(5460));
        for bad in [
            "",
            "yesterday",
            "2025-13-40",
            "1h30x",
            "99999999999999999999",
            "1e400",
            "1.2.3",
            "2025-12-05T00:00:00+2",
            "2025-12-05T00:00:00+25:00",
            "2025-12-05T00:00:00+02:0x",
            "2025-12-05T00:00:00.Z",
            "2025-12-05T",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn until_and_labels_all_apply() {
        let args: Vec<String> = ["until=2025-12-05", "label=team", "label!=keep=yes"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = PruneFilter::parse(&args, &["until", "label", "label!"]).unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let old = Some("2025-12-04T23:59:59Z");
        assert!(f.allows(old, &labels(&[("team", "a")])));
        assert!(!f.allows(Some("2025-12-05T00:00:01Z"), &labels(&[("team", "a")])));
        assert!(!f.allows(None, &labels(&[("team", "a")])), "unknown age");
        assert!(!f.allows(old, &labels(&[])), "label missing");
        assert!(!f.allows(old, &labels(&[("team", "a"), ("keep", "yes")])));
        assert!(f.allows(old, &labels(&[("team", "a"), ("keep", "no")])));
        let err = PruneFilter::parse(&["until=1h".into()], &["label"]).unwrap_err();
        assert!(
            err.to_string().contains("invalid filter \"until\""),
            "{err}"
        );
    }
}
