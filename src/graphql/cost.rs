//! Pricing a request before it runs: the parsed document's root fields, each mapped to the
//! operations of the price list (`accounts::cost`), so that a request is charged once, up
//! front, exactly what it will run (and `estimateCost` can say so without running it).

use std::collections::HashSet;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{InputType, Name, Positioned, Value, Variables};

use super::error::ApiError;
use super::limits;
use super::scalars::{DateTimeScalar, IntervalScalar};
use crate::accounts::{Credits, Operation, price};

/// What a request will do, as far as access and credits are concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// One entry per priced root field, page or instant, in document order.
    pub operations: Vec<Operation>,
    /// Whether it reads market data (priced or not): it then needs an API key.
    pub reads_data: bool,
    /// Whether it touches the caller's account (`me`, `apiKeys`, every mutation).
    pub touches_account: bool,
}

impl Plan {
    /// The credits the request costs.
    #[must_use]
    pub fn cost(&self) -> Credits {
        price(self.operations.iter().copied())
    }

    /// Per operation: how many, and what they cost together, in price-list order.
    #[must_use]
    pub fn lines(&self) -> Vec<(Operation, u32, Credits)> {
        Operation::ALL
            .into_iter()
            .filter_map(|op| {
                let count = self.operations.iter().filter(|o| **o == op).count();
                (count > 0).then(|| {
                    let count = u32::try_from(count).unwrap_or(u32::MAX);
                    (op, count, price(std::iter::repeat_n(op, count as usize)))
                })
            })
            .collect()
    }
}

/// Root fields that cost nothing and need no credentials: metadata about the API itself.
const FREE_FIELDS: [&str; 6] = [
    "apiVersion",
    "limits",
    "estimateCost",
    "__typename",
    "__schema",
    "__type",
];

/// Root query fields about the caller's account (they need a session or a key, not credits).
const ACCOUNT_FIELDS: [&str; 2] = ["me", "apiKeys"];

/// Prices `query` (the operation `operation_name` of it, or its only one) with `variables`.
///
/// # Errors
/// [`ApiError::BadInput`] when the text does not parse or names no operation it holds; the
/// schema would refuse such a request too, so nothing can run unpriced.
pub fn plan(
    query: &str,
    operation_name: Option<&str>,
    variables: &Variables,
) -> Result<Plan, ApiError> {
    let document = async_graphql::parser::parse_query(query).map_err(|error| {
        ApiError::bad_input(
            "query",
            format!("the query does not parse (GraphQL syntax): {error}"),
        )
    })?;
    plan_document(&document, operation_name, variables)
}

/// As [`plan`], for a document already parsed.
///
/// # Errors
/// [`ApiError::BadInput`] when the document has no such operation.
pub fn plan_document(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
) -> Result<Plan, ApiError> {
    let operation = select_operation(document, operation_name)?;
    let mut pricer = Pricer {
        document,
        operation,
        variables,
        seen_keys: HashSet::new(),
        plan: Plan::default(),
    };
    pricer.selection_set(&operation.selection_set.node, 0);
    Ok(pricer.plan)
}

fn select_operation<'d>(
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Result<&'d OperationDefinition, ApiError> {
    match (&document.operations, name) {
        (DocumentOperations::Single(op), None) => Ok(&op.node),
        (DocumentOperations::Single(op), Some(_)) => Ok(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => {
            ops.get(name).map(|op| &op.node).ok_or_else(|| {
                ApiError::bad_input(
                    "operationName",
                    format!("the document has no operation named {name:?}"),
                )
            })
        }
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            Ok(&ops.values().next().expect("one operation").node)
        }
        (DocumentOperations::Multiple(_), None) => Err(ApiError::bad_input(
            "operationName",
            "the document holds several operations: name the one to run in `operationName`",
        )),
    }
}

/// Fragments nest at most this deep at the root (a cycle is a validation error anyway).
const MAX_FRAGMENT_NESTING: usize = 16;

struct Pricer<'a> {
    document: &'a ExecutableDocument,
    operation: &'a OperationDefinition,
    variables: &'a Variables,
    /// Root fields with the same response key are merged by GraphQL and run once.
    seen_keys: HashSet<Name>,
    plan: Plan,
}

impl Pricer<'_> {
    fn selection_set(&mut self, set: &SelectionSet, nesting: usize) {
        if nesting > MAX_FRAGMENT_NESTING {
            return;
        }
        for item in &set.items {
            if self.skipped(item.node.directives()) {
                continue;
            }
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    if !self.seen_keys.insert(field.response_key().node.clone()) {
                        continue;
                    }
                    self.field(field);
                }
                Selection::FragmentSpread(spread) => {
                    if let Some(fragment) =
                        self.document.fragments.get(&spread.node.fragment_name.node)
                    {
                        self.selection_set(&fragment.node.selection_set.node, nesting + 1);
                    }
                }
                Selection::InlineFragment(inline) => {
                    self.selection_set(&inline.node.selection_set.node, nesting + 1);
                }
            }
        }
    }

    fn field(&mut self, field: &async_graphql::parser::types::Field) {
        let name = field.name.node.as_str();
        if self.operation.ty != OperationType::Query {
            // Mutations are account operations; subscriptions are priced where they stream.
            self.plan.touches_account |= self.operation.ty == OperationType::Mutation;
            self.plan.reads_data |= self.operation.ty == OperationType::Subscription;
            return;
        }
        if FREE_FIELDS.contains(&name) {
            return;
        }
        if ACCOUNT_FIELDS.contains(&name) {
            self.plan.touches_account = true;
            return;
        }
        // Everything else reads market data (an unknown field fails validation, unrun).
        self.plan.reads_data = true;
        let instants = if name == "bookSnapshots" {
            self.snapshot_instants(field)
        } else {
            0
        };
        let ops = &mut self.plan.operations;
        match name {
            "orderbook" => ops.push(Operation::OrderbookAt),
            "bookSnapshots" => ops.extend(std::iter::repeat_n(Operation::OrderbookAt, instants)),
            "deltas" => ops.push(Operation::DeltasPage),
            "trades" => ops.push(Operation::TradesPage),
            "markets" => ops.push(Operation::Markets),
            "market" => ops.push(Operation::Market),
            "candles" => ops.push(Operation::Candles),
            "feedGaps" => ops.push(Operation::FeedGaps),
            "coverage" => ops.push(Operation::Coverage),
            _ => {}
        }
    }

    /// The number of books `bookSnapshots` returns, computed as its resolver does; 1 when the
    /// arguments are invalid (the resolver then refuses the field and the charge is refunded).
    fn snapshot_instants(&self, field: &async_graphql::parser::types::Field) -> usize {
        let from = self.argument::<DateTimeScalar>(field, "from");
        let to = self.argument::<DateTimeScalar>(field, "to");
        let interval_us = super::args::interval(
            self.argument::<IntervalScalar>(field, "interval"),
            self.argument::<i32>(field, "intervalSeconds"),
            "intervalSeconds",
            1_000_000,
        )
        .ok();
        let (Some(from), Some(to), Some(interval_us)) = (from, to, interval_us) else {
            return 1;
        };
        if interval_us < 1_000 || to.0 <= from.0 {
            return 1;
        }
        let count = (to.0 - from.0).saturating_add(interval_us - 1) / interval_us;
        if (1..=limits::MAX_SNAPSHOT_INSTANTS).contains(&count) {
            usize::try_from(count).unwrap_or(1)
        } else {
            1
        }
    }

    /// An argument's value with variables substituted, parsed as the schema would.
    fn argument<T: InputType>(
        &self,
        field: &async_graphql::parser::types::Field,
        name: &str,
    ) -> Option<T> {
        let value = field.get_argument(name)?.node.clone();
        let value = value
            .into_const_with(|var| Ok::<_, ()>(self.variable(&var)))
            .ok()?;
        T::parse(Some(value)).ok()
    }

    fn variable(&self, name: &Name) -> Value {
        self.variables.get(name).cloned().unwrap_or_else(|| {
            self.operation
                .variable_definitions
                .iter()
                .find(|def| def.node.name.node == *name)
                .and_then(|def| def.node.default_value().cloned())
                .unwrap_or(Value::Null)
        })
    }

    /// Whether `@skip(if: true)` or `@include(if: false)` keeps this selection from running.
    fn skipped(&self, directives: &[Positioned<async_graphql::parser::types::Directive>]) -> bool {
        directives.iter().any(|directive| {
            let directive = &directive.node;
            let condition = directive.get_argument("if").and_then(|value| {
                match value
                    .node
                    .clone()
                    .into_const_with(|var| Ok::<_, ()>(self.variable(&var)))
                {
                    Ok(Value::Boolean(b)) => Some(b),
                    _ => None,
                }
            });
            matches!(
                (directive.name.node.as_str(), condition),
                ("skip", Some(true)) | ("include", Some(false))
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost_of(query: &str, variables: serde_json::Value) -> (u64, bool, bool) {
        let plan = plan(query, None, &Variables::from_json(variables)).expect("parses");
        (plan.cost().get(), plan.reads_data, plan.touches_account)
    }

    #[test]
    fn a_request_costs_the_sum_of_its_root_fields() {
        let two_books =
            "{ a: orderbook(ticker: \"X\") { complete } b: orderbook(ticker: \"Y\") { complete } }";
        assert_eq!(cost_of(two_books, serde_json::json!({})), (10, true, false));
        let mixed = "{ markets { nodes { ticker } } deltas(ticker: \"X\", from: \"2026-01-01T00:00:00Z\", to: \"2026-01-02T00:00:00Z\") { nodes { seq } } trades(ticker: \"X\", from: \"2026-01-01T00:00:00Z\", to: \"2026-01-02T00:00:00Z\") { nodes { tradeId } } market(ticker: \"X\") { ticker } }";
        assert_eq!(
            cost_of(mixed, serde_json::json!({})),
            (1 + 2 + 2 + 1, true, false)
        );
        assert_eq!(
            cost_of(
                "{ apiVersion limits { maxPageSize } __typename }",
                serde_json::json!({})
            ),
            (0, false, false)
        );
        assert_eq!(
            cost_of("{ me { tier } }", serde_json::json!({})),
            (0, false, true)
        );
        assert_eq!(
            cost_of(
                "mutation { login(email: \"a\", password: \"b\") { accessToken } }",
                serde_json::json!({})
            ),
            (0, false, true)
        );
    }

    #[test]
    fn merged_fields_fragments_and_directives_are_counted_as_they_run() {
        // The same response key twice is merged and runs once.
        let merged = "{ orderbook(ticker: \"X\") { complete } orderbook(ticker: \"X\") { seq } }";
        assert_eq!(cost_of(merged, serde_json::json!({})).0, 5);
        let fragments = "query Q($skip: Boolean!) { ...F ... on Query { c: orderbook(ticker: \"Z\") { seq } } d: orderbook(ticker: \"W\") @skip(if: $skip) { seq } } fragment F on Query { a: orderbook(ticker: \"X\") { seq } b: market(ticker: \"Y\") { ticker } }";
        assert_eq!(
            cost_of(fragments, serde_json::json!({ "skip": true })).0,
            11
        );
        assert_eq!(
            cost_of(fragments, serde_json::json!({ "skip": false })).0,
            16
        );
    }

    #[test]
    fn book_snapshots_cost_a_book_per_instant() {
        let query = "query($from: DateTime!) { bookSnapshots(ticker: \"X\", from: $from, to: \"2026-01-01T01:00:00Z\", intervalSeconds: 600) { seq } }";
        let vars = serde_json::json!({ "from": "2026-01-01T00:00:00Z" });
        assert_eq!(cost_of(query, vars).0, 6 * 5);
        let bad = "{ bookSnapshots(ticker: \"X\", from: \"2026-01-01T00:00:00Z\", to: \"2026-01-01T01:00:00Z\", intervalSeconds: 0) { seq } }";
        assert_eq!(cost_of(bad, serde_json::json!({})).0, 5);
        // `interval` in any of its forms, from a variable or written in the query.
        for interval in [
            serde_json::json!(600),
            serde_json::json!("10m"),
            serde_json::json!("PT10M"),
        ] {
            let query = "query($i: Interval) { bookSnapshots(ticker: \"X\", from: \"2026-01-01T00:00:00Z\", to: \"2026-01-01T01:00:00Z\", interval: $i) { seq } }";
            assert_eq!(
                cost_of(query, serde_json::json!({ "i": interval })).0,
                6 * 5
            );
        }
        let written = "{ bookSnapshots(ticker: \"X\", from: \"2026-01-01T00:00:00Z\", to: \"2026-01-01T01:00:00Z\", interval: \"15m\") { seq } }";
        assert_eq!(cost_of(written, serde_json::json!({})).0, 4 * 5);
    }

    #[test]
    fn the_named_operation_is_the_one_priced() {
        let doc = "query A { orderbook(ticker: \"X\") { seq } } query B { market(ticker: \"X\") { ticker } }";
        let vars = Variables::default();
        assert_eq!(plan(doc, Some("B"), &vars).unwrap().cost().get(), 1);
        assert_eq!(plan(doc, Some("A"), &vars).unwrap().cost().get(), 5);
        assert!(plan(doc, None, &vars).is_err());
        assert!(plan(doc, Some("C"), &vars).is_err());
        assert!(plan("{ orderbook(", None, &vars).is_err());
    }
}
