//! Configuration layering (flag > HOARD_* > file > default) and file errors (exit 2).

use std::path::Path;

use super::{hoard, run};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn effective(c: &mut std::process::Command) -> serde_json::Value {
    let (code, out, err) = run(c.args(["config", "--json"]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn precedence_flag_over_env_over_file_over_default() {
    let home = tempfile::tempdir().unwrap();
    let file = write(
        home.path(),
        "h.toml",
        "size-limit = \"2GiB\"\nlock-timeout = \"7s\"\nlisten = \"127.0.0.1:4000\"\n",
    );
    // (file?, env?, flag?) -> size-limit
    let cases: &[(bool, Option<&str>, Option<&str>, &str)] = &[
        (false, None, None, "1GiB"),
        (true, None, None, "2GiB"),
        (true, Some("3GiB"), None, "3GiB"),
        (true, Some("3GiB"), Some("4GiB"), "4GiB"),
        (false, Some("3GiB"), None, "3GiB"),
        (false, None, Some("4GiB"), "4GiB"),
    ];
    for (use_file, env, flag, want) in cases {
        let mut c = hoard(home.path());
        if *use_file {
            c.env("HOARD_CONFIG", &file);
        }
        if let Some(e) = env {
            c.env("HOARD_SIZE_LIMIT", e);
        }
        c.arg("config").arg("--json");
        if let Some(f) = flag {
            c.args(["--size-limit", f]);
        }
        let (code, out, err) = run(&mut c);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["size-limit"], *want, "{use_file} {env:?} {flag:?}");
        let lock = if *use_file { "7s" } else { "5s" };
        assert_eq!(v["lock-timeout"], lock);
    }
    // The default file is used when it exists, and --config wins over it.
    std::fs::create_dir_all(home.path().join("hoard")).unwrap();
    write(
        &home.path().join("hoard"),
        "hoard.toml",
        "max-connections = 9\n",
    );
    assert_eq!(effective(&mut hoard(home.path()))["max-connections"], 9);
    let v = effective(hoard(home.path()).args(["--config", &file]));
    assert_eq!(
        (v["max-connections"].as_u64(), v["listen"].as_str()),
        (Some(10000), Some("127.0.0.1:4000"))
    );
    // The TOML output is itself a valid configuration file.
    let (code, toml_out, _) = run(hoard(home.path()).args(["config", "--config", &file]));
    assert_eq!(code, 0);
    let again = write(home.path(), "again.toml", &toml_out);
    assert_eq!(
        effective(hoard(home.path()).args(["--config", &again]))["size-limit"],
        "2GiB"
    );
    // Subcommands take cache-dir from the file.
    let cache = home.path().join("from-file");
    hoard::store::Cache::open(&cache).unwrap();
    let f2 = write(
        home.path(),
        "dir.toml",
        &format!("cache-dir = {:?}\n", cache.to_str().unwrap()),
    );
    let (code, out, err) = run(hoard(home.path()).args(["stats", "--json", "--config", &f2]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("from-file"), "{out}");
}

/// Each kind of argument built from the option table reads its `HOARD_*` variable, and a bad
/// value there names the flag and the variable (exit 2).
#[test]
fn every_kind_of_option_reads_its_environment_variable() {
    let home = tempfile::tempdir().unwrap();
    let v = effective(
        hoard(home.path())
            .env("HOARD_TUNNEL_IDLE_TIMEOUT", "90s")
            .env("HOARD_OFFLINE", "true")
            .env("HOARD_MITM_BYPASS", "a.example,*.b.example")
            .env("HOARD_EXTRA_CA_FILES", "/x.pem")
            .env("HOARD_FORWARDING_HEADERS", "pass"),
    );
    assert_eq!(v["tunnel-idle-timeout"], "90s");
    assert_eq!(v["offline"], true);
    assert_eq!(
        v["mitm-bypass"],
        serde_json::json!(["a.example", "*.b.example"])
    );
    assert_eq!(v["extra-ca-files"], serde_json::json!(["/x.pem"]));
    assert_eq!(v["forwarding-headers"], "pass");
    let (code, out, err) = run(hoard(home.path()).env("HOARD_OFFLINE", "true").args([
        "config",
        "--json",
        "--offline=false",
    ]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["offline"], false);
    for key in hoard::config::OPTIONS.iter().map(|o| o.key) {
        assert!(
            v.get(key).is_some()
                || [
                    "upstream",
                    "admin",
                    "ca-dir",
                    "shared",
                    "shared-ca-file",
                    "shared-cert-file",
                    "shared-key-file",
                    "shared-secret-file",
                ]
                .contains(&key),
            "{key}"
        );
    }
    let (code, _, err) = run(hoard(home.path())
        .env("HOARD_TUNNEL_IDLE_TIMEOUT", "0s")
        .arg("config"));
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid --tunnel-idle-timeout (command line or HOARD_TUNNEL_IDLE_TIMEOUT)"),
        "{err}"
    );
}

#[test]
fn shipped_example_file_is_valid_and_matches_the_defaults() {
    let home = tempfile::tempdir().unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/hoard.toml");
    let with_file = effective(hoard(home.path()).args(["--config", shipped]));
    let without = effective(&mut hoard(home.path()));
    assert_eq!(with_file, without);
}

#[test]
fn config_errors_name_file_line_and_key_and_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "listen = \"127.0.0.1:0\"\nsize-limt = \"1G\"\n",
            ":2: size-limt: unknown key",
            "typo",
        ),
        (
            "\n\nlock-timeout = \"soon\"\n",
            ":3: lock-timeout: invalid duration",
            "duration",
        ),
        (
            "max-object-size = \"12 parsecs\"\n",
            ":1: max-object-size: invalid size",
            "size",
        ),
        (
            "eviction-policy = \"random\"\n",
            ":1: eviction-policy:",
            "value",
        ),
        ("admin = true\n", ":1: admin:", "type"),
        (
            "listen = \"127.0.0.1:0\"\nmax-connections = [1]\n",
            ":2: max-connections:",
            "list",
        ),
        ("listen = \n", ":1: listen:", "syntax"),
    ];
    for (text, want, name) in cases {
        let f = write(home.path(), &format!("{name}.toml"), text);
        for sub in [
            &["config"][..],
            &["serve", "--listen", "127.0.0.1:0"][..],
            &[][..],
        ] {
            let (code, _, err) = run(hoard(home.path()).args(["--config", &f]).args(sub));
            assert_eq!(code, 2, "{name} {sub:?}: {err}");
            assert!(err.contains(&format!("{f}{want}")), "{name}: {err}");
        }
    }
    let cases: &[(&[&str], &str)] = &[
        (&["config", "--size-limit", "lots"], "--size-limit"),
        (
            &["config", "--config", "/nonexistent/h.toml"],
            "cannot read configuration file",
        ),
        (&["config", "--admin", "somewhere"], "--admin"),
        (&["config", "--purge-allow", "10.0.0.0/99"], "--purge-allow"),
    ];
    for (args, want) in cases {
        let (code, _, err) = run(hoard(home.path()).args(*args));
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
