//! Task slots shared fairly between users: at most `total` tasks run at once, at most
//! `per_user` of them one user's, and a freed slot goes to the next user in turn (round
//! robin over the users who wait), so one user's burst cannot starve another.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

pub struct FairSlots {
    per_user: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    free: usize,
    running: HashMap<String, usize>,
    waiting: HashMap<String, VecDeque<oneshot::Sender<Slot>>>,
    /// Users with waiters, in the order they get their next slot.
    turn: VecDeque<String>,
}

/// A held slot; dropping it frees it for the next user in turn.
pub struct Slot {
    slots: Arc<FairSlots>,
    user: String,
    /// False for a slot that could not be handed over, which was never counted.
    live: bool,
}

impl FairSlots {
    pub fn new(total: usize, per_user: usize) -> Arc<Self> {
        Arc::new(FairSlots {
            per_user: per_user.max(1),
            inner: Mutex::new(Inner {
                free: total.max(1),
                running: HashMap::new(),
                waiting: HashMap::new(),
                turn: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot for `user`. Cancel-safe: a waiter dropped before or after it was
    /// given its slot gives the slot back.
    pub async fn acquire(self: &Arc<Self>, user: &str) -> Slot {
        let rx = {
            let mut inner = self.lock();
            let running = inner.running.get(user).copied().unwrap_or(0);
            if inner.free > 0 && running < self.per_user && !inner.waiting.contains_key(user) {
                inner.free -= 1;
                *inner.running.entry(user.to_string()).or_default() += 1;
                return self.slot(user);
            }
            let (tx, rx) = oneshot::channel();
            let queue = inner.waiting.entry(user.to_string()).or_default();
            queue.push_back(tx);
            if queue.len() == 1 {
                inner.turn.push_back(user.to_string());
            }
            rx
        };
        rx.await.expect("a waiter's sender is only dropped after sending")
    }

    fn slot(self: &Arc<Self>, user: &str) -> Slot {
        Slot {
            slots: self.clone(),
            user: user.to_string(),
            live: true,
        }
    }

    fn release(self: &Arc<Self>, user: &str) {
        let mut inner = self.lock();
        inner.free += 1;
        if let Some(n) = inner.running.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                inner.running.remove(user);
            }
        }
        self.grant(&mut inner);
    }

    /// Hands free slots to waiting users in turn, skipping those at their share.
    fn grant(self: &Arc<Self>, inner: &mut Inner) {
        let mut passes = inner.turn.len();
        while inner.free > 0 && passes > 0 {
            let Some(user) = inner.turn.pop_front() else { break };
            let running = inner.running.get(&user).copied().unwrap_or(0);
            if running >= self.per_user {
                inner.turn.push_back(user);
                passes -= 1;
                continue;
            }
            let Some(queue) = inner.waiting.get_mut(&user) else {
                continue;
            };
            let mut granted = false;
            while let Some(tx) = queue.pop_front() {
                // Counted below once sent; a waiter that drops it unopened frees it (the
                // release waits for this lock, so it comes after the count).
                match tx.send(self.slot(&user)) {
                    Ok(()) => {
                        granted = true;
                        break;
                    }
                    // The waiter is gone (its job was deleted): nothing was counted.
                    Err(mut back) => back.live = false,
                }
            }
            let more = !queue.is_empty();
            if !more {
                inner.waiting.remove(&user);
            }
            if granted {
                inner.free -= 1;
                *inner.running.entry(user.clone()).or_default() += 1;
            }
            if more {
                inner.turn.push_back(user);
            }
            passes = inner.turn.len();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.live {
            self.slots.release(&self.user);
        }
    }
}
