//! Validation of the names users type: servers, roles, kinds, databases.

use crate::command::Refusal;
use crate::{DATABASE_MAX_BYTES, FAILBACK_DELAY_MAX_MS, KINDS_PER_SERVER_MAX, NAME_MAX_BYTES};

/// A server, role or kind name: 1 to [`NAME_MAX_BYTES`] bytes, no whitespace, no control
/// characters, no comma (the CLI separates lists with commas).
pub fn check_name(what: &str, name: &str) -> Result<(), Refusal> {
    if name.is_empty() {
        return Err(Refusal::invalid(format!("{what} name is empty")));
    }
    if name.len() > NAME_MAX_BYTES {
        return Err(Refusal::invalid(format!(
            "{what} name is {} bytes long; the limit is {NAME_MAX_BYTES}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == ',')
    {
        return Err(Refusal::invalid(format!(
            "{what} name {name:?} contains {c:?}; names may not contain whitespace, control characters or commas"
        )));
    }
    Ok(())
}

/// A database name: 1 to [`DATABASE_MAX_BYTES`] bytes, no control characters. Spaces are
/// allowed (`(local)\SQLEXPRESS`, `db host`), since databases are named by other tools.
pub fn check_database(db: &str) -> Result<(), Refusal> {
    if db.is_empty() {
        return Err(Refusal::invalid("database name is empty"));
    }
    if db.len() > DATABASE_MAX_BYTES {
        return Err(Refusal::invalid(format!(
            "database name is {} bytes long; the limit is {DATABASE_MAX_BYTES}",
            db.len()
        )));
    }
    if db.chars().any(|c| c.is_control()) {
        return Err(Refusal::invalid(format!(
            "database name {db:?} contains a control character"
        )));
    }
    Ok(())
}

/// Free text (an agent's failure reason): at most `max` bytes, no control characters.
/// It is stored in the history and printed to operators' terminals, where a control
/// character (an escape sequence, a carriage return) could forge or hide output.
pub fn check_text(what: &str, text: &str, max: usize) -> Result<(), Refusal> {
    if text.len() > max {
        return Err(Refusal::invalid(format!(
            "{what} is {} bytes long; the limit is {max}",
            text.len()
        )));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(Refusal::invalid(format!(
            "{what} {text:?} contains {c:?}; it may not contain control characters"
        )));
    }
    Ok(())
}

/// True when a database name points at the machine the role runs on, whichever that is:
/// its host (see [`database_host`]) is `(local)` (with anything after it, as
/// `(local)\\INSTANCE`), `(localdb)`, `localhost`, `.` or a loopback address
/// (`127.0.0.1`, `::1`), in any case.
pub fn is_local_database(db: &str) -> bool {
    is_local_host(database_host(db))
}

/// True when `host` (as [`database_host`] returns it) names the local machine.
pub fn is_local_host(host: &str) -> bool {
    starts_with_ignore_case(host, "(local)").is_some()
        || ["(localdb)", "localhost", "localhost.", "."]
            .iter()
            .any(|l| host.eq_ignore_ascii_case(l))
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// True when `host` (as [`database_host`] returns it) is the server named `server`: the
/// same name in any case, or one is the other's fully qualified form
/// (`srv-a.example.org` is on `srv-a`, and `srv-a` on `srv-a.example.org`). An IP
/// address matches only itself.
pub fn host_is_server(host: &str, server: &str) -> bool {
    if host.is_empty() || server.is_empty() {
        return false;
    }
    if host.eq_ignore_ascii_case(server) {
        return true;
    }
    let qualifies = |long: &str, short: &str| {
        starts_with_ignore_case(long, short).is_some_and(|rest| rest.starts_with('.'))
            && long.parse::<std::net::IpAddr>().is_err()
    };
    qualifies(host, server) || qualifies(server, host)
}

/// The host part of a database name, in the forms operators write:
/// - SQL Server: `host`, `host\\INSTANCE`, `host,1433`, `host\\INSTANCE,1433`, with an
///   optional protocol prefix `tcp:`, `np:` (`np:\\\\host\\pipe\\...`), `lpc:` or
///   `admin:`, and `.` or `(local)` for the local machine;
/// - `host:port`, `[v6-address]`, `[v6-address]:port`, and a bare IPv6 address (`::1`);
/// - a URL, `scheme://user:password@host:port/database`.
///
/// Pure string work, no lookups: `db-1` and `10.0.0.5` are returned as they are.
pub fn database_host(db: &str) -> &str {
    let mut s = db.trim();
    if let Some(i) = s.find("://") {
        // A URL: the authority, without the credentials.
        s = &s[i + 3..];
        s = s.split(['/', '?', '#']).next().unwrap_or(s);
        if let Some(at) = s.rfind('@') {
            s = &s[at + 1..];
        }
    } else if let Some(rest) = ["tcp:", "np:", "lpc:", "admin:"]
        .iter()
        .find_map(|p| starts_with_ignore_case(s, p))
    {
        s = rest.trim_start_matches('\\');
    }
    // SQL Server's instance and port separators.
    s = s.split(['\\', ',']).next().unwrap_or(s);
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).trim();
    }
    // `host:port`; a bare IPv6 address has more than one colon and no port.
    if s.matches(':').count() == 1 {
        s = s.split(':').next().unwrap_or(s);
    }
    s.trim()
}

/// `s` without `prefix` when it starts with it in any ASCII case. Compares bytes: slicing
/// a str inside a multi-byte character would panic.
fn starts_with_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

pub(crate) fn check_kinds(kinds: &[String]) -> Result<(), Refusal> {
    if kinds.len() > KINDS_PER_SERVER_MAX {
        return Err(Refusal::invalid(format!(
            "{} kinds given; the limit is {KINDS_PER_SERVER_MAX}",
            kinds.len()
        )));
    }
    for k in kinds {
        check_name("kind", k)?;
    }
    Ok(())
}

pub(crate) fn check_delay(ms: u64) -> Result<(), Refusal> {
    if ms > FAILBACK_DELAY_MAX_MS {
        return Err(Refusal::invalid(format!(
            "failback delay {ms} ms is longer than the limit of {FAILBACK_DELAY_MAX_MS} ms (a day)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("role", "cam-1").is_ok());
        assert!(check_name("role", "").is_err());
        assert!(check_name("role", "a b").is_err());
        assert!(check_name("role", "a\tb").is_err());
        assert!(check_name("role", "a,b").is_err());
        assert!(check_name("role", "a\u{7}").is_err());
        assert!(check_name("role", &"x".repeat(NAME_MAX_BYTES)).is_ok());
        let long = check_name("role", &"x".repeat(NAME_MAX_BYTES + 1)).unwrap_err();
        assert!(long.message.contains("limit is 64"), "{}", long.message);
    }

    #[test]
    fn database_hosts() {
        for (db, host) in [
            // Plain names and addresses.
            ("db-1", "db-1"),
            ("  db-1 ", "db-1"),
            ("10.0.0.5", "10.0.0.5"),
            ("srv-a.example.org", "srv-a.example.org"),
            // SQL Server: instance, port, both, protocol prefixes.
            ("srv-a\\SQLEXPRESS", "srv-a"),
            ("srv-a,1433", "srv-a"),
            ("srv-a\\SQLEXPRESS,1433", "srv-a"),
            ("tcp:srv-a,1433", "srv-a"),
            ("TCP:srv-a\\INST", "srv-a"),
            ("tcp:10.0.0.5,1433", "10.0.0.5"),
            ("np:\\\\srv-a\\pipe\\sql\\query", "srv-a"),
            ("lpc:srv-a", "srv-a"),
            ("admin:srv-a\\INST", "srv-a"),
            (".", "."),
            (".\\SQLEXPRESS", "."),
            ("(local)", "(local)"),
            ("(LOCAL)\\SQLEXPRESS", "(LOCAL)"),
            ("(localdb)\\MSSQLLocalDB", "(localdb)"),
            // host:port and IPv6.
            ("srv-a:5432", "srv-a"),
            ("127.0.0.1:5432", "127.0.0.1"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[::1]:5432", "::1"),
            ("[fe80::1],1433", "fe80::1"),
            // URLs.
            ("postgres://app:secret@srv-a:5432/app", "srv-a"),
            (
                "postgresql://srv-a.example.org/app?sslmode=require",
                "srv-a.example.org",
            ),
            ("mysql://[::1]:3306/app", "::1"),
            // Odd input: no panic, a harmless answer.
            ("", ""),
            (",1433", ""),
            ("tcp:", ""),
            ("[", ""),
            ("データベース", "データベース"),
        ] {
            assert_eq!(database_host(db), host, "{db:?}");
        }
    }

    #[test]
    fn local_hosts() {
        for host in [
            "(local)",
            "(LOCAL)",
            "(Local)x",
            "(localdb)",
            "localhost",
            "LocalHost",
            "localhost.",
            ".",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
        ] {
            assert!(is_local_host(host), "{host:?}");
        }
        for host in [
            "",
            "db-1",
            "10.0.0.5",
            "::2",
            "localhost2",
            "my-localhost",
            "(loca",
            "..",
            "0.0.0.0",
        ] {
            assert!(!is_local_host(host), "{host:?}");
        }
    }

    #[test]
    fn hosts_on_servers() {
        for (host, server) in [
            ("srv-a", "srv-a"),
            ("SRV-A", "srv-a"),
            ("srv-a.example.org", "srv-a"),
            ("SRV-A.Example.Org", "srv-a"),
            ("srv-a", "srv-a.example.org"),
            ("10.0.0.5", "10.0.0.5"),
        ] {
            assert!(host_is_server(host, server), "{host:?} on {server:?}");
        }
        for (host, server) in [
            ("srv-ab", "srv-a"),
            ("srv-a-db", "srv-a"),
            ("db.srv-a", "srv-a"),
            ("srv-a.example.org", "srv-a.example.net"),
            ("10.0.0.5", "10"),
            ("", "srv-a"),
        ] {
            assert!(!host_is_server(host, server), "{host:?} on {server:?}");
        }
    }

    #[test]
    fn local_databases() {
        assert!(is_local_database("(local)"));
        assert!(is_local_database("(LOCAL)\\SQLEXPRESS"));
        assert!(is_local_database("(Local)x"));
        assert!(!is_local_database("db-1"));
        assert!(!is_local_database("(loc"));
        // Byte 7 inside a multi-byte character: no panic.
        assert!(!is_local_database("(localé"));
        assert!(!is_local_database("データベース"));
        assert!(is_local_database("(local)é"));
        assert!(check_database("(local)\\SQL EXPRESS").is_ok());
        assert!(check_database("").is_err());
        assert!(check_database("a\nb").is_err());
    }
}
