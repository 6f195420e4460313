//! The queue on NATS JetStream: a file-backed stream of order requests and
//! one durable pull consumer that every node's order consumer shares, so a
//! request is worked on by one node at a time and redelivered to any node
//! when it is not acknowledged within `ack_wait` (a node that dies loses
//! nothing it had fetched). A batch the consumer failed to process is
//! handed back (NAK) at its next poll.
//!
//! Appends carry the order id as `Nats-Msg-Id`, so a publish retried within
//! the stream's duplicate window is stored once (an idempotent producer).
//! `append` returns after JetStream's publish ack: the event is in the
//! stream. While the broker is unreachable `append` fails at once (intake
//! answers a fast 503); a publish whose ack never came is ambiguous, so its
//! reservation is released and, if the event did land, the order written
//! later takes its stock again (see the ledger's reservations). How soon that reaches disk is the server's setting
//! (`sync_interval`; a replicated stream survives the loss of a server).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, AckKind, Message};
use async_trait::async_trait;
use futures::StreamExt;
use surge_domain::StoreError;
use surge_domain::flashsale::{Delivery, OrderQueue, OrderRequested};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsQueueConfig {
    pub url: String,
    /// Stream name; its one subject is `<stream>.requested`.
    pub stream: String,
    /// Durable consumer shared by every node.
    pub consumer: String,
    /// A fetched request not acknowledged within this is delivered again.
    pub ack_wait: Duration,
    /// How long a publish waits for JetStream's ack.
    pub publish_timeout: Duration,
    /// Copies of the stream across a NATS cluster's servers, when this node
    /// creates it (a PubAck then means a majority of them hold the request).
    pub replicas: u8,
    /// How long the stream keeps a request, when this node creates it: a
    /// bound on its disk, far past any consumer lag (an older request is
    /// long written or given up).
    pub max_age: Duration,
}

impl Default for NatsQueueConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "SURGE_ORDERS".to_owned(),
            consumer: "orders".to_owned(),
            ack_wait: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(2),
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

pub struct NatsQueue {
    client: async_nats::Client,
    publish_timeout: Duration,
    context: jetstream::Context,
    stream: stream::Stream,
    consumer: PullConsumer,
    subject: String,
    /// Fetched and not yet acknowledged, by stream sequence.
    unacked: Mutex<BTreeMap<u64, Message>>,
}

impl NatsQueue {
    /// Connects and creates the stream and the consumer if missing.
    pub async fn open(config: &NatsQueueConfig) -> Result<Self, StoreError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(config.publish_timeout)
            .connect(config.url.as_str())
            .await
            .map_err(unavailable)?;
        let context = jetstream::ContextBuilder::new().timeout(config.publish_timeout).build(client.clone());
        let subject = format!("{}.requested", config.stream);
        let stream =
            context.get_or_create_stream(stream_config(config, &config.stream, &subject)).await.map_err(unavailable)?;
        let consumer = stream
            .get_or_create_consumer(
                &config.consumer,
                pull::Config {
                    durable_name: Some(config.consumer.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(unavailable)?;
        let publish_timeout = config.publish_timeout;
        Ok(Self { client, publish_timeout, context, stream, consumer, subject, unacked: Mutex::default() })
    }

    fn take(&self, messages: Vec<Message>) -> Vec<Delivery> {
        let mut deliveries = Vec::with_capacity(messages.len());
        let mut unacked = self.unacked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for message in messages {
            let Ok(offset) = message.info().map(|info| info.stream_sequence) else {
                continue;
            };
            match super::wire::decode(&message.payload) {
                Ok(request) => {
                    unacked.insert(offset, message);
                    deliveries.push(Delivery { offset, request });
                }
                Err(error) => {
                    // A poison event must not block the queue: drop it for good.
                    tracing::error!(offset, %error, "unreadable order request; terminated");
                    tokio::spawn(async move { message.ack_with(AckKind::Term).await });
                }
            }
        }
        deliveries.sort_by_key(|delivery| delivery.offset);
        deliveries
    }
}

#[async_trait]
impl OrderQueue for NatsQueue {
    async fn append(&self, request: &OrderRequested) -> Result<(), StoreError> {
        // While disconnected the client would buffer the publish and send it
        // on reconnect, after this call timed out and intake answered 503:
        // an order the buyer was told failed. Refuse at once instead.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(StoreError::Unavailable("nats: not connected".to_owned()));
        }
        let payload = super::wire::encode(request)?;
        let message = PublishMessage::build().payload(payload.into()).message_id(request.order_id.get().to_string());
        let ack = self.context.send_publish(self.subject.clone(), message).await.map_err(unavailable)?;
        // Sent: without its PubAck nobody can say whether it landed. Waited
        // for no longer than the request has left.
        let wait = surge_guard::deadline::budget_for_call(self.publish_timeout);
        match tokio::time::timeout(wait, ack).await {
            Ok(acked) => acked.map(drop).map_err(|error| StoreError::Indeterminate(format!("nats: {error}"))),
            Err(_) => Err(StoreError::Indeterminate("nats: no PubAck within the request's deadline".to_owned())),
        }
    }

    /// The request past the consumer's ack floor: the first one not
    /// acknowledged (every one below the floor is).
    async fn oldest_unacked_ms(&self) -> Result<Option<i64>, StoreError> {
        let info = self.consumer.get_info().await.map_err(unavailable)?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(None);
        }
        let mut sequence = info.ack_floor.stream_sequence + 1;
        // A poison event (terminated, never acknowledged) is stepped over.
        for _ in 0..16 {
            let message =
                self.stream.get_first_raw_message_by_subject(&self.subject, sequence).await.map_err(unavailable)?;
            match super::wire::decode(&message.payload) {
                Ok(request) => return Ok(Some(request.requested_at_ms)),
                Err(_) => sequence = message.sequence + 1,
            }
        }
        Err(StoreError::Unavailable("nats: no readable request past the ack floor".to_owned()))
    }

    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError> {
        // What an earlier poll delivered and nobody acknowledged failed to
        // be processed: hand it back now, so a later ack (which covers
        // every lower offset) can't acknowledge it unprocessed.
        let failed: Vec<Message> =
            std::mem::take(&mut *self.unacked.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
                .into_values()
                .collect();
        for message in failed {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
        let max = max.max(1);
        let mut messages = fetch(&self.consumer, max, None, self.publish_timeout).await?;
        if messages.is_empty() && !wait.is_zero() {
            // Wait for the first one, then take what else is there.
            messages =
                fetch(&self.consumer, 1, Some(wait.max(Duration::from_millis(10))), self.publish_timeout).await?;
            if !messages.is_empty() && max > 1 {
                messages.extend(fetch(&self.consumer, max - 1, None, self.publish_timeout).await?);
            }
        }
        Ok(self.take(messages))
    }

    async fn ack(&self, offset: u64) -> Result<(), StoreError> {
        let done: Vec<Message> = {
            let mut unacked = self.unacked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let rest = unacked.split_off(&(offset + 1));
            std::mem::replace(&mut *unacked, rest).into_values().collect()
        };
        for message in done {
            // A lost ack means a redelivery, which the consumer absorbs.
            message.ack().await.map_err(|e| StoreError::Unavailable(format!("nats ack: {e}")))?;
        }
        Ok(())
    }

    /// A PING answered by a PONG; at once unavailable while disconnected
    /// (a flush would wait for the reconnect).
    async fn ping(&self) -> Result<(), StoreError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(StoreError::Unavailable("nats: not connected".to_owned()));
        }
        self.client.flush().await.map_err(unavailable)
    }
}

/// A file-backed stream of one subject, with the configured copies and
/// age, and a two-minute window in which a message id is stored once.
pub(super) fn stream_config(config: &NatsQueueConfig, name: &str, subject: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        storage: StorageType::File,
        duplicate_window: Duration::from_secs(120),
        num_replicas: usize::from(config.replicas),
        max_age: config.max_age,
        ..Default::default()
    }
}

/// One pull of up to `max` messages, waiting up to `wait` for the first.
/// Bounded on this side too: a pull whose server went away (stopped,
/// restarted) is never answered, and the client would wait for a no-wait
/// pull's answer forever, which stops the consumer for good. What arrived
/// by the bound (`wait` and `slack`) is kept.
pub(super) async fn fetch(
    consumer: &PullConsumer,
    max: usize,
    wait: Option<Duration>,
    slack: Duration,
) -> Result<Vec<Message>, StoreError> {
    let bound = tokio::time::Instant::now() + wait.unwrap_or_default() + slack;
    let unanswered = || StoreError::Unavailable("nats: a pull got no answer".to_owned());
    let pull = async {
        match wait {
            None => consumer.fetch().max_messages(max).messages().await.map_err(unavailable).map(|m| m.boxed()),
            Some(wait) => consumer
                .batch()
                .max_messages(max)
                .expires(wait)
                .messages()
                .await
                .map_err(unavailable)
                .map(|m| m.boxed()),
        }
    };
    let mut messages = tokio::time::timeout_at(bound, pull).await.map_err(|_| unanswered())??;
    let mut fetched = Vec::new();
    loop {
        match tokio::time::timeout_at(bound, messages.next()).await {
            Ok(Some(Ok(message))) => fetched.push(message),
            Ok(None) => break,
            Ok(Some(Err(error))) if fetched.is_empty() => return Err(unavailable(error)),
            Err(_) if fetched.is_empty() => return Err(unanswered()),
            Ok(Some(Err(_))) | Err(_) => break,
        }
    }
    Ok(fetched)
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("nats: {error}"))
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;
    use crate::flow_contract::nats_config;

    /// A NATS server of the test's own, frozen (`SIGSTOP`) on request: its
    /// connections stay open and nothing is answered.
    struct OwnNats {
        process: std::process::Child,
        port: u16,
        _store: tempfile::TempDir,
    }

    impl OwnNats {
        fn start() -> Self {
            let port = crate::testing::free_port();
            let store = tempfile::tempdir().expect("tempdir");
            let process = Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(store.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts");
            // Owned at once, so that a panic below still stops it.
            let server = Self { process, port, _store: store };
            let mut server = server;
            for _ in 0..100 {
                // Ours, not whoever else might listen there.
                if let Ok(Some(status)) = server.process.try_wait() {
                    panic!("nats-server exited at start: {status}");
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("nats-server did not come up");
        }

        fn signal(&self, signal: &str) {
            let sent = Command::new("kill").args([signal, &self.process.id().to_string()]).status().expect("kill");
            assert!(sent.success());
        }

        /// Until the kernel shows the process stopped (`T` in
        /// `/proc/<pid>/stat`): `kill` returns once the signal is sent,
        /// and a poll sent before the server's threads stop may still be
        /// answered.
        fn wait_until_stopped(&self) {
            let stat = format!("/proc/{}/stat", self.process.id());
            for _ in 0..200 {
                let state = std::fs::read_to_string(&stat).expect("the server is alive");
                // `pid (comm) state ...`: the state follows the last ')'.
                if state.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('T')) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("nats-server never stopped");
        }
    }

    impl Drop for OwnNats {
        fn drop(&mut self) {
            self.signal("-CONT");
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }

    #[tokio::test]
    async fn a_poll_to_a_server_that_stopped_answering_fails_within_its_bound_instead_of_hanging() {
        let server = OwnNats::start();
        let config = NatsQueueConfig {
            url: format!("nats://127.0.0.1:{}", server.port),
            publish_timeout: Duration::from_millis(500),
            ..nats_config()
        };
        let queue = NatsQueue::open(&config).await.expect("open");
        assert_eq!(queue.poll(10, Duration::ZERO).await.map(|d| d.len()), Ok(0), "an empty queue answers");
        server.signal("-STOP");
        server.wait_until_stopped();
        for wait in [Duration::ZERO, Duration::from_millis(100)] {
            let polled = tokio::time::timeout(Duration::from_secs(10), queue.poll(10, wait)).await;
            let polled = polled.unwrap_or_else(|_| panic!("a poll waiting {wait:?} hung"));
            assert!(polled.is_err(), "nothing answered, so an error: {polled:?}");
        }
        server.signal("-CONT");
        let mut answered = Err(StoreError::Unavailable("not yet".to_owned()));
        for _ in 0..50 {
            answered = queue.poll(10, Duration::ZERO).await.map(|d| d.len());
            if answered.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(answered, Ok(0), "answering again once the server is back");
    }
}
