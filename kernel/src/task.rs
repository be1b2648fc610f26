//! The task runtime: tasks run concurrently on tokio, bounded by the node's slots, and each
//! receives a [`TaskCtx`] whose one capability is opening a database transaction. A slot bounds
//! the tasks that run, not those that wait: a task that waits for something outside it (a
//! message, a timer) gives its slot back for the wait ([`Slot::idle`]) and takes one again
//! before it goes on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};

/// What a task may use: a transactional database client and its own identity.
#[derive(Clone, Debug)]
pub struct TaskCtx {
    pool: PgPool,
    task_id: Arc<str>,
    node_id: Arc<str>,
    slot: Slot,
}

/// The slot a task holds: given back while the task waits ([`Slot::idle`]), taken again before
/// it goes on. A task started on its caller's slot holds none of its own. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Slot {
    slots: Arc<Semaphore>,
    /// Whether the task was started with a slot of its own (and so takes one back after waits).
    own: bool,
    state: Arc<parking_lot::Mutex<SlotState>>,
}

#[derive(Debug, Default)]
struct SlotState {
    permit: Option<OwnedSemaphorePermit>,
    /// Waits of this task under way now: the slot is given back at the first, and taken again
    /// once the last has ended.
    idle: usize,
}

impl Slot {
    fn new(slots: Arc<Semaphore>, permit: Option<OwnedSemaphorePermit>) -> Slot {
        Slot {
            slots,
            own: permit.is_some(),
            state: Arc::new(parking_lot::Mutex::new(SlotState { permit, idle: 0 })),
        }
    }

    /// Runs `wait` without the slot, so another task can run meanwhile; then, once no other
    /// wait of this task is under way, waits for a slot before returning. A slot that cannot be
    /// had because the runtime is closing is not waited for: the task finishes its work while
    /// the node drains. A task without a slot of its own (on its caller's) just runs `wait`.
    ///
    /// # Cancel safety
    /// Waits may run side by side and be dropped midway (one branch of a `select!`). The last
    /// one to end takes the slot again; if it was dropped and no slot is free at that moment, the
    /// task runs without one until the end of its next wait, which waits for a slot as usual.
    pub async fn idle<F: Future>(&self, wait: F) -> F::Output {
        if !self.own {
            return wait.await;
        }
        let mut guard = IdleGuard {
            slot: self,
            ended: false,
        };
        let given_back = {
            let mut s = self.state.lock();
            s.idle += 1;
            s.permit.take()
        };
        drop(given_back);
        let out = wait.await;
        guard.ended = true;
        if self.leave_idle() {
            if let Ok(permit) = self.slots.clone().acquire_owned().await {
                self.state.lock().permit = Some(permit);
            }
        }
        out
    }

    /// Ends one wait; true when it was the last and the task holds no slot.
    fn leave_idle(&self) -> bool {
        let mut s = self.state.lock();
        s.idle -= 1;
        s.idle == 0 && s.permit.is_none()
    }

    /// Gives the slot back for good (the task has ended).
    fn release(&self) {
        self.state.lock().permit.take();
    }
}

/// Ends a wait of [`Slot::idle`] that was dropped before it ended: the slot is taken again at
/// once if one is free (a drop cannot wait for one).
struct IdleGuard<'a> {
    slot: &'a Slot,
    ended: bool,
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        if self.ended || !self.slot.leave_idle() {
            return;
        }
        if let Ok(permit) = self.slot.slots.clone().try_acquire_owned() {
            self.slot.state.lock().permit = Some(permit);
        }
    }
}

impl TaskCtx {
    /// Opens a transaction on the system database.
    ///
    /// # Errors
    /// No connection within the pool's acquire timeout, or the database refuses.
    ///
    /// # Cancel safety
    /// Dropping the transaction (or the future holding it) rolls it back.
    pub async fn tx(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The id of the node running the task.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The task's slot, to give it back while the task waits.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }
}

/// Runs tasks on this node, at most `slots` at once. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtime {
    pool: PgPool,
    node_id: Arc<str>,
    slots: Arc<Semaphore>,
    slots_max: usize,
    tracker: TaskTracker,
}

/// A running task; await it for its output.
#[derive(Debug)]
pub struct TaskHandle<T> {
    join: JoinHandle<T>,
}

impl<T> TaskHandle<T> {
    /// Waits for the task's output.
    ///
    /// # Errors
    /// The task panicked or was aborted; the message says which.
    pub async fn join(self) -> std::result::Result<T, tokio::task::JoinError> {
        self.join.await
    }

    /// Aborts the task at its next await point.
    pub fn abort(&self) {
        self.join.abort();
    }
}

/// A slot taken ahead of the task that will run on it ([`Runtime::reserve`]).
#[derive(Debug)]
pub struct Reserved {
    runtime: Runtime,
    permit: OwnedSemaphorePermit,
}

impl Reserved {
    /// Starts the task on the reserved slot, at once.
    pub fn spawn<F, Fut, T>(self, task_id: impl Into<Arc<str>>, task: F) -> TaskHandle<T>
    where
        F: FnOnce(TaskCtx) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime.start(self.permit, task_id.into(), task)
    }
}

impl Runtime {
    /// A runtime for `node_id` with `slots` concurrent tasks.
    pub fn new(pool: PgPool, node_id: &str, slots: u32) -> Runtime {
        let slots_max = slots as usize;
        Runtime {
            pool,
            node_id: node_id.into(),
            slots: Arc::new(Semaphore::new(slots_max)),
            slots_max,
            tracker: TaskTracker::new(),
        }
    }

    /// Starts a task once a slot is free.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] once the runtime is closed.
    ///
    /// # Cancel safety
    /// Dropping the future before it returns starts nothing.
    pub async fn spawn<F, Fut, T>(
        &self,
        task_id: impl Into<Arc<str>>,
        task: F,
    ) -> Result<TaskHandle<T>>
    where
        F: FnOnce(TaskCtx) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(self.start(permit, task_id.into(), task))
    }

    /// Starts a task if a slot is free now; otherwise hands the task back.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] once the runtime is closed.
    pub fn try_spawn<F, Fut, T>(
        &self,
        task_id: impl Into<Arc<str>>,
        task: F,
    ) -> Result<std::result::Result<TaskHandle<T>, F>>
    where
        F: FnOnce(TaskCtx) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Ok(self.start(permit, task_id.into(), task))),
            Err(tokio::sync::TryAcquireError::NoPermits) => Ok(Err(task)),
            Err(tokio::sync::TryAcquireError::Closed) => Err(Error::ShuttingDown),
        }
    }

    /// Takes a free slot now for a task started later ([`Reserved::spawn`]); `None` when no
    /// slot is free or the runtime is closed. Dropped unused, the slot is free again.
    pub fn reserve(&self) -> Option<Reserved> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(Reserved {
            runtime: self.clone(),
            permit,
        })
    }

    /// Starts a task at once on the caller's slot, without taking one of its own: for work a
    /// running task starts and waits for (a child workflow), which must never wait for a slot
    /// its parent holds. It is tracked and drained like any task.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] once the runtime is closed.
    pub fn spawn_on_callers_slot<F, Fut, T>(
        &self,
        task_id: impl Into<Arc<str>>,
        task: F,
    ) -> Result<TaskHandle<T>>
    where
        F: FnOnce(TaskCtx) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        if self.tracker.is_closed() {
            return Err(Error::ShuttingDown);
        }
        Ok(TaskHandle {
            join: self.tracker.spawn(task(
                self.ctx(task_id.into(), Slot::new(self.slots.clone(), None)),
            )),
        })
    }

    fn start<F, Fut, T>(
        &self,
        permit: OwnedSemaphorePermit,
        task_id: Arc<str>,
        task: F,
    ) -> TaskHandle<T>
    where
        F: FnOnce(TaskCtx) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let slot = Slot::new(self.slots.clone(), Some(permit));
        let fut = task(self.ctx(task_id, slot.clone()));
        let join = self.tracker.spawn(async move {
            let out = fut.await;
            slot.release();
            out
        });
        TaskHandle { join }
    }

    fn ctx(&self, task_id: Arc<str>, slot: Slot) -> TaskCtx {
        TaskCtx {
            pool: self.pool.clone(),
            task_id,
            node_id: self.node_id.clone(),
            slot,
        }
    }

    /// Slots free now.
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// Returns once a slot is free, without taking it (at once when one is free now); never
    /// returns once the runtime is closed.
    ///
    /// # Cancel safety
    /// Dropping the future takes nothing.
    pub async fn slot_free(&self) {
        // A permit taken and given back at once: waiters in line for a slot keep their turn.
        if self.slots.acquire().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// The node's slot count.
    pub fn slots(&self) -> usize {
        self.slots_max
    }

    /// Refuses new tasks from now on.
    pub fn close(&self) {
        self.slots.close();
        self.tracker.close();
    }

    /// Closes the runtime and waits up to `timeout` for running tasks. Returns how many were
    /// still running at the deadline (their durable state is recovered by the next node).
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.close();
        let _ = tokio::time::timeout(timeout, self.tracker.wait()).await;
        self.tracker.len()
    }
}
