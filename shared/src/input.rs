//! Model input assembly. The `InputSpec` travels inside model manifests, so the device builds
//! exactly the tensor the model was trained on.
//!
//! SKD-TSTSAN layout (38 × 48 × 48, official channel order):
//! 0 apex face, 1 onset face, 2–17 apex 4×4 grid blocks (row-major), 18–33 onset blocks,
//! 34/35 u/v of onset→apex flow, 36/37 u/v of apex→offset flow.
//!
//! Flow-image layouts (3 × 28 × 28), for AM3F-FlowNet, the flow-only SKD-TSTSAN and HTNet: the
//! onset→apex u, v and optical strain of the face crop, each resized to 28×28 and min-max scaled
//! per plane to 8-bit levels in [0, 1], like the composite set's published images
//! (`crate::flow_image`); HTNet's layout is the landmark mosaic of that image.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::{Flow, Tvl1Params, optical_strain, tvl1_flow};
use crate::image::{GrayImage, Interpolation, resize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputLayout {
    /// Apex/onset faces, their 4×4 grid blocks and two flows (SKD-TSTSAN).
    SkdTstsan38,
    /// Onset→apex u, v and optical strain, each plane min-max scaled to 8-bit levels in [0, 1].
    FlowStrain28,
    /// HTNet's 2×2 landmark mosaic of a `FlowStrain28` image: planes strain, v, u, 0…255.
    HtnetMosaic28,
}

/// How a flow component becomes a [0, 1] input channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum FlowNormalisation {
    /// Official pipeline: min-max per map to 0..255, truncated to 8 bit, min-max again to
    /// [0, 1]. Loses the zero level and sign of the motion.
    MinMaxPerMapU8,
    /// Keeps zero and sign: `0.5 + d / (2 · max_displacement)`, clamped to [0, 1].
    Fixed { max_displacement: f32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub layout: InputLayout,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Side of the square face crop that flows and grid blocks are computed on.
    pub face_size: usize,
    /// Grid blocks per side for the local stream.
    pub grid: usize,
    pub resize: Interpolation,
    pub flow_normalisation: FlowNormalisation,
    pub tvl1: Tvl1Params,
}

impl InputSpec {
    /// The official SKD-TSTSAN preprocessing.
    pub fn skd_tstsan() -> InputSpec {
        InputSpec {
            layout: InputLayout::SkdTstsan38,
            channels: 38,
            height: 48,
            width: 48,
            face_size: 128,
            grid: 4,
            resize: Interpolation::Bilinear,
            flow_normalisation: FlowNormalisation::MinMaxPerMapU8,
            tvl1: Tvl1Params::default(),
        }
    }

    /// The onset→apex flow image of AM3F-FlowNet and the flow-only SKD-TSTSAN.
    pub fn flow_strain() -> InputSpec {
        InputSpec {
            layout: InputLayout::FlowStrain28,
            channels: 3,
            height: crate::flow_image::SIDE,
            width: crate::flow_image::SIDE,
            resize: Interpolation::Area,
            ..InputSpec::skd_tstsan()
        }
    }

    /// HTNet's mosaic of the flow image.
    pub fn htnet_mosaic() -> InputSpec {
        InputSpec { layout: InputLayout::HtnetMosaic28, ..InputSpec::flow_strain() }
    }

    pub fn validate(&self) -> Result<()> {
        if self.layout != InputLayout::SkdTstsan38 {
            let side = crate::flow_image::SIDE;
            if (self.channels, self.height, self.width) != (3, side, side) || self.face_size < side {
                return Err(Error::InvalidArgument(format!(
                    "{:?} is 3×{side}×{side} from a face crop of at least {side} pixels; the spec says {}×{}×{} from {}",
                    self.layout, self.channels, self.height, self.width, self.face_size
                )));
            }
            return self.tvl1.validate();
        }
        let expected = 2 + 2 * self.grid * self.grid + 4;
        if self.channels != expected {
            return Err(Error::InvalidArgument(format!(
                "{:?} with a {g}x{g} grid has {expected} channels, the spec says {}",
                self.layout,
                self.channels,
                g = self.grid
            )));
        }
        if self.grid == 0 || self.face_size < self.grid * 3 || self.width == 0 || self.height == 0 {
            return Err(Error::InvalidArgument(format!(
                "input spec sizes do not fit together (face {}, grid {}, {}x{})",
                self.face_size, self.grid, self.width, self.height
            )));
        }
        if let FlowNormalisation::Fixed { max_displacement } = self.flow_normalisation
            && (!max_displacement.is_finite() || max_displacement <= 0.0)
        {
            return Err(Error::InvalidArgument("fixed flow normalisation needs a positive max_displacement".into()));
        }
        self.tvl1.validate()
    }

    /// What each channel holds, in order (for manifests and people).
    pub fn channel_names(&self) -> Vec<String> {
        match self.layout {
            InputLayout::FlowStrain28 => return ["flow_onset_apex_u", "flow_onset_apex_v", "strain_onset_apex"].map(String::from).to_vec(),
            InputLayout::HtnetMosaic28 => {
                return ["mosaic_strain", "mosaic_flow_v", "mosaic_flow_u"].map(String::from).to_vec();
            }
            InputLayout::SkdTstsan38 => {}
        }
        let g = self.grid;
        let mut names = vec!["apex".to_string(), "onset".to_string()];
        for frame in ["apex", "onset"] {
            for r in 0..g {
                for c in 0..g {
                    names.push(format!("{frame}_block_r{r}c{c}"));
                }
            }
        }
        names.extend(["flow_onset_apex_u", "flow_onset_apex_v", "flow_apex_offset_u", "flow_apex_offset_v"].map(String::from));
        names
    }
}

/// A C×H×W float tensor, row-major, ready to become a model input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl InputTensor {
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }
}

/// The two flows of the temporal stream, computed on the face crops.
#[derive(Debug, Clone)]
pub struct KeyFlows {
    pub onset_apex: Flow,
    pub apex_offset: Flow,
}

/// Brings a face crop to the spec's square size; 8-bit quantisation mirrors the official
/// pipeline, which stored every crop as an 8-bit image before computing flow.
fn face(spec: &InputSpec, img: &GrayImage, what: &str) -> Result<GrayImage> {
    img.check_finite(what)?;
    let img = if (img.width(), img.height()) == (spec.face_size, spec.face_size) {
        img.clone()
    } else {
        resize(img, spec.face_size, spec.face_size, spec.resize)
    };
    Ok(img.quantized_u8())
}

/// TV-L1 flows onset→apex and apex→offset on the face crops.
pub fn key_flows(spec: &InputSpec, onset: &GrayImage, apex: &GrayImage, offset: &GrayImage, threads: usize) -> Result<KeyFlows> {
    spec.validate()?;
    let (o, a, f) = (face(spec, onset, "onset frame")?, face(spec, apex, "apex frame")?, face(spec, offset, "offset frame")?);
    Ok(KeyFlows {
        onset_apex: tvl1_flow(&o, &a, &spec.tvl1, threads)?,
        apex_offset: tvl1_flow(&a, &f, &spec.tvl1, threads)?,
    })
}

/// The flow-image layouts from the onset→apex flow on the face crop: u, v and the optical
/// strain computed at the crop's resolution, each resized to 28×28 and scaled per plane to
/// 8-bit levels; HTNet's layout then tiles its landmark mosaic.
pub fn flow_image(spec: &InputSpec, onset_apex: &Flow) -> Result<InputTensor> {
    spec.validate()?;
    onset_apex.check_finite("onset→apex flow")?;
    let side = crate::flow_image::SIDE;
    let mut planes = Vec::with_capacity(3 * side * side);
    for plane in [onset_apex.u_image(), onset_apex.v_image(), optical_strain(onset_apex)] {
        let small = resize(&plane, side, side, spec.resize);
        planes.extend_from_slice(normalise_flow(&small, FlowNormalisation::MinMaxPerMapU8).data());
    }
    let data = match spec.layout {
        InputLayout::HtnetMosaic28 => crate::flow_image::htnet_mosaic(&planes, &crate::flow_image::HTNET_FALLBACK_LANDMARKS),
        _ => planes,
    };
    Ok(InputTensor { channels: 3, height: side, width: side, data })
}

/// Builds the model input from the three key face crops and their flows.
pub fn assemble(spec: &InputSpec, onset: &GrayImage, apex: &GrayImage, flows: &KeyFlows) -> Result<InputTensor> {
    spec.validate()?;
    if spec.layout != InputLayout::SkdTstsan38 {
        return flow_image(spec, &flows.onset_apex);
    }
    let (o, a) = (face(spec, onset, "onset frame")?, face(spec, apex, "apex frame")?);
    for (name, f) in [("onset→apex flow", &flows.onset_apex), ("apex→offset flow", &flows.apex_offset)] {
        f.check_finite(name)?;
        if (f.width(), f.height()) != (spec.face_size, spec.face_size) {
            return Err(Error::size(name, format!("{0}x{0}", spec.face_size), format!("{}x{}", f.width(), f.height())));
        }
    }
    let (w, h) = (spec.width, spec.height);
    let a = a.min_max_normalized();
    let o = o.min_max_normalized();
    let mut data = Vec::with_capacity(spec.channels * w * h);
    let mut push = |img: &GrayImage| data.extend_from_slice(resize(img, w, h, spec.resize).data());
    push(&a);
    push(&o);
    for frame in [&a, &o] {
        for block in frame.grid(spec.grid)? {
            push(&block);
        }
    }
    for f in [&flows.onset_apex, &flows.apex_offset] {
        for component in [f.u_image(), f.v_image()] {
            let small = resize(&component, w, h, spec.resize);
            data.extend_from_slice(normalise_flow(&small, spec.flow_normalisation).data());
        }
    }
    debug_assert_eq!(data.len(), spec.channels * w * h);
    Ok(InputTensor { channels: spec.channels, height: h, width: w, data })
}

/// Key frames in, model input out: the whole preprocessing of one sample.
pub fn build_input(spec: &InputSpec, onset: &GrayImage, apex: &GrayImage, offset: &GrayImage, threads: usize) -> Result<InputTensor> {
    if spec.layout != InputLayout::SkdTstsan38 {
        // Only the onset→apex flow is used: the offset frame costs no flow.
        spec.validate()?;
        let (o, a) = (face(spec, onset, "onset frame")?, face(spec, apex, "apex frame")?);
        return flow_image(spec, &tvl1_flow(&o, &a, &spec.tvl1, threads)?);
    }
    let flows = key_flows(spec, onset, apex, offset, threads)?;
    assemble(spec, onset, apex, &flows)
}

fn normalise_flow(map: &GrayImage, mode: FlowNormalisation) -> GrayImage {
    match mode {
        FlowNormalisation::MinMaxPerMapU8 => {
            let levels = map.min_max_normalized();
            let truncated: Vec<f32> = levels.data().iter().map(|v| (v * 255.0).floor()).collect();
            GrayImage::new(map.width(), map.height(), truncated).unwrap().min_max_normalized()
        }
        FlowNormalisation::Fixed { max_displacement } => {
            let data = map.data().iter().map(|d| (0.5 + d / (2.0 * max_displacement)).clamp(0.0, 1.0)).collect();
            GrayImage::new(map.width(), map.height(), data).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face_like(shift: f32) -> GrayImage {
        GrayImage::from_fn(128, 128, |x, y| {
            let (x, y) = (x as f32 - shift, y as f32);
            0.5 + 0.25 * (x * 0.2).sin() * (y * 0.15).cos() + 0.1 * ((x + y) * 0.05).sin()
        })
    }

    #[test]
    fn layout_matches_the_official_channel_order() {
        let spec = InputSpec::skd_tstsan();
        let onset = face_like(0.0);
        let apex = face_like(1.0);
        let flows = KeyFlows { onset_apex: Flow::zeros(128, 128), apex_offset: Flow::zeros(128, 128) };
        let t = assemble(&spec, &onset, &apex, &flows).unwrap();
        assert_eq!(t.shape(), [38, 48, 48]);
        let a = apex.quantized_u8().min_max_normalized();
        let o = onset.quantized_u8().min_max_normalized();
        assert_eq!(t.channel(0), resize(&a, 48, 48, Interpolation::Bilinear).data());
        assert_eq!(t.channel(1), resize(&o, 48, 48, Interpolation::Bilinear).data());
        // block (r=2, c=1) of the apex: channel 2 + 4*2 + 1, cut from the normalised apex
        let block = a.crop(32, 64, 32, 32).unwrap();
        assert_eq!(t.channel(11), resize(&block, 48, 48, Interpolation::Bilinear).data());
        let block = o.crop(96, 96, 32, 32).unwrap();
        assert_eq!(t.channel(33), resize(&block, 48, 48, Interpolation::Bilinear).data());
        // zero flow is constant -> all zeros, as the official loader produces
        assert!(t.channel(34).iter().all(|&v| v == 0.0));
        assert!(t.data.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(spec.channel_names().len(), 38);
        assert_eq!(spec.channel_names()[11], "apex_block_r2c1");
    }

    #[test]
    fn flow_image_layouts_hold_u_v_and_strain_as_the_composite_set_does() {
        // A rotation-free field whose u grows with x: u, v and strain all vary.
        let (mut u, mut v) = (Vec::new(), Vec::new());
        for y in 0..128 {
            for x in 0..128 {
                u.push(0.0002 * (x * x) as f32 + 0.1 * (y as f32 * 0.1).sin());
                v.push(0.01 * y as f32);
            }
        }
        let flow = Flow::new(128, 128, u, v).unwrap();
        let spec = InputSpec::flow_strain();
        spec.validate().unwrap();
        let image = flow_image(&spec, &flow).unwrap();
        assert_eq!(image.shape(), [3, 28, 28]);
        for plane in 0..3 {
            let values = image.channel(plane);
            let (lo, hi) = values.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            assert_eq!((lo, hi), (0.0, 1.0), "each plane spans the 8-bit range, as the published images do");
            let mut levels: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
            levels.sort_unstable();
            levels.dedup();
            assert!(levels.len() <= 256, "plane {plane} is quantised to 8-bit levels ({} values)", levels.len());
        }
        let u = resize(&flow.u_image(), 28, 28, Interpolation::Area);
        let expected_u = normalise_flow(&u, FlowNormalisation::MinMaxPerMapU8);
        assert_eq!(image.channel(0), expected_u.data());
        assert_eq!(spec.channel_names(), ["flow_onset_apex_u", "flow_onset_apex_v", "strain_onset_apex"]);

        let mosaic = flow_image(&InputSpec::htnet_mosaic(), &flow).unwrap();
        assert_eq!(mosaic.data, crate::flow_image::htnet_mosaic(&image.data, &crate::flow_image::HTNET_FALLBACK_LANDMARKS));
        // The device's path: key frames in, the same image out, without the apex→offset flow.
        let (onset, apex) = (face_like(0.0), face_like(1.0));
        let built = build_input(&spec, &onset, &apex, &face_like(5.0), 1).unwrap();
        let flows = key_flows(&spec, &onset, &apex, &face_like(0.0), 1).unwrap();
        assert_eq!(built, assemble(&spec, &onset, &apex, &flows).unwrap());
        let bad = InputSpec { channels: 4, ..InputSpec::flow_strain() };
        assert!(bad.validate().unwrap_err().to_string().contains("3×28×28"));
    }

    #[test]
    fn flow_channels_follow_the_normalisation_mode() {
        let spec = InputSpec { flow_normalisation: FlowNormalisation::Fixed { max_displacement: 2.0 }, ..InputSpec::skd_tstsan() };
        let f = Flow::new(128, 128, vec![1.0; 128 * 128], vec![-4.0; 128 * 128]).unwrap();
        let flows = KeyFlows { onset_apex: f.clone(), apex_offset: f };
        let t = assemble(&spec, &face_like(0.0), &face_like(0.0), &flows).unwrap();
        assert!(t.channel(34).iter().all(|&v| (v - 0.75).abs() < 1e-6));
        assert!(t.channel(35).iter().all(|&v| v == 0.0));

        let ramp = GrayImage::from_fn(48, 48, |x, _| x as f32 * 0.1 - 1.0);
        let n = normalise_flow(&ramp, FlowNormalisation::MinMaxPerMapU8);
        assert_eq!(n.get(0, 0), 0.0);
        assert_eq!(n.get(47, 0), 1.0);
        // truncation to 8-bit levels: every value is k/255
        assert!(n.data().iter().all(|v| ((v * 255.0) - (v * 255.0).round()).abs() < 1e-3));
    }

    #[test]
    fn bad_inputs_are_named() {
        let spec = InputSpec::skd_tstsan();
        let mut bad = face_like(0.0);
        bad.data_mut()[10] = f32::INFINITY;
        let err = build_input(&spec, &face_like(0.0), &bad, &face_like(0.0), 1).unwrap_err().to_string();
        assert!(err.contains("apex frame"), "{err}");
        let flows = KeyFlows { onset_apex: Flow::zeros(64, 64), apex_offset: Flow::zeros(128, 128) };
        assert!(assemble(&spec, &face_like(0.0), &face_like(0.0), &flows).is_err());
        let broken = InputSpec { channels: 37, ..InputSpec::skd_tstsan() };
        assert!(broken.validate().is_err());
    }

    #[test]
    fn spec_serialises_for_manifests() {
        let spec = InputSpec::skd_tstsan();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"min_max_per_map_u8\"") && json.contains("\"bilinear\""), "{json}");
        assert_eq!(serde_json::from_str::<InputSpec>(&json).unwrap(), spec);
    }
}
