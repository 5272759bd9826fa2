//! Where the real servers the tests use are: the variables `dev/services env` prints, each
//! falling back, when unset, to the address `dev/services start` gives its server. A test that
//! needs a server fails, naming the variable and the fix, when it cannot reach it (see
//! [`unreachable`]); it never skips.

/// How to get the servers: said by every failure to reach one.
pub const HOW_TO_START: &str = "start the servers with `dev/services start`, then \
     `set -a; eval \"$(dev/services env)\"; set +a` (or point the variable at your own server)";

/// `name`'s value, or `default` when it is unset or empty.
fn var_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value.trim().to_owned(),
        _ => default.to_owned(),
    }
}

/// The MariaDB server (no database in the path): `BOOKSTORE_TEST_MYSQL_URL`.
pub fn mysql_server_url() -> String {
    var_or(
        "BOOKSTORE_TEST_MYSQL_URL",
        "mysql://bookstore:bookstore@127.0.0.1:3306",
    )
    .trim_end_matches('/')
    .to_owned()
}

/// The Redis server: `BOOKSTORE_TEST_REDIS_URL`.
pub fn redis_url() -> String {
    var_or("BOOKSTORE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

/// The Kafka bootstrap servers, comma-separated: `BOOKSTORE_TEST_KAFKA_BROKERS`.
pub fn kafka_brokers() -> String {
    var_or("BOOKSTORE_TEST_KAFKA_BROKERS", "127.0.0.1:9092")
}

/// Jaeger's OTLP/HTTP receiver: `BOOKSTORE_TEST_OTLP_ENDPOINT`.
pub fn otlp_endpoint() -> String {
    var_or("BOOKSTORE_TEST_OTLP_ENDPOINT", "http://127.0.0.1:4318")
}

/// Jaeger's query API: `BOOKSTORE_TEST_JAEGER_URL`.
pub fn jaeger_url() -> String {
    var_or("BOOKSTORE_TEST_JAEGER_URL", "http://127.0.0.1:16686")
}

/// Fails the test: `server` (say "MariaDB") cannot be reached at `address`, which the variable
/// `variable` names.
#[track_caller]
pub fn unreachable(
    server: &str,
    address: &str,
    variable: &str,
    error: impl std::fmt::Display,
) -> ! {
    panic!(
        "{server} is not reachable at {address} ({variable}): {error}. This test needs it and \
         never skips: {HOW_TO_START}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_variable_gives_the_address_of_dev_services() {
        assert_eq!(var_or("BOOKSTORE_TEST_NEVER_SET_ANYWHERE", "x"), "x");
        assert!(mysql_server_url().starts_with("mysql://"));
        assert!(!mysql_server_url().ends_with('/'));
    }
}
