//! `config-get` JSON -> [`CharmConfig`], or every problem at once.
//!
//! A missing or `null` option takes its config.yaml default (a test keeps the two in sync).
//! A value of the wrong JSON type is a problem like any other, never a crash.

use super::error::{ConfigError, Problem};
use super::values::{
    parse_denylist, parse_github_path, parse_http_url, parse_labels, parse_scale_set_name,
    parse_size, unit_scale_set_name, HttpUrl,
};
use super::{BaseImage, CharmConfig, RunnerStorage};
use crate::github::GitHubPath;
use crate::reactive::source::{parse_mq_uri, MqUri, MQ_URI_EXPECTED};
use crate::secret::redact_url_credentials;
use serde_json::{Map, Value};

/// config.yaml defaults.
pub mod defaults {
    pub const PATH: &str = "";
    pub const TOKEN: &str = "";
    pub const GROUP: &str = "default";
    pub const LABELS: &str = "";
    pub const VIRTUAL_MACHINES: u32 = 1;
    pub const VM_CPU: u32 = 2;
    pub const VM_MEMORY: &str = "7GiB";
    pub const VM_DISK: &str = "10GiB";
    pub const RECONCILE_INTERVAL: u32 = 10;
    pub const BASE_IMAGE: &str = "jammy";
    pub const DENYLIST: &str = "";
    pub const ALLOW_LINK_LOCAL: bool = false;
    pub const DOCKERHUB_MIRROR: &str = "";
    pub const EXPERIMENTAL_USE_APROXY: bool = false;
    pub const RUNNER_STORAGE: &str = "juju-storage";
    pub const TEST_MODE: &str = "";
    pub const GITHUB_URL: &str = "https://github.com";
    pub const CREATIONS_PER_ROUND: u32 = 16;
    pub const MQ_URI: &str = "";
    pub const SCALE_SET_NAME: &str = "";
    pub const MIN_IDLE_RUNNERS: u32 = 0;
}

/// Upper (and lower) bounds of the numeric options: a value past them is a typo or a wish no
/// single machine can grant, refused with Blocked rather than attempted. Stated in the
/// README's config table.
pub mod bounds {
    /// One machine's LXD; the host admission lowers it further to what fits.
    pub const VIRTUAL_MACHINES_MAX: u32 = 1000;
    pub const VM_CPU_MAX: u32 = 256;
    pub const VM_MEMORY_MIN: u64 = 256 << 20;
    pub const VM_MEMORY_MAX: u64 = 1 << 40;
    pub const VM_DISK_MIN: u64 = 64 << 20;
    pub const VM_DISK_MAX: u64 = 16 << 40;
    pub const RECONCILE_INTERVAL_MIN: u32 = 2;
    /// A day: a longer interval leaves used runners unreplaced for longer than a job lasts.
    pub const RECONCILE_INTERVAL_MAX: u32 = 1440;
    pub const CREATIONS_PER_ROUND_MAX: u32 = 200;
}

pub const PUBLIC_GITHUB_API: &str = "https://api.github.com";

/// What validation needs to know beyond the options themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigContext<'a> {
    /// The application name, for the `juju config <app> ...` fix in messages.
    pub app_name: &'a str,
    /// The model has `juju-http-proxy` or `juju-https-proxy` (aproxy needs one).
    pub juju_proxy_configured: bool,
}

/// Reads options one by one, recording problems. On a problem a reader returns a fallback
/// value that is never used: [`validate`] returns the problems instead of a config.
struct Reader<'a> {
    raw: &'a Map<String, Value>,
    invalid: Vec<Problem>,
    missing: Vec<Problem>,
}

impl<'a> Reader<'a> {
    fn value(&self, key: &str) -> Option<&'a Value> {
        self.raw.get(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &'static str, default: &str) -> String {
        match self.value(key) {
            None => default.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.invalid
                    .push(Problem::invalid(key, other, "expected a string"));
                default.to_string()
            }
        }
    }

    /// A string option parsed by `parse`; its problem quotes the value.
    fn parsed<T>(
        &mut self,
        key: &'static str,
        default: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        fallback: T,
    ) -> T {
        self.parsed_shown(key, default, parse, fallback, str::to_string)
    }

    /// As [`Reader::parsed`], quoting the value as `show` renders it.
    fn parsed_shown<T>(
        &mut self,
        key: &'static str,
        default: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        fallback: T,
        show: impl FnOnce(&str) -> String,
    ) -> T {
        let before = self.invalid.len();
        let text = self.string(key, default);
        if self.invalid.len() != before {
            return fallback;
        }
        match parse(&text) {
            Ok(v) => v,
            Err(expected) => {
                self.invalid
                    .push(Problem::invalid(key, &Value::String(show(&text)), expected));
                fallback
            }
        }
    }

    fn whole(&mut self, key: &'static str, default: u32, range: (u32, u32), unit: &str) -> u32 {
        let (min, max) = range;
        let Some(value) = self.value(key) else {
            return default;
        };
        match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if (min..=max).contains(&n) => n,
            _ => {
                let expected = format!("expected a whole number{unit} from {min} to {max}");
                self.invalid.push(Problem::invalid(key, value, expected));
                default
            }
        }
    }

    fn boolean(&mut self, key: &'static str, default: bool) -> bool {
        match self.value(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.invalid
                    .push(Problem::invalid(key, other, "expected true or false"));
                default
            }
        }
    }

    /// `mq-uri`: empty for none. It may hold a password, so a problem never quotes it.
    fn mq_uri(&mut self) -> Option<MqUri> {
        match self.value("mq-uri") {
            None => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => match parse_mq_uri(s) {
                Ok(uri) => Some(uri),
                Err(expected) => {
                    self.invalid.push(Problem::Invalid {
                        option: "mq-uri",
                        shown: None,
                        expected,
                    });
                    None
                }
            },
            Some(_) => {
                self.invalid.push(Problem::Invalid {
                    option: "mq-uri",
                    shown: None,
                    expected: MQ_URI_EXPECTED.into(),
                });
                None
            }
        }
    }
}

/// Validate every option; all problems are reported together.
pub fn validate(
    raw: &Map<String, Value>,
    ctx: &ConfigContext<'_>,
) -> Result<CharmConfig, ConfigError> {
    let mut r = Reader {
        raw,
        invalid: Vec::new(),
        missing: Vec::new(),
    };
    let fallback_path = GitHubPath::Org(String::new());
    let path_is_empty = match r.value("path") {
        None => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    let path = if path_is_empty {
        r.missing.push(Problem::Missing {
            option: "path",
            fix: format!("juju config {} path=<org> or <owner>/<repo>", ctx.app_name),
        });
        fallback_path
    } else {
        r.parsed("path", defaults::PATH, parse_github_path, fallback_path)
    };
    let credential_source = match super::credential::read(raw, ctx.app_name) {
        Ok(source) => Some(source),
        Err((invalid, missing)) => {
            r.invalid.extend(invalid);
            r.missing.extend(missing);
            None
        }
    };
    let group = r.parsed("group", defaults::GROUP, parse_group, String::new());
    let labels = r.parsed("labels", defaults::LABELS, parse_labels, Vec::new());
    let virtual_machines = r.whole(
        "virtual-machines",
        defaults::VIRTUAL_MACHINES,
        (0, bounds::VIRTUAL_MACHINES_MAX),
        "",
    );
    let vm_cpu = r.whole("vm-cpu", defaults::VM_CPU, (1, bounds::VM_CPU_MAX), "");
    let vm_memory = r.parsed(
        "vm-memory",
        defaults::VM_MEMORY,
        |t| parse_size_within(t, bounds::VM_MEMORY_MIN, bounds::VM_MEMORY_MAX),
        0,
    );
    let vm_disk = r.parsed(
        "vm-disk",
        defaults::VM_DISK,
        |t| parse_size_within(t, bounds::VM_DISK_MIN, bounds::VM_DISK_MAX),
        0,
    );
    let reconcile_interval_minutes = r.whole(
        "reconcile-interval",
        defaults::RECONCILE_INTERVAL,
        (
            bounds::RECONCILE_INTERVAL_MIN,
            bounds::RECONCILE_INTERVAL_MAX,
        ),
        " of minutes",
    );
    let base_image = r.parsed(
        "base-image",
        defaults::BASE_IMAGE,
        parse_base_image,
        BaseImage::Jammy,
    );
    let denylist = r.parsed("denylist", defaults::DENYLIST, parse_denylist, Vec::new());
    let allow_link_local = r.boolean("allow-link-local", defaults::ALLOW_LINK_LOCAL);
    // URLs may carry credentials: a status message must not show them.
    let dockerhub_mirror = r.parsed_shown(
        "dockerhub-mirror",
        defaults::DOCKERHUB_MIRROR,
        parse_dockerhub_mirror,
        None,
        redact_url_credentials,
    );
    let experimental_use_aproxy =
        r.boolean("experimental-use-aproxy", defaults::EXPERIMENTAL_USE_APROXY);
    if experimental_use_aproxy && !ctx.juju_proxy_configured {
        r.invalid.push(Problem::invalid(
            "experimental-use-aproxy",
            &Value::Bool(true),
            "needs a proxy: set juju-http-proxy or juju-https-proxy with juju model-config",
        ));
    }
    let runner_storage = r.parsed(
        "runner-storage",
        defaults::RUNNER_STORAGE,
        parse_runner_storage,
        RunnerStorage::JujuStorage,
    );
    let test_mode_insecure = r.parsed("test-mode", defaults::TEST_MODE, parse_test_mode, false);
    let (github_url, api_base_url) = r.parsed_shown(
        "github-url",
        defaults::GITHUB_URL,
        parse_github_url,
        (String::new(), String::new()),
        redact_url_credentials,
    );
    let creations_per_round = r.whole(
        "creations-per-round",
        defaults::CREATIONS_PER_ROUND,
        (1, bounds::CREATIONS_PER_ROUND_MAX),
        "",
    );
    // Plain http:// exists for tests against a local fake GitHub: outside test mode even a
    // loopback URL (a local proxy or tunnel) would carry the token unencrypted.
    if github_url.starts_with("http://") && !test_mode_insecure {
        r.invalid.push(Problem::invalid(
            "github-url",
            &Value::String(github_url.clone()),
            "plain http:// is accepted only with test-mode=insecure; use https://",
        ));
    }
    let mq_uri = r.mq_uri();
    let scale_set_name = r.parsed(
        "scale-set-name",
        defaults::SCALE_SET_NAME,
        parse_scale_set_name,
        None,
    );
    let min_idle_runners = r.whole(
        "min-idle-runners",
        defaults::MIN_IDLE_RUNNERS,
        (0, bounds::VIRTUAL_MACHINES_MAX),
        "",
    );
    if min_idle_runners > virtual_machines {
        r.invalid.push(Problem::invalid(
            "min-idle-runners",
            &Value::from(min_idle_runners),
            crate::messages::min_idle_above_virtual_machines(virtual_machines),
        ));
    }
    if scale_set_name.is_some() && mq_uri.is_some() {
        r.invalid.push(Problem::Invalid {
            option: "scale-set-name",
            shown: None,
            expected: crate::messages::SCALE_SET_WITH_MQ_URI.into(),
        });
    }

    if !r.invalid.is_empty() || !r.missing.is_empty() {
        let mut problems = r.invalid;
        problems.extend(r.missing);
        return Err(ConfigError { problems });
    }
    let Some(credential_source) = credential_source else {
        // read() gave problems, so the early return above was taken.
        return Err(ConfigError {
            problems: Vec::new(),
        });
    };
    Ok(CharmConfig {
        path,
        credential: credential_source.literal(),
        credential_source,
        group,
        labels,
        virtual_machines,
        vm_cpu,
        vm_memory,
        vm_disk,
        reconcile_interval_minutes,
        base_image,
        denylist,
        allow_link_local,
        dockerhub_mirror,
        experimental_use_aproxy,
        runner_storage,
        test_mode_insecure,
        github_url,
        api_base_url,
        creations_per_round,
        mq_uri,
        scale_set_name,
        min_idle_runners,
    })
}

/// `config` for the unit numbered `unit_number`: its scale set's name
/// (`<scale-set-name>-<n>`) must fit GitHub's limit too (validation alone knows no unit).
pub fn for_unit(config: CharmConfig, unit_number: u32) -> Result<CharmConfig, ConfigError> {
    match config
        .scale_set_name
        .as_deref()
        .map(|n| unit_scale_set_name(n, unit_number))
    {
        Some(Err(expected)) => Err(ConfigError {
            problems: vec![Problem::invalid(
                "scale-set-name",
                &Value::String(config.scale_set_name.clone().unwrap_or_default()),
                expected,
            )],
        }),
        _ => Ok(config),
    }
}

/// A size (see [`parse_size`]) from `min` to `max` bytes.
fn parse_size_within(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let n = parse_size(text)?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "expected a size from {} to {}",
            format_size(min),
            format_size(max)
        ))
    }
}

/// Bytes in the largest unit that divides them exactly, as config values are written.
fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

fn parse_group(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("expected a runner group name (the default group is \"default\")".into())
    } else {
        Ok(text.to_string())
    }
}

fn parse_base_image(text: &str) -> Result<BaseImage, String> {
    match text {
        "jammy" | "22.04" => Ok(BaseImage::Jammy),
        "noble" | "24.04" => Ok(BaseImage::Noble),
        _ => Err("expected jammy, noble, 22.04 or 24.04".into()),
    }
}

fn parse_runner_storage(text: &str) -> Result<RunnerStorage, String> {
    match text {
        "juju-storage" => Ok(RunnerStorage::JujuStorage),
        "memory" => Ok(RunnerStorage::Memory),
        _ => Err("expected juju-storage or memory".into()),
    }
}

fn parse_test_mode(text: &str) -> Result<bool, String> {
    match text {
        "" => Ok(false),
        "insecure" => Ok(true),
        _ => Err("expected \"\" (off) or insecure".into()),
    }
}

fn parse_dockerhub_mirror(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    match parse_http_url(text) {
        Ok(HttpUrl { scheme, .. }) if scheme == "https" => Ok(Some(text.to_string())),
        Ok(_) => Err("expected an https:// URL".into()),
        Err(reason) => Err(format!("{reason}; expected an https:// URL")),
    }
}

/// -> (`scheme://host[:port]`, REST API base).
fn parse_github_url(text: &str) -> Result<(String, String), String> {
    const EXPECTED: &str = "expected https://<host>[:<port>] with no path \
         (http:// only for loopback hosts: localhost, 127.0.0.0/8, ::1)";
    let url = parse_http_url(text.trim_end_matches('/')).map_err(|r| format!("{r}; {EXPECTED}"))?;
    if !url.rest.is_empty() {
        return Err(EXPECTED.into());
    }
    if url.scheme == "http" && !url.is_loopback() {
        return Err(format!("plain http:// to a remote host; {EXPECTED}"));
    }
    let origin = url.origin();
    let public =
        url.scheme == "https" && url.host == "github.com" && matches!(url.port, None | Some(443));
    let api = if public {
        PUBLIC_GITHUB_API.to_string()
    } else {
        format!("{origin}/api/v3")
    };
    Ok((origin, api))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CTX: ConfigContext<'static> = ConfigContext {
        app_name: "github-runner",
        juju_proxy_configured: false,
    };

    fn raw(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn valid() -> Map<String, Value> {
        raw(json!({"path": "canonical/repo", "token": "ghp_secret"}))
    }

    fn with(key: &str, value: Value) -> Map<String, Value> {
        let mut m = valid();
        m.insert(key.to_string(), value);
        m
    }

    fn message(m: &Map<String, Value>) -> String {
        validate(m, &CTX).unwrap_err().to_string()
    }

    #[test]
    fn defaults_give_a_complete_config() {
        let c = validate(&valid(), &CTX).unwrap();
        assert_eq!(
            c.path,
            GitHubPath::Repo {
                owner: "canonical".into(),
                repo: "repo".into()
            }
        );
        assert_eq!(c.token().unwrap().expose(), "ghp_secret");
        assert_eq!(c.group, "default");
        assert!(c.labels.is_empty());
        assert_eq!(c.virtual_machines, 1);
        assert_eq!(c.vm_cpu, 2);
        assert_eq!(c.vm_memory, 7 << 30);
        assert_eq!(c.vm_disk, 10 << 30);
        assert_eq!(c.reconcile_interval_minutes, 10);
        assert_eq!(c.base_image, BaseImage::Jammy);
        assert!(c.denylist.is_empty());
        assert_eq!(c.dockerhub_mirror, None);
        assert!(!c.experimental_use_aproxy);
        assert_eq!(c.runner_storage, RunnerStorage::JujuStorage);
        assert!(!c.test_mode_insecure);
        assert_eq!(c.github_url, "https://github.com");
        assert_eq!(c.api_base_url, "https://api.github.com");
    }

    #[test]
    fn null_means_default() {
        let c = validate(&with("vm-cpu", Value::Null), &CTX).unwrap();
        assert_eq!(c.vm_cpu, 2);
    }

    #[test]
    fn empty_config_names_both_fixes() {
        assert_eq!(
            message(&Map::new()),
            "invalid config: path: missing, set it with juju config github-runner \
             path=<org> or <owner>/<repo>; token: missing, set it with juju config \
             github-runner token=<token or secret URI> (or the three github-app-* options; \
             see the README)"
        );
    }

    #[test]
    fn fix_uses_the_deployed_application_name() {
        let ctx = ConfigContext {
            app_name: "runners-large",
            ..CTX
        };
        let err = validate(&raw(json!({"path": "o"})), &ctx).unwrap_err();
        assert!(err
            .to_string()
            .contains("juju config runners-large token=<token or secret URI>"));
    }

    #[test]
    fn invalid_values_come_before_missing_ones() {
        let m = raw(json!({"vm-memory": "7XB", "token": "t"}));
        assert_eq!(
            message(&m),
            "invalid config: vm-memory \"7XB\": expected a whole number with KiB, MiB, GiB, \
             TiB, PiB or EiB; path: missing, set it with juju config github-runner \
             path=<org> or <owner>/<repo>"
        );
    }

    #[test]
    fn the_token_never_appears() {
        for token in [
            json!(12345),
            json!(["ghp_in_a_list"]),
            json!({"t": "ghp_obj"}),
        ] {
            let m = with("token", token);
            let msg = message(&m);
            assert!(msg.contains("token: expected a string"), "{msg}");
            assert!(!msg.contains("12345") && !msg.contains("ghp_"), "{msg}");
        }
        let mut m = with("vm-cpu", json!(0));
        m.insert("token".into(), json!("ghp_secret"));
        assert!(!message(&m).contains("ghp_secret"));
    }

    #[test]
    fn integers_have_bounds_and_types() {
        assert_eq!(
            validate(&with("virtual-machines", json!(0)), &CTX)
                .unwrap()
                .virtual_machines,
            0
        );
        assert_eq!(validate(&with("vm-cpu", json!(1)), &CTX).unwrap().vm_cpu, 1);
        assert_eq!(
            validate(&with("reconcile-interval", json!(2)), &CTX)
                .unwrap()
                .reconcile_interval_minutes,
            2
        );
        for (key, bad) in [
            ("virtual-machines", json!(-1)),
            ("virtual-machines", json!(1.5)),
            ("virtual-machines", json!("1")),
            ("virtual-machines", json!(4294967296u64)),
            ("vm-cpu", json!(0)),
            ("vm-cpu", json!(true)),
            ("reconcile-interval", json!(1)),
            ("reconcile-interval", json!(0)),
        ] {
            let msg = message(&with(key, bad.clone()));
            assert!(
                msg.starts_with(&format!(
                    "invalid config: {key} {bad}: expected a whole number"
                )),
                "{msg}"
            );
        }
    }

    #[test]
    fn choices() {
        let c = validate(&with("base-image", json!("24.04")), &CTX).unwrap();
        assert_eq!(c.base_image, BaseImage::Noble);
        let c = validate(&with("base-image", json!("22.04")), &CTX).unwrap();
        assert_eq!(c.base_image, BaseImage::Jammy);
        let c = validate(&with("runner-storage", json!("memory")), &CTX).unwrap();
        assert_eq!(c.runner_storage, RunnerStorage::Memory);
        let c = validate(&with("test-mode", json!("insecure")), &CTX).unwrap();
        assert!(c.test_mode_insecure);
        assert!(message(&with("base-image", json!("focal")))
            .contains("base-image \"focal\": expected jammy, noble, 22.04 or 24.04"));
        assert!(message(&with("runner-storage", json!("disk")))
            .contains("expected juju-storage or memory"));
        assert!(message(&with("test-mode", json!("yes"))).contains("test-mode \"yes\""));
        assert!(
            message(&with("group", json!(""))).contains("group \"\": expected a runner group name")
        );
    }

    #[test]
    fn aproxy_needs_a_model_proxy() {
        let m = with("experimental-use-aproxy", json!(true));
        assert!(message(&m).contains("experimental-use-aproxy true: needs a proxy"));
        let ctx = ConfigContext {
            juju_proxy_configured: true,
            ..CTX
        };
        assert!(validate(&m, &ctx).unwrap().experimental_use_aproxy);
        assert!(message(&with("experimental-use-aproxy", json!("true")))
            .contains("expected true or false"));
    }

    #[test]
    fn github_urls() {
        let api = |url: &str| {
            let mut raw = with("github-url", json!(url));
            raw.insert("test-mode".into(), json!("insecure"));
            validate(&raw, &CTX).map(|c| (c.github_url, c.api_base_url))
        };
        assert_eq!(
            api("https://github.com/").unwrap().1,
            "https://api.github.com"
        );
        assert_eq!(
            api("https://GitHub.com:443").unwrap().1,
            "https://api.github.com"
        );
        assert_eq!(
            api("https://ghe.example.com/").unwrap(),
            (
                "https://ghe.example.com".into(),
                "https://ghe.example.com/api/v3".into()
            )
        );
        assert_eq!(
            api("http://127.0.0.1:8080").unwrap(),
            (
                "http://127.0.0.1:8080".into(),
                "http://127.0.0.1:8080/api/v3".into()
            )
        );
        assert_eq!(api("http://[::1]:9").unwrap().1, "http://[::1]:9/api/v3");
        assert_eq!(
            api("http://localhost").unwrap().1,
            "http://localhost/api/v3"
        );
        for bad in [
            "http://github.com",
            "https://ghe.example.com/path",
            "github.com",
            "ftp://x",
            "",
            "https://u:p@h",
        ] {
            assert!(api(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numeric_options_have_sane_upper_bounds() {
        for (key, value, expected) in [
            (
                "virtual-machines",
                json!(10000),
                "virtual-machines 10000: expected a whole number from 0 to 1000",
            ),
            (
                "vm-cpu",
                json!(4294967295u64),
                "vm-cpu 4294967295: expected a whole number from 1 to 256",
            ),
            (
                "vm-memory",
                json!("15EiB"),
                "vm-memory \"15EiB\": expected a size from 256MiB to 1TiB",
            ),
            (
                "vm-memory",
                json!("1MiB"),
                "vm-memory \"1MiB\": expected a size from 256MiB to 1TiB",
            ),
            (
                "vm-disk",
                json!("100000GiB"),
                "vm-disk \"100000GiB\": expected a size from 64MiB to 16TiB",
            ),
            (
                "reconcile-interval",
                json!(100000),
                "reconcile-interval 100000: expected a whole number of minutes from 2 to 1440",
            ),
            (
                "creations-per-round",
                json!(0),
                "creations-per-round 0: expected a whole number from 1 to 200",
            ),
            (
                "creations-per-round",
                json!(201),
                "creations-per-round 201: expected a whole number from 1 to 200",
            ),
        ] {
            let msg = message(&with(key, value));
            assert!(msg.contains(expected), "{key}: {msg}");
        }
        for (key, value) in [
            ("virtual-machines", json!(1000)),
            ("vm-cpu", json!(256)),
            ("vm-memory", json!("1TiB")),
            ("vm-memory", json!("256MiB")),
            ("vm-disk", json!("16TiB")),
            ("reconcile-interval", json!(1440)),
            ("creations-per-round", json!(200)),
        ] {
            assert!(
                validate(&with(key, value.clone()), &CTX).is_ok(),
                "{key} {value}"
            );
        }
        assert_eq!(
            validate(&with("path", json!("o")), &CTX)
                .unwrap()
                .creations_per_round,
            16
        );
    }

    #[test]
    fn plain_http_github_url_needs_test_mode() {
        let msg = message(&with("github-url", json!("http://127.0.0.1:8080")));
        assert!(
            msg.contains("github-url \"http://127.0.0.1:8080\": plain http:// is accepted only with test-mode=insecure; use https://"),
            "{msg}"
        );
        assert!(validate(&with("github-url", json!("https://127.0.0.1:8080")), &CTX).is_ok());
    }

    #[test]
    fn url_credentials_are_never_shown() {
        for key in ["github-url", "dockerhub-mirror"] {
            let msg = message(&with(key, json!("https://bob:hunter2@host.example")));
            assert!(!msg.contains("hunter2") && !msg.contains("bob"), "{msg}");
            assert!(msg.contains("\"https://***@host.example\""), "{msg}");
            assert!(msg.contains("credentials are not allowed"), "{msg}");
        }
    }

    #[test]
    fn dockerhub_mirror() {
        let c = validate(
            &with("dockerhub-mirror", json!("https://mirror.example:5000")),
            &CTX,
        )
        .unwrap();
        assert_eq!(
            c.dockerhub_mirror.as_deref(),
            Some("https://mirror.example:5000")
        );
        assert!(
            message(&with("dockerhub-mirror", json!("http://mirror.example")))
                .contains("expected an https:// URL")
        );
        assert!(message(&with("dockerhub-mirror", json!("mirror")))
            .contains("expected an https:// URL"));
    }

    #[test]
    fn mq_uri_is_optional_validated_and_never_shown() {
        assert_eq!(validate(&valid(), &CTX).unwrap().mq_uri, None);
        assert_eq!(
            validate(&with("mq-uri", json!("")), &CTX).unwrap().mq_uri,
            None
        );
        let cfg = validate(&with("mq-uri", json!("redis://:hunter2@r1:6379/0")), &CTX).unwrap();
        assert_eq!(cfg.mq_uri.as_ref().map(|u| u.host()), Some("r1:6379"));
        assert!(!format!("{cfg:?}").contains("hunter2"));
        for bad in [
            json!("mongodb://u:hunter2@"),
            json!("amqp://u:hunter2@h"),
            json!(7),
        ] {
            let msg = message(&with("mq-uri", bad.clone()));
            assert!(
                msg.contains("mq-uri: ") && msg.contains("expected mongodb://"),
                "{msg}"
            );
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    /// Every option, in config.yaml's order.
    const OPTIONS_IN_ORDER: [&str; 24] = [
        "path",
        "token",
        "github-app-id",
        "github-app-installation-id",
        "github-app-private-key",
        "group",
        "labels",
        "virtual-machines",
        "vm-cpu",
        "vm-memory",
        "vm-disk",
        "reconcile-interval",
        "base-image",
        "denylist",
        "allow-link-local",
        "dockerhub-mirror",
        "experimental-use-aproxy",
        "runner-storage",
        "test-mode",
        "github-url",
        "creations-per-round",
        "mq-uri",
        "scale-set-name",
        "min-idle-runners",
    ];

    #[test]
    fn every_problem_at_once() {
        let m = raw(json!({
            "path": "a/b/c", "token": 1, "github-app-id": "x",
            "github-app-installation-id": -2, "github-app-private-key": 5, "group": 7, "labels": "a b", "virtual-machines": -1,
            "vm-cpu": 0, "vm-memory": "0GiB", "vm-disk": 10, "reconcile-interval": 1,
            "base-image": "focal", "denylist": "x", "allow-link-local": "yes",
            "dockerhub-mirror": "ftp://m",
            "experimental-use-aproxy": true, "runner-storage": "disk", "test-mode": "on",
            "github-url": "http://example.com", "creations-per-round": 0,
            "mq-uri": "amqp://u:p@h", "scale-set-name": "-x", "min-idle-runners": "1"
        }));
        let err = validate(&m, &CTX).unwrap_err();
        let options: Vec<&str> = err.problems.iter().map(Problem::option).collect();
        assert_eq!(options, OPTIONS_IN_ORDER);
    }

    /// Issue 23: scale-set mode's options, and what they cannot go with.
    #[test]
    fn scale_set_options_and_their_conflicts() {
        let c = validate(&valid(), &CTX).unwrap();
        assert_eq!((c.scale_set_name, c.min_idle_runners), (None, 0));
        let on = |extra: Value| {
            let mut m = with("scale-set-name", json!("linux"));
            for (k, v) in extra.as_object().unwrap() {
                m.insert(k.clone(), v.clone());
            }
            m
        };
        let c = validate(
            &on(json!({"virtual-machines": 4, "min-idle-runners": 4})),
            &CTX,
        )
        .unwrap();
        assert_eq!(c.scale_set_name.as_deref(), Some("linux"));
        assert_eq!(c.min_idle_runners, 4);
        assert_eq!(
            message(&on(json!({"virtual-machines": 2, "min-idle-runners": 3}))),
            "invalid config: min-idle-runners 3: more than virtual-machines (2), the most \
             runners at once: lower min-idle-runners or raise virtual-machines"
        );
        // Checked in pull mode too: the option is wrong whatever the mode.
        assert!(validate(&with("min-idle-runners", json!(2)), &CTX).is_err());
        assert_eq!(
            message(&on(json!({"mq-uri": "redis://:pw@r1:6379/0"}))),
            "invalid config: scale-set-name: cannot be set together with mq-uri (scale-set \
             mode takes jobs from GitHub, reactive mode from the queue): unset one of the two"
        );
        assert!(message(&with("scale-set-name", json!("a b"))).contains("scale-set-name \"a b\""));
        // The unit's own name must fit.
        let c = validate(&with("scale-set-name", json!("n".repeat(43))), &CTX).unwrap();
        assert!(for_unit(c.clone(), 9).is_ok());
        let err = for_unit(c, 10).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid config: scale-set-name \"nnn"),
            "{err}"
        );
        assert!(err.contains("at most 45 characters"), "{err}");
    }

    #[test]
    fn wrong_type_path_is_invalid_not_missing() {
        let msg = message(&with("path", json!(5)));
        assert!(msg.contains("path 5: expected a string"), "{msg}");
        assert!(!msg.contains("missing"), "{msg}");
    }

    /// The defaults above are config.yaml's.
    #[test]
    fn defaults_match_config_yaml() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml")).unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let default = |k: &str| yaml["options"][k]["default"].clone();
        let s = |v: &str| serde_yaml::Value::String(v.into());
        let n = |v: u32| serde_yaml::Value::Number(v.into());
        assert_eq!(default("path"), s(defaults::PATH));
        assert_eq!(default("token"), s(defaults::TOKEN));
        assert_eq!(default("group"), s(defaults::GROUP));
        assert_eq!(default("labels"), s(defaults::LABELS));
        assert_eq!(default("virtual-machines"), n(defaults::VIRTUAL_MACHINES));
        assert_eq!(default("vm-cpu"), n(defaults::VM_CPU));
        assert_eq!(default("vm-memory"), s(defaults::VM_MEMORY));
        assert_eq!(default("vm-disk"), s(defaults::VM_DISK));
        assert_eq!(
            default("reconcile-interval"),
            n(defaults::RECONCILE_INTERVAL)
        );
        assert_eq!(default("base-image"), s(defaults::BASE_IMAGE));
        assert_eq!(default("denylist"), s(defaults::DENYLIST));
        assert_eq!(
            default("allow-link-local"),
            serde_yaml::Value::Bool(defaults::ALLOW_LINK_LOCAL)
        );
        assert_eq!(default("dockerhub-mirror"), s(defaults::DOCKERHUB_MIRROR));
        assert_eq!(
            default("experimental-use-aproxy"),
            serde_yaml::Value::Bool(defaults::EXPERIMENTAL_USE_APROXY)
        );
        assert_eq!(default("runner-storage"), s(defaults::RUNNER_STORAGE));
        assert_eq!(default("test-mode"), s(defaults::TEST_MODE));
        assert_eq!(default("github-url"), s(defaults::GITHUB_URL));
        assert_eq!(
            default("creations-per-round"),
            n(defaults::CREATIONS_PER_ROUND)
        );
        assert_eq!(default("mq-uri"), s(defaults::MQ_URI));
        assert_eq!(default("scale-set-name"), s(defaults::SCALE_SET_NAME));
        assert_eq!(default("min-idle-runners"), n(defaults::MIN_IDLE_RUNNERS));
        // And the options are validated in config.yaml's order.
        let order: Vec<String> = yaml["options"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(order, OPTIONS_IN_ORDER);
    }
}
