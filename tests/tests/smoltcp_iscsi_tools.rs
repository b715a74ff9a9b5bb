//! smoltcp's iSCSI target against libiscsi's tools, with the kernel's stack
//! as the initiator's side: the bridge keeps 192.0.2.2, smoltcp owns
//! 192.0.2.1 on `tap1`. libiscsi's whole conformance suite must pass as it
//! does on host-linux, and large reads must stream (a 32 KiB read used to
//! stall a second waiting for a timer).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sanboot_tests::lab::{ip, BRIDGE};
use sanboot_tests::libiscsi::{self, Outcome, INITIATOR, INITIATOR_2, MIN_PASS};
use sanboot_tests::process::Stop;
use sanboot_tests::Lab;

const TAP: &str = "tap1";
const IQN: &str = "iqn.2024-01.test.e2e:smoltcp";

fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SANBOOT_SMOLTCP_BIN") {
        return Ok(sanboot_tests::workspace_root().join(bin));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let status = Command::new(cargo)
        .args(["build", "-p", "sanboot-smoltcp-tap"])
        .current_dir(sanboot_tests::workspace_root())
        .status()
        .context("cannot run cargo")?;
    ensure!(
        status.success(),
        "cargo build -p sanboot-smoltcp-tap failed"
    );
    Ok(sanboot_tests::target_dir().join("debug/sanboot-smoltcp"))
}

fn in_lab(lab: &Lab, argv: &[&str], timeout: Duration) -> Result<String> {
    let secs = timeout.as_secs().to_string();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", lab.ns(), "timeout", &secs])
        .args(argv);
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {argv:?}"))?;
    println!(
        "{} took {:.1} s",
        argv.first().unwrap_or(&""),
        start.elapsed().as_secs_f64()
    );
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n")
        + &String::from_utf8_lossy(&out.stderr);
    Ok(text)
}

#[test]
fn libiscsi_suites_and_streaming_reads_against_smoltcp() -> Result<()> {
    sanboot_tests::require(&["ip", "iscsi-test-cu", "iscsi-perf", "iscsi-inq"])?;
    let start = Instant::now();
    let bin = binary()?;
    println!("build took {:.1} s", start.elapsed().as_secs_f64());
    let lab = Lab::new("smoltcp_iscsi_tools")?;
    let n = lab.ns();
    let server = format!("{}/24", sanboot_tests::SERVER);
    ip(&["-n", n, "addr", "del", &server, "dev", BRIDGE])?;
    ip(&["-n", n, "addr", "add", "192.0.2.2/24", "dev", BRIDGE])?;
    ip(&["-n", n, "tuntap", "add", "dev", TAP, "mode", "tap"])?;
    ip(&["-n", n, "link", "set", TAP, "master", BRIDGE])?;
    ip(&["-n", n, "link", "set", TAP, "up"])?;
    let image = lab.path("lun0.img");
    let config = format!(
        "[server]\naddress = \"{}\"\nstate_dir = \"{}\"\n[dhcp]\nmode = \"off\"\n\
         [[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"{}\"\nsize = {}\n",
        sanboot_tests::SERVER,
        lab.path("state").display(),
        image.display(),
        64u64 << 20
    );
    let config_path = lab.path("sanboot.toml");
    std::fs::write(&config_path, config)?;
    let argv = [
        bin.display().to_string(),
        "--tap".into(),
        TAP.into(),
        "--config".into(),
        config_path.display().to_string(),
    ];
    let mut server = lab.spawn("sanboot-smoltcp", &argv, Stop::Term)?;
    let end = Instant::now() + Duration::from_secs(15);
    while !server.log().contains("sanboot-smoltcp serving") {
        if let Some(status) = server.exited() {
            bail!(
                "sanboot-smoltcp exited ({status}):\n{}",
                server.log_tail(20)
            );
        }
        ensure!(Instant::now() < end, "sanboot-smoltcp did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("iscsi://{}/{IQN}/0", sanboot_tests::SERVER);

    let inq = in_lab(&lab, &["iscsi-inq", &url], Duration::from_secs(20))?;
    ensure!(inq.contains("DIRECT_ACCESS"), "iscsi-inq:\n{inq}");

    // libiscsi's whole conformance suite, run exactly as host-linux's test
    // runs it: the TAP runner serves the same core storage driver, so it
    // must reach the same.
    let mut argv = vec!["iscsi-test-cu"];
    argv.extend(libiscsi::args(&url, INITIATOR, INITIATOR_2));
    let cu = in_lab(&lab, &argv, Duration::from_secs(900))?;
    std::fs::write(lab.path("iscsi-test-cu.log"), &cu)?;
    let cases = libiscsi::parse(&cu);
    let (pass, fail, skip) = libiscsi::counts(&cases);
    let failures: Vec<String> = cases
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .map(|c| format!("FAIL {}.{}: {}", c.suite, c.name, c.messages.join(" | ")))
        .collect();
    println!("{}", libiscsi::table(&cases));
    let summary = format!(
        "{} tests, {pass} pass, {fail} fail, {skip} skip",
        cases.len()
    );
    ensure!(
        fail == 0 && pass >= MIN_PASS,
        "libiscsi ALL: {summary} (want >= {MIN_PASS} pass, 0 fail)\n{}\n{}",
        failures.join("\n"),
        sanboot_tests::process::tail(&cu, 30)
    );
    println!("libiscsi: {summary}");

    let perf = in_lab(
        &lab,
        &["iscsi-perf", "-t", "3", "-m", "1", "-b", "64", &url],
        Duration::from_secs(20),
    )?;
    let avg = perf
        .lines()
        .filter_map(|l| l.split("iops average ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .next_back()
        .with_context(|| format!("no iops in iscsi-perf output:\n{perf}"))?;
    println!("32 KiB reads, one in flight: {avg} IOPS");
    ensure!(avg >= 20, "32 KiB reads stall: {avg} IOPS\n{perf}");
    Ok(())
}
