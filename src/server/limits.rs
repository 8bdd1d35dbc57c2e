//! The server's hard limits: the bottom of the server, read by its configuration, budgets and
//! steps.
//! It must not depend on anything in the server.

use chrono::TimeDelta;

/// The longest any configured duration may be (a year): longer ones are refused, so that no sum
/// of them can overflow.
pub const MAX_TTL: TimeDelta = TimeDelta::days(365);

/// How many draws [`Server::mint_code`](crate::server::Server::mint_code) makes before giving up on finding a free code.
pub const MINT_ATTEMPTS: usize = 16;
