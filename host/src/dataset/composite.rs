//! The MEGC 2019 composite set as HTNet and STSTNet publish it: a CSV
//! (`combined_3_class2_for_optical_flow.csv`: dataset, sub, filename_o, label 0/1/2) and one
//! 28×28 RGB PNG per sample in `STSNet_whole_norm_u_v_os/`, named `<sub>_<filename_o> .png`
//! (with a space before the extension), whose planes are the onset→apex horizontal flow (R),
//! vertical flow (G) and optical strain (B), each min-max scaled to 0…255 per image.
//!
//! The samples are read as (u, v, strain) in [0, 1] (bytes / 255): the layout
//! `InputLayout::FlowStrain28` names, and what a device computes from its own frames.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::samples::{DataSource, SampleArrays};
use super::sheet::{Column, Sheet};
use mer_shared::flow_image::SIDE;
use mer_shared::labels::{LabelMapping, Taxonomy};
use mer_shared::manifest::InputProvenance;

pub const CSV_NAME: &str = "combined_3_class2_for_optical_flow.csv";
pub const FLOW_DIR: &str = "STSNet_whole_norm_u_v_os";

const DATASET: Column = Column(&["dataset"]);
const SUBJECT: Column = Column(&["sub"]);
const CLIP: Column = Column(&["filename_o"]);
const LABEL: Column = Column(&["label"]);

/// One row of the CSV with its flow image.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositeSample {
    /// Source dataset: casme2, smic or samm.
    pub dataset: String,
    /// Subject id as written (leading zeros kept: SAMM's `006`).
    pub subject: String,
    pub clip: String,
    /// 0 negative, 1 positive, 2 surprise.
    pub class: usize,
    pub flow: PathBuf,
}

/// Every row of the CSV under `root`, each with a flow image that exists; an error names the row.
pub fn read_samples(root: &Path) -> Result<Vec<CompositeSample>> {
    let csv = root.join(CSV_NAME);
    if !csv.is_file() {
        bail!("{} has no {CSV_NAME}; the composite layout is {CSV_NAME} beside {FLOW_DIR}/", root.display());
    }
    let sheet = Sheet::read(&csv, &[DATASET, SUBJECT, CLIP, LABEL])?;
    let [dataset, subject, clip, label] = [DATASET, SUBJECT, CLIP, LABEL].map(|c| sheet.column(c));
    let (dataset, subject, clip, label) = (dataset?, subject?, clip?, label?);
    let mut samples = Vec::with_capacity(sheet.rows.len());
    for row in &sheet.rows {
        let at = || format!("{} row {}", csv.display(), row.number);
        let text = |i: usize| row.cell(i).text();
        let (subject, clip) = (text(subject), text(clip));
        if subject.is_empty() || clip.is_empty() {
            bail!("{}: the sub or filename_o cell is empty", at());
        }
        let class = match Taxonomy::CompositeThree.map(&text(label)).with_context(at)? {
            LabelMapping::Class(c) => c,
            LabelMapping::Excluded => bail!("{}: label {:?} is not one of the three classes", at(), text(label)),
        };
        let flow = root.join(FLOW_DIR).join(format!("{subject}_{clip} .png"));
        if !flow.is_file() {
            bail!("{}: its flow image {} does not exist", at(), flow.display());
        }
        samples.push(CompositeSample { dataset: text(dataset), subject, clip, class, flow });
    }
    if samples.is_empty() {
        bail!("{} lists no samples", csv.display());
    }
    Ok(samples)
}

/// (u, v, strain) planes of one flow image, each in [0, 1].
pub fn read_flow_image(path: &Path) -> Result<Vec<f32>> {
    let image = image::open(path).with_context(|| format!("cannot decode {}", path.display()))?;
    if (image.width() as usize, image.height() as usize) != (SIDE, SIDE) {
        bail!("{} is {}×{}; composite flow images are {SIDE}×{SIDE}", path.display(), image.width(), image.height());
    }
    let rgb = image.to_rgb8();
    let mut planes = vec![0f32; 3 * SIDE * SIDE];
    for (i, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            planes[c * SIDE * SIDE + i] = f32::from(pixel[c]) / 255.0;
        }
    }
    Ok(planes)
}

/// The whole set: (N, 3, 28, 28) in (u, v, strain) order.
pub fn load(root: &Path) -> Result<SampleArrays> {
    let samples = read_samples(root)?;
    let mut values = Vec::with_capacity(samples.len() * 3 * SIDE * SIDE);
    for s in &samples {
        values.extend(read_flow_image(&s.flow)?);
    }
    let path = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let digest = digest(&values);
    Ok(SampleArrays {
        shape: [3, SIDE, SIDE],
        values,
        labels: samples.iter().map(|s| s.class as i64).collect(),
        subjects: samples.iter().map(|s| s.subject.clone()).collect(),
        ids: samples.iter().map(|s| format!("{}/{}_{}", s.dataset, s.subject, s.clip)).collect(),
        classes: Taxonomy::CompositeThree.classes().iter().map(|c| c.to_string()).collect(),
        source: DataSource {
            path: path.display().to_string(),
            digest,
            taxonomy: Taxonomy::CompositeThree.name().to_string(),
            inputs: InputProvenance::StstnetPng,
            sources: Vec::new(),
        },
    })
}

/// Identifies the pixel content, so a run records exactly which images it saw.
fn digest(values: &[f32]) -> String {
    mer_shared::input::f32_digest(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A composite layout with `rows` (dataset, sub, clip, label) and a flow image each whose
    /// u plane holds the row number.
    fn write_layout(root: &Path, rows: &[(&str, &str, &str, &str)]) {
        std::fs::create_dir_all(root.join(FLOW_DIR)).unwrap();
        let mut csv = String::from("dataset,sub,filename_o,label,apex,imagename,sub_filename\n");
        for (i, (dataset, sub, clip, label)) in rows.iter().enumerate() {
            csv.push_str(&format!("{dataset},{sub},{clip},{label},,{sub}_{clip}.jpg,\n"));
            let image = image::RgbImage::from_fn(SIDE as u32, SIDE as u32, |x, y| image::Rgb([i as u8, (x * 9) as u8, (y * 9) as u8]));
            image.save(root.join(FLOW_DIR).join(format!("{sub}_{clip} .png"))).unwrap();
        }
        std::fs::write(root.join(CSV_NAME), csv).unwrap();
    }

    #[test]
    fn reads_the_published_layout_with_its_quirks() {
        let dir = tempfile::tempdir().unwrap();
        write_layout(
            dir.path(),
            &[("casme2", "sub01", "EP02_01f", "1"), ("samm", "006", "006_1_2", "0"), ("smic", "s01", "s01_ne_01", "2")],
        );
        let data = load(dir.path()).unwrap();
        assert_eq!((data.shape, data.values.len()), ([3, 28, 28], 3 * 3 * 28 * 28));
        assert_eq!(data.labels, [1, 0, 2]);
        assert_eq!(data.subjects, ["sub01", "006", "s01"], "subject ids keep their leading zeros");
        assert_eq!(data.ids[1], "samm/006_006_1_2");
        assert_eq!(data.classes, ["negative", "positive", "surprise"]);
        // R is u, G is v (x·9 here), B strain (y·9), scaled to [0, 1].
        let at = |c: usize| f64::from(data.values[2 * 3 * 28 * 28 + c * 28 * 28 + 5 * 28 + 7]);
        let (u, v, strain) = (at(0), at(1), at(2));
        assert!((u - 2.0 / 255.0).abs() < 1e-6 && (v - 63.0 / 255.0).abs() < 1e-6 && (strain - 45.0 / 255.0).abs() < 1e-6);
    }

    fn load_error(root: &Path) -> String {
        match load(root) {
            Ok(_) => panic!("{} loaded", root.display()),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn mistakes_name_the_row_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_error(dir.path());
        assert!(e.contains(CSV_NAME), "{e}");
        write_layout(dir.path(), &[("casme2", "sub01", "EP02_01f", "1"), ("casme2", "sub02", "EP03_02f", "7")]);
        let e = load_error(dir.path());
        assert!(e.contains("row 3") && e.contains('7'), "{e}");
        write_layout(dir.path(), &[("casme2", "sub01", "EP02_01f", "1")]);
        std::fs::remove_file(dir.path().join(FLOW_DIR).join("sub01_EP02_01f .png")).unwrap();
        let e = load_error(dir.path());
        assert!(e.contains("row 2") && e.contains("sub01_EP02_01f .png"), "{e}");
        write_layout(dir.path(), &[("casme2", "sub01", "EP02_01f", "1")]);
        image::RgbImage::new(32, 28).save(dir.path().join(FLOW_DIR).join("sub01_EP02_01f .png")).unwrap();
        assert!(load_error(dir.path()).contains("32×28"));
    }

    /// The real CASME II part of the composite set, when the shared data folder is present.
    #[test]
    fn the_real_casme2_part_matches_its_published_counts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/composite-casme2");
        if !root.exists() {
            assert!(
                std::env::var("MER_REQUIRE_REFERENCE").as_deref() != Ok("1"),
                "{} is missing (MER_REQUIRE_REFERENCE=1)",
                root.display()
            );
            eprintln!("SKIPPED: {} is missing (the composite CASME II data sits beside the repository)", root.display());
            return;
        }
        let data = load(&root).unwrap();
        assert_eq!(data.labels.len(), 145);
        assert_eq!(data.subjects.iter().collect::<std::collections::BTreeSet<_>>().len(), 24);
        let counts = |keep: &dyn Fn(&str) -> bool| {
            let mut counts = [0; 3];
            data.labels.iter().zip(&data.subjects).filter(|(_, s)| keep(s)).for_each(|(&l, _)| counts[l as usize] += 1);
            counts
        };
        assert_eq!(counts(&|_| true), [88, 32, 25]);
        assert_eq!(counts(&|s| s == "sub17"), [23, 7, 1]);
    }
}
