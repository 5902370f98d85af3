//! Training-time augmentation that respects what the input planes mean. A mirrored face moves
//! the other way: flipping a flow image left-right must negate its horizontal flow too, or the
//! model learns motions no face makes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::model::Arch;
use mer_shared::input::InputLayout;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    /// The samples as they are.
    #[default]
    None,
    /// Each training sample, with probability ½, mirrored left-right with its horizontal flow
    /// negated: flow-strain28 planes are min-max scaled per image, so −u rescaled is 1 − u; v and
    /// strain are mirrored only.
    Flip,
}

impl Augment {
    /// Why `arch` cannot take this augmentation, if it cannot.
    pub fn refusal(self, arch: Arch) -> Option<String> {
        match self {
            Augment::None => None,
            Augment::Flip if arch.input_layout() == InputLayout::FlowStrain28 => None,
            Augment::Flip => Some(format!(
                "--augment flip mirrors flow-strain28 images (u, v, strain); {arch} reads {} inputs, whose planes a mirror \
                 does not map onto themselves",
                arch.input_layout().name()
            )),
        }
    }

    /// `x` (N, 3, H, W) augmented with choices drawn from `rng`.
    pub fn apply(self, x: &Tensor, rng: &mut ChaCha8Rng) -> Tensor {
        match self {
            Augment::None => x.shallow_clone(),
            Augment::Flip => {
                let n = x.size()[0];
                let chosen: Vec<f32> = (0..n).map(|_| f32::from(u8::from(rng.random_bool(0.5)))).collect();
                let mirrored = x.flip([3]);
                let u = mirrored.narrow(1, 0, 1).neg() + 1.0;
                let flipped = Tensor::cat(&[u, mirrored.narrow(1, 1, 2)], 1);
                let mask = Tensor::from_slice(&chosen).to_device(x.device()).to_kind(x.kind()).view([n, 1, 1, 1]);
                &flipped * &mask + x * (mask.neg() + 1.0)
            }
        }
    }
}

/// The generator of one epoch's augmentation choices: the same on a resumed epoch.
pub fn epoch_rng(epoch_seed: i64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64((epoch_seed as u64) ^ 0x6175_676d_656e_7421)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_mirrors_and_negates_u_only_where_chosen() {
        // Two samples of 3×2×3: u ramps left to right, v and strain hold their column index.
        let one: Vec<f32> =
            (0..3).flat_map(|plane| (0..2).flat_map(move |_| (0..3).map(move |c| (plane * 10 + c) as f32 / 100.0))).collect();
        let x = Tensor::from_slice(&[one.clone(), one.clone()].concat()).view([2, 3, 2, 3]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Find a seed whose draw flips exactly one of the two.
        let (mut seed, mut out) = (1, Augment::Flip.apply(&x, &mut rng));
        while out.get(0).equal(&x.get(0)) == out.get(1).equal(&x.get(1)) {
            seed += 1;
            out = Augment::Flip.apply(&x, &mut ChaCha8Rng::seed_from_u64(seed));
        }
        let (kept, flipped) = if out.get(0).equal(&x.get(0)) { (0, 1) } else { (1, 0) };
        assert!(out.get(kept).equal(&x.get(kept)));
        let f = Vec::<f32>::try_from(out.get(flipped).flatten(0, -1)).unwrap();
        // u: mirrored (0.02, 0.01, 0.00) and negated (1 − u); v and strain mirrored only.
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(&f[0..3], &[0.98, 0.99, 1.0]), "{f:?}");
        assert!(close(&f[6..9], &[0.12, 0.11, 0.10]), "{f:?}");
        assert!(close(&f[12..15], &[0.22, 0.21, 0.20]), "{f:?}");
        // None changes nothing; the same generator state gives the same choices.
        assert!(Augment::None.apply(&x, &mut rng).equal(&x));
        let again = Augment::Flip.apply(&x, &mut ChaCha8Rng::seed_from_u64(seed));
        assert!(again.equal(&out));
    }

    #[test]
    fn only_flow_images_are_flipped() {
        let arch = |name: &str| name.parse::<Arch>().unwrap();
        assert!(Augment::Flip.refusal(arch("am3f-flownet")).is_none());
        assert!(Augment::Flip.refusal(arch("skd-tstsan-flow")).is_none());
        assert!(Augment::Flip.refusal(arch("skd-tstsan")).unwrap().contains("skd-tstsan inputs"));
        assert!(Augment::Flip.refusal(arch("htnet")).is_some());
        assert!(Augment::None.refusal(arch("htnet")).is_none());
    }
}
