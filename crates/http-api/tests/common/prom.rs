//! A strict reader of the Prometheus text exposition format (0.0.4), for tests: every line is a
//! `# HELP`, a `# TYPE` or a sample; names and label names follow the grammar; label values
//! are quoted with only `\\`, `\"` and `\n` escapes; values parse as Go floats; each family is
//! typed once, before and contiguous with its samples; histogram buckets are cumulative and end
//! in `+Inf` equal to `_count`. Answers the samples by `name{sorted labels}`.

use std::collections::{BTreeMap, HashMap};

/// `name` or `name{a="x",b="y"}` (labels sorted) -> value.
pub type Samples = BTreeMap<String, f64>;

fn is_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(first_ok) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

fn value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse::<f64>().map_err(|e| format!("value {text:?}: {e}")),
    }
}

/// Parses `{a="x",b="y"}` starting after the `{`; answers the labels and the rest of the line.
type Labels = Vec<(String, String)>;

fn labels(mut rest: &str) -> Result<(Labels, &str), String> {
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((out, after));
        }
        let eq = rest.find('=').ok_or("label without `=`")?;
        let name = rest[..eq].trim();
        if !is_name(name, false) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        out.push((name.to_owned(), value));
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

fn key(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let mut sorted = labels.to_vec();
    sorted.sort();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram" || t == "summary")
        {
            return base;
        }
    }
    name
}

pub fn parse(text: &str) -> Result<Samples, String> {
    let mut samples = Samples::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_name(name, true) {
                        return Err(at("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(at("second TYPE for a family".into()));
                    }
                    if samples
                        .keys()
                        .any(|k| family_of(k.split('{').next().unwrap_or(k), &types) == name)
                    {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                }
                (Some("HELP"), Some(name), _) if !is_name(name, true) => {
                    return Err(at("bad metric name".into()));
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            labels(&line[name_end + 1..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let v = value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|e| at(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &types).to_owned();
        if current.as_deref() != Some(&family) {
            if finished.contains(&family) {
                return Err(at(format!("samples of {family} are not contiguous")));
            }
            if let Some(previous) = current.replace(family.clone()) {
                finished.push(previous);
            }
        }
        if types.get(&family).is_some_and(|t| t == "counter") && v < 0.0 {
            return Err(at("negative counter".into()));
        }
        if name.ends_with("_bucket") && types.get(&family).is_some_and(|t| t == "histogram") {
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .ok_or_else(|| at("bucket without le".into()))?;
            let bound = value(&le.1).map_err(at)?;
            let others: Vec<(String, String)> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            buckets.entry(key(&family, &others)).or_default().push((bound, v));
        }
        if samples.insert(key(name, &labels), v).is_some() {
            return Err(at("duplicate sample".into()));
        }
    }
    for (series, list) in &buckets {
        let mut last = (f64::NEG_INFINITY, 0.0);
        for (bound, count) in list {
            if *bound <= last.0 || *count < last.1 {
                return Err(format!("{series}: buckets not increasing at le={bound}"));
            }
            last = (*bound, *count);
        }
        if last.0 != f64::INFINITY {
            return Err(format!("{series}: no +Inf bucket"));
        }
        let count_key = series.replacen('{', "_count{", 1);
        let count_key = if series.contains('{') {
            count_key
        } else {
            format!("{series}_count")
        };
        if samples.get(&count_key) != Some(&last.1) {
            return Err(format!("{series}: +Inf bucket {} differs from {count_key}", last.1));
        }
    }
    Ok(samples)
}

#[test]
fn the_reader_refuses_what_prometheus_refuses() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 3\n";
    assert_eq!(parse(good).expect("valid").get("a_total{k=\"v\\\"\"}"), Some(&3.0));
    for bad in [
        "a_total{k=v} 1\n",
        "a-b 1\n",
        "a 1 2 3\n",
        "a{k=\"x\"} one\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\nh_sum 0\n",
        "a 1\nb 1\na 2\n",
        "# TYPE c counter\nc -1\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
