//! Conversions between the wire types (`baton.v1`) and the domain (`baton-core`).
//! Malformed requests are refused here, before anything reaches the log.

use baton_core::{Command, Event, Role, Server, State};
use baton_proto::v1 as pb;
use pb::command::Command as C;
use tonic::Status;

use crate::error::invalid;

/// A wire command as a domain command. Only operator commands exist on the wire; the
/// agent and controller commands are made inside the directory.
pub fn command_from_proto(cmd: pb::Command) -> Result<Command, Status> {
    let Some(c) = cmd.command else {
        return Err(invalid("the request carries no command"));
    };
    Ok(match c {
        C::AddServer(m) => Command::AddServer {
            name: m.name,
            main: m.main,
            kinds: m.kinds,
        },
        C::RemoveServer(m) => Command::RemoveServer { name: m.name },
        C::CreateRole(m) => Command::CreateRole {
            name: m.name,
            kind: m.kind,
            servers: m.servers,
            failback: m.failback,
            failback_delay_ms: m.failback_delay_ms,
            database: m.database,
        },
        C::DeleteRole(m) => Command::DeleteRole { name: m.name },
        C::AddRoleServer(m) => Command::AddRoleServer {
            role: m.role,
            server: m.server,
            position: m.position,
        },
        C::RemoveRoleServer(m) => Command::RemoveRoleServer {
            role: m.role,
            server: m.server,
        },
        C::MoveRoleServer(m) => Command::MoveRoleServer {
            role: m.role,
            server: m.server,
            up: m.up,
        },
        C::SetRole(m) => Command::SetRole {
            role: m.role,
            failback: m.failback,
            failback_delay_ms: m.failback_delay_ms,
            database: m
                .database
                .map(|d| if d.is_empty() { None } else { Some(d) }),
        },
        C::DrainServer(m) => Command::DrainServer { name: m.name },
        C::ResumeServer(m) => Command::ResumeServer { name: m.name },
        C::MoveRole(m) => Command::MoveRole {
            role: m.role,
            server: m.server,
        },
        // The grace default needs the node's clock-rate bound: filled in by the service.
        C::SetLease(m) => Command::SetLease {
            lease_ms: m.lease_ms,
            grace_ms: m.grace_ms,
        },
    })
}

/// `state` turns the quarantine ends (directory time) into wall-clock estimates.
/// It also carries the role's standby readiness, computed from the same state.
pub fn role_to_proto(state: &State, r: &Role) -> pb::Role {
    let readiness = state.standby_readiness(&r.name).unwrap_or_default();
    pb::Role {
        name: r.name.clone(),
        kind: r.kind.clone(),
        servers: r.servers.clone(),
        active_server: r.active.clone(),
        epoch: r.epoch,
        failback: r.failback,
        failback_delay_ms: r.failback_delay_ms,
        database: r.database.clone(),
        state: r.state().as_str().to_string(),
        reason: r.reason.clone(),
        quarantined: r
            .quarantine
            .iter()
            .map(|(server, until)| pb::Quarantine {
                server: server.clone(),
                until_ms: state.wall_estimate_ms(*until),
            })
            .collect(),
        standbys: readiness
            .standbys
            .iter()
            .map(|s| pb::Standby {
                server: s.server.clone(),
                ready: s.ready,
                reason: s.reason.unwrap_or_default().to_string(),
            })
            .collect(),
        at_risk: readiness.at_risk(),
    }
}

pub fn server_to_proto(state: &State, s: &Server) -> pb::Server {
    pb::Server {
        name: s.name.clone(),
        status: s.status.as_str().to_string(),
        maintenance: s.maintenance,
        main: s.main,
        kinds: s.kinds.iter().cloned().collect(),
        roles: state.roles_on(&s.name),
        instance: s.instance.id.clone(),
        agent_address: s.instance.address.clone(),
        instance_since_ms: s.instance_since_ms,
    }
}

pub fn event_to_proto(e: &Event) -> pb::Event {
    pb::Event {
        revision: e.revision,
        time_ms: e.time_ms,
        role: e.role.clone(),
        cause: e.cause.as_str().to_string(),
        from: e.from.clone(),
        to: e.to.clone(),
        epoch: e.epoch,
        detail: e.detail.clone(),
        index: e.index,
        by: e.by.clone(),
    }
}
