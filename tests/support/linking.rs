//! The linker's driver as most tests run it: the first agent discovered is chosen.

use lanlink::driver::{run_linker, DriverConfig, LinkerDriverError};
use lanlink::event::LinkerEvent;
use lanlink::linker::Linker;
use lanlink::transport::{LinkerAgentTransport, LinkerServerTransport};
use lanlink::InstanceId;

/// Runs `linker` with `config` through `client` (to the server and to the agents alike), choosing
/// the first agent it discovers and handing each event to `on_event`, until it linked or failed.
pub async fn link_first<C>(
    linker: &mut Linker,
    client: &C,
    config: &DriverConfig,
    on_event: impl FnMut(LinkerEvent) + Send,
) -> Result<InstanceId, LinkerDriverError>
where
    C: LinkerServerTransport + LinkerAgentTransport,
{
    run_linker(
        linker,
        client,
        client,
        config,
        |agents| agents.first().map(|a| a.instance_id),
        on_event,
    )
    .await
}

/// Runs `agent`'s driver over `transport` with the default configuration in a task of its own;
/// the task ends with the agent's final status.
pub fn spawn_agent<T>(
    agent: &lanlink::driver::SharedAgent,
    transport: T,
) -> tokio::task::JoinHandle<lanlink::agent::AgentStatus>
where
    T: lanlink::transport::AgentServerTransport + 'static,
{
    let agent = std::sync::Arc::clone(agent);
    tokio::spawn(async move {
        lanlink::driver::run_agent(&agent, &transport, &DriverConfig::default(), |_| {}).await
    })
}
