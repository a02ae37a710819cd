//! Config validation through the real binary: config-changed with each configuration,
//! asserting the unit's status. Every case starts from path + token set unless it says
//! otherwise.

#[path = "support/executable.rs"]
mod executable;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;

use juju_harness::Harness;
use serde_json::{json, Value};

const SIZE: &str = "expected a whole number with KiB, MiB, GiB, TiB, PiB or EiB";
const PATH_EXPECTED: &str = "expected <org> or <owner>/<repo> (owner: letters, digits and \
     inner single hyphens, up to 39; repo: letters, digits, '.', '_' and '-', up to 100)";
const MISSING_PATH: &str =
    "path: missing, set it with juju config github-runner path=<org> or <owner>/<repo>";
const MISSING_TOKEN: &str = "token: missing, set it with juju config github-runner \
     token=<token or secret URI> (or the three github-app-* options; see the README)";
const URL_EXPECTED: &str = "expected https://<host>[:<port>] with no path (http:// only for \
     loopback hosts: localhost, 127.0.0.0/8, ::1)";

enum Want {
    /// Valid: the unit waits for the runner manager.
    Valid,
    /// Blocked with exactly `invalid config: <problems joined by "; ">`.
    Blocked(Vec<String>),
}

fn blocked(problems: &[&str]) -> Want {
    Want::Blocked(problems.iter().map(|p| p.to_string()).collect())
}

struct Case {
    name: &'static str,
    /// Start from an empty config instead of path + token.
    from_empty: bool,
    set: Value,
    want: Want,
}

fn case(name: &'static str, set: Value, want: Want) -> Case {
    Case {
        name,
        from_empty: false,
        set,
        want,
    }
}

fn cases() -> Vec<Case> {
    let wn = |min: u32, max: u32| format!("expected a whole number from {min} to {max}");
    vec![
        Case {
            name: "empty config",
            from_empty: true,
            set: json!({}),
            want: blocked(&[MISSING_PATH, MISSING_TOKEN]),
        },
        Case {
            name: "token only",
            from_empty: true,
            set: json!({"token": "t"}),
            want: blocked(&[MISSING_PATH]),
        },
        Case {
            name: "path only",
            from_empty: true,
            set: json!({"path": "org"}),
            want: blocked(&[MISSING_TOKEN]),
        },
        Case {
            name: "brief example: bad size and missing path",
            from_empty: true,
            set: json!({"vm-memory": "7XB", "token": "t"}),
            want: blocked(&[&format!("vm-memory \"7XB\": {SIZE}"), MISSING_PATH]),
        },
        case("defaults", json!({}), Want::Valid),
        case("org path", json!({"path": "my-org"}), Want::Valid),
        case("repo path with dots", json!({"path": "o/.github"}), Want::Valid),
        case("path with three parts", json!({"path": "a/b/c"}), blocked(&[&format!("path \"a/b/c\": {PATH_EXPECTED}")])),
        case("path with empty repo", json!({"path": "a/"}), blocked(&[&format!("path \"a/\": {PATH_EXPECTED}")])),
        case("path with space", json!({"path": "my org"}), blocked(&[&format!("path \"my org\": {PATH_EXPECTED}")])),
        case("path of wrong type", json!({"path": 42}), blocked(&["path 42: expected a string"])),
        case(
            "token of wrong type is never shown",
            json!({"token": 123456789}),
            blocked(&["token: expected a string (the value is not shown: it is a secret)"]),
        ),
        case("empty group", json!({"group": ""}), blocked(&["group \"\": expected a runner group name (the default group is \"default\")"])),
        case("labels ok", json!({"labels": "large, gpu,x_1"}), Want::Valid),
        case(
            "bad labels",
            json!({"labels": "ok,has space,semi;colon"}),
            blocked(&["labels \"ok,has space,semi;colon\": invalid labels \"has space\", \"semi;colon\": expected comma-separated labels of letters, digits, '_' and '-'"]),
        ),
        case("zero virtual machines", json!({"virtual-machines": 0}), Want::Valid),
        case("negative virtual machines", json!({"virtual-machines": -1}), blocked(&[&format!("virtual-machines -1: {}", wn(0, 1000))])),
        case("virtual machines as string", json!({"virtual-machines": "3"}), blocked(&[&format!("virtual-machines \"3\": {}", wn(0, 1000))])),
        case("virtual machines as float", json!({"virtual-machines": 1.5}), blocked(&[&format!("virtual-machines 1.5: {}", wn(0, 1000))])),
        case("ten thousand virtual machines", json!({"virtual-machines": 10000}), blocked(&[&format!("virtual-machines 10000: {}", wn(0, 1000))])),
        case("one cpu", json!({"vm-cpu": 1}), Want::Valid),
        case("zero cpu", json!({"vm-cpu": 0}), blocked(&[&format!("vm-cpu 0: {}", wn(1, 256))])),
        case("u32::MAX cpus", json!({"vm-cpu": 4294967295u64}), blocked(&[&format!("vm-cpu 4294967295: {}", wn(1, 256))])),
        case("memory in MiB", json!({"vm-memory": "512MiB"}), Want::Valid),
        case("zero memory", json!({"vm-memory": "0GiB"}), blocked(&[&format!("vm-memory \"0GiB\": {SIZE}, above zero")])),
        case("memory in GB", json!({"vm-memory": "8GB"}), blocked(&[&format!("vm-memory \"8GB\": {SIZE}")])),
        case("memory as number", json!({"vm-memory": 8}), blocked(&["vm-memory 8: expected a string"])),
        case("disk in TiB", json!({"vm-disk": "16TiB"}), Want::Valid),
        case("disk in EiB", json!({"vm-disk": "1EiB"}), blocked(&["vm-disk \"1EiB\": expected a size from 64MiB to 16TiB"])),
        case("15EiB memory", json!({"vm-memory": "15EiB"}), blocked(&["vm-memory \"15EiB\": expected a size from 256MiB to 1TiB"])),
        case("disk overflow", json!({"vm-disk": "16EiB"}), blocked(&[&format!("vm-disk \"16EiB\": {SIZE}, below 16EiB")])),
        case("reconcile every 2 minutes", json!({"reconcile-interval": 2}), Want::Valid),
        case("reconcile every minute", json!({"reconcile-interval": 1}), blocked(&["reconcile-interval 1: expected a whole number of minutes from 2 to 1440"])),
        case("reconcile every 100000 minutes", json!({"reconcile-interval": 100000}), blocked(&["reconcile-interval 100000: expected a whole number of minutes from 2 to 1440"])),
        case("creations per round", json!({"creations-per-round": 4}), Want::Valid),
        case("no creation per round", json!({"creations-per-round": 0}), blocked(&[&format!("creations-per-round 0: {}", wn(1, 200))])),
        case("base image 24.04", json!({"base-image": "24.04"}), Want::Valid),
        case("base image noble", json!({"base-image": "noble"}), Want::Valid),
        case("base image focal", json!({"base-image": "focal"}), blocked(&["base-image \"focal\": expected jammy, noble, 22.04 or 24.04"])),
        case("denylist ok", json!({"denylist": "10.0.0.0/8, 192.168.0.0/16,1.2.3.4"}), Want::Valid),
        case(
            "denylist with host bits and junk",
            json!({"denylist": "10.0.0.1/8,example.com"}),
            blocked(&["denylist \"10.0.0.1/8,example.com\": invalid entries \"10.0.0.1/8\" (host bits set), \"example.com\" (not an IPv4 address): expected comma-separated IPv4 networks such as 10.0.0.0/8"]),
        ),
        case("dockerhub mirror https", json!({"dockerhub-mirror": "https://mirror.example.com:5000"}), Want::Valid),
        case("dockerhub mirror http", json!({"dockerhub-mirror": "http://mirror.example.com"}), blocked(&["dockerhub-mirror \"http://mirror.example.com\": expected an https:// URL"])),
        case(
            "aproxy without a model proxy",
            json!({"experimental-use-aproxy": true}),
            blocked(&["experimental-use-aproxy true: needs a proxy: set juju-http-proxy or juju-https-proxy with juju model-config"]),
        ),
        case("aproxy as string", json!({"experimental-use-aproxy": "yes"}), blocked(&["experimental-use-aproxy \"yes\": expected true or false"])),
        case("memory runner storage", json!({"runner-storage": "memory"}), Want::Valid),
        case("disk runner storage", json!({"runner-storage": "disk"}), blocked(&["runner-storage \"disk\": expected juju-storage or memory"])),
        case("test mode insecure", json!({"test-mode": "insecure"}), Want::Valid),
        case("test mode yes", json!({"test-mode": "yes"}), blocked(&["test-mode \"yes\": expected \"\" (off) or insecure"])),
        case("GHES url", json!({"github-url": "https://ghe.example.com/"}), Want::Valid),
        case("loopback http url in test mode", json!({"github-url": "http://127.0.0.1:8080", "test-mode": "insecure"}), Want::Valid),
        case("ipv6 loopback url in test mode", json!({"github-url": "http://[::1]:8080", "test-mode": "insecure"}), Want::Valid),
        case(
            "loopback http url outside test mode",
            json!({"github-url": "http://127.0.0.1:8080"}),
            blocked(&["github-url \"http://127.0.0.1:8080\": plain http:// is accepted only with test-mode=insecure; use https://"]),
        ),
        case(
            "remote http url",
            json!({"github-url": "http://ghe.example.com"}),
            blocked(&[&format!("github-url \"http://ghe.example.com\": plain http:// to a remote host; {URL_EXPECTED}")]),
        ),
        case("url with path", json!({"github-url": "https://ghe.example.com/x"}), blocked(&[&format!("github-url \"https://ghe.example.com/x\": {URL_EXPECTED}")])),
        case(
            "url with credentials",
            json!({"github-url": "https://user:pw@ghe.example.com"}),
            blocked(&[&format!("github-url \"https://***@ghe.example.com\": credentials are not allowed in the URL; {URL_EXPECTED}")]),
        ),
        case("null falls back to default", json!({"vm-cpu": null}), Want::Valid),
        case(
            "several problems at once, in config.yaml order",
            json!({"reconcile-interval": 0, "vm-cpu": 0, "path": "-bad", "base-image": 22.04}),
            blocked(&[
                &format!("path \"-bad\": {PATH_EXPECTED}"),
                &format!("vm-cpu 0: {}", wn(1, 256)),
                "reconcile-interval 0: expected a whole number of minutes from 2 to 1440",
                "base-image 22.04: expected a string",
            ]),
        ),
    ]
}

#[test]
fn config_validation_table() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let mut h = Harness::new();
        if !case.from_empty {
            h.valid_config();
        }
        for (k, v) in case.set.as_object().expect("object") {
            h.set_config(k, v.clone());
        }
        let run = h.hook("config-changed");
        if run.code != 0 {
            failures.push(format!("{}: exit {}: {}", case.name, run.code, run.stderr));
            continue;
        }
        let status = h.last_status();
        let ok = match &case.want {
            Want::Valid => status.as_ref().is_some_and(|(s, _)| s == "waiting"),
            Want::Blocked(problems) => {
                status
                    == Some((
                        "blocked".into(),
                        format!("invalid config: {}", problems.join("; ")),
                    ))
            }
        };
        if !ok {
            failures.push(format!("{}: got {status:?}", case.name));
        }
        // Whatever the case, the token never shows.
        assert!(
            !format!("{:?}{:?}", h.statuses(), h.logs()).contains("ghp_TESTTOKEN"),
            "{}",
            case.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_fix_names_the_deployed_application() {
    let mut h = Harness::with_unit("runners-xl/3");
    h.hook("config-changed").assert_ok();
    let (_, message) = h.last_status().unwrap();
    assert!(
        message.contains("juju config runners-xl path=<org> or <owner>/<repo>"),
        "{message}"
    );
    assert!(
        message.contains("juju config runners-xl token=<token or secret URI>"),
        "{message}"
    );
}

#[test]
fn aproxy_with_a_model_proxy_is_valid() {
    let mut h = Harness::new();
    h.valid_config().set_config("experimental-use-aproxy", true);
    h.env.insert(
        "JUJU_CHARM_HTTPS_PROXY".into(),
        "http://squid.internal:3128".into(),
    );
    h.hook("config-changed").assert_ok();
    assert_eq!(h.last_status().map(|s| s.0), Some("waiting".into()));
}
