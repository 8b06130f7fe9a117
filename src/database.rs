//! Where trawl's database is: the configured URL, or the embedded cluster under trawl's
//! home, started on demand. Every command that needs the database comes through
//! [`open`], so `trawl db stop` followed by any such command starts the cluster again.

use std::time::Duration;

use crate::cluster::{self, Cluster, ClusterError};
use crate::config::Config;
use crate::setup;
use crate::store::{self, PoolSettings, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The embedded cluster of this configuration.
pub fn cluster(config: &Config) -> Cluster {
    Cluster::new(&config.home, setup::pg_bin(config))
}

pub fn pool_settings(config: &Config) -> PoolSettings {
    PoolSettings {
        max_connections: config.database.max_connections,
        connect_timeout: Duration::from_secs(config.database.connect_timeout_secs),
    }
}

/// Starts the embedded cluster when it is the configured database and not running, and
/// makes sure trawl's database exists in it. Returns the URL to connect to.
pub async fn ensure_available(config: &Config) -> Result<String, DatabaseError> {
    if !config.uses_embedded_database() {
        return Ok(config.database.url.clone());
    }
    let c = cluster(config);
    let started = {
        let c = c.clone();
        tokio::task::spawn_blocking(move || c.start())
            .await
            .expect("cluster start does not panic")?
    };
    if let cluster::Started::Started { initialised, .. } = started {
        tracing::info!(initialised, data = %c.data_dir().display(), "started the embedded PostgreSQL cluster");
    }
    store::admin::create_database_if_missing(&c.url_for("postgres"), cluster::DB_NAME).await?;
    Ok(c.url())
}

/// Opens the configured database, migrated to this build's schema.
pub async fn open(config: &Config) -> Result<Store, DatabaseError> {
    let url = ensure_available(config).await?;
    Ok(Store::open(&url, &pool_settings(config)).await?)
}
