//! One listener per worker process for every wake-up it needs: a job of a queue inserted or
//! released (apalis' `apalis::job::insert` notification) and events recorded
//! ([`crate::store::events::CHANNEL`]). A listener holds a pool connection for as long as
//! it listens; one per queue and one for the router took five from a small pool, and the
//! workers' claims then timed out waiting for a connection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::RecvError};

/// What a wake-up is for: one queue's jobs, or events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A job of this queue was inserted or released.
    Queue(Arc<str>),
    /// Events were recorded.
    Events,
    /// The listener (re)connected: notifications sent meanwhile were lost, so everyone
    /// looks.
    Everyone,
}

/// The process' wake-ups, for as many subscribers as want them.
#[derive(Clone)]
pub struct Wakeups(broadcast::Sender<Wake>);

/// The apalis channel every queue's insertions are announced on.
const JOB_CHANNEL: &str = "apalis::job::insert";
/// Wake-ups buffered per subscriber; a subscriber that falls further behind is woken once.
const BUFFER: usize = 1024;
/// How long a lost listener waits before it connects again.
const RECONNECT: Duration = Duration::from_secs(1);

impl Wakeups {
    /// Starts listening on `pool` until `stop` says so.
    pub fn start(pool: PgPool, stop: tokio::sync::watch::Receiver<bool>) -> Wakeups {
        let (tx, _) = broadcast::channel(BUFFER);
        tokio::spawn(listen(pool, tx.clone(), stop));
        Wakeups(tx)
    }

    /// The wake-ups of queue `queue`, those that arrived meanwhile together as one.
    pub fn of_queue(&self, queue: &'static str) -> BoxStream<'static, Vec<()>> {
        self.matching(move |w| matches!(w, Wake::Queue(q) if &**q == queue))
            .ready_chunks(BUFFER)
            .boxed()
    }

    /// A wake-up whenever events were recorded.
    pub fn of_events(&self) -> BoxStream<'static, ()> {
        self.matching(|w| *w == Wake::Events)
    }

    /// The wake-ups `wanted` picks, and one whenever some may have been missed.
    fn matching(
        &self,
        wanted: impl Fn(&Wake) -> bool + Send + Sync + 'static,
    ) -> BoxStream<'static, ()> {
        futures::stream::unfold(
            (self.0.subscribe(), wanted),
            |(mut rx, wanted)| async move {
                loop {
                    match rx.recv().await {
                        Ok(w) if w == Wake::Everyone || wanted(&w) => {
                            return Some(((), (rx, wanted)));
                        }
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => return Some(((), (rx, wanted))),
                        Err(RecvError::Closed) => return None,
                    }
                }
            },
        )
        .boxed()
    }
}

/// The queue an apalis insert notification names (`{"job_type": …, "id": …}`).
fn queue_of(payload: &str) -> Option<Arc<str>> {
    #[derive(serde::Deserialize)]
    struct Insert {
        job_type: String,
    }
    serde_json::from_str::<Insert>(payload)
        .ok()
        .map(|i| Arc::from(i.job_type))
}

async fn listen(
    pool: PgPool,
    tx: broadcast::Sender<Wake>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let connected = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen_all([JOB_CHANNEL, crate::store::events::CHANNEL])
                .await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            l = connected => l,
            _ = stop.wait_for(|s| *s) => return,
        };
        match listener.as_mut() {
            Ok(l) => {
                let _ = tx.send(Wake::Everyone);
                loop {
                    let n = tokio::select! {
                        n = l.try_recv() => n,
                        _ = stop.wait_for(|s| *s) => return,
                    };
                    match n {
                        // The connection was lost and is made again by the next call:
                        // what was sent meanwhile is lost.
                        Ok(None) => {
                            let _ = tx.send(Wake::Everyone);
                        }
                        Ok(Some(n)) if n.channel() == JOB_CHANNEL => {
                            if let Some(q) = queue_of(n.payload()) {
                                let _ = tx.send(Wake::Queue(q));
                            }
                        }
                        Ok(Some(_)) => {
                            let _ = tx.send(Wake::Events);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "the wake-up listener lost its connection");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot listen for wake-ups; polling meanwhile"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_names_its_queue() {
        assert_eq!(
            queue_of(r#"{"job_type":"trawl::pipeline::references","id":"01J"}"#).as_deref(),
            Some("trawl::pipeline::references")
        );
        assert_eq!(queue_of("not json"), None);
    }
}
