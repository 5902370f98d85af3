//! Transfer of the published motion-magnification weights (../shared/weights/magnet.pth) into
//! SKD-TSTSAN: what is copied, adapted and left fresh, and that the official mode changes nothing.

use std::path::Path;

use mer_host::import::magnet::apply;
use mer_host::import::read_state_dict;
use mer_host::model::skd_tstsan::MagnetMode;
use mer_host::model::skd_tstsan::{SkdConfig, SkdTstsan};
use tch::{Device, Kind, nn};

#[test]
fn magnet_weights_reach_every_stream() {
    let magnet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/weights/magnet.pth");
    if !magnet.exists() {
        assert!(std::env::var("MER_REQUIRE_REFERENCE").as_deref() != Ok("1"), "{} is missing (MER_REQUIRE_REFERENCE=1)", magnet.display());
        eprintln!("SKIPPED: {} is missing (the magnification weights are provided beside the repository)", magnet.display());
        return;
    }
    let source = read_state_dict(&magnet).unwrap();
    let get = |k: &str| source.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();

    let mut vs = nn::VarStore::new(Device::Cpu);
    let _model = SkdTstsan::new(&vs.root(), SkdConfig::new(5));
    let report = apply(&mut vs, &magnet, MagnetMode::Transfer).unwrap();
    // Per stream: 11 encoder convs and 4 manipulator convs copied, the first conv adapted,
    // motion_cba fresh; the texture branch (5) and the decoder (21) are unused.
    assert_eq!(
        (report.copied.len(), report.adapted.len(), report.fresh.len(), report.unused.len()),
        (45, 3, 3, 26),
        "{}",
        report.summary()
    );
    let vars = vs.variables();
    for stream in ["L", "S", "T"] {
        let copied = &vars[&format!("Aug_Manipulator_{stream}.h_resblk.cba_2.conv2d.weight")];
        assert!(copied.equal(&get("manipulator.h_resblk.cba_2.conv2d.weight")));
        let first = &vars[&format!("Aug_Encoder_{stream}.cba_1.conv2d.weight")];
        let channels = first.size()[1];
        let rgb_sum = get("encoder.cba_1.conv2d.weight").sum_dim_intlist(&[1i64][..], false, Kind::Float);
        let ours = first.sum_dim_intlist(&[1i64][..], false, Kind::Float);
        assert!(f64::try_from((ours - rgb_sum).abs().max()).unwrap() < 1e-5, "stream {stream}: {channels} channels");
    }

    let mut fresh = nn::VarStore::new(Device::Cpu);
    let _model = SkdTstsan::new(&fresh.root(), SkdConfig::new(5));
    let before = fresh.variables()["Aug_Encoder_L.cba_2.conv2d.weight"].copy();
    let official = apply(&mut fresh, &magnet, MagnetMode::Official).unwrap();
    assert!(official.copied.is_empty() && official.adapted.is_empty());
    assert!(before.equal(&fresh.variables()["Aug_Encoder_L.cba_2.conv2d.weight"]));
}
