//! `vessel check` against the real host: it must name kvm_pvm where /dev/kvm comes from it and
//! refuse (exit 1), and say guests can run (exit 0) where KVM is hardware-backed, as in the lab.

use std::path::Path;
use std::process::Command;

fn vessel_check(json: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel"));
    cmd.arg("check");
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run vessel check");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("utf-8"),
    )
}

#[test]
fn check_verdict_matches_the_kvm_module() {
    let (code, text) = vessel_check(false);
    if Path::new("/sys/module/kvm_pvm").exists() && Path::new("/dev/kvm").exists() {
        assert_eq!(code, 1, "kvm_pvm host must be refused:\n{text}");
        assert!(text.contains("kvm_pvm"), "must name kvm_pvm:\n{text}");
        assert!(text.contains("make lab"), "must give the fix:\n{text}");
    } else if Path::new("/sys/module/kvm_amd").exists()
        || Path::new("/sys/module/kvm_intel").exists()
    {
        assert_eq!(code, 0, "hardware KVM host must be accepted:\n{text}");
        assert!(text.contains("guests can run"), "{text}");
    } else {
        assert_eq!(code, 1, "a host without KVM must be refused:\n{text}");
    }
}

#[test]
fn check_json_is_one_object_with_the_verdict() {
    let (code, text) = vessel_check(true);
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["canRunGuests"].as_bool(), Some(code == 0));
    assert!(v["verdict"].as_str().is_some_and(|s| !s.is_empty()));
    if code != 0 {
        assert!(v["fix"].as_str().is_some_and(|s| !s.is_empty()));
    }
}
