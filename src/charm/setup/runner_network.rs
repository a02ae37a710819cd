//! The runners' bridge, this unit's egress ACL and aproxy's redirect, converged by host
//! setup; and the check that no other ACL on the shared bridge stops what this unit's
//! options promise ([`crate::network::promises`]).

use super::commands::HostCommands;
use super::{SetupEdges, SetupError};
use crate::charm::context::Context;
use crate::config::CharmConfig;
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
/// (see [`crate::network`]); nothing when the charm manages no bridge here.
pub fn converge_runner_network(
    ctx: &Context<'_>,
    config: &CharmConfig,
    edges: &dyn SetupEdges,
) -> Result<(), SetupError> {
    let Some((bridge, net)) = edges.runner_network() else {
        return Ok(());
    };
    let commands = edges.commands();
    let inputs = network_inputs(ctx, config, commands)?;
    converge_acl(ctx, &bridge, net, &inputs)?;
    let nft_file = ctx.paths.aproxy_nft_file();
    crate::network::aproxy::converge(
        commands,
        &nft_file,
        &bridge,
        inputs.aproxy_upstream.as_deref(),
    )?;
    Ok(())
}

/// The periodic event's share: the bridge and this unit's ACL, then the promise check, from
/// one reading of the inputs. aproxy is left to setups (`snap set` would restart the proxy
/// under running jobs).
pub fn converge_acl_and_promises(
    ctx: &Context<'_>,
    config: &CharmConfig,
    edges: &dyn SetupEdges,
) -> Result<(), SetupError> {
    let Some((bridge, net)) = edges.runner_network() else {
        return Ok(());
    };
    let inputs = network_inputs(ctx, config, edges.commands())?;
    let acl = converge_acl(ctx, &bridge, net, &inputs)?;
    let others = crate::network::converge::other_acls(net, &bridge, &acl)?;
    promises_kept(&inputs, &others, bridge)
}

/// Returns the ACL's name.
fn converge_acl(
    ctx: &Context<'_>,
    bridge: &str,
    net: &dyn crate::lxd::network::LxdNetworks,
    inputs: &NetworkInputs,
) -> Result<String, SetupError> {
    let acl = crate::network::acl_name(&ctx.hook.identity);
    let rules = crate::network::acl::egress_rules(&inputs.acl);
    let done = crate::network::converge::converge(net, bridge, &acl, &rules)?;
    tracing::info!(bridge = %bridge, acl = %acl, changed = ?done, "runner network converged");
    Ok(acl)
}

fn promises_kept(
    inputs: &NetworkInputs,
    others: &[(String, Vec<crate::network::acl::AclRule>)],
    bridge: String,
) -> Result<(), SetupError> {
    let promised = crate::network::promises::promises(&inputs.acl, &inputs.tmate);
    match crate::network::promises::broken_promise(&promised, others) {
        None => Ok(()),
        Some((promise, acl)) => Err(crate::network::NetworkError::PromiseBroken {
            promise: promise.source.clone(),
            acl,
            bridge,
        }
        .into()),
    }
}

/// Blocked when another ACL on the shared bridge (another unit's on this machine, or an
/// operator's) stops what this unit's options promise runners can reach. Run last by every
/// setup (the periodic event checks in [`converge_acl_and_promises`], since another unit
/// may change its options at any time); one LXD query while this unit's ACL is alone.
pub fn check_network_promises(
    ctx: &Context<'_>,
    config: &CharmConfig,
    edges: &dyn SetupEdges,
) -> Result<(), SetupError> {
    let Some((bridge, net)) = edges.runner_network() else {
        return Ok(());
    };
    let acl = crate::network::acl_name(&ctx.hook.identity);
    let others = crate::network::converge::other_acls(net, &bridge, &acl)?;
    if others.is_empty() {
        return Ok(());
    }
    let inputs = network_inputs(ctx, config, edges.commands())?;
    promises_kept(&inputs, &others, bridge)
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
