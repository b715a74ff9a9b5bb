//! `cargo xtask ci` (every check CI runs, in order) and `cargo xtask e2e`.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::util::{self, cargo};
use crate::{fuzz, setup};

/// Seconds each fuzz target runs in CI unless `--fuzz-seconds` says otherwise.
const CI_FUZZ_SECONDS: u64 = 20;

struct Outcome {
    name: String,
    result: Result<Duration>,
}

fn cargo_step(args: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(args);
    cmd
}

/// Runs one step, printing a banner, and records its outcome.
fn step(outcomes: &mut Vec<Outcome>, name: &str, f: impl FnOnce() -> Result<Duration>) {
    println!("\n==> {name}");
    let result = f();
    match &result {
        Ok(d) => println!("<== {name}: ok ({:.1} s)", d.as_secs_f64()),
        Err(e) => println!("<== {name}: FAILED: {e:#}"),
    }
    outcomes.push(Outcome {
        name: name.to_string(),
        result,
    });
}

pub fn run(args: &[String]) -> Result<()> {
    let mut fuzz_seconds = std::env::var("SANBOOT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_FUZZ_SECONDS);
    let mut do_fuzz = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--fuzz-seconds" => {
                fuzz_seconds = match it.next().map(|s| s.parse()) {
                    Some(Ok(n)) => n,
                    _ => bail!("--fuzz-seconds needs a number"),
                }
            }
            "--no-fuzz" => do_fuzz = false,
            other => bail!("cargo xtask ci: unknown argument {other:?}"),
        }
    }

    let mut out = Vec::new();
    let o = &mut out;
    // First, so a fresh machine gets its packages; if it fails the other
    // steps still run and the ones that need the missing pieces fail by name.
    step(o, "setup (packages, rust targets)", || {
        let start = std::time::Instant::now();
        setup::ensure()?;
        Ok(start.elapsed())
    });
    step(o, "rustfmt", || {
        util::run(&mut cargo_step(&["fmt", "--all", "--check"]))
    });
    step(o, "clippy (workspace, all targets)", || {
        util::run(&mut cargo_step(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    });
    for feature in ["log", "defmt"] {
        step(
            o,
            &format!("clippy (sanboot-core, feature {feature})"),
            || {
                util::run(&mut cargo_step(&[
                    "clippy",
                    "-p",
                    "sanboot-core",
                    "--features",
                    feature,
                    "--",
                    "-D",
                    "warnings",
                ]))
            },
        );
    }
    step(o, "rustdoc (sanboot-core, -D warnings)", || {
        let mut cmd = cargo_step(&["doc", "-p", "sanboot-core", "--no-deps"]);
        cmd.env("RUSTDOCFLAGS", "-Dwarnings");
        util::run(&mut cmd)
    });
    for package in ["sanboot-core", "sanboot-smoltcp"] {
        step(
            o,
            &format!("build {package} for thumbv7em-none-eabihf"),
            || {
                util::run(&mut cargo_step(&[
                    "build",
                    "-p",
                    package,
                    "--target",
                    "thumbv7em-none-eabihf",
                ]))
            },
        );
    }
    let mut sanboot_bin = None;
    step(o, "build sanboot (for the e2e tests)", || {
        let start = std::time::Instant::now();
        sanboot_bin = Some(util::build_sanboot()?);
        Ok(start.elapsed())
    });
    let timings = util::target_dir().join("e2e").join("timings.txt");
    let timings_before = std::fs::read_to_string(&timings).map_or(0, |t| t.len());
    step(o, "cargo test --workspace (unit, integration, e2e)", || {
        let mut cmd = cargo_step(&["test", "--workspace"]);
        quiet_error_backtraces(&mut cmd);
        if let Some(bin) = &sanboot_bin {
            cmd.env("SANBOOT_BIN", bin);
        }
        util::run(&mut cmd)
    });
    // Ignored by `cargo test` (the first run builds a Debian disk image):
    // the real Linux station, three ways, two boots each; then two stations
    // at once on one golden image, each on its own copy-on-write overlay
    // (persistent and volatile), two boots each.
    for (test, what) in [
        ("linux_station", "Debian from sanboot, 3 ways x 2 boots"),
        (
            "golden_image",
            "2 Debian stations, one golden image, 2 boots",
        ),
    ] {
        step(o, &format!("e2e {test} ({what})"), || {
            let mut cmd = cargo_step(&[
                "test",
                "-p",
                "sanboot-tests",
                "--test",
                test,
                "--",
                "--include-ignored",
            ]);
            quiet_error_backtraces(&mut cmd);
            if let Some(bin) = &sanboot_bin {
                cmd.env("SANBOOT_BIN", bin);
            }
            util::run(&mut cmd)
        });
    }
    if do_fuzz {
        let targets = fuzz::targets();
        step(o, "cargo fuzz build (all targets)", fuzz::build);
        let built = o.last().is_some_and(|s| s.result.is_ok());
        match targets {
            Ok(targets) => {
                for t in targets {
                    step(o, &format!("fuzz {t} ({fuzz_seconds} s)"), || {
                        if !built {
                            bail!("not run: the fuzz build failed");
                        }
                        fuzz::run_one(&t, fuzz_seconds)
                    });
                }
            }
            Err(e) => step(o, "list fuzz targets", || Err(e)),
        }
    }

    // The e2e tests' output is captured when they pass; their boot times
    // (QEMU power-on to the marker on the serial console) are kept here.
    if let Some(new) = std::fs::read_to_string(&timings)
        .ok()
        .and_then(|t| t.get(timings_before..).map(str::to_string))
        .filter(|t| !t.is_empty())
    {
        println!("\n== e2e boot times (power-on to marker, seconds) ==");
        for line in new.lines() {
            println!("  {line}");
        }
    }

    println!("\n== cargo xtask ci: summary ==");
    let mut passed = 0;
    let mut failed = 0;
    for s in &out {
        match &s.result {
            Ok(d) => {
                passed += 1;
                println!("  ok    {:>7.1} s  {}", d.as_secs_f64(), s.name);
            }
            Err(_) => {
                failed += 1;
                println!("  FAIL            {}", s.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// A failing e2e test's error already holds the serial console and the
/// logs; a captured backtrace per error (RUST_BACKTRACE=1) would bury them.
fn quiet_error_backtraces(cmd: &mut Command) {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        cmd.env("RUST_LIB_BACKTRACE", "0");
    }
}

/// Test files and filters for `cargo xtask e2e NAME`.
const E2E: &[(&str, &str, &str)] = &[
    ("full", "boot_full_dhcp", ""),
    ("proxy", "boot_proxy_dhcp", ""),
    ("uefi", "boot_uefi", ""),
    ("http", "boot_http", ""),
    ("uefi", "sanboot_iscsi", "uefi"),
    ("bios", "sanboot_iscsi", "bios_rom"),
    ("chain", "sanboot_iscsi", "bios_chain"),
    ("iscsi", "sanboot_iscsi", ""),
    ("chap", "station_chap", ""),
    ("reboots", "sanboot_reboots", ""),
    ("smoltcp", "smoltcp_boot", ""),
    ("smoltcp", "smoltcp_iscsi_tools", ""),
    ("firmware", "smoltcp_firmware", ""),
    ("peers", "harness_peers", ""),
    ("linux", "linux_station", ""),
    ("linux", "golden_image", ""),
    ("status", "status_page", ""),
];

/// `cargo xtask e2e [NAME...]`: builds sanboot, then runs the chosen
/// end-to-end tests (ignored ones included) with their output shown.
pub fn e2e(args: &[String]) -> Result<()> {
    let mut runs: Vec<(&str, &str)> = Vec::new();
    let mut push = |file: &'static str, filter: &'static str| {
        if !runs.contains(&(file, filter)) {
            runs.push((file, filter));
        }
    };
    if args.is_empty() {
        for file in [
            "boot_full_dhcp",
            "boot_proxy_dhcp",
            "boot_uefi",
            "boot_http",
            "sanboot_iscsi",
            "station_chap",
            "sanboot_reboots",
            "smoltcp_boot",
            "smoltcp_iscsi_tools",
            "smoltcp_firmware",
            "harness_peers",
            "status_page",
        ] {
            push(file, "");
        }
    }
    for a in args {
        let mut found = false;
        for (name, file, filter) in E2E {
            if a == name || a == file {
                push(file, if a == file { "" } else { filter });
                found = true;
            }
        }
        if !found {
            let names: Vec<&str> = E2E.iter().map(|e| e.0).collect();
            bail!("unknown e2e test {a:?}: one of {names:?} or a file in tests/tests/");
        }
    }
    let bin = util::build_sanboot()?;
    let mut failed = Vec::new();
    for (file, filter) in &runs {
        let mut cmd = cargo();
        cmd.args(["test", "-p", "sanboot-tests", "--test", file, "--"]);
        if !filter.is_empty() {
            cmd.arg(filter);
        }
        cmd.args(["--include-ignored", "--nocapture"]);
        quiet_error_backtraces(&mut cmd);
        cmd.env("SANBOOT_BIN", &bin);
        if util::run(&mut cmd).is_err() {
            failed.push(format!("{file} {filter}"));
        }
    }
    let passed = runs.len() - failed.len();
    println!("{passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        bail!("e2e failures: {failed:?}");
    }
    Ok(())
}
