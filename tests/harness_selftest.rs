//! Checks that the e2e harness itself works against the private containerd, so that a failing
//! end-to-end test points at the shim rather than at the plumbing.

mod common;

use common::{containerd, unique_id, RunOpts, NAMESPACE, RUNTIME};
use std::collections::HashSet;
use std::process::Command;

#[test]
fn containerd_answers_on_the_private_socket() {
    let c = containerd();
    let out = c.ctr_ok(&["version"]);
    assert!(
        out.contains("Server:"),
        "`ctr version` shows no server:\n{out}"
    );
    assert!(c.socket.starts_with(&c.dir));
}

#[test]
fn cri_plugin_is_loaded() {
    let plugins = containerd().ctr_ok(&["plugins", "ls"]);
    let cri = plugins
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("cri"))
        .unwrap_or_else(|| panic!("no cri plugin in:\n{plugins}"));
    assert!(cri.trim_end().ends_with("ok"), "cri plugin not ok: {cri}");
}

#[test]
fn effective_config_has_the_wasm_handler() {
    let config = containerd().dir.join("config.toml");
    let out = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "config dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let handler = dump
        .split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasm]")
        .nth(1)
        .unwrap_or_else(|| {
            panic!(
                "no CRI runtime handler `wasm` in the effective config of {}",
                config.display()
            )
        });
    let table = handler.split("\n\n").next().unwrap_or_default();
    assert!(
        table.contains(&format!("runtime_type = \"{RUNTIME}\"")),
        "wrong wasm handler:\n{table}"
    );
    // The CRI settings that sandboxes here depend on survive next to the handler.
    assert!(dump.contains("restrict_oom_score_adj = true"));
    assert!(dump.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]"));
}

#[test]
fn unique_ids_are_unique_and_valid_container_ids() {
    let ids: Vec<String> = (0..200).map(|_| unique_id("selftest")).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    for id in &ids {
        // containerd's identifiers.Validate: alphanumerics joined by single [._-], at most 76.
        assert!(id.len() <= 76, "{id}");
        assert!(
            id.split(['-', '.', '_'])
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric())),
            "{id}"
        );
    }
}

#[test]
fn failed_run_reports_ctr_error_and_leaves_no_debris() {
    let c = containerd();
    let id = unique_id("selftest-missing-image");
    let r = c.run(RunOpts::new("example.invalid/no-such-image:0", &id));
    assert!(!r.timed_out && r.code == Some(1), "{r}");
    assert!(r.stderr_str().contains("not found"), "{r}");
    c.assert_no_debris(NAMESPACE, &id);
}
