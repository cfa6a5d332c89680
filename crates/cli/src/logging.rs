//! Structured logs on stderr (tracing), as text for people or JSON for log shippers; the level
//! comes from `RUST_LOG` (default `info`). Text logs escape every field and message (see
//! `registry_core::outside`), because fields carry text from outside: a receiver's answer, a
//! command's output, a registry's error body. JSON escapes by its own grammar. Colours only
//! when stderr is a terminal and `NO_COLOR` is unset.

use std::fmt;
use std::io::IsTerminal as _;

use registry_core::outside::escaped;
use tracing::field::Field;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::Writer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// One field of a text log line: the message bare, the others `name=value`, escaped.
pub(crate) fn write_field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let value = format!("{value:?}");
    if field.name() == "message" {
        write!(writer, "{}", escaped(&value))
    } else {
        write!(writer, "{}={}", field.name(), escaped(&value))
    }
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(write_field).delimited(" "))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::field::MakeExt as _;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A receiver that answers with a fake log line and a colour code writes neither.
    #[test]
    fn outside_text_cannot_forge_a_text_log_line() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(super::write_field).delimited(" "))
            .finish();
        let body = "ok\n2026-01-01T00:00:00Z  INFO refresh succeeded \u{1b}[32mgreen";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(detail = %body, "webhook answered: {body}");
        });
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("ok\\n2026-01-01T00:00:00Z"), "{text}");
        assert!(text.contains("detail=ok\\n"), "{text}");
    }
}
