//! The container labels imagewatch reads, its own and Watchtower's (so a host can switch without
//! relabelling), and the per-container policy they set. It only reads labels: it never decides
//! which containers a refresh touches beyond what the labels say.

use std::collections::HashMap;

/// `true` opts a container in (discovery without `--discover-all`); `false` opts it out always.
pub const ENABLE: &str = "imagewatch.enable";
/// Watchtower's opt-in label, honoured like [`ENABLE`].
pub const WATCHTOWER_ENABLE: &str = "com.centurylinklabs.watchtower.enable";
/// `true`: the image is watched and moves are reported, but the container is never touched.
pub const MONITOR_ONLY: &str = "imagewatch.monitor-only";
pub const WATCHTOWER_MONITOR_ONLY: &str = "com.centurylinklabs.watchtower.monitor-only";
/// The signal that stops the old container (default: the container's own `StopSignal`).
pub const STOP_SIGNAL: &str = "imagewatch.stop-signal";
pub const WATCHTOWER_STOP_SIGNAL: &str = "com.centurylinklabs.watchtower.stop-signal";
/// `recreate` or `remove`: this container's refresh mode, over the refresher's.
pub const MODE: &str = "imagewatch.mode";
/// `start-first` or `stop-first`: see [`super::order`].
pub const UPDATE_ORDER: &str = "imagewatch.update-order";

/// Whether a container takes part, by its enable labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enabled {
    /// `imagewatch.enable=true` (or Watchtower's).
    Yes,
    /// `imagewatch.enable=false` (or Watchtower's): never touched, even with `--discover-all`.
    No,
    /// No enable label (or one that is neither `true` nor `false`).
    Unlabelled,
}

/// The first of `keys` the container carries, trimmed.
pub fn value<'a>(labels: Option<&'a HashMap<String, String>>, keys: &[&str]) -> Option<&'a str> {
    let labels = labels?;
    keys.iter().find_map(|key| labels.get(*key)).map(|value| value.trim())
}

fn flag(labels: Option<&HashMap<String, String>>, keys: &[&str]) -> Option<bool> {
    match value(labels, keys)?.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// The container's enable labels; imagewatch's own wins over Watchtower's.
pub fn enabled(labels: Option<&HashMap<String, String>>) -> Enabled {
    match flag(labels, &[ENABLE]).or_else(|| flag(labels, &[WATCHTOWER_ENABLE])) {
        Some(true) => Enabled::Yes,
        Some(false) => Enabled::No,
        None => Enabled::Unlabelled,
    }
}

/// `imagewatch.monitor-only=true` or Watchtower's.
pub fn monitor_only(labels: Option<&HashMap<String, String>>) -> bool {
    flag(labels, &[MONITOR_ONLY])
        .or_else(|| flag(labels, &[WATCHTOWER_MONITOR_ONLY]))
        .unwrap_or(false)
}

/// The stop signal the labels ask for, if any.
pub fn stop_signal(labels: Option<&HashMap<String, String>>) -> Option<String> {
    value(labels, &[STOP_SIGNAL, WATCHTOWER_STOP_SIGNAL])
        .filter(|signal| !signal.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[rstest]
    #[case::own_true(&[(ENABLE, "true")], Enabled::Yes)]
    #[case::watchtower_true(&[(WATCHTOWER_ENABLE, "true")], Enabled::Yes)]
    #[case::own_false(&[(ENABLE, "false")], Enabled::No)]
    #[case::watchtower_false(&[(WATCHTOWER_ENABLE, "FALSE")], Enabled::No)]
    #[case::own_wins_over_watchtower(&[(ENABLE, "false"), (WATCHTOWER_ENABLE, "true")], Enabled::No)]
    #[case::none(&[("team", "blue")], Enabled::Unlabelled)]
    #[case::garbage_is_unlabelled(&[(ENABLE, "maybe")], Enabled::Unlabelled)]
    fn enable_labels_are_read_as_watchtower_reads_them(#[case] pairs: &[(&str, &str)], #[case] expected: Enabled) {
        assert_eq!(enabled(Some(&labels(pairs))), expected);
    }

    #[rstest]
    #[case(&[(MONITOR_ONLY, "true")], true)]
    #[case(&[(WATCHTOWER_MONITOR_ONLY, "true")], true)]
    #[case(&[(MONITOR_ONLY, "false"), (WATCHTOWER_MONITOR_ONLY, "true")], false)]
    #[case(&[], false)]
    fn monitor_only_label(#[case] pairs: &[(&str, &str)], #[case] expected: bool) {
        assert_eq!(monitor_only(Some(&labels(pairs))), expected);
    }

    #[test]
    fn stop_signal_prefers_the_own_label() {
        let both = labels(&[(STOP_SIGNAL, "SIGINT"), (WATCHTOWER_STOP_SIGNAL, "SIGHUP")]);
        assert_eq!(stop_signal(Some(&both)).as_deref(), Some("SIGINT"));
        let watchtower = labels(&[(WATCHTOWER_STOP_SIGNAL, "SIGHUP")]);
        assert_eq!(stop_signal(Some(&watchtower)).as_deref(), Some("SIGHUP"));
        assert_eq!(stop_signal(None), None);
    }
}
