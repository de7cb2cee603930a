//! A helper thread that is always joined. [`Joined::finish`] waits for its result, and dropping an
//! unfinished `Joined` joins the thread, so it never outlives its owner on an early return (the
//! VM builder's loader and memory-slot threads hold views of guest memory).

use std::thread::JoinHandle;

/// A named thread joined on [`finish`](Joined::finish) or on drop.
#[derive(Debug)]
pub struct Joined<T>(Option<JoinHandle<T>>);

impl<T: Send + 'static> Joined<T> {
    /// Starts `f` on a thread called `name`. Errors: the thread cannot be spawned.
    pub fn spawn(name: &str, f: impl FnOnce() -> T + Send + 'static) -> std::io::Result<Self> {
        let handle = std::thread::Builder::new().name(name.into()).spawn(f)?;
        Ok(Joined(Some(handle)))
    }

    /// Waits for the thread and returns what it returned, or `None` if it panicked (its message
    /// is on stderr).
    pub fn finish(mut self) -> Option<T> {
        self.0.take()?.join().ok()
    }
}

impl<T> Drop for Joined<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}
