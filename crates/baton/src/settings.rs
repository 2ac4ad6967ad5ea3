//! Typed configuration: defaults in code, then a TOML file (`--config`), then environment
//! variables (`BATON_*`) and flags, each overriding the one before.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;

/// Read and parse a TOML file into `T`; an unknown key or a bad value is an error that
/// names the file, the key and the problem.
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow!(
            "config file {}: {}",
            path.display(),
            e.to_string().replace('\n', " ").trim()
        )
    })
}

/// A duration written as text in a config file (`"3s"`, `"500ms"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Durations in flags and config files parse as the admin commands' do (`3s`, `500ms`).
pub use baton_cli::parse_duration;

pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Mutual TLS or plain text for a process: flags and `BATON_*` variables first, then
/// the config file's `ca`, `cert`, `key` and `insecure`.
pub fn security(
    global: &baton_cli::GlobalOpts,
    ca: Option<std::path::PathBuf>,
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
    insecure: Option<bool>,
) -> anyhow::Result<baton_tls::Security> {
    Ok(baton_tls::Security::from_files(
        global.ca.clone().or(ca),
        global.cert.clone().or(cert),
        global.key.clone().or(key),
        global.insecure || insecure.unwrap_or(false),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct T {
        lease: Option<Dur>,
    }

    #[test]
    fn durations_and_unknown_keys() {
        let t: T = toml::from_str("lease = \"2s\"").unwrap();
        assert_eq!(t.lease, Some(Dur(Duration::from_secs(2))));
        let e = toml::from_str::<T>("lease = \"two\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid duration \"two\""), "{e}");
        let e = toml::from_str::<T>("leese = \"2s\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("leese"), "{e}");
    }
}
