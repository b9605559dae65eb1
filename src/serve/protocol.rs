//! OpenAI's legacy completions protocol (`POST /v1/completions`), as lm-evaluation-harness's
//! `local-completions` model and other OpenAI-style clients speak it: the request body parsed
//! and checked into a [`CompletionRequest`], and the response body built from what the
//! engine computed. Pure functions, no HTTP: the server module does the transport.
//!
//! Reference: <https://platform.openai.com/docs/api-reference/completions> (legacy), and
//! lm-evaluation-harness `lm_eval/models/openai_completions.py` for what that client sends
//! and reads (`echo: true, max_tokens: 1, logprobs: 1` for log-likelihoods; the first
//! prompt token's log-prob is `null`).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::eval::score::TokenScore;

/// OpenAI's default `max_tokens`.
const DEFAULT_MAX_TOKENS: usize = 16;

/// A request's prompt, before tokenization.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// A checked completions request: one completion per prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    pub prompts: Vec<Prompt>,
    pub max_tokens: usize,
    pub echo: bool,
    /// How many alternatives per position in `top_logprobs`; `None`: no `logprobs` object.
    pub logprobs: Option<usize>,
    pub stop: Vec<String>,
    /// 0: greedy.
    pub temperature: f64,
    /// 0: all tokens.
    pub top_k: usize,
    pub top_p: f64,
    pub seed: u64,
}

/// A client error: HTTP 400 with an OpenAI-style error body naming the offending field.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRequest {
    pub message: String,
    pub param: Option<&'static str>,
}

impl BadRequest {
    pub fn new(message: impl Into<String>, param: Option<&'static str>) -> Self {
        BadRequest { message: message.into(), param }
    }
}

/// The fields archlab reads; every other field a client sends (`model`, `user`, …) is ignored.
#[derive(Deserialize)]
struct Wire {
    prompt: Option<Value>,
    max_tokens: Option<u64>,
    echo: Option<bool>,
    logprobs: Option<u64>,
    stop: Option<Value>,
    temperature: Option<f64>,
    top_k: Option<i64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    n: Option<u64>,
    best_of: Option<u64>,
    stream: Option<bool>,
    suffix: Option<String>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<serde_json::Map<String, Value>>,
}

/// Parses and checks a request body. `max_logprobs` caps `logprobs`.
pub fn parse_completion(body: &[u8], max_logprobs: usize) -> Result<CompletionRequest, BadRequest> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| BadRequest::new(format!("the request body is not valid JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(BadRequest::new("the request body must be a JSON object", None));
    }
    let w: Wire =
        serde_json::from_value(value).map_err(|e| BadRequest::new(format!("invalid request: {e}"), None))?;
    // Features that would change the answer: refused rather than silently ignored.
    if w.n.unwrap_or(1) != 1 {
        return Err(BadRequest::new(
            "n must be 1: archlab returns one completion per prompt; send the prompt several times instead",
            Some("n"),
        ));
    }
    if w.best_of.unwrap_or(1) != 1 {
        return Err(BadRequest::new("best_of must be 1: archlab does not rank candidates", Some("best_of")));
    }
    if w.stream == Some(true) {
        return Err(BadRequest::new(
            "stream must be false: archlab answers with one response",
            Some("stream"),
        ));
    }
    if w.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(BadRequest::new("suffix (insertion) is not supported", Some("suffix")));
    }
    for (name, v) in [("presence_penalty", w.presence_penalty), ("frequency_penalty", w.frequency_penalty)] {
        if v.unwrap_or(0.0) != 0.0 {
            return Err(BadRequest::new(format!("{name} must be 0: penalties are not supported"), None));
        }
    }
    if w.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(BadRequest::new("logit_bias is not supported", Some("logit_bias")));
    }
    let prompts = prompts(w.prompt.ok_or_else(|| BadRequest::new("prompt is required", Some("prompt")))?)?;
    let logprobs = w.logprobs.map(|k| k as usize);
    if let Some(k) = logprobs.filter(|&k| k > max_logprobs) {
        return Err(BadRequest::new(
            format!(
                "logprobs is {k}, over this server's cap of {max_logprobs} (archlab serve --max-logprobs)"
            ),
            Some("logprobs"),
        ));
    }
    let temperature = w.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(BadRequest::new(
            format!("temperature must be ≥ 0, got {temperature}"),
            Some("temperature"),
        ));
    }
    let top_p = w.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(BadRequest::new(format!("top_p must be in (0, 1], got {top_p}"), Some("top_p")));
    }
    // vLLM's convention: -1 (or 0) keeps every token.
    let top_k = match w.top_k.unwrap_or(0) {
        k if k <= 0 && k >= -1 => 0,
        k if k > 0 => k as usize,
        k => return Err(BadRequest::new(format!("top_k must be ≥ -1, got {k}"), Some("top_k"))),
    };
    Ok(CompletionRequest {
        prompts,
        max_tokens: w.max_tokens.map_or(DEFAULT_MAX_TOKENS, |n| n as usize),
        echo: w.echo.unwrap_or(false),
        logprobs,
        stop: stops(w.stop)?,
        temperature,
        top_k,
        top_p,
        seed: w.seed.unwrap_or(0),
    })
}

/// `"text"`, `["a", "b"]`, `[1, 2, 3]` or `[[1, 2], [3]]`.
fn prompts(v: Value) -> Result<Vec<Prompt>, BadRequest> {
    let bad = || {
        BadRequest::new(
            "prompt must be a string, an array of strings, an array of token ids or an array of such arrays",
            Some("prompt"),
        )
    };
    let ids = |items: &[Value]| -> Result<Vec<u32>, BadRequest> {
        items.iter().map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(bad)).collect()
    };
    let out = match v {
        Value::String(s) => vec![Prompt::Text(s)],
        Value::Array(items) if items.is_empty() => {
            return Err(BadRequest::new("prompt is empty", Some("prompt")));
        }
        Value::Array(items) if items[0].is_number() => vec![Prompt::Ids(ids(&items)?)],
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(Prompt::Text(s)),
                Value::Array(a) => Ok(Prompt::Ids(ids(&a)?)),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    Ok(out)
}

/// `stop`: null, a string, or an array of strings (empty strings mean nothing).
fn stops(v: Option<Value>) -> Result<Vec<String>, BadRequest> {
    let bad = || BadRequest::new("stop must be a string or an array of strings", Some("stop"));
    let all = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => {
            a.into_iter().map(|x| x.as_str().map(str::to_owned).ok_or_else(bad)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(bad()),
    };
    Ok(all.into_iter().filter(|s| !s.is_empty()).collect())
}

/// Why a completion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// `max_tokens` reached (or the context).
    Length,
    /// A stop string or the end-of-text token.
    Stop,
}

/// What the engine computed for one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The prompt's tokens, scored (position 0 has no log-prob).
    pub prompt: Vec<TokenScore>,
    /// The prompt as text.
    pub prompt_text: String,
    /// The generated tokens with their log-probs under the model (not the sampling
    /// distribution), up to and including the one that ended the completion.
    pub generated: Vec<TokenScore>,
    /// The generated text, cut before the first stop string, without an end-of-text token.
    pub text: String,
    pub finish: Finish,
}

/// One `choices` entry.
pub fn choice(index: usize, c: &Completion, echo: bool, logprobs: Option<usize>) -> Value {
    let text = if echo { format!("{}{}", c.prompt_text, c.text) } else { c.text.clone() };
    let logprobs = logprobs.map(|k| {
        let shown: Vec<&TokenScore> =
            if echo { c.prompt.iter().chain(&c.generated).collect() } else { c.generated.iter().collect() };
        json!({
            "tokens": shown.iter().map(|t| t.token.as_str()).collect::<Vec<_>>(),
            "token_logprobs": shown.iter().map(|t| t.logprob).collect::<Vec<_>>(),
            "top_logprobs": shown.iter().map(|t| top_logprobs(t, k)).collect::<Vec<_>>(),
            "text_offset": shown.iter().map(|t| t.offset).collect::<Vec<_>>(),
        })
    });
    json!({
        "index": index,
        "text": text,
        "logprobs": logprobs,
        "finish_reason": match c.finish { Finish::Length => "length", Finish::Stop => "stop" },
    })
}

/// `{token: logprob}` of the `k` most likely tokens; `null` where there is no log-prob.
fn top_logprobs(t: &TokenScore, k: usize) -> Value {
    if t.logprob.is_none() {
        return Value::Null;
    }
    let mut map = serde_json::Map::new();
    for alt in t.top.iter().take(k) {
        // Two ids with the same text (invalid UTF-8 pieces): the more likely one is kept.
        map.entry(alt.token.clone()).or_insert(json!(alt.logprob));
    }
    Value::Object(map)
}

/// The response body of a completions request.
pub fn completion_response(
    id: u64,
    model: &str,
    created: u64,
    choices: Vec<Value>,
    usage: (usize, usize),
) -> Value {
    json!({
        "id": format!("cmpl-{id}"),
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1},
    })
}

/// An OpenAI-style error body.
pub fn error_body(message: &str, kind: &str, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": null}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<CompletionRequest, BadRequest> {
        parse_completion(body.as_bytes(), 5)
    }

    #[test]
    fn lm_eval_requests_parse_with_unknown_fields_ignored() {
        let r = parse(
            r#"{"model": "m", "prompt": [[1, 2, 3], [4]], "temperature": 0, "max_tokens": 1,
                "logprobs": 1, "seed": 1234, "echo": true, "user": "x"}"#,
        )
        .unwrap();
        assert_eq!(r.prompts, vec![Prompt::Ids(vec![1, 2, 3]), Prompt::Ids(vec![4])]);
        assert_eq!((r.max_tokens, r.echo, r.logprobs, r.temperature, r.seed), (1, true, Some(1), 0.0, 1234));
        let r = parse(r#"{"prompt": "hi", "stop": ["\n\n", ""]}"#).unwrap();
        assert_eq!(r.prompts, vec![Prompt::Text("hi".into())]);
        assert_eq!((r.max_tokens, r.temperature, r.logprobs), (16, 1.0, None), "OpenAI's defaults");
        assert_eq!(r.stop, vec!["\n\n".to_string()]);
        assert_eq!(parse(r#"{"prompt": [1, 2]}"#).unwrap().prompts, vec![Prompt::Ids(vec![1, 2])]);
        assert_eq!(parse(r#"{"prompt": ["a", "b"]}"#).unwrap().prompts.len(), 2);
        assert_eq!(parse(r#"{"prompt": "a", "top_k": -1}"#).unwrap().top_k, 0);
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, param, says) in [
            ("{", None, "not valid JSON"),
            ("[1]", None, "JSON object"),
            (r#"{"max_tokens": 3}"#, Some("prompt"), "prompt is required"),
            (r#"{"prompt": []}"#, Some("prompt"), "empty"),
            (r#"{"prompt": [1, -2]}"#, Some("prompt"), "token ids"),
            (r#"{"prompt": {"a": 1}}"#, Some("prompt"), "token ids"),
            (r#"{"prompt": "a", "n": 2}"#, Some("n"), "n must be 1"),
            (r#"{"prompt": "a", "logprobs": 6}"#, Some("logprobs"), "cap of 5"),
            (r#"{"prompt": "a", "temperature": -1}"#, Some("temperature"), "≥ 0"),
            (r#"{"prompt": "a", "top_p": 0}"#, Some("top_p"), "(0, 1]"),
            (r#"{"prompt": "a", "stop": 3}"#, Some("stop"), "string"),
            (r#"{"prompt": "a", "stream": true}"#, Some("stream"), "stream"),
            (r#"{"prompt": "a", "max_tokens": "x"}"#, None, "invalid request"),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.param, param, "{body}: {e:?}");
            assert!(e.message.contains(says), "{body}: {}", e.message);
        }
    }

    #[test]
    fn echoed_choices_carry_one_entry_per_prompt_token_and_generated_token() {
        let t = |id: u32, offset: usize, logprob: Option<f64>| TokenScore {
            id,
            token: ((b'a' + id as u8) as char).to_string(),
            offset,
            logprob,
            top: logprob
                .map(|lp| vec![crate::eval::score::Alternative { id, token: "x".into(), logprob: lp }])
                .unwrap_or_default(),
        };
        let c = Completion {
            prompt: vec![t(0, 0, None), t(1, 1, Some(-1.0))],
            prompt_text: "ab".into(),
            generated: vec![t(2, 2, Some(-0.5))],
            text: "c".into(),
            finish: Finish::Length,
        };
        let v = choice(3, &c, true, Some(1));
        assert_eq!(v["text"], "abc");
        assert_eq!(v["index"], 3);
        assert_eq!(v["logprobs"]["token_logprobs"], json!([null, -1.0, -0.5]));
        assert_eq!(v["logprobs"]["top_logprobs"], json!([null, {"x": -1.0}, {"x": -0.5}]));
        assert_eq!(v["logprobs"]["text_offset"], json!([0, 1, 2]));
        let v = choice(0, &c, false, None);
        assert_eq!((v["text"].as_str(), v["logprobs"].is_null()), (Some("c"), true));
    }
}
