//! The DynamoDB adapter: [`JobStore`], [`KeyStore`] and [`WebhookStore`] over one table.
//!
//! Single-table design (`pk`, `sk` strings; GSI `gsi1` on `gsi1pk`/`gsi1sk`, GSI `gsi2` on
//! `gsi2pk`):
//!
//! | item | pk | sk | gsi1pk / gsi1sk | gsi2pk |
//! |---|---|---|---|---|
//! | job | `JOB#<id>` | `#JOB` | `USER#<user>#JOB` / `<created ms>#<id>` | |
//! | task | `JOB#<job>` | `TASK#<position>` | `USER#<user>#TASK` / `<created ms>#<job>#<position>` | `TASK#<id>` |
//! | API key | `KEY#<sha256>` | `#KEY` | | |
//! | API key, as listed | `USER#<user>` | `APIKEY#<key id>` | | |
//! | user (name, credit balance) | `USER#<user>` | `#USER` | | |
//! | webhook | `USER#<user>` | `WEBHOOK#<id>` | | |
//! | delivery | `WEBHOOK#<id>` | `DELIVERY#<ms>#<id>` | | |
//!
//! Jobs and tasks keep their fields as one JSON document (`data`) beside the attributes
//! that conditions test (`status`); every state change is a conditional write on the
//! status it expects, so a retried Lambda never applies a change twice.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use runconvert_core::keys::{key_id, key_prefix, ApiKey, Scopes};
use runconvert_core::model::{Job, JobStatus, Task, TaskResult, TaskStatus, User};
use runconvert_core::ports::{
    apply_transition, JobFilter, JobStore, KeyStore, PortError, PortResult, TaskFilter, TaskTransition, WebhookStore,
};
use runconvert_core::secrets::{merge_secrets, stored_task, Sealer};
use runconvert_core::webhooks::{Delivery, Signing, Webhook};
use runconvert_core::{new_id, Timestamp};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

type Item = HashMap<String, AttributeValue>;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// The sealing key's cipher; `None` in the functions that are not given the key (those
    /// that parse untrusted files, and the job function): they see secrets redacted and
    /// leave the sealed attributes as they are ([`DynamoStore::carry`]).
    sealer: Option<Arc<Sealer>>,
    /// Whether each job seen has anyone to receive its events ([`DynamoStore::notifies`]).
    notify: Arc<std::sync::Mutex<HashMap<String, bool>>>,
    /// The key (`pk`, `sk`) of each task item seen: a task is then read by its key, not
    /// looked up in `gsi2` first. Keys never change while the item exists.
    task_keys: Arc<std::sync::Mutex<HashMap<String, (AttributeValue, AttributeValue)>>>,
    /// How long ended jobs and tasks are kept: their `expires_at` (the table's TTL).
    retention_secs: i64,
}

fn err(e: impl std::fmt::Display) -> PortError {
    PortError::new(format!("dynamodb: {e}"))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

/// A number attribute, parsed.
/// What is shown of a key, from either of its items (see [`DynamoStore::put_key`]); a key
/// made before scopes has every scope.
fn key_from_item(i: &Item, user_id: &str, key_hash: &str) -> ApiKey {
    ApiKey {
        id: get_s(i, "key_id").unwrap_or_else(|| key_id(key_hash)),
        user_id: user_id.to_string(),
        name: get_s(i, "key_name").or_else(|| get_s(i, "name")).unwrap_or_default(),
        prefix: get_s(i, "prefix"),
        scopes: Scopes::from_stored(get_s(i, "scopes").as_deref()),
        created_at: Timestamp(get_n(i, "created_at").unwrap_or(0)),
        last_used_at: get_n(i, "last_used_at").map(Timestamp),
    }
}

fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok())
}

/// The sort key of a user's item (its name and credit balance).
const USER_SK: &str = "#USER";

fn job_pk(id: &str) -> String {
    format!("JOB#{id}")
}

fn ms(t: Option<Timestamp>) -> Value {
    t.map(|t| json!(t.millis())).unwrap_or(Value::Null)
}

fn ts(v: &Value) -> Option<Timestamp> {
    v.as_i64().map(Timestamp)
}

/// Keeps `v` for `k` in a per-instance cache. A Lambda instance runs many jobs: past 4,096
/// entries the oldest are not worth keeping, and the cache starts again.
fn remember<V>(cache: &std::sync::Mutex<HashMap<String, V>>, k: &str, v: V) {
    let mut known = cache.lock().expect("not poisoned");
    if known.len() >= 4096 {
        known.clear();
    }
    known.insert(k.to_string(), v);
}

/// A conditional write that found another state: not an error, the change was not made.
fn is_condition_failed<E: std::fmt::Debug>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> bool {
    format!("{e:?}").contains("ConditionalCheckFailed")
}

impl DynamoStore {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        sealer: Option<Sealer>,
        retention: std::time::Duration,
    ) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            sealer: sealer.map(Arc::new),
            notify: Arc::default(),
            task_keys: Arc::default(),
            retention_secs: retention.as_secs() as i64,
        }
    }

    fn sealer(&self) -> PortResult<&Sealer> {
        self.sealer
            .as_deref()
            .ok_or_else(|| err("this function has no sealing key"))
    }

    /// The TTL attribute: seconds since the epoch when DynamoDB may delete the item.
    fn expiry(&self, ended: Timestamp) -> AttributeValue {
        AttributeValue::N((ended.millis() / 1000 + self.retention_secs).to_string())
    }

    fn job_item(&self, job: &Job) -> Item {
        let data = json!({
            "id": job.id, "user_id": job.user_id, "tag": job.tag, "webhook_url": job.webhook_url,
            "webhook_signing": job.webhook_signing.as_str(), "status": job.status.as_str(), "created_at": job.created_at.millis(),
            "started_at": ms(job.started_at), "ended_at": ms(job.ended_at),
        });
        let mut item: Item = HashMap::from([
            ("pk".into(), s(job_pk(&job.id))),
            ("sk".into(), s("#JOB")),
            ("kind".into(), s("job")),
            ("user_id".into(), s(&job.user_id)),
            ("status".into(), s(job.status.as_str())),
            ("gsi1pk".into(), s(format!("USER#{}#JOB", job.user_id))),
            (
                "gsi1sk".into(),
                s(format!("{:013}#{}", job.created_at.millis(), job.id)),
            ),
            ("data".into(), s(data.to_string())),
        ]);
        if let Some(e) = job.ended_at {
            item.insert("ended_at".into(), AttributeValue::N(e.millis().to_string()));
            item.insert("expires_at".into(), self.expiry(e));
        }
        if let (Some(secret), Some(sealer)) = (&job.webhook_secret, &self.sealer) {
            item.insert("webhook_secret".into(), s(sealer.seal(secret.as_bytes())));
        }
        item
    }

    /// A rewrite of an item read before: what this store does not rebuild itself is
    /// carried over as it was: whether the job's events have anyone to go to (`notify`),
    /// and, without the sealing key, the sealed attributes (a task's `secrets` only while
    /// it may still run).
    fn carry(&self, old: &Item, mut new: Item) -> Item {
        let mut keep = vec!["notify"];
        if self.sealer.is_none() {
            keep.push("webhook_secret");
            let open = get_s(&new, "status")
                .and_then(|st| TaskStatus::parse(&st))
                .is_some_and(|st| !st.is_final());
            if open {
                keep.push("secrets");
            }
        }
        for k in keep {
            if let Some(v) = old.get(k) {
                new.entry(k.to_string()).or_insert_with(|| v.clone());
            }
        }
        new
    }

    /// Whether anyone may receive the job's events: it has a webhook_url, or its owner had
    /// a webhook subscription when it was created (`notify` on the job's item; true when
    /// unknown). Events nobody would receive are not sent.
    /// It never changes once the job exists, so each instance reads it once per job.
    pub async fn notifies(&self, job_id: &str) -> PortResult<bool> {
        if let Some(known) = self.notify.lock().expect("not poisoned").get(job_id) {
            return Ok(*known);
        }
        let got = self
            .get_job_item(job_id)
            .projection_expression("notify")
            .send()
            .await
            .map_err(err)?;
        let Some(known) = got
            .item()
            .and_then(|i| i.get("notify"))
            .and_then(|v| v.as_bool().ok().copied())
        else {
            return Ok(true); // not there yet (an eventually consistent read), or an older item
        };
        self.remember_notify(job_id, known);
        Ok(known)
    }

    fn remember_notify(&self, job_id: &str, notify: bool) {
        remember(&self.notify, job_id, notify);
    }

    /// Remembers the key of a task item just read.
    fn remember_task_key(&self, task_id: &str, item: &Item) {
        if let (Some(pk), Some(sk)) = (item.get("pk"), item.get("sk")) {
            remember(&self.task_keys, task_id, (pk.clone(), sk.clone()));
        }
    }

    /// A GetItem of the job's own item.
    fn get_job_item(&self, job_id: &str) -> aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(job_pk(job_id)))
            .key("sk", s("#JOB"))
    }

    fn job_from_item(&self, item: &Item) -> PortResult<Job> {
        let data: Value = serde_json::from_str(&get_s(item, "data").unwrap_or_default()).map_err(err)?;
        let status = data["status"]
            .as_str()
            .and_then(JobStatus::parse)
            .ok_or_else(|| err("bad job status"))?;
        let webhook_secret = match (get_s(item, "webhook_secret"), &self.sealer) {
            (Some(sealed), Some(sealer)) => Some(String::from_utf8(sealer.open(&sealed).map_err(err)?).map_err(err)?),
            _ => None,
        };
        Ok(Job {
            id: data["id"].as_str().unwrap_or_default().to_string(),
            user_id: data["user_id"].as_str().unwrap_or_default().to_string(),
            tag: data["tag"].as_str().map(String::from),
            webhook_url: data["webhook_url"].as_str().map(String::from),
            webhook_secret,
            webhook_signing: Signing::parse(data["webhook_signing"].as_str()),
            status,
            created_at: Timestamp(data["created_at"].as_i64().unwrap_or(0)),
            started_at: ts(&data["started_at"]),
            ended_at: ts(&data["ended_at"]),
            tasks: Vec::new(),
        })
    }

    fn task_item(&self, t: &Task, user_id: &str, position: usize) -> Item {
        let (payload, sealed) = stored_task(t, self.sealer.as_deref());
        let data = json!({
            "id": t.id, "job_id": t.job_id, "name": t.name, "position": position,
            "payload": serde_json::from_str::<Value>(&payload).unwrap_or(Value::Null),
            "depends_on": t.depends_on_task_ids, "status": t.status.as_str(), "message": t.message,
            "code": t.code, "percent": t.percent, "created_at": t.created_at.millis(),
            "started_at": ms(t.started_at), "ended_at": ms(t.ended_at), "expires_at": ms(t.expires_at),
            "attempts": t.attempts, "result": t.result,
        });
        let mut item: Item = HashMap::from([
            ("pk".into(), s(job_pk(&t.job_id))),
            ("sk".into(), s(format!("TASK#{position:04}"))),
            ("kind".into(), s("task")),
            ("user_id".into(), s(user_id)),
            ("status".into(), s(t.status.as_str())),
            ("gsi1pk".into(), s(format!("USER#{user_id}#TASK"))),
            (
                "gsi1sk".into(),
                s(format!("{:013}#{}#{position:04}", t.created_at.millis(), t.job_id)),
            ),
            ("gsi2pk".into(), s(format!("TASK#{}", t.id))),
            ("data".into(), s(data.to_string())),
        ]);
        if let Some(e) = t.ended_at {
            item.insert("expires_at".into(), self.expiry(e));
        }
        // Credentials stay sealed only while the task may still run.
        if let (Some(sealed), false) = (sealed, t.status.is_final()) {
            item.insert("secrets".into(), s(sealed));
        }
        item
    }

    fn task_from_item(&self, item: &Item) -> PortResult<(Task, String, usize)> {
        let data: Value = serde_json::from_str(&get_s(item, "data").unwrap_or_default()).map_err(err)?;
        let mut payload = data["payload"].clone();
        if let (Some(sealed), Some(sealer)) = (get_s(item, "secrets"), &self.sealer) {
            merge_secrets(&mut payload, &sealed, sealer).map_err(err)?;
        }
        let (operation, input, ignore_error, timeout) = Task::parse_stored_payload(&payload).map_err(err)?;
        let status = data["status"]
            .as_str()
            .and_then(TaskStatus::parse)
            .ok_or_else(|| err("bad task status"))?;
        let result: Option<TaskResult> = serde_json::from_value(data["result"].clone()).map_err(err)?;
        let task = Task {
            id: data["id"].as_str().unwrap_or_default().to_string(),
            job_id: data["job_id"].as_str().unwrap_or_default().to_string(),
            name: data["name"].as_str().unwrap_or_default().to_string(),
            operation,
            input,
            ignore_error,
            timeout,
            status,
            message: data["message"].as_str().map(String::from),
            code: data["code"].as_str().map(String::from),
            percent: data["percent"].as_u64().unwrap_or(0).min(100) as u8,
            depends_on_task_ids: serde_json::from_value(data["depends_on"].clone()).unwrap_or_default(),
            created_at: Timestamp(data["created_at"].as_i64().unwrap_or(0)),
            started_at: ts(&data["started_at"]),
            ended_at: ts(&data["ended_at"]),
            expires_at: ts(&data["expires_at"]),
            attempts: data["attempts"].as_u64().unwrap_or(0) as u32,
            result,
        };
        let user = get_s(item, "user_id").unwrap_or_default();
        let position = data["position"].as_u64().unwrap_or(0) as usize;
        Ok((task, user, position))
    }

    /// Writes `item` if the stored item's `status` is still `expected`: true if it did,
    /// false if another writer got there first.
    async fn put_if_status(&self, item: Item, expected: &str) -> PortResult<bool> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("#s = :expected")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":expected", s(expected))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Every item of a query, following pages.
    async fn query_all(
        &self,
        index: Option<&str>,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
        forward: bool,
    ) -> PortResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(condition)
                .scan_index_forward(forward)
                .set_exclusive_start_key(start.take());
            if let Some(i) = index {
                q = q.index_name(i);
            }
            for (k, v) in &values {
                q = q.expression_attribute_values(*k, v.clone());
            }
            let page = q.send().await.map_err(err)?;
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    async fn write_batch(&self, requests: Vec<WriteRequest>) -> PortResult<()> {
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            for _ in 0..8 {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .send()
                    .await
                    .map_err(err)?;
                pending = out
                    .unprocessed_items()
                    .and_then(|m| m.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if !pending.is_empty() {
                return Err(err("DynamoDB kept items unprocessed"));
            }
        }
        Ok(())
    }

    async fn job_items(&self, job_id: &str) -> PortResult<Vec<Item>> {
        self.query_all(None, "pk = :p", vec![(":p", s(job_pk(job_id)))], true)
            .await
    }

    fn assemble(&self, items: &[Item]) -> PortResult<Option<Job>> {
        let Some(head) = items.iter().find(|i| get_s(i, "sk").as_deref() == Some("#JOB")) else {
            return Ok(None);
        };
        let mut job = self.job_from_item(head)?;
        if let Some(notify) = head.get("notify").and_then(|v| v.as_bool().ok()) {
            self.remember_notify(&job.id, *notify);
        }
        let mut tasks: Vec<(usize, Task)> = Vec::new();
        for i in items.iter().filter(|i| get_s(i, "kind").as_deref() == Some("task")) {
            let (t, _, pos) = self.task_from_item(i)?;
            self.remember_task_key(&t.id, i);
            tasks.push((pos, t));
        }
        tasks.sort_by_key(|(p, _)| *p);
        job.tasks = tasks.into_iter().map(|(_, t)| t).collect();
        Ok(Some(job))
    }

    async fn task_item_by_id(&self, task_id: &str) -> PortResult<Option<Item>> {
        let known = self.task_keys.lock().expect("not poisoned").get(task_id).cloned();
        if let Some((pk, sk)) = known {
            let got = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", pk)
                .key("sk", sk)
                .consistent_read(true)
                .send()
                .await
                .map_err(err)?;
            return Ok(got.item().cloned());
        }
        let items = self
            .query_all(
                Some("gsi2"),
                "gsi2pk = :p",
                vec![(":p", s(format!("TASK#{task_id}")))],
                true,
            )
            .await?;
        // The index is eventually consistent: read the item itself by its key.
        let Some(found) = items.into_iter().next() else {
            return Ok(None);
        };
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", found["pk"].clone())
            .key("sk", found["sk"].clone())
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        if let Some(item) = got.item() {
            self.remember_task_key(task_id, item);
        }
        Ok(got.item().cloned())
    }

    /// Makes a user with one API key (stored only as its hash): the key item
    /// (`KEY#<hash>`, `#KEY`: user id, name, rate limit) and the user item (`USER#<id>`,
    /// `#USER`: name and, for a limited user, the credit balance).
    pub async fn create_user_with_key(
        &self,
        name: &str,
        key: &str,
        rate_limit: Option<u32>,
        credits: Option<i64>,
    ) -> PortResult<User> {
        let user = User {
            id: new_id(),
            name: name.to_string(),
            rate_limit,
            credits,
        };
        self.put_user(&user).await?;
        let hash = runconvert_http::hash_key(key);
        let shown = ApiKey {
            id: key_id(&hash),
            user_id: user.id.clone(),
            name: name.to_string(),
            prefix: Some(key_prefix(key)),
            scopes: Scopes::all(),
            created_at: Timestamp::now(),
            last_used_at: None,
        };
        self.put_key(&user, &hash, &shown).await?;
        Ok(user)
    }

    /// The user item (`USER#<id>`, `#USER`): the name and, for a limited user, the credit
    /// balance.
    async fn put_user(&self, user: &User) -> PortResult<()> {
        let mut item = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("USER#{}", user.id)))
            .item("sk", s(USER_SK))
            .item("kind", s("user"))
            .item("name", s(&user.name));
        if let Some(c) = user.credits {
            item = item.item("credits", AttributeValue::N(c.to_string()));
        }
        item.send().await.map_err(err)?;
        Ok(())
    }

    /// A key's two items: the one a request's key is looked up by (`KEY#<hash>`: the
    /// user's id, name and rate limit, the key's scopes) and the one its user's list shows
    /// (`USER#<user>`, `APIKEY#<id>`).
    async fn put_key(&self, user: &User, key_hash: &str, key: &ApiKey) -> PortResult<()> {
        let mut shown = vec![
            ("key_id", s(&key.id)),
            ("key_name", s(&key.name)),
            ("scopes", s(key.scopes.to_stored())),
            ("created_at", AttributeValue::N(key.created_at.millis().to_string())),
        ];
        if let Some(p) = &key.prefix {
            shown.push(("prefix", s(p)));
        }
        let mut lookup = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("KEY#{key_hash}")))
            .item("sk", s("#KEY"))
            .item("kind", s("key"))
            .item("user_id", s(&user.id))
            .item("name", s(&user.name));
        if let Some(r) = user.rate_limit {
            lookup = lookup.item("rate_limit", AttributeValue::N(r.to_string()));
        }
        let mut listed = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("USER#{}", user.id)))
            .item("sk", s(format!("APIKEY#{}", key.id)))
            .item("kind", s("listed key"))
            .item("key_hash", s(key_hash));
        for (k, v) in shown {
            lookup = lookup.item(k, v.clone());
            listed = listed.item(k, v);
        }
        // Listed first: a key that works is always one its user can see and revoke.
        listed.send().await.map_err(err)?;
        lookup.send().await.map_err(err)?;
        Ok(())
    }

    /// Adds credits to a user (a top-up; an unlimited user gets a balance). The new
    /// balance, or None when there is no such user.
    pub async fn add_credits(&self, user_id: &str, amount: i64) -> PortResult<Option<i64>> {
        let out = self
            .update_user(user_id)
            .update_expression("SET credits = if_not_exists(credits, :zero) + :a")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":a", AttributeValue::N(amount.to_string()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.attributes().and_then(|a| get_n(a, "credits"))),
            Err(e) if is_condition_failed(&e) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// An update of a user's item (its credit balance), returning the updated attributes.
    fn update_user(
        &self,
        user_id: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("USER#{user_id}")))
            .key("sk", s(USER_SK))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
    }

    /// Records one delivery attempt of a webhook (what `GET /v2/webhooks/{id}/deliveries` shows).
    /// Keeps the Step Functions task token of a task that waits for its inputs (or its
    /// upload), in an item of its own beside the job's (`TOKEN#<task>`): task items are
    /// rewritten whole on every transition. Deleting the job deletes it too.
    pub async fn put_wait_token(&self, job_id: &str, task_id: &str, token: &str) -> PortResult<()> {
        // A standard execution lasts a year at most.
        let expires = Timestamp::now().millis() / 1000 + 400 * 86_400;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(job_pk(job_id)))
            .item("sk", s(format!("TOKEN#{task_id}")))
            .item("kind", s("token"))
            .item("task_id", s(task_id))
            .item("token", s(token))
            .item("expires_at", AttributeValue::N(expires.to_string()))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    /// The tokens of a job's waiting tasks: (task id, token).
    pub async fn wait_tokens(&self, job_id: &str) -> PortResult<Vec<(String, String)>> {
        let items = self
            .query_all(
                None,
                "pk = :p AND begins_with(sk, :t)",
                vec![(":p", s(job_pk(job_id))), (":t", s("TOKEN#"))],
                true,
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|i| Some((get_s(i, "task_id")?, get_s(i, "token")?)))
            .collect())
    }

    /// Forgets a token once its task was told to go on.
    pub async fn drop_wait_token(&self, job_id: &str, task_id: &str) -> PortResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(job_pk(job_id)))
            .key("sk", s(format!("TOKEN#{task_id}")))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Records an attempt at a delivery (the same item each time: its key comes from its
    /// first attempt), and beside it where to find it by its event (`EVENT#<event id>`).
    pub async fn record_delivery(&self, webhook_id: &str, d: &Delivery) -> PortResult<()> {
        let sk = format!("DELIVERY#{:013}#{}", d.created_at.millis(), d.id);
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("WEBHOOK#{webhook_id}")))
            .item("sk", s(&sk))
            .item("kind", s("delivery"))
            .item("data", s(serde_json::to_string(d).map_err(err)?))
            .send()
            .await
            .map_err(err)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("WEBHOOK#{webhook_id}")))
            .item("sk", s(format!("EVENT#{}", d.event_id)))
            .item("kind", s("delivery-of-event"))
            .item("delivery_sk", s(sk))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    /// The delivery of `event_id` to a receiver, if it was tried before.
    pub async fn find_delivery(&self, webhook_id: &str, event_id: &str) -> PortResult<Option<Delivery>> {
        let pk = s(format!("WEBHOOK#{webhook_id}"));
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk.clone())
            .key("sk", s(format!("EVENT#{event_id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        let Some(sk) = got.item().and_then(|i| get_s(i, "delivery_sk")) else {
            return Ok(None);
        };
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        Ok(got
            .item()
            .and_then(|i| serde_json::from_str(&get_s(i, "data").unwrap_or_default()).ok()))
    }

    /// Disables a subscription (its receiver answered 410 Gone): it gets no more events.
    pub async fn disable_webhook(&self, user_id: &str, webhook_id: &str, reason: &str) -> PortResult<()> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("USER#{user_id}")))
            .key("sk", s(format!("WEBHOOK#{webhook_id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        let Some(mut item) = got.item().cloned() else {
            return Ok(());
        };
        let mut data: Value = serde_json::from_str(&get_s(&item, "data").unwrap_or_default()).map_err(err)?;
        if !data["disabled_at"].is_null() {
            return Ok(());
        }
        data["disabled_at"] = Value::from(Timestamp::now().millis());
        data["disabled_reason"] = Value::from(reason);
        item.insert("data".into(), s(data.to_string()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    /// The subscriptions of a user (for the webhook function).
    pub async fn webhooks_of(&self, user_id: &str) -> PortResult<Vec<Webhook>> {
        self.list_webhooks(user_id).await
    }
}

#[async_trait]
impl KeyStore for DynamoStore {
    async fn key_by_hash(&self, key_hash: &str) -> PortResult<Option<(User, ApiKey)>> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("KEY#{key_hash}")))
            .key("sk", s("#KEY"))
            .send()
            .await
            .map_err(err)?;
        let Some(i) = got.item() else {
            return Ok(None);
        };
        let user = User {
            id: get_s(i, "user_id").unwrap_or_default(),
            name: get_s(i, "name").unwrap_or_default(),
            rate_limit: get_n(i, "rate_limit"),
            // On the user's item: read only where a balance is shown (`credits`), so that
            // authenticating a request stays one read.
            credits: None,
        };
        let key = key_from_item(i, &user.id, key_hash);
        Ok(Some((user, key)))
    }

    async fn list_keys(&self, user_id: &str) -> PortResult<Vec<ApiKey>> {
        let items = self
            .query_all(
                None,
                "pk = :p AND begins_with(sk, :k)",
                vec![(":p", s(format!("USER#{user_id}"))), (":k", s("APIKEY#"))],
                true,
            )
            .await?;
        let mut keys: Vec<ApiKey> = items
            .iter()
            .map(|i| key_from_item(i, user_id, &get_s(i, "key_hash").unwrap_or_default()))
            .collect();
        keys.sort_by(|a, b| (a.created_at.millis(), &a.id).cmp(&(b.created_at.millis(), &b.id)));
        Ok(keys)
    }

    async fn create_user(&self, user: &User) -> PortResult<()> {
        self.put_user(user).await
    }

    async fn create_key(&self, user: &User, key_hash: &str, key: &ApiKey) -> PortResult<()> {
        self.put_key(user, key_hash, key).await
    }

    async fn revoke_key(&self, user_id: &str, key_id: &str) -> PortResult<bool> {
        let listed = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("USER#{user_id}")))
            .key("sk", s(format!("APIKEY#{key_id}")))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(err)?;
        let Some(hash) = listed.attributes().and_then(|a| get_s(a, "key_hash")) else {
            return Ok(false);
        };
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("KEY#{hash}")))
            .key("sk", s("#KEY"))
            .send()
            .await
            .map_err(err)?;
        Ok(true)
    }

    async fn touch_key(&self, _key_hash: &str, key: &ApiKey, at: Timestamp) -> PortResult<()> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("USER#{}", key.user_id)))
            .key("sk", s(format!("APIKEY#{}", key.id)))
            .update_expression("SET last_used_at = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", AttributeValue::N(at.millis().to_string()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            // A key made before keys were listed: nothing to record it on.
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// A user's credit balance; None: unlimited (or no such user).
    async fn credits(&self, user_id: &str) -> PortResult<Option<i64>> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("USER#{user_id}")))
            .key("sk", s(USER_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        Ok(got.item().and_then(|i| get_n(i, "credits")))
    }

    /// Credits live on the user's item (`USER#<id>`, `#USER`); no balance: unlimited.
    async fn charge_credits(&self, user_id: &str, amount: i64) -> PortResult<Result<Option<i64>, i64>> {
        let out = self
            .update_user(user_id)
            .update_expression("SET credits = credits - :a")
            .condition_expression("attribute_exists(credits) AND credits >= :a")
            .expression_attribute_values(":a", AttributeValue::N(amount.to_string()))
            .send()
            .await;
        match out {
            Ok(o) => Ok(Ok(o.attributes().and_then(|a| get_n(a, "credits")))),
            Err(e) if is_condition_failed(&e) => match self.credits(user_id).await? {
                Some(left) => Ok(Err(left)),
                None => Ok(Ok(None)),
            },
            Err(e) => Err(err(e)),
        }
    }
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn create_job(&self, job: &Job) -> PortResult<()> {
        // Tasks first, the job item last: until it exists, the job is not visible.
        let puts: Vec<WriteRequest> = job
            .tasks
            .iter()
            .enumerate()
            .map(|(pos, t)| {
                let put = PutRequest::builder()
                    .set_item(Some(self.task_item(t, &job.user_id, pos)))
                    .build()
                    .map_err(err)?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<PortResult<_>>()?;
        self.write_batch(puts).await?;
        let notify = job.webhook_url.is_some()
            || self
                .list_webhooks(&job.user_id)
                .await?
                .iter()
                .any(|w| w.disabled_at.is_none());
        let mut item = self.job_item(job);
        item.insert("notify".into(), AttributeValue::Bool(notify));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(err)?;
        // The events published right after the job is made need not read it back.
        self.remember_notify(&job.id, notify);
        Ok(())
    }

    async fn get_job(&self, user_id: Option<&str>, job_id: &str) -> PortResult<Option<Job>> {
        let job = self.assemble(&self.job_items(job_id).await?)?;
        Ok(job.filter(|j| user_id.is_none_or(|u| j.user_id == u)))
    }

    async fn list_jobs(&self, user_id: &str, filter: &JobFilter) -> PortResult<(Vec<Job>, u64)> {
        let heads = self
            .query_all(
                Some("gsi1"),
                "gsi1pk = :p",
                vec![(":p", s(format!("USER#{user_id}#JOB")))],
                false,
            )
            .await?;
        let mut matching = Vec::new();
        for h in &heads {
            let job = self.job_from_item(h)?;
            if filter.status.is_none_or(|st| job.status == st)
                && filter.tag.as_ref().is_none_or(|t| job.tag.as_ref() == Some(t))
            {
                matching.push(job.id);
            }
        }
        let count = matching.len() as u64;
        let mut jobs = Vec::new();
        for id in matching
            .into_iter()
            .skip(filter.page.offset as usize)
            .take(filter.page.limit as usize)
        {
            if let Some(j) = self.get_job(Some(user_id), &id).await? {
                jobs.push(j);
            }
        }
        Ok((jobs, count))
    }

    async fn delete_job(&self, user_id: &str, job_id: &str) -> PortResult<bool> {
        let items = self.job_items(job_id).await?;
        match self.assemble(&items)? {
            Some(j) if j.user_id == user_id => {}
            _ => return Ok(false),
        }
        let deletes: Vec<WriteRequest> = items
            .iter()
            .map(|i| {
                let key = HashMap::from([("pk".to_string(), i["pk"].clone()), ("sk".to_string(), i["sk"].clone())]);
                let d = DeleteRequest::builder().set_key(Some(key)).build().map_err(err)?;
                Ok(WriteRequest::builder().delete_request(d).build())
            })
            .collect::<PortResult<_>>()?;
        self.write_batch(deletes).await?;
        Ok(true)
    }

    async fn get_task(&self, user_id: Option<&str>, task_id: &str) -> PortResult<Option<Task>> {
        let Some(item) = self.task_item_by_id(task_id).await? else {
            return Ok(None);
        };
        let (task, owner, _) = self.task_from_item(&item)?;
        Ok(user_id.is_none_or(|u| u == owner).then_some(task))
    }

    async fn list_tasks(&self, user_id: &str, filter: &TaskFilter) -> PortResult<(Vec<Task>, u64)> {
        let items = match &filter.job_id {
            Some(job) => self.job_items(job).await?,
            None => {
                self.query_all(
                    Some("gsi1"),
                    "gsi1pk = :p",
                    vec![(":p", s(format!("USER#{user_id}#TASK")))],
                    false,
                )
                .await?
            }
        };
        let mut tasks = Vec::new();
        for i in items.iter().filter(|i| get_s(i, "kind").as_deref() == Some("task")) {
            let (t, owner, _) = self.task_from_item(i)?;
            if owner == user_id
                && filter.status.is_none_or(|st| t.status == st)
                && filter.operation.as_deref().is_none_or(|op| t.operation.name() == op)
            {
                tasks.push(t);
            }
        }
        let count = tasks.len() as u64;
        let page = tasks
            .into_iter()
            .skip(filter.page.offset as usize)
            .take(filter.page.limit as usize)
            .collect();
        Ok((page, count))
    }

    async fn transition_task(&self, t: &TaskTransition) -> PortResult<bool> {
        Ok(self.transition_task_and_read(t).await?.is_some())
    }

    /// The task as written: no second read.
    async fn transition_task_and_read(&self, t: &TaskTransition) -> PortResult<Option<Task>> {
        let Some(item) = self.task_item_by_id(&t.task_id).await? else {
            return Ok(None);
        };
        let (mut task, owner, pos) = self.task_from_item(&item)?;
        if task.status != t.from {
            return Ok(None);
        }
        apply_transition(&mut task, t);
        let written = self
            .put_if_status(self.carry(&item, self.task_item(&task, &owner, pos)), t.from.as_str())
            .await?;
        if !written {
            return Ok(None);
        }
        // As get_task would read it back (a final task's credentials are gone).
        let (shown, _, _) = self.task_from_item(&self.task_item(&task, &owner, pos))?;
        Ok(Some(shown))
    }

    async fn set_task_percent(&self, task_id: &str, percent: u8) -> PortResult<()> {
        let Some(item) = self.task_item_by_id(task_id).await? else {
            return Ok(());
        };
        let (mut task, owner, pos) = self.task_from_item(&item)?;
        if task.status != TaskStatus::Processing || percent <= task.percent {
            return Ok(());
        }
        task.percent = percent.min(100);
        self.put_if_status(self.carry(&item, self.task_item(&task, &owner, pos)), "processing")
            .await
            .map(|_| ())
    }

    async fn set_job_status(&self, job_id: &str, status: JobStatus, at: Timestamp) -> PortResult<bool> {
        let got = self
            .get_job_item(job_id)
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        let Some(item) = got.item() else { return Ok(false) };
        let mut job = self.job_from_item(item)?;
        if job.status.is_final() {
            return Ok(false);
        }
        let before = job.status;
        job.status = status;
        if status == JobStatus::Processing && job.started_at.is_none() {
            job.started_at = Some(at);
        }
        if status.is_final() {
            job.ended_at = Some(at);
        }
        self.put_if_status(self.carry(item, self.job_item(&job)), before.as_str())
            .await
    }

    /// On AWS, Step Functions drives every job to its end: there is no in-process
    /// executor to resume. This scan serves operators' tools.
    async fn unfinished_jobs(&self) -> PortResult<Vec<String>> {
        let mut ids = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("kind = :k AND (#s = :c OR #s = :p)")
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":k", s("job"))
                .expression_attribute_values(":c", s("created"))
                .expression_attribute_values(":p", s("processing"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(err)?;
            ids.extend(
                page.items()
                    .iter()
                    .filter_map(|i| get_s(i, "pk").map(|pk| pk.trim_start_matches("JOB#").to_string())),
            );
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(ids),
            }
        }
    }

    async fn jobs_ended_before(&self, before: Timestamp) -> PortResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("kind = :k AND ended_at < :b")
                .expression_attribute_values(":k", s("job"))
                .expression_attribute_values(":b", AttributeValue::N(before.millis().to_string()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(err)?;
            for i in page.items() {
                if let (Some(pk), Some(user)) = (get_s(i, "pk"), get_s(i, "user_id")) {
                    out.push((pk.trim_start_matches("JOB#").to_string(), user));
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    async fn requeue_task(&self, task_id: &str) -> PortResult<bool> {
        let Some(item) = self.task_item_by_id(task_id).await? else {
            return Ok(false);
        };
        let (mut task, owner, pos) = self.task_from_item(&item)?;
        if task.status != TaskStatus::Processing {
            return Ok(false);
        }
        task.status = TaskStatus::Waiting;
        task.started_at = None;
        self.put_if_status(self.carry(&item, self.task_item(&task, &owner, pos)), "processing")
            .await
    }
}

#[async_trait]
impl WebhookStore for DynamoStore {
    async fn create_webhook(&self, hook: &Webhook) -> PortResult<()> {
        let data = json!({
            "id": hook.id, "user_id": hook.user_id, "endpoint_url": hook.endpoint_url, "events": hook.events,
            "created_at": hook.created_at.millis(), "disabled_at": ms(hook.disabled_at),
            "disabled_reason": hook.disabled_reason, "signing": hook.signing.as_str(),
        });
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("USER#{}", hook.user_id)))
            .item("sk", s(format!("WEBHOOK#{}", hook.id)))
            .item("kind", s("webhook"))
            .item("data", s(data.to_string()))
            .item("secret", s(self.sealer()?.seal(hook.secret.as_bytes())))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn list_webhooks(&self, user_id: &str) -> PortResult<Vec<Webhook>> {
        let items = self
            .query_all(
                None,
                "pk = :p AND begins_with(sk, :w)",
                vec![(":p", s(format!("USER#{user_id}"))), (":w", s("WEBHOOK#"))],
                true,
            )
            .await?;
        items
            .iter()
            .map(|i| {
                let d: Value = serde_json::from_str(&get_s(i, "data").unwrap_or_default()).map_err(err)?;
                let secret = self
                    .sealer()?
                    .open(&get_s(i, "secret").unwrap_or_default())
                    .map_err(err)?;
                Ok(Webhook {
                    id: d["id"].as_str().unwrap_or_default().into(),
                    user_id: d["user_id"].as_str().unwrap_or_default().into(),
                    endpoint_url: d["endpoint_url"].as_str().unwrap_or_default().into(),
                    events: serde_json::from_value(d["events"].clone()).unwrap_or_default(),
                    created_at: Timestamp(d["created_at"].as_i64().unwrap_or(0)),
                    disabled_at: ts(&d["disabled_at"]),
                    disabled_reason: d["disabled_reason"].as_str().map(String::from),
                    secret: String::from_utf8(secret).map_err(err)?,
                    signing: Signing::parse(d["signing"].as_str()),
                })
            })
            .collect()
    }

    async fn delete_webhook(&self, user_id: &str, id: &str) -> PortResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("USER#{user_id}")))
            .key("sk", s(format!("WEBHOOK#{id}")))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(err)?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }

    async fn list_deliveries(&self, user_id: &str, webhook_id: &str, limit: u32) -> PortResult<Option<Vec<Delivery>>> {
        if !self.list_webhooks(user_id).await?.iter().any(|w| w.id == webhook_id) {
            return Ok(None);
        }
        let items = self
            .query_all(
                None,
                "pk = :p AND begins_with(sk, :d)",
                vec![(":p", s(format!("WEBHOOK#{webhook_id}"))), (":d", s("DELIVERY#"))],
                false,
            )
            .await?;
        let list = items
            .iter()
            .take(limit as usize)
            .filter_map(|i| serde_json::from_str::<Delivery>(&get_s(i, "data").unwrap_or_default()).ok())
            .collect();
        Ok(Some(list))
    }
}
