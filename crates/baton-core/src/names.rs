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

/// True when a database name points at the machine the role runs on: `(local)`,
/// `(local)\INSTANCE`, in any case.
pub fn is_local_database(db: &str) -> bool {
    // Compare bytes: slicing the str at 7 would panic inside a multi-byte character.
    db.as_bytes()
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"(local)"))
}

/// The host part of a database name: `srv-a\\INSTANCE`, `srv-a,1433` and `srv-a:5432`
/// all live on `srv-a`.
pub fn database_host(db: &str) -> &str {
    db.split(['\\', ',', ':']).next().unwrap_or(db).trim()
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
        assert_eq!(database_host("srv-a\\SQLEXPRESS"), "srv-a");
        assert_eq!(database_host("srv-a,1433"), "srv-a");
        assert_eq!(database_host("srv-a:5432"), "srv-a");
        assert_eq!(database_host("db-1"), "db-1");
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
