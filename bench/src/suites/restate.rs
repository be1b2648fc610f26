//! The Restate peer of the `peer` suite: the Restate server (npm `@restatedev/restate-server`,
//! with its default durable settings) and a service on `@restatedev/restate-sdk` whose handler
//! runs three durable no-op steps (`bench/peer/restate_peer.mjs`), invoked through the server's
//! HTTP ingress by the same driver as our workflows. Installed with npm into the cache directory
//! on first use; skipped with a notice where Node.js or npm is missing.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::*;

/// Versions measured: the server the issue names, and the newest SDK that runs on Node.js 20.
pub(super) const SERVER_VERSION: &str = "1.7";
const SDK_VERSION: &str = "1.9.1";

/// A running Restate server and the benchmark service registered with it.
pub(super) struct Restate {
    server: Child,
    service: Child,
    /// URL of the handler at the ingress.
    pub(super) invoke_url: String,
    client: reqwest::Client,
    data: tempfile::TempDir,
}

impl Drop for Restate {
    /// Each was started as the leader of a process group of its own (the npm launcher of the
    /// server runs the server binary as its child): the whole group goes.
    fn drop(&mut self) {
        for c in [&mut self.server, &mut self.service] {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.wait();
        }
    }
}

/// `N` distinct free TCP ports on loopback.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let mut ports = [0; N];
    for (p, l) in ports.iter_mut().zip(&held) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

impl Restate {
    /// Installs (first time), starts the server and the service, and registers the service;
    /// `Ok(None)` with a notice printed where it cannot run here. A start that fails (a process
    /// that exits, a port taken between choosing it and binding it) is tried again on new
    /// ports; the last failure is reported with the tail of each process's log.
    pub(super) async fn start() -> Result<Option<Restate>> {
        let dir = match super::peer::npm_peer(
            &format!("restate-{SERVER_VERSION}-sdk-{SDK_VERSION}"),
            &[
                &format!("@restatedev/restate-server@{SERVER_VERSION}"),
                &format!("@restatedev/restate-sdk@{SDK_VERSION}"),
            ],
            (
                "restate_peer.mjs",
                include_str!("../../peer/restate_peer.mjs"),
            ),
        )? {
            Ok(d) => d,
            Err(why) => {
                eprintln!("NOTICE: {why}; the Restate peer is skipped");
                return Ok(None);
            }
        };
        const ATTEMPTS: usize = 3;
        for attempt in 1.. {
            match Self::launch(&dir).await {
                Ok(r) => return Ok(Some(r)),
                Err(e) if attempt < ATTEMPTS => {
                    eprintln!("NOTICE: the Restate peer did not start, trying again: {e:#}")
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Starts the server and the service from the install in `dir` on fresh ports, registers
    /// the service and runs one invocation to warm both up.
    async fn launch(dir: &std::path::Path) -> Result<Restate> {
        let data = tempfile::Builder::new()
            .prefix("dbos-bench-restate-")
            .tempdir()?;
        let [ingress, admin, pgsql, node, service] = free_ports::<5>()?;
        let log = |name: &str| -> Result<Stdio> {
            Ok(std::fs::File::create(data.path().join(name))?.into())
        };
        let server = Command::new(dir.join("node_modules/.bin/restate-server"))
            .env("RESTATE_BASE_DIR", data.path())
            .env(
                "RESTATE_INGRESS__BIND_ADDRESS",
                format!("127.0.0.1:{ingress}"),
            )
            .env("RESTATE_ADMIN__BIND_ADDRESS", format!("127.0.0.1:{admin}"))
            .env(
                "RESTATE_ADMIN__QUERY_ENGINE__PGSQL_BIND_ADDRESS",
                format!("127.0.0.1:{pgsql}"),
            )
            .env("RESTATE_BIND_ADDRESS", format!("127.0.0.1:{node}"))
            .env(
                "RESTATE_ADVERTISED_ADDRESS",
                format!("http://127.0.0.1:{node}"),
            )
            .env("RESTATE_LOG_FILTER", "warn")
            .env("RESTATE_LOG_DISABLE_ANSI_CODES", "true")
            .process_group(0)
            .stdout(log("server.log")?)
            .stderr(log("server.err")?)
            .spawn()?;
        let service_port = service;
        let service = Command::new("node")
            .arg(dir.join("restate_peer.mjs"))
            .arg(service_port.to_string())
            .env("RESTATE_LOGGING", "WARN")
            .process_group(0)
            .current_dir(dir)
            .stdout(log("service.log")?)
            .stderr(log("service.err")?)
            .spawn()?;
        let mut r = Restate {
            server,
            service,
            invoke_url: format!("http://127.0.0.1:{ingress}/Bench/run"),
            client: reqwest::Client::new(),
            data,
        };
        // Registered once both answer.
        let register = format!("http://127.0.0.1:{admin}/deployments");
        let body = serde_json::json!({ "uri": format!("http://127.0.0.1:{service_port}") });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let sent = r
                .client
                .post(&register)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await;
            let why = match sent {
                Ok(resp) if resp.status().is_success() => break,
                Ok(resp) => format!("registration answered {}", resp.status()),
                Err(e) => format!("{e}"),
            };
            if let Some(exited) = r.exited()? {
                anyhow::bail!("{exited}\n{}", r.logs());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the Restate server did not register the service within 60 s ({why})\n{}",
                r.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Err(e) = r.invoke().await {
            anyhow::bail!("the first invocation failed: {e:#}\n{}", r.logs());
        }
        Ok(r)
    }

    /// Which of the two processes has exited, and how; `None` while both run.
    fn exited(&mut self) -> Result<Option<String>> {
        for (name, c) in [("server", &mut self.server), ("service", &mut self.service)] {
            if let Some(status) = c.try_wait()? {
                return Ok(Some(format!("the Restate {name} exited ({status})")));
            }
        }
        Ok(None)
    }

    /// The last lines of each process's output, to say why a start failed.
    fn logs(&self) -> String {
        const LINES: usize = 15;
        let mut out = String::new();
        for name in ["server.err", "server.log", "service.err", "service.log"] {
            let text = std::fs::read_to_string(self.data.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!("--- {name} (last lines)\n"));
            for l in &lines[lines.len().saturating_sub(LINES)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        if out.is_empty() {
            out.push_str("(neither process wrote anything)");
        }
        out
    }

    /// One invocation of the 3-step handler, to its result.
    pub(super) async fn invoke(&self) -> Result<()> {
        invoke_with(&self.client, &self.invoke_url).await
    }

    /// A handle for the driver's callers.
    pub(super) fn invoker(&self) -> (reqwest::Client, String) {
        (self.client.clone(), self.invoke_url.clone())
    }

    /// CPU time of the server and the service so far (every process of their groups), ms.
    pub(super) fn cpu_ms(&self) -> f64 {
        let groups = [self.server.id(), self.service.id()];
        let mut ticks = 0;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // Field 5 (after the command, which may hold spaces) is the process group.
            let pgrp = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                .and_then(|g| g.parse::<u32>().ok());
            if pgrp.is_some_and(|g| groups.contains(&g)) {
                ticks += cpu_ticks(&stat).unwrap_or(0);
            }
        }
        ticks as f64 * ms_per_tick()
    }
}

/// One invocation through `(client, url)`, for the driver.
pub(super) async fn invoke_with(client: &reqwest::Client, url: &str) -> Result<()> {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body("3")
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    anyhow::ensure!(
        status.is_success() && text.trim() == "3",
        "Restate answered {status}: {text}"
    );
    Ok(())
}
