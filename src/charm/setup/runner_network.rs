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
    let hosts = crate::network::parse_host_addresses(&out.stdout);
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
    let host_ports = match aproxy_upstream {
        Some(_) => vec![crate::network::aproxy::LISTEN_PORT],
        None => Vec::new(),
    };
    Ok(NetworkInputs {
        acl: crate::network::acl_inputs(config, hosts, exempt, host_ports),
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
    let nft_file = ctx.paths.aproxy_nft_file();
    crate::network::aproxy::converge(
        commands,
        &nft_file,
        &bridge,
        inputs.aproxy_upstream.as_deref(),
    )?;
    Ok(broken)
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

/// The address and port of each tmate server, to exempt from the denylist: an address as
/// given, a host name as this machine resolves it (runners resolve through the bridge's
/// dnsmasq, which asks the host's resolver). A name that does not resolve is logged and
/// exempts nothing: runners could not reach it either.
pub fn tmate_endpoints(
    servers: &[crate::network::debug_ssh::TmateServer],
    commands: &dyn HostCommands,
) -> Vec<(std::net::Ipv4Addr, u16)> {
    let mut endpoints = Vec::new();
    for server in servers {
        if let Some(ip) = server.ipv4() {
            endpoints.push((ip, server.port));
            continue;
        }
        let resolved = match commands.find("getent") {
            Some(getent) => commands
                .run(
                    &getent,
                    &["ahostsv4", &server.host],
                    Duration::from_secs(15),
                )
                .map(|out| crate::network::debug_ssh::parse_ahostsv4(&out.stdout))
                .unwrap_or_else(|e| {
                    tracing::warn!("could not resolve debug-ssh server {}: {e}", server.host);
                    Vec::new()
                }),
            None => Vec::new(),
        };
        if resolved.is_empty() {
            tracing::warn!(
                "debug-ssh server {} does not resolve on this machine: no address of it is \
                 exempted from the denylist",
                server.host
            );
        }
        endpoints.extend(resolved.into_iter().map(|ip| (ip, server.port)));
    }
    endpoints.sort();
    endpoints.dedup();
    endpoints
}
