#!/usr/bin/env python3
"""Runs lm-evaluation-harness against `archlab serve`, offline, and checks what it measured.

1. Trains a short byte-level run on PG19 books (all but the two held out), or takes `--run`.
2. Builds a LAMBADA-style task from the two held-out books, as a local JSONL file that
   lm-eval's `json` loader reads with no download: each document is a passage (context) and
   the word that follows it (continuation); metrics: accuracy (greedy) and perplexity.
3. Starts `archlab serve` on a free loopback port and runs lm-eval's `local-completions`
   model against it with the server's own tokenizer (`tokenizer_backend=remote`), token-id
   requests, 4 concurrent clients.
4. Checks every log-likelihood lm-eval logged against `archlab score` on the same tokens
   (max |difference| must stay below 1e-4, summed over the continuation).
5. Measures throughput against a server that batches (`--max-batch 32`) and one that does not
   (`--max-batch 1`): the same 64 log-likelihood requests from 8 concurrent clients, and the
   same 32 greedy generations from 8 concurrent clients (which must generate the same text on
   both servers).

Prints a Markdown report (committed as bench/results/lm-eval.md); exits non-zero when a
check fails.

    pip install 'lm-eval[api]'
    cargo build --release
    python tools/lm_eval_check.py --archlab target/release/archlab --work /tmp/lm-eval
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

BOOKS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pg19-sample"
HELD_OUT = 2  # the smallest book ids form the task; the rest train the model
DOCS = 200
CONTEXT_BYTES = 200
TOLERANCE = 1e-4


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "CPU")
    return f"{os.cpu_count()}-core {cpu} ({platform.machine()} {platform.system()})"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def books():
    all_books = sorted(BOOKS.glob("*.txt"), key=lambda p: int(p.stem))
    if not all_books:
        sys.exit(f"no PG19 books in {BOOKS}")
    return all_books[:HELD_OUT], all_books[HELD_OUT:]


def train(archlab, work, steps):
    held, training = books()
    src = work / "train-books"
    src.mkdir(parents=True, exist_ok=True)
    for b in training:
        link = src / b.name
        if not link.exists():
            link.symlink_to(b)
    run = work / "run"
    if not (run / "best.ckpt").exists():
        sh([archlab, "train", "--preset", "tiny", "--device", "cpu", "--quiet", "--run-dir", str(run),
            "--set", f'data.source="{src}"', "--set", f"train.max_steps={steps}"])
    return run


def task(work, max_len):
    """Passages of the held-out books ending just before a word; the word is the target."""
    held, _ = books()
    rng = random.Random(0)
    docs = []
    for book in held:
        text = re.sub(r"\s+", " ", book.read_text(encoding="utf-8", errors="replace"))
        text = text.encode("ascii", errors="ignore").decode()
        for _ in range(DOCS // HELD_OUT):
            while True:
                start = rng.randrange(0, len(text) - 2 * CONTEXT_BYTES)
                cut = text.find(" ", start + CONTEXT_BYTES)
                end = text.find(" ", cut + 1)
                word = text[cut:end]
                if re.fullmatch(r" [A-Za-z]{3,}", word) and end - start < max_len - 1:
                    break
            docs.append({"context": text[start:cut], "continuation": word})
    data = work / "pg19_lastword.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    tasks = work / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "archlab_pg19_lastword.yaml").write_text(
        f"""task: archlab_pg19_lastword
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{continuation}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
    )
    return tasks, docs


class Server:
    def __init__(self, archlab, run, *extra):
        self.proc = subprocess.Popen(
            [archlab, "serve", "--run", str(run), "--device", "cpu", "--port", "0", *extra],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        for line in self.proc.stderr:
            if "http://" in line:
                self.addr = line.split("http://")[1].split("/")[0]
                break
        else:
            sys.exit("the server did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def stop(self):
        self.proc.send_signal(2)  # SIGINT, as Ctrl-C
        self.proc.wait(timeout=60)
        return self.proc.returncode


def post(addr, body):
    req = urllib.request.Request(f"http://{addr}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


SCORING = {"max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
GENERATION = {"max_tokens": 32, "temperature": 0}


def throughput(archlab, run, prompts, batch, request=SCORING):
    """Requests/s of 8 clients sending one request each at a time, and the answers' texts."""
    server = Server(archlab, run, "--max-batch", str(batch))
    queue = list(enumerate(prompts))
    texts = [None] * len(prompts)
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                if not queue:
                    return
                i, p = queue.pop()
            texts[i] = post(server.addr, {"prompt": [p], **request})["choices"][0]["text"]

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    seconds = time.perf_counter() - t0
    server.stop()
    return len(prompts) / seconds, texts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--archlab", default="target/release/archlab")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lm-eval"))
    ap.add_argument("--run", type=Path)
    ap.add_argument("--steps", type=int, default=300, help="training steps of the model it trains")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    archlab = str(Path(args.archlab).resolve())
    run = args.run or train(archlab, args.work, args.steps)
    config = (run / "config.toml").read_text()
    max_len = int(re.search(r"^max_seq_len = (\d+)", config, re.M).group(1))
    tasks, docs = task(args.work, max_len)

    server = Server(archlab, run)
    out = args.work / "out"
    if out.exists():
        shutil.rmtree(out)  # samples of an earlier run would be counted
    cmd = ["lm_eval", "--model", "local-completions", "--tasks", "archlab_pg19_lastword",
           "--include_path", str(tasks),
           "--model_args", f"model=archlab,base_url=http://{server.addr}/v1/completions,"
           f"tokenizer_backend=remote,tokenized_requests=True,max_length={max_len},num_concurrent=4,max_retries=1",
           "--batch_size", "8", "--log_samples", "--output_path", str(out)]
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    stopped = server.stop()
    if result.returncode != 0:
        print(result.stdout, result.stderr, file=sys.stderr)
        sys.exit("lm_eval failed")
    table = "\n".join(l for l in result.stdout.splitlines() if l.startswith("|"))

    # Every logged log-likelihood against `archlab score` on the same byte tokens.
    samples = [json.loads(l) for f in sorted(out.rglob("samples_*.jsonl")) for l in f.open()]
    sequences = [list((s["doc"]["context"] + s["doc"]["continuation"]).encode()) for s in samples]
    logprobs = [[] for _ in sequences]
    for first in range(0, len(sequences), 40):  # 40 at a time: one argument stays under 128 KiB
        chunk = json.dumps(sequences[first:first + 40])
        scored = sh([archlab, "score", "--run", str(run), "--device", "cpu", "--tokens", chunk])
        for line in scored.stdout.splitlines():
            v = json.loads(line)
            logprobs[first + v["sequence"]].append(v["logprob"])
    worst = 0.0
    for s, lp in zip(samples, logprobs):
        n_cont = len(s["doc"]["continuation"].encode())
        want = sum(lp[-n_cont:])
        got = s["resps"][0][0][0]
        worst = max(worst, abs(float(got) - want))
    ok = worst < TOLERANCE and stopped == 0 and len(samples) == len(docs)

    texts = [(d["context"] + d["continuation"]).encode() for d in docs[:64]]
    rates = {n: {b: throughput(archlab, run, [list(t[-n:]) for t in texts], b)[0] for b in (1, 32)}
             for n in (16, 64, CONTEXT_BYTES)}
    # Prompts of different lengths (8 to 64 bytes), so that the batch decodes rows at different positions.
    gen_prompts = [list(t[-(8 + 7 * i % 57):]) for i, t in enumerate(texts[:32])]
    generated = {b: throughput(archlab, run, gen_prompts, b, GENERATION) for b in (1, 32)}
    same_text = generated[1][1] == generated[32][1]
    ok = ok and same_text
    version = sh([sys.executable, "-c", "import lm_eval; print(lm_eval.__version__)"]).stdout.strip()
    print("# lm-evaluation-harness against `archlab serve`\n")
    reused = f" --run {args.run}" if args.run else ""
    print(f"Made by `python tools/lm_eval_check.py --archlab {args.archlab} --work /tmp/lm-eval{reused} --steps {args.steps}` "
          f"on {machine()}, {time.strftime('%Y-%m-%d')}, lm-eval {version}.\n")
    print(f"Model: `archlab train --preset tiny --set train.max_steps={args.steps}` on {len(books()[1])} PG19 books "
          f"(byte tokenizer, context {max_len}). Task: {len(docs)} passages of the {HELD_OUT} held-out "
          f"books, each about {CONTEXT_BYTES} bytes followed by the word to predict (a local JSONL task "
          "in the style of LAMBADA; `acc` is lm-eval's greedy match of the whole word).\n")
    print("The lm-eval command (the server on a free loopback port):\n")
    print("```\n" + " ".join(c if " " not in c else f"'{c}'" for c in cmd).replace(str(args.work), "$WORK") + "\n```\n")
    print(table + "\n")
    print(f"lm-eval took {seconds:.1f} s. Its {len(samples)} logged log-likelihoods against `archlab score` "
          f"on the same tokens: max |difference| {worst:.2e} (tolerance {TOLERANCE:g}). "
          f"The server stopped on SIGINT with status {stopped}.\n")
    print("## Scoring throughput, batched against unbatched\n")
    print(f"{len(texts)} log-likelihood requests (`echo`, `max_tokens: 1`, the last n bytes of the task's "
          "passages) from 8 concurrent clients, each sending its next request when answered; CPU:\n")
    print("| prompt tokens | `--max-batch 1` requests/s | `--max-batch 32` requests/s | batched / unbatched |")
    print("|---|---|---|---|")
    for n, r in rates.items():
        print(f"| {n} | {r[1]:.1f} | {r[32]:.1f} | {r[32] / r[1]:.2f}x |")
    print("\n## Generation throughput, batched against unbatched\n")
    print(f"{len(gen_prompts)} greedy generations of {GENERATION['max_tokens']} tokens from prompts of 8 to 64 "
          "bytes, 8 concurrent clients, each sending its next request when answered; with `--max-batch 32` "
          "the server decodes the sequences in flight together (continuous batching); CPU:\n")
    print("| `--max-batch 1` requests/s | `--max-batch 32` requests/s | batched / unbatched | same texts |")
    print("|---|---|---|---|")
    r1, r32 = generated[1][0], generated[32][0]
    print(f"| {r1:.2f} | {r32:.2f} | {r32 / r1:.2f}x | {'yes' if same_text else 'NO'} |")
    print(f"\nChecks: {'passed' if ok else 'FAILED'}.")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
