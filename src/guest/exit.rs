//! A guest's exit status, by identity rather than by pid lookup.
//!
//! The containerd-shim crate reaps every child and tells its subscribers `(pid, status)`.
//! [`ExitWatch`] subscribes *before* the guest is cloned, so the first report for the guest's
//! pid on that subscription is the guest's own: a pid cannot be reused before its process is
//! reaped, and that reap is reported to the subscription first. No later process with the same
//! pid can take the guest's exit, and no exit is missed because it came early.

use containerd_shim::monitor::{
    monitor_subscribe, monitor_unsubscribe, Subject, Subscription, Topic,
};
use log::warn;

use crate::error::{Error, Result};

/// Exit status reported when the monitor is gone and the real status cannot be known.
const EXIT_UNKNOWN: i32 = 255;

/// A subscription to child exits, made before a guest is cloned.
pub struct ExitWatch {
    subscription: Option<Subscription>,
}

impl std::fmt::Debug for ExitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitWatch").finish_non_exhaustive()
    }
}

impl ExitWatch {
    /// Subscribes; call it before the clone whose exit it is to see.
    pub async fn subscribe() -> Result<ExitWatch> {
        let subscription = monitor_subscribe(Topic::Pid)
            .await
            .map_err(|e| Error::Internal(format!("subscribe to process exits: {e}")))?;
        Ok(ExitWatch {
            subscription: Some(subscription),
        })
    }

    /// Waits for the exit of `pid` and returns its status as the crate reports it (the exit
    /// code, or 128 + the signal).
    pub async fn wait(mut self, pid: i32) -> i32 {
        let mut subscription = self.subscription.take().expect("waited once");
        let status = loop {
            match subscription.rx.recv().await {
                Some(exit) if matches!(exit.subject, Subject::Pid(p) if p == pid) => {
                    break exit.exit_code
                }
                Some(_) => continue,
                None => {
                    warn!("the exit monitor stopped; the status of pid {pid} is unknown");
                    break EXIT_UNKNOWN;
                }
            }
        };
        unsubscribe(subscription.id).await;
        status
    }
}

impl Drop for ExitWatch {
    /// A watch that is never waited on (its guest failed to start) must not stay subscribed:
    /// the monitor would keep sending it every exit.
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(unsubscribe(subscription.id));
            }
        }
    }
}

async fn unsubscribe(id: i64) {
    if let Err(e) = monitor_unsubscribe(id).await {
        warn!("unsubscribe from process exits: {e}");
    }
}
