//! `archlab serve` over real HTTP on a free loopback port: scores equal `archlab score`'s,
//! batched equals unbatched, generation and stop strings, the bad requests, a client that
//! disconnects, a port already taken, and Ctrl-C.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::temp_dir;

fn archlab(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_archlab")).args(args).current_dir(cwd).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A running server, stopped (SIGKILL) if a test fails before it stops it itself.
struct Server {
    child: Child,
    addr: String,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(run: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_archlab"))
        .args(["serve", "--run"])
        .arg(run)
        .args(["--device", "cpu", "--port", "0"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, stderr) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the server did not start: {:?}", child.try_wait()));
        if let Some(rest) = line.split("http://").nth(1) {
            let addr = rest.split('/').next().unwrap().to_string();
            return Server { child, addr, stderr };
        }
    }
}

/// One HTTP/1.1 request; returns the status and the body parsed as JSON.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status: u16 = response.split(' ').nth(1).unwrap().parse().unwrap();
    let payload = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::from_str(payload).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"));
    (status, json)
}

fn complete(addr: &str, request: Value) -> Value {
    let (status, body) = http(addr, "POST", "/v1/completions", &request.to_string());
    assert_eq!(status, 200, "{body}");
    body
}

/// `archlab score`'s log-probs of each sequence.
fn scores(dir: &Path, run: &Path, sequences: &[Vec<u32>]) -> Vec<Vec<Option<f64>>> {
    let tokens = serde_json::to_string(sequences).unwrap();
    let (ok, stdout, stderr) =
        archlab(&["score", "--run", run.to_str().unwrap(), "--device", "cpu", "--tokens", &tokens], dir);
    assert!(ok, "{stderr}");
    let mut out = vec![Vec::new(); sequences.len()];
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        out[v["sequence"].as_u64().unwrap() as usize].push(v["logprob"].as_f64());
    }
    out
}

fn assert_close(got: &Value, want: &[Option<f64>], what: &str) {
    let got = got.as_array().unwrap();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match (g.as_f64(), w) {
            (None, None) => {}
            (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-5, "{what}, position {i}: {g} vs {w}"),
            _ => panic!("{what}, position {i}: {g} vs {w:?}"),
        }
    }
}

fn trained_run(dir: &Path) -> PathBuf {
    let sets = [
        "data.builtin_bytes=100000",
        "model.d_model=32",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.d_ff=64",
        "model.max_seq_len=64",
        // Enough steps that greedy text is not one repeated byte (the stop-string check cuts it).
        "train.max_steps=400",
        "train.lr=3e-3",
        "train.seq_len=64",
        "train.batch_size=8",
        "eval.every=400",
        "eval.batches=1",
    ];
    let mut args = vec!["train", "--device", "cpu", "--quiet", "--run-dir", "run"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let (ok, _, stderr) = archlab(&args, dir);
    assert!(ok, "train failed:\n{stderr}");
    dir.join("run")
}

#[test]
fn serves_scores_generations_and_refusals_over_http() {
    let dir = temp_dir("serve");
    let run = trained_run(&dir);
    let server = start(&run, &["--max-batch", "8", "--max-body-bytes", "65536", "--max-logprobs", "5"]);
    let addr = server.addr.clone();

    // The remote-tokenizer endpoints lm-evaluation-harness probes.
    let (status, models) = http(&addr, "GET", "/v1/models", "");
    assert_eq!((status, models["data"][0]["id"].as_str()), (200, Some("run")));
    let (_, info) = http(&addr, "GET", "/tokenizer_info", "");
    assert_eq!(info["eos_token"], "\u{3}", "the byte tokenizer's end-of-text byte");
    let (_, tokens) = http(&addr, "POST", "/tokenize", r#"{"prompt": "Once", "add_special_tokens": false}"#);
    assert_eq!(tokens["tokens"], json!([79, 110, 99, 101]));
    let (_, text) = http(&addr, "POST", "/detokenize", r#"{"tokens": [79, 110, 99, 101]}"#);
    assert_eq!(text["prompt"], "Once");

    // Log-likelihood requests as lm-eval sends them: one entry per prompt token (the first
    // null) and exactly one generated token, scores equal to `archlab score`'s.
    let sequences: Vec<Vec<u32>> =
        ["Once upon a time", "The cat sat", "A", "It was a dark and stormy night; the rain fell"]
            .iter()
            .map(|s| s.bytes().map(u32::from).collect())
            .collect();
    let reference = scores(&dir, &run, &sequences);
    let request = |prompt: Value| {
        json!({"model": "run", "prompt": prompt, "temperature": 0, "max_tokens": 1, "logprobs": 1,
               "seed": 1234, "echo": true})
    };
    let batch = complete(&addr, request(json!(sequences)));
    let choices = batch["choices"].as_array().unwrap();
    assert_eq!(choices.len(), sequences.len());
    for (i, (choice, want)) in choices.iter().zip(&reference).enumerate() {
        assert_eq!(choice["index"], i);
        let lp = &choice["logprobs"];
        assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), sequences[i].len() + 1, "prompt {i}");
        assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null());
        assert_close(&lp["token_logprobs"], want, &format!("batched prompt {i}"));
        // Greedy: the generated token is the most likely one, listed in its top_logprobs.
        let last = lp["token_logprobs"].as_array().unwrap().last().unwrap().as_f64().unwrap();
        let top = lp["top_logprobs"].as_array().unwrap().last().unwrap().as_object().unwrap().clone();
        assert_eq!(top.values().map(|v| v.as_f64().unwrap()).fold(f64::MIN, f64::max), last);
        let echoed = String::from_utf8(sequences[i].iter().map(|&b| b as u8).collect()).unwrap();
        assert!(choice["text"].as_str().unwrap().starts_with(&echoed), "echo: {}", choice["text"]);
    }
    assert_eq!(
        batch["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
        sequences.iter().map(Vec::len).sum::<usize>()
    );

    // Concurrent clients, batched by the server: the same scores.
    let answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|c| {
                let (addr, prompt) = (&addr, json!([sequences[c % sequences.len()]]));
                s.spawn(move || complete(addr, request(prompt)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (c, answer) in answers.iter().enumerate() {
        let want = &reference[c % sequences.len()];
        assert_close(&answer["choices"][0]["logprobs"]["token_logprobs"], want, &format!("client {c}"));
    }

    // Greedy generation, with and without a stop string cut from the text.
    let greedy = |stop: Value| {
        complete(
            &addr,
            json!({"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "stop": stop}),
        )
    };
    let free = greedy(Value::Null);
    let text = free["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(free["choices"][0]["finish_reason"], "length");
    assert_eq!(free["usage"]["completion_tokens"], 24);
    assert_eq!(greedy(Value::Null)["choices"][0]["text"], text.as_str(), "greedy is deterministic");
    let stop: String = text.chars().skip(3).take(2).collect();
    let stopped = greedy(json!([stop]));
    let cut = &text[..text.find(&stop).unwrap()];
    assert_eq!(stopped["choices"][0]["text"], cut, "text {text:?} cut at {stop:?}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    // Concurrent generations from prompts of different lengths, decoded together in one batch:
    // each gets the tokens and log-probs it gets alone (sampled, seeded per request).
    let prompts = ["Once upon a time", "The", "It was a dark and stormy night", "A cat"];
    let sampled =
        |p: &str| json!({"prompt": p, "max_tokens": 16, "temperature": 0.8, "seed": 7, "logprobs": 2});
    let alone: Vec<Value> = prompts.iter().map(|p| complete(&addr, sampled(p))).collect();
    let together: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|c| {
                let (addr, request) = (&addr, sampled(prompts[c % prompts.len()]));
                s.spawn(move || complete(addr, request))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (c, answer) in together.iter().enumerate() {
        let (got, want) = (&answer["choices"][0], &alone[c % prompts.len()]["choices"][0]);
        assert_eq!(got["text"], want["text"], "client {c}: batched generation drew other tokens");
        let want: Vec<Option<f64>> =
            want["logprobs"]["token_logprobs"].as_array().unwrap().iter().map(Value::as_f64).collect();
        assert_eq!(want.len(), 16);
        assert_close(&got["logprobs"]["token_logprobs"], &want, &format!("generation client {c}"));
    }

    // Bad requests: OpenAI-style 400s that name the problem; the server carries on.
    let long = "x".repeat(65);
    let big = format!(r#"{{"prompt": "{}"}}"#, "y".repeat(70_000));
    for (body, says) in [
        ("{not json", "not valid JSON"),
        (&format!(r#"{{"prompt": "{long}", "max_tokens": 0}}"#) as &str, "context of 64"),
        (r#"{"prompt": "abc", "max_tokens": 63}"#, "max_tokens=63"),
        (r#"{"prompt": "a", "logprobs": 6}"#, "cap of 5"),
        (r#"{"prompt": "a", "n": 2}"#, "n must be 1"),
        (r#"{"prompt": [1, 300]}"#, "outside the model's vocabulary"),
        (&big, "over 65536 bytes"),
    ] {
        let (status, err) = http(&addr, "POST", "/v1/completions", body);
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{}: {err}", &body[..body.len().min(60)]);
        assert!(message.contains(says), "{}: {message}", &body[..body.len().min(60)]);
    }
    let (status, err) = http(&addr, "GET", "/v2/nothing", "");
    assert_eq!(status, 404);
    assert!(err["error"]["message"].as_str().unwrap().contains("/v1/completions"));

    // A client that sends a long generation and hangs up does not hold the server.
    {
        let mut s = TcpStream::connect(&addr).unwrap();
        let body = r#"{"prompt": "Once", "max_tokens": 60, "temperature": 0}"#;
        write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .unwrap();
    }
    let again = complete(&addr, request(json!([sequences[0]])));
    assert_close(&again["choices"][0]["logprobs"]["token_logprobs"], &reference[0], "after a disconnect");

    // A port already taken is refused before the model loads.
    let port = addr.rsplit(':').next().unwrap();
    let (ok, _, stderr) =
        archlab(&["serve", "--run", run.to_str().unwrap(), "--device", "cpu", "--port", port], &dir);
    assert!(!ok && stderr.contains("cannot listen") && stderr.contains("--port"), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");

    // Ctrl-C stops it cleanly.
    let mut server = server;
    let pid = server.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let said: Vec<String> = server.stderr.try_iter().collect();
    assert!(said.iter().any(|l| l.contains("stopped")), "{said:?}");
}
