//! argon2id password hashing, kept off the async worker threads.
//!
//! Hashing costs ~15 ms of CPU at the OWASP parameters. Run inline, a login
//! storm would stall every socket on the same worker; so each job runs on a
//! small pool of dedicated threads (one fewer than the cores, at least one)
//! behind a semaphore of the same size, and a request that cannot get a slot
//! in time answers `server_busy` instead of queueing forever. The pool's
//! threads run at a lowered scheduling priority (`password.worker_priority`,
//! `SCHED_IDLE` by default), so when hashing and signaling want the same core
//! the kernel runs signaling first: a login storm slows logins, not calls.
//!
//! An unknown username is verified against a dummy hash made at start-up with
//! the same parameters, so neither the answer nor its timing tells which
//! usernames exist.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{Semaphore, oneshot};

use crate::config::{PasswordConfig, WorkerPriority};
use crate::domain::Password;

/// Why a hashing job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Every slot stayed busy for `password.queue_timeout_ms`.
    #[error("server_busy")]
    Busy,
    /// The blocking task failed (a panic in the hasher, or bad parameters).
    #[error("internal")]
    Internal,
}

/// Cost ceilings: a stored hash asking for more is refused, not verified
/// (argon2 takes its costs from the stored string).
#[derive(Debug, Clone, Copy)]
struct Ceiling {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

/// Hashes and verifies passwords with bounded concurrency.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    ceiling: Ceiling,
    slots: Arc<Semaphore>,
    workers: mpsc::Sender<Job>,
    queue_timeout: Duration,
    dummy_hash: Arc<str>,
}

type Job = Box<dyn FnOnce() + Send>;

/// Starts `count` hashing threads at `priority`, fed from one queue. They
/// exit when the last sender (the last clone of the hasher) is dropped.
fn spawn_workers(count: usize, priority: WorkerPriority) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..count {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("callgate-argon2-{i}"))
            .spawn(move || {
                lower_priority(priority);
                loop {
                    let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = next else { return };
                    // A panicking job drops its reply sender (the caller sees
                    // `Internal`); the thread lives on for the next job.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
    }
    Ok(tx)
}

/// Moves the calling thread to `priority`. Lowering needs no privilege;
/// failing only costs fairness, so it is logged, not fatal.
fn lower_priority(priority: WorkerPriority) {
    #[cfg(unix)]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let policy = match priority {
            WorkerPriority::Idle => NormalThreadSchedulePolicy::Idle,
            WorkerPriority::Low => NormalThreadSchedulePolicy::Other,
            WorkerPriority::Normal => return,
        };
        let set = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(policy),
        );
        if let Err(e) = set {
            tracing::warn!(error = ?e, "could not lower the password workers' priority");
        }
    }
    #[cfg(not(unix))]
    let _ = priority;
}

/// The number of hashing threads: `configured`, or one fewer than the cores
/// (at least one) so hashing can never hold every core.
fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.saturating_sub(1).max(1)
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .field("slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

fn argon2id(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The argon2 parameters named by `config`.
///
/// # Errors
/// When they are not valid argon2 parameters (`Config::validate` reports it).
pub fn params(config: &PasswordConfig) -> Result<Params, argon2::Error> {
    Params::new(
        config.memory_kib,
        config.iterations,
        config.parallelism,
        None,
    )
}

/// Hashes `password` on the current thread, returning its PHC string. For the
/// CLI and for seeding at start-up; request paths use [`PasswordHasher::hash`].
///
/// # Errors
/// Only if argon2 refuses the parameters.
pub fn hash_blocking(
    params: &Params,
    password: &str,
) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2id(params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
}

impl PasswordHasher {
    /// Builds the hasher and its dummy hash (one hash at start-up).
    ///
    /// # Errors
    /// When the parameters are invalid.
    pub fn new(config: &PasswordConfig) -> Result<Self, argon2::Error> {
        let params = params(config)?;
        let slots = worker_count(config.max_concurrent);
        let workers = spawn_workers(slots, config.worker_priority)
            .map_err(|_| argon2::Error::AlgorithmInvalid)?;
        let dummy_hash = hash_blocking(&params, &uuid::Uuid::new_v4().to_string())
            .map_err(|_| argon2::Error::AlgorithmInvalid)?;
        Ok(Self {
            params,
            ceiling: Ceiling {
                memory_kib: config.max_memory_kib,
                iterations: config.max_iterations,
                parallelism: config.max_parallelism,
            },
            slots: Arc::new(Semaphore::new(slots)),
            workers,
            queue_timeout: Duration::from_millis(config.queue_timeout_ms),
            dummy_hash: Arc::from(dummy_hash),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .map_err(|_| PasswordError::Internal)?;
        let (reply, answer) = oneshot::channel();
        self.workers
            .send(Box::new(move || {
                let _ = reply.send(job());
                drop(permit);
            }))
            .map_err(|_| PasswordError::Internal)?;
        answer.await.map_err(|_| PasswordError::Internal)
    }

    /// Hashes a new password.
    ///
    /// # Errors
    /// [`PasswordError::Busy`] when no slot frees up in time.
    pub async fn hash(&self, password: Password) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.run(move || hash_blocking(&params, password.expose()))
            .await?
            .map_err(|_| PasswordError::Internal)
    }

    /// Verifies `password` against `stored`, or against the dummy hash when
    /// there is no such user (the answer is then always `false`).
    ///
    /// # Errors
    /// [`PasswordError::Busy`] when no slot frees up in time.
    pub async fn verify(
        &self,
        password: Password,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let ceiling = self.ceiling;
        let target = match stored {
            Some(hash) => hash,
            None => self.dummy_hash.to_string(),
        };
        let dummy = self.dummy_hash.clone();
        let ok = self
            .run(move || {
                let checked = check_within(&target, ceiling);
                // A refused stored hash still costs one dummy verification, so
                // refusals look like every other wrong password from outside.
                let hash_text = if checked { target.as_str() } else { &*dummy };
                let verified = PasswordHash::new(hash_text).is_ok_and(|h| {
                    Argon2::default()
                        .verify_password(password.expose().as_bytes(), &h)
                        .is_ok()
                });
                if !checked {
                    tracing::warn!(
                        "stored password hash refused: not argon2id or above the cost ceiling"
                    );
                }
                verified && checked
            })
            .await?;
        Ok(ok && known)
    }
}

/// True when `hash` is an argon2id PHC string within the ceiling.
fn check_within(hash: &str, ceiling: Ceiling) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    if parsed.algorithm.as_str() != "argon2id" {
        return false;
    }
    Params::try_from(&parsed).is_ok_and(|p| {
        p.m_cost() <= ceiling.memory_kib
            && p.t_cost() <= ceiling.iterations
            && p.p_cost() <= ceiling.parallelism
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PasswordConfig {
        PasswordConfig {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            max_memory_kib: 4096,
            max_iterations: 4,
            max_parallelism: 1,
            max_concurrent: 2,
            worker_priority: WorkerPriority::Idle,
            queue_timeout_ms: 1000,
        }
    }

    fn pw(s: &str) -> Password {
        Password::parse(s.to_string()).expect("valid password")
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let hasher = PasswordHasher::new(&config()).expect("hasher");
        let hash = hasher.hash(pw("correct horse")).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(
            hasher.verify(pw("correct horse"), Some(hash.clone())).await,
            Ok(true)
        );
        assert_eq!(
            hasher.verify(pw("wrong horse!"), Some(hash)).await,
            Ok(false)
        );
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let hasher = PasswordHasher::new(&config()).expect("hasher");
        assert_eq!(hasher.verify(pw("anything at all"), None).await, Ok(false));
    }

    #[tokio::test]
    async fn a_hash_above_the_ceiling_is_refused_even_with_the_right_password() {
        let hasher = PasswordHasher::new(&config()).expect("hasher");
        let costly = Params::new(8192, 1, 1, None).expect("params");
        let hash = hash_blocking(&costly, "correct horse").expect("hash");
        assert_eq!(
            hasher.verify(pw("correct horse"), Some(hash)).await,
            Ok(false)
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn jobs_run_on_named_threads_at_the_configured_priority() {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy,
        };
        let where_jobs_run = |priority| async move {
            let hasher = PasswordHasher::new(&PasswordConfig {
                worker_priority: priority,
                ..config()
            })
            .expect("hasher");
            hasher
                .run(|| {
                    (
                        std::thread::current().name().map(str::to_owned),
                        thread_schedule_policy().ok(),
                    )
                })
                .await
                .expect("job ran")
        };
        let (name, policy) = where_jobs_run(WorkerPriority::Idle).await;
        assert!(name.is_some_and(|n| n.starts_with("callgate-argon2-")));
        assert_eq!(
            policy,
            Some(ThreadSchedulePolicy::Normal(
                NormalThreadSchedulePolicy::Idle
            ))
        );
        let (_, policy) = where_jobs_run(WorkerPriority::Normal).await;
        assert_ne!(
            policy,
            Some(ThreadSchedulePolicy::Normal(
                NormalThreadSchedulePolicy::Idle
            ))
        );
    }

    #[test]
    fn the_default_pool_leaves_a_core_for_signaling() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(worker_count(0), cores.saturating_sub(1).max(1));
        assert_eq!(worker_count(3), 3);
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy() {
        let mut cfg = config();
        cfg.max_concurrent = 1;
        cfg.queue_timeout_ms = 1;
        let hasher = PasswordHasher::new(&cfg).expect("hasher");
        let held = hasher.slots.clone().acquire_owned().await.expect("permit");
        assert_eq!(
            hasher.hash(pw("correct horse")).await,
            Err(PasswordError::Busy)
        );
        drop(held);
        assert!(hasher.hash(pw("correct horse")).await.is_ok());
    }
}
