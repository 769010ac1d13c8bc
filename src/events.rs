//! Task events, published off the RPC path, in order, and never silently lost.
//!
//! Handlers and exit watchers queue `(topic, event)` and return at once; one task owns the
//! connection to containerd's ttrpc socket and forwards the events one at a time, so containerd
//! sees create, start, exit, delete in the order they happened. A publish that fails (containerd
//! restarting, a broken connection) is retried, with a new connection and a growing pause,
//! before anything queued after it is sent: order holds across a containerd restart. The queue
//! is bounded ([`MAX_QUEUED`]); an event is dropped, with an error in the log, only when the
//! queue is full or containerd has not taken it for [`PATIENCE`]. Shutdown waits until the
//! queue is empty ([`Events::flush`]), so the shim never exits with its last events unsent.
//!
//! The crate's `RemotePublisher` queues too, but requeues a failed event behind later ones and
//! drops it after five tries; this module uses containerd's Events API directly instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::context;
use log::{error, info, warn};
use tokio::sync::{mpsc, oneshot};

/// At most this many events wait for containerd; beyond it new events are dropped (logged).
pub const MAX_QUEUED: usize = 4096;
/// How long one event is retried before it is dropped (logged).
pub const PATIENCE: Duration = Duration::from_secs(120);
/// containerd must answer one publish within this time, or it is tried again.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Shutdown waits for the queue to empty.
const FLUSH_LIMIT: Duration = Duration::from_secs(10);

enum Message {
    /// An event, and the container it is about (for the log).
    Publish(Envelope, String),
    /// Answered once every event queued before it is published (or given up).
    Flush(oneshot::Sender<()>),
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct Events {
    tx: mpsc::UnboundedSender<Message>,
    namespace: String,
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Publish(envelope, id) => write!(f, "Publish({} id={id})", envelope.topic),
            Message::Flush(_) => write!(f, "Flush"),
        }
    }
}

impl Events {
    /// Starts the forwarder to containerd's ttrpc socket at `address`; events go to
    /// containerd's `namespace`.
    pub fn spawn(address: String, namespace: String) -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(forward(address, rx, queued.clone()));
        Events {
            tx,
            namespace,
            queued,
        }
    }

    /// Events that go nowhere: for tests that drive the service without containerd.
    pub fn discard() -> Events {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if let Message::Flush(done) = message {
                    let _ = done.send(());
                }
            }
        });
        Events {
            tx,
            namespace: String::new(),
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Waits (at most [`FLUSH_LIMIT`]) until every event queued so far has been published.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok()
            && tokio::time::timeout(FLUSH_LIMIT, flushed).await.is_err()
        {
            warn!(
                "{} events still unpublished after {FLUSH_LIMIT:?}",
                self.queued.load(Ordering::Relaxed)
            );
        }
    }

    fn send(&self, topic: &'static str, id: &str, event: Box<dyn MessageDyn>) {
        if self.queued.load(Ordering::Relaxed) >= MAX_QUEUED {
            error!("event {topic} dropped: {MAX_QUEUED} events are waiting for containerd");
            return;
        }
        let envelope = match envelope(topic, &self.namespace, event) {
            Ok(envelope) => envelope,
            Err(e) => {
                error!("event {topic} dropped: cannot encode it: {e}");
                return;
            }
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self
            .tx
            .send(Message::Publish(envelope, id.to_string()))
            .is_err()
        {
            error!("event {topic} dropped: the publisher has stopped");
        }
    }

    pub fn task_create(&self, id: &str, bundle: &str, pid: u32) {
        let event = TaskCreate {
            container_id: id.to_string(),
            bundle: bundle.to_string(),
            pid,
            ..Default::default()
        };
        self.send(topics::TASK_CREATE_EVENT_TOPIC, id, Box::new(event));
    }

    pub fn task_start(&self, id: &str, pid: u32) {
        let event = TaskStart {
            container_id: id.to_string(),
            pid,
            ..Default::default()
        };
        self.send(topics::TASK_START_EVENT_TOPIC, id, Box::new(event));
    }

    pub fn task_oom(&self, id: &str) {
        let event = TaskOOM {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.send(topics::TASK_OOM_EVENT_TOPIC, id, Box::new(event));
    }

    pub fn task_paused(&self, id: &str) {
        let event = TaskPaused {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.send(topics::TASK_PAUSED_EVENT_TOPIC, id, Box::new(event));
    }

    pub fn task_resumed(&self, id: &str) {
        let event = TaskResumed {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.send(topics::TASK_RESUMED_EVENT_TOPIC, id, Box::new(event));
    }

    pub fn task_exec_added(&self, id: &str, exec_id: &str) {
        let event = TaskExecAdded {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.send(topics::TASK_EXEC_ADDED_EVENT_TOPIC, id, Box::new(event));
    }

    pub fn task_exec_started(&self, id: &str, exec_id: &str, pid: u32) {
        let event = TaskExecStarted {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
            ..Default::default()
        };
        self.send(topics::TASK_EXEC_STARTED_EVENT_TOPIC, id, Box::new(event));
    }

    pub fn task_exit(&self, id: &str, exec_id: &str, pid: u32, status: u32, at: SystemTime) {
        let event = TaskExit {
            container_id: id.to_string(),
            id: if exec_id.is_empty() { id } else { exec_id }.to_string(),
            pid,
            exit_status: status,
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        };
        self.send(topics::TASK_EXIT_EVENT_TOPIC, id, Box::new(event));
    }

    pub fn task_delete(&self, id: &str, pid: u32, status: u32, at: SystemTime) {
        let event = TaskDelete {
            container_id: id.to_string(),
            id: id.to_string(),
            pid,
            exit_status: status,
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        };
        self.send(topics::TASK_DELETE_EVENT_TOPIC, id, Box::new(event));
    }
}

/// containerd's envelope: the event, its topic and namespace, and when it happened.
fn envelope(
    topic: &str,
    namespace: &str,
    event: Box<dyn MessageDyn>,
) -> containerd_shim::Result<Envelope> {
    let mut envelope = Envelope::new();
    envelope.set_topic(topic.to_string());
    envelope.set_namespace(namespace.to_string());
    envelope.set_timestamp(timestamp(SystemTime::now()));
    envelope.set_event(containerd_shim::util::convert_to_any(event)?);
    Ok(envelope)
}

/// The forwarder: one event at a time, each until containerd has it (see the module doc).
async fn forward(
    address: String,
    mut rx: mpsc::UnboundedReceiver<Message>,
    queued: Arc<AtomicUsize>,
) {
    let mut client: Option<EventsClient> = None;
    while let Some(message) = rx.recv().await {
        match message {
            Message::Flush(done) => {
                let _ = done.send(());
            }
            Message::Publish(envelope, id) => {
                publish(&address, &mut client, &envelope, &id).await;
                queued.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Publishes one event, reconnecting and retrying until containerd takes it or [`PATIENCE`]
/// runs out.
async fn publish(address: &str, client: &mut Option<EventsClient>, envelope: &Envelope, id: &str) {
    let give_up = Instant::now() + PATIENCE;
    let mut pause = Duration::from_millis(50);
    let mut tries = 0;
    loop {
        tries += 1;
        let error = match connected(address, client).await {
            Ok(events) => {
                let mut request = ForwardRequest::new();
                request.set_envelope(envelope.clone());
                let ctx = context::with_timeout(PUBLISH_TIMEOUT.as_nanos() as i64);
                match events.forward(ctx, &request).await {
                    Ok(_) if tries > 1 => {
                        info!("published {} id={id} after {tries} tries", envelope.topic);
                        return;
                    }
                    Ok(_) => return,
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e,
        };
        // A fresh connection for the next try: the old one may be to a containerd that is gone.
        *client = None;
        if Instant::now() >= give_up {
            error!(
                "event {} id={id} dropped: containerd did not take it for {PATIENCE:?}: {error}",
                envelope.topic
            );
            return;
        }
        warn!(
            "publish {} id={id}: {error}; retrying in {pause:?}",
            envelope.topic
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn connected<'a>(
    address: &str,
    client: &'a mut Option<EventsClient>,
) -> Result<&'a EventsClient, String> {
    if client.is_none() {
        let address = address.to_string();
        let fd = tokio::task::spawn_blocking(move || containerd_shim::util::connect(address))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("connect to containerd: {e}"))?;
        // SAFETY: `fd` is a connected unix socket that nothing else owns; the client takes it.
        let ttrpc = unsafe { Client::from_raw_unix_socket_fd(fd) };
        *client = Some(EventsClient::new(ttrpc));
    }
    Ok(client.as_ref().expect("connected above"))
}

/// A protobuf timestamp for a point in time.
pub fn timestamp(at: SystemTime) -> Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}
