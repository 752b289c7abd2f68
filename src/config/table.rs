//! The machinery behind the option table of `options.rs`: what a row declares ([`Opt`], [`Kind`]),
//! the `options_table!` macro that turns the rows into everything else, the clap arguments
//! built from the rows ([`Given`]) and the layering flag > `HOARD_*` > file > default
//! ([`Layers`]).

use std::collections::BTreeMap;

use super::{ConfigError, ConfigFile, OPTIONS};

/// How an option is written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--key VALUE`.
    Value,
    /// `--key` alone means true; `--key=false` (`=` required, so the next word is never taken).
    Switch,
    /// Repeatable `--flag VALUE`, each value also split at commas; `HOARD_*` takes a
    /// comma-separated list. Joined by commas before parsing, like a list in the file.
    List {
        /// Shown in `--help` (`PATTERN`, `PEM`).
        value_name: &'static str,
    },
}

/// One option of `hoard serve`, as declared by one row of the table in `options.rs`.
#[derive(Debug)]
pub struct Opt {
    /// The configuration-file key, and the flag unless [`flag`](Opt::flag) differs
    /// (`tunnel-idle-timeout`).
    pub key: &'static str,
    /// The command-line flag without `--`: the key, except where a row names another
    /// (`extra-ca-file` for `extra-ca-files`).
    pub flag: &'static str,
    /// Its field in `ProxyConfig` and `Effective` (`tunnel_idle_timeout`).
    pub field: &'static str,
    /// The environment variable: `HOARD_` and the key in upper case, `-` as `_`.
    pub env: &'static str,
    /// The doc comment of the row, one entry a line.
    pub doc: &'static [&'static str],
    /// The default, as text in the option's own syntax (`"10m"`); empty means none.
    pub default: fn() -> String,
    /// How it is written on the command line.
    pub kind: Kind,
}

impl Opt {
    /// The row's doc text on one line, without its final period.
    pub fn doc_line(&self) -> String {
        let text = self
            .doc
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(" ");
        text.strip_suffix('.').map(str::to_string).unwrap_or(text)
    }

    /// The `--help` text: the doc and the default, when there is one.
    pub fn help(&self) -> String {
        match (self.default)() {
            d if d.is_empty() => self.doc_line(),
            d => format!("{} [default: {d}]", self.doc_line()),
        }
    }

    /// The clap argument.
    fn arg(&self) -> clap::Arg {
        let arg = clap::Arg::new(self.key)
            .long(self.flag)
            .env(self.env)
            .help(self.help())
            .value_parser(clap::value_parser!(String));
        let upper = &self.env["HOARD_".len()..];
        match self.kind {
            Kind::Value => arg.value_name(upper),
            Kind::Switch => arg
                .value_name(upper)
                .num_args(0..=1)
                .default_missing_value("true")
                .require_equals(true),
            Kind::List { value_name } => arg
                .value_name(value_name)
                .value_delimiter(',')
                .action(clap::ArgAction::Append),
        }
    }
}

/// `HOARD_` and `key` in upper case with `_` for `-`, at compile time (`N` is the key's length
/// plus 6), so that each row's variable is a `&'static str` derived from its key.
pub const fn env_name<const N: usize>(key: &str) -> [u8; N] {
    const PREFIX: &[u8] = b"HOARD_";
    let key = key.as_bytes();
    assert!(N == PREFIX.len() + key.len());
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < PREFIX.len() {
            PREFIX[i]
        } else if key[i - PREFIX.len()] == b'-' {
            b'_'
        } else {
            key[i - PREFIX.len()].to_ascii_uppercase()
        };
        i += 1;
    }
    out
}

/// The options given on the command line or in `HOARD_*` variables (clap has merged those,
/// flag first), as text by key; a list flag's values joined by commas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given(BTreeMap<&'static str, String>);

impl Given {
    /// The text given for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl clap::FromArgMatches for Given {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Given::default();
        given.update_from_arg_matches(m)?;
        Ok(given)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for o in OPTIONS {
            if let Ok(Some(values)) = m.try_get_many::<String>(o.key) {
                let text = values.map(String::as_str).collect::<Vec<_>>().join(",");
                self.0.insert(o.key, text);
            }
        }
        Ok(())
    }
}

impl clap::Args for Given {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.args(OPTIONS.iter().map(Opt::arg))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Picks each value from the first layer that has it: command line or environment, then the
/// file, then the default; errors name the flag and variable, or the file, line and key.
#[derive(Debug)]
pub struct Layers<'a> {
    /// Flags and `HOARD_*` variables.
    pub given: &'a Given,
    /// The configuration file, if any.
    pub file: Option<&'a ConfigFile>,
}

impl Layers<'_> {
    /// The value of `opt` and the text it was parsed from.
    pub fn pick<T>(
        &self,
        opt: &Opt,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<(T, String), ConfigError> {
        if let Some(v) = self.given.get(opt.key) {
            return parse(v)
                .map(|t| (t, v.to_string()))
                .map_err(|reason| ConfigError::Flag {
                    key: opt.flag.to_string(),
                    env: opt.env.to_string(),
                    reason,
                });
        }
        if let Some(f) = self.file
            && let Some((v, line)) = f.get(opt.key)
        {
            let text = v.as_text();
            return parse(&text)
                .map(|t| (t, text))
                .map_err(|reason| f.error(opt.key, *line, reason));
        }
        let default = (opt.default)();
        parse(&default)
            .map(|t| (t, default))
            .map_err(|reason| ConfigError::Value {
                key: opt.key,
                reason,
            })
    }
}

/// Generates, from the rows of the option table: [`OPTIONS`](super::OPTIONS) (the rows as
/// [`Opt`]s, from which the clap arguments are built), [`FILE_KEYS`](super::FILE_KEYS),
/// [`ProxyConfig`](super::ProxyConfig) (one field per row, then the `more` fields no option
/// sets), [`Effective`](super::Effective) (one field per row, then the rules) and `layer`,
/// which resolves every row in order through [`Layers::pick`].
///
/// A row: doc comment (help text and field docs), `field: Type` (the `ProxyConfig` field), then
/// `key` (file key and flag), `default` (text, or any expression giving a `String`), `parse`
/// (a function of `parse.rs`), `show` (a function of `show.rs` => the type `hoard config`
/// prints), and optionally `arg` (a [`Kind`], default `Value`) and `flag` (default the key).
macro_rules! options_table {
    (
        options {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $ty:ty {
                    key: $key:literal,
                    default: $default:expr,
                    parse: $parse:ident,
                    show: $show:ident => $shown:ty
                    $(, arg: $kind:expr)?
                    $(, flag: $flag:literal)?
                    $(,)?
                }
            )*
        }
        more {
            $( $(#[doc = $mdoc:literal])* $mfield:ident: $mty:ty = $mdefault:expr, )*
        }
    ) => {
        /// Every option of `hoard serve`, in the order `hoard config` prints them.
        pub const OPTIONS: &[$crate::config::Opt] = &[$(
            $crate::config::Opt {
                key: $key,
                flag: { let f = [$key $(, $flag)?]; f[f.len() - 1] },
                field: stringify!($field),
                env: {
                    const ENV: &[u8; $key.len() + 6] = &$crate::config::table::env_name($key);
                    match ::std::str::from_utf8(ENV) {
                        Ok(s) => s,
                        Err(_) => panic!("option keys are ASCII"),
                    }
                },
                doc: &[$($doc),*],
                default: || String::from($default),
                kind: { let k = [$crate::config::Kind::Value $(, $kind)?]; k[k.len() - 1] },
            },
        )*];

        /// Every key the configuration file accepts (besides `[[rules]]`).
        pub const FILE_KEYS: &[&str] = &[$($key),*];

        /// Everything the proxy needs to run, already validated: one field per option (see
        /// `config/options.rs`), then the fields no option sets.
        #[derive(Debug, Clone)]
        pub struct ProxyConfig {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $( $(#[doc = $mdoc])* pub $mfield: $mty, )*
        }

        /// The effective configuration in the configuration file's own terms (`hoard config`).
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        pub struct Effective {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $key, skip_serializing_if = "crate::config::show::omit")]
                pub $field: $shown,
            )*
            /// Development-caching rules from the file (`[[rules]]`), first match wins.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            pub rules: Vec<$crate::config::EffectiveRule>,
        }

        /// Every option from the first layer that has it (flags and `HOARD_*`, `file`, the
        /// default), validated, and as `hoard config` prints it; no rules yet.
        fn layer(
            given: &$crate::config::Given,
            file: Option<&$crate::config::ConfigFile>,
        ) -> Result<(ProxyConfig, Effective), $crate::config::ConfigError> {
            let layers = $crate::config::table::Layers { given, file };
            let mut rows = OPTIONS.iter();
            $(
                let $field = layers.pick(
                    rows.next().expect("one Opt per row"),
                    $crate::config::parse::$parse,
                )?;
            )*
            let effective = Effective {
                $( $field: $crate::config::show::$show(&$field.0, &$field.1), )*
                rules: Vec::new(),
            };
            let proxy = ProxyConfig {
                $( $field: $field.0, )*
                $( $mfield: $mdefault, )*
            };
            Ok((proxy, effective))
        }
    };
}

pub(super) use options_table;
