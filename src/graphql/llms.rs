//! `/llms.txt` and `/llms-full.txt`: the API explained for agents, generated from the schema's
//! own SDL (field lists, descriptions, arguments, scalars, enums) plus one runnable example
//! per query field, so the documentation cannot drift from the code: a test checks that every
//! query field has an example and that every example runs.

use std::fmt::Write;
use std::sync::LazyLock;

use async_graphql::parser::types::{
    FieldDefinition, TypeDefinition, TypeKind, TypeSystemDefinition,
};

use super::limits;

/// One example request for a query field.
#[derive(Clone, Copy, Debug)]
pub struct Example {
    /// The query field it demonstrates.
    pub field: &'static str,
    /// What it asks, in words.
    pub title: &'static str,
    /// The GraphQL document (self-contained: no variables).
    pub query: &'static str,
}

/// The market every example uses (tests seed it).
pub const EXAMPLE_TICKER: &str = "KXEXAMPLE-26MAR01-B50";

/// One or more examples per query field, in the order of the schema.
pub const EXAMPLES: &[Example] = &[
    Example {
        field: "apiVersion",
        title: "Which server version answers",
        query: "{ apiVersion }",
    },
    Example {
        field: "estimateCost",
        title: "What a request would cost, without running or charging it",
        query: r#"{
  estimateCost(query: "{ a: orderbook(ticker: \"KXEXAMPLE-26MAR01-B50\") { seq } b: orderbook(ticker: \"KXEXAMPLE-26MAR01-B60\") { seq } }") {
    credits operations { operation count credits }
  }
}"#,
    },
    Example {
        field: "me",
        title: "Your plan, credits this cycle and usage by operation (session token or API key)",
        query: r#"{
  me {
    tier creditsTotal creditsUsed creditsRemaining cycleStart cycleEnd
    usage(from: "2026-01-01T00:00:00Z", to: "2027-01-01T00:00:00Z", groupBy: [DAY, OPERATION]) {
      bucketStart operation requests credits
    }
  }
}"#,
    },
    Example {
        field: "apiKeys",
        title: "Your API keys (session token)",
        query: "{ apiKeys { id name prefix createdAt lastUsedAt revokedAt } }",
    },
    Example {
        field: "limits",
        title: "The limits to size requests by",
        query: "{ limits { maxBookDepth maxPageSize maxEventsRangeSeconds maxSnapshotInstants queryTimeoutSeconds maxQueryComplexity } }",
    },
    Example {
        field: "orderbook",
        title: "The book at an instant, with top-of-book figures, depth near the top and the cost of a market order",
        query: r#"{
  orderbook(ticker: "KXEXAMPLE-26MAR01-B50", at: "2026-03-01T14:30:00Z", depth: 5) {
    at complete status seq lastUpdateAt
    yes { price size }
    no { price size }
    bestYesBid bestNoBid yesAsk noAsk spread midpoint
    depthNearTop(within: "0.05") { yesBidSize noBidSize imbalance }
    costToBuy(side: YES, size: "100") { filled amount averagePrice worstPrice slippage complete }
    proceedsToSell(side: YES, size: "100") { filled amount averagePrice }
  }
}"#,
    },
    Example {
        field: "bookSnapshots",
        title: "The book every 10 minutes over an hour, in one request",
        query: r#"{
  bookSnapshots(ticker: "KXEXAMPLE-26MAR01-B50", from: "2026-03-01T14:00:00Z",
                to: "2026-03-01T15:00:00Z", interval: "10m", depth: 3) {
    at complete bestYesBid yesAsk midpoint
    yes { price size }
  }
}"#,
    },
    Example {
        field: "deltas",
        title: "The first page of deltas in a range (continue with after: pageInfo.endCursor)",
        query: r#"{
  deltas(ticker: "KXEXAMPLE-26MAR01-B50", from: "2026-03-01T14:00:00Z",
         to: "2026-03-01T15:00:00Z", first: 3) {
    edges { cursor node { ts receivedAt side price delta seq } }
    pageInfo { hasNextPage endCursor }
  }
}"#,
    },
    Example {
        field: "trades",
        title: "The first page of trades in a range",
        query: r#"{
  trades(ticker: "KXEXAMPLE-26MAR01-B50", from: "2026-03-01T14:00:00Z",
         to: "2026-03-01T15:00:00Z", first: 3) {
    nodes { ts tradeId yesPrice noPrice count takerSide }
    pageInfo { hasNextPage endCursor }
  }
}"#,
    },
    Example {
        field: "markets",
        title: "Active markets whose ticker or title mentions EXAMPLE, with what was recorded of each",
        query: r#"{
  markets(status: "active", search: "example", first: 10) {
    nodes { ticker title status closeTime coverage { firstRecordedAt lastRecordedAt deltaCount gapCount } }
    pageInfo { hasNextPage endCursor }
  }
}"#,
    },
    Example {
        field: "market",
        title: "One market's metadata, tick structure and coverage",
        query: r#"{
  market(ticker: "KXEXAMPLE-26MAR01-B50") {
    ticker eventTicker seriesTicker title subtitle status openTime closeTime
    priceLevelStructure priceRanges { start end step }
    coverage { firstRecordedAt lastRecordedAt openGapCount }
  }
}"#,
    },
    Example {
        field: "candles",
        title: "15-minute trade candles and midpoint candles",
        query: r#"{
  trades: candles(ticker: "KXEXAMPLE-26MAR01-B50", from: "2026-03-01T14:00:00Z",
                  to: "2026-03-01T15:00:00Z", interval: "15m", source: TRADES) {
    start open high low close volume count
  }
  quotes: candles(ticker: "KXEXAMPLE-26MAR01-B50", from: "2026-03-01T14:00:00Z",
                  to: "2026-03-01T15:00:00Z", interval: "15m", source: MIDPOINT) {
    start open close spreadLow spreadHigh spreadAverage
  }
}"#,
    },
    Example {
        field: "feedGaps",
        title: "Recorded gaps of a market over a day",
        query: r#"{
  feedGaps(ticker: "KXEXAMPLE-26MAR01-B50", from: "2026-03-01T00:00:00Z", to: "2026-03-02T00:00:00Z") {
    kind channel start end recovered detail
  }
}"#,
    },
    Example {
        field: "coverage",
        title: "What was recorded of a market over a day",
        query: r#"{
  coverage(ticker: "KXEXAMPLE-26MAR01-B50", from: "2026-03-01T00:00:00Z", to: "2026-03-02T00:00:00Z") {
    firstRecordedAt lastRecordedAt deltaCount snapshotCount tradeCount gapCount openGapCount incompleteSeconds
  }
}"#,
    },
];

/// The SDL parsed back: the schema's own descriptions are the documentation.
struct Parsed {
    types: Vec<TypeDefinition>,
}

impl Parsed {
    fn new() -> Self {
        let document =
            async_graphql::parser::parse_schema(super::sdl()).expect("the schema's own SDL parses");
        let types = document
            .definitions
            .into_iter()
            .filter_map(|d| match d {
                TypeSystemDefinition::Type(t) => Some(t.node),
                _ => None,
            })
            .collect();
        Self { types }
    }

    fn query_fields(&self) -> Vec<&FieldDefinition> {
        self.object_fields("Query")
    }

    fn subscription_fields(&self) -> Vec<&FieldDefinition> {
        self.object_fields("Subscription")
    }

    fn object_fields(&self, name: &str) -> Vec<&FieldDefinition> {
        self.types
            .iter()
            .find(|t| t.name.node == name)
            .and_then(|t| match &t.kind {
                TypeKind::Object(object) => Some(object.fields.iter().map(|f| &f.node).collect()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// One example per subscription field (run over WebSocket, not validated against a store).
pub const SUBSCRIPTION_EXAMPLES: &[Example] = &[
    Example {
        field: "orderbook",
        title: "A live book, 10 levels per side",
        query: r#"subscription {
  orderbook(ticker: "KXEXAMPLE-26MAR01-B50", depth: 10) {
    kind seq conn resync live
    yesBids { price size } noBids { price size }
    changes { side price delta }
  }
}"#,
    },
    Example {
        field: "deltas",
        title: "Two markets' deltas, replayed from an instant and continued live",
        query: r#"subscription {
  deltas(tickers: ["KXEXAMPLE-26MAR01-B50", "KXEXAMPLE-26MAR01-B60"], from: "2026-03-01T14:00:00Z") {
    kind ticker at conn sid seq live resync
    yesBids { price size } noBids { price size }
    changes { side price delta }
  }
}"#,
    },
    Example {
        field: "trades",
        title: "Live trades",
        query: r#"subscription {
  trades(tickers: ["KXEXAMPLE-26MAR01-B50"]) { kind ticker at tradeId yesPrice count takerSide }
}"#,
    },
    Example {
        field: "marketStatus",
        title: "Lifecycle changes",
        query: r#"subscription {
  marketStatus(tickers: ["KXEXAMPLE-26MAR01-B50"]) { kind ticker at eventType }
}"#,
    },
];

const LIVE_TEXT: &str = "\
- Transport: WebSocket on `/graphql` with the subprotocol `graphql-transport-ws` (the `graphql-ws` npm package; the legacy `graphql-ws` subprotocol also works). Authenticate with `{\"apiKey\": \"...\"}` as the `connection_init` payload (or the `X-API-Key` header on the upgrade).
- Revoking a key closes every connection using it at once (close code 4401).
- Close codes: 4401 no/unknown/revoked key or subscribe before `connection_ack`; 4400 malformed message; 4408 no `connection_init` within 10 s; 4429 a second `connection_init`; 1001 server shutting down.
- `orderbook`: first a `SNAPSHOT` (whole book with its exchange `conn`/`sid`/`seq`), then `DELTA`s (`changes`: add each `delta` to the level's size; 0 removes it). `GAP` means the upstream feed broke: drop the book and wait for the `SNAPSHOT` with `resync: true`. With `depth`, changes keep exactly the top `depth` levels.
- Replay then live: give `from` (at most 24 hours ago) to `orderbook` or `deltas`: history first (`live: false`), then one `CAUGHT_UP`, then live; no message is missing or repeated at the seam. `seq` increases within each (`conn`, `sid`) and is shared by the markets of that exchange subscription.
- `HEARTBEAT` after 5 s without a message. Final errors end a subscription (`extensions.code`): SLOW_CONSUMER (the client read too slowly: more than 4096 messages of a market behind), CREDITS_EXHAUSTED, SHUTTING_DOWN, UNAVAILABLE (no live feed on this server, or history could not catch up); refused at start: TOO_MANY_SUBSCRIPTIONS (per connection 100; per account Free 5, PAYG 25, Project 100), NOT_FOUND, BAD_INPUT.
- Cost: 5 credits to start a subscription, 1 credit per started block of 1,000 messages (heartbeats free), charged as they are sent.";

/// The names of the schema's query fields, in order.
#[must_use]
pub fn query_field_names() -> Vec<String> {
    Parsed::new()
        .query_fields()
        .iter()
        .map(|f| f.name.node.to_string())
        .collect()
}

fn description(text: Option<&async_graphql::Positioned<String>>) -> String {
    text.map(|d| d.node.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The first sentence of a description ("e.g. " and "i.e. " do not end one).
fn first_sentence(text: &str) -> &str {
    let mut from = 0;
    while let Some(found) = text[from..].find(". ") {
        let end = from + found;
        if !(text[..end].ends_with("e.g") || text[..end].ends_with("i.e")) {
            return &text[..=end];
        }
        from = end + 2;
    }
    text
}

fn signature(field: &FieldDefinition) -> String {
    let args: Vec<String> = field
        .arguments
        .iter()
        .map(|a| {
            let default = a
                .node
                .default_value
                .as_ref()
                .map(|d| format!(" = {}", d.node))
                .unwrap_or_default();
            format!("{}: {}{default}", a.node.name.node, a.node.ty.node)
        })
        .collect();
    if args.is_empty() {
        format!("{}: {}", field.name.node, field.ty.node)
    } else {
        format!(
            "{}({}): {}",
            field.name.node,
            args.join(", "),
            field.ty.node
        )
    }
}

const INTRO: &str = "KalshiBook records every level-2 order book change of every Kalshi market and serves it back over one GraphQL endpoint: the exact book at any instant, the raw deltas and trades, candles, feed gaps and book analytics (depth, imbalance, cost of a market order).";

const CONVENTIONS: &str = "\
- Endpoint: `POST /graphql` with a JSON body `{\"query\": \"...\", \"variables\": {...}}`; `GET /graphql?query=...` also works. Responses are JSON `{\"data\": ..., \"errors\": [...]}`.
- Prices are strings in dollars with 4 decimals (`\"0.5600\"`); sizes are strings in contracts with 2 decimals (`\"10.00\"`); derived amounts are `Decimal` strings whose decimals each field states. Never floats.
- Times are RFC 3339 strings; answers are UTC with microseconds. All times are the exchange's clock.
- Ranges are half-open `[from, to)`. Lists are paged with `first` and `after` (pass the previous `pageInfo.endCursor`; cursors stay valid while new data arrives).
- Kalshi quotes bids only: the YES ask is $1 − the best NO bid. `costToBuy(side: YES)` walks the NO bids.
- A book's `complete` is false inside a recorded feed gap (`status: IN_GAP`) or when nothing was recorded in the 2 hours before the instant (`status: NOT_RECORDED`, ladders null); a closed market's empty final book stays `COMPLETE` after its close, however long.
- Every error has `extensions.code` (see Errors below).
- Market data needs an API key in the `X-API-Key` header and costs credits (see Authentication and Credits below).";

/// How to authenticate, what each operation costs, the plans, the headers and the error
/// codes: generated from the price list and the tiers, so they cannot drift.
fn access_text() -> String {
    use crate::accounts::{Operation, Tier, cost};
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Authentication

- Market data (every query field except `apiVersion`, `limits`, `estimateCost`, `me`, `apiKeys` and introspection) needs an API key: send `X-API-Key: kb_live_...`. A missing, unknown or revoked key gets HTTP 401 with `UNAUTHENTICATED`; a revoked key is refused from its very next request.
- Get a key: `mutation {{ signup(email, password) {{ accessToken refreshToken }} }}` (or `login`), then `mutation {{ createApiKey(name: \"my bot\") {{ key }} }}` with `Authorization: Bearer <accessToken>`. The key is shown once; only its hash is stored. At most 20 active keys per account.
- Account operations (`apiKeys`, `createApiKey`, `revokeApiKey(id)`, `logout(refreshToken?)`: one session, or every session when omitted) take the session: `Authorization: Bearer <accessToken>`. `me` accepts the session or an API key. Access tokens last 15 minutes; `refresh(refreshToken)` returns a new pair (the old refresh token stops working).
- `signup` and `login`: at most 5 attempts a minute per client address and per email (`RATE_LIMITED`). Passwords: 12 to 128 characters.

## Credits

A request costs the sum of its root fields' prices, computed from the parsed query before it runs and charged once, atomically (concurrent requests can never spend more than the balance). Aliased fields count separately; a paged field (`first` up to the page limit) costs one page per call; `@skip`/`@include` are honoured. A request that returns no data (every field failed) is refunded. `estimateCost(query)` prices a query without running or charging it.

| operation | query field | credits |
|---|---|---|"
    );
    for op in Operation::ALL {
        let field = match op {
            Operation::Markets => "`markets` (one page)",
            Operation::Market => "`market`",
            Operation::DeltasPage => "`deltas` (one page)",
            Operation::TradesPage => "`trades` (one page)",
            Operation::OrderbookAt => "`orderbook`; `bookSnapshots` per instant",
            Operation::Candles => "`candles`",
            Operation::FeedGaps => "`feedGaps`",
            Operation::Coverage => "`coverage`",
            Operation::LiveSubscription => "starting any subscription (WebSocket)",
            Operation::LiveMessages => "each started block of 1,000 subscription messages",
        };
        let _ = writeln!(out, "| {} | {field} | {} |", op.as_str(), cost(op));
    }
    let _ = writeln!(
        out,
        "
## Plans

Credits reset every month on the account's cycle date (`me {{ cycleEnd }}`). Rate limits are per API key, shared by its concurrent requests.

| plan | credits a month | requests a minute per key | price | past the allowance |
|---|---|---|---|---|"
    );
    for tier in Tier::ALL {
        let limits = tier.limits();
        let price = if limits.monthly_price_cents == 0 {
            "free".to_owned()
        } else {
            format!(
                "${}.{:02} a month",
                limits.monthly_price_cents / 100,
                limits.monthly_price_cents % 100
            )
        };
        let overage = limits.overage_micro_usd_per_credit.map_or_else(
            || "CREDITS_EXHAUSTED until the reset".to_owned(),
            |micro| {
                format!(
                    "${}.{:06} per credit, billed monthly",
                    micro / 1_000_000,
                    micro % 1_000_000
                )
            },
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {price} | {overage} |",
            tier.as_str().to_uppercase(),
            limits.included_credits,
            limits.requests_per_minute
        );
    }
    let _ = writeln!(
        out,
        "
## Headers

Every response to a request sent with an API key carries:
- `X-Credits-Cost`: credits this request was charged (0 when refused or refunded)
- `X-Credits-Used`, `X-Credits-Remaining`, `X-Credits-Total`: the cycle's balance after it
- `X-RateLimit-Limit`: requests a minute for this key; `X-RateLimit-Remaining`: requests that may be sent right now; `X-RateLimit-Reset`: seconds until the full allowance is back
- on HTTP 429 also `Retry-After` (seconds)

## Errors

Every error has `extensions.code` and a message that says what to do:
- `BAD_INPUT` (HTTP 200, or 400/413 for a malformed request): fix the argument named in `extensions.argument`
- `NOT_FOUND`: unknown ticker, or a key that is not yours
- `UNAUTHENTICATED` (HTTP 401): no, invalid or revoked API key; or no, invalid or expired session token for an account operation
- `FORBIDDEN` (HTTP 403): allowed for no one on this plan (e.g. more than 20 active keys)
- `CREDITS_EXHAUSTED` (HTTP 429): the cycle's credits cannot cover the request; nothing was charged; the message names the reset date and the ways on (enable PAYG, upgrade)
- `RATE_LIMITED` (HTTP 429, `Retry-After`, `extensions.retryAfterSeconds`): too many requests for this key, or too many sign-in attempts
- `UNAVAILABLE` (HTTP 503 when the accounts database does not answer, so nothing ran and nothing was charged; HTTP 200 with the field's error when the history database does not answer): retry in a few seconds
- `TIMEOUT`: the query ran past the time limit; ask for less
- `INTERNAL`: retry; report `reference` if it persists"
    );
    out
}

fn limits_text() -> String {
    format!(
        "\
- book depth: 1 to {} levels per side (default {})
- page size `first`: 1 to {} (default {})
- `deltas`/`trades` range: at most {}; `feedGaps`/`coverage` range: at most {}
- `bookSnapshots`: at most {} instants spanning at most {}
- `candles`: at most {} candles of 1 to {} minutes
- each database query: at most {} s
- a request: at most {} levels of nesting, cost {} (orderbook {}, bookSnapshots {}, deltas/trades page {}, candles {}, markets/market/feedGaps/coverage {}, other fields 1), query text {} bytes, body {} bytes",
        limits::MAX_BOOK_DEPTH,
        limits::DEFAULT_BOOK_DEPTH,
        limits::MAX_PAGE_SIZE,
        limits::DEFAULT_PAGE_SIZE,
        super::args::human(limits::MAX_EVENTS_RANGE),
        super::args::human(limits::MAX_GAPS_RANGE),
        limits::MAX_SNAPSHOT_INSTANTS,
        super::args::human(limits::MAX_SNAPSHOTS_RANGE),
        limits::MAX_CANDLES,
        limits::MAX_CANDLE_MINUTES,
        limits::QUERY_TIMEOUT.as_secs(),
        limits::MAX_DEPTH,
        limits::MAX_COMPLEXITY,
        limits::COST_ORDERBOOK,
        limits::COST_BOOK_SNAPSHOTS,
        limits::COST_EVENTS_PAGE,
        limits::COST_CANDLES,
        limits::COST_MARKETS,
        limits::MAX_QUERY_BYTES,
        limits::MAX_BODY_BYTES,
    )
}

static LLMS_TXT: LazyLock<String> = LazyLock::new(|| {
    let parsed = Parsed::new();
    let mut out = String::new();
    let _ = writeln!(out, "# KalshiBook\n\n> {INTRO}\n");
    let _ = writeln!(
        out,
        "One GraphQL endpoint: `POST /graphql` (JSON) or `GET /graphql?query=...`; GraphiQL in a browser at `/graphql`. The full reference with an example per query is `/llms-full.txt`.\n"
    );
    let _ = writeln!(out, "## Conventions\n\n{CONVENTIONS}\n");
    let _ = writeln!(out, "{}", access_text());
    let _ = writeln!(out, "## Queries\n");
    for field in parsed.query_fields() {
        let _ = writeln!(
            out,
            "- `{}`: {}",
            field.name.node,
            first_sentence(&description(field.description.as_ref()))
        );
    }
    let _ = writeln!(out, "\n## Mutations\n");
    for field in parsed.object_fields("Mutation") {
        let _ = writeln!(
            out,
            "- `{}`: {}",
            field.name.node,
            first_sentence(&description(field.description.as_ref()))
        );
    }
    let _ = writeln!(out, "\n## Subscriptions (live, WebSocket)\n");
    for field in parsed.subscription_fields() {
        let _ = writeln!(
            out,
            "- `{}`: {}",
            field.name.node,
            first_sentence(&description(field.description.as_ref()))
        );
    }
    let _ = writeln!(out, "\n{LIVE_TEXT}");
    let _ = writeln!(
        out,
        "\n## Docs\n\n- [/llms-full.txt](/llms-full.txt): every query with arguments, an example, types, errors, limits and the SDL\n- [/graphql](/graphql): GraphiQL (browser) and the endpoint"
    );
    out
});

/// One operation of `/llms-full.txt`: its signature, description, arguments and examples.
fn write_operation(out: &mut String, kind: &str, field: &FieldDefinition, examples: &[Example]) {
    let name = field.name.node.as_str();
    let _ = writeln!(out, "### {kind}{name}\n\n`{}`\n", signature(field));
    let _ = writeln!(out, "{}\n", description(field.description.as_ref()));
    if !field.arguments.is_empty() {
        let _ = writeln!(out, "Arguments:");
        for arg in &field.arguments {
            let _ = writeln!(
                out,
                "- `{}` ({}): {}",
                arg.node.name.node,
                arg.node.ty.node,
                description(arg.node.description.as_ref())
            );
        }
        let _ = writeln!(out);
    }
    for example in examples.iter().filter(|e| e.field == name) {
        let _ = writeln!(
            out,
            "Example — {}:\n\n```graphql\n{}\n```\n",
            example.title, example.query
        );
    }
}

static LLMS_FULL_TXT: LazyLock<String> = LazyLock::new(|| {
    let parsed = Parsed::new();
    let mut out = String::new();
    let _ = writeln!(out, "# KalshiBook API reference\n\n> {INTRO}\n");
    let _ = writeln!(out, "## Conventions\n\n{CONVENTIONS}\n");
    let _ = writeln!(out, "{}", access_text());
    let _ = writeln!(out, "## Limits\n\n{}\n", limits_text());
    let _ = writeln!(out, "## Queries\n");
    for field in parsed.query_fields() {
        write_operation(&mut out, "", field, EXAMPLES);
    }
    let _ = writeln!(out, "## Subscriptions (live, WebSocket)\n\n{LIVE_TEXT}\n");
    for field in parsed.subscription_fields() {
        write_operation(&mut out, "subscription ", field, SUBSCRIPTION_EXAMPLES);
    }
    let _ = writeln!(out, "## Mutations\n");
    for field in parsed.object_fields("Mutation") {
        let _ = writeln!(out, "### {}\n\n`{}`\n", field.name.node, signature(field));
        let _ = writeln!(out, "{}\n", description(field.description.as_ref()));
    }
    let _ = writeln!(out, "## Types\n");
    for ty in &parsed.types {
        if ty.name.node == "Query"
            || ty.name.node == "Mutation"
            || ty.name.node == "Subscription"
            || ty.name.node.starts_with("__")
        {
            continue;
        }
        let kind = match &ty.kind {
            TypeKind::Scalar => "scalar",
            TypeKind::Object(_) => "type",
            TypeKind::Enum(_) => "enum",
            TypeKind::InputObject(_) => "input",
            TypeKind::Interface(_) => "interface",
            TypeKind::Union(_) => "union",
        };
        let _ = writeln!(
            out,
            "### {kind} {}\n\n{}\n",
            ty.name.node,
            description(ty.description.as_ref())
        );
        match &ty.kind {
            TypeKind::Object(object) => {
                for field in &object.fields {
                    let _ = writeln!(
                        out,
                        "- `{}`: {}",
                        signature(&field.node),
                        description(field.node.description.as_ref())
                    );
                }
                let _ = writeln!(out);
            }
            TypeKind::Enum(values) => {
                for value in &values.values {
                    let _ = writeln!(
                        out,
                        "- `{}`: {}",
                        value.node.value.node,
                        description(value.node.description.as_ref())
                    );
                }
                let _ = writeln!(out);
            }
            _ => {}
        }
    }
    let _ = writeln!(out, "## Schema (SDL)\n\n```graphql\n{}```", super::sdl());
    out
});

/// The short guide served at `/llms.txt`.
#[must_use]
pub fn llms_txt() -> &'static str {
    &LLMS_TXT
}

/// The full reference served at `/llms-full.txt`.
#[must_use]
pub fn llms_full_txt() -> &'static str {
    &LLMS_FULL_TXT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_field_has_an_example_and_a_section() {
        let full = llms_full_txt();
        let short = llms_txt();
        for name in query_field_names() {
            assert!(
                EXAMPLES.iter().any(|e| e.field == name),
                "no example for query field {name}"
            );
            assert!(full.contains(&format!("### {name}\n")), "{name}");
            assert!(short.contains(&format!("- `{name}`:")), "{name}");
        }
        for example in EXAMPLES {
            assert!(full.contains(example.query), "{}", example.field);
            assert!(
                query_field_names().iter().any(|n| n == example.field),
                "example for a field that does not exist: {}",
                example.field
            );
        }
    }

    #[test]
    fn every_subscription_field_has_an_example_and_a_section() {
        let parsed = Parsed::new();
        let names: Vec<String> = parsed
            .subscription_fields()
            .iter()
            .map(|f| f.name.node.to_string())
            .collect();
        assert_eq!(names, ["orderbook", "deltas", "trades", "marketStatus"]);
        for name in &names {
            assert!(
                SUBSCRIPTION_EXAMPLES.iter().any(|e| e.field == name),
                "{name}"
            );
            assert!(
                llms_full_txt().contains(&format!("### subscription {name}\n")),
                "{name}"
            );
            assert!(llms_txt().contains(&format!("- `{name}`:")), "{name}");
        }
        for example in SUBSCRIPTION_EXAMPLES {
            let document = async_graphql::parser::parse_query(example.query);
            assert!(document.is_ok(), "{}: {document:?}", example.field);
        }
    }

    #[test]
    fn the_docs_state_access_credits_plans_headers_and_codes() {
        for text in [llms_txt(), llms_full_txt()] {
            for needle in [
                "X-API-Key",
                "Authorization: Bearer",
                "| orderbook | `orderbook`; `bookSnapshots` per instant | 5 |",
                "| deltas | `deltas` (one page) | 2 |",
                "| markets | `markets` (one page) | 1 |",
                "| FREE | 1000 | 30 | free |",
                "| PAYG | 1000 | 60 | free | $0.008000 per credit",
                "| PROJECT | 4000 | 120 | $30.00 a month |",
                "X-Credits-Remaining",
                "X-Credits-Used",
                "X-Credits-Total",
                "X-Credits-Cost",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "Retry-After",
                "CREDITS_EXHAUSTED",
                "RATE_LIMITED",
                "UNAUTHENTICATED",
                "UNAVAILABLE",
                "`createApiKey`",
            ] {
                assert!(text.contains(needle), "{needle}");
            }
        }
    }

    #[test]
    fn first_sentences_skip_abbreviations() {
        assert_eq!(
            first_sentence("The version, e.g. \"0.1.0\". Costs nothing."),
            "The version, e.g. \"0.1.0\"."
        );
        assert_eq!(first_sentence("One. Two."), "One.");
        assert_eq!(first_sentence("No end"), "No end");
    }

    #[tokio::test]
    async fn every_example_passes_validation() {
        // Without a store the resolvers answer INTERNAL, and account fields without a session
        // UNAUTHENTICATED; anything else (BAD_INPUT) means the example does not fit the schema
        // or its limits.
        let schema = super::super::schema();
        for example in EXAMPLES {
            let response = schema.execute(example.query).await;
            for error in &response.errors {
                let code = error
                    .extensions
                    .as_ref()
                    .and_then(|e| e.get("code"))
                    .cloned();
                assert!(
                    code == Some(async_graphql::Value::from("INTERNAL"))
                        || code == Some(async_graphql::Value::from("UNAUTHENTICATED")),
                    "{}: {error:?}",
                    example.field
                );
            }
        }
    }
}
