//! The event a hook runs for, parsed from `JUJU_DISPATCH_PATH` (`hooks/<name>`,
//! `actions/<name>`, or the custom `reconcile-runners`).

use std::fmt;

/// The charm's relation endpoints (metadata.yaml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `mongodb_client`: the reactive job queue.
    Mongodb,
    /// `debug-ssh`: tmate servers for debugging jobs.
    DebugSsh,
    /// `cos_agent`: metrics, logs and dashboards.
    CosAgent,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Mongodb, Endpoint::DebugSsh, Endpoint::CosAgent];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Mongodb => "mongodb",
            Endpoint::DebugSsh => "debug-ssh",
            Endpoint::CosAgent => "cos-agent",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelationEventKind {
    Created,
    Joined,
    Changed,
    Departed,
    Broken,
}

impl RelationEventKind {
    pub const ALL: [RelationEventKind; 5] = [
        RelationEventKind::Created,
        RelationEventKind::Joined,
        RelationEventKind::Changed,
        RelationEventKind::Departed,
        RelationEventKind::Broken,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RelationEventKind::Created => "created",
            RelationEventKind::Joined => "joined",
            RelationEventKind::Changed => "changed",
            RelationEventKind::Departed => "departed",
            RelationEventKind::Broken => "broken",
        }
    }
}

/// The charm's actions (actions.yaml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    CheckRunners,
    ReconcileRunners,
    FlushRunners,
    UpdateDependencies,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::CheckRunners,
        Action::ReconcileRunners,
        Action::FlushRunners,
        Action::UpdateDependencies,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::CheckRunners => "check-runners",
            Action::ReconcileRunners => "reconcile-runners",
            Action::FlushRunners => "flush-runners",
            Action::UpdateDependencies => "update-dependencies",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// Name of the storage in metadata.yaml.
pub const RUNNER_STORAGE: &str = "runner";

/// Dispatch path of the periodic reconcile the charm's systemd timer runs through juju-exec.
pub const RECONCILE_RUNNERS_PATH: &str = "reconcile-runners";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Install,
    Start,
    Stop,
    Remove,
    UpgradeCharm,
    ConfigChanged,
    /// A new revision of a secret this application reads (its owner changed it).
    SecretChanged,
    UpdateStatus,
    LeaderElected,
    LeaderSettingsChanged,
    Relation {
        endpoint: Endpoint,
        kind: RelationEventKind,
    },
    RunnerStorageAttached,
    RunnerStorageDetaching,
    Action(Action),
    /// The periodic reconcile (custom dispatch path, not a Juju hook).
    ReconcileRunners,
    /// A hook this charm does not handle (`secret-remove`, a future Juju hook, ...).
    UnknownHook(String),
    /// An action not in actions.yaml (Juju refuses those, but a stale charm dir may not).
    UnknownAction(String),
    /// A dispatch path that is neither `hooks/`, `actions/` nor a custom event.
    Unrecognised(String),
}

impl Event {
    /// Parse a dispatch path: `hooks/<name>`, `actions/<name>`, `reconcile-runners`, or a
    /// path ending in those (old Juju runs `<charm-dir>/hooks/<name>` by absolute path).
    pub fn from_dispatch_path(path: &str) -> Event {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        match parts.as_slice() {
            [.., "hooks", name] => Event::from_hook_name(name),
            [.., "actions", name] => match Action::from_name(name) {
                Some(action) => Event::Action(action),
                None => Event::UnknownAction(name.to_string()),
            },
            [name] if *name == RECONCILE_RUNNERS_PATH => Event::ReconcileRunners,
            _ => Event::Unrecognised(path.to_string()),
        }
    }

    pub fn from_hook_name(name: &str) -> Event {
        match name {
            "install" => Event::Install,
            "start" => Event::Start,
            "stop" => Event::Stop,
            "remove" => Event::Remove,
            "upgrade-charm" => Event::UpgradeCharm,
            "config-changed" => Event::ConfigChanged,
            "secret-changed" => Event::SecretChanged,
            "update-status" => Event::UpdateStatus,
            "leader-elected" => Event::LeaderElected,
            "leader-settings-changed" => Event::LeaderSettingsChanged,
            _ => Event::relation_or_storage(name)
                .unwrap_or_else(|| Event::UnknownHook(name.to_string())),
        }
    }

    fn relation_or_storage(name: &str) -> Option<Event> {
        if let Some(storage_event) = name.strip_prefix(RUNNER_STORAGE) {
            match storage_event {
                "-storage-attached" => return Some(Event::RunnerStorageAttached),
                "-storage-detaching" => return Some(Event::RunnerStorageDetaching),
                _ => {}
            }
        }
        let (endpoint, kind) = name.rsplit_once("-relation-")?;
        let kind = RelationEventKind::ALL
            .into_iter()
            .find(|k| k.name() == kind)?;
        Some(Event::Relation {
            endpoint: Endpoint::from_name(endpoint)?,
            kind,
        })
    }

    /// The hook or action name, as Juju spells it.
    pub fn name(&self) -> String {
        match self {
            Event::Install => "install".into(),
            Event::Start => "start".into(),
            Event::Stop => "stop".into(),
            Event::Remove => "remove".into(),
            Event::UpgradeCharm => "upgrade-charm".into(),
            Event::ConfigChanged => "config-changed".into(),
            Event::SecretChanged => "secret-changed".into(),
            Event::UpdateStatus => "update-status".into(),
            Event::LeaderElected => "leader-elected".into(),
            Event::LeaderSettingsChanged => "leader-settings-changed".into(),
            Event::Relation { endpoint, kind } => {
                format!("{}-relation-{}", endpoint.name(), kind.name())
            }
            Event::RunnerStorageAttached => format!("{RUNNER_STORAGE}-storage-attached"),
            Event::RunnerStorageDetaching => format!("{RUNNER_STORAGE}-storage-detaching"),
            Event::Action(a) => a.name().into(),
            Event::ReconcileRunners => RECONCILE_RUNNERS_PATH.into(),
            Event::UnknownHook(n) | Event::UnknownAction(n) | Event::Unrecognised(n) => n.clone(),
        }
    }

    pub fn is_action(&self) -> bool {
        matches!(self, Event::Action(_) | Event::UnknownAction(_))
    }

    /// Every hook the charm handles, by name (the test harness runs each one).
    pub fn known_hook_names() -> Vec<String> {
        let mut names: Vec<String> = [
            "install",
            "start",
            "stop",
            "remove",
            "upgrade-charm",
            "config-changed",
            "update-status",
            "leader-elected",
            "leader-settings-changed",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for endpoint in Endpoint::ALL {
            for kind in RelationEventKind::ALL {
                names.push(Event::Relation { endpoint, kind }.name());
            }
        }
        names.push(Event::RunnerStorageAttached.name());
        names.push(Event::RunnerStorageDetaching.name());
        names
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_hooks() {
        let cases = [
            ("hooks/install", Event::Install),
            ("hooks/start", Event::Start),
            ("hooks/stop", Event::Stop),
            ("hooks/remove", Event::Remove),
            ("hooks/upgrade-charm", Event::UpgradeCharm),
            ("hooks/config-changed", Event::ConfigChanged),
            ("hooks/update-status", Event::UpdateStatus),
            ("hooks/leader-elected", Event::LeaderElected),
            (
                "hooks/leader-settings-changed",
                Event::LeaderSettingsChanged,
            ),
        ];
        for (path, want) in cases {
            assert_eq!(Event::from_dispatch_path(path), want, "{path}");
        }
    }

    #[test]
    fn every_relation_hook_of_every_endpoint() {
        for endpoint in Endpoint::ALL {
            for kind in RelationEventKind::ALL {
                let path = format!("hooks/{}-relation-{}", endpoint.name(), kind.name());
                assert_eq!(
                    Event::from_dispatch_path(&path),
                    Event::Relation { endpoint, kind },
                    "{path}"
                );
            }
        }
    }

    #[test]
    fn storage_hooks() {
        assert_eq!(
            Event::from_dispatch_path("hooks/runner-storage-attached"),
            Event::RunnerStorageAttached
        );
        assert_eq!(
            Event::from_dispatch_path("hooks/runner-storage-detaching"),
            Event::RunnerStorageDetaching
        );
        assert_eq!(
            Event::from_dispatch_path("hooks/other-storage-attached"),
            Event::UnknownHook("other-storage-attached".into())
        );
    }

    #[test]
    fn actions_and_custom_event() {
        for a in Action::ALL {
            assert_eq!(
                Event::from_dispatch_path(&format!("actions/{}", a.name())),
                Event::Action(a)
            );
        }
        assert_eq!(
            Event::from_dispatch_path("actions/dance"),
            Event::UnknownAction("dance".into())
        );
        assert_eq!(
            Event::from_dispatch_path("reconcile-runners"),
            Event::ReconcileRunners
        );
        assert_eq!(
            Event::from_dispatch_path("./reconcile-runners"),
            Event::ReconcileRunners
        );
    }

    #[test]
    fn absolute_and_relative_hook_paths_from_old_juju() {
        assert_eq!(
            Event::from_dispatch_path("/var/lib/juju/agents/unit-x-0/charm/hooks/install"),
            Event::Install
        );
        assert_eq!(Event::from_dispatch_path("./hooks/start"), Event::Start);
        assert_eq!(
            Event::from_dispatch_path("hooks//upgrade-charm"),
            Event::UpgradeCharm
        );
    }

    #[test]
    fn unknown_things_are_kept_by_name() {
        assert_eq!(
            Event::from_dispatch_path("hooks/secret-changed"),
            Event::SecretChanged
        );
        assert_eq!(
            Event::from_dispatch_path("hooks/db-relation-changed"),
            Event::UnknownHook("db-relation-changed".into())
        );
        assert_eq!(
            Event::from_dispatch_path("hooks/mongodb-relation-exploded"),
            Event::UnknownHook("mongodb-relation-exploded".into())
        );
        for odd in [
            "",
            "dispatch",
            "./dispatch",
            "hooks",
            "hooks/",
            "bin/x",
            "reconcile",
        ] {
            assert_eq!(
                Event::from_dispatch_path(odd),
                Event::Unrecognised(odd.into()),
                "{odd}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for name in Event::known_hook_names() {
            let event = Event::from_hook_name(&name);
            assert!(!matches!(event, Event::UnknownHook(_)), "{name}");
            assert_eq!(event.name(), name);
        }
        for a in Action::ALL {
            assert_eq!(Event::Action(a).to_string(), a.name());
            assert!(Event::Action(a).is_action());
        }
        assert!(!Event::Install.is_action());
    }
}
