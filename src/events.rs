//! Task events, published off the RPC path.
//!
//! Handlers and the exit observer push `(topic, event)` onto an unbounded channel and return
//! at once; one task owns containerd's publisher and forwards them in order, so containerd
//! sees create, start, exit, delete in the order they happened.

use std::time::SystemTime;

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::context;
use containerd_shim::publisher::RemotePublisher;
use log::warn;
use tokio::sync::mpsc;

type Event = (&'static str, Box<dyn MessageDyn + Send>);

/// The sending side: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct Events {
    tx: mpsc::UnboundedSender<Event>,
}

impl Events {
    /// Starts the forwarder that owns `publisher`; events go to containerd's `namespace`.
    pub fn spawn(publisher: RemotePublisher, namespace: String) -> Events {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        tokio::spawn(async move {
            while let Some((topic, event)) = rx.recv().await {
                let ctx = context::with_timeout(PUBLISH_TIMEOUT_NANOS);
                if let Err(e) = publisher.publish(ctx, topic, &namespace, event).await {
                    warn!("publish {topic}: {e}");
                }
            }
        });
        Events { tx }
    }

    /// Events that go nowhere: for tests that drive the service without containerd.
    pub fn discard() -> Events {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Events { tx }
    }

    fn send(&self, topic: &'static str, event: Box<dyn MessageDyn + Send>) {
        if self.tx.send((topic, event)).is_err() {
            warn!("event {topic} dropped: the publisher has stopped");
        }
    }

    pub fn task_create(&self, id: &str, bundle: &str, pid: u32) {
        let event = TaskCreate {
            container_id: id.to_string(),
            bundle: bundle.to_string(),
            pid,
            ..Default::default()
        };
        self.send(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event));
    }

    pub fn task_start(&self, id: &str, pid: u32) {
        let event = TaskStart {
            container_id: id.to_string(),
            pid,
            ..Default::default()
        };
        self.send(topics::TASK_START_EVENT_TOPIC, Box::new(event));
    }

    pub fn task_oom(&self, id: &str) {
        let event = TaskOOM {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.send(topics::TASK_OOM_EVENT_TOPIC, Box::new(event));
    }

    pub fn task_paused(&self, id: &str) {
        let event = TaskPaused {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.send(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event));
    }

    pub fn task_resumed(&self, id: &str) {
        let event = TaskResumed {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.send(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event));
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
        self.send(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event));
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
        self.send(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event));
    }
}

/// containerd drops an event it cannot take within this time rather than stall the shim.
const PUBLISH_TIMEOUT_NANOS: i64 = 5_000_000_000;

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
