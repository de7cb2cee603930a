//! PID 1 duties: the guest's own mounts, loopback, and power-off.

use std::io;
use std::path::Path;

use nix::mount::MsFlags;

/// Errors bringing the guest up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A boot-time mount failed.
    #[error("mount {fstype} on {target}")]
    Mount {
        /// File system type.
        fstype: &'static str,
        /// Mount point.
        target: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Leaving the initramfs root failed.
    #[error("move the root out of the initramfs")]
    Reroot(#[source] io::Error),
    /// `lo` could not be brought up.
    #[error("bring up lo")]
    BringUpLo(#[source] io::Error),
}

const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// pivot_root(2) refuses to leave the initramfs (`rootfs`), so containers could not pivot.
/// Stack a recursive bind of `/` over `/` and chroot into it (what `switch_root` users do), so
/// that every later mount namespace has a root that is an ordinary mount.
fn leave_initramfs() -> io::Result<()> {
    let st = nix::sys::statfs::statfs("/")?;
    let magic = st.filesystem_type().0 as i64;
    if magic != RAMFS_MAGIC && magic != TMPFS_MAGIC {
        return Ok(());
    }
    let tmp = Path::new("/.vessel-root");
    std::fs::create_dir_all(tmp)?;
    nix::mount::mount(
        Some("/"),
        tmp,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    nix::unistd::chdir(tmp)?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
    nix::unistd::chroot(".")?;
    nix::unistd::chdir("/")?;
    Ok(())
}

/// Mounts the guest's pseudo file systems, enables cgroup controllers for containers and
/// brings up `lo`.
///
/// # Errors
/// [`InitError`] naming the step.
pub fn init_system() -> Result<(), InitError> {
    leave_initramfs().map_err(InitError::Reroot)?;
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mounts: [(&'static str, &'static str, MsFlags, Option<&str>); 7] = [
        ("proc", "/proc", nosuid_nodev | MsFlags::MS_NOEXEC, None),
        ("sysfs", "/sys", nosuid_nodev | MsFlags::MS_NOEXEC, None),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        (
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0620,ptmxmode=0666"),
        ),
        ("tmpfs", "/dev/shm", nosuid_nodev, Some("mode=1777")),
        ("tmpfs", "/run", nosuid_nodev, Some("mode=0755")),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            None,
        ),
    ];
    for (fstype, target, flags, data) in mounts {
        let _ = std::fs::create_dir_all(target);
        match nix::mount::mount(Some(fstype), target, Some(fstype), flags, data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => {
                return Err(InitError::Mount {
                    fstype,
                    target,
                    source: e.into(),
                })
            }
        }
    }
    mount_share();
    let root = Path::new("/sys/fs/cgroup");
    crate::container::cgroup::enable_controllers(root);
    let _ = std::fs::create_dir_all(root.join("vessel"));
    crate::container::cgroup::enable_controllers(&root.join("vessel"));
    crate::network::loopback::bring_up_lo().map_err(InitError::BringUpLo)
}

/// virtio-fs tag of the container's share (the host's `<root>/<id>/share`, docs/design.md
/// "File sharing").
pub const SHARE_TAG: &str = "vessel";
/// Where the share is mounted in the guest; the host sends paths under it in `create_container`.
pub const SHARE_MOUNT: &str = "/run/vessel/shared";

/// Read-ahead window of the share, KiB: 1 MiB, the largest READ the guest's FUSE client sends
/// (`max_pages` 256, the kernel's `FUSE_MAX_MAX_PAGES`; the VMM offers it at INIT). The default
/// window, 128 KiB, splits every MiB of a sequential read into 8 round trips; in the lab this
/// window read 256 MiB at 270-290 MiB/s against 100-107 with the default, and 240-270 with 4 MiB
/// (docs/performance.md, "virtio-fs"). Random reads are unaffected: the kernel only widens the
/// window for sequential access.
pub const SHARE_READ_AHEAD_KB: u32 = 1024;

/// Mounts the container's virtio-fs share when the VM has one, and widens its read-ahead window
/// to [`SHARE_READ_AHEAD_KB`]. A VM without it (tests of the agent alone) goes on; a container
/// whose root is under [`SHARE_MOUNT`] then fails at create with the missing path named.
fn mount_share() {
    let _ = std::fs::create_dir_all(SHARE_MOUNT);
    if let Err(e) = nix::mount::mount(
        Some(SHARE_TAG),
        SHARE_MOUNT,
        Some("virtiofs"),
        MsFlags::empty(),
        None::<&str>,
    ) {
        eprintln!("vessel-agent: no virtio-fs share {SHARE_TAG:?} mounted at {SHARE_MOUNT}: {e}");
        return;
    }
    if let Err(e) = set_read_ahead(Path::new(SHARE_MOUNT), SHARE_READ_AHEAD_KB) {
        eprintln!("vessel-agent: cannot set the read-ahead of {SHARE_MOUNT}: {e}");
    }
}

/// Sets the read-ahead window of the file system mounted at `mount` to `kb` KiB through its
/// backing device's `/sys/class/bdi/<major>:<minor>/read_ahead_kb`
/// (Documentation/ABI/testing/sysfs-class-bdi; a FUSE mount's backing device is named after its
/// anonymous device number). Errors: `mount` cannot be stat'ed, or sysfs refuses the write.
fn set_read_ahead(mount: &Path, kb: u32) -> std::io::Result<()> {
    use std::os::linux::fs::MetadataExt;
    let dev = std::fs::metadata(mount)?.st_dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    std::fs::write(path, kb.to_string())
}

/// Syncs file systems and ends the VM: `reboot(RB_AUTOBOOT)`, which with `reboot=k` is the i8042
/// reset the VMM reports as a guest shutdown. (`RB_POWER_OFF` would only halt: without ACPI the
/// kernel has no power-off method, and the VM would stay up with every vCPU halted.)
pub fn power_off() -> ! {
    log::info!("syncing file systems and powering off");
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // reboot only returns on failure; PID 1 must not exit (that panics the kernel), so wait.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Microseconds since boot (`CLOCK_BOOTTIME`).
pub fn boot_time_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the kernel writes into.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}
