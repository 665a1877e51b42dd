//! PNG compress: a lossless optimisation with oxipng (reductions of colour type, bit
//! depth and palette, the best filters, libdeflate), and a lossy profile that first
//! quantises to a palette (NeuQuant, from color_quant: MIT) with Floyd–Steinberg
//! dithering, as pngquant does (libimagequant is GPL-3 and is not linked).

use image::RgbaImage;
use std::time::Duration;

/// The lossless optimisation (oxipng's preset 2, what `optipng -o2` compares with);
/// `strip` removes the chunks that do not change how the image looks.
pub fn optimize_lossless(png: &[u8], strip: bool, timeout: Duration) -> Result<Vec<u8>, String> {
    let mut opts = oxipng::Options::from_preset(2);
    opts.strip = if strip {
        oxipng::StripChunks::Safe
    } else {
        oxipng::StripChunks::None
    };
    opts.timeout = Some(timeout);
    oxipng::optimize_from_memory(png, &opts).map_err(|e| e.to_string())
}

/// The palette size for `quality` (1-100): 256 colours at 80 and above, fewer below, down
/// to 16 at 1.
pub fn colours_for(quality: u8) -> usize {
    let q = f64::from(quality.clamp(1, 80)) / 80.0;
    (16.0 + q * q * 240.0).round() as usize
}

/// `img` as an 8-bit palette PNG of at most `colours` colours (with transparency kept),
/// dithered; not yet optimised.
pub fn quantize(img: &RgbaImage, colours: usize) -> Result<Vec<u8>, String> {
    let (w, h) = img.dimensions();
    let colours = colours.clamp(2, 256);
    // Every 10th pixel teaches the network (its recommended speed/quality trade).
    let nq = color_quant::NeuQuant::new(10, colours, img.as_raw());
    let palette = nq.color_map_rgba();
    let mut indices = Vec::with_capacity(w as usize * h as usize);
    // Floyd–Steinberg: the error of each pixel goes to its neighbours, right and below,
    // at half strength: gradients lose their bands, and the noise costs fewer bytes (on
    // the corpus' alpha PNG, full strength made the file 50 % larger for a lower PSNR).
    const DAMP: f32 = 0.5;
    let width = w as usize;
    let mut here = vec![[0f32; 4]; width + 2];
    let mut below = vec![[0f32; 4]; width + 2];
    for y in 0..h {
        for x in 0..w {
            let px = img.get_pixel(x, y).0;
            let i = x as usize + 1;
            let mut want = [0u8; 4];
            for c in 0..4 {
                want[c] = (f32::from(px[c]) + here[i][c]).round().clamp(0.0, 255.0) as u8;
            }
            let idx = nq.index_of(&want);
            indices.push(idx as u8);
            let got = &palette[idx * 4..idx * 4 + 4];
            for c in 0..4 {
                let err = (f32::from(want[c]) - f32::from(got[c])) * DAMP;
                here[i + 1][c] += err * 7.0 / 16.0;
                below[i - 1][c] += err * 3.0 / 16.0;
                below[i][c] += err * 5.0 / 16.0;
                below[i + 1][c] += err / 16.0;
            }
        }
        std::mem::swap(&mut here, &mut below);
        below.iter_mut().for_each(|e| *e = [0.0; 4]);
    }
    let rgb: Vec<u8> = palette.chunks(4).flat_map(|c| [c[0], c[1], c[2]]).collect();
    let alpha: Vec<u8> = palette.chunks(4).map(|c| c[3]).collect();
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(rgb);
        if alpha.iter().any(|&a| a < 255) {
            enc.set_trns(alpha);
        }
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&indices).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The chunks that describe a picture without being its pixels: colour (iCCP, sRGB, gAMA,
/// cHRM, cICP), density, text, EXIF and time. A quantised copy gets them back from its
/// original, so that `strip` treats both profiles alike.
const DESCRIPTIVE: &[&[u8; 4]] = &[
    b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"cICP", b"pHYs", b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME",
];

/// A PNG's chunks after its signature: each one's type and whole bytes (length, type,
/// data, CRC). A chunk that runs past the end ends the walk.
fn chunks(png: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 8;
    std::iter::from_fn(move || {
        let head = png.get(at..at + 8)?;
        let len = u32::from_be_bytes(head[..4].try_into().ok()?) as usize;
        let whole = png.get(at..at.checked_add(12 + len)?)?;
        at += 12 + len;
        Some((head[4..8].try_into().ok()?, whole))
    })
}

/// `png` (as [`quantize`] writes it: IHDR first) with the [`DESCRIPTIVE`] chunks of
/// `original` put after its header.
pub fn with_descriptive_chunks(png: &[u8], original: &[u8]) -> Vec<u8> {
    let header_end = 8 + 12 + 13;
    let mut out = png[..header_end].to_vec();
    // A gray image's ICC profile is a gray one, which a palette (colour) PNG cannot carry.
    let gray = matches!(original.get(25), Some(0 | 4));
    for (kind, chunk) in chunks(original) {
        if DESCRIPTIVE.contains(&&kind) && !(gray && &kind == b"iCCP") {
            out.extend_from_slice(chunk);
        }
    }
    out.extend_from_slice(&png[header_end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture() -> RgbaImage {
        RgbaImage::from_fn(120, 80, |x, y| {
            image::Rgba([
                (x * 2) as u8,
                (y * 3) as u8,
                ((x + y) % 256) as u8,
                if x < 10 { 0 } else { 255 },
            ])
        })
    }

    #[test]
    fn quantised_pngs_decode_to_the_same_picture_nearly() {
        let img = picture();
        let png = quantize(&img, colours_for(80)).unwrap();
        let back = image::load_from_memory(&png).unwrap().to_rgba8();
        assert_eq!(back.dimensions(), img.dimensions());
        // Transparent stays transparent; the rest is close.
        assert!(back.pixels().take(10).all(|p| p[3] < 32));
        let diff: f64 = img
            .as_raw()
            .iter()
            .zip(back.as_raw())
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
            .sum::<f64>()
            / img.as_raw().len() as f64;
        assert!(diff < 6.0, "mean difference {diff}");
        let smaller = optimize_lossless(&png, true, Duration::from_secs(30)).unwrap();
        assert!(smaller.len() <= png.len());
        assert_eq!(image::load_from_memory(&smaller).unwrap().to_rgba8(), back);
    }

    #[test]
    fn colours_follow_quality() {
        assert_eq!(colours_for(100), 256);
        assert_eq!(colours_for(80), 256);
        assert!(colours_for(50) < colours_for(79));
        assert_eq!(colours_for(1), 16);
    }
}
