//! The steps that charge and refund the budgets through the store: [`Ops`]'s side of
//! [`crate::server::budget`] (whose records and pure functions stay there).
//! It must not read a clock or draw from a global RNG; a charge and the check it pays for are
//! one store write.

use chrono::{DateTime, TimeDelta, Utc};
use smallvec::SmallVec;

use super::Ops;
use crate::addr::PublicNetwork;
#[cfg(feature = "obico-wire")]
use crate::code::CodeFormat;
use crate::error::store_error::StoreError;
use crate::error::Refusal;
use crate::event::{RequestKind, ServerEvent};
use crate::id::AccountId;
use crate::server::budget::*;
use crate::server::shared::SharedSignal;

impl Ops<'_> {
    /// Charges `key` once (see [`CounterRecord::admit`]): `Ok(None)` when the budget refused.
    async fn charge(
        &mut self,
        now: DateTime<Utc>,
        key: &CounterKey,
        limit: u32,
        expires_ms: i64,
        lockout: Option<TimeDelta>,
    ) -> Result<Option<(Charge, bool)>, StoreError> {
        let now_ms = now.timestamp_millis();
        let lockout_ms = lockout.map(|d| d.num_milliseconds());
        let mut admission = Admission::Refused;
        if crate::mutant::active(crate::mutant::Mutant::ChargeNotAtomic) {
            // Model builds only: read, decide, then write in a second store call.
            let mut read = CounterRecord::default();
            self.store
                .update_counter(key, now, &mut |record| read = record.clone())
                .await?;
            admission = read.admit(now_ms, expires_ms, limit, lockout_ms);
            self.store
                .update_counter(key, now, &mut |record| *record = read.clone())
                .await?;
        } else {
            self.store
                .update_counter(key, now, &mut |record| {
                    admission = record.admit(now_ms, expires_ms, limit, lockout_ms);
                })
                .await?;
        }
        Ok(match admission {
            Admission::Admitted { filled } => Some((
                Charge {
                    key: key.clone(),
                    expires_ms,
                    limit,
                },
                filled,
            )),
            Admission::Refused => None,
        })
    }

    /// Takes back charges, as far as the store allows (a refund that fails leaves the charge
    /// standing until it expires: fail closed).
    async fn refund(&mut self, now: DateTime<Utc>, charges: &[Charge]) {
        let now_ms = now.timestamp_millis();
        for charge in charges {
            let _ = self
                .store
                .update_counter(&charge.key, now, &mut |record| {
                    record.refund(now_ms, charge.expires_ms, charge.limit);
                })
                .await;
        }
    }

    /// Admits one guess from `network` (at `space`, for a manual code), charging every budget it
    /// falls under before anything is checked. Refused unchecked when any budget is full:
    /// `locked_out` for a network level, `codes_suspended` for the global budget.
    pub(crate) async fn admit_guess(
        &mut self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        space: Option<CodeSpace>,
        request: RequestKind,
    ) -> Result<Guess, Refusal> {
        let budgets = &self.config.budgets;
        let expires_ms = budgets.guess_expiry_ms(now);
        let lockout = Some(budgets.lockout);
        let mut wanted: SmallVec<[(CounterKey, u32, Refusal); 5]> = budgets
            .levels_of(&network)
            .into_iter()
            .map(|(key, limit)| (key, limit, Refusal::LockedOut))
            .collect();
        if space == Some(CodeSpace::Manual) {
            wanted.push((
                CounterKey::SpaceGuesses(CodeSpace::Manual),
                budgets.global_code_guesses,
                Refusal::CodesSuspended,
            ));
        }
        let mut guess = Guess {
            network,
            charges: SmallVec::new(),
            filled_level: false,
            filled_space: None,
        };
        for (key, limit, refusal) in wanted {
            match self.charge(now, &key, limit, expires_ms, lockout).await {
                Ok(Some((charge, filled))) => {
                    if filled {
                        match key {
                            CounterKey::SpaceGuesses(space) => guess.filled_space = Some(space),
                            _ => guess.filled_level = true,
                        }
                    }
                    guess.charges.push(charge);
                }
                // Model builds only: the refused guess goes on, uncharged.
                Ok(None) if crate::mutant::active(crate::mutant::Mutant::GuessUncharged) => {}
                Ok(None) => {
                    self.refund(now, &guess.charges).await;
                    return Err(self.refuse(Some(network), request, refusal));
                }
                Err(err) => {
                    self.refund(now, &guess.charges).await;
                    return Err(self.refuse(Some(network), request, err.into()));
                }
            }
        }
        Ok(guess)
    }

    /// Settles an admitted guess: a wrong one (`reason` counts as a failure) stays charged, and
    /// the lockouts it caused are reported; anything else is refunded.
    pub(crate) async fn settle_guess(
        &mut self,
        now: DateTime<Utc>,
        guess: Guess,
        reason: Option<&Refusal>,
    ) {
        if reason.is_some_and(Refusal::counts_as_failure) {
            if guess.filled_level {
                self.events.push_back(ServerEvent::LockedOut {
                    network: guess.network,
                });
                self.judge_failures(now, guess.network).await;
            }
            if let Some(space) = guess.filled_space {
                self.events.push_back(ServerEvent::CodesSuspended { space });
            }
        } else {
            self.refund(now, &guess.charges).await;
        }
    }

    /// Marks `network` shared by its failures (it was just locked out), when the policy says so.
    /// A write of its own after the charge that filled the budget: a store fault between them
    /// leaves the lockout without the mark, which refuses the network's guesses all the same
    /// (the mark only hides discovery and gives the reason), so nothing is left usable.
    async fn judge_failures(&mut self, now: DateTime<Utc>, network: PublicNetwork) {
        let config = self.config;
        if !config.shared.enabled || !config.shared.failures {
            return;
        }
        let mut judged = None;
        let written = self
            .store
            .update_network(network, now, config, true, &mut |record| {
                judged = record.mark_shared(now, config, SharedSignal::Failures);
            })
            .await;
        if written.is_ok() {
            self.judged_shared(network, judged);
        }
    }

    /// Settles a guess that the check refused for `reason`, and refuses with it.
    pub(crate) async fn refused_guess(
        &mut self,
        now: DateTime<Utc>,
        guess: Guess,
        request: RequestKind,
        reason: Refusal,
    ) -> Refusal {
        let network = guess.network;
        self.settle_guess(now, guess, Some(&reason)).await;
        self.refuse(Some(network), request, reason)
    }

    /// Whether the short code space is suspended (its global budget full or locked).
    async fn suspended(&mut self, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let now_ms = now.timestamp_millis();
        let limit = u64::from(self.config.budgets.global_code_guesses);
        let mut suspended = false;
        self.store
            .update_counter(
                &CounterKey::SpaceGuesses(CodeSpace::Manual),
                now,
                &mut |record| {
                    suspended = record.is_locked(now_ms) || record.live(now_ms) >= limit;
                },
            )
            .await?;
        Ok(suspended)
    }

    /// Reserves the quotas of one manual code for `account`, expiring at `expires_at`, and picks
    /// its format: the short one unless its space is suspended or full. Refused with
    /// `mint_quota` when the account (or every space) holds its most live codes.
    pub(crate) async fn reserve_mint(
        &mut self,
        now: DateTime<Utc>,
        account: &AccountId,
        expires_at: DateTime<Utc>,
    ) -> Result<(CodeSpace, MintCharges), Refusal> {
        let config = self.config;
        let budgets = &config.budgets;
        let expires_ms = quota_expiry_ms(expires_at);
        let mut charges = MintCharges::default();
        let account_key = CounterKey::AccountCodes(account.clone());
        match self
            .charge(
                now,
                &account_key,
                budgets.codes_per_account,
                expires_ms,
                None,
            )
            .await
        {
            Ok(Some((charge, _))) => charges.charges.push(charge),
            Ok(None) => return Err(self.refuse(None, RequestKind::MintCode, Refusal::MintQuota)),
            Err(err) => return Err(self.refuse(None, RequestKind::MintCode, err.into())),
        }
        let short_open = match self.suspended(now).await {
            Ok(suspended) => !suspended,
            Err(err) => {
                self.refund(now, &charges.charges).await;
                return Err(self.refuse(None, RequestKind::MintCode, err.into()));
            }
        };
        let spaces: &[(CodeSpace, u32)] = if short_open {
            &[
                (CodeSpace::Manual, budgets.live_codes),
                (CodeSpace::Fallback, budgets.live_fallback_codes),
            ]
        } else {
            &[(CodeSpace::Fallback, budgets.live_fallback_codes)]
        };
        for &(space, limit) in spaces {
            let key = CounterKey::LiveCodes(space);
            match self.charge(now, &key, limit, expires_ms, None).await {
                Ok(Some((charge, _))) => {
                    charges.charges.push(charge);
                    return Ok((space, charges));
                }
                Ok(None) => {}
                Err(err) => {
                    self.refund(now, &charges.charges).await;
                    return Err(self.refuse(None, RequestKind::MintCode, err.into()));
                }
            }
        }
        self.refund(now, &charges.charges).await;
        Err(self.refuse(None, RequestKind::MintCode, Refusal::MintQuota))
    }

    /// Gives back the quotas of a code that was not minted after all.
    pub(crate) async fn release_mint(&mut self, now: DateTime<Utc>, charges: MintCharges) {
        self.refund(now, &charges.charges).await;
    }

    /// Gives back the quotas of a redeemed manual code of `account` (minted for `expires_at`,
    /// in the space its shape says). Call only after marking them returned on the code
    /// ([`CodeRecord::release_quota`](crate::server::CodeRecord::release_quota)), so that they are given
    /// back once.
    pub(crate) async fn release_redeemed(
        &mut self,
        now: DateTime<Utc>,
        account: &AccountId,
        space: Option<CodeSpace>,
        expires_at: DateTime<Utc>,
    ) {
        let budgets = &self.config.budgets;
        let expires_ms = quota_expiry_ms(expires_at);
        let mut charges: SmallVec<[Charge; 2]> = SmallVec::new();
        charges.push(Charge {
            key: CounterKey::AccountCodes(account.clone()),
            expires_ms,
            limit: budgets.codes_per_account,
        });
        if let Some(space) = space {
            let limit = match space {
                CodeSpace::Manual => budgets.live_codes,
                CodeSpace::Fallback => budgets.live_fallback_codes,
            };
            charges.push(Charge {
                key: CounterKey::LiveCodes(space),
                expires_ms,
                limit,
            });
        }
        self.refund(now, &charges).await;
    }

    /// Reserves one live Obico passcode for `network`, expiring at `expires_at`, in `format`:
    /// its network's quota, then the global one (at most
    /// [`Budgets::live_passcodes`], and at most a hundredth of `format`'s space), each in one
    /// atomic step. `mint_quota` when either is full (nothing stays charged).
    #[cfg(feature = "obico-wire")]
    pub(crate) async fn reserve_passcode(
        &mut self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        expires_at: DateTime<Utc>,
        format: &CodeFormat,
    ) -> Result<MintCharges, Refusal> {
        let budgets = &self.config.budgets;
        // A hundredth of the space, as for live short codes (`f64 as u32` saturates).
        let global = budgets
            .live_passcodes
            .min((format.space() / 100.0) as u32)
            .max(1);
        let wanted = [
            (
                CounterKey::NetworkPasscodes(network),
                budgets.passcodes_per_network,
            ),
            (CounterKey::LivePasscodes, global),
        ];
        let expires_ms = quota_expiry_ms(expires_at);
        let mut charges = MintCharges::default();
        for (key, limit) in wanted {
            let refusal = match self.charge(now, &key, limit, expires_ms, None).await {
                Ok(Some((charge, _))) => {
                    charges.charges.push(charge);
                    continue;
                }
                Ok(None) => Refusal::MintQuota,
                Err(err) => err.into(),
            };
            self.refund(now, &charges.charges).await;
            return Err(self.refuse(Some(network), RequestKind::MintCode, refusal));
        }
        Ok(charges)
    }
}
