//! `schema.graphql` is generated from the code; this test fails when they differ.
//! Regenerate with `cargo run -- schema > schema.graphql`.

#[test]
fn committed_schema_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let committed = std::fs::read_to_string(path).expect("schema.graphql exists");
    let generated = kalshibook::graphql::sdl();
    assert!(
        committed == generated,
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql`\n--- generated ---\n{generated}"
    );
}
