//! Output of the subcommands that span tiers: `hoard ls` lines naming their tier, and the
//! counts of a removal (`hoard evict`, `hoard clear` with `--tier all|shared`), each tier's
//! figures under its own name, for people and for JSON.
//!
//! Invariant: a tier that was not acted on is absent (never a zero that looks like a result).

use serde::Serialize;

use super::{Removed, UrlEntry, human_bytes, human_time};

/// `hoard ls` for people: a header line and a line per URL; with `tiers`, a first column
/// says which tier each line is from.
pub fn ls_table(v: &[UrlEntry], tiers: bool) -> String {
    let tier = |t: &str| {
        if tiers {
            format!("{t:<7}")
        } else {
            String::new()
        }
    };
    let mut lines = vec![format!(
        "{}{:<6} {:>8} {:>10}  {:<29}  URL",
        tier("TIER"),
        "STATUS",
        "VARIANTS",
        "SIZE",
        "STORED"
    )];
    for e in v {
        lines.push(format!(
            "{}{:<6} {:>8} {:>10}  {:<29}  {}",
            tier(e.tier.as_str()),
            e.status.map_or("-".to_string(), |s| s.to_string()),
            e.variants,
            human_bytes(e.size),
            human_time(e.stored_at),
            if e.method == "GET" {
                e.url.clone()
            } else {
                format!("{} {}", e.method, e.url)
            }
        ));
    }
    lines.join("\n")
}

/// What `evict` or `clear` removed, per tier.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ByTier {
    /// This machine's store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<Removed>,
    /// The shared tier (for `clear`, `rows` counts every key removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<Removed>,
    /// A `clear` (always succeeds when it ran) rather than an `evict`.
    #[serde(skip)]
    pub clear: bool,
}

impl ByTier {
    /// An `evict` that removed nothing in any tier (exit code 1).
    pub fn found_nothing(&self) -> bool {
        !self.clear
            && [&self.local, &self.shared]
                .iter()
                .all(|r| r.as_ref().is_none_or(|r| r.rows == 0))
    }
}

impl std::fmt::Display for ByTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut lines = Vec::new();
        if let Some(r) = &self.local {
            lines.push(match self.clear {
                true => format!("local: removed {} row(s)", r.rows),
                false => format!("local: removed {} URL(s), {} row(s)", r.urls, r.rows),
            });
        }
        if let Some(r) = &self.shared {
            lines.push(match self.clear {
                true => format!("shared: removed {} URL(s), {} key(s)", r.urls, r.rows),
                false => format!("shared: removed {} URL(s), {} row(s)", r.urls, r.rows),
            });
        }
        write!(f, "{}", lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_tier_lines_json_and_outcome() {
        let r = |urls, rows| Some(Removed { urls, rows });
        type Case = (ByTier, &'static str, &'static str, bool);
        let cases: Vec<Case> = vec![
            (
                ByTier {
                    local: r(1, 2),
                    shared: r(3, 4),
                    clear: false,
                },
                "local: removed 1 URL(s), 2 row(s)\nshared: removed 3 URL(s), 4 row(s)",
                r#"{"local":{"urls":1,"rows":2},"shared":{"urls":3,"rows":4}}"#,
                false,
            ),
            (
                ByTier {
                    local: None,
                    shared: r(0, 0),
                    clear: false,
                },
                "shared: removed 0 URL(s), 0 row(s)",
                r#"{"shared":{"urls":0,"rows":0}}"#,
                true,
            ),
            (
                ByTier {
                    local: r(0, 5),
                    shared: r(2, 7),
                    clear: true,
                },
                "local: removed 5 row(s)\nshared: removed 2 URL(s), 7 key(s)",
                r#"{"local":{"urls":0,"rows":5},"shared":{"urls":2,"rows":7}}"#,
                false,
            ),
        ];
        for (t, text, json, nothing) in cases {
            assert_eq!(t.to_string(), text);
            assert_eq!(serde_json::to_string(&t).unwrap(), json);
            assert_eq!(t.found_nothing(), nothing, "{text}");
        }
    }
}
