//! Live subscriptions end to end, with a real WebSocket client that speaks
//! graphql-transport-ws as JSON by hand (none of the server's types): the simulated exchange
//! → the collector → the live bus → the server → the client, whose book must equal the
//! exchange's truth at every checkpoint, live and across the seam of a replay; and every kind
//! of bad connection refused with a clear code while the server stays healthy.

mod api;
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use api::{TestServer, codes, now_us, rfc3339};
use common::TestEnv;
use common::exchange::{
    PATIENCE, collector_config, reconnect_all, sim_shape, start_sim, wait_subscribed,
};
use futures_util::{SinkExt, StreamExt};
use kalshibook::accounts::Actor;
use kalshibook::live::{Bus, FeedPosition, LiveEvent};
use kalshibook::market::{Book, Price, Side, Size};
use kalshibook::postgres::accounts::AccountStore;
use kalshibook::server::AppState;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A graphql-transport-ws client written against the protocol text, not the server's code.
struct Client {
    socket: Socket,
}

/// How the server ended a connection.
#[derive(Debug)]
struct Closed {
    code: u16,
    reason: String,
}

impl Client {
    async fn connect(server: &TestServer, protocol: &str, header_key: Option<&str>) -> Self {
        let mut request = format!("ws://{}/graphql", server.address)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
        if let Some(key) = header_key {
            request
                .headers_mut()
                .insert("x-api-key", HeaderValue::from_str(key).unwrap());
        }
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket handshake");
        assert_eq!(
            response.headers().get("sec-websocket-protocol").unwrap(),
            protocol
        );
        Self { socket }
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
    }

    async fn send_raw(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    /// The next protocol message; `Err` with the close frame when the server closes.
    async fn next(&mut self) -> Result<Value, Closed> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("the server neither sent nor closed");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    if value["type"] == "ping" {
                        self.send(json!({"type": "pong"})).await;
                        continue;
                    }
                    return Ok(value);
                }
                Some(Ok(Message::Close(frame))) => {
                    let frame = frame.expect("a close frame with a code");
                    return Err(Closed {
                        code: frame.code.into(),
                        reason: frame.reason.to_string(),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("socket error: {error}"),
                None => panic!("the socket ended without a close frame"),
            }
        }
    }

    async fn init(&mut self, key: Option<&str>) {
        let payload = key.map_or(json!({}), |k| json!({ "apiKey": k }));
        self.send(json!({"type": "connection_init", "payload": payload}))
            .await;
        let ack = self.next().await.expect("connection_ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
    }

    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({
            "type": "subscribe",
            "id": id,
            "payload": { "query": query, "variables": variables }
        }))
        .await;
    }

    async fn closed(&mut self) -> Closed {
        loop {
            match self.next().await {
                Ok(_) => {}
                Err(closed) => return closed,
            }
        }
    }
}

/// A client-side book built only from the messages: the thing that must equal the truth.
#[derive(Default, Debug)]
struct ClientBook {
    /// Messages of many markets (`deltas`): no single book to hold.
    multi: bool,
    book: Option<BTreeMap<(Side, Price), Size>>,
    /// Per (conn, sid, market): every seq received, to find repeats and order violations.
    /// (The markets of one exchange subscription share its seq; a `deltas` subscription
    /// promises each market's order, not an order across markets.)
    seqs: HashMap<(u64, u64, String), Vec<u64>>,
    /// DELTA messages received (equal to `deltas.len()` when none repeated).
    delta_messages: usize,
    /// (conn, sid, seq) of every DELTA.
    deltas: BTreeSet<(u64, u64, u64)>,
    caught_up: bool,
    live_before_caught_up: bool,
    replayed: usize,
    live: usize,
    resyncs: usize,
    gaps: usize,
    snapshots: usize,
}

fn side(text: &Value) -> Side {
    match text.as_str() {
        Some("YES") => Side::Yes,
        Some("NO") => Side::No,
        other => panic!("side {other:?}"),
    }
}

impl ClientBook {
    fn apply(&mut self, update: &Value) {
        let kind = update["kind"].as_str().expect("kind");
        if kind == "SNAPSHOT" || kind == "DELTA" {
            if update["live"] == true {
                self.live += 1;
                if !self.caught_up {
                    self.live_before_caught_up = true;
                }
            } else {
                self.replayed += 1;
            }
            let stream = (
                update["conn"].as_u64().expect("conn"),
                // A replay's first book, read from storage, names no sid.
                update["sid"].as_u64().unwrap_or(0),
                update["ticker"].as_str().unwrap_or_default().to_owned(),
            );
            self.seqs
                .entry(stream)
                .or_default()
                .push(update["seq"].as_u64().expect("seq"));
        }
        match kind {
            "SNAPSHOT" | "DELTA" if self.multi => {
                // A multi-market `deltas` stream: positions only (its books are not compared).
                if kind == "DELTA" {
                    self.record_delta(update);
                } else {
                    self.snapshots += 1;
                }
            }
            "SNAPSHOT" => {
                self.snapshots += 1;
                if update["resync"] == true {
                    self.resyncs += 1;
                }
                let mut book = BTreeMap::new();
                for (key, s) in [("yes", Side::Yes), ("no", Side::No)] {
                    for level in update[key].as_array().expect("levels") {
                        let price: Price = level["price"].as_str().unwrap().parse().unwrap();
                        let size: Size = level["size"].as_str().unwrap().parse().unwrap();
                        book.insert((s, price), size);
                    }
                }
                self.book = Some(book);
            }
            "DELTA" => {
                self.record_delta(update);
                let book = self.book.as_mut().expect("a DELTA before any SNAPSHOT");
                for change in update["changes"].as_array().expect("changes") {
                    let price: Price = change["price"].as_str().unwrap().parse().unwrap();
                    let delta: Size = change["delta"].as_str().unwrap().parse().unwrap();
                    let key = (side(&change["side"]), price);
                    let size = book.get(&key).map_or(0, |s| s.units()) + delta.units();
                    assert!(size >= 0, "a level went negative: {update}");
                    if size == 0 {
                        book.remove(&key);
                    } else {
                        book.insert(key, Size::from_units(size));
                    }
                }
            }
            "GAP" => {
                self.gaps += 1;
                self.book = None;
            }
            "CAUGHT_UP" => {
                assert!(!self.caught_up, "CAUGHT_UP twice");
                self.caught_up = true;
            }
            "HEARTBEAT" => {}
            other => panic!("unknown kind {other}"),
        }
    }

    fn record_delta(&mut self, update: &Value) {
        self.delta_messages += 1;
        self.deltas.insert((
            update["conn"].as_u64().unwrap(),
            update["sid"].as_u64().unwrap(),
            update["seq"].as_u64().unwrap(),
        ));
    }

    fn equals(&self, truth: &Book) -> bool {
        let truth: BTreeMap<(Side, Price), Size> =
            truth.levels().map(|(s, p, z)| ((s, p), z)).collect();
        self.book.as_ref() == Some(&truth)
    }

    /// No sequence number repeated or out of order within any (conn, sid) stream.
    fn assert_sequences(&self) {
        for (stream, seqs) in &self.seqs {
            for pair in seqs.windows(2) {
                assert!(
                    pair[0] < pair[1],
                    "stream {stream:?}: seq {} then {}",
                    pair[0],
                    pair[1]
                );
            }
        }
    }
}

/// An account on the Free tier with one key.
async fn api_key(env: &TestEnv, email: &str) -> (AccountStore, String, uuid::Uuid, uuid::Uuid) {
    let store = AccountStore::new(kalshibook::postgres::pool(&env.config.postgres).unwrap());
    let user = store
        .create_account(email, "correct horse battery", &Actor::System)
        .await
        .expect("account");
    let created = store
        .create_key(user.account_id, "live", &Actor::User(user.id))
        .await
        .expect("key");
    (
        store,
        created.key.expose().to_owned(),
        user.account_id,
        created.info.id,
    )
}

const BOOK: &str = "subscription($t: String!, $from: DateTime) {
  orderbook(ticker: $t, from: $from) {
    kind ticker at conn sid seq resync live
    yes { price size } no { price size }
    changes { side price delta }
  }
}";

const DELTAS: &str = "subscription($ts: [String!]!, $from: DateTime) {
  deltas(tickers: $ts, from: $from) {
    kind ticker at conn sid seq resync live
    yes { price size } no { price size }
    changes { side price delta }
  }
}";

/// Reads `client` and applies each `next` to the book of its id until `done` holds.
async fn read_until(
    client: &mut Client,
    books: &mut HashMap<String, ClientBook>,
    field: &str,
    mut done: impl FnMut(&HashMap<String, ClientBook>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done(books) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client never reached the expected state: {books:#?}"
        );
        let message = client.next().await.expect("open");
        assert_eq!(message["type"], "next", "{message}");
        let id = message["id"].as_str().unwrap().to_owned();
        let payload = &message["payload"];
        assert!(payload.get("errors").is_none(), "{message}");
        let multi = id == "deltas";
        books
            .entry(id)
            .or_insert_with(|| ClientBook {
                multi,
                ..ClientBook::default()
            })
            .apply(&payload["data"][if multi { "deltas" } else { field }]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_replayed_books_equal_the_exchange_truth_across_the_seam() {
    let env = TestEnv::migrated().await;
    let (sim, sim_shutdown) = start_sim(sim_shape(6, 0x6b62_11fe, 300)).await;
    // Replays start 10 minutes ago: before the collector started, so they replay all of its
    // history (the simulator has no clock offset to make older history) and cross the seam.
    let from = rfc3339(now_us() - 600_000_000);
    let bus = Bus::default();
    let config = collector_config(&env, &sim, 3);
    let collector_shutdown = CancellationToken::new();
    let collector = kalshibook::collector::start(&config, bus.clone(), collector_shutdown.clone())
        .await
        .expect("collector");
    let mut state = AppState::new(&env.config).unwrap();
    state.bus = Some(bus.clone());
    let server = TestServer::start_state(state).await;
    let (_, key, _, _) = api_key(&env, "live@example.com").await;
    wait_subscribed(&sim).await;
    let market = sim.active_markets()[0].clone();
    // Let history accumulate before the replays start, so they have something to replay.
    tokio::time::timeout(PATIENCE, async {
        while !bus.knows(&market) {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the collector publishes the market");
    tokio::time::sleep(Duration::from_secs(2)).await; // pacing only

    let mut live = Client::connect(&server, "graphql-transport-ws", None).await;
    live.init(Some(&key)).await;
    live.subscribe("book", BOOK, json!({ "t": market })).await;
    let mut replay = Client::connect(&server, "graphql-transport-ws", None).await;
    replay.init(Some(&key)).await;
    replay
        .subscribe("book", BOOK, json!({ "t": market, "from": from }))
        .await;
    let all = sim.active_markets();
    replay
        .subscribe("deltas", DELTAS, json!({ "ts": all, "from": from }))
        .await;

    let mut live_books: HashMap<String, ClientBook> = HashMap::new();
    let mut replay_books: HashMap<String, ClientBook> = HashMap::new();
    for checkpoint in 0..3 {
        if checkpoint == 1 {
            // An upstream reconnect: the stream must say so and re-snapshot, not jump.
            reconnect_all(&sim).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await; // pacing only: let the market trade
        sim.pause_generation();
        let truth = sim.book(&market).expect("truth");
        read_until(&mut live, &mut live_books, "orderbook", |b| {
            b.get("book").is_some_and(|b| b.equals(&truth))
        })
        .await;
        read_until(&mut replay, &mut replay_books, "orderbook", |b| {
            b.get("book")
                .is_some_and(|b| b.caught_up && b.equals(&truth))
        })
        .await;
        sim.resume_generation();
    }

    let live_book = &live_books["book"];
    live_book.assert_sequences();
    assert_eq!(live_book.delta_messages, live_book.deltas.len());
    assert!(
        live_book.resyncs >= 1,
        "the reconnect was re-snapshotted: {live_book:?}"
    );
    assert_eq!(live_book.replayed, 0);
    let replayed = &replay_books["book"];
    replayed.assert_sequences();
    assert!(
        replayed.caught_up && !replayed.live_before_caught_up,
        "{replayed:?}"
    );
    assert!(
        replayed.replayed > 0 && replayed.live > 0,
        "both sides of the seam: {replayed:?}"
    );

    // The multi-market replay: every stored delta of its markets exactly once, per
    // (conn, sid) stream in order, history and live together.
    sim.pause_generation();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let client = env.clickhouse();
    loop {
        let stored: Vec<(u64, u32, u64)> = client
            .query("SELECT conn, sid, seq FROM deltas WHERE has(?, market) ORDER BY conn, sid, seq")
            .bind(&all)
            .fetch_all()
            .await
            .unwrap();
        let stored: BTreeSet<(u64, u64, u64)> = stored
            .into_iter()
            .map(|(c, s, q)| (c, u64::from(s), q))
            .collect();
        let received = replay_books
            .get("deltas")
            .map(|d| d.deltas.clone())
            .unwrap_or_default();
        if !stored.is_empty() && stored == received {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deltas never matched the store: {} stored, {} received, missing {:?}, extra {:?}",
            stored.len(),
            received.len(),
            stored.difference(&received).take(5).collect::<Vec<_>>(),
            received.difference(&stored).take(5).collect::<Vec<_>>()
        );
        let message = replay.next().await.expect("open");
        if message["id"] == "deltas" {
            replay_books
                .entry("deltas".into())
                .or_insert_with(|| ClientBook {
                    multi: true,
                    ..ClientBook::default()
                })
                .apply(&message["payload"]["data"]["deltas"]);
        }
    }
    let deltas = &replay_books["deltas"];
    deltas.assert_sequences();
    assert_eq!(
        deltas.delta_messages,
        deltas.deltas.len(),
        "a delta was sent twice"
    );
    assert!(deltas.caught_up && deltas.replayed > 0, "{deltas:?}");

    collector_shutdown.cancel();
    collector.join().await;
    sim_shutdown.cancel();
    server.stop().await;
    env.cleanup().await;
}

fn snapshot_event(market: &str, seq: u64) -> LiveEvent {
    LiveEvent::Snapshot {
        market: market.to_owned(),
        position: FeedPosition {
            conn: 7,
            sid: 1,
            seq,
        },
        ts_us: now_us(),
        book: Arc::new(Book::from_levels([
            (Side::Yes, Price::from_units(4_000), Size::from_units(1_000)),
            (Side::No, Price::from_units(5_000), Size::from_units(2_000)),
        ])),
        resync: false,
    }
}

/// A +1/−1 contract delta at $0.40 YES (so the book stays valid forever).
fn delta_event(market: &str, seq: u64) -> LiveEvent {
    LiveEvent::Delta {
        market: market.to_owned(),
        position: FeedPosition {
            conn: 7,
            sid: 1,
            seq,
        },
        ts_us: now_us(),
        ts_received_us: now_us(),
        side: Side::Yes,
        price: Price::from_units(4_000),
        delta: Size::from_units(if seq.is_multiple_of(2) { 100 } else { -100 }),
    }
}

const SMALL_BOOK: &str =
    "subscription($t: String!) { orderbook(ticker: $t) { kind seq live changes { delta } } }";

/// A server on a bus the test publishes to by hand, with short live timings.
async fn synthetic_server(env: &TestEnv, bus: &Bus) -> TestServer {
    let mut state = AppState::new(&env.config).unwrap();
    state.bus = Some(bus.clone());
    state.live.heartbeat = Duration::from_millis(200);
    state.live.key_recheck = Duration::from_millis(200);
    state.live.init_timeout = Duration::from_millis(500);
    TestServer::start_state(state).await
}

async fn assert_healthy(server: &TestServer) {
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let data = server.data("{ apiVersion }", json!({})).await;
    assert!(data["apiVersion"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_unauthenticated_connections_are_refused_with_clear_codes() {
    let env = TestEnv::migrated().await;
    let bus = Bus::default();
    bus.publish(snapshot_event("KXLIVE-A", 1));
    let server = synthetic_server(&env, &bus).await;
    let (store, key, account, key_id) = api_key(&env, "bad@example.com").await;

    // Subscribing before connection_init.
    let mut client = Client::connect(&server, "graphql-transport-ws", None).await;
    client
        .subscribe("1", SMALL_BOOK, json!({ "t": "KXLIVE-A" }))
        .await;
    let closed = client.closed().await;
    assert_eq!(closed.code, 4401, "{closed:?}");
    assert!(closed.reason.contains("connection_init"), "{closed:?}");

    // No connection_init at all.
    let mut client = Client::connect(&server, "graphql-transport-ws", None).await;
    let closed = client.closed().await;
    assert_eq!(closed.code, 4408, "{closed:?}");

    // No key, and a wrong key.
    for payload in [json!({}), json!({ "apiKey": "kb_live_wrong" })] {
        let mut client = Client::connect(&server, "graphql-transport-ws", None).await;
        client
            .send(json!({"type": "connection_init", "payload": payload}))
            .await;
        let closed = client.closed().await;
        assert_eq!(closed.code, 4401, "{closed:?}");
        assert!(closed.reason.contains("API key"), "{closed:?}");
    }

    // Malformed frames: not JSON, an unknown message type, a binary frame.
    for bad in ["not json", r#"{"type":"explode"}"#] {
        let mut client = Client::connect(&server, "graphql-transport-ws", None).await;
        client.init(Some(&key)).await;
        client.send_raw(bad).await;
        let closed = client.closed().await;
        assert_eq!(closed.code, 4400, "{bad}: {closed:?}");
    }
    let mut client = Client::connect(&server, "graphql-transport-ws", None).await;
    client.init(Some(&key)).await;
    client
        .socket
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(client.closed().await.code, 4400);

    // A second connection_init.
    let mut client = Client::connect(&server, "graphql-transport-ws", None).await;
    client.init(Some(&key)).await;
    client
        .send(json!({"type": "connection_init", "payload": {"apiKey": key}}))
        .await;
    assert_eq!(client.closed().await.code, 4429);

    // No subprotocol offered: not upgraded.
    let plain = tokio_tungstenite::connect_async(format!("ws://{}/graphql", server.address)).await;
    assert!(plain.is_err(), "a WebSocket without a GraphQL subprotocol");

    // The key in the X-API-Key header; the legacy protocol; an unknown operation and an
    // unknown market are errors of that operation, and the connection stays usable.
    let mut client = Client::connect(&server, "graphql-transport-ws", Some(&key)).await;
    client.init(None).await;
    client
        .subscribe("u", "subscription { nope }", json!({}))
        .await;
    let error = client.next().await.unwrap();
    assert_eq!(error["id"], "u", "{error}");
    assert!(
        error["payload"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    client
        .subscribe("m", SMALL_BOOK, json!({ "t": "KXNOPE" }))
        .await;
    let mut saw_not_found = false;
    let mut saw_query = false;
    client.subscribe("q", "{ apiVersion }", json!({})).await;
    while !(saw_not_found && saw_query) {
        let message = client.next().await.unwrap();
        if message["type"] == "next" && message["id"] == "m" {
            assert_eq!(codes(&message["payload"]), ["NOT_FOUND"], "{message}");
            saw_not_found = true;
        }
        if message["type"] == "next" && message["id"] == "q" {
            assert!(message["payload"]["data"]["apiVersion"].is_string());
            saw_query = true;
        }
    }
    drop(client);

    let mut legacy = Client::connect(&server, "graphql-ws", None).await;
    legacy.init(Some(&key)).await;
    legacy
        .send(json!({"type": "start", "id": "1", "payload": {"query": SMALL_BOOK, "variables": {"t": "KXLIVE-A"}}}))
        .await;
    let first = legacy.next().await.unwrap();
    assert_eq!(first["type"], "data", "{first}");
    assert_eq!(first["payload"]["data"]["orderbook"]["kind"], "SNAPSHOT");
    drop(legacy);

    // 1,000 subscriptions on one socket: the Free tier's 5 run, the rest are refused.
    let mut client = Client::connect(&server, "graphql-transport-ws", None).await;
    client.init(Some(&key)).await;
    for i in 0..1000 {
        client
            .subscribe(&i.to_string(), SMALL_BOOK, json!({ "t": "KXLIVE-A" }))
            .await;
    }
    let mut refused = 0;
    let mut running = BTreeSet::new();
    while refused + running.len() < 1000 {
        let message = client.next().await.unwrap();
        let id = message["id"].as_str().unwrap_or_default().to_owned();
        match message["type"].as_str() {
            Some("next") if message["payload"].get("errors").is_some() => {
                assert_eq!(codes(&message["payload"]), ["TOO_MANY_SUBSCRIPTIONS"]);
                refused += 1;
            }
            Some("next") => {
                running.insert(id);
            }
            _ => {}
        }
    }
    assert_eq!((running.len(), refused), (5, 995));
    assert_healthy(&server).await;

    // Revoking the key closes the connections that use it.
    store
        .revoke_key(account, key_id, &Actor::System)
        .await
        .expect("revoke");
    let closed = client.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4401, "the API key was revoked")
    );

    // Without a collector in the process, subscriptions are UNAVAILABLE, with a reason.
    let other = TestEnv::migrated().await;
    let (_, other_key, _, _) = api_key(&other, "other@example.com").await;
    let no_bus = TestServer::start(&other.config).await;
    let mut client = Client::connect(&no_bus, "graphql-transport-ws", None).await;
    client.init(Some(&other_key)).await;
    client
        .subscribe("1", SMALL_BOOK, json!({ "t": "KXLIVE-A" }))
        .await;
    let message = client.next().await.unwrap();
    assert_eq!(codes(&message["payload"]), ["UNAVAILABLE"], "{message}");
    assert_healthy(&server).await;
    assert_healthy(&no_bus).await;
    no_bus.stop().await;
    server.stop().await;
    other.cleanup().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_slow_consumers_and_shutdown_end_subscriptions_with_a_reason() {
    let env = TestEnv::migrated().await;
    // A small per-market queue, so a client that stops reading falls behind soon.
    let bus = Bus::with_market_queue(1024, 64);
    bus.publish(snapshot_event("KXLIVE-IDLE", 1));
    bus.publish(snapshot_event("KXLIVE-BUSY", 1));
    let server = synthetic_server(&env, &bus).await;
    let (_, key, _, _) = api_key(&env, "slow@example.com").await;

    // An idle market: the snapshot, then heartbeats repeating its seq.
    let mut idle = Client::connect(&server, "graphql-transport-ws", None).await;
    idle.init(Some(&key)).await;
    idle.subscribe("idle", SMALL_BOOK, json!({ "t": "KXLIVE-IDLE" }))
        .await;
    let first = idle.next().await.unwrap();
    assert_eq!(first["payload"]["data"]["orderbook"]["kind"], "SNAPSHOT");
    let beat = idle.next().await.unwrap();
    assert_eq!(
        beat["payload"]["data"]["orderbook"]["kind"], "HEARTBEAT",
        "{beat}"
    );
    assert_eq!(beat["payload"]["data"]["orderbook"]["seq"], 1);

    // A fast and a slow reader of one busy market. The publisher waits for the fast reader
    // after every batch; the slow one reads nothing until far more has been sent than the
    // socket buffers hold (about 4 MB sent + 128 KB received here; each message ~60 bytes).
    let mut fast = Client::connect(&server, "graphql-transport-ws", None).await;
    fast.init(Some(&key)).await;
    fast.subscribe("fast", SMALL_BOOK, json!({ "t": "KXLIVE-BUSY" }))
        .await;
    let mut slow = Client::connect(&server, "graphql-transport-ws", None).await;
    slow.init(Some(&key)).await;
    slow.subscribe("slow", SMALL_BOOK, json!({ "t": "KXLIVE-BUSY" }))
        .await;
    for client in [&mut fast, &mut slow] {
        let first = client.next().await.unwrap();
        assert_eq!(first["payload"]["data"]["orderbook"]["kind"], "SNAPSHOT");
    }
    let mut seq = 1;
    let mut fast_seqs = Vec::new();
    while seq < 100_000 {
        for _ in 0..50 {
            seq += 1;
            bus.publish(delta_event("KXLIVE-BUSY", seq));
        }
        while fast_seqs.last() != Some(&seq) {
            let message = fast.next().await.unwrap();
            let update = &message["payload"]["data"]["orderbook"];
            if update["kind"] == "DELTA" {
                fast_seqs.push(update["seq"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(
        fast_seqs,
        (2..=seq).collect::<Vec<_>>(),
        "the fast reader got everything"
    );
    let mut slow_messages = 0;
    let code = loop {
        let message = slow.next().await.unwrap();
        if let Some(errors) = message["payload"].get("errors") {
            let _ = errors;
            break codes(&message["payload"]);
        }
        slow_messages += 1;
    };
    assert_eq!(code, ["SLOW_CONSUMER"], "after {slow_messages} messages");
    let complete = slow.next().await.unwrap();
    assert_eq!(complete["type"], "complete");

    // Shutdown: every subscription gets a final SHUTTING_DOWN, then the socket closes 1001.
    server.begin_shutdown();
    let mut ended = false;
    let closed = loop {
        match idle.next().await {
            Ok(message) => {
                if message["payload"].get("errors").is_some() {
                    assert_eq!(codes(&message["payload"]), ["SHUTTING_DOWN"]);
                    ended = true;
                }
            }
            Err(closed) => break closed,
        }
    };
    assert!(ended, "no final message before the close");
    assert_eq!(closed.code, 1001, "{closed:?}");
    server.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_credits_ends_a_subscription_with_credits_exhausted() {
    let env = TestEnv::migrated().await;
    let bus = Bus::default();
    bus.publish(snapshot_event("KXLIVE-PAID", 1));
    let server = synthetic_server(&env, &bus).await;
    let (_, key, account, _) = api_key(&env, "paid@example.com").await;
    // Credits for the start (5) and one block of 1,000 messages (1), not one more.
    env.postgres()
        .await
        .execute(
            "UPDATE billing_accounts SET credits_used = credits_total - 6 WHERE id = $1",
            &[&account],
        )
        .await
        .expect("set the balance");
    let mut client = Client::connect(&server, "graphql-transport-ws", None).await;
    client.init(Some(&key)).await;
    client
        .subscribe("1", SMALL_BOOK, json!({ "t": "KXLIVE-PAID" }))
        .await;
    let first = client.next().await.unwrap();
    assert_eq!(
        first["payload"]["data"]["orderbook"]["kind"], "SNAPSHOT",
        "{first}"
    );
    for seq in 2..=1_001 {
        bus.publish(delta_event("KXLIVE-PAID", seq));
    }
    // The snapshot and 999 deltas are the paid block; the next message is refused.
    let mut deltas = 0;
    let code = loop {
        let message = client.next().await.unwrap();
        let payload = &message["payload"];
        if payload.get("errors").is_some() {
            break codes(payload);
        }
        if payload["data"]["orderbook"]["kind"] == "DELTA" {
            deltas += 1;
        }
    };
    assert_eq!((code, deltas), (vec!["CREDITS_EXHAUSTED".to_owned()], 999));
    assert_eq!(client.next().await.unwrap()["type"], "complete");

    // With nothing left, a new subscription is refused at the start.
    client
        .subscribe("2", SMALL_BOOK, json!({ "t": "KXLIVE-PAID" }))
        .await;
    let refused = client.next().await.unwrap();
    assert_eq!(
        codes(&refused["payload"]),
        ["CREDITS_EXHAUSTED"],
        "{refused}"
    );
    server.stop().await;
    env.cleanup().await;
}

/// Revoking a key closes its connections at once on every replica: Postgres announces the
/// revocation, and neither server waits for its periodic re-check (an hour here). Another
/// key's connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_closes_its_connections_on_every_replica_at_once() {
    let env = TestEnv::migrated().await;
    let bus = Bus::default();
    bus.publish(snapshot_event("KXLIVE-A", 1));
    let replica = || {
        let mut state = AppState::new(&env.config).unwrap();
        state.bus = Some(bus.clone());
        state.live.key_recheck = Duration::from_secs(3_600);
        state
    };
    let replicas = [
        TestServer::start_state(replica()).await,
        TestServer::start_state(replica()).await,
    ];
    for server in &replicas {
        server.state.revocations.listening().await;
    }
    let (store, key, account, key_id) = api_key(&env, "revoked@example.com").await;
    let (_, kept_key, _, _) = api_key(&env, "kept@example.com").await;
    let mut subscribed = Vec::new();
    for (server, key) in [
        (&replicas[0], &key),
        (&replicas[1], &key),
        (&replicas[0], &kept_key),
    ] {
        let mut client = Client::connect(server, "graphql-transport-ws", None).await;
        client.init(Some(key)).await;
        client
            .subscribe("1", SMALL_BOOK, json!({ "t": "KXLIVE-A" }))
            .await;
        let first = client.next().await.expect("the book");
        assert_eq!(first["type"], "next", "{first}");
        subscribed.push(client);
    }

    store
        .revoke_key(account, key_id, &Actor::System)
        .await
        .expect("revoke");
    for client in &mut subscribed[..2] {
        // Heartbeats keep an open connection talking: bound the whole wait, not each frame.
        let closed = tokio::time::timeout(PATIENCE, client.closed())
            .await
            .expect("closed long before the periodic re-check");
        assert_eq!(
            (closed.code, closed.reason.as_str()),
            (4401, "the API key was revoked")
        );
    }
    bus.publish(delta_event("KXLIVE-A", 2));
    let next = subscribed[2]
        .next()
        .await
        .expect("the other key is untouched");
    assert_eq!(next["type"], "next", "{next}");
    env.cleanup().await;
}
