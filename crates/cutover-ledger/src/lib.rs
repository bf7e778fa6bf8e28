//! The ledger: every release, its state, its reason and its timeline, in SQLite.
//!
//! It answers "which version is live, since when, and what was before" and decides the
//! rollback target. Releases are never deleted, only superseded.
//!
//! Architecture invariant: a state change and the event that explains it are written in one
//! transaction, before the change takes effect in the world (the engine calls the ledger first).

mod model;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use sha2::{Digest, Sha256};

pub use model::{
    CheckRecord, EdgeHold, EdgeHoldKind, Event, Freeze, NewRelease, PipelineRun, PromotedFrom,
    Promotion, Refusal, Release, ReleaseKind, ReleaseState, Snapshot,
};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger: release {0} does not exist")]
    NoSuchRelease(i64),
    #[error("ledger: corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, LedgerError>;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    version TEXT NOT NULL,
    artifact TEXT NOT NULL,
    digest TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    kind TEXT NOT NULL,
    restored_from INTEGER,
    requested_by TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    passed_monitor INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    live_at TEXT,
    monitor_until TEXT,
    ended_at TEXT
);
CREATE INDEX IF NOT EXISTS releases_env ON releases (env, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    release_id INTEGER NOT NULL REFERENCES releases (id),
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_release ON events (release_id, id);
CREATE TABLE IF NOT EXISTS edge_holds (
    env TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    message TEXT,
    until TEXT,
    held_by TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS freezes (
    env TEXT PRIMARY KEY,
    frozen_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha TEXT NOT NULL,
    run TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    exit TEXT,
    log_file TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS checks_sha ON checks (sha, id);
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    token_name TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pipeline_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha TEXT NOT NULL,
    trigger TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    message TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT
);
"#;

/// Columns added after the first schema, with their definitions.
const ADDED_RELEASE_COLUMNS: [(&str, &str); 6] = [
    ("trigger", "TEXT NOT NULL DEFAULT 'cli'"),
    ("author", "TEXT"),
    ("approved_by", "TEXT"),
    ("approved_at", "TEXT"),
    ("promoted_from", "INTEGER"),
    ("promoted_from_env", "TEXT"),
];

const RELEASE_COLUMNS: &str = "id, app, env, version, artifact, digest, snapshot, kind, restored_from, \
     requested_by, state, reason, passed_monitor, created_at, started_at, live_at, monitor_until, ended_at, \
     trigger, author, approved_by, approved_at, promoted_from, promoted_from_env";

const RUN_COLUMNS: &str =
    "id, sha, trigger, requested_by, state, exit_code, message, started_at, ended_at";

pub struct Ledger {
    conn: Connection,
}

/// One state change of a release, for [`Ledger::transition_all`].
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    pub id: i64,
    pub state: ReleaseState,
    pub reason: Option<&'a str>,
    /// The event's words.
    pub message: &'a str,
}

impl Ledger {
    /// Opens (and creates or migrates) the ledger at `path`.
    pub fn open(path: &Path) -> Result<Ledger> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let ledger = Ledger { conn };
        ledger.salt()?;
        Ok(ledger)
    }

    /// The per-ledger random salt for hashing secret values.
    pub fn salt(&self) -> Result<String> {
        let existing: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'salt'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(salt) = existing {
            return Ok(salt);
        }
        let salt = hex::encode(rand::random::<[u8; 16]>());
        self.conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('salt', ?1)",
            [&salt],
        )?;
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'salt'", [], |r| {
                r.get(0)
            })
            .map_err(Into::into)
    }

    /// Salted hashes of secret values: a change of value is visible, the value is not.
    pub fn hash_secrets(
        &self,
        secrets: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let salt = self.salt()?;
        Ok(secrets
            .iter()
            .map(|(name, value)| {
                let mut h = Sha256::new();
                h.update(salt.as_bytes());
                h.update([0]);
                h.update(name.as_bytes());
                h.update([0]);
                h.update(value.as_bytes());
                (
                    name.clone(),
                    format!("sha256:{}", &hex::encode(h.finalize())[..16]),
                )
            })
            .collect())
    }

    /// Records a new release in state `pending`.
    pub fn create_release(&mut self, new: &NewRelease) -> Result<Release> {
        self.insert_release(new, None)
    }

    /// Records a promotion in state `pending`: `new` (of kind promote) ships exactly `from`,
    /// the release live in another environment (of this ledger or of another server's), and
    /// says so in its first event.
    pub fn create_promotion(&mut self, new: &NewRelease, from: &PromotedFrom) -> Result<Release> {
        self.insert_release(new, Some(from))
    }

    fn insert_release(
        &mut self,
        new: &NewRelease,
        promoted_from: Option<&PromotedFrom>,
    ) -> Result<Release> {
        let now = now();
        let snapshot = serde_json::to_string(&new.snapshot)
            .map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO releases (app, env, version, artifact, digest, snapshot, kind, restored_from, \
             requested_by, state, created_at, trigger, author) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?11, ?12)",
            params![
                new.app,
                new.env,
                new.version,
                new.artifact,
                new.digest,
                snapshot,
                new.kind.as_str(),
                new.restored_from,
                new.requested_by,
                now,
                new.trigger,
                new.author
            ],
        )?;
        let id = tx.last_insert_rowid();
        if let Some(from) = promoted_from {
            tx.execute(
                "UPDATE releases SET promoted_from = ?1, promoted_from_env = ?2 WHERE id = ?3",
                params![from.release, from.env, id],
            )?;
        }
        let message = match (new.kind, new.restored_from, promoted_from) {
            (_, _, Some(from)) => format!(
                "promotion of {} requested by {}: release {} of {} ({})",
                new.artifact, new.requested_by, from.release, from.env, from.digest
            ),
            (ReleaseKind::Rollback, Some(from), _) => {
                format!(
                    "rollback to release {from} ({}) requested by {}",
                    new.version, new.requested_by
                )
            }
            _ => format!(
                "deploy of {} requested by {}",
                new.artifact, new.requested_by
            ),
        };
        insert_event(&tx, id, "pending", &message)?;
        tx.commit()?;
        self.get(id)
    }

    /// Moves a release to `state`, stamping the matching time column and writing an event.
    pub fn transition(
        &mut self,
        id: i64,
        state: ReleaseState,
        reason: Option<&str>,
        message: &str,
    ) -> Result<()> {
        self.transition_all(&[Transition {
            id,
            state,
            reason,
            message,
        }])
    }

    /// Several transitions in one transaction: all are written or none is. A cut-over marks
    /// one release live and ends the one it takes over from; a crash between the two writes
    /// must not leave two releases live.
    pub fn transition_all(&mut self, transitions: &[Transition<'_>]) -> Result<()> {
        let now = now();
        let tx = self.conn.transaction()?;
        for t in transitions {
            let column = match t.state {
                ReleaseState::Starting => Some("started_at"),
                ReleaseState::Live => Some("live_at"),
                ReleaseState::Superseded | ReleaseState::Failed | ReleaseState::RolledBack => {
                    Some("ended_at")
                }
                _ => None,
            };
            let changed = match column {
                Some(col) => tx.execute(
                    &format!(
                        "UPDATE releases SET state = ?1, reason = COALESCE(?2, reason), {col} = ?3 WHERE id = ?4"
                    ),
                    params![t.state.as_str(), t.reason, now, t.id],
                )?,
                None => tx.execute(
                    "UPDATE releases SET state = ?1, reason = COALESCE(?2, reason) WHERE id = ?3",
                    params![t.state.as_str(), t.reason, t.id],
                )?,
            };
            if changed == 0 {
                return Err(LedgerError::NoSuchRelease(t.id));
            }
            if t.state == ReleaseState::Live {
                tx.execute("UPDATE releases SET ended_at = NULL WHERE id = ?1", [t.id])?;
            }
            insert_event(&tx, t.id, t.state.as_str(), t.message)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets the end of the monitor window of a live release.
    pub fn set_monitor_until(&mut self, id: i64, until: Option<DateTime<Utc>>) -> Result<()> {
        self.conn.execute(
            "UPDATE releases SET monitor_until = ?1 WHERE id = ?2",
            params![until.map(fmt_time), id],
        )?;
        Ok(())
    }

    /// Marks a release as having passed its monitor window: it is now known-good.
    pub fn mark_passed_monitor(&mut self, id: i64, message: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("UPDATE releases SET passed_monitor = 1 WHERE id = ?1", [id])?;
        insert_event(&tx, id, "known-good", message)?;
        tx.commit()?;
        Ok(())
    }

    pub fn add_event(&mut self, id: i64, kind: &str, message: &str) -> Result<()> {
        insert_event(&self.conn, id, kind, message)
    }

    pub fn get(&self, id: i64) -> Result<Release> {
        self.find(id)?.ok_or(LedgerError::NoSuchRelease(id))
    }

    pub fn find(&self, id: i64) -> Result<Option<Release>> {
        self.conn
            .query_row(
                &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = ?1"),
                [id],
                row_to_release,
            )
            .optional()?
            .transpose()
    }

    /// Releases of an environment, newest first.
    pub fn history(&self, env: &str, limit: usize) -> Result<Vec<Release>> {
        self.query_releases(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE env = ?1 ORDER BY id DESC LIMIT ?2"
            ),
            params![env, limit as i64],
        )
    }

    /// Every environment that has at least one release.
    pub fn environments(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT env FROM releases ORDER BY env")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(Into::into)
    }

    /// The release serving the environment, if any.
    pub fn live(&self, env: &str) -> Result<Option<Release>> {
        Ok(self
            .query_releases(
                &format!(
                    "SELECT {RELEASE_COLUMNS} FROM releases WHERE env = ?1 AND state = 'live' ORDER BY id DESC LIMIT 1"
                ),
                params![env],
            )?
            .into_iter()
            .next())
    }

    /// Releases that became live, passed their monitor window and were never rolled back
    /// from, newest first.
    pub fn known_good(&self, env: &str) -> Result<Vec<Release>> {
        self.query_releases(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE env = ?1 AND passed_monitor = 1 \
                 AND state IN ('live', 'superseded') ORDER BY id DESC"
            ),
            params![env],
        )
    }

    /// The rollback target: the most recent known-good other than the live release, and older
    /// than what the live release restored (so a second rollback walks further back instead
    /// of bouncing between two versions).
    pub fn rollback_target(&self, env: &str) -> Result<Option<Release>> {
        let live = self.live(env)?;
        let origin = live.as_ref().map(|l| l.restored_from.unwrap_or(l.id));
        Ok(self
            .known_good(env)?
            .into_iter()
            .find(|r| Some(r.id) != live.as_ref().map(|l| l.id) && origin.is_none_or(|o| r.id < o)))
    }

    /// Releases left in a transient state (what a crashed server was doing).
    pub fn in_flight(&self) -> Result<Vec<Release>> {
        self.query_releases(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE state IN ('pending', 'starting', 'verifying') ORDER BY id"
            ),
            [],
        )
    }

    /// Live releases whose monitor window has not closed.
    pub fn monitoring(&self) -> Result<Vec<Release>> {
        self.query_releases(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE state = 'live' AND passed_monitor = 0 ORDER BY id"
            ),
            [],
        )
    }

    pub fn events(&self, id: i64) -> Result<Vec<Event>> {
        let mut stmt =
            self.conn.prepare("SELECT id, release_id, at, kind, message FROM events WHERE release_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        rows.map(|row| {
            let (id, release, at, kind, message) = row?;
            Ok(Event {
                id,
                release,
                at: parse_time(&at)?,
                kind,
                message,
            })
        })
        .collect()
    }

    /// Releases waiting at an environment's manual gate, newest first.
    pub fn awaiting(&self, env: &str) -> Result<Vec<Release>> {
        self.query_releases(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE env = ?1 AND state = 'awaiting-approval' ORDER BY id DESC"
            ),
            params![env],
        )
    }

    /// Records who approved a release, and when.
    pub fn approve(&mut self, id: i64, by: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE releases SET approved_by = ?1, approved_at = ?2 WHERE id = ?3",
            params![by, now(), id],
        )?;
        insert_event(&tx, id, "approved", &format!("approved by {by}"))?;
        tx.commit()?;
        Ok(())
    }

    /// Whether `version` passed a monitor window in `env` (what `requires` asks).
    pub fn passed_in(&self, env: &str, version: &str) -> Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM releases WHERE env = ?1 AND version = ?2 AND passed_monitor = 1",
            params![env, version],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Stops deploys to `env` (rollbacks still go) until [`Ledger::unfreeze`].
    pub fn freeze(&mut self, env: &str, by: &str, reason: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO freezes (env, frozen_by, reason, at) VALUES (?1, ?2, ?3, ?4)",
            params![env, by, reason, now()],
        )?;
        Ok(())
    }

    /// Lifts a freeze; false if the environment was not frozen.
    pub fn unfreeze(&mut self, env: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM freezes WHERE env = ?1", [env])?
            > 0)
    }

    pub fn frozen(&self, env: &str) -> Result<Option<Freeze>> {
        self.conn
            .query_row(
                "SELECT frozen_by, reason, at FROM freezes WHERE env = ?1",
                [env],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?
            .map(|(by, reason, at)| {
                Ok(Freeze {
                    by,
                    reason,
                    at: parse_time(&at)?,
                })
            })
            .transpose()
    }

    /// Records the hold on `env`'s edge (maintenance or pause), replacing any other.
    pub fn set_edge_hold(&mut self, env: &str, hold: &EdgeHold) -> Result<()> {
        let (kind, message, until) = match &hold.kind {
            EdgeHoldKind::Maintenance { message } => ("maintenance", Some(message.clone()), None),
            EdgeHoldKind::Pause { until } => ("pause", None, Some(until.to_rfc3339())),
        };
        self.conn.execute(
            "INSERT OR REPLACE INTO edge_holds (env, kind, message, until, held_by, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![env, kind, message, until, hold.by, hold.at.to_rfc3339()],
        )?;
        Ok(())
    }

    /// Lifts the hold on `env`'s edge; false if there was none.
    pub fn clear_edge_hold(&mut self, env: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM edge_holds WHERE env = ?1", [env])?
            > 0)
    }

    /// The hold on `env`'s edge as recorded (a pause whose time has passed included).
    pub fn edge_hold(&self, env: &str) -> Result<Option<EdgeHold>> {
        let row = self
            .conn
            .query_row(
                "SELECT kind, message, until, held_by, at FROM edge_holds WHERE env = ?1",
                [env],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((kind, message, until, by, at)) = row else {
            return Ok(None);
        };
        let kind = match (kind.as_str(), until) {
            ("pause", Some(until)) => EdgeHoldKind::Pause {
                until: parse_time(&until)?,
            },
            _ => EdgeHoldKind::Maintenance {
                message: message.unwrap_or_default(),
            },
        };
        Ok(Some(EdgeHold {
            kind,
            by,
            at: parse_time(&at)?,
        }))
    }

    /// Records one check's result for a commit.
    pub fn record_check(&mut self, sha: &str, run: &str, check: &CheckRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO checks (sha, run, name, status, duration_ms, exit, log_file, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                sha,
                run,
                check.name,
                check.status,
                check.duration_ms as i64,
                check.exit,
                check.log_file,
                now()
            ],
        )?;
        Ok(())
    }

    /// The results of the latest checks run of a commit (empty: its checks never ran).
    pub fn checks(&self, sha: &str) -> Result<Vec<CheckRecord>> {
        let run: Option<String> = self
            .conn
            .query_row(
                "SELECT run FROM checks WHERE sha = ?1 ORDER BY id DESC LIMIT 1",
                [sha],
                |r| r.get(0),
            )
            .optional()?;
        let Some(run) = run else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare(
            "SELECT name, status, duration_ms, exit, log_file FROM checks WHERE sha = ?1 AND run = ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![sha, run], |r| {
            Ok(CheckRecord {
                name: r.get(0)?,
                status: r.get(1)?,
                duration_ms: r.get::<_, i64>(2)? as u64,
                exit: r.get(3)?,
                log_file: r.get(4)?,
            })
        })?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(Into::into)
    }

    /// Issues an API token for a person; returns the token (only its hash is kept).
    /// Issues a token for `name` with `role` (replacing theirs); returns it, the only time it
    /// is seen: only its hash is kept.
    pub fn create_token(&mut self, name: &str, role: &str, created_by: &str) -> Result<String> {
        let token = format!("cut_{}", hex::encode(rand::random::<[u8; 24]>()));
        self.conn.execute(
            "INSERT OR REPLACE INTO tokens (name, hash, created_by, created_at, role) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, token_hash(&token), created_by, now(), role],
        )?;
        Ok(token)
    }

    /// Whose token this is and its role, if it is one.
    pub fn token_owner(&self, token: &str) -> Result<Option<(String, String)>> {
        self.conn
            .query_row(
                "SELECT name, role FROM tokens WHERE hash = ?1",
                [token_hash(token)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(Into::into)
    }

    /// Every token: (name, role, issued at), by name.
    pub fn tokens(&self) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, role, created_at FROM tokens ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(Into::into)
    }

    /// Records a call the server refused (no token, a revoked or unknown one, a role too
    /// small), with whose token it was if it was one.
    pub fn record_refusal(&mut self, refusal: &Refusal) -> Result<()> {
        self.conn.execute(
            "INSERT INTO refusals (at, token_name, method, path, status, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![now(), refusal.token_name, refusal.method, refusal.path, refusal.status, refusal.reason],
        )?;
        Ok(())
    }

    /// The most recent refused calls, newest first.
    pub fn refusals(&self, limit: usize) -> Result<Vec<Refusal>> {
        let mut stmt = self.conn.prepare(
            "SELECT at, token_name, method, path, status, reason FROM refusals ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        rows.map(|row| {
            let (at, token_name, method, path, status, reason) = row?;
            Ok(Refusal {
                at: Some(parse_time(&at)?),
                token_name,
                method,
                path,
                status,
                reason,
            })
        })
        .collect()
    }

    pub fn revoke_token(&mut self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM tokens WHERE name = ?1", [name])?
            > 0)
    }

    /// Records the start of a pipeline run.
    pub fn start_run(
        &mut self,
        sha: &str,
        trigger: &str,
        requested_by: &str,
    ) -> Result<PipelineRun> {
        self.conn.execute(
            "INSERT INTO pipeline_runs (sha, trigger, requested_by, state, started_at) VALUES (?1, ?2, ?3, 'running', ?4)",
            params![sha, trigger, requested_by, now()],
        )?;
        let id = self.conn.last_insert_rowid();
        self.run(id)?.ok_or(LedgerError::NoSuchRelease(id))
    }

    /// Records how a pipeline run ended.
    pub fn finish_run(&mut self, id: i64, exit_code: i32, message: &str) -> Result<()> {
        let state = match exit_code {
            0 => "succeeded",
            1 => "refused",
            _ => "failed",
        };
        self.conn.execute(
            "UPDATE pipeline_runs SET state = ?1, exit_code = ?2, message = ?3, ended_at = ?4 WHERE id = ?5",
            params![state, exit_code, message, now(), id],
        )?;
        Ok(())
    }

    pub fn run(&self, id: i64) -> Result<Option<PipelineRun>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE id = ?1");
        self.query_runs(&sql, [id]).map(|mut runs| runs.pop())
    }

    /// The most recent pipeline runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<PipelineRun>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM pipeline_runs ORDER BY id DESC LIMIT ?1");
        self.query_runs(&sql, [limit as i64])
    }

    fn query_runs(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<PipelineRun>> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i32>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        })?;
        rows.map(|row| {
            let (id, sha, trigger, requested_by, state, exit_code, message, started, ended) = row?;
            Ok(PipelineRun {
                id,
                sha,
                trigger,
                requested_by,
                state,
                exit_code,
                message,
                started_at: parse_time(&started)?,
                ended_at: ended.as_deref().map(parse_time).transpose()?,
            })
        })
        .collect()
    }

    fn query_releases(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Release>> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(params, row_to_release)?;
        rows.map(|r| r?).collect()
    }
}

fn insert_event(conn: &Connection, id: i64, kind: &str, message: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO events (release_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
        params![id, now(), kind, message],
    )?;
    Ok(())
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn migrate(conn: &Connection) -> Result<()> {
    // Tokens issued before roles existed could approve: they become `deploy`.
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('tokens')")?;
    let token_columns: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    if !token_columns.iter().any(|c| c == "role") {
        conn.execute_batch("ALTER TABLE tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'deploy'")?;
    }
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('releases')")?;
    let have: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    for (name, definition) in ADDED_RELEASE_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!(
                "ALTER TABLE releases ADD COLUMN {name} {definition}"
            ))?;
        }
    }
    Ok(())
}

fn row_to_release(r: &Row<'_>) -> rusqlite::Result<Result<Release>> {
    let snapshot: String = r.get(6)?;
    let kind: String = r.get(7)?;
    let state: String = r.get(10)?;
    let times: [Option<String>; 5] = [r.get(13)?, r.get(14)?, r.get(15)?, r.get(16)?, r.get(17)?];
    let approved_at: Option<String> = r.get(21)?;
    let promoted_from: Option<i64> = r.get(22)?;
    let promoted_from_env: Option<String> = r.get(23)?;
    let build = || -> Result<Release> {
        let opt = |s: &Option<String>| s.as_deref().map(parse_time).transpose();
        Ok(Release {
            id: r.get(0)?,
            app: r.get(1)?,
            env: r.get(2)?,
            version: r.get(3)?,
            artifact: r.get(4)?,
            digest: r.get(5)?,
            snapshot: serde_json::from_str(&snapshot)
                .map_err(|e| LedgerError::Corrupt(e.to_string()))?,
            kind: ReleaseKind::parse(&kind)
                .ok_or_else(|| LedgerError::Corrupt(format!("kind {kind}")))?,
            restored_from: r.get(8)?,
            requested_by: r.get(9)?,
            state: ReleaseState::parse(&state)
                .ok_or_else(|| LedgerError::Corrupt(format!("state {state}")))?,
            reason: r.get(11)?,
            passed_monitor: r.get::<_, i64>(12)? != 0,
            created_at: parse_time(times[0].as_deref().unwrap_or_default())?,
            started_at: opt(&times[1])?,
            live_at: opt(&times[2])?,
            monitor_until: opt(&times[3])?,
            ended_at: opt(&times[4])?,
            trigger: r.get(18)?,
            author: r.get(19)?,
            approved_by: r.get(20)?,
            approved_at: opt(&approved_at)?,
            promoted_from: promoted_from
                .zip(promoted_from_env)
                .map(|(release, env)| model::Promotion { release, env }),
        })
    };
    Ok(build())
}

fn now() -> String {
    fmt_time(Utc::now())
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| LedgerError::Corrupt(format!("time {s:?}: {e}")))
}

#[cfg(test)]
mod tests;
