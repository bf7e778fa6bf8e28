//! One change per environment at a time: a per-environment lock, and a note of who holds it so
//! that a refusal can name the holder.

use std::sync::Arc;

use cutover_runtime::Runtime;

use crate::record::send;
use crate::{Edge, Engine, Outcome, Prober, Progress, ProgressTx};

/// Clears the environment's holder note when dropped.
pub(crate) struct Holding<R, E, P> {
    engine: Engine<R, E, P>,
    env: String,
}

impl<R, E, P> Drop for Holding<R, E, P> {
    fn drop(&mut self) {
        crate::locked(&self.engine.inner.holders).remove(&self.env);
    }
}

/// Clears the healing note (and the holder note) when dropped.
pub(crate) struct Healing<R, E, P> {
    engine: Engine<R, E, P>,
    env: String,
}

impl<R, E, P> Drop for Healing<R, E, P> {
    fn drop(&mut self) {
        crate::locked(&self.engine.inner.healing).remove(&self.env);
        crate::locked(&self.engine.inner.holders).remove(&self.env);
    }
}

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// The deploy lock of an environment.
    pub(crate) fn env_lock(&self, env: &str) -> Arc<tokio::sync::Mutex<()>> {
        crate::locked(&self.inner.env_locks)
            .entry(env.to_string())
            .or_default()
            .clone()
    }

    /// The environments whose deploy lock is held now (a deploy, rollback, promotion or heal
    /// under way), each with what holds it: what a stop of the server would interrupt.
    pub fn busy(&self) -> Vec<(String, String)> {
        let locks: Vec<(String, Arc<tokio::sync::Mutex<()>>)> =
            crate::locked(&self.inner.env_locks)
                .iter()
                .map(|(env, lock)| (env.clone(), lock.clone()))
                .collect();
        let mut busy: Vec<(String, String)> = locks
            .into_iter()
            .filter(|(_, lock)| lock.try_lock().is_err())
            .map(|(env, _)| {
                let who = self
                    .holder(&env)
                    .unwrap_or_else(|| "a change of the environment".to_string());
                (env, who)
            })
            .collect();
        busy.sort();
        busy
    }

    /// What holds an environment's deploy lock, in words, if anything does.
    pub(crate) fn holder(&self, env: &str) -> Option<String> {
        crate::locked(&self.inner.holders).get(env).cloned()
    }

    /// Takes the environment's deploy lock, or says who holds it.
    pub(crate) async fn lock_env(
        &self,
        env: &str,
        queue: bool,
        progress: &ProgressTx,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, Outcome> {
        let lock = self.env_lock(env);
        if let Ok(guard) = lock.clone().try_lock_owned() {
            return Ok(guard);
        }
        let healing = crate::locked(&self.inner.healing).contains(env);
        let holder = self.holder(env);
        let who = holder.unwrap_or_else(|| "another deploy holds it".to_string());
        if !queue && !healing {
            return Err(Outcome::refused(
                format!("{env} is busy: {who}"),
                Some("wait for it, or pass --queue to wait your turn".into()),
            ));
        }
        let waiting = if healing {
            format!("waiting for the server to finish healing {env}")
        } else {
            format!("waiting for {who} to finish in {env} (--queue)")
        };
        send(progress, Progress::step(waiting));
        Ok(lock.lock_owned().await)
    }

    /// Notes that the server's watcher heals `env` until the returned guard drops: a command
    /// that finds the lock taken by a heal waits for it (a heal is short) instead of refusing.
    pub(crate) fn hold_for_healing(&self, env: &str) -> Healing<R, E, P> {
        crate::locked(&self.inner.healing).insert(env.to_string());
        crate::locked(&self.inner.holders)
            .insert(env.to_string(), format!("the server is healing {env}"));
        Healing {
            engine: self.clone(),
            env: env.to_string(),
        }
    }

    /// Notes who holds the environment's lock until the returned guard drops.
    pub(crate) fn hold(&self, env: &str, release: i64, doing: &str) -> Holding<R, E, P> {
        let text = format!("release {release} is {doing}");
        crate::locked(&self.inner.holders).insert(env.to_string(), text);
        Holding {
            engine: self.clone(),
            env: env.to_string(),
        }
    }
}
