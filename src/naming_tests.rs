use super::*;

fn unit(app: &str, n: u32) -> UnitIdentity {
    UnitIdentity {
        app: app.to_string(),
        unit_number: n,
        model_uuid: "5bb2e5a4-1d0b-4d6e-8a1c-0123456789ab".to_string(),
    }
}

/// A valid Juju application name (`juju/names`' `ApplicationSnippet`) of `len` characters,
/// ending in `last`: segments of letters and digits, none after a hyphen all digits.
fn juju_app(len: usize, last: char) -> String {
    let mut app: String = "runners-x86-large-".chars().cycle().take(len - 1).collect();
    app.push(last);
    assert!(is_juju_application_name(&app), "{app}");
    app
}

/// `juju/names`' `IsValidApplication`.
fn is_juju_application_name(name: &str) -> bool {
    let mut segments = name.split('-');
    let first = segments.next().unwrap_or_default();
    let lower_or_digit = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    first.starts_with(|c: char| c.is_ascii_lowercase())
        && lower_or_digit(first)
        && segments.all(|s| lower_or_digit(s) && s.bytes().any(|b| b.is_ascii_lowercase()))
}

/// LXD's `IsHostname` (instance and ACL names).
fn lxd_accepts_hostname(name: &str) -> bool {
    (1..=HOSTNAME_MAX).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.parse::<u64>().is_err()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The formulas before this rule (the ACL and unit folder names of deployed units).
mod before {
    pub fn acl_name(app: &str, n: u32, model_uuid: &str) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect()
        };
        let model: String = clean(model_uuid).chars().take(8).collect();
        format!("ghr-{model}-{}-{n}", clean(app))
    }

    pub fn runner_prefix(app: &str, n: u32) -> String {
        let budget = 63 - 12 - 2 - n.to_string().len();
        if app.len() <= budget {
            return format!("{app}-{n}-");
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(app.as_bytes());
        let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let kept: String = app.chars().take(budget - 8).collect();
        format!("{kept}{hash}-{n}-")
    }

    pub fn unit_folder_name(unit_name: &str) -> String {
        unit_name
            .chars()
            .map(|c| match c {
                '/' => '-',
                c if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' => c,
                _ => '_',
            })
            .collect()
    }
}

#[test]
fn a_name_that_fits_is_kept_and_a_longer_one_is_cut_to_the_limit() {
    assert_eq!(fit("ghr-", "app", "-0", 63, Charset::Hostname), "ghr-app-0");
    let cut = fit("ghr-", &"a".repeat(100), "-0", 20, Charset::Hostname);
    assert_eq!(cut.len(), 20, "{cut}");
    assert!(cut.starts_with("ghr-aaaaaa"), "{cut}");
    assert!(cut.ends_with("-0"), "the fixed tail stays: {cut}");
    assert_eq!(
        &cut[10..18],
        &sha256_hex(&"a".repeat(100), 8),
        "8 hex of the whole body replace the cut: {cut}"
    );
    // Exactly at the limit: unchanged; one more: cut.
    assert_eq!(
        fit("", &"b".repeat(63), "", 63, Charset::Hostname).len(),
        63
    );
    assert_eq!(
        fit("", &"b".repeat(63), "", 63, Charset::Hostname),
        "b".repeat(63)
    );
    assert_ne!(
        fit("", &"b".repeat(64), "", 63, Charset::Hostname)[..63],
        "b".repeat(63)
    );
    // Fixed parts leaving no room for a hash: the whole name is cut instead.
    let all = fit(
        &"h".repeat(30),
        "body",
        &"t".repeat(30),
        40,
        Charset::Hostname,
    );
    assert_eq!(all.len(), 40, "{all}");
    assert_eq!(fit("", "abcdef", "", 4, Charset::Hostname), "abcd");
}

#[test]
fn characters_outside_the_charset_are_replaced() {
    assert_eq!(fit("", "a.b_c/D", "", 63, Charset::Hostname), "a-b-c-D");
    assert_eq!(fit("", "../x/Y", "", 63, Charset::FileName), "__-x-_");
}

#[test]
fn cut_names_are_deterministic_and_long_names_sharing_a_prefix_differ() {
    let a = juju_app(200, 'a');
    let b = juju_app(200, 'b');
    assert_eq!(unit_acl(&unit(&a, 3)), unit_acl(&unit(&a, 3)));
    assert_eq!(runner_prefix(&unit(&a, 3)), runner_prefix(&unit(&a, 3)));
    assert_ne!(unit_acl(&unit(&a, 3)), unit_acl(&unit(&b, 3)));
    assert_ne!(unit_acl(&unit(&a, 3)), unit_acl(&unit(&a, 4)));
    assert_ne!(runner_prefix(&unit(&a, 3)), runner_prefix(&unit(&b, 3)));
    assert_ne!(
        aproxy_nft_table(&unit(&a, 3)),
        aproxy_nft_table(&unit(&b, 3))
    );
    assert_ne!(
        unit_folder(&format!("{a}/3")),
        unit_folder(&format!("{b}/3"))
    );
    // Another model's unit of the same application has another ACL and table.
    let mut other_model = unit(&a, 3);
    other_model.model_uuid = "0badc0de-0000".into();
    assert_ne!(unit_acl(&other_model), unit_acl(&unit(&a, 3)));
    assert_ne!(
        aproxy_nft_table(&other_model),
        aproxy_nft_table(&unit(&a, 3))
    );
}

/// Juju sets no length on application names; 200 and 1000 characters, with the smallest
/// and largest unit numbers, give names every limit accepts.
#[test]
fn every_name_of_a_long_application_is_within_its_objects_limit() {
    for len in [1, 49, 50, 51, 63, 64, 200, 1000] {
        let app = if len == 1 {
            "a".to_string()
        } else {
            juju_app(len, 'z')
        };
        for n in [0, 7, u32::MAX] {
            let u = unit(&app, n);
            let runner = format!("{}{}", runner_prefix(&u), "0123456789ab");
            assert!(lxd_accepts_hostname(&runner), "runner {runner}");
            assert!(u.owns_name(&runner), "{runner}");
            let acl = unit_acl(&u);
            assert!(lxd_accepts_hostname(&acl), "acl {acl}");
            assert!(acl.ends_with(&format!("-{n}")), "{acl}");
            let table = aproxy_nft_table(&u);
            assert!(
                table.len() <= NFT_NAME_MAX && lxd_accepts_hostname(&table),
                "{table}"
            );
            let folder = unit_folder(&u.unit_name());
            assert!(folder.len() <= UNIT_FOLDER_MAX, "{folder}");
            assert!(folder.ends_with(&format!("-{n}")), "{folder}");
            for file_name in [
                exporter_service(&u.unit_name()),
                reconcile_unit(&folder, "service"),
                reconcile_unit(&folder, "timer"),
                format!("github-runner-metrics-{folder}.log"),
                format!("github-runner-reactive-{folder}"),
                format!("github-runner-image-{folder}"),
            ] {
                assert!(file_name.len() <= FILE_NAME_MAX, "{file_name}");
            }
        }
    }
}

/// Existing deployments keep their objects: every name that fit before is the same.
#[test]
fn names_that_fit_before_are_unchanged() {
    let model = "5bb2e5a4-1d0b-4d6e-8a1c-0123456789ab";
    for len in 1..=70 {
        let app = if len == 1 {
            "a".to_string()
        } else {
            juju_app(len, 'q')
        };
        for n in [0, 1, 42, 99_999] {
            let u = unit(&app, n);
            let old_acl = before::acl_name(&app, n, model);
            if old_acl.len() <= HOSTNAME_MAX {
                assert_eq!(unit_acl(&u), old_acl);
            }
            // Runner names were already cut this way: long ones are the same too.
            assert_eq!(runner_prefix(&u), before::runner_prefix(&app, n));
            assert_eq!(
                unit_folder(&u.unit_name()),
                before::unit_folder_name(&u.unit_name())
            );
        }
    }
    assert_eq!(
        unit_acl(&unit("github-runner", 0)),
        "ghr-5bb2e5a4-github-runner-0"
    );
    assert_eq!(
        aproxy_nft_table(&unit("github-runner", 0)),
        "ghr-aproxy-5bb2e5a4-github-runner-0"
    );
    assert_eq!(runner_prefix(&unit("github-runner", 0)), "github-runner-0-");
    assert_eq!(unit_folder("github-runner/0"), "github-runner-0");
    assert_eq!(
        exporter_service("github-runner/0"),
        "ghro.metrics-exporter.github-runner-0.service"
    );
    assert_eq!(
        reconcile_unit("github-runner-0", "timer"),
        "ghro.reconcile-runners-github-runner-0.timer"
    );
    // A hostile unit name still cannot climb out of its folder.
    assert_eq!(unit_folder("../../etc/x"), "__-__-etc-x");
}

/// Names the charm does not derive from the deployment are within their limits as they are.
#[test]
fn the_constant_names_fit_their_objects() {
    for (name, limit) in [
        (crate::network::DEFAULT_BRIDGE, INTERFACE_MAX),
        (crate::charm::setup::decide::BRIDGE, INTERFACE_MAX),
        (crate::runner::resources::RUNNER_POOL, HOSTNAME_MAX),
        (crate::runner::resources::RUNNER_PROFILE, HOSTNAME_MAX),
    ] {
        assert_eq!(fit("", name, "", limit, Charset::Hostname), name);
    }
}
