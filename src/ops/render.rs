//! How the subcommands' reports read for people: one `Display` per report (`--json` is
//! serde's). `main.rs` prints these and maps outcomes to exit codes.
//!
//! Invariant: rendering only; every figure comes from the report, nothing is looked up here.
//! Lines are separated by `\n` with no newline after the last one (the printer adds it).

use std::fmt;
use std::path::Path;

use super::har::{ExportReport, ImportReport};
use super::warm::WarmReport;
use super::{CheckReport, ShowReport, StatsReport, human_bytes, human_time};

impl fmt::Display for StatsReport {
    /// `hoard stats`' local figures (the shared tier's block follows, from `SharedStats`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        writeln!(f, "cache dir   {}", r.cache_dir)?;
        writeln!(f, "entries     {} ({} URLs)", r.entries, r.urls)?;
        writeln!(
            f,
            "size        {} of {} ({:.1}%)",
            human_bytes(r.bytes),
            human_bytes(r.size_limit),
            r.bytes as f64 * 100.0 / r.size_limit.max(1) as f64
        )?;
        writeln!(f, "policy      {}", r.eviction_policy)?;
        match (r.hit_ratio, r.statistics) {
            (Some(h), _) => {
                writeln!(
                    f,
                    "hit ratio   {:.1}% ({} of {} cacheable requests answered from the cache)",
                    h * 100.0,
                    r.hits,
                    r.hits + r.misses
                )?;
                writeln!(
                    f,
                    "served      {} from the cache, {} from origins",
                    human_bytes(r.cache_bytes),
                    human_bytes(r.origin_bytes)
                )?;
            }
            (None, true) => writeln!(f, "hit ratio   - (no cacheable requests yet)")?,
            (None, false) => writeln!(f, "hit ratio   - (statistics off)")?,
        }
        if r.store_hits + r.store_misses > 0 {
            writeln!(
                f,
                "lookups     {} found, {} not found in the store",
                r.store_hits, r.store_misses
            )?;
        }
        write!(
            f,
            "evictions   {} culled (size limit), {} expired",
            r.evictions.culled, r.evictions.expired
        )?;
        if !r.top_hosts.is_empty() {
            write!(f, "\ntop hosts by bytes:")?;
            for h in &r.top_hosts {
                write!(
                    f,
                    "\n  {:>10}  {:>6} URLs  {}",
                    human_bytes(h.bytes),
                    h.urls,
                    h.host
                )?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for ShowReport {
    /// `hoard show URL`: the URL, then each stored variant with its headers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        write!(f, "url            {}", r.url)?;
        write!(f, "\ncache-status   {}  (a plain GET now)", r.cache_status)?;
        if !r.vary.is_empty() {
            write!(f, "\nvary           {}", r.vary.join(", "))?;
        }
        for (i, v) in r.variants.iter().enumerate() {
            writeln!(f)?;
            if r.variants.len() > 1 || !r.vary.is_empty() {
                let sel: Vec<String> = v
                    .request_headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                write!(f, "\nvariant {}      {}", i + 1, sel.join("; "))?;
            }
            write!(f, "\nstatus         {}", v.status)?;
            write!(f, "\nstored         {}", human_time(v.stored_at))?;
            write!(
                f,
                "\nfreshness      {}  (age {}s, lifetime {}s, ttl {}s)",
                if v.fresh { "fresh" } else { "stale" },
                v.age,
                v.freshness_lifetime,
                v.ttl
            )?;
            write!(f, "\nbody           {}", human_bytes(v.body_len))?;
            if let Some(rule) = &v.rule {
                match v.forced_ttl {
                    Some(t) => write!(f, "\nrule           {rule} (ttl forced to {t}s)")?,
                    None => write!(f, "\nrule           {rule}")?,
                }
            }
            write!(f, "\ncache-status   {}", v.cache_status)?;
            for (k, val) in &v.headers {
                write!(f, "\n  {k}: {val}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for CheckReport {
    /// `hoard check`: each problem, then what became of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            return write!(f, "ok: no problems found");
        }
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        write!(
            f,
            "{} problem(s) {}",
            self.problems.len(),
            if self.fixed {
                "fixed"
            } else {
                "found (run with --fix to repair)"
            }
        )
    }
}

/// `hoard export`'s summary: the report and the file written.
#[derive(Debug)]
pub struct Exported<'a>(pub &'a ExportReport, pub &'a Path);

impl fmt::Display for Exported<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Exported(r, to) = self;
        write!(
            f,
            "wrote {} response(s), {} of bodies, to {}",
            r.entries,
            human_bytes(r.bytes),
            to.display()
        )
    }
}

/// `hoard import`'s summary: the report and the file read.
#[derive(Debug)]
pub struct Imported<'a>(pub &'a ImportReport, pub &'a Path);

impl fmt::Display for Imported<'_> {
    /// What was stored, then the skipped entries by reason, one line each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Imported(r, from) = self;
        write!(f, "stored {} response(s) from {}", r.stored, from.display())?;
        for (why, n) in &r.skipped {
            let why = serde_json::to_string(why).unwrap_or_default();
            write!(f, "\nskipped {n}: {}", why.trim_matches('"'))?;
        }
        Ok(())
    }
}

impl fmt::Display for WarmReport {
    /// `hoard warm`'s summary, then each failed URL with its reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        write!(
            f,
            "{} URL(s) in {:.1}s: {} stored, {} already fresh, {} failed ({} received)",
            r.stored + r.already_fresh + r.failed.len() as u64,
            r.seconds,
            r.stored,
            r.already_fresh,
            r.failed.len(),
            human_bytes(r.bytes)
        )?;
        for (url, why) in &r.failed {
            write!(f, "\nfailed  {url}: {why}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::har::Skip;
    use super::super::warm::Failure;
    use super::super::{EvictionReport, HostUsage, VariantReport};
    use super::*;

    fn stats(hits: u64, statistics: bool, hosts: Vec<HostUsage>) -> StatsReport {
        StatsReport {
            cache_dir: "/c".into(),
            entries: 3,
            urls: 2,
            bytes: 512,
            size_limit: 1024,
            eviction_policy: "least-recently-stored".into(),
            statistics,
            hits,
            misses: 1,
            hit_ratio: (hits > 0).then(|| hits as f64 / (hits + 1) as f64),
            cache_bytes: 2048,
            origin_bytes: 10,
            store_hits: 0,
            store_misses: 0,
            evictions: EvictionReport {
                culled: 4,
                expired: 5,
            },
            top_hosts: hosts,
        }
    }

    const STATS_HEAD: &str = "cache dir   /c\nentries     3 (2 URLs)\n\
        size        512 B of 1.0 KiB (50.0%)\npolicy      least-recently-stored\n";

    #[test]
    fn stats_reads_line_by_line() {
        let host = HostUsage {
            host: "a.test".into(),
            urls: 2,
            bytes: 512,
        };
        let cases = [
            (
                stats(3, true, vec![host]),
                "hit ratio   75.0% (3 of 4 cacheable requests answered from the cache)\n\
                 served      2.0 KiB from the cache, 10 B from origins\n\
                 evictions   4 culled (size limit), 5 expired\n\
                 top hosts by bytes:\n       512 B       2 URLs  a.test",
            ),
            (
                stats(0, true, vec![]),
                "hit ratio   - (no cacheable requests yet)\n\
                 evictions   4 culled (size limit), 5 expired",
            ),
            (
                stats(0, false, vec![]),
                "hit ratio   - (statistics off)\nevictions   4 culled (size limit), 5 expired",
            ),
        ];
        for (r, tail) in cases {
            assert_eq!(r.to_string(), format!("{STATS_HEAD}{tail}"));
        }
    }

    #[test]
    fn show_lists_each_variant_after_a_blank_line() {
        let v = |lang: &str| VariantReport {
            request_headers: vec![("accept-language".into(), lang.into())],
            status: 200,
            headers: vec![("etag".into(), format!("\"{lang}\""))],
            body_len: 5,
            stored_at: 0.0,
            age: 1,
            freshness_lifetime: 60,
            ttl: 59,
            fresh: true,
            cache_status: "hoard; hit".into(),
            rule: (lang == "fr").then(|| "dev".into()),
            forced_ttl: (lang == "fr").then_some(60),
        };
        let r = ShowReport {
            url: "http://a.test/".into(),
            vary: vec!["accept-language".into()],
            variants: vec![v("en"), v("fr")],
            cache_status: "hoard; fwd=vary-miss".into(),
        };
        let variant = |n: u8, lang: &str, rule: &str| {
            format!(
                "\n\nvariant {n}      accept-language: {lang}\nstatus         200\n\
                 stored         Thu, 01 Jan 1970 00:00:00 GMT\n\
                 freshness      fresh  (age 1s, lifetime 60s, ttl 59s)\nbody           5 B\
                 {rule}\ncache-status   hoard; hit\n  etag: \"{lang}\""
            )
        };
        let want = format!(
            "url            http://a.test/\ncache-status   hoard; fwd=vary-miss  (a plain GET now)\n\
             vary           accept-language{}{}",
            variant(1, "en", ""),
            variant(2, "fr", "\nrule           dev (ttl forced to 60s)")
        );
        assert_eq!(r.to_string(), want);
    }

    #[test]
    fn check_says_ok_or_counts_problems() {
        let r = |problems: &[&str], fixed| CheckReport {
            problems: problems.iter().map(|p| p.to_string()).collect(),
            fixed,
        };
        let cases = [
            (r(&[], false), "ok: no problems found"),
            (r(&["a", "b"], true), "a\nb\n2 problem(s) fixed"),
            (
                r(&["a"], false),
                "a\n1 problem(s) found (run with --fix to repair)",
            ),
        ];
        for (report, want) in cases {
            assert_eq!(report.to_string(), want);
        }
    }

    #[test]
    fn har_summaries_name_their_file() {
        let path = Path::new("/tmp/x.har");
        let e = ExportReport {
            entries: 2,
            bytes: 2048,
        };
        assert_eq!(
            Exported(&e, path).to_string(),
            "wrote 2 response(s), 2.0 KiB of bodies, to /tmp/x.har"
        );
        let i = ImportReport {
            stored: 1,
            skipped: vec![(Skip::NoBody, 2), (Skip::VaryAny, 1)],
        };
        assert_eq!(
            Imported(&i, path).to_string(),
            "stored 1 response(s) from /tmp/x.har\nskipped 2: no-body\nskipped 1: vary-any"
        );
    }

    #[test]
    fn warm_summary_then_failures() {
        let r = WarmReport {
            stored: 1,
            already_fresh: 1,
            failed: vec![("http://a.test/".into(), Failure::Timeout)],
            bytes: 10,
            seconds: 1.25,
        };
        assert_eq!(
            r.to_string(),
            "3 URL(s) in 1.2s: 1 stored, 1 already fresh, 1 failed (10 B received)\n\
             failed  http://a.test/: timed out"
        );
    }
}
