//! Keeps the deployment files consistent with the binary and its configuration: each `bookstore`
//! service of `compose.yaml` runs a real subcommand, is configured only through
//! `BOOKSTORE_<SECTION>__<KEY>` variables that `Config::load` accepts (on top of the image's own
//! `ENV` lines), and means what the service needs (Kafka, MariaDB, Redis); the addresses the
//! services listen on are the ones the other services, the health checks and the published ports
//! use; and the `Dockerfile` builds and runs the `bookstore` binary. `dev/check-deploy` validates
//! both files against the Compose schema and Docker's rules; no container engine is needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::result_large_err)] // figment::Jail's closures return figment's large error.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bookstore_app::config::{Config, DbKind, EventsBackend, OpsListen, TrendStoreKind, db_kind};
use secrecy::ExposeSecret;
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(name: &str) -> String {
    let path = repo().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// compose.yaml with its `<<` merge keys applied, as Compose reads it.
fn compose() -> Value {
    let mut value: Value = serde_yaml::from_str(&read("compose.yaml")).expect("compose.yaml");
    value.apply_merge().expect("compose.yaml merge keys");
    value
}

/// A scalar as Compose passes it to a container (numbers and booleans as text).
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Compose's variable interpolation with an empty host environment: `${X:-default}` and
/// `${X-default}` give the default, `${X}` and `$X` nothing, `${X:?message}` a stand-in value
/// (a required variable), `$$` a `$`.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix('{') {
            let end = inner
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {text:?}"));
            let expr = &inner[..end];
            rest = &inner[end + 1..];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let op = &expr[name_end..];
            if let Some(default) = op.strip_prefix(":-").or_else(|| op.strip_prefix('-')) {
                out.push_str(default);
            } else if op.starts_with(":?") || op.starts_with('?') {
                out.push_str("required-value");
            } else {
                assert!(
                    op.is_empty(),
                    "unsupported interpolation ${{{expr}}} in {text:?}"
                );
            }
        } else {
            let name_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest = &rest[name_end..];
        }
    }
    out.push_str(rest);
    out
}

/// The pieces of `scheme://user:password@host:port/path` (no percent-decoding).
#[derive(Debug)]
struct Url {
    scheme: String,
    user: String,
    password: String,
    host: String,
    port: Option<u16>,
    path: String,
}

fn parse_url(url: &str) -> Url {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("not a URL: {url}"));
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (userinfo, hostport),
        None => ("", authority),
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) => (host, Some(port.parse().expect("port"))),
        None => (hostport, None),
    };
    Url {
        scheme: scheme.to_owned(),
        user: user.to_owned(),
        password: password.to_owned(),
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    }
}

/// One stage of the Dockerfile: its name and its instructions (keyword, arguments).
#[derive(Debug)]
struct Stage {
    name: String,
    instructions: Vec<(String, String)>,
}

fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile").replace("\\\n", " ");
    let mut stages: Vec<Stage> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let (word, args) = (word.to_ascii_uppercase(), args.trim().to_owned());
        if word == "FROM" {
            let parts: Vec<&str> = args.split_whitespace().collect();
            let name = match parts.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => String::new(),
            };
            stages.push(Stage {
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((word, args));
        }
    }
    stages
}

impl Stage {
    fn all<'a>(&'a self, word: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.instructions
            .iter()
            .filter(move |(w, _)| w == word)
            .map(|(_, args)| args.as_str())
    }

    fn last<'a>(&'a self, word: &'a str) -> Option<&'a str> {
        self.all(word).last()
    }

    /// The variables the `ENV KEY=VALUE ...` lines set (values without spaces or quotes).
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for args in self.all("ENV") {
            for pair in args.split_whitespace() {
                let (key, value) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("ENV {args}: use the KEY=VALUE form"));
                assert!(!value.contains('"'), "ENV {args}: unquoted values only");
                env.insert(key.to_owned(), value.to_owned());
            }
        }
        env
    }
}

/// The subcommands `bookstore --help` lists.
fn subcommands() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_bookstore"))
        .arg("--help")
        .output()
        .expect("run bookstore --help");
    assert!(output.status.success(), "bookstore --help failed");
    let help = String::from_utf8(output.stdout).unwrap();
    let commands: BTreeSet<String> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(
        commands.contains("serve"),
        "no subcommands found in:\n{help}"
    );
    commands
}

/// Loads the configuration with exactly `env` as the process environment, as `bookstore` does
/// in the container (no config file).
fn load_config(env: &BTreeMap<String, String>) -> anyhow::Result<Config> {
    let mut loaded = None;
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        for (key, value) in env {
            jail.set_env(key, value);
        }
        loaded = Some(Config::load(None));
        Ok(())
    });
    loaded.expect("the jail ran")
}

/// A `bookstore` service of compose.yaml, with the environment its container gets.
struct Service {
    name: String,
    spec: Value,
    command: String,
    /// The image's ENV lines, then the service's `environment`.
    env: BTreeMap<String, String>,
    /// The service's `environment` before interpolation.
    raw_env: BTreeMap<String, String>,
    config: Config,
}

impl Service {
    /// The address this service's own HTTP API listens on.
    fn listen(&self) -> SocketAddr {
        match self.command.as_str() {
            "web" => self.config.web.listen,
            "trend" => self.config.trend.listen,
            "recommend" => self.config.recommend.listen,
            other => panic!("service {}: unexpected command {other}", self.name),
        }
    }

    /// The address of its operations port (`/metrics` and the internal routes).
    fn ops_listen(&self) -> OpsListen {
        match self.command.as_str() {
            "web" => self.config.web.ops_listen,
            "trend" => self.config.trend.ops_listen,
            "recommend" => self.config.recommend.ops_listen,
            other => panic!("service {}: unexpected command {other}", self.name),
        }
    }

    /// The operations port, if the service has one of its own.
    fn ops_port(&self) -> Option<u16> {
        match self.ops_listen() {
            OpsListen::Addr(addr) => Some(addr.port()),
            OpsListen::Same => None,
        }
    }
}

fn services(compose: &Value) -> &serde_yaml::Mapping {
    compose["services"].as_mapping().expect("services")
}

/// The services built from the Dockerfile, each with its configuration loaded.
fn bookstore_services(compose: &Value) -> Vec<Service> {
    let image_env = dockerfile().last().expect("a stage").env();
    let mut out = Vec::new();
    for (name, spec) in services(compose) {
        let name = name.as_str().unwrap().to_owned();
        if spec.get("build").is_none() {
            continue;
        }
        let command = match &spec["command"] {
            Value::Sequence(args) => args.iter().map(scalar).collect::<Vec<_>>(),
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            other => panic!("service {name}: command {other:?}"),
        };
        assert_eq!(
            command.len(),
            1,
            "service {name}: the command is one subcommand, configuration goes in the environment"
        );
        let raw_env: BTreeMap<String, String> = spec["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("service {name}: environment as a mapping"))
            .iter()
            .map(|(k, v)| (scalar(k), scalar(v)))
            .collect();
        for key in raw_env.keys() {
            assert!(
                key.starts_with("BOOKSTORE_") && key.contains("__"),
                "service {name}: {key} is not a BOOKSTORE_<SECTION>__<KEY> variable"
            );
        }
        let mut env = image_env.clone();
        env.extend(raw_env.iter().map(|(k, v)| (k.clone(), interpolate(v))));
        let config = load_config(&env)
            .unwrap_or_else(|e| panic!("service {name}: its environment is refused: {e:#}"));
        out.push(Service {
            name,
            spec: spec.clone(),
            command: command[0].clone(),
            env,
            raw_env,
            config,
        });
    }
    out
}

/// The service of compose.yaml named `host`, which `service` must wait for until it is healthy.
fn dependency<'a>(compose: &'a Value, service: &Service, host: &str, what: &str) -> &'a Value {
    let target = services(compose)
        .get(host)
        .unwrap_or_else(|| panic!("service {}: {what} names {host}, no service", service.name));
    assert_eq!(
        service.spec["depends_on"][host]["condition"].as_str(),
        Some("service_healthy"),
        "service {}: depends_on {host} with condition service_healthy ({what})",
        service.name
    );
    assert!(
        target["healthcheck"]["test"].as_sequence().is_some()
            || target["healthcheck"]["test"].as_str().is_some(),
        "service {host} has no healthcheck"
    );
    target
}

fn env_of(spec: &Value, key: &str) -> String {
    interpolate(&scalar(&spec["environment"][key]))
}

#[test]
fn each_bookstore_service_runs_a_subcommand_on_a_configuration_that_loads() {
    let compose = compose();
    let services = bookstore_services(&compose);
    let subcommands = subcommands();
    for service in &services {
        assert!(
            subcommands.contains(&service.command),
            "service {}: `{}` is not a subcommand of bookstore ({subcommands:?})",
            service.name,
            service.command
        );
    }
    let mut commands: Vec<&str> = services.iter().map(|s| s.command.as_str()).collect();
    commands.sort_unstable();
    assert_eq!(
        commands,
        ["recommend", "trend", "web"],
        "one service per subcommand"
    );
    for service in &services {
        let config = &service.config;
        assert_eq!(
            config.events.backend,
            EventsBackend::Kafka,
            "{}",
            service.name
        );
        assert!(
            service.listen().ip().is_unspecified(),
            "service {}: listens on {} inside its container, not on all interfaces",
            service.name,
            service.listen()
        );
        // The operations port too: the other containers (a Prometheus on the network) reach it.
        if let OpsListen::Addr(ops) = service.ops_listen() {
            assert!(
                ops.ip().is_unspecified(),
                "service {}: its operations port listens on {ops} inside its container",
                service.name
            );
        }
        match service.command.as_str() {
            "web" => {
                assert_eq!(config.catalog_db().unwrap().kind, DbKind::MySql);
                let token = &service.raw_env["BOOKSTORE_WEB__ADMIN_TOKEN"];
                assert!(
                    token.starts_with("${") && token.ends_with('}'),
                    "web.admin_token must come from the host's environment, not be written in compose.yaml: {token}"
                );
                assert!(config.web.admin_token.is_some());
            }
            "trend" => assert_eq!(config.trend.store, TrendStoreKind::Redis),
            "recommend" => {
                let url = config.recommend_db_url();
                assert_eq!(db_kind(url.expose_secret()).unwrap(), DbKind::MySql);
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn addresses_health_checks_and_ports_agree() {
    let compose = compose();
    let services = bookstore_services(&compose);
    let by_command: BTreeMap<&str, &Service> =
        services.iter().map(|s| (s.command.as_str(), s)).collect();
    let stages = dockerfile();
    let exposed: BTreeSet<u16> = stages
        .last()
        .unwrap()
        .all("EXPOSE")
        .flat_map(|args| args.split_whitespace())
        .map(|port| port.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
        .collect();

    for service in &services {
        let name = &service.name;
        let port = service.listen().port();
        assert!(
            exposed.contains(&port),
            "Dockerfile: EXPOSE {port} ({name})"
        );
        if let Some(ops) = service.ops_port() {
            assert!(
                exposed.contains(&ops),
                "Dockerfile: EXPOSE {ops} ({name}'s operations port)"
            );
        }

        // The health check asks this service's own /readyz.
        let test: Vec<String> = match &service.spec["healthcheck"]["test"] {
            Value::Sequence(args) => args.iter().map(scalar).collect(),
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            other => panic!("service {name}: healthcheck.test {other:?}"),
        };
        let url = test
            .iter()
            .flat_map(|arg| arg.split_whitespace())
            .find(|arg| arg.starts_with("http://"))
            .unwrap_or_else(|| panic!("service {name}: no http:// URL in its healthcheck"));
        let url = parse_url(url);
        assert!(
            ["127.0.0.1", "localhost"].contains(&url.host.as_str()),
            "service {name}: health check on {}",
            url.host
        );
        assert_eq!(url.port, Some(port), "service {name}: health check port");
        assert_eq!(url.path, "/readyz", "service {name}: health check path");

        // Published on loopback only, to the ports the service listens on: its own and its
        // operations port.
        let ports = service.spec["ports"]
            .as_sequence()
            .unwrap_or_else(|| panic!("service {name}: ports"));
        assert!(!ports.is_empty(), "service {name}: no published port");
        for published in ports {
            let (host_ip, target) = match published {
                Value::String(s) => {
                    let parts: Vec<&str> = s.split(':').collect();
                    assert_eq!(
                        parts.len(),
                        3,
                        "service {name}: port {s}: HOST_IP:PORT:PORT"
                    );
                    (parts[0].to_owned(), parts[2].parse::<u16>().unwrap())
                }
                Value::Mapping(_) => (
                    scalar(&published["host_ip"]),
                    scalar(&published["target"]).parse().unwrap(),
                ),
                other => panic!("service {name}: port {other:?}"),
            };
            assert_eq!(
                host_ip, "127.0.0.1",
                "service {name}: published on {host_ip}"
            );
            assert!(
                target == port || Some(target) == service.ops_port(),
                "service {name}: publishes {target}, a port it does not listen on"
            );
        }

        // Kafka: the brokers are the broker's advertised listener.
        for broker in service.config.events.broker_list() {
            let (host, broker_port) = broker.rsplit_once(':').unwrap();
            let kafka = dependency(&compose, service, host, "events.brokers");
            let advertised = env_of(kafka, "KAFKA_ADVERTISED_LISTENERS");
            assert!(
                advertised
                    .split(',')
                    .any(|l| l.ends_with(&format!("://{host}:{broker_port}"))),
                "service {name}: broker {broker} is not advertised by {host} ({advertised})"
            );
        }

        match service.command.as_str() {
            "web" => {
                let db = parse_url(service.config.db_url().expose_secret());
                let mysql = dependency(&compose, service, &db.host, "db.url");
                assert_eq!(db.port, Some(3306));
                assert_eq!(db.user, env_of(mysql, "MARIADB_USER"));
                assert_eq!(db.password, env_of(mysql, "MARIADB_PASSWORD"));
                assert_eq!(db.path, format!("/{}", env_of(mysql, "MARIADB_DATABASE")));
                for (remote, url) in [
                    ("trend", service.config.trend_url()),
                    ("recommend", service.config.recommend_url()),
                ] {
                    let url = parse_url(&url.unwrap_or_else(|| panic!("web: no {remote} URL")));
                    let target = by_command[remote];
                    assert_eq!(
                        url.host, target.name,
                        "web.{remote}_url names another service"
                    );
                    assert_eq!(
                        url.port,
                        Some(target.listen().port()),
                        "web.{remote}_url port"
                    );
                    dependency(&compose, service, &url.host, &format!("web.{remote}_url"));
                }
            }
            "trend" => {
                let redis = parse_url(service.config.trend.redis_url.expose());
                assert_eq!(redis.scheme, "redis");
                let image =
                    scalar(&dependency(&compose, service, &redis.host, "trend.redis_url")["image"]);
                assert!(image.starts_with("redis"), "trend.redis_url names {image}");
                assert_eq!(redis.port.unwrap_or(6379), 6379);
            }
            "recommend" => {
                let db = parse_url(service.config.recommend_db_url().expose_secret());
                let mysql = dependency(&compose, service, &db.host, "recommend.db_url");
                assert_eq!(db.user, env_of(mysql, "MARIADB_USER"));
                assert_eq!(db.password, env_of(mysql, "MARIADB_PASSWORD"));
                // Its own database: created by the init script, with the user's rights on it
                // (the user of MARIADB_USER may use only MARIADB_DATABASE otherwise).
                let database = db.path.trim_start_matches('/');
                if database != env_of(mysql, "MARIADB_DATABASE") {
                    let scripts: String = mysql["configs"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .map(|c| scalar(&compose["configs"][scalar(&c["source"])]["content"]))
                        .collect();
                    assert!(
                        scripts.contains(&format!("CREATE DATABASE IF NOT EXISTS {database} "))
                            && scripts.contains(&format!("ON {database}.* TO '{}'", db.user)),
                        "recommend.db_url names {database}, which no init script creates and grants"
                    );
                }
            }
            _ => unreachable!(),
        }
        assert!(
            !service.env.contains_key("BOOKSTORE_CONFIG"),
            "service {name}: no config file"
        );
    }
}

#[test]
fn the_infrastructure_services_have_health_checks() {
    let compose = compose();
    for name in ["kafka", "mysql", "redis"] {
        let service = &services(&compose)[name];
        assert!(
            service["healthcheck"]["test"].as_sequence().is_some(),
            "{name}: healthcheck.test"
        );
        assert!(service["image"].as_str().is_some(), "{name}: image");
    }
    assert!(
        scalar(&compose["services"]["kafka"]["image"]).starts_with("apache/kafka:3.7."),
        "Kafka 3.7, as dev/services runs"
    );
}

#[test]
fn the_dockerfile_builds_and_runs_the_bookstore_binary() {
    let stages = dockerfile();
    assert!(stages.len() >= 2, "a multi-stage build");
    let runtime = stages.last().unwrap();
    let builders: Vec<&Stage> = stages
        .iter()
        .filter(|s| {
            s.all("RUN").any(|run| {
                run.contains("cargo build")
                    && run.contains("--release")
                    && run.contains("--locked")
                    && run.contains("--bin bookstore")
            })
        })
        .collect();
    assert_eq!(
        builders.len(),
        1,
        "one stage runs cargo build --release --locked --bin bookstore"
    );
    let builder = builders[0];
    assert!(!builder.name.is_empty(), "the build stage has a name");

    let copied = runtime
        .all("COPY")
        .filter(|args| args.contains(&format!("--from={}", builder.name)))
        .map(|args| args.split_whitespace().collect::<Vec<_>>())
        .find(|args| args.len() >= 3 && args[args.len() - 2].ends_with("/bookstore"))
        .expect("the runtime stage copies the bookstore binary from the build stage");
    assert_eq!(copied.last(), Some(&"/usr/local/bin/bookstore"));

    let entrypoint: Vec<String> =
        serde_json::from_str(runtime.last("ENTRYPOINT").expect("ENTRYPOINT")).unwrap();
    assert_eq!(entrypoint, ["bookstore"]);
    let cmd: Vec<String> = serde_json::from_str(runtime.last("CMD").expect("CMD")).unwrap();
    assert_eq!(cmd, ["serve"]);
    assert!(subcommands().contains(&cmd[0]));

    let user = runtime.last("USER").expect("USER");
    assert!(
        !["root", "0"].contains(&user.split(':').next().unwrap()),
        "the image runs as root"
    );

    // The image's own defaults are a configuration that loads, with its data in the volume.
    let env = runtime.env();
    let config = load_config(&env).unwrap_or_else(|e| panic!("the image's ENV: {e:#}"));
    let volume = runtime.last("VOLUME").expect("VOLUME");
    assert!(
        volume.contains(&format!("\"{}\"", config.data_dir.display())),
        "data_dir {} is not the volume {volume}",
        config.data_dir.display()
    );
    for listen in [
        config.web.listen,
        config.trend.listen,
        config.recommend.listen,
    ] {
        assert!(
            listen.ip().is_unspecified(),
            "the image listens on {listen}"
        );
    }
    for ops in [
        config.web.ops_listen,
        config.trend.ops_listen,
        config.recommend.ops_listen,
    ] {
        assert!(
            matches!(ops, OpsListen::Addr(addr) if addr.ip().is_unspecified()),
            "the image's operations port is {ops}"
        );
    }
}

#[test]
fn interpolation_follows_compose() {
    assert_eq!(interpolate("a${X:-b}c"), "abc");
    assert_eq!(interpolate("${X-b}"), "b");
    assert_eq!(interpolate("${X}x$Y.z"), "x.z");
    assert_eq!(interpolate("$$X"), "$X");
    assert_eq!(interpolate("${X:?set X}"), "required-value");
    let url = parse_url("mysql://u:p@db:3306/name");
    assert_eq!(
        (
            url.scheme.as_str(),
            url.user.as_str(),
            url.password.as_str()
        ),
        ("mysql", "u", "p")
    );
    assert_eq!(
        (url.host.as_str(), url.port, url.path.as_str()),
        ("db", Some(3306), "/name")
    );
}
