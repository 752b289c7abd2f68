//! Tests of the command line: parsing, layering over the file and the environment, validation.

use super::*;
use crate::store::EvictionPolicy;
use std::path::Path;
use std::time::Duration;

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("hoard").chain(args.iter().copied())).unwrap()
}

fn file(text: &str) -> ConfigFile {
    ConfigFile::parse(Path::new("/etc/hoard.toml"), text).unwrap()
}

#[test]
fn defaults_without_file_or_flags() {
    let r = ServeArgs::default().resolve_with(None).unwrap();
    let c = &r.proxy;
    assert_eq!(c.listen, "127.0.0.1:3128".parse().unwrap());
    assert_eq!(c.size_limit, 1 << 30);
    assert_eq!(c.eviction_policy, EvictionPolicy::LeastRecentlyUsed);
    assert!(c.upstream.is_none() && c.admin.is_none() && !c.offline);
    assert!(c.statistics);
    assert_eq!(c.purge_allow, crate::proxy::loopback_nets());
    assert_eq!(r.log_format, LogFormat::Text);
    assert_eq!(r.effective.size_limit, "1GiB");
}

#[test]
fn bad_access_options_are_errors() {
    for args in [
        &["--proxy-auth", "nocolon"][..],
        &["--proxy-auth", ":pw"],
        &["--allow", "10.0.0.0/40"],
        &["--idle-timeout", "0s"],
    ] {
        assert!(parse(args).serve.resolve_with(None).is_err(), "{args:?}");
    }
}

#[test]
fn exposure_warning_only_for_non_loopback_listen_with_default_allow() {
    let r = ServeArgs::default().resolve_with(None).unwrap();
    assert!(crate::proxy::exposure_warning(&r.proxy).is_none());
    let mut c = r.proxy.clone();
    c.listen = "0.0.0.0:3128".parse().unwrap();
    assert!(crate::proxy::exposure_warning(&c).is_some());
    c.allow = crate::config::parse_ip_list("10.0.0.0/8").unwrap();
    assert!(crate::proxy::exposure_warning(&c).is_none());
}

#[test]
fn mitm_options_from_flags_and_file() {
    let cli = parse(&[
        "--mitm",
        "--mitm-bypass",
        "*.bank.example",
        "--mitm-bypass",
        "pinned.example",
        "--resolve",
        "origin.test:8443:127.0.0.1",
        "--allowed-connect-ports",
        "443,8443",
        "--extra-ca-file",
        "/tmp/x.pem",
    ]);
    let c = cli.serve.resolve_with(None).unwrap().proxy;
    assert!(c.mitm && !c.insecure_upstream);
    assert_eq!(c.mitm_bypass, vec!["*.bank.example", "pinned.example"]);
    assert_eq!(c.resolve[0].1, 8443);
    assert_eq!(c.allowed_connect_ports, vec![443, 8443]);
    assert_eq!(c.extra_ca_files, vec![PathBuf::from("/tmp/x.pem")]);
    assert_eq!(c.ca_dir(), c.cache_dir.join("ca"));
    let f =
        file("mitm = true\nmitm-bypass = [\"a.example\"]\nresolve = [\"o.test:9443:127.0.0.1\"]\n");
    let c = ServeArgs::default().resolve_with(Some(&f)).unwrap().proxy;
    assert!(c.mitm);
    assert_eq!(c.mitm_bypass, vec!["a.example"]);
    assert_eq!(c.resolve[0].1, 9443);
    assert!(
        parse(&["--resolve", "o.test:443"])
            .serve
            .resolve_with(None)
            .is_err()
    );
    let cli = parse(&["ca", "--cache-dir", "/tmp/h"]);
    let Some(Command::Ca(a)) = cli.command else {
        panic!("expected ca")
    };
    assert_eq!(a.resolve_ca_dir().unwrap(), PathBuf::from("/tmp/h/ca"));
}

#[test]
fn serve_subcommand_takes_options() {
    let cli = parse(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:8080",
        "--size-limit",
        "10MiB",
        "--offline",
    ]);
    let Some(Command::Serve(a)) = cli.command else {
        panic!("expected serve")
    };
    let c = a.resolve_with(None).unwrap().proxy;
    assert_eq!(c.size_limit, 10 << 20);
    assert_eq!(c.upstream.unwrap().port_u16(), Some(8080));
    assert!(c.offline);
}

#[test]
fn clap_arguments_are_the_option_table() {
    let cmd = <Cli as clap::CommandFactory>::command();
    cmd.clone().debug_assert();
    for o in config::OPTIONS {
        let a = cmd
            .get_arguments()
            .find(|a| a.get_id() == o.key)
            .unwrap_or_else(|| panic!("no argument for {}", o.key));
        assert_eq!(a.get_long(), Some(o.flag));
        assert_eq!(a.get_env(), Some(std::ffi::OsStr::new(o.env)));
    }
    let serve = cmd.find_subcommand("serve").unwrap();
    assert!(
        serve
            .get_arguments()
            .any(|a| a.get_id() == "tunnel-idle-timeout")
    );
    let c = parse(&["--extra-ca-file", "/a.pem,/b.pem", "--extra-ca-file=/c.pem"]);
    let r = c.serve.resolve_with(None).unwrap();
    assert_eq!(r.effective.extra_ca_files, ["/a.pem", "/b.pem", "/c.pem"]);
    let e = parse(&["--tunnel-idle-timeout", "0s"])
        .serve
        .resolve_with(None);
    assert_eq!(
        e.unwrap_err().to_string(),
        "invalid --tunnel-idle-timeout (command line or HOARD_TUNNEL_IDLE_TIMEOUT): \
         must be more than 0"
    );
}

/// (flag args, file text) -> effective value of one key.
macro_rules! layered {
    ($name:ident, $args:expr, $file:expr, $get:expr, $want:expr) => {
        #[test]
        fn $name() {
            let cli = parse($args);
            let f = $file.map(file);
            let r = cli.serve.resolve_with(f.as_ref()).unwrap();
            assert_eq!($get(&r), $want);
        }
    };
}
layered!(
    tunnel_idle_timeout_from_the_file,
    &[],
    Some("tunnel-idle-timeout = \"90s\""),
    |r: &Resolved| r.proxy.tunnel_idle_timeout,
    Duration::from_secs(90)
);
layered!(
    idle_timeout_flag,
    &["--idle-timeout", "5s"],
    Some("idle-timeout = \"1m\""),
    |r: &Resolved| r.proxy.idle_timeout,
    Duration::from_secs(5)
);
layered!(
    body_timeout_off_in_file,
    &[],
    Some("body-timeout = \"off\""),
    |r: &Resolved| r.proxy.body_timeout,
    None
);
layered!(
    body_timeout_default,
    &[],
    None::<&str>,
    |r: &Resolved| r.proxy.body_timeout,
    Some(Duration::from_secs(600))
);
layered!(
    allow_list_in_file,
    &[],
    Some("allow = [\"10.0.0.0/8\", \"::1\"]"),
    |r: &Resolved| r.effective.allow.clone(),
    vec!["10.0.0.0/8".to_string(), "::1/128".to_string()]
);
layered!(
    proxy_auth_flag_is_redacted_in_effective,
    &["--proxy-auth", "alice:s3cret,bob:pw"],
    None::<&str>,
    |r: &Resolved| (r.proxy.proxy_auth.len(), r.effective.proxy_auth.join(",")),
    (2, "alice:***,bob:***".to_string())
);
layered!(
    file_over_default,
    &[],
    Some("size-limit = \"2GiB\""),
    |r: &Resolved| r.proxy.size_limit,
    2 << 30
);
layered!(
    flag_over_file,
    &["--size-limit", "3GiB"],
    Some("size-limit = \"2GiB\""),
    |r: &Resolved| r.proxy.size_limit,
    3 << 30
);
layered!(
    int_size_in_file,
    &[],
    Some("max-object-size = 1024"),
    |r: &Resolved| r.proxy.max_object_size,
    1024
);
layered!(
    int_duration_in_file,
    &[],
    Some("lock-timeout = 2"),
    |r: &Resolved| r.proxy.lock_timeout,
    Duration::from_secs(2)
);
layered!(
    offline_flag_false_over_file,
    &["--offline=false"],
    Some("offline = true"),
    |r: &Resolved| r.proxy.offline,
    false
);
layered!(
    offline_in_file,
    &[],
    Some("offline = true"),
    |r: &Resolved| r.proxy.offline,
    true
);
layered!(
    empty_purge_list,
    &[],
    Some("purge-allow = []"),
    |r: &Resolved| r.proxy.purge_allow.len(),
    0
);
layered!(
    admin_off,
    &["--admin", "off"],
    Some("admin = \"127.0.0.1:1\""),
    |r: &Resolved| r.proxy.admin,
    None
);
layered!(
    admin_in_file,
    &[],
    Some("admin = \"127.0.0.1:1\""),
    |r: &Resolved| r.proxy.admin,
    Some("127.0.0.1:1".parse().unwrap())
);
layered!(
    admin_allow_default_is_loopback,
    &[],
    None::<&str>,
    |r: &Resolved| (r.proxy.admin_allow.clone(), r.effective.admin_allow.clone()),
    (
        crate::proxy::loopback_nets(),
        vec!["127.0.0.0/8".to_string(), "::1/128".to_string()]
    )
);
layered!(
    admin_allow_flag_over_file,
    &["--admin-allow", "10.0.0.0/8"],
    Some("admin-allow = [\"192.168.0.0/16\"]"),
    |r: &Resolved| r.effective.admin_allow.clone(),
    vec!["10.0.0.0/8".to_string()]
);
layered!(
    admin_allow_in_file,
    &[],
    Some("admin-allow = [\"192.168.0.0/16\", \"::1\"]"),
    |r: &Resolved| r.effective.admin_allow.clone(),
    vec!["192.168.0.0/16".to_string(), "::1/128".to_string()]
);
layered!(
    json_logs,
    &["--log-format", "json"],
    None::<&str>,
    |r: &Resolved| r.log_format,
    LogFormat::Json
);
layered!(
    xfetch_float_in_file,
    &[],
    Some("xfetch-beta = 2.5"),
    |r: &Resolved| r.proxy.xfetch_beta,
    2.5
);
layered!(
    stale_while_revalidate_in_file,
    &[],
    Some("stale-while-revalidate = \"2s\""),
    |r: &Resolved| r.proxy.stale_while_revalidate,
    Some(Duration::from_secs(2))
);
layered!(
    stale_if_error_in_file,
    &[],
    Some("stale-if-error = \"1m\""),
    |r: &Resolved| r.proxy.stale_if_error,
    Some(Duration::from_secs(60))
);

/// (flag args, file text) -> error naming what.
macro_rules! refused {
    ($name:ident, $args:expr, $file:expr, $want:expr) => {
        #[test]
        fn $name() {
            let cli = parse($args);
            let f = $file.map(file);
            let e = cli.serve.resolve_with(f.as_ref()).unwrap_err().to_string();
            assert!(e.contains($want), "{e}");
        }
    };
}
refused!(
    bad_upstream_flag,
    &["--upstream", "ftp://x"],
    None::<&str>,
    "invalid --upstream (command line or HOARD_UPSTREAM)"
);
refused!(
    bad_policy_flag,
    &["--eviction-policy", "random"],
    None::<&str>,
    "--eviction-policy"
);
refused!(
    bad_policy_file,
    &[],
    Some("\neviction-policy = \"random\""),
    "/etc/hoard.toml:2: eviction-policy:"
);
refused!(
    zero_connections_file,
    &[],
    Some("max-connections = 0"),
    "/etc/hoard.toml:1: max-connections: must be at least 1"
);
refused!(
    negative_beta,
    &["--xfetch-beta=-1"],
    None::<&str>,
    "--xfetch-beta"
);
refused!(
    bad_bool_file,
    &[],
    Some("statistics = \"maybe\""),
    "/etc/hoard.toml:1: statistics:"
);
refused!(
    bad_admin_allow_flag,
    &["--admin-allow", "10.0.0.0/40"],
    None::<&str>,
    "--admin-allow"
);
