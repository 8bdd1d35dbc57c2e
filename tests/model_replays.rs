//! Each mutant's counterexample, found by the model checker (`tests/model.rs`, `MODEL.md`),
//! replayed as a deterministic scenario through the same world: with the mutant compiled in and
//! selected (`--cfg lanlink_model`) the story breaks its property; with the real code the same
//! story is refused and no property breaks. The story is printed (`--nocapture`).

mod model_world;

#[cfg(lanlink_model)]
use model_world::all_enabled;
use model_world::Act::{self, *};
use model_world::{violations_of, Scenario, ALWAYS};

/// One replay at a time: the mutant selection is process-wide.
static RUN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn replay(mutant: &str, sc: Scenario, property: usize, log: Vec<Act>) {
    let _run = RUN.lock().unwrap_or_else(|e| e.into_inner());
    #[cfg(lanlink_model)]
    {
        use lanlink::mutant::{select, Mutant};
        let selected = match mutant {
            "SecretUnchecked" => Mutant::SecretUnchecked,
            "UsedCodeAccepted" => Mutant::UsedCodeAccepted,
            "OneVisibleSkipped" => Mutant::OneVisibleSkipped,
            "ApprovalSkipped" => Mutant::ApprovalSkipped,
            "GuessUncharged" => Mutant::GuessUncharged,
            "ChargeNotAtomic" => Mutant::ChargeNotAtomic,
            "ShortCodeWithoutNonce" => Mutant::ShortCodeWithoutNonce,
            "HostCheckSkipped" => Mutant::HostCheckSkipped,
            other => panic!("no mutant {other}"),
        };
        select(Some(selected));
        let enabled = all_enabled(&sc, &log);
        let (violated, story) = violations_of(&sc, &log);
        select(None);
        println!("== {mutant} (mutant) ==\n{}", story.join("\n"));
        assert!(
            enabled,
            "{mutant}: the counterexample is not a story of the model"
        );
        assert!(
            violated.contains(&ALWAYS[property]),
            "{mutant}: the replay does not break {}",
            ALWAYS[property]
        );
    }
    let (violated, story) = violations_of(&sc, &log);
    println!("== {mutant} (real code) ==\n{}", story.join("\n"));
    assert!(
        !violated.contains(&ALWAYS[property]),
        "the real code breaks {} in {mutant}'s story",
        ALWAYS[property]
    );
    assert!(
        violated.is_empty(),
        "the real code breaks {violated:?} in {mutant}'s story"
    );
}

#[test]
fn secret_unchecked() {
    replay(
        "SecretUnchecked",
        Scenario::neighbour(),
        9,
        vec![
            Deliver {
                msg: 1,
                instance: 0,
            },
            Deliver {
                msg: 0,
                instance: 0,
            },
            Answer { msg: 1 },
            NeighbourDiscover,
            NeighbourGuessSecret,
            Deliver {
                msg: 2,
                instance: 0,
            },
        ],
    );
}

#[test]
fn used_code_accepted() {
    replay(
        "UsedCodeAccepted",
        Scenario::code(),
        2,
        vec![
            OwnerMint,
            Deliver {
                msg: 1,
                instance: 0,
            },
            EnterCode,
            NeighbourReplayCode,
            Deliver {
                msg: 3,
                instance: 0,
            },
            Deliver {
                msg: 2,
                instance: 0,
            },
        ],
    );
}

#[test]
fn one_visible_skipped() {
    replay(
        "OneVisibleSkipped",
        Scenario::neighbour(),
        4,
        vec![
            NeighbourDiscover,
            NeighbourGuessSecret,
            NeighbourGuessCode,
            Deliver {
                msg: 0,
                instance: 0,
            },
            NeighbourGuessSecret,
            NeighbourAnnounce,
            Deliver {
                msg: 6,
                instance: 0,
            },
            Deliver {
                msg: 1,
                instance: 0,
            },
        ],
    );
}

#[test]
fn approval_skipped() {
    replay(
        "ApprovalSkipped",
        Scenario::window(),
        5,
        vec![
            Tick,
            Deliver {
                msg: 0,
                instance: 0,
            },
            MalloryFetch,
            MalloryLink,
            Deliver {
                msg: 3,
                instance: 0,
            },
            Deliver {
                msg: 1,
                instance: 0,
            },
            Answer { msg: 3 },
        ],
    );
}

#[test]
fn guess_uncharged() {
    replay(
        "GuessUncharged",
        Scenario::neighbour(),
        7,
        vec![
            NeighbourDiscover,
            NeighbourGuessSecret,
            NeighbourGuessCode,
            Deliver {
                msg: 3,
                instance: 0,
            },
            NeighbourGuessSecret,
            Deliver {
                msg: 5,
                instance: 0,
            },
            Deliver {
                msg: 3,
                instance: 0,
            },
        ],
    );
}

#[test]
fn charge_not_atomic() {
    let mut log = vec![
        NeighbourGuessSecret,
        Deliver {
            msg: 1,
            instance: 0,
        },
        Step { op: 0 },
        NeighbourGuessCode,
        NeighbourGuessSecret,
        Deliver {
            msg: 2,
            instance: 0,
        },
        Deliver {
            msg: 1,
            instance: 0,
        },
    ];
    log.extend([1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0].map(|op| Step { op }));
    replay("ChargeNotAtomic", Scenario::instances(), 7, log);
}

#[test]
fn short_code_without_nonce() {
    replay(
        "ShortCodeWithoutNonce",
        Scenario::window(),
        6,
        vec![
            Tick,
            Deliver {
                msg: 0,
                instance: 0,
            },
            MalloryFetch,
            MalloryLink,
            Deliver {
                msg: 3,
                instance: 0,
            },
            Deliver {
                msg: 1,
                instance: 0,
            },
            Answer { msg: 3 },
        ],
    );
}

#[test]
fn host_check_skipped() {
    replay(
        "HostCheckSkipped",
        Scenario::window(),
        3,
        vec![
            Tick,
            Deliver {
                msg: 1,
                instance: 0,
            },
            MalloryFetch,
            MalloryLink,
            Deliver {
                msg: 0,
                instance: 0,
            },
            Deliver {
                msg: 0,
                instance: 0,
            },
            RebinderFetch,
        ],
    );
}
