//! `list`: the state of every container under `--root` (runc list.go).

use std::io;
use std::os::unix::fs::MetadataExt;

use crate::host::state::{OciState, StateError, StateStore};

/// Errors of [`list`].
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The root could not be read (only an error when `--root` was given explicitly).
    #[error("read root {path}")]
    ReadRoot {
        /// The root.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The result of a listing: states in ID order, and the entries that failed to load (runc
/// reports those on stderr and goes on).
#[derive(Debug, Default)]
pub struct Listing {
    /// One state per loadable container, `owner` filled in.
    pub states: Vec<OciState>,
    /// `(id, error)` for each directory that could not be loaded.
    pub failures: Vec<(String, StateError)>,
}

/// Lists the containers. A missing root is empty when `missing_ok` (the default root), an error
/// otherwise.
pub fn list(store: &StateStore, missing_ok: bool) -> Result<Listing, ListError> {
    let ids = match store.ids() {
        Ok(ids) => ids,
        Err(e) if e.kind() == io::ErrorKind::NotFound && missing_ok => Vec::new(),
        Err(source) => {
            return Err(ListError::ReadRoot {
                path: store.root().to_owned(),
                source,
            })
        }
    };
    let mut listing = Listing::default();
    for id in ids {
        match store.load(&id) {
            Ok(record) => {
                let mut state = record.oci_state();
                state.owner = owner_of(store, &id);
                listing.states.push(state);
            }
            Err(e) => listing.failures.push((id, e)),
        }
    }
    Ok(listing)
}

/// The owner of the container directory: a user name, or `#<uid>` (runc list.go).
fn owner_of(store: &StateStore, id: &str) -> String {
    let uid = std::fs::metadata(store.root().join(id)).map_or(0, |m| m.uid());
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(user)) => user.name,
        _ => format!("#{uid}"),
    }
}

/// runc's `table` format: tab-aligned columns `ID PID STATUS BUNDLE CREATED OWNER`.
pub fn table(states: &[OciState]) -> String {
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from)];
    for s in states {
        rows.push([
            s.id.clone(),
            s.pid.to_string(),
            s.status.to_string(),
            s.bundle.display().to_string(),
            s.created.clone(),
            s.owner.clone(),
        ]);
    }
    // Go's tabwriter with minwidth 12, padding 1: each column is max(width + 1, 12) wide.
    let widths: Vec<usize> = (0..6)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len() + 1)
                .max()
                .unwrap_or(0)
                .max(12)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_root_depends_on_default() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("absent"));
        assert!(list(&store, true).unwrap().states.is_empty());
        assert!(list(&store, false).is_err());
    }

    #[test]
    fn broken_entries_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        drop(store.create_dir("half").unwrap());
        let l = list(&store, false).unwrap();
        assert!(l.states.is_empty());
        assert_eq!(l.failures.len(), 1);
        assert_eq!(l.failures[0].0, "half");
    }

    #[test]
    fn table_has_runc_header() {
        assert_eq!(
            table(&[]),
            "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
        );
    }
}
