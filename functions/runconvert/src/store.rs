//! The SQLite adapter: [`JobStore`] and [`KeyStore`] over one database file.
//!
//! One connection behind a mutex, used from blocking threads; WAL mode so the `keys`
//! command can write while a server runs.

use async_trait::async_trait;
use runconvert_core::model::{Job, JobStatus, Task, TaskResult, TaskStatus, User};
use runconvert_core::ports::{JobFilter, JobStore, KeyStore, PortError, PortResult, TaskFilter, TaskTransition};
use runconvert_core::{new_id, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::{Arc, Mutex};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    tag TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs(user_id, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    code TEXT,
    percent INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    expires_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    -- the task's credentials, sealed (see Sealer); NULL once the task has ended
    secrets TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job_id, position);
CREATE INDEX IF NOT EXISTS tasks_by_user ON tasks(user_id, created_at);
";

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    sealer: Arc<Sealer>,
}

/// Seals the credentials of tasks (import/s3 keys, SFTP passwords...) before they are
/// written: the `payload` column holds the fields with secrets redacted, the `secrets`
/// column the secret fields encrypted with XChaCha20-Poly1305 under a key of this server
/// (derived from its signing key), so a copy of the database alone reveals none. They are
/// erased when the task ends.
pub struct Sealer {
    cipher: chacha20poly1305::XChaCha20Poly1305,
}

impl Sealer {
    pub fn new(key: [u8; 32]) -> Self {
        use chacha20poly1305::KeyInit;
        Sealer {
            cipher: chacha20poly1305::XChaCha20Poly1305::new(&key.into()),
        }
    }

    fn seal(&self, plain: &[u8]) -> String {
        use base64::Engine as _;
        use chacha20poly1305::aead::{Aead, AeadCore, OsRng};
        let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, plain)
            .expect("sealing in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    fn open(&self, sealed: &str) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        use chacha20poly1305::aead::Aead;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|e| format!("sealed secrets: {e}"))?;
        if raw.len() < 24 {
            return Err("sealed secrets are too short".into());
        }
        let (nonce, body) = raw.split_at(24);
        self.cipher
            .decrypt(nonce.into(), body)
            .map_err(|_| "sealed secrets do not open with this server's key".to_string())
    }
}

/// A task's stored payload (secrets redacted) and its sealed secrets, if it has any.
fn stored_task(t: &Task, sealer: &Sealer) -> (String, Option<String>) {
    let mut payload = t.stored_payload();
    let fields = payload["fields"].as_object_mut().expect("stored payload has fields");
    let mut secrets = serde_json::Map::new();
    for name in t.operation.secret_fields() {
        if let Some(v) = fields.get_mut(*name) {
            if !v.is_null() {
                secrets.insert(name.to_string(), v.take());
                *v = serde_json::Value::String(runconvert_core::ops::REDACTED.to_string());
            }
        }
    }
    let sealed = (!secrets.is_empty()).then(|| sealer.seal(serde_json::Value::Object(secrets).to_string().as_bytes()));
    (payload.to_string(), sealed)
}

fn err(e: impl std::fmt::Display) -> PortError {
    PortError::new(format!("database: {e}"))
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

const TASK_COLUMNS: &str = "id, job_id, name, payload, depends_on, status, message, code, percent, \
    created_at, started_at, ended_at, expires_at, attempts, result, secrets";

fn task_from_row(row: &Row, sealer: &Sealer) -> rusqlite::Result<Task> {
    let conv =
        |i: usize, e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into());
    let payload: String = row.get(3)?;
    let mut payload: serde_json::Value = serde_json::from_str(&payload).map_err(|e| conv(3, e.to_string()))?;
    let sealed: Option<String> = row.get(15)?;
    if let Some(sealed) = sealed {
        let plain = sealer.open(&sealed).map_err(|e| conv(15, e))?;
        let secrets: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&plain).map_err(|e| conv(15, e.to_string()))?;
        if let Some(fields) = payload["fields"].as_object_mut() {
            fields.extend(secrets);
        }
    }
    let (operation, input, ignore_error, timeout) = Task::parse_stored_payload(&payload).map_err(|e| conv(3, e))?;
    let depends: String = row.get(4)?;
    let status: String = row.get(5)?;
    let result: Option<String> = row.get(14)?;
    Ok(Task {
        id: row.get(0)?,
        job_id: row.get(1)?,
        name: row.get(2)?,
        operation,
        input,
        ignore_error,
        timeout,
        depends_on_task_ids: serde_json::from_str(&depends).map_err(|e| conv(4, e.to_string()))?,
        status: TaskStatus::parse(&status).ok_or_else(|| conv(5, format!("bad status {status}")))?,
        message: row.get(6)?,
        code: row.get(7)?,
        percent: row.get::<_, i64>(8)?.clamp(0, 100) as u8,
        created_at: Timestamp(row.get(9)?),
        started_at: ts(row.get(10)?),
        ended_at: ts(row.get(11)?),
        expires_at: ts(row.get(12)?),
        attempts: row.get::<_, i64>(13)? as u32,
        result: match result {
            Some(r) => Some(serde_json::from_str::<TaskResult>(&r).map_err(|e| conv(14, e.to_string()))?),
            None => None,
        },
    })
}

fn job_from_row(row: &Row) -> rusqlite::Result<Job> {
    let status: String = row.get(3)?;
    Ok(Job {
        id: row.get(0)?,
        user_id: row.get(1)?,
        tag: row.get(2)?,
        status: JobStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                format!("bad status {status}").into(),
            )
        })?,
        created_at: Timestamp(row.get(4)?),
        started_at: ts(row.get(5)?),
        ended_at: ts(row.get(6)?),
        tasks: Vec::new(),
    })
}

const JOB_COLUMNS: &str = "id, user_id, tag, status, created_at, started_at, ended_at";

fn load_tasks(conn: &Connection, sealer: &Sealer, job: &mut Job) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = ?1 ORDER BY position"
    ))?;
    job.tasks = stmt
        .query_map([&job.id], |r| task_from_row(r, sealer))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(())
}

fn result_json(r: &Option<TaskResult>) -> Option<String> {
    r.as_ref()
        .map(|r| serde_json::to_string(r).expect("a task result serialises"))
}

/// A new API key: `rc_` and 40 random letters and digits.
pub fn generate_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut key = String::from("rc_");
    while key.len() < 43 {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf).expect("the OS has randomness");
        // Rejection sampling keeps every character equally likely.
        for b in buf {
            if (b as usize) < ALPHABET.len() * 4 && key.len() < 43 {
                key.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    key
}

impl SqliteStore {
    pub fn open(path: &Path, sealer: Sealer) -> Result<Self, PortError> {
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // Databases made before secrets were sealed lack the column.
        let has_secrets: bool = conn
            .query_row(
                "SELECT 1 FROM pragma_table_info('tasks') WHERE name = 'secrets'",
                [],
                |_| Ok(true),
            )
            .optional()
            .map_err(err)?
            .unwrap_or(false);
        if !has_secrets {
            conn.execute_batch("ALTER TABLE tasks ADD COLUMN secrets TEXT")
                .map_err(err)?;
        }
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            sealer: Arc::new(sealer),
        })
    }

    /// Runs `f` on the connection, on a blocking thread.
    async fn with<T, F>(&self, f: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard).map_err(err)
        })
        .await
        .map_err(err)?
    }

    /// Makes a user with one API key; returns the key (shown once, stored only as a hash).
    pub fn create_user_with_key(&self, name: &str) -> PortResult<(User, String)> {
        let key = generate_key();
        let user = User {
            id: new_id(),
            name: name.to_string(),
        };
        let now = Timestamp::now().millis();
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO users (id, name, created_at) VALUES (?1, ?2, ?3)",
            params![user.id, user.name, now],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO api_keys (key_hash, user_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![runconvert_http::hash_key(&key), user.id, name, now],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok((user, key))
    }

    pub fn key_count(&self) -> PortResult<u64> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row("SELECT COUNT(*) FROM api_keys", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(err)
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn user_for_key_hash(&self, key_hash: &str) -> PortResult<Option<User>> {
        let hash = key_hash.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT u.id, u.name FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = ?1",
                [hash],
                |r| {
                    Ok(User {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    })
                },
            )
            .optional()
        })
        .await
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, job: &Job) -> PortResult<()> {
        let job = job.clone();
        let stored: Vec<(String, Option<String>)> = job.tasks.iter().map(|t| stored_task(t, &self.sealer)).collect();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                &format!("INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    job.id,
                    job.user_id,
                    job.tag,
                    job.status.as_str(),
                    job.created_at.millis(),
                    job.started_at.map(|t| t.millis()),
                    job.ended_at.map(|t| t.millis())
                ],
            )?;
            for (pos, t) in job.tasks.iter().enumerate() {
                tx.execute(
                    "INSERT INTO tasks (id, job_id, user_id, position, name, payload, depends_on, status, message, code, \
                     percent, created_at, started_at, ended_at, expires_at, attempts, result, secrets) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                    params![
                        t.id,
                        job.id,
                        job.user_id,
                        pos as i64,
                        t.name,
                        stored[pos].0,
                        serde_json::to_string(&t.depends_on_task_ids).expect("ids serialise"),
                        t.status.as_str(),
                        t.message,
                        t.code,
                        t.percent as i64,
                        t.created_at.millis(),
                        t.started_at.map(|x| x.millis()),
                        t.ended_at.map(|x| x.millis()),
                        t.expires_at.map(|x| x.millis()),
                        t.attempts as i64,
                        result_json(&t.result),
                        stored[pos].1,
                    ],
                )?;
            }
            tx.commit()
        })
        .await
    }

    async fn get_job(&self, user_id: Option<&str>, job_id: &str) -> PortResult<Option<Job>> {
        let (user, id) = (user_id.map(String::from), job_id.to_string());
        let sealer = self.sealer.clone();
        self.with(move |c| {
            let job = c
                .query_row(
                    &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2)"),
                    params![id, user],
                    job_from_row,
                )
                .optional()?;
            match job {
                Some(mut job) => {
                    load_tasks(c, &sealer, &mut job)?;
                    Ok(Some(job))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_jobs(&self, user_id: &str, filter: &JobFilter) -> PortResult<(Vec<Job>, u64)> {
        let user = user_id.to_string();
        let status = filter.status.map(|s| s.as_str());
        let (limit, offset) = (filter.page.limit as i64, filter.page.offset as i64);
        let sealer = self.sealer.clone();
        self.with(move |c| {
            let count: i64 = c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2)",
                params![user, status],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2) \
                 ORDER BY created_at DESC, rowid DESC LIMIT ?3 OFFSET ?4"
            ))?;
            let mut jobs: Vec<Job> = stmt
                .query_map(params![user, status, limit, offset], job_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            drop(stmt);
            for job in &mut jobs {
                load_tasks(c, &sealer, job)?;
            }
            Ok((jobs, count as u64))
        })
        .await
    }

    async fn delete_job(&self, user_id: &str, job_id: &str) -> PortResult<bool> {
        let (user, id) = (user_id.to_string(), job_id.to_string());
        self.with(move |c| {
            let tx = c.transaction()?;
            let owned: bool = tx
                .query_row(
                    "SELECT 1 FROM jobs WHERE id = ?1 AND user_id = ?2",
                    params![id, user],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if owned {
                tx.execute("DELETE FROM tasks WHERE job_id = ?1", [&id])?;
                tx.execute("DELETE FROM jobs WHERE id = ?1", [&id])?;
            }
            tx.commit()?;
            Ok(owned)
        })
        .await
    }

    async fn get_task(&self, user_id: Option<&str>, task_id: &str) -> PortResult<Option<Task>> {
        let (user, id) = (user_id.map(String::from), task_id.to_string());
        let sealer = self.sealer.clone();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2)"),
                params![id, user],
                |r| task_from_row(r, &sealer),
            )
            .optional()
        })
        .await
    }

    async fn list_tasks(&self, user_id: &str, filter: &TaskFilter) -> PortResult<(Vec<Task>, u64)> {
        let user = user_id.to_string();
        let job = filter.job_id.clone();
        let status = filter.status.map(|s| s.as_str());
        let (limit, offset) = (filter.page.limit as i64, filter.page.offset as i64);
        let sealer = self.sealer.clone();
        self.with(move |c| {
            let cond = "user_id = ?1 AND (?2 IS NULL OR job_id = ?2) AND (?3 IS NULL OR status = ?3)";
            let count: i64 =
                c.query_row(&format!("SELECT COUNT(*) FROM tasks WHERE {cond}"), params![user, job, status], |r| r.get(0))?;
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE {cond} ORDER BY created_at DESC, job_id, position LIMIT ?4 OFFSET ?5"
            ))?;
            let tasks = stmt
                .query_map(params![user, job, status, limit, offset], |r| task_from_row(r, &sealer))?
                .collect::<rusqlite::Result<_>>()?;
            Ok((tasks, count as u64))
        })
        .await
    }

    async fn transition_task(&self, t: &TaskTransition) -> PortResult<bool> {
        let t = t.clone();
        self.with(move |c| {
            let to = t.to.as_str();
            let n = c.execute(
                "UPDATE tasks SET status = ?1, code = ?2, message = ?3, result = COALESCE(?4, result), \
                 started_at = CASE WHEN ?1 = 'processing' THEN ?5 ELSE started_at END, \
                 attempts = attempts + CASE WHEN ?1 = 'processing' THEN 1 ELSE 0 END, \
                 ended_at = CASE WHEN ?1 IN ('finished', 'failed') THEN ?5 ELSE ended_at END, \
                 percent = CASE WHEN ?1 = 'finished' THEN 100 ELSE percent END, \
                 secrets = CASE WHEN ?1 IN ('finished', 'failed') THEN NULL ELSE secrets END \
                 WHERE id = ?6 AND status = ?7",
                params![
                    to,
                    t.code,
                    t.message,
                    result_json(&t.result),
                    t.at.millis(),
                    t.task_id,
                    t.from.as_str()
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_task_percent(&self, task_id: &str, percent: u8) -> PortResult<()> {
        let id = task_id.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE tasks SET percent = ?1 WHERE id = ?2",
                params![percent.min(100) as i64, id],
            )
            .map(|_| ())
        })
        .await
    }

    async fn set_job_status(&self, job_id: &str, status: JobStatus, at: Timestamp) -> PortResult<bool> {
        let id = job_id.to_string();
        self.with(move |c| {
            let n = c.execute(
                "UPDATE jobs SET status = ?1, \
                 started_at = CASE WHEN ?1 = 'processing' AND started_at IS NULL THEN ?2 ELSE started_at END, \
                 ended_at = CASE WHEN ?1 IN ('completed', 'failed') THEN ?2 ELSE ended_at END \
                 WHERE id = ?3 AND status NOT IN ('completed', 'failed')",
                params![status.as_str(), at.millis(), id],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn unfinished_jobs(&self) -> PortResult<Vec<String>> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id FROM jobs WHERE status IN ('created', 'processing') ORDER BY created_at")?;
            let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            Ok(ids)
        })
        .await
    }

    async fn jobs_ended_before(&self, before: Timestamp) -> PortResult<Vec<(String, String)>> {
        self.with(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT id, user_id FROM jobs WHERE ended_at IS NOT NULL AND ended_at < ?1")?;
            let ids = stmt
                .query_map([before.millis()], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(ids)
        })
        .await
    }

    async fn requeue_task(&self, task_id: &str) -> PortResult<bool> {
        let id = task_id.to_string();
        self.with(move |c| {
            let n = c.execute(
                "UPDATE tasks SET status = 'waiting', started_at = NULL WHERE id = ?1 AND status = 'processing'",
                [id],
            )?;
            Ok(n == 1)
        })
        .await
    }
}
