//! What the engine keeps in memory only: the secret values and artifact logins of the releases
//! this server started, for restarts, restores and healing. Never written anywhere.

use std::collections::BTreeMap;

use cutover_config::Config;
use cutover_ledger::Release;
use cutover_runtime::Runtime;

use crate::{Edge, Engine, Prober};

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// Keeps a release's secret values and artifact login in memory, for restarts and restores.
    pub(crate) fn remember(
        &self,
        release: i64,
        secrets: BTreeMap<String, String>,
        login: Option<(String, String)>,
    ) {
        self.remember_secrets(release, secrets);
        if let Some(login) = login {
            crate::locked(&self.inner.artifact_logins).insert(release, login);
        }
    }

    pub(crate) fn remember_secrets(&self, release: i64, secrets: BTreeMap<String, String>) {
        crate::locked(&self.inner.secrets).insert(release, secrets);
    }

    /// The secret values of a release: given by the caller, remembered from its start, or
    /// resolved here (after a server restart) from their sources.
    pub(crate) fn secrets_for(
        &self,
        release: &Release,
        config: &Config,
        given: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        if config.secrets_complete(&given) {
            return Ok(given);
        }
        let remembered = crate::locked(&self.inner.secrets);
        let from = release.restored_from.unwrap_or(release.id);
        for id in [release.id, from] {
            if let Some(s) = remembered.get(&id) {
                // Remembered values were completed here, `on = "server"` ones included.
                if config.secrets.keys().all(|k| s.contains_key(k)) {
                    return Ok(s.clone());
                }
            }
        }
        drop(remembered);
        config
            .complete_secrets(&self.inner.options.repo_root, given)
            .map_err(|e| e.to_string())
    }

    /// The login the runtime needs to get a release's artifact in place: given with the deploy,
    /// or the committed config's (`[registry]`, read by the config crate), resolved here.
    pub(crate) fn artifact_login_for(
        &self,
        release: &Release,
        config: &Config,
    ) -> Option<(String, String)> {
        let given = crate::locked(&self.inner.artifact_logins);
        let from = release.restored_from.unwrap_or(release.id);
        if let Some(login) = given.get(&release.id).or_else(|| given.get(&from)) {
            return Some(login.clone());
        }
        drop(given);
        config
            .registry_credentials(&self.inner.options.repo_root)
            .ok()
            .flatten()
    }
}
