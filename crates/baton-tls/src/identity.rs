//! Who a certificate speaks for, and what it may do.
//!
//! Every identity lives in the certificate's subject alternative names, as URIs of one
//! scheme, so one parser reads them all and no field is overloaded:
//!
//! | URI                      | who                                        |
//! |--------------------------|--------------------------------------------|
//! | `baton://node/3`         | directory node 3                           |
//! | `baton://server/srv-a`   | the agent of server `srv-a`                |
//! | `baton://viewer/alice`   | a client allowed reads, watch and status   |
//! | `baton://operator/bob`   | ... also role and server commands          |
//! | `baton://admin/carol`    | ... also membership, leadership, settings  |
//!
//! The permission is part of the certificate the CA signed, so a client cannot raise it
//! without a new certificate; rotating a permission means issuing a new one. A
//! certificate may carry a server name and a permission at once (an operator's
//! certificate that may also run an agent), but at most one of each: two would make
//! "who did this" ambiguous.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::TlsError;

/// The URI scheme and host prefix of every Baton identity.
pub const URI_PREFIX: &str = "baton://";
/// Longest name accepted in an identity (server names are bounded tighter elsewhere).
pub const NAME_MAX: usize = 253;

/// What an admin client may do. Ordered: each level includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Reads, watch and status.
    Viewer,
    /// Also role and server commands: create, delete, drain, resume, move.
    Operator,
    /// Also membership, leader transfer and cluster settings.
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 3] = [Permission::Viewer, Permission::Operator, Permission::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Viewer => "viewer",
            Permission::Operator => "operator",
            Permission::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identities one certificate carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// A directory node's id (`baton://node/ID`).
    pub node: Option<u64>,
    /// The server name an agent may claim (`baton://server/NAME`).
    pub server: Option<String>,
    /// An admin client's permission and name (`baton://PERMISSION/NAME`).
    pub client: Option<(Permission, String)>,
}

impl Identity {
    /// Read the identities of a DER certificate. A certificate with no Baton identity, or
    /// with a malformed or repeated one, is an error naming it.
    pub fn from_der(der: &[u8]) -> Result<Identity, TlsError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| TlsError::Certificate(format!("does not parse: {e}")))?;
        let mut id = Identity::default();
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| TlsError::Certificate(format!("bad subject alternative names: {e}")))?;
        if let Some(sans) = sans {
            for name in &sans.value.general_names {
                if let GeneralName::URI(uri) = name {
                    id.add_uri(uri)?;
                }
            }
        }
        if id.is_empty() {
            return Err(TlsError::Certificate(format!(
                "names no Baton identity (a {URI_PREFIX}node/ID, {URI_PREFIX}server/NAME or {URI_PREFIX}viewer|operator|admin/NAME URI)"
            )));
        }
        Ok(id)
    }

    /// An identity from its URIs (as [`Identity::uris`] writes them).
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<Identity, TlsError> {
        let mut id = Identity::default();
        for u in uris {
            id.add_uri(u)?;
        }
        if id.is_empty() {
            return Err(TlsError::Certificate("names no Baton identity".into()));
        }
        Ok(id)
    }

    fn is_empty(&self) -> bool {
        self.node.is_none() && self.server.is_none() && self.client.is_none()
    }

    /// Add one URI; URIs of other schemes are ignored (a site may add its own).
    fn add_uri(&mut self, uri: &str) -> Result<(), TlsError> {
        let Some(rest) = uri.strip_prefix(URI_PREFIX) else {
            return Ok(());
        };
        let bad = |why: &str| TlsError::Certificate(format!("identity {uri:?}: {why}"));
        let (kind, name) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected KIND/NAME"))?;
        if name.is_empty() || name.len() > NAME_MAX || name.contains('/') {
            return Err(bad("the name is empty, too long or contains '/'"));
        }
        match kind {
            "node" => {
                let id: u64 = name.parse().map_err(|_| bad("a node id is a number"))?;
                if self.node.replace(id).is_some() {
                    return Err(bad("a certificate names at most one node"));
                }
            }
            "server" => {
                if self.server.replace(name.to_string()).is_some() {
                    return Err(bad("a certificate names at most one server"));
                }
            }
            other => {
                let p = Permission::parse(other)
                    .ok_or_else(|| bad("unknown kind (node, server, viewer, operator or admin)"))?;
                if self.client.replace((p, name.to_string())).is_some() {
                    return Err(bad("a certificate carries at most one permission"));
                }
            }
        }
        Ok(())
    }

    /// The URIs that carry this identity, for making a certificate.
    pub fn uris(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(n) = self.node {
            v.push(format!("{URI_PREFIX}node/{n}"));
        }
        if let Some(s) = &self.server {
            v.push(format!("{URI_PREFIX}server/{s}"));
        }
        if let Some((p, name)) = &self.client {
            v.push(format!("{URI_PREFIX}{p}/{name}"));
        }
        v
    }

    /// The permission this identity has on admin calls. Directory nodes may read (one
    /// node asks another for its status); agents have none.
    pub fn permission(&self) -> Option<Permission> {
        match (&self.client, self.node) {
            (Some((p, _)), _) => Some(*p),
            (None, Some(_)) => Some(Permission::Viewer),
            (None, None) => None,
        }
    }
}

impl fmt::Display for Identity {
    /// How the audit trail and error messages name the holder: `operator bob`,
    /// `node 2`, `agent srv-a` (the first that applies, then the rest in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some((p, name)) = &self.client {
            parts.push(format!("{p} {name}"));
        }
        if let Some(n) = self.node {
            parts.push(format!("node {n}"));
        }
        if let Some(s) = &self.server {
            parts.push(format!("agent {s}"));
        }
        match parts.split_first() {
            Some((first, [])) => f.write_str(first),
            Some((first, rest)) => write!(f, "{first} ({})", rest.join(", ")),
            None => f.write_str("nobody"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(uris: &[&str]) -> Result<Identity, TlsError> {
        let mut id = Identity::default();
        for u in uris {
            id.add_uri(u)?;
        }
        Ok(id)
    }

    #[test]
    fn uris_round_trip_and_name_the_holder() {
        let id = with(&["baton://operator/bob", "baton://server/srv-a"]).unwrap();
        assert_eq!(id.permission(), Some(Permission::Operator));
        assert_eq!(id.server.as_deref(), Some("srv-a"));
        assert_eq!(id.to_string(), "operator bob (agent srv-a)");
        assert_eq!(
            with(&id.uris().iter().map(String::as_str).collect::<Vec<_>>()).unwrap(),
            id
        );
        let node = with(&["baton://node/3"]).unwrap();
        assert_eq!(node.to_string(), "node 3");
        assert_eq!(node.permission(), Some(Permission::Viewer));
        assert_eq!(with(&["baton://server/x"]).unwrap().permission(), None);
    }

    #[test]
    fn malformed_and_repeated_identities_are_refused() {
        for bad in [
            &["baton://node/x"][..],
            &["baton://root/alice"],
            &["baton://server/"],
            &["baton://server/a/b"],
            &["baton://admin"],
            &["baton://node/1", "baton://node/2"],
            &["baton://viewer/a", "baton://admin/a"],
        ] {
            assert!(with(bad).is_err(), "{bad:?} accepted");
        }
        // Other schemes are someone else's business.
        assert_eq!(with(&["spiffe://x/y"]).unwrap(), Identity::default());
        assert!(
            Permission::Viewer < Permission::Operator && Permission::Operator < Permission::Admin
        );
    }
}
