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
/// before now (`10m`, `1h30m`), RFC 3339 (`2026-12-05T10:00:00Z`, fraction
/// and `Z` optional, UTC), a date (`2026-12-05`), or Unix seconds
/// (`1764928800`, a fraction allowed).
pub fn parse_time(s: &str) -> Result<SystemTime> {
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
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    humantime::parse_rfc3339_weak(&full).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_docker_forms() {
        let at = |s: &str| parse_time(s).unwrap();
        let day = UNIX_EPOCH + Duration::from_secs(1_764_892_800);
        assert_eq!(at("2025-12-05"), day);
        assert_eq!(at("2025-12-05T00:00:00Z"), day);
        assert_eq!(at("2025-12-05T00:00:00"), day);
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
