//! Line numbers for byte offsets of a config file, for errors that name the line. It knows
//! nothing of TOML or settings.

/// Where each line of a text starts, to turn byte offsets into line numbers in O(log n)
/// (a file of 10,000 images asks for 10,000 of them).
pub struct Lines(Vec<usize>);

impl Lines {
    pub fn of(text: &str) -> Lines {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Lines(starts)
    }

    /// The 1-based line of byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        match self.0.binary_search(&offset) {
            Ok(index) => index + 1,
            Err(index) => index,
        }
    }
}
