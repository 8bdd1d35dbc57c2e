//! The model checker (issue 24, `MODEL.md`): every interleaving of the crate's real agent,
//! server and linkers with the attackers, exhaustively to each scenario's bounds.
//!
//! An ordinary build (`cargo test`) runs a smoke bound of every scenario. The CI step builds
//! with `--cfg lanlink_model` in release: the full bounds, and one test per mutant
//! (`src/mutant.rs`) that must be caught with a counterexample:
//!
//! ```text
//! RUSTFLAGS="--cfg lanlink_model" CARGO_TARGET_DIR=target/model \
//!     cargo test --release --test model --test model_replays -- --nocapture
//! ```

mod model_world;

use std::sync::Mutex;

use model_world::{check, Report, Scenario, ALWAYS, EVENTUALLY, SOMETIMES};

/// One model run at a time: the mutant selection is process-wide, and the checker takes both
/// cores.
static RUN: Mutex<()> = Mutex::new(());

fn full_bounds() -> bool {
    cfg!(lanlink_model) && !cfg!(debug_assertions)
}

fn bounded(sc: Scenario) -> Scenario {
    // A development knob: every depth cut to at most this.
    if let Some(depth) = std::env::var("LANLINK_MODEL_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
    {
        return sc.smoke(depth);
    }
    if full_bounds() {
        // The longer run of MODEL.md's figures: every depth this much deeper.
        let extra = std::env::var("LANLINK_MODEL_EXTRA")
            .ok()
            .and_then(|d| d.parse::<usize>().ok())
            .unwrap_or(0);
        let depth = sc.depth + extra;
        Scenario { depth, ..sc }
    } else {
        // The smoke bound of an ordinary (debug) `cargo test`.
        let depth = match sc.name {
            "fair" => 40,
            "instances" => 14,
            "instances_race" => 16,
            "window" => 9,
            _ => 8,
        };
        sc.smoke(depth)
    }
}

fn print(report: &Report) {
    println!(
        "{:<10} states {:>9} unique {:>9} depth {:>3} time {:>7.2?}  reached: {:?}",
        report.name, report.states, report.unique, report.depth, report.elapsed, report.reached
    );
}

#[test]
fn every_property_holds_and_every_sometimes_is_reached() {
    let _run = RUN.lock().unwrap_or_else(|e| e.into_inner());
    #[cfg(lanlink_model)]
    lanlink::mutant::select(None);
    let mut reached = std::collections::BTreeSet::new();
    let mut total = std::time::Duration::ZERO;
    let only = std::env::var("LANLINK_MODEL_SCENARIO").ok();
    for sc in Scenario::all() {
        if only.as_deref().is_some_and(|o| o != sc.name) {
            continue;
        }
        let sc = bounded(sc);
        let report = check(sc.clone());
        print(&report);
        total += report.elapsed;
        for (name, log) in &report.violations {
            let (_, story) = model_world::violations_of(&sc, log);
            println!("VIOLATED in {}: {name}\n{}", sc.name, story.join("\n"));
        }
        assert!(
            report.violations.is_empty(),
            "{}: {:?}",
            sc.name,
            report
                .violations
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
        );
        reached.extend(report.reached.iter().copied());
    }
    println!("all scenarios: {total:.2?}");
    if only.is_some() {
        return;
    }
    if full_bounds() {
        for name in SOMETIMES {
            assert!(reached.contains(name), "never reached: {name}");
        }
    } else {
        // The smoke bound still reaches a link, a lockout and a refused confirmation.
        for name in [SOMETIMES[0], SOMETIMES[1], SOMETIMES[4]] {
            assert!(reached.contains(name), "never reached: {name}");
        }
    }
    // The names are stable (MODEL.md lists them).
    assert_eq!(ALWAYS.len(), 10);
    assert!(EVENTUALLY.starts_with("every attempt"));
}

/// Each mutant, with the scenario that catches it and the property it breaks.
#[cfg(lanlink_model)]
mod mutants {
    use super::*;
    use lanlink::mutant::{select, Mutant};

    fn caught(mutant: Mutant, sc: Scenario, property: usize) {
        let property_name = ALWAYS[property];
        let _run = RUN.lock().unwrap_or_else(|e| e.into_inner());
        select(Some(mutant));
        let report = model_world::check_until(bounded(sc.clone()), Some(ALWAYS[property]));
        select(None);
        print(&report);
        let found = report
            .violations
            .iter()
            .find(|(name, _)| *name == property_name)
            .unwrap_or_else(|| panic!("{mutant:?} not caught: {property_name}"));
        let (_, story) = model_world::violations_of(&sc, &found.1);
        println!(
            "{mutant:?} caught ({property_name}); counterexample {:?}\n{}",
            found.1,
            story.join("\n")
        );
    }

    #[test]
    fn secret_unchecked() {
        caught(Mutant::SecretUnchecked, Scenario::neighbour(), 9);
    }

    #[test]
    fn used_code_accepted() {
        caught(Mutant::UsedCodeAccepted, Scenario::code(), 2);
    }

    #[test]
    fn one_visible_skipped() {
        caught(Mutant::OneVisibleSkipped, Scenario::neighbour(), 4);
    }

    #[test]
    fn approval_skipped() {
        caught(Mutant::ApprovalSkipped, Scenario::window(), 5);
    }

    #[test]
    fn guess_uncharged() {
        caught(Mutant::GuessUncharged, Scenario::neighbour(), 7);
    }

    #[test]
    fn charge_not_atomic() {
        caught(Mutant::ChargeNotAtomic, Scenario::instances(), 7);
    }

    #[test]
    fn short_code_without_nonce() {
        caught(Mutant::ShortCodeWithoutNonce, Scenario::window(), 6);
    }

    #[test]
    fn host_check_skipped() {
        caught(Mutant::HostCheckSkipped, Scenario::window(), 3);
    }
}
