//! Doubles for the reactive worker's edges in tests that are about something else (the
//! broker, GitHub): a report recorder and runners that only count.
#![allow(dead_code)]

use github_runner::reactive::worker::{
    JobRunners, RunnerRemoval, SpawnFailure, WorkerEvent, WorkerReport, WorkerState,
};
use std::sync::Mutex;

#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<WorkerEvent>>,
    pub states: Mutex<Vec<WorkerState>>,
}

impl Recorder {
    pub fn last_state(&self) -> WorkerState {
        self.states
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

impl WorkerReport for Recorder {
    fn event(&self, event: WorkerEvent) {
        self.events.lock().unwrap().push(event);
    }
    fn state(&self, state: &WorkerState) {
        self.states.lock().unwrap().push(state.clone());
    }
}

/// Runners that exist only as a count: creation runs `on_create`, removal always succeeds,
/// none outlives its worker's look.
pub struct CountedRunners<'a> {
    pub created: Mutex<u32>,
    pub on_create: Box<dyn Fn() + Sync + 'a>,
}

impl<'a> CountedRunners<'a> {
    pub fn new(on_create: impl Fn() + Sync + 'a) -> Self {
        CountedRunners {
            created: Mutex::new(0),
            on_create: Box::new(on_create),
        }
    }
}

impl JobRunners for CountedRunners<'_> {
    fn new_name(&self) -> Result<String, String> {
        Ok(format!(
            "github-runner-0-{:012x}",
            *self.created.lock().unwrap() + 1
        ))
    }
    fn create(&self, _name: &str) -> Result<(), SpawnFailure> {
        *self.created.lock().unwrap() += 1;
        (self.on_create)();
        Ok(())
    }
    fn remove_if_idle(&self, _name: &str) -> Result<RunnerRemoval, String> {
        Ok(RunnerRemoval::Removed)
    }
    fn exists(&self, _name: &str) -> Result<bool, String> {
        Ok(false)
    }
}
