//! `cargo xtask test-matrix`: every registry flavour (see `flavours`) started from real
//! components on 127.0.0.1, the same conformance suite (see `checks`) run against each, and a
//! flavour x check matrix printed. Exit status non-zero on any failure; a flavour whose
//! components cannot start fails every check with the reason, it is never skipped.
//!
//! Architecture invariant: nothing here talks to a registry except through
//! `registry_core::RegistryClient` with the provider the host maps to, skopeo (the reference
//! client), and `watcher::Watcher`.

mod checks;
mod flavours;
mod legacy_front;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use test_support::{TestCa, WorkDir};

use checks::{CHECKS, Ctx, Verdict};

struct Row {
    name: &'static str,
    shape: String,
    providers: String,
    verdicts: Vec<Verdict>,
    took: Duration,
}

/// Runs the matrix; `Err` when any check failed (the matrix is printed either way).
pub fn run() -> Result<(), String> {
    crate::install::components()?;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let common = WorkDir::new("matrix-ca");
    let ca = TestCa::new(&common);
    println!(
        "test-matrix: {} flavours x {} checks, real components on 127.0.0.1 (test CA {}, trusted through TransportConfig::ca_bundle)",
        flavours::ALL.len(),
        CHECKS.len(),
        ca.ca_cert_path.display()
    );

    let default_hook = std::panic::take_hook();
    // Panics are caught and reported in the matrix; printing each one as well would bury it.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rows = Vec::new();
    for (name, make) in flavours::ALL {
        let flavour_started = Instant::now();
        eprintln!("test-matrix: {name}: starting");
        let wd = WorkDir::new(&format!("matrix-{name}"));
        let row = match catch_unwind(AssertUnwindSafe(|| make(&wd, &ca))) {
            Err(panic) => {
                let reason = format!("COMPONENT DID NOT START: {}", panic_message(&*panic));
                keep_logs(wd);
                Row {
                    name,
                    shape: "-".into(),
                    providers: "-".into(),
                    verdicts: CHECKS
                        .iter()
                        .enumerate()
                        .map(|(i, _)| match i {
                            0 => Verdict::Fail(reason.clone()),
                            _ => Verdict::Fail(format!("the flavour did not start (see {})", CHECKS[0])),
                        })
                        .collect(),
                    took: flavour_started.elapsed(),
                }
            }
            Ok(flavour) => {
                let ctx = Ctx {
                    flavour: &flavour,
                    wd: &wd,
                    rt: &runtime,
                };
                let verdicts: Vec<Verdict> = CHECKS
                    .iter()
                    .map(|check| {
                        eprintln!("test-matrix: {name}: {check}");
                        catch_unwind(AssertUnwindSafe(|| checks::run(check, &ctx)))
                            .unwrap_or_else(|panic| Verdict::Fail(panic_message(&*panic)))
                    })
                    .collect();
                let shape = match flavour.legacy_rewrites() {
                    Some(n) => format!("{} ({n} challenges rewritten during the run)", flavour.shape),
                    None => flavour.shape.clone(),
                };
                let row = Row {
                    name,
                    shape,
                    providers: flavour.providers.clone(),
                    verdicts,
                    took: flavour_started.elapsed(),
                };
                if row.verdicts.iter().any(|v| matches!(v, Verdict::Fail(_))) {
                    keep_logs((flavour, wd));
                }
                row
            }
        };
        rows.push(row);
    }
    std::panic::set_hook(default_hook);

    print_matrix(&rows, started.elapsed());
    let failed = rows
        .iter()
        .flat_map(|row| &row.verdicts)
        .filter(|v| matches!(v, Verdict::Fail(_)))
        .count();
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("test-matrix: {failed} check(s) failed (see the matrix above)"))
    }
}

/// Drops `components` while unwinding, which is when test-support keeps the work dir (and
/// prints where): the logs of a failed flavour survive the run.
fn keep_logs(components: impl Any) {
    let _ = catch_unwind(AssertUnwindSafe(move || {
        let _components = components;
        panic!("keeping the logs of a failed flavour");
    }));
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".into())
}

fn cell(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Pass(_) => "PASS",
        Verdict::Fail(_) => "FAIL",
        Verdict::NotApplicable(_) => "n/a",
    }
}

fn print_matrix(rows: &[Row], took: Duration) {
    let first = rows.iter().map(|r| r.name.len()).max().unwrap_or(7).max(7);
    let mut header = format!("\n{:<first$}", "flavour");
    for check in CHECKS {
        header.push_str(&format!("  {check}"));
    }
    header.push_str("   time");
    println!("{header}");
    println!("{}", "-".repeat(header.len() - 1));
    for row in rows {
        let mut line = format!("{:<first$}", row.name);
        for (check, verdict) in CHECKS.iter().zip(&row.verdicts) {
            line.push_str(&format!("  {:<width$}", cell(verdict), width = check.len()));
        }
        line.push_str(&format!("  {:>5.1}s", row.took.as_secs_f64()));
        println!("{line}");
    }

    println!("\nflavours:");
    for row in rows {
        println!("  {:<first$}  {}", row.name, row.shape);
        println!("  {:<first$}  IMAGEWATCH_PROVIDERS={}", "", row.providers);
    }
    println!("\ndetails:");
    for row in rows {
        for (check, verdict) in CHECKS.iter().zip(&row.verdicts) {
            let (label, text) = match verdict {
                Verdict::Pass(note) => ("pass", note),
                Verdict::Fail(reason) => ("FAIL", reason),
                Verdict::NotApplicable(why) => ("n/a ", why),
            };
            let text = match verdict {
                Verdict::Fail(_) => text.replace('\n', "\n      "),
                _ => one_line(text, 400),
            };
            println!("  {:<first$} {check:<16} {label} {text}", row.name);
        }
    }
    let total = rows.len() * CHECKS.len();
    let count = |f: fn(&Verdict) -> bool| rows.iter().flat_map(|r| &r.verdicts).filter(|v| f(v)).count();
    let passed = count(|v| matches!(v, Verdict::Pass(_)));
    let failed = count(|v| matches!(v, Verdict::Fail(_)));
    let na = count(|v| matches!(v, Verdict::NotApplicable(_)));
    println!(
        "\n{total} checks in {:.1}s; checks that do not apply to a flavour count as skipped",
        took.as_secs_f64()
    );
    // The closing line in the form CI tools read: `N passed, N failed, N skipped`.
    println!("test-matrix: {passed} passed, {failed} failed, {na} skipped");
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}...")
    } else {
        flat
    }
}
