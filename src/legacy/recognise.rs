//! Which instances and registrations are the Python charm's runners of this unit.
//!
//! It named them `{app}-{unit}-{secrets.token_hex(12)}` (24 lowercase hex) and marked
//! them with nothing else; this charm names its own `{prefix}{12 hex}` and marks them with
//! `user.github-runner.*` keys. Only an exact match of this unit's application and number
//! counts: app `x` unit 1 never claims `x-1-0-…` (app `x-1`), and an application whose name
//! extends this one (`app-x`) never matches `app-…`.

use crate::identity::UnitIdentity;
use crate::lxd::Instance;

/// `secrets.token_hex(12)`: the random part of the Python charm's runner names.
pub const OLD_SUFFIX_HEX_LEN: usize = 24;

/// Every config key this charm puts on its instances starts with it.
pub const THIS_CHARMS_KEY_PREFIX: &str = "user.github-runner.";

/// True when `name` is exactly `{app}-{unit}-{24 lowercase hex}` for `identity`.
pub fn is_old_runner_name(identity: &UnitIdentity, name: &str) -> bool {
    let prefix = format!("{}-{}-", identity.app, identity.unit_number);
    name.strip_prefix(&prefix).is_some_and(|suffix| {
        suffix.len() == OLD_SUFFIX_HEX_LEN
            && suffix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// True when `instance` looks like a Python-charm runner of any unit of any application
/// (`{something}-{number}-{24 hex}`, no key of this charm): while one is on the machine,
/// what the Python charm's units share stays (`cleanup::Found::unit_part`). Only ever a
/// reason to keep things, never to touch the instance.
pub fn is_any_python_runner(instance: &Instance) -> bool {
    let mut parts = instance.name.rsplitn(3, '-');
    let (Some(hex), Some(number), Some(app)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !app.is_empty()
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && hex.len() == OLD_SUFFIX_HEX_LEN
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && !instance
            .config
            .keys()
            .any(|k| k.starts_with(THIS_CHARMS_KEY_PREFIX))
}

/// True when `instance` is one of the Python charm's runners of this unit: its name
/// ([`is_old_runner_name`]) and no key of this charm.
pub fn is_old_runner(identity: &UnitIdentity, instance: &Instance) -> bool {
    is_old_runner_name(identity, &instance.name)
        && !instance
            .config
            .keys()
            .any(|k| k.starts_with(THIS_CHARMS_KEY_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lxd::{InstanceState, InstanceType};

    fn unit(app: &str, n: u32) -> UnitIdentity {
        UnitIdentity {
            app: app.into(),
            unit_number: n,
            model_uuid: "uuid".into(),
        }
    }

    const HEX24: &str = "0123456789abcdef01234567";

    fn instance(name: &str, config: &[(&str, &str)]) -> Instance {
        Instance {
            name: name.into(),
            state: InstanceState::Running,
            instance_type: InstanceType::VirtualMachine,
            created_at_epoch: 0,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            profiles: vec!["default".into(), "runner".into()],
        }
    }

    #[test]
    fn only_this_units_names_with_24_lowercase_hex_are_old_runners() {
        let me = unit("github-runner", 0);
        assert!(is_old_runner_name(&me, &format!("github-runner-0-{HEX24}")));
        for other in [
            // another unit of the application
            format!("github-runner-1-{HEX24}"),
            format!("github-runner-10-{HEX24}"),
            // an application whose name extends this one, or that this one extends
            format!("github-runner-x-0-{HEX24}"),
            format!("x-github-runner-0-{HEX24}"),
            format!("github-0-{HEX24}"),
            // look-alikes of the suffix
            format!("github-runner-0-{}", &HEX24[..23]),
            format!("github-runner-0-{HEX24}0"),
            format!("github-runner-0-{}", HEX24.to_uppercase()),
            "github-runner-0-0123456789abcdef0123456g".into(),
            "github-runner-0-0123456789abcdef-1234567".into(),
            // this charm's own shape (12 hex)
            "github-runner-0-0123456789ab".into(),
            "github-runner-0-".into(),
            "builder".into(),
        ] {
            assert!(!is_old_runner_name(&me, &other), "{other}");
        }
        // Unit 1 of app "x" never claims app "x-1"'s unit 0, nor the reverse.
        assert!(!is_old_runner_name(
            &unit("x", 1),
            &format!("x-1-0-{HEX24}")
        ));
        assert!(!is_old_runner_name(
            &unit("x-1", 0),
            &format!("x-1-{HEX24}")
        ));
        assert!(is_old_runner_name(
            &unit("x-1", 0),
            &format!("x-1-0-{HEX24}")
        ));
    }

    #[test]
    fn an_instance_carrying_any_key_of_this_charm_is_never_an_old_runner() {
        let me = unit("github-runner", 0);
        let name = format!("github-runner-0-{HEX24}");
        assert!(is_old_runner(&me, &instance(&name, &[])));
        assert!(is_old_runner(
            &me,
            &instance(&name, &[("user.operator.note", "x"), ("limits.cpu", "2")])
        ));
        for key in [
            crate::identity::OWNER_CONFIG_KEY,
            crate::manager::replacement::SCOPE_CONFIG_KEY,
            crate::manager::replacement::REPLACE_CONFIG_KEY,
            crate::manager::planner::RUNNER_ID_CONFIG_KEY,
        ] {
            assert!(
                !is_old_runner(&me, &instance(&name, &[(key, "v")])),
                "{key}"
            );
        }
        assert!(!is_old_runner(
            &me,
            &instance(&format!("github-runner-1-{HEX24}"), &[])
        ));
    }

    #[test]
    fn any_units_python_runner_is_seen_only_by_its_shape() {
        let hex = HEX24;
        for (name, seen) in [
            (format!("other-app-3-{hex}"), true),
            (format!("gr-0-{hex}"), true),
            (format!("gr-x-{hex}"), false),
            (format!("-0-{hex}"), false),
            (format!("gr-0-{}", &hex[..23]), false),
            (format!("gr-0-{}", hex.to_uppercase()), false),
            ("operators-vm".to_string(), false),
        ] {
            assert_eq!(is_any_python_runner(&instance(&name, &[])), seen, "{name}");
        }
        let ours = instance(&format!("gr-0-{hex}"), &[("user.github-runner.owner", "x")]);
        assert!(!is_any_python_runner(&ours));
    }
}
