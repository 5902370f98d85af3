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
    /// The model was trained on inputs this device cannot reproduce (run only because the
    /// configuration allows it): read the label with that in mind.
    #[serde(default)]
    pub foreign_inputs: bool,
    /// The device that recorded it: its key's fingerprint (`merd key`), or its host name when
    /// it has no fleet key.
    #[serde(default)]
    pub device: String,
    /// The session it belongs to: `merd` starts one at each start and on `merd session new`.
    #[serde(default)]
    pub session: String,
    /// Its place in the device's log: 1, 2, 3, … in order of writing, never reused. `mer events
    /// pull` fetches each (device, seq) once.
    #[serde(default)]
    pub seq: u64,
}

/// An event as records were written before the device, session and sequence fields existed:
/// the first format and the flag after it (postcard puts a nested struct's fields in line).
#[derive(Deserialize)]
struct EventV2 {
    v1: EventV1,
    foreign_inputs: bool,
}

/// An event as records were written before `foreign_inputs` existed.
#[derive(Deserialize)]
struct EventV1 {
    wall_time_ms: i64,
    onset_s: f64,
    apex_s: f64,
    offset_s: f64,
    source: EventSource,
    label: String,
    classes: Vec<String>,
    probabilities: Vec<f32>,
    model_version: String,
    latency: LatencyBreakdown,
}

impl Event {
    /// The most probable class and its probability (what `label` names, unless it says
    /// `uncertain`).
    pub fn most_probable(&self) -> (&str, f32) {
        let best = crate::manifest::argmax(&self.probabilities);
        (self.classes.get(best).map_or("", String::as_str), self.probabilities.get(best).copied().unwrap_or(f32::NAN))
    }

    /// The label for people: `negative p 0.82`, or `uncertain (negative p 0.41)` when the
    /// model's threshold called it uncertain.
    pub fn describe_label(&self) -> String {
        let (class, p) = self.most_probable();
        if self.label == crate::manifest::UNCERTAIN { format!("uncertain ({class} p {p:.2})") } else { format!("{} p {p:.2}", self.label) }
    }

    /// The bytes of the event log's record (postcard).
    pub fn to_record(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    /// Reads a record, also one of an earlier format (postcard has no optional fields: such a
    /// record ends where the newer fields would start). Older records have no device, session
    /// or sequence number.
    pub fn from_record(payload: &[u8]) -> Result<Event, postcard::Error> {
        postcard::from_bytes::<Event>(payload).or_else(|e| {
            let old = postcard::from_bytes::<EventV2>(payload)
                .or_else(|_| postcard::from_bytes::<EventV1>(payload).map(|v1| EventV2 { v1, foreign_inputs: false }))
                .map_err(|_| e)?;
            let EventV2 { v1, foreign_inputs } = old;
            Ok(Event {
                wall_time_ms: v1.wall_time_ms,
                onset_s: v1.onset_s,
                apex_s: v1.apex_s,
                offset_s: v1.offset_s,
                source: v1.source,
                label: v1.label,
                classes: v1.classes,
                probabilities: v1.probabilities,
                model_version: v1.model_version,
                latency: v1.latency,
                foreign_inputs,
                device: String::new(),
                session: String::new(),
                seq: 0,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_older_records_still_read() {
        let event = Event {
            wall_time_ms: 1_700_000_000_000,
            onset_s: 1.0,
            apex_s: 1.1,
            offset_s: 1.3,
            source: EventSource::Spotted,
            label: "surprise".into(),
            classes: vec!["surprise".into(), "others".into()],
            probabilities: vec![0.75, 0.25],
            model_version: "m-1".into(),
            latency: LatencyBreakdown { spotting_ms: 1.0, preprocess_ms: 2.0, inference_ms: 3.0, total_ms: 7.0 },
            foreign_inputs: true,
            device: "ab12:cd34".into(),
            session: "5e55".into(),
            seq: 300,
        };
        let record = event.to_record().unwrap();
        assert_eq!(Event::from_record(&record).unwrap(), event);
        // A record of the second format: without device, session and sequence (each string a
        // length byte and its bytes, the sequence a varint of two bytes).
        let tail = 1 + 9 + 1 + 4 + 2;
        let mut v2 = record[..record.len() - tail].to_vec();
        let unstamped = Event { device: String::new(), session: String::new(), seq: 0, ..event.clone() };
        assert_eq!(Event::from_record(&v2).unwrap(), unstamped);
        // And of the first: also without the flag.
        assert_eq!(v2.pop(), Some(1), "the flag is the second format's last byte");
        assert_eq!(Event::from_record(&v2).unwrap(), Event { foreign_inputs: false, ..unstamped });
        assert!(Event::from_record(&v2[..v2.len() - 3]).is_err());
    }

    #[test]
    fn labels_read_for_people_with_their_probability() {
        let mut event = Event {
            wall_time_ms: 0,
            onset_s: 0.0,
            apex_s: 0.1,
            offset_s: 0.2,
            source: EventSource::Triggered,
            label: "others".into(),
            classes: vec!["surprise".into(), "others".into()],
            probabilities: vec![0.3, 0.7],
            model_version: "m".into(),
            latency: LatencyBreakdown::default(),
            foreign_inputs: false,
            device: String::new(),
            session: String::new(),
            seq: 1,
        };
        assert_eq!(event.most_probable(), ("others", 0.7));
        assert_eq!(event.describe_label(), "others p 0.70");
        event.label = crate::manifest::UNCERTAIN.into();
        assert_eq!(event.describe_label(), "uncertain (others p 0.70)");
    }
}
