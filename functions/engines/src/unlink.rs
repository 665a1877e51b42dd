//! Office documents lose their links to the outside before LibreOffice opens them. A
//! document may name content that the office suite fetches or reads while converting:
//! an image linked by URL or by `file://` path, a linked OLE object, a remote template,
//! an external workbook, a linked section. Gotenberg's GHSA-2mrg-35hw-x3x9 is this class.
//! This is the first of three layers (the others: LibreOffice's own settings in the
//! profile, and a process without network, `sandbox`):
//!
//! - OOXML (docx, xlsx, pptx): every relationship whose target is outside the package
//!   (`TargetMode="External"`, or a target with a scheme or an absolute or UNC path) is
//!   removed, hyperlinks aside (they are only written into the output, never fetched);
//!   field instructions that load content (INCLUDEPICTURE, INCLUDETEXT, LINK, IMPORT, DDE)
//!   are renamed so they load nothing;
//! - ODF (odt, ods, odp): every `xlink:href` that leaves the package (a scheme, an
//!   absolute path, `../`) is emptied, except on hyperlinks (`text:a`, `draw:a`);
//! - Word 97 (doc): the same field instructions renamed in place, byte for byte, so the
//!   binary layout does not move; RTF: no field instruction is read at all (each field
//!   shows the result saved with it).

use runconvert_core::error::codes;
use runconvert_core::TaskError;
use std::io::{Read, Write};
use std::path::Path;

/// Field instructions that make Word or LibreOffice load content from elsewhere.
const LOADING_FIELDS: &[&str] = &[
    "INCLUDEPICTURE",
    "INCLUDETEXT",
    "INCLUDE",
    "LINK",
    "IMPORT",
    "DDEAUTO",
    "DDE",
];

/// Writes `input` (a `format` document) to `out` without links to outside content.
/// Returns how many links were removed.
pub fn strip(input: &Path, format: &str, out: &Path, name: &str) -> Result<usize, TaskError> {
    let io = |e: std::io::Error| TaskError::new(codes::PROCESSING_FAILED, format!("cannot prepare {name}: {e}"));
    match format {
        "docx" | "xlsx" | "pptx" | "odt" | "ods" | "odp" => strip_package(input, format, out, name),
        "rtf" | "doc" => {
            let mut bytes = std::fs::read(input).map_err(io)?;
            let mut n = rename_fields_in_place(&mut bytes);
            if format == "rtf" {
                // An RTF field's instruction can be cut into groups ("INCL}{UDEPICTURE"), so
                // no field is evaluated at all: each shows the result it was saved with.
                n += rename_word(&mut bytes, b"fldinst", 1);
            }
            std::fs::write(out, bytes).map_err(io)?;
            Ok(n)
        }
        _ => {
            std::fs::copy(input, out).map_err(io)?;
            Ok(0)
        }
    }
}

fn strip_package(input: &Path, format: &str, out: &Path, name: &str) -> Result<usize, TaskError> {
    let bad = |e: String| TaskError::new(codes::INVALID_FILE, format!("{name} is not a valid {format} file: {e}"));
    let io = |e: std::io::Error| TaskError::new(codes::PROCESSING_FAILED, format!("cannot prepare {name}: {e}"));
    let file = std::fs::File::open(input).map_err(io)?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let mut writer = zip::ZipWriter::new(std::fs::File::create(out).map_err(io)?);
    let ooxml = matches!(format, "docx" | "xlsx" | "pptx");
    let mut removed = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        let part = entry.name().map_err(|e| bad(e.to_string()))?.to_string();
        let lower = part.to_ascii_lowercase();
        let rewrite = if ooxml {
            lower.ends_with(".rels") || (lower.ends_with(".xml") && lower.starts_with("word/"))
        } else {
            lower.ends_with(".xml")
        };
        if !rewrite {
            drop(entry);
            let raw = zip.by_index_raw(i).map_err(|e| bad(e.to_string()))?;
            writer.raw_copy_file(raw).map_err(|e| bad(e.to_string()))?;
            continue;
        }
        let mut text = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut text).map_err(|e| bad(format!("{part}: {e}")))?;
        drop(entry);
        let text = String::from_utf8_lossy(&text).into_owned();
        let (clean, n) = if lower.ends_with(".rels") {
            strip_relationships(&text)
        } else if ooxml {
            let (t, a) = rename_fields_in_xml(&text);
            (t, a)
        } else {
            strip_odf_links(&text)
        };
        removed += n;
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        writer
            .start_file(part.as_str(), options)
            .map_err(|e| bad(e.to_string()))?;
        writer.write_all(clean.as_bytes()).map_err(io)?;
    }
    writer.finish().map_err(|e| bad(e.to_string()))?;
    Ok(removed)
}

/// One XML tag found in a text: its byte range, name and whether it is an end tag.
struct Tag<'a> {
    start: usize,
    end: usize,
    name: &'a str,
    closing: bool,
    self_closing: bool,
}

/// The tags of an XML text, in order (comments, declarations and CDATA skipped).
fn tags(xml: &str) -> Vec<Tag<'_>> {
    let b = xml.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = xml[i..].find('<') {
        let start = i + off;
        if xml[start..].starts_with("<!--") {
            i = xml[start..].find("-->").map(|e| start + e + 3).unwrap_or(b.len());
            continue;
        }
        if xml[start..].starts_with("<![CDATA[") {
            i = xml[start..].find("]]>").map(|e| start + e + 3).unwrap_or(b.len());
            continue;
        }
        // The end of the tag: the first '>' outside quotes.
        let mut j = start + 1;
        let mut quote = None;
        while j < b.len() {
            match (quote, b[j]) {
                (None, b'"' | b'\'') => quote = Some(b[j]),
                (Some(q), c) if c == q => quote = None,
                (None, b'>') => break,
                _ => {}
            }
            j += 1;
        }
        let end = (j + 1).min(b.len());
        let inner = &xml[start + 1..j.min(b.len())];
        let closing = inner.starts_with('/');
        let name_start = usize::from(closing);
        let name_len = inner[name_start..]
            .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
            .unwrap_or(inner.len() - name_start);
        let name = &inner[name_start..name_start + name_len];
        if !inner.starts_with('?') && !inner.starts_with('!') {
            out.push(Tag {
                start,
                end,
                name,
                closing,
                self_closing: inner.ends_with('/'),
            });
        }
        i = end;
    }
    out
}

/// The value of attribute `attr` in a tag's text, with the value's byte range in it.
fn attribute(tag: &str, attr: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(off) = tag[from..].find(attr) {
        let at = from + off;
        from = at + attr.len();
        let before_ok = tag[..at].ends_with(|c: char| c.is_whitespace());
        let rest = tag[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let after_eq = tag.len() - rest.len() + 1;
        let value = tag[after_eq..].trim_start();
        let vstart = tag.len() - value.len();
        let q = value.chars().next()?;
        if q != '"' && q != '\'' {
            return None;
        }
        let vlen = value[1..].find(q)?;
        return Some((vstart + 1, vstart + 1 + vlen));
    }
    None
}

/// Whether a link target leaves the document's package: a scheme (`http:`, `file:`,
/// `smb:`...), an absolute or UNC path, or a path up out of the package.
fn leaves_package(target: &str) -> bool {
    let t = target.trim().replace("&#x2F;", "/").replace("&#47;", "/");
    let t = t.trim_start_matches("./");
    if t.is_empty() || t.starts_with('#') {
        return false;
    }
    let scheme = t.find(':').is_some_and(|c| {
        t[..c]
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "+-.".contains(ch))
    });
    scheme || t.starts_with('/') || t.starts_with('\\') || t.starts_with("..") || t.contains("/../") || t.contains('\\')
}

/// OOXML relationship parts: removes each relationship to outside the package but
/// hyperlinks.
fn strip_relationships(xml: &str) -> (String, usize) {
    let mut out = String::with_capacity(xml.len());
    let mut last = 0;
    let mut removed = 0;
    let all = tags(xml);
    let mut k = 0;
    while k < all.len() {
        let t = &all[k];
        k += 1;
        if t.closing || !t.name.ends_with("Relationship") {
            continue;
        }
        let text = &xml[t.start..t.end];
        let value = |a: &str| attribute(text, a).map(|(s, e)| &text[s..e]);
        let external = value("TargetMode").is_some_and(|m| m.eq_ignore_ascii_case("External"))
            || value("Target").is_some_and(leaves_package);
        let hyperlink = value("Type").is_some_and(|ty| ty.ends_with("/hyperlink"));
        if !external || hyperlink {
            continue;
        }
        let mut end = t.end;
        if !t.self_closing {
            // <Relationship ...></Relationship>
            if let Some(close) = all[k..].iter().find(|c| c.closing && c.name == t.name) {
                end = close.end;
            }
        }
        out.push_str(&xml[last..t.start]);
        last = end;
        removed += 1;
    }
    out.push_str(&xml[last..]);
    (out, removed)
}

/// ODF parts: empties every `xlink:href` that leaves the package, but on hyperlinks.
fn strip_odf_links(xml: &str) -> (String, usize) {
    const HYPERLINKS: &[&str] = &["text:a", "draw:a"];
    let mut out = String::with_capacity(xml.len());
    let mut last = 0;
    let mut removed = 0;
    for t in tags(xml) {
        if t.closing || HYPERLINKS.contains(&t.name) {
            continue;
        }
        let text = &xml[t.start..t.end];
        if let Some((s, e)) = attribute(text, "xlink:href") {
            if leaves_package(&text[s..e]) {
                out.push_str(&xml[last..t.start + s]);
                last = t.start + e;
                removed += 1;
            }
        }
    }
    out.push_str(&xml[last..]);
    (out, removed)
}

/// WordprocessingML: field instructions that load content lose their keyword, in
/// `w:instrText` runs and in `w:fldSimple w:instr`.
fn rename_fields_in_xml(xml: &str) -> (String, usize) {
    let mut bytes = xml.as_bytes().to_vec();
    let n = rename_fields_in_place(&mut bytes);
    (String::from_utf8_lossy(&bytes).into_owned(), n)
}

/// Renames loading field keywords wherever they stand as a word, in 8-bit and in
/// UTF-16LE text, keeping every byte offset: the first letter becomes `X`, a keyword no
/// reader knows. Used on RTF, Word 97 files and WordprocessingML.
fn rename_fields_in_place(bytes: &mut [u8]) -> usize {
    let mut n = 0;
    for kw in LOADING_FIELDS {
        n += rename_word(bytes, kw.as_bytes(), 1);
        let wide: Vec<u8> = kw.bytes().flat_map(|c| [c, 0]).collect();
        n += rename_word(bytes, &wide, 2);
    }
    n
}

/// Replaces the first letter of each whole-word, case-insensitive occurrence of `word`
/// (its characters `step` bytes apart) with `X`.
fn rename_word(bytes: &mut [u8], word: &[u8], step: usize) -> usize {
    let is_letter = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut n = 0;
    let mut i = 0;
    while i + word.len() <= bytes.len() {
        let hit = bytes[i..i + word.len()].eq_ignore_ascii_case(word);
        let before = i >= step && is_letter(bytes[i - step]) && (step == 1 || bytes[i - step + 1] == 0);
        let after_at = i + word.len();
        let after =
            after_at < bytes.len() && is_letter(bytes[after_at]) && (step == 1 || bytes.get(after_at + 1) == Some(&0));
        if hit && !before && !after {
            bytes[i] = b'X';
            n += 1;
            i += word.len();
        } else {
            i += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_external_relationships_but_hyperlinks() {
        let rels = r#"<?xml version="1.0"?><Relationships xmlns="x">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image" Target="media/a.png"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image" Target="http://127.0.0.1:9/x.png" TargetMode="External"/>
<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink" Target="https://example.com/" TargetMode="External"/>
<Relationship Id="rId4" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/attachedTemplate" Target="file:///etc/passwd"/>
<Relationship Id="rId5" Type="t" Target="\\server\share\x.png"></Relationship>
</Relationships>"#;
        let (out, n) = strip_relationships(rels);
        assert_eq!(n, 3, "{out}");
        assert!(
            out.contains("media/a.png") && out.contains("https://example.com/"),
            "{out}"
        );
        assert!(
            !out.contains("127.0.0.1") && !out.contains("/etc/passwd") && !out.contains("server"),
            "{out}"
        );
    }

    #[test]
    fn empties_odf_links_that_leave_the_package() {
        let xml = r#"<office:document-content><text:p><draw:frame><draw:image xlink:href="http://127.0.0.1:9/a.png" xlink:type="simple"/></draw:frame>
<draw:frame><draw:image xlink:href="Pictures/in.png"/></draw:frame><draw:object xlink:href="./Object 1"/>
<draw:object-ole xlink:href='file:///etc/hostname'/><text:section-source xlink:href="../secret.odt"/>
<text:a xlink:href="https://example.com/">link</text:a></text:p></office:document-content>"#;
        let (out, n) = strip_odf_links(xml);
        assert_eq!(n, 3, "{out}");
        assert!(out.contains(r#"xlink:href="""#) && out.contains("Pictures/in.png") && out.contains("./Object 1"));
        assert!(out.contains("https://example.com/"));
        assert!(
            !out.contains("127.0.0.1") && !out.contains("/etc/hostname") && !out.contains("secret.odt"),
            "{out}"
        );
    }

    #[test]
    fn renames_loading_fields_in_place() {
        let mut rtf = br#"{\rtf1{\field{\*\fldinst INCLUDEPICTURE "http://127.0.0.1/x.png" \\d}}{\field{\*\fldinst HYPERLINK "x"}} includes}"#.to_vec();
        let len = rtf.len();
        assert_eq!(rename_fields_in_place(&mut rtf), 1);
        assert_eq!(rtf.len(), len);
        let s = String::from_utf8(rtf).unwrap();
        assert!(
            s.contains("XNCLUDEPICTURE") && s.contains("HYPERLINK") && s.contains("includes"),
            "{s}"
        );
        let dir = std::env::temp_dir().join(format!("unlink-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("in.rtf"),
            br#"{\rtf1{\field{\*\fldinst {INCL}{UDEPICTURE "file:///etc/x.png"}}{\fldrslt old}}}"#,
        )
        .unwrap();
        strip(&dir.join("in.rtf"), "rtf", &dir.join("out.rtf"), "in.rtf").unwrap();
        let out = std::fs::read_to_string(dir.join("out.rtf")).unwrap();
        assert!(!out.contains("\\fldinst") && out.contains("\\Xldinst"), "{out}");
        let _ = std::fs::remove_dir_all(&dir);
        let mut wide: Vec<u8> = " INCLUDETEXT \"a\"".bytes().flat_map(|c| [c, 0]).collect();
        assert_eq!(rename_fields_in_place(&mut wide), 1);
        assert_eq!(wide[2], b'X');
    }
}
