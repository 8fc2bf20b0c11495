//! The plugin manifest `NAME.toml`: the operator's policy for one plugin.
//!
//! ```toml
//! [limits]                 # all optional; the daemon's defaults fill the gaps
//! fuel = 2_000_000_000
//! memory_mib = 64
//! timeout_ms = 30_000
//! max_retries = 5
//! concurrency = 4          # jobs of this plugin running at once, on every daemon
//! concurrency_per_key = 1  # of those, with one concurrency key (1 when not given)
//!
//! [limits.commands.clone]  # a command's own limit, within the plugin's
//! concurrency = 1
//!
//! [network]                # no entry, no network
//! allowed_hosts = ["https://api.github.com", "https://*.example.com:*"]
//! # or "${config.base_url}": the origin of [config] base_url (also for [[auth]] host)
//!
//! [[auth]]                 # added by the host; the plugin never sees the value
//! host = "https://api.github.com"
//! header = "Authorization"
//! value = "Bearer ${GITHUB_TOKEN}"
//!
//! [[rate_limit]]           # a limit the API documents: never more than this
//! host = "https://api.github.com"
//! requests = 5000
//! per = "1h"               # ms, s, m, h or d; 1s to 7d
//!
//! [config]                 # strings, readable through wasi:config/store
//! base_url = "https://api.github.com"
//!
//! [workspace]              # no table, no filesystem (see `workspace`)
//! enabled = true           # a directory of the job's own, preopened read-only
//! max_bytes = 2_147_483_648  # caps of what one archive may unpack to
//! max_files = 200_000
//! ```
//!
//! This file owns parsing and validation (unknown fields are errors, so typos are
//! reported) and the resolution of `${NAME}` from the daemon's secrets. It must not
//! log a secret value or put one in an error message; matching requests against the
//! hosts is `egress`'s business.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, bail};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::Limits;
use super::egress::{AuthHeader, HostPattern};
use super::workspace::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, MAX_MAX_BYTES, MAX_MAX_FILES, WorkspaceGrant,
};

use crate::config::{MAX_MEMORY_MIB, MAX_RETRIES_LIMIT, MAX_TIMEOUT_MS};
use crate::rate_limits::{MAX_DECLARED_REQUESTS, parse_per};
use honeydew_core::concurrency::MAX_LIMIT;

/// What `${NAME}` placeholders may resolve to: the secrets the operator declared, and
/// the names (only) of environment variables that are set but were not declared.
#[derive(Default)]
pub(super) struct Secrets {
    pub(super) values: HashMap<String, String>,
    pub(super) undeclared: std::collections::BTreeSet<String>,
}

impl From<HashMap<String, String>> for Secrets {
    fn from(values: HashMap<String, String>) -> Self {
        Self {
            values,
            undeclared: Default::default(),
        }
    }
}

/// A parsed, validated manifest. Secrets are still `${NAME}` placeholders.
#[derive(Debug, Default)]
pub(super) struct Manifest {
    limits: RawLimits,
    allowed_hosts: Vec<HostPattern>,
    auth: Vec<AuthRule>,
    config: BTreeMap<String, String>,
    workspace: Option<WorkspaceGrant>,
    rate_limits: Vec<DeclaredLimit>,
}

/// A `[[rate_limit]]`: at most `requests` per `per` to `host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DeclaredLimit {
    pub(super) host: HostPattern,
    pub(super) requests: u32,
    pub(super) per: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    host: String,
    requests: u32,
    per: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    auth: Vec<RawAuthRule>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    workspace: Option<RawWorkspace>,
    #[serde(default)]
    rate_limit: Vec<RawRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkspace {
    enabled: Option<bool>,
    max_bytes: Option<u64>,
    max_files: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<u64>,
    memory_mib: Option<u64>,
    timeout_ms: Option<u64>,
    max_retries: Option<u32>,
    concurrency: Option<u32>,
    concurrency_per_key: Option<u32>,
    #[serde(default)]
    commands: BTreeMap<String, RawCommandLimits>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommandLimits {
    concurrency: Option<u32>,
}

/// The concurrency limits a manifest declares (see [`honeydew_core::concurrency`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginConcurrency {
    /// Jobs of the plugin running at once.
    pub plugin: Option<u32>,
    /// Jobs of one concurrency key running at once.
    pub per_key: Option<u32>,
    /// Jobs of a command running at once, by command name (without the plugin).
    pub commands: BTreeMap<String, u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthRule {
    host: String,
    header: String,
    value: String,
}

/// An `[[auth]]` rule whose value still holds its `${NAME}` placeholders.
#[derive(Debug)]
struct AuthRule {
    host: HostPattern,
    header: HeaderName,
    value: Template,
}

impl Manifest {
    /// Parses and validates `text`; the error says which field is wrong and why.
    pub(super) fn parse(text: &str) -> anyhow::Result<Manifest> {
        let raw: RawManifest = toml::from_str(text).map_err(|err| {
            // toml's message spans lines (it quotes the offending line); keep it whole.
            anyhow::anyhow!("{}", err.to_string().trim_end())
        })?;
        validate_limits(&raw.limits)?;
        let allowed_hosts = raw
            .network
            .allowed_hosts
            .iter()
            .map(|entry| {
                let context = || format!("network.allowed_hosts: invalid entry {entry:?}");
                let host = host_entry(entry, &raw.config).with_context(context)?;
                HostPattern::parse(&host).with_context(context)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let auth = raw
            .auth
            .into_iter()
            .map(|rule| {
                let context = || format!("[[auth]] rule for {:?}", rule.host);
                let host = host_entry(&rule.host, &raw.config).with_context(context)?;
                let host = HostPattern::parse(&host).with_context(context)?;
                if !allowed_hosts.iter().any(|allowed| host.is_within(allowed)) {
                    bail!(
                        "{}: the host is not in network.allowed_hosts, so the header could never be sent",
                        context()
                    );
                }
                let header = HeaderName::try_from(rule.header.as_str())
                    .map_err(|_| anyhow::anyhow!("invalid header name {:?}", rule.header))
                    .with_context(context)?;
                let value = Template::parse(&rule.value).with_context(context)?;
                Ok(AuthRule {
                    host,
                    header,
                    value,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let rate_limits = raw
            .rate_limit
            .iter()
            .map(|limit| {
                let context = || format!("[[rate_limit]] for {:?}", limit.host);
                let host = host_entry(&limit.host, &raw.config).with_context(context)?;
                let host = HostPattern::parse(&host).with_context(context)?;
                if !allowed_hosts.iter().any(|allowed| host.is_within(allowed)) {
                    bail!(
                        "{}: the host is not in network.allowed_hosts, so no request could go there",
                        context()
                    );
                }
                if !(1..=MAX_DECLARED_REQUESTS).contains(&limit.requests) {
                    bail!(
                        "{}: requests must be between 1 and {MAX_DECLARED_REQUESTS}, not {}",
                        context(),
                        limit.requests
                    );
                }
                let per = parse_per(&limit.per)
                    .map_err(|reason| anyhow::anyhow!("{}: {reason}", context()))?;
                Ok(DeclaredLimit {
                    host,
                    requests: limit.requests,
                    per,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let workspace = raw
            .workspace
            .as_ref()
            .map(workspace_grant)
            .transpose()?
            .flatten();
        Ok(Manifest {
            limits: raw.limits,
            allowed_hosts,
            auth,
            config: raw.config,
            workspace,
            rate_limits,
        })
    }

    /// The concurrency limits declared.
    pub(super) fn concurrency(&self) -> PluginConcurrency {
        PluginConcurrency {
            plugin: self.limits.concurrency,
            per_key: self.limits.concurrency_per_key,
            commands: self
                .limits
                .commands
                .iter()
                .filter_map(|(name, limits)| Some((name.clone(), limits.concurrency?)))
                .collect(),
        }
    }

    /// The `[[rate_limit]]`s declared.
    pub(super) fn rate_limits(&self) -> &[DeclaredLimit] {
        &self.rate_limits
    }

    /// The workspace the plugin is granted, if any.
    pub(super) fn workspace(&self) -> Option<WorkspaceGrant> {
        self.workspace
    }

    /// The limits in force: the manifest's, or `defaults` where it gives none.
    pub(super) fn limits(&self, defaults: &Limits) -> Limits {
        let raw = &self.limits;
        Limits {
            fuel: raw.fuel.unwrap_or(defaults.fuel),
            memory_mib: raw.memory_mib.unwrap_or(defaults.memory_mib),
            timeout: raw
                .timeout_ms
                .map_or(defaults.timeout, Duration::from_millis),
            max_retries: raw.max_retries.unwrap_or(defaults.max_retries),
        }
    }

    /// The hosts the plugin may reach.
    pub(super) fn allowed_hosts(&self) -> &[HostPattern] {
        &self.allowed_hosts
    }

    /// The `[config]` table.
    pub(super) fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    /// The auth headers with their secrets filled in from `secrets`; fails, naming
    /// the missing secret (never a value), when one is not set.
    pub(super) fn auth_headers(&self, secrets: &Secrets) -> anyhow::Result<Vec<AuthHeader>> {
        self.auth
            .iter()
            .map(|rule| {
                let value = rule.value.resolve(secrets).with_context(|| {
                    format!("[[auth]] rule for {:?}", rule.host.to_string())
                })?;
                let mut value = HeaderValue::try_from(value).map_err(|_| {
                    anyhow::anyhow!(
                        "[[auth]] rule for {:?}: the value is not a valid header value once its secrets are filled in",
                        rule.host.to_string()
                    )
                })?;
                value.set_sensitive(true);
                Ok(
                    AuthHeader::new(rule.host.clone(), rule.header.clone(), value)
                        .with_credential(rule.value.secret_names()),
                )
            })
            .collect()
    }
}

/// A host entry of `allowed_hosts` or `[[auth]]` with a `${config.KEY}` reference
/// replaced by the origin (`scheme://host[:port]`) of the URL in `[config] KEY`; any
/// other entry as written. So one line, `base_url`, moves a plugin's grant and its
/// credential together.
fn host_entry(entry: &str, config: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let Some(key) = entry
        .strip_prefix("${config.")
        .and_then(|rest| rest.strip_suffix('}'))
    else {
        return Ok(entry.to_owned());
    };
    let Some(url) = config.get(key) else {
        bail!(
            "it takes its host from [config] {key}, which is not set: set {key} to the URL \
             the plugin should use"
        );
    };
    origin(url).with_context(|| format!("[config] {key} = {url:?} is not an http(s) URL"))
}

/// `scheme://authority` of `url`, refusing one with a user part.
fn origin(url: &str) -> anyhow::Result<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("expected scheme://host[:port][/path]");
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.is_empty() || authority.contains('@') {
        bail!("expected a host, without a user part");
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The grant of a `[workspace]` table: `None` unless `enabled = true`; caps within
/// their bounds (refused outside them, like `[limits]`), the defaults where not given.
fn workspace_grant(raw: &RawWorkspace) -> anyhow::Result<Option<WorkspaceGrant>> {
    let cap = |name: &str, value: Option<u64>, default: u64, max: u64| match value {
        None => Ok(default),
        Some(value) if (1..=max).contains(&value) => Ok(value),
        Some(value) => Err(anyhow::anyhow!(
            "workspace.{name} must be between 1 and {max}, not {value}"
        )),
    };
    let max_bytes = cap("max_bytes", raw.max_bytes, DEFAULT_MAX_BYTES, MAX_MAX_BYTES)?;
    let max_files = cap("max_files", raw.max_files, DEFAULT_MAX_FILES, MAX_MAX_FILES)?;
    match raw.enabled {
        Some(true) => Ok(Some(WorkspaceGrant {
            max_bytes,
            max_files,
        })),
        Some(false) => Ok(None),
        None => bail!(
            "[workspace] grants nothing without `enabled = true` (or `enabled = false` to keep the caps and grant none)"
        ),
    }
}

fn validate_limits(limits: &RawLimits) -> anyhow::Result<()> {
    if limits.fuel == Some(0) {
        bail!("limits.fuel must be at least 1");
    }
    if let Some(memory_mib) = limits.memory_mib
        && !(1..=MAX_MEMORY_MIB).contains(&memory_mib)
    {
        bail!("limits.memory_mib must be between 1 and {MAX_MEMORY_MIB}, not {memory_mib}");
    }
    if let Some(timeout_ms) = limits.timeout_ms
        && !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms)
    {
        bail!("limits.timeout_ms must be between 1 and {MAX_TIMEOUT_MS} (a day), not {timeout_ms}");
    }
    if let Some(max_retries) = limits.max_retries
        && max_retries > MAX_RETRIES_LIMIT
    {
        bail!("limits.max_retries must be at most {MAX_RETRIES_LIMIT}, not {max_retries}");
    }
    let concurrency = |field: &str, value: Option<u32>| match value {
        Some(value) if !(1..=MAX_LIMIT).contains(&value) => {
            bail!("{field} must be between 1 and {MAX_LIMIT}, not {value}")
        }
        _ => Ok(()),
    };
    concurrency("limits.concurrency", limits.concurrency)?;
    concurrency("limits.concurrency_per_key", limits.concurrency_per_key)?;
    for (name, command) in &limits.commands {
        concurrency(
            &format!("limits.commands.{name}.concurrency"),
            command.concurrency,
        )?;
    }
    Ok(())
}

/// A string with `${NAME}` placeholders.
#[derive(Debug, PartialEq, Eq)]
struct Template(Vec<Piece>);

#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Secret(String),
}

impl Template {
    fn parse(text: &str) -> anyhow::Result<Template> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                bail!("unterminated \"${{\" in the value");
            };
            let name = &after[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                bail!("{:?} is not a secret name (letters, digits and _)", name);
            }
            pieces.push(Piece::Secret(name.to_owned()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template(pieces))
    }

    /// The names of the secrets it refers to, comma-separated (never their values).
    fn secret_names(&self) -> String {
        let names: Vec<&str> = self
            .0
            .iter()
            .filter_map(|piece| match piece {
                Piece::Secret(name) => Some(name.as_str()),
                Piece::Text(_) => None,
            })
            .collect();
        names.join(",")
    }

    fn resolve(&self, secrets: &Secrets) -> anyhow::Result<String> {
        let mut value = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => value.push_str(text),
                Piece::Secret(name) => match secrets.values.get(name) {
                    Some(secret) => value.push_str(secret),
                    None if secrets.undeclared.contains(name) => bail!(
                        "secret {name} is not declared: the daemon's environment has {name}, but only \
                         declared variables are secrets (list it in secret_env or --secret-env, or set \
                         HONEYDEW_SECRET_{name} instead)"
                    ),
                    None => bail!(
                        "secret {name} is not set (give it to the daemon in its config file's [secrets] \
                         table or as the environment variable HONEYDEW_SECRET_{name})"
                    ),
                },
            }
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        format!("{:#}", Manifest::parse(text).unwrap_err())
    }

    #[test]
    fn an_empty_manifest_grants_nothing_and_keeps_the_defaults() {
        let manifest = Manifest::parse("").unwrap();
        assert!(manifest.allowed_hosts().is_empty());
        assert!(manifest.config().is_empty());
        assert_eq!(manifest.limits(&Limits::default()), Limits::default());
        assert!(
            manifest
                .auth_headers(&Secrets::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_design_example_parses() {
        let manifest = Manifest::parse(
            r#"
            [limits]
            fuel = 1_000
            memory_mib = 16
            timeout_ms = 1_500
            max_retries = 5

            [network]
            allowed_hosts = ["https://api.github.com", "https://codeload.github.com"]

            [[auth]]
            host = "https://api.github.com"
            header = "Authorization"
            value = "Bearer ${GITHUB_TOKEN}"

            [config]
            base_url = "https://api.github.com"
            "#,
        )
        .unwrap();
        let limits = manifest.limits(&Limits::default());
        assert_eq!(
            limits,
            Limits {
                fuel: 1_000,
                memory_mib: 16,
                timeout: Duration::from_millis(1_500),
                max_retries: 5,
            }
        );
        assert_eq!(manifest.allowed_hosts().len(), 2);
        assert_eq!(manifest.config()["base_url"], "https://api.github.com");
        let secrets = HashMap::from([("GITHUB_TOKEN".to_owned(), "t0k3n".to_owned())]);
        let headers = manifest.auth_headers(&secrets.into()).unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].value().to_str().unwrap(), "Bearer t0k3n");
        assert!(headers[0].value().is_sensitive());
    }

    #[test]
    fn a_workspace_is_granted_only_when_enabled_with_bounded_caps() {
        let grant = |text: &str| Manifest::parse(text).map(|manifest| manifest.workspace());
        assert_eq!(grant("").unwrap(), None);
        assert_eq!(grant("[workspace]\nenabled = false").unwrap(), None);
        assert_eq!(
            grant("[workspace]\nenabled = true").unwrap(),
            Some(WorkspaceGrant {
                max_bytes: DEFAULT_MAX_BYTES,
                max_files: DEFAULT_MAX_FILES,
            })
        );
        assert_eq!(
            grant("[workspace]\nenabled = true\nmax_bytes = 1024\nmax_files = 10").unwrap(),
            Some(WorkspaceGrant {
                max_bytes: 1024,
                max_files: 10,
            })
        );
        assert!(
            error_of("[workspace]\nmax_files = 10").contains("without `enabled = true`"),
            "caps alone grant nothing, and say so"
        );
        assert_eq!(
            error_of("[workspace]\nenabled = true\nmax_files = 0"),
            format!("workspace.max_files must be between 1 and {MAX_MAX_FILES}, not 0")
        );
        assert_eq!(
            error_of(&format!(
                "[workspace]\nenabled = true\nmax_bytes = {}",
                MAX_MAX_BYTES + 1
            )),
            format!(
                "workspace.max_bytes must be between 1 and {MAX_MAX_BYTES}, not {}",
                MAX_MAX_BYTES + 1
            )
        );
        assert!(error_of("[workspace]\nenabled = true\nmax_file = 1").contains("unknown field"));
    }

    #[test]
    fn declared_rate_limits_name_an_allowed_host_a_count_and_a_window() {
        let manifest = Manifest::parse(
            "[network]\nallowed_hosts = [\"https://api.github.com\"]\n\
             [[rate_limit]]\nhost = \"https://api.github.com\"\nrequests = 5000\nper = \"1h\"\n",
        )
        .unwrap();
        assert_eq!(
            manifest.rate_limits(),
            [DeclaredLimit {
                host: HostPattern::parse("https://api.github.com").unwrap(),
                requests: 5000,
                per: Duration::from_secs(3600),
            }]
        );
        let with = |limit: &str| {
            let text = format!(
                "[network]\nallowed_hosts = [\"https://api.github.com\"]\n[[rate_limit]]\n{limit}\n"
            );
            format!("{:#}", Manifest::parse(&text).unwrap_err())
        };
        assert!(
            with("host = \"https://x.com\"\nrequests = 1\nper = \"1h\"")
                .contains("not in network.allowed_hosts")
        );
        assert!(
            with("host = \"https://api.github.com\"\nrequests = 0\nper = \"1h\"")
                .contains("requests must be between 1 and")
        );
        assert!(
            with("host = \"https://api.github.com\"\nrequests = 5\nper = \"1w\"")
                .contains("unknown unit")
        );
    }

    #[test]
    fn concurrency_limits_are_read_for_the_plugin_its_keys_and_its_commands() {
        let manifest = Manifest::parse(
            "[limits]\nconcurrency = 4\nconcurrency_per_key = 2\n\
             [limits.commands.clone]\nconcurrency = 1\n",
        )
        .unwrap();
        let concurrency = manifest.concurrency();
        assert_eq!(concurrency.plugin, Some(4));
        assert_eq!(concurrency.per_key, Some(2));
        assert_eq!(concurrency.commands["clone"], 1);
        assert_eq!(
            Manifest::parse("").unwrap().concurrency(),
            PluginConcurrency::default()
        );
        assert_eq!(
            error_of("[limits]\nconcurrency = 0"),
            "limits.concurrency must be between 1 and 100000, not 0"
        );
        assert_eq!(
            error_of("[limits.commands.clone]\nconcurrency = 0"),
            "limits.commands.clone.concurrency must be between 1 and 100000, not 0"
        );
        assert!(error_of("[limits.commands.clone]\nconcurency = 1").contains("unknown field"));
    }

    #[test]
    fn partial_limits_fall_back_to_the_defaults() {
        let manifest = Manifest::parse("[limits]\nfuel = 10").unwrap();
        let limits = manifest.limits(&Limits::default());
        assert_eq!(limits.fuel, 10);
        assert_eq!(limits.memory_mib, Limits::default().memory_mib);
    }

    #[test]
    fn typos_and_bad_values_are_reported_precisely() {
        assert!(error_of("[limits]\nfuell = 1").contains("unknown field `fuell`"));
        assert!(error_of("[network]\nallowed_host = []").contains("unknown field `allowed_host`"));
        assert!(error_of("[limit]\nfuel = 1").contains("unknown field `limit`"));
        assert!(error_of("[config]\nretries = 3").contains("expected a string"));
        assert_eq!(
            error_of("[limits]\nfuel = 0"),
            "limits.fuel must be at least 1"
        );
        assert_eq!(
            error_of("[limits]\nmemory_mib = 5000"),
            "limits.memory_mib must be between 1 and 4096, not 5000"
        );
        assert!(
            error_of("[network]\nallowed_hosts = [\"api.github.com\"]")
                .starts_with("network.allowed_hosts: invalid entry \"api.github.com\": ")
        );
    }

    #[test]
    fn auth_rules_must_target_an_allowed_host() {
        let text = r#"
            [network]
            allowed_hosts = ["https://*.github.com"]
            [[auth]]
            host = "https://api.gitlab.com"
            header = "Authorization"
            value = "x"
        "#;
        assert_eq!(
            error_of(text),
            "[[auth]] rule for \"https://api.gitlab.com\": the host is not in network.allowed_hosts, so the header could never be sent"
        );
        let covered = text.replace("api.gitlab.com", "api.github.com");
        assert!(Manifest::parse(&covered).is_ok());
    }

    #[test]
    fn hosts_can_follow_the_base_url() {
        let text = |base_url: &str| {
            format!(
                "[network]\nallowed_hosts = [\"${{config.base_url}}\"]\n\
                 [[auth]]\nhost = \"${{config.base_url}}\"\nheader = \"Authorization\"\nvalue = \"x\"\n\
                 {base_url}"
            )
        };
        let manifest = Manifest::parse(&text(
            "[config]\nbase_url = \"http://127.0.0.1:8080/api/v4\"",
        ))
        .unwrap();
        assert_eq!(
            manifest.allowed_hosts()[0].to_string(),
            "http://127.0.0.1:8080"
        );
        let headers = manifest.auth_headers(&Secrets::default()).unwrap();
        assert_eq!(headers.len(), 1);
        // No base_url: refused, saying which setting to give.
        assert_eq!(
            error_of(&text("")),
            "network.allowed_hosts: invalid entry \"${config.base_url}\": it takes its host from \
             [config] base_url, which is not set: set base_url to the URL the plugin should use"
        );
        assert!(
            error_of(&text("[config]\nbase_url = \"https://user@evil.example\""))
                .contains("is not an http(s) URL")
        );
        assert!(
            error_of(&text("[config]\nbase_url = \"ftp://x.example\""))
                .contains("the scheme must be http or https")
        );
    }

    #[test]
    fn a_missing_secret_is_named_and_no_value_leaks() {
        let manifest = Manifest::parse(
            r#"
            [network]
            allowed_hosts = ["https://api.github.com"]
            [[auth]]
            host = "https://api.github.com"
            header = "Authorization"
            value = "Bearer ${GITHUB_TOKEN}"
            "#,
        )
        .unwrap();
        let secrets = HashMap::from([("OTHER".to_owned(), "s3cret".to_owned())]);
        let error = format!("{:#}", manifest.auth_headers(&secrets.into()).unwrap_err());
        assert!(error.contains("secret GITHUB_TOKEN is not set"), "{error}");
        assert!(!error.contains("s3cret"));
        let undeclared = Secrets {
            values: HashMap::new(),
            undeclared: ["GITHUB_TOKEN".to_owned()].into(),
        };
        let error = format!("{:#}", manifest.auth_headers(&undeclared).unwrap_err());
        assert!(
            error.contains("secret GITHUB_TOKEN is not declared"),
            "{error}"
        );
        assert!(error.contains("HONEYDEW_SECRET_GITHUB_TOKEN"), "{error}");
    }

    #[test]
    fn templates_split_text_and_secrets() {
        assert_eq!(
            Template::parse("a ${B} c${D_1}").unwrap(),
            Template(vec![
                Piece::Text("a ".into()),
                Piece::Secret("B".into()),
                Piece::Text(" c".into()),
                Piece::Secret("D_1".into()),
            ])
        );
        assert_eq!(
            Template::parse("no secrets").unwrap(),
            Template(vec![Piece::Text("no secrets".into())])
        );
        assert!(Template::parse("${OPEN").is_err());
        assert!(Template::parse("${}").is_err());
        assert!(Template::parse("${1X}").is_err());
    }

    proptest::proptest! {
        /// Whatever a manifest holds, it parses or is refused with a reason, and a
        /// parsed one never carries a limit the clock arithmetic cannot take.
        #[test]
        fn any_manifest_text_parses_or_is_refused_without_panicking(text in "\\PC{0,300}") {
            let _ = Manifest::parse(&text);
        }

        #[test]
        fn any_limit_numbers_are_bounded_or_refused(
            fuel in proptest::num::u64::ANY,
            memory_mib in proptest::num::u64::ANY,
            timeout_ms in proptest::num::u64::ANY,
            max_retries in proptest::num::u32::ANY,
        ) {
            let text = format!(
                "[limits]\nfuel = {fuel}\nmemory_mib = {memory_mib}\ntimeout_ms = {timeout_ms}\nmax_retries = {max_retries}\n"
            );
            if let Ok(manifest) = Manifest::parse(&text) {
                let limits = manifest.limits(&Limits::default());
                proptest::prop_assert!(limits.timeout <= Duration::from_millis(MAX_TIMEOUT_MS));
                proptest::prop_assert!(limits.memory_mib <= MAX_MEMORY_MIB);
                proptest::prop_assert!(limits.max_retries <= MAX_RETRIES_LIMIT);
            }
        }

        #[test]
        fn any_host_entry_parses_or_is_refused_without_panicking(entry in "\\PC{0,60}") {
            let text = format!("[network]\nallowed_hosts = [{entry:?}]\n");
            let _ = Manifest::parse(&text);
        }
    }
}
