//! Synthetic tasks through the training loop: a model learns MQAR, the loss counts answers
//! only, and held-out accuracy is measured at longer lengths than trained on.

use crate::common::{CpuAd, train_options};
use archlab::config::RunConfig;
use archlab::train::train;

fn task_config(source: &str, extra: &[&str]) -> RunConfig {
    let mut sets: Vec<String> = [
        format!("data.source={source:?}"),
        "model.n_layers=2".into(),
        "model.d_model=64".into(),
        "model.n_heads=2".into(),
        "model.d_ff=128".into(),
        "train.batch_size=64".into(),
        "train.weight_decay=0".into(),
        "train.warmup_steps=100".into(),
        "train.lr=3e-3".into(),
    ]
    .to_vec();
    sets.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::resolve("tiny", None, &sets).unwrap()
}

/// Zoology's sanity check: two attention layers solve associative recall (an induction
/// head: find the earlier copy of the query key, read the token after it).
#[test]
fn two_layer_attention_learns_mqar() {
    let cfg = task_config(
        "task:mqar",
        &[
            "data.task.n_pairs=4",
            "data.task.vocab=32",
            "train.seq_len=32",
            "train.max_steps=300",
            "eval.every=300",
        ],
    );
    let outcome = train::<CpuAd>(&cfg, &Default::default(), &train_options("task-mqar")).unwrap();
    let s = outcome.summary.unwrap();
    let acc = s.final_val_accuracy.expect("a task reports accuracy");
    assert!(acc > 0.9, "MQAR accuracy after 300 steps: {acc}");
    // Chance is 1 in 14 values: the loss fell from ln 14 by far.
    assert!(s.final_val_loss < 0.5, "{}", s.final_val_loss);
    assert!(s.final_val_bpb.is_nan(), "a task has no bytes");
    let lengths: Vec<usize> = s.length_accuracy.iter().map(|l| l.seq_len).collect();
    assert_eq!(lengths, [32, 64, 128], "training length, then 2× and 4×");
    assert!((s.length_accuracy[0].token_accuracy - acc).abs() < 1e-12, "same held-out set");
}

/// The loss is over answer positions only: an untrained model starts at about ln(vocab) on
/// them, and a task run writes no tokenizer (its tokens are ids).
#[test]
fn task_runs_score_answers_only() {
    for task in ["task:copy", "task:selective-copy", "task:passkey"] {
        let cfg = task_config(
            task,
            &["train.seq_len=48", "train.max_steps=2", "eval.every=2", "data.task.val_sequences=16"],
        );
        let opts = train_options(&format!("task-{}", &task[5..]));
        let s = train::<CpuAd>(&cfg, &Default::default(), &opts).unwrap().summary.unwrap();
        let acc = s.final_val_accuracy.unwrap();
        assert!((0.0..=1.0).contains(&acc), "{task}: {acc}");
        assert!(s.final_val_loss > 1.0 && s.final_val_loss < 6.0, "{task}: {}", s.final_val_loss);
        assert!(!opts.run_dir.join("tokenizer.json").exists());
    }
}

#[test]
fn task_settings_that_do_not_fit_are_errors_before_training() {
    let err = RunConfig::resolve(
        "tiny",
        None,
        &["data.source=\"task:mqar\"".into(), "data.task.n_pairs=40".into(), "train.seq_len=32".into()],
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("n_pairs"), "{err:#}");
    // 4× the training length must fit the position table.
    let err = RunConfig::resolve(
        "tiny",
        None,
        &["data.source=\"task:copy\"".into(), "train.seq_len=128".into(), "model.max_seq_len=256".into()],
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("raise model.max_seq_len to 512"), "{err:#}");
    let err = RunConfig::resolve("tiny", None, &["data.source=\"task:recall\"".into()]).unwrap_err();
    assert!(format!("{err:#}").contains("task:mqar"), "{err:#}");
}

/// State-tracking runs are scored at every position, record their chance level and which
/// length they trained at, and `archlab eval --run` reports them as training did.
#[test]
fn state_tracking_runs_record_chance_and_eval_scores_them() {
    for (task, chance) in [("task:parity", 0.5), ("task:modular-add", 0.2), ("task:a5", 1.0 / 60.0)] {
        let cfg = task_config(
            task,
            &["train.seq_len=16", "train.max_steps=2", "eval.every=2", "data.task.val_sequences=8"],
        );
        let opts = train_options(&format!("task-{}", &task[5..]));
        let s = train::<CpuAd>(&cfg, &Default::default(), &opts).unwrap().summary.unwrap();
        let lengths: Vec<(usize, bool, Option<f64>)> =
            s.length_accuracy.iter().map(|l| (l.seq_len, l.trained, l.chance)).collect();
        assert_eq!(
            lengths,
            [(16, true, Some(chance)), (32, false, Some(chance)), (64, false, Some(chance))],
            "{task}"
        );
        let first = &s.length_accuracy[0];
        assert!((0.0..=1.0).contains(&first.token_accuracy), "{task}");
        // Untrained, every one of 16 positions right in a row is out of reach.
        assert!(first.sequence_accuracy < 0.5, "{task}: {}", first.sequence_accuracy);

        let out = std::process::Command::new(env!("CARGO_BIN_EXE_archlab"))
            .args(["eval", "--device", "cpu", "--checkpoint", "last", "--run"])
            .arg(&opts.run_dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{task}: {}", String::from_utf8_lossy(&out.stderr));
        let row = format!("| 16 (trained) | {:.2}% | {:.2}% |", 100.0 * first.token_accuracy, 100.0 * chance);
        assert!(text.contains(&row), "{task}: no `{row}` in\n{text}");
        assert!(text.contains("| 64 |"), "{text}");
    }
}

/// The MAD tasks train through the ordinary loop and record their chance levels: 1/8 values
/// (vocabulary 16, 32 of which 16 noise, and 16 of which one padding), 1/14 data tokens, 1/31 values at vocabulary 64,
/// with a finite training set cycled.
#[test]
fn mad_tasks_train_and_record_chance() {
    for (task, sets, chance) in [
        ("task:in-context-recall", vec!["data.task.vocab=16", "train.seq_len=31"], 1.0 / 8.0),
        ("task:noisy-recall", vec!["data.task.vocab=32", "train.seq_len=31"], 1.0 / 8.0),
        ("task:fuzzy-recall", vec!["data.task.vocab=16", "train.seq_len=32"], 1.0 / 8.0),
        ("task:mad-selective-copy", vec!["data.task.vocab=16", "train.seq_len=40"], 1.0 / 14.0),
        ("task:memorization", vec!["data.task.vocab=64", "train.seq_len=32"], 1.0 / 31.0),
    ] {
        let mut all = vec![
            "train.max_steps=2",
            "eval.every=2",
            "data.task.val_sequences=8",
            "data.task.train_sequences=64",
        ];
        all.extend(sets);
        let cfg = task_config(task, &all);
        let opts = train_options(&format!("task-{}", &task[5..]));
        let s = train::<CpuAd>(&cfg, &Default::default(), &opts).unwrap().summary.unwrap();
        let first = &s.length_accuracy[0];
        assert_eq!((first.trained, first.chance), (true, Some(chance)), "{task}");
        assert_eq!(s.length_accuracy.len(), 3, "{task}: trained length, 2× and 4×");
        assert!((0.0..=1.0).contains(&first.token_accuracy), "{task}");
    }
}
