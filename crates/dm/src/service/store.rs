//! The service's SQLite store: workflows, processing jobs and catalog runs, each kept as its
//! JSON document with the columns needed to find it.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::{ExperimentRun, ProcessingJob, Workflow};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored document could not be read or written as JSON.
    #[error("stored document: {0}")]
    Json(#[from] serde_json::Error),
}

/// The SQLite database of one service.
#[derive(Debug)]
pub(crate) struct Store {
    connection: Mutex<Connection>,
}

impl Store {
    /// Open (and create when new) the database file.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path)?;
        connection.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS workflows (
                 owner TEXT NOT NULL, name TEXT NOT NULL, document TEXT NOT NULL,
                 PRIMARY KEY (owner, name));
             CREATE TABLE IF NOT EXISTS jobs (
                 id TEXT PRIMARY KEY, owner TEXT NOT NULL, submission_time REAL NOT NULL,
                 status TEXT NOT NULL, document TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS runs (
                 experiment TEXT NOT NULL, run_name TEXT NOT NULL, document TEXT NOT NULL,
                 PRIMARY KEY (experiment, run_name));",
        )?;
        Ok(Store {
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn workflow(&self, owner: &str, name: &str) -> Result<Option<Workflow>, StoreError> {
        let document: Option<String> = self
            .connection()
            .query_row(
                "SELECT document FROM workflows WHERE owner = ?1 AND name = ?2",
                params![owner, name],
                |row| row.get(0),
            )
            .optional()?;
        Ok(document
            .map(|text| serde_json::from_str(&text))
            .transpose()?)
    }

    pub(crate) fn workflows(&self, owner: &str) -> Result<Vec<Workflow>, StoreError> {
        let connection = self.connection();
        let mut statement =
            connection.prepare("SELECT document FROM workflows WHERE owner = ?1 ORDER BY name")?;
        let documents = statement
            .query_map(params![owner], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        documents
            .iter()
            .map(|text| Ok(serde_json::from_str(text)?))
            .collect()
    }

    pub(crate) fn put_workflow(&self, workflow: &Workflow) -> Result<(), StoreError> {
        self.connection().execute(
            "INSERT OR REPLACE INTO workflows (owner, name, document) VALUES (?1, ?2, ?3)",
            params![
                workflow.owner,
                workflow.name,
                serde_json::to_string(workflow)?
            ],
        )?;
        Ok(())
    }

    pub(crate) fn job(&self, id: &str) -> Result<Option<ProcessingJob>, StoreError> {
        let document: Option<String> = self
            .connection()
            .query_row(
                "SELECT document FROM jobs WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(document
            .map(|text| serde_json::from_str(&text))
            .transpose()?)
    }

    /// The owner's jobs, newest first.
    pub(crate) fn jobs(&self, owner: &str) -> Result<Vec<ProcessingJob>, StoreError> {
        self.jobs_where("owner = ?1", owner)
    }

    /// Jobs with the given status, of any owner.
    pub(crate) fn jobs_with_status(&self, status: &str) -> Result<Vec<ProcessingJob>, StoreError> {
        self.jobs_where("status = ?1", status)
    }

    fn jobs_where(&self, condition: &str, value: &str) -> Result<Vec<ProcessingJob>, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare(&format!(
            "SELECT document FROM jobs WHERE {condition} ORDER BY submission_time DESC, id"
        ))?;
        let documents = statement
            .query_map(params![value], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        documents
            .iter()
            .map(|text| Ok(serde_json::from_str(text)?))
            .collect()
    }

    pub(crate) fn put_job(&self, job: &ProcessingJob) -> Result<(), StoreError> {
        self.connection().execute(
            "INSERT OR REPLACE INTO jobs (id, owner, submission_time, status, document)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                job.id,
                job.owner,
                job.submission_time.unwrap_or_default(),
                job.status.as_str(),
                serde_json::to_string(job)?
            ],
        )?;
        Ok(())
    }

    /// Add a run; false when the experiment already has a run of that id.
    pub(crate) fn add_run(&self, run: &ExperimentRun) -> Result<bool, StoreError> {
        let inserted = self.connection().execute(
            "INSERT OR IGNORE INTO runs (experiment, run_name, document) VALUES (?1, ?2, ?3)",
            params![run.experiment_name, run.run_id, serde_json::to_string(run)?],
        )?;
        Ok(inserted == 1)
    }

    pub(crate) fn runs(&self, experiment: &str) -> Result<Vec<ExperimentRun>, StoreError> {
        let connection = self.connection();
        let mut statement =
            connection.prepare("SELECT document FROM runs WHERE experiment = ?1 ORDER BY rowid")?;
        let documents = statement
            .query_map(params![experiment], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        documents
            .iter()
            .map(|text| Ok(serde_json::from_str(text)?))
            .collect()
    }
}
