//! Globs on addresses and header values, compiled once when the config is
//! validated, so nothing downstream can meet a pattern that does not
//! compile.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};

/// A compiled glob: case-insensitive, matched against the whole string,
/// `*` crosses `/`. Compares and prints as the pattern it was written as.
#[derive(Clone)]
pub struct Glob {
    pattern: String,
    matcher: GlobMatcher,
}

impl Glob {
    /// Compiles `pattern`; the error says what globset objected to.
    pub fn new(pattern: &str) -> Result<Glob, globset::Error> {
        let matcher = GlobBuilder::new(pattern)
            .case_insensitive(true)
            .literal_separator(false)
            .build()?
            .compile_matcher();
        Ok(Glob {
            pattern: pattern.to_owned(),
            matcher,
        })
    }

    /// Whether `text` matches, case-insensitively.
    pub fn is_match(&self, text: &str) -> bool {
        self.matcher.is_match(text)
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.pattern == other.pattern
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.pattern, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn matches_whole_strings_case_insensitively() {
        let glob = Glob::new("*@News.Example.com").expect("valid");
        assert!(glob.is_match("a/b@news.example.COM"));
        assert!(!glob.is_match("a@news.example.com.evil"));
        assert!(Glob::new("[oops").is_err());
    }
}
