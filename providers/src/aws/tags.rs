//! Which of a resource's tags came from `-additional-resource-tags`, so that a key removed
//! from the annotation is removed in AWS too — and only such keys: tags someone else put
//! on the resource are never touched.
//!
//! berth records the keys it added in its own tags, `berth.io/extra-tags` (then
//! `berth.io/extra-tags-1`, … when one value of 256 characters cannot hold them all), as a
//! sorted comma-separated list (AWS tag keys cannot contain commas). Pure.

use std::collections::{BTreeMap, BTreeSet};

/// The first tag holding the keys berth added; more follow with `-1`, `-2`, ….
pub const TAG_EXTRA_KEYS: &str = "berth.io/extra-tags";
/// The longest tag value AWS accepts.
const MAX_VALUE: usize = 256;

fn record_key(i: usize) -> String {
    if i == 0 {
        TAG_EXTRA_KEYS.to_string()
    } else {
        format!("{TAG_EXTRA_KEYS}-{i}")
    }
}

fn is_record_key(k: &str) -> bool {
    k == TAG_EXTRA_KEYS
        || k.strip_prefix(TAG_EXTRA_KEYS)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The tags that record the keys of `extra` (none when `extra` is empty).
pub fn record(extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current = String::new();
    for k in extra.keys() {
        if !current.is_empty() && current.len() + 1 + k.len() > MAX_VALUE {
            out.insert(record_key(out.len()), std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(k);
    }
    if !current.is_empty() {
        out.insert(record_key(out.len()), current);
    }
    out
}

/// The keys `tags` says berth added.
pub fn recorded(tags: &BTreeMap<String, String>) -> BTreeSet<String> {
    tags.iter()
        .filter(|(k, _)| is_record_key(k))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// Keys to remove so `current` carries no tag berth added that `desired` lacks (including
/// record tags no longer needed).
pub fn to_remove(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out: BTreeSet<String> = recorded(current)
        .into_iter()
        .filter(|k| current.contains_key(k) && !desired.contains_key(k))
        .collect();
    out.extend(
        current
            .keys()
            .filter(|k| is_record_key(k) && !desired.contains_key(*k))
            .cloned(),
    );
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_keys_berth_added_are_removed() {
        let before = map(&[("team", "web"), ("cost", "1")]);
        let mut current = map(&[("team", "web"), ("cost", "1"), ("someone-elses", "x")]);
        current.extend(record(&before));
        assert_eq!(current[TAG_EXTRA_KEYS], "cost,team");
        // "cost" leaves the annotation.
        let after = map(&[("team", "web")]);
        let mut desired = after.clone();
        desired.extend(record(&after));
        assert_eq!(to_remove(&current, &desired), vec!["cost".to_string()]);
        // Every extra tag leaves: the record goes too; the foreign tag stays.
        let none = BTreeMap::new();
        assert_eq!(
            to_remove(&current, &record(&none)),
            vec![
                TAG_EXTRA_KEYS.to_string(),
                "cost".to_string(),
                "team".to_string()
            ]
        );
        // Nothing recorded (created before berth recorded keys): nothing removed.
        let old = map(&[("team", "web"), ("cost", "1")]);
        assert!(to_remove(&old, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn long_key_lists_span_several_tags() {
        let extra: BTreeMap<String, String> = (0..40)
            .map(|i| (format!("{i:02}-{}", "k".repeat(20)), String::new()))
            .collect();
        let r = record(&extra);
        assert!(r.len() > 1, "{r:?}");
        assert!(r.values().all(|v| v.len() <= MAX_VALUE));
        assert!(r.contains_key("berth.io/extra-tags-1"));
        assert_eq!(recorded(&r), extra.keys().cloned().collect());
        assert!(!is_record_key("berth.io/extra-tagsx") && !is_record_key("berth.io/extra-tags-"));
    }
}
