//! A real single-node Apache Kafka broker (KRaft, combined broker + controller) on loopback, run
//! from the jars Maven Central serves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{Service, free_port, port_open};
use crate::tool;

/// Kafka on two busy cores takes 10–30 s to start; the JVM alone takes several.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A running Kafka broker.
pub struct Kafka {
    service: Option<Service>,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    host: String,
    port: u16,
    starts: u32,
    /// Remove `dir` once the broker ends (the shared broker, which nothing restarts).
    remove_dir_on_exit: bool,
}

impl Kafka {
    /// The broker shared by every test of one test binary, started on first use.
    ///
    /// # Panics
    /// When the broker cannot start; the message carries its log tail. Nothing skips silently.
    pub fn shared() -> &'static Kafka {
        static SHARED: OnceLock<Result<Kafka, String>> = OnceLock::new();
        let init = || {
            let dir = std::env::temp_dir().join(format!("flmon-kafka-shared-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(anyhow::Error::from)
                .and_then(|_| Kafka::start_in(dir, None, "127.0.0.1", true))
                .map_err(|e| format!("{e:#}"))
        };
        match SHARED.get_or_init(init) {
            Ok(k) => k,
            Err(e) => panic!("the test Kafka broker could not start: {e}"),
        }
    }

    /// Starts a private broker on 127.0.0.1, stopped (and its data removed) on drop.
    ///
    /// # Errors
    /// When Kafka is not installed or does not become ready (the error carries its log tail).
    pub fn start() -> Result<Kafka> {
        Self::start_on("127.0.0.1")
    }

    /// Starts a private broker listening on `host` (an address of this machine).
    ///
    /// # Errors
    /// As [`Kafka::start`].
    pub fn start_on(host: &str) -> Result<Kafka> {
        let tmp = tempfile::Builder::new().prefix("flmon-kafka-").tempdir()?;
        let dir = tmp.path().to_path_buf();
        Self::start_in(dir, Some(tmp), host, false)
    }

    /// Starts a broker listening on `host`, keeping its data and logs in `dir`.
    ///
    /// # Errors
    /// As [`Kafka::start`].
    pub fn start_at(dir: &Path, host: &str) -> Result<Kafka> {
        std::fs::create_dir_all(dir)?;
        Self::start_in(dir.to_path_buf(), None, host, false)
    }

    /// Leaves the broker running past this value's life and returns its process group.
    pub fn detach(mut self) -> Option<u32> {
        let mut service = self.service.take()?;
        let pgid = service.pgid();
        service.detach();
        pgid
    }

    fn start_in(
        dir: PathBuf,
        tmp: Option<tempfile::TempDir>,
        host: &str,
        remove_dir_on_exit: bool,
    ) -> Result<Kafka> {
        let (port, controller_port) = (free_port()?, free_port()?);
        let props = dir.join("server.properties");
        std::fs::write(
            &props,
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.voters=1@{host}:{controller_port}\n\
                 listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}\n\
                 advertised.listeners=PLAINTEXT://{host}:{port}\n\
                 controller.listener.names=CONTROLLER\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                 offsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=3\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\n\
                 num.partitions=1\n\
                 auto.create.topics.enable=true\n\
                 log.dirs={data}\n",
                data = dir.join("data").display()
            ),
        )?;
        std::fs::write(
            dir.join("log4j2.properties"),
            "rootLogger.level=INFO\nrootLogger.appenderRef.stdout.ref=STDOUT\n\
             appender.stdout.type=Console\nappender.stdout.name=STDOUT\n\
             appender.stdout.layout.type=PatternLayout\nappender.stdout.layout.pattern=[%d] %p %m (%c)%n\n\
             logger.kafka.name=kafka\nlogger.kafka.level=INFO\n\
             logger.apache.name=org.apache\nlogger.apache.level=WARN\n",
        )?;
        let classpath = format!("{}/*", tool("kafka-libs").display());
        let java = tool("java");
        let uuid = Command::new(&java)
            .args(["-cp", &classpath, "kafka.tools.StorageTool", "random-uuid"])
            .output()
            .context("running Kafka's StorageTool random-uuid")?;
        let uuid = String::from_utf8_lossy(&uuid.stdout).trim().to_string();
        let format = Command::new(&java)
            .args([
                "-cp",
                &classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                &uuid,
                "-c",
            ])
            .arg(&props)
            .output()
            .context("running Kafka's StorageTool format")?;
        if !format.status.success() {
            bail!(
                "formatting Kafka storage failed: {}{}",
                String::from_utf8_lossy(&format.stdout),
                String::from_utf8_lossy(&format.stderr)
            );
        }
        let mut k = Kafka {
            service: None,
            dir,
            _tempdir: tmp,
            host: host.to_string(),
            port,
            starts: 0,
            remove_dir_on_exit,
        };
        k.run()?;
        Ok(k)
    }

    fn run(&mut self) -> Result<()> {
        self.starts += 1;
        let log = self.dir.join(format!("kafka-{}.log", self.starts));
        let classpath = format!("{}/*", tool("kafka-libs").display());
        let mut service = Service::spawn(
            "kafka",
            &tool("java"),
            &[
                "-Xmx768m".into(),
                "-Xms128m".into(),
                "-XX:TieredStopAtLevel=1".into(),
                "-XX:+UseSerialGC".into(),
                "-Djava.awt.headless=true".into(),
                format!(
                    "-Dlog4j2.configurationFile={}",
                    self.dir.join("log4j2.properties").display()
                ),
                "-cp".into(),
                classpath,
                "kafka.Kafka".into(),
                self.dir.join("server.properties").display().to_string(),
            ],
            &[],
            &log,
            self.remove_dir_on_exit.then_some(self.dir.as_path()),
        )?;
        let addr = self.bootstrap();
        let log_path = log.clone();
        service.wait_ready(READY_TIMEOUT, || {
            port_open(&addr)
                && std::fs::read_to_string(&log_path)
                    .map(|l| l.contains("Kafka Server started"))
                    .unwrap_or(false)
        })?;
        self.service = Some(service);
        Ok(())
    }

    /// The bootstrap address, e.g. `127.0.0.1:39092`.
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The folder holding this broker's configuration, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the broker (its data stays, so [`Kafka::restart`] brings it back with its topics).
    pub fn stop(&mut self) {
        if let Some(mut s) = self.service.take() {
            s.stop();
        }
    }

    /// Stops and starts the broker on the same address and data.
    ///
    /// # Errors
    /// When it does not come back (the error carries its log tail).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.run()
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.stop();
    }
}
