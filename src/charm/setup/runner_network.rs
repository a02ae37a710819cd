//! The runners' bridge, this unit's egress ACL and aproxy's redirect, converged by host
//! setup, the ACL also by every timer event; and, each time, the check that no other ACL on
//! the shared bridge stops what this unit's options promise ([`crate::network::promises`]).

use super::commands::HostCommands;
use super::{SetupEdges, SetupError};
use crate::charm::context::Context;
use crate::config::CharmConfig;
use crate::network::NetworkError;
use std::time::Duration;

/// What the ACL and the promise check are computed from, read from the host now.
struct NetworkInputs {
    acl: crate::network::acl::AclInputs,
    /// Address and port of each debug-ssh server.
    tmate: Vec<(std::net::Ipv4Addr, u16)>,
    aproxy_upstream: Option<String>,
}

fn network_inputs(
    ctx: &Context<'_>,
    config: &CharmConfig,
    commands: &dyn HostCommands,
) -> Result<NetworkInputs, SetupError> {
    let ip = commands
        .find("ip")
        .ok_or_else(|| SetupError::LxdInstall("the ip command (iproute2) is missing".into()))?;
    let out = commands.run(&ip, &["-4", "-o", "addr", "show"], Duration::from_secs(30))?;
    let rejected = crate::network::Rejected {
        host_addresses: crate::network::parse_host_addresses(&out.stdout),
        host_broadcasts: crate::network::parse_host_broadcasts(&out.stdout),
        brokers: broker_addresses(ctx, config, commands),
    };
    let servers = crate::network::debug_ssh::read_servers(ctx.tools);
    let tmate = tmate_endpoints(&servers, commands);
    let mut exempt: Vec<std::net::Ipv4Addr> = tmate.iter().map(|(addr, _)| *addr).collect();
    exempt.dedup();
    let aproxy_upstream = if config.experimental_use_aproxy {
        let proxy = &ctx.hook.proxy;
        Some(crate::network::aproxy::upstream(
            proxy.https.as_deref(),
            proxy.http.as_deref(),
        )?)
    } else {
        None
    };
    let mut host_ports = match aproxy_upstream {
        Some(_) => vec![crate::network::aproxy::LISTEN_PORT],
        None => Vec::new(),
    };
    if ctx.paths.python_policy_service_unit().exists() {
        // The Python charm's runners still running a job call its policy service at job
        // start; it goes (and the port closes) once the last of them did.
        host_ports.push(crate::legacy::cleanup::POLICY_PORT);
    }
    Ok(NetworkInputs {
        acl: crate::network::acl_inputs(config, rejected, exempt, host_ports),
        tmate,
        aproxy_upstream,
    })
}

/// The runners' bridge, this unit's egress ACL and aproxy's redirect, rebuilt from `config`
/// (see [`crate::network`]); nothing when the charm manages no bridge here. Answers the
/// promise another ACL on the bridge breaks, if one does, for the caller to refuse once the
/// rest of the host is set up.
pub fn converge_runner_network(
    ctx: &Context<'_>,
    config: &CharmConfig,
    edges: &dyn SetupEdges,
) -> Result<Option<NetworkError>, SetupError> {
    let Some((bridge, net)) = edges.runner_network() else {
        return Ok(None);
    };
    let commands = edges.commands();
    let inputs = network_inputs(ctx, config, commands)?;
    let broken = converge_acl_and_check(ctx, bridge.clone(), net, &inputs)?;
    crate::network::aproxy::converge(
        commands,
        &aproxy_target(ctx, bridge),
        inputs.aproxy_upstream.as_deref(),
    )?;
    Ok(broken)
}

/// This unit's aproxy redirect on `bridge`: its table, its file, its runners' MAC prefix.
pub fn aproxy_target(ctx: &Context<'_>, bridge: String) -> crate::network::aproxy::AproxyTarget {
    let identity = &ctx.hook.identity;
    crate::network::aproxy::AproxyTarget {
        table: crate::network::aproxy::table_name(identity),
        nft_file: ctx.paths.aproxy_nft_file(),
        legacy_nft_file: ctx.paths.legacy().aproxy_nft_file(),
        bridge,
        runner_mac_prefix: crate::network::unit_mac_prefix(&identity.owner_value()),
    }
}

/// The periodic event's share, even when nothing else of the host changed: the ACL is
/// converged again (one someone detached or edited is put back, a debug-ssh host name is
/// resolved anew; LXD is written only where it differs), and a broken promise refused. Under
/// the machine lock: units share the bridge's ACL list. aproxy is left to setups (`snap
/// set` would restart the proxy under running jobs).
pub fn converge_acl_and_promises(
    ctx: &Context<'_>,
    config: &CharmConfig,
    edges: &dyn SetupEdges,
) -> Result<(), SetupError> {
    let Some((bridge, net)) = edges.runner_network() else {
        return Ok(());
    };
    let _shared = super::lock_machine(ctx, "runner-network")?;
    let inputs = network_inputs(ctx, config, edges.commands())?;
    match converge_acl_and_check(ctx, bridge, net, &inputs)? {
        Some(broken) => Err(broken.into()),
        None => Ok(()),
    }
}

/// This unit's ACL on `bridge`, then the first of its promises another ACL on the bridge
/// (another unit's on this machine, or an operator's) stops: one LXD query more while
/// this unit's ACL is alone.
fn converge_acl_and_check(
    ctx: &Context<'_>,
    bridge: String,
    net: &dyn crate::lxd::network::LxdNetworks,
    inputs: &NetworkInputs,
) -> Result<Option<NetworkError>, SetupError> {
    let acl = crate::network::acl_name(&ctx.hook.identity);
    let rules = crate::network::acl::egress_rules(&inputs.acl);
    let done = crate::network::converge::converge(net, &bridge, &acl, &rules)?;
    tracing::info!(bridge = %bridge, acl = %acl, changed = ?done, "runner network converged");
    if !done.kept_defaults.is_empty() {
        tracing::warn!(
            "the runners' bridge {bridge} keeps the default ACL actions someone else set \
             ({:?}): traffic no rule of its ACLs matches gets that action, not allow",
            done.kept_defaults
        );
    }
    let others = crate::network::converge::other_acls(net, &bridge, &acl)?;
    let promised = crate::network::promises::promises(&inputs.acl, &inputs.tmate);
    Ok(
        crate::network::promises::broken_promise(&promised, &others).map(|(promise, acl)| {
            NetworkError::PromiseBroken {
                promise: promise.source.clone(),
                acl,
                bridge,
            }
        }),
    )
}

/// The job queue broker's addresses in reactive mode (`mq-uri`, else the `mongodb`
/// relation), resolved on this machine; none in pull mode. Only the hosts are logged: the
/// URI holds a password.
fn broker_addresses(
    ctx: &Context<'_>,
    config: &CharmConfig,
    commands: &dyn HostCommands,
) -> Vec<std::net::Ipv4Addr> {
    use crate::reactive::mode::{current_queue, unit_dirs, QueueChoice};
    let dirs = unit_dirs(ctx.paths, &ctx.hook.identity);
    let hosts = match current_queue(
        ctx.tools,
        config.mq_uri.as_ref(),
        ctx.queue_hook_facts(),
        &dirs,
    ) {
        Ok(QueueChoice::Reactive { broker, .. }) => {
            crate::network::broker::broker_hosts(&broker.host)
        }
        Ok(_) => return Vec::new(),
        Err(e) => {
            tracing::warn!("could not read the mongodb relation for the runners' ACL: {e}");
            return Vec::new();
        }
    };
    let mut addrs: Vec<std::net::Ipv4Addr> = hosts
        .iter()
        .flat_map(|host| resolve_ipv4(commands, host, "job queue broker"))
        .collect();
    addrs.sort();
    addrs.dedup();
    tracing::info!(brokers = ?addrs, "job queue broker rejected for runners");
    addrs
}

/// `host` as an IPv4 address, or as this machine resolves it (`getent ahostsv4`; runners
/// resolve through the bridge's dnsmasq, which asks the host's resolver). A name that does
/// not resolve is logged (as `what`) and gives nothing: runners could not reach it either.
fn resolve_ipv4(commands: &dyn HostCommands, host: &str, what: &str) -> Vec<std::net::Ipv4Addr> {
    if let Ok(ip) = host.parse() {
        return vec![ip];
    }
    let resolved = match commands.find("getent") {
        Some(getent) => commands
            .run(&getent, &["ahostsv4", host], Duration::from_secs(15))
            .map(|out| crate::network::debug_ssh::parse_ahostsv4(&out.stdout))
            .unwrap_or_else(|e| {
                tracing::warn!("could not resolve {what} {host}: {e}");
                Vec::new()
            }),
        None => Vec::new(),
    };
    if resolved.is_empty() {
        tracing::warn!("{what} {host} does not resolve on this machine");
    }
    resolved
}

/// The address and port of each tmate server, to exempt from the denylist: an address as
/// given, a host name as this machine resolves it ([`resolve_ipv4`]; one that does not
/// resolve exempts nothing).
pub fn tmate_endpoints(
    servers: &[crate::network::debug_ssh::TmateServer],
    commands: &dyn HostCommands,
) -> Vec<(std::net::Ipv4Addr, u16)> {
    let mut endpoints: Vec<(std::net::Ipv4Addr, u16)> = servers
        .iter()
        .flat_map(|server| {
            resolve_ipv4(commands, &server.host, "debug-ssh server")
                .into_iter()
                .map(|ip| (ip, server.port))
        })
        .collect();
    endpoints.sort();
    endpoints.dedup();
    endpoints
}
