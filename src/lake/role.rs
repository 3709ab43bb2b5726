//! Which lake of a group is written to: promotion of a replica, and fencing of the primary it
//! replaces.
//!
//! A lake's role is `_gamelake/role.json`: absent for an ordinary lake (written to, or a
//! replica), `primary` with an epoch for a replica that was promoted, `fenced` with the same
//! epoch and the new primary's URL for the lake it replaced. Every writer reads it before each
//! commit ([`Lake::check_not_fenced`], from the write path's safety check), so once a lake is
//! fenced no gamelake writer commits to it again, and `replicate` refuses to copy into a
//! promoted lake (it would overwrite the new primary's history).
//!
//! A primary that is unreachable at promotion cannot be fenced then: `lake promote` says so,
//! and `lake fence` must run against it before its datacenter rejoins. Commits an old writer
//! slips in before the fence lands are not lost, only stranded on the old primary: a
//! pipeline's position is committed with its rows, so it reloads from the promoted lake's
//! position; the intake keeps each write-ahead segment until its replica holds it (its
//! `hold_until_replicated_in`), so it commits those again to the promoted lake, exactly once
//! by its markers.

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::Lake;
use crate::error::{Error, Result};

const ROLE_FILE: &str = "_gamelake/role.json";

/// What a lake is in its group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum Role {
    /// A replica promoted to take writes, from `previous`.
    Primary {
        /// Promotions so far in the group; a later promotion has a larger one.
        epoch: u64,
        /// The lake it replaced.
        previous: String,
        /// When.
        since: DateTime<Utc>,
    },
    /// A primary that was replaced: no commits any more.
    Fenced {
        /// The epoch of the promotion that replaced it.
        epoch: u64,
        /// The lake that writes now.
        promoted_to: String,
        /// When.
        since: DateTime<Utc>,
    },
}

impl Role {
    fn epoch(&self) -> u64 {
        match self {
            Role::Primary { epoch, .. } | Role::Fenced { epoch, .. } => *epoch,
        }
    }
}

/// What `lake promote` did.
#[derive(Debug)]
pub struct Promotion {
    /// The new primary's epoch.
    pub epoch: u64,
    /// The old primary was fenced now; else why not.
    pub fenced: std::result::Result<(), String>,
}

impl Lake {
    /// The lake's role, if it was ever promoted or fenced.
    pub async fn role(&self) -> Result<Option<Role>> {
        let bytes = match self.store().get(&Path::from(ROLE_FILE)).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.location().unreachable(&e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Invalid(format!(
                "{}{ROLE_FILE} is not a role gamelake wrote ({e}); restore it or delete it",
                self.location().url()
            ))
        })
    }

    async fn set_role(&self, role: &Role) -> Result<()> {
        let text =
            serde_json::to_vec_pretty(role).map_err(|e| Error::Invalid(format!("role: {e}")))?;
        self.store()
            .put(&Path::from(ROLE_FILE), text.into())
            .await
            .map_err(|e| self.location().unreachable(&e))?;
        Ok(())
    }

    /// Refuses when the lake was fenced by a promotion elsewhere.
    pub async fn check_not_fenced(&self) -> Result<()> {
        match self.role().await? {
            Some(Role::Fenced {
                epoch,
                promoted_to,
                since,
            }) => Err(Error::Fenced {
                url: self.location().url().to_string(),
                promoted_to,
                epoch,
                since: since.to_rfc3339(),
            }),
            _ => Ok(()),
        }
    }

    /// Makes this lake (a replica) the primary of its group in place of `old`, then fences
    /// `old` if it answers within `reach`.
    pub async fn promote(&self, old: &Lake, reach: std::time::Duration) -> Result<Promotion> {
        if self.location().url() == old.location().url() {
            return Err(Error::Invalid(
                "a lake cannot be promoted in place of itself: give the old primary's URL".into(),
            ));
        }
        let old_role = tokio::time::timeout(reach, old.role()).await;
        let known = [
            self.role().await?.map(|r| r.epoch()),
            old_role
                .as_ref()
                .ok()
                .and_then(|r| r.as_ref().ok())
                .and_then(|r| r.as_ref())
                .map(Role::epoch),
        ];
        let epoch = known.into_iter().flatten().max().unwrap_or(0) + 1;
        self.set_role(&Role::Primary {
            epoch,
            previous: old.location().url().to_string(),
            since: Utc::now(),
        })
        .await?;
        let fenced = match tokio::time::timeout(reach, old.set_fenced(self, epoch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(reach)
            )),
        };
        Ok(Promotion { epoch, fenced })
    }

    /// Fences this lake, an old primary, in favour of `primary`, which must have been promoted
    /// in its place (`lake promote --from` this lake). Returns the promotion's epoch.
    pub async fn fence(&self, primary: &Lake) -> Result<u64> {
        let mine = self.location().url().as_str();
        match primary.role().await? {
            Some(Role::Primary {
                epoch, previous, ..
            }) if previous == mine => {
                self.set_fenced(primary, epoch).await?;
                Ok(epoch)
            }
            _ => Err(Error::Invalid(format!(
                "{} was not promoted in place of {mine}; run `lake promote --from {mine}` against it first",
                primary.location().url()
            ))),
        }
    }

    /// Records that `primary` (promoted at `epoch`) takes this lake's writes from now on.
    async fn set_fenced(&self, primary: &Lake, epoch: u64) -> Result<()> {
        self.set_role(&Role::Fenced {
            epoch,
            promoted_to: primary.location().url().to_string(),
            since: Utc::now(),
        })
        .await
    }
}
