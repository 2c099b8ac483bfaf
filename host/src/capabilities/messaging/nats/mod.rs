//! The NATS JetStream bus. Each app gets a file-backed stream of its events, one of its dead
//! letters and one of redriven dead letters; a consumer group is a set of durable pull
//! consumers on the events stream, one per subscribed pattern (JetStream 2.9 filters a
//! consumer on a single subject), plus one on the redrive stream for its own subject there,
//! so the server keeps every group's position and pending redeliveries across host restarts.
//!
//! | stream | subjects | holds |
//! |---|---|---|
//! | `BERTH_<APP>_EVENTS` | `berth.<app>.events.<subject>` | every published message, for every group |
//! | `BERTH_<APP>_DEAD` | `berth.<app>.dead.<group>` | a group's dead letters, described by `Berth-*` headers |
//! | `BERTH_<APP>_REDRIVE` | `berth.<app>.redrive.<group>.<subject>` | dead letters sent back, each for its one group |

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, AckKind, ErrorCode, stream};
use async_nats::{Event, HeaderMap};
use futures::StreamExt as _;
use tokio::sync::{Mutex, mpsc, watch};

use super::{
    Bus, BusError, DeadLetter, Delivery, Message, Redrive, Redriven, Settle, SubscribeOptions,
    Subscription,
};

mod consumer;

use consumer::{NatsSettle, NatsSubscription, pull_loop};

/// Bounds every JetStream request, publish ack and double ack, so a bus that is down answers
/// `Unavailable` instead of holding the relay or a handler.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Events older than this leave the stream: shorter than the inbox remembers handled ids
/// (`outbox::INBOX_RETENTION`), so a consumer that is recreated and replays the stream can
/// never apply an event whose inbox record is gone.
const EVENTS_MAX_AGE: Duration = Duration::from_secs(6 * 24 * 3600);
/// Dead letters are kept a month for someone to look at.
const DEAD_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// A relay that crashed between publishing and clearing its outbox publishes again within
/// seconds; JetStream drops the copy when its `Nats-Msg-Id` was seen in this window.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long one pull request waits on the server for messages before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// `dead_letters` shows the most recent ones only.
const DEAD_LETTERS_SHOWN: u64 = 1000;
/// Dead letter reads in flight at once.
const DEAD_LETTER_READS: usize = 32;
/// Header values are one line; a longer error is cut here.
const MAX_ERROR_LEN: usize = 2048;

const MSG_ID: &str = "Nats-Msg-Id";
const TRACEPARENT: &str = "traceparent";
const DEAD_ID: &str = "Berth-Id";
const DEAD_GROUP: &str = "Berth-Group";
const DEAD_SUBJECT: &str = "Berth-Subject";
const DEAD_ATTEMPTS: &str = "Berth-Attempts";
const DEAD_ERROR: &str = "Berth-Error";
const DEAD_FAILED_AT: &str = "Berth-Failed-At";

pub struct NatsBus {
    shared: Arc<Shared>,
}

struct Shared {
    /// For messages: the configured URL without credentials.
    url: String,
    client: async_nats::Client,
    js: jetstream::Context,
    names: Names,
    /// Whether both streams are known to exist. Set only once creating them succeeded, and
    /// cleared when the server says one is missing, so the next call creates them again.
    streams_ready: AtomicBool,
    streams_setup: Mutex<()>,
    /// Bumped on every (re)connection: a pull request in flight died with the old one.
    connections: Arc<watch::Sender<u64>>,
}

/// JetStream names derived from the app's prefix.
struct Names {
    events_stream: String,
    dead_stream: String,
    redrive_stream: String,
    /// `berth.<prefix>.events.`, prepended to every subject on the wire.
    events_prefix: String,
    /// `berth.<prefix>.dead.`, followed by the group.
    dead_prefix: String,
    /// `berth.<prefix>.redrive.`, followed by the group and the message's subject: apart from
    /// the events, so that no other group's consumer (`>` included) ever matches it.
    redrive_prefix: String,
}

impl Names {
    fn new(token: &str) -> Names {
        let upper = token.to_ascii_uppercase().replace('-', "_");
        Names {
            events_stream: format!("BERTH_{upper}_EVENTS"),
            dead_stream: format!("BERTH_{upper}_DEAD"),
            redrive_stream: format!("BERTH_{upper}_REDRIVE"),
            events_prefix: format!("berth.{token}.events."),
            dead_prefix: format!("berth.{token}.dead."),
            redrive_prefix: format!("berth.{token}.redrive."),
        }
    }

    /// Where `group`'s dead letters are stored.
    fn dead_subject(&self, group: &str) -> String {
        format!("{}{}", self.dead_prefix, group_token(group))
    }

    /// `berth.<prefix>.redrive.<group>.`: what `group`'s redrive consumer takes.
    fn redrive_group_prefix(&self, group: &str) -> String {
        format!("{}{}.", self.redrive_prefix, group_token(group))
    }
}

/// A group as one subject token. Groups are letters, digits, `-` and `_` (checked at load),
/// so this is the group itself.
fn group_token(group: &str) -> String {
    let mut token = sanitize(group);
    if token.is_empty() {
        token.push('_');
    }
    token
}

impl NatsBus {
    /// Returns at once even when NATS is down: the client keeps connecting in the background
    /// (and reconnecting forever), and the streams are created on first use.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<NatsBus> {
        let token = sanitize(prefix);
        if token.is_empty() {
            anyhow::bail!("the NATS stream prefix is empty");
        }
        let shown = redact(url);
        let connections = Arc::new(watch::Sender::new(0u64));
        let client = async_nats::ConnectOptions::new()
            .name("berth")
            .retry_on_initial_connect()
            .event_callback({
                let shown = shown.clone();
                let connections = connections.clone();
                move |event| {
                    let shown = shown.clone();
                    let connections = connections.clone();
                    async move { connection_event(&shown, &connections, event) }
                }
            })
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot use the NATS URL {shown}: {e}"))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(TIMEOUT)
            .build(client.clone());
        Ok(NatsBus {
            shared: Arc::new(Shared {
                url: shown,
                client,
                js,
                names: Names::new(&token),
                streams_ready: AtomicBool::new(false),
                streams_setup: Mutex::new(()),
                connections,
            }),
        })
    }
}

fn connection_event(url: &str, connections: &watch::Sender<u64>, event: Event) {
    match event {
        Event::Connected => {
            connections.send_modify(|n| *n += 1);
            tracing::info!(url, "NATS: connected");
        }
        Event::Disconnected => {
            tracing::warn!(
                url,
                "NATS: disconnected; reconnecting, events wait in the outboxes"
            )
        }
        Event::Closed => tracing::info!(url, "NATS: connection closed"),
        Event::LameDuckMode => tracing::warn!(url, "NATS: the server is shutting down"),
        Event::SlowConsumer(_) => tracing::warn!(url, "NATS: slow consumer, messages dropped"),
        Event::ServerError(e) => tracing::warn!(url, "NATS: server error: {e}"),
        // Mostly each failed reconnect attempt, already covered by `Disconnected`.
        Event::ClientError(e) => tracing::debug!(url, "NATS: client error: {e}"),
        Event::Draining => tracing::debug!(url, "NATS: draining"),
    }
}

impl Shared {
    /// Fails fast while disconnected: requests would only queue in the client until timeout,
    /// and publishes queued there would reach the server long after the caller gave up.
    fn require_connected(&self) -> Result<(), BusError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            State::Pending => Err(BusError::Unavailable(format!(
                "NATS at {} is unreachable (still connecting)",
                self.url
            ))),
            State::Disconnected => Err(BusError::Unavailable(format!(
                "NATS at {} is unreachable (reconnecting)",
                self.url
            ))),
        }
    }

    /// Creates both streams unless they are known to exist. Existing streams are left as they
    /// are, so an operator may tune their limits or replicas.
    async fn ensure_streams(&self) -> Result<(), BusError> {
        if self.streams_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _setup = self.streams_setup.lock().await;
        if self.streams_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.require_connected()?;
        let names = &self.names;
        for (name, subjects, max_age) in [
            (
                &names.events_stream,
                format!("{}>", names.events_prefix),
                EVENTS_MAX_AGE,
            ),
            (
                &names.dead_stream,
                format!("{}>", names.dead_prefix),
                DEAD_MAX_AGE,
            ),
            // Redriven messages age like events, for the same reason (a recreated consumer
            // replays them, and the inbox must still know those it handled).
            (
                &names.redrive_stream,
                format!("{}>", names.redrive_prefix),
                EVENTS_MAX_AGE,
            ),
        ] {
            self.js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![subjects],
                    storage: stream::StorageType::File,
                    duplicate_window: DUPLICATE_WINDOW,
                    max_age,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    use jetstream::context::CreateStreamErrorKind as Kind;
                    let text = format!("cannot create the stream {name} on {}: {e}", self.url);
                    match e.kind() {
                        Kind::JetStreamUnavailable | Kind::TimedOut | Kind::Response => {
                            BusError::Unavailable(text)
                        }
                        _ => BusError::Failed(text),
                    }
                })?;
        }
        self.streams_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// `group`'s dead letter `id` (as [`dead_letter`] names it), oldest first: each request
    /// skips to the group's next one, so redriving a whole list oldest first finds each at
    /// once.
    async fn find_dead_letter(
        &self,
        dead: &stream::Stream,
        group: &str,
        id: &str,
    ) -> Result<Option<jetstream::message::StreamMessage>, BusError> {
        let subject = self.names.dead_subject(group);
        let mut from = 1;
        loop {
            let message = match dead.get_first_raw_message_by_subject(&subject, from).await {
                Ok(message) => message,
                Err(e)
                    if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    return Ok(None);
                }
                Err(e) => {
                    return Err(BusError::Unavailable(format!(
                        "reading the dead letters from NATS at {}: {e}",
                        self.url
                    )));
                }
            };
            let letter = dead_letter(&self.names, message.clone());
            if letter.group == group && letter.id == id {
                return Ok(Some(message));
            }
            from = message.sequence + 1;
        }
    }

    fn stream_missing(&self) {
        self.streams_ready.store(false, Ordering::Release);
    }

    fn get_stream_error(&self, name: &str, e: jetstream::context::GetStreamError) -> BusError {
        if let jetstream::context::GetStreamErrorKind::JetStream(js) = e.kind()
            && js.error_code() == ErrorCode::STREAM_NOT_FOUND
        {
            self.stream_missing();
        }
        BusError::Unavailable(format!(
            "the stream {name} on NATS at {} is unreachable: {e}",
            self.url
        ))
    }

    /// Publishes and waits for JetStream's ack: the message is stored once this returns.
    async fn publish_acked(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<(), BusError> {
        let ack = self
            .js
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(|e| self.publish_error(e))?;
        ack.await.map(drop).map_err(|e| self.publish_error(e))
    }

    fn publish_error(&self, e: jetstream::context::PublishError) -> BusError {
        use jetstream::context::PublishErrorKind as Kind;
        let text = format!("publishing to NATS at {}: {e}", self.url);
        match e.kind() {
            Kind::StreamNotFound => {
                self.stream_missing();
                BusError::Unavailable(text)
            }
            Kind::TimedOut | Kind::BrokenPipe | Kind::MaxAckPending => BusError::Unavailable(text),
            _ => BusError::Failed(text),
        }
    }

    /// `group`'s consumer of the events stream for `pattern`.
    fn consumer_config(&self, group: &str, pattern: &str, options: SubscribeOptions) -> Consumer {
        Consumer {
            stream: self.names.events_stream.clone(),
            config: pull_config(
                durable_name(group, pattern),
                format!("berth consumer group {group} on {pattern}"),
                format!("{}{pattern}", self.names.events_prefix),
                options,
            ),
        }
    }

    /// `group`'s consumer of the redrive stream: its own dead letters sent back.
    fn redrive_consumer_config(&self, group: &str, options: SubscribeOptions) -> Consumer {
        Consumer {
            stream: self.names.redrive_stream.clone(),
            config: pull_config(
                // On a stream of its own: no pattern's consumer can share its name.
                durable_name(group, ""),
                format!("berth consumer group {group} on its redriven dead letters"),
                format!("{}>", self.names.redrive_group_prefix(group)),
                options,
            ),
        }
    }

    /// Creates the durable consumer, or updates it when its settings changed (lease, batch).
    /// A change the server refuses to apply in place replaces the consumer.
    async fn upsert_consumer(&self, consumer: &Consumer) -> Result<PullConsumer, BusError> {
        self.ensure_streams().await?;
        let Consumer { stream, config } = consumer;
        let name = config.durable_name.as_deref().unwrap_or_default();
        match self
            .js
            .create_consumer_on_stream(config.clone(), stream)
            .await
        {
            Ok(consumer) => return Ok(consumer),
            Err(e) => match e.kind() {
                jetstream::stream::ConsumerErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    self.stream_missing();
                    self.ensure_streams().await?;
                }
                // It exists with settings the server cannot change in place: replace it.
                jetstream::stream::ConsumerErrorKind::JetStream(refused) => {
                    if self
                        .js
                        .delete_consumer_from_stream(name, stream)
                        .await
                        .is_err()
                    {
                        return Err(BusError::Failed(format!(
                            "NATS at {} refused the consumer {name}: {refused}",
                            self.url
                        )));
                    }
                    tracing::warn!(
                        consumer = name,
                        "NATS: replaced consumer {name}, whose settings could not be updated in place ({refused}); the group gets the stream's messages again and its inbox skips those it handled"
                    );
                }
                _ => return Err(self.consumer_error(name, e)),
            },
        }
        self.js
            .create_consumer_on_stream(config.clone(), stream)
            .await
            .map_err(|e| self.consumer_error(name, e))
    }

    fn consumer_error(&self, name: &str, e: jetstream::stream::ConsumerError) -> BusError {
        use jetstream::stream::ConsumerErrorKind as Kind;
        let text = format!(
            "cannot set up the NATS consumer {name} on {}: {e}",
            self.url
        );
        match e.kind() {
            Kind::TimedOut | Kind::Request => BusError::Unavailable(text),
            _ => BusError::Failed(text),
        }
    }

    /// Turns a JetStream message into a delivery settled through its ack subject.
    fn delivery(self: &Arc<Self>, message: jetstream::Message, group: &Arc<str>) -> Delivery {
        let (attempt, stored_as) = match message.info() {
            Ok(info) => (
                u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1),
                Some(format!("{}:{}", info.stream, info.stream_sequence)),
            ),
            Err(_) => (1, None),
        };
        let (message, acker) = message.split();
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let wire = message.subject.as_str();
        // A redriven dead letter (`redrive.<group>.<subject>`, only ever pulled by its own
        // group's consumer) carries its id apart from `Nats-Msg-Id`, which must differ from
        // the original publish's for the stream not to drop it as a duplicate.
        let redriven = wire
            .strip_prefix(self.names.redrive_prefix.as_str())
            .and_then(|rest| rest.split_once('.'));
        let (subject, id) = match redriven {
            Some((_group, subject)) => (subject, header(DEAD_ID)),
            None => (
                wire.strip_prefix(self.names.events_prefix.as_str())
                    .unwrap_or(wire),
                header(MSG_ID),
            ),
        };
        let subject = subject.to_owned();
        // Published by someone other than berth: the stream position still identifies it.
        let id = id
            .or_else(|| stored_as.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let message = Message {
            id,
            subject,
            body: message.payload.to_vec(),
            traceparent: header(TRACEPARENT),
        };
        Delivery {
            message: message.clone(),
            attempt,
            settle: Box::new(NatsSettle {
                shared: self.clone(),
                acker,
                group: group.clone(),
                message,
                attempt,
                stored_as,
            }),
        }
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        if messages.is_empty() {
            return Ok(());
        }
        for message in messages {
            // The server ignores a malformed subject, which would read as an outage.
            super::subject::check(&message.subject, false).map_err(BusError::Failed)?;
        }
        let shared = &self.shared;
        shared.ensure_streams().await?;
        shared.require_connected()?;
        let send_and_confirm = async {
            // Send everything first so the acks come back together, then wait for each.
            let mut acks = Vec::with_capacity(messages.len());
            for message in messages {
                let mut headers = HeaderMap::new();
                headers.insert(MSG_ID, one_line(&message.id));
                if let Some(traceparent) = &message.traceparent {
                    headers.insert(TRACEPARENT, one_line(traceparent));
                }
                let subject = format!("{}{}", shared.names.events_prefix, message.subject);
                let ack = shared
                    .js
                    .publish_with_headers(subject, headers, message.body.clone().into())
                    .await
                    .map_err(|e| shared.publish_error(e))?;
                acks.push(ack.into_future());
            }
            futures::future::try_join_all(acks)
                .await
                .map(drop)
                .map_err(|e| shared.publish_error(e))
        };
        tokio::time::timeout(TIMEOUT, send_and_confirm)
            .await
            .unwrap_or_else(|_| {
                Err(BusError::Unavailable(format!(
                    "NATS at {} did not confirm the messages within {TIMEOUT:?}",
                    shared.url
                )))
            })
    }

    async fn subscribe(
        &self,
        group: &str,
        patterns: &[String],
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let shared = &self.shared;
        shared.require_connected()?;
        let mut configs: Vec<Consumer> = vec![shared.redrive_consumer_config(group, options)];
        for pattern in patterns {
            // The server answers a malformed filter with silence, which would read as an outage.
            super::subject::check(pattern, true).map_err(BusError::Failed)?;
            let config = shared.consumer_config(group, pattern, options);
            if !configs.iter().any(|c| {
                (&c.stream, &c.config.durable_name) == (&config.stream, &config.config.durable_name)
            }) {
                configs.push(config);
            }
        }
        // Every consumer exists before any task pulls, so a failure leaves nothing running.
        let mut consumers = Vec::with_capacity(configs.len());
        for config in configs {
            let consumer = shared.upsert_consumer(&config).await?;
            consumers.push((config, consumer));
        }
        let batch = options.batch.max(1);
        let (sender, deliveries) = mpsc::channel(batch);
        let group: Arc<str> = group.into();
        for (config, consumer) in consumers {
            tokio::spawn(pull_loop(
                shared.clone(),
                config,
                consumer,
                group.clone(),
                sender.clone(),
                batch,
            ));
        }
        Ok(Box::new(NatsSubscription {
            deliveries,
            _open: sender,
        }))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        let shared = &self.shared;
        shared.ensure_streams().await?;
        let unavailable = |e: &dyn std::fmt::Display| {
            BusError::Unavailable(format!(
                "reading the dead letters from NATS at {}: {e}",
                shared.url
            ))
        };
        let dead = shared
            .js
            .get_stream(&shared.names.dead_stream)
            .await
            .map_err(|e| shared.get_stream_error(&shared.names.dead_stream, e))?;
        let state = dead.cached_info().state.clone();
        if state.messages == 0 {
            return Ok(Vec::new());
        }
        let first = state
            .first_sequence
            .max(state.last_sequence.saturating_sub(DEAD_LETTERS_SHOWN - 1));
        let dead = &dead;
        let stored: Vec<_> = futures::stream::iter(first..=state.last_sequence)
            .map(|seq| async move { dead.get_raw_message(seq).await })
            .buffered(DEAD_LETTER_READS)
            .collect()
            .await;
        let mut letters = Vec::with_capacity(stored.len());
        for message in stored {
            match message {
                Ok(message) => letters.push(dead_letter(&shared.names, message)),
                // Removed from the stream (purged, or by a limit) since the state was read.
                Err(e)
                    if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(unavailable(&e)),
            }
        }
        Ok(letters)
    }

    async fn redrive(&self, group: &str, id: &str) -> Result<Redrive, BusError> {
        let shared = &self.shared;
        shared.ensure_streams().await?;
        shared.require_connected()?;
        let dead = shared
            .js
            .get_stream(&shared.names.dead_stream)
            .await
            .map_err(|e| shared.get_stream_error(&shared.names.dead_stream, e))?;
        let Some(letter) = shared.find_dead_letter(&dead, group, id).await? else {
            return Ok(Redrive::NotFound);
        };
        let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned());
        let Some(subject) = header(DEAD_SUBJECT) else {
            return Err(BusError::Failed(format!(
                "the dead letter {id} of group {group} has no {DEAD_SUBJECT} header (berth did not write it), so its subject is unknown: publish it again instead"
            )));
        };
        super::subject::check(&subject, false).map_err(BusError::Failed)?;
        let mut headers = HeaderMap::new();
        // One id per dead letter stored: a redrive that is retried (the delete below was
        // lost) is stored once, while the original publish's id would be dropped as a
        // duplicate within the window.
        headers.insert(
            MSG_ID,
            format!("{}:{}", shared.names.dead_stream, letter.sequence),
        );
        headers.insert(DEAD_ID, one_line(id));
        headers.insert(DEAD_GROUP, one_line(group));
        if let Some(traceparent) = header(TRACEPARENT) {
            headers.insert(TRACEPARENT, one_line(&traceparent));
        }
        shared
            .publish_acked(
                format!("{}{subject}", shared.names.redrive_group_prefix(group)),
                headers,
                letter.payload.to_vec(),
            )
            .await?;
        // Stored for the group: now it is no longer dead. Should this fail, the letter stays
        // listed and a second redrive is harmless: the stream drops the copy in the window,
        // and the group's inbox skips it once handled after that.
        dead.delete_message(letter.sequence).await.map_err(|e| {
            BusError::Unavailable(format!(
                "redriven, but the dead letter {id} of group {group} could not be removed from NATS at {}: {e}",
                shared.url
            ))
        })?;
        Ok(Redrive::Redriven(Redriven {
            group: group.to_owned(),
            id: id.to_owned(),
            subject,
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        let shared = &self.shared;
        shared.require_connected()?;
        shared.ensure_streams().await?;
        let events = &shared.names.events_stream;
        match shared.js.get_stream(events).await {
            Ok(_) => Ok(()),
            Err(e) => Err(shared.get_stream_error(events, e)),
        }
    }
}

/// Reads a dead letter back from the headers `NatsSettle::dead_letter` wrote.
fn dead_letter(names: &Names, message: jetstream::message::StreamMessage) -> DeadLetter {
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    let group = header(DEAD_GROUP).unwrap_or_else(|| {
        message
            .subject
            .as_str()
            .strip_prefix(names.dead_prefix.as_str())
            .unwrap_or(message.subject.as_str())
            .to_owned()
    });
    DeadLetter {
        id: header(DEAD_ID)
            .unwrap_or_else(|| format!("{}:{}", names.dead_stream, message.sequence)),
        group,
        subject: header(DEAD_SUBJECT).unwrap_or_default(),
        body: super::printable(&message.payload),
        attempts: header(DEAD_ATTEMPTS)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
        error: header(DEAD_ERROR).unwrap_or_default(),
        failed_at: header(DEAD_FAILED_AT)
            .unwrap_or_else(|| crate::telemetry::rfc3339(SystemTime::from(message.time))),
    }
}

/// `text` as one NATS token: ASCII letters, digits, `-` and `_`; anything else becomes `_`.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A durable consumer and the stream it reads.
#[derive(Clone)]
pub(super) struct Consumer {
    stream: String,
    config: pull::Config,
}

/// The settings every durable consumer of a group shares.
fn pull_config(
    durable: String,
    description: String,
    filter_subject: String,
    options: SubscribeOptions,
) -> pull::Config {
    pull::Config {
        durable_name: Some(durable),
        description: Some(description),
        // A group that subscribes late still gets what the stream holds and it never acked.
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.lease,
        // The host counts attempts and dead-letters; the server never gives up on its own.
        max_deliver: -1,
        filter_subject,
        // Room for a batch queued, a batch being handled, and messages waiting on a retry.
        max_ack_pending: i64::try_from(options.batch.max(1).saturating_mul(4).max(256))
            .unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// The durable consumer of `group` for `pattern`: stable across restarts, so the group keeps
/// its position. The hash covers the group too, as sanitizing may map two groups to one name.
fn durable_name(group: &str, pattern: &str) -> String {
    let mut readable = sanitize(group);
    readable.truncate(64);
    format!(
        "{readable}_{:08x}",
        fnv1a32(&[group.as_bytes(), b"\0", pattern.as_bytes()])
    )
}

/// 32-bit FNV-1a: tiny, and fixed forever (unlike std's hasher), which durable names need.
fn fnv1a32(parts: &[&[u8]]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Header values are single lines; the client panics on CR or LF.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The URL without a user or password, for logs and errors.
fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}{}", &one[..scheme + 3], &one[at + 1..])
            }
            (None, Some(at)) => one[at + 1..].to_owned(),
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_nats_safe_and_stable() {
        let names = Names::new(&sanitize("berth-shop"));
        assert_eq!(names.events_stream, "BERTH_BERTH_SHOP_EVENTS");
        assert_eq!(names.dead_stream, "BERTH_BERTH_SHOP_DEAD");
        assert_eq!(names.events_prefix, "berth.berth-shop.events.");
        assert_eq!(sanitize("my app.v2/*"), "my_app_v2__");
        assert_eq!(
            durable_name("order", "payment.*"),
            durable_name("order", "payment.*")
        );
        assert_ne!(
            durable_name("order", "payment.*"),
            durable_name("order", "payment.>")
        );
        assert_ne!(durable_name("a.b", "x"), durable_name("a_b", "x"));
        assert_eq!(fnv1a32(&[b"a"]), 0xe40c_292c);
    }

    /// A real `nats-server -js` on a free port of 127.0.0.1, killed when dropped.
    struct Server {
        port: u16,
        _store: tempfile::TempDir,
        child: std::process::Child,
    }

    impl Server {
        async fn start() -> Server {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let store = tempfile::tempdir().unwrap();
            let child = std::process::Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(store.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("nats-server is installed (apt-get install nats-server)");
            Server {
                port,
                _store: store,
                child,
            }
        }

        /// A bus on this server, once it answers.
        async fn bus(&self) -> NatsBus {
            let bus = NatsBus::connect(&format!("nats://127.0.0.1:{}", self.port), "unit")
                .await
                .unwrap();
            for _ in 0..100 {
                if bus.ping().await.is_ok() {
                    return bus;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("nats-server never answered");
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    const OPTIONS: SubscribeOptions = SubscribeOptions {
        lease: Duration::from_secs(30),
        batch: 8,
    };

    async fn next(sub: &mut Box<dyn Subscription>, wait: Duration) -> Option<Delivery> {
        tokio::time::timeout(wait, sub.next()).await.ok().flatten()
    }

    #[tokio::test]
    async fn a_redriven_dead_letter_goes_back_to_its_group_only() {
        let server = Server::start().await;
        let bus = server.bus().await;
        let soon = Duration::from_secs(10);
        let quiet = Duration::from_millis(1500);
        // `>` would match a redrive subject among the events: it must never see one.
        let mut everything = bus.subscribe("all", &[">".into()], OPTIONS).await.unwrap();
        let mut failing = bus.subscribe("h", &["a.x".into()], OPTIONS).await.unwrap();
        let original = Message {
            id: "0190b3c1-7f2a-7c3e-9a1b-2c3d4e5f6a7b".into(),
            subject: "a.x".into(),
            body: b"{\"n\":1}".to_vec(),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        bus.publish(std::slice::from_ref(&original)).await.unwrap();
        let handled = next(&mut everything, soon).await.expect("delivered to all");
        handled.settle.ack().await.unwrap();
        let dead = next(&mut failing, soon).await.expect("delivered to h");
        dead.settle.dead_letter("it broke").await.unwrap();
        let letters = bus.dead_letters().await.unwrap();
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(
            (letters[0].group.as_str(), letters[0].id.as_str()),
            ("h", original.id.as_str())
        );

        assert_eq!(
            bus.redrive("all", &original.id).await.unwrap(),
            Redrive::NotFound
        );
        // Twice within the duplicate window, failing again in between: neither the redrive
        // nor the second dead letter may be dropped as a copy of an earlier publish.
        for round in 1..=2 {
            assert_eq!(
                bus.redrive("h", &original.id).await.unwrap(),
                Redrive::Redriven(Redriven {
                    group: "h".into(),
                    id: original.id.clone(),
                    subject: "a.x".into(),
                }),
                "round {round}"
            );
            assert!(
                bus.dead_letters().await.unwrap().is_empty(),
                "round {round}"
            );
            let again = next(&mut failing, soon).await.expect("redriven to h");
            assert_eq!(
                again.message, original,
                "round {round}: same id, subject, body, traceparent"
            );
            assert_eq!(again.attempt, 1, "round {round}: attempts start over");
            if round == 1 {
                again.settle.dead_letter("it broke again").await.unwrap();
                let letters = bus.dead_letters().await.unwrap();
                assert_eq!(letters.len(), 1, "{letters:?}");
                assert_eq!(letters[0].error, "it broke again");
            } else {
                again.settle.ack().await.unwrap();
            }
        }
        assert!(next(&mut failing, quiet).await.is_none());
        assert!(
            next(&mut everything, quiet).await.is_none(),
            "handled once, never redriven to it"
        );
        assert_eq!(
            bus.redrive("h", &original.id).await.unwrap(),
            Redrive::NotFound
        );
    }

    #[test]
    fn header_values_stay_on_one_line() {
        assert_eq!(one_line("boom\r\nInjected: 1"), "boom  Injected: 1");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(redact("nats://u:p@host:4222"), "nats://host:4222");
        assert_eq!(redact("nats://host:4222"), "nats://host:4222");
    }
}
