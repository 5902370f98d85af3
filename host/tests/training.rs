//! LOSO training end to end on small in-memory data: sharded runs merge into exactly the
//! single run's results, runs are deterministic, and the paper protocol is labelled.

use mer_shared::manifest::InputProvenance;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use mer_host::dataset::samples::{DataSource, SampleArrays};
use mer_host::model::ArchSettings;
use mer_host::model::skd_tstsan::SkdSettings;
use mer_host::train::config::{Protocol, Shard, TrainConfig};
use mer_host::train::data::TrainData;
use mer_host::train::ensemble::combine;
use mer_host::train::report::{RunResults, summarise};
use mer_host::train::run::{train_all, train_loso};
use tch::Device;

/// 3 subjects × 4 samples, 3 classes; class c brightens flow channel 34 + c.
fn data() -> TrainData {
    let (n, per) = (12usize, 38 * 48 * 48);
    let mut values = vec![0.0f32; n * per];
    let mut labels = Vec::new();
    for i in 0..n {
        let class = i % 3;
        labels.push(class as i64);
        for (j, v) in values[i * per..(i + 1) * per].iter_mut().enumerate() {
            let channel = j / (48 * 48);
            *v = ((i * 31 + j * 7) % 97) as f32 / 97.0 * 0.5 + if channel == 34 + class { 0.5 } else { 0.0 };
        }
    }
    let subjects = (0..n).map(|i| format!("s{}", i / 4 + 1)).collect();
    let ids = (0..n).map(|i| format!("sample{i:02}")).collect();
    let classes = ["negative", "positive", "surprise"].map(String::from).to_vec();
    let source = DataSource {
        path: "memory".into(),
        digest: "test".into(),
        taxonomy: "casme2-3".into(),
        inputs: InputProvenance::MerShared,
        sources: vec![],
    };
    TrainData::new(SampleArrays { shape: [38, 48, 48], values, labels, subjects, ids, classes, source }).unwrap()
}

/// libtorch's random generator is process-global: trainings in parallel test threads would
/// draw from it in turn, so each test holds this lock (one training per process in real use).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(protocol: Protocol) -> TrainConfig {
    TrainConfig { protocol, iters: 3, batch: 4, ..TrainConfig::default() }
}

fn without_shards(mut r: RunResults) -> RunResults {
    r.shards.clear();
    r
}

#[test]
fn shards_merge_into_the_single_run_results() {
    let _serial = serial();
    let data = data();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Protocol::Honest);
    let whole = train_loso(&data, &cfg, None, &dir.path().join("whole"), Device::Cpu).unwrap();
    assert!(whole.complete && whole.samples == 12 && whole.folds.len() == 3);

    let s1 = dir.path().join("s1");
    let s2 = dir.path().join("s2");
    let part = train_loso(&data, &cfg, Some(Shard { index: 1, count: 2 }), &s1, Device::Cpu).unwrap();
    assert!(!part.complete);
    assert_eq!(part.missing, vec!["s2".to_string()]);
    train_loso(&data, &cfg, Some(Shard { index: 2, count: 2 }), &s2, Device::Cpu).unwrap();
    let merged = summarise(&[s1.clone(), s2.clone()], &dir.path().join("merged")).unwrap();
    assert_eq!(merged.shards.len(), 2);
    assert_eq!(without_shards(merged), whole);
    for f in ["results.json", "confusion.png", "loss.png", "run.json", "folds/s3/model.safetensors"] {
        assert!(dir.path().join("merged").join(f).exists(), "{f}");
    }

    // The same shard twice is refused, naming the subject.
    let err = summarise(&[s1.clone(), s1], &dir.path().join("bad")).unwrap_err().to_string();
    assert!(err.contains("has a fold in both"), "{err}");
    // A different configuration cannot be merged.
    let other = dir.path().join("other");
    train_loso(&data, &TrainConfig { seed: 7, ..cfg.clone() }, Some(Shard { index: 2, count: 2 }), &other, Device::Cpu).unwrap();
    let err = summarise(&[dir.path().join("s1"), other], &dir.path().join("bad2")).unwrap_err().to_string();
    assert!(err.contains("configurations differ"), "{err}");
}

/// `RUN/folds/SUBJECT/fold.json`'s predictions as (id, truth, probabilities).
fn held_out(run: &Path, subject: &str) -> Vec<(String, u64, Vec<f64>)> {
    let text = std::fs::read_to_string(run.join("folds").join(subject).join("fold.json")).unwrap();
    let fold: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = fold["predictions"].as_array().unwrap();
    rows.iter()
        .map(|p| {
            let probabilities = p["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            (p["id"].as_str().unwrap().to_string(), p["truth"].as_u64().unwrap(), probabilities)
        })
        .collect()
}

#[test]
fn ensembles_average_the_members_held_out_probabilities() {
    let _serial = serial();
    let data = data();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Protocol::Honest);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train_loso(&data, &cfg, None, &a, Device::Cpu).unwrap();
    train_loso(&data, &TrainConfig { seed: 7, ..cfg.clone() }, None, &b, Device::Cpu).unwrap();
    let out = dir.path().join("ensemble");
    let ensemble = combine(&[a.clone(), b.clone()], &out).unwrap();
    assert_eq!(ensemble.arch, "ensemble of 2 skd-tstsan models");
    assert_eq!(ensemble.ensemble.iter().map(|m| m.config.seed).collect::<Vec<_>>(), vec![1337, 7]);
    assert!(ensemble.complete && ensemble.samples == 12);
    for subject in ["s1", "s2", "s3"] {
        let (pa, pb) = (held_out(&a, subject), held_out(&b, subject));
        let pe = held_out(&out, subject);
        assert_eq!(pe.len(), 4);
        for ((x, y), e) in pa.iter().zip(&pb).zip(&pe) {
            assert_eq!((&x.0, x.1), (&e.0, e.1));
            for k in 0..3 {
                assert!((e.2[k] - (x.2[k] + y.2[k]) / 2.0).abs() < 1e-6, "{subject} {}: {:?} {:?} {:?}", e.0, x.2, y.2, e.2);
            }
        }
    }
    // The ensemble is a run directory: a report of it recomputes the same results.
    assert_eq!(summarise(std::slice::from_ref(&out), &out).unwrap(), ensemble);

    // One run, a paper-protocol run, an unfinished run, an ensemble as a member: refused.
    let err = combine(std::slice::from_ref(&a), &dir.path().join("x")).unwrap_err().to_string();
    assert!(err.contains("at least two runs"), "{err}");
    let paper = dir.path().join("paper");
    train_loso(&data, &config(Protocol::Paper), Some(Shard { index: 1, count: 3 }), &paper, Device::Cpu).unwrap();
    let err = combine(&[a.clone(), paper], &dir.path().join("x")).unwrap_err().to_string();
    assert!(err.contains("paper protocol") && err.contains("honestly"), "{err}");
    let part = dir.path().join("part");
    train_loso(&data, &cfg, Some(Shard { index: 1, count: 3 }), &part, Device::Cpu).unwrap();
    let err = combine(&[a.clone(), part], &dir.path().join("x")).unwrap_err().to_string();
    assert!(err.contains("not complete") && err.contains("s2, s3"), "{err}");
    let err = combine(&[a, out], &dir.path().join("x")).unwrap_err().to_string();
    assert!(err.contains("itself an ensemble"), "{err}");
}

#[test]
fn runs_are_deterministic_and_rerunning_resumes() {
    let _serial = serial();
    let data = data();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Protocol::Honest);
    let a = train_loso(&data, &cfg, Some(Shard { index: 1, count: 3 }), &dir.path().join("a"), Device::Cpu).unwrap();
    let b = train_loso(&data, &cfg, Some(Shard { index: 1, count: 3 }), &dir.path().join("b"), Device::Cpu).unwrap();
    assert_eq!(a, b);
    let fold = |run: &str| std::fs::read_to_string(dir.path().join(run).join("folds/s1/fold.json")).unwrap();
    let probs = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap()["predictions"].clone();
    assert_eq!(probs(fold("a")), probs(fold("b")));
    // Re-running a finished run keeps its folds and gives the same report.
    let again = train_loso(&data, &cfg, Some(Shard { index: 1, count: 3 }), &dir.path().join("a"), Device::Cpu).unwrap();
    assert_eq!(again, a);
    // Another configuration in the same directory is refused.
    let err = train_loso(&data, &TrainConfig { iters: 4, ..cfg }, None, &dir.path().join("a"), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("already holds another run"), "{err}");
}

#[test]
fn paper_protocol_selects_on_the_test_subject_and_says_so() {
    let _serial = serial();
    let data = data();
    let dir = tempfile::tempdir().unwrap();
    let r = train_loso(&data, &config(Protocol::Paper), Some(Shard { index: 1, count: 3 }), dir.path(), Device::Cpu).unwrap();
    assert_eq!(r.protocol, Protocol::Paper);
    assert!(r.protocol_note.contains("optimistic"));
    assert!(r.last_epoch.is_some());
    assert_eq!(r.folds[0].selection, "test");
    let text = std::fs::read_to_string(dir.path().join("results.json")).unwrap();
    assert!(text.contains("\"protocol\": \"paper\""));
    assert!(dir.path().join("selection.png").exists());
}

#[test]
fn validation_subjects_and_pretraining_then_fine_tuning() {
    let _serial = serial();
    let data = data();
    let dir = tempfile::tempdir().unwrap();
    let honest_val = TrainConfig { val_subjects: 1, ..config(Protocol::Honest) };
    let r = train_loso(&data, &honest_val, Some(Shard { index: 3, count: 3 }), &dir.path().join("val"), Device::Cpu).unwrap();
    assert_eq!(r.folds[0].selection, "validation");

    let model = train_all(&data, &config(Protocol::Honest), &dir.path().join("pre"), Device::Cpu).unwrap();
    assert!(Path::new(&model).exists());
    let init = ArchSettings::Skd(SkdSettings { init: Some(model), ..SkdSettings::default() });
    let tuned = TrainConfig { settings: init, ..config(Protocol::Honest) };
    let r = train_loso(&data, &tuned, Some(Shard { index: 2, count: 3 }), &dir.path().join("tuned"), Device::Cpu).unwrap();
    assert_eq!(r.folds.len(), 1);
}
