//! The agent's local endpoint: who may have the secret, and when (the window, the caller's
//! address, `Host` and `Origin`).
//! It must not do I/O, read a clock or hand the secret to a caller that fails any check: every
//! refusal fails closed.

use super::*;

impl Agent {
    /// A caller on the agent's local endpoint asks for the secret (protocol step 5).
    ///
    /// Answers only if all hold, checked in this order: discovery is on and inside its window;
    /// the caller's resolved address is local; the `instance_id` matches; `Host` is an IP literal
    /// or an allowed name; `Origin`, when present, is allowed. A refusal changes no state (except
    /// that a request after the window closes it, as [`Agent::handle_timeout`] would).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, SecretRequest};
    /// # use lanlink::{ForwardedHeaders, SecretRefusal};
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// let id = agent.instance_id().to_string();
    /// let mut request = SecretRequest {
    ///     peer: "192.168.1.20".parse().unwrap(),
    ///     forwarded: ForwardedHeaders::NONE,
    ///     host: Some("192.168.1.50:8080"),
    ///     origin: None,
    ///     instance_id: &id,
    /// };
    /// assert!(agent.handle_secret_request(now, &request).is_ok());
    /// request.peer = "100.64.0.7".parse().unwrap(); // a CGNAT neighbour
    /// assert_eq!(agent.handle_secret_request(now, &request).unwrap_err(), SecretRefusal::NotLocal);
    /// ```
    pub fn handle_secret_request(
        &mut self,
        now: Instant,
        request: &SecretRequest<'_>,
    ) -> Result<SecretReply, SecretRefusal> {
        let result = self.check_secret_request(now, request);
        match &result {
            Ok(_) => {
                // Cannot fail: the check above resolved the same address.
                let client = self
                    .config
                    .resolver
                    .resolve(request.peer, request.forwarded)
                    .unwrap_or(request.peer);
                self.events.push_back(AgentEvent::SecretServed { client });
            }
            Err(reason) => self.events.push_back(AgentEvent::SecretRefused {
                peer: request.peer,
                reason: reason.clone(),
            }),
        }
        result
    }

    /// Whether a request for the secret would be answered, without answering it: the checks of
    /// [`Agent::handle_secret_request`], in the same order, with no event and no secret handed
    /// out. For a page that asks for the secret later, such as the HTTP adapter's popup page.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, SecretRequest};
    /// # use lanlink::{ForwardedHeaders, SecretRefusal};
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// while agent.poll_event().is_some() {}
    /// let id = agent.instance_id().to_string();
    /// let mut request = SecretRequest {
    ///     peer: "192.168.1.20".parse().unwrap(),
    ///     forwarded: ForwardedHeaders::NONE,
    ///     host: Some("192.168.1.50:8080"),
    ///     origin: None,
    ///     instance_id: &id,
    /// };
    /// assert_eq!(agent.check_secret_access(now, &request), Ok(()));
    /// assert!(agent.poll_event().is_none()); // nothing served, nothing recorded
    /// request.host = Some("attacker.example");
    /// assert_eq!(agent.check_secret_access(now, &request), Err(SecretRefusal::BadHost));
    /// ```
    pub fn check_secret_access(
        &mut self,
        now: Instant,
        request: &SecretRequest<'_>,
    ) -> Result<(), SecretRefusal> {
        // The reply (a copy of the secret) is dropped, and zeroized, at once.
        self.check_secret_request(now, request).map(drop)
    }

    pub(super) fn check_secret_request(
        &mut self,
        now: Instant,
        request: &SecretRequest<'_>,
    ) -> Result<SecretReply, SecretRefusal> {
        self.handle_timeout(now);
        if !self.is_discovering() {
            return match &self.state {
                State::Stopped {
                    reason: StopReason::WindowExpired,
                } => Err(SecretRefusal::WindowExpired),
                _ => Err(SecretRefusal::NotDiscovering),
            };
        }
        let client = self
            .config
            .resolver
            .resolve(request.peer, request.forwarded)?;
        if !self.config.local_policy.is_local(client) {
            return Err(SecretRefusal::NotLocal);
        }
        match request.instance_id.parse::<InstanceId>() {
            Ok(id) if id == self.instance_id => {}
            _ => return Err(SecretRefusal::WrongInstance),
        }
        let skip = crate::mutant::active(crate::mutant::Mutant::HostCheckSkipped);
        if !skip && !request.host.is_some_and(|h| self.host_allowed(h)) {
            return Err(SecretRefusal::BadHost);
        }
        if !skip
            && request
                .origin
                .is_some_and(|origin| !self.origin_allowed(origin))
        {
            return Err(SecretRefusal::BadOrigin);
        }
        match &self.state {
            State::Discovering { secret, .. } => Ok(SecretReply::new(secret.clone())),
            // Cannot happen: checked above.
            _ => Err(SecretRefusal::NotDiscovering),
        }
    }

    /// Whether `origin` is one of the configured origins (ASCII case-insensitive, exact).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .allow_origin("https://cloud.example");
    /// let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng())?;
    /// assert!(agent.origin_allowed("HTTPS://Cloud.Example"));
    /// assert!(!agent.origin_allowed("https://cloud.example.evil"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        self.config.allowed_origins.contains(&origin)
    }

    /// Whether a `Host` header value is an IP literal or an allowed name, either with an optional
    /// port: the DNS-rebinding check of protocol step 5.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # let config = AgentConfig::new("10.0.0.5".parse().unwrap(), 80, Default::default())
    /// #     .allow_host("printer.local");
    /// # let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap();
    /// assert!(agent.host_allowed("10.0.0.5:80"));
    /// assert!(agent.host_allowed("printer.local"));
    /// assert!(!agent.host_allowed("attacker.example"));
    /// ```
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim();
        let name = if let Some(rest) = host.strip_prefix('[') {
            let Some((inner, after)) = rest.split_once(']') else {
                return false;
            };
            return inner.parse::<Ipv6Addr>().is_ok() && valid_port_suffix(after);
        } else {
            match host.split_once(':') {
                Some((name, port)) => {
                    if !valid_port_suffix(&format!(":{port}")) {
                        return false;
                    }
                    name
                }
                None => host,
            }
        };
        if name.parse::<Ipv4Addr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        !name.is_empty() && self.config.allowed_hosts.contains(&name)
    }
}
