//! Where a database lives: a local directory (the default), or an S3
//! bucket for its Parquet files and manifests with a local directory for
//! the write-ahead log and the lock file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use object_store::ObjectStore;

use crate::config::S3Section;

/// The default data directory.
const DEFAULT_DATA: &str = "./lookout-data";
/// The default local directory of a database on S3.
const DEFAULT_WAL_DIR: &str = "./lookout-wal";

/// A database's location, from `--data` (or `data =`) and `--wal-dir`.
#[derive(Debug, Clone)]
pub(crate) struct DataLocation {
    /// The local directory: the whole database, or on S3 its WAL and lock.
    pub(crate) local: PathBuf,
    /// `s3://bucket/prefix` when the files live on S3.
    pub(crate) s3: Option<String>,
}

impl std::fmt::Display for DataLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.s3 {
            Some(url) => write!(f, "{url} (write-ahead log in {})", self.local.display()),
            None => write!(f, "{}", self.local.display()),
        }
    }
}

impl DataLocation {
    /// Reads `data` (a directory or `s3://bucket/prefix`) and the local
    /// directory given for the WAL.
    pub(crate) fn resolve(data: Option<&Path>, wal_dir: Option<&Path>) -> anyhow::Result<Self> {
        let data = data.unwrap_or(Path::new(DEFAULT_DATA));
        let text = data.to_string_lossy();
        if let Some(rest) = text.strip_prefix("s3://") {
            anyhow::ensure!(
                !rest.split('/').next().unwrap_or("").is_empty(),
                "data {text:?}: an S3 location names its bucket: s3://bucket/prefix"
            );
            return Ok(DataLocation {
                local: wal_dir.unwrap_or(Path::new(DEFAULT_WAL_DIR)).to_path_buf(),
                s3: Some(text.trim_end_matches('/').to_string()),
            });
        }
        anyhow::ensure!(
            !text.contains("://"),
            "data {text:?}: only local directories and s3:// locations are supported"
        );
        anyhow::ensure!(
            wal_dir.is_none(),
            "wal_dir applies to a database on S3; a local database keeps its WAL in its directory"
        );
        Ok(DataLocation {
            local: data.to_path_buf(),
            s3: None,
        })
    }

    /// Whether a one-shot command may open it without `--create`: a local
    /// directory must exist; a bucket is checked when it is opened.
    pub(crate) fn exists(&self) -> bool {
        self.s3.is_some() || self.local.exists()
    }

    /// The object store of an S3 location: credentials, region and endpoint
    /// from the usual `AWS_*` variables, then the `[s3]` section. Commits
    /// use conditional puts (`If-None-Match`, `If-Match`), which S3,
    /// MinIO, R2 and moto enforce.
    pub(crate) fn object_store(
        &self,
        section: &S3Section,
    ) -> anyhow::Result<Option<Arc<dyn ObjectStore>>> {
        use object_store::aws::AmazonS3Builder;
        use object_store::prefix::PrefixStore;
        let Some(url) = &self.s3 else {
            return Ok(None);
        };
        let rest = url.trim_start_matches("s3://");
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &section.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &section.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &section.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &section.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(allow) = section.allow_http {
            builder = builder.with_allow_http(allow);
        }
        let s3 = builder
            .build()
            .with_context(|| format!("configuring the S3 store {url}"))?;
        Ok(Some(if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_local_and_an_s3_url_keeps_its_wal_apart() {
        let local = DataLocation::resolve(Some(Path::new("/var/lookout")), None).unwrap();
        assert_eq!(
            (local.local.as_path(), local.s3),
            (Path::new("/var/lookout"), None)
        );
        let s3 = DataLocation::resolve(
            Some(Path::new("s3://bucket/team/lookout/")),
            Some(Path::new("/var/wal")),
        )
        .unwrap();
        assert_eq!(s3.s3.as_deref(), Some("s3://bucket/team/lookout"));
        assert_eq!(s3.local, Path::new("/var/wal"));
        let default = DataLocation::resolve(Some(Path::new("s3://bucket")), None).unwrap();
        assert_eq!(default.local, Path::new(DEFAULT_WAL_DIR));
        assert!(DataLocation::resolve(Some(Path::new("s3:///x")), None).is_err());
        assert!(DataLocation::resolve(Some(Path::new("gs://b/x")), None).is_err());
        assert!(
            DataLocation::resolve(Some(Path::new("/var/lookout")), Some(Path::new("/w"))).is_err()
        );
    }
}
