//! The server checks of held requests (revision 1.6).
//! It must not reach the server but over HTTP, as a client would.

use super::*;

impl Session<'_> {
    /// Whether check `id` of held requests is made; if not, it is recorded as skipped: not
    /// applicable to a server of an older revision, or not run when its revision is unknown.
    pub(super) fn holds_apply(&mut self, id: &'static str) -> bool {
        match &self.holds {
            Holds::Checked => true,
            Holds::Older(why) => {
                let why = why.clone();
                self.rec.not_applicable(id, why);
                false
            }
            Holds::Unknown => {
                self.rec.skip(id, "needs server.announce.ok to pass");
                false
            }
        }
    }

    /// `method path` asking for a hold of `hold_ms` (its timeout stretched to cover it): the
    /// reply, when the request was sent and when its answer was read.
    pub(super) async fn held(
        &self,
        method: &str,
        path: &str,
        who: As,
        payload: Option<Vec<u8>>,
        hold_ms: u64,
    ) -> (Result<Reply, String>, Instant, Instant) {
        let started = Instant::now();
        let timeout = self
            .target
            .timeout
            .max(Duration::from_millis(hold_ms) + Duration::from_secs(5));
        let request = self.request(method, path, who).map(|request| {
            let request = request.timeout(timeout);
            match payload {
                Some(payload) => request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(payload),
                None => request,
            }
        });
        let reply = match request {
            Ok(request) => self.read(request).await,
            Err(err) => Err(err),
        };
        (reply, started, Instant::now())
    }

    /// An announcement with `hold_ms` and nothing waiting: answered at the hold's end, with no
    /// message (revision 1.6).
    pub(super) async fn hold_announce_ends(&mut self, agent: &KitAgent) {
        const ID: &str = "server.hold.announce_ends";
        if !self.holds_apply(ID) {
            return;
        }
        let mut value = agent.announce();
        value["hold_ms"] = json!(HOLD_MS);
        let (reply, sent, answered) = self
            .held(
                "POST",
                "/agent/announce",
                As::Nobody,
                Some(body(&value)),
                HOLD_MS,
            )
            .await;
        let verdict = reply.and_then(|r| {
            let map = reply::json_object(&r, 200)?;
            match map.get("messages").and_then(Value::as_array) {
                Some(messages) if messages.is_empty() => {}
                _ => return Err(format!("200 {}", r.excerpt())),
            }
            let ms = held_to_its_end(answered - sent, HOLD_MS)?;
            Ok(format!("200 no messages after {ms} ms (hold {HOLD_MS} ms)"))
        });
        self.check(ID, verdict);
    }

    /// A status request with `?hold_ms=` for `agent`'s link, expected in `state`: at once when
    /// `at_once`, else at the hold's end.
    pub(super) async fn hold_status(
        &mut self,
        id: &'static str,
        agent: &KitAgent,
        state: &str,
        at_once: bool,
    ) {
        if !self.holds_apply(id) {
            return;
        }
        let path = format!("/link/{}?hold_ms={HOLD_MS}", agent.id);
        let (reply, sent, answered) = self.held("GET", &path, As::User, None, HOLD_MS).await;
        let verdict = reply.and_then(|r| {
            state_of(&r, &agent.id, state)?;
            let elapsed = answered - sent;
            let ms = if at_once {
                answered_at_once(elapsed, HOLD_MS)?
            } else {
                held_to_its_end(elapsed, HOLD_MS)?
            };
            Ok(format!("200 {state} after {ms} ms (hold {HOLD_MS} ms)"))
        });
        self.check(id, verdict);
    }

    /// A second agent's announcement, held while its link is accepted: answered when the link
    /// is, with its message (revision 1.6). The agent then redeems its code, so nothing is left
    /// waiting.
    pub(super) async fn hold_announce_rung(&mut self) {
        const ID: &str = "server.hold.announce_rung";
        if !self.holds_apply(ID) {
            return;
        }
        let agent = KitAgent::new();
        if let Err(err) = self.refresh(&agent).await {
            let why = format!("a fresh agent's announcement was refused: {err}");
            self.rec.skip(ID, why);
            return;
        }
        let mut value = agent.announce();
        value["hold_ms"] = json!(RUNG_HOLD_MS);
        let held = self.held(
            "POST",
            "/agent/announce",
            As::Nobody,
            Some(body(&value)),
            RUNG_HOLD_MS,
        );
        let link = async {
            tokio::time::sleep(LINK_AFTER).await;
            let sent = Instant::now();
            (self.post("/link", As::User, &agent.link()).await, sent)
        };
        let ((reply, sent, answered), (link, link_sent)) = tokio::join!(held, link);
        match link {
            Ok(link) if link.status == 202 => {}
            Ok(link) if link.is_locked_out() => {
                self.rec.skip(ID, "the link was refused 429 locked_out");
                return;
            }
            Ok(link) => {
                let why = format!(
                    "the second agent's link was not accepted: {}",
                    link.summary()
                );
                self.rec.skip(ID, why);
                return;
            }
            Err(err) => {
                self.rec.skip(ID, format!("the second agent's link: {err}"));
                return;
            }
        }
        let mut code = None;
        let verdict = reply.and_then(|r| {
            let ms = millis(answered - sent);
            if answered < link_sent {
                return Err(format!(
                    "answered before the link was sent ({ms} ms, {}): not held",
                    r.summary()
                ));
            }
            let message = only_message(&r, || format!(" after {ms} ms"))?;
            if message["type"] != json!("verify_and_redeem")
                || message["instance_id"] != json!(agent.id.to_string())
            {
                return Err("200 with a message that is not verify_and_redeem for the \
                            second agent"
                    .to_owned());
            }
            code = message["code"].as_str().map(str::to_owned);
            let after_link = millis(answered - link_sent);
            if ms * 2 > RUNG_HOLD_MS || after_link > RUNG_WITHIN_MS {
                return Err(format!(
                    "200 with the message after {ms} ms (hold {RUNG_HOLD_MS} ms), \
                     {after_link} ms after the link was sent: at the hold's end or a later \
                     recheck, not when the link was accepted"
                ));
            }
            Ok(format!(
                "200 verify_and_redeem {ms} ms after the held announcement, {} ms after the \
                 link was sent",
                millis(answered - link_sent)
            ))
        });
        self.check(ID, verdict);
        // Nothing left waiting, whatever the verdict: the second agent takes its message (from
        // a plain announcement if the held one did not bring it) and links too (a right guess,
        // refunded), so that it does not crowd the checks after this one.
        let code = match code {
            Some(code) => Some(code),
            None => self.refresh(&agent).await.ok().and_then(|messages| {
                messages
                    .iter()
                    .find_map(|m| m["code"].as_str().map(str::to_owned))
            }),
        };
        if let Some(code) = code {
            let _ = self.redeem_proven(&agent.id, &agent.key, &code, 1).await;
        }
    }
}
