//! Reaps every child and orphan (the agent is PID 1 in the guest, a child subreaper elsewhere)
//! and keeps the exit statuses that waiters ask for.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use vessel_protocol::ExitStatus;

/// Statuses of reaped processes, by PID.
#[derive(Debug, Default)]
pub struct Reaper {
    exits: Mutex<HashMap<i32, ExitStatus>>,
    changed: Condvar,
    kick: Condvar,
}

impl Reaper {
    /// Starts the reaping thread.
    pub fn start() -> Arc<Self> {
        let r = Arc::new(Reaper::default());
        let r2 = r.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || r2.run())
            .expect("spawn the reaper thread");
        r
    }

    fn run(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.record(pid.as_raw(), ExitStatus::Code(code))
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.record(pid.as_raw(), ExitStatus::Signal(sig as i32))
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => {
                    // No children: sleep until a spawn kicks us, or poll for adopted orphans.
                    let g = self.exits.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = self.kick.wait_timeout(g, Duration::from_millis(50));
                }
            }
        }
    }

    fn record(&self, pid: i32, status: ExitStatus) {
        let mut g = self.exits.lock().unwrap_or_else(|e| e.into_inner());
        // Statuses nobody collects (orphans) must not pile up forever.
        if g.len() > 4096 {
            g.clear();
        }
        g.insert(pid, status);
        self.changed.notify_all();
    }

    /// Tells the reaper a child was just spawned.
    pub fn kick(&self) {
        self.kick.notify_all();
    }

    /// Blocks until `pid` has been reaped; returns its status (repeatable).
    pub fn wait(&self, pid: i32) -> ExitStatus {
        let mut g = self.exits.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = g.get(&pid) {
                return *s;
            }
            g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The status of `pid` if it has been reaped.
    pub fn status(&self, pid: i32) -> Option<ExitStatus> {
        self.exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
            .copied()
    }

    /// Forgets `pid`'s status.
    pub fn forget(&self, pid: i32) {
        self.exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }
}
