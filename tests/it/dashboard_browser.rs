//! The dashboard page in a real browser: headless Chromium loads the page `flmon-operator render`
//! writes (the same HTML the operator's dashboard serves), takes a screenshot, logs no console
//! message, and requests nothing beyond the page's own host.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use flmon_tests::tool;

fn histories(dir: &std::path::Path) -> String {
    let rounds: Vec<String> = (1..=30)
        .map(|r| {
            format!(
                r#"{{"seq": {r}, "run_id": "run-1", "round": {r}, "global_loss": {}, "global_accuracy": {}, "participants": 3, "expected_participants": 3, "duration_seconds": 2.5}}"#,
                2.0 / f64::from(r),
                (0.4 + 0.02 * f64::from(r)).min(0.97)
            )
        })
        .collect();
    let server = dir.join("server.json");
    std::fs::write(
        &server,
        format!(
            r#"{{"schemaVersion": 1, "agent": {{"pod": "fl-server", "uid": "u1", "role": "server"}}, "nextSeq": 31, "oldestSeq": 1, "rounds": [{}]}}"#,
            rounds.join(",")
        ),
    )
    .expect("write the history");
    server.display().to_string()
}

#[test]
fn the_dashboard_page_renders_in_chromium_without_console_errors_or_outside_requests() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let operator = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("flmon-operator");
    assert!(
        operator.exists(),
        "build flmon-operator first (cargo test --workspace does)"
    );
    let out = dir.path().join("site");
    let status = Command::new(&operator)
        .args(["render", "--history", &histories(dir.path()), "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(out.join("index.html").is_file());

    // Serve the folder on loopback, as the operator serves its page.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(tool("python"))
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));

    let shot = dir.path().join("page.png");
    let netlog = dir.path().join("net.json");
    let browser = Command::new(tool("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            // The browser's own network-time query is not the page's.
            "--disable-features=NetworkTimeServiceQuerying",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,2400",
            "--virtual-time-budget=3000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://127.0.0.1:{port}/index.html"))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stderr = String::from_utf8_lossy(&browser.stderr);
    assert!(browser.status.success(), "chromium failed:\n{stderr}");

    let png = std::fs::metadata(&shot).expect("a screenshot");
    assert!(png.len() > 20_000, "the screenshot is too small to show the page");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");

    // Every request the page made (the net log's requests whose initiator is the page's origin)
    // goes to the page's own host or is an inline data: URI. The browser's own background
    // requests (updates, time) carry no such initiator and are not the page's.
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&netlog).expect("the net log")).expect("net log JSON");
    let origin = format!("http://127.0.0.1:{port}");
    let mut page_requests = 0;
    let mut own_host_requests = 0;
    for event in log["events"].as_array().expect("net log events") {
        let params = &event["params"];
        let Some(url) = params["url"].as_str() else {
            continue;
        };
        if url.starts_with(&origin) {
            own_host_requests += 1;
        }
        if params["initiator"].as_str() == Some(origin.as_str()) {
            page_requests += 1;
            assert!(
                url.starts_with(&origin) || url.starts_with("data:"),
                "the page requested {url}"
            );
        }
    }
    assert!(
        own_host_requests > 0,
        "the net log shows no request for the page itself"
    );
    eprintln!("{own_host_requests} request events for the page's host, {page_requests} made by the page");
}
