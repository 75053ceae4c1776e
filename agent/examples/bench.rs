//! Benchmarks the agent side by side with Debian's `prometheus-node-exporter` in one run and
//! prints the ratios (SPEC §7): scrape throughput over 4 keep-alive connections, steady resident
//! memory, CPU at 5 s sampling, and batched event ingest.
//!
//! ```text
//! cargo build --profile agent -p flmon-agent --bin flmon-agent --example bench
//! target/agent/examples/bench [--kafka 127.0.0.1:9092] [--agent target/agent/flmon-agent]
//! ```
//!
//! The `agent` profile is what the image ships (built for size); a dev build's binary pages make
//! its resident memory larger.
//!
//! With `--kafka`, the agent watches 3 topics × 3 partitions and 2 consumer groups there (created
//! if missing), as in the SPEC's workload; 20 clients' training events fill the default history.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            host: addr.to_string(),
        })
    }

    /// Sends a request and reads the whole response; returns the status and body length.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, usize)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nContent-Type: application/x-ndjson\r\n\r\n",
            self.host,
            body.len()
        );
        self.writer.write_all(head.as_bytes())?;
        self.writer.write_all(body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        if !chunked {
            let mut buf = vec![0u8; length];
            self.reader.read_exact(&mut buf)?;
            return Ok((status, length));
        }
        let mut total = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            let mut buf = vec![0u8; size + 2];
            self.reader.read_exact(&mut buf)?;
            total += size;
            if size == 0 {
                return Ok((status, total));
            }
        }
    }
}

/// Scrapes `/metrics` over `connections` keep-alive connections for `duration`; scrapes per second.
fn scrape_rate(addr: SocketAddr, connections: usize, duration: Duration) -> (f64, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let size = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let (stop, count, size) = (stop.clone(), count.clone(), size.clone());
            std::thread::spawn(move || {
                let Ok(mut conn) = Conn::open(addr) else { return };
                while !stop.load(Ordering::Relaxed) {
                    match conn.request("GET", "/metrics", b"") {
                        Ok((200, n)) => {
                            count.fetch_add(1, Ordering::Relaxed);
                            size.store(n as u64, Ordering::Relaxed);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    (
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        size.load(Ordering::Relaxed) as usize,
    )
}

fn proc_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(key)?
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .ok()
    })
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // After the comm: state is not numeric, so index 10/11 here are utime/stime (fields 14/15).
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

fn wait_ready(addr: SocketAddr, path: &str) {
    for _ in 0..200 {
        if let Ok(mut c) = Conn::open(addr)
            && let Ok((200, _)) = c.request("GET", path, b"")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{addr}{path} did not become ready");
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn events_batch(first_round: u64, rounds: u64, clients: u64) -> Vec<u8> {
    let mut body = String::new();
    for round in first_round..first_round + rounds {
        for c in 0..clients {
            body.push_str(&format!(
                "{{\"type\":\"client_update\",\"run_id\":\"bench\",\"round\":{round},\"client_id\":\"site-{c}\",\"loss\":{:.4},\"accuracy\":0.8,\"training_seconds\":12.5,\"samples\":600}}\n",
                1.0 / (round as f64 + 1.0)
            ));
        }
        body.push_str(&format!(
            "{{\"type\":\"round_end\",\"run_id\":\"bench\",\"round\":{round},\"global_loss\":0.5,\"global_accuracy\":0.9,\"participants\":{clients},\"expected_participants\":{clients},\"duration_seconds\":30.5}}\n"
        ));
    }
    body.into_bytes()
}

fn create_kafka_workload(bootstrap: &str) -> (Vec<String>, Vec<String>) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let topics: Vec<String> = (1..=3).map(|i| format!("bench-topic-{i}")).collect();
    let groups: Vec<String> = (1..=2).map(|i| format!("bench-group-{i}")).collect();
    let admin: Result<AdminClient<DefaultClientContext>, _> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create();
    if let Ok(admin) = admin {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1)))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            let _ = rt.block_on(admin.create_topics(&new, &AdminOptions::new()));
        }
    }
    (topics, groups)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let agent_bin = arg("--agent").unwrap_or_else(|| "target/agent/flmon-agent".into());
    let node_exporter = arg("--node-exporter").unwrap_or_else(|| "/usr/bin/prometheus-node-exporter".into());
    let kafka = arg("--kafka");
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10);

    let ne_port = free_port();
    let ne = Guard(
        Command::new(&node_exporter)
            .arg(format!("--web.listen-address=127.0.0.1:{ne_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node_exporter starts"),
    );
    let (metrics_port, ingest_port) = (free_port(), free_port());
    let mut cmd = Command::new(&agent_bin);
    cmd.args([
        "--metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
        "--ingest-addr",
        &format!("127.0.0.1:{ingest_port}"),
        "--role",
        "server",
        "--pod-uid",
        "bench-uid",
        "--host-scope",
        "pod",
        "--gpu-mode",
        "NodeVisible",
    ]);
    if let Some(bootstrap) = &kafka {
        let (topics, groups) = create_kafka_workload(bootstrap);
        cmd.args([
            "--kafka-bootstrap-servers",
            bootstrap,
            "--kafka-topics",
            &topics.join(","),
            "--kafka-consumer-groups",
            &groups.join(","),
        ]);
    }
    let agent = Guard(
        cmd.env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the agent starts"),
    );
    let ne_addr: SocketAddr = format!("127.0.0.1:{ne_port}").parse().expect("address");
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().expect("address");
    let ingest_addr: SocketAddr = format!("127.0.0.1:{ingest_port}").parse().expect("address");
    wait_ready(ne_addr, "/metrics");
    wait_ready(metrics_addr, "/readyz");

    // Fill the default history: 20 clients over 1000 rounds, batched.
    let mut ingest = Conn::open(ingest_addr).expect("ingest connection");
    for start in (0..1000).step_by(50) {
        let _ = ingest.request("POST", "/v1/events", &events_batch(start, 50, 20));
    }

    // Ingest throughput: 1008-event batches (48 rounds of 20 clients + round ends), all new keys,
    // generated before the clock starts.
    let batches: Vec<Vec<u8>> = (0..200).map(|i| events_batch(10_000 + i * 48, 48, 20)).collect();
    let per_batch = 48 * 21u64;
    let start = Instant::now();
    let mut sent = 0u64;
    for body in &batches {
        if start.elapsed() > Duration::from_secs(seconds / 2 + 1) {
            break;
        }
        match ingest.request("POST", "/v1/events", body) {
            Ok((200, _)) => sent += per_batch,
            other => {
                eprintln!("ingest failed: {other:?}");
                break;
            }
        }
    }
    let ingest_rate = sent as f64 / start.elapsed().as_secs_f64();
    drop(batches);

    let (ne_rate, ne_size) = scrape_rate(ne_addr, 4, Duration::from_secs(seconds));
    let (agent_rate, agent_size) = scrape_rate(metrics_addr, 4, Duration::from_secs(seconds));

    // Steady state: let both idle a while, then read RSS and the agent's CPU over a window.
    std::thread::sleep(Duration::from_secs(5));
    let window = Duration::from_secs(seconds * 3);
    let (a0, n0) = (cpu_seconds(agent.0.id()), cpu_seconds(ne.0.id()));
    std::thread::sleep(window);
    let (a1, n1) = (cpu_seconds(agent.0.id()), cpu_seconds(ne.0.id()));
    let agent_cpu = (a1 - a0) / window.as_secs_f64() * 100.0;
    let ne_cpu = (n1 - n0) / window.as_secs_f64() * 100.0;
    let agent_rss = proc_field(agent.0.id(), "VmRSS:").unwrap_or(0);
    let ne_rss = proc_field(ne.0.id(), "VmRSS:").unwrap_or(0);

    println!(
        "workload: default history filled (1000 rounds x 20 clients){}",
        if kafka.is_some() {
            ", Kafka: 3 topics x 3 partitions, 2 groups"
        } else {
            ", no Kafka"
        }
    );
    println!("scrape throughput, 4 keep-alive connections, {seconds} s each:");
    println!("  node_exporter {ne_rate:>10.0}/s  ({ne_size} bytes)");
    println!("  flmon-agent   {agent_rate:>10.0}/s  ({agent_size} bytes)");
    println!(
        "  ratio         {:>10.1}x  (target >= 100x)",
        agent_rate / ne_rate.max(1e-9)
    );
    println!("resident memory, steady:");
    println!("  node_exporter {:>10.1} MiB", ne_rss as f64 / 1024.0);
    println!("  flmon-agent   {:>10.1} MiB", agent_rss as f64 / 1024.0);
    println!(
        "  ratio         {:>10.2}   (target <= 0.5)",
        agent_rss as f64 / ne_rss.max(1) as f64
    );
    println!(
        "  flmon-agent: anonymous {:.1} MiB, file-backed {:.1} MiB (the binary's pages; larger in a dev build)",
        proc_field(agent.0.id(), "RssAnon:").unwrap_or(0) as f64 / 1024.0,
        proc_field(agent.0.id(), "RssFile:").unwrap_or(0) as f64 / 1024.0
    );
    println!(
        "  node_exporter: anonymous {:.1} MiB, file-backed {:.1} MiB",
        proc_field(ne.0.id(), "RssAnon:").unwrap_or(0) as f64 / 1024.0,
        proc_field(ne.0.id(), "RssFile:").unwrap_or(0) as f64 / 1024.0
    );
    println!("CPU while idle at 5 s sampling, over {} s:", window.as_secs());
    println!("  flmon-agent   {agent_cpu:>10.3} % of a core (target <= 1 %)");
    println!("  node_exporter {ne_cpu:>10.3} % of a core (not scraped)");
    println!("batched event ingest over HTTP, 1 connection, 1008-event batches:");
    println!("  flmon-agent   {ingest_rate:>10.0} events/s (target >= 100000)");
}
