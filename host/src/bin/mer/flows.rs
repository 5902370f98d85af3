//! `mer flow`, `mer flow-image` and `mer bench-flow`: TV-L1 optical flow between two frames.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mer_host::flow_bench;
use mer_shared::atomic_file::{AtomicFile, check_target};
use mer_shared::flow::{Tvl1Params, colour_png, encode_flo, read_flo, save_colour_png, tvl1_flow};
use mer_shared::image::load_gray;

use crate::args::count;

#[derive(clap::Args)]
pub struct FlowArgs {
    from: PathBuf,
    to: PathBuf,
    #[arg(short, long)]
    out: PathBuf,
    /// Worker threads (1 = single-threaded).
    #[arg(long, default_value_t = 1, value_parser = count(256))]
    threads: usize,
    /// Also write a colour-wheel picture of the flow.
    #[arg(long)]
    png: Option<PathBuf>,
}

pub fn flow(FlowArgs { from, to, out, threads, png }: FlowArgs) -> Result<()> {
    // Every argument is checked before the first write, so a bad one leaves the old files or nothing.
    check_target(&out)?;
    if let Some(png) = &png {
        check_target(png)?;
        if same_file(png, &out) {
            bail!("--png and -o name the same file {}; give them different paths", out.display());
        }
    }
    let (a, b) = (load_gray(&from)?, load_gray(&to)?);
    let flow =
        tvl1_flow(&a, &b, &Tvl1Params::default(), threads).with_context(|| format!("flow from {} to {}", from.display(), to.display()))?;
    // Both files are complete under their temporary names before either is renamed into place.
    let mut files = vec![(AtomicFile::create(&out)?, encode_flo(&flow))];
    if let Some(png) = &png {
        files.push((AtomicFile::create(png)?, colour_png(&flow, None, png)?));
    }
    for (file, bytes) in &mut files {
        file.write_all(bytes).map_err(|e| mer_shared::Error::io(file.target(), e))?;
    }
    for (file, _) in files {
        file.commit()?;
    }
    println!("wrote {}", out.display());
    Ok(())
}

/// Whether two output paths name one file (by folder and name: neither need exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    let key = |p: &Path| {
        let folder = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(folder.canonicalize().ok()?.join(p.file_name()?))
    };
    key(a).is_some() && key(a) == key(b)
}

#[derive(clap::Args)]
pub struct FlowImageArgs {
    flo: PathBuf,
    #[arg(short, long)]
    out: PathBuf,
    /// Magnitude shown fully saturated, in pixels (default: the largest in the field).
    #[arg(long)]
    max: Option<f32>,
}

pub fn flow_image(FlowImageArgs { flo, out, max }: FlowImageArgs) -> Result<()> {
    check_target(&out)?;
    save_colour_png(&read_flo(&flo)?, max, &out)?;
    println!("wrote {}", out.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchFlowArgs {
    #[arg(long, default_value_t = 20, value_parser = count(100_000))]
    pairs: usize,
    #[arg(long, default_value = "out/bench-flow")]
    dir: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

pub fn bench_flow(BenchFlowArgs { pairs, dir, seed }: BenchFlowArgs) -> Result<()> {
    let r = flow_bench::run(&dir, pairs, seed)?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(())
}
