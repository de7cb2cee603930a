//! Container setup, as runc does it: root file system, namespaces, process credentials,
//! scheduling, seccomp and cgroup, all run in the clean setup process (`setup`).

pub mod cgroup;
pub mod process;
pub mod rootfs;
pub mod sched;
pub mod seccomp;
pub mod setup;
pub mod syscall;
pub mod syscall_table;
