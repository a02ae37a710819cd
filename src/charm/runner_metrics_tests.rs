use std::cell::RefCell;

use super::*;
use crate::clock::ManualClock;
use crate::github::RunnerOnline;
use crate::host::metrics::MetricLine;
use crate::manager::planner::{Removal, RemovalTarget, RunnerView};

const NOW: u64 = 1_700_000_000;

fn view(name: &str, condition: Condition) -> RunnerView {
    RunnerView {
        name: RunnerName(name.into()),
        condition,
        has_instance: true,
        github_id: Some(1),
        online: Some(RunnerOnline::Online),
    }
}

fn removal(name: &str, reason: RemovalReason) -> Removal {
    Removal {
        target: RemovalTarget {
            name: RunnerName(name.into()),
            has_instance: true,
            github_id: None,
        },
        reason,
        force: false,
    }
}

fn plan(runners: Vec<RunnerView>, removals: Vec<Removal>) -> Plan {
    Plan {
        runners,
        removals,
        ..Plan::empty(2)
    }
}

fn pre(workflow: &str, at: u64) -> PreJob {
    PreJob {
        workflow: workflow.into(),
        repository: "o/r".into(),
        event: "push".into(),
        run_id: "77".into(),
        timestamp: at,
    }
}

fn started(workflow: &str, at: u64) -> Option<StartedRunner> {
    Some(StartedRunner {
        workflow: workflow.into(),
        repo: "o/r".into(),
        event: "push".into(),
        started_at: at,
        installed_at: at - 100,
        run_id: Some(77),
    })
}

fn decide_with(
    record: &StartedRecord,
    plan: &Plan,
    pre_jobs: &[(&str, PreJob)],
    created: &[(&str, u64)],
) -> Decision {
    let pre_jobs: BTreeMap<String, PreJob> = pre_jobs
        .iter()
        .map(|(n, p)| (n.to_string(), p.clone()))
        .collect();
    let created_at: BTreeMap<String, u64> =
        created.iter().map(|(n, at)| (n.to_string(), *at)).collect();
    decide(
        record,
        &RoundFacts {
            flavor: "gr",
            plan,
            pre_jobs: &pre_jobs,
            created_at: &created_at,
            conclusions: &BTreeMap::new(),
            now: NOW,
        },
    )
}

#[test]
fn only_busy_runners_with_an_instance_not_yet_recorded_are_read() {
    let mut busy_gone = view("c", Condition::Busy);
    busy_gone.has_instance = false;
    let p = plan(
        vec![
            view("a", Condition::Busy),
            view("b", Condition::Busy),
            busy_gone,
            view("d", Condition::Idle),
            view("e", Condition::Creating),
            view("f", Condition::BusyWithoutInstance),
        ],
        vec![],
    );
    let record: StartedRecord = [("b".to_string(), started("CI", NOW - 5))].into();
    assert_eq!(newly_busy(&record, &p), vec![RunnerName("a".into())]);
    assert!(newly_busy(&StartedRecord::new(), &plan(vec![], vec![])).is_empty());
}

#[test]
fn a_newly_busy_runner_starts_with_its_idle_time_and_is_recorded() {
    let p = plan(
        vec![view("a", Condition::Busy), view("i", Condition::Idle)],
        vec![],
    );
    let d = decide_with(
        &StartedRecord::new(),
        &p,
        &[("a", pre("CI", NOW - 10))],
        &[("a", NOW - 70)],
    );
    assert_eq!(
        d.starts,
        vec![RunnerStart {
            flavor: "gr".into(),
            workflow: "CI".into(),
            repo: "o/r".into(),
            github_event: "push".into(),
            idle: 60.0,
            queue_duration: None,
        }]
    );
    assert!(d.stops.is_empty());
    assert_eq!(
        d.record,
        [(
            "a".to_string(),
            Some(StartedRunner {
                workflow: "CI".into(),
                repo: "o/r".into(),
                event: "push".into(),
                started_at: NOW - 10,
                installed_at: NOW - 70,
                run_id: Some(77),
            })
        )]
        .into()
    );
}

#[test]
fn a_still_busy_recorded_runner_issues_nothing_again() {
    let p = plan(vec![view("a", Condition::Busy)], vec![]);
    let record: StartedRecord = [("a".to_string(), started("CI", NOW - 30))].into();
    let d = decide_with(&record, &p, &[], &[]);
    assert!(d.starts.is_empty() && d.stops.is_empty());
    assert_eq!(d.record, record);
}

#[test]
fn unreadable_pre_job_data_is_recorded_without_a_start_and_ends_without_a_stop() {
    let busy = plan(vec![view("a", Condition::Busy)], vec![]);
    let d = decide_with(&StartedRecord::new(), &busy, &[], &[("a", NOW - 5)]);
    assert!(d.starts.is_empty());
    assert_eq!(d.record, [("a".to_string(), None)].into());
    assert!(newly_busy(&d.record, &busy).is_empty(), "never read again");
    let gone = decide_with(
        &d.record,
        &plan(vec![], vec![removal("a", RemovalReason::ListenerDown)]),
        &[],
        &[],
    );
    assert!(gone.starts.is_empty() && gone.stops.is_empty());
    assert!(gone.record.is_empty());
}

#[test]
fn removal_reasons_give_the_stop_status() {
    for (reason, status) in [
        (RemovalReason::RegistrationGone, StopStatus::Normal),
        (RemovalReason::ListenerDown, StopStatus::Abnormal),
        (RemovalReason::NeverStarted, StopStatus::Abnormal),
        (RemovalReason::InstanceError, StopStatus::Abnormal),
        (RemovalReason::InstanceStopped, StopStatus::Abnormal),
        (RemovalReason::Offline, StopStatus::Abnormal),
        (RemovalReason::Flush, StopStatus::Abnormal),
    ] {
        assert_eq!(stop_status(reason), status, "{reason:?}");
        let record: StartedRecord = [("a".to_string(), started("CI", NOW - 42))].into();
        let mut seen = view("a", Condition::Removing(reason));
        seen.online = None;
        let d = decide_with(
            &record,
            &plan(vec![seen], vec![removal("a", reason)]),
            &[],
            &[],
        );
        assert_eq!(
            d.stops,
            vec![RunnerStop {
                flavor: "gr".into(),
                workflow: "CI".into(),
                repo: "o/r".into(),
                github_event: "push".into(),
                status,
                status_info: None,
                job_duration: 42.0,
                job_conclusion: None,
            }],
            "{reason:?}"
        );
        assert!(d.record.is_empty());
    }
}

#[test]
fn a_recorded_runner_seen_nowhere_stopped_normally() {
    let record: StartedRecord = [
        ("gone".to_string(), started("CI", NOW - 300)),
        ("busy".to_string(), started("Build", NOW - 20)),
    ]
    .into();
    let d = decide_with(
        &record,
        &plan(vec![view("busy", Condition::Busy)], vec![]),
        &[],
        &[],
    );
    assert_eq!(d.stops.len(), 1);
    assert_eq!(d.stops[0].workflow, "CI");
    assert_eq!(d.stops[0].status, StopStatus::Normal);
    assert_eq!(d.stops[0].job_duration, 300.0);
    assert_eq!(d.record.keys().collect::<Vec<_>>(), ["busy"]);
}

#[test]
fn a_clock_behind_the_instance_gives_zero_not_a_wrap() {
    let p = plan(vec![view("a", Condition::Busy)], vec![]);
    let d = decide_with(
        &StartedRecord::new(),
        &p,
        &[("a", pre("CI", NOW + 50))],
        &[("a", NOW + 100)],
    );
    assert_eq!(d.starts[0].idle, 0.0);
    let stop = decide_with(&d.record, &plan(vec![], vec![]), &[], &[]);
    assert_eq!(stop.stops[0].job_duration, 0.0);
}

#[test]
fn start_and_stop_in_one_round_for_different_runners() {
    let record: StartedRecord = [("old".to_string(), started("CI", NOW - 60))].into();
    let p = plan(
        vec![view("new", Condition::Busy)],
        vec![removal("old", RemovalReason::RegistrationGone)],
    );
    let d = decide_with(&record, &p, &[("new", pre("Lint", NOW))], &[("new", NOW)]);
    assert_eq!(d.starts.len(), 1);
    assert_eq!(d.starts[0].workflow, "Lint");
    assert_eq!(d.stops.len(), 1);
    assert_eq!(d.stops[0].workflow, "CI");
    assert_eq!(d.record.keys().collect::<Vec<_>>(), ["new"]);
}

#[test]
fn a_stop_carries_the_conclusion_github_gave_and_none_otherwise() {
    let record: StartedRecord = [
        ("a".to_string(), started("CI", NOW - 30)),
        ("b".to_string(), started("Build", NOW - 30)),
    ]
    .into();
    let conclusions: BTreeMap<String, String> = [("a".to_string(), "failure".to_string())].into();
    let d = decide(
        &record,
        &RoundFacts {
            flavor: "gr",
            plan: &plan(vec![], vec![]),
            pre_jobs: &BTreeMap::new(),
            created_at: &BTreeMap::new(),
            conclusions: &conclusions,
            now: NOW,
        },
    );
    let by_workflow: BTreeMap<&str, Option<&str>> = d
        .stops
        .iter()
        .map(|s| (s.workflow.as_str(), s.job_conclusion.as_deref()))
        .collect();
    assert_eq!(
        by_workflow,
        [("CI", Some("failure")), ("Build", None)].into()
    );
}

#[test]
fn the_run_id_is_kept_from_the_pre_job_data_when_it_is_a_number() {
    let p = plan(
        vec![
            view("a", Condition::Busy),
            view("b", Condition::Busy),
            view("c", Condition::Busy),
        ],
        vec![],
    );
    let mut odd = pre("CI", NOW);
    odd.run_id = "12; rm -rf /".into();
    let mut old_hook = pre("CI", NOW);
    old_hook.run_id = String::new();
    let d = decide_with(
        &StartedRecord::new(),
        &p,
        &[("a", pre("CI", NOW)), ("b", odd), ("c", old_hook)],
        &[],
    );
    let run_ids: Vec<Option<u64>> = d
        .record
        .values()
        .map(|s| s.as_ref().and_then(|s| s.run_id))
        .collect();
    assert_eq!(run_ids, [Some(77), None, None]);
}

#[test]
fn a_record_from_before_run_ids_still_loads() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    std::fs::create_dir_all(paths.state_dir()).unwrap();
    std::fs::write(
        record_path(&paths),
        r#"{"a":{"workflow":"CI","repo":"o/r","event":"push","started_at":5,"installed_at":1}}"#,
    )
    .unwrap();
    let record = load_record(&paths).unwrap();
    assert_eq!(record["a"].as_ref().map(|s| s.run_id), Some(None));
}

/// Counts the reads and lookups; serves pre-job data and conclusions for names it knows.
struct Reader {
    pre: BTreeMap<String, PreJob>,
    reads: RefCell<Vec<String>>,
    conclusions: BTreeMap<String, String>,
    lookups: RefCell<Vec<(String, u64, String)>>,
}

impl Reader {
    fn new(pre: &[(&str, PreJob)]) -> Self {
        Reader {
            pre: pre
                .iter()
                .map(|(n, p)| (n.to_string(), p.clone()))
                .collect(),
            reads: RefCell::new(vec![]),
            conclusions: BTreeMap::new(),
            lookups: RefCell::new(vec![]),
        }
    }
}

impl JobReader for Reader {
    fn read_pre_job(&self, name: &RunnerName) -> Option<PreJob> {
        self.reads.borrow_mut().push(name.0.clone());
        self.pre.get(name.as_str()).cloned()
    }
    fn created_at(&self, _name: &RunnerName) -> Option<u64> {
        Some(NOW - 100)
    }
    fn job_conclusion(&self, repo: &str, run_id: u64, name: &RunnerName) -> Option<String> {
        self.lookups
            .borrow_mut()
            .push((repo.to_string(), run_id, name.0.clone()));
        self.conclusions.get(name.as_str()).cloned()
    }
}

#[test]
fn conclusions_are_looked_up_only_for_ending_runners_with_a_run_at_most_ten_a_round() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let mut record: StartedRecord = (0..12)
        .map(|i| (format!("end-{i:02}"), started("CI", NOW - 10)))
        .collect();
    let mut no_run = started("CI", NOW - 10);
    if let Some(s) = no_run.as_mut() {
        s.run_id = None;
    }
    record.insert("end-no-run".into(), no_run);
    record.insert("end-unread".into(), None);
    record.insert("still-busy".into(), started("CI", NOW - 10));
    save_record(&paths, &record).unwrap();
    let mut reader = Reader::new(&[]);
    reader.conclusions = [("end-00".to_string(), "success".to_string())].into();

    let round = plan(vec![view("still-busy", Condition::Busy)], vec![]);
    let d = issue_for_round(&paths, &reader, &ManualClock::at(NOW), "gr", &round);

    let lookups = reader.lookups.borrow();
    assert_eq!(lookups.len(), MAX_CONCLUSION_LOOKUPS);
    assert!(lookups
        .iter()
        .all(|(repo, run, name)| repo == "o/r" && *run == 77 && name.starts_with("end-")));
    assert!(!lookups
        .iter()
        .any(|(_, _, n)| n == "end-no-run" || n == "still-busy"));
    assert_eq!(d.stops.len(), 13, "every ended runner with data stops");
    let concluded: Vec<&RunnerStop> = d
        .stops
        .iter()
        .filter(|s| s.job_conclusion.is_some())
        .collect();
    assert_eq!(concluded.len(), 1);
    assert_eq!(concluded[0].job_conclusion.as_deref(), Some("success"));
    assert_eq!(d.record.keys().collect::<Vec<_>>(), ["still-busy"]);
}

#[test]
fn rounds_issue_start_then_stop_reading_each_busy_runner_once() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let clock = ManualClock::at(NOW);
    let mut reader = Reader::new(&[("a", pre("CI", NOW - 40))]);
    reader.conclusions = [("a".to_string(), "success".to_string())].into();
    let busy = plan(
        vec![view("a", Condition::Busy), view("i", Condition::Idle)],
        vec![],
    );
    issue_for_round(&paths, &reader, &clock, "gr", &busy);
    issue_for_round(&paths, &reader, &clock, "gr", &busy);
    assert_eq!(*reader.reads.borrow(), ["a"], "read once, idle never");
    clock.advance(std::time::Duration::from_secs(20));
    let done = plan(vec![], vec![removal("a", RemovalReason::RegistrationGone)]);
    issue_for_round(&paths, &reader, &clock, "gr", &done);

    let text = std::fs::read_to_string(paths.metrics_log()).unwrap();
    let lines: Vec<MetricLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    match (&lines[0].event, &lines[1].event) {
        (MetricEvent::RunnerStart(s), MetricEvent::RunnerStop(e)) => {
            assert_eq!(s.idle, 60.0);
            assert_eq!(e.status, StopStatus::Normal);
            assert_eq!(e.job_duration, 60.0);
            assert_eq!(e.job_conclusion.as_deref(), Some("success"));
        }
        other => panic!("{other:?}"),
    }
    assert!(load_record(&paths).unwrap().is_empty());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(record_path(&paths))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_corrupt_record_is_reported_and_replaced() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    std::fs::create_dir_all(paths.state_dir()).unwrap();
    std::fs::write(record_path(&paths), "{not json").unwrap();
    let err = load_record(&paths).unwrap_err();
    assert!(err.to_string().contains("started-runners.json"), "{err}");
    let reader = Reader::new(&[]);
    let busy = plan(vec![view("a", Condition::Busy)], vec![]);
    issue_for_round(&paths, &reader, &ManualClock::at(NOW), "gr", &busy);
    assert_eq!(
        load_record(&paths).unwrap(),
        [("a".to_string(), None)].into()
    );
}

#[test]
fn a_flush_stops_the_recorded_runners_it_removed_abnormally_and_keeps_the_rest() {
    let record: StartedRecord = [
        ("a".to_string(), started("CI", NOW - 30)),
        ("b".to_string(), started("Build", NOW - 10)),
        ("c".to_string(), None),
    ]
    .into();
    let removed = [
        (RunnerName("a".into()), RemovalReason::Flush),
        (RunnerName("c".into()), RemovalReason::Flush),
        (RunnerName("idle".into()), RemovalReason::Flush),
    ];
    let d = decide_removed(&record, &removed, "gr", NOW);
    assert!(d.starts.is_empty());
    assert_eq!(d.stops.len(), 1);
    assert_eq!(d.stops[0].workflow, "CI");
    assert_eq!(d.stops[0].status, StopStatus::Abnormal);
    assert_eq!(d.stops[0].job_duration, 30.0);
    assert_eq!(d.record.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(decide_removed(&record, &[], "gr", NOW).record, record);
}

#[test]
fn issue_for_flush_writes_the_stop_and_the_smaller_record() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let record: StartedRecord = [("a".to_string(), started("CI", NOW - 30))].into();
    save_record(&paths, &record).unwrap();
    let clock = ManualClock::at(NOW);
    issue_for_flush(
        &paths,
        &clock,
        "gr",
        &[(RunnerName("a".into()), RemovalReason::Flush)],
    );
    let text = std::fs::read_to_string(paths.metrics_log()).unwrap();
    let line: MetricLine = serde_json::from_str(text.trim()).unwrap();
    assert!(
        matches!(&line.event, MetricEvent::RunnerStop(s) if s.status == StopStatus::Abnormal),
        "{text}"
    );
    assert!(load_record(&paths).unwrap().is_empty());
}
