//! Which stages an event runs, and with which intent: the one table a new event, action or
//! mode joins. An event handler is a value here, not a function: the pipeline
//! (`observe` -> `decide` -> `act` -> `report`) does the work for every event alike.

use super::setup::When;
use crate::juju::event::{Action, Endpoint, Event, RelationEventKind};
use crate::manager::flush::FlushMode;
use crate::messages;

/// What an event asks of the charm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Host and runners brought in line with the configuration.
    Converge(Converge),
    /// The runners taken down (stop, remove, storage detaching).
    TearDown(TearDown),
    /// update-status: the remembered status from unit state only (no GitHub, no LXD), and
    /// the reconcile timer restarted when it died.
    ReportOnly,
    /// check-runners: the fleet as GitHub and LXD see it; nothing changes.
    CheckRunners,
    /// update-dependencies: the runner binary check; idle runners flushed when it changed.
    UpdateDependencies,
    /// mongodb relation created/joined: the leader asks the provider for the webhook
    /// router's database (and its credentials in a Juju secret).
    RequestQueue,
    /// An event with nothing to do yet (leadership, relations, hooks this charm ignores).
    Nothing(Nothing),
    /// An action this charm does not have.
    UnknownAction(String),
}

/// Why an event does nothing: only logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nothing {
    /// Units manage their own runners: leadership changes nothing.
    Leadership(&'static str),
    /// No endpoint's data is used yet.
    Relation {
        endpoint: &'static str,
        event: &'static str,
    },
    /// A hook this charm does not handle.
    UnknownHook(String),
    /// A dispatch path that names no hook, action or custom event.
    Unrecognised(String),
}

/// How a converge runs: each field is one step, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converge {
    /// `application-version-set` (install, upgrade-charm).
    pub set_version: bool,
    /// Maintenance status while the host is set up.
    pub announce: Option<&'static str>,
    /// Install LXD (after the guards) before building the runtime, which needs `lxc`
    /// (hooks that (re)install). Otherwise a missing `lxc` is Waiting.
    pub install_lxd_first: bool,
    /// Host setup; None: not at all (actions).
    pub host: Option<When>,
    pub binary: BinaryStep,
    pub runners: RunnerStep,
    /// Results and failures go to action-set/action-fail, progress to action-log.
    pub action: Option<Action>,
    /// `secret-change`: read the credential's secret at its latest revision (`--refresh`).
    pub refresh_secrets: bool,
}

/// The runner binary update check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryStep {
    Skip,
    /// One GitHub call; a download only when GitHub lists another tarball. A failure is a
    /// status note, not a failed hook.
    Check {
        /// Only once per `decide::BINARY_CHECK_INTERVAL` (the periodic event).
        only_when_due: bool,
        /// A new binary flushes idle runners so new ones use it.
        flush_idle_on_change: bool,
    },
}

/// What happens to the runners after the host and binary steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerStep {
    /// None touched (install): the status comes from unit state.
    Leave,
    /// A reconcile round, after the flush asked for.
    Reconcile {
        flush: FlushWhen,
        /// The configuration's scope (token, path, group, labels, github-url) is compared
        /// with what the charm last acted on: the old fleet is flushed with the old
        /// credentials when it changed, and what was acted on is recorded.
        scope: bool,
        /// Maintenance status before the runners are touched.
        announce: Option<&'static str>,
    },
}

/// When the runners are flushed before the reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushWhen {
    #[default]
    Never,
    Always(FlushMode),
    /// Only when some runner predates the machine's boot (start: on a fresh deploy the
    /// runners config-changed made moments ago are new; flushing them only churns).
    IfRunnersPredateBoot(FlushMode),
}

/// How runners are taken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TearDown {
    /// The reconcile timer goes first, so no reconcile starts behind our back.
    pub remove_timer: bool,
    /// The image's rebuild cron goes too (remove).
    pub remove_rebuild_cron: bool,
    /// remove: after the runners, what the unit leaves behind goes too: its LXD leftovers
    /// (the charm's unused profiles, the unused pool), its egress ACL and aproxy's
    /// redirect, its credentials file and started-runners record.
    pub unit_removed: bool,
    /// Only when the runners' disks live on the Juju storage (storage detaching).
    pub only_on_juju_storage: bool,
    /// Maintenance status while they go.
    pub announce: &'static str,
}

impl Intent {
    /// The intent of `event`.
    pub fn of(event: &Event) -> Intent {
        use Event as E;
        let reconcile_scope = RunnerStep::Reconcile {
            flush: FlushWhen::Never,
            scope: true,
            announce: None,
        };
        let host_setup = |set_version, announce, runners| Converge {
            set_version,
            announce,
            install_lxd_first: true,
            host: Some(When::Always),
            binary: BinaryStep::Check {
                only_when_due: false,
                flush_idle_on_change: false,
            },
            runners,
            action: None,
            refresh_secrets: false,
        };
        let restart = |flush| RunnerStep::Reconcile {
            flush,
            scope: false,
            announce: Some(messages::STARTING),
        };
        match event {
            E::Install => Intent::Converge(host_setup(
                true,
                Some(messages::SETTING_UP),
                RunnerStep::Leave,
            )),
            E::Start => Intent::Converge(host_setup(
                false,
                None,
                restart(FlushWhen::IfRunnersPredateBoot(FlushMode::FlushIdle)),
            )),
            E::UpgradeCharm => Intent::Converge(host_setup(
                true,
                Some(messages::SETTING_UP),
                restart(FlushWhen::Always(FlushMode::FlushIdle)),
            )),
            E::ConfigChanged => Intent::Converge(Converge {
                set_version: false,
                announce: None,
                install_lxd_first: false,
                host: Some(When::Always),
                binary: BinaryStep::Skip,
                runners: reconcile_scope,
                action: None,
                refresh_secrets: false,
            }),
            // A new revision of a secret the options name (the token, the App's key): the
            // converge a token change does, with the latest revision. No host setup input
            // comes from a secret.
            E::SecretChanged => Intent::Converge(Converge {
                set_version: false,
                announce: None,
                install_lxd_first: false,
                host: Some(When::IfChanged),
                binary: BinaryStep::Skip,
                runners: reconcile_scope,
                action: None,
                refresh_secrets: true,
            }),
            E::RunnerStorageAttached => Intent::Converge(Converge {
                binary: BinaryStep::Skip,
                ..host_setup(
                    false,
                    None,
                    RunnerStep::Reconcile {
                        flush: FlushWhen::Never,
                        scope: false,
                        announce: None,
                    },
                )
            }),
            E::ReconcileRunners => Intent::Converge(Converge {
                set_version: false,
                announce: None,
                install_lxd_first: false,
                host: Some(When::IfChanged),
                binary: BinaryStep::Check {
                    only_when_due: true,
                    flush_idle_on_change: true,
                },
                runners: reconcile_scope,
                action: None,
                refresh_secrets: false,
            }),
            E::Stop => Intent::TearDown(TearDown {
                remove_timer: true,
                remove_rebuild_cron: false,
                unit_removed: false,
                only_on_juju_storage: false,
                announce: messages::STOPPING,
            }),
            E::Remove => Intent::TearDown(TearDown {
                remove_timer: true,
                remove_rebuild_cron: true,
                unit_removed: true,
                only_on_juju_storage: false,
                announce: messages::STOPPING,
            }),
            E::RunnerStorageDetaching => Intent::TearDown(TearDown {
                remove_timer: false,
                remove_rebuild_cron: false,
                unit_removed: false,
                only_on_juju_storage: true,
                announce: messages::DETACHING,
            }),
            E::UpdateStatus => Intent::ReportOnly,
            E::Action(action) => Intent::of_action(*action),
            E::UnknownAction(name) => Intent::UnknownAction(name.clone()),
            E::LeaderElected => Intent::Nothing(Nothing::Leadership("leader-elected")),
            E::LeaderSettingsChanged => {
                Intent::Nothing(Nothing::Leadership("leader-settings-changed"))
            }
            // The tmate servers changed: the host setup rebuilds the ACL (they are let through
            // it), and idle runners are replaced by ones that see the change. created/joined
            // are left: the remote unit has published nothing yet; changed follows.
            E::Relation {
                endpoint: Endpoint::DebugSsh,
                kind:
                    RelationEventKind::Changed | RelationEventKind::Departed | RelationEventKind::Broken,
            } => Intent::Converge(Converge {
                binary: BinaryStep::Skip,
                ..host_setup(
                    false,
                    None,
                    RunnerStep::Reconcile {
                        flush: FlushWhen::Always(FlushMode::FlushIdle),
                        scope: false,
                        announce: None,
                    },
                )
            }),
            E::Relation {
                endpoint: Endpoint::Mongodb,
                kind: RelationEventKind::Created | RelationEventKind::Joined,
            } => Intent::RequestQueue,
            // The broker's connection data came, changed or went: switch mode and converge.
            E::Relation {
                endpoint: Endpoint::Mongodb,
                kind: RelationEventKind::Changed | RelationEventKind::Broken,
            } => Intent::Converge(Converge {
                set_version: false,
                announce: None,
                install_lxd_first: false,
                // Checked like the periodic event: nothing is asked of LXD or GitHub before
                // the host is known to be ready.
                host: Some(When::IfChanged),
                binary: BinaryStep::Skip,
                runners: RunnerStep::Reconcile {
                    flush: FlushWhen::Never,
                    scope: false,
                    announce: None,
                },
                action: None,
                refresh_secrets: false,
            }),
            E::Relation { endpoint, kind } => Intent::Nothing(Nothing::Relation {
                endpoint: endpoint.name(),
                event: kind.name(),
            }),
            E::UnknownHook(name) => Intent::Nothing(Nothing::UnknownHook(name.clone())),
            E::Unrecognised(path) => Intent::Nothing(Nothing::Unrecognised(path.clone())),
        }
    }

    fn of_action(action: Action) -> Intent {
        let reconcile = |binary, flush, scope| {
            Intent::Converge(Converge {
                set_version: false,
                announce: None,
                install_lxd_first: false,
                host: None,
                binary,
                runners: RunnerStep::Reconcile {
                    flush,
                    scope,
                    announce: None,
                },
                action: Some(action),
                refresh_secrets: false,
            })
        };
        match action {
            Action::CheckRunners => Intent::CheckRunners,
            Action::UpdateDependencies => Intent::UpdateDependencies,
            Action::ReconcileRunners => reconcile(
                BinaryStep::Check {
                    only_when_due: false,
                    flush_idle_on_change: true,
                },
                FlushWhen::Never,
                true,
            ),
            Action::FlushRunners => reconcile(
                BinaryStep::Skip,
                FlushWhen::Always(FlushMode::FlushBusyWaitRepoCheck),
                false,
            ),
        }
    }

    /// An action's intent: its result and failure go to action-set/action-fail.
    pub fn is_action(&self) -> bool {
        match self {
            Intent::Converge(c) => c.action.is_some(),
            Intent::CheckRunners | Intent::UpdateDependencies | Intent::UnknownAction(_) => true,
            _ => false,
        }
    }
}
