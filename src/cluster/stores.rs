//! Object stores on the scheduler and executors, made when a plan first names them.
//!
//! A Ballista process does not know in advance which lakes its queries read; a plan names
//! `file://` or `s3://bucket`. DataFusion's default registry only knows stores registered
//! beforehand, so this one builds a store on first use: the local file system, or S3 with the
//! `AWS_*` settings of the process's environment (the same ones `--lake s3://…` uses).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use url::Url;

use crate::lake::LakeLocation;

/// Stores by `scheme://host`, made on first use.
#[derive(Debug, Default)]
pub struct LakeStores {
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

fn key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
}

impl ObjectStoreRegistry for LakeStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key(url), store)
    }

    fn get_store(&self, url: &Url) -> DFResult<Arc<dyn ObjectStore>> {
        let key = key(url);
        if let Some(store) = self
            .stores
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(store.clone());
        }
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => Arc::new(LocalFileSystem::new()),
            "s3" | "s3a" => LakeLocation::parse(&format!("{key}/"))
                .and_then(|location| location.object_store())
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
            other => {
                return Err(DataFusionError::Configuration(format!(
                    "no object store for {other}:// URLs; the cluster reads file:// and s3:// lakes"
                )));
            }
        };
        self.stores
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, store.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_made_once_per_bucket() {
        let stores = LakeStores::default();
        let a = stores
            .get_store(&Url::parse("file:///tmp/x").unwrap())
            .unwrap();
        let b = stores.get_store(&Url::parse("file:///").unwrap()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let err = stores
            .get_store(&Url::parse("gs://bucket/").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("gs://"), "{err}");
    }
}
