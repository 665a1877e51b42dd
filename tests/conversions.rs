//! Real photos through real jobs: every import shape of the spec, every raster output
//! format, decoded and measured.

use runconvert_tests::serde_json::json;
use runconvert_tests::*;

const OUTPUTS: [&str; 7] = ["jpg", "png", "gif", "webp", "bmp", "tiff", "ico"];

#[tokio::test]
async fn url_upload_and_base64_imports_convert_to_every_format() {
    let fixture = Fixture::start().await;
    let s = Server::start(&["--allow-private-networks"]).await;
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let mut tasks = serde_json::Map::new();
    tasks.insert("import-url".into(), json!({"operation": "import/url", "url": fixture.url("/corpus/images/photo_1500x1000.tiff"), "filename": "big.tiff"}));
    tasks.insert(
        "import-upload".into(),
        json!({"operation": "import/upload", "filename": "upload.jpg"}),
    );
    tasks.insert("import-base64".into(), json!({"operation": "import/base64", "file": format!("data:image/jpeg;base64,{}", b64(&photo)), "filename": "inline.jpg"}));
    let imports = ["import-url", "import-upload", "import-base64"];
    for (i, fmt) in OUTPUTS.iter().enumerate() {
        for imp in imports {
            tasks.insert(
                format!("{imp}-to-{fmt}"),
                json!({"operation": "convert", "input": imp, "output_format": fmt, "options": {"width": 300 + i * 10}}),
            );
        }
    }
    let all: Vec<String> = tasks.keys().filter(|k| k.contains("-to-")).cloned().collect();
    tasks.insert("export".into(), json!({"operation": "export/url", "input": all}));
    let job = s.create_job(json!({"tag": "every-format", "tasks": tasks})).await;
    let (status, _) = s.upload(task(&job, "import-upload"), "upload.jpg", photo.clone()).await;
    assert_eq!(status, 201);
    let done = s.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");

    let files = urls(task(&done, "export"));
    assert_eq!(files.len(), OUTPUTS.len() * imports.len());
    for (i, fmt) in OUTPUTS.iter().enumerate() {
        let width = 300 + i as u32 * 10;
        for (imp, stem, (w0, h0)) in [
            ("import-url", "big", (1500, 1000)),
            ("import-upload", "upload", (640, 480)),
            ("import-base64", "inline", (640, 480)),
        ] {
            let name = format!("{stem}.{fmt}");
            let conv = task(&done, &format!("{imp}-to-{fmt}"));
            assert_eq!(conv["result"]["files"][0]["filename"], name.as_str());
            let (_, url) = files
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("{name} not exported"));
            let (status, bytes) = s.download(url).await;
            assert_eq!(status, 200);
            assert_eq!(
                image::guess_format(&bytes).ok().map(|f| f.extensions_str()[0]),
                Some(image_ext(fmt)),
                "{name}"
            );
            let mut expected = (width, (width as f64 * h0 as f64 / w0 as f64).round() as u32);
            if *fmt == "ico" {
                // Icons hold at most 256 × 256.
                let s = 256.0 / expected.0.max(expected.1) as f64;
                expected = (
                    (expected.0 as f64 * s).round() as u32,
                    (expected.1 as f64 * s).round() as u32,
                );
            }
            assert_eq!(image_size(&bytes), expected, "{name}");
        }
    }
}

fn image_ext(fmt: &str) -> &'static str {
    match fmt {
        "jpg" => "jpg",
        "png" => "png",
        "gif" => "gif",
        "webp" => "webp",
        "bmp" => "bmp",
        "tiff" => "tiff",
        "ico" => "ico",
        _ => "?",
    }
}

#[tokio::test]
async fn fit_modes_quality_and_alpha() {
    let fixture = Fixture::start().await;
    let s = Server::start(&["--allow-private-networks"]).await;
    let job = s
        .run_job(json!({"tasks": {
            "big": {"operation": "import/url", "url": fixture.url("/corpus/images/photo_6000x4000.jpg")},
            "webp": {"operation": "import/url", "url": fixture.url("/corpus/images/photo_1920x1280.webp")},
            "alpha": {"operation": "import/url", "url": fixture.url("/corpus/images/alpha_2000x2000.png")},
            "anim": {"operation": "import/url", "url": fixture.url("/corpus/images/anim_320x240.gif")},
            "thumb": {"operation": "convert", "filename": "thumb.jpg", "input": "big", "output_format": "jpg", "options": {"width": 400, "quality": 75}},
            "crop": {"operation": "convert", "filename": "crop.png", "input": "webp", "output_format": "png", "options": {"width": 200, "height": 200, "fit": "crop"}},
            "scale": {"operation": "convert", "filename": "scale.png", "input": "webp", "output_format": "png", "options": {"width": 100, "height": 300, "fit": "scale"}},
            "max": {"operation": "convert", "filename": "max.png", "input": "webp", "output_format": "png", "options": {"width": 5000, "height": 5000}},
            "up": {"operation": "convert", "filename": "up.png", "input": "webp", "output_format": "png", "options": {"width": 3840, "fit": "upscale"}},
            "q10": {"operation": "convert", "filename": "q10.jpg", "input": "webp", "output_format": "jpg", "options": {"quality": 10}},
            "q95": {"operation": "convert", "filename": "q95.jpg", "input": "webp", "output_format": "jpg", "options": {"quality": 95}},
            "flat": {"operation": "convert", "filename": "flat.jpg", "input": "alpha", "output_format": "jpg", "options": {"width": 500}},
            "keep": {"operation": "convert", "filename": "keep.png", "input": "alpha", "output_format": "png", "options": {"width": 500}},
            "frame": {"operation": "convert", "filename": "frame.png", "input": "anim", "output_format": "png"},
            "out": {"operation": "export/url", "input": ["thumb", "crop", "scale", "max", "up", "q10", "q95", "flat", "keep", "frame"]}
        }}))
        .await;
    assert_eq!(job["status"], "completed", "{job}");
    let mut got = std::collections::HashMap::new();
    for name in [
        "thumb", "crop", "scale", "max", "up", "q10", "q95", "flat", "keep", "frame",
    ] {
        let t = task(&job, name);
        let file_name = t["result"]["files"][0]["filename"].as_str().unwrap().to_string();
        let (_, link) = urls(task(&job, "out"))
            .into_iter()
            .find(|(n, _)| *n == file_name)
            .unwrap();
        got.insert(name, s.download(&link).await.1);
    }
    assert_eq!(image_size(&got["thumb"]), (400, 267));
    assert_eq!(image_size(&got["crop"]), (200, 200));
    assert_eq!(image_size(&got["scale"]), (100, 300));
    assert_eq!(image_size(&got["max"]), (1920, 1280), "max never enlarges");
    assert_eq!(image_size(&got["up"]), (3840, 2560));
    assert!(
        got["q10"].len() * 3 < got["q95"].len(),
        "quality 10 is much smaller than 95: {} vs {}",
        got["q10"].len(),
        got["q95"].len()
    );
    assert_eq!(image_size(&got["frame"]), (320, 240));

    // Transparent pixels become white in JPEG and stay transparent in PNG.
    let src = image::load_from_memory(&std::fs::read(corpus_file("images/alpha_2000x2000.png")).unwrap())
        .unwrap()
        .to_rgba8();
    let (tx, ty) = (0..src.width())
        .step_by(50)
        .flat_map(|x| (0..src.height()).step_by(50).map(move |y| (x, y)))
        .find(|&(x, y)| src.get_pixel(x, y)[3] == 0)
        .expect("the corpus image has a transparent area");
    let (sx, sy) = (tx / 4, ty / 4);
    let flat = image::load_from_memory(&got["flat"]).unwrap().to_rgb8();
    let p = flat.get_pixel(sx.min(499), sy.min(499));
    assert!(
        p.0.iter().all(|c| *c >= 240),
        "transparent → white, got {p:?} at {sx},{sy}"
    );
    let keep = image::load_from_memory(&got["keep"]).unwrap().to_rgba8();
    assert!(keep.get_pixel(sx.min(499), sy.min(499))[3] < 16, "alpha kept in PNG");
}
