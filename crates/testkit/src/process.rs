//! Child processes: `bookstore` run as its users run it (killed when the test ends, whether it
//! passed or not), free ports for them, and `dev/services`, which starts and stops the shared
//! servers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot bind a loopback port to find a free one")
}

/// A child process that is killed (SIGKILL) if the test ends, or panics, while it still runs:
/// no test leaves a process behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// `bookstore <service>` as a child process with `env`, its stdout discarded and warnings on
/// stderr; killed if the test ends while it runs. `bin` is the binary: the `bookstore`
/// package's tests pass `env!("CARGO_BIN_EXE_bookstore")`.
pub fn bookstore_child(bin: &str, service: &str, env: &[(String, String)]) -> KillOnDrop {
    bookstore_child_with(bin, service, env, &[], None)
}

/// [`bookstore_child`], with `extra` variables after the defaults (`RUST_LOG=warn` among them)
/// and its stderr written to `log` when one is given.
pub fn bookstore_child_with(
    bin: &str,
    service: &str,
    env: &[(String, String)],
    extra: &[(String, String)],
    log: Option<&Path>,
) -> KillOnDrop {
    let mut command = Command::new(bin);
    command
        .arg(service)
        .envs(env.iter().cloned())
        .env("RUST_LOG", "warn")
        .envs(extra.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(log) = log {
        let file = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        command.stderr(file);
    }
    KillOnDrop(
        command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} {service}: {e}")),
    )
}

// ------------------------------------------------------------------ stopping the servers

/// `dev/services`, which started the servers the tests use.
pub fn services_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/services")
}

/// `dev/services ACTION SERVER`; returns how long it took. It returns once the server has exited
/// (stop) or answers (start).
pub async fn services(action: &'static str, server: &'static str) -> Duration {
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(services_script())
            .args([action, server])
            .stdout(Stdio::null())
            .status()
    })
    .await
    .expect("the thread running dev/services panicked")
    .unwrap_or_else(|e| panic!("cannot run dev/services {action} {server}: {e}"));
    assert!(
        status.success(),
        "`dev/services {action} {server}` failed ({status}); this test needs the {server} that \
         dev/services started"
    );
    let took = started.elapsed();
    // `stop` leaves alone a server this checkout's dev/services did not start: then nothing would
    // be broken and the test would fail on its consequences instead. Say so plainly.
    if action == "stop" {
        let status = tokio::task::spawn_blocking(move || {
            Command::new(services_script()).arg("status").output()
        })
        .await
        .expect("the thread running dev/services panicked")
        .unwrap_or_else(|e| panic!("cannot run dev/services status: {e}"));
        let report = String::from_utf8_lossy(&status.stdout).into_owned();
        let line = report
            .lines()
            .find(|l| l.starts_with(server))
            .unwrap_or_default()
            .to_owned();
        assert!(
            line.split_whitespace().nth(1) == Some("down"),
            "`dev/services stop {server}` left {server} running ({line:?}): it was not started by \
             this checkout's dev/services (another checkout's, or by hand); stop that one and run \
             `dev/services start` here"
        );
    }
    took
}

/// Starts the server again if the test panics while it is down, so later tests find it.
pub struct RestartOnDrop {
    server: &'static str,
    pub armed: bool,
}

impl RestartOnDrop {
    pub fn new(server: &'static str) -> Self {
        Self {
            server,
            armed: true,
        }
    }
}

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if self.armed {
            eprintln!("starting {} again after a failure", self.server);
            let _ = Command::new(services_script())
                .args(["start", self.server])
                .stdout(Stdio::null())
                .status();
        }
    }
}
