//! The simulated Kalshi exchange on port 0, driven by a real WebSocket client
//! (tokio-tungstenite) and a real HTTP client (reqwest): protocol shapes, sequence numbers,
//! ground truth against a naive client's books, faults, signatures, REST pagination.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt, StreamExt};
use kalshibook::market::{Book, Price, Side, Size};
use kalshibook::sim::{
    ACCESS_KEY, ACCESS_SIGNATURE, ACCESS_TIMESTAMP, MalformedKind, SentDelta, Sim, SimConfig,
    SimHandle, parse_public_key_pem,
};
use rsa::RsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::pss::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// A throwaway RSA key made for these tests only.
const TEST_KEY: &str = include_str!("../src/sim/testdata/sim_test_key.pem");
/// Longest wait for any one frame; a test that hits it has failed, it is not a sleep.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    sim: SimHandle,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(config: SimConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = CancellationToken::new();
    let sim = Sim::start(config, listener, shutdown.clone()).expect("start");
    Running { sim, shutdown }
}

fn config(markets: usize, events_per_sec: u32) -> SimConfig {
    SimConfig {
        markets,
        events_per_sec,
        seed: 42,
        ..SimConfig::default()
    }
}

fn private_key() -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_pem(TEST_KEY).expect("test key")
}

fn now_ms() -> i64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    i64::try_from(elapsed.as_millis()).expect("ms")
}

/// The three Kalshi headers for `method path` signed at `timestamp_ms`.
fn signed_headers(
    key: &RsaPrivateKey,
    timestamp_ms: i64,
    method: &str,
    path: &str,
) -> Vec<(&'static str, String)> {
    let message = format!("{timestamp_ms}{method}{path}");
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(message.as_bytes());
    vec![
        (
            ACCESS_KEY,
            "a952bcbe-ec3b-4b5b-b8f9-11dae589608c".to_owned(),
        ),
        (ACCESS_TIMESTAMP, timestamp_ms.to_string()),
        (ACCESS_SIGNATURE, STANDARD.encode(signature.to_bytes())),
    ]
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A minimal Kalshi WebSocket client.
struct Client {
    socket: Socket,
    next_id: u64,
}

impl Client {
    async fn connect(sim: &SimHandle) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(sim.ws_url())
            .await
            .expect("connect");
        Self { socket, next_id: 1 }
    }

    async fn connect_signed(sim: &SimHandle, key: &RsaPrivateKey) -> Self {
        let mut request = sim.ws_url().into_client_request().expect("request");
        for (name, value) in signed_headers(key, now_ms(), "GET", "/trade-api/ws/v2") {
            request
                .headers_mut()
                .insert(name, value.parse().expect("header"));
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connect");
        Self { socket, next_id: 1 }
    }

    async fn send_text(&mut self, text: String) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Sends a command with the next id and returns the id.
    async fn command(&mut self, cmd: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({"id": id, "cmd": cmd});
        if !params.is_null() {
            command["params"] = params;
        }
        self.send_text(command.to_string()).await;
        id
    }

    /// The next text frame (control frames are skipped; tungstenite answers Pings).
    async fn next_text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.socket.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("frame");
            match message {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    async fn next_json(&mut self) -> Value {
        let text = self.next_text().await;
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    }

    /// Frames until one satisfies `done` (included).
    async fn until(&mut self, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next_json().await;
            let stop = done(&frame);
            frames.push(frame);
            if stop {
                return frames;
            }
        }
    }

    /// Every frame queued before now: `list_subscriptions` is answered after them.
    async fn drain(&mut self) -> Vec<Value> {
        let id = self.command("list_subscriptions", Value::Null).await;
        let mut frames = self
            .until(|f| f["type"] == "ok" && f["id"] == id && f["msg"].is_array())
            .await;
        frames.pop();
        frames
    }
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

fn levels(value: &Value) -> Vec<(Price, Size)> {
    value
        .as_array()
        .expect("level array")
        .iter()
        .map(|level| {
            let price = level[0]
                .as_str()
                .expect("price string")
                .parse()
                .expect("price");
            let size = level[1]
                .as_str()
                .expect("size string")
                .parse()
                .expect("size");
            (price, size)
        })
        .collect()
}

/// A snapshot's book; absent keys are empty sides.
fn snapshot_book(msg: &Value) -> Book {
    let side = |key: &str, side: Side| {
        msg.get(key)
            .map(levels)
            .unwrap_or_default()
            .into_iter()
            .map(move |(p, s)| (side, p, s))
    };
    Book::from_levels(side("yes_dollars_fp", Side::Yes).chain(side("no_dollars_fp", Side::No)))
}

/// A naive client's view: snapshots replace, deltas add; every seq checked per sid.
#[derive(Default)]
struct Replica {
    books: HashMap<String, Book>,
    last_seq: HashMap<u64, u64>,
    deltas: Vec<SentDelta>,
    /// (market, ts_ms) → book after the last delta of that millisecond.
    at: BTreeMap<(String, i64), Book>,
    gaps: Vec<(u64, u64, u64)>,
}

impl Replica {
    fn apply(&mut self, frame: &Value) {
        if let (Some(sid), Some(seq)) = (frame["sid"].as_u64(), frame["seq"].as_u64()) {
            let last = self.last_seq.insert(sid, seq).unwrap_or(0);
            if seq != last + 1 {
                self.gaps.push((sid, last, seq));
            }
        }
        let msg = &frame["msg"];
        match frame["type"].as_str() {
            Some("orderbook_snapshot") => {
                let market = msg["market_ticker"].as_str().expect("ticker").to_owned();
                self.books.insert(market, snapshot_book(msg));
            }
            Some("orderbook_delta") => {
                let market = msg["market_ticker"].as_str().expect("ticker").to_owned();
                let side: Side = msg["side"].as_str().expect("side").parse().expect("side");
                let price: Price = msg["price_dollars"]
                    .as_str()
                    .expect("price")
                    .parse()
                    .expect("price");
                let delta: Size = msg["delta_fp"]
                    .as_str()
                    .expect("delta")
                    .parse()
                    .expect("delta");
                let ts_ms = msg["ts_ms"].as_i64().expect("ts_ms");
                let book = self.books.get_mut(&market).expect("delta after snapshot");
                book.apply_delta(side, price, delta).expect("delta applies");
                self.at.insert((market.clone(), ts_ms), book.clone());
                self.deltas.push(SentDelta {
                    sid: frame["sid"].as_u64().expect("sid"),
                    seq: frame["seq"].as_u64().expect("seq"),
                    market,
                    side,
                    price,
                    delta,
                    ts_ms,
                });
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn subscribe_replies_per_channel_then_snapshots_in_kalshi_shapes() {
    let running = start(config(6, 0)).await;
    let sim = &running.sim;
    let markets = sim.markets();
    let mut client = Client::connect(sim).await;
    let id = client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta", "trade"], "market_tickers": [markets[2], markets[0], markets[1]]}),
        )
        .await;
    // Each channel: `subscribed`, then (orderbook) its snapshots.
    let mut frames = client
        .until(|f| f["type"] == "orderbook_snapshot" && f["seq"] == 3)
        .await;
    frames.push(client.next_json().await);
    let kinds: Vec<&str> = frames.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "subscribed",
            "orderbook_snapshot",
            "orderbook_snapshot",
            "orderbook_snapshot",
            "subscribed"
        ]
    );
    let subscribed = of_type(&frames, "subscribed");
    assert_eq!(subscribed.len(), 2);
    assert_eq!(
        *subscribed[0],
        json!({"type": "subscribed", "id": id, "msg": {"channel": "orderbook_delta", "sid": 1}})
    );
    assert_eq!(
        *subscribed[1],
        json!({"type": "subscribed", "id": id, "msg": {"channel": "trade", "sid": 2}})
    );
    let snapshots = of_type(&frames, "orderbook_snapshot");
    assert_eq!(snapshots.len(), 3);
    for (i, (snapshot, market)) in snapshots
        .iter()
        .zip([&markets[2], &markets[0], &markets[1]])
        .enumerate()
    {
        assert_eq!(snapshot["sid"], 1);
        assert_eq!(snapshot["seq"], i + 1);
        assert!(
            snapshot.get("id").is_none(),
            "only get_snapshot echoes the id"
        );
        let msg = &snapshot["msg"];
        assert_eq!(msg["market_ticker"], **market);
        assert_eq!(msg["market_id"].as_str().expect("uuid").len(), 36);
        for key in ["yes_dollars_fp", "no_dollars_fp"] {
            let ladder = levels(&msg[key]);
            assert!(
                ladder.windows(2).all(|w| w[0].0 < w[1].0),
                "ascending, best last"
            );
            for level in msg[key].as_array().expect("levels") {
                let price = level[0].as_str().expect("price");
                let size = level[1].as_str().expect("size");
                assert_eq!(price.len(), 6, "4-decimal dollars: {price}");
                assert_eq!(
                    size.split('.').nth(1).map(str::len),
                    Some(2),
                    "2-decimal size: {size}"
                );
            }
        }
        assert_eq!(snapshot_book(msg), sim.book(market).expect("book"));
    }
    // Every market's REST book is the same book.
    let rest: Value = reqwest_get(sim, &format!("/markets/{}/orderbook", markets[0]))
        .await
        .1;
    let yes = levels(&rest["orderbook_fp"]["yes_dollars"]);
    let book = sim.book(&markets[0]).expect("book");
    assert_eq!(
        yes,
        book.ladder(Side::Yes)
            .iter()
            .map(|(p, s)| (*p, *s))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn seq_is_contiguous_per_sid_counting_ok_replies_and_get_snapshot_echoes_id() {
    let running = start(config(8, 400)).await;
    let sim = &running.sim;
    let markets = sim.markets();
    let mut client = Client::connect(sim).await;
    client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta"], "market_ticker": markets[0]}),
        )
        .await;
    let add = client
        .command(
            "update_subscription",
            json!({"sid": 1, "action": "add_markets", "market_tickers": [markets[3], markets[1]]}),
        )
        .await;
    let snap = client
        .command(
            "update_subscription",
            json!({"sids": [1], "action": "get_snapshot", "market_tickers": [markets[1]]}),
        )
        .await;
    let delete = client
        .command(
            "update_subscription",
            json!({"sid": 1, "action": "delete_markets", "market_ticker": markets[3]}),
        )
        .await;
    let mut frames = client
        .until(|f| f["type"] == "ok" && f["id"] == delete)
        .await;
    // Let some deltas through, then leave.
    frames.extend(client.until(|f| f["type"] == "orderbook_delta").await);
    let bye = client.command("unsubscribe", json!({"sids": [1]})).await;
    frames.extend(client.until(|f| f["type"] == "unsubscribed").await);

    let sequenced: Vec<&Value> = frames
        .iter()
        .filter(|f| f["sid"] == 1 && f.get("seq").is_some())
        .collect();
    for (i, frame) in sequenced.iter().enumerate() {
        assert_eq!(frame["seq"], i + 1, "seq gap at {frame}");
    }
    let oks = of_type(&frames, "ok");
    let mut sorted = vec![markets[0].clone(), markets[1].clone(), markets[3].clone()];
    sorted.sort();
    assert_eq!(oks[0]["id"], add);
    assert_eq!(oks[0]["msg"]["market_tickers"], json!(sorted));
    assert!(
        oks[0]["seq"].as_u64().is_some(),
        "ok takes a seq: {}",
        oks[0]
    );
    let mut remaining = vec![markets[0].clone(), markets[1].clone()];
    remaining.sort();
    assert_eq!(oks[1]["msg"]["market_tickers"], json!(remaining));
    let echoed = of_type(&frames, "orderbook_snapshot")
        .into_iter()
        .filter(|f| f["id"] == snap)
        .collect::<Vec<_>>();
    assert_eq!(echoed.len(), 1);
    assert_eq!(echoed[0]["msg"]["market_ticker"], markets[1]);
    let unsubscribed = frames.last().expect("unsubscribed");
    assert_eq!(unsubscribed["id"], bye);
    assert_eq!(unsubscribed["seq"], sequenced.len());
    // After an add, its snapshot comes after the ok (as in the captures).
    let ok_at = frames.iter().position(|f| f["id"] == add).expect("ok");
    let added_at = frames
        .iter()
        .position(|f| f["type"] == "orderbook_snapshot" && f["msg"]["market_ticker"] == markets[3])
        .expect("snapshot of the added market");
    assert!(ok_at < added_at);
}

#[tokio::test]
async fn truth_equals_the_books_a_naive_client_rebuilds() {
    let running = start(SimConfig {
        sub_cent_pct: 50,
        ..config(12, 1500)
    })
    .await;
    let sim = &running.sim;
    let markets = sim.markets();
    let mut client = Client::connect(sim).await;
    client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta"], "market_tickers": markets}),
        )
        .await;
    let mut replica = Replica::default();
    while replica.deltas.len() < 3000 {
        let frame = client.next_json().await;
        replica.apply(&frame);
    }
    sim.pause_generation();
    for frame in client.drain().await {
        replica.apply(&frame);
    }
    assert!(
        replica.gaps.is_empty(),
        "gaps without faults: {:?}",
        replica.gaps
    );
    // Now and at every millisecond the client saw a change.
    for market in &markets {
        assert_eq!(
            replica.books.get(market),
            sim.book(market).as_ref(),
            "{market} now"
        );
    }
    for ((market, ts_ms), book) in &replica.at {
        assert_eq!(
            sim.book_at(market, *ts_ms).as_ref(),
            Some(book),
            "{market} at {ts_ms}"
        );
    }
    let checkpoints = sim.checkpoints();
    assert_eq!(checkpoints.len(), markets.len());
    for checkpoint in &checkpoints {
        assert_eq!(
            replica.books.get(&checkpoint.market),
            Some(&checkpoint.book)
        );
    }
    // Everything the exchange wrote arrived, and nothing else.
    let conn = sim.connection_ids()[0];
    assert_eq!(sim.sent_deltas()[&conn], replica.deltas);
    // Realism: sub-cent prices, fractional sizes, several markets changing.
    let deltas = &replica.deltas;
    assert!(
        deltas.iter().any(|d| d.price.units() % 100 != 0),
        "sub-cent levels"
    );
    assert!(
        deltas.iter().any(|d| d.delta.units() % 100 != 0),
        "fractional sizes"
    );
    assert!(
        deltas.iter().any(|d| d.delta.units() < 0) && deltas.iter().any(|d| d.delta.units() > 0)
    );
    let busy: std::collections::HashSet<&str> = deltas.iter().map(|d| d.market.as_str()).collect();
    assert!(busy.len() > 5, "only {} markets changed", busy.len());
    for book in replica.books.values() {
        if let (Some((yes, _)), Some((no, _))) = (book.best_bid(Side::Yes), book.best_bid(Side::No))
        {
            assert!(yes.units() + no.units() < Price::SCALE, "crossed book");
        }
    }
}

#[tokio::test]
async fn dropped_frames_leave_a_seq_gap_and_are_not_reported_sent() {
    let running = start(config(4, 800)).await;
    let sim = &running.sim;
    let mut client = Client::connect(sim).await;
    client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta"], "market_tickers": sim.markets()}),
        )
        .await;
    let mut replica = Replica::default();
    while replica.deltas.is_empty() {
        replica.apply(&client.next_json().await);
    }
    sim.drop_next(1);
    while replica.gaps.is_empty() {
        replica.apply(&client.next_json().await);
    }
    let (sid, last, next) = replica.gaps[0];
    assert_eq!((sid, next), (1, last + 2), "exactly one frame skipped");
    sim.pause_generation();
    for frame in client.drain().await {
        replica.apply(&frame);
    }
    let conn = sim.connection_ids()[0];
    let sent = &sim.sent_deltas()[&conn];
    assert!(sent.iter().all(|d| d.seq != last + 1));
    assert_eq!(*sent, replica.deltas);
}

#[tokio::test]
async fn a_configured_key_rejects_unsigned_and_accepts_signed_requests() {
    let key = private_key();
    let public_key = parse_public_key_pem(TEST_KEY).expect("public key");
    let running = start(SimConfig {
        public_key: Some(public_key),
        ..config(3, 0)
    })
    .await;
    let sim = &running.sim;
    match tokio_tungstenite::connect_async(sim.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("unsigned upgrade accepted: {:?}", other.map(|_| ())),
    }
    // A signature for another path is no signature.
    let mut request = sim.ws_url().into_client_request().expect("request");
    for (name, value) in signed_headers(&key, now_ms(), "GET", "/trade-api/v2/markets") {
        request
            .headers_mut()
            .insert(name, value.parse().expect("header"));
    }
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
    let mut client = Client::connect_signed(sim, &key).await;
    client
        .command("subscribe", json!({"channels": ["market_lifecycle_v2"]}))
        .await;
    assert_eq!(client.next_json().await["type"], "subscribed");

    let http = http_client();
    let url = format!("{}/markets", sim.rest_url());
    let unsigned = http.get(&url).send().await.expect("request");
    assert_eq!(unsigned.status(), 401);
    let body: Value = unsigned.json().await.expect("json");
    assert_eq!(body["error"]["code"], "authentication_error");
    let mut signed = http.get(format!("{url}?limit=2"));
    for (name, value) in signed_headers(&key, now_ms(), "GET", "/trade-api/v2/markets") {
        signed = signed.header(name, value);
    }
    let signed = signed.send().await.expect("request");
    assert_eq!(signed.status(), 200, "the query is not signed");
    let mut stale = http.get(&url);
    for (name, value) in signed_headers(&key, now_ms() - 61_000, "GET", "/trade-api/v2/markets") {
        stale = stale.header(name, value);
    }
    assert_eq!(stale.send().await.expect("request").status(), 401);
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn reqwest_get(sim: &SimHandle, path: &str) -> (u16, Value) {
    let response = http_client()
        .get(format!("{}{path}", sim.rest_url()))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn rest_pagination_returns_every_market_once() {
    let running = start(config(250, 0)).await;
    let sim = &running.sim;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, page) = reqwest_get(sim, &format!("/markets?limit=100&cursor={cursor}")).await;
        assert_eq!(status, 200);
        pages += 1;
        for market in page["markets"].as_array().expect("markets") {
            seen.push(market["ticker"].as_str().expect("ticker").to_owned());
        }
        cursor = page["cursor"]
            .as_str()
            .expect("cursor is a string")
            .to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, sim.markets());
    // Default page size, filters, and Kalshi's Market fields.
    assert_eq!(
        reqwest_get(sim, "/markets").await.1["markets"]
            .as_array()
            .map(Vec::len),
        Some(100)
    );
    let open = reqwest_get(sim, "/markets?status=open&limit=1000").await.1;
    assert_eq!(open["markets"].as_array().map(Vec::len), Some(250));
    assert_eq!(open["cursor"], "");
    let settled = reqwest_get(sim, "/markets?status=settled").await.1;
    assert_eq!(settled["markets"], json!([]));
    let ticker = &sim.markets()[17];
    let (status, one) = reqwest_get(sim, &format!("/markets?tickers={ticker},nope")).await;
    assert_eq!(status, 200);
    assert_eq!(one["markets"].as_array().map(Vec::len), Some(1));
    let (status, single) = reqwest_get(sim, &format!("/markets/{ticker}")).await;
    assert_eq!(status, 200);
    let market = &single["market"];
    assert_eq!(market["ticker"], *ticker);
    assert_eq!(market["status"], "active");
    assert_eq!(market["market_type"], "binary");
    assert_eq!(market["liquidity_dollars"], "0.0000");
    assert!(
        market["price_ranges"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );
    let book = sim.book(ticker).expect("book");
    let (bid, bid_size) = book.best_bid(Side::Yes).expect("yes bid");
    let (no_bid, no_size) = book.best_bid(Side::No).expect("no bid");
    assert_eq!(market["yes_bid_dollars"], bid.to_string());
    assert_eq!(market["yes_bid_size_fp"], bid_size.to_string());
    assert_eq!(market["yes_ask_dollars"], no_bid.complement().to_string());
    assert_eq!(market["yes_ask_size_fp"], no_size.to_string());
    let series = market["event_ticker"]
        .as_str()
        .expect("event")
        .split('-')
        .next()
        .expect("series")
        .to_owned();
    let in_series = reqwest_get(sim, &format!("/markets?series_ticker={series}&limit=1000"))
        .await
        .1;
    let count = in_series["markets"].as_array().map_or(0, Vec::len);
    assert!(count > 0 && count < 250);
    assert_eq!(reqwest_get(sim, "/markets/KXNOPE-1").await.0, 404);
    assert_eq!(reqwest_get(sim, "/markets?limit=1001").await.0, 400);
    assert_eq!(reqwest_get(sim, "/markets?cursor=garbage").await.0, 400);
    let (status, exchange) = reqwest_get(sim, "/exchange/status").await;
    assert_eq!(status, 200);
    assert_eq!(exchange["trading_active"], true);
    let depth = reqwest_get(sim, &format!("/markets/{ticker}/orderbook?depth=1"))
        .await
        .1;
    assert_eq!(
        depth["orderbook_fp"]["yes_dollars"],
        json!([[bid.to_string(), bid_size.to_string()]])
    );
}

#[tokio::test]
async fn settling_sends_an_empty_snapshot_and_lifecycle_events() {
    let running = start(config(5, 200)).await;
    let sim = &running.sim;
    let market = sim.markets()[1].clone();
    let mut client = Client::connect(sim).await;
    client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta", "market_lifecycle_v2"], "market_tickers": [market]}),
        )
        .await;
    client.until(|f| f["type"] == "orderbook_snapshot").await;
    sim.settle_market(&market).expect("settle");
    let frames = client.until(|f| f["msg"]["event_type"] == "settled").await;
    let mut replica = Replica::default();
    let empty = frames
        .iter()
        .find(|f| f["type"] == "orderbook_snapshot")
        .expect("unrequested snapshot");
    assert_eq!(empty["sid"], 1);
    assert!(empty.get("id").is_none());
    let msg = empty["msg"].as_object().expect("msg");
    assert_eq!(msg["market_ticker"], market);
    assert!(
        !msg.contains_key("yes_dollars_fp") && !msg.contains_key("no_dollars_fp"),
        "{empty}"
    );
    // Deltas of the market may arrive between its first snapshot (consumed above) and the
    // close: replay from the empty snapshot on.
    for frame in frames
        .iter()
        .skip_while(|f| f["type"] != "orderbook_snapshot")
    {
        replica.apply(frame);
    }
    let events: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "market_lifecycle_v2")
        .filter_map(|f| f["msg"]["event_type"].as_str())
        .collect();
    assert_eq!(events, ["close_date_updated", "determined", "settled"]);
    let determined = frames
        .iter()
        .find(|f| f["msg"]["event_type"] == "determined")
        .expect("determined");
    assert!(
        determined["msg"]["determination_ts"]
            .as_i64()
            .is_some_and(|ts| ts > 1_700_000_000)
    );
    assert!(matches!(
        determined["msg"]["result"].as_str(),
        Some("yes" | "no")
    ));
    assert_eq!(sim.book(&market), Some(Book::default()));
    assert_eq!(sim.market_status(&market), Some("finalized"));
    let rest = reqwest_get(sim, &format!("/markets/{market}")).await.1;
    assert_eq!(rest["market"]["status"], "finalized");
    let settled = reqwest_get(sim, "/markets?status=settled").await.1;
    assert_eq!(settled["markets"].as_array().map(Vec::len), Some(1));
    assert!(sim.settle_market(&market).is_err());
}

#[tokio::test]
async fn commands_are_refused_with_kalshi_error_codes() {
    let running = start(config(3, 0)).await;
    let sim = &running.sim;
    let markets = sim.markets();
    let mut client = Client::connect(sim).await;
    let expect_error = async |client: &mut Client, text: String, code: u64| {
        client.send_text(text).await;
        let frame = client.next_json().await;
        assert_eq!(frame["type"], "error", "{frame}");
        assert_eq!(frame["msg"]["code"], code, "{frame}");
        frame
    };
    let frame = expect_error(&mut client, "{not json".into(), 1).await;
    assert!(frame.get("id").is_none());
    let frame = expect_error(&mut client, json!({"id": 9, "cmd": "dance"}).to_string(), 5).await;
    assert_eq!(frame["id"], 9);
    expect_error(
        &mut client,
        json!({"id": 10, "cmd": "subscribe"}).to_string(),
        2,
    )
    .await;
    expect_error(
        &mut client,
        json!({"id": 11, "cmd": "subscribe", "params": {"channels": []}}).to_string(),
        3,
    )
    .await;
    expect_error(
        &mut client,
        json!({"id": 12, "cmd": "subscribe", "params": {"channels": ["nope"]}}).to_string(),
        8,
    )
    .await;
    let frame = expect_error(
        &mut client,
        json!({"id": 13, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}})
            .to_string(),
        14,
    )
    .await;
    assert_eq!(frame["msg"]["msg"], "Market Ticker required");
    let id = client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta"], "market_ticker": markets[0]}),
        )
        .await;
    assert_eq!(client.next_json().await["id"], id);
    assert_eq!(client.next_json().await["type"], "orderbook_snapshot");
    expect_error(
        &mut client,
        json!({"id": 14, "cmd": "update_subscription", "params": {"sids": [1, 2], "action": "add_markets", "market_ticker": markets[1]}}).to_string(),
        12,
    )
    .await;
    expect_error(
        &mut client,
        json!({"id": 15, "cmd": "update_subscription", "params": {"sid": 1, "market_ticker": markets[1]}}).to_string(),
        15,
    )
    .await;
    expect_error(
        &mut client,
        json!({"id": 16, "cmd": "update_subscription", "params": {"sid": 1, "action": "merge", "market_ticker": markets[1]}}).to_string(),
        13,
    )
    .await;
    expect_error(
        &mut client,
        json!({"id": 17, "cmd": "update_subscription", "params": {"sid": 7, "action": "add_markets", "market_ticker": markets[1]}}).to_string(),
        7,
    )
    .await;
    expect_error(
        &mut client,
        json!({"id": 18, "cmd": "unsubscribe", "params": {}}).to_string(),
        4,
    )
    .await;
    expect_error(
        &mut client,
        json!({"id": 19, "cmd": "unsubscribe", "params": {"sids": [5]}}).to_string(),
        7,
    )
    .await;
    let id = client
        .command("subscribe", json!({"channels": ["trade"]}))
        .await;
    assert_eq!(
        client.next_json().await,
        json!({"type": "subscribed", "id": id, "msg": {"channel": "trade", "sid": 2}})
    );
    let id = client.command("list_subscriptions", Value::Null).await;
    assert_eq!(
        client.next_json().await,
        json!({"type": "ok", "id": id, "msg": [{"channel": "orderbook_delta", "sid": 1}, {"channel": "trade", "sid": 2}]})
    );
}

#[tokio::test]
async fn heartbeat_pings_arrive_with_their_payload() {
    let running = start(SimConfig {
        ping_interval_ms: 50,
        ..config(2, 0)
    })
    .await;
    let mut client = Client::connect(&running.sim).await;
    let ping = tokio::time::timeout(FRAME_TIMEOUT, client.socket.next())
        .await
        .expect("a ping in time")
        .expect("open")
        .expect("frame");
    assert_eq!(ping, Message::Ping("heartbeat".into()));
}

#[tokio::test]
async fn a_stalled_slow_client_overflows_with_error_25() {
    let running = start(SimConfig {
        outbox_capacity: 16,
        ..config(6, 2000)
    })
    .await;
    let sim = &running.sim;
    let mut client = Client::connect(sim).await;
    client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta"], "market_tickers": sim.markets()}),
        )
        .await;
    client.until(|f| f["type"] == "orderbook_delta").await;
    let conn = sim.connection_ids()[0];
    sim.stall(Duration::from_secs(60));
    sim.wait_until(|sim| sim.subscribed_markets(conn).is_empty())
        .await;
    sim.stall(Duration::ZERO);
    let frames = client.until(|f| f["type"] == "error").await;
    let error = frames.last().expect("error");
    assert_eq!(error["sid"], 1);
    assert_eq!(error["msg"]["code"], 25);
    assert_eq!(error["msg"]["msg"], "Subscription buffer overflow");
    // The connection stays usable: the client can subscribe again.
    let id = client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta"], "market_ticker": sim.markets()[0]}),
        )
        .await;
    let frames = client.until(|f| f["type"] == "subscribed").await;
    assert_eq!(frames.last().expect("subscribed")["id"], id);
}

#[tokio::test]
async fn disconnect_all_drops_clients_and_sids_restart_on_reconnect() {
    let running = start(config(3, 100)).await;
    let sim = &running.sim;
    let mut client = Client::connect(sim).await;
    client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta", "trade"], "market_ticker": sim.markets()[0]}),
        )
        .await;
    client.until(|f| f["type"] == "orderbook_snapshot").await;
    sim.disconnect_all();
    loop {
        match tokio::time::timeout(FRAME_TIMEOUT, client.socket.next())
            .await
            .expect("closed in time")
        {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(_)) => {}
        }
    }
    sim.wait_until(|sim| sim.connections() == 0).await;
    let mut again = Client::connect(sim).await;
    again
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta"], "market_ticker": sim.markets()[0]}),
        )
        .await;
    let frames = again.until(|f| f["type"] == "orderbook_snapshot").await;
    assert_eq!(frames[0]["msg"]["sid"], 1);
    assert_eq!(frames[1]["seq"], 1);
}

#[tokio::test]
async fn malformed_frames_of_every_kind_reach_the_client() {
    let running = start(config(3, 0)).await;
    let sim = &running.sim;
    let market = sim.markets()[0].clone();
    let mut client = Client::connect(sim).await;
    client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta"], "market_ticker": market}),
        )
        .await;
    client.until(|f| f["type"] == "orderbook_snapshot").await;
    for kind in MalformedKind::ALL {
        sim.send_malformed(kind);
    }
    let invalid = client.next_text().await;
    assert!(
        serde_json::from_str::<Value>(&invalid).is_err(),
        "{invalid}"
    );
    let wrong = client.next_json().await;
    assert_eq!(wrong["seq"], "2");
    assert!(wrong["msg"]["price_dollars"].is_number());
    let unknown = client.next_json().await;
    assert!(unknown.get("sid").is_none());
    let negative = client.next_json().await;
    assert_eq!(negative["type"], "orderbook_snapshot");
    assert_eq!(negative["seq"], 3);
    let sizes: Vec<&str> = negative["msg"]["yes_dollars_fp"]
        .as_array()
        .expect("levels")
        .iter()
        .filter_map(|l| l[1].as_str())
        .collect();
    assert!(sizes.contains(&"-12.00"));
    // The truth is untouched and the next real frame continues the sequence.
    sim.step(200);
    let next = client.until(|f| f["type"] == "orderbook_delta").await;
    assert_eq!(next[0]["seq"], 4);
}

#[tokio::test]
async fn new_markets_announce_themselves_and_fill_their_book() {
    let running = start(config(4, 0)).await;
    let sim = &running.sim;
    let mut client = Client::connect(sim).await;
    client
        .command("subscribe", json!({"channels": ["market_lifecycle_v2"]}))
        .await;
    client.until(|f| f["type"] == "subscribed").await;
    let ticker = sim.open_market();
    let frames = client
        .until(|f| f["msg"]["event_type"] == "activated")
        .await;
    let created = frames
        .iter()
        .find(|f| f["msg"]["event_type"] == "created")
        .expect("created");
    assert_eq!(created["msg"]["market_ticker"], ticker);
    let meta = &created["msg"]["additional_metadata"];
    assert!(meta["title"].is_string() && meta["event_ticker"].is_string());
    assert!(meta["expected_expiration_ts"].as_i64().is_some());
    assert!(
        created["msg"]["open_ts"].as_i64().is_some()
            && created["msg"]["close_ts"].as_i64().is_some()
    );
    assert!(created["msg"]["price_level_structure"].is_string());
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(sim.market_status(&ticker), Some("active"));
    let book = sim.book(&ticker).expect("book");
    assert!(!book.ladder(Side::Yes).is_empty() && !book.ladder(Side::No).is_empty());
    client
        .command(
            "subscribe",
            json!({"channels": ["orderbook_delta"], "market_ticker": ticker}),
        )
        .await;
    let frames = client.until(|f| f["type"] == "orderbook_snapshot").await;
    assert_eq!(
        snapshot_book(&frames.last().expect("snapshot")["msg"]),
        book
    );
}

#[tokio::test]
async fn the_same_seed_makes_the_same_exchange() {
    let a = start(config(10, 0)).await;
    let b = start(config(10, 0)).await;
    let c = start(SimConfig {
        seed: 43,
        ..config(10, 0)
    })
    .await;
    for running in [&a, &b, &c] {
        running.sim.step(3000);
    }
    let books = |running: &Running| {
        running
            .sim
            .checkpoints()
            .into_iter()
            .map(|c| (c.market, c.change, c.book))
            .collect::<Vec<_>>()
    };
    assert_eq!(books(&a), books(&b));
    assert_ne!(books(&a), books(&c));
    assert_eq!(
        reqwest_get(&a.sim, "/markets").await.1["markets"][3]["yes_bid_dollars"],
        reqwest_get(&b.sim, "/markets").await.1["markets"][3]["yes_bid_dollars"]
    );
}

#[tokio::test]
async fn the_truth_file_replays_to_the_final_books() {
    let dir = std::env::temp_dir().join(format!("kalshibook-sim-truth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("truth.jsonl");
    let running = start(SimConfig {
        truth_path: Some(path.clone()),
        churn_every_events: 500,
        ..config(6, 0)
    })
    .await;
    let sim = running.sim.clone();
    sim.step(6000);
    let expected = sim.checkpoints();
    running.shutdown.cancel();
    sim.stopped().await;
    let text = std::fs::read_to_string(&path).expect("truth file");
    let mut books: HashMap<String, Book> = HashMap::new();
    let mut last_change: Option<u64> = None;
    let mut kinds = std::collections::HashSet::new();
    for line in text.lines() {
        let line: Value = serde_json::from_str(line).expect("JSON line");
        let market = line["market"].as_str().expect("market").to_owned();
        let change = line["change"].as_u64().expect("change");
        let kind = line["kind"].as_str().expect("kind");
        kinds.insert(kind.to_owned());
        let book = books.entry(market).or_default();
        match kind {
            "snapshot" | "checkpoint" => {
                let side = |key: &str, side: Side| {
                    levels(&line[key])
                        .into_iter()
                        .map(move |(p, s)| (side, p, s))
                };
                let read = Book::from_levels(side("yes", Side::Yes).chain(side("no", Side::No)));
                if kind == "checkpoint" {
                    assert_eq!(*book, read, "checkpoint matches the replay");
                    continue;
                }
                *book = read;
            }
            "delta" => {
                let side: Side = line["side"].as_str().expect("side").parse().expect("side");
                let price: Price = line["price"]
                    .as_str()
                    .expect("price")
                    .parse()
                    .expect("price");
                let delta: Size = line["delta"]
                    .as_str()
                    .expect("delta")
                    .parse()
                    .expect("delta");
                book.apply_delta(side, price, delta).expect("applies");
            }
            "clear" => *book = Book::default(),
            other => panic!("unknown kind {other}"),
        }
        assert_eq!(
            Some(change),
            last_change.map_or(Some(0), |c| Some(c + 1)),
            "changes count up by one"
        );
        last_change = Some(change);
    }
    assert!(
        kinds.contains("clear") && kinds.contains("checkpoint"),
        "{kinds:?}"
    );
    for checkpoint in &expected {
        assert_eq!(
            books.get(&checkpoint.market),
            Some(&checkpoint.book),
            "{}",
            checkpoint.market
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_client_that_never_pongs_is_dropped() {
    let running = start(SimConfig {
        ping_interval_ms: 20,
        pong_timeout_ms: 100,
        ..config(2, 0)
    })
    .await;
    let sim = &running.sim;
    // Connected but never read: tungstenite only answers Pings while it is polled.
    let silent = Client::connect(sim).await;
    sim.wait_until(|sim| sim.connections() == 1).await;
    sim.wait_until(|sim| sim.connections() == 0).await;
    drop(silent);
    // A client that reads (and so answers) stays.
    let mut live = Client::connect(sim).await;
    for _ in 0..15 {
        let frame = tokio::time::timeout(FRAME_TIMEOUT, live.socket.next())
            .await
            .expect("a ping in time")
            .expect("still open")
            .expect("frame");
        assert!(matches!(frame, Message::Ping(_)), "{frame:?}");
    }
    assert_eq!(sim.connections(), 1);
}

#[tokio::test]
async fn ticker_subscriptions_send_initial_tickers_without_seq() {
    let running = start(config(3, 0)).await;
    let sim = &running.sim;
    let market = sim.markets()[2].clone();
    let mut client = Client::connect(sim).await;
    client
        .command(
            "subscribe",
            json!({"channels": ["ticker"], "market_tickers": [market], "send_initial_snapshot": true}),
        )
        .await;
    assert_eq!(client.next_json().await["type"], "subscribed");
    let ticker = client.next_json().await;
    assert_eq!(ticker["type"], "ticker");
    assert!(ticker.get("seq").is_none());
    let msg = &ticker["msg"];
    assert_eq!(msg["market_ticker"], market);
    let book = sim.book(&market).expect("book");
    let (bid, bid_size) = book.best_bid(Side::Yes).expect("bid");
    assert_eq!(msg["yes_bid_dollars"], bid.to_string());
    assert_eq!(msg["yes_bid_size_fp"], bid_size.to_string());
    for key in [
        "price_dollars",
        "yes_ask_dollars",
        "volume_fp",
        "open_interest_fp",
        "yes_ask_size_fp",
        "last_trade_size_fp",
        "time",
    ] {
        assert!(msg[key].is_string(), "{key}: {msg}");
    }
    for key in ["dollar_volume", "dollar_open_interest", "ts", "ts_ms"] {
        assert!(msg[key].is_i64(), "{key}: {msg}");
    }
}

/// Interop: the collector's signer (written separately) is accepted by the simulator's gate.
#[tokio::test]
async fn the_collectors_signer_passes_the_simulators_gate() {
    let signer = kalshibook::kalshi::signing::Signer::from_pem(
        "a952bcbe-ec3b-4b5b-b8f9-11dae589608c",
        TEST_KEY,
    )
    .expect("signer");
    let running = start(SimConfig {
        public_key: Some(parse_public_key_pem(TEST_KEY).expect("public key")),
        api_key_id: Some("a952bcbe-ec3b-4b5b-b8f9-11dae589608c".to_owned()),
        ..config(2, 0)
    })
    .await;
    let sim = &running.sim;
    let mut request = sim.ws_url().into_client_request().expect("request");
    let headers = signer.headers("GET", "/trade-api/ws/v2", now_ms());
    for (name, value) in headers.pairs() {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = name.parse().expect("name");
        request
            .headers_mut()
            .insert(name, value.parse().expect("value"));
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("signed upgrade accepted");
    let headers = signer.headers("GET", "/trade-api/v2/exchange/status", now_ms());
    let mut get = http_client().get(format!("{}/exchange/status", sim.rest_url()));
    for (name, value) in headers.pairs() {
        get = get.header(name, value);
    }
    assert_eq!(get.send().await.expect("request").status(), 200);
}
