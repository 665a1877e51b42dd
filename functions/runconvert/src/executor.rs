//! The in-process executor, the embedded [`Dispatcher`]: one driver per active job plans
//! with the core planner and runs ready tasks on tokio, at most `concurrency` at a time
//! (CPU-heavy engine work runs on blocking threads inside the worker).

use async_trait::async_trait;
use runconvert_core::error::codes;
use runconvert_core::model::{Job, JobStatus, Task, TaskStatus};
use runconvert_core::planner;
use runconvert_core::ports::{Dispatcher, Event, EventName, EventSink, JobStore, PortResult, TaskTransition};
use runconvert_core::{TaskError, Timestamp};
use runconvert_engines::Progress;
use runconvert_worker::Worker;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;

pub struct Executor {
    jobs: Arc<dyn JobStore>,
    events: Arc<dyn EventSink>,
    worker: Arc<Worker>,
    /// Task slots, shared round-robin between users, each to a share of them.
    slots: Arc<crate::slots::FairSlots>,
    default_timeout: Duration,
    /// Times a task that was running when the server died is started again; past that
    /// it fails with `interrupted`, so a file that kills the server cannot crash-loop it.
    task_restarts: u32,
    drivers: Mutex<HashMap<String, Arc<Notify>>>,
    me: Weak<Executor>,
}

impl Executor {
    pub fn new(
        jobs: Arc<dyn JobStore>,
        events: Arc<dyn EventSink>,
        worker: Arc<Worker>,
        concurrency: usize,
        per_user: usize,
        default_timeout: Duration,
        task_restarts: u32,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Executor {
            jobs,
            events,
            worker,
            slots: crate::slots::FairSlots::new(concurrency, per_user),
            default_timeout,
            task_restarts,
            drivers: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// After a restart: tasks that were running start again (or fail, if they already
    /// had their chances), and every unfinished job is driven to its end.
    pub async fn resume(&self) -> PortResult<usize> {
        let ids = self.jobs.unfinished_jobs().await?;
        for id in &ids {
            let Some(job) = self.jobs.get_job(None, id).await? else {
                continue;
            };
            for t in job.tasks.iter().filter(|t| t.status == TaskStatus::Processing) {
                if t.attempts > self.task_restarts {
                    let err = TaskError::new(
                        codes::INTERRUPTED,
                        format!(
                            "the server stopped while this task was running, {} times; it is not tried again",
                            t.attempts
                        ),
                    );
                    self.finish_task(t, TaskStatus::Processing, Err(err)).await;
                } else {
                    self.jobs.requeue_task(&t.id).await?;
                    tracing::info!(job = %id, task = %t.name, "task interrupted by a restart; starting it again");
                }
            }
            self.dispatch(id).await?;
        }
        Ok(ids.len())
    }

    async fn publish(&self, event: Event) {
        if let Err(e) = self.events.publish(event).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }

    /// Records a task's end and publishes its event.
    async fn finish_task(
        &self,
        task: &Task,
        from: TaskStatus,
        outcome: Result<runconvert_core::TaskResult, TaskError>,
    ) {
        match runconvert_core::ports::end_task(&*self.jobs, &task.id, from, outcome).await {
            Ok(Some(event)) => self.publish(event).await,
            Ok(None) => {} // deleted or already moved on
            Err(e) => {
                tracing::error!(task = %task.id, error = %e, "could not record a task's end or read it back for its event")
            }
        }
    }

    async fn drive(self: Arc<Self>, job_id: String, wake: Arc<Notify>) {
        let mut running: JoinSet<()> = JoinSet::new();
        let mut started: HashSet<String> = HashSet::new();
        loop {
            let job = match self.jobs.get_job(None, &job_id).await {
                Ok(Some(job)) => job,
                Ok(None) => break, // deleted: dropping `running` stops its tasks
                Err(e) => {
                    tracing::error!(job = %job_id, error = %e, "cannot read a job; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if job.status.is_final() {
                break;
            }
            let plan = planner::plan(&job, Timestamp::now());
            for (task_id, err) in plan.fail {
                if let Some(task) = job.task(&task_id) {
                    self.finish_task(task, TaskStatus::Waiting, Err(err)).await;
                }
            }
            let to_start: Vec<String> = plan.start.into_iter().filter(|id| !started.contains(id)).collect();
            if !to_start.is_empty() && job.status == JobStatus::Created {
                let _ = self
                    .jobs
                    .set_job_status(&job.id, JobStatus::Processing, Timestamp::now())
                    .await;
            }
            for task_id in to_start {
                started.insert(task_id.clone());
                let this = self.clone();
                let job = job.clone();
                running.spawn(async move { this.run_task(&job, &task_id).await });
            }
            if let Some(outcome) = plan.outcome {
                self.end_job(&job, outcome).await;
                break;
            }
            let deadline = plan
                .next_deadline
                .map(|d| Timestamp::now().until(d) + Duration::from_millis(20));
            tokio::select! {
                _ = wake.notified() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = sleep_opt(deadline) => {}
            }
        }
        self.drivers.lock().unwrap_or_else(|p| p.into_inner()).remove(&job_id);
    }

    async fn end_job(&self, job: &Job, outcome: JobStatus) {
        match self.jobs.set_job_status(&job.id, outcome, Timestamp::now()).await {
            Ok(true) => {
                if let Ok(Some(job)) = self.jobs.get_job(None, &job.id).await {
                    let name = if outcome == JobStatus::Completed {
                        EventName::JobFinished
                    } else {
                        EventName::JobFailed
                    };
                    self.publish(Event::job(name, job)).await;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(job = %job.id, error = %e, "could not record a job's end"),
        }
    }

    /// Records a running task's percent (only when it grows).
    fn progress_reporter(&self, task_id: &str) -> Progress {
        let store = self.jobs.clone();
        let id = task_id.to_string();
        let rt = tokio::runtime::Handle::current();
        let last = Arc::new(std::sync::atomic::AtomicU8::new(0));
        Progress(Some(Arc::new(move |p: u8| {
            if p > last.fetch_max(p, std::sync::atomic::Ordering::SeqCst) {
                let (store, id) = (store.clone(), id.clone());
                rt.spawn(async move {
                    let _ = store.set_task_percent(&id, p).await;
                });
            }
        })))
    }

    async fn run_task(self: Arc<Self>, job: &Job, task_id: &str) {
        let Some(task) = job.task(task_id) else { return };
        // Within the user's share, in turn with other users: one cannot take every slot.
        let _slot = self.slots.acquire(&job.user_id).await;
        let begin = TaskTransition {
            task_id: task.id.clone(),
            from: TaskStatus::Waiting,
            to: TaskStatus::Processing,
            at: Timestamp::now(),
            code: None,
            message: None,
            result: None,
        };
        match self.jobs.transition_task(&begin).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(task = %task.id, error = %e, "could not start a task");
                return;
            }
        }
        let mut task = task.clone();
        task.attempts += 1;
        let timeout = task.timeout.map(Duration::from_secs).unwrap_or(self.default_timeout);
        // The worker runs in its own tokio task: a panic there fails this task only.
        let worker = self.worker.clone();
        let (job2, task2) = (job.clone(), task.clone());
        let progress = self.progress_reporter(&task.id);
        let handle = tokio::spawn(async move { worker.run(&job2, &task2, progress).await });
        let abort = handle.abort_handle();
        // If this future is dropped (the job was deleted), the worker stops too.
        let _stop_worker = AbortOnDrop(abort.clone());
        let outcome = match tokio::time::timeout(timeout, handle).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => {
                tracing::error!(task = %task.id, error = %join, "a task crashed");
                Err(TaskError::new(
                    codes::PROCESSING_FAILED,
                    "the task failed unexpectedly inside the server",
                ))
            }
            Err(_) => {
                abort.abort();
                Err(TaskError::new(
                    codes::TIMEOUT,
                    format!("the task ran longer than its timeout of {} s", timeout.as_secs()),
                ))
            }
        };
        if let Err(e) = &outcome {
            tracing::info!(job = %job.id, task = %task.name, code = %e.code, message = %e.message, "task failed");
        }
        self.finish_task(&task, TaskStatus::Processing, outcome).await;
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

impl Executor {
    /// Every `every`, starts a driver for any unfinished job that has none (a job whose
    /// dispatch failed, or was lost): no stored job waits for a restart.
    pub fn spawn_sweep(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(this) = me.upgrade() else { return };
                let Ok(ids) = this.jobs.unfinished_jobs().await else {
                    continue;
                };
                for id in ids {
                    let idle = !this.drivers.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&id);
                    if idle {
                        tracing::info!(job = %id, "starting a job that had no driver");
                        let _ = this.dispatch(&id).await;
                    }
                }
            }
        });
    }
}

#[async_trait]
impl Dispatcher for Executor {
    async fn dispatch(&self, job_id: &str) -> PortResult<()> {
        let mut drivers = self.drivers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(wake) = drivers.get(job_id) {
            wake.notify_one();
            return Ok(());
        }
        let Some(me) = self.me.upgrade() else { return Ok(()) };
        let wake = Arc::new(Notify::new());
        drivers.insert(job_id.to_string(), wake.clone());
        tokio::spawn(me.drive(job_id.to_string(), wake));
        Ok(())
    }

    async fn cancel(&self, job_id: &str) -> PortResult<()> {
        // The driver sees the job gone on waking and drops its running tasks.
        if let Some(wake) = self.drivers.lock().unwrap_or_else(|p| p.into_inner()).get(job_id) {
            wake.notify_one();
        }
        Ok(())
    }
}
