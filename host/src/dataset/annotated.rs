//! The row loop shared by the datasets coded in one sheet with a row per clip (CASME II, SAMM,
//! MMEW, CAS(ME)^3): each dataset only says where a row's frames are and what its marks are;
//! label mapping, folder checks, key-frame resolution and the notes are done here, identically.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;

use anyhow::{Result, bail};
use mer_shared::labels::LabelMapping;

use super::frames::FrameFolder;
use super::keyframes::{self, Extent, Marks};
use super::sheet::{Sheet, SheetRow};
use super::{ClipSample, LoadedDataset};

/// What one sheet row describes.
pub(super) enum RowPlan {
    Clip(PlannedClip),
    /// A row that is deliberately not a sample (e.g. no clip name, a macro-expression).
    Skip {
        sample: String,
        message: String,
    },
}

pub(super) struct PlannedClip {
    pub id: String,
    pub subject: String,
    pub raw_label: String,
    /// The folder that must hold the frames.
    pub dir: PathBuf,
    pub extent: Extent,
    pub marks: Marks,
}

/// Adds the samples, repairs and skips of every row of `sheet` to `dataset`.
pub(super) fn load_rows(dataset: &mut LoadedDataset, sheet: &Sheet, mut plan: impl FnMut(&SheetRow) -> Result<RowPlan>) -> Result<()> {
    let taxonomy = dataset.taxonomy;
    let mut folders: HashMap<PathBuf, FrameFolder> = HashMap::new();
    for row in &sheet.rows {
        let source = sheet.source(row);
        let clip = match plan(row)? {
            RowPlan::Clip(clip) => clip,
            RowPlan::Skip { sample, message } => {
                dataset.skip(&sample, &source, message);
                continue;
            }
        };
        let class = match taxonomy.map(&clip.raw_label) {
            Ok(LabelMapping::Class(i)) => i,
            Ok(LabelMapping::Excluded) => {
                dataset.tally.record(taxonomy, &clip.raw_label)?;
                dataset.skip(&clip.id, &source, format!("label excluded from {taxonomy}: {}", clip.raw_label));
                continue;
            }
            Err(e) => bail!("{}: {e}", sheet.at(row)),
        };
        let folder = match folders.entry(clip.dir.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                if !clip.dir.is_dir() {
                    bail!("{}: clip folder {} does not exist", sheet.at(row), clip.dir.display());
                }
                e.insert(FrameFolder::list(&clip.dir)?)
            }
        };
        if folder.is_empty() {
            bail!("{}: clip folder {} holds no numbered frame images (.jpg, .jpeg, .png, .bmp)", sheet.at(row), folder.dir().display());
        }
        match keyframes::resolve(&clip.marks, folder, clip.extent) {
            Ok((frames, repairs)) => {
                for message in repairs {
                    dataset.repair(&clip.id, &source, message);
                }
                dataset.tally.record(taxonomy, &clip.raw_label)?;
                dataset.samples.push(ClipSample {
                    id: clip.id,
                    subject: clip.subject,
                    raw_label: clip.raw_label,
                    class,
                    first: frames.first,
                    onset: frames.onset_path,
                    apex: frames.apex_path,
                    offset: frames.offset_path,
                    source,
                });
            }
            Err(reason) => dataset.skip(&clip.id, &source, reason),
        }
    }
    Ok(())
}

/// The skip for a row that names no clip (trailing notes, totals, blank-keyed rows).
pub(super) fn unnamed_row(column: &str) -> RowPlan {
    RowPlan::Skip { sample: String::new(), message: format!("row without a clip name: column {column:?} is blank") }
}
