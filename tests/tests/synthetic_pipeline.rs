//! Synthetic data → native layout on disk → key frames → model input, and the learnability
//! figures of the synthetic task.

use mer_host::learnability::probe;
use mer_shared::frames::FrameFolder;
use mer_shared::input::{InputSpec, KeyFrames, model_input};
use mer_shared::labels::Taxonomy;
use mer_shared::synth::casme2::{Casme2Options, write_casme2};

#[test]
fn casme2_layout_becomes_model_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Casme2Options { subjects: 2, per_subject: 2, seed: 9, ..Casme2Options::default() };
    let samples = write_casme2(dir.path(), &opts, &|| {}).unwrap();
    let spec = InputSpec::skd_tstsan();
    for s in &samples {
        Taxonomy::Casme2Five.map(s.emotion.name()).unwrap();
        let folder = FrameFolder::open(s.frame_path(dir.path(), s.onset_frame).parent().unwrap()).unwrap();
        let keys = KeyFrames::new(s.onset_frame as i64, s.apex_frame as i64, s.offset_frame as i64).unwrap();
        let t = model_input(&spec, &folder, None, keys, 1).unwrap();
        assert_eq!(t.shape(), [38, 48, 48]);
        assert!(t.data.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        // both flow maps carry motion (not a constant map)
        for c in 34..38 {
            let ch = t.channel(c);
            assert!(ch.iter().any(|&v| v > 0.9) && ch.iter().any(|&v| v < 0.1), "channel {c}");
        }
    }
}

#[test]
fn synthetic_task_is_learnable_but_not_trivial() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Casme2Options { subjects: 5, per_subject: 10, seed: 2, ..Casme2Options::default() };
    let r = probe(dir.path(), &opts).unwrap();
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert!(r.labels.skipped.values().sum::<usize>() > 0, "sadness/fear are excluded from the 5-class set");
    assert!(r.accuracy > r.majority_baseline + 0.15, "probe accuracy {} vs majority {}", r.accuracy, r.majority_baseline);
    assert!(r.accuracy < 0.98, "the task should not be trivial: accuracy {}", r.accuracy);
}
