//! QR codes of an otpauth URI, as SVG (for pages) and PNG (for API clients). Pure: images
//! are rendered into memory.

use crate::CoreError;
use qrcode::{EcLevel, QrCode, render::svg};

fn code(data: &str) -> Result<QrCode, CoreError> {
    QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).map_err(|e| CoreError::Qr(e.to_string()))
}

/// The QR code of `data` as both an SVG document and a PNG image, encoding it once (choosing
/// the mask pattern is most of the work).
pub fn svg_and_png(data: &str) -> Result<(String, Vec<u8>), CoreError> {
    let c = code(data)?;
    Ok((render_svg(&c), render_png(&c)?))
}

fn render_svg(c: &QrCode) -> String {
    c.render::<svg::Color<'_>>().min_dimensions(256, 256).build()
}

fn render_png(c: &QrCode) -> Result<Vec<u8>, CoreError> {
    let img = c.render::<image::Luma<u8>>().min_dimensions(256, 256).build();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).map_err(|e| CoreError::Qr(e.to_string()))?;
    Ok(out.into_inner())
}

/// An SVG document of the QR code (black on white, with the standard quiet zone).
pub fn svg(data: &str) -> Result<String, CoreError> {
    Ok(render_svg(&code(data)?))
}

/// A PNG image of the QR code (8-bit greyscale, at least 256×256 pixels).
pub fn png(data: &str) -> Result<Vec<u8>, CoreError> {
    render_png(&code(data)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders() {
        let svg = super::svg("otpauth://totp/a?secret=JBSWY3DPEHPK3PXP").unwrap();
        assert!(svg.contains("<svg"));
        let png = super::png("otpauth://totp/a?secret=JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(super::png(&"x".repeat(5000)).is_err(), "too long for a QR code");
        let (s2, p2) = super::svg_and_png("otpauth://totp/a?secret=JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!((s2, p2), (svg, png));
    }
}
