//! The pure reconcile planner: from what LXD and GitHub say about this unit's runners, decide
//! what to create and what to remove. No I/O; every decision is in [`plan`].
//!
//! A runner is one LXD instance plus (usually) one GitHub registration with the same name.
//! Each name seen on either side is classified once ([`Condition`]); capacity is the runners
//! that are or will soon be able to take a job (busy, idle, creating), and the plan closes the
//! gap to the desired count. Busy runners are never planned for removal, and no runner is
//! planned for removal twice. Runners waiting for their job to end before replacement
//! (flushed while busy, or of a previous scope: [`crate::manager::replacement`]) are kept
//! while they run and removed once their job ended; they are not capacity.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::github::{GitHubRunner, RunnerOnline};
use crate::identity::RunnerName;
use crate::lxd::{Instance, InstanceState};
use crate::manager::replacement::{self, Standing};

/// Instance config key holding the GitHub runner id of the registration the instance was
/// started with (set at launch: the JIT registration exists before the instance does).
///
/// It tells "registered and since gone from GitHub" (an ephemeral runner that finished its
/// job) from "never registered yet" (creation in progress), which the names alone cannot.
pub const RUNNER_ID_CONFIG_KEY: &str = "user.github-runner.runner-id";

/// Instance config key holding the id of the scale set a scale-set runner was made for
/// (its listener counts and drains runners by it).
pub const SCALE_SET_ID_CONFIG_KEY: &str = "user.github-runner.scale-set-id";

/// How long after launch an offline runner may show neither its start script nor its
/// listener before it counts as never started. Creation starts the script before the hook
/// that made it returns, so only a creation cut short stays without one this long.
pub const STALLED_START_SECS: u64 = 60;

/// Whether the runner listener process is running inside an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Running,
    NotRunning,
    /// Not checked, or the check itself failed: never grounds for removal.
    Unknown,
}

/// The runner application binary, as the charm's cache knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BinaryState {
    /// A verified binary is available: runners can be created.
    pub ready: bool,
    /// When the current binary replaced an older one; instances created before it run the old
    /// binary. None when it never changed since the charm installed it.
    pub updated_at_epoch: Option<u64>,
}

/// Everything the planner looks at, as plain data.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub desired: u32,
    /// This unit's instances (already filtered by owner key).
    pub instances: &'a [Instance],
    /// This unit's registrations (already filtered by name).
    pub github: &'a [GitHubRunner],
    /// Listener health per instance name; a missing entry is [`Health::Unknown`].
    pub health: &'a BTreeMap<String, Health>,
    /// Recorded runner ids the listing lacked and GitHub then answered 404 for, one by one
    /// (see [`unlisted_registrations`]). A listing alone never proves a registration gone:
    /// a registration deleted while the listing is between pages shifts a live one out of it.
    pub confirmed_gone: &'a BTreeSet<u64>,
    pub binary: BinaryState,
    pub now_epoch: u64,
    /// How long a new instance may stay unregistered or offline before it counts as broken.
    pub grace_secs: u64,
    /// Fingerprint of the scope served now: instances of another one wait for their job.
    pub scope: &'a str,
}

/// Why a runner is removed; shown in logs, reports and action output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RemovalReason {
    /// More runners than desired; an idle or creating one goes.
    Surplus,
    /// Idle on a runner binary older than the current one.
    Outdated,
    /// Online on GitHub, but its listener process is not running.
    ListenerDown,
    /// Registered, but not online on GitHub once the grace period is over.
    Offline,
    /// No registration on GitHub once the grace period is over.
    NeverRegistered,
    /// Registered but offline, and neither its start script nor its listener runs: its
    /// creation was cut short (a killed hook). Without this it would hold capacity until the
    /// grace period ends.
    NeverStarted,
    /// It was registered and GitHub no longer lists it: it finished its job (ephemeral
    /// runners deregister themselves) or someone deleted it.
    RegistrationGone,
    InstanceError,
    InstanceStopped,
    /// A registration with no instance behind it.
    OrphanRegistration,
    /// Removed by a flush, or flushed earlier and no longer busy.
    Flush,
}

impl RemovalReason {
    pub fn describe(self) -> &'static str {
        match self {
            RemovalReason::Surplus => "surplus to the desired count",
            RemovalReason::Outdated => "runs an outdated runner binary",
            RemovalReason::ListenerDown => "listener not running",
            RemovalReason::Offline => "not online on GitHub after the grace period",
            RemovalReason::NeverRegistered => "never registered on GitHub within the grace period",
            RemovalReason::NeverStarted => "runner never started (no start script, no listener)",
            RemovalReason::RegistrationGone => "no longer registered on GitHub (job finished)",
            RemovalReason::InstanceError => "instance in Error state",
            RemovalReason::InstanceStopped => "instance stopped",
            RemovalReason::OrphanRegistration => "registration without an instance",
            RemovalReason::Flush => "flushed",
        }
    }
}

impl fmt::Display for RemovalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// What to remove for one runner: its instance, its registration, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalTarget {
    pub name: RunnerName,
    /// An instance of that name exists and must be deleted.
    pub has_instance: bool,
    /// The registration to delete, when GitHub lists one.
    pub github_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub target: RemovalTarget,
    pub reason: RemovalReason,
    /// Delete the instance even if the runner turned busy (it cannot be running a job, or
    /// the caller asked to flush busy runners). Without it, a 422 from GitHub keeps the runner.
    pub force: bool,
}

/// How the planner classified a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Running a job: capacity, never removed by reconcile.
    Busy,
    /// Online and waiting for a job: capacity.
    Idle,
    /// Not online yet, within the grace period: capacity.
    Creating,
    /// Planned for removal for this reason (not capacity).
    Removing(RemovalReason),
    /// Instance in a transitional state (Stopping, Frozen, ...): left alone, not capacity.
    Transitional,
    /// Registration busy on GitHub with no instance: GitHub has not noticed yet; left alone.
    BusyWithoutInstance,
    /// Its recorded registration is missing from the listing and GitHub did not confirm it
    /// gone (the check failed or was not made): it may be running a job, so it is left alone
    /// and not counted as capacity until a round can tell.
    Unconfirmed,
    /// Flushed while busy, or of a previous scope, and still running: kept until its job
    /// ends, then removed. Not capacity, but it holds host resources (admission counts it).
    Replacing,
}

impl Condition {
    pub fn is_capacity(self) -> bool {
        matches!(
            self,
            Condition::Busy | Condition::Idle | Condition::Creating
        )
    }
}

/// One runner as the planner saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerView {
    pub name: RunnerName,
    pub condition: Condition,
    pub has_instance: bool,
    pub github_id: Option<u64>,
    pub online: Option<RunnerOnline>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub desired: u32,
    /// Runners to create.
    pub create: u32,
    /// Creations held back because the runner binary is not ready.
    pub creates_deferred: u32,
    /// Creations held back by the host's capacity or the round's cap (admission).
    pub held_back: crate::manager::admission::HeldBack,
    /// Busy + idle + creating runners before the plan runs (surplus ones included).
    pub capacity: u32,
    /// Each runner at most once, in name order.
    pub removals: Vec<Removal>,
    /// Every runner seen, in name order (a duplicate registration appears as its own entry).
    pub runners: Vec<RunnerView>,
}

impl Plan {
    /// Test fixture: `desired` runners wanted, nothing seen, nothing to do.
    #[cfg(test)]
    pub(crate) fn empty(desired: u32) -> Plan {
        Plan {
            desired,
            create: 0,
            creates_deferred: 0,
            held_back: Default::default(),
            capacity: 0,
            removals: vec![],
            runners: vec![],
        }
    }

    /// `desired - capacity`, the `delta.virtual-machines` of the Python charm's actions.
    pub fn delta(&self) -> i64 {
        i64::from(self.desired) - i64::from(self.capacity)
    }

    pub fn count(&self, condition: Condition) -> usize {
        self.runners
            .iter()
            .filter(|r| r.condition == condition)
            .count()
    }

    pub fn is_noop(&self) -> bool {
        self.create == 0 && self.removals.is_empty()
    }
}

/// One name as both sides see it.
struct Pair<'a> {
    name: &'a str,
    instance: Option<&'a Instance>,
    registration: Option<&'a GitHubRunner>,
}

/// Decide what to create and remove. Pure.
///
/// Per runner name:
/// - instance Error or Stopped: remove at once, forced (it cannot be running a job);
/// - instance Starting within grace: creating; other transitional states: left alone;
/// - listed busy: busy (never removed by reconcile, whatever its health);
/// - listed online, listener not running: remove; otherwise idle;
/// - listed offline: removed when nothing runs in it [`STALLED_START_SECS`] after launch;
///   otherwise creating within grace, removed after;
/// - not listed but the instance records a runner id: when GitHub confirmed that id gone
///   (404), it registered and left (job done): remove the instance only; otherwise left
///   alone ([`Condition::Unconfirmed`]); not listed and no id: creating within grace,
///   removed after;
/// - listed with no instance: delete the registration, unless busy (left for GitHub);
/// - flushed while busy, or of another scope than `input.scope`: [`flushed`], [`other_scope`].
///
/// Idle and creating runners on a binary older than the current one are removed. Then
/// surplus capacity goes (creating before idle, newest first), or the shortfall is created.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let (pairs, duplicates) = pair_up(input.instances, input.github);
    let mut runners: Vec<RunnerView> = pairs.iter().map(|p| classify(p, input)).collect();

    for dup in duplicates {
        // GitHub refuses duplicate names in one scope, so this is another scope's leftover;
        // an idle one is deleted like any orphan, a busy one is left to finish.
        let condition = if dup.busy {
            Condition::BusyWithoutInstance
        } else {
            Condition::Removing(RemovalReason::OrphanRegistration)
        };
        runners.push(RunnerView {
            name: RunnerName(dup.name.clone()),
            condition,
            has_instance: false,
            github_id: Some(dup.id),
            online: Some(dup.status),
        });
    }

    let observed_capacity = runners.iter().filter(|r| r.condition.is_capacity()).count() as u32;
    if observed_capacity > input.desired {
        let surplus = (observed_capacity - input.desired) as usize;
        let created_at: BTreeMap<&str, u64> = input
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i.created_at_epoch))
            .collect();
        for index in surplus_choice(&runners, &created_at, surplus) {
            runners[index].condition = Condition::Removing(RemovalReason::Surplus);
        }
    }

    let kept_capacity = runners.iter().filter(|r| r.condition.is_capacity()).count() as u32;
    let missing = input.desired.saturating_sub(kept_capacity);
    let (create, creates_deferred) = if input.binary.ready {
        (missing, 0)
    } else {
        (0, missing)
    };

    runners.sort_by(|a, b| a.name.cmp(&b.name).then(a.github_id.cmp(&b.github_id)));
    let removals = runners
        .iter()
        .filter_map(|r| match r.condition {
            Condition::Removing(reason) => Some(Removal {
                target: RemovalTarget {
                    name: r.name.clone(),
                    has_instance: r.has_instance,
                    github_id: r.github_id,
                },
                reason,
                force: matches!(
                    reason,
                    RemovalReason::InstanceError | RemovalReason::InstanceStopped
                ),
            }),
            _ => None,
        })
        .collect();

    Plan {
        desired: input.desired,
        create,
        creates_deferred,
        held_back: Default::default(),
        capacity: observed_capacity,
        removals,
        runners,
    }
}

/// Join instances and registrations by name. A second registration of a name already taken
/// is returned apart.
fn pair_up<'a>(
    instances: &'a [Instance],
    github: &'a [GitHubRunner],
) -> (Vec<Pair<'a>>, Vec<&'a GitHubRunner>) {
    let mut by_name: BTreeMap<&'a str, Pair<'a>> = BTreeMap::new();
    for instance in instances {
        by_name.entry(instance.name.as_str()).or_insert(Pair {
            name: instance.name.as_str(),
            instance: Some(instance),
            registration: None,
        });
    }
    let mut registrations: Vec<&GitHubRunner> = github.iter().collect();
    registrations.sort_by_key(|r| r.id);
    let mut duplicates = Vec::new();
    for registration in registrations {
        let pair = by_name.entry(registration.name.as_str()).or_insert(Pair {
            name: registration.name.as_str(),
            instance: None,
            registration: None,
        });
        if pair.registration.is_none() {
            pair.registration = Some(registration);
        } else {
            duplicates.push(registration);
        }
    }
    (by_name.into_values().collect(), duplicates)
}

fn classify(pair: &Pair<'_>, input: &PlanInput<'_>) -> RunnerView {
    let condition = match (pair.instance, pair.registration) {
        (None, Some(reg)) if reg.busy => Condition::BusyWithoutInstance,
        (None, Some(_)) => Condition::Removing(RemovalReason::OrphanRegistration),
        (Some(instance), registration) => classify_instance(instance, registration, input),
        // pair_up never builds a pair from nothing.
        (None, None) => Condition::Transitional,
    };
    RunnerView {
        name: RunnerName(pair.name.to_string()),
        condition,
        has_instance: pair.instance.is_some(),
        github_id: pair.registration.map(|r| r.id),
        online: pair.registration.map(|r| r.status),
    }
}

fn classify_instance(
    instance: &Instance,
    registration: Option<&GitHubRunner>,
    input: &PlanInput<'_>,
) -> Condition {
    match replacement::standing(instance, input.scope) {
        Standing::Current => classify_current(instance, registration, input),
        Standing::Flushed => flushed(classify_current(instance, registration, input)),
        Standing::OtherScope => other_scope(&instance.state, registration),
    }
}

/// A runner flushed while busy, as the current scope's rules classified it: still busy (or
/// possibly busy) it waits; idle again (the flush's view was stale) it goes now, unforced.
pub fn flushed(condition: Condition) -> Condition {
    match condition {
        Condition::Busy | Condition::Unconfirmed => Condition::Replacing,
        Condition::Idle | Condition::Creating => Condition::Removing(RemovalReason::Flush),
        other => other,
    }
}

/// A runner of another scope, judged from its instance: GitHub with the current
/// credentials cannot see its registration (only a listing of the same name, when the
/// change kept the repository, tells it is idle). Running, its job runs: it waits.
pub fn other_scope(state: &InstanceState, registration: Option<&GitHubRunner>) -> Condition {
    match state {
        InstanceState::Error => Condition::Removing(RemovalReason::InstanceError),
        InstanceState::Stopped => Condition::Removing(RemovalReason::InstanceStopped),
        InstanceState::Other(_) => Condition::Transitional,
        InstanceState::Running => match registration {
            Some(reg) if !reg.busy => Condition::Removing(RemovalReason::Flush),
            _ => Condition::Replacing,
        },
    }
}

fn classify_current(
    instance: &Instance,
    registration: Option<&GitHubRunner>,
    input: &PlanInput<'_>,
) -> Condition {
    let age = input.now_epoch.saturating_sub(instance.created_at_epoch);
    let within_grace = age < input.grace_secs;
    let busy = registration.is_some_and(|r| r.busy);
    match &instance.state {
        InstanceState::Error => return Condition::Removing(RemovalReason::InstanceError),
        InstanceState::Stopped => return Condition::Removing(RemovalReason::InstanceStopped),
        InstanceState::Other(_) if busy => return Condition::Busy,
        InstanceState::Other(state) if is_starting(state) && within_grace => {
            return Condition::Creating
        }
        InstanceState::Other(_) => return Condition::Transitional,
        InstanceState::Running => {}
    }
    if busy {
        return Condition::Busy;
    }
    let outdated = input
        .binary
        .updated_at_epoch
        .is_some_and(|updated| instance.created_at_epoch < updated);
    let health = input
        .health
        .get(&instance.name)
        .copied()
        .unwrap_or(Health::Unknown);
    let live = match registration {
        Some(reg) => match reg.status {
            RunnerOnline::Online if health == Health::NotRunning => {
                Condition::Removing(RemovalReason::ListenerDown)
            }
            RunnerOnline::Online => Condition::Idle,
            RunnerOnline::Offline if health == Health::NotRunning && age >= STALLED_START_SECS => {
                Condition::Removing(RemovalReason::NeverStarted)
            }
            RunnerOnline::Offline if within_grace => Condition::Creating,
            RunnerOnline::Offline => Condition::Removing(RemovalReason::Offline),
        },
        None => match recorded_runner_id(instance) {
            Some(id) if input.confirmed_gone.contains(&id) => {
                Condition::Removing(RemovalReason::RegistrationGone)
            }
            Some(_) => Condition::Unconfirmed,
            None if within_grace => Condition::Creating,
            None => Condition::Removing(RemovalReason::NeverRegistered),
        },
    };
    match live {
        Condition::Idle | Condition::Creating if outdated => {
            Condition::Removing(RemovalReason::Outdated)
        }
        other => other,
    }
}

/// LXD states on the way up, as opposed to Stopping, Freezing, Frozen, ...
fn is_starting(state: &str) -> bool {
    ["starting", "pending", "created"]
        .iter()
        .any(|s| state.eq_ignore_ascii_case(s))
}

/// Indices of the `surplus` runners to remove when scaling down: creating ones before idle
/// ones (an idle runner can take a job now), newest first (least work lost), then by name.
/// Busy runners are never candidates.
fn surplus_choice(
    runners: &[RunnerView],
    created_at: &BTreeMap<&str, u64>,
    surplus: usize,
) -> Vec<usize> {
    let mut candidates: Vec<usize> = (0..runners.len())
        .filter(|&i| matches!(runners[i].condition, Condition::Creating | Condition::Idle))
        .collect();
    let rank = |i: usize| {
        let r = &runners[i];
        let group = if r.condition == Condition::Creating {
            0
        } else {
            1
        };
        let created = created_at.get(r.name.as_str()).copied().unwrap_or(0);
        (group, std::cmp::Reverse(created), r.name.clone())
    };
    candidates.sort_by_key(|&i| rank(i));
    candidates.truncate(surplus);
    let chosen: BTreeSet<usize> = candidates.into_iter().collect();
    chosen.into_iter().collect()
}

/// The GitHub runner id an instance was launched with ([`RUNNER_ID_CONFIG_KEY`]).
pub fn recorded_runner_id(instance: &Instance) -> Option<u64> {
    instance
        .config
        .get(RUNNER_ID_CONFIG_KEY)
        .and_then(|id| id.trim().parse().ok())
}

/// Running instances whose recorded registration the listing lacks (by name and by id), as
/// `(name, id)` in name order: the only runners the planner would take for finished, so
/// the only ones worth one `GET …/runners/{id}` each before a removal. A steady state (every
/// runner listed) has none; nor do runners of another scope than `scope`.
pub fn unlisted_registrations(
    instances: &[Instance],
    github: &[GitHubRunner],
    scope: &str,
) -> Vec<(String, u64)> {
    let names: BTreeSet<&str> = github.iter().map(|r| r.name.as_str()).collect();
    let ids: BTreeSet<u64> = github.iter().map(|r| r.id).collect();
    let mut unlisted: Vec<(String, u64)> = instances
        .iter()
        .filter(|i| i.state == InstanceState::Running && !names.contains(i.name.as_str()))
        // Another scope's registration cannot be looked up with these credentials.
        .filter(|i| replacement::standing(i, scope) != Standing::OtherScope)
        .filter_map(|i| recorded_runner_id(i).map(|id| (i.name.clone(), id)))
        .filter(|(_, id)| !ids.contains(id))
        .collect();
    unlisted.sort();
    unlisted
}

/// Instances whose health the planner will use: running ones that GitHub lists online and
/// idle, and running ones listed offline for at least [`STALLED_START_SECS`] (to catch a
/// creation cut short). Health decides nothing for the others (busy runners are never
/// removed; younger offline or unregistered ones are judged by the grace period), so probing
/// them would only cost execs. A steady state (all online) probes idle runners only.
pub fn instances_to_probe(
    instances: &[Instance],
    github: &[GitHubRunner],
    now_epoch: u64,
) -> Vec<String> {
    let online_idle: BTreeSet<&str> = github
        .iter()
        .filter(|r| r.status == RunnerOnline::Online && !r.busy)
        .map(|r| r.name.as_str())
        .collect();
    let offline: BTreeSet<&str> = github
        .iter()
        .filter(|r| r.status == RunnerOnline::Offline && !r.busy)
        .map(|r| r.name.as_str())
        .collect();
    instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .filter(|i| {
            online_idle.contains(i.name.as_str())
                || (offline.contains(i.name.as_str())
                    && now_epoch.saturating_sub(i.created_at_epoch) >= STALLED_START_SECS)
        })
        .map(|i| i.name.clone())
        .collect()
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "planner_replacement_tests.rs"]
mod replacement_tests;
