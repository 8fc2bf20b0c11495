//! The `honeydew` command line: a gRPC client of the daemon, plus `honeydew daemon`.
//!
//! Every command connects to the daemon's Unix socket (`--socket`, or `honeydew.sock`
//! in `--data-dir` / `HONEYDEW_DATA_DIR`, or `--tcp`, which sends the daemon's bearer
//! token: `--token` / `HONEYDEW_TOKEN`, or `<data-dir>/token`), makes its calls and
//! prints for people, or JSON with `--json`. Results print as pretty JSON when they are JSON, raw
//! otherwise; progress goes to stderr so that stdout holds only the answer. Exit codes
//! are part of the interface: see [`EXIT_CODES`]. [`main`] is the whole program; the
//! `honeydew` binary only calls it.
//!
//! This crate speaks only the API, through `honeydew_proto`: it must never depend on
//! the daemon's crates (`honeydew`, `honeydew-store`), so that the CLI links no
//! wasmtime, SQLite or PostgreSQL. `honeydew daemon` therefore runs the `honeydewd`
//! binary instead of the daemon's code ([`daemon`]).

pub mod daemon;
mod logs;
mod output;
mod proxies;
mod wait;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use honeydew_proto::pb::plugins_client::PluginsClient;
use honeydew_proto::pb::queue_client::QueueClient;
use honeydew_proto::pb::schedules_client::SchedulesClient;
use honeydew_proto::{
    Address, CLIENT_MAX_RESPONSE_BYTES, Connection, DataDirArg, SOCKET_FILE_NAME, Token,
    TokenError, pb,
};
use tonic::{Code, Status};

/// What the exit codes mean; shown by `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the job failed or was cancelled, or the daemon refused the request
  2  usage error (bad arguments, or a request the daemon found invalid)
  3  the daemon is unreachable
`honeydew daemon` exits as honeydewd does, or:
  126  honeydewd was found but could not be run
  127  honeydewd was not found beside honeydew or on PATH";

/// Talk to the honeydew daemon: submit jobs, watch them, list and cancel them.
#[derive(Parser, Debug)]
#[command(name = "honeydew", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// The daemon's socket [default: <data-dir>/honeydew.sock]
    #[arg(long, env = "HONEYDEW_SOCKET", value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// Reach the daemon over TCP instead (HOST:PORT, as given to `honeydewd --listen-tcp`)
    #[arg(
        long,
        env = "HONEYDEW_TCP",
        value_name = "ADDR",
        global = true,
        conflicts_with = "socket"
    )]
    tcp: Option<String>,
    /// The daemon's bearer token for --tcp [default: read from <data-dir>/token]
    #[arg(
        long,
        env = "HONEYDEW_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print JSON instead of text
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once and moved out at once; a box would buy nothing"
)]
enum Command {
    #[command(flatten)]
    Client(ClientCommand),
    /// Run the daemon in the foreground: runs `honeydewd` with these arguments
    #[command(after_help = daemon::HELP)]
    Daemon(daemon::DaemonArgs),
}

/// The commands that talk to a running daemon.
#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Submit a job and print its id (or, with --wait, its result); or, with --batch, many
    /// jobs in one transaction
    Submit(SubmitArgs),
    /// Show a job
    Status {
        /// The job id
        id: String,
    },
    /// Wait for a job to finish, showing its progress, and print its result
    Wait {
        /// The job id
        id: String,
    },
    /// Print a job's log: the lines its plugin logged, each attempt's tail (the last 2000
    /// lines within 256 KiB)
    Logs {
        /// The job id
        id: String,
        /// Keep printing new lines as they come, until the job ends
        #[arg(long, short)]
        follow: bool,
        /// Only this attempt's lines (1 for the first)
        #[arg(long, value_name = "N")]
        attempt: Option<u32>,
    },
    /// List jobs, newest first
    List(ListArgs),
    /// Say why a job is not running now and when it next can
    Explain {
        /// The job id
        id: String,
    },
    /// Cancel a pending or running job; or, with --command/--since, every pending one
    /// that matches
    Cancel {
        /// The job id
        #[arg(required_unless_present_any = ["command", "since"], conflicts_with_all = ["command", "since"])]
        id: Option<String>,
        #[command(flatten)]
        bulk: BulkArgs,
    },
    /// Put a failed or cancelled job back to pending with a fresh retry budget; or, with
    /// --command/--since, every one that matches
    Retry {
        /// The job id
        #[arg(required_unless_present_any = ["command", "since", "status"], conflicts_with_all = ["command", "since", "status"])]
        id: Option<String>,
        #[command(flatten)]
        bulk: BulkArgs,
    },
    /// Delete finished jobs past the daemon's retention (or older than --older-than)
    Prune {
        /// Delete completed, failed and cancelled jobs that finished longer ago than
        /// this, such as 7d or 12h [default: the daemon's retention per state]
        #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
    /// Pause a plugin (`github`) or a command (`github.commits`): its pending jobs wait,
    /// on every daemon of the store and across restarts, until resumed; running jobs
    /// finish. Without a target, list what is paused
    Pause {
        /// A plugin name or PLUGIN.COMMAND
        target: Option<String>,
    },
    /// Resume a paused plugin or command: its jobs run again, in their order
    Resume {
        /// A plugin name or PLUGIN.COMMAND, as paused
        target: String,
    },
    /// Manage cron schedules
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// List the loaded plugins, and the files of the plugin directory that were refused
    Plugins,
    /// Show the rate limits: holds learned from APIs' answers (until their reset) and
    /// the limits manifests declare, with how full each is
    Limits,
    /// GitHub jobs (plugin `github`)
    #[command(subcommand, name = "github")]
    GitHub(proxies::GitHubCommand),
    /// GitLab jobs (plugin `gitlab`)
    #[command(subcommand, name = "gitlab")]
    GitLab(proxies::GitLabCommand),
    /// Jira jobs (plugin `jira`)
    #[command(subcommand)]
    Jira(proxies::JiraCommand),
    /// Linear jobs (plugin `linear`)
    #[command(subcommand)]
    Linear(proxies::LinearCommand),
    /// Bitbucket jobs (plugin `bitbucket`)
    #[command(subcommand)]
    Bitbucket(proxies::BitbucketCommand),
}

#[derive(Args, Debug)]
struct SubmitArgs {
    /// PLUGIN.COMMAND, such as echo.echo or github.commits
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    command: Option<String>,
    /// JSON payload: inline, @FILE, or - for stdin [default: {}]
    #[arg(long, value_name = "JSON|@FILE|-")]
    payload: Option<String>,
    #[command(flatten)]
    job: JobArgs,
    /// At most one job with this key at a time: while one holds it, print its id instead
    #[arg(long, value_name = "KEY")]
    unique_key: Option<String>,
    /// Only a job holding the key submitted this recently counts, such as 10m or 1d
    /// [default: any]
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration, requires = "unique_key")]
    unique_for: Option<std::time::Duration>,
    /// The states in which a holder counts [default: pending,running]
    #[arg(long, value_enum, value_delimiter = ',', requires = "unique_key")]
    unique_states: Vec<StatusArg>,
    /// When the key is held: print the holder's id, fail, or give a pending holder this
    /// payload
    #[arg(long, value_enum, default_value_t = OnConflictArg::Existing, requires = "unique_key")]
    on_conflict: OnConflictArg,
    /// Run only once job ID completed (repeatable: once all of them did); the job is
    /// cancelled if one of them fails or is cancelled
    #[arg(long, value_name = "ID", conflicts_with = "unique_key")]
    after: Vec<String>,
    /// A concurrency key, such as a repository or a tenant: at most a few jobs of the
    /// plugin with this key run at once (its manifest's limits.concurrency_per_key,
    /// 1 by default), and keys take turns
    #[arg(long, value_name = "KEY")]
    concurrency_key: Option<String>,
    /// Submit every job of FILE (or - for stdin), one JSON object a line:
    /// {"command": "echo.echo", "payload": {...}, "priority": 0, "max_retries": 3,
    /// "concurrency_key": "K"};
    /// all of them are stored, or none is. Prints the ids in order
    #[arg(long, value_name = "FILE.jsonl|-", conflicts_with_all = ["payload", "unique_key", "after"])]
    batch: Option<String>,
}

/// Which jobs a bulk cancel or retry takes.
#[derive(Args, Debug)]
struct BulkArgs {
    /// Only jobs in this state [default: pending for cancel, failed for retry]
    #[arg(long, value_enum)]
    status: Option<StatusArg>,
    /// Only jobs of this command
    #[arg(long, value_name = "PLUGIN.COMMAND")]
    command: Option<String>,
    /// Only jobs submitted since: an RFC 3339 instant, or an age such as 2h or 7d
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

impl BulkArgs {
    fn request(&self) -> pb::BulkJobsRequest {
        pb::BulkJobsRequest {
            status: self
                .status
                .map_or(pb::JobStatus::Unspecified, pb::JobStatus::from)
                .into(),
            command: self.command.clone(),
            since: self.since.map(|at| prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
            }),
        }
    }
}

/// `--since`: an RFC 3339 instant, or an age before now.
fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let age = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 instant nor an age such as 2h"))?;
    chrono::TimeDelta::from_std(age)
        .ok()
        .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        .ok_or_else(|| format!("{text:?} is too long ago"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OnConflictArg {
    /// Print the holder's id
    Existing,
    /// Fail, naming the holder
    Reject,
    /// A pending holder takes the new payload (debounce)
    Replace,
}

impl From<OnConflictArg> for pb::OnConflict {
    fn from(value: OnConflictArg) -> Self {
        match value {
            OnConflictArg::Existing => pb::OnConflict::Existing,
            OnConflictArg::Reject => pb::OnConflict::Reject,
            OnConflictArg::Replace => pb::OnConflict::Replace,
        }
    }
}

/// One line of a `--batch` file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine {
    command: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    concurrency_key: Option<String>,
}

/// The most jobs a batch may carry (the daemon's limit for one transaction).
const MAX_BATCH_JOBS: usize = 10_000;

/// The jobs of a `--batch` file, each line checked before anything is sent.
fn read_batch(source: &str) -> Result<Vec<pb::SubmitJobRequest>, CliError> {
    let text = if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|err| CliError::Other(format!("cannot read the batch from stdin: {err}")))?;
        text
    } else {
        std::fs::read_to_string(source)
            .map_err(|err| CliError::Usage(format!("cannot read the batch file {source}: {err}")))?
    };
    let mut jobs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let job: BatchLine = serde_json::from_str(line)
            .map_err(|err| CliError::Usage(format!("{source}, line {}: {err}", number + 1)))?;
        jobs.push(pb::SubmitJobRequest {
            command: job.command,
            payload: job
                .payload
                .map(|payload| payload.to_string().into_bytes())
                .unwrap_or_default(),
            priority: job.priority,
            max_retries: job.max_retries,
            concurrency_key: job.concurrency_key,
            ..Default::default()
        });
        if jobs.len() > MAX_BATCH_JOBS {
            return Err(CliError::Usage(format!(
                "{source}: more than {MAX_BATCH_JOBS} jobs; a batch is one transaction, so split the file"
            )));
        }
    }
    if jobs.is_empty() {
        return Err(CliError::Usage(format!("{source}: no job in the batch")));
    }
    Ok(jobs)
}

/// How to queue a job, and whether to wait for it.
#[derive(Args, Debug, Clone, Copy)]
struct JobArgs {
    /// Higher runs first: 0 normal, 1-10 user-initiated, 100+ urgent
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    /// Retries after retriable failures [default: the plugin's]
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
    /// Wait for the job to finish and print its result
    #[arg(long)]
    wait: bool,
}

impl JobArgs {
    fn options(self) -> pb::JobOptions {
        pb::JobOptions {
            priority: self.priority,
            max_retries: self.max_retries,
        }
    }
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Only jobs in this state
    #[arg(long, value_enum)]
    status: Option<StatusArg>,
    /// Only jobs of this command
    #[arg(long, value_name = "PLUGIN.COMMAND")]
    command: Option<String>,
    /// At most this many jobs (1 to 1000)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Continue a previous listing
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum StatusArg {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl From<StatusArg> for pb::JobStatus {
    fn from(status: StatusArg) -> Self {
        match status {
            StatusArg::Pending => pb::JobStatus::Pending,
            StatusArg::Running => pb::JobStatus::Running,
            StatusArg::Completed => pb::JobStatus::Completed,
            StatusArg::Failed => pb::JobStatus::Failed,
            StatusArg::Cancelled => pb::JobStatus::Cancelled,
        }
    }
}

#[derive(Subcommand, Debug)]
enum ScheduleCommand {
    /// Create a named cron schedule that submits COMMAND
    Add {
        /// A unique name
        name: String,
        /// Cron expression: 5 fields, or 6 with seconds first
        #[arg(long, value_name = "EXPR")]
        cron: String,
        /// IANA time zone [default: UTC]
        #[arg(long, value_name = "ZONE")]
        tz: Option<String>,
        /// PLUGIN.COMMAND
        command: String,
        /// JSON payload: inline, @FILE, or - for stdin [default: {}]
        #[arg(long, value_name = "JSON|@FILE|-")]
        payload: Option<String>,
        /// Priority of the submitted jobs
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// Retries of the submitted jobs [default: the plugin's]
        #[arg(long, value_name = "N")]
        max_retries: Option<u32>,
        /// Instants missed while the daemon was down: skip them, or run once for all
        #[arg(long, value_enum, default_value_t = MisfireArg::Skip)]
        misfire: MisfireArg,
    },
    /// Remove a schedule
    Rm {
        /// Its name or id
        schedule: String,
    },
    /// Pause a schedule: it stays stored and fires on no daemon until resumed
    Pause {
        /// Its name or id
        schedule: String,
    },
    /// Resume a paused schedule from its next instant (the ones missed meanwhile are not
    /// made up)
    Resume {
        /// Its name or id
        schedule: String,
    },
    /// List schedules
    Ls,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum MisfireArg {
    Skip,
    #[value(name = "run_once")]
    RunOnce,
}

/// Why a command did not succeed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// Bad input caught before or by the daemon.
    #[error("{0}")]
    Usage(String),
    /// Nothing answers on the socket.
    #[error("{0}: start it with `honeydewd` or `honeydew daemon`")]
    Unreachable(String),
    /// The daemon answered with an error.
    #[error("{}", .0.message())]
    Rpc(Status),
    /// The job ended failed or cancelled (already reported).
    #[error("the job did not complete")]
    JobDidNotComplete,
    /// Anything else, such as an unreadable payload file.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
            CliError::Rpc(status) => match status.code() {
                Code::InvalidArgument | Code::OutOfRange => 2,
                Code::Unavailable => 3,
                _ => 1,
            },
            CliError::JobDidNotComplete | CliError::Other(_) => 1,
        }
    }
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        CliError::Rpc(status)
    }
}

/// The whole `honeydew` program.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)
        .map_err(|err| err.format(&mut Cli::command()))
        .unwrap_or_else(|err| err.exit());
    let command = match cli.command {
        Command::Daemon(args) => {
            let data_dir = data_dir_flag(&matches, &cli.data_dir);
            return daemon::run(daemon::command_line(data_dir, args));
        }
        Command::Client(command) => command,
    };
    let data_dir = match cli.data_dir.resolve() {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("honeydew: {err}");
            return ExitCode::from(2);
        }
    };
    let token = match tcp_token(cli.tcp.is_some(), cli.token.as_deref(), &data_dir) {
        Ok(token) => token,
        Err(err) => {
            eprintln!("honeydew: {err}");
            return ExitCode::from(2);
        }
    };
    let address = match (&cli.tcp, &cli.socket) {
        (Some(tcp), _) => Address::Tcp(tcp.clone()),
        (None, Some(socket)) => Address::Unix(socket.clone()),
        (None, None) => Address::Unix(data_dir.join(SOCKET_FILE_NAME)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("honeydew: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command, address, token, cli.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::JobDidNotComplete) => ExitCode::from(1),
        Err(err) => {
            eprintln!("honeydew: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// `--data-dir` as given on this command line, to pass on to `honeydewd`. A value from
/// `HONEYDEW_DATA_DIR` is not passed: honeydewd inherits the variable, and a
/// `--data-dir` among honeydewd's own arguments must still win over it.
fn data_dir_flag<'a>(
    matches: &ArgMatches,
    data_dir: &'a DataDirArg,
) -> Option<&'a std::path::Path> {
    match matches.value_source(DataDirArg::ID) {
        Some(ValueSource::CommandLine) => data_dir.data_dir.as_deref(),
        _ => None,
    }
}

/// The token to send over TCP: the one given, else the data directory's; none over
/// the Unix socket. A missing one is left for the daemon to refuse, with its message.
fn tcp_token(
    over_tcp: bool,
    given: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<Option<Token>, TokenError> {
    if !over_tcp {
        return Ok(None);
    }
    match given {
        Some(text) => Token::parse(text).map(Some),
        None => Token::read(data_dir),
    }
}

/// A `Queue` client that accepts results as large as the daemon may send.
fn queue(channel: &Connection) -> QueueClient<Connection> {
    QueueClient::new(channel.clone()).max_decoding_message_size(CLIENT_MAX_RESPONSE_BYTES)
}

async fn run(
    command: ClientCommand,
    address: Address,
    token: Option<Token>,
    json: bool,
) -> Result<(), CliError> {
    let channel = honeydew_proto::connect_with_token(&address, token.as_ref())
        .await
        .map_err(|err| CliError::Unreachable(err.to_string()))?;
    let channel = &channel;
    match command {
        ClientCommand::Submit(args) => {
            if let Some(batch) = &args.batch {
                let jobs = read_batch(batch)?;
                let request = pb::SubmitJobsRequest { jobs };
                let ids = queue(channel)
                    .submit_jobs(request)
                    .await?
                    .into_inner()
                    .job_ids;
                if json {
                    output::print_json(&serde_json::json!({"job_ids": ids}));
                } else {
                    for id in ids {
                        println!("{id}");
                    }
                }
                return Ok(());
            }
            let payload = read_payload(args.payload.as_deref())?;
            let request = pb::SubmitJobRequest {
                command: args.command.unwrap_or_default(),
                payload,
                priority: args.job.priority,
                max_retries: args.job.max_retries,
                unique_key: args.unique_key,
                unique_for_ms: args
                    .unique_for
                    .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
                unique_states: args
                    .unique_states
                    .into_iter()
                    .map(|status| pb::JobStatus::from(status).into())
                    .collect(),
                on_conflict: pb::OnConflict::from(args.on_conflict).into(),
                after: args.after,
                concurrency_key: args.concurrency_key,
            };
            let submitted = queue(channel).submit_job(request).await?.into_inner();
            finish_submit(channel, submitted, args.job.wait, json).await
        }
        ClientCommand::Status { id } => {
            let request = pb::GetJobStatusRequest { job_id: id };
            let response = queue(channel).get_job_status(request).await?.into_inner();
            let job = response.job.unwrap_or_default();
            if json {
                output::print_json(&output::job_json(&job));
            } else {
                output::print_job(&job);
            }
            Ok(())
        }
        ClientCommand::Wait { id } => wait_and_print(channel, id, json).await,
        ClientCommand::Logs {
            id,
            follow,
            attempt,
        } => logs::logs(&mut queue(channel), id, attempt, follow, json).await,
        ClientCommand::List(args) => list(channel, args, json).await,
        ClientCommand::Explain { id } => {
            let request = pb::ExplainJobRequest { job_id: id };
            let explained = queue(channel).explain_job(request).await?.into_inner();
            output::print_explanation(&explained, json);
            Ok(())
        }
        ClientCommand::Cancel { id: None, bulk } => {
            let count = queue(channel)
                .cancel_jobs(bulk.request())
                .await?
                .into_inner()
                .count;
            if json {
                output::print_json(&serde_json::json!({"cancelled": count}));
            } else {
                println!("cancelled {count} pending jobs");
            }
            Ok(())
        }
        ClientCommand::Retry { id: None, bulk } => {
            let count = queue(channel)
                .retry_jobs(bulk.request())
                .await?
                .into_inner()
                .count;
            if json {
                output::print_json(&serde_json::json!({"retried": count}));
            } else {
                println!("retried {count} jobs");
            }
            Ok(())
        }
        ClientCommand::Retry { id: Some(id), .. } => {
            let request = pb::RetryJobRequest { job_id: id.clone() };
            queue(channel).retry_job(request).await?;
            if json {
                output::print_json(&serde_json::json!({"job_id": id, "outcome": "pending"}));
            } else {
                println!("job {id} is pending again, with a fresh retry budget");
            }
            Ok(())
        }
        ClientCommand::Cancel { id: Some(id), .. } => {
            let request = pb::CancelJobRequest { job_id: id.clone() };
            let response = queue(channel).cancel_job(request).await?.into_inner();
            let outcome = response.outcome();
            if json {
                let outcome = match outcome {
                    pb::CancelOutcome::Cancelling => "cancelling",
                    _ => "cancelled",
                };
                output::print_json(&serde_json::json!({"job_id": id, "outcome": outcome}));
            } else if outcome == pb::CancelOutcome::Cancelling {
                println!(
                    "cancelling job {id}: it is running; `honeydew wait {id}` shows when it stops"
                );
            } else {
                println!("cancelled job {id}");
            }
            Ok(())
        }
        ClientCommand::Prune { older_than } => {
            let request = pb::PruneJobsRequest {
                older_than_seconds: older_than.map(|age| age.as_secs()),
            };
            let deleted = queue(channel)
                .prune_jobs(request)
                .await?
                .into_inner()
                .deleted;
            if json {
                output::print_json(&serde_json::json!({ "deleted": deleted }));
            } else {
                println!("deleted {deleted} finished jobs");
            }
            Ok(())
        }
        ClientCommand::Pause { target: None } => {
            let pauses = queue(channel)
                .list_pauses(pb::ListPausesRequest {})
                .await?
                .into_inner()
                .pauses;
            output::print_pauses(&pauses, json);
            Ok(())
        }
        ClientCommand::Pause {
            target: Some(target),
        } => {
            let request = pb::PauseRequest {
                target: target.clone(),
            };
            let changed = queue(channel).pause(request).await?.into_inner().changed;
            if json {
                output::print_json(
                    &serde_json::json!({"target": target, "paused": true, "changed": changed}),
                );
            } else if changed {
                println!("paused {target}: its pending jobs wait until `honeydew resume {target}`");
            } else {
                println!("{target} was already paused");
            }
            Ok(())
        }
        ClientCommand::Resume { target } => {
            let request = pb::ResumeRequest {
                target: target.clone(),
            };
            let changed = queue(channel).resume(request).await?.into_inner().changed;
            if json {
                output::print_json(
                    &serde_json::json!({"target": target, "paused": false, "changed": changed}),
                );
            } else if changed {
                println!("resumed {target}");
            } else {
                println!("{target} was not paused");
            }
            Ok(())
        }
        ClientCommand::Schedule(command) => schedule(channel, command, json).await,
        ClientCommand::Plugins => {
            let listed = PluginsClient::new(channel.clone())
                .list_plugins(pb::ListPluginsRequest {})
                .await?
                .into_inner();
            output::print_plugins(&listed.plugins, &listed.skipped, json);
            Ok(())
        }
        ClientCommand::Limits => {
            let listed = PluginsClient::new(channel.clone())
                .list_limits(pb::ListLimitsRequest {})
                .await?
                .into_inner();
            output::print_limits(&listed, json);
            Ok(())
        }
        ClientCommand::GitHub(command) => {
            let (submitted, job) = proxies::github(channel, command).await?;
            finish_submit(channel, submitted, job.wait, json).await
        }
        ClientCommand::GitLab(command) => {
            let (submitted, job) = proxies::gitlab(channel, command).await?;
            finish_submit(channel, submitted, job.wait, json).await
        }
        ClientCommand::Jira(command) => {
            let (submitted, job) = proxies::jira(channel, command).await?;
            finish_submit(channel, submitted, job.wait, json).await
        }
        ClientCommand::Linear(command) => {
            let (submitted, job) = proxies::linear(channel, command).await?;
            finish_submit(channel, submitted, job.wait, json).await
        }
        ClientCommand::Bitbucket(command) => {
            let (submitted, job) = proxies::bitbucket(channel, command).await?;
            finish_submit(channel, submitted, job.wait, json).await
        }
    }
}

/// After a submit: print the id, or wait and print the result.
async fn finish_submit(
    channel: &Connection,
    submitted: pb::SubmitJobResponse,
    wait: bool,
    json: bool,
) -> Result<(), CliError> {
    if wait {
        return wait_and_print(channel, submitted.job_id, json).await;
    }
    let outcome = match submitted.outcome() {
        pb::SubmitOutcome::Existing => "existing",
        pb::SubmitOutcome::Replaced => "replaced",
        pb::SubmitOutcome::Created | pb::SubmitOutcome::Unspecified => "created",
    };
    if json {
        output::print_json(&serde_json::json!({"job_id": submitted.job_id, "outcome": outcome}));
    } else {
        println!("{}", submitted.job_id);
        match outcome {
            "existing" => eprintln!("an earlier job holds the unique key: that is its id"),
            "replaced" => eprintln!("the pending job holding the unique key took this payload"),
            _ => {}
        }
    }
    Ok(())
}

async fn wait_and_print(channel: &Connection, id: String, json: bool) -> Result<(), CliError> {
    let job = wait::wait(&mut queue(channel), id).await?;
    if json {
        output::print_json(&output::job_json(&job));
    }
    match job.status() {
        pb::JobStatus::Completed => {
            if !json {
                output::print_result(job.result.as_deref().unwrap_or_default());
            }
            Ok(())
        }
        status => {
            if !json {
                eprintln!("{}", output::job_ending(&job, status));
            }
            Err(CliError::JobDidNotComplete)
        }
    }
}

async fn list(channel: &Connection, args: ListArgs, json: bool) -> Result<(), CliError> {
    let request = pb::ListJobsRequest {
        status: args
            .status
            .map_or(pb::JobStatus::Unspecified, Into::into)
            .into(),
        command: args.command.unwrap_or_default(),
        limit: args.limit,
        page_token: args.page_token.unwrap_or_default(),
        view: if json {
            pb::JobView::Full
        } else {
            pb::JobView::Summary
        }
        .into(),
    };
    let page = queue(channel).list_jobs(request).await?.into_inner();
    if json {
        let jobs: Vec<_> = page.jobs.iter().map(output::job_json).collect();
        output::print_json(&serde_json::json!({
            "jobs": jobs,
            "next_page_token": Some(&page.next_page_token).filter(|token| !token.is_empty()),
        }));
    } else {
        output::print_job_table(&page.jobs);
        if !page.next_page_token.is_empty() {
            eprintln!("more: honeydew list --page-token {}", page.next_page_token);
        }
    }
    Ok(())
}

async fn schedule(
    channel: &Connection,
    command: ScheduleCommand,
    json: bool,
) -> Result<(), CliError> {
    let mut client = SchedulesClient::new(channel.clone());
    match command {
        ScheduleCommand::Add {
            name,
            cron,
            tz,
            command,
            payload,
            priority,
            max_retries,
            misfire,
        } => {
            let request = pb::ScheduleJobRequest {
                name,
                cron_expr: cron,
                timezone: tz,
                command,
                payload: read_payload(payload.as_deref())?,
                priority,
                max_retries,
                misfire: match misfire {
                    MisfireArg::Skip => pb::MisfirePolicy::Skip,
                    MisfireArg::RunOnce => pb::MisfirePolicy::RunOnce,
                }
                .into(),
            };
            let schedule = client
                .schedule_job(request)
                .await?
                .into_inner()
                .schedule
                .unwrap_or_default();
            if json {
                output::print_json(&output::schedule_json(&schedule));
            } else {
                output::print_schedule_table(&[schedule]);
            }
        }
        ScheduleCommand::Rm { schedule } => {
            let removed = client
                .unschedule_job(pb::UnscheduleJobRequest { schedule })
                .await?
                .into_inner()
                .schedule
                .unwrap_or_default();
            if json {
                output::print_json(&output::schedule_json(&removed));
            } else {
                println!("removed schedule {} ({})", removed.name, removed.id);
            }
        }
        ScheduleCommand::Pause { schedule } => {
            let paused = client
                .pause_schedule(pb::PauseScheduleRequest { schedule })
                .await?
                .into_inner()
                .schedule
                .unwrap_or_default();
            if json {
                output::print_json(&output::schedule_json(&paused));
            } else {
                println!("paused schedule {} ({})", paused.name, paused.id);
            }
        }
        ScheduleCommand::Resume { schedule } => {
            let resumed = client
                .resume_schedule(pb::ResumeScheduleRequest { schedule })
                .await?
                .into_inner()
                .schedule
                .unwrap_or_default();
            if json {
                output::print_json(&output::schedule_json(&resumed));
            } else {
                output::print_schedule_table(&[resumed]);
            }
        }
        ScheduleCommand::Ls => {
            let schedules = client
                .list_schedules(pb::ListSchedulesRequest {})
                .await?
                .into_inner()
                .schedules;
            if json {
                let schedules = schedules.iter().map(output::schedule_json).collect();
                output::print_json(&serde_json::Value::Array(schedules));
            } else {
                output::print_schedule_table(&schedules);
            }
        }
    }
    Ok(())
}

/// `--payload`: inline JSON, `@FILE`, or `-` for stdin; nothing means `{}`.
fn read_payload(argument: Option<&str>) -> Result<Vec<u8>, CliError> {
    match argument {
        None => Ok(Vec::new()),
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).map_err(|err| {
                CliError::Other(format!("cannot read the payload from stdin: {err}"))
            })?;
            Ok(bytes)
        }
        Some(text) => match text.strip_prefix('@') {
            Some(path) => std::fs::read(path).map_err(|err| {
                CliError::Usage(format!("cannot read the payload file {path}: {err}"))
            }),
            None => Ok(text.as_bytes().to_vec()),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let check = |err: CliError, code: u8| assert_eq!(err.exit_code(), code, "{err:?}");
        check(CliError::Usage("x".into()), 2);
        check(CliError::Unreachable("x".into()), 3);
        check(CliError::Rpc(Status::invalid_argument("x")), 2);
        check(CliError::Rpc(Status::unavailable("x")), 3);
        check(CliError::Rpc(Status::not_found("x")), 1);
        check(CliError::Rpc(Status::failed_precondition("x")), 1);
        check(CliError::Rpc(Status::unimplemented("x")), 1);
        check(CliError::JobDidNotComplete, 1);
    }

    #[test]
    fn payload_argument_forms() {
        assert_eq!(read_payload(None).unwrap(), b"");
        assert_eq!(read_payload(Some("{\"a\":1}")).unwrap(), b"{\"a\":1}");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b"[1]").unwrap();
        let argument = format!("@{}", file.path().display());
        assert_eq!(read_payload(Some(&argument)).unwrap(), b"[1]");
        let err = read_payload(Some("@/nonexistent/payload.json")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn unreachable_names_the_fix() {
        let err = CliError::Unreachable(
            "cannot reach the daemon at /x/honeydew.sock: no such file".into(),
        );
        assert!(
            err.to_string()
                .ends_with("start it with `honeydewd` or `honeydew daemon`")
        );
    }

    /// What `honeydewd` is given for each way of writing `honeydew daemon`.
    #[test]
    fn honeydew_daemon_passes_its_arguments_and_the_data_dir_flag_to_honeydewd() {
        let check = |argv: &[&str], expected: &[&str]| {
            let matches = Cli::command().try_get_matches_from(argv).unwrap();
            let cli = Cli::from_arg_matches(&matches).unwrap();
            let Command::Daemon(args) = cli.command else {
                panic!("{argv:?} is not `honeydew daemon`");
            };
            let given = daemon::command_line(data_dir_flag(&matches, &cli.data_dir), args);
            let expected: Vec<OsString> = expected.iter().map(OsString::from).collect();
            assert_eq!(given, expected, "{argv:?}");
        };
        check(&["honeydew", "daemon"], &[]);
        check(
            &["honeydew", "--data-dir", "/d", "daemon", "--workers", "2"],
            &["--data-dir", "/d", "--workers", "2"],
        );
        check(
            &["honeydew", "daemon", "--data-dir", "/d", "--workers", "2"],
            &["--data-dir", "/d", "--workers", "2"],
        );
        // Once honeydewd's arguments begin, every one is honeydewd's.
        check(
            &[
                "honeydew",
                "daemon",
                "--workers",
                "2",
                "--data-dir",
                "/d",
                "--help",
            ],
            &["--workers", "2", "--data-dir", "/d", "--help"],
        );
        check(
            &["honeydew", "daemon", "--listen-tcp", "127.0.0.1:7070", "-x"],
            &["--listen-tcp", "127.0.0.1:7070", "-x"],
        );
    }

    #[test]
    fn honeydew_daemon_help_points_at_honeydewd_help() {
        let mut command = Cli::command();
        let daemon = command.find_subcommand_mut("daemon").unwrap();
        let help = daemon.render_long_help().to_string();
        assert!(help.contains("`honeydewd --help`"), "{help}");
    }
}
