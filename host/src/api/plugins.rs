//! The `Plugins` service: what the runtime has loaded, and what it refused and why, as
//! the operator sees it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::pb::{self, plugins_server::Plugins};
use super::{ApiState, PluginInventory};
use crate::rate_limits::RateLimits;
use crate::runtime::{PluginSummary, Runtime, SkippedPlugin};

impl PluginInventory for Runtime {
    fn plugins(&self) -> Vec<PluginSummary> {
        Runtime::plugins(self)
    }

    fn skipped(&self) -> Vec<SkippedPlugin> {
        Runtime::skipped(self)
    }

    fn rate_limits(&self) -> Option<Arc<RateLimits>> {
        Runtime::rate_limits(self)
    }
}

pub struct PluginsService {
    state: Arc<ApiState>,
}

impl PluginsService {
    pub fn new(state: Arc<ApiState>) -> Self {
        Self { state }
    }
}

fn plugin_to_pb(plugin: PluginSummary) -> pb::Plugin {
    pb::Plugin {
        name: plugin.name,
        version: plugin.version,
        sha256: plugin.sha256,
        commands: plugin.commands,
        limits: Some(pb::PluginLimits {
            fuel: plugin.limits.fuel,
            memory_mib: plugin.limits.memory_mib,
            timeout_ms: u64::try_from(plugin.limits.timeout.as_millis()).unwrap_or(u64::MAX),
            max_retries: plugin.limits.max_retries,
        }),
        allowed_hosts: plugin.allowed_hosts,
    }
}

#[tonic::async_trait]
impl Plugins for PluginsService {
    async fn list_limits(
        &self,
        _request: Request<pb::ListLimitsRequest>,
    ) -> Result<Response<pb::ListLimitsResponse>, Status> {
        let Some(limits) = self.state.plugins.rate_limits() else {
            return Ok(Response::new(pb::ListLimitsResponse::default()));
        };
        let now = chrono::Utc::now();
        let holds = limits
            .holds(now)
            .await
            .map_err(|err| Status::unavailable(err.to_string()))?
            .into_iter()
            .map(|hold| pb::RateLimitHold {
                plugin: hold.plugin,
                host: hold.host,
                credential: hold.credential,
                until: Some(timestamp(hold.until)),
                learned_at: Some(timestamp(hold.learned_at)),
                node: hold.node,
            })
            .collect();
        let declared = limits
            .declared(now)
            .into_iter()
            .map(|limit| pb::DeclaredLimit {
                plugin: limit.plugin,
                host: limit.host,
                requests: limit.requests,
                per_ms: u64::try_from(limit.per.as_millis()).unwrap_or(u64::MAX),
                used: limit.used,
                share: limit.share,
                full_until: limit.full_until.map(timestamp),
            })
            .collect();
        Ok(Response::new(pb::ListLimitsResponse { holds, declared }))
    }

    async fn list_plugins(
        &self,
        _request: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        let mut plugins: Vec<pb::Plugin> = self
            .state
            .plugins
            .plugins()
            .into_iter()
            .map(plugin_to_pb)
            .collect();
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        let mut skipped: Vec<pb::SkippedPlugin> = self
            .state
            .plugins
            .skipped()
            .into_iter()
            .map(|skipped| pb::SkippedPlugin {
                name: skipped
                    .path
                    .file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: skipped.path.display().to_string(),
                reason: skipped.reason,
            })
            .collect();
        skipped.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListPluginsResponse { plugins, skipped }))
    }
}
