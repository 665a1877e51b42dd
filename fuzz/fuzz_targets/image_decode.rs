//! Bytes → a scratch file → the raster engine's probe and decode, as a convert or thumbnail
//! task runs them (functions/engines/src/raster.rs: `probe`, then `decode_probed`), with a
//! 1-megapixel limit; then a small resize of what was decoded. Errors are fine; panics,
//! and a decoded image over the pixel limit, are not. (The limit is low so that mutations
//! of the large corpus photos are refused from their headers, as the server does, and
//! the time goes to many small decodes: with 4 MP it ran 3 inputs a second under ASan.)
//!
//! The input is the file itself (no header byte), so real images seed it. The declared
//! format is what the content sniffs as when that is a raster format, else one picked by
//! the input's length (which exercises the "said to be X but is Y" refusals).

#![no_main]

use libfuzzer_sys::fuzz_target;
use runconvert_engines::{detect, raster, EngineLimits};

fuzz_target!(|data: &[u8]| {
    let path = runconvert_fuzz::scratch_file("image_decode", data);
    let limits = EngineLimits {
        max_pixels: 1_000_000,
        max_pages: 50,
        ..EngineLimits::default()
    };
    let format = match detect::sniff(&path).ok().flatten() {
        Some(f) if raster::FORMATS.contains(&f) => f,
        _ => raster::FORMATS[data.len() % raster::FORMATS.len()],
    };
    let name = "fuzz-input";
    let Ok((w, h)) = raster::probe(&path, name, format, &limits) else {
        return;
    };
    assert!(
        w as u64 * h as u64 <= limits.max_pixels,
        "probe let a {w}×{h} {format} through a {}-pixel limit",
        limits.max_pixels
    );
    // Half the inputs ask for a smaller decode (the JPEG path then scales in the DCT).
    let target = (data.len() % 2 == 0).then(|| ((w / 3).max(1), (h / 3).max(1)));
    let Ok(img) = raster::decode_probed(&path, name, format, (w, h), &limits, target) else {
        return;
    };
    assert!(
        img.width() as u64 * img.height() as u64 <= limits.max_pixels,
        "decoded a {}×{} {format} under a {}-pixel limit (the header said {w}×{h})",
        img.width(),
        img.height(),
        limits.max_pixels
    );
    let _ = raster::resize_exact(&img, 17, 13, data.len() % 3 == 0);
});
