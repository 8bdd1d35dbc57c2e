//! Deliberately broken variants of the protocol code, for the model checker (`tests/model.rs`,
//! `MODEL.md`): each [`Mutant`] names one check the crate must make, and the model must catch
//! the build that skips it with a counterexample.
//! A mutant must never be active in an ordinary build, and this module must not change what the
//! production code does there.
//!
//! Without `--cfg lanlink_model` (every ordinary build) [`active`] is a `const fn` that returns
//! `false`, so every `if active(..)` branch is dead code the compiler removes: the production
//! code is unchanged and makes no run-time check. Under the cfg, `select` (not present in
//! ordinary builds) picks at most one mutant for the whole process at run time.
//!
//! ```
//! use lanlink::mutant::{active, Mutant};
//! // An ordinary build: no mutant is ever active.
//! # #[cfg(not(lanlink_model))]
//! assert!(!active(Mutant::ApprovalSkipped));
//! ```

/// One deliberately broken check. See `MODEL.md` for the property each one breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mutant {
    /// The server accepts a link request without comparing its secret with the agent's
    /// commitment.
    SecretUnchecked,
    /// The server redeems a code that another instance already redeemed.
    UsedCodeAccepted,
    /// Discovery shows agents although more than `max_visible` are present (the one-visible
    /// rule skipped).
    OneVisibleSkipped,
    /// The agent redeems at once under an approval policy, without the owner's decision.
    ApprovalSkipped,
    /// A guess refused by a full budget is checked anyway (uncharged).
    GuessUncharged,
    /// A guessing budget is charged with a read and a separate write (not one atomic update):
    /// two server instances sharing a store both admit the last guess.
    ChargeNotAtomic,
    /// The short code is derived without the linker's nonce.
    ShortCodeWithoutNonce,
    /// The agent hands its secret to a local caller whatever its `Host` and `Origin`.
    HostCheckSkipped,
}

#[cfg(lanlink_model)]
static SELECTED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[cfg(lanlink_model)]
const ALL: [Mutant; 8] = [
    Mutant::SecretUnchecked,
    Mutant::UsedCodeAccepted,
    Mutant::OneVisibleSkipped,
    Mutant::ApprovalSkipped,
    Mutant::GuessUncharged,
    Mutant::ChargeNotAtomic,
    Mutant::ShortCodeWithoutNonce,
    Mutant::HostCheckSkipped,
];

/// Selects `mutant` (or none) for the whole process (model builds only: `--cfg lanlink_model`).
#[cfg(lanlink_model)]
pub fn select(mutant: Option<Mutant>) {
    let index = mutant
        .and_then(|m| ALL.iter().position(|x| *x == m))
        .map_or(0, |i| i + 1);
    // Cannot truncate: ALL has 8 entries.
    SELECTED.store(index as u8, std::sync::atomic::Ordering::SeqCst);
}

/// Whether `mutant` is the selected one (model builds), or `false` (every ordinary build).
#[cfg(lanlink_model)]
pub fn active(mutant: Mutant) -> bool {
    let index = SELECTED.load(std::sync::atomic::Ordering::SeqCst) as usize;
    index > 0 && ALL.get(index - 1) == Some(&mutant)
}

/// Whether `mutant` is the selected one: never, in an ordinary build.
#[cfg(not(lanlink_model))]
#[inline(always)]
pub const fn active(_mutant: Mutant) -> bool {
    false
}
