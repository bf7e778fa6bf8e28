//! How a deploy or rollback ended, mapped onto the exit codes users script against, and the
//! progress lines a deploy reports while it runs. The server turns both into wire types.

/// One line of progress.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A step of the state machine ("starting 1 instance", "cutting over").
    Step { message: String },
    /// Supporting detail (a probe failure, a log line).
    Detail { message: String },
    /// The release this command created, as soon as it exists: a caller whose connection
    /// breaks off knows which release to follow.
    Release { id: i64 },
}

impl Progress {
    pub fn step(message: impl Into<String>) -> Progress {
        Progress::Step {
            message: message.into(),
        }
    }

    pub fn detail(message: impl Into<String>) -> Progress {
        Progress::Detail {
            message: message.into(),
        }
    }
}

/// How a command that changes an environment ended (the exit codes):
/// `0` the requested version is live · `1` refused, nothing changed · `3` a new instance failed
/// and the rollback target serves · `4` it failed and restoring the rollback target failed too.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub exit_code: i32,
    pub release: Option<i64>,
    pub message: String,
    pub hint: Option<String>,
    /// The failing instance's last log lines.
    pub logs: Vec<String>,
}

impl Outcome {
    pub fn done(release: i64, message: impl Into<String>) -> Outcome {
        Outcome {
            exit_code: 0,
            release: Some(release),
            message: message.into(),
            hint: None,
            logs: Vec::new(),
        }
    }

    pub fn refused(message: impl Into<String>, hint: Option<String>) -> Outcome {
        Outcome {
            exit_code: 1,
            release: None,
            message: message.into(),
            hint,
            logs: Vec::new(),
        }
    }

    pub fn failed_restored(
        release: Option<i64>,
        message: impl Into<String>,
        logs: Vec<String>,
    ) -> Outcome {
        Outcome {
            exit_code: 3,
            release,
            message: message.into(),
            hint: None,
            logs,
        }
    }

    pub fn failed_unrestored(
        release: Option<i64>,
        message: impl Into<String>,
        logs: Vec<String>,
    ) -> Outcome {
        Outcome {
            exit_code: 4,
            release,
            message: message.into(),
            hint: None,
            logs,
        }
    }

    pub fn with_release(mut self, release: i64) -> Outcome {
        self.release = Some(release);
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Outcome {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_success(&self) -> bool {
        self.exit_code == 0
    }
}
