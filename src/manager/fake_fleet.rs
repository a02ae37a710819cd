//! An in-memory fleet (LXD instances + GitHub registrations) implementing [`RunnerOps`] with
//! the documented contract, for driver tests. Test-only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::{Clock, ManualClock};
use crate::github::{GitHubRunner, RunnerOnline};
use crate::identity::RunnerName;
use crate::lxd::{Instance, InstanceState, InstanceType};
use crate::manager::ops::{Observation, OpError, RemoveOutcome, RunnerOps};
use crate::manager::planner::{Health, RemovalTarget, RUNNER_ID_CONFIG_KEY};
use crate::manager::replacement::{REPLACE_CONFIG_KEY, SCOPE_CONFIG_KEY};

/// The scope fingerprint this fleet's runners are made for.
pub const SCOPE: &str = "scope-now";

#[derive(Default)]
pub struct FleetState {
    pub instances: BTreeMap<String, Instance>,
    pub registrations: BTreeMap<String, GitHubRunner>,
    /// Epoch at which a job started inside each instance.
    pub job_started: BTreeMap<String, u64>,
    /// GitHub answers every call with an error (revoked token, outage).
    pub github_down: bool,
    /// These runners take a job just before their registration is deleted (the 422 race).
    pub take_job_on_delete: BTreeSet<String>,
    pub deleted_registrations: Vec<u64>,
    /// The next listing leaves these registrations out, as a paginated listing does when
    /// another registration is deleted between its pages.
    pub unlisted_once: BTreeSet<String>,
    /// `registration(id)` fails for these ids (a 5xx on the confirming call).
    pub registration_check_fails: BTreeSet<u64>,
    /// Ids asked for with `registration(id)`, in order.
    pub registration_checks: Vec<u64>,
    pub deleted_instances: Vec<String>,
    /// Every launch fails (a broken image); `create_attempts` counts tries either way.
    pub launch_broken: bool,
    pub create_attempts: u32,
    /// `mark_for_replacement` fails (an LXD hiccup).
    pub mark_broken: bool,
    /// `job_started_at` fails for these runners.
    pub job_probe_fails: BTreeSet<String>,
    /// The host `machine` answers with (its instances: this fleet's and `others`).
    pub host: crate::manager::admission::HostCapacity,
    /// Instances of other units on the machine.
    pub others: Vec<crate::lxd::MachineInstance>,
    next_id: u64,
}

pub struct FakeFleet {
    pub clock: Arc<ManualClock>,
    state: Mutex<FleetState>,
}

impl FakeFleet {
    pub fn new(clock: Arc<ManualClock>) -> Self {
        FakeFleet {
            clock,
            state: Mutex::new(FleetState {
                next_id: 1,
                ..FleetState::default()
            }),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, FleetState> {
        self.state.lock().unwrap()
    }

    /// Add a runner that came online `age` seconds ago.
    pub fn add_runner(&self, name: &str, age: u64, busy: bool) -> u64 {
        let now = self.clock.now_epoch();
        let mut s = self.state();
        let id = s.next_id;
        s.next_id += 1;
        s.instances
            .insert(name.to_string(), instance(name, id, now - age));
        s.registrations.insert(
            name.to_string(),
            GitHubRunner {
                id,
                name: name.to_string(),
                status: RunnerOnline::Online,
                busy,
                labels: vec![],
            },
        );
        id
    }

    /// Put `key` = `value` in a runner's instance config (a scope, a replacement mark).
    pub fn set_config(&self, name: &str, key: &str, value: &str) {
        if let Some(i) = self.state().instances.get_mut(name) {
            i.config.insert(key.to_string(), value.to_string());
        }
    }

    /// A runner's replacement mark, if any.
    pub fn mark(&self, name: &str) -> Option<String> {
        self.state()
            .instances
            .get(name)
            .and_then(|i| i.config.get(REPLACE_CONFIG_KEY).cloned())
    }

    /// Mark a runner busy with a job that started at `started_epoch`.
    pub fn start_job(&self, name: &str, started_epoch: u64) {
        let mut s = self.state();
        if let Some(r) = s.registrations.get_mut(name) {
            r.busy = true;
        }
        s.job_started.insert(name.to_string(), started_epoch);
    }

    pub fn names(&self) -> Vec<String> {
        let s = self.state();
        let mut names: BTreeSet<String> = s.instances.keys().cloned().collect();
        names.extend(s.registrations.keys().cloned());
        names.into_iter().collect()
    }
}

fn instance(name: &str, id: u64, created_at_epoch: u64) -> Instance {
    Instance {
        name: name.to_string(),
        state: InstanceState::Running,
        instance_type: InstanceType::Container,
        created_at_epoch,
        config: [
            (RUNNER_ID_CONFIG_KEY.to_string(), id.to_string()),
            (SCOPE_CONFIG_KEY.to_string(), SCOPE.to_string()),
        ]
        .into(),
        profiles: vec!["default".into()],
    }
}

fn github_down() -> OpError {
    OpError::needs_operator("GitHub rejected the token (401)")
}

impl RunnerOps for FakeFleet {
    fn machine(&self) -> Option<crate::manager::admission::Machine> {
        let s = self.state();
        let own = s.instances.keys().map(|name| crate::lxd::MachineInstance {
            project: "default".into(),
            name: name.clone(),
            limits: Default::default(),
        });
        Some(crate::manager::admission::Machine {
            host: s.host,
            instances: own.chain(s.others.iter().cloned()).collect(),
        })
    }

    fn observe(&self) -> Result<Observation, OpError> {
        let mut s = self.state();
        let skipped = std::mem::take(&mut s.unlisted_once);
        let github = if s.github_down {
            Err(github_down())
        } else {
            Ok(s.registrations
                .values()
                .filter(|r| !skipped.contains(&r.name))
                .cloned()
                .collect())
        };
        Ok(Observation {
            instances: s.instances.values().cloned().collect(),
            github,
        })
    }

    fn create(&self) -> Result<RunnerName, OpError> {
        let now = self.clock.now_epoch();
        let mut s = self.state();
        s.create_attempts += 1;
        if s.github_down {
            return Err(github_down());
        }
        if s.launch_broken {
            return Err(OpError::transient("lxc launch failed: image is broken"));
        }
        let id = s.next_id;
        s.next_id += 1;
        let name = format!("u-0-{id:012x}");
        s.registrations.insert(
            name.clone(),
            GitHubRunner {
                id,
                name: name.clone(),
                status: RunnerOnline::Offline,
                busy: false,
                labels: vec![],
            },
        );
        s.instances.insert(name.clone(), instance(&name, id, now));
        Ok(RunnerName(name))
    }

    fn remove(&self, target: &RemovalTarget, force: bool) -> Result<RemoveOutcome, OpError> {
        let name = target.name.as_str();
        let mut s = self.state();
        let delete_registration = |s: &mut FleetState| -> Result<bool, OpError> {
            let Some(id) = target.github_id else {
                return Ok(true);
            };
            if s.github_down {
                return Err(github_down());
            }
            if s.take_job_on_delete.remove(name) {
                if let Some(r) = s.registrations.get_mut(name) {
                    r.busy = true;
                }
            }
            match s.registrations.get(name) {
                Some(r) if r.id == id && r.busy => Ok(false),
                Some(r) if r.id == id => {
                    s.registrations.remove(name);
                    s.deleted_registrations.push(id);
                    Ok(true)
                }
                _ => Ok(true),
            }
        };
        let delete_instance = |s: &mut FleetState| {
            if target.has_instance && s.instances.remove(name).is_some() {
                s.deleted_instances.push(name.to_string());
                s.job_started.remove(name);
            }
        };
        if force {
            delete_instance(&mut s);
            // The listener is gone, so GitHub will see the runner offline and not busy.
            if let Some(r) = s.registrations.get_mut(name) {
                r.busy = false;
                r.status = RunnerOnline::Offline;
            }
            return match delete_registration(&mut s) {
                Ok(_) => Ok(RemoveOutcome::Removed),
                Err(e) => Ok(RemoveOutcome::RegistrationLeft { reason: e.message }),
            };
        }
        if !delete_registration(&mut s)? {
            return Ok(RemoveOutcome::KeptBusy);
        }
        delete_instance(&mut s);
        Ok(RemoveOutcome::Removed)
    }

    fn registration(&self, id: u64) -> Result<Option<GitHubRunner>, OpError> {
        let mut s = self.state();
        s.registration_checks.push(id);
        if s.github_down || s.registration_check_fails.contains(&id) {
            return Err(OpError::transient("GitHub server error 502"));
        }
        Ok(s.registrations.values().find(|r| r.id == id).cloned())
    }

    fn health(&self, _instance: &str) -> Health {
        Health::Running
    }

    fn job_started_at(&self, name: &RunnerName) -> Result<Option<u64>, OpError> {
        let s = self.state();
        if s.job_probe_fails.contains(name.as_str()) {
            return Err(OpError::transient("lxc exec failed"));
        }
        Ok(s.job_started.get(name.as_str()).copied())
    }

    fn mark_for_replacement(&self, name: &RunnerName, scope: &str) -> Result<(), OpError> {
        let mut s = self.state();
        if s.mark_broken {
            return Err(OpError::transient("lxc query PATCH failed"));
        }
        match s.instances.get_mut(name.as_str()) {
            Some(i) => {
                i.config
                    .insert(REPLACE_CONFIG_KEY.to_string(), scope.to_string());
                Ok(())
            }
            None => Err(OpError::transient(format!("instance {name} not found"))),
        }
    }
}
