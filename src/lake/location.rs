//! The lake's location: a URL (local folder or `s3://bucket/prefix`) and the storage settings
//! that come with it from the environment.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use url::Url;

use crate::error::{Error, Result};

/// Where the lake lives, with the storage options needed to reach it.
///
/// The options hold credentials, so `Debug` prints only their names.
#[derive(Clone)]
pub struct LakeLocation {
    url: Url,
    options: HashMap<String, String>,
}

impl fmt::Debug for LakeLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LakeLocation")
            .field("url", &self.url.as_str())
            .field("option_names", &crate::secret::option_names(&self.options))
            .finish()
    }
}

impl LakeLocation {
    /// Parses a location: a local path (relative or absolute) or a URL with a scheme gamelake
    /// supports (`file://`, `s3://`, `s3a://`). S3 settings are read from the `AWS_*` variables.
    pub fn parse(location: &str) -> Result<Self> {
        Self::parse_with_options(location, HashMap::new())
    }

    /// Like [`LakeLocation::parse`], with storage options that take precedence over the
    /// environment (keys as the `AWS_*` variable names, e.g. `AWS_ENDPOINT_URL`).
    pub fn parse_with_options(location: &str, overrides: HashMap<String, String>) -> Result<Self> {
        let bad = |reason: &str| Error::LakeUrl {
            url: location.to_string(),
            reason: reason.to_string(),
        };
        if location.trim().is_empty() {
            return Err(bad(
                "it is empty; give a folder such as ./lake or a URL such as s3://bucket/lake",
            ));
        }
        let mut url = if location.contains("://") {
            Url::parse(location).map_err(|e| bad(&e.to_string()))?
        } else {
            let path = std::path::absolute(location).map_err(|e| bad(&e.to_string()))?;
            Url::from_directory_path(&path).map_err(|()| bad("not an absolute folder path"))?
        };
        match url.scheme() {
            "file" => {}
            "s3" | "s3a" => {
                if url.host_str().is_none_or(|h| h.len() < 3) {
                    return Err(bad(
                        "an S3 URL needs a bucket name of 3 or more characters: s3://bucket/prefix",
                    ));
                }
            }
            other => {
                return Err(bad(&format!(
                    "unsupported scheme '{other}://'; use a local folder or s3://bucket/prefix"
                )));
            }
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let options = if url.scheme() == "file" {
            HashMap::new()
        } else {
            let mut options = aws_options_from_env();
            options.extend(overrides);
            options
        };
        Ok(Self { url, options })
    }

    /// The lake's root URL, always ending in `/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether the lake is on the local file system.
    pub fn is_local(&self) -> bool {
        self.url.scheme() == "file"
    }

    /// Storage options for delta-rs and object_store (contains secrets: never log the values).
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The URL of a folder under the lake root (`path` relative, without leading `/`).
    pub fn join(&self, path: &str) -> Result<Url> {
        self.url.join(path).map_err(|e| Error::LakeUrl {
            url: format!("{}{}", self.url, path),
            reason: e.to_string(),
        })
    }

    /// Builds an object store rooted at the lake root: paths given to it are relative to the lake.
    pub fn object_store(&self) -> Result<Arc<dyn ObjectStore>> {
        if self.is_local() {
            let path = self.url.to_file_path().map_err(|()| Error::LakeUrl {
                url: self.url.to_string(),
                reason: "not a local path".into(),
            })?;
            std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            let store = LocalFileSystem::new_with_prefix(&path)?;
            return Ok(Arc::new(store));
        }
        let store = self.bucket_store()?;
        let prefix = self.url.path().trim_matches('/');
        if prefix.is_empty() {
            Ok(store)
        } else {
            Ok(Arc::new(object_store::prefix::PrefixStore::new(
                store,
                prefix.to_string(),
            )))
        }
    }

    /// For a lake on S3: the bucket's URL (`s3://bucket`) and a store over the whole bucket, as
    /// DataFusion's scans address files (by their full key). `None` for a local lake: DataFusion
    /// knows `file://` already.
    pub fn scan_store(&self) -> Result<Option<(Url, Arc<dyn ObjectStore>)>> {
        if self.is_local() {
            return Ok(None);
        }
        let root = format!(
            "{}://{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or_default()
        );
        let url = Url::parse(&root).map_err(|e| Error::LakeUrl {
            url: self.url.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some((url, self.bucket_store()?)))
    }

    /// A store over the lake's whole bucket (or the whole local file system) and the lake's
    /// prefix in it, so that two lakes in one store can copy between them server-side.
    pub fn root_store(&self) -> Result<(Arc<dyn ObjectStore>, object_store::path::Path)> {
        let prefix = object_store::path::Path::from_url_path(self.url.path()).map_err(|e| {
            Error::LakeUrl {
                url: self.url.to_string(),
                reason: e.to_string(),
            }
        })?;
        if self.is_local() {
            return Ok((Arc::new(LocalFileSystem::new()), prefix));
        }
        Ok((self.bucket_store()?, prefix))
    }

    /// Whether another lake lives in the same store (the same local file system, or the same
    /// bucket reached with the same settings), where objects can be copied without download.
    pub fn same_store(&self, other: &LakeLocation) -> bool {
        self.url.scheme() == other.url.scheme()
            && self.url.host_str() == other.url.host_str()
            && self.options == other.options
    }

    /// An S3 store over the lake's whole bucket, configured by the lake's options.
    fn bucket_store(&self) -> Result<Arc<dyn ObjectStore>> {
        let builder = self.s3_builder(object_store::ClientOptions::new());
        Ok(Arc::new(builder.build().map_err(|e| self.unreachable(&e))?))
    }

    /// An S3 builder for the lake's bucket: `client` first, then the lake's options (which set
    /// client options too, such as `AWS_ALLOW_HTTP`).
    fn s3_builder(&self, client: object_store::ClientOptions) -> AmazonS3Builder {
        let bucket = self.url.host_str().unwrap_or_default();
        let mut builder = AmazonS3Builder::new()
            .with_client_options(client)
            .with_bucket_name(bucket);
        for (key, value) in &self.options {
            if let Ok(config_key) = key.to_ascii_lowercase().parse() {
                builder = builder.with_config(config_key, value);
            }
        }
        builder
    }

    /// The header that makes this store refuse to replace an object: Aliyun OSS's
    /// `x-oss-forbid-overwrite` for an `*.aliyuncs.com` endpoint, or the header named by
    /// `GAMELAKE_FORBID_OVERWRITE_HEADER` for another store that has one.
    pub fn forbid_overwrite_header(&self) -> Option<String> {
        if let Ok(name) = std::env::var("GAMELAKE_FORBID_OVERWRITE_HEADER")
            && !name.trim().is_empty()
        {
            return Some(name.trim().to_ascii_lowercase());
        }
        self.endpoint()
            .is_some_and(|e| e.contains(".aliyuncs.com"))
            .then(|| "x-oss-forbid-overwrite".to_string())
    }

    /// The S3 endpoint the options name, if any (`AWS_ENDPOINT_URL`, or `AWS_ENDPOINT`).
    fn endpoint(&self) -> Option<&String> {
        self.options
            .iter()
            .find(|(k, _)| {
                let k = k.to_ascii_uppercase();
                k == "AWS_ENDPOINT_URL" || k == "AWS_ENDPOINT"
            })
            .map(|(_, v)| v)
    }

    /// For an S3 lake whose store has a no-overwrite header ([`Self::forbid_overwrite_header`]):
    /// a store rooted at the lake whose every request carries `header: true`, for commit files.
    /// `None` for a local lake or a store without such a header. Built once per lake: each is a
    /// client with its own connection pool.
    pub fn no_overwrite_store(&self) -> Result<Option<Arc<dyn ObjectStore>>> {
        let Some(header) = self.forbid_overwrite_header().filter(|_| !self.is_local()) else {
            return Ok(None);
        };
        let pairs = HashMap::from([(header.clone(), "true".to_string())]);
        let headers = object_store::HeaderMap::try_from(&pairs).map_err(|e| {
            Error::Invalid(format!("GAMELAKE_FORBID_OVERWRITE_HEADER={header}: {e}"))
        })?;
        let client = object_store::ClientOptions::new().with_default_headers(headers);
        let store = self
            .s3_builder(client)
            .build()
            .map_err(|e| self.unreachable(&e))?;
        let prefix = self.url.path().trim_matches('/').to_string();
        Ok(Some(Arc::new(object_store::prefix::PrefixStore::new(
            store, prefix,
        ))))
    }

    /// Turns a storage error on the lake root into an error that says what to check.
    pub fn unreachable(&self, err: &dyn std::error::Error) -> Error {
        let hint = if self.is_local() {
            "check that the folder exists and is readable/writable by this user".to_string()
        } else {
            match self.endpoint() {
                Some(ep) => format!(
                    "check AWS_ENDPOINT_URL={ep} (is the server up?), AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and AWS_ALLOW_HTTP=true for an http:// endpoint"
                ),
                None => "AWS_ENDPOINT_URL is not set, so AWS S3 itself is used; set AWS_ENDPOINT_URL for another S3-compatible store, and check AWS_REGION and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".to_string(),
            }
        };
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(inner) = source {
            let text = inner.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = inner.source();
        }
        Error::LakeUnreachable {
            url: self.url.to_string(),
            message,
            hint,
        }
    }
}

/// Collects the `AWS_*` variables that object_store and delta-rs understand.
fn aws_options_from_env() -> HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_directory_urls() {
        let loc = LakeLocation::parse("/tmp/some/lake").unwrap();
        assert_eq!(loc.url().as_str(), "file:///tmp/some/lake/");
        assert!(loc.is_local());
    }

    #[test]
    fn s3_urls_keep_bucket_and_prefix() {
        let loc = LakeLocation::parse("s3://bucket/lake").unwrap();
        assert_eq!(loc.url().as_str(), "s3://bucket/lake/");
        assert_eq!(
            loc.join("shop/orders/").unwrap().as_str(),
            "s3://bucket/lake/shop/orders/"
        );
    }

    #[test]
    fn bad_locations_say_why() {
        let err = LakeLocation::parse("gs://bucket/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported scheme"), "{err}");
        let err = LakeLocation::parse("s3://ab").unwrap_err().to_string();
        assert!(err.contains("3 or more"), "{err}");
    }

    #[test]
    fn an_oss_endpoint_gets_the_no_overwrite_header() {
        let oss = HashMap::from([(
            "AWS_ENDPOINT_URL".to_string(),
            "https://oss-cn-beijing.aliyuncs.com".to_string(),
        )]);
        let loc = LakeLocation::parse_with_options("s3://bucket/lake", oss).unwrap();
        assert_eq!(
            loc.forbid_overwrite_header().as_deref(),
            Some("x-oss-forbid-overwrite")
        );
        let minio = HashMap::from([(
            "AWS_ENDPOINT_URL".to_string(),
            "http://127.0.0.1:9000".to_string(),
        )]);
        let loc = LakeLocation::parse_with_options("s3://bucket/lake", minio).unwrap();
        assert_eq!(loc.forbid_overwrite_header(), None);
    }

    #[test]
    fn debug_hides_secret_values() {
        let mut loc = LakeLocation::parse("s3://bucket/lake").unwrap();
        loc.options
            .insert("AWS_SECRET_ACCESS_KEY".into(), "hunter2".into());
        let shown = format!("{loc:?}");
        assert!(shown.contains("AWS_SECRET_ACCESS_KEY"));
        assert!(!shown.contains("hunter2"));
    }
}
