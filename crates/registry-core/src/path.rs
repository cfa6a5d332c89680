//! Repository path components (`molecule-ai/workspace-template-langgraph`), checked against
//! distribution's grammar: lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.

/// The longest repository name distribution accepts.
const MAX_NAME_LEN: usize = 255;

/// Why a repository path is not valid, phrased to follow "the path ... ".
pub(crate) fn path_problem(path: &str) -> Option<&'static str> {
    if path.len() > MAX_NAME_LEN {
        return Some("is longer than 255 characters");
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Some("has an empty component (`//`, or a leading or trailing `/`)");
        }
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Some("has uppercase letters (repository names are lowercase)");
        }
        if component.bytes().any(|b| b.is_ascii_whitespace()) {
            return Some("contains whitespace");
        }
        if !is_path_component(component) {
            return Some("has a component that is not lowercase letters and digits joined by `.`, `_`, `__` or `-`");
        }
    }
    None
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("molecule-ai")]
    #[case("molecule-ai/workspace-template-claude-code")]
    #[case("a/b/c")]
    #[case("foo__bar")]
    #[case("foo---bar")]
    #[case("foo.bar_baz")]
    #[case("0")]
    fn valid_paths_pass(#[case] path: &str) {
        assert_eq!(path_problem(path), None);
    }

    #[rstest]
    #[case::uppercase("Molecule-AI", "uppercase")]
    #[case::empty_component("a//b", "empty component")]
    #[case::trailing_slash("a/", "empty component")]
    #[case::leading_separator("-a", "component")]
    #[case::trailing_separator("a.", "component")]
    #[case::double_dot("a..b", "component")]
    #[case::triple_underscore("a___b", "component")]
    #[case::mixed_separator("a.-b", "component")]
    #[case::space("a b", "whitespace")]
    #[case::too_long(&"a".repeat(256), "255")]
    fn invalid_paths_name_the_problem(#[case] path: &str, #[case] expected: &str) {
        let problem = path_problem(path).expect("must be rejected");
        assert!(problem.contains(expected), "{problem}");
    }
}
