//! Access rules for readers (`serve --access FILE`): which tables each may read, which rows and
//! what each column shows ([`rules`]), applied to every statement's logical plan before it runs
//! ([`scans`]), the catalog's listings included ([`listings`]); per-user quotas from the same
//! file ([`quotas`]); read again when the file changes ([`AccessControl::watch`]).

pub mod listings;
pub mod quotas;
pub mod rules;
pub mod scans;

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

pub use rules::Rules;
pub use scans::Applied;

use crate::error::Result;

/// How often the rules file is checked for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The rules a server applies now (none: readers read every table but `system.*`), replaced
/// when their file changes.
#[derive(Debug, Default)]
pub struct AccessControl {
    rules: RwLock<Option<Arc<Rules>>>,
    usage: Arc<quotas::Usage>,
}

impl AccessControl {
    /// The rules now, if any.
    pub fn current(&self) -> Option<Arc<Rules>> {
        self.rules
            .read()
            .map_or_else(|p| p.into_inner().clone(), |r| r.clone())
    }

    /// What each user runs now, counted against the quotas of the rules.
    pub fn usage(&self) -> &Arc<quotas::Usage> {
        &self.usage
    }

    /// Applies `rules` from the next statement on.
    pub fn replace(&self, rules: Rules) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(rules));
    }

    /// Reads `path` now (a mistake is an error: the server does not start), then again whenever
    /// it changes, every [`RELOAD_INTERVAL`]: a changed file with a mistake is reported and the
    /// rules before it stay. The file is polled rather than watched with inotify: polling
    /// sees a file replaced by rename (editors, Kubernetes config maps) and works on every
    /// filesystem, for one `stat` a second.
    pub fn watch(self: &Arc<Self>, path: &Path) -> Result<()> {
        let rules = Rules::load(path)?;
        let count = rules.len();
        self.replace(rules);
        tracing::info!("access rules: {count} from {}", path.display());
        let (control, path) = (Arc::downgrade(self), path.to_path_buf());
        tokio::spawn(async move {
            let mut seen = stamp(&path);
            loop {
                tokio::time::sleep(RELOAD_INTERVAL).await;
                let Some(control) = control.upgrade() else {
                    return;
                };
                let now = stamp(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                reload(&control, &path);
            }
        });
        Ok(())
    }
}

fn reload(control: &AccessControl, path: &Path) {
    match Rules::load(path) {
        Ok(rules) => {
            let count = rules.len();
            control.replace(rules);
            println!(
                "gamelake serve: access rules read again from {} ({count} rules)",
                path.display()
            );
        }
        // On standard output with serve's other events, where an operator watches them.
        Err(e) => println!("gamelake serve: access rules not reloaded, the rules before stay: {e}"),
    }
}

/// What tells a changed file: its modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
