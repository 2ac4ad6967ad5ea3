//! Who is calling, and whether they may: the node's half of the security model
//! (`baton_tls` has the other half: certificates, identities, TLS itself).
//!
//! Every service is wrapped in an [`Interceptor`] for the port it is served on. The
//! interceptor reads the identity from the client certificate of the connection, once
//! per request, and leaves a [`Caller`] in the request's extensions; handlers then ask
//! the caller for the permission their call needs ([`Caller::require`]). Nothing a
//! request carries can raise it, with one exception made for forwarding: a directory
//! node that forwards a client's call to the leader over the peer port names the
//! original caller in [`BY_KEY`], and the leader believes it because only node
//! certificates get into the peer port. (A node is trusted with the whole log anyway.)
//!
//! | port   | accepts                              | serves                           |
//! |--------|--------------------------------------|----------------------------------|
//! | client | agents, clients, nodes               | Directory, Agent, Watch, health  |
//! | peer   | nodes only                           | Raft, and Directory for forwards |
//!
//! In plain text (`--insecure`) there are no identities: every caller is
//! [`Caller::Anyone`] and may do everything.

use baton_tls::{Identity, Permission};
use tonic::{Request, Status};

/// Metadata a node sets on a call it forwards to the leader: the original caller's
/// identity, as the URIs of its certificate separated by spaces.
pub const BY_KEY: &str = "baton-by";

/// Who sent a request, as its connection proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Plain text: nobody is authenticated and everything is allowed.
    Anyone,
    /// The identity of the client certificate (or, on a forward, of the original caller).
    Is(Identity),
}

impl Caller {
    /// The caller of `req`, as the port's interceptor recorded it. A handler reached
    /// without one is a wiring bug; refusing is the safe answer.
    pub fn of<T>(req: &Request<T>) -> Result<Caller, Status> {
        req.extensions().get::<Caller>().cloned().ok_or_else(|| {
            Status::internal("no caller identity on this request (served without its interceptor)")
        })
    }

    /// Refuse unless the caller holds `needed` (or more). `what` names the call.
    pub fn require(&self, needed: Permission, what: &str) -> Result<(), Status> {
        let Caller::Is(id) = self else {
            return Ok(());
        };
        match id.permission() {
            Some(p) if p >= needed => Ok(()),
            Some(p) => Err(Status::permission_denied(format!(
                "{what} needs the {needed} permission; {id} has {p}"
            ))),
            None => Err(Status::permission_denied(format!(
                "{what} needs a client certificate with the {needed} permission; {id} is not an admin client"
            ))),
        }
    }

    /// Refuse unless the caller may run the agent of `server`.
    pub fn may_run(&self, server: &str) -> Result<(), Status> {
        let Caller::Is(id) = self else {
            return Ok(());
        };
        match &id.server {
            Some(s) if s == server => Ok(()),
            Some(s) => Err(Status::permission_denied(format!(
                "this certificate is for server {s:?}; it may not claim server {server:?}"
            ))),
            None => Err(Status::permission_denied(format!(
                "{id} may not open an agent session: its certificate names no server (wanted {server:?})"
            ))),
        }
    }

    /// The node id the caller's certificate names, if it is a directory node (`None`
    /// in plain text, where the peer port accepts anyone).
    pub fn node(&self) -> Option<u64> {
        match self {
            Caller::Is(id) => id.node,
            Caller::Anyone => None,
        }
    }

    /// How the audit trail names the caller: "" in plain text.
    pub fn by(&self) -> String {
        match self {
            Caller::Is(id) => id.to_string(),
            Caller::Anyone => String::new(),
        }
    }

    /// The value of [`BY_KEY`] that forwards this caller (None in plain text).
    pub fn forward_value(&self) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
        match self {
            Caller::Is(id) => id.uris().join(" ").parse().ok(),
            Caller::Anyone => None,
        }
    }
}

/// Which listener an interceptor guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Client,
    Peer,
}

/// Records the [`Caller`] of every request on one port, and turns away, before any
/// handler runs, a request without a usable client certificate (`UNAUTHENTICATED`) and
/// anything but a directory node on the peer port (`PERMISSION_DENIED`).
#[derive(Clone, Copy, Debug)]
pub struct Interceptor {
    pub tls: bool,
    pub port: Port,
}

impl tonic::service::Interceptor for Interceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = if !self.tls {
            Caller::Anyone
        } else {
            let id = baton_tls::peer_identity(&req)?;
            match self.port {
                Port::Client => Caller::Is(id),
                Port::Peer if id.node.is_none() => {
                    return Err(Status::permission_denied(format!(
                        "the peer port serves directory nodes only; this certificate is {id}"
                    )));
                }
                Port::Peer => match req.metadata().get(BY_KEY) {
                    Some(v) => {
                        let uris = v.to_str().map_err(|_| {
                            Status::invalid_argument(format!("{BY_KEY} is not ASCII"))
                        })?;
                        Caller::Is(
                            Identity::from_uris(uris.split(' '))
                                .map_err(|e| Status::invalid_argument(format!("{BY_KEY}: {e}")))?,
                        )
                    }
                    None => Caller::Is(id),
                },
            }
        };
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(p: Permission, server: Option<&str>) -> Caller {
        Caller::Is(Identity {
            client: Some((p, "alice".into())),
            server: server.map(str::to_string),
            node: None,
        })
    }

    #[test]
    fn permissions_are_ordered_and_refusals_name_both_sides() {
        let viewer = client(Permission::Viewer, None);
        viewer.require(Permission::Viewer, "listing roles").unwrap();
        let e = viewer
            .require(Permission::Operator, "creating a role")
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            e.message(),
            "creating a role needs the operator permission; viewer alice has viewer"
        );
        client(Permission::Admin, None)
            .require(Permission::Operator, "x")
            .unwrap();
        let agent = Caller::Is(Identity {
            server: Some("srv-b".into()),
            ..Identity::default()
        });
        assert!(agent.require(Permission::Viewer, "reading").is_err());
        let e = agent.may_run("srv-a").unwrap_err();
        assert!(e.message().contains("\"srv-b\"") && e.message().contains("\"srv-a\""));
        agent.may_run("srv-b").unwrap();
        assert!(client(Permission::Admin, None).may_run("srv-a").is_err());
        client(Permission::Operator, Some("srv-a"))
            .may_run("srv-a")
            .unwrap();
        Caller::Anyone.require(Permission::Admin, "x").unwrap();
        Caller::Anyone.may_run("x").unwrap();
    }
}
