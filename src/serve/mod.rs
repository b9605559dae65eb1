//! An OpenAI-style completions server (`archlab serve`), so that lm-evaluation-harness's
//! `local-completions` model and any other OpenAI client can score and sample an archlab model.
//!
//! Data flow: HTTP (axum on a single-threaded tokio runtime) → [`protocol`] parses and checks
//! the request, the run's tokenizer turns text prompts into ids, lengths are checked against
//! the model's context → a [`engine::Job`] goes on a queue → the engine thread, which owns the
//! model, answers whatever is waiting in as few forward passes as it can → the response is
//! built from the [`protocol::Completion`]s. Every client error is an OpenAI-style JSON body
//! with status 400; the server never panics on input.
//!
//! Endpoints: `POST /v1/completions`, `GET /v1/models`, and the remote-tokenizer endpoints
//! lm-evaluation-harness probes (`GET /tokenizer_info`, `POST /tokenize`, `POST /detokenize`).

pub mod engine;
pub mod protocol;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::data::tokenizer::Tokenizer;
use crate::eval::generate::SamplingConfig;
use engine::{Job, Params};
use protocol::{BadRequest, Prompt};

/// What the HTTP side knows of the model.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The name `GET /v1/models` lists (the run folder's name).
    pub model_name: String,
    pub vocab_size: usize,
    /// The longest prompt, in tokens.
    pub max_prompt: usize,
    /// The most tokens a prompt and its completion may take together (`None`: a model with a
    /// fixed-size state and no position table has no limit).
    pub context_limit: Option<usize>,
    /// The largest `logprobs` a request may ask for.
    pub max_logprobs: usize,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
}

struct App {
    cfg: ServerConfig,
    tokenizer: Arc<Tokenizer>,
    jobs: Sender<Job>,
    next_id: AtomicU64,
}

/// Serves on `listener` until Ctrl-C (SIGINT), sending model work to `jobs`.
pub fn serve(
    listener: TcpListener,
    cfg: ServerConfig,
    tokenizer: Arc<Tokenizer>,
    jobs: Sender<Job>,
) -> Result<()> {
    listener.set_nonblocking(true).context("setting up the listening socket")?;
    let app = Arc::new(App { cfg, tokenizer, jobs, next_id: AtomicU64::new(0) });
    let router = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/tokenizer_info", get(tokenizer_info))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .with_state(app);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })?;
    Ok(())
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn bad_request(e: BadRequest) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &protocol::error_body(&e.message, "invalid_request_error", e.param),
    )
}

async fn not_found() -> Response {
    let message = "no such endpoint: archlab serves POST /v1/completions, GET /v1/models, \
                   GET /tokenizer_info, POST /tokenize and POST /detokenize";
    json_response(StatusCode::NOT_FOUND, &protocol::error_body(message, "invalid_request_error", None))
}

/// The body, at most `max_body_bytes` of it.
async fn read_body(app: &App, body: Body) -> Result<Bytes, Response> {
    let limit = app.cfg.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        bad_request(BadRequest::new(
            format!("the request body is over {limit} bytes (archlab serve --max-body-bytes) or was cut off"),
            None,
        ))
    })
}

async fn completions(State(app): State<Arc<App>>, body: Body) -> Response {
    let body = match read_body(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match protocol::parse_completion(&body, app.cfg.max_logprobs) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let prompts =
        match req.prompts.iter().enumerate().map(|(i, p)| prompt_ids(&app, i, p, req.max_tokens)).collect() {
            Ok(p) => p,
            Err(e) => return bad_request(e),
        };
    let params = Params {
        max_tokens: req.max_tokens,
        top_logprobs: req.logprobs.unwrap_or(0),
        sampling: SamplingConfig {
            max_new_tokens: req.max_tokens,
            temperature: req.temperature,
            top_k: req.top_k,
            top_p: req.top_p,
            seed: req.seed,
            stop_at_eot: true,
        },
        stop: req.stop.clone(),
    };
    let (reply, answer) = oneshot::channel();
    if app.jobs.send(Job { prompts, params, reply }).is_err() {
        return server_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model is not running (the server is stopping)",
        );
    }
    let completions = match answer.await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return server_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the model failed: {e}"));
        }
        Err(_) => return server_error(StatusCode::SERVICE_UNAVAILABLE, "the model stopped before answering"),
    };
    let usage = (
        completions.iter().map(|c| c.prompt.len()).sum(),
        completions.iter().map(|c| c.generated.len()).sum(),
    );
    let choices =
        completions.iter().enumerate().map(|(i, c)| protocol::choice(i, c, req.echo, req.logprobs)).collect();
    let id = app.next_id.fetch_add(1, Ordering::Relaxed);
    let created =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    json_response(
        StatusCode::OK,
        &protocol::completion_response(id, &app.cfg.model_name, created, choices, usage),
    )
}

fn server_error(status: StatusCode, message: &str) -> Response {
    json_response(status, &protocol::error_body(message, "server_error", None))
}

/// A prompt's token ids, checked against the vocabulary and the context.
fn prompt_ids(app: &App, index: usize, prompt: &Prompt, max_tokens: usize) -> Result<Vec<u32>, BadRequest> {
    let bad = |m: String| BadRequest::new(m, Some("prompt"));
    let mut ids = match prompt {
        Prompt::Text(text) => {
            app.tokenizer.encode(text).map_err(|e| bad(format!("prompt {index}: {e:#}")))?
        }
        Prompt::Ids(ids) => ids.clone(),
    };
    if ids.is_empty() {
        // An empty prompt starts a new document, as in `archlab generate`.
        ids = app.tokenizer.eot().into_iter().collect();
        if ids.is_empty() {
            return Err(bad(format!("prompt {index} is empty and the tokenizer has no end-of-text token")));
        }
    }
    let vocab = app.cfg.vocab_size;
    if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(bad(format!(
            "prompt {index}: token id {id} is outside the model's vocabulary (ids 0..{})",
            vocab - 1
        )));
    }
    let n = ids.len();
    if n > app.cfg.max_prompt {
        return Err(bad(format!(
            "prompt {index} has {n} tokens, more than the model's context of {} (model.max_seq_len); \
             shorten it (lm-eval: model_args max_length={})",
            app.cfg.max_prompt,
            app.cfg.max_prompt.saturating_sub(1)
        )));
    }
    // The last generated token is returned, never fed back: it needs no position.
    if let Some(limit) = app.cfg.context_limit.filter(|&l| n + max_tokens.saturating_sub(1) > l) {
        return Err(BadRequest::new(
            format!(
                "prompt {index} has {n} tokens and asks for max_tokens={max_tokens} more, over the \
                 model's context of {limit} tokens; lower max_tokens or shorten the prompt"
            ),
            Some("max_tokens"),
        ));
    }
    Ok(ids)
}

async fn models(State(app): State<Arc<App>>) -> Response {
    let card = json!({
        "id": app.cfg.model_name,
        "object": "model",
        "created": 0,
        "owned_by": "archlab",
        "max_model_len": app.cfg.max_prompt,
    });
    json_response(StatusCode::OK, &json!({"object": "list", "data": [card]}))
}

async fn tokenizer_info(State(app): State<Arc<App>>) -> Response {
    let eos = app.tokenizer.eot().map(|id| app.tokenizer.decode(&[id]).unwrap_or_default());
    json_response(
        StatusCode::OK,
        &json!({
            "eos_token": eos,
            "bos_token": null,
            "pad_token": eos,
            "model_max_length": app.cfg.max_prompt,
            "vocab_size": app.cfg.vocab_size,
        }),
    )
}

async fn tokenize(State(app): State<Arc<App>>, body: Body) -> Response {
    let body = match read_body(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("prompt")?.as_str().map(str::to_owned));
    let Some(text) = text else {
        return bad_request(BadRequest::new("expected {\"prompt\": \"text\"}", Some("prompt")));
    };
    match app.tokenizer.encode(&text) {
        Ok(tokens) => json_response(
            StatusCode::OK,
            &json!({"tokens": tokens, "count": tokens.len(), "max_model_len": app.cfg.max_prompt}),
        ),
        Err(e) => bad_request(BadRequest::new(format!("{e:#}"), Some("prompt"))),
    }
}

async fn detokenize(State(app): State<Arc<App>>, body: Body) -> Response {
    let body = match read_body(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let vocab = app.cfg.vocab_size as u64;
    let tokens: Option<Vec<u32>> = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("tokens")?
            .as_array()?
            .iter()
            .map(|x| x.as_u64().filter(|&n| n < vocab).map(|n| n as u32))
            .collect()
    });
    let Some(tokens) = tokens else {
        return bad_request(BadRequest::new(
            format!("expected {{\"tokens\": [ids]}} with ids below the vocabulary size {vocab}"),
            Some("tokens"),
        ));
    };
    match app.tokenizer.decode(&tokens) {
        Ok(text) => json_response(StatusCode::OK, &json!({"prompt": text})),
        Err(e) => bad_request(BadRequest::new(format!("{e:#}"), Some("tokens"))),
    }
}
