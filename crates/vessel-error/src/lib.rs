//! An error and its causes as one line, the way every Vessel binary logs and reports them:
//! `outer: cause: root cause`. The one place that walks [`Error::source`]; the CLI's anyhow
//! errors print the same shape with `{:#}`.
#![warn(missing_docs)]

use std::error::Error;

/// `err` followed by each of its causes, outermost first.
pub fn causes<'a>(
    err: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |&e| e.source())
}

/// `err` and its causes joined by `": "`.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    causes(err)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Wrap(&'static str, Option<std::io::Error>);

    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_ref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn joins_every_cause_outermost_first() {
        let e = Wrap("mount proc", Some(std::io::Error::other("busy")));
        assert_eq!(chain(&e), "mount proc: busy");
        assert_eq!(causes(&e).count(), 2);
        assert_eq!(chain(&Wrap("alone", None)), "alone");
    }
}
