//! The SQLite adapter: [`JobStore`] and [`KeyStore`] over one database file.
//!
//! One connection behind a mutex, used from blocking threads; WAL mode so the `keys`
//! command can write while a server runs.

use async_trait::async_trait;
use runconvert_core::keys::{key_id, key_prefix, ApiKey, Scopes};
use runconvert_core::model::{Job, JobStatus, Task, TaskResult, TaskStatus, User};
use runconvert_core::ports::{
    Event, EventName, JobFilter, JobStore, KeyStore, PortError, PortResult, TaskFilter, TaskTransition, WebhookStore,
};
use runconvert_core::secrets::Sealer;
use runconvert_core::webhooks::{self, Delivery, DeliveryStatus, Signing, Webhook};
use runconvert_core::{new_id, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::{Arc, Mutex};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- requests a minute; NULL: the server's default
    rate_limit INTEGER,
    -- NULL: unlimited
    credits INTEGER
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- space-separated; NULL: every scope (a key made before scopes)
    scopes TEXT,
    -- the key's first characters
    prefix TEXT,
    last_used_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_by_user ON api_keys(user_id, created_at);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    tag TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    webhook_url TEXT,
    -- sealed
    webhook_secret TEXT,
    -- how deliveries to webhook_url are signed and shaped: runconvert or cloudconvert
    webhook_signing TEXT
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
-- Webhook subscriptions; `secret` is sealed.
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    endpoint_url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    disabled_at INTEGER,
    disabled_reason TEXT,
    signing TEXT
);
CREATE INDEX IF NOT EXISTS webhooks_by_user ON webhooks(user_id);
-- The outbox: every event, written in the same transaction as the change that caused it.
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
-- One row per (event, endpoint): a subscription's, or the job's own webhook_url (webhook_id NULL).
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    event_seq INTEGER NOT NULL REFERENCES events(seq),
    webhook_id TEXT,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    signing TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_by_job ON deliveries(job_id, event_seq);
CREATE INDEX IF NOT EXISTS deliveries_by_webhook ON deliveries(webhook_id, event_seq);
CREATE INDEX IF NOT EXISTS tasks_by_user ON tasks(user_id, created_at);
";

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    sealer: Arc<Sealer>,
}

/// Writes `event` to the outbox and a pending delivery for each subscription of the
/// job's owner that wants it, and for the job's own webhook URL (`job_url`: URL and sealed
/// secret) when the event is one it gets. Called inside the transaction of the change.
fn record_event(tx: &Connection, event: &Event, job_url: Option<(&str, &str)>, now: i64) -> rusqlite::Result<()> {
    let name = event.name();
    let (job_id, user_id) = match event {
        Event::Job(_, j) => (j.id.clone(), j.user_id.clone()),
        Event::Task(_, t) => {
            let user: String = tx.query_row("SELECT user_id FROM jobs WHERE id = ?1", [&t.job_id], |r| r.get(0))?;
            (t.job_id.clone(), user)
        }
    };
    tx.execute(
        "INSERT INTO events (id, job_id, user_id, name, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            new_id(),
            job_id,
            user_id,
            name.as_str(),
            webhooks::body(event).to_string(),
            now
        ],
    )?;
    let seq = tx.last_insert_rowid();
    // (subscription, url, sealed secret, signing)
    let mut targets: Vec<(Option<String>, String, String, Option<String>)> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, endpoint_url, events, secret, signing FROM webhooks WHERE user_id = ?1 \
             AND disabled_at IS NULL ORDER BY created_at",
        )?;
        let rows = stmt.query_map([&user_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        for row in rows {
            let (id, url, events, secret, signing) = row?;
            let events: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
            if events.iter().any(|e| e == name.as_str()) {
                targets.push((Some(id), url, secret, signing));
            }
        }
    }
    if let (Some((url, secret)), Event::Job(_, job)) = (job_url.filter(|_| webhooks::job_url_wants(name)), event) {
        let signing = job.webhook_signing.as_str().to_string();
        targets.push((None, url.to_string(), secret.to_string(), Some(signing)));
    }
    for (webhook_id, url, secret, signing) in targets {
        tx.execute(
            "INSERT INTO deliveries (id, event_seq, webhook_id, job_id, url, secret, signing, status, attempts, \
             next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8)",
            params![new_id(), seq, webhook_id, job_id, url, secret, signing, now],
        )?;
    }
    Ok(())
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
        runconvert_core::secrets::merge_secrets(&mut payload, &sealed, sealer).map_err(|e| conv(15, e))?;
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

fn job_from_row(row: &Row, sealer: &Sealer) -> rusqlite::Result<Job> {
    let status: String = row.get(3)?;
    let sealed: Option<String> = row.get(8)?;
    let webhook_secret =
        match sealed {
            Some(s) => Some(
                String::from_utf8(sealer.open(&s).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, e.into())
                })?)
                .unwrap_or_default(),
            ),
            None => None,
        };
    Ok(Job {
        id: row.get(0)?,
        user_id: row.get(1)?,
        tag: row.get(2)?,
        webhook_url: row.get(7)?,
        webhook_secret,
        webhook_signing: Signing::parse(row.get::<_, Option<String>>(9)?.as_deref()),
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

const JOB_COLUMNS: &str =
    "id, user_id, tag, status, created_at, started_at, ended_at, webhook_url, webhook_secret, webhook_signing";

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

impl SqliteStore {
    pub fn open(path: &Path, sealer: Sealer) -> Result<Self, PortError> {
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // Columns that databases of earlier versions lack.
        for (table, column, kind) in [
            ("tasks", "secrets", "TEXT"),
            ("jobs", "webhook_url", "TEXT"),
            ("jobs", "webhook_secret", "TEXT"),
            ("jobs", "webhook_signing", "TEXT"),
            ("webhooks", "signing", "TEXT"),
            ("deliveries", "signing", "TEXT"),
            ("users", "rate_limit", "INTEGER"),
            ("users", "credits", "INTEGER"),
            ("api_keys", "scopes", "TEXT"),
            ("api_keys", "prefix", "TEXT"),
            ("api_keys", "last_used_at", "INTEGER"),
        ] {
            let present: bool = conn
                .query_row(
                    &format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"),
                    [],
                    |_| Ok(true),
                )
                .optional()
                .map_err(err)?
                .unwrap_or(false);
            if !present {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                    .map_err(err)?;
            }
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
    pub fn create_user_with_key(
        &self,
        name: &str,
        rate_limit: Option<u32>,
        credits: Option<i64>,
    ) -> PortResult<(User, String)> {
        let key = runconvert_http::generate_key();
        let user = User {
            id: new_id(),
            name: name.to_string(),
            rate_limit,
            credits,
        };
        let now = Timestamp::now().millis();
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(err)?;
        insert_user(&tx, &user, now).map_err(err)?;
        tx.execute(
            "INSERT INTO api_keys (key_hash, user_id, name, created_at, prefix) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![runconvert_http::hash_key(&key), user.id, name, now, key_prefix(&key)],
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

fn insert_user(c: &rusqlite::Connection, user: &User, now_ms: i64) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT INTO users (id, name, created_at, rate_limit, credits) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user.id, user.name, now_ms, user.rate_limit, user.credits],
    )
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_user(&self, user: &User) -> PortResult<()> {
        let user = user.clone();
        self.with(move |c| insert_user(c, &user, Timestamp::now().millis()).map(|_| ()))
            .await
    }

    async fn key_by_hash(&self, key_hash: &str) -> PortResult<Option<(User, ApiKey)>> {
        let hash = key_hash.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT u.id, u.name, u.rate_limit, u.credits, k.key_hash, k.name, k.prefix, k.scopes, \
                 k.created_at, k.last_used_at FROM api_keys k JOIN users u ON u.id = k.user_id \
                 WHERE k.key_hash = ?1",
                [hash],
                |r| {
                    let user = user_from_row(r)?;
                    let key = key_from_row(r, 4, &user.id)?;
                    Ok((user, key))
                },
            )
            .optional()
        })
        .await
    }

    async fn list_keys(&self, user_id: &str) -> PortResult<Vec<ApiKey>> {
        let id = user_id.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT key_hash, name, prefix, scopes, created_at, last_used_at FROM api_keys \
                 WHERE user_id = ?1 ORDER BY created_at, key_hash",
            )?;
            let keys: rusqlite::Result<Vec<ApiKey>> = stmt.query_map([&id], |r| key_from_row(r, 0, &id))?.collect();
            keys
        })
        .await
    }

    async fn create_key(&self, user: &User, key_hash: &str, key: &ApiKey) -> PortResult<()> {
        let (hash, user_id, key) = (key_hash.to_string(), user.id.clone(), key.clone());
        self.with(move |c| {
            c.execute(
                "INSERT INTO api_keys (key_hash, user_id, name, created_at, scopes, prefix) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    hash,
                    user_id,
                    key.name,
                    key.created_at.millis(),
                    key.scopes.to_stored(),
                    key.prefix
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn revoke_key(&self, user_id: &str, key_id: &str) -> PortResult<bool> {
        let (user_id, key_id) = (user_id.to_string(), key_id.to_string());
        // An id is 16 hex digits: anything else names no key (and no LIKE pattern).
        if key_id.len() != 16 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        self.with(move |c| {
            c.execute(
                "DELETE FROM api_keys WHERE user_id = ?1 AND substr(key_hash, 1, 16) = ?2",
                params![user_id, key_id.to_ascii_lowercase()],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn touch_key(&self, key_hash: &str, _key: &ApiKey, at: Timestamp) -> PortResult<()> {
        let hash = key_hash.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE key_hash = ?1",
                params![hash, at.millis()],
            )
            .map(|_| ())
        })
        .await
    }

    async fn credits(&self, user_id: &str) -> PortResult<Option<i64>> {
        let id = user_id.to_string();
        self.with(move |c| {
            c.query_row("SELECT credits FROM users WHERE id = ?1", [&id], |r| r.get(0))
                .optional()
                .map(Option::flatten)
        })
        .await
    }

    async fn charge_credits(&self, user_id: &str, amount: i64) -> PortResult<Result<Option<i64>, i64>> {
        let id = user_id.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            let credits: Option<i64> = tx.query_row("SELECT credits FROM users WHERE id = ?1", [&id], |r| r.get(0))?;
            let out = match credits {
                None => Ok(None),
                Some(have) if have >= amount => {
                    tx.execute(
                        "UPDATE users SET credits = credits - ?1 WHERE id = ?2",
                        params![amount, id],
                    )?;
                    Ok(Some(have - amount))
                }
                Some(have) => Err(have),
            };
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

/// An API key from the columns key_hash, name, prefix, scopes, created_at, last_used_at
/// starting at `at`.
fn key_from_row(r: &Row, at: usize, user_id: &str) -> rusqlite::Result<ApiKey> {
    let hash: String = r.get(at)?;
    Ok(ApiKey {
        id: key_id(&hash),
        user_id: user_id.to_string(),
        name: r.get(at + 1)?,
        prefix: r.get(at + 2)?,
        scopes: Scopes::from_stored(r.get::<_, Option<String>>(at + 3)?.as_deref()),
        created_at: Timestamp(r.get(at + 4)?),
        last_used_at: r.get::<_, Option<i64>>(at + 5)?.map(Timestamp),
    })
}

fn user_from_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        rate_limit: r.get::<_, Option<i64>>(2)?.map(|n| n.clamp(0, u32::MAX as i64) as u32),
        credits: r.get(3)?,
    })
}

impl SqliteStore {
    /// Every user, for `runconvert users list`.
    pub fn list_users(&self) -> PortResult<Vec<User>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare("SELECT id, name, rate_limit, credits FROM users ORDER BY created_at")
            .map_err(err)?;
        let users = stmt
            .query_map([], user_from_row)
            .map_err(err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(err)?;
        Ok(users)
    }

    /// Adds credits to a user (a top-up); a user without a balance (unlimited) gets one.
    /// Returns the new balance, or None if there is no such user.
    pub fn add_credits(&self, user_id: &str, amount: i64) -> PortResult<Option<i64>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let n = conn
            .execute(
                "UPDATE users SET credits = COALESCE(credits, 0) + ?1 WHERE id = ?2",
                params![amount, user_id],
            )
            .map_err(err)?;
        if n == 0 {
            return Ok(None);
        }
        conn.query_row("SELECT credits FROM users WHERE id = ?1", [user_id], |r| r.get(0))
            .map_err(err)
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, job: &Job) -> PortResult<()> {
        let job = job.clone();
        let stored: Vec<(String, Option<String>)> = job
            .tasks
            .iter()
            .map(|t| runconvert_core::secrets::stored_task(t, Some(&self.sealer)))
            .collect();
        let sealed_job_secret = job.webhook_secret.as_ref().map(|s| self.sealer.seal(s.as_bytes()));
        let now = Timestamp::now().millis();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                &format!("INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    job.id,
                    job.user_id,
                    job.tag,
                    job.status.as_str(),
                    job.created_at.millis(),
                    job.started_at.map(|t| t.millis()),
                    job.ended_at.map(|t| t.millis()),
                    job.webhook_url,
                    sealed_job_secret,
                    job.webhook_signing.as_str(),
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
            let job_url = job.webhook_url.as_deref().zip(sealed_job_secret.as_deref());
            record_event(&tx, &Event::job(EventName::JobCreated, job.clone()), job_url, now)?;
            for t in &job.tasks {
                record_event(&tx, &Event::task(EventName::TaskCreated, t.clone()), None, now)?;
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
                    |r| job_from_row(r, &sealer),
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
        let tag = filter.tag.clone();
        let (limit, offset) = (filter.page.limit as i64, filter.page.offset as i64);
        let sealer = self.sealer.clone();
        self.with(move |c| {
            let count: i64 = c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2) \
                 AND (?3 IS NULL OR tag = ?3)",
                params![user, status, tag],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2) \
                 AND (?5 IS NULL OR tag = ?5) ORDER BY created_at DESC, rowid DESC LIMIT ?3 OFFSET ?4"
            ))?;
            let mut jobs: Vec<Job> = stmt
                .query_map(params![user, status, limit, offset, tag], |r| job_from_row(r, &sealer))?
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
        let operation = filter.operation.clone();
        let (limit, offset) = (filter.page.limit as i64, filter.page.offset as i64);
        let sealer = self.sealer.clone();
        self.with(move |c| {
            let cond = "user_id = ?1 AND (?2 IS NULL OR job_id = ?2) AND (?3 IS NULL OR status = ?3) \
                        AND (?4 IS NULL OR json_extract(payload, '$.operation') = ?4)";
            let count: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM tasks WHERE {cond}"),
                params![user, job, status, operation],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE {cond} ORDER BY created_at DESC, job_id, position LIMIT ?5 OFFSET ?6"
            ))?;
            let tasks = stmt
                .query_map(params![user, job, status, operation, limit, offset], |r| task_from_row(r, &sealer))?
                .collect::<rusqlite::Result<_>>()?;
            Ok((tasks, count as u64))
        })
        .await
    }

    async fn transition_task(&self, t: &TaskTransition) -> PortResult<bool> {
        let t = t.clone();
        let sealer = self.sealer.clone();
        self.with(move |c| {
            let to = t.to.as_str();
            let tx = c.transaction()?;
            let n = tx.execute(
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
            let event = match t.to {
                TaskStatus::Finished => Some(EventName::TaskFinished),
                TaskStatus::Failed => Some(EventName::TaskFailed),
                _ => None,
            };
            if let (1, Some(name)) = (n, event) {
                let task = tx.query_row(
                    &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                    [&t.task_id],
                    |r| task_from_row(r, &sealer),
                )?;
                record_event(&tx, &Event::task(name, task), None, t.at.millis())?;
            }
            tx.commit()?;
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
        let sealer = self.sealer.clone();
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE jobs SET status = ?1, \
                 started_at = CASE WHEN ?1 = 'processing' AND started_at IS NULL THEN ?2 ELSE started_at END, \
                 ended_at = CASE WHEN ?1 IN ('completed', 'failed') THEN ?2 ELSE ended_at END \
                 WHERE id = ?3 AND status NOT IN ('completed', 'failed')",
                params![status.as_str(), at.millis(), id],
            )?;
            let event = match status {
                JobStatus::Completed => Some(EventName::JobFinished),
                JobStatus::Failed => Some(EventName::JobFailed),
                _ => None,
            };
            if let (1, Some(name)) = (n, event) {
                let (mut job, sealed_secret): (Job, Option<String>) =
                    tx.query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), [&id], |r| {
                        Ok((job_from_row(r, &sealer)?, r.get(8)?))
                    })?;
                load_tasks(&tx, &sealer, &mut job)?;
                let url = job.webhook_url.clone();
                let job_url = url.as_deref().zip(sealed_secret.as_deref());
                record_event(&tx, &Event::job(name, job), job_url, at.millis())?;
            }
            tx.commit()?;
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

fn webhook_from_row(row: &Row, sealer: &Sealer) -> rusqlite::Result<Webhook> {
    let events: String = row.get(3)?;
    let sealed: String = row.get(4)?;
    let secret = sealer
        .open(&sealed)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into()))?;
    Ok(Webhook {
        id: row.get(0)?,
        user_id: row.get(1)?,
        endpoint_url: row.get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        secret: String::from_utf8(secret).unwrap_or_default(),
        created_at: Timestamp(row.get(5)?),
        disabled_at: ts(row.get(6)?),
        disabled_reason: row.get(7)?,
        signing: Signing::parse(row.get::<_, Option<String>>(8)?.as_deref()),
    })
}

const WEBHOOK_COLUMNS: &str =
    "id, user_id, endpoint_url, events, secret, created_at, disabled_at, disabled_reason, signing";

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, hook: &Webhook) -> PortResult<()> {
        let hook = hook.clone();
        let sealed = self.sealer.seal(hook.secret.as_bytes());
        self.with(move |c| {
            c.execute(
                &format!("INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    hook.id,
                    hook.user_id,
                    hook.endpoint_url,
                    serde_json::to_string(&hook.events).expect("names serialise"),
                    sealed,
                    hook.created_at.millis(),
                    hook.disabled_at.map(|t| t.millis()),
                    hook.disabled_reason,
                    hook.signing.as_str(),
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn list_webhooks(&self, user_id: &str) -> PortResult<Vec<Webhook>> {
        let user = user_id.to_string();
        let sealer = self.sealer.clone();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE user_id = ?1 ORDER BY created_at, id"
            ))?;
            let hooks = stmt
                .query_map([user], |r| webhook_from_row(r, &sealer))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(hooks)
        })
        .await
    }

    async fn delete_webhook(&self, user_id: &str, id: &str) -> PortResult<bool> {
        let (user, id) = (user_id.to_string(), id.to_string());
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM webhooks WHERE id = ?1 AND user_id = ?2", params![id, user])?;
            if n == 1 {
                // What was not sent yet will not be.
                tx.execute(
                    "DELETE FROM deliveries WHERE webhook_id = ?1 AND status = 'pending'",
                    [&id],
                )?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn list_deliveries(&self, user_id: &str, webhook_id: &str, limit: u32) -> PortResult<Option<Vec<Delivery>>> {
        let (user, id) = (user_id.to_string(), webhook_id.to_string());
        self.with(move |c| {
            let owned = c
                .query_row(
                    "SELECT 1 FROM webhooks WHERE id = ?1 AND user_id = ?2",
                    params![id, user],
                    |_| Ok(()),
                )
                .optional()?;
            if owned.is_none() {
                return Ok(None);
            }
            let mut stmt = c.prepare_cached(
                "SELECT d.id, e.id, e.name, d.job_id, d.status, d.attempts, d.last_status_code, d.last_error, \
                 d.created_at, d.next_attempt_at, d.delivered_at \
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE d.webhook_id = ?1 ORDER BY d.event_seq DESC LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![id, limit as i64], |r| {
                    let status: String = r.get(4)?;
                    Ok(Delivery {
                        id: r.get(0)?,
                        event_id: r.get(1)?,
                        event: r.get(2)?,
                        job_id: r.get(3)?,
                        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
                        attempts: r.get::<_, i64>(5)? as u32,
                        last_status_code: r.get::<_, Option<i64>>(6)?.map(|c| c as u16),
                        last_error: r.get(7)?,
                        created_at: Timestamp(r.get(8)?),
                        next_attempt_at: ts(r.get(9)?),
                        delivered_at: ts(r.get(10)?),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(rows))
        })
        .await
    }
}

/// A delivery due to be sent, as the relay needs it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: String,
    pub webhook_id: Option<String>,
    pub url: String,
    pub secret: String,
    pub event_id: String,
    /// The event's payload as the spec shows it (the relay shapes it per `signing`).
    pub body: String,
    pub signing: Signing,
    pub attempts: u32,
    pub event_created_at: Timestamp,
}

/// The webhook relay's side of the outbox.
impl SqliteStore {
    /// Pending deliveries due by `now`, oldest event first; a delivery waits while an
    /// earlier one of the same job to the same endpoint is still pending (order per job).
    pub async fn due_deliveries(&self, now: Timestamp, limit: u32) -> PortResult<Vec<DueDelivery>> {
        let sealer = self.sealer.clone();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.id, d.webhook_id, d.url, d.secret, e.id, e.payload, d.attempts, e.created_at, d.signing \
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.job_id = d.job_id AND p.status = 'pending' \
                     AND p.url = d.url AND p.webhook_id IS d.webhook_id AND p.event_seq < d.event_seq) \
                 ORDER BY d.event_seq LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![now.millis(), limit as i64], |r| {
                    let sealed: String = r.get(3)?;
                    let secret = sealer.open(&sealed).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
                    })?;
                    Ok(DueDelivery {
                        id: r.get(0)?,
                        webhook_id: r.get(1)?,
                        url: r.get(2)?,
                        secret: String::from_utf8(secret).unwrap_or_default(),
                        event_id: r.get(4)?,
                        body: r.get(5)?,
                        attempts: r.get::<_, i64>(6)? as u32,
                        event_created_at: Timestamp(r.get(7)?),
                        signing: Signing::parse(r.get::<_, Option<String>>(8)?.as_deref()),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// Forgets deliveries that ended (delivered or given up) before `before`, and events
    /// older than that with nothing left pending.
    pub async fn prune_outbox(&self, before: Timestamp) -> PortResult<()> {
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM deliveries WHERE status != 'pending' AND created_at < ?1",
                [before.millis()],
            )?;
            tx.execute(
                "DELETE FROM events WHERE created_at < ?1 AND NOT EXISTS \
                 (SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq)",
                [before.millis()],
            )?;
            tx.commit()
        })
        .await
    }

    /// When the next pending delivery is due, if any.
    pub async fn next_delivery_due(&self) -> PortResult<Option<Timestamp>> {
        self.with(|c| {
            c.query_row(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(ts)
        })
        .await
    }

    /// Records an attempt: delivered, failed for good, or pending again at `retry_at`.
    /// A 410 (`disable_webhook`) also disables the subscription and drops what it still had pending.
    pub async fn record_attempt(
        &self,
        d: &DueDelivery,
        status: DeliveryStatus,
        code: Option<u16>,
        error: Option<String>,
        retry_at: Option<Timestamp>,
        disable_webhook: bool,
    ) -> PortResult<()> {
        let (id, webhook) = (d.id.clone(), d.webhook_id.clone());
        let now = Timestamp::now().millis();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE deliveries SET status = ?1, attempts = attempts + 1, last_status_code = ?2, last_error = ?3, \
                 next_attempt_at = ?4, delivered_at = CASE WHEN ?1 = 'delivered' THEN ?5 ELSE delivered_at END \
                 WHERE id = ?6",
                params![
                    status.as_str(),
                    code.map(|c| c as i64),
                    error,
                    retry_at.map(|t| t.millis()),
                    now,
                    id
                ],
            )?;
            if let (true, Some(w)) = (disable_webhook, webhook) {
                tx.execute(
                    "UPDATE webhooks SET disabled_at = ?1, disabled_reason = ?2 WHERE id = ?3",
                    params![now, "the receiver answered 410 Gone", w],
                )?;
                tx.execute(
                    "UPDATE deliveries SET status = 'failed', last_error = 'the subscription was disabled (410 Gone)', \
                     next_attempt_at = NULL WHERE webhook_id = ?1 AND status = 'pending'",
                    [&w],
                )?;
            }
            tx.commit()
        })
        .await
    }
}
