//! `portcullis admin`: run the admin service, or (with a subcommand) call
//! its REST API, so everything an admin does is possible from a shell.
//! Each subcommand is one request; the answer is printed as an aligned
//! table (or JSON with `--output json`), and a problem (4xx/5xx) is
//! printed to stderr as its message and field, with exit code 1.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Options of `portcullis admin`.
#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: Option<AdminCommand>,
    /// Address to listen on (when serving).
    #[arg(long, default_value = "0.0.0.0:8090", env = "PORTCULLIS_ADMIN_LISTEN")]
    pub listen: String,
    /// Where state is kept: the SQLite file and the data key.
    #[arg(long, env = "PORTCULLIS_ADMIN_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...` (default: SQLite at DATA_DIR/admin.db).
    #[arg(long, env = "PORTCULLIS_ADMIN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The policy hub's base URL (for attaching policies).
    #[arg(long, env = "PORTCULLIS_HUB_URL")]
    pub hub_url: Option<String>,
    /// Provider (id) whose `/embeddings` endpoint policies on managed
    /// gateways use (the `embeddings` capability, e.g. semantic-guard).
    #[arg(long, env = portcullis_admin::POLICY_EMBEDDINGS_PROVIDER_ENV)]
    pub policy_embeddings_provider: Option<String>,
    /// The embedding model for that endpoint.
    #[arg(long, env = portcullis_admin::POLICY_EMBEDDINGS_MODEL_ENV)]
    pub policy_embeddings_model: Option<String>,
    /// The admin service to call (client subcommands).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8090",
        env = "PORTCULLIS_ADMIN_URL"
    )]
    pub url: String,
    /// API token (client subcommands).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// How answers are printed (client subcommands): `table` or `json`.
    #[arg(
        long,
        short = 'o',
        global = true,
        value_enum,
        default_value = "table",
        env = "PORTCULLIS_OUTPUT"
    )]
    pub output: crate::output::Format,
    /// How the admin service (client subcommands) and the hub (serving)
    /// are trusted.
    #[command(flatten)]
    pub trust: crate::net_args::TrustArgs,
    /// How the API is served (HTTPS, connection limit, deadlines).
    #[command(flatten)]
    pub serve: crate::net_args::ServeArgs,
}

/// Client subcommands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Serve the admin API (the default).
    Serve,
    /// LLM providers.
    Providers {
        #[command(subcommand)]
        command: Crud,
    },
    /// LLM proxies.
    Proxies {
        #[command(subcommand)]
        command: ProxyCommand,
    },
    /// API keys of a proxy.
    Keys {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Gateways.
    Gateways {
        #[command(subcommand)]
        command: Crud,
    },
    /// Deploy a proxy's current revision to a gateway, or an earlier one
    /// (`--revision`, a rollback).
    Deploy {
        proxy: String,
        #[arg(long)]
        gateway: String,
        /// The revision to deploy (see `proxies revisions`); default the current one.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// A gateway's settings (TLS, Redis, OTLP, timeouts, limits, provider
    /// CA bundles, policy engine limits), or a group's with `--group`:
    /// shown, or changed with a JSON merge patch (`--set`; `null` removes
    /// a field).
    Settings {
        /// The gateway id.
        #[arg(required_unless_present = "group", conflicts_with = "group")]
        gateway: Option<String>,
        /// A group of gateways instead.
        #[arg(long)]
        group: Option<String>,
        /// JSON merge patch to apply.
        #[arg(long)]
        set: Option<String>,
    },
    /// Stop a deployment.
    Undeploy { proxy: String, deployment: String },
    /// A proxy's deployment history.
    Deployments { proxy: String },
    /// Policies: the hub's catalogue and attachments to proxies.
    Policies {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// API tokens (admin).
    Tokens {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Applications: their keys and subscriptions to proxies.
    Applications {
        #[command(subcommand)]
        command: ApplicationCommand,
    },
    /// The plans of a proxy, which applications subscribe under.
    Plans {
        #[command(subcommand)]
        command: PlanCommand,
    },
    /// Approve, suspend, resume or close a subscription.
    Subscription {
        id: String,
        #[arg(value_parser = ["approve", "suspend", "resume", "close"])]
        action: String,
    },
    /// What requests spent (requests, tokens, cost), as managed gateways
    /// report it, grouped by proxy, key, model, day or gateway.
    Spend {
        /// Comma-separated: proxy, key, model, day, gateway.
        #[arg(long, default_value = "proxy")]
        group_by: String,
        /// First day, YYYY-MM-DD (default: 30 days before --to).
        #[arg(long)]
        from: Option<String>,
        /// Last day, included (default: today, UTC).
        #[arg(long)]
        to: Option<String>,
        /// Only this proxy.
        #[arg(long)]
        proxy: Option<String>,
        /// CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// The audit log, newest first.
    Audit {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Any request: `portcullis admin api GET /api/v1/proxies`.
    Api {
        method: String,
        path: String,
        /// JSON body.
        #[arg(long)]
        json: Option<String>,
    },
}

/// List, get, create (JSON), update (JSON), delete.
#[derive(Subcommand, Debug)]
pub enum Crud {
    List,
    Get {
        id: String,
    },
    /// Create from a JSON body, e.g. `--json '{"name":"openai","type":"openai","credentials":{"api_key":"sk-..."}}'`.
    Create {
        #[arg(long)]
        json: String,
    },
    /// Change fields given as JSON.
    Update {
        id: String,
        #[arg(long)]
        json: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProxyCommand {
    List,
    Get {
        id: String,
    },
    /// Create a proxy: flags for the common fields, `--json` for all of them.
    Create {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        context: Option<String>,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        json: Option<String>,
    },
    Update {
        id: String,
        #[arg(long)]
        json: String,
    },
    Delete {
        id: String,
    },
    Revisions {
        id: String,
    },
    /// Give a proxy (with its keys, attachments and deployments) to a team
    /// or a team-less token (admin).
    Owner {
        id: String,
        #[arg(
            long,
            conflicts_with = "token_id",
            required_unless_present = "token_id"
        )]
        team: Option<String>,
        /// An API token id (`tok_...`) without a team.
        #[arg(long)]
        token_id: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    List {
        proxy: String,
    },
    /// Create a key; it is printed once.
    Create {
        proxy: String,
        #[arg(long)]
        name: String,
        /// RFC 3339 time the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
        /// Models the key may call (`*` matches any run of characters);
        /// default every model of the proxy.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Client formats the key may use: openai, anthropic, gemini.
        #[arg(long, value_delimiter = ',')]
        inbound: Vec<String>,
        /// Resources the key may use: chat/completions, embeddings, models.
        #[arg(long, value_delimiter = ',')]
        resources: Vec<String>,
    },
    Revoke {
        proxy: String,
        key: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// What the hub offers.
    Catalogue,
    /// Policies attached to a proxy.
    List {
        proxy: String,
    },
    Attach {
        proxy: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// The module SHA-256 you expect (hex); refused unless the hub has it.
        #[arg(long)]
        sha256: Option<String>,
        /// Settings as JSON.
        #[arg(long)]
        settings: Option<String>,
        #[arg(long)]
        phase: Option<String>,
        #[arg(long)]
        order: Option<i64>,
        /// closed (default: the request fails) or open (the policy is skipped).
        #[arg(long)]
        on_error: Option<String>,
    },
    Update {
        proxy: String,
        attachment: String,
        #[arg(long)]
        json: String,
    },
    Detach {
        proxy: String,
        attachment: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApplicationCommand {
    List,
    Get {
        id: String,
    },
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    Delete {
        id: String,
    },
    /// The application's keys.
    Keys {
        id: String,
    },
    /// Create a key of the application; it is printed once.
    CreateKey {
        id: String,
        #[arg(long)]
        name: String,
        /// RFC 3339 time the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
    },
    RevokeKey {
        id: String,
        key: String,
    },
    /// Subscribe the application to a proxy under one of its plans.
    Subscribe {
        id: String,
        #[arg(long)]
        proxy: String,
        /// Plan id or name.
        #[arg(long)]
        plan: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    List {
        proxy: String,
    },
    Create {
        proxy: String,
        #[arg(long)]
        name: String,
        /// Model patterns subscribers may call; default every model.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Subscriptions wait for the proxy owner's approval.
        #[arg(long)]
        needs_approval: bool,
        /// A quota per subscription, `METRIC=LIMIT/WINDOW` (metric:
        /// requests, total_tokens, prompt_tokens, completion_tokens;
        /// window: minute, hour, day, month, 10s, ...); repeatable.
        #[arg(long = "limit", value_name = "METRIC=LIMIT/WINDOW")]
        limits: Vec<String>,
        /// A spend cap per subscription, `AMOUNT/PERIOD` (USD; day, month,
        /// ...); repeatable.
        #[arg(long = "budget", value_name = "AMOUNT/PERIOD")]
        budgets: Vec<String>,
    },
    Delete {
        proxy: String,
        plan: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    List,
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        /// The team the token acts for (developers see only its proxies).
        #[arg(long)]
        team: Option<String>,
    },
    Revoke {
        id: String,
    },
}

fn parse_json(text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).context("--json is not valid JSON")
}

/// The request a subcommand makes.
fn request(cmd: AdminCommand) -> anyhow::Result<(&'static str, String, Option<Value>)> {
    let crud = |base: &str, c: Crud| -> anyhow::Result<(&'static str, String, Option<Value>)> {
        Ok(match c {
            Crud::List => ("GET", base.to_owned(), None),
            Crud::Get { id } => ("GET", format!("{base}/{id}"), None),
            Crud::Create { json } => ("POST", base.to_owned(), Some(parse_json(&json)?)),
            Crud::Update { id, json } => {
                ("PATCH", format!("{base}/{id}"), Some(parse_json(&json)?))
            }
            Crud::Delete { id } => ("DELETE", format!("{base}/{id}"), None),
        })
    };
    let p = "/api/v1/proxies";
    Ok(match cmd {
        AdminCommand::Serve => unreachable!("handled by the caller"),
        AdminCommand::Providers { command } => crud("/api/v1/providers", command)?,
        AdminCommand::Gateways { command } => crud("/api/v1/gateways", command)?,
        AdminCommand::Proxies { command } => match command {
            ProxyCommand::List => ("GET", p.into(), None),
            ProxyCommand::Get { id } => ("GET", format!("{p}/{id}"), None),
            ProxyCommand::Create {
                name,
                provider,
                context,
                version,
                description,
                json,
            } => {
                let mut body = match json {
                    Some(j) => parse_json(&j)?,
                    None => json!({}),
                };
                for (k, v) in [
                    ("name", name),
                    ("provider", provider),
                    ("context", context),
                    ("version", version),
                    ("description", description),
                ] {
                    if let Some(v) = v {
                        body[k] = json!(v);
                    }
                }
                ("POST", p.into(), Some(body))
            }
            ProxyCommand::Update { id, json } => {
                ("PATCH", format!("{p}/{id}"), Some(parse_json(&json)?))
            }
            ProxyCommand::Delete { id } => ("DELETE", format!("{p}/{id}"), None),
            ProxyCommand::Revisions { id } => ("GET", format!("{p}/{id}/revisions"), None),
            ProxyCommand::Owner { id, team, token_id } => {
                let body = match (team, token_id) {
                    (Some(team), _) => json!({ "team": team }),
                    (None, token) => json!({ "token": token }),
                };
                ("PUT", format!("{p}/{id}/owner"), Some(body))
            }
        },
        AdminCommand::Keys { command } => match command {
            KeyCommand::List { proxy } => ("GET", format!("{p}/{proxy}/keys"), None),
            KeyCommand::Create {
                proxy,
                name,
                expires_at,
                models,
                inbound,
                resources,
            } => {
                let mut body = json!({ "name": name });
                if let Some(e) = expires_at {
                    body["expires_at"] = json!(e);
                }
                if !(models.is_empty() && inbound.is_empty() && resources.is_empty()) {
                    body["scope"] =
                        json!({"models": models, "inbound": inbound, "resources": resources});
                }
                ("POST", format!("{p}/{proxy}/keys"), Some(body))
            }
            KeyCommand::Revoke { proxy, key } => {
                ("POST", format!("{p}/{proxy}/keys/{key}/revoke"), None)
            }
        },
        AdminCommand::Deploy {
            proxy,
            gateway,
            revision,
        } => {
            let mut body = json!({ "gateway": gateway });
            if let Some(n) = revision {
                body["revision"] = json!(n);
            }
            ("POST", format!("{p}/{proxy}/deployments"), Some(body))
        }
        AdminCommand::Settings {
            gateway,
            group,
            set,
        } => {
            let path = match (gateway, group) {
                (_, Some(g)) => format!("/api/v1/gateway-groups/{g}/settings"),
                (Some(id), None) => format!("/api/v1/gateways/{id}/settings"),
                (None, None) => anyhow::bail!("name a gateway, or a group with --group"),
            };
            match set {
                Some(patch) => ("PATCH", path, Some(parse_json(&patch)?)),
                None => ("GET", path, None),
            }
        }
        AdminCommand::Undeploy { proxy, deployment } => (
            "POST",
            format!("{p}/{proxy}/deployments/{deployment}/stop"),
            None,
        ),
        AdminCommand::Deployments { proxy } => ("GET", format!("{p}/{proxy}/deployments"), None),
        AdminCommand::Policies { command } => match command {
            PolicyCommand::Catalogue => ("GET", "/api/v1/policies".into(), None),
            PolicyCommand::List { proxy } => ("GET", format!("{p}/{proxy}/policies"), None),
            PolicyCommand::Attach {
                proxy,
                name,
                version,
                sha256,
                settings,
                phase,
                order,
                on_error,
            } => {
                let mut body = json!({ "name": name, "version": version });
                if let Some(d) = sha256 {
                    body["sha256"] = json!(d);
                }
                if let Some(s) = settings {
                    body["settings"] = parse_json(&s)?;
                }
                if let Some(v) = phase {
                    body["phase"] = json!(v);
                }
                if let Some(v) = order {
                    body["order"] = json!(v);
                }
                if let Some(v) = on_error {
                    body["on_error"] = json!(v);
                }
                ("POST", format!("{p}/{proxy}/policies"), Some(body))
            }
            PolicyCommand::Update {
                proxy,
                attachment,
                json,
            } => (
                "PATCH",
                format!("{p}/{proxy}/policies/{attachment}"),
                Some(parse_json(&json)?),
            ),
            PolicyCommand::Detach { proxy, attachment } => {
                ("DELETE", format!("{p}/{proxy}/policies/{attachment}"), None)
            }
        },
        AdminCommand::Tokens { command } => match command {
            TokenCommand::List => ("GET", "/api/v1/tokens".into(), None),
            TokenCommand::Create { name, role, team } => {
                let mut body = json!({ "name": name, "role": role });
                if let Some(t) = team {
                    body["team"] = json!(t);
                }
                ("POST", "/api/v1/tokens".into(), Some(body))
            }
            TokenCommand::Revoke { id } => ("POST", format!("/api/v1/tokens/{id}/revoke"), None),
        },
        AdminCommand::Applications { command } => {
            let a = "/api/v1/applications";
            match command {
                ApplicationCommand::List => ("GET", a.into(), None),
                ApplicationCommand::Get { id } => ("GET", format!("{a}/{id}"), None),
                ApplicationCommand::Create { name, description } => {
                    let mut body = json!({ "name": name });
                    if let Some(d) = description {
                        body["description"] = json!(d);
                    }
                    ("POST", a.into(), Some(body))
                }
                ApplicationCommand::Delete { id } => ("DELETE", format!("{a}/{id}"), None),
                ApplicationCommand::Keys { id } => ("GET", format!("{a}/{id}/keys"), None),
                ApplicationCommand::CreateKey {
                    id,
                    name,
                    expires_at,
                } => {
                    let mut body = json!({ "name": name });
                    if let Some(e) = expires_at {
                        body["expires_at"] = json!(e);
                    }
                    ("POST", format!("{a}/{id}/keys"), Some(body))
                }
                ApplicationCommand::RevokeKey { id, key } => {
                    ("POST", format!("{a}/{id}/keys/{key}/revoke"), None)
                }
                ApplicationCommand::Subscribe { id, proxy, plan } => (
                    "POST",
                    format!("{a}/{id}/subscriptions"),
                    Some(json!({ "proxy": proxy, "plan": plan })),
                ),
            }
        }
        AdminCommand::Plans { command } => match command {
            PlanCommand::List { proxy } => ("GET", format!("{p}/{proxy}/plans"), None),
            PlanCommand::Create {
                proxy,
                name,
                models,
                needs_approval,
                limits,
                budgets,
            } => {
                let limits = limits
                    .iter()
                    .map(|l| {
                        let bad = || anyhow::anyhow!("--limit `{l}`: expected METRIC=LIMIT/WINDOW, e.g. total_tokens=100000/minute");
                        let (metric, rest) = l.split_once('=').ok_or_else(bad)?;
                        let (limit, window) = rest.split_once('/').ok_or_else(bad)?;
                        let limit: i64 = limit.trim().parse().map_err(|_| bad())?;
                        Ok(json!({"metric": metric.trim(), "limit": limit, "window": window.trim()}))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let budgets = budgets
                    .iter()
                    .map(|b| {
                        let bad = || {
                            anyhow::anyhow!("--budget `{b}`: expected AMOUNT/PERIOD, e.g. 50/month")
                        };
                        let (amount, period) = b.split_once('/').ok_or_else(bad)?;
                        let amount: f64 = amount.trim().parse().map_err(|_| bad())?;
                        Ok(json!({"amount": amount, "period": period.trim()}))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                (
                    "POST",
                    format!("{p}/{proxy}/plans"),
                    Some(
                        json!({ "name": name, "models": models, "needs_approval": needs_approval,
                                 "limits": limits, "budgets": budgets }),
                    ),
                )
            }
            PlanCommand::Delete { proxy, plan } => {
                ("DELETE", format!("{p}/{proxy}/plans/{plan}"), None)
            }
        },
        AdminCommand::Subscription { id, action } => {
            ("POST", format!("/api/v1/subscriptions/{id}/{action}"), None)
        }
        AdminCommand::Spend {
            group_by,
            from,
            to,
            proxy,
            csv,
        } => {
            let mut q = vec![format!("group_by={group_by}")];
            for (k, v) in [("from", from), ("to", to), ("proxy", proxy)] {
                if let Some(v) = v {
                    q.push(format!("{k}={v}"));
                }
            }
            if csv {
                q.push("format=csv".into());
            }
            ("GET", format!("/api/v1/spend?{}", q.join("&")), None)
        }
        AdminCommand::Audit { limit } => ("GET", format!("/api/v1/audit?limit={limit}"), None),
        AdminCommand::Api { method, path, json } => {
            let m: &'static str = match method.to_ascii_uppercase().as_str() {
                "GET" => "GET",
                "POST" => "POST",
                "PATCH" => "PATCH",
                "PUT" => "PUT",
                "DELETE" => "DELETE",
                other => anyhow::bail!("unsupported method {other}"),
            };
            (m, path, json.map(|j| parse_json(&j)).transpose()?)
        }
    })
}

/// Runs `portcullis admin ...`.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match args.command {
        None | Some(AdminCommand::Serve) => rt.block_on(serve(&args)),
        Some(cmd) => {
            let (method, path, body) = request(cmd)?;
            let token = args
                .token
                .clone()
                .context("set --token or PORTCULLIS_ADMIN_TOKEN")?;
            let tls = args.trust.tls();
            tls.check_url(&args.url, "--url")?;
            let client = tls.client()?;
            let code = rt.block_on(call(
                &client,
                &args.url,
                &token,
                (method, &path, body),
                args.output,
            ))?;
            std::process::exit(code)
        }
    }
}

async fn serve(args: &AdminArgs) -> anyhow::Result<()> {
    let mut opened = portcullis_admin::open(&portcullis_admin::AdminOptions {
        listen: args.listen.parse().context("--listen")?,
        database_url: args.database_url.clone(),
        data_dir: args.data_dir.clone(),
        hub_url: args.hub_url.clone(),
        client_tls: args.trust.tls(),
    })
    .await?;
    let options = args.serve.options()?;
    // Flags win over the environment `open` read.
    opened.state.policy_embeddings = portcullis_admin::PolicyEmbeddings::from_parts(
        args.policy_embeddings_provider.clone(),
        args.policy_embeddings_model.clone(),
    )?;
    opened.state.console = Some(crate::console::CONSOLE_FILES);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(t) = &opened.bootstrap_token {
        println!("admin token: {t}   (shown once; set PORTCULLIS_ADMIN_TOKEN to choose your own)");
    }
    println!(
        "admin listening on {}://{}   (web console at /)",
        options.scheme(),
        listener.local_addr()?
    );
    // Runs until the process is stopped: a graceful stop would wait for
    // the gateways' long polls.
    portcullis_admin::serve(listener, opened.state, options, std::future::pending()).await
}

/// Sends one request and prints the answer; returns the exit code.
async fn call(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    (method, path, body): (&str, &str, Option<Value>),
    output: crate::output::Format,
) -> anyhow::Result<i32> {
    let m = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut req = client
        .request(m, format!("{}{path}", url.trim_end_matches('/')))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach admin at {url}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        eprintln!("{}", crate::output::error(status, &text));
        return Ok(1);
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => println!("{}", crate::output::render(&v, output)),
        Err(_) if text.is_empty() => {}
        Err(_) => println!("{text}"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    fn req(args: &[&str]) -> (&'static str, String, Option<Value>) {
        let cli = Cli::try_parse_from(std::iter::once("admin").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        request(cli.admin.command.unwrap()).unwrap()
    }

    #[test]
    fn ownership_and_pinning_flags_become_request_fields() {
        let (m, path, body) = req(&[
            "tokens",
            "create",
            "--name",
            "a",
            "--role",
            "developer",
            "--team",
            "payments",
        ]);
        assert_eq!((m, path.as_str()), ("POST", "/api/v1/tokens"));
        assert_eq!(body.unwrap()["team"], "payments");
        let (m, path, body) = req(&["proxies", "owner", "chat", "--team", "search"]);
        assert_eq!((m, path.as_str()), ("PUT", "/api/v1/proxies/chat/owner"));
        assert_eq!(body.unwrap(), json!({"team": "search"}));
        let (_, _, body) = req(&[
            "--token",
            "pat-x",
            "proxies",
            "owner",
            "chat",
            "--token-id",
            "tok_1",
        ]);
        assert_eq!(body.unwrap(), json!({"token": "tok_1"}));
        assert!(Cli::try_parse_from(["admin", "proxies", "owner", "chat"]).is_err());
        let (_, _, body) = req(&[
            "policies",
            "attach",
            "chat",
            "--name",
            "p",
            "--version",
            "1.0.0",
            "--sha256",
            "ab",
        ]);
        assert_eq!(body.unwrap()["sha256"], "ab");
    }
}
