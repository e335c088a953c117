//! The runtime-spec "features" document (`runc features`): what this runtime
//! supports, so that higher layers can check before they ask for it.

use serde_json::{json, Value};

/// The features JSON of this runtime, as the runtime-spec's features.md describes it.
pub fn features() -> Value {
    let mut caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    caps.sort();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime",
            "nostrictatime", "nosuid", "private", "rbind", "relatime", "ro", "rprivate",
            "rshared", "rslave", "runbindable", "rw", "shared", "slave", "strictatime",
            "suid", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": crate::spec::SUPPORTED_NAMESPACES,
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": [std::env::consts::ARCH]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "org.opencontainers.runc.version": "berth-runc",
            "io.github.berth.version": env!("CARGO_PKG_VERSION")
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn features_name_the_supported_namespaces_and_no_systemd() {
        let f = super::features();
        assert_eq!(f["linux"]["cgroup"]["systemd"], false);
        let ns = f["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().any(|n| n == "pid") && !ns.iter().any(|n| n == "user"));
        let caps = f["linux"]["capabilities"].as_array().unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
    }
}
