//! From video frames to a model's input: the one implementation both sides call.
//!
//! [`model_input`] takes a clip's frames, a face box and the onset/apex/offset frame numbers and
//! returns the tensor for an [`InputSpec`]: each key frame's face box cut out and resized once to
//! the spec's face size ([`face_crop`]), then flows, strain and the layout ([`input_from_faces`]).
//! `mer prepare` calls it on dataset clips, `merd classify-clip` on a frame folder; `merd run`
//! calls [`face_crop`] on every frame as it arrives (the crops are what its ring buffer holds)
//! and [`input_from_faces`] on a spotted or triggered window, the same two steps in the same
//! order. Every convention of those steps is a field of the spec, which travels in the manifest.
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
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::face::FaceBox;
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

impl InputLayout {
    /// The names `mer prepare --input` takes.
    pub const NAMES: [(&'static str, InputLayout); 3] = [
        ("skd-tstsan", InputLayout::SkdTstsan38),
        ("flow-strain28", InputLayout::FlowStrain28),
        ("htnet-mosaic28", InputLayout::HtnetMosaic28),
    ];

    pub fn name(self) -> &'static str {
        InputLayout::NAMES.iter().find(|(_, l)| *l == self).map(|(n, _)| *n).expect("every layout has a name")
    }

    /// The project's preprocessing for this layout.
    pub fn spec(self) -> InputSpec {
        match self {
            InputLayout::SkdTstsan38 => InputSpec::skd_tstsan(),
            InputLayout::FlowStrain28 => InputSpec::flow_strain(),
            InputLayout::HtnetMosaic28 => InputSpec::htnet_mosaic(),
        }
    }

    /// Whether the apex→offset flow (and so the offset frame) enters the input.
    pub fn uses_offset(self) -> bool {
        self == InputLayout::SkdTstsan38
    }
}

impl std::str::FromStr for InputLayout {
    type Err = Error;
    fn from_str(s: &str) -> Result<InputLayout> {
        InputLayout::NAMES.iter().find(|(n, _)| *n == s).map(|(_, l)| *l).ok_or_else(|| {
            let names: Vec<&str> = InputLayout::NAMES.iter().map(|(n, _)| *n).collect();
            Error::InvalidArgument(format!("unknown input layout {s:?}; choose one of {}", names.join(", ")))
        })
    }
}

/// How a face crop's pixels are stored before flows and layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantisation {
    /// Rounded to 8-bit levels, as the official pipeline did by writing every crop as an 8-bit image.
    U8,
    /// Kept as the resize computed it.
    None,
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

/// Every parameter from frames to tensor. The face box itself is given in whole pixels of the
/// frame and must lie inside it; it is cut out exactly, with no rounding or padding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub layout: InputLayout,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Side of the square face crop that flows and grid blocks are computed on.
    pub face_size: usize,
    /// The one resize of the face box, at its size in the frame, to `face_size`×`face_size`.
    /// (Manifests from before this field resized with `resize`, bilinear for SKD-TSTSAN.)
    #[serde(default = "bilinear")]
    pub face_resize: Interpolation,
    /// What the resized face crop is stored as before flows are computed.
    #[serde(default = "u8_levels")]
    pub face_quantisation: Quantisation,
    /// Grid blocks per side for the local stream.
    pub grid: usize,
    /// The resize of every face, block and flow plane to the input's height×width.
    pub resize: Interpolation,
    pub flow_normalisation: FlowNormalisation,
    pub tvl1: Tvl1Params,
}

fn bilinear() -> Interpolation {
    Interpolation::Bilinear
}

fn u8_levels() -> Quantisation {
    Quantisation::U8
}

impl InputSpec {
    /// The official SKD-TSTSAN preprocessing: the face resized bilinearly (`cv2.resize`'s
    /// default) to 128×128 and stored as an 8-bit image.
    pub fn skd_tstsan() -> InputSpec {
        InputSpec {
            layout: InputLayout::SkdTstsan38,
            channels: 38,
            height: 48,
            width: 48,
            face_size: 128,
            face_resize: Interpolation::Bilinear,
            face_quantisation: Quantisation::U8,
            grid: 4,
            resize: Interpolation::Bilinear,
            flow_normalisation: FlowNormalisation::MinMaxPerMapU8,
            tvl1: Tvl1Params::default(),
        }
    }

    /// The onset→apex flow image of AM3F-FlowNet and the flow-only SKD-TSTSAN. Faces and planes
    /// shrink by area averaging, which does not alias as a bilinear shrink of a large face does.
    pub fn flow_strain() -> InputSpec {
        InputSpec {
            layout: InputLayout::FlowStrain28,
            channels: 3,
            height: crate::flow_image::SIDE,
            width: crate::flow_image::SIDE,
            face_resize: Interpolation::Area,
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
    /// Hex SHA-256 of the values as little-endian f32 bytes in C order: names this exact input,
    /// so host and device can show they computed the same one.
    pub fn sha256(&self) -> String {
        f32_digest(&self.data)
    }
}

/// The frame numbers of a window's key frames. Onset ≤ apex ≤ offset, except that the offset
/// may equal the onset for clips that end at the apex (CK+: the neutral first frame stands in
/// for the return).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFrames {
    pub onset: i64,
    pub apex: i64,
    pub offset: i64,
}

impl KeyFrames {
    pub fn new(onset: i64, apex: i64, offset: i64) -> Result<KeyFrames> {
        if onset > apex || (apex > offset && offset != onset) {
            return Err(Error::InvalidArgument(format!(
                "key frames out of order: onset {onset}, apex {apex}, offset {offset} (need onset ≤ apex ≤ offset)"
            )));
        }
        Ok(KeyFrames { onset, apex, offset })
    }
}

/// A clip's frames by frame number, decoded to gray in [0, 1].
pub trait ClipFrames {
    fn frame(&self, number: i64) -> Result<GrayImage>;
}

impl ClipFrames for crate::frames::FrameFolder {
    fn frame(&self, number: i64) -> Result<GrayImage> {
        self.load(number)
    }
}

/// The face of one frame as a model sees it: `face` cut out of the frame exactly (the whole
/// frame when None), resized once with the spec's method to `face_size`×`face_size` and
/// quantised as the spec says.
pub fn face_crop(spec: &InputSpec, frame: &GrayImage, face: Option<&FaceBox>) -> Result<GrayImage> {
    let (w, h) = (frame.width(), frame.height());
    let cut = match face {
        None => frame.clone(),
        Some(b) => {
            if b.width == 0 || b.height == 0 || b.x.saturating_add(b.width) > w || b.y.saturating_add(b.height) > h {
                return Err(Error::InvalidArgument(format!(
                    "face box {},{},{},{} (x,y,w,h) does not lie inside the {w}×{h} frame",
                    b.x, b.y, b.width, b.height
                )));
            }
            frame.crop(b.x, b.y, b.width, b.height)?
        }
    };
    let side = spec.face_size;
    let sized = if (cut.width(), cut.height()) == (side, side) { cut } else { resize(&cut, side, side, spec.face_resize) };
    Ok(match spec.face_quantisation {
        Quantisation::U8 => sized.quantized_u8(),
        Quantisation::None => sized,
    })
}

/// Frames, face box and key frames in, model input out: the whole preprocessing of one window.
/// Only the frames the layout needs are decoded (the flow images do not use the offset).
pub fn model_input(
    spec: &InputSpec,
    frames: &dyn ClipFrames,
    face: Option<&FaceBox>,
    keys: KeyFrames,
    threads: usize,
) -> Result<InputTensor> {
    spec.validate()?;
    let keys = KeyFrames::new(keys.onset, keys.apex, keys.offset)?;
    // One face box is cut from every key frame, so they must share one size: a frame of
    // another size would silently give another part of the picture.
    let mut first_size: Option<(i64, usize, usize)> = None;
    let mut crop = |what: &str, number: i64| -> Result<GrayImage> {
        let frame = frames.frame(number).map_err(|e| Error::InvalidArgument(format!("{what} frame {number}: {e}")))?;
        let (w, h) = (frame.width(), frame.height());
        match first_size {
            Some((n, fw, fh)) if (fw, fh) != (w, h) => {
                return Err(Error::InvalidArgument(format!(
                    "{what} frame {number} is {w}×{h}, frame {n} {fw}×{fh}: the frames of one clip must share one size"
                )));
            }
            Some(_) => {}
            None => first_size = Some((number, w, h)),
        }
        frame.check_finite(&format!("{what} frame {number}"))?;
        face_crop(spec, &frame, face).map_err(|e| Error::InvalidArgument(format!("{what} frame {number}: {e}")))
    };
    let onset = crop("onset", keys.onset)?;
    let apex = crop("apex", keys.apex)?;
    let offset = if spec.layout.uses_offset() { Some(crop("offset", keys.offset)?) } else { None };
    input_from_faces(spec, &onset, &apex, offset.as_ref(), threads)
}

/// From the key frames' face crops ([`face_crop`]'s output) to the model input: TV-L1 flows,
/// optical strain and the layout. `offset` is needed by the layouts that use it.
pub fn input_from_faces(
    spec: &InputSpec,
    onset: &GrayImage,
    apex: &GrayImage,
    offset: Option<&GrayImage>,
    threads: usize,
) -> Result<InputTensor> {
    spec.validate()?;
    let side = spec.face_size;
    for (what, img) in [("onset", Some(onset)), ("apex", Some(apex)), ("offset", offset)] {
        if let Some(img) = img {
            if (img.width(), img.height()) != (side, side) {
                return Err(Error::size(
                    format!("{what} face crop"),
                    format!("{side}x{side}"),
                    format!("{}x{}", img.width(), img.height()),
                ));
            }
            img.check_finite(&format!("{what} face crop"))?;
        }
    }
    let onset_apex = tvl1_flow(onset, apex, &spec.tvl1, threads)?;
    if !spec.layout.uses_offset() {
        return input_from_flows(spec, onset, apex, &onset_apex, None);
    }
    let offset = offset.ok_or_else(|| Error::InvalidArgument(format!("the {:?} layout needs the offset frame", spec.layout)))?;
    let apex_offset = tvl1_flow(apex, offset, &spec.tvl1, threads)?;
    input_from_flows(spec, onset, apex, &onset_apex, Some(&apex_offset))
}

/// The last step of [`input_from_faces`]: the layout from the face crops and their flows
/// (onset→apex, and apex→offset for the layouts that use the offset frame).
pub fn input_from_flows(
    spec: &InputSpec,
    onset: &GrayImage,
    apex: &GrayImage,
    onset_apex: &Flow,
    apex_offset: Option<&Flow>,
) -> Result<InputTensor> {
    if !spec.layout.uses_offset() {
        return flow_image(spec, onset_apex);
    }
    let apex_offset =
        apex_offset.ok_or_else(|| Error::InvalidArgument(format!("the {:?} layout needs the apex→offset flow", spec.layout)))?;
    assemble(spec, onset, apex, &[onset_apex, apex_offset])
}

/// The flow-image layouts from the onset→apex flow on the face crop: u, v and the optical
/// strain computed at the crop's resolution, each resized to 28×28 and scaled per plane to
/// 8-bit levels; HTNet's layout then tiles its landmark mosaic.
fn flow_image(spec: &InputSpec, onset_apex: &Flow) -> Result<InputTensor> {
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

/// The SKD-TSTSAN layout from the onset and apex face crops and the two flows.
fn assemble(spec: &InputSpec, onset: &GrayImage, apex: &GrayImage, flows: &[&Flow; 2]) -> Result<InputTensor> {
    for (name, f) in ["onset→apex flow", "apex→offset flow"].into_iter().zip(flows) {
        f.check_finite(name)?;
    }
    let (w, h) = (spec.width, spec.height);
    let a = apex.min_max_normalized();
    let o = onset.min_max_normalized();
    let mut data = Vec::with_capacity(spec.channels * w * h);
    let mut push = |img: &GrayImage| data.extend_from_slice(resize(img, w, h, spec.resize).data());
    push(&a);
    push(&o);
    for frame in [&a, &o] {
        for block in frame.grid(spec.grid)? {
            push(&block);
        }
    }
    for f in flows {
        for component in [f.u_image(), f.v_image()] {
            let small = resize(&component, w, h, spec.resize);
            data.extend_from_slice(normalise_flow(&small, spec.flow_normalisation).data());
        }
    }
    debug_assert_eq!(data.len(), spec.channels * w * h);
    Ok(InputTensor { channels: spec.channels, height: h, width: w, data })
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

/// Hex SHA-256 of values as little-endian f32 bytes.
pub fn f32_digest(values: &[f32]) -> String {
    let mut hasher = Sha256::new();
    for v in values {
        hasher.update(v.to_le_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face_like(shift: f32) -> GrayImage {
        GrayImage::from_fn(128, 128, |x, y| {
            let (x, y) = (x as f32 - shift, y as f32);
            0.5 + 0.25 * (x * 0.2).sin() * (y * 0.15).cos() + 0.1 * ((x + y) * 0.05).sin()
        })
        .quantized_u8()
    }

    /// Frames held in memory, numbered from `first`.
    struct Frames {
        first: i64,
        images: Vec<GrayImage>,
    }

    impl ClipFrames for Frames {
        fn frame(&self, number: i64) -> Result<GrayImage> {
            usize::try_from(number - self.first)
                .ok()
                .and_then(|i| self.images.get(i).cloned())
                .ok_or_else(|| Error::InvalidArgument(format!("no frame {number}")))
        }
    }

    #[test]
    fn layout_matches_the_official_channel_order() {
        let spec = InputSpec::skd_tstsan();
        let onset = face_like(0.0);
        let apex = face_like(1.0);
        let zero = Flow::zeros(128, 128);
        let t = assemble(&spec, &onset, &apex, &[&zero, &zero]).unwrap();
        assert_eq!(t.shape(), [38, 48, 48]);
        let a = apex.min_max_normalized();
        let o = onset.min_max_normalized();
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
        let bad = InputSpec { channels: 4, ..InputSpec::flow_strain() };
        assert!(bad.validate().unwrap_err().to_string().contains("3×28×28"));
    }

    /// The one function is exactly its two steps: the face crop of each key frame (cut, one
    /// resize with the spec's method, 8-bit levels), then flows and layout.
    #[test]
    fn model_input_is_the_face_crops_then_the_layout() {
        // 300×260 frames with the face at (37, 21), 173×190: neither at the origin nor a
        // multiple of the 128-pixel crop.
        let frame = |shift: f32| {
            GrayImage::from_fn(300, 260, |x, y| {
                let (x, y) = (x as f32 - shift, y as f32);
                0.5 + 0.3 * (x * 0.09).sin() * (y * 0.07).cos()
            })
            .quantized_u8()
        };
        let frames = Frames { first: 46, images: (0..6).map(|k| frame(0.3 * k as f32)).collect() };
        let face = FaceBox { x: 37, y: 21, width: 173, height: 190, score: 0.0 };
        let keys = KeyFrames::new(46, 49, 51).unwrap();
        for layout in [InputLayout::SkdTstsan38, InputLayout::FlowStrain28, InputLayout::HtnetMosaic28] {
            let spec = layout.spec();
            let got = model_input(&spec, &frames, Some(&face), keys, 1).unwrap();
            let crop = |n: i64| {
                let cut = frames.frame(n).unwrap().crop(37, 21, 173, 190).unwrap();
                resize(&cut, 128, 128, spec.face_resize).quantized_u8()
            };
            assert_eq!(crop(49), face_crop(&spec, &frames.frame(49).unwrap(), Some(&face)).unwrap());
            let expected = input_from_faces(&spec, &crop(46), &crop(49), Some(&crop(51)), 1).unwrap();
            assert_eq!(got, expected, "{layout:?}");
            assert_eq!(got.sha256(), expected.sha256());
            assert_eq!(got.shape(), [spec.channels, spec.height, spec.width]);
        }
        assert_eq!(InputSpec::skd_tstsan().face_resize, Interpolation::Bilinear);
        // The flow images never read the offset frame: a missing one is no error there.
        let keys = KeyFrames::new(46, 49, 60).unwrap();
        assert!(model_input(&InputSpec::flow_strain(), &frames, Some(&face), keys, 1).is_ok());
        let err = model_input(&InputSpec::skd_tstsan(), &frames, Some(&face), keys, 1).unwrap_err().to_string();
        assert!(err.contains("offset frame 60") && err.contains("no frame 60"), "{err}");
    }

    #[test]
    fn bad_windows_and_boxes_are_named() {
        let frames = Frames { first: 0, images: vec![face_like(0.0); 4] };
        let spec = InputSpec::skd_tstsan();
        let err = KeyFrames::new(3, 1, 4).unwrap_err().to_string();
        assert!(err.contains("out of order") && err.contains("onset 3"), "{err}");
        assert!(KeyFrames::new(0, 2, 1).is_err());
        assert!(KeyFrames::new(0, 3, 0).is_ok(), "a clip that ends at its apex uses the onset as offset");
        let outside = FaceBox { x: 100, y: 0, width: 40, height: 40, score: 0.0 };
        let err = model_input(&spec, &frames, Some(&outside), KeyFrames::new(0, 1, 2).unwrap(), 1).unwrap_err().to_string();
        assert!(err.contains("onset frame 0") && err.contains("does not lie inside the 128×128 frame"), "{err}");
        let err = model_input(&spec, &frames, None, KeyFrames { onset: 0, apex: 9, offset: 9 }, 1).unwrap_err().to_string();
        assert!(err.contains("apex frame 9"), "{err}");
        let mixed = Frames { first: 0, images: vec![face_like(0.0), GrayImage::filled(128, 120, 0.5), face_like(0.0)] };
        let err = model_input(&spec, &mixed, None, KeyFrames::new(0, 1, 2).unwrap(), 1).unwrap_err().to_string();
        assert!(err.contains("apex frame 1 is 128×120, frame 0 128×128") && err.contains("one size"), "{err}");
        let mut bad = face_like(0.0);
        bad.data_mut()[10] = f32::INFINITY;
        let err = input_from_faces(&spec, &face_like(0.0), &bad, Some(&face_like(0.0)), 1).unwrap_err().to_string();
        assert!(err.contains("apex face crop"), "{err}");
        let small = GrayImage::filled(64, 64, 0.5);
        assert!(input_from_faces(&spec, &small, &small, Some(&small), 1).unwrap_err().to_string().contains("128x128"));
        let broken = InputSpec { channels: 37, ..InputSpec::skd_tstsan() };
        assert!(broken.validate().is_err());
    }

    #[test]
    fn flow_channels_follow_the_normalisation_mode() {
        let spec = InputSpec { flow_normalisation: FlowNormalisation::Fixed { max_displacement: 2.0 }, ..InputSpec::skd_tstsan() };
        let f = Flow::new(128, 128, vec![1.0; 128 * 128], vec![-4.0; 128 * 128]).unwrap();
        let t = assemble(&spec, &face_like(0.0), &face_like(0.0), &[&f, &f]).unwrap();
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
    fn spec_serialises_for_manifests() {
        for layout in [InputLayout::SkdTstsan38, InputLayout::FlowStrain28, InputLayout::HtnetMosaic28] {
            let spec = layout.spec();
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(serde_json::from_str::<InputSpec>(&json).unwrap(), spec);
            assert_eq!(layout.name().parse::<InputLayout>().unwrap(), layout);
        }
        let json = serde_json::to_string(&InputSpec::skd_tstsan()).unwrap();
        assert!(json.contains("\"min_max_per_map_u8\"") && json.contains("\"face_resize\":\"bilinear\""), "{json}");
        assert!("htnet".parse::<InputLayout>().unwrap_err().to_string().contains("skd-tstsan, flow-strain28, htnet-mosaic28"));
    }
}
