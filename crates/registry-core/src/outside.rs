//! Text from outside (a webhook receiver's answer, a command's output, a registry's error body)
//! made safe to print on one line: control characters, line breaks and the Unicode controls
//! that reorder text are shown as escapes, so a remote party cannot write a fake log line, move
//! the cursor or recolour a terminal. It does not truncate or judge content.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that change how the rest of a line is shown: bidirectional embeddings,
/// overrides and isolates (the "Trojan Source" set).
fn reorders(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// `text` with every control character as an escape (`\n`, `\r`, `\t`, `\u{1b}`), borrowed
/// when there is none. Linear in the input.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || reorders(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || reorders(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case::plain("refreshed: 200 OK", "refreshed: 200 OK")]
    #[case::fake_log_line(
        "ok\n2026-01-01T00:00:00Z  INFO refresh succeeded",
        "ok\\n2026-01-01T00:00:00Z  INFO refresh succeeded"
    )]
    #[case::carriage_return("ok\rERROR", "ok\\rERROR")]
    #[case::ansi_colour("\u{1b}[31mred\u{1b}[0m", "\\u{1b}[31mred\\u{1b}[0m")]
    #[case::c1_csi("\u{9b}2J", "\\u{9b}2J")]
    #[case::bidi_override("abc\u{202e}fed", "abc\\u{202e}fed")]
    #[case::unicode_text_stays("grüße ✓", "grüße ✓")]
    fn outside_text_prints_on_one_line(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(escaped(input), expected);
    }

    proptest! {
        #[test]
        fn escaped_text_has_no_control_character(text in any::<String>()) {
            let out = escaped(&text);
            prop_assert!(!out.chars().any(|c| c.is_control() || reorders(c)));
            if !text.contains('\\') {
                prop_assert_eq!(out == text, !text.chars().any(|c| c.is_control() || reorders(c)));
            }
        }
    }
}
