//! Inputs the fuzzers found, replayed through their harnesses in ordinary test runs.
#![cfg(all(feature = "fuzz", feature = "obico"))]

/// `obico_ops`, 30-minute run of 2026-11-29: the fuzzer learned the code the harness's seeded
/// RNG makes the server mint for a link, and presented it from the agent's own network before the
/// agent's poll delivered it. The server was right to redeem it (it is the real code, bound to that
/// network, device and account); the harness called it a made-up code. The harness now accepts
/// such a code only when it matches a link or claim awaiting delivery from that very network, for
/// that device and account.
#[test]
fn obico_ops_predicted_code_redeems_only_as_its_binding() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz-regressions/obico_ops-predicted-code.bin"
    ))
    .expect("the regression input");
    lanlink::fuzz::obico_ops(&data);
}

/// `client_addr`, CI's 30-second run of 2026-12-01: a configured NAT64 prefix whose embedded
/// address the well-known prefix does not claim, but which maps back to another IPv4 address
/// than the one embedded.
#[test]
fn client_addr_nat64_embedded_address_maps_back() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz-regressions/client_addr-nat64-embedded.bin"
    ))
    .expect("the regression input");
    lanlink::fuzz::client_addr(&data);
}

/// `agent_ops`, 3-minute run of 2026-12-02, after the agent took over its redemption retries: a
/// forwarded message reached a redeeming agent after its redeem deadline, and the agent's timer
/// stopped the redemption (`ServerUnreachable`) as it handled the message. The agent was right
/// (time passed); the harness took any change of a non-discovering agent for the message's doing.
#[test]
fn agent_ops_message_after_the_redeem_deadline_lets_the_timer_stop_it() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz-regressions/agent_ops-message-after-redeem-deadline.bin"
    ))
    .expect("the regression input");
    lanlink::fuzz::agent_ops(&data);
}

/// `adapter_decode`, 4-minute run (audit, third round): a stored network record whose presence
/// expiry (`"e": 18000000020206000`, past the last time chrono can hold) survived pruning at
/// `DateTime::MAX_UTC`, so the presence could never lapse. Every time read from a store is now
/// bounded when decoded; the harness's "nothing present after pruning at the end of time" holds.
#[test]
fn adapter_decode_far_expiry_is_bounded_and_pruned() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz-regressions/adapter_decode-far-expiry.json"
    ))
    .expect("the regression input");
    lanlink::fuzz::adapter_decode(&data);
}
