//! QR codes of an otpauth URI, as SVG (for pages) and PNG (for API clients). Pure: images
//! are rendered into memory.

use crate::CoreError;
use qrcode::{EcLevel, QrCode, render::svg};

fn code(data: &str) -> Result<QrCode, CoreError> {
    QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).map_err(|e| CoreError::Qr(e.to_string()))
}

/// An SVG document of the QR code (black on white, with the standard quiet zone).
pub fn svg(data: &str) -> Result<String, CoreError> {
    Ok(code(data)?.render::<svg::Color<'_>>().min_dimensions(256, 256).build())
}

/// A PNG image of the QR code (8-bit greyscale, at least 256×256 pixels).
pub fn png(data: &str) -> Result<Vec<u8>, CoreError> {
    let img = code(data)?.render::<image::Luma<u8>>().min_dimensions(256, 256).build();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).map_err(|e| CoreError::Qr(e.to_string()))?;
    Ok(out.into_inner())
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
    }
}
