//! A Lua script run by EVALSHA, loaded on first use and again after a Redis
//! restart (which empties Redis's script cache).

use std::sync::Mutex;

use fred::interfaces::LuaInterface;
use fred::types::{FromValue, Value};

use super::{ClusterError, Redis};

/// A script and the SHA1 Redis gave it (none until loaded).
#[derive(Debug)]
pub struct Script {
    lua: &'static str,
    sha: Mutex<Option<String>>,
}

impl Script {
    /// A script, loaded into Redis on its first run.
    pub const fn new(lua: &'static str) -> Self {
        Self {
            lua,
            sha: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<String> {
        self.sha
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn load(&self, redis: &Redis) -> Result<String, ClusterError> {
        let sha: String = redis.client().script_load(self.lua).await?;
        *self
            .sha
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sha.clone());
        Ok(sha)
    }

    /// Runs the script: one round trip, or three (`NOSCRIPT`, load, run) on
    /// the first run after Redis lost its script cache. Each is bounded by
    /// `cluster.redis_timeout_ms`.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when Redis fails or does not answer in time.
    pub async fn run<R: FromValue>(
        &self,
        redis: &Redis,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, ClusterError> {
        let bound = redis.timeout() * 4;
        tokio::time::timeout(bound, self.run_unbounded(redis, keys, args))
            .await
            .map_err(|_| ClusterError::Unavailable)?
    }

    async fn run_unbounded<R: FromValue>(
        &self,
        redis: &Redis,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, ClusterError> {
        let sha = match self.cached() {
            Some(sha) => sha,
            None => self.load(redis).await?,
        };
        match redis
            .client()
            .evalsha::<R, _, _, _>(sha, keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                let sha = self.load(redis).await?;
                Ok(redis.client().evalsha(sha, keys, args).await?)
            }
            other => Ok(other?),
        }
    }
}
