//! Every processing operation end to end through the HTTP API, on the corpus files:
//! merge, archive, compress, watermark, thumbnail, and PDF in and out of convert.

use runconvert_tests::serde_json::json;
use runconvert_tests::*;
use std::io::Read;

#[tokio::test]
async fn merge_pdfs_and_images_in_input_order() {
    let (fx, s) = server_with_fixture().await;
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("text", import(&fx, "pdf/text_20p.pdf")),
            ("photos", import(&fx, "pdf/photos_4p.pdf")),
            ("jpeg", import(&fx, "images/photo_640x480.jpg")),
            ("png", import(&fx, "images/alpha_2000x2000.png")),
            ("merge", json!({"operation": "merge", "input": ["text", "photos", "jpeg", "png"], "output_format": "pdf", "filename": "all.pdf"})),
        ]),
        &["merge"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let pdf = file(&files, "all.pdf");
    let doc = lopdf::Document::load_mem(pdf).unwrap();
    let pages = doc.get_pages();
    assert_eq!(pages.len(), 20 + 4 + 1 + 1);
    // The JPEG page carries the original bytes as a DCT image: not re-encoded.
    let jpeg_page = pages[&25];
    let images = doc.get_page_images(jpeg_page).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].filters.as_deref(), Some(&["DCTDecode".to_string()][..]));
    assert_eq!(images[0].content, &photo[..]);
    assert_eq!((images[0].width, images[0].height), (640, 480));
    // The first page is the text PDF's first page: Poppler renders text there.
    let first = render_page(pdf, 1, 50);
    assert!(first.pixels().any(|p| p[0] < 100), "page 1 has dark (text) pixels");
    // The page order follows the inputs: page 21 is the first photo page.
    let photos = doc.get_page_images(pages[&21]).unwrap();
    assert_eq!((photos[0].width, photos[0].height), (3000, 2000));
}

#[tokio::test]
async fn archives_list_their_entries() {
    let (fx, s) = server_with_fixture().await;
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let text = std::fs::read(corpus_file("images/ocr_text.expected.txt")).unwrap();
    let mut t = tasks(&[
        ("a", import(&fx, "images/photo_640x480.jpg")),
        ("b", import(&fx, "images/photo_640x480.jpg")),
        ("c", import(&fx, "images/ocr_text.expected.txt")),
    ]);
    for fmt in ["zip", "tar", "tar.gz"] {
        t.insert(
            format!("arch-{}", fmt.replace('.', "")),
            json!({"operation": "archive", "input": ["a", "b", "c"], "output_format": fmt}),
        );
    }
    let (job, files) = run_and_download(&s, t, &["arch-zip", "arch-tar", "arch-targz"]).await;
    assert_eq!(job["status"], "completed", "{job}");
    let expected = ["photo_640x480.jpg", "photo_640x480 (2).jpg", "ocr_text.expected.txt"];

    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(file(&files, "archive.zip").to_vec())).unwrap();
    let names: Vec<String> = (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().name().unwrap().to_string())
        .collect();
    assert_eq!(names, expected);
    let mut buf = Vec::new();
    zip.by_name("photo_640x480 (2).jpg")
        .unwrap()
        .read_to_end(&mut buf)
        .unwrap();
    assert_eq!(buf, photo);
    buf.clear();
    zip.by_name("ocr_text.expected.txt")
        .unwrap()
        .read_to_end(&mut buf)
        .unwrap();
    assert_eq!(buf, text);

    for (name, gz) in [("archive.tar", false), ("archive.tar.gz", true)] {
        let bytes = file(&files, name).to_vec();
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(&bytes[..]))
        } else {
            Box::new(&bytes[..])
        };
        let mut ar = tar::Archive::new(reader);
        let mut seen = Vec::new();
        for entry in ar.entries().unwrap() {
            let mut e = entry.unwrap();
            let path = e.path().unwrap().to_string_lossy().to_string();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            if path == "photo_640x480.jpg" {
                assert_eq!(content, photo);
            }
            seen.push(path);
        }
        assert_eq!(seen, expected, "{name}");
    }
}

#[tokio::test]
async fn compress_pdf_jpeg_and_png() {
    let (fx, s) = server_with_fixture().await;
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("pdf", import(&fx, "pdf/photos_4p.pdf")),
            ("jpg", import(&fx, "images/photo_3000x2000.jpg")),
            ("png", import(&fx, "images/alpha_2000x2000.png")),
            ("c-pdf", json!({"operation": "compress", "input": "pdf"})),
            (
                "c-pdf-max",
                json!({"operation": "compress", "input": "pdf", "filename": "max.pdf", "options": {"profile": "max"}}),
            ),
            (
                "c-jpg",
                json!({"operation": "compress", "input": "jpg", "options": {"quality": 50}}),
            ),
            ("c-png", json!({"operation": "compress", "input": "png"})),
        ]),
        &["c-pdf", "c-pdf-max", "c-jpg", "c-png"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let original = std::fs::read(corpus_file("pdf/photos_4p.pdf")).unwrap();
    let web = file(&files, "photos_4p.pdf");
    assert_eq!(pdf_pages(web), 4);
    assert!(
        web.len() * 10 < original.len(),
        "web profile: {} of {}",
        web.len(),
        original.len()
    );
    let max = file(&files, "max.pdf");
    assert!(max.len() < web.len(), "max {} < web {}", max.len(), web.len());
    // The photos are still there, smaller, and the page still shows them.
    let doc = lopdf::Document::load_mem(web).unwrap();
    let page1 = doc.get_pages()[&1];
    let img = &doc.get_page_images(page1).unwrap()[0];
    assert!(img.width < 3000 && img.width > 1000, "{}", img.width);
    let before = render_page(&original, 1, 30);
    let after = render_page(web, 1, 30);
    let diff = mean_diff(&before, &after, 0, 0, before.width(), before.height());
    assert!(
        diff < 6.0,
        "the page looks the same after compression (mean difference {diff})"
    );

    let jpg_in = std::fs::read(corpus_file("images/photo_3000x2000.jpg")).unwrap();
    let jpg = file(&files, "photo_3000x2000.jpg");
    assert!(jpg.len() < jpg_in.len());
    assert_eq!(image_size(jpg), (3000, 2000));

    let png_in = std::fs::read(corpus_file("images/alpha_2000x2000.png")).unwrap();
    let png = file(&files, "alpha_2000x2000.png");
    assert!(png.len() <= png_in.len());
    let a = image::load_from_memory(&png_in).unwrap().to_rgba8();
    let b = image::load_from_memory(png).unwrap().to_rgba8();
    assert!(a == b, "PNG compression is lossless");
}

#[tokio::test]
async fn watermark_changes_the_image_where_it_should_and_nowhere_else() {
    let (fx, s) = server_with_fixture().await;
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("jpg", import(&fx, "images/photo_640x480.jpg")),
            ("img", json!({"operation": "convert", "input": "jpg", "output_format": "png", "filename": "plain.png"})),
            ("logo", import(&fx, "images/alpha_2000x2000.png")),
            ("wm-text", json!({"operation": "watermark", "input": "img", "text": "CONFIDENTIAL", "filename": "text.png",
                "options": {"font_size": 48, "font_color": "#FF0000", "opacity": 100, "position_vertical": "top", "position_horizontal": "left", "margin_vertical": 10, "margin_horizontal": 10}})),
            ("wm-image", json!({"operation": "watermark", "input": ["img", "logo"], "filename": "logo.png",
                "options": {"image": "logo", "image_width": 100, "opacity": 100, "position_vertical": "bottom", "position_horizontal": "right", "margin_vertical": 0, "margin_horizontal": 0}})),
        ]),
        &["wm-text", "wm-image", "img"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let plain = image::load_from_memory(file(&files, "plain.png")).unwrap().to_rgb8();
    let text = image::load_from_memory(file(&files, "text.png")).unwrap().to_rgb8();
    assert_eq!(text.dimensions(), (640, 480));
    // Red text in the top-left corner, nothing changed elsewhere.
    assert!(
        mean_diff(&plain, &text, 10, 10, 300, 60) > 20.0,
        "the text is drawn at the top left"
    );
    assert!(
        text.pixels().filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60).count() > 500,
        "red pixels"
    );
    assert_eq!(
        mean_diff(&plain, &text, 0, 120, 640, 480),
        0.0,
        "below the text nothing changed"
    );
    let logo = image::load_from_memory(file(&files, "logo.png")).unwrap().to_rgb8();
    assert!(
        mean_diff(&plain, &logo, 540, 380, 640, 480) > 5.0,
        "the logo is in the bottom-right corner"
    );
    assert_eq!(
        mean_diff(&plain, &logo, 0, 0, 520, 360),
        0.0,
        "elsewhere nothing changed"
    );
}

#[tokio::test]
async fn watermark_pdf_pages_chosen() {
    let (fx, s) = server_with_fixture().await;
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("doc", import(&fx, "pdf/text_20p.pdf")),
            (
                "wm",
                json!({"operation": "watermark", "input": "doc", "text": "DRAFT",
                "options": {"font_size": 120, "opacity": 60, "rotation": 45, "font_color": "#0000FF", "pages": "2-3"}}),
            ),
        ]),
        &["wm"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let original = std::fs::read(corpus_file("pdf/text_20p.pdf")).unwrap();
    let marked = file(&files, "text_20p.pdf");
    assert_eq!(pdf_pages(marked), 20);
    for (page, expect_mark) in [(1, false), (2, true), (3, true), (4, false)] {
        let a = render_page(&original, page, 40);
        let b = render_page(marked, page, 40);
        let (w, h) = a.dimensions();
        let centre = mean_diff(&a, &b, w / 3, h / 3, 2 * w / 3, 2 * h / 3);
        let blue = b.pixels().filter(|p| p[2] > 150 && p[0] < 150 && p[1] < 150).count();
        if expect_mark {
            assert!(
                centre > 3.0 && blue > 100,
                "page {page} is marked in the centre ({centre}, {blue} blue pixels)"
            );
            let corner = mean_diff(&a, &b, 0, 0, w / 8, h / 8);
            assert!(corner < 0.5, "page {page}: the corner is untouched ({corner})");
        } else {
            assert_eq!(mean_diff(&a, &b, 0, 0, w, h), 0.0, "page {page} is untouched");
        }
    }
}

#[tokio::test]
async fn thumbnails_of_images_and_pdfs() {
    let (fx, s) = server_with_fixture().await;
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("big", import(&fx, "images/photo_6000x4000.jpg")),
            ("pdf", import(&fx, "pdf/text_20p.pdf")),
            ("t1", json!({"operation": "thumbnail", "input": "big", "output_format": "jpg", "filename": "t1.jpg", "options": {"width": 400, "quality": 75}})),
            ("t2", json!({"operation": "thumbnail", "input": "big", "output_format": "webp", "filename": "t2.webp", "options": {"width": 120, "height": 120, "fit": "crop"}})),
            ("t3", json!({"operation": "thumbnail", "input": "pdf", "output_format": "png", "filename": "t3.png", "options": {"width": 200}})),
            ("t4", json!({"operation": "thumbnail", "input": "big", "filename": "t4.png"})),
        ]),
        &["t1", "t2", "t3", "t4"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(image_size(file(&files, "t1.jpg")), (400, 267));
    assert_eq!(image_size(file(&files, "t2.webp")), (120, 120));
    let page = image::load_from_memory(file(&files, "t3.png")).unwrap().to_rgb8();
    assert_eq!(page.width(), 200);
    assert!(
        (250..=270).contains(&page.height()),
        "Letter/A4 proportions: {}",
        page.height()
    );
    assert!(page.pixels().any(|p| p[0] < 128), "the page's text shows");
    assert_eq!(image_size(file(&files, "t4.png")), (256, 171), "default 256 box");
}

#[tokio::test]
async fn convert_images_to_pdf_and_pdf_pages_to_images() {
    let (fx, s) = server_with_fixture().await;
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("jpg", import(&fx, "images/photo_640x480.jpg")),
            ("pdf", import(&fx, "pdf/photos_4p.pdf")),
            ("to-pdf", json!({"operation": "convert", "input": "jpg", "output_format": "pdf"})),
            ("pages", json!({"operation": "convert", "input": "pdf", "output_format": "png", "options": {"pages": "2-3", "resolution": 36}})),
            ("page1", json!({"operation": "convert", "input": "pdf", "output_format": "jpg", "filename": "first.jpg", "options": {"pages": "1", "resolution": 72}})),
            ("lossy", json!({"operation": "convert", "input": "jpg", "output_format": "webp", "filename": "lossy.webp", "options": {"quality": 50}})),
            ("lossless", json!({"operation": "convert", "input": "jpg", "output_format": "webp", "filename": "lossless.webp", "options": {"lossless": true}})),
        ]),
        &["to-pdf", "pages", "page1", "lossy", "lossless"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let pdf = file(&files, "photo_640x480.pdf");
    let doc = lopdf::Document::load_mem(pdf).unwrap();
    assert_eq!(doc.get_pages().len(), 1);
    let page = doc.get_dictionary(doc.get_pages()[&1]).unwrap();
    let mb: Vec<f32> = page
        .get(b"MediaBox")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_float().unwrap())
        .collect();
    assert_eq!(mb, [0.0, 0.0, 640.0, 480.0]);
    let pages = task(&job, "pages")["result"]["files"].as_array().unwrap().clone();
    let names: Vec<&str> = pages.iter().map(|f| f["filename"].as_str().unwrap()).collect();
    assert_eq!(names, ["photos_4p-2.png", "photos_4p-3.png"]);
    let p2 = image::load_from_memory(file(&files, "photos_4p-2.png")).unwrap();
    let (w, h) = (p2.width(), p2.height());
    let first = image::load_from_memory(file(&files, "first.jpg")).unwrap();
    assert_eq!(
        (first.width(), first.height()),
        (w * 2, h * 2),
        "72 dpi is twice 36 dpi"
    );
    let lossy = file(&files, "lossy.webp");
    let lossless = file(&files, "lossless.webp");
    assert_eq!(image_size(lossy), (640, 480));
    assert_eq!(image_size(lossless), (640, 480));
    assert!(
        lossy.len() * 3 < lossless.len(),
        "lossy {} vs lossless {}",
        lossy.len(),
        lossless.len()
    );
}

/// A minimal PDF whose page tree has no pages.
fn zero_page_pdf() -> Vec<u8> {
    let mut doc = lopdf::Document::with_version("1.4");
    let pages =
        doc.add_object(lopdf::dictionary! {"Type" => "Pages", "Kids" => Vec::<lopdf::Object>::new(), "Count" => 0});
    let catalog = doc.add_object(lopdf::dictionary! {"Type" => "Catalog", "Pages" => pages});
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn encrypted_pdf() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("rc-enc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("enc.pdf");
    let status = std::process::Command::new("qpdf")
        .args(["--encrypt", "user-secret", "owner-secret", "256", "--"])
        .arg(corpus_file("pdf/text_20p.pdf"))
        .arg(&out)
        .status()
        .expect("qpdf is installed");
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

#[tokio::test]
async fn bad_inputs_fail_their_task_with_a_clear_message() {
    let (fx, s) = server_with_fixture().await;
    let text_pdf = std::fs::read(corpus_file("pdf/text_20p.pdf")).unwrap();
    let b64task =
        |bytes: &[u8], name: &str| json!({"operation": "import/base64", "file": b64(bytes), "filename": name});
    let (job, _) = run_and_download(
        &s,
        tasks(&[
            ("enc", b64task(&encrypted_pdf(), "secret.pdf")),
            ("broken", b64task(&text_pdf[..text_pdf.len() / 3], "broken.pdf")),
            ("empty", b64task(&zero_page_pdf(), "empty.pdf")),
            // No extension: the format is known only from the content, when the task runs.
            ("video", json!({"operation": "import/url", "url": fx.url("/corpus/video/testsrc_10s_720p.mp4"), "filename": "clip"})),
            ("img", import(&fx, "images/photo_640x480.jpg")),
            ("m-enc", json!({"operation": "merge", "input": ["enc", "img"], "output_format": "pdf"})),
            ("c-broken", json!({"operation": "compress", "input": "broken"})),
            ("t-empty", json!({"operation": "watermark", "input": "empty", "text": "x"})),
            ("m-video", json!({"operation": "merge", "input": ["img", "video"], "output_format": "pdf"})),
            ("wm-glyph", json!({"operation": "watermark", "input": "img", "text": "crab 🦀"})),
        ]),
        &["img"],
    )
    .await;
    assert_eq!(job["status"], "failed");
    let expect = |name: &str, code: &str, needle: &str| {
        let t = task(&job, name);
        assert_eq!(t["status"], "failed", "{name}: {t}");
        assert_eq!(t["code"], code, "{name}: {t}");
        assert!(t["message"].as_str().unwrap().contains(needle), "{name}: {t}");
    };
    expect("m-enc", "invalid_file", "encrypted with a password");
    expect("c-broken", "invalid_file", "not a valid PDF");
    expect("t-empty", "invalid_file", "has no pages");
    expect("m-video", "unsupported_conversion", "clip is mp4");
    expect("wm-glyph", "invalid_data", "U+1F980");

    // Over the pixel limit: the thumbnail fails, the server goes on.
    let s2 = Server::start(&["--allow-private-networks", "--max-pixels", "1000000"]).await;
    let (job, _) = run_and_download(
        &s2,
        tasks(&[
            ("big", import(&fx, "images/photo_3000x2000.jpg")),
            ("t", json!({"operation": "thumbnail", "input": "big"})),
        ]),
        &["t"],
    )
    .await;
    let t = task(&job, "t");
    assert_eq!(
        (t["code"].as_str(), t["status"].as_str()),
        (Some("limit_exceeded"), Some("failed")),
        "{t}"
    );

    // Over the page limit: the 20-page PDF is refused, the 4-page one on the same server
    // (and in the same job) goes through.
    let s3 = Server::start(&["--allow-private-networks", "--max-pages", "10"]).await;
    let (job, files) = run_and_download(
        &s3,
        tasks(&[
            ("long", import(&fx, "pdf/text_20p.pdf")),
            ("short", import(&fx, "pdf/photos_4p.pdf")),
            (
                "c-long",
                json!({"operation": "compress", "input": "long", "ignore_error": true}),
            ),
            ("c-short", json!({"operation": "compress", "input": "short"})),
        ]),
        &["c-short"],
    )
    .await;
    let t = task(&job, "c-long");
    assert_eq!(
        (t["code"].as_str(), t["message"].as_str()),
        (
            Some("limit_exceeded"),
            Some("text_20p.pdf has 20 pages; this server takes at most 10")
        ),
        "{t}"
    );
    assert_eq!(pdf_pages(file(&files, "photos_4p.pdf")), 4);

    // Known at creation: a 400 naming what merge takes.
    let (status, err) = s
        .post("/v2/process/jobs", &json!({"tasks": {"v": import(&fx, "video/testsrc_10s_720p.mp4"), "m": {"operation": "merge", "input": ["v"], "output_format": "pdf"}}}))
        .await;
    assert_eq!(status, 400);
    assert!(
        err["errors"]["tasks.m.input"][0]
            .as_str()
            .unwrap()
            .contains("merge takes: bmp, gif, ico, jpg, pdf"),
        "{err}"
    );

    // An engine this build does not have is a 400 that names the ones it has.
    let (status, err) = s
        .post("/v2/process/jobs", &json!({"tasks": {"i": {"operation": "import/upload", "filename": "a.pdf"}, "c": {"operation": "compress", "input": "i", "engine": "ilovepdf"}}}))
        .await;
    assert_eq!(status, 400);
    let msg = err["errors"]["tasks.c.engine"][0].as_str().unwrap();
    assert!(
        msg.contains("ilovepdf") && msg.contains("available: runconvert"),
        "{msg}"
    );
    let (status, err) = s
        .post("/v2/process/jobs", &json!({"tasks": {"i": {"operation": "import/upload"}, "a": {"operation": "archive", "input": "i", "output_format": "rar"}}}))
        .await;
    assert_eq!(status, 400);
    assert!(
        err["errors"]["tasks.a.output_format"][0]
            .as_str()
            .unwrap()
            .contains("zip"),
        "{err}"
    );
}
