//! Plots, the Markdown performance report and the dashboard page, from agents' histories.
//!
//! Everything here is a pure function of an [`Analyzer`] except [`render_dir`], which writes
//! the files of `flmon-operator render`. Text is drawn with DejaVu Sans compiled into the binary
//! ([`font`]), so rendering works where no font is installed.

pub mod figures;
pub mod font;
pub mod html;
pub mod plot;
pub mod report;
pub mod text;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plotters::prelude::*;

use crate::analysis::{AnalysisConfig, Analyzer, ConfigError, History};

pub use figures::{FIGURES, figures};
pub use plot::{DrawError, Figure};

/// Size of rendered figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Width, px.
    pub width: u32,
    /// Height, px.
    pub height: u32,
}

impl Size {
    /// The seed's figure size at 100 dpi (15 × 10 in).
    pub const DEFAULT: Size = Size {
        width: 1500,
        height: 1000,
    };
    /// The seed's figure at its 300 dpi.
    pub const SEED: Size = Size {
        width: 4500,
        height: 3000,
    };
}

/// Rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Drawing a figure failed.
    #[error(transparent)]
    Draw(#[from] DrawError),
    /// Encoding a PNG failed.
    #[error("failed to encode {figure} as PNG: {message}")]
    Encode {
        /// Figure name.
        figure: String,
        /// The encoder's message.
        message: String,
    },
    /// The size is unusable.
    #[error("invalid figure size {width}×{height}: expected 200–20000 px each way")]
    Size {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
    },
    /// Writing an output file failed.
    #[error("failed to write {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The analysis settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A saved history could not be read.
    #[error("failed to read history {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A saved history is not a valid `/v1/history` document.
    #[error("invalid history {path}: {cause}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what.
        cause: crate::analysis::HistoryError,
    },
}

/// Reads saved `/v1/history` documents, one per file.
///
/// # Errors
/// The first file that cannot be read or parsed, named with the position of the problem.
pub fn read_histories(paths: &[PathBuf]) -> Result<Vec<History>, RenderError> {
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|cause| RenderError::Read {
                path: path.clone(),
                cause,
            })?;
            crate::analysis::parse_history(&text).map_err(|cause| RenderError::Parse {
                path: path.clone(),
                cause,
            })
        })
        .collect()
}

/// `flmon-operator render --history FILE... --out DIR`: reads the files, merges them as the
/// operator does, and writes the figures, report and page (see [`render_dir`]).
///
/// # Errors
/// As [`read_histories`] and [`render_dir`].
pub fn render_files(
    paths: &[PathBuf],
    config: AnalysisConfig,
    out: &Path,
    size: Size,
) -> Result<Rendered, RenderError> {
    let histories = read_histories(paths)?;
    render_dir(&histories, config, out, size)
}

fn check(size: Size) -> Result<(), RenderError> {
    let ok = |v: u32| (200..=20_000).contains(&v);
    if ok(size.width) && ok(size.height) {
        Ok(())
    } else {
        Err(RenderError::Size {
            width: size.width,
            height: size.height,
        })
    }
}

/// Draws `figure` into a white RGB buffer (3 bytes per pixel, row by row).
///
/// # Errors
/// A bad size or a drawing failure.
pub fn render_rgb(figure: &Figure, size: Size) -> Result<Vec<u8>, RenderError> {
    let mut buffer = Vec::new();
    render_rgb_into(figure, size, &mut buffer)?;
    Ok(buffer)
}

/// As [`render_rgb`], into `buffer` (resized and cleared to white), so repeated renders reuse
/// one allocation instead of faulting in a fresh 40 MB for every 4500×3000 figure.
///
/// # Errors
/// A bad size or a drawing failure.
pub fn render_rgb_into(figure: &Figure, size: Size, buffer: &mut Vec<u8>) -> Result<(), RenderError> {
    check(size)?;
    font::register();
    let len = size.width as usize * size.height as usize * 3;
    buffer.clear();
    buffer.resize(len, 255);
    let bitmap = BitMapBackend::with_buffer(buffer, (size.width, size.height));
    let backend = text::BaselineText::new(bitmap).ok_or_else(|| DrawError {
        figure: figure.name.to_string(),
        message: "the embedded font does not parse".into(),
    })?;
    plot::draw(&backend.into_drawing_area(), figure)?;
    Ok(())
}

thread_local! {
    /// The pixel buffer [`render_png`] draws into, kept between calls on a thread.
    static PIXELS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Encodes an RGB buffer as PNG (fast deflate: these are flat-coloured plots).
///
/// # Errors
/// What the encoder reported.
pub fn encode_png(name: &str, rgb: &[u8], size: Size) -> Result<Vec<u8>, RenderError> {
    let fail = |e: png::EncodingError| RenderError::Encode {
        figure: name.to_string(),
        message: e.to_string(),
    };
    let mut out = Vec::with_capacity(rgb.len() / 20);
    {
        let mut encoder = png::Encoder::new(&mut out, size.width, size.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        // Plots are mostly runs of identical rows: the "up" filter suits them and costs a
        // fraction of the adaptive choice.
        encoder.set_filter(png::Filter::Up);
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(rgb).map_err(fail)?;
        writer.finish().map_err(fail)?;
    }
    Ok(out)
}

/// Draws `figure` as a PNG file's bytes.
///
/// # Errors
/// A bad size, a drawing or an encoding failure.
pub fn render_png(figure: &Figure, size: Size) -> Result<Vec<u8>, RenderError> {
    Ok(render_png_timed(figure, size)?.0)
}

/// Draws `figure` as an SVG document.
///
/// # Errors
/// A bad size or a drawing failure.
pub fn render_svg(figure: &Figure, size: Size) -> Result<String, RenderError> {
    check(size)?;
    font::register();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size.width, size.height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| DrawError {
            figure: figure.name.to_string(),
            message: e.to_string(),
        })?;
        plot::draw(&root, figure)?;
    }
    Ok(svg)
}

/// Timings of one figure drawn as PNG.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PngTiming {
    /// Drawing into the pixel buffer.
    pub draw: Duration,
    /// PNG encoding.
    pub encode: Duration,
    /// Bytes of the PNG.
    pub bytes: usize,
}

/// Draws and encodes `figure`, timing the two apart (for the benchmark).
///
/// # Errors
/// As [`render_png`].
pub fn render_png_timed(figure: &Figure, size: Size) -> Result<(Vec<u8>, PngTiming), RenderError> {
    PIXELS.with(|cell| {
        let mut pixels = cell.borrow_mut();
        let started = Instant::now();
        render_rgb_into(figure, size, &mut pixels)?;
        let draw = started.elapsed();
        let started = Instant::now();
        let png = encode_png(figure.name, &pixels, size)?;
        let encode = started.elapsed();
        // Keep the buffer for the next figure of this size, not a giant one forever.
        if pixels.capacity() > 64 << 20 {
            *pixels = Vec::new();
        }
        let bytes = png.len();
        Ok((png, PngTiming { draw, encode, bytes }))
    })
}

/// What [`render_dir`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Files written, in order.
    pub files: Vec<PathBuf>,
}

/// Renders saved `/v1/history` documents (several pods merged as the operator does) into `out`:
/// the five figures as PNG and SVG, `report.md`, and a self-contained `index.html`.
///
/// # Errors
/// Invalid settings, a drawing failure, or a file that could not be written.
pub fn render_dir(
    histories: &[History],
    config: AnalysisConfig,
    out: &Path,
    size: Size,
) -> Result<Rendered, RenderError> {
    let analyzer = crate::analysis::analyze(histories, config)?;
    render_analyzer_dir(&analyzer, "history", out, size)
}

/// As [`render_dir`], from an analyzer; `name` titles the page and report.
///
/// # Errors
/// A drawing failure or a file that could not be written.
pub fn render_analyzer_dir(
    analyzer: &Analyzer,
    name: &str,
    out: &Path,
    size: Size,
) -> Result<Rendered, RenderError> {
    let write = |path: PathBuf, bytes: &[u8]| -> Result<PathBuf, RenderError> {
        std::fs::write(&path, bytes).map_err(|cause| RenderError::Write {
            path: path.clone(),
            cause,
        })?;
        Ok(path)
    };
    std::fs::create_dir_all(out).map_err(|cause| RenderError::Write {
        path: out.to_path_buf(),
        cause,
    })?;
    let mut files = Vec::new();
    let mut svgs = Vec::new();
    for figure in figures(analyzer) {
        let png = render_png(&figure, size)?;
        files.push(write(out.join(format!("{}.png", figure.name)), &png)?);
        let svg = render_svg(&figure, size)?;
        files.push(write(out.join(format!("{}.svg", figure.name)), svg.as_bytes())?);
        svgs.push((figure.name, svg));
    }
    let analysis = analyzer.analysis();
    let clients = analyzer.client_summaries();
    let report = report::markdown(name, &analysis, &clients, analyzer.config());
    files.push(write(out.join("report.md"), report.as_bytes())?);
    let page = html::monitor_page(&html::MonitorPage {
        namespace: "",
        name,
        analysis: &analysis,
        report_markdown: &report,
        figures: &svgs,
        alerts: &[],
        refresh_seconds: None,
        generated: "",
    });
    files.push(write(out.join("index.html"), page.as_bytes())?);
    Ok(Rendered { files })
}
