//! `user add|remove|list|token`: a stage's users. Removing a user removes everything they
//! own first (every version of their objects, their items, their label index and upload
//! counts), then the user: the account deletion a privacy law asks for, which can be run
//! again if it stops halfway.

use std::collections::HashMap;

use api_types::index;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use stack::Stage;
use thiserror::Error;

use crate::cloud::assets::{self, AssetsError};
use crate::cloud::aws::{self, AwsError, Clients, Identity, Target};
use crate::cloud::cognito::{self, Tokens, UserError, UserSummary};
use crate::cloud::error::chain;
use crate::cloud::stage::{self, Deployed, StageError};
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct UsersConfig {
    pub target: Target,
    pub stage: Stage,
}

#[derive(Debug, Error)]
pub enum UsersError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Objects(#[from] AssetsError),
    #[error("{action} on {table}: {reason}")]
    Table {
        action: &'static str,
        table: String,
        reason: String,
    },
}

/// A stage's deployed resources and the clients to reach them.
pub struct StageUsers {
    clients: Clients,
    identity: Identity,
    stage: Deployed,
}

impl std::fmt::Debug for StageUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageUsers")
            .field("pool", &self.stage.pool)
            .finish_non_exhaustive()
    }
}

/// What `user remove` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub email: String,
    /// Whether the user existed.
    pub existed: bool,
    pub object_versions: usize,
    pub items: usize,
    pub index_entries: usize,
}

impl StageUsers {
    pub async fn connect(cfg: &UsersConfig) -> Result<Self, UsersError> {
        let (clients, identity) = aws::connect(&cfg.target).await?;
        let stage = stage::read(&clients.cfn, &cfg.target, &cfg.stage).await?;
        Ok(Self::new(clients, identity, stage))
    }

    /// The users of a stage already read, reached with `clients`.
    pub fn new(clients: Clients, identity: Identity, stage: Deployed) -> Self {
        Self {
            clients,
            identity,
            stage,
        }
    }

    /// Adds `email` with a permanent password; whether they are new.
    pub async fn add(&self, email: &str, password: &str) -> Result<bool, UsersError> {
        Ok(cognito::add_user(&self.clients.cognito, &self.stage.pool, email, password).await?)
    }

    pub async fn list(&self) -> Result<Vec<UserSummary>, UsersError> {
        Ok(cognito::list_users(&self.clients.cognito, &self.stage.pool).await?)
    }

    /// Signs `email` in; the tokens.
    pub async fn token(&self, email: &str, password: &str) -> Result<Tokens, UsersError> {
        Ok(cognito::sign_in(&self.clients.cognito, &self.stage.pool, email, password).await?)
    }

    /// Removes `email` and everything they own. A user who is not there is not an error.
    pub async fn remove(
        &self,
        email: &str,
        progress: &dyn Progress,
    ) -> Result<Removed, UsersError> {
        let c = &self.clients.cognito;
        let pool = &self.stage.pool;
        let mut removed = Removed {
            email: email.to_string(),
            ..Removed::default()
        };
        let sub = match cognito::sub_of(c, pool, email).await {
            Ok(sub) => sub,
            Err(UserError::NoSuchUser(_)) => return Ok(removed),
            Err(e) => return Err(e.into()),
        };
        removed.existed = true;
        progress.step(&format!("removing the images of {email} (owner {sub})"));
        removed.object_versions = self.remove_objects(&sub).await?;
        removed.index_entries = self.remove_label_index(&sub).await?;
        removed.items = self.remove_items(&sub).await?;
        progress.step(&format!(
            "removed {} object versions, {} items and {} label index entries; removing the user",
            removed.object_versions, removed.items, removed.index_entries
        ));
        cognito::remove_user(c, pool, email).await?;
        Ok(removed)
    }

    async fn remove_objects(&self, sub: &str) -> Result<usize, UsersError> {
        let mut n = 0;
        for prefix in [stack::app::UPLOAD_PREFIX, stack::app::THUMBNAIL_PREFIX] {
            n += assets::delete_prefix(
                &self.clients.s3,
                &self.stage.bucket,
                &self.identity.account,
                &format!("{prefix}{sub}/"),
            )
            .await?;
        }
        Ok(n)
    }

    /// Every key of one partition of `table` (`partition` named `pk`).
    async fn keys_of(
        &self,
        table: &str,
        (pk, sk): (&str, &str),
        partition: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, UsersError> {
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .clients
                .dynamodb
                .query()
                .table_name(table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", pk)
                .expression_attribute_names("#sk", sk)
                .expression_attribute_values(":pk", AttributeValue::S(partition.to_string()))
                .projection_expression("#pk, #sk")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| UsersError::Table {
                    action: "Query",
                    table: table.to_string(),
                    reason: chain(&e),
                })?;
            keys.extend(out.items().iter().cloned());
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(keys);
            }
        }
    }

    async fn delete_keys(
        &self,
        table: &str,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<usize, UsersError> {
        let n = keys.len();
        for key in keys {
            self.clients
                .dynamodb
                .delete_item()
                .table_name(table)
                .set_key(Some(key))
                .send()
                .await
                .map_err(|e| UsersError::Table {
                    action: "DeleteItem",
                    table: table.to_string(),
                    reason: chain(&e),
                })?;
        }
        Ok(n)
    }

    /// The user's label entries (one partition per label, named by their counts), counts and
    /// upload counts of the day.
    async fn remove_label_index(&self, sub: &str) -> Result<usize, UsersError> {
        let table = &self.stage.labels_table;
        let keys = (index::PARTITION_KEY, index::SORT_KEY);
        let uploads = self
            .keys_of(table, keys, &index::uploads_partition(sub))
            .await?;
        let mut n = self.delete_keys(table, uploads).await?;
        let counts = self
            .keys_of(table, keys, &index::counts_partition(sub))
            .await?;
        for count in &counts {
            let Some(label) = count.get(index::SORT_KEY).and_then(|v| v.as_s().ok()) else {
                continue;
            };
            let entries = self
                .keys_of(table, keys, &index::label_partition(sub, label))
                .await?;
            n += self.delete_keys(table, entries).await?;
        }
        n += self.delete_keys(table, counts).await?;
        Ok(n)
    }

    async fn remove_items(&self, sub: &str) -> Result<usize, UsersError> {
        let table = &self.stage.table;
        let keys = self
            .keys_of(table, (index::OWNER, index::IMAGE_ID), sub)
            .await?;
        self.delete_keys(table, keys).await
    }
}
