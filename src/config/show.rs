//! How `hoard config` prints each option: the functions the option table names after `show:`,
//! each taking the parsed value and the text it was parsed from; and the `[[rules]]` as printed.

use std::fmt::Display;

use super::LogFormat;
use crate::http_cache::ForwardingHeaders;

/// The text as given (`"10m"`, `"1GiB"`): how the user wrote it.
pub fn given<T>(_: &T, text: &str) -> String {
    text.to_string()
}

/// The text as given when the option is set; nothing (the key is left out) when it is off.
pub fn given_if_set<T>(value: &Option<T>, text: &str) -> Option<String> {
    value.as_ref().map(|_| text.to_string())
}

/// The value itself (booleans, numbers, names).
pub fn value<T: Clone>(value: &T, _: &str) -> T {
    value.clone()
}

/// Each item as it prints (`::1` as `::1/128`).
pub fn each<T: Display>(value: &[T], _: &str) -> Vec<String> {
    value.iter().map(ToString::to_string).collect()
}

/// Each item of the list as given.
pub fn items<T>(_: &T, text: &str) -> Vec<String> {
    super::parse::list(text).unwrap_or_default()
}

/// `user:***`: passwords are never printed.
pub fn redacted(value: &[String], _: &str) -> Vec<String> {
    value
        .iter()
        .map(|p| format!("{}:***", p.split(':').next().unwrap_or("")))
        .collect()
}

/// A shared-tier URL with its password replaced (`hoard config` never prints secrets).
pub fn shared_url(value: &Option<String>, _: &str) -> Option<String> {
    let url = value.as_ref()?;
    Some(
        crate::entries::shared::SharedConfig::parse_url(url)
            .map(|u| u.redacted())
            .unwrap_or_else(|_| "(invalid)".to_string()),
    )
}

/// The configuration spelling (`strip`, `pass`).
pub fn forwarding(value: &ForwardingHeaders, _: &str) -> String {
    value.as_str().to_string()
}

/// Whether `hoard config` leaves a value out: an option that is off (`None`); TOML has no null.
pub trait Omit {
    /// True to leave the key out.
    fn omit(&self) -> bool {
        false
    }
}

impl<T> Omit for Option<T> {
    fn omit(&self) -> bool {
        self.is_none()
    }
}

impl Omit for String {}
impl Omit for bool {}
impl Omit for f64 {}
impl Omit for usize {}
impl Omit for Vec<String> {}
impl Omit for LogFormat {}
impl Omit for crate::runtime::Scheduler {}

/// For `#[serde(skip_serializing_if)]` on every field of `Effective`.
pub fn omit<T: Omit>(value: &T) -> bool {
    value.omit()
}

/// One rule as `hoard config` prints it (the configuration file's own keys).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
#[allow(missing_docs)]
pub struct EffectiveRule {
    pub name: String,
    pub host: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_query: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bypass: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_methods: Vec<String>,
    pub max_body: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub share_auth: bool,
}

impl From<&crate::http_cache::Rule> for EffectiveRule {
    fn from(r: &crate::http_cache::Rule) -> Self {
        use crate::http_cache::IgnoreQuery;
        EffectiveRule {
            name: r.name.clone(),
            host: r.host.to_string(),
            path: r.path.to_string(),
            ttl: r.ttl.map(|d| format!("{}s", d.as_secs_f64())),
            ignore_query: match &r.ignore_query {
                IgnoreQuery::None => None,
                IgnoreQuery::All => Some(serde_json::Value::Bool(true)),
                IgnoreQuery::Params(p) => Some(serde_json::Value::Array(
                    p.iter()
                        .map(|x| serde_json::Value::String(x.to_string()))
                        .collect(),
                )),
            },
            bypass: r.bypass,
            cache_methods: r.cache_methods.iter().map(ToString::to_string).collect(),
            max_body: r.max_body as u64,
            share_auth: r.share_auth,
        }
    }
}
