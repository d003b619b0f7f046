//! An example for every command's `--help` (as `kubectl` and `gh` show
//! them), kept in one table so a new command without one fails a test.

/// Command path (as typed after `portcullis`) and its examples.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "up",
        "portcullis up --demo\nportcullis up --data-dir /var/lib/portcullis --port 8080",
    ),
    (
        "gateway",
        "portcullis gateway --config examples/gateway.yaml --validate\nportcullis gateway --config examples/gateway.yaml\nportcullis gateway --admin https://admin.internal:8090 --token gwt-...",
    ),
    (
        "admin",
        "portcullis admin --database-url postgres://admin@db/portcullis\nportcullis admin proxies list\nportcullis admin proxies list -o json",
    ),
    (
        "admin serve",
        "portcullis admin --listen 0.0.0.0:8090 --data-dir /var/lib/portcullis/admin serve",
    ),
    ("admin providers", "portcullis admin providers list"),
    (
        "admin providers list",
        "portcullis admin providers list\nportcullis admin providers list -o json",
    ),
    (
        "admin providers get",
        "portcullis admin providers get openai",
    ),
    (
        "admin providers create",
        "portcullis admin providers create --json '{\"name\":\"openai\",\"type\":\"openai\",\"credentials\":{\"api_key\":\"sk-...\"}}'",
    ),
    (
        "admin providers update",
        "portcullis admin providers update openai --json '{\"models\":[\"gpt-4o\",\"gpt-5-mini\"]}'",
    ),
    (
        "admin providers delete",
        "portcullis admin providers delete openai",
    ),
    ("admin proxies", "portcullis admin proxies list"),
    (
        "admin proxies list",
        "portcullis admin proxies list\nportcullis admin proxies list -o json",
    ),
    (
        "admin proxies get",
        "portcullis admin proxies get support-bot",
    ),
    (
        "admin proxies create",
        "portcullis admin proxies create --name 'Support bot' --provider openai --context /support",
    ),
    (
        "admin proxies update",
        "portcullis admin proxies update support-bot --json '{\"description\":\"Answers support tickets\"}'",
    ),
    (
        "admin proxies delete",
        "portcullis admin proxies delete support-bot",
    ),
    (
        "admin proxies revisions",
        "portcullis admin proxies revisions support-bot",
    ),
    (
        "admin proxies owner",
        "portcullis admin proxies owner support-bot --team payments",
    ),
    ("admin keys", "portcullis admin keys list support-bot"),
    ("admin keys list", "portcullis admin keys list support-bot"),
    (
        "admin keys create",
        "portcullis admin keys create support-bot --name ci --expires-at 2027-01-01T00:00:00Z\nportcullis admin keys create support-bot --name mini-only --models 'gpt-4o-mini*' --inbound openai",
    ),
    (
        "admin keys revoke",
        "portcullis admin keys revoke support-bot key_1a2b3c",
    ),
    ("admin gateways", "portcullis admin gateways list"),
    ("admin gateways list", "portcullis admin gateways list"),
    (
        "admin gateways get",
        "portcullis admin gateways get edge-eu-1",
    ),
    (
        "admin gateways create",
        "portcullis admin gateways create --json '{\"name\":\"edge-eu-1\",\"url\":\"https://llm.eu.example.com\"}'",
    ),
    (
        "admin gateways update",
        "portcullis admin gateways update edge-eu-1 --json '{\"url\":\"https://llm-eu.example.com\"}'",
    ),
    (
        "admin gateways delete",
        "portcullis admin gateways delete edge-eu-1",
    ),
    (
        "admin deploy",
        "portcullis admin deploy support-bot --gateway edge-eu-1\nportcullis admin deploy support-bot --gateway edge-eu-1 --revision 3",
    ),
    ("admin applications", "portcullis admin applications list"),
    (
        "admin applications list",
        "portcullis admin applications list -o json",
    ),
    (
        "admin applications get",
        "portcullis admin applications get mobile",
    ),
    (
        "admin applications create",
        "portcullis admin applications create --name Mobile --description 'the iOS app'",
    ),
    (
        "admin applications delete",
        "portcullis admin applications delete mobile",
    ),
    (
        "admin applications keys",
        "portcullis admin applications keys mobile",
    ),
    (
        "admin applications create-key",
        "portcullis admin applications create-key mobile --name ios --expires-at 2027-06-30T00:00:00Z",
    ),
    (
        "admin applications revoke-key",
        "portcullis admin applications revoke-key mobile key_1a2b3c",
    ),
    (
        "admin applications subscribe",
        "portcullis admin applications subscribe mobile --proxy support-bot --plan basic",
    ),
    ("admin plans", "portcullis admin plans list support-bot"),
    (
        "admin plans list",
        "portcullis admin plans list support-bot",
    ),
    (
        "admin plans create",
        "portcullis admin plans create support-bot --name basic --models 'gpt-4o-mini*'\nportcullis admin plans create support-bot --name gold --needs-approval",
    ),
    (
        "admin plans delete",
        "portcullis admin plans delete support-bot plan_1a2b3c",
    ),
    (
        "admin subscription",
        "portcullis admin subscription sub_1a2b3c approve\nportcullis admin subscription sub_1a2b3c suspend",
    ),
    (
        "admin spend",
        "portcullis admin spend --group-by key,model --from 2026-12-01\nportcullis admin spend --group-by day --proxy support-bot --csv > spend.csv",
    ),
    (
        "admin settings",
        "portcullis admin settings edge-eu-1\nportcullis admin settings --group eu --set '{\"redis_url\":\"redis://redis.internal:6379/0\",\"telemetry\":{\"otlp_endpoint\":\"http://otel:4318\",\"sampling_ratio\":0.1}}'\nportcullis admin settings edge-eu-1 --set '{\"timeouts\":{\"read_ms\":60000},\"limits\":null}'",
    ),
    (
        "admin undeploy",
        "portcullis admin undeploy support-bot dep_1a2b3c",
    ),
    (
        "admin deployments",
        "portcullis admin deployments support-bot",
    ),
    ("admin policies", "portcullis admin policies catalogue"),
    (
        "admin policies catalogue",
        "portcullis admin policies catalogue",
    ),
    (
        "admin policies list",
        "portcullis admin policies list support-bot",
    ),
    (
        "admin policies attach",
        "portcullis admin policies attach support-bot --name pii-masking --version 0.1.0 --settings '{\"entities\":[\"email\"]}'",
    ),
    (
        "admin policies update",
        "portcullis admin policies update support-bot att_1a2b3c --json '{\"order\":2}'",
    ),
    (
        "admin policies detach",
        "portcullis admin policies detach support-bot att_1a2b3c",
    ),
    ("admin tokens", "portcullis admin tokens list"),
    ("admin tokens list", "portcullis admin tokens list"),
    (
        "admin tokens create",
        "portcullis admin tokens create --name alice --role developer --team payments",
    ),
    (
        "admin tokens revoke",
        "portcullis admin tokens revoke tok_1a2b3c",
    ),
    ("admin audit", "portcullis admin audit --limit 20"),
    (
        "admin api",
        "portcullis admin api GET /api/v1/proxies\nportcullis admin api PATCH /api/v1/proxies/support-bot --json '{\"description\":\"v2\"}'",
    ),
    ("probe", "portcullis probe http://127.0.0.1:8081/readyz"),
    (
        "completions",
        "portcullis completions bash > /etc/bash_completion.d/portcullis\nportcullis completions zsh > \"${fpath[1]}/_portcullis\"\nportcullis completions fish > ~/.config/fish/completions/portcullis.fish",
    ),
    ("mock-llm", "portcullis mock-llm --port 8099"),
    (
        "bench",
        "portcullis bench --url http://127.0.0.1:8080/demo/chat/completions --key pc-... --concurrency 16 --seconds 10",
    ),
    (
        "bench-policies",
        "cargo build-policies\nportcullis bench-policies --iterations 5000",
    ),
    (
        "hub",
        "portcullis hub --listen 0.0.0.0:8091 --publish-token acme:s3cret",
    ),
    (
        "policy",
        "portcullis policy new deny-words && cd deny-words && portcullis policy test && portcullis policy build",
    ),
    ("policy new", "portcullis policy new deny-words"),
    ("policy build", "portcullis policy build deny-words"),
    ("policy test", "portcullis policy test deny-words"),
    (
        "policy publish",
        "portcullis policy publish --hub https://hub.internal:8091 --token acme:s3cret deny-words/target/policy",
    ),
    ("key", "portcullis key generate"),
    ("key generate", "portcullis key generate"),
    ("key hash", "portcullis key hash pc-0123456789abcdef"),
];

/// `cmd` with every (sub)command's examples after its help.
pub fn with_examples(cmd: clap::Command) -> clap::Command {
    attach(cmd, "")
}

fn attach(mut cmd: clap::Command, path: &str) -> clap::Command {
    if let Some((_, text)) = EXAMPLES.iter().find(|(p, _)| *p == path) {
        let indented: Vec<String> = text.lines().map(|l| format!("  {l}")).collect();
        cmd = cmd.after_help(format!("Examples:\n{}", indented.join("\n")));
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |s| attach(s, &sub_path));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            let p = if path.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{path} {}", sub.get_name())
            };
            if sub.get_name() != "help" {
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !help.starts_with("Examples:\n  portcullis") && !help.contains("\n  portcullis")
                {
                    missing.push(p.clone());
                }
            }
            walk(sub, &p, missing);
        }
    }

    #[test]
    fn every_command_has_an_example() {
        let cmd = with_examples(crate::Cli::command());
        let mut missing = Vec::new();
        walk(&cmd, "", &mut missing);
        assert!(
            missing.is_empty(),
            "commands without an example: {missing:?}"
        );
        // And every example is a command line the CLI accepts.
        for (path, text) in EXAMPLES {
            for line in text.lines() {
                let words = shell_words(line);
                let Some(start) = words.iter().position(|w| w == "portcullis") else {
                    continue;
                };
                let end = words[start..]
                    .iter()
                    .position(|w| w == "&&" || w == ">")
                    .map_or(words.len(), |e| start + e);
                let r = cmd.clone().try_get_matches_from(&words[start..end]);
                assert!(r.is_ok(), "`{path}` example `{line}`: {}", r.unwrap_err());
            }
        }
    }

    /// Words of a command line: spaces separate, quotes group.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut quote = None;
        let mut started = false;
        for c in line.chars() {
            match (quote, c) {
                (None, '\'' | '"') => {
                    quote = Some(c);
                    started = true;
                }
                (Some(q), c) if c == q => quote = None,
                (None, ' ') => {
                    if started {
                        words.push(std::mem::take(&mut word));
                        started = false;
                    }
                }
                (_, c) => {
                    word.push(c);
                    started = true;
                }
            }
        }
        if started {
            words.push(word);
        }
        words
    }
}
