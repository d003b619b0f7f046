//! `portcullis`: the one binary of the Portcullis LLM gateway.

mod admin_cli;
mod bench;
mod bench_policies;
mod builtin;
mod console;
mod demo;
mod examples;
mod hub_cli;
mod net_args;
mod output;
mod policy_cli;
mod up;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Portcullis: an open-source LLM gateway"
)]
struct Cli {
    /// Log format: `text` or `json`.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on one machine. With --demo, also a mock LLM and a demo proxy.
    Up {
        /// Start the mock LLM and serve demo proxies with a generated key.
        #[arg(long)]
        demo: bool,
        /// Gateway traffic port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Gateway operations port (/metrics, /healthz, /readyz).
        #[arg(long, default_value_t = 8081)]
        ops_port: u16,
        /// Mock LLM port (with --demo).
        #[arg(long, default_value_t = 8099)]
        mock_port: u16,
        /// Admin API port.
        #[arg(long, default_value_t = 8090)]
        admin_port: u16,
        /// Use this policy hub instead of starting one.
        #[arg(long, env = "PORTCULLIS_HUB_URL")]
        hub_url: Option<String>,
        /// Port of the policy hub `up` starts (when no --hub-url is given).
        #[arg(long, default_value_t = 8091)]
        hub_port: u16,
        /// Where state is kept.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// How admin and the hub are served (HTTPS, limits, deadlines).
        /// With TLS, `up`'s own gateway and demo set-up reach them at
        /// https://localhost:PORT: the certificate must name `localhost`
        /// (trusted through --ca-file for a private CA).
        #[command(flatten)]
        serve: net_args::ServeArgs,
        #[command(flatten)]
        trust: net_args::TrustArgs,
    },
    /// Run a gateway from a declarative configuration file.
    Gateway {
        /// The configuration file (YAML).
        #[arg(
            long,
            env = "PORTCULLIS_GATEWAY_CONFIG",
            required_unless_present = "admin",
            conflicts_with = "admin"
        )]
        config: Option<PathBuf>,
        /// Check the file and exit without starting.
        #[arg(long)]
        validate: bool,
        /// Worker threads (default: number of CPUs).
        #[arg(long, env = "PORTCULLIS_GATEWAY_THREADS")]
        threads: Option<usize>,
        /// Managed mode: the admin service to take the configuration from;
        /// several comma-separated URLs for admin replicas (the next is
        /// used when one stops answering).
        #[arg(long, env = "PORTCULLIS_ADMIN_URL")]
        admin: Option<String>,
        /// Managed mode: the gateway token admin gave at registration.
        #[arg(
            long,
            env = "PORTCULLIS_GATEWAY_TOKEN",
            hide_env_values = true,
            requires = "admin"
        )]
        token: Option<String>,
        /// Managed mode: traffic listener.
        #[arg(
            long,
            env = "PORTCULLIS_GATEWAY_LISTEN",
            default_value = "0.0.0.0:8080"
        )]
        listen: String,
        /// Managed mode: operations listener (/metrics, /healthz, /readyz).
        #[arg(
            long,
            env = "PORTCULLIS_GATEWAY_OPS_LISTEN",
            default_value = "127.0.0.1:8081"
        )]
        ops_listen: String,
        /// Managed mode: the HTTPS listener's address, over the one in
        /// admin's settings for this gateway (whose certificates it serves).
        #[arg(long, env = "PORTCULLIS_GATEWAY_TLS_LISTEN")]
        tls_listen: Option<String>,
        /// Managed mode: where the last good configuration is kept.
        #[arg(
            long,
            env = "PORTCULLIS_GATEWAY_DATA_DIR",
            default_value = "./data/gateway"
        )]
        data_dir: PathBuf,
        /// Hosts the gateway may send requests to: `host`, `host:port` or
        /// `*.domain`, repeatable or comma-separated. Replaces the file's
        /// (or admin's) `egress_allow`.
        #[arg(long, env = "PORTCULLIS_EGRESS_ALLOW", value_delimiter = ',')]
        egress_allow: Vec<String>,
        /// Seconds `/readyz` reports "shutting down" before the listeners
        /// close on SIGTERM, so load balancers stop sending first.
        #[arg(long, env = "PORTCULLIS_GATEWAY_DRAIN_SECONDS", default_value_t = 5)]
        drain_seconds: u64,
        /// Seconds requests in flight (streams included) may take to finish
        /// once the listeners are closed, on SIGTERM or after an upgrade.
        #[arg(
            long,
            env = "PORTCULLIS_GATEWAY_SHUTDOWN_GRACE_SECONDS",
            default_value_t = 30
        )]
        shutdown_grace_seconds: u64,
        /// Start as the new process of a graceful upgrade: take the
        /// listening sockets from the running gateway, which hands them over
        /// when it gets SIGQUIT (send it within 5 s of starting this one).
        #[arg(long, env = "PORTCULLIS_GATEWAY_UPGRADE")]
        upgrade: bool,
        /// The Unix socket the listening sockets are handed over through
        /// (the old and the new process must name the same).
        #[arg(
            long,
            env = "PORTCULLIS_GATEWAY_UPGRADE_SOCK",
            default_value = portcullis_gateway::run::DEFAULT_UPGRADE_SOCK
        )]
        upgrade_sock: String,
        /// Managed mode: how admin (and the hub it names) is trusted.
        #[command(flatten)]
        trust: net_args::TrustArgs,
    },
    /// Run the admin service, or call it (`portcullis admin proxies list`).
    Admin(admin_cli::AdminArgs),
    /// Print a shell completion script: `bash`, `zsh` or `fish`.
    Completions { shell: clap_complete::Shell },
    /// Exit 0 when URL answers 2xx within 3 s, else 1: the container health
    /// check (`portcullis probe http://127.0.0.1:8081/readyz`), without curl
    /// in the image.
    Probe {
        url: String,
        #[command(flatten)]
        trust: net_args::TrustArgs,
    },
    /// Run the mock LLM provider (OpenAI, Azure, Anthropic, Gemini, Bedrock, Mistral formats).
    MockLlm {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 8099)]
        port: u16,
    },
    /// Load-test a chat completions endpoint (closed loop, fixed concurrency).
    Bench {
        /// Full URL of the chat completions endpoint.
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "bench-key")]
        key: String,
        #[arg(long, default_value = "gpt-5-mini")]
        model: String,
        #[arg(long)]
        stream: bool,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Warm-up seconds (not measured).
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Approximate request body size in bytes.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        /// Open loop: send this many requests per second in total, spread
        /// over the `concurrency` connections, whatever the answers' pace
        /// (0: closed loop, each connection sends as soon as it is answered).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Make every request different (its prompt carries a number), so
        /// a cache policy misses.
        #[arg(long)]
        unique: bool,
    },
    /// Benchmark the policy chain (none, each built-in alone, all four) on the built
    /// policy components; prints the table of docs/benchmarks.md.
    BenchPolicies {
        /// Where `cargo build-policies` put the components.
        #[arg(long, default_value = "target/wasm32-wasip2/release")]
        wasm_dir: std::path::PathBuf,
        /// The source tree holding the policies' manifests.
        #[arg(long, default_value = ".")]
        root: std::path::PathBuf,
        /// Give every request new instances (`reuse_instances: false`).
        #[arg(long)]
        fresh: bool,
        #[arg(long, default_value_t = 1000)]
        warmup: usize,
        #[arg(long, default_value_t = 10000)]
        iterations: usize,
        /// Requests in flight: each holds its own instances between its
        /// request phase and its response phase, as concurrent requests do.
        #[arg(long, default_value_t = 1)]
        in_flight: usize,
        /// KiB of other memory written before each half of a request, to
        /// run the policies with cold CPU caches as the gateway does
        /// between two phases (0: warm caches).
        #[arg(long, default_value_t = 0)]
        evict_kb: usize,
    },
    /// Run the policy hub: publish, discover and serve policies.
    Hub(hub_cli::HubArgs),
    /// The policy author's workflow.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Proxy API keys: generate one, or print the hash a config file stores.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Scaffold a policy crate.
    New(policy_cli::NewArgs),
    /// Build a policy crate to a wasm32-wasip2 component and its artifact.
    Build(policy_cli::DirArgs),
    /// Run a policy's unit tests with the local test host.
    Test(policy_cli::DirArgs),
    /// Publish a built policy (`manifest.json` + `policy.wasm`) to a hub.
    Publish(hub_cli::PublishArgs),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Generate a new random key and print it with its SHA-256.
    Generate,
    /// Print the SHA-256 of a key (for `keys[].sha256` in a gateway config).
    Hash { key: String },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora=warn,pingora_core=warn,pingora_proxy=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// mimalloc instead of glibc malloc: per-thread heaps without arena lock
/// contention on the request path (measured: docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the memory freed since a configuration compiled policy modules
/// to the OS. mimalloc keeps a thread's freed pages until that thread
/// allocates again, and the compiler's threads (rayon's pool, used by
/// wasmtime) then sit idle: without this a gateway keeps ~70 MB of
/// compiler scratch resident (docs/benchmarks.md, loading).
#[allow(unsafe_code)]
fn release_compiler_memory() {
    // SAFETY: mi_collect has no preconditions: it frees and purges the
    // calling thread's unused pages of mimalloc, our global allocator.
    rayon::broadcast(|_| unsafe { libmimalloc_sys::mi_collect(true) });
    // SAFETY: as above.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

fn main() -> anyhow::Result<()> {
    // Parsed from the command with its examples, so `--help` shows them.
    let matches = examples::with_examples(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(&cli.log_format);
    portcullis_gateway::policy::after_compile(release_compiler_memory);
    // Every TLS client in the process (reqwest's included) runs on ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Gateway {
            config,
            validate,
            threads,
            admin,
            token,
            listen,
            ops_listen,
            tls_listen,
            data_dir,
            egress_allow,
            drain_seconds,
            shutdown_grace_seconds,
            upgrade,
            upgrade_sock,
            trust,
        } => {
            let mut opts = portcullis_gateway::run::RunOptions::default();
            if let Some(t) = threads {
                opts.threads = t;
            }
            opts.drain = std::time::Duration::from_secs(drain_seconds);
            opts.shutdown_grace = std::time::Duration::from_secs(shutdown_grace_seconds);
            opts.upgrade = upgrade;
            opts.upgrade_sock = upgrade_sock;
            let Some(config) = config else {
                let (Some(admin_url), Some(token)) = (admin, token) else {
                    anyhow::bail!("managed mode needs --admin URL and --token T");
                };
                return portcullis_gateway::managed::run(
                    portcullis_gateway::managed::ManagedOptions {
                        admin_url,
                        token,
                        data_dir,
                        listen,
                        ops_listen,
                        tls_listen,
                        run: opts,
                        poll_wait: 25,
                        heartbeat_every: std::time::Duration::from_secs(5),
                        egress_allow,
                        tls: trust.tls(),
                    },
                );
            };
            let egress = (!egress_allow.is_empty()).then_some(egress_allow.as_slice());
            let runtime = match portcullis_gateway::runtime::load_file_with_egress(&config, egress)
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("{}: invalid configuration: {e}", config.display());
                    std::process::exit(2);
                }
            };
            if validate {
                let routes: usize = runtime.proxies.values().map(|p| p.routes.len()).sum();
                println!(
                    "{}: ok ({} proxies, {} routes)",
                    config.display(),
                    runtime.proxies.len(),
                    routes
                );
                return Ok(());
            }
            portcullis_gateway::run::run_file(
                runtime,
                opts,
                config,
                (!egress_allow.is_empty()).then_some(egress_allow),
            )
        }
        Command::Completions { shell } => {
            use std::io::Write;
            let mut cmd = examples::with_examples(Cli::command());
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "portcullis", &mut script);
            // A reader that stops early (`| head`) is not an error.
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r.map_err(Into::into),
            }
        }
        Command::Probe { url, trust } => {
            let client = portcullis_net::client_builder(trust.ca_file.as_deref())?
                .timeout(std::time::Duration::from_secs(3))
                .build()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let status = rt.block_on(async { client.get(&url).send().await.map(|r| r.status()) });
            match status {
                Ok(s) if s.is_success() => Ok(()),
                Ok(s) => anyhow::bail!("{url}: {s}"),
                Err(e) => anyhow::bail!("{url}: {e}"),
            }
        }
        Command::MockLlm { host, port } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
                eprintln!("mock LLM listening on http://{}", listener.local_addr()?);
                portcullis_mock_llm::serve(listener).await
            })
        }
        Command::Up {
            demo,
            port,
            ops_port,
            mock_port,
            admin_port,
            hub_url,
            hub_port,
            data_dir,
            serve,
            trust,
        } => demo::up(demo::UpOptions {
            serve,
            trust,
            hub_port,
            demo,
            port,
            ops_port,
            mock_port,
            admin_port,
            hub_url,
            data_dir,
        }),
        Command::Bench {
            url,
            key,
            model,
            stream,
            concurrency,
            seconds,
            warmup,
            body_bytes,
            rate,
            unique,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(bench::run(bench::BenchOptions {
                url,
                key,
                model,
                stream,
                concurrency,
                duration: std::time::Duration::from_secs(seconds),
                warmup: std::time::Duration::from_secs(warmup),
                body_bytes,
                rate,
                unique,
            }))
        }
        Command::BenchPolicies {
            wasm_dir,
            root,
            fresh,
            warmup,
            iterations,
            in_flight,
            evict_kb,
        } => bench_policies::run(bench_policies::Options {
            root,
            wasm_dir,
            fresh,
            warmup,
            iterations: iterations.max(1),
            in_flight,
            evict_kb,
        }),
        Command::Hub(args) => hub_cli::run_hub(args),
        Command::Admin(args) => admin_cli::run(args),
        Command::Policy { command } => match command {
            PolicyCommand::Publish(args) => hub_cli::run_publish(args),
            PolicyCommand::New(args) => policy_cli::new(args),
            PolicyCommand::Build(args) => policy_cli::build(args),
            PolicyCommand::Test(args) => policy_cli::test(args),
        },
        Command::Key { command } => {
            match command {
                KeyCommand::Generate => {
                    let key = demo::generate_key();
                    println!("key:    {key}");
                    println!("sha256: {}", hex_sha256(&key));
                }
                KeyCommand::Hash { key } => println!("{}", hex_sha256(&key)),
            }
            Ok(())
        }
    }
}

fn hex_sha256(key: &str) -> String {
    portcullis_gateway::config::hash_key(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The services' flags and the environment variables that set them:
    /// (command, flag, variable, help).
    fn service_flags() -> Vec<(String, String, String, String)> {
        let cli = Cli::command();
        let mut out = Vec::new();
        for name in ["gateway", "admin", "hub"] {
            let cmd = cli.find_subcommand(name).expect("a service command");
            let args = cli.get_arguments().chain(cmd.get_arguments());
            for arg in args {
                let id = arg.get_id().as_str();
                // `--validate` is an action, not configuration.
                if arg.is_positional() || matches!(id, "help" | "version" | "validate") {
                    continue;
                }
                let flag = arg.get_long().unwrap_or(id).to_owned();
                let env = arg
                    .get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                out.push((name.to_owned(), flag, env, help));
            }
        }
        out
    }

    /// 12-factor: every flag of a long-running service can be set from the
    /// environment, and docs/operations.md lists every variable.
    #[test]
    fn every_service_flag_has_an_environment_variable_in_the_docs() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
                .expect("docs/operations.md");
        let flags = service_flags();
        assert!(flags.len() > 20, "{flags:?}");
        for (command, flag, env, _) in &flags {
            assert!(
                env.starts_with("PORTCULLIS_"),
                "`portcullis {command} --{flag}` has no PORTCULLIS_ environment variable"
            );
            assert!(
                docs.contains(&format!("`{env}`")),
                "docs/operations.md does not list `{env}` (`portcullis {command} --{flag}`)"
            );
        }
    }
}
