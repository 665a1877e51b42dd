//! compress of JPEGs and PNGs through the API, judged as a user would judge it: the bytes saved,
//! the pixels kept (PSNR against the input, or identical when nothing had to be lost),
//! the metadata gone unless asked for, and never a file larger than the one sent.

use runconvert_tests::serde_json::{json, Value};
use runconvert_tests::*;

/// The markers of a JPEG's segments up to its first scan, with their data.
fn segments(jpeg: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 2;
    while at + 4 <= jpeg.len() && jpeg[at] == 0xff {
        let marker = jpeg[at + 1];
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        out.push((marker, jpeg[at + 4..at + 2 + len].to_vec()));
        if marker == 0xda {
            break;
        }
        at += 2 + len;
    }
    out
}

fn has(jpeg: &[u8], marker: u8) -> bool {
    segments(jpeg).iter().any(|(m, _)| *m == marker)
}

/// `jpeg` with an EXIF segment (a camera's, as far as a reader can tell) after its SOI.
fn with_exif(jpeg: &[u8], exif: &[u8]) -> Vec<u8> {
    let len = (exif.len() + 2) as u16;
    [&jpeg[..2], &[0xff, 0xe1], &len.to_be_bytes(), exif, &jpeg[2..]].concat()
}

fn encode(img: &image::RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .unwrap();
    out
}

fn rgb(jpeg: &[u8]) -> image::RgbImage {
    image::load_from_memory(jpeg).expect("a JPEG that decodes").to_rgb8()
}

fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let mse = se / a.as_raw().len() as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

fn base64_import(bytes: &[u8], filename: &str) -> Value {
    json!({"operation": "import/base64", "file": b64(bytes), "filename": filename})
}

#[tokio::test]
async fn jpeg_compress_saves_bytes_keeps_pixels_and_strips_metadata() {
    let (fx, s) = server_with_fixture().await;
    let photo = rgb(&std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap());
    let exif = b"Exif\0\0MM\0*\0\0\0\x08\0\0RunConvert test camera".to_vec();
    let fine = with_exif(&encode(&photo, 95), &exif);
    let low = encode(&photo, 50);
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("big", import(&fx, "images/photo_3000x2000.jpg")),
            ("c-big", json!({"operation": "compress", "input": "big"})),
            ("fine", base64_import(&fine, "fine.jpg")),
            (
                "c-strip",
                json!({"operation": "compress", "input": "fine", "filename": "strip.jpg"}),
            ),
            (
                "c-keep",
                json!({"operation": "compress", "input": "fine", "filename": "keep.jpg", "options": {"strip": false}}),
            ),
            ("low", base64_import(&low, "low.jpg")),
            (
                "c-low",
                json!({"operation": "compress", "input": "low", "options": {"quality": 75}}),
            ),
        ]),
        &["c-big", "c-strip", "c-keep", "c-low"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");

    // A photo saved above quality 75 is re-encoded at it: progressive, much smaller, and
    // looking the same.
    let big_in = std::fs::read(corpus_file("images/photo_3000x2000.jpg")).unwrap();
    let big = file(&files, "photo_3000x2000.jpg");
    assert!(
        big.len() * 100 < big_in.len() * 80,
        "{} bytes of {}",
        big.len(),
        big_in.len()
    );
    assert!(
        has(big, 0xc2),
        "progressive (SOF2): {:x?}",
        segments(big).iter().map(|s| s.0).collect::<Vec<_>>()
    );
    let quality = psnr(&rgb(&big_in), &rgb(big));
    assert!(quality > 32.0, "PSNR {quality:.1} dB");

    // Metadata: gone by default, kept with strip: false.
    let strip = file(&files, "strip.jpg");
    let keep = file(&files, "keep.jpg");
    assert!(strip.len() < fine.len() && keep.len() < fine.len());
    assert!(!has(strip, 0xe1), "EXIF stripped");
    assert!(segments(keep).contains(&(0xe1, exif.clone())), "EXIF kept");
    assert_eq!(rgb(strip), rgb(keep), "the same pixels either way");

    // A photo saved at or below the quality asked for loses nothing: the same pixels,
    // rewritten losslessly, not larger.
    let out = file(&files, "low.jpg");
    assert!(out.len() <= low.len(), "{} > {}", out.len(), low.len());
    assert!(rgb(out) == rgb(&low), "lossless for a photo already at quality 50");
}

#[tokio::test]
async fn jpeg_compress_never_grows_a_file_and_refuses_bad_options() {
    let (_fx, s) = server_with_fixture().await;
    // What compress made, compressed again: nothing left to take, so the same bytes back.
    let photo = rgb(&std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap());
    let first = {
        let (job, files) = run_and_download(
            &s,
            tasks(&[
                ("in", base64_import(&encode(&photo, 90), "a.jpg")),
                ("c", json!({"operation": "compress", "input": "in"})),
            ]),
            &["c"],
        )
        .await;
        assert_eq!(job["status"], "completed", "{job}");
        file(&files, "a.jpg").to_vec()
    };
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("in", base64_import(&first, "a.jpg")),
            (
                "c",
                json!({"operation": "compress", "input": "in", "options": {"quality": 100}}),
            ),
        ]),
        &["c"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let again = file(&files, "a.jpg");
    assert!(again.len() <= first.len(), "{} > {}", again.len(), first.len());

    for (options, needle) in [
        (json!({"strip": "yes"}), "strip"),
        (json!({"quality": 0}), "quality"),
        (json!({"quality": 101}), "quality"),
    ] {
        assert_refused(&s, &first, "jpg", options, needle).await;
    }

    // The options are listed where clients look for them.
    assert_eq!(compress_options(&s, "jpg").await, ["quality", "strip"]);
}

/// The names of compress's options for `format`, as /v2/core/operations lists them.
async fn compress_options(s: &Server, format: &str) -> Vec<String> {
    let (status, ops) = s
        .get(&format!("/v2/core/operations?operation=compress&input_format={format}"))
        .await;
    assert_eq!(status, 200, "{ops}");
    ops["data"][0]["options"]
        .as_array()
        .unwrap_or_else(|| panic!("{ops}"))
        .iter()
        .filter_map(|o| o["name"].as_str().map(String::from))
        .collect()
}

/// A job whose compress of `file` has `options`: refused with invalid_data, naming `needle`.
async fn assert_refused(s: &Server, file: &[u8], format: &str, options: Value, needle: &str) {
    let (status, body) = s
        .post(
            "/v2/jobs",
            &json!({"tasks": {
                "in": base64_import(file, &format!("a.{format}")),
                "c": {"operation": "compress", "input": "in", "input_format": format, "options": options},
            }}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_data")),
        "{options}: {body}"
    );
    assert!(body.to_string().contains(needle), "{options}: {body}");
}

/// The CRC of a PNG chunk (its type and data).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `png` with a tEXt chunk after its header.
fn with_text(png: &[u8], text: &[u8]) -> Vec<u8> {
    with_chunk(png, b"tEXt", text)
}

/// `png` with a chunk of `kind` after its header.
fn with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let body = [&kind[..], data].concat();
    let chunk = [
        &(data.len() as u32).to_be_bytes()[..],
        &body,
        &crc32(&body).to_be_bytes(),
    ]
    .concat();
    // Signature (8) and IHDR (4 + 4 + 13 + 4).
    [&png[..33], &chunk, &png[33..]].concat()
}

fn mean_difference(a: &image::RgbaImage, b: &image::RgbaImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .sum();
    sum / a.as_raw().len() as f64
}

#[tokio::test]
async fn png_compress_lossless_and_lossy() {
    let (fx, s) = server_with_fixture().await;
    let alpha_in = std::fs::read(corpus_file("images/alpha_2000x2000.png")).unwrap();
    let small = {
        let img = image::load_from_memory(&alpha_in)
            .unwrap()
            .resize(300, 300, image::imageops::FilterType::Triangle);
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        // sRGB (rendering intent 0, perceptual) says how its colours are meant.
        with_chunk(
            &with_text(&out.into_inner(), b"Comment\0made by the RunConvert tests"),
            b"sRGB",
            &[0],
        )
    };
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("alpha", import(&fx, "images/alpha_2000x2000.png")),
            ("lossless", json!({"operation": "compress", "input": "alpha", "filename": "lossless.png"})),
            (
                "lossy",
                json!({"operation": "compress", "input": "alpha", "filename": "lossy.png", "options": {"profile": "lossy"}}),
            ),
            ("small", base64_import(&small, "small.png")),
            ("c-strip", json!({"operation": "compress", "input": "small", "filename": "strip.png"})),
            (
                "c-keep",
                json!({"operation": "compress", "input": "small", "filename": "keep.png", "options": {"strip": false}}),
            ),
            (
                "l-strip",
                json!({"operation": "compress", "input": "small", "filename": "lossy-strip.png", "options": {"profile": "lossy"}}),
            ),
            (
                "l-keep",
                json!({"operation": "compress", "input": "small", "filename": "lossy-keep.png", "options": {"profile": "lossy", "strip": false}}),
            ),
        ]),
        &["lossless", "lossy", "c-strip", "c-keep", "l-strip", "l-keep"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let original = image::load_from_memory(&alpha_in).unwrap().to_rgba8();

    // Lossless: the same pixels in fewer bytes.
    let lossless = file(&files, "lossless.png");
    assert!(
        lossless.len() < alpha_in.len(),
        "{} of {}",
        lossless.len(),
        alpha_in.len()
    );
    assert!(
        image::load_from_memory(lossless).unwrap().to_rgba8() == original,
        "lossless compress keeps every pixel"
    );

    // Lossy: a palette, far fewer bytes, and a picture that looks the same (transparency too).
    let lossy = file(&files, "lossy.png");
    assert!(
        lossy.len() * 2 < alpha_in.len() && lossy.len() < lossless.len(),
        "lossy {} against lossless {} and the input's {}",
        lossy.len(),
        lossless.len(),
        alpha_in.len()
    );
    assert_eq!(lossy[25], 3, "colour type 3 (palette)");
    let diff = mean_difference(&original, &image::load_from_memory(lossy).unwrap().to_rgba8());
    assert!(diff < 4.0, "mean difference per channel {diff:.2}");

    // Text chunks go unless strip is false.
    let (strip, keep) = (file(&files, "strip.png"), file(&files, "keep.png"));
    assert!(!bytes_contain(strip, "made by the RunConvert tests"));
    assert!(bytes_contain(keep, "made by the RunConvert tests"));
    // The lossy profile treats them alike, and keeps what says how the colours are meant
    // (sRGB) even when stripping.
    let (lossy_strip, lossy_keep) = (file(&files, "lossy-strip.png"), file(&files, "lossy-keep.png"));
    assert_eq!(lossy_strip[25], 3, "a palette");
    assert!(!bytes_contain(lossy_strip, "made by the RunConvert tests"));
    assert!(bytes_contain(lossy_keep, "made by the RunConvert tests"));
    for (name, png) in [("stripped", lossy_strip), ("kept", lossy_keep)] {
        assert!(bytes_contain(png, "sRGB"), "{name}: the sRGB chunk");
    }

    assert_refused(&s, &small, "png", json!({"profile": "ultra"}), "profile").await;
    assert_eq!(compress_options(&s, "png").await, ["profile", "quality", "strip"]);
}

/// The orientation a JPEG's EXIF gives, as the image crate (what a viewer does) reads it.
fn orientation(jpeg: &[u8]) -> image::metadata::Orientation {
    use image::ImageDecoder;
    image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(jpeg))
        .unwrap()
        .orientation()
        .unwrap()
}

#[tokio::test]
async fn a_portrait_photo_stays_upright() {
    use image::metadata::Orientation;
    let (_fx, s) = server_with_fixture().await;
    let photo_in = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let photo = rgb(&photo_in);
    // A camera held upright stores the picture on its side, with EXIF orientation 6
    // (turn 90° clockwise to show it); and a maker note that stripping removes.
    let exif = b"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0RunConvert test camera";
    let portrait = with_exif(&encode(&photo, 95), exif);
    assert_eq!(orientation(&portrait), Orientation::Rotate90);
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("in", base64_import(&portrait, "portrait.jpg")),
            ("compressed", json!({"operation": "compress", "input": "in", "filename": "c.jpg"})),
            ("png", json!({"operation": "convert", "input": "in", "output_format": "png"})),
            (
                "thumb",
                json!({"operation": "thumbnail", "input": "in", "output_format": "jpg", "filename": "t.jpg", "options": {"width": 120}}),
            ),
        ]),
        &["compressed", "png", "thumb"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");

    // Compress strips the metadata but the orientation: shown upright still.
    let compressed = file(&files, "c.jpg");
    assert!(compressed.len() < portrait.len());
    assert_eq!(orientation(compressed), Orientation::Rotate90, "the orientation kept");
    assert!(
        !bytes_contain(compressed, "RunConvert test camera"),
        "the rest stripped"
    );

    // Conversions carry no EXIF, so they turn the pixels: 480x640, the photo turned.
    let upright = image::DynamicImage::ImageRgb8(photo).rotate90().to_rgb8();
    let png = rgb(file(&files, "portrait.png"));
    assert_eq!(png.dimensions(), (480, 640));
    let quality = psnr(&upright, &png);
    assert!(quality > 30.0, "the PNG is the photo turned: PSNR {quality:.1} dB");
    // A thumbnail's width is the upright picture's.
    let thumb = rgb(file(&files, "t.jpg"));
    assert_eq!(thumb.dimensions(), (120, 160));
    let small = image::imageops::resize(&upright, 120, 160, image::imageops::FilterType::Triangle);
    let quality = psnr(&small, &thumb);
    assert!(
        quality > 25.0,
        "the thumbnail is the photo turned: PSNR {quality:.1} dB"
    );
}
