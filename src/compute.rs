//! CPU-bound work of a pull (turning CSV rows into records, mapping and encoding records,
//! packing users into requests) on one pool with a thread per core: rayon's global pool
//! (`RAYON_NUM_THREADS` overrides its size).
//!
//! Not tokio's blocking pool: that one starts another thread whenever none is idle (about 15
//! during a 1,000,000-row pull), and each thread's allocator heap kept pages of its own
//! resident. Work given here must only compute (no I/O, no waiting on a channel or a lock
//! held elsewhere): the pool is as small as the machine, so a task that waits holds a core.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// The result of [`spawn`], to await (or `futures::executor::block_on` from a thread outside
/// the runtime).
pub struct Task<T>(oneshot::Receiver<std::thread::Result<T>>);

/// Why a [`Task`] gave no result: it panicked (the message is kept).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(String);

/// Run `f` on the pool.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Task<T> {
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        // A panic is handed to the awaiting side, as a tokio task's would be (rayon
        // aborts the process on a panic nobody catches).
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
    });
    Task(rx)
}

impl<T> Future for Task<T> {
    type Output = Result<T, Failed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|done| match done {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(Failed(format!("a computation panicked: {}", message(&*panic)))),
            Err(_) => Err(Failed("a computation ended without a result".into())),
        })
    }
}

fn message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_come_back_and_panics_become_errors() {
        let tasks: Vec<Task<u64>> = (0..64u64).map(|i| spawn(move || i * i)).collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        assert_eq!(got, (0..64u64).map(|i| i * i).collect::<Vec<_>>());
        let err = spawn(|| -> u64 { panic!("row 7 is odd") }).await.unwrap_err();
        assert_eq!(err.to_string(), "a computation panicked: row 7 is odd");
        let err = spawn(|| -> u64 { panic!("{}", format!("line {}", 9)) }).await.unwrap_err();
        assert!(err.to_string().ends_with("line 9"), "{err}");
        // Outside the runtime, as the CSV reader's thread waits for its batches.
        let v = std::thread::spawn(|| futures::executor::block_on(spawn(|| 5))).join().unwrap();
        assert_eq!(v.unwrap(), 5);
    }
}
