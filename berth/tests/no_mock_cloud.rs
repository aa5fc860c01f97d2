//! The shipped binary is built with `--no-default-features` (see the Dockerfile): it must not
//! link mock-cloud. The default build (with `berth demo`) does, which shows the check can fail.

use std::process::Command;

/// `cargo tree -e normal -p berth` with `extra` arguments, one package per line.
fn normal_dependencies(extra: &[&str]) -> String {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--locked", "--manifest-path", manifest])
        .args(["-e", "normal", "-p", "berth", "--prefix", "none"])
        .args(extra)
        .output()
        .expect("cannot run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo tree prints UTF-8")
}

#[test]
fn the_binary_without_default_features_links_no_mock_cloud() {
    let shipped = normal_dependencies(&["--no-default-features"]);
    assert!(
        shipped.lines().any(|l| l.starts_with("berth-controller ")),
        "cargo tree printed no berth-controller:\n{shipped}"
    );
    let hits: Vec<&str> = shipped
        .lines()
        .filter(|l| l.contains("mock-cloud"))
        .collect();
    assert!(
        hits.is_empty(),
        "berth --no-default-features depends on mock-cloud: {hits:?}"
    );

    let default = normal_dependencies(&[]);
    assert!(
        default.lines().any(|l| l.contains("mock-cloud")),
        "the default build (feature demo) should link mock-cloud:\n{default}"
    );
}
