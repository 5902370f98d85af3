//! One classified micro-expression as the device records it: what was seen, when, by which
//! model, and how long each step took. Written by `merd`, exported as JSON by `merd events`.

use serde::{Deserialize, Serialize};

/// What asked for the classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    /// The spotter found an onset → apex → offset interval in the stream.
    Spotted,
    /// The GPIO trigger or a local command chose the window.
    Triggered,
}

/// Milliseconds spent between the offset frame's arrival and the event being logged.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencyBreakdown {
    /// From the offset frame's arrival to the window being chosen: the spotter has to see the
    /// frames after an interval before it can call it one.
    pub spotting_ms: f32,
    /// Face crops, optical flows and input assembly.
    pub preprocess_ms: f32,
    pub inference_ms: f32,
    /// From the offset frame's arrival to the record being appended.
    pub total_ms: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time of the offset frame, milliseconds since the Unix epoch.
    pub wall_time_ms: i64,
    /// Stream timestamps in seconds since the source started.
    pub onset_s: f64,
    pub apex_s: f64,
    pub offset_s: f64,
    pub source: EventSource,
    /// The most probable class.
    pub label: String,
    /// The model's classes and their probabilities, in the model's order.
    pub classes: Vec<String>,
    pub probabilities: Vec<f32>,
    pub model_version: String,
    pub latency: LatencyBreakdown,
}
