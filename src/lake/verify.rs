//! `gamelake lake verify`: does every file each retained version of a table refers to exist,
//! with the size its log records? Answers which versions are readable, and names the first
//! broken one.
//!
//! The check lists the table's folder once and walks its log: from commit 0 when the log still
//! holds it, else from the oldest checkpoint (whose files delta-rs lists). A file that is
//! missing but was removed by a later commit was vacuumed: versions before its removal can no
//! longer be read (time travel stops there), which is expected. A file missing while the newest
//! version still uses it, or any file whose size differs from the log's, is damage.

use std::collections::HashMap;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::delta_log::{self, FileRef, commit_path, in_table, list_log};
use super::{Lake, TableRef};
use crate::error::{Error, Result};

/// A file the log refers to that the store does not hold as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFile {
    /// The file, relative to the table folder.
    pub path: String,
    /// The version that added it.
    pub added: u64,
    /// The version that removed it, if one did.
    pub removed: Option<u64>,
    /// Its size in the log (a lower bound for deletion vector files).
    pub expected: u64,
    /// Its size in the store; None when it is missing.
    pub found: Option<u64>,
}

impl BadFile {
    /// A file missing after a later version removed it: vacuumed, not damaged.
    pub fn vacuumed(&self) -> bool {
        self.found.is_none() && self.removed.is_some()
    }
}

/// What verifying one table found.
#[derive(Clone, Debug)]
pub struct Verification {
    /// The table.
    pub table: TableRef,
    /// The oldest version its log can still load (0, or its oldest checkpoint).
    pub oldest: u64,
    /// Its newest version.
    pub latest: u64,
    /// Files the checked versions refer to.
    pub files: usize,
    /// Their bytes, as the log records them.
    pub bytes: u64,
    /// Files missing or of the wrong size.
    pub bad: Vec<BadFile>,
    /// A version whose commit file is missing between `oldest` and `latest`.
    pub missing_commit: Option<u64>,
}

impl Verification {
    /// Whether the newest version is readable and no file is damaged (vacuumed files of old
    /// versions are fine).
    pub fn is_healthy(&self) -> bool {
        self.missing_commit.is_none() && self.bad.iter().all(BadFile::vacuumed)
    }

    /// The first version that cannot be read, if any.
    pub fn first_broken(&self) -> Option<u64> {
        self.bad
            .iter()
            .map(|b| b.added)
            .chain(self.missing_commit)
            .min()
    }

    /// The oldest version from which every version up to the newest is readable (None when the
    /// newest is not).
    pub fn readable_from(&self) -> Option<u64> {
        if !self.is_healthy() {
            return None;
        }
        Some(
            self.bad
                .iter()
                .filter_map(|b| b.removed)
                .max()
                .unwrap_or(self.oldest),
        )
    }
}

/// A file a version refers to, with the versions it is part of.
struct Tracked {
    file: FileRef,
    added: u64,
    removed: Option<u64>,
}

/// Verifies one table.
pub async fn verify_table(lake: &Lake, table: &TableRef) -> Result<Verification> {
    let folder = table.folder();
    let store = lake.store();
    let listing = list_log(store.as_ref(), &folder, None).await?;
    let latest = listing.latest().ok_or_else(|| Error::TableNotFound {
        name: table.to_string(),
        suggestion: String::new(),
    })?;
    let table_url = lake.table_url(table)?;
    let mut tracked: HashMap<Path, Tracked> = HashMap::new();
    let oldest = if listing.commits.contains_key(&0) {
        0
    } else {
        let Some((checkpoint, _)) = listing.checkpoints.iter().next() else {
            return Err(Error::Invalid(format!(
                "{table}: its log has neither commit 0 nor a checkpoint; the table cannot be loaded at any version"
            )));
        };
        let checkpoint = *checkpoint;
        for file in delta_log::files_at(lake, table, checkpoint).await? {
            track(&mut tracked, file, checkpoint);
        }
        checkpoint
    };
    let mut missing_commit = None;
    let first = if oldest == 0 { 0 } else { oldest + 1 };
    for version in first..=latest {
        if !listing.commits.contains_key(&version) {
            missing_commit.get_or_insert(version);
            continue;
        }
        let bytes = store
            .get(&commit_path(&folder, version))
            .await?
            .bytes()
            .await?;
        let what = format!("{table} version {version}");
        let commit = delta_log::parse_commit(&bytes, &table_url, &what)?;
        for path in commit.removed {
            if let Some(t) = tracked.get_mut(&path)
                && t.removed.is_none()
            {
                t.removed = Some(version);
            }
        }
        for file in commit.added {
            track(&mut tracked, file, version);
        }
    }
    let sizes: HashMap<Path, u64> = store
        .list(Some(&Path::from(folder.as_str())))
        .map_ok(|m| (m.location, m.size))
        .try_collect()
        .await
        .map_err(|e| lake.location().unreachable(&e))?;
    let mut bad = Vec::new();
    let mut bytes = 0;
    for (path, t) in &tracked {
        bytes += t.file.size;
        let found = sizes.get(&in_table(&folder, path)).copied();
        if !found.is_some_and(|size| t.file.fits(size)) {
            bad.push(BadFile {
                path: path.to_string(),
                added: t.added,
                removed: t.removed,
                expected: t.file.size,
                found,
            });
        }
    }
    bad.sort_by(|a, b| (a.added, &a.path).cmp(&(b.added, &b.path)));
    Ok(Verification {
        table: table.clone(),
        oldest,
        latest,
        files: tracked.len(),
        bytes,
        bad,
        missing_commit,
    })
}

/// Records a file a version adds (a file added again after its removal starts a new life).
fn track(tracked: &mut HashMap<Path, Tracked>, file: FileRef, version: u64) {
    tracked.insert(
        file.path.clone(),
        Tracked {
            file,
            added: version,
            removed: None,
        },
    );
}
