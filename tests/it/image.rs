//! The images' contents, checked without a Docker engine: each final root filesystem (binary,
//! linked libraries, uid 65532, no shell, no fonts) assembled and run under chroot by
//! `tests/image/check-rootfs.sh`, the operator rendering figures there with its embedded font.

use std::process::Command;

#[test]
fn binaries_run_as_non_root_in_a_shell_less_font_less_root_filesystem() {
    // The test binary lives in <target>/<profile>/deps; the flmon binaries one folder up.
    let exe = std::env::current_exe().unwrap();
    let bin_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    assert!(
        bin_dir.join("flmon-agent").exists() && bin_dir.join("flmon-operator").exists(),
        "build the binaries first (cargo test --workspace does): nothing in {}",
        bin_dir.display()
    );
    let out = Command::new("bash")
        .arg(flmon_tests::repo_root().join("tests/image/check-rootfs.sh"))
        .arg(bin_dir)
        .output()
        .unwrap();
    let text = flmon_tests::combined_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("flmon-agent runs as uid 65532"), "{text}");
    assert!(text.contains("rendered"), "{text}");
}
