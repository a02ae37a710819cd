//! [`MemoryRunners`]: the runner side of a listener in memory, for tests of the listener
//! (unit tests and the integration test over the fake service).

use super::api::{ListenerInstance, ListenerRunners, RunnerSideError};
use super::scaling::RunnerState;
use crate::clock::Clock;
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub struct MemoryRunners {
    inner: Mutex<Inner>,
    /// Stamps each instance's creation time.
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct Inner {
    prefix: String,
    next: u32,
    /// name -> (runner id, state, JIT config, created at, scale set id).
    instances: BTreeMap<String, (u64, RunnerState, Secret, u64, u64)>,
    failing_removals: u32,
    failing_creates: u32,
    log: Vec<String>,
}

impl MemoryRunners {
    /// Runners named `<prefix>-<n>`, made at `clock`'s time.
    pub fn new(prefix: &str, clock: Arc<dyn Clock>) -> MemoryRunners {
        MemoryRunners {
            inner: Mutex::new(Inner {
                prefix: prefix.to_string(),
                ..Inner::default()
            }),
            clock,
        }
    }

    /// An instance made outside this listener (a leftover the repair is to find).
    pub fn insert(&self, name: &str, scale_set_id: u64, runner_id: u64, created_at_epoch: u64) {
        self.with(|i| {
            i.instances.insert(
                name.to_string(),
                (
                    runner_id,
                    RunnerState::Starting,
                    Secret::new(""),
                    created_at_epoch,
                    scale_set_id,
                ),
            );
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A test double: a panic elsewhere poisoning it may as well fail the test.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut inner)
    }

    pub fn instances(&self) -> Vec<ListenerInstance> {
        self.with(|i| listing(i))
    }

    pub fn set_state(&self, name: &str, state: RunnerState) {
        self.with(|i| {
            if let Some(entry) = i.instances.get_mut(name) {
                entry.1 = state;
            }
        });
    }

    /// Every instance goes from starting to idle (their runners came online).
    pub fn all_online(&self) {
        self.with(|i| {
            for entry in i.instances.values_mut() {
                if entry.1 == RunnerState::Starting {
                    entry.1 = RunnerState::Idle;
                }
            }
        });
    }

    pub fn jit_config(&self, name: &str) -> Option<String> {
        self.with(|i| i.instances.get(name).map(|e| e.2.expose().to_string()))
    }

    pub fn fail_next_removals(&self, n: u32) {
        self.with(|i| i.failing_removals = n);
    }

    pub fn fail_next_creates(&self, n: u32) {
        self.with(|i| i.failing_creates = n);
    }

    /// `create <name>` / `remove <name>`, in order.
    pub fn log(&self) -> Vec<String> {
        self.with(|i| i.log.clone())
    }
}

fn listing(inner: &Inner) -> Vec<ListenerInstance> {
    inner
        .instances
        .iter()
        .map(
            |(name, (runner_id, state, _, created, scale_set_id))| ListenerInstance {
                name: name.clone(),
                runner_id: *runner_id,
                state: *state,
                created_at_epoch: *created,
                scale_set_id: *scale_set_id,
            },
        )
        .collect()
}

impl ListenerRunners for MemoryRunners {
    fn new_runner_name(&self) -> Result<String, RunnerSideError> {
        Ok(self.with(|i| {
            i.next += 1;
            format!("{}-{}", i.prefix, i.next)
        }))
    }

    fn create(
        &self,
        name: &str,
        scale_set_id: u64,
        runner_id: u64,
        jit: &Secret,
    ) -> Result<(), RunnerSideError> {
        let now = self.clock.now_epoch();
        self.with(|i| {
            i.log.push(format!("create {name}"));
            if i.failing_creates > 0 {
                i.failing_creates -= 1;
                return Err(RunnerSideError {
                    name: name.into(),
                    reason: "launch failed (test)".into(),
                });
            }
            i.instances.insert(
                name.to_string(),
                (
                    runner_id,
                    RunnerState::Starting,
                    jit.clone(),
                    now,
                    scale_set_id,
                ),
            );
            Ok(())
        })
    }

    fn remove(&self, name: &str) -> Result<(), RunnerSideError> {
        self.with(|i| {
            i.log.push(format!("remove {name}"));
            if i.failing_removals > 0 {
                i.failing_removals -= 1;
                return Err(RunnerSideError {
                    name: name.into(),
                    reason: "delete failed (test)".into(),
                });
            }
            i.instances.remove(name);
            Ok(())
        })
    }

    fn list(&self) -> Result<Vec<ListenerInstance>, RunnerSideError> {
        Ok(self.with(|i| listing(i)))
    }
}
