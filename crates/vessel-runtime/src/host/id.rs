//! Container ID validation, exactly as runc's `validateID` (libcontainer/factory_linux.go).

/// Errors of [`validate`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// The ID is empty (runc's `errEmptyID`, utils_linux.go, checked before `validateID`).
    #[error("container id cannot be empty")]
    Empty,
    /// The ID has a character outside `A-Z a-z 0-9 _ + - .`, or is not one clean path
    /// element (`.` and `..`). The message is runc's (libcontainer/error.go `ErrInvalidID`).
    #[error("invalid container ID format")]
    InvalidFormat,
}

/// Checks that `id` is a valid container ID: non-empty ([`IdError::Empty`]), only `A-Z a-z 0-9 _ + - .`, and a clean
/// single path element (so `.` and `..` are refused, as runc does with `filepath.Clean`).
pub fn validate(id: &str) -> Result<(), IdError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.');
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if !id.chars().all(allowed) || id == "." || id == ".." {
        return Err(IdError::InvalidFormat);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_runc_charset() {
        for id in ["a", "abc-123_x.y+z", "A.B", "...", "0"] {
            assert_eq!(validate(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn refuses_bad_ids() {
        assert_eq!(validate(""), Err(IdError::Empty));
        for id in [".", "..", "a/b", "a b", "é", "x:y", "/abs", "a\n"] {
            assert_eq!(validate(id), Err(IdError::InvalidFormat), "{id:?}");
        }
    }
}
