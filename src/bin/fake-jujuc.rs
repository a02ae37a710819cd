//! fake-jujuc: Juju's hook tools for tests, one multi-call binary linked under each tool's
//! name (it looks at argv[0]).
//!
//! It accepts jujuc's syntax (GNU-style flags anywhere until `--`, `--format=json|yaml|smart`),
//! reproduces its exit codes (2 for argument errors, 1 for runtime errors) and `ERROR <msg>`
//! on stderr, and refuses to run outside a hook (`JUJU_CONTEXT_ID`) or, for the action tools,
//! outside an action (`JUJU_ACTION_NAME`). State lives in `$FAKE_JUJU_STATE_DIR`
//! (see `github_runner::juju::fake`). Built only with the `testkit` feature.

use github_runner::juju::fake::{
    self, ActionRecord, CallRecord, FakeRelation, LogRecord, StatusRecord, World,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

struct Failure {
    code: i32,
    stderr: String,
}

/// Exit 2: the arguments are wrong.
fn usage(msg: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        stderr: format!("ERROR {}", msg.into()),
    }
}

/// Exit 1: the arguments were fine, the operation was not.
fn runtime(msg: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        stderr: format!("ERROR {}", msg.into()),
    }
}

fn io_failure(e: impl std::fmt::Display) -> Failure {
    runtime(format!("fake-jujuc state: {e}"))
}

type ToolResult = Result<String, Failure>;

/// A flag: its names (short and/or long) and whether it takes a value.
struct Flag(&'static [&'static str], bool);

const FORMAT: Flag = Flag(&["--format"], true);
const OUTPUT: Flag = Flag(&["-o", "--output"], true);
const RELATION: Flag = Flag(&["-r", "--relation"], true);
const APP: Flag = Flag(&["--app"], false);

#[derive(Default)]
struct Parsed {
    values: BTreeMap<&'static str, String>,
    bools: BTreeSet<&'static str>,
    positional: Vec<String>,
}

impl Parsed {
    fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        self.bools.contains(name)
    }

    /// At most `max` positional arguments, as jujuc's `CheckEmpty`.
    fn at_most(&self, max: usize) -> Result<(), Failure> {
        match self.positional.get(max..) {
            Some(extra) if !extra.is_empty() => Err(unrecognized(extra)),
            _ => Ok(()),
        }
    }
}

fn unrecognized(extra: &[String]) -> Failure {
    let quoted: Vec<String> = extra.iter().map(|a| format!("{a:?}")).collect();
    usage(format!("unrecognized args: [{}]", quoted.join(" ")))
}

/// GNU-style parsing as Juju's gnuflag with interspersed arguments: `--long[=v]`,
/// `-s [v]`, flags anywhere until `--`. Values are keyed by the flag's last (long) name.
fn parse(args: &[String], flags: &[Flag]) -> Result<Parsed, Failure> {
    let mut parsed = Parsed::default();
    let mut iter = args.iter();
    let mut only_positional = false;
    while let Some(arg) = iter.next() {
        if only_positional || arg == "-" || !arg.starts_with('-') {
            parsed.positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let Some(Flag(names, takes_value)) = flags.iter().find(|f| f.0.contains(&name)) else {
            return Err(usage(format!("option provided but not defined: {name}")));
        };
        let key = names[names.len() - 1];
        if *takes_value {
            let value = match inline {
                Some(v) => v,
                None => iter
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("option needs an argument: {name}")))?,
            };
            parsed.values.insert(key, value);
        } else {
            match inline.as_deref() {
                None | Some("true") => {
                    parsed.bools.insert(key);
                }
                Some("false") => {
                    parsed.bools.remove(key);
                }
                Some(v) => {
                    return Err(usage(format!(
                        "invalid value {v:?} for flag {name}: parse error"
                    )))
                }
            }
        }
    }
    Ok(parsed)
}

fn render(p: &Parsed, value: &Value) -> ToolResult {
    let text = match p.value("--format").unwrap_or("smart") {
        "json" => value.to_string(),
        "yaml" => serde_yaml::to_string(value).map_err(io_failure)?,
        "smart" => match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => serde_yaml::to_string(other).map_err(io_failure)?,
        },
        other => {
            return Err(usage(format!(
                "invalid value {other:?} for option --format: unknown format {other:?}"
            )))
        }
    };
    let text = text.trim_end().to_string();
    if let Some(path) = p.value("--output") {
        std::fs::write(path, format!("{text}\n")).map_err(io_failure)?;
        return Ok(String::new());
    }
    Ok(if text.is_empty() {
        text
    } else {
        format!("{text}\n")
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

struct Tool {
    dir: PathBuf,
    world: World,
}

impl Tool {
    fn save(&self) -> Result<(), Failure> {
        fake::write_json(&self.dir.join(fake::WORLD_FILE), &self.world).map_err(io_failure)
    }

    fn append<T: serde::Serialize>(&self, file: &str, record: &T) -> Result<(), Failure> {
        fake::append_jsonl(&self.dir.join(file), record).map_err(io_failure)
    }

    fn relation(&self, id: &str) -> Result<&FakeRelation, Failure> {
        self.world
            .relations
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| {
                usage(format!(
                    "invalid value {id:?} for option -r: relation not found"
                ))
            })
    }

    /// `-r`, else the hook's own relation.
    fn relation_id(&self, p: &Parsed) -> Result<String, Failure> {
        let id = p
            .value("--relation")
            .map(str::to_string)
            .or_else(|| env("JUJU_RELATION_ID"))
            .ok_or_else(|| usage("no relation id specified"))?;
        self.relation(&id)?;
        Ok(id)
    }
}

fn require_action() -> Result<(), Failure> {
    match env("JUJU_ACTION_NAME") {
        Some(_) => Ok(()),
        None => Err(runtime("not running an action")),
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let tool = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    let args = argv.get(1..).unwrap_or(&[]).to_vec();
    let state_dir = env(fake::STATE_DIR_ENV).map(PathBuf::from);
    let result = run(&tool, &args, state_dir.as_deref());
    let (code, stdout, stderr) = match result {
        Ok(out) => (0, out, String::new()),
        Err(f) => (f.code, String::new(), f.stderr),
    };
    if let Some(dir) = &state_dir {
        let record = CallRecord {
            tool: tool.clone(),
            args,
            exit: code,
        };
        // Recording is for the test's assertions; the tool's own answer matters more.
        let _ = fake::append_jsonl(&dir.join(fake::CALLS_FILE), &record);
    }
    let _ = std::io::stdout().write_all(stdout.as_bytes());
    if !stderr.is_empty() {
        let _ = writeln!(std::io::stderr(), "{stderr}");
    }
    std::process::exit(code);
}

fn run(tool: &str, args: &[String], state_dir: Option<&Path>) -> ToolResult {
    if env("JUJU_CONTEXT_ID").is_none() {
        return Err(runtime("JUJU_CONTEXT_ID not set"));
    }
    let dir = state_dir.ok_or_else(|| runtime(format!("{} not set", fake::STATE_DIR_ENV)))?;
    let world: World = fake::read_json(&dir.join(fake::WORLD_FILE)).map_err(io_failure)?;
    if let Some(f) = world.failing.get(tool) {
        return Err(Failure {
            code: f.code,
            stderr: f.stderr.clone(),
        });
    }
    let mut t = Tool {
        dir: dir.to_path_buf(),
        world,
    };
    match tool {
        "config-get" => config_get(&t, args),
        "status-set" => status_set(&t, args),
        "status-get" => status_get(&t, args),
        "application-version-set" => application_version_set(&t, args),
        "juju-log" => juju_log(&t, args),
        "action-get" => action_get(&t, args),
        "action-set" => action_set(&t, args),
        "action-fail" => action_fail(&t, args),
        "action-log" => action_log(&t, args),
        "relation-ids" => relation_ids(&t, args),
        "relation-list" => relation_list(&t, args),
        "relation-get" => relation_get(&t, args),
        "relation-set" => relation_set(&mut t, args),
        "is-leader" => {
            let p = parse(args, &[FORMAT, OUTPUT])?;
            p.at_most(0)?;
            render(&p, &Value::Bool(t.world.leader))
        }
        "storage-list" => storage_list(&t, args),
        "storage-get" => storage_get(&t, args),
        "state-get" => state_get(&t, args),
        "state-set" => state_set(&mut t, args),
        "state-delete" => state_delete(&mut t, args),
        "juju-reboot" => juju_reboot(&t, args),
        "secret-get" => secret_get(&mut t, args),
        "opened-ports" => {
            let p = parse(args, &[FORMAT, OUTPUT])?;
            p.at_most(0)?;
            render(&p, &json!([]))
        }
        other => Err(runtime(format!("fake-jujuc does not implement {other:?}"))),
    }
}

/// config.yaml defaults of the charm being run (`null` for an option without one).
fn config_defaults() -> Result<Map<String, Value>, Failure> {
    let dir = env("JUJU_CHARM_DIR")
        .or_else(|| env("CHARM_DIR"))
        .ok_or_else(|| runtime("JUJU_CHARM_DIR not set"))?;
    let text = match std::fs::read_to_string(Path::new(&dir).join("config.yaml")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(io_failure(e)),
    };
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).map_err(io_failure)?;
    let mut defaults = Map::new();
    if let Some(options) = yaml.get("options").and_then(|o| o.as_mapping()) {
        for (name, spec) in options {
            let Some(name) = name.as_str() else { continue };
            let default = spec
                .get("default")
                .cloned()
                .unwrap_or(serde_yaml::Value::Null);
            defaults.insert(
                name.to_string(),
                serde_json::to_value(default).map_err(io_failure)?,
            );
        }
    }
    Ok(defaults)
}

fn config_get(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[FORMAT, OUTPUT, Flag(&["-a", "--all"], false)])?;
    p.at_most(1)?;
    let mut merged = config_defaults()?;
    merged.extend(t.world.config.clone());
    match p.positional.first() {
        Some(key) if p.flag("--all") => Err(usage(format!(
            "cannot use argument --all together with key {key:?}"
        ))),
        Some(key) => render(&p, merged.get(key).unwrap_or(&Value::Null)),
        None if p.flag("--all") => render(&p, &Value::Object(merged)),
        None => {
            merged.retain(|_, v| !v.is_null());
            render(&p, &Value::Object(merged))
        }
    }
}

const STATUSES: [&str; 4] = ["maintenance", "blocked", "waiting", "active"];

fn status_set(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[Flag(&["--application"], false)])?;
    let status = p
        .positional
        .first()
        .ok_or_else(|| usage("invalid args, require <status> [message] [data]"))?;
    if !STATUSES.contains(&status.as_str()) {
        return Err(usage(format!(
            "invalid status {status:?}, expected one of [{}]",
            STATUSES.join(" ")
        )));
    }
    p.at_most(2)?;
    let application = p.flag("--application");
    if application && !t.world.leader {
        return Err(runtime("this unit is not the leader"));
    }
    t.append(
        fake::STATUS_FILE,
        &StatusRecord {
            status: status.clone(),
            message: p.positional.get(1).cloned().unwrap_or_default(),
            application,
        },
    )?;
    Ok(String::new())
}

fn status_get(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(
        args,
        &[
            FORMAT,
            OUTPUT,
            Flag(&["--include-data"], false),
            Flag(&["--application"], false),
        ],
    )?;
    p.at_most(0)?;
    let history: Vec<StatusRecord> =
        fake::read_jsonl(&t.dir.join(fake::STATUS_FILE)).map_err(io_failure)?;
    let last = history
        .iter()
        .rev()
        .find(|s| s.application == p.flag("--application"));
    let (status, message) = last
        .map(|s| (s.status.as_str(), s.message.as_str()))
        .unwrap_or(("unknown", ""));
    render(
        &p,
        &json!({"status": status, "message": message, "status-data": {}}),
    )
}

fn application_version_set(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[])?;
    let version = p
        .positional
        .first()
        .ok_or_else(|| usage("no version specified"))?;
    p.at_most(1)?;
    t.append(fake::APP_VERSION_FILE, version)?;
    Ok(String::new())
}

const LOG_LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"];

fn juju_log(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(
        args,
        &[
            Flag(&["--debug"], false),
            Flag(&["-l", "--log-level"], true),
        ],
    )?;
    if p.positional.is_empty() {
        return Err(usage("no message specified"));
    }
    let requested = p
        .value("--log-level")
        .unwrap_or("INFO")
        .to_ascii_uppercase();
    let level = if p.flag("--debug") {
        "DEBUG".to_string()
    } else if LOG_LEVELS.contains(&requested.as_str()) {
        requested
    } else {
        // jujuc logs at INFO when the level is not one it knows.
        "INFO".to_string()
    };
    t.append(
        fake::LOG_FILE,
        &LogRecord {
            level,
            message: p.positional.join(" "),
        },
    )?;
    Ok(String::new())
}

fn lookup<'a>(map: &'a Map<String, Value>, dotted: &str) -> Option<&'a Value> {
    let mut parts = dotted.split('.');
    let mut current = map.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn action_get(t: &Tool, args: &[String]) -> ToolResult {
    require_action()?;
    let p = parse(args, &[FORMAT, OUTPUT])?;
    p.at_most(1)?;
    match p.positional.first() {
        Some(key) => render(
            &p,
            lookup(&t.world.action_params, key).unwrap_or(&Value::Null),
        ),
        None => render(&p, &Value::Object(t.world.action_params.clone())),
    }
}

fn action_key_ok(key: &str) -> bool {
    key.split('.').all(|part| {
        let b = part.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !b.is_empty()
            && b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum)
            && b.iter().all(|c| alnum(c) || *c == b'-')
    })
}

fn action_set(t: &Tool, args: &[String]) -> ToolResult {
    require_action()?;
    let p = parse(args, &[])?;
    let path = t.dir.join(fake::ACTION_FILE);
    let mut record: ActionRecord = fake::read_json(&path).map_err(io_failure)?;
    for arg in &p.positional {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| usage(format!("argument {arg:?} must be of the form key...=value")))?;
        if ["stdout", "stdout-encoding", "stderr", "stderr-encoding"].contains(&key) {
            return Err(usage(format!("cannot set reserved action key {key:?}")));
        }
        if !action_key_ok(key) {
            return Err(usage(format!(
                "key {key:?} must start and end with lowercase alphanumeric, and contain only \
                 lowercase alphanumeric, hyphens and periods"
            )));
        }
        let parts: Vec<&str> = key.split('.').collect();
        let mut map = &mut record.results;
        for part in &parts[..parts.len() - 1] {
            let entry = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            map = match entry {
                Value::Object(m) => m,
                _ => unreachable!("made an object just above"),
            };
        }
        map.insert(
            parts[parts.len() - 1].to_string(),
            Value::String(value.to_string()),
        );
    }
    fake::write_json(&path, &record).map_err(io_failure)?;
    Ok(String::new())
}

fn action_fail(t: &Tool, args: &[String]) -> ToolResult {
    require_action()?;
    let p = parse(args, &[])?;
    p.at_most(1)?;
    let path = t.dir.join(fake::ACTION_FILE);
    let mut record: ActionRecord = fake::read_json(&path).map_err(io_failure)?;
    record.failure =
        Some(p.positional.first().cloned().unwrap_or_else(|| {
            "action failed without reason given, check action for errors".into()
        }));
    fake::write_json(&path, &record).map_err(io_failure)?;
    Ok(String::new())
}

fn action_log(t: &Tool, args: &[String]) -> ToolResult {
    require_action()?;
    let p = parse(args, &[])?;
    if p.positional.is_empty() {
        return Err(usage("no message specified"));
    }
    t.append(fake::ACTION_LOG_FILE, &p.positional.join(" "))?;
    Ok(String::new())
}

fn relation_ids(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[FORMAT, OUTPUT])?;
    p.at_most(1)?;
    let endpoint = p
        .positional
        .first()
        .cloned()
        .or_else(|| env("JUJU_RELATION"))
        .ok_or_else(|| usage("no endpoint name specified"))?;
    let ids: Vec<Value> = t
        .world
        .relations
        .iter()
        .filter(|r| r.endpoint() == endpoint)
        .map(|r| Value::String(r.id.clone()))
        .collect();
    render(&p, &Value::Array(ids))
}

fn relation_list(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[FORMAT, OUTPUT, RELATION, APP])?;
    p.at_most(0)?;
    let relation = t.relation(&t.relation_id(&p)?)?;
    if p.flag("--app") {
        return render(&p, &Value::String(relation.remote_app.clone()));
    }
    let units: Vec<Value> = relation
        .remote_units
        .keys()
        .map(|u| Value::String(u.clone()))
        .collect();
    render(&p, &Value::Array(units))
}

fn relation_get(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[FORMAT, OUTPUT, RELATION, APP])?;
    p.at_most(2)?;
    let relation = t.relation(&t.relation_id(&p)?)?;
    let key = p.positional.first().map(String::as_str).unwrap_or("-");
    let app = p.flag("--app");
    let target = p
        .positional
        .get(1)
        .cloned()
        .or_else(|| {
            env(if app {
                "JUJU_REMOTE_APP"
            } else {
                "JUJU_REMOTE_UNIT"
            })
        })
        .ok_or_else(|| usage("no unit or application specified"))?;
    // As jujuc: with --app, a unit name stands for its application.
    let target = match target.split_once('/') {
        Some((application, _)) if app => application.to_string(),
        _ => target,
    };
    let local_unit = env("JUJU_UNIT_NAME").unwrap_or_default();
    let local_app = local_unit.split('/').next().unwrap_or("").to_string();
    let data = if app && target == local_app {
        Some(&relation.local_app_data)
    } else if app && target == relation.remote_app {
        Some(&relation.remote_app_data)
    } else if !app && target == local_unit {
        Some(&relation.local_unit_data)
    } else if !app {
        relation.remote_units.get(&target)
    } else {
        None
    };
    let data = data.ok_or_else(|| {
        runtime(format!(
            "cannot read settings for {target:?} in relation {:?}: settings not found",
            relation.id
        ))
    })?;
    if key == "-" || key.is_empty() {
        let map: Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        return render(&p, &Value::Object(map));
    }
    render(
        &p,
        &data
            .get(key)
            .map_or(Value::Null, |v| Value::String(v.clone())),
    )
}

/// `--file -|path` (a YAML or JSON map of strings) then `k=v` arguments.
fn settings(p: &Parsed) -> Result<BTreeMap<String, String>, Failure> {
    let mut settings = BTreeMap::new();
    if let Some(file) = p.value("--file") {
        let text = if file == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(io_failure)?;
            s
        } else {
            std::fs::read_to_string(file).map_err(io_failure)?
        };
        let parsed: Option<BTreeMap<String, String>> = serde_yaml::from_str(&text)
            .map_err(|e| usage(format!("cannot parse settings file: {e}")))?;
        settings.extend(parsed.unwrap_or_default());
    }
    for arg in &p.positional {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| usage(format!("expected \"key=value\", got {arg:?}")))?;
        settings.insert(k.to_string(), v.to_string());
    }
    Ok(settings)
}

fn apply(bag: &mut BTreeMap<String, String>, changes: BTreeMap<String, String>) {
    for (k, v) in changes {
        if v.is_empty() {
            bag.remove(&k);
        } else {
            bag.insert(k, v);
        }
    }
}

fn relation_set(t: &mut Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[FORMAT, RELATION, APP, Flag(&["--file"], true)])?;
    let id = t.relation_id(&p)?;
    let changes = settings(&p)?;
    let app = p.flag("--app");
    if app && !t.world.leader {
        return Err(runtime(
            "cannot write relation settings: this unit is not the leader",
        ));
    }
    let relation = t
        .world
        .relations
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or_else(|| usage("relation not found"))?;
    apply(
        if app {
            &mut relation.local_app_data
        } else {
            &mut relation.local_unit_data
        },
        changes,
    );
    t.save()?;
    Ok(String::new())
}

fn storage_list(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[FORMAT, OUTPUT])?;
    p.at_most(1)?;
    let name = p.positional.first();
    let ids: Vec<Value> = t
        .world
        .storage
        .keys()
        .filter(|id| name.is_none_or(|n| id.split('/').next() == Some(n.as_str())))
        .map(|id| Value::String(id.clone()))
        .collect();
    render(&p, &Value::Array(ids))
}

fn storage_get(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[FORMAT, OUTPUT, Flag(&["-s"], true)])?;
    p.at_most(1)?;
    let id = p
        .value("-s")
        .map(str::to_string)
        .or_else(|| env("JUJU_STORAGE_ID"))
        .ok_or_else(|| usage("no storage instance specified"))?;
    let storage = t.world.storage.get(&id).ok_or_else(|| {
        usage(format!(
            "invalid value {id:?} for option -s: storage instance {id:?} not found"
        ))
    })?;
    let all = json!({"kind": storage.kind, "location": storage.location});
    match p.positional.first() {
        Some(key) => render(&p, all.get(key.as_str()).unwrap_or(&Value::Null)),
        None => render(&p, &all),
    }
}

fn state_get(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[FORMAT, OUTPUT, Flag(&["--strict"], false)])?;
    p.at_most(1)?;
    let state = &t.world.unit_state;
    match p.positional.first() {
        Some(key) => match state.get(key) {
            Some(v) => render(&p, &Value::String(v.clone())),
            None if p.flag("--strict") => Err(runtime(format!("{key:?} not found"))),
            None => render(&p, &Value::Null),
        },
        // Juju prints null, not {}, for empty state: the charm must cope with both.
        None if state.is_empty() => render(&p, &Value::Null),
        None => render(&p, &serde_json::to_value(state).map_err(io_failure)?),
    }
}

fn state_set(t: &mut Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[Flag(&["--file"], true)])?;
    let changes = settings(&p)?;
    apply(&mut t.world.unit_state, changes);
    t.save()?;
    Ok(String::new())
}

fn state_delete(t: &mut Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[])?;
    let key = p
        .positional
        .first()
        .cloned()
        .ok_or_else(|| usage("no key specified"))?;
    p.at_most(1)?;
    t.world.unit_state.remove(&key);
    t.save()?;
    Ok(String::new())
}

fn juju_reboot(t: &Tool, args: &[String]) -> ToolResult {
    let p = parse(args, &[Flag(&["--now"], false)])?;
    p.at_most(0)?;
    if env("JUJU_ACTION_NAME").is_some() {
        return Err(runtime(
            "juju-reboot is not supported when running an action",
        ));
    }
    t.append(fake::REBOOT_FILE, &json!({"now": p.flag("--now")}))?;
    Ok(String::new())
}

/// As Juju answers a consumer: the tracked revision (the first read tracks the latest),
/// `--refresh` the latest and tracks it, `--peek` the latest without tracking it;
/// "permission denied" (exit 1) for a secret not granted to this application.
fn secret_get(t: &mut Tool, args: &[String]) -> ToolResult {
    let p = parse(
        args,
        &[
            FORMAT,
            OUTPUT,
            Flag(&["--peek"], false),
            Flag(&["--refresh"], false),
            Flag(&["--label"], true),
        ],
    )?;
    p.at_most(2)?;
    let id = p
        .positional
        .first()
        .cloned()
        .ok_or_else(|| usage("require either a secret URI or label"))?;
    if p.flag("--peek") && p.flag("--refresh") {
        return Err(usage("specify one of --peek or --refresh but not both"));
    }
    // Juju names a secret `secret:<id>` or `secret://<model-uuid>/<id>`: either finds it.
    let same = |known: &String| github_runner::juju::same_secret(known, &id);
    let Some((id, latest)) = t
        .world
        .secrets
        .iter()
        .find(|(known, _)| same(known))
        .map(|(k, v)| (k.clone(), v.clone()))
    else {
        return Err(runtime(format!("secret {id:?} not found")));
    };
    if t.world.secrets_not_granted.iter().any(same) {
        return Err(runtime("permission denied"));
    }
    let content = if p.flag("--peek") {
        latest
    } else if let (false, Some(tracked)) = (p.flag("--refresh"), t.world.secrets_tracked.get(&id)) {
        tracked.clone()
    } else {
        t.world.secrets_tracked.insert(id.clone(), latest.clone());
        t.save()?;
        latest
    };
    match p.positional.get(1) {
        Some(key) => render(&p, &content.get(key).map_or(Value::Null, |v| json!(v))),
        None => render(&p, &serde_json::to_value(content).map_err(io_failure)?),
    }
}
