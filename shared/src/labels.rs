//! Emotion label taxonomies of every dataset and class set the product trains on.
//!
//! Each taxonomy maps a dataset's raw annotation ("happiness", "Happy", CK+ code "5", ...) to a
//! class index, or marks it as deliberately excluded (e.g. CASME II "fear" in the 5-class task).
//! Anything else is an error: a typo in a coding sheet must never become a silent class.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Taxonomy {
    Casme2Five,
    Casme2Three,
    SammThree,
    MmewSix,
    MmewFour,
    Casme3Seven,
    Casme3Four,
    Casme3Three,
    CkPlusSeven,
    CompositeThree,
}

/// What a raw label means in one taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelMapping {
    Class(usize),
    /// A real emotion of the dataset that this class set leaves out (counted, not an error).
    Excluded,
}

/// Canonical emotion words; raw labels are normalised to one of these first.
const SYNONYMS: &[(&str, &str)] = &[
    ("happy", "happiness"),
    ("happiness", "happiness"),
    ("sad", "sadness"),
    ("sadness", "sadness"),
    ("angry", "anger"),
    ("anger", "anger"),
    ("other", "others"),
    ("others", "others"),
    ("surprise", "surprise"),
    ("surprised", "surprise"),
    ("disgust", "disgust"),
    ("repression", "repression"),
    ("fear", "fear"),
    ("contempt", "contempt"),
    ("negative", "negative"),
    ("positive", "positive"),
];

impl Taxonomy {
    pub const ALL: [Taxonomy; 10] = [
        Taxonomy::Casme2Five,
        Taxonomy::Casme2Three,
        Taxonomy::SammThree,
        Taxonomy::MmewSix,
        Taxonomy::MmewFour,
        Taxonomy::Casme3Seven,
        Taxonomy::Casme3Four,
        Taxonomy::Casme3Three,
        Taxonomy::CkPlusSeven,
        Taxonomy::CompositeThree,
    ];

    /// Stable name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Taxonomy::Casme2Five => "casme2-5",
            Taxonomy::Casme2Three => "casme2-3",
            Taxonomy::SammThree => "samm-3",
            Taxonomy::MmewSix => "mmew-6",
            Taxonomy::MmewFour => "mmew-4",
            Taxonomy::Casme3Seven => "casme3-7",
            Taxonomy::Casme3Four => "casme3-4",
            Taxonomy::Casme3Three => "casme3-3",
            Taxonomy::CkPlusSeven => "ckplus-7",
            Taxonomy::CompositeThree => "composite-3",
        }
    }

    /// Class names in index order.
    pub fn classes(self) -> &'static [&'static str] {
        match self {
            // Order of the official SKD-TSTSAN code.
            Taxonomy::Casme2Five => &["happiness", "surprise", "disgust", "repression", "others"],
            // MEGC / HTNet convention for every 3-class task.
            Taxonomy::Casme2Three | Taxonomy::SammThree | Taxonomy::Casme3Three | Taxonomy::CompositeThree => {
                &["negative", "positive", "surprise"]
            }
            Taxonomy::MmewSix => &["happiness", "disgust", "surprise", "fear", "sadness", "others"],
            Taxonomy::MmewFour => &["happiness", "disgust", "surprise", "others"],
            Taxonomy::Casme3Seven => &["anger", "disgust", "fear", "happiness", "others", "sadness", "surprise"],
            Taxonomy::Casme3Four => &["negative", "positive", "surprise", "others"],
            // CK+ emotion codes 1..7 in order.
            Taxonomy::CkPlusSeven => &["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"],
        }
    }

    pub fn num_classes(self) -> usize {
        self.classes().len()
    }

    /// Maps a raw dataset label to a class, an explicit exclusion, or an error.
    pub fn map(self, raw: &str) -> Result<LabelMapping> {
        let unknown =
            || Error::UnknownLabel { label: raw.to_string(), taxonomy: self.name().to_string(), known: self.known_raw_labels().join(", ") };
        let trimmed = raw.trim().to_ascii_lowercase();
        if self == Taxonomy::CompositeThree {
            // The composite CSV stores the class index itself.
            return match trimmed.as_str() {
                "0" | "negative" => Ok(LabelMapping::Class(0)),
                "1" | "positive" => Ok(LabelMapping::Class(1)),
                "2" | "surprise" => Ok(LabelMapping::Class(2)),
                _ => Err(unknown()),
            };
        }
        let word = if self == Taxonomy::CkPlusSeven {
            match trimmed.parse::<f32>() {
                // CK+ Emotion files hold e.g. "3.0000000e+00"; 0 is neutral (no expression).
                Ok(code) if code.fract() == 0.0 && (1.0..=7.0).contains(&code) => {
                    return Ok(LabelMapping::Class(code as usize - 1));
                }
                Ok(0.0) => return Ok(LabelMapping::Excluded),
                Ok(_) => return Err(unknown()),
                Err(_) => canonical(&trimmed).ok_or_else(unknown)?,
            }
        } else {
            canonical(&trimmed).ok_or_else(unknown)?
        };
        let grouped = self.group(word);
        match grouped {
            Some(name) => match self.classes().iter().position(|c| *c == name) {
                Some(i) => Ok(LabelMapping::Class(i)),
                None => Err(unknown()),
            },
            None if self.excluded().contains(&word) => Ok(LabelMapping::Excluded),
            None => Err(unknown()),
        }
    }

    /// Class index of `raw`, or an error if it is unknown or excluded.
    pub fn class_index(self, raw: &str) -> Result<usize> {
        match self.map(raw)? {
            LabelMapping::Class(i) => Ok(i),
            LabelMapping::Excluded => Err(Error::InvalidArgument(format!(
                "label {raw:?} is excluded from {} (classes: {})",
                self.name(),
                self.classes().join(", ")
            ))),
        }
    }

    /// The class a canonical emotion word belongs to, if the class set keeps it.
    fn group(self, word: &'static str) -> Option<&'static str> {
        let three = |w: &'static str, negatives: &[&str]| -> Option<&'static str> {
            match w {
                "happiness" | "positive" => Some("positive"),
                "surprise" => Some("surprise"),
                "negative" => Some("negative"),
                w if negatives.contains(&w) => Some("negative"),
                _ => None,
            }
        };
        match self {
            Taxonomy::Casme2Three => three(word, &["disgust", "repression"]),
            Taxonomy::SammThree => three(word, &["anger", "contempt", "disgust", "fear", "sadness"]),
            Taxonomy::Casme3Three => three(word, &["anger", "disgust", "fear", "sadness"]),
            Taxonomy::Casme3Four => match word {
                "others" => Some("others"),
                w => three(w, &["anger", "disgust", "fear", "sadness"]),
            },
            _ => self.classes().iter().copied().find(|c| *c == word),
        }
    }

    /// Real emotions of the dataset that this class set deliberately leaves out.
    fn excluded(self) -> &'static [&'static str] {
        match self {
            Taxonomy::Casme2Five => &["sadness", "fear"],
            Taxonomy::Casme2Three => &["others", "sadness", "fear"],
            Taxonomy::SammThree => &["others"],
            Taxonomy::MmewSix => &["anger"],
            Taxonomy::MmewFour => &["anger", "fear", "sadness"],
            Taxonomy::Casme3Seven => &[],
            Taxonomy::Casme3Four => &[],
            Taxonomy::Casme3Three => &["others"],
            Taxonomy::CkPlusSeven => &[],
            Taxonomy::CompositeThree => &[],
        }
    }

    fn known_raw_labels(self) -> Vec<String> {
        if self == Taxonomy::CompositeThree {
            return vec!["0".into(), "1".into(), "2".into()];
        }
        let mut known: Vec<String> = SYNONYMS
            .iter()
            .filter(|(_, w)| self.group(w).is_some() || self.excluded().contains(w))
            .map(|(raw, _)| raw.to_string())
            .collect();
        if self == Taxonomy::CkPlusSeven {
            known.extend((0..=7).map(|c| c.to_string()));
        }
        known
    }
}

fn canonical(lower: &str) -> Option<&'static str> {
    SYNONYMS.iter().find(|(raw, _)| *raw == lower).map(|(_, w)| *w)
}

impl fmt::Display for Taxonomy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Taxonomy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Taxonomy::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Taxonomy::ALL.iter().map(|t| t.name()).collect();
            Error::InvalidArgument(format!("unknown class set {s:?}; choose one of {}", names.join(", ")))
        })
    }
}

impl TryFrom<String> for Taxonomy {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Taxonomy> for String {
    fn from(t: Taxonomy) -> String {
        t.name().to_string()
    }
}

/// Counts what a dataset's labels became: samples kept per class and raw labels skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelTally {
    pub kept: BTreeMap<String, usize>,
    pub skipped: BTreeMap<String, usize>,
}

impl LabelTally {
    /// Maps `raw`, records the outcome, and returns the class index if the sample is kept.
    pub fn record(&mut self, taxonomy: Taxonomy, raw: &str) -> Result<Option<usize>> {
        match taxonomy.map(raw)? {
            LabelMapping::Class(i) => {
                *self.kept.entry(taxonomy.classes()[i].to_string()).or_default() += 1;
                Ok(Some(i))
            }
            LabelMapping::Excluded => {
                *self.skipped.entry(raw.trim().to_ascii_lowercase()).or_default() += 1;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casme2_five_follows_official_order_and_drops_sadness_and_fear() {
        let t = Taxonomy::Casme2Five;
        assert_eq!(t.map("happiness").unwrap(), LabelMapping::Class(0));
        assert_eq!(t.map("Surprise").unwrap(), LabelMapping::Class(1));
        assert_eq!(t.map("disgust").unwrap(), LabelMapping::Class(2));
        assert_eq!(t.map("repression").unwrap(), LabelMapping::Class(3));
        assert_eq!(t.map(" others ").unwrap(), LabelMapping::Class(4));
        assert_eq!(t.map("sadness").unwrap(), LabelMapping::Excluded);
        assert_eq!(t.map("fear").unwrap(), LabelMapping::Excluded);
    }

    #[test]
    fn three_class_sets_group_negatives() {
        assert_eq!(Taxonomy::Casme2Three.map("repression").unwrap(), LabelMapping::Class(0));
        assert_eq!(Taxonomy::Casme2Three.map("happiness").unwrap(), LabelMapping::Class(1));
        assert_eq!(Taxonomy::Casme2Three.map("others").unwrap(), LabelMapping::Excluded);
        assert_eq!(Taxonomy::SammThree.map("Contempt").unwrap(), LabelMapping::Class(0));
        assert_eq!(Taxonomy::SammThree.map("Other").unwrap(), LabelMapping::Excluded);
        assert_eq!(Taxonomy::Casme3Three.map("sad").unwrap(), LabelMapping::Class(0));
        assert_eq!(Taxonomy::Casme3Four.map("others").unwrap(), LabelMapping::Class(3));
        assert_eq!(Taxonomy::Casme3Seven.map("happy").unwrap(), LabelMapping::Class(3));
    }

    #[test]
    fn mmew_and_ckplus() {
        assert_eq!(Taxonomy::MmewSix.map("anger").unwrap(), LabelMapping::Excluded);
        assert_eq!(Taxonomy::MmewFour.map("fear").unwrap(), LabelMapping::Excluded);
        assert_eq!(Taxonomy::MmewFour.map("others").unwrap(), LabelMapping::Class(3));
        assert_eq!(Taxonomy::CkPlusSeven.map("3.0000000e+00").unwrap(), LabelMapping::Class(2));
        assert_eq!(Taxonomy::CkPlusSeven.map("0").unwrap(), LabelMapping::Excluded);
        assert!(Taxonomy::CkPlusSeven.map("9").is_err());
        assert_eq!(Taxonomy::CompositeThree.map("2").unwrap(), LabelMapping::Class(2));
    }

    #[test]
    fn unknown_labels_are_errors_that_list_the_known_ones() {
        let err = Taxonomy::Casme2Five.map("hapiness").unwrap_err().to_string();
        assert!(err.contains("hapiness") && err.contains("casme2-5") && err.contains("happiness"), "{err}");
        assert!(Taxonomy::Casme2Five.class_index("fear").is_err());
    }

    #[test]
    fn names_round_trip_and_every_class_maps_to_itself() {
        for t in Taxonomy::ALL {
            assert_eq!(t.name().parse::<Taxonomy>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Taxonomy>(&json).unwrap(), t);
            if t != Taxonomy::CompositeThree {
                for (i, c) in t.classes().iter().enumerate() {
                    assert_eq!(t.map(c).unwrap(), LabelMapping::Class(i), "{t} {c}");
                }
            }
        }
        assert!("casme2-6".parse::<Taxonomy>().is_err());
    }

    #[test]
    fn tally_counts_kept_and_skipped() {
        let mut tally = LabelTally::default();
        for raw in ["happiness", "fear", "others", "Fear"] {
            tally.record(Taxonomy::Casme2Five, raw).unwrap();
        }
        assert_eq!(tally.kept["happiness"], 1);
        assert_eq!(tally.skipped["fear"], 2);
        assert!(tally.record(Taxonomy::Casme2Five, "bogus").is_err());
    }
}
