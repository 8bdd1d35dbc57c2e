//! The agent's redemption: a code entered or forwarded, what the server forwards verified, the
//! owner's confirmation, the server's answer.
//! It must not do I/O or read a clock, and must compare what the server forwards only in
//! constant time (`subtle`); any failure ends discovery.

use super::*;

impl Agent {
    /// An attempt at the redemption got no answer (the transport failed, the reply was lost or
    /// unreadable). The agent sends it again when [`poll_timeout`](Self::poll_timeout) says, and
    /// stops by itself ([`StopReason::ServerUnreachable`]) if no answer comes before its
    /// [redeem deadline](AgentConfig::redeem_timeout). Calling it is optional (the
    /// retransmission timer runs anyway) but lets the retry wait its back-off from now.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, AgentStatus};
    /// # use lanlink::{AgentError, LinkCode};
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// assert_eq!(agent.handle_redeem_failed(now), Err(AgentError::NoRedeemInProgress));
    /// agent.enter_code(now, LinkCode::parse("482913").unwrap())?;
    /// let _sent = agent.poll_transmit(now);
    /// agent.handle_redeem_failed(now)?; // lost: it is sent again after a back-off
    /// assert_eq!(agent.status(), AgentStatus::Redeeming);
    /// assert!(agent.poll_timeout().is_some_and(|at| at > now));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_redeem_failed(&mut self, now: Instant) -> Result<(), AgentError> {
        match &mut self.state {
            State::Redeeming(redeeming) if redeeming.attempts > 0 => {
                redeeming.next_send = retry_at(now, redeeming.attempts, &self.instance_id);
                self.handle_timeout(now);
                Ok(())
            }
            _ => Err(AgentError::NoRedeemInProgress),
        }
    }

    pub(super) fn verify(
        &mut self,
        now: Instant,
        instance_id: InstanceId,
        presented: &LocalSecret,
        code: LinkCode,
        display_name: Option<&str>,
        nonce: Option<ConfirmNonce>,
    ) {
        self.handle_timeout(now);
        let policy = self.config.confirmation;
        let outcome = match &self.state {
            State::Discovering {
                secret, deadline, ..
            } => {
                // Compare the secret even when the id is wrong, so both take the same time.
                let secret_ok = secret.ct_eq(presented);
                // Checked on receipt whatever the policy (fail closed on a bad one).
                let name = display_name.map(DisplayName::new);
                if instance_id != self.instance_id {
                    Err(VerifyFailure::WrongInstance)
                } else if !secret_ok {
                    Err(VerifyFailure::WrongSecret)
                } else if matches!(name, Some(None)) {
                    Err(VerifyFailure::BadDisplayName)
                } else if !policy.requires_decision()
                    || crate::mutant::active(crate::mutant::Mutant::ApprovalSkipped)
                {
                    Ok(None)
                } else {
                    match (name.flatten(), nonce) {
                        (Some(name), nonce) => {
                            let short = match (policy.shows_short_code(), nonce) {
                                (false, _) => Ok(None),
                                (true, Some(nonce)) => Ok(Some(short_code(
                                    &self.instance_id,
                                    &secret.commitment(&self.instance_id),
                                    &name,
                                    &nonce,
                                ))),
                                (true, None) => Err(VerifyFailure::ConfirmationUnavailable),
                            };
                            short.map(|short_code| {
                                let asked = now
                                    .checked_add(self.config.confirm_timeout)
                                    .unwrap_or(*deadline);
                                Some(PendingConfirmation {
                                    display_name: name,
                                    short_code,
                                    deadline: asked.min(*deadline),
                                })
                            })
                        }
                        (None, _) => Err(VerifyFailure::ConfirmationUnavailable),
                    }
                }
            }
            State::Stopped {
                reason: StopReason::WindowExpired,
            } => Err(VerifyFailure::Late),
            _ => Err(VerifyFailure::NotDiscovering),
        };
        match outcome {
            Ok(None) => {
                self.events.push_back(AgentEvent::SecretVerified);
                self.begin_redeem(now, code, false);
            }
            Ok(Some(pending)) => {
                self.events.push_back(AgentEvent::SecretVerified);
                self.events.push_back(AgentEvent::ConfirmationRequested {
                    display_name: pending.display_name.clone(),
                    short_code: pending.short_code,
                    deadline: pending.deadline,
                });
                // Replacing the state drops (and so zeroizes) the secret: it is single-use.
                self.state = State::Confirming(Box::new(Confirming { code, pending }));
            }
            Err(reason) => {
                self.events.push_back(AgentEvent::MessageRejected {
                    reason: reason.clone(),
                });
                // Any failure ends discovery; a message to an agent that is already redeeming or
                // linked is dropped without touching that state.
                if matches!(self.state, State::Discovering { .. }) {
                    self.stop(StopReason::VerifyFailed(reason));
                }
            }
        }
    }

    /// The owner's decision on the link waiting at the device
    /// ([`AgentEvent::ConfirmationRequested`]): [`Decision::Approve`] redeems its code;
    /// [`Decision::Refuse`] ends discovery ([`StopReason::ConfirmationRefused`]). Past the
    /// request's deadline the request has lapsed, and with no request waiting the answer is
    /// [`AgentError::NoConfirmationPending`] (nothing changes).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # use lanlink::confirm::Decision;
    /// # use lanlink::AgentError;
    /// # let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// let mut agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap();
    /// assert_eq!(agent.confirm(Instant::now(), Decision::Approve), Err(AgentError::NoConfirmationPending));
    /// ```
    pub fn confirm(&mut self, now: Instant, decision: Decision) -> Result<(), AgentError> {
        self.handle_timeout(now);
        if !matches!(self.state, State::Confirming(_)) {
            return Err(AgentError::NoConfirmationPending);
        }
        match decision {
            Decision::Approve => {
                let State::Confirming(confirming) = std::mem::replace(
                    &mut self.state,
                    State::Stopped {
                        reason: StopReason::Cancelled,
                    },
                ) else {
                    // Cannot happen: checked above.
                    return Err(AgentError::NoConfirmationPending);
                };
                self.begin_redeem(now, confirming.code, false);
            }
            Decision::Refuse => self.stop(StopReason::ConfirmationRefused),
        }
        Ok(())
    }

    pub(super) fn begin_redeem(&mut self, now: Instant, code: LinkCode, manual: bool) {
        // Replacing the state drops (and so zeroizes) the secret: it is single-use.
        self.state = State::Redeeming(Box::new(Redeeming {
            request: RedeemRequest::new(self.instance_id, code)
                .with_presence_key(self.presence_key.clone()),
            attempts: 0,
            next_send: now,
            give_up: now.checked_add(self.config.redeem_timeout).unwrap_or(now),
        }));
        self.events.push_back(AgentEvent::RedeemStarted { manual });
    }

    /// The user typed a manual code (protocol step 9). Ends discovery (the secret is zeroized)
    /// and queues the redemption. Allowed while discovering or after discovery stopped.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, AgentStatus, AgentTransmit};
    /// # use lanlink::LinkCode;
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// agent.enter_code(now, LinkCode::parse("482913").unwrap()).unwrap();
    /// assert_eq!(agent.status(), AgentStatus::Redeeming);
    /// let Some(AgentTransmit::Redeem(request)) = agent.poll_transmit(now) else { panic!() };
    /// assert_eq!(request.instance_id, agent.instance_id());
    /// ```
    pub fn enter_code(&mut self, now: Instant, code: LinkCode) -> Result<(), AgentError> {
        self.handle_timeout(now);
        match self.state {
            State::Linked { .. } => Err(AgentError::AlreadyLinked),
            State::Redeeming { .. } => Err(AgentError::RedeemInProgress),
            // A code typed at the device replaces a link waiting for confirmation: typing it
            // is the owner's own act.
            State::Discovering { .. } | State::Confirming(_) | State::Stopped { .. } => {
                self.begin_redeem(now, code, true);
                Ok(())
            }
        }
    }

    /// The server's answer to the redemption: a token (linked), a
    /// [retryable](crate::Class::retryable) refusal (the agent sends it again after a back-off,
    /// until its redeem deadline), or any other refusal, a code this version does not know
    /// included (it stops; discovery stays off).
    ///
    /// A token is taken only from the answer to the latest attempt (its `attempt` echo; a
    /// server that echoes none is taken at its word): the answer to an earlier attempt, and
    /// [`WireCode::Superseded`], are ignored (`Ok`, nothing changes), since the server completes
    /// only the newest attempt and the token of an older one no longer authenticates.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, AgentStatus, AgentTransmit};
    /// # use lanlink::event::StopReason;
    /// # use lanlink::{LinkCode, WireCode};
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// agent.enter_code(now, LinkCode::parse("000000").unwrap())?;
    /// let Some(AgentTransmit::Redeem(_)) = agent.poll_transmit(now) else { panic!() };
    /// agent.handle_redeem_reply(now, Err(WireCode::InvalidCode))?;
    /// assert_eq!(agent.status(), AgentStatus::Stopped(StopReason::RedeemRefused(WireCode::InvalidCode)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_redeem_reply(
        &mut self,
        now: Instant,
        reply: Result<RedeemReply, WireCode>,
    ) -> Result<(), AgentError> {
        let State::Redeeming(redeeming) = &mut self.state else {
            return Err(AgentError::NoRedeemInProgress);
        };
        if redeeming.attempts == 0 {
            return Err(AgentError::NoRedeemInProgress);
        }
        match reply {
            Ok(reply) if reply.attempt != 0 && reply.attempt != redeeming.attempts => {}
            Err(WireCode::Superseded) => {}
            Ok(reply) => {
                self.state = State::Linked {
                    token: reply.auth_token,
                };
                self.events.push_back(AgentEvent::Linked {
                    instance_id: self.instance_id,
                });
            }
            Err(code) if code.class().retryable => {
                redeeming.next_send = retry_at(now, redeeming.attempts, &self.instance_id);
                self.events
                    .push_back(AgentEvent::RedeemDeferred { reason: code });
                self.handle_timeout(now);
            }
            Err(code) => self.stop(StopReason::RedeemRefused(code)),
        }
        Ok(())
    }
}
