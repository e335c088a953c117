//! `--filter KEY=VALUE` of the list commands, combined as Docker combines
//! them: values of one key are alternatives, except `label` values, which
//! must all match; different keys must all match.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};

/// Parsed filters: each key with its values.
pub(crate) struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parse `--filter` arguments; a key not in `keys` is an error naming them.
    pub(crate) fn parse(args: &[String], keys: &[&str]) -> anyhow::Result<Filters> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for arg in args {
            let (key, value) = arg
                .split_once('=')
                .with_context(|| format!("invalid filter {arg:?}: use KEY=VALUE"))?;
            if !keys.contains(&key) {
                bail!("invalid filter {key:?}: use {}", keys.join(", "));
            }
            map.entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
        Ok(Filters(map))
    }

    /// Check every value given for `key` (so a bad value is an error even
    /// when no row is there to test it on).
    pub(crate) fn check(
        &self,
        key: &str,
        valid: impl Fn(&str) -> bool,
        expected: &str,
    ) -> anyhow::Result<()> {
        for v in self.0.get(key).into_iter().flatten() {
            if !valid(v) {
                bail!("invalid filter {key}={v:?}: use {expected}");
            }
        }
        Ok(())
    }

    /// Check that every value of `key` is a boolean (`true`, `false`, `1`, `0`).
    pub(crate) fn check_bool(&self, key: &str) -> anyhow::Result<()> {
        self.check(
            key,
            |v| matches!(v, "true" | "1" | "false" | "0"),
            "true or false",
        )
    }

    /// Whether `key` was given.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Whether a row passes: for every key given, `hit(key, value)` for one
    /// of its values (for `label`, for each of them).
    pub(crate) fn pass(
        &self,
        mut hit: impl FnMut(&str, &str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        for (key, values) in &self.0 {
            let every = key == "label";
            let mut passed = every;
            for v in values {
                if hit(key, v)? != every {
                    passed = !every;
                    break;
                }
            }
            if !passed {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Labels as list commands show them: `k=v,k2=v2`.
pub(crate) fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `label=KEY` or `label=KEY=VALUE` against a row's labels.
pub(crate) fn label_matches(labels: &BTreeMap<String, String>, value: &str) -> bool {
    match value.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(filters: &[&str], row: &[(&str, &str)]) -> bool {
        let args: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        Filters::parse(&args, &["a", "b", "label"])
            .unwrap()
            .pass(|k, v| Ok(row.contains(&(k, v))))
            .unwrap()
    }

    #[test]
    fn one_keys_values_are_alternatives_and_keys_all_apply() {
        assert!(pass(&[], &[]));
        assert!(pass(&["a=1", "a=2"], &[("a", "2")]));
        assert!(!pass(&["a=1", "b=2"], &[("a", "1")]));
        assert!(pass(&["a=1", "b=2", "b=3"], &[("a", "1"), ("b", "3")]));
        // As Docker's MatchKVList: every label given must match.
        assert!(pass(
            &["label=x", "label=y"],
            &[("label", "x"), ("label", "y")]
        ));
        assert!(!pass(&["label=x", "label=y"], &[("label", "x")]));
    }

    #[test]
    fn unknown_keys_and_missing_values_are_errors() {
        let err = Filters::parse(&["c=1".into()], &["a", "b"]).err().unwrap();
        assert_eq!(err.to_string(), "invalid filter \"c\": use a, b");
        assert!(Filters::parse(&["a".into()], &["a"]).is_err());
        let f = Filters::parse(&["a=x".into()], &["a"]).unwrap();
        let err = f.check("a", |v| v == "1", "1").err().unwrap();
        assert_eq!(err.to_string(), "invalid filter a=\"x\": use 1");
        assert!(f.check("b", |_| false, "").is_ok());
    }
}
