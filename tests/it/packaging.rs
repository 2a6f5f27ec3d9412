//! Checks of the install files that CI cannot run for real: `contrib/dfs.service` (its keys,
//! and `systemd-analyze verify` where the machine has it) and the `Dockerfile` (its stages,
//! binary and paths; CI lints it with hadolint, as it cannot pull base images to build it), and
//! the Rust version all three name against what the locked dependencies need.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The keys of each section of a systemd unit (comments and blank lines skipped).
fn unit_sections(text: &str) -> HashMap<String, Vec<(String, String)>> {
    let mut sections: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line}"));
        assert!(!current.is_empty(), "{line} before any section");
        sections
            .entry(current.clone())
            .or_default()
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    sections
}

#[test]
fn systemd_unit_runs_a_hardened_node_in_its_state_directory() {
    let text = read("contrib/dfs.service");
    let sections = unit_sections(&text);
    let get = |section: &str, key: &str| -> String {
        sections[section]
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("[{section}] has no {key}"))
    };
    assert!(sections.contains_key("Unit") && sections.contains_key("Install"));
    assert_eq!(
        get("Service", "ExecStart"),
        "/usr/local/bin/dfs node --data-dir /var/lib/dfs"
    );
    for (key, value) in [
        ("StateDirectory", "dfs"),
        ("DynamicUser", "yes"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
    ] {
        assert_eq!(get("Service", key), value, "{key}");
    }
    assert_eq!(get("Install", "WantedBy"), "multi-user.target");

    // systemd's own check, with ExecStart pointing at the binary under test (it must exist).
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped systemd-analyze verify: not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("dfs.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/dfs", env!("CARGO_BIN_EXE_dfs")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Dockerfile's instructions, continuation lines joined: (INSTRUCTION, arguments).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            pending.push_str(part);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (op, args) = pending.split_once(' ').unwrap_or((&pending, ""));
        out.push((op.to_ascii_uppercase(), args.trim().to_string()));
        pending.clear();
    }
    assert!(pending.is_empty(), "a continuation line ends the file");
    out
}

#[test]
fn dockerfile_builds_dfs_in_one_stage_and_runs_a_node_in_a_slim_one() {
    let steps = instructions(&read("Dockerfile"));
    for (op, _) in &steps {
        assert!(
            [
                "FROM",
                "WORKDIR",
                "COPY",
                "RUN",
                "USER",
                "ENV",
                "EXPOSE",
                "VOLUME",
                "ENTRYPOINT"
            ]
            .contains(&op.as_str()),
            "unexpected instruction {op}"
        );
    }
    let froms: Vec<&str> = steps
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].starts_with("rust:") && froms[0].ends_with(" AS build"),
        "{}",
        froms[0]
    );
    assert!(froms[1].starts_with("debian:") && froms[1].contains("slim"));
    let has = |op: &str, args: &str| steps.iter().any(|(o, a)| o == op && a == args);
    assert!(steps
        .iter()
        .any(|(o, a)| o == "RUN" && a.contains("cargo build --release --locked --bin dfs")));
    assert!(has(
        "COPY",
        "--from=build /src/target/release/dfs /usr/local/bin/dfs"
    ));
    assert!(has("EXPOSE", "4001"));
    assert!(has("VOLUME", "/data"));
    let entry = &steps.last().unwrap();
    assert_eq!(entry.0, "ENTRYPOINT", "the entry point comes last");
    let argv: Vec<String> = serde_json::from_str(&entry.1).expect("exec form (JSON)");
    assert_eq!(argv, ["dfs", "node", "--data-dir", "/data"]);
    // The binary the image runs is the one Cargo builds.
    assert!(read("Cargo.toml").contains("[[bin]]\nname = \"dfs\""));
}

/// A Rust version `1.89` or `1.85.0` as numbers, to compare.
fn rust_version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.trim().split('.').map(|p| {
        p.parse::<u64>()
            .unwrap_or_else(|_| panic!("not a Rust version: {text}"))
    });
    let major = parts.next().unwrap_or(0);
    (major, parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The Rust version the README, `Cargo.toml`'s `rust-version` and the Dockerfile name is one
/// the locked dependencies build with: at least the highest `rust-version` any of them
/// declares (on Linux, where dfs runs), and the same in all three places.
#[test]
fn the_declared_rust_version_builds_the_locked_dependencies() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let declared = manifest["package"]["rust-version"]
        .as_str()
        .expect("Cargo.toml declares rust-version")
        .to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let built: std::collections::HashSet<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let (needed, by) = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| built.contains(p["id"].as_str().unwrap()) && p["name"] != "dfs")
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((rust_version(v), p["name"].as_str().unwrap().to_string()))
        })
        .max()
        .expect("some dependency declares a rust-version");
    assert!(
        rust_version(&declared) >= needed,
        "rust-version {declared} is below what {by} needs ({needed:?})"
    );
    assert!(
        read("README.md").contains(&format!("stable, {declared} or later")),
        "the README names rust-version {declared}"
    );
    assert!(
        read("Dockerfile").contains(&format!("FROM rust:{declared}-")),
        "the Dockerfile builds with rust-version {declared}"
    );
}
