//! Directory node addresses: what a user may type (`127.0.0.1:7001`, `http://host:7001`)
//! and the one canonical form the client keeps (`host:port`).
//!
//! One canonical form matters because the client compares addresses: a leader hint from
//! a server must match the address the client already has a channel for, and error
//! messages should name nodes the way the operator wrote them.

use crate::ClientError;

/// Turns a user-supplied address into the canonical `host:port` form.
///
/// Accepted: `host:port`, `http://host:port`, with an optional trailing `/`, IPv6 in
/// brackets (`[::1]:7001`). Refused: other schemes (no TLS support yet), a path, a
/// missing or zero port, an empty host.
pub fn parse_address(input: &str) -> Result<String, ClientError> {
    let invalid = |problem: &str| ClientError::InvalidAddress {
        address: input.to_string(),
        problem: problem.to_string(),
    };
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty address"));
    }
    let rest = match trimmed.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(invalid(&format!(
                "unsupported scheme {scheme:?} (only http is supported)"
            )));
        }
        None => trimmed,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(invalid("an address is host:port, without a path"));
    }
    if rest.contains('@') {
        return Err(invalid("an address is host:port, without user information"));
    }
    // The port is what follows the last ':' unless that ':' is inside an IPv6 literal.
    let port = match rest.rsplit_once(':') {
        Some((_, port)) if !port.contains(']') => port,
        _ => {
            return Err(invalid(
                "missing port (expected host:port, e.g. 127.0.0.1:7001)",
            ));
        }
    };
    match port.parse::<u16>() {
        Ok(0) => return Err(invalid("port 0 is not a valid port")),
        Ok(_) => {}
        Err(_) => return Err(invalid(&format!("invalid port {port:?}"))),
    }
    let uri: tonic::transport::Uri = format!("http://{rest}")
        .parse()
        .map_err(|e| invalid(&format!("not a valid host:port ({e})")))?;
    let authority = uri.authority().ok_or_else(|| invalid("missing host"))?;
    if authority.host().is_empty() || authority.port_u16().is_none() {
        return Err(invalid("not a valid host:port"));
    }
    Ok(authority.as_str().to_string())
}

/// The URI tonic connects to for a canonical address.
pub(crate) fn endpoint_uri(canonical: &str) -> String {
    format!("http://{canonical}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_http_forms() {
        assert_eq!(parse_address("127.0.0.1:7001").unwrap(), "127.0.0.1:7001");
        assert_eq!(
            parse_address("http://127.0.0.1:7001").unwrap(),
            "127.0.0.1:7001"
        );
        assert_eq!(
            parse_address(" HTTP://node-1.example:7002/ ").unwrap(),
            "node-1.example:7002"
        );
        assert_eq!(parse_address("[::1]:7003").unwrap(), "[::1]:7003");
        assert_eq!(parse_address("localhost:7001").unwrap(), "localhost:7001");
    }

    #[test]
    fn refuses_malformed_addresses_with_a_reason() {
        for (input, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("127.0.0.1", "missing port"),
            ("http://127.0.0.1", "missing port"),
            ("127.0.0.1:0", "port 0"),
            ("https://127.0.0.1:7001", "unsupported scheme"),
            ("127.0.0.1:7001/foo", "without a path"),
            ("user@host:7001", "user information"),
            ("127.0.0.1:notaport", "invalid port"),
            ("127.0.0.1:99999", "invalid port"),
            ("a b:7001", "not a valid host:port"),
            (":7001", "host"),
        ] {
            let err = parse_address(input).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, ClientError::InvalidAddress { .. }),
                "{input:?}: {err:?}"
            );
            assert!(
                text.contains(needle),
                "{input:?}: {text:?} lacks {needle:?}"
            );
            assert!(!text.contains('\n'));
        }
    }

    #[test]
    fn endpoint_uri_adds_the_scheme() {
        assert_eq!(endpoint_uri("127.0.0.1:7001"), "http://127.0.0.1:7001");
    }
}
