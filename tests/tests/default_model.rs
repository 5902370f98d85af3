//! The default model in models/ loads as a device would load it: the demo key's signature
//! verifies, the manifest matches the ONNX file, and tract reproduces the probe.

use std::path::Path;

use mer_shared::bundle::read_public_key;
use mer_shared::classifier::{Classifier, Origin, Trust};
use mer_shared::manifest::Probe;

#[test]
fn default_bundle_verifies_and_classifies() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let key = read_public_key(&models.join("demo-key.pub")).unwrap();
    let classifier = Classifier::load(&models.join("skd-tstsan-synthetic.merb"), Trust::Keys(&[key])).unwrap();
    assert_eq!(classifier.origin(), &Origin::Bundle { signer: key.key_id(), trusted: true });
    let m = classifier.manifest();
    assert_eq!(m.architecture, "skd-tstsan");
    assert_eq!(m.classes, ["happiness", "surprise", "disgust", "repression", "others"]);
    let evaluation = m.training.evaluation.as_ref().expect("the default model records its recipe's LOSO evaluation");
    assert_eq!(evaluation.protocol, "honest");
    assert!(classifier.probe_agreement().within_tolerance());
    let out = classifier.classify(&Probe::input(9, 2, m.input_shape()), 2).unwrap();
    assert_eq!(out.probabilities.len(), 2);

    // The same bytes signed by someone else are refused.
    let other = mer_shared::bundle::SecretKey::from_seed(&[7; 32]).public();
    let e = Classifier::load(&models.join("skd-tstsan-synthetic.merb"), Trust::Keys(&[other])).unwrap_err();
    assert!(e.to_string().contains("not among the trusted keys"), "{e}");
}
