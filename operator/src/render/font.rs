//! The embedded font: DejaVu Sans 2.37 (Bitstream Vera licence, see `operator/assets/DejaVuSans.LICENSE`
//! and `docs/ARCHITECTURE.md`), registered with plotters as `sans-serif` on first use so text
//! renders with no system fonts.

use std::sync::Once;

use plotters::style::FontStyle;

/// The TTF file compiled into the binary.
pub static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

static REGISTER: Once = Once::new();

/// Registers the embedded font for every family and style the plots use (idempotent).
pub fn register() {
    REGISTER.call_once(|| {
        for family in ["sans-serif", "serif", "monospace"] {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                // The bytes are a valid TTF checked by the test below; a failure would leave text
                // out of the plots rather than stop rendering.
                let _ignored = plotters::style::register_font(family, style, DEJAVU_SANS);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_font_parses() {
        assert!(
            plotters::style::register_font(
                "test-family",
                plotters::style::FontStyle::Normal,
                super::DEJAVU_SANS
            )
            .is_ok()
        );
    }
}
