//! Nothing a document contains reaches the network or the server's disk: office
//! documents whose content links to a loopback canary or to a file of this machine, HTML
//! whose every kind of request aims at the canary, a host whose address changes between
//! lookups, request headers that are credentials, a user's HTML served inline, and an SFTP
//! server with an unexpected host key. Each test has a control run that shows the attack
//! does reach the canary (or the secret) when the defence is not there.

use runconvert_tests::*;
use serde_json::{json, Value};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("runconvert-outbound-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What Debian's Chromium, started plainly (no proxy, its own resolver: the controls),
/// shows of `url` after `budget_ms` of virtual time: the DOM.
async fn plain_chromium(dir: &Path, url: &str, budget_ms: u32) -> String {
    let out = tokio::process::Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A zip package of `parts`; ODF packages get their `mimetype` first, stored.
fn package(mimetype: Option<&str>, parts: &[(&str, String)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        if let Some(m) = mimetype {
            let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            z.start_file("mimetype", stored).unwrap();
            z.write_all(m.as_bytes()).unwrap();
        }
        let opts = zip::write::SimpleFileOptions::default();
        for (name, text) in parts {
            z.start_file(*name, opts).unwrap();
            z.write_all(text.as_bytes()).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

const RELS_NS: &str = "http://schemas.openxmlformats.org/package/2006/relationships";
const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";

fn rels(items: &[(&str, &str, &str, bool)]) -> String {
    let mut s = format!(r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{RELS_NS}">"#);
    for (id, ty, target, external) in items {
        let mode = if *external { r#" TargetMode="External""# } else { "" };
        s.push_str(&format!(
            r#"<Relationship Id="{id}" Type="{REL}/{ty}" Target="{target}"{mode}/>"#
        ));
    }
    s + "</Relationships>"
}

/// A Word document with `body` and the document part's relationships `doc_rels`
/// (and optionally a settings part with its own relationships).
fn docx(body: &str, doc_rels: &[(&str, &str, &str, bool)], settings_rels: &[(&str, &str, &str, bool)]) -> Vec<u8> {
    let ct = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/><Override PartName="/word/settings.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.settings+xml"/></Types>"#;
    let doc = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:r="{REL}" xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture" xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office"><w:body><w:p><w:r><w:t>Linked content test</w:t></w:r></w:p>{body}</w:body></w:document>"#
    );
    let mut parts = vec![
        ("[Content_Types].xml", ct.to_string()),
        (
            "_rels/.rels",
            rels(&[("rId1", "officeDocument", "word/document.xml", false)]),
        ),
        ("word/document.xml", doc),
        ("word/_rels/document.xml.rels", rels(doc_rels)),
    ];
    if !settings_rels.is_empty() {
        parts.push((
            "word/settings.xml",
            format!(r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:settings xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:r="{REL}"><w:attachedTemplate r:id="rIdT"/><w:linkStyles/></w:settings>"#),
        ));
        parts.push(("word/_rels/settings.xml.rels", rels(settings_rels)));
    }
    package(None, &parts)
}

/// A drawing whose picture is linked (`r:link`), not embedded.
fn linked_picture(rel_id: &str) -> String {
    format!(
        r#"<w:p><w:r><w:drawing><wp:inline><wp:extent cx="1905000" cy="1905000"/><wp:docPr id="1" name="Picture 1"/><a:graphic><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/picture"><pic:pic><pic:nvPicPr><pic:cNvPr id="1" name="x.png"/><pic:cNvPicPr/></pic:nvPicPr><pic:blipFill><a:blip r:link="{rel_id}"/><a:stretch><a:fillRect/></a:stretch></pic:blipFill><pic:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="1905000" cy="1905000"/></a:xfrm><a:prstGeom prst="rect"/></pic:spPr></pic:pic></a:graphicData></a:graphic></wp:inline></w:drawing></w:r></w:p>"#
    )
}

fn xlsx_external(target: &str) -> Vec<u8> {
    let ct = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/externalLinks/externalLink1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.externalLink+xml"/></Types>"#;
    let ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    package(
        None,
        &[
            ("[Content_Types].xml", ct.into()),
            (
                "_rels/.rels",
                rels(&[("rId1", "officeDocument", "xl/workbook.xml", false)]),
            ),
            (
                "xl/workbook.xml",
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="{ns}" xmlns:r="{REL}"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets><externalReferences><externalReference r:id="rId2"/></externalReferences></workbook>"#
                ),
            ),
            (
                "xl/_rels/workbook.xml.rels",
                rels(&[
                    ("rId1", "worksheet", "worksheets/sheet1.xml", false),
                    ("rId2", "externalLink", "externalLinks/externalLink1.xml", false),
                ]),
            ),
            (
                "xl/worksheets/sheet1.xml",
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="{ns}"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>External data</t></is></c><c r="B1"><f>[1]Sheet1!A1</f><v>7</v></c></row></sheetData></worksheet>"#
                ),
            ),
            (
                "xl/externalLinks/externalLink1.xml",
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><externalLink xmlns="{ns}" xmlns:r="{REL}"><externalBook r:id="rId1"><sheetNames><sheetName val="Sheet1"/></sheetNames></externalBook></externalLink>"#
                ),
            ),
            (
                "xl/externalLinks/_rels/externalLink1.xml.rels",
                rels(&[("rId1", "externalLinkPath", target, true)]),
            ),
        ],
    )
}

fn pptx_linked_picture(target: &str) -> Vec<u8> {
    let p = "http://schemas.openxmlformats.org/presentationml/2006/main";
    let a = "http://schemas.openxmlformats.org/drawingml/2006/main";
    let ct = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/ppt/presentation.xml" ContentType="application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml"/><Override PartName="/ppt/slides/slide1.xml" ContentType="application/vnd.openxmlformats-officedocument.presentationml.slide+xml"/><Override PartName="/ppt/slideLayouts/slideLayout1.xml" ContentType="application/vnd.openxmlformats-officedocument.presentationml.slideLayout+xml"/><Override PartName="/ppt/slideMasters/slideMaster1.xml" ContentType="application/vnd.openxmlformats-officedocument.presentationml.slideMaster+xml"/></Types>"#;
    let tree = |inner: &str| {
        format!(
            r#"<p:cSld><p:spTree><p:nvGrpSpPr><p:cNvPr id="1" name=""/><p:cNvGrpSpPr/><p:nvPr/></p:nvGrpSpPr><p:grpSpPr/>{inner}</p:spTree></p:cSld>"#
        )
    };
    let pic = r#"<p:pic><p:nvPicPr><p:cNvPr id="2" name="Picture"/><p:cNvPicPr/><p:nvPr/></p:nvPicPr><p:blipFill><a:blip r:link="rId2"/><a:stretch><a:fillRect/></a:stretch></p:blipFill><p:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="3000000" cy="3000000"/></a:xfrm><a:prstGeom prst="rect"/></p:spPr></p:pic>"#;
    package(
        None,
        &[
            ("[Content_Types].xml", ct.into()),
            (
                "_rels/.rels",
                rels(&[("rId1", "officeDocument", "ppt/presentation.xml", false)]),
            ),
            (
                "ppt/presentation.xml",
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:presentation xmlns:p="{p}" xmlns:a="{a}" xmlns:r="{REL}"><p:sldMasterIdLst><p:sldMasterId id="2147483648" r:id="rId1"/></p:sldMasterIdLst><p:sldIdLst><p:sldId id="256" r:id="rId2"/></p:sldIdLst><p:sldSz cx="9144000" cy="6858000"/><p:notesSz cx="6858000" cy="9144000"/></p:presentation>"#
                ),
            ),
            (
                "ppt/_rels/presentation.xml.rels",
                rels(&[
                    ("rId1", "slideMaster", "slideMasters/slideMaster1.xml", false),
                    ("rId2", "slide", "slides/slide1.xml", false),
                ]),
            ),
            (
                "ppt/slideMasters/slideMaster1.xml",
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:sldMaster xmlns:p="{p}" xmlns:a="{a}" xmlns:r="{REL}">{}<p:clrMap bg1="lt1" tx1="dk1" bg2="lt2" tx2="dk2" accent1="accent1" accent2="accent2" accent3="accent3" accent4="accent4" accent5="accent5" accent6="accent6" hlink="hlink" folHlink="folHlink"/><p:sldLayoutIdLst><p:sldLayoutId id="2147483649" r:id="rId1"/></p:sldLayoutIdLst></p:sldMaster>"#,
                    tree("")
                ),
            ),
            (
                "ppt/slideMasters/_rels/slideMaster1.xml.rels",
                rels(&[("rId1", "slideLayout", "../slideLayouts/slideLayout1.xml", false)]),
            ),
            (
                "ppt/slideLayouts/slideLayout1.xml",
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:sldLayout xmlns:p="{p}" xmlns:a="{a}" xmlns:r="{REL}">{}</p:sldLayout>"#,
                    tree("")
                ),
            ),
            (
                "ppt/slideLayouts/_rels/slideLayout1.xml.rels",
                rels(&[("rId1", "slideMaster", "../slideMasters/slideMaster1.xml", false)]),
            ),
            (
                "ppt/slides/slide1.xml",
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:sld xmlns:p="{p}" xmlns:a="{a}" xmlns:r="{REL}">{}</p:sld>"#,
                    tree(pic)
                ),
            ),
            (
                "ppt/slides/_rels/slide1.xml.rels",
                rels(&[
                    ("rId1", "slideLayout", "../slideLayouts/slideLayout1.xml", false),
                    ("rId2", "image", target, true),
                ]),
            ),
        ],
    )
}

const ODF_NS: &str = r#"xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" office:version="1.2""#;

/// An OpenDocument text or spreadsheet whose body is `body` (and automatic styles `styles`).
fn odf(kind: &str, styles: &str, body: &str) -> Vec<u8> {
    let (mime, element) = match kind {
        "ods" => ("application/vnd.oasis.opendocument.spreadsheet", "spreadsheet"),
        _ => ("application/vnd.oasis.opendocument.text", "text"),
    };
    let manifest = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="{mime}"/><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>"#
    );
    let content = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODF_NS}><office:automatic-styles>{styles}</office:automatic-styles><office:body><office:{element}>{body}</office:{element}></office:body></office:document-content>"#
    );
    package(
        Some(mime),
        &[("META-INF/manifest.xml", manifest), ("content.xml", content)],
    )
}

fn odf_image(href: &str) -> String {
    format!(
        r#"<text:p>Linked image<draw:frame draw:name="i" text:anchor-type="as-char" svg:width="5cm" svg:height="5cm"><draw:image xlink:href="{href}" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/></draw:frame></text:p>"#
    )
}

/// Every hostile office document: (file name, bytes). Each links to the canary at a path
/// named after it, or to `secret` (a magenta PNG) on this machine's disk.
fn hostile_documents(canary: &Canary, secret: &Path, secret_text: &Path) -> Vec<(String, Vec<u8>)> {
    let c = |name: &str| canary.url(&format!("/{name}"));
    let file = format!("file://{}", secret.display());
    let file_text = format!("file://{}", secret_text.display());
    let up = format!("../../../../../../../..{}", secret.display());
    let bullet_style = |href: &str| {
        format!(
            r#"<text:list-style style:name="L1"><text:list-level-style-image text:level="1" xlink:href="{href}" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"><style:list-level-properties fo:width="1cm" fo:height="1cm"/></text:list-level-style-image></text:list-style><style:style style:name="P1" style:family="paragraph"><style:paragraph-properties><style:background-image xlink:href="{href}" xlink:type="simple" xlink:actuate="onLoad"/></style:paragraph-properties></style:style>"#
        )
    };
    let bullets = r#"<text:list text:style-name="L1"><text:list-item><text:p text:style-name="P1">Bullet with a linked image</text:p></text:list-item></text:list>"#;
    vec![
        (
            "docx-image-http.docx".into(),
            docx(&linked_picture("rId9"), &[("rId9", "image", &c("docx-image-http.docx"), true)], &[]),
        ),
        ("docx-image-file.docx".into(), docx(&linked_picture("rId9"), &[("rId9", "image", &file, true)], &[])),
        (
            // LibreOffice takes a relationship by its id, whatever its type says.
            "docx-hyperlink-typed.docx".into(),
            docx(
                &linked_picture("rId9"),
                &[("rId9", "hyperlink", &c("docx-hyperlink-typed.docx"), true)],
                &[],
            ),
        ),
        (
            "docx-split-field.docx".into(),
            docx(
                &format!(
                    r#"<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> INCL</w:instrText></w:r><w:r><w:instrText>UDEPICTURE "{}" \d </w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>x</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>"#,
                    c("docx-split-field.docx")
                ),
                &[],
                &[],
            ),
        ),
        (
            "docx-template.docx".into(),
            docx("", &[], &[("rIdT", "attachedTemplate", &c("docx-template.docx"), true)]),
        ),
        (
            "docx-includepicture.docx".into(),
            docx(
                &format!(
                    r#"<w:p><w:fldSimple w:instr=' INCLUDEPICTURE "{}" \d '><w:r><w:t>picture</w:t></w:r></w:fldSimple></w:p><w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> INCLUDEPICTURE "{file}" \d </w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>x</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>"#,
                    c("docx-includepicture.docx")
                ),
                &[],
                &[],
            ),
        ),
        (
            "docx-ole-link.docx".into(),
            docx(
                r#"<w:p><w:r><w:object><v:shape id="o1" style="width:100pt;height:100pt"><v:imagedata r:id="rIdI"/></v:shape><o:OLEObject Type="Link" ProgID="Excel.Sheet.12" ShapeID="o1" DrawAspect="Content" r:id="rIdO" UpdateMode="Always"><o:LinkType>EnhancedMetaFile</o:LinkType></o:OLEObject></w:object></w:r></w:p>"#,
                &[
                    ("rIdO", "oleObject", &c("docx-ole-link.docx"), true),
                    ("rIdI", "image", &c("docx-ole-link-image"), true),
                ],
                &[],
            ),
        ),
        ("xlsx-external-data.xlsx".into(), xlsx_external(&c("xlsx-external-data.xlsx"))),
        ("pptx-image-http.pptx".into(), pptx_linked_picture(&c("pptx-image-http.pptx"))),
        ("odt-image-http.odt".into(), odf("odt", "", &odf_image(&c("odt-image-http.odt")))),
        ("odt-image-file.odt".into(), odf("odt", "", &odf_image(&file))),
        ("odt-image-up.odt".into(), odf("odt", "", &odf_image(&up))),
        ("odt-bullets-http.odt".into(), odf("odt", &bullet_style(&c("odt-bullets-http.odt")), bullets)),
        ("odt-bullets-file.odt".into(), odf("odt", &bullet_style(&file), bullets)),
        (
            "odt-object-link.odt".into(),
            odf(
                "odt",
                "",
                &format!(
                    r#"<text:p><draw:frame draw:name="o" text:anchor-type="as-char" svg:width="5cm" svg:height="5cm"><draw:object xlink:href="{}" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/><draw:image xlink:href="{}"/></draw:frame></text:p>"#,
                    c("odt-object-link.odt"),
                    c("odt-object-link-image")
                ),
            ),
        ),
        (
            "odt-section.odt".into(),
            odf(
                "odt",
                "",
                &format!(
                    r#"<text:section text:name="S1"><text:section-source xlink:href="{file_text}" xlink:type="simple" text:filter-name="Text"/><text:p>section</text:p></text:section><text:section text:name="S2"><text:section-source xlink:href="{}" xlink:type="simple"/><text:p>section</text:p></text:section>"#,
                    c("odt-section.odt")
                ),
            ),
        ),
        (
            "ods-image-http.ods".into(),
            odf(
                "ods",
                "",
                &format!(
                    r#"<table:table table:name="Sheet1"><table:table-row><table:table-cell><text:p>cell</text:p>{}</table:table-cell></table:table-row></table:table>"#,
                    odf_image(&c("ods-image-http.ods")).replace("<text:p>Linked image", "<text:p>").replace("text:anchor-type=\"as-char\"", "")
                ),
            ),
        ),
        (
            "ods-table-source.ods".into(),
            odf(
                "ods",
                "",
                &format!(
                    r#"<table:table table:name="Sheet1"><table:table-source xlink:href="{}" xlink:type="simple" table:table-name="Sheet1" table:mode="copy-all"/><table:table-row><table:table-cell><text:p>cell</text:p></table:table-cell></table:table-row></table:table>"#,
                    c("ods-table-source.ods")
                ),
            ),
        ),
        (
            "rtf-includepicture.rtf".into(),
            format!(
                r#"{{\rtf1\ansi{{\field{{\*\fldinst INCLUDEPICTURE "{}" \\d}}{{\fldrslt x}}}}\par{{\field{{\*\fldinst {{INCLUDE}}{{PICTURE "{file}" \\d}}}}{{\fldrslt y}}}}\par{{\field{{\*\fldinst INCLUDEPICTURE "{file}" \\d}}{{\fldrslt z}}}}}}"#,
                c("rtf-includepicture.rtf")
            )
            .into_bytes(),
        ),
    ]
}

/// Whether an image holds the canary's (or the secret's) magenta.
fn has_magenta(img: &image::RgbImage) -> bool {
    img.pixels().any(|p| p[0] > 200 && p[1] < 60 && p[2] > 200)
}

fn pdf_text(pdf: &[u8]) -> String {
    let dir = scratch("pdftext");
    std::fs::write(dir.join("in.pdf"), pdf).unwrap();
    let out = std::process::Command::new("pdftotext")
        .arg(dir.join("in.pdf"))
        .arg("-")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_documents_load_nothing_they_link_to() {
    let canary = Canary::start().await;
    let dir = scratch("office");
    // The server's disk: a picture and a text that a document must not be able to read.
    let secret = dir.join("secret.png");
    std::fs::write(&secret, magenta_png()).unwrap();
    let secret_text = dir.join("secret.txt");
    std::fs::write(&secret_text, "RUNCONVERT-SECRET-TEXT-4711\n").unwrap();
    let docs = hostile_documents(&canary, &secret, &secret_text);

    // Control: LibreOffice on its own (a fresh profile, the host's network) follows these
    // links, so the canary and the secret would show what got through.
    let control = dir.join("control");
    std::fs::create_dir_all(&control).unwrap();
    for (name, bytes) in &docs {
        let p = control.join(name);
        std::fs::write(&p, bytes).unwrap();
        // One document at a time, each with a deadline: a linked object can keep
        // LibreOffice waiting on the canary.
        let status = std::process::Command::new("timeout")
            .args(["-s", "KILL", "40", "soffice", "--headless"])
            .arg(format!("-env:UserInstallation=file://{}/profile", control.display()))
            .args(["--convert-to", "pdf", "--outdir"])
            .arg(&control)
            .arg(&p)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        eprintln!("control: plain LibreOffice on {name}: {status}");
    }
    let control_seen = canary.seen();
    eprintln!(
        "control: plain LibreOffice made {} requests: {control_seen:?}",
        control_seen.len()
    );
    for name in [
        "docx-image-http.docx",
        "odt-image-http.odt",
        "odt-object-link.odt",
        "odt-bullets-http.odt",
    ] {
        assert!(
            canary.saw(&format!("/{name}")),
            "control: plain LibreOffice did not fetch {name}"
        );
    }
    let read_secret: Vec<&str> = [
        "docx-image-file",
        "odt-image-file",
        "odt-bullets-file",
        "odt-image-up",
        "rtf-includepicture",
    ]
    .into_iter()
    .filter(|n| {
        let pdf = std::fs::read(control.join(format!("{n}.pdf"))).unwrap();
        has_magenta(&render_page(&pdf, 1, 30))
    })
    .collect();
    eprintln!("control: plain LibreOffice embedded the secret image from {read_secret:?}");
    assert!(!read_secret.is_empty(), "control: no document read the secret file");
    let before = canary.hits();

    // The server (private networks not allowed, as by default).
    let s = Server::start(&[]).await;
    let mut t = serde_json::Map::new();
    let mut converts = Vec::new();
    for (i, (name, bytes)) in docs.iter().enumerate() {
        t.insert(
            format!("in-{i}"),
            json!({"operation": "import/base64", "file": b64(bytes), "filename": name}),
        );
        t.insert(
            format!("pdf-{i}"),
            json!({"operation": "convert", "input": format!("in-{i}"), "output_format": "pdf", "ignore_error": true}),
        );
        converts.push(format!("pdf-{i}"));
    }
    let refs: Vec<&str> = converts.iter().map(String::as_str).collect();
    let (job, files) = run_and_download(&s, t, &refs).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        canary.hits(),
        before,
        "the server's conversions reached the canary: {:?}",
        &canary.seen()[before..]
    );
    for (i, (name, _)) in docs.iter().enumerate() {
        let tk = task(&job, &format!("pdf-{i}"));
        match tk["status"].as_str() {
            Some("finished") => {}
            Some("failed") => {
                // A clear failure is acceptable; a silent one is not.
                assert!(tk["code"].is_string() && tk["message"].is_string(), "{name}: {tk}");
                eprintln!("{name}: failed with {} ({})", tk["code"], tk["message"]);
                continue;
            }
            other => panic!("{name}: {other:?}"),
        }
        let stem = name.rsplit_once('.').unwrap().0;
        let pdf = files
            .iter()
            .find(|(n, _)| n.starts_with(stem) && n.ends_with(".pdf"))
            .map(|(_, b)| b)
            .unwrap_or_else(|| {
                panic!(
                    "{name}: no pdf among {:?}",
                    files.iter().map(|f| &f.0).collect::<Vec<_>>()
                )
            });
        for page in 1..=pdf_pages(pdf) as u32 {
            assert!(
                !has_magenta(&render_page(pdf, page, 30)),
                "{name}: the linked image is in the PDF"
            );
        }
        assert!(
            !pdf_text(pdf).contains("RUNCONVERT-SECRET-TEXT"),
            "{name}: the linked file's text is in the PDF"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// HTML whose every kind of request aims at `c` (the canary).
fn hostile_page(c: &Canary) -> String {
    let p = c.port;
    format!(
        r#"<!doctype html><html><head><link rel=stylesheet href="http://127.0.0.1:{p}/css"><link rel=preconnect href="http://127.0.0.1:{p}"><link rel=dns-prefetch href="http://canary.localhost:{p}"></head><body>
<h1>Hostile page</h1><img src="http://127.0.0.1:{p}/img"><img src="http://[::1]:{p}/img6"><img src="http://localhost:{p}/img-name">
<iframe sandbox srcdoc="<img src='http://127.0.0.1:{p}/srcdoc-img'><iframe srcdoc=&quot;<img src='http://127.0.0.1:{p}/nested-img'>&quot;></iframe>"></iframe>
<iframe src="http://127.0.0.1:{p}/frame"></iframe>
<iframe src="file:///etc/passwd" width=600 height=300></iframe>
<script>
fetch("http://127.0.0.1:{p}/fetch").catch(()=>{{}});
try {{ new WebSocket("ws://127.0.0.1:{p}/ws"); }} catch(e) {{}}
try {{ navigator.sendBeacon("http://127.0.0.1:{p}/beacon", "x"); }} catch(e) {{}}
try {{
  const pc = new RTCPeerConnection({{iceServers: [{{urls: "stun:127.0.0.1:{p}"}}, {{urls: "turn:127.0.0.1:{p}?transport=tcp", username: "u", credential: "p"}}]}});
  pc.createDataChannel("x");
  pc.createOffer().then(o => pc.setLocalDescription(o));
}} catch(e) {{}}
</script></body></html>"#
    )
}

async fn html_to_pdf(s: &Server, html: &str) -> (Value, Vec<(String, Vec<u8>)>) {
    run_and_download(
        s,
        tasks(&[
            ("page", json!({"operation": "import/base64", "file": b64(html.as_bytes()), "filename": "page.html"})),
            (
                "pdf",
                json!({"operation": "convert", "input": "page", "output_format": "pdf", "options": {"wait_time": 3000}}),
            ),
        ]),
        &["pdf"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_to_pdf_reaches_nothing_but_through_the_guard() {
    let canary = Canary::start().await;
    let html = hostile_page(&canary);

    // Control 1: plain headless Chromium (no proxy, its own resolver) lets every kind of
    // request out, WebRTC's UDP included.
    let dir = scratch("chromium");
    std::fs::write(dir.join("page.html"), &html).unwrap();
    plain_chromium(&dir, &format!("file://{}", dir.join("page.html").display()), 5000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = canary.seen();
    eprintln!("control (plain Chromium): {seen:?}");
    for what in ["/css", "/img", "/fetch", "/ws", "/srcdoc-img", "/nested-img", "<udp>"] {
        assert!(
            seen.iter().any(|l| l.contains(what)),
            "control: plain Chromium sent no {what}"
        );
    }

    // Control 2: our server with --allow-private-networks: the same requests go out
    // through the pinning proxy and reach the canary (so the canary sees what passes it).
    let open = Server::start(&["--allow-private-networks"]).await;
    let before = canary.hits();
    let (job, _) = html_to_pdf(&open, &html).await;
    assert_eq!(job["status"], "completed", "{job}");
    let through: Vec<String> = canary.seen()[before..].to_vec();
    eprintln!("control (proxy, private networks allowed): {through:?}");
    for what in ["/css", "/img", "/fetch", "/ws", "/srcdoc-img", "/nested-img", "/frame"] {
        assert!(
            through.iter().any(|l| l.contains(what)),
            "control: {what} did not pass the proxy"
        );
    }
    assert!(
        !through.iter().any(|l| l == "<udp>"),
        "WebRTC sent UDP even through the proxy: {through:?}"
    );
    drop(open);

    // The default server: nothing reaches the canary, and no file of the disk shows.
    let s = Server::start(&[]).await;
    let before = canary.hits();
    let (job, files) = html_to_pdf(&s, &html).await;
    assert_eq!(job["status"], "completed", "{job}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        canary.hits(),
        before,
        "reached the canary: {:?}",
        &canary.seen()[before..]
    );
    let text = pdf_text(&files[0].1);
    assert!(text.contains("Hostile page"), "{text}");
    assert!(!text.contains("root:"), "/etc/passwd is in the PDF: {text}");

    // Markdown goes the same way.
    let md = format!(
        "# Markdown\n\n![x](http://127.0.0.1:{}/md-img)\n\n<img src=\"http://localhost:{}/md-html-img\">\n",
        canary.port, canary.port
    );
    let (job, _) = run_and_download(
        &s,
        tasks(&[
            (
                "page",
                json!({"operation": "import/base64", "file": b64(md.as_bytes()), "filename": "notes.md"}),
            ),
            (
                "pdf",
                json!({"operation": "convert", "input": "page", "output_format": "pdf"}),
            ),
        ]),
        &["pdf"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        canary.hits(),
        before,
        "markdown reached the canary: {:?}",
        &canary.seen()[before..]
    );

    // capture_website of the canary itself, by any name, is refused before Chromium starts.
    for url in [canary.url("/page"), format!("http://localhost:{}/page", canary.port)] {
        let job = s
            .run_job(json!({"tasks": {"c": {"operation": "capture_website", "url": url, "output_format": "png"}}}))
            .await;
        assert_eq!(task(&job, "c")["code"], "forbidden_address", "{job}");
    }
    assert_eq!(canary.hits(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A resolver whose answer changes: the first lookup of `rebind.localhost` gives `first`
/// (an address it lets through), every later one is refused, as a rebinding DNS server would
/// answer with an inner address after the check.
struct Rebinding {
    first: SocketAddr,
    lookups: AtomicUsize,
}

#[async_trait::async_trait]
impl runconvert_connectors::proxy::Pin for Rebinding {
    async fn pin(&self, host: &str, _port: u16) -> Result<Vec<SocketAddr>, runconvert_connectors::guard::Refused> {
        if host != "rebind.localhost" {
            // The browser's own requests (a favicon of the document's host, say).
            return Err(runconvert_connectors::guard::Refused(format!(
                "{host} does not resolve"
            )));
        }
        let n = self.lookups.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            Ok(vec![self.first])
        } else {
            Err(runconvert_connectors::guard::Refused(format!(
                "{host} now resolves to 127.0.0.1, a loopback address"
            )))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_never_resolves_a_name_itself() {
    use runconvert_connectors::capture::{document_to_pdf_pinned, Chromium};
    // The inner service on 127.0.0.1 (where the name rebinds to), and an "outside" one on
    // 127.0.0.2 on the same port (what the first, checked, answer gave).
    let inner = Canary::start().await;
    let outside = Canary::start_on("127.0.0.2", inner.port).await;
    let p = inner.port;
    let html = format!(
        r#"<!doctype html><html><body><p>Rebinding</p><img src="http://rebind.localhost:{p}/one.png">
<script>setTimeout(() => {{ const i = new Image(); i.src = "http://rebind.localhost:{p}/two.png"; document.body.appendChild(i);
fetch("http://rebind.localhost:{p}/three").catch(() => {{}}); }}, 300);</script></body></html>"#
    );

    // Control: Chromium left to itself resolves the name (to 127.0.0.1: it maps every
    // *.localhost name to loopback) and reaches the inner service.
    let dir = scratch("rebind");
    std::fs::write(dir.join("page.html"), &html).unwrap();
    plain_chromium(&dir, &format!("file://{}", dir.join("page.html").display()), 3000).await;
    assert!(
        inner.saw("/one.png"),
        "control: plain Chromium did not resolve the name itself"
    );
    let before = inner.hits();

    // Through our capture: every name goes to the proxy's resolver, once per connection,
    // and the connection goes where that checked answer said.
    let chromium = &Chromium::find(false).expect("chromium is installed");
    let pin = Arc::new(Rebinding {
        first: SocketAddr::from(([127, 0, 0, 2], p)),
        lookups: AtomicUsize::new(0),
    });
    let guard = runconvert_connectors::Guard::new(false);
    let mut o = serde_json::Map::new();
    o.insert("wait_time".into(), json!(1500));
    let out_pdf = dir.join("out.pdf");
    document_to_pdf_pinned(chromium, &guard, pin.clone(), html, &o, &dir, &out_pdf)
        .await
        .unwrap();
    assert!(pdf_text(&std::fs::read(&out_pdf).unwrap()).contains("Rebinding"));
    assert_eq!(
        inner.hits(),
        before,
        "Chromium reached the rebound address: {:?}",
        inner.seen()
    );
    assert_eq!(
        outside.seen().len(),
        1,
        "only the checked first answer is used: {:?}",
        outside.seen()
    );
    assert!(outside.saw("/one.png"));
    assert!(
        pin.lookups.load(Ordering::SeqCst) >= 2,
        "later requests were resolved again, by the proxy"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loopback origin for import/url: `/private.png` answers only with the right
/// Authorization header; `/away` redirects to another host (localhost instead of
/// 127.0.0.1), `/here` to the same origin; `/record` keeps the headers it was sent.
struct Origin {
    port: u16,
    recorded: Arc<std::sync::Mutex<Vec<Headers>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The headers of one request, as (name, value).
type Headers = Vec<(String, String)>;

const AUTH: &str = "Bearer RC-SECRET-AUTH-9f1c";
const COOKIE: &str = "session=RC-SECRET-COOKIE-77aa";
const API_KEY: &str = "RC-SECRET-APIKEY-31be";

impl Origin {
    async fn start() -> Origin {
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::{IntoResponse, Redirect};
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
        let rec = recorded.clone();
        let png = magenta_png();
        let png2 = png.clone();
        let app = axum::Router::new()
            .route(
                "/private.png",
                get(move |h: HeaderMap| async move {
                    if h.get("authorization").and_then(|v| v.to_str().ok()) == Some(AUTH) {
                        png.clone().into_response()
                    } else {
                        StatusCode::UNAUTHORIZED.into_response()
                    }
                }),
            )
            .route(
                "/away",
                get(move || async move { Redirect::temporary(&format!("http://localhost:{port}/record")) }),
            )
            .route("/here", get(|| async { Redirect::temporary("/record") }))
            .route(
                "/record",
                get(move |h: HeaderMap| async move {
                    let pairs = h
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    rec.lock().unwrap().push(pairs);
                    png2.clone().into_response()
                }),
            );
        let handle = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Origin { port, recorded, handle }
    }
}

/// Webhook bodies, as received.
async fn receiver() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::routing::post;
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = bodies.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: String| async move {
            b.lock().unwrap().push(body);
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_headers_are_credentials() {
    let origin = Origin::start().await;
    let (hook, bodies) = receiver().await;
    // Private networks allowed: the origin and the webhook receiver are on loopback.
    let s = Server::start(&["--allow-private-networks"]).await;
    let (st, _) = s
        .post(
            "/v2/webhooks",
            &json!({"endpoint_url": hook, "events": ["job.finished", "task.finished", "task.created", "job.created"]}),
        )
        .await;
    assert_eq!(st, 201);
    let headers = json!({"Authorization": AUTH, "Cookie": COOKIE, "X-Api-Key": API_KEY});
    let base = format!("http://127.0.0.1:{}", origin.port);
    let created = s
        .create_job(json!({"webhook_url": hook, "tasks": {
            "private": {"operation": "import/url", "url": format!("{base}/private.png"), "headers": headers},
            "here": {"operation": "import/url", "url": format!("{base}/here"), "headers": headers, "filename": "here.png"},
            "away": {"operation": "import/url", "url": format!("{base}/away"), "headers": headers, "filename": "away.png"},
        }}))
        .await;
    let job = s.wait_job(created["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    // The headers reached their own origin: the protected file came, and the same-origin
    // redirect carried them (the control: /record does see headers when they are sent).
    let recorded = origin.recorded.lock().unwrap().clone();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let has = |r: &Headers, k: &str| r.iter().any(|(n, _)| n.eq_ignore_ascii_case(k));
    let same: Vec<_> = recorded.iter().filter(|r| has(r, "authorization")).collect();
    assert_eq!(
        same.len(),
        1,
        "the same-origin redirect carries the headers: {recorded:?}"
    );
    assert!(has(same[0], "cookie") && has(same[0], "x-api-key"));
    // The redirect to another host carried none of them.
    let other: Vec<_> = recorded.iter().filter(|r| !has(r, "authorization")).collect();
    assert_eq!(other.len(), 1);
    for k in ["authorization", "cookie", "x-api-key"] {
        assert!(!has(other[0], k), "{k} went to another host: {:?}", other[0]);
    }

    // Nowhere to be seen: the creation answer, the job, the task list, the job list,
    // the webhooks, the database.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, list) = s.get("/v2/process/jobs").await;
    let (_, tasks) = s
        .get(&format!("/v2/process/tasks?job_id={}", job["id"].as_str().unwrap()))
        .await;
    let hooks = bodies.lock().unwrap().clone();
    assert!(hooks.len() >= 3, "webhooks arrived: {}", hooks.len());
    let db = database_bytes(&s.data_dir);
    for secret in ["RC-SECRET-AUTH", "RC-SECRET-COOKIE", "RC-SECRET-APIKEY"] {
        for (what, text) in [
            ("creation answer", created.to_string()),
            ("job", job.to_string()),
            ("job list", list.to_string()),
            ("task list", tasks.to_string()),
            ("webhooks", hooks.join("\n")),
        ] {
            assert!(!text.contains(secret), "{secret} shows in the {what}: {text}");
        }
        assert!(!bytes_contain(&db, secret), "{secret} is stored in clear");
    }
    // What is shown: the header names, the values redacted.
    assert_eq!(
        task(&job, "private")["payload"]["headers"],
        json!({"Authorization": "[redacted]", "Cookie": "[redacted]", "X-Api-Key": "[redacted]"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_content_never_runs_on_the_api_origin() {
    let s = Server::start(&[]).await;
    let html = b"<html><body><script>document.title='ran'</script>x</body></html>";
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#;
    let job = s
        .run_job(json!({"tasks": {
            "h": {"operation": "import/base64", "file": b64(html), "filename": "page.html"},
            "s": {"operation": "import/base64", "file": b64(svg), "filename": "image.svg"},
            "p": {"operation": "import/base64", "file": b64(&magenta_png()), "filename": "pic.png"},
            "inline": {"operation": "export/url", "input": ["h", "s", "p"], "inline": true},
            "attach": {"operation": "export/url", "input": ["h"]},
        }}))
        .await;
    assert_eq!(job["status"], "completed", "{job}");
    for (name, url) in urls(task(&job, "inline")) {
        let r = s.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers();
        let csp = h
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h["x-content-type-options"], "nosniff");
        if name.ends_with(".png") {
            // Control: a picture is shown inline as it is.
            assert_eq!(csp, None, "{name}");
            assert!(h["content-disposition"].to_str().unwrap().starts_with("inline"));
        } else {
            let csp = csp.unwrap_or_else(|| panic!("{name} is served inline without a sandbox"));
            assert!(csp.starts_with("sandbox"), "{name}: {csp}");
            assert!(csp.contains("default-src 'none'"), "{name}: {csp}");
        }
    }
    let (_, url) = &urls(task(&job, "attach"))[0];
    let r = s.http.get(url).send().await.unwrap();
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));

    // What a browser does with it: the inline page's script does not run.
    let (_, page_url) = urls(task(&job, "inline"))
        .into_iter()
        .find(|(n, _)| n.ends_with(".html"))
        .unwrap();
    let dir = scratch("inline");
    let dom = plain_chromium(&dir, &page_url, 2000).await;
    assert!(dom.contains("<body>"), "{dom}");
    assert!(!dom.contains("<title>ran</title>"), "the script ran: {dom}");
    // Control: the same page opened without the policy runs its script.
    std::fs::write(dir.join("page.html"), html).unwrap();
    let dom = plain_chromium(&dir, &format!("file://{}", dir.join("page.html").display()), 2000).await;
    assert!(
        dom.contains("<title>ran</title>"),
        "control: the script did not run: {dom}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A syntactically valid ed25519 public key that no server here has.
fn stranger_key() -> String {
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&[7u8; 32]);
    format!("ssh-ed25519 {}", b64(&blob))
}

/// The lines sshd logged since `from` (its log, written by tests/services.sh).
fn sshd_log_since(from: usize) -> String {
    let log = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-services/logs/sshd.log");
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    text[from.min(text.len())..].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_checks_the_host_key_before_sending_a_password() {
    let st = runconvert_tests::stores::Stores::from_env();
    let s = Server::start(&["--allow-private-networks"]).await;
    let run = format!("hostkey-{}", std::process::id());
    let remote = format!("{}/{run}", st.sftp_home);
    std::fs::create_dir_all(&remote).unwrap();
    std::fs::write(format!("{remote}/in.png"), magenta_png()).unwrap();
    let with = |extra: Value| {
        let mut f = st.sftp_password_fields();
        f["file_string"] = json!(format!("{remote}/in.png"));
        f["operation"] = json!("import/sftp");
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    };
    let log_start = sshd_log_since(0).len();

    // Without host_key: accepted, and the fingerprint is recorded in the result.
    let job = s.run_job(json!({"tasks": {"i": with(json!({}))}})).await;
    let t = task(&job, "i");
    assert_eq!(t["status"], "finished", "{job}");
    let fingerprint = t["result"]["host_key_fingerprint"].as_str().unwrap().to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    // Control: a password login shows in sshd's log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = sshd_log_since(log_start);
    assert!(
        log.contains("Accepted password for"),
        "control: sshd logs password logins: {log}"
    );

    // The right key, as a fingerprint: accepted.
    let job = s
        .run_job(json!({"tasks": {"i": with(json!({"host_key": fingerprint}))}}))
        .await;
    assert_eq!(task(&job, "i")["status"], "finished", "{job}");

    // Another key: the task fails with a clear code, and sshd saw no password attempt.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mark = sshd_log_since(0).len();
    let job = s
        .run_job(json!({"tasks": {"i": with(json!({"host_key": stranger_key()}))}}))
        .await;
    let t = task(&job, "i");
    assert_eq!(t["status"], "failed", "{job}");
    assert_eq!(t["code"], "host_key_mismatch", "{t}");
    assert!(t["message"].as_str().unwrap().contains(&fingerprint), "{t}");
    assert!(!t.to_string().contains(&st.sftp_password));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = sshd_log_since(mark);
    assert!(!log.contains("password"), "sshd saw a password attempt: {log}");

    // export/sftp checks the same way.
    let mut exp = st.sftp_password_fields();
    exp["operation"] = json!("export/sftp");
    exp["input"] = json!("in");
    exp["file_string"] = json!(format!("{remote}/out.png"));
    exp["host_key"] = json!(format!("SHA256:{}", "A".repeat(43)));
    let job = s
        .run_job(json!({"tasks": {"in": {"operation": "import/base64", "file": b64(&magenta_png()), "filename": "x.png"}, "out": exp}}))
        .await;
    assert_eq!(task(&job, "out")["code"], "host_key_mismatch", "{job}");
    assert!(!std::path::Path::new(&format!("{remote}/out.png")).exists());

    // A server that requires host_key refuses tasks without one, before connecting.
    let strict = Server::start(&["--allow-private-networks", "--sftp-require-host-key"]).await;
    let mark = sshd_log_since(0).len();
    let job = strict.run_job(json!({"tasks": {"i": with(json!({}))}})).await;
    let t = task(&job, "i");
    assert_eq!(t["code"], "host_key_required", "{t}");
    assert!(t["message"].as_str().unwrap().contains("host_key"), "{t}");
    let job = strict
        .run_job(json!({"tasks": {"i": with(json!({"host_key": fingerprint}))}}))
        .await;
    assert_eq!(task(&job, "i")["status"], "finished", "{job}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sshd_log_since(mark).matches("Accepted password").count(), 1);
    let _ = std::fs::remove_dir_all(&remote);
}
