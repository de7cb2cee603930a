//! Settings of the whole VMM process, made by the builder ([`crate::Vm::setup`]) rather than by
//! a device: a process-wide limit is not any one device's to change, and a VM with several
//! devices that need it should change it once.

use std::sync::Once;

/// Descriptors the file server may hold, as virtiofsd's default: min(1,000,000, fs.nr_open).
const NOFILE_TARGET: u64 = 1_000_000;

/// Raises this process's `RLIMIT_NOFILE` for the virtio-fs file servers and returns the new soft
/// limit. The passthrough server holds an `O_PATH` descriptor for every inode the guest has
/// looked up until the guest forgets it, so with the usual soft limit of 1024 a container that
/// touches a thousand files would get `EMFILE`. As virtiofsd does at start, both limits go to
/// min(1,000,000, `/proc/sys/fs/nr_open`) when this process may raise its hard limit
/// (`CAP_SYS_RESOURCE`), else the soft limit goes to the hard one. Best effort: failures are
/// logged.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let target = NOFILE_TARGET.min(nr_open).max(hard);
    if soft >= target {
        return soft;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, target, target).is_ok() {
        return target;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            log::warn!("virtio-fs: cannot raise RLIMIT_NOFILE from {soft}: {e}");
            soft
        }
    }
}

/// [`raise_nofile_limit`] the first time it is called in this process; later calls do nothing.
/// The builder calls it when a VM has a virtio-fs share.
pub fn raise_nofile_limit_once() {
    static RAISED: Once = Once::new();
    RAISED.call_once(|| {
        raise_nofile_limit();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_limit_is_raised_past_the_usual_1024() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, 512.min(hard), hard).unwrap();
        let now = raise_nofile_limit();
        let (soft, hard_after) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(now, soft);
        assert!(soft >= hard, "soft {soft} below the old hard limit {hard}");
        assert_eq!(soft, hard_after, "soft and hard end equal");
        // With CAP_SYS_RESOURCE (bit 24 of CapEff) the hard limit itself goes up.
        let cap_eff = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        if cap_eff & (1 << 24) != 0 {
            let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(soft, NOFILE_TARGET.min(nr_open).max(hard));
        }
    }
}
