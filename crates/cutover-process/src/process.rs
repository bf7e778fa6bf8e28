//! The process runtime: one detached `cutover supervise` per instance.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cutover_daemon::{pid_alive, pid_runs};
use cutover_runtime::{
    free_port, launch_env, validate_id, InstanceInfo, InstanceSpec, InstanceState, PlaceRequest,
    Placement, Runtime, RuntimeError, Workload,
};

use crate::{instances_dir, log_path, state_path, validate, Launch, StateFile};

/// How long `start` waits for the supervisor to report that the instance started (generous: a
/// loaded machine can take seconds to fork, exec and schedule it).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// What `stop` waits for a supervisor beyond the instance's stop_timeout.
const STOP_GRACE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(20);
/// Every supervisor's command line contains this.
const SUPERVISOR_MARK: &[&str] = &["supervise"];

/// Runs every instance as a process under its own supervisor (`<exe> supervise`), which is not
/// a child of this process and outlives it.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    state_dir: PathBuf,
    exe: PathBuf,
}

impl ProcessRuntime {
    /// `exe` is the `cutover` binary, which has the `supervise` role.
    pub fn new(state_dir: &Path, exe: &Path) -> ProcessRuntime {
        ProcessRuntime {
            state_dir: state_dir.to_path_buf(),
            exe: exe.to_path_buf(),
        }
    }

    /// The state file of `id`, if there is one.
    fn read_state(&self, id: &str) -> Result<Option<StateFile>, RuntimeError> {
        read_state_file(&state_path(&self.state_dir, id))
    }

    /// The state of `id` if its supervisor is alive, or `unsupervised` if the supervisor died
    /// and left its instance running (killed with SIGKILL, say): the instance still answers,
    /// and only a stop may end it. Removes the file of one that is gone altogether.
    fn live_state(&self, id: &str) -> Result<Option<StateFile>, RuntimeError> {
        let path = state_path(&self.state_dir, id);
        let Some(mut state) = read_state_file(&path)? else {
            return Ok(None);
        };
        if state
            .info
            .supervisor_pid
            .is_some_and(|pid| pid_runs(pid, SUPERVISOR_MARK))
        {
            return Ok(Some(state));
        }
        if state.info.pid.is_some_and(|pid| is_instance(pid, id)) {
            state.info.state = InstanceState::Unsupervised;
            return Ok(Some(state));
        }
        remove(&path)?;
        Ok(None)
    }
}

fn read_state_file(path: &Path) -> Result<Option<StateFile>, RuntimeError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RuntimeError::io(format!("reading {}", path.display()), e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        RuntimeError::io(
            format!("reading {}", path.display()),
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    })
}

/// Whether the process group led by `pid` (an instance: its supervisor makes it a group
/// leader) still has a member.
fn group_alive(pid: u32) -> bool {
    let Ok(pgid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the group exists and may be signalled.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// Whether `pid` is still the process of instance `id` (not a reused pid): its environment
/// names the instance, as the supervisor sets it.
fn is_instance(pid: u32, id: &str) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let mark = format!("CUTOVER_INSTANCE={id}");
    group_alive(pid) && environ.split(|b| *b == 0).any(|v| v == mark.as_bytes())
}

/// The process groups that carry instance `id`'s mark: what is left of it when its supervisor
/// died before it could write the instance's pid down (SIGKILLed between starting the
/// instance and writing its state file, say). Only group leaders: the supervisor makes every
/// instance one, and ending the group ends what the instance started.
fn orphans(id: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_instance(*pid, id) && leads_its_group(*pid))
        .collect()
}

fn leads_its_group(pid: u32) -> bool {
    let Ok(pid_t) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: getpgid only reads the process group of a pid.
    unsafe { libc::getpgid(pid_t) == pid_t }
}

/// Ends the process groups of instance `id` that no supervisor looks after: SIGTERM, up to
/// `timeout` to exit, then SIGKILL.
async fn end_orphans(id: &str, known: Option<u32>, timeout: Duration) {
    let mut groups = orphans(id);
    if let Some(pid) = known.filter(|pid| is_instance(*pid, id)) {
        if !groups.contains(&pid) {
            groups.push(pid);
        }
    }
    if groups.is_empty() {
        return;
    }
    for pid in &groups {
        cutover_daemon::signal_group(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + timeout;
    while groups.iter().any(|pid| group_alive(*pid)) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    for pid in &groups {
        cutover_daemon::signal_group(*pid, libc::SIGKILL);
    }
}

fn remove(path: &Path) -> Result<(), RuntimeError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(RuntimeError::io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

impl Runtime for ProcessRuntime {
    async fn identify(&self, req: &PlaceRequest<'_>) -> Result<String, RuntimeError> {
        Ok(req.artifact.digest.clone())
    }

    async fn place(&self, req: &PlaceRequest<'_>) -> Result<Placement, RuntimeError> {
        let release_dir = self
            .state_dir
            .join("releases")
            .join(req.env)
            .join(req.release.to_string());
        let data_dir = self.state_dir.join("data").join(req.env);
        let store_dir = self.state_dir.join("artifacts");
        let artifact = req.artifact.clone();
        let name = format!("{}:{}", req.app, req.version);
        let dir = release_dir.clone();
        tokio::task::spawn_blocking(move || -> Result<(), RuntimeError> {
            if !dir.join(".unpacked").exists() {
                let _ = fs::remove_dir_all(&dir);
                let store = cutover_artifact::ArtifactStore::open(&store_dir)
                    .map_err(|e| RuntimeError::Place(format!("opening the artifact store: {e}")))?;
                store
                    .unpack(&artifact, &dir)
                    .map_err(|e| RuntimeError::Place(format!("unpacking {name}: {e}")))?;
                let _ = fs::write(dir.join(".unpacked"), &artifact.digest);
            }
            Ok(())
        })
        .await
        .map_err(|e| RuntimeError::Place(format!("unpacking: {e}")))??;
        fs::create_dir_all(&data_dir)
            .map_err(|e| RuntimeError::io(format!("creating {}", data_dir.display()), e))?;
        Ok(Placement {
            workload: Workload::Bundle { dir: release_dir },
            data_dir: Some(data_dir.display().to_string()),
            volumes: Vec::new(),
            constraints: Vec::new(),
        })
    }

    async fn start(&self, spec: InstanceSpec) -> Result<InstanceInfo, RuntimeError> {
        cutover_runtime::validate(&spec).map_err(RuntimeError::InvalidSpec)?;
        let Workload::Bundle { dir } = &spec.placement.workload else {
            return Err(RuntimeError::InvalidSpec(format!(
                "instance {} is not a bundle: the process runtime runs unpacked bundles",
                spec.id
            )));
        };
        let port = free_port().map_err(|e| RuntimeError::io("picking a free port", e))?;
        let (argv, vars) = launch_env(&spec, port)?;
        let spec = Launch {
            id: spec.id.clone(),
            app: spec.app.clone(),
            env: spec.env.clone(),
            release: spec.release,
            version: spec.version.clone(),
            argv,
            cwd: dir.clone(),
            vars,
            port,
            stop_timeout: spec.stop_timeout,
        };
        validate(&spec).map_err(RuntimeError::InvalidSpec)?;
        if self.live_state(&spec.id)?.is_some() {
            return Err(RuntimeError::AlreadyRunning(spec.id));
        }
        let id = spec.id.clone();
        let path = state_path(&self.state_dir, &id);
        // A leftover from a supervisor that failed; the new one writes a fresh file.
        remove(&path)?;
        let payload = serde_json::to_vec(&spec)
            .map_err(|e| RuntimeError::InvalidSpec(format!("instance {id}: {e}")))?;
        drop(spec);
        let mut command = Command::new(&self.exe);
        command
            .arg("supervise")
            .arg("--state-dir")
            .arg(&self.state_dir);
        let exe = self.exe.clone();
        let pid = tokio::task::spawn_blocking(move || {
            cutover_daemon::spawn_detached(command, Some(&payload))
        })
        .await
        .map_err(|e| RuntimeError::Supervisor(format!("starting the supervisor of {id}: {e}")))?
        .map_err(|e| RuntimeError::io(format!("starting {} supervise", exe.display()), e))?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // Read the file before checking the pid, so a supervisor that wrote its error and
            // exited in between is still heard.
            let alive = pid_alive(pid);
            if let Some(state) = read_state_file(&path)? {
                if state.info.supervisor_pid == Some(pid) {
                    if let Some(error) = state.error {
                        remove(&path)?;
                        return Err(RuntimeError::Start(error));
                    }
                    if state.info.state != InstanceState::Starting {
                        return Ok(state.info);
                    }
                }
            }
            if !alive {
                // It may have started the instance before it died: end what it left.
                end_orphans(&id, None, STOP_GRACE).await;
                let _ = remove(&path);
                return Err(RuntimeError::Supervisor(format!(
                    "the supervisor of instance {id} (pid {pid}) exited before starting it"
                )));
            }
            if Instant::now() >= deadline {
                let _ = self.stop(&id).await;
                cutover_daemon::signal(pid, libc::SIGKILL);
                end_orphans(&id, None, STOP_GRACE).await;
                return Err(RuntimeError::Supervisor(format!(
                    "the supervisor of instance {id} (pid {pid}) did not start it within {:?}",
                    START_TIMEOUT
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let path = state_path(&self.state_dir, id);
        let Some(state) = self.read_state(id)? else {
            // No state file: nothing of it should run, unless a supervisor died before it
            // wrote one.
            end_orphans(id, None, STOP_GRACE).await;
            return Ok(());
        };
        let pid = state.info.supervisor_pid.unwrap_or(0);
        if pid == 0 || !pid_runs(pid, SUPERVISOR_MARK) {
            // Its supervisor died: stop the orphaned instance's process group ourselves.
            end_orphans(id, state.info.pid, state.stop_timeout).await;
        } else {
            cutover_daemon::signal(pid, libc::SIGTERM);
            let deadline = Instant::now() + state.stop_timeout + STOP_GRACE;
            while pid_runs(pid, SUPERVISOR_MARK) && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            if pid_runs(pid, SUPERVISOR_MARK) {
                // A stuck supervisor: take it and its instance down by force.
                let child = self.read_state(id)?.and_then(|s| s.info.pid);
                if let Some(child) = child {
                    cutover_daemon::signal_group(child, libc::SIGKILL);
                }
                cutover_daemon::signal(pid, libc::SIGKILL);
                let deadline = Instant::now() + STOP_GRACE;
                while pid_alive(pid) && Instant::now() < deadline {
                    tokio::time::sleep(POLL).await;
                }
                if pid_alive(pid) {
                    return Err(RuntimeError::Supervisor(format!(
                        "the supervisor of instance {id} (pid {pid}) survived SIGKILL"
                    )));
                }
            }
        }
        remove(&path)
    }

    async fn inspect(&self, id: &str) -> Result<Option<InstanceInfo>, RuntimeError> {
        if validate_id(id).is_err() {
            return Ok(None);
        }
        Ok(self.live_state(id)?.map(|s| s.info))
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        let dir = instances_dir(&self.state_dir);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io(format!("reading {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| RuntimeError::io(format!("reading {}", dir.display()), e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if validate_id(id).is_err() {
                continue; // temporary files of write_atomic, strangers
            }
            if let Some(state) = self.live_state(id)? {
                out.push(state.info);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        validate_id(id).map_err(RuntimeError::InvalidSpec)?;
        let path = match self.read_state(id)? {
            Some(StateFile {
                info:
                    InstanceInfo {
                        log_file: Some(file),
                        ..
                    },
                ..
            }) => file,
            // A stopped instance keeps its log; find it under any environment.
            _ => find_log(&self.state_dir, id)?.ok_or_else(|| RuntimeError::NotFound(id.into()))?,
        };
        cutover_daemon::log::tail(&path, lines)
            .map_err(|e| RuntimeError::io(format!("reading {}", path.display()), e))
    }
}

/// `<state>/logs/<env>/<id>.log` for whichever env has one.
fn find_log(state_dir: &Path, id: &str) -> Result<Option<PathBuf>, RuntimeError> {
    let logs = state_dir.join("logs");
    let envs = match fs::read_dir(&logs) {
        Ok(envs) => envs,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RuntimeError::io(format!("reading {}", logs.display()), e)),
    };
    Ok(envs
        .filter_map(Result::ok)
        .filter_map(|env| env.file_name().into_string().ok())
        .map(|env| log_path(state_dir, &env, id))
        .find(|p| p.is_file()))
}
