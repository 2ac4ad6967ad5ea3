//! The defaults the user documentation quotes are the code's.
//!
//! An earlier README gave heartbeat, election and renewal figures the code had long left
//! behind. This test reads the user documents, finds every "default N unit" they state and
//! every figure listed in `FIGURES` below, and checks each against the value the code uses.
//! A new default quoted in the documents without a check here fails too, so the list of
//! checked claims cannot silently fall behind the documents.

use std::path::{Path, PathBuf};

use baton_agent::AgentConfig;
use baton_directory::NodeConfig;

/// The documents written for users (benchmarks.md is left out: it records what older
/// commits measured, with the defaults of their day).
const DOCUMENTS: &[&str] = &[
    "README.md",
    "docs/architecture.md",
    "docs/operating.md",
    "docs/safety.md",
    "docs/security.md",
    "deploy/README.md",
];

/// How far before a "default N" claim the name of the setting may be, in bytes: a
/// claim reads "the lease (default 3 s)" or "`--priority-delay`\n  (default 5 s)".
const KEYWORD_REACH_BYTES: usize = 120;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A duration as the documents write it: "3 s", "50 ms", "60 s".
fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{ms} ms")
    }
}

/// The code's defaults, by the keyword a document uses to name them.
fn code_defaults() -> Vec<(&'static str, String)> {
    let node = NodeConfig::new(1, "127.0.0.1:7001".parse().unwrap(), "/tmp/x".into());
    vec![
        ("priority-delay", human_ms(node.priority_delay_ms)),
        ("history-max", node.history_max.to_string()),
        ("write-batch-max", node.write_batch_max.to_string()),
        ("lease", human_ms(node.lease_ms)),
    ]
}

/// Figures the documents state without the word "default": each must appear, built from
/// the code's value, in the document named.
fn figures() -> Vec<(&'static str, String)> {
    let node = NodeConfig::new(1, "127.0.0.1:7001".parse().unwrap(), "/tmp/x".into());
    let agent = AgentConfig::new("srv-a".into(), Vec::new(), Default::default());
    let crashes = format!(
        "{} crashes in {}",
        agent.crash_limit,
        human_ms(agent.crash_window.as_millis() as u64)
    );
    let quarantine = format!("for {}", human_ms(node.role_cooldown_ms));
    let renew_every = format!(
        "every `lease/{}`",
        agent.lease_ms
            / baton_agent::Fence {
                lease_ms: agent.lease_ms,
                rho_ppm: agent.rho_ppm,
            }
            .renew_every_ms()
    );
    vec![
        ("README.md", crashes.clone()),
        ("README.md", quarantine),
        (
            "README.md",
            format!("(default {})", human_ms(agent.lease_ms)),
        ),
        ("docs/safety.md", crashes),
        (
            "docs/safety.md",
            format!("cooldown ({}", human_ms(node.role_cooldown_ms)),
        ),
        ("docs/architecture.md", renew_every),
    ]
}

/// Every "default N unit" claim of `text`: (byte offset, the figure as written).
fn default_claims(text: &str) -> Vec<(usize, String)> {
    let lower = text.to_lowercase();
    let mut claims = Vec::new();
    let mut from = 0;
    while let Some(found) = lower[from..].find("default") {
        let at = from + found;
        from = at + "default".len();
        // "default 3 s", "defaults: 5 s", "(default 1000,": up to 3 separators, then a digit.
        let rest = &text[from..];
        let skipped = rest
            .char_indices()
            .take_while(|(_, c)| matches!(c, 's' | ':' | ' '))
            .take(3)
            .last()
            .map_or(0, |(i, c)| i + c.len_utf8());
        let figure: String = rest[skipped..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
            .collect();
        let figure = figure.trim_end_matches([',', '.']).to_string();
        if figure.is_empty() {
            continue;
        }
        let after = &rest[skipped + figure.len()..];
        let unit = ["ms", "s", "min", "h"]
            .into_iter()
            .find(|u| {
                after.strip_prefix(' ').is_some_and(|a| {
                    a.starts_with(u) && !a[u.len()..].starts_with(|c: char| c.is_alphabetic())
                })
            })
            .map(|u| format!(" {u}"))
            .unwrap_or_default();
        claims.push((at, format!("{figure}{unit}")));
    }
    claims
}

/// The setting a claim at `at` is about: the keyword nearest before it.
fn keyword_before<'k>(text: &str, at: usize, keywords: &[(&'k str, String)]) -> Option<&'k str> {
    let start = at.saturating_sub(KEYWORD_REACH_BYTES);
    let start = (start..=at)
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(at);
    let window = text[start..at].to_lowercase();
    keywords
        .iter()
        .filter_map(|(k, _)| window.rfind(k).map(|pos| (pos + k.len(), *k)))
        .max()
        .map(|(_, k)| k)
}

#[test]
fn every_default_the_documents_quote_is_the_codes() {
    let defaults = code_defaults();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for doc in DOCUMENTS {
        let text = std::fs::read_to_string(root().join(doc))
            .unwrap_or_else(|e| panic!("reading {doc}: {e}"));
        for (at, figure) in default_claims(&text) {
            let line = text[..at].lines().count().max(1);
            match keyword_before(&text, at, &defaults) {
                Some(k) => {
                    let code = &defaults.iter().find(|(kk, _)| *kk == k).unwrap().1;
                    if &figure != code {
                        wrong.push(format!(
                            "{doc}:{line}: says the {k} default is {figure}; the code's is {code}"
                        ));
                    }
                    checked += 1;
                }
                None => wrong.push(format!(
                    "{doc}:{line}: quotes a default ({figure}) this test does not know: add its \
                     keyword and the code's value to code_defaults()"
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        checked >= 3,
        "only {checked} default claims found: has the documents' wording changed?"
    );
}

#[test]
fn every_listed_figure_is_in_its_document() {
    let mut missing = Vec::new();
    for (doc, figure) in figures() {
        let text = std::fs::read_to_string(root().join(doc))
            .unwrap_or_else(|e| panic!("reading {doc}: {e}"));
        if !text.contains(&figure) {
            missing.push(format!(
                "{doc} does not say \"{figure}\" (the code's value): update the document"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn the_claim_finder_reads_the_forms_the_documents_use() {
    let text = "the lease (default 3 s) and `--priority-delay`\n  (default 5 s), `--history-max` \
                events (default 1000, cluster-wide); grace (default: the clock error)";
    let claims: Vec<String> = default_claims(text).into_iter().map(|(_, f)| f).collect();
    assert_eq!(claims, ["3 s", "5 s", "1000"]);
    let defaults = code_defaults();
    let at = text.find("(default 5 s)").unwrap();
    assert_eq!(keyword_before(text, at, &defaults), Some("priority-delay"));
    assert_eq!(human_ms(50), "50 ms");
    assert_eq!(human_ms(60_000), "60 s");
}
