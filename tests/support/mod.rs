//! Helpers shared by test files (each file uses some of them).
#![allow(dead_code)]

#[cfg(feature = "obico")]
pub mod obico_agent;
#[cfg(feature = "redis")]
pub mod redis_server;
