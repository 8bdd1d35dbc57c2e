//! The server checks of the user-facing routes: who may call them, cross-site requests, and one
//! whole link from discovery to the delivered token.
//! It must not reach the server but over HTTP, as a client would.

use super::*;

impl Session<'_> {
    pub(super) async fn unauthorized(&mut self) {
        let link = KitAgent::new().link();
        let cases = [
            (
                "server.discover.unauthorized",
                "GET",
                "/discover".to_owned(),
                None,
            ),
            (
                "server.link.unauthorized",
                "POST",
                "/link".to_owned(),
                Some(body(&link)),
            ),
            (
                "server.link_status.unauthorized",
                "GET",
                format!("/link/{}", random_id()),
                None,
            ),
            (
                "server.codes.unauthorized",
                "POST",
                "/codes".to_owned(),
                None,
            ),
        ];
        for (id, method, path, payload) in cases {
            let reply = self.call(method, &path, As::Nobody, payload).await;
            let own = self.target.own_rejection;
            self.check(
                id,
                reply.and_then(|r| match reply::refusal(&r, 401, "unauthorized") {
                    Ok(got) => Ok(got),
                    Err(_) if own && !(200..300).contains(&r.status) => {
                        Ok(format!("{} (the host's own rejection)", r.status))
                    }
                    Err(got) => Err(got),
                }),
            );
        }
    }

    /// The cross-site rule of the state-changing user routes, with the account's credential (a
    /// browser sends its cookie with another site's request). The link requests carry an unknown
    /// field, so a server that lets them through answers `400 malformed` and changes nothing.
    pub(super) async fn cross_site(&mut self) {
        let mut link = KitAgent::new().link();
        link["extra"] = json!(true);
        for (id, content_type) in [
            ("server.link.text_plain", "text/plain"),
            (
                "server.link.form_urlencoded",
                "application/x-www-form-urlencoded",
            ),
        ] {
            let payload = Some((body(&link), content_type));
            let reply = self.call_as("POST", "/link", As::User, payload, None).await;
            self.check(
                id,
                reply.and_then(|r| reply::refusal(&r, 415, "unsupported_media_type")),
            );
        }
        let payload = Some((body(&link), "application/json"));
        let origin = Some(FOREIGN_ORIGIN);
        let reply = self
            .call_as("POST", "/link", As::User, payload, origin)
            .await;
        self.check(
            "server.link.cross_origin",
            reply.and_then(|r| reply::refusal(&r, 403, "bad_origin")),
        );
        let reply = self.call_as("POST", "/codes", As::User, None, origin).await;
        self.check(
            "server.codes.cross_origin",
            reply.and_then(|r| reply::refusal(&r, 403, "bad_origin")),
        );
    }

    /// Discovery, link status, a wrong secret (wrong guess 1), then the right one, its delivery
    /// and redemption.
    pub(super) async fn link_flow(&mut self, agent: &KitAgent) -> Linked {
        let mut linked = Linked::default();
        // Discovery shows the agent as announced.
        let reply = self.call("GET", "/discover", As::User, None).await;
        let shared = reply.as_ref().is_ok_and(|r| {
            reply::json_object(r, 200).is_ok_and(|map| {
                map.get("hidden").map(|h| &h["reason"]) == Some(&json!("shared_network"))
            })
        });
        if shared {
            // Not the server's fault: the network was judged shared (revision 1.2), e.g. by a
            // lockout from it (the `failures` signal), which the kit's own lockout check trips.
            self.rec.skip(
                "server.discover.ok",
                "200 hidden: shared_network: this network is judged shared (a lockout from it \
                 marks it for 10 minutes by default): run again later or from another network",
            );
        }
        let verdict = reply.and_then(|r| {
            let map = reply::json_object(&r, 200)?;
            let agents = map
                .get("agents")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("200 without an agents list: {}", r.excerpt()))?;
            let id = agent.id.to_string();
            let Some(entry) = agents.iter().find(|a| a["instance_id"] == json!(id)) else {
                return Err(format!(
                    "200 with {} agents, not the kit's (other agents announcing from this \
                     network hide every one past max_visible)",
                    agents.len()
                ));
            };
            let ip_ok = entry["private_ip"]
                .as_str()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                == Some(agent.ip);
            let port_ok = entry["port"].as_u64() == Some(u64::from(agent.port));
            // Only the four fields: a later version may add some.
            let info = KitAgent::info();
            let info_ok = ["hostname", "model", "agent", "agent_version"]
                .iter()
                .all(|field| entry["info"][field] == info[field]);
            if ip_ok && port_ok && info_ok {
                Ok(format!("200 with the kit's agent ({} shown)", agents.len()))
            } else {
                Err(format!("200, the kit's agent shown as {entry}"))
            }
        });
        self.check("server.discover.ok", verdict);

        let reply = self.link_status(&agent.id, As::User).await;
        self.check(
            "server.link_status.unknown",
            reply.and_then(|r| state_of(&r, &agent.id, "unknown")),
        );
        self.hold_status("server.hold.link_status_at_once", agent, "unknown", true)
            .await;
        let reply = self
            .call("GET", "/link/not-an-instance-id", As::User, None)
            .await;
        self.check(
            "server.link_status.malformed_id",
            reply.and_then(|r| reply::refusal(&r, 400, "malformed")),
        );
        let mut extra = agent.link();
        extra["extra"] = json!(true);
        let reply = self.post("/link", As::User, &extra).await;
        self.check(
            "server.link.malformed",
            reply.and_then(|r| reply::refusal(&r, 400, "malformed")),
        );

        // Wrong guess 1 (the only one before a right guess: after the right secret, a wrong
        // one reads already_linking).
        let _ = self.refresh(agent).await;
        let wrong = json!({
            "instance_id": agent.id.to_string(),
            "local_secret": LocalSecret::generate(&mut crate::os_rng()).to_hex().as_str(),
        });
        let reply = self.post("/link", As::User, &wrong).await;
        self.guess("server.link.wrong_secret", true, reply, |r| {
            reply::refusal(r, 403, "wrong_secret")
        });

        // The right secret.
        let _ = self.refresh(agent).await;
        let reply = self.post("/link", As::User, &agent.link()).await;
        let accepted = self
            .guess("server.link.accepted", false, reply, |r| {
                if r.status != 202 {
                    return Err(r.summary());
                }
                reply::json_headers(r)?;
                state_of_body(r, &agent.id, "pending").map(|_| "202 pending".to_owned())
            })
            .is_some();
        if !accepted {
            return linked;
        }
        linked.accepted = true;
        let reply = self.link_status(&agent.id, As::User).await;
        self.check(
            "server.link_status.pending",
            reply.and_then(|r| state_of(&r, &agent.id, "pending")),
        );
        if self.target.second.is_some() {
            let reply = self.link_status(&agent.id, As::Second).await;
            self.check(
                "server.link_status.other_account",
                reply.and_then(|r| state_of(&r, &agent.id, "unknown")),
            );
        } else {
            self.rec.skip(
                "server.link_status.other_account",
                "no second account given",
            );
        }
        self.hold_status("server.hold.link_status_held", agent, "pending", false)
            .await;
        // The agent's next announcement brings the secret and a code.
        let reply = self.announce(&agent.announce()).await;
        let mut code = None;
        let verdict = reply.and_then(|r| {
            let message = only_message(&r, || format!(": {}", r.excerpt()))?;
            let secret_ok =
                message["local_secret"].as_str() == Some(agent.secret.to_hex().as_str());
            if message["type"] != json!("verify_and_redeem")
                || message["instance_id"] != json!(agent.id.to_string())
                || !secret_ok
            {
                return Err(
                    "200 with a message that is not verify_and_redeem for the kit's \
                            instance and secret"
                        .to_owned(),
                );
            }
            let text = message["code"]
                .as_str()
                .filter(|c| crate::code::LinkCode::parse(c).is_some())
                .ok_or("200 with a message without a code")?;
            code = Some(text.to_owned());
            Ok("200 verify_and_redeem with the linked secret and a code".to_owned())
        });
        self.check("server.announce.delivers_message", verdict);
        let Some(code) = code else {
            return linked;
        };
        let reply = self.link_status(&agent.id, As::User).await;
        self.check(
            "server.link_status.delivered",
            reply.and_then(|r| state_of(&r, &agent.id, "delivered")),
        );
        let again = self.refresh(agent).await;
        self.check(
            "server.announce.delivered_once",
            again.and_then(|messages| match messages.len() {
                0 => Ok("200 no messages".to_owned()),
                n => Err(format!("200 with {n} messages again")),
            }),
        );

        // The code, redeemed (revision 1.1: with the presence key, as attempt 1).
        let reply = self.redeem_proven(&agent.id, &agent.key, &code, 1).await;
        let Some(first) = self.guess("server.redeem.ok", false, reply, |r| {
            auth_token(r)?;
            attempt_echo(r, 1)
        }) else {
            return linked;
        };
        // The reply was "lost": the retry, proven and newer, gets a new token; a key that does
        // not prove the instance, and a late duplicate, change nothing.
        let forged = PresenceKey::generate(&mut crate::os_rng());
        let reply = self.redeem_proven(&agent.id, &forged, &code, 2).await;
        self.guess("server.redeem.forged_key", false, reply, |r| {
            reply::refusal(r, 403, "forged_instance")
        });
        let reply = self.redeem_proven(&agent.id, &agent.key, &code, 2).await;
        self.guess("server.redeem.retry_reissues", false, reply, |r| {
            auth_token(r)?;
            attempt_echo(r, 2)?;
            if token_of(r) == token_of(&first) {
                return Err("200, but the same token again (a retry must reissue)".to_owned());
            }
            Ok("200 a new auth_token, attempt 2".to_owned())
        });
        let reply = self.redeem_proven(&agent.id, &agent.key, &code, 2).await;
        self.guess("server.redeem.superseded", false, reply, |r| {
            reply::refusal(r, 409, "superseded")
        });
        let reply = self.link_status(&agent.id, As::User).await;
        self.check(
            "server.link_status.linked",
            reply.and_then(|r| state_of(&r, &agent.id, "linked")),
        );
        let reply = self.announce(&agent.announce()).await;
        self.check(
            "server.announce.instance_used",
            reply.and_then(|r| reply::refusal(&r, 409, "instance_used")),
        );
        linked.code = Some(code);
        linked
    }
}
