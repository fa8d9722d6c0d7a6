//! A request's deadline and its client's departure, checked where work can stop cleanly: before
//! each forward pass (and between a long request's tokenized inputs).
//!
//! An adapter that can tell (the native server) runs the route inside [`watch`] with the
//! request's deadline and a flag it sets when the client has gone; the core calls [`check`] at
//! each pass boundary, so a request nobody waits for any more costs at most the pass already
//! running. Without a watch (the Wasm component, tests) [`check`] always passes.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};

/// What a request's work is watched for.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// When the request's time is up (`REQUEST_TIMEOUT`).
    pub deadline: Option<Instant>,
    /// Set by the adapter when the client has gone (or the answer was already given up on).
    pub gone: Arc<AtomicBool>,
}

thread_local! {
    static CURRENT: RefCell<Option<Watch>> = const { RefCell::new(None) };
}

/// Runs `f` (one request's routing, on this thread) under `watch`.
pub fn watch<T>(watch: Watch, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Watch>);
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _reset = Reset(CURRENT.with(|c| c.borrow_mut().replace(watch)));
    f()
}

/// Whether the current request's work may go on: an error once its deadline has passed or its
/// client has gone.
pub fn check() -> Result<()> {
    CURRENT.with(|c| match &*c.borrow() {
        Some(w) if w.gone.load(Ordering::Relaxed) => Err(Error::Timeout(
            "the client went away; the request's remaining work was dropped".into(),
        )),
        Some(Watch {
            deadline: Some(deadline),
            ..
        }) if Instant::now() >= *deadline => Err(Error::Timeout(
            "the request ran past its deadline (REQUEST_TIMEOUT); its remaining work was dropped"
                .into(),
        )),
        _ => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn checks_pass_without_a_watch_and_fail_once_it_fires() {
        assert!(check().is_ok());
        let w = Watch::default();
        let gone = w.gone.clone();
        watch(w, || {
            assert!(check().is_ok());
            gone.store(true, Ordering::Relaxed);
            assert_eq!(check().unwrap_err().status(), 504);
        });
        assert!(check().is_ok(), "the watch ends with its request");
        let past = Watch {
            deadline: Some(Instant::now() - Duration::from_millis(1)),
            ..Watch::default()
        };
        watch(past, || {
            assert!(check().unwrap_err().to_string().contains("deadline"))
        });
    }
}
