//! Audit sinks end to end: a JSON Lines file (rotated), a syslog receiver over TCP and two
//! webhook receivers (one filtered) written here, which go down and come back; Warden itself is
//! stopped and started. Every event arrives at every sink, in order, none twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use sha2::Digest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::harness::Server;

/// What the receivers got: per receiver, the sequence numbers in arrival order (and the
/// actions, and for the syslog receiver the PRI of each message).
#[derive(Default)]
struct Got {
    syslog: Vec<(u64, String, u32)>,
    hooks: BTreeMap<String, Vec<(u64, String)>>,
    bad_signatures: usize,
}

type Shared = Arc<Mutex<Got>>;

/// A syslog receiver (octet-counted frames) on `port`; aborting the task closes the listener and
/// every connection.
fn syslog_receiver(port: u16, got: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let mut conns = JoinSet::new();
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let got = got.clone();
            conns.spawn(async move {
                let mut r = BufReader::new(sock);
                loop {
                    let mut len = Vec::new();
                    if r.read_until(b' ', &mut len).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let n: usize = std::str::from_utf8(&len[..len.len() - 1])
                        .unwrap()
                        .parse()
                        .unwrap();
                    let mut msg = vec![0u8; n];
                    r.read_exact(&mut msg).await.unwrap();
                    let msg = String::from_utf8(msg).unwrap();
                    let pri: u32 = msg[1..msg.find('>').unwrap()].parse().unwrap();
                    let json = msg.split('\u{feff}').nth(1).unwrap();
                    let e: Value = serde_json::from_str(json).unwrap();
                    assert!(msg.contains(&format!("seq=\"{}\"", e["seq"])), "{msg}");
                    got.lock().unwrap().syslog.push((
                        e["seq"].as_u64().unwrap(),
                        e["action"].as_str().unwrap().to_owned(),
                        pri,
                    ));
                }
            });
        }
    })
}

/// An HTTP receiver on `port`: one request per connection (`connection: close`), 200 to every
/// POST; records the batch's events under the request path.
fn hook_receiver(port: u16, got: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let mut conns = JoinSet::new();
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let got = got.clone();
            conns.spawn(async move {
                let mut r = BufReader::new(sock);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let path = head.split_whitespace().nth(1).unwrap().to_owned();
                // Header names are case-insensitive; values (the JWS) are not.
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let len: usize = header("content-length").unwrap().trim().parse().unwrap();
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).await.unwrap();
                // The signature names the body's digest.
                let signed = header("warden-signature")
                    .and_then(|jws| {
                        let payload = jws.trim().split('.').nth(1)?.to_owned();
                        let claims: Value = serde_json::from_slice(
                            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                                .decode(payload)
                                .ok()?,
                        )
                        .ok()?;
                        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(sha2::Sha256::digest(&body));
                        Some(claims["body_sha256"] == digest.as_str())
                    })
                    .unwrap_or(false);
                let batch: Value = serde_json::from_slice(&body).unwrap();
                {
                    let mut g = got.lock().unwrap();
                    if !signed {
                        g.bad_signatures += 1;
                    }
                    let list = g.hooks.entry(path).or_default();
                    for e in batch["events"].as_array().unwrap() {
                        list.push((
                            e["seq"].as_u64().unwrap(),
                            e["action"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
                let mut sock = r.into_inner();
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = sock.shutdown().await;
            });
        }
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sinks(s: &Server) -> BTreeMap<String, Value> {
    s.json(&s.admin, &["audit", "sinks"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

/// Waits until every sink has caught up with the log; returns the cursor they reached.
async fn caught_up(s: &Server) -> u64 {
    for _ in 0..600 {
        let st = sinks(s);
        let cursors: Vec<u64> = st.values().map(|v| v["cursor"].as_u64().unwrap()).collect();
        if st.len() == 4
            && st.values().all(|v| v["lag"] == 0)
            && cursors.iter().all(|c| *c == cursors[0] && *c > 0)
        {
            return cursors[0];
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sinks did not catch up: {:?}", sinks(s));
}

fn teams(s: &Server, from: usize, to: usize) {
    for i in from..to {
        s.ok(&s.admin, &["team", "create", &format!("team-{i:03}")]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_reaches_every_sink_in_order_across_outages_and_restarts() {
    let (syslog_port, hook_port) = (free_port(), free_port());
    let got: Shared = Arc::default();
    let mut s = Server::start();
    let config = s.data_dir().join("warden.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"
[[audit.sinks]]
name = "archive"
type = "file"
path = "audit/warden.jsonl"
rotate_bytes = 8192
keep = 1000

[[audit.sinks]]
name = "siem"
type = "syslog"
address = "127.0.0.1:{syslog_port}"
batch = 7

[[audit.sinks]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{hook_port}/all"
batch = 5

[[audit.sinks]]
name = "teams-only"
type = "webhook"
url = "http://127.0.0.1:{hook_port}/teams"
actions = ["team.*"]
"#
    ));
    std::fs::write(&config, text).unwrap();
    s.restart();

    // Up: events flow.
    let mut syslog = syslog_receiver(syslog_port, got.clone());
    let mut hooks = hook_receiver(hook_port, got.clone());
    teams(&s, 0, 10);
    caught_up(&s).await;

    // Down: the receivers stop (listeners and connections closed); events keep coming.
    syslog.abort();
    hooks.abort();
    let _ = (&mut syslog).await;
    let _ = (&mut hooks).await;
    teams(&s, 10, 25);
    let mut failing = BTreeMap::new();
    for _ in 0..100 {
        failing = sinks(&s);
        if ["siem", "hook", "teams-only"]
            .iter()
            .all(|n| failing[*n]["failures"].as_u64().unwrap_or(0) > 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in ["siem", "hook", "teams-only"] {
        assert!(
            failing[n]["failures"].as_u64().unwrap() > 0 && failing[n]["lag"].as_u64().unwrap() > 0,
            "{n} should be failing and behind: {failing:?}"
        );
        assert!(failing[n]["last_error"].as_str().is_some());
    }
    assert_eq!(failing["archive"]["failures"], 0);

    // Back: everything queued arrives.
    let syslog = syslog_receiver(syslog_port, got.clone());
    let hooks = hook_receiver(hook_port, got.clone());
    teams(&s, 25, 30);
    caught_up(&s).await;

    // Warden stops and starts: the cursors are durable, nothing is sent again.
    assert!(s.stop().success());
    s.start_again();
    teams(&s, 30, 40);
    let head = caught_up(&s).await;
    let listed = s.json(&s.admin, &["audit", "list", "--limit", "1000"]);
    let all: Vec<(u64, String)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(seq, _)| *seq <= head)
        .collect();
    assert_eq!(all.len() as u64, head, "the log from 1 to {head}");

    let g = got.lock().unwrap();
    let seqs = |v: &[(u64, String)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
    let expected = seqs(&all);
    let syslog_got: Vec<(u64, String)> = g.syslog.iter().map(|(s, a, _)| (*s, a.clone())).collect();
    assert_eq!(seqs(&syslog_got), expected, "syslog: all, in order, once");
    assert!(
        g.syslog
            .iter()
            .all(|(_, _, pri)| *pri == 13 * 8 + 6 || *pri == 13 * 8 + 4),
        "facility log audit"
    );
    assert_eq!(
        seqs(&g.hooks["/all"]),
        expected,
        "webhook: all, in order, once"
    );
    let team_events: Vec<(u64, String)> = all
        .iter()
        .filter(|(_, a)| a.starts_with("team."))
        .cloned()
        .collect();
    assert_eq!(team_events.len(), 40);
    assert_eq!(
        g.hooks["/teams"], team_events,
        "the filtered webhook: team.* only"
    );
    assert_eq!(g.bad_signatures, 0, "every batch is signed over its body");

    // The file sink: rotated files, oldest first, then the current one.
    let dir = s.data_dir().join("audit");
    let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let n = p
                .extension()
                .and_then(|x| x.to_str())
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
            (n, p)
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    assert!(files.len() > 2, "rotated at 8 KiB: {files:?}");
    let mut lines = Vec::new();
    for (_, p) in &files {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.len() <= 8192 || text.lines().count() == 1, "{p:?}");
        for l in text.lines() {
            let e: Value = serde_json::from_str(l).unwrap();
            lines.push(e["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(lines, expected, "file: all, in order, once");
    drop(g);
    syslog.abort();
    hooks.abort();
}
