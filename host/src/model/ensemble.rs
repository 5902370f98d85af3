//! Several trained networks of one input layout and class list as one classifier. Its output is
//! the log of the members' mean softmax probabilities, so the softmax a device takes of it gives
//! exactly that mean: what `mer ensemble` scored in LOSO.

use tch::{Kind, Tensor};

use super::ops::onnx::{Attr, OnnxGraph};
use super::{Logits, Network};

/// Mean probabilities below this are written as it, so the log stays finite (the calibration
/// reads probabilities with the same floor).
const FLOOR: f32 = f32::MIN_POSITIVE;

#[derive(Debug)]
pub struct Ensemble {
    members: Vec<Box<dyn Network>>,
}

impl Ensemble {
    pub fn new(members: Vec<Box<dyn Network>>) -> Ensemble {
        assert!(!members.is_empty(), "an ensemble has members");
        Ensemble { members }
    }
}

impl Logits for Ensemble {
    fn logits_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut sum = self.members[0].logits_t(xs, train).softmax(-1, Kind::Float);
        for m in &self.members[1..] {
            sum += m.logits_t(xs, train).softmax(-1, Kind::Float);
        }
        (sum / self.members.len() as f64).clamp_min(f64::from(FLOOR)).log()
    }

    fn logits_graph(&self, g: &mut OnnxGraph, input: &str) -> String {
        let probabilities: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let logits = m.logits_graph(g, input);
                g.node("Softmax", &[&logits], vec![("axis", Attr::Int(-1))])
            })
            .collect();
        let parts: Vec<&str> = probabilities.iter().map(String::as_str).collect();
        let sum = g.node("Sum", &parts, vec![]);
        let share = g.constant_f32("share", &[], &[1.0 / self.members.len() as f32]);
        let mean = g.node("Mul", &[&sum, &share], vec![]);
        let floor = g.constant_f32("floor", &[], &[FLOOR]);
        let floored = g.node("Max", &[&mean, &floor], vec![]);
        g.node("Log", &[&floored], vec![])
    }
}
