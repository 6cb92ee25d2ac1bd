//! The results writer: every attestation's writes (the host's TPM clock and the result, one
//! [`ResultWrite`]) go through here.
//!
//! When the store commits in groups ([`Store::commits_in_groups`], SQLite), one thread owns
//! the writing: it takes every write queued, stores them all in one transaction (one sync of
//! the log for all of them) and only then answers each caller, so an acknowledged verdict is
//! on disk exactly as when each result had its own transaction; under load a commit carries
//! as many results as arrived during the one before. Otherwise (PostgreSQL, whose connections
//! work in parallel) each write is stored on the blocking pool as before.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{self, Recorded, ResultWrite, Store, StoreError, StoreResult};

/// The most writes one transaction takes.
pub const MAX_GROUP: usize = 512;
/// Writes waiting for the writer thread before callers wait to queue more.
const QUEUE: usize = 4096;

type Job = (ResultWrite, oneshot::Sender<StoreResult<Recorded>>);

/// Hands attestation writes to the store; see the module documentation.
#[derive(Debug)]
pub struct ResultsWriter {
    store: Arc<dyn Store>,
    /// The writer thread's queue; `None` when the store does not commit in groups.
    queue: Option<mpsc::Sender<Job>>,
}

impl ResultsWriter {
    /// A writer for `store`, with its thread when the store commits in groups (the thread
    /// ends when the writer is dropped, after the writes queued).
    pub fn new(store: Arc<dyn Store>) -> Self {
        if !store.commits_in_groups() {
            return Self { store, queue: None };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let owned = Arc::clone(&store);
        let spawned = std::thread::Builder::new()
            .name("vouchd-results".into())
            .spawn(move || write_groups(owned.as_ref(), rx));
        match spawned {
            Ok(_) => Self {
                store,
                queue: Some(tx),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the results writer thread; results are written one by one");
                Self { store, queue: None }
            }
        }
    }

    /// Stores `write`; returns when it is durable (or failed).
    pub async fn record(&self, write: ResultWrite) -> StoreResult<Recorded> {
        let Some(queue) = &self.queue else {
            return store::run(&self.store, move |s| {
                s.record_attestations(std::slice::from_ref(&write))
                    .pop()
                    .unwrap_or_else(|| Err(StoreError::Backend("no answer from the store".into())))
            })
            .await;
        };
        let (answer, answered) = oneshot::channel();
        queue
            .send((write, answer))
            .await
            .map_err(|_| StoreError::Backend("the results writer has stopped".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Backend("the results writer has stopped".into()))?
    }
}

/// The writer thread: takes what is queued (up to [`MAX_GROUP`]), stores it in one
/// transaction, answers each caller; until every sender is gone.
fn write_groups(store: &dyn Store, mut rx: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let writes: Vec<ResultWrite> = jobs.iter().map(|(w, _)| w.clone()).collect();
        let mut answers = store.record_attestations(&writes).into_iter();
        for (_, reply) in jobs.drain(..) {
            let answer = answers
                .next()
                .unwrap_or_else(|| Err(StoreError::Backend("no answer from the store".into())));
            // A caller that went away (its session ended) needs no answer.
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{AttestationRecord, Cluster, Host, HostState};

    fn host(ek: &str) -> Host {
        Host {
            ek_hash: ek.into(),
            cluster: "prod".into(),
            name: ek.into(),
            added_by: "test".into(),
            ak_public: None,
            state: HostState::Unknown,
            attested_at: None,
            valid_until: None,
            software_version: None,
            created_at: 1,
        }
    }

    fn write(ek: &str, attested: bool) -> ResultWrite {
        ResultWrite {
            record: AttestationRecord {
                ek_hash: ek.into(),
                cluster: "prod".into(),
                at: 10,
                attested,
                software_version: None,
                reason: None,
                pcr_digest: None,
                nonce: None,
                valid_until: attested.then_some(100),
                token: None,
                presented: None,
                config_generation: None,
            },
            clock: attested.then(|| "{\"clock\":5}".to_owned()),
        }
    }

    /// Writes arriving together are stored together, each with its own answer: one for a
    /// removed host fails alone, and the others (clock and result) are stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_stored_in_groups_each_with_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(&dir.path().join("v.db")).unwrap();
        sqlite
            .create_cluster(&Cluster {
                name: "prod".into(),
                pcrs: vec![0],
                bank: "sha256".into(),
                created_at: 1,
                disabled_at: None,
                config_generation: 0,
            })
            .unwrap();
        let eks: Vec<String> = (0..200).map(|i| format!("{i:064x}")).collect();
        for ek in &eks {
            sqlite.add_host(&host(ek)).unwrap();
        }
        let store: Arc<dyn Store> = Arc::new(sqlite);
        assert!(store.commits_in_groups());
        let writer = Arc::new(ResultsWriter::new(Arc::clone(&store)));
        let mut tasks = Vec::new();
        for ek in eks.iter().cloned().chain(["f".repeat(64)]) {
            let writer = Arc::clone(&writer);
            tasks.push(tokio::spawn(async move {
                (ek.clone(), writer.record(write(&ek, true)).await)
            }));
        }
        for task in tasks {
            let (ek, answer) = task.await.unwrap();
            if ek == "f".repeat(64) {
                assert!(matches!(answer, Err(StoreError::NotFound(_))), "{answer:?}");
                continue;
            }
            let recorded = answer.unwrap();
            assert_eq!(recorded.before, HostState::Unknown);
            assert!(recorded.event.is_some());
            assert_eq!(
                store.get_host(&ek).unwrap().unwrap().state,
                HostState::Attested
            );
            assert_eq!(
                store.host_clock(&ek).unwrap().as_deref(),
                Some("{\"clock\":5}")
            );
            assert_eq!(store.list_attestations(&ek, 10).unwrap().len(), 1);
        }
    }
}
