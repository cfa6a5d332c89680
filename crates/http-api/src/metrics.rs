//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Why by hand: every number already lives in plain counters (the watcher's [`StatusBoard`],
//! the registry client's `ClientStats`, the trigger queue, this crate's hook counters), so the
//! endpoint is a formatter of about a hundred lines. A metrics library would mean a second copy
//! of each counter or a custom collector per source, for the same text.
//!
//! [`StatusBoard`]: watcher::StatusBoard

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use registry_core::client::StatsSnapshot;
use watcher::status::HistogramSnapshot;
use watcher::{TriggerCounts, WatcherMetrics};

use crate::counters::HookCounts;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything `/metrics` shows, read at one instant.
#[derive(Debug)]
pub(crate) struct Readings {
    pub(crate) watcher: WatcherMetrics,
    pub(crate) triggers: TriggerCounts,
    pub(crate) hooks: HookCounts,
    pub(crate) registry: Option<StatsSnapshot>,
    pub(crate) running: bool,
}

/// A text-format writer: one family at a time, `HELP` and `TYPE` first.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value as f64);
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (i, count) in histogram.cumulative.iter().enumerate() {
            let le = histogram
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| number(*b));
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, *count as f64);
        }
        self.sample(&format!("{name}_sum"), labels, histogram.sum);
        self.sample(&format!("{name}_count"), labels, histogram.count as f64);
    }
}

/// Which replica leads: `imagewatch_leader` is 1 on the leader and 0 on a standby, labelled
/// with this replica's name; `imagewatch_leader_info` names the leader as this replica sees it.
pub fn render_leadership(leadership: &watcher::Leadership) -> String {
    let replica = escape_label(leadership.replica().unwrap_or(""));
    let leader = escape_label(leadership.leader().unwrap_or(""));
    format!(
        "# HELP imagewatch_leader Whether this replica holds the leader lock and refreshes (1) or stands by (0).\n\
         # TYPE imagewatch_leader gauge\n\
         imagewatch_leader{{replica=\"{replica}\"}} {}\n\
         # HELP imagewatch_leader_info The replica that leads, as this one sees it (empty: none yet).\n\
         # TYPE imagewatch_leader_info gauge\n\
         imagewatch_leader_info{{leader=\"{leader}\"}} 1\n",
        u8::from(leadership.may_refresh())
    )
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Go's `ParseFloat` reads all of these; infinities are spelt `+Inf`/`-Inf`.
fn number(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if value.is_nan() {
        "NaN".into()
    } else {
        format!("{value}")
    }
}

pub(crate) fn render(readings: &Readings) -> String {
    let mut e = Exposition { out: String::new() };
    let w = &readings.watcher;

    e.family(
        "imagewatch_up",
        "gauge",
        "1 while the watch loop runs, 0 once it has stopped.",
    );
    e.sample("imagewatch_up", &[], if readings.running { 1.0 } else { 0.0 });

    e.family("imagewatch_watched_images", "gauge", "Images in the watch set.");
    e.sample("imagewatch_watched_images", &[], w.images as f64);

    e.family(
        "imagewatch_checks_total",
        "counter",
        "Images gone through a tick or a triggered check, by what happened to them.",
    );
    for (result, count) in &w.checks {
        e.sample("imagewatch_checks_total", &[("result", result)], *count as f64);
    }

    e.family(
        "imagewatch_check_errors_total",
        "counter",
        "Failed digest checks, by error kind.",
    );
    for (kind, count) in &w.check_errors {
        e.sample("imagewatch_check_errors_total", &[("kind", kind)], *count as f64);
    }

    e.family(
        "imagewatch_refreshes_total",
        "counter",
        "Refreshes of moved images, by result.",
    );
    e.sample(
        "imagewatch_refreshes_total",
        &[("result", "success")],
        w.refreshes_succeeded as f64,
    );
    e.sample(
        "imagewatch_refreshes_total",
        &[("result", "failure")],
        w.refreshes_failed as f64,
    );

    e.family(
        "imagewatch_tick_duration_seconds",
        "histogram",
        "Duration of passes over images: poll ticks and triggered checks.",
    );
    for (kind, histogram) in &w.tick_durations {
        e.histogram("imagewatch_tick_duration_seconds", &[("kind", kind)], histogram);
    }

    if let Some(at) = w.last_tick.and_then(|at| at.duration_since(UNIX_EPOCH).ok()) {
        e.family(
            "imagewatch_last_tick_timestamp_seconds",
            "gauge",
            "When the last pass over images finished (Unix time).",
        );
        e.sample("imagewatch_last_tick_timestamp_seconds", &[], at.as_secs_f64());
    }

    e.family(
        "imagewatch_triggers_total",
        "counter",
        "Check requests (webhooks, POST /check): queued, coalesced into a check already queued, or follow-ups for an announced digest the registry did not answer yet.",
    );
    e.sample(
        "imagewatch_triggers_total",
        &[("outcome", "queued")],
        readings.triggers.queued as f64,
    );
    e.sample(
        "imagewatch_triggers_total",
        &[("outcome", "coalesced")],
        readings.triggers.coalesced as f64,
    );
    e.sample(
        "imagewatch_triggers_total",
        &[("outcome", "follow_up")],
        readings.triggers.follow_ups as f64,
    );

    e.family(
        "imagewatch_webhooks_total",
        "counter",
        "Webhook requests, by sender and outcome.",
    );
    for (sender, outcome, count) in readings.hooks.iter() {
        e.sample(
            "imagewatch_webhooks_total",
            &[("sender", sender), ("outcome", outcome)],
            count as f64,
        );
    }

    if let Some(stats) = &readings.registry {
        e.family(
            "imagewatch_registry_requests_total",
            "counter",
            "Requests answered by registries and token realms, by kind.",
        );
        for (kind, count) in [
            ("probe", stats.probes),
            ("manifest_head", stats.manifest_heads),
            ("manifest_get", stats.manifest_gets),
            ("token", stats.token_requests),
        ] {
            e.sample("imagewatch_registry_requests_total", &[("kind", kind)], count as f64);
        }
        e.counter(
            "imagewatch_token_exchanges_total",
            "Token exchanges with registry token realms.",
            stats.token_requests,
        );
        e.counter(
            "imagewatch_registry_unauthorized_total",
            "401 answers from registries (challenges included).",
            stats.unauthorized,
        );
        e.counter(
            "imagewatch_registry_redirects_total",
            "Redirects followed.",
            stats.redirects,
        );
        e.counter(
            "imagewatch_registry_transport_errors_total",
            "Registry requests that got no HTTP answer (refused, timed out, TLS).",
            stats.transport_errors,
        );
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn numbers_use_go_spellings() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(0.025), "0.025");
        assert_eq!(number(300.0), "300");
        assert_eq!(number(12.0), "12");
    }
}
