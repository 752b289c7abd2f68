//! The configuration file: flat keys (those of the option table) with the line each is on, so
//! that every error names the file, the line and the key; `[[rules]]` tables; where the
//! default file is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::{ConfigError, FILE_KEYS, parse_duration, parse_size};
use crate::http_cache::{IgnoreQuery, Pattern, Rule};

/// A value as written in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileValue {
    /// A string.
    Str(String),
    /// An integer (sizes in bytes, durations in seconds, counts).
    Int(i64),
    /// A float, as written.
    Float(String),
    /// A boolean.
    Bool(bool),
    /// An array of strings.
    List(Vec<String>),
}

impl FileValue {
    /// The value as the text a command-line flag would carry (lists joined by commas).
    pub fn as_text(&self) -> String {
        match self {
            FileValue::Str(s) => s.clone(),
            FileValue::Int(n) => n.to_string(),
            FileValue::Float(f) => f.clone(),
            FileValue::Bool(b) => b.to_string(),
            FileValue::List(v) => v.join(","),
        }
    }
}

/// A parsed configuration file: known keys only, each with the line it is on.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    entries: BTreeMap<String, (FileValue, usize)>,
    /// The `[[rules]]` tables, in order (first match wins).
    pub rules: Vec<Rule>,
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

impl ConfigFile {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        ConfigFile::parse(path, &src)
    }

    /// Parse `src` (the contents of `path`): syntax errors, unknown keys and values of the
    /// wrong type are errors naming the file, the line and the key.
    pub fn parse(path: &Path, src: &str) -> Result<ConfigFile, ConfigError> {
        let err = |offset: usize, key: &str, reason: String| ConfigError::File {
            path: path.display().to_string(),
            line: line_of(src, offset),
            key: key.to_string(),
            reason,
        };
        let table = DeTable::parse(src).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let line_text = src[..offset.min(src.len())]
                .rsplit('\n')
                .next()
                .unwrap_or("");
            let key = line_text
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_string())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "syntax".to_string());
            err(offset, &key, e.message().trim().to_string())
        })?;
        let mut entries = BTreeMap::new();
        let mut rules = Vec::new();
        for (k, v) in table.get_ref() {
            let key: &str = k.get_ref();
            let at = k.span().start;
            if key == "rules" {
                let DeValue::Array(items) = v.get_ref() else {
                    return Err(err(at, key, "expected [[rules]] tables".to_string()));
                };
                for (i, item) in items.iter().enumerate() {
                    let DeValue::Table(t) = item.get_ref() else {
                        return Err(err(item.span().start, key, "expected a table".to_string()));
                    };
                    rules.push(parse_rule(i, t, item.span().start, &err)?);
                }
                continue;
            }
            if !FILE_KEYS.contains(&key) {
                return Err(err(
                    at,
                    key,
                    "unknown key (config/hoard.toml lists every option)".to_string(),
                ));
            }
            let value = match v.get_ref() {
                DeValue::String(s) => FileValue::Str(s.to_string()),
                DeValue::Integer(i) => FileValue::Int(
                    i64::from_str_radix(i.as_str(), i.radix())
                        .map_err(|e| err(v.span().start, key, e.to_string()))?,
                ),
                DeValue::Float(f) => FileValue::Float(f.as_str().to_string()),
                DeValue::Boolean(b) => FileValue::Bool(*b),
                DeValue::Array(a) => FileValue::List(
                    a.iter()
                        .map(|x| match x.get_ref() {
                            DeValue::String(s) => Ok(s.to_string()),
                            other => Err(err(
                                x.span().start,
                                key,
                                format!("expected a list of strings, found a {}", other.type_str()),
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(err(
                        v.span().start,
                        key,
                        format!(
                            "expected a string or a number, found a {}",
                            other.type_str()
                        ),
                    ));
                }
            };
            entries.insert(key.to_string(), (value, line_of(src, at)));
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            entries,
            rules,
        })
    }

    /// The value of `key` and its line, if the file sets it.
    pub fn get(&self, key: &str) -> Option<&(FileValue, usize)> {
        self.entries.get(key)
    }

    /// An error about `key` at `line` of this file.
    pub fn error(&self, key: &str, line: usize, reason: String) -> ConfigError {
        ConfigError::File {
            path: self.path.display().to_string(),
            line,
            key: key.to_string(),
            reason,
        }
    }
}

/// Parse one `[[rules]]` table (the `index`-th). Keys: `name`, `host`, `path`, `ttl`,
/// `ignore_query` (true or a list of parameter patterns), `bypass`, `cache_methods`,
/// `max_body`, `share_auth`.
fn parse_rule(
    index: usize,
    t: &DeTable<'_>,
    at: usize,
    err: &dyn Fn(usize, &str, String) -> ConfigError,
) -> Result<Rule, ConfigError> {
    let text = |v: &DeValue<'_>| match v {
        DeValue::String(s) => Some(s.to_string()),
        _ => None,
    };
    let get = |name: &str| {
        t.iter()
            .find(|(k, _)| k.get_ref().as_ref() as &str == name)
            .map(|(k, v)| (k.span().start, v))
    };
    for (k, _) in t.iter() {
        let key: &str = k.get_ref();
        if !RULE_KEYS.contains(&key) {
            return Err(err(
                k.span().start,
                &format!("rules.{key}"),
                format!(
                    "unknown rule key (expected one of {})",
                    RULE_KEYS.join(", ")
                ),
            ));
        }
    }
    let string = |name: &str, default: &str| -> Result<String, ConfigError> {
        match get(name) {
            None => Ok(default.to_string()),
            Some((pos, v)) => text(v.get_ref()).ok_or_else(|| {
                err(
                    pos,
                    &format!("rules.{name}"),
                    "expected a string".to_string(),
                )
            }),
        }
    };
    let boolean = |name: &str| -> Result<bool, ConfigError> {
        match get(name) {
            None => Ok(false),
            Some((_, v)) if matches!(v.get_ref(), DeValue::Boolean(_)) => {
                Ok(matches!(v.get_ref(), DeValue::Boolean(true)))
            }
            Some((pos, _)) => Err(err(
                pos,
                &format!("rules.{name}"),
                "expected true or false".into(),
            )),
        }
    };
    let strings = |name: &str| -> Result<Vec<(usize, String)>, ConfigError> {
        match get(name) {
            None => Ok(Vec::new()),
            Some((pos, v)) => match v.get_ref() {
                DeValue::Array(a) => a
                    .iter()
                    .map(|x| {
                        text(x.get_ref())
                            .map(|s| (x.span().start, s))
                            .ok_or_else(|| {
                                err(
                                    pos,
                                    &format!("rules.{name}"),
                                    "expected a list of strings".into(),
                                )
                            })
                    })
                    .collect(),
                _ => Err(err(
                    pos,
                    &format!("rules.{name}"),
                    "expected a list of strings".into(),
                )),
            },
        }
    };
    let name = string("name", &format!("rule{}", index + 1))?;
    let host = string("host", "*")?;
    let path = string("path", "*")?;
    let bad = |key: &str, e: String| {
        let pos = get(key).map_or(at, |(p, _)| p);
        err(pos, &format!("rules.{key}"), e)
    };
    let mut rule = Rule::new(&name, &host, &path).map_err(|e| {
        let key = if Pattern::new(&host).is_err() {
            "host"
        } else {
            "path"
        };
        bad(key, e.to_string())
    })?;
    if get("ttl").is_some() {
        let t = string("ttl", "")?;
        rule.ttl = Some(parse_duration(&t).map_err(|e| bad("ttl", e.to_string()))?);
    }
    if let Some((pos, v)) = get("ignore_query") {
        rule.ignore_query = match v.get_ref() {
            DeValue::Boolean(true) => IgnoreQuery::All,
            DeValue::Boolean(false) => IgnoreQuery::None,
            DeValue::Array(_) => IgnoreQuery::Params(
                strings("ignore_query")?
                    .into_iter()
                    .map(|(p, s)| {
                        Pattern::new(&s).map_err(|e| err(p, "rules.ignore_query", e.to_string()))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                return Err(err(
                    pos,
                    "rules.ignore_query",
                    "expected true or a list of parameter patterns".into(),
                ));
            }
        };
    }
    rule.bypass = boolean("bypass")?;
    rule.share_auth = boolean("share_auth")?;
    for (p, m) in strings("cache_methods")? {
        let method = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| err(p, "rules.cache_methods", format!("{m:?} is not a method")))?;
        rule.cache_methods.push(method);
    }
    if get("max_body").is_some() {
        let m = match get("max_body").map(|(_, v)| v.get_ref()) {
            Some(DeValue::Integer(i)) => i.as_str().to_string(),
            _ => string("max_body", "")?,
        };
        rule.max_body = parse_size(&m).map_err(|e| bad("max_body", e.to_string()))? as usize;
    }
    rule.validate()
        .map_err(|e| err(at, "rules", format!("rule {name:?}: {e}")))?;
    Ok(rule)
}

const RULE_KEYS: &[&str] = &[
    "name",
    "host",
    "path",
    "ttl",
    "ignore_query",
    "bypass",
    "cache_methods",
    "max_body",
    "share_auth",
];

/// The default configuration file: `$XDG_CONFIG_HOME/hoard/hoard.toml`, else
/// `~/.config/hoard/hoard.toml`; `None` when that file does not exist.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    let p = base.join("hoard").join("hoard.toml");
    p.is_file().then_some(p)
}

/// Load `explicit`, else the default file if it exists.
pub fn load_file(explicit: Option<&Path>) -> Result<Option<ConfigFile>, ConfigError> {
    match explicit {
        Some(p) => ConfigFile::load(p).map(Some),
        None => default_config_path()
            .map(|p| ConfigFile::load(&p))
            .transpose(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(src: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Path::new("/etc/h.toml"), src)
    }

    fn file_err(line: usize, key: &str) -> impl Fn(&ConfigError) -> bool + '_ {
        move |e| matches!(e, ConfigError::File { line: l, key: k, path, .. } if *l == line && k == key && path == "/etc/h.toml")
    }

    #[test]
    fn rules_parse_in_order() {
        let f = parse(
            "listen = \"127.0.0.1:1\"\n\n[[rules]]\nname = \"api\"\nhost = \"api.local\"\npath = \"/v1/*\"\nttl = \"10m\"\nignore_query = [\"utm_*\", \"ts\"]\n\n[[rules]]\nhost = \"*.bank.example\"\nbypass = true\n\n[[rules]]\nname = \"gql\"\npath = \"/graphql\"\nttl = \"1m\"\ncache_methods = [\"post\"]\nmax_body = \"64KiB\"\nshare_auth = true\nignore_query = true\n",
        )
        .unwrap();
        assert_eq!(f.rules.len(), 3);
        let api = &f.rules[0];
        assert_eq!(api.name, "api");
        assert_eq!(api.ttl, Some(Duration::from_secs(600)));
        assert_eq!(
            api.ignore_query,
            IgnoreQuery::Params(vec![
                Pattern::new("utm_*").unwrap(),
                Pattern::new("ts").unwrap()
            ])
        );
        assert!(f.rules[1].bypass);
        assert_eq!(f.rules[1].name, "rule2");
        assert_eq!(f.rules[1].path.as_str(), "*");
        let gql = &f.rules[2];
        assert_eq!(gql.cache_methods, vec![http::Method::POST]);
        assert_eq!(gql.max_body, 65536);
        assert!(gql.share_auth);
        assert_eq!(gql.ignore_query, IgnoreQuery::All);
    }

    #[test]
    fn rule_errors_name_line_and_key() {
        let cases: &[(&str, usize, &str)] = &[
            ("[[rules]]\nhost = \"a\"\nttl = \"soon\"\n", 3, "rules.ttl"),
            ("[[rules]]\nhots = \"a\"\n", 2, "rules.hots"),
            ("[[rules]]\n\nbypass = \"yes\"\n", 3, "rules.bypass"),
            ("[[rules]]\npath = \"a b\"\n", 2, "rules.path"),
            ("[[rules]]\ncache_methods = [\"POST\"]\n", 1, "rules"),
            ("[[rules]]\nignore_query = 5\n", 2, "rules.ignore_query"),
        ];
        for (src, line, key) in cases {
            let e = parse(src).unwrap_err();
            assert!(file_err(*line, key)(&e), "{src:?}: {e:?}");
        }
    }

    #[test]
    fn known_keys_parse_with_lines() {
        let f = parse("# c\nlisten = \"127.0.0.1:1\"\n\nmax-connections = 5\nstatistics = false\npurge-allow = [\"::1\", \"10.0.0.0/8\"]\n").unwrap();
        assert_eq!(
            f.get("listen").unwrap(),
            &(FileValue::Str("127.0.0.1:1".into()), 2)
        );
        assert_eq!(f.get("max-connections").unwrap(), &(FileValue::Int(5), 4));
        assert_eq!(f.get("statistics").unwrap().0.as_text(), "false");
        assert_eq!(f.get("purge-allow").unwrap().0.as_text(), "::1,10.0.0.0/8");
        assert!(f.get("upstream").is_none());
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases: &[(&str, usize, &str)] = &[
            ("listen = \"x\"\nsize-limt = \"1G\"\n", 2, "size-limt"),
            ("\n\nadmin = [1]\n", 3, "admin"),
            ("listen = \"x\"\nsize-limit = 1979-05-27\n", 2, "size-limit"),
            ("a\n", 1, "syntax"),
            ("listen = \"x\"\nlock-timeout = \n", 2, "lock-timeout"),
        ];
        for (src, line, key) in cases {
            let e = parse(src).unwrap_err();
            assert!(file_err(*line, key)(&e), "{src:?}: {e:?}");
        }
    }
}
