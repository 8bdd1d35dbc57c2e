//! The server checks of what is counted: wrong guesses, crowded networks, manual codes, the
//! lockout and the quotas (run last: they use up the kit's budgets).
//! It must not reach the server but over HTTP, as a client would.

use super::*;

impl Session<'_> {
    /// Wrong guesses 2 to 5, after every check that needs a right guess: an instance not
    /// present, the used secret again, the used code again, an unknown code.
    pub(super) async fn wrong_guesses(&mut self, agent: &KitAgent, linked: Linked) {
        let stranger = KitAgent::new();
        let reply = self.post("/link", As::User, &stranger.link()).await;
        self.guess("server.link.agent_not_found", true, reply, |r| {
            reply::refusal(r, 404, "agent_not_found")
        });
        if linked.accepted {
            let reply = self.post("/link", As::User, &agent.link()).await;
            self.guess("server.link.already_linking", true, reply, |r| {
                reply::refusal(r, 409, "already_linking")
            });
        } else {
            self.rec.skip(
                "server.link.already_linking",
                "needs server.link.accepted to pass",
            );
        }
        match &linked.code {
            Some(code) => {
                let reply = self.redeem(&agent.id, code).await;
                self.guess("server.redeem.used_code", true, reply, |r| {
                    reply::refusal(r, 403, "invalid_code")
                });
            }
            None => self
                .rec
                .skip("server.redeem.used_code", "needs server.redeem.ok to pass"),
        }
        let reply = self.redeem(&random_id(), &random_hex32()).await;
        self.guess("server.redeem.unknown_code", true, reply, |r| {
            reply::refusal(r, 403, "invalid_code")
        });
    }

    pub(super) async fn redeem_malformed(&mut self) {
        let value =
            json!({"instance_id": random_id().to_string(), "code": random_hex32(), "extra": 1});
        let reply = self.post("/agent/redeem", As::Nobody, &value).await;
        self.check(
            "server.redeem.malformed",
            reply.and_then(|r| reply::refusal(&r, 400, "malformed")),
        );
    }

    /// A contested agent, then more agents than `max_visible`.
    pub(super) async fn crowded(&mut self) {
        let contested = KitAgent::new();
        if let Err(err) = self.refresh(&contested).await {
            let why = format!("a fresh agent's announcement was refused: {err}");
            self.rec.skip_all(
                &[
                    "server.announce.presence_conflict",
                    "server.link.agent_contested",
                    "server.discover.too_many_agents",
                    "server.link.too_many_agents",
                ],
                &why,
            );
            return;
        }
        let mut other = contested.announce();
        other["commitment"] = json!(LocalSecret::generate(&mut crate::os_rng())
            .commitment(&contested.id)
            .to_hex());
        let reply = self.announce(&other).await;
        self.check(
            "server.announce.presence_conflict",
            reply.and_then(|r| reply::refusal(&r, 409, "presence_conflict")),
        );
        let reply = self.post("/link", As::User, &contested.link()).await;
        self.guess("server.link.agent_contested", false, reply, |r| {
            reply::refusal(r, 409, "agent_contested")
        });
        // With the contested one, max_visible + 1 agents present.
        let mut extra = Vec::new();
        for _ in 0..self.target.max_visible {
            let agent = KitAgent::new();
            if let Err(err) = self.refresh(&agent).await {
                let why = format!("a fresh agent's announcement was refused: {err}");
                self.rec.skip_all(
                    &[
                        "server.discover.too_many_agents",
                        "server.link.too_many_agents",
                    ],
                    &why,
                );
                return;
            }
            extra.push(agent);
        }
        let reply = self.call("GET", "/discover", As::User, None).await;
        self.check(
            "server.discover.too_many_agents",
            reply.and_then(|r| {
                let map = reply::json_object(&r, 200)?;
                match map.get("agents").and_then(Value::as_array) {
                    Some(agents) if agents.is_empty() => Ok("200 no agents".to_owned()),
                    _ => Err(format!("200 {}", r.excerpt())),
                }
            }),
        );
        if let Some(first) = extra.first() {
            let reply = self.post("/link", As::User, &first.link()).await;
            self.guess("server.link.too_many_agents", false, reply, |r| {
                reply::refusal(r, 409, "too_many_agents")
            });
        }
    }

    /// Mints two manual codes: redeems the first, and returns the second for the lockout check.
    pub(super) async fn manual_codes(&mut self) -> Option<String> {
        let mut codes = Vec::new();
        for first in [true, false] {
            let reply = self.call("POST", "/codes", As::User, None).await;
            let verdict = reply.and_then(|r| {
                if r.status == 429 && r.error_code().as_deref() == Some("mint_quota") {
                    return Err("mint_quota".to_owned());
                }
                let map = reply::json_object(&r, 201)?;
                let code = reply::string(&map, "code")?;
                if crate::code::LinkCode::parse(code).is_none() {
                    return Err(format!("201 with code {code:?}"));
                }
                let expires = reply::string(&map, "expires_at")?;
                let at = DateTime::parse_from_rfc3339(expires)
                    .map_err(|_| format!("201 with expires_at {expires:?}, not RFC 3339"))?;
                if at.offset().local_minus_utc() != 0 {
                    return Err(format!("201 with expires_at {expires:?}, not in UTC"));
                }
                // Allowing for clock skew between the kit and the server.
                let skew = chrono::TimeDelta::minutes(5);
                if at.with_timezone(&Utc)
                    <= DateTime::<Utc>::from(std::time::SystemTime::now()) - skew
                {
                    return Err(format!("201 with expires_at {expires:?}, in the past"));
                }
                codes.push(code.to_owned());
                Ok(format!(
                    "201 a {}-character code until {expires}",
                    code.len()
                ))
            });
            if first {
                match verdict {
                    Err(ref quota) if quota == "mint_quota" => self.rec.skip(
                        "server.codes.ok",
                        "429 mint_quota: the account holds its most live codes (earlier runs \
                         within 10 minutes?)",
                    ),
                    verdict => {
                        self.check("server.codes.ok", verdict);
                    }
                }
            }
        }
        let mut codes = codes.into_iter();
        match codes.next() {
            Some(code) => {
                let reply = self.redeem(&random_id(), &code).await;
                self.guess("server.redeem.manual_code", false, reply, auth_token);
            }
            None => self.rec.skip(
                "server.redeem.manual_code",
                "no manual code could be minted",
            ),
        }
        codes.next()
    }

    /// More wrong guesses up to the threshold (if it is above the kit's five), then a right
    /// code, refused `locked_out`.
    pub(super) async fn lockout(&mut self, spare: Option<String>) {
        let threshold = self.target.lockout_threshold;
        // The rest of the threshold, if it is higher than the kit's five planned guesses.
        while self.wrong < threshold && self.first_lockout.is_none() {
            self.wrong += 1;
            match self.redeem(&random_id(), &random_hex32()).await {
                Ok(r) if r.is_locked_out() => {
                    self.first_lockout = Some(self.wrong - 1);
                }
                Ok(r) if r.status == 403 => {}
                Ok(r) => {
                    let got = format!(
                        "an unknown code (extra wrong guess {}) got {}",
                        self.wrong,
                        r.summary()
                    );
                    self.check("server.lockout.locked_out", Err(got));
                    return;
                }
                Err(err) => {
                    self.check("server.lockout.locked_out", Err(err));
                    return;
                }
            }
        }
        match self.first_lockout {
            Some(0) => {
                self.rec.skip(
                    "server.lockout.locked_out",
                    "this network was locked out before the kit's first wrong guess",
                );
                return;
            }
            Some(at) if at != threshold => {
                let got = format!(
                    "locked out after {at} wrong guesses, not {threshold} (is the server's \
                     threshold another? other wrong guesses from this network?)"
                );
                self.check("server.lockout.locked_out", Err(got));
                return;
            }
            _ => {}
        }
        let Some(code) = spare else {
            self.rec.skip(
                "server.lockout.locked_out",
                "no spare manual code to present as the right guess",
            );
            return;
        };
        let reply = self.redeem(&random_id(), &code).await;
        let verdict = reply.and_then(|r| {
            reply::refusal(&r, 429, "locked_out")
                .map(|got| format!("{got} for a right code after {threshold} wrong guesses"))
                .map_err(|got| format!("a right code after {threshold} wrong guesses got {got}"))
        });
        self.check("server.lockout.locked_out", verdict);
    }

    pub(super) async fn mint_quota(&mut self) {
        if self.target.second.is_none() {
            self.rec.skip(
                "server.codes.mint_quota",
                "no second account given (the check leaves it holding its most live codes)",
            );
            return;
        }
        let quota = self.target.codes_per_account;
        let mut minted = 0;
        let verdict = loop {
            let reply = match self.call("POST", "/codes", As::Second, None).await {
                Ok(reply) => reply,
                Err(err) => break Err(err),
            };
            if reply.status == 201 {
                minted += 1;
                if minted > quota {
                    break Err(format!("{minted} live codes minted, more than {quota}"));
                }
                continue;
            }
            break reply::refusal(&reply, 429, "mint_quota")
                .map(|got| format!("{got} after {minted} codes"))
                .map_err(|got| format!("{got} after {minted} codes"));
        };
        self.check("server.codes.mint_quota", verdict);
    }

    pub(super) async fn network_full(&mut self) {
        let most = self.target.max_agents_per_network;
        let mut accepted = 0;
        let verdict = loop {
            let agent = KitAgent::new();
            let reply = match self.announce(&agent.announce()).await {
                Ok(reply) => reply,
                Err(err) => break Err(err),
            };
            if reply.status == 200 {
                accepted += 1;
                if accepted > most {
                    break Err(format!(
                        "{accepted} fresh agents accepted, more than {most}"
                    ));
                }
                continue;
            }
            break reply::refusal(&reply, 429, "network_full")
                .map(|got| format!("{got} after {accepted} more agents"))
                .map_err(|got| format!("{got} after {accepted} more agents"));
        };
        self.check("server.announce.network_full", verdict);
    }
}
