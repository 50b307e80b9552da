#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The deployment files in deploy/ agree with weft: the seccomp profile is valid and lets
//! io_uring (and the /metrics exporter's /proc reads) through; the Dockerfile, the Kubernetes
//! manifests and the systemd unit pass flags that `weft serve --check` (weft's own parser)
//! accepts, and their probe ports, signals and timings match those flags; the unit passes
//! `systemd-analyze verify`.

mod util;
mod weft_process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use util::seccomp;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The settings `weft serve ARGS --check` reports, by name; panics (with weft's one-line
/// error) if weft refuses the flags.
fn check(args: &[String]) -> BTreeMap<String, Vec<String>> {
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.push("--check");
    let out = util::run_weft(&all, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "weft refuses {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (k, v) = line.split_once(' ').unwrap();
        map.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    map
}

fn one<'a>(settings: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{key}: {other:?}"),
    }
}

fn port_of(settings: &BTreeMap<String, Vec<String>>, key: &str) -> u16 {
    one(settings, key).parse::<std::net::SocketAddr>().unwrap().port()
}

/// `drain-delay 5s` -> 5.0.
fn secs_of(settings: &BTreeMap<String, Vec<String>>, key: &str) -> f64 {
    one(settings, key).strip_suffix('s').unwrap().parse().unwrap()
}

#[test]
fn seccomp_profile_is_valid_and_allows_io_uring() {
    let profile: Json = serde_json::from_str(&read("seccomp-weft.json")).expect("valid JSON");
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(
        profile["defaultErrnoRet"], 1,
        "EPERM, as Docker's default profile"
    );
    let arches: Vec<&str> = profile["archMap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["architecture"].as_str().unwrap())
        .collect();
    assert!(arches.contains(&"SCMP_ARCH_X86_64") && arches.contains(&"SCMP_ARCH_AARCH64"));
    let rules = profile["syscalls"].as_array().unwrap();
    let mut allowed_everywhere = Vec::new();
    for rule in rules {
        let names = rule["names"].as_array().expect("names");
        assert!(!names.is_empty());
        let action = rule["action"].as_str().unwrap();
        assert!(["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"].contains(&action), "{rule}");
        for n in names {
            let n = n.as_str().unwrap();
            assert!(
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "not a system call name: {n:?}"
            );
            if n.starts_with("io_uring") {
                assert_eq!(action, "SCMP_ACT_ALLOW", "{rule}");
            }
        }
        // A rule without conditions (other than a minimum kernel weft needs anyway).
        let unconditional = rule.get("args").is_none()
            && rule.get("excludes").is_none()
            && rule
                .get("includes")
                .is_none_or(|i| i.as_object().unwrap().keys().all(|k| k == "minKernel"));
        if action == "SCMP_ACT_ALLOW" && unconditional {
            allowed_everywhere.extend(names.iter().map(|n| n.as_str().unwrap().to_owned()));
        }
    }
    for needed in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(
            allowed_everywhere.iter().any(|n| n == needed),
            "{needed} is not allowed"
        );
    }
    // What weft itself calls besides io_uring, allowed as in Docker's default profile.
    for needed in [
        "bind",
        "listen",
        "accept4",
        "setsockopt",
        "getsockopt",
        "sendmsg",
        "recvmsg",
        "sched_setaffinity",
        "prlimit64",
        "mmap",
        "futex",
        "eventfd2",
        "timerfd_create",
        "epoll_pwait",
        "rt_sigaction",
    ] {
        assert!(allowed_everywhere.iter().any(|n| n == needed), "{needed}");
    }
    let mut sorted = allowed_everywhere.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), allowed_everywhere.len(), "a name is listed twice");
    // socket(2) is allowed for every family but AF_VSOCK (40), as in Docker's profile.
    assert!(
        rules
            .iter()
            .any(|r| r["names"] == serde_json::json!(["socket"]) && r["args"][0]["value"] == 40)
    );
}

/// The rules of the seccomp profile as a container runtime applies them on x86-64 to a
/// container without added capabilities: `(number, answer)` pairs (errno rules first) and
/// the default answer. Rules that depend on arguments (`socket` but for AF_VSOCK, `clone`
/// without namespace flags) are taken as allowing the call, which is what they do for weft's
/// calls; `personality` is left out. With `without_io_uring`, the io_uring rule is dropped:
/// Docker's own default profile. Numbers come from the kernel headers; `None` without them.
fn profile_rules(without_io_uring: bool) -> Option<(Vec<(u32, u32)>, u32)> {
    let header = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_64.h").ok()?;
    let numbers: BTreeMap<&str, u32> = header
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("#define __NR_")?.split_whitespace();
            Some((f.next()?, f.next()?.parse().ok()?))
        })
        .collect();
    // JSON is YAML: one reader for the profile and the manifests.
    let profile: Yaml = serde_yaml::from_str(&read("seccomp-weft.json")).unwrap();
    let has = |v: &Yaml, s: &str| v.as_sequence().is_some_and(|a| a.iter().any(|x| x == s));
    let (mut errnos, mut allows) = (Vec::new(), Vec::new());
    for rule in profile["syscalls"].as_sequence().unwrap() {
        let names = strings(&rule["names"]);
        if without_io_uring && names.iter().any(|n| n.starts_with("io_uring")) {
            continue;
        }
        let inc = &rule["includes"];
        let applies = (inc.get("caps").is_none())
            && (inc.get("arches").is_none() || has(&inc["arches"], "amd64"))
            && !has(&rule["excludes"]["arches"], "amd64")
            && names != ["personality"];
        if !applies {
            continue;
        }
        let answer = match rule["action"].as_str().unwrap() {
            "SCMP_ACT_ALLOW" => seccomp::ALLOW,
            _ => seccomp::errno(rule["errnoRet"].as_i64().unwrap_or(1) as i32),
        };
        let rules = names
            .iter()
            .filter_map(|n| numbers.get(n.as_str()))
            .map(|&nr| (nr, answer));
        if answer == seccomp::ALLOW {
            allows.extend(rules);
        } else {
            errnos.extend(rules);
        }
    }
    errnos.extend(allows);
    let default = seccomp::errno(profile["defaultErrnoRet"].as_i64().unwrap() as i32);
    Some((errnos, default))
}

/// Under the profile, installed as a runtime would, `weft serve` starts and serves; under the
/// same profile without its io_uring rule (Docker's default), it stops with one line that
/// points at the profile.
#[test]
fn weft_serves_under_the_seccomp_profile_and_not_under_dockers_default() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    if !cfg!(target_arch = "x86_64") {
        eprintln!("NOTE: the profile is applied here on x86-64 only");
        return;
    }
    let Some((rules, default)) = profile_rules(false) else {
        eprintln!(
            "NOTE: no kernel headers (/usr/include/x86_64-linux-gnu/asm/unistd_64.h) to number \
             the profile's system calls: bash .ci/install-deps installs them"
        );
        return;
    };
    let filter = seccomp::program(&rules, default);
    let metrics = format!("127.0.0.1:{}", util::free_port());
    let (mut cmd, addr) = util::serve_command("1", &["--proto", "echo", "--metrics", &metrics]);
    cmd.stdout(std::process::Stdio::null());
    // SAFETY: the closure makes only async-signal-safe calls, in the child before exec.
    unsafe { cmd.pre_exec(move || seccomp::install(&filter)) };
    let mut server = util::spawn_listening(cmd, addr);
    let mut client = util::connect(addr);
    client.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    // The exporter reads the process's figures from /proc under the profile too.
    let body = util::scrape(metrics.parse().unwrap());
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(body.contains(&format!("\n{name} ")), "{name} missing:\n{body}");
    }
    drop(client);
    util::sigterm(&server);
    let status = util::wait_exit(&mut server, Duration::from_secs(15));
    let mut stderr = String::new();
    server.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");

    let (rules, default) = profile_rules(true).unwrap();
    let filter = seccomp::program(&rules, default);
    let (mut cmd, _) = util::serve_command("1", &["--proto", "echo"]);
    // SAFETY: as above.
    unsafe { cmd.pre_exec(move || seccomp::install(&filter)) };
    let out = util::output_within(cmd.spawn().unwrap(), Duration::from_secs(15));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("a seccomp filter blocks io_uring") && err.contains("deploy/seccomp-weft.json"),
        "{err}"
    );
}

/// The YAML documents of a manifest file.
fn manifests(file: &str) -> Vec<Yaml> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&read(file))
        .map(|d| Yaml::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// A container's port number, given by name or number.
fn container_port(container: &Yaml, port: &Yaml) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let name = port.as_str().unwrap();
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
        .as_u64()
        .unwrap() as u16
}

/// A Kubernetes quantity of CPU as cores: "2" -> 2.0, "500m" -> 0.5.
fn cpu(q: &Yaml) -> f64 {
    match q.as_str() {
        Some(s) => match s.strip_suffix('m') {
            Some(m) => m.parse::<f64>().unwrap() / 1e3,
            None => s.parse().unwrap(),
        },
        None => q.as_f64().unwrap(),
    }
}

#[test]
fn kubernetes_manifests_agree_with_weft_flags() {
    let docs = manifests("kubernetes/weft.yaml");
    let deployment = kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"];
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    let settings = check(&strings(&c["args"]));

    // Ports: the service, the health check the probes ask, the metrics Prometheus scrapes.
    let listen = port_of(&settings, "listen");
    let health = port_of(&settings, "health");
    let metrics = port_of(&settings, "metrics");
    assert_eq!(container_port(c, &Yaml::from("http")), listen);
    let readiness = &c["readinessProbe"];
    assert_eq!(readiness["httpGet"]["path"].as_str(), Some("/health"));
    assert_eq!(container_port(c, &readiness["httpGet"]["port"]), health);
    // Liveness must not fail while draining: a TCP connect, which the health listener
    // answers in every state.
    assert!(c["livenessProbe"]["httpGet"].is_null());
    assert_eq!(
        container_port(c, &c["livenessProbe"]["tcpSocket"]["port"]),
        health
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(&*metrics.to_string())
    );

    // Timings: the grace period covers preStop, the drain delay and the drain timeout.
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_f64().unwrap();
    let grace = spec["terminationGracePeriodSeconds"].as_f64().unwrap();
    let (delay, timeout) = (
        secs_of(&settings, "drain-delay"),
        secs_of(&settings, "drain-timeout"),
    );
    let needed = pre_stop + delay + timeout;
    assert!(
        grace >= needed + 1.0 && grace <= needed + 30.0,
        "terminationGracePeriodSeconds {grace} vs preStop {pre_stop} + drain-delay {delay} + \
         drain-timeout {timeout}"
    );
    // A balancer probing with the readiness settings sees the 503 before the listeners close.
    let noticed =
        readiness["periodSeconds"].as_f64().unwrap() * readiness["failureThreshold"].as_f64().unwrap();
    assert!(
        noticed <= delay,
        "readiness notices after {noticed} s, drain-delay {delay} s"
    );

    // Whole cores: requests equal limits, an integer CPU count equal to --cores.
    let res = &c["resources"];
    assert_eq!(res["requests"], res["limits"], "Guaranteed QoS");
    let cores = cpu(&res["limits"]["cpu"]);
    assert_eq!(cores.fract(), 0.0, "whole cores");
    assert_eq!(one(&settings, "cores"), (cores as u64).to_string());

    // The seccomp profile that lets io_uring through is the one in deploy/.
    let seccomp = &spec["securityContext"]["seccompProfile"];
    assert_eq!(seccomp["type"].as_str(), Some("Localhost"));
    let profile = seccomp["localhostProfile"].as_str().unwrap();
    assert!(profile.ends_with("/seccomp-weft.json") && deploy("seccomp-weft.json").exists());

    // The Service reaches the named ports, selects the pods; the ServiceMonitor its metrics.
    let service = kind(&docs, "Service");
    let labels = &pod["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[k.as_str().unwrap()], v);
    }
    let service_ports = service["spec"]["ports"].as_sequence().unwrap();
    for p in service_ports {
        container_port(c, &p["targetPort"]);
    }
    let monitors = manifests("kubernetes/servicemonitor.yaml");
    let monitor = kind(&monitors, "ServiceMonitor");
    let scraped = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    let port = service_ports
        .iter()
        .find(|p| p["name"].as_str() == Some(scraped))
        .expect("the ServiceMonitor's port is a Service port");
    assert_eq!(container_port(c, &port["targetPort"]), metrics);
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["metadata"]["labels"]
    );

    // The signal Kubernetes sends (SIGTERM) is the one weft drains on.
    let help = util::run_weft(&["serve", "--help"], Duration::from_secs(10));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("On SIGINT/SIGTERM, how long the health check fails"),
        "{help}"
    );
}

#[test]
fn load_job_starts_together_and_merges_every_index() {
    let docs = manifests("kubernetes/load-job.yaml");
    let job = kind(&docs, "Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let n = spec["completions"].as_u64().unwrap();
    assert_eq!(spec["parallelism"].as_u64(), Some(n), "all pods run together");
    let c = &spec["template"]["spec"]["containers"][0];
    let args = strings(&c["args"]);
    let env: Vec<&str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for a in &args {
        if let Some(var) = a.split("$(").nth(1) {
            let var = var.split(')').next().unwrap();
            assert!(
                env.contains(&var),
                "$({var}) expands only from the container's env"
            );
        }
    }
    let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
    assert_eq!(after("--start-at"), "$(START_AT)");
    let log = after("--hdr-log");
    assert!(log.contains("$(JOB_COMPLETION_INDEX)"), "one log per pod: {log}");

    // weft's parser takes these flags: with a start time in the past, the only complaint is
    // the start time (paths and target moved to this machine).
    let scratch = util::Scratch::new("deploy-load");
    let local: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("$(START_AT)", "2020-01-01T00:00:00Z")
                .replace("$(JOB_COMPLETION_INDEX)", "0")
                .replace("/results/", &scratch.file(""))
                .replace("http://weft:8080/", "127.0.0.1:1")
        })
        .collect();
    let local: Vec<&str> = local.iter().map(String::as_str).collect();
    assert_eq!(local[0], "load");
    let out = util::run_weft(&local, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the start time 1577836800.000 passed"),
        "{stderr}"
    );

    // The merge step reads the log of every index, where the load pods write them.
    let merge = manifests("kubernetes/load-merge.yaml");
    let merge_args = strings(&kind(&merge, "Job")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert_eq!(merge_args[0], "hist");
    let expected: Vec<String> = (0..n)
        .map(|i| log.replace("$(JOB_COMPLETION_INDEX)", &i.to_string()))
        .collect();
    assert_eq!(&merge_args[1..=n as usize], expected.as_slice());
    let claim = |docs: &[Yaml]| {
        kind(docs, "Job")["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
            .clone()
    };
    assert_eq!(claim(&docs), claim(&merge));
}

/// The instruction lines of the Dockerfile, by keyword (continuation lines joined).
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile").replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_ascii_uppercase(), v.trim().to_owned())
        })
        .collect()
}

#[test]
fn dockerfile_runs_weft_serve_as_non_root_with_its_flags() {
    let lines = dockerfile();
    let last = |k: &str| {
        lines
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .unwrap_or_else(|| panic!("no {k}"))
            .1
            .clone()
    };
    assert_eq!(
        lines.iter().filter(|(k, _)| k == "FROM").count(),
        2,
        "multi-stage"
    );
    let user = last("USER");
    assert!(!user.starts_with('0') && !user.starts_with("root"), "{user}");
    assert_eq!(last("STOPSIGNAL"), "SIGTERM");
    let cmd: Vec<String> = serde_json::from_str(&last("CMD")).unwrap();
    let settings = check(&cmd);
    let exposed: Vec<u16> = last("EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    for key in ["listen", "health", "metrics"] {
        assert!(exposed.contains(&port_of(&settings, key)), "{key}");
    }
    // The comments name the flags a container needs, and the profile exists.
    let text = read("Dockerfile");
    for needed in [
        "--security-opt seccomp=deploy/seccomp-weft.json",
        "--ulimit memlock=-1",
        "--cores",
        "--drain-delay",
        "--drain-timeout",
        "--stop-timeout",
    ] {
        assert!(text.contains(needed), "{needed}");
    }
    // The image's drain fits the stop timeout the comments recommend.
    let stop: f64 = text
        .split("--stop-timeout ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > secs_of(&settings, "drain-delay") + secs_of(&settings, "drain-timeout"));
}

/// The `key=value` lines of a systemd unit's `[Service]` section (the last of each key).
fn unit_service(text: &str) -> BTreeMap<String, String> {
    let mut in_service = false;
    let mut map = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            map.insert(k.to_owned(), v.to_owned());
        }
    }
    map
}

#[test]
fn systemd_unit_agrees_with_weft_flags_and_verifies() {
    let text = read("systemd/weft.service");
    let unit = unit_service(&text);
    assert_eq!(unit["KillSignal"], "SIGTERM");
    let memlock = &unit["LimitMEMLOCK"];
    assert!(
        memlock == "infinity" || memlock.trim_end_matches(['K', 'M', 'G']).parse::<u64>().is_ok(),
        "{memlock}"
    );
    assert!(unit["LimitNOFILE"].parse::<u64>().unwrap() >= 65536);
    let env = unit["Environment"].trim_matches('"');
    let weft_args = env.strip_prefix("WEFT_ARGS=").unwrap();
    let mut args: Vec<String> = vec!["serve".into()];
    args.extend(weft_args.split_whitespace().map(str::to_owned));
    assert_eq!(unit["ExecStart"], "/usr/local/bin/weft serve $WEFT_ARGS");
    // --check creates the handoff socket beside its path, as the start does; the unit's folder
    // is systemd's RuntimeDirectory, made when the unit starts, so the check uses a scratch one.
    let socket = args
        .iter()
        .position(|a| a == "--handoff-socket")
        .map(|i| args[i + 1].clone())
        .expect("the unit serves handoffs");
    assert!(socket.starts_with(&format!("/run/{}/", unit["RuntimeDirectory"])));
    let scratch = util::Scratch::new("deploy-unit");
    let here = scratch.file("handoff.sock");
    let args: Vec<String> = args
        .into_iter()
        .map(|a| if a == socket { here.clone() } else { a })
        .collect();
    let settings = check(&args);
    assert_eq!(one(&settings, "handoff-socket"), here);
    let stop: f64 = unit["TimeoutStopSec"].strip_suffix('s').unwrap().parse().unwrap();
    let drain = secs_of(&settings, "drain-delay") + secs_of(&settings, "drain-timeout");
    assert!(stop >= drain + 1.0, "TimeoutStopSec {stop} < drain {drain} + 1");
    // Reload: a successor takes over from the handoff socket weft serves.
    let reload = &unit["ExecReload"];
    assert!(
        reload.contains(&format!("weft serve $WEFT_ARGS --takeover {socket} ")),
        "{reload}"
    );
    let mut successor = args.clone();
    successor.extend(["--takeover".into(), here]);
    check(&successor);

    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "NOTE: systemd-analyze is not installed, so the unit was not verified \
             (bash .ci/install-deps installs it)"
        );
        return;
    };
    assert!(out.status.success());
    // Verify a copy that runs the weft under test (verify checks the binary exists).
    let copy = scratch.0.join("weft.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/weft", env!("CARGO_BIN_EXE_weft")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// `systemctl reload` as the unit does it: its ExecReload script, run with systemd's
/// `$MAINPID` and the unit's `$WEFT_ARGS` (here a whoami service on a free port, its handoff
/// socket in a scratch folder), starts a successor that takes the listeners over, returns
/// once the old process has drained and exited 0, and the address keeps answering.
#[test]
fn systemd_reload_script_hands_the_listeners_over() {
    use weft_process::{LoadResult, Weft, whoami_once};
    let unit = unit_service(&read("systemd/weft.service"));
    let reload = &unit["ExecReload"];
    let script = reload
        .strip_prefix("/bin/sh -c '")
        .and_then(|r| r.strip_suffix('\''))
        .unwrap_or_else(|| panic!("ExecReload is one sh -c script: {reload}"));
    let scratch = util::Scratch::new("deploy-reload");
    let sock = scratch.file("handoff.sock");
    let script = script
        .replace("/usr/local/bin/weft", env!("CARGO_BIN_EXE_weft"))
        .replace("/run/weft/handoff.sock", &sock);
    let args = format!("--proto whoami --cores 1 --drain-timeout 2s --handoff-socket {sock}");
    let mut old_args: Vec<&str> = args.split_whitespace().collect();
    old_args.extend(["--listen", "127.0.0.1:0"]);
    let mut old = Weft::serve(&old_args);
    let addr = old.ready();
    let reload = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .env("WEFT_ARGS", &args)
        .env("MAINPID", old.pid().to_string())
        .env("WEFT_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reload = reload;
    // Reaped here as systemd reaps its main process: until then `kill -0` sees a zombie.
    assert!(
        old.wait(Duration::from_secs(20)).success(),
        "the old process drained and exited 0"
    );
    let status = util::wait_exit(&mut reload, Duration::from_secs(5));
    assert!(status.success(), "the reload reports success: {status:?}");
    let mut after = LoadResult::default();
    whoami_once(addr, &mut after);
    assert_eq!(after.ok, 1, "the successor serves the address: {after:?}");
    // Stop the successor (not this test's child) the same way: a third process takes over,
    // and the successor drains and exits.
    let mut third = Weft::serve(&["--proto", "whoami", "--cores", "1", "--takeover", &sock]);
    third.wait_for("took over the listeners", Duration::from_secs(10));
    for _ in 0..5 {
        whoami_once(addr, &mut after);
    }
    assert_eq!(after.failures(), 0, "{after:?}");
    third.signal(libc::SIGTERM);
    assert!(third.wait(Duration::from_secs(10)).success());
}

/// systemd's readiness protocol, as the unit's `Type=notify` needs it: a process says READY
/// and that it is the main process once it serves, a successor of a reload says the same (so
/// that systemd follows it), and a process told to stop says STOPPING.
#[test]
fn weft_tells_systemd_when_it_serves_and_that_a_successor_is_the_main_process() {
    use std::os::unix::net::UnixDatagram;
    use weft_process::Weft;
    let scratch = util::Scratch::new("deploy-notify");
    let notify = scratch.file("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notice within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let handoff = scratch.file("handoff.sock");
    let env = [("NOTIFY_SOCKET", notify.as_str())];
    let whoami = ["--proto", "whoami", "--cores", "1"];
    let mut old = Weft::serve_with_env(
        &[
            &whoami[..],
            &["--listen", "127.0.0.1:0", "--handoff-socket", &handoff],
        ]
        .concat(),
        &env,
    );
    old.ready();
    let said = next();
    assert!(
        said.contains("READY=1") && said.contains(&format!("MAINPID={}\n", old.pid())),
        "{said:?}"
    );
    let mut new = Weft::serve_with_env(
        &["--proto", "whoami", "--cores", "1", "--takeover", &handoff],
        &env,
    );
    new.wait_for("took over the listeners", Duration::from_secs(10));
    let said = next();
    assert!(
        said.contains("READY=1") && said.contains(&format!("MAINPID={}\n", new.pid())),
        "the successor is the main process now: {said:?}"
    );
    assert!(old.wait(Duration::from_secs(10)).success());
    new.signal(libc::SIGTERM);
    assert!(next().contains("STOPPING=1"));
    assert!(new.wait(Duration::from_secs(10)).success());

    // systemd's own socket is an abstract one (`@/org/freedesktop/systemd1/notify`).
    use std::os::linux::net::SocketAddrExt;
    let name = format!("weft-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let abstract_socket = UnixDatagram::bind_addr(&addr).unwrap();
    abstract_socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let at = format!("@{name}");
    let mut plain = Weft::serve_with_env(
        &["--proto", "whoami", "--cores", "1", "--listen", "127.0.0.1:0"],
        &[("NOTIFY_SOCKET", at.as_str())],
    );
    plain.ready();
    let mut buf = [0u8; 512];
    let n = abstract_socket.recv(&mut buf).expect("a notice within 10 s");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    plain.signal(libc::SIGTERM);
    assert!(plain.wait(Duration::from_secs(10)).success());
}
