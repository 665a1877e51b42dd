//! Office documents lose their links to the outside before LibreOffice opens them. A
//! document may name content that the office suite fetches or reads while converting:
//! an image linked by URL or by `file://` path, a linked OLE object, a remote template,
//! an external workbook, a linked section. Gotenberg's GHSA-2mrg-35hw-x3x9 is this class.
//! This is the first of three layers (the others: LibreOffice's own settings in the
//! profile, and a process without network, `sandbox`):
//!
//! - every XML part must be UTF-8 without a DOCTYPE (no entities to hide a URL in, no
//!   UTF-16 the scanner would not read); attribute values are compared decoded
//!   (`&#104;ttp:` is `http:`), and attributes by their local name, whatever the prefix;
//! - OOXML (docx, xlsx, pptx): every relationship to outside the package is removed
//!   (`TargetMode="External"`, or a target with a scheme or a UNC path), hyperlinks too:
//!   LibreOffice looks a relationship up by its id, whatever its type. Field instructions
//!   that load content (INCLUDEPICTURE, INCLUDETEXT, LINK, IMPORT, DDE, even cut across
//!   runs) empty every field instruction of their part; spreadsheet connections (web
//!   queries) are emptied;
//! - ODF (odt, ods, odp): every `href`, `src` or `background` attribute that leaves the
//!   package (a scheme, an absolute path, `../`) is emptied, except on hyperlinks (`a`);
//! - RTF: no field instruction is read at all (each field shows the result saved with
//!   it); Word 97 (doc): INCLUDEPICTURE and INCLUDETEXT renamed in place, byte for byte,
//!   so the binary layout does not move.

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
            let n = if format == "rtf" {
                rename_rtf_field_instructions(&mut bytes)
            } else {
                rename_doc_fields(&mut bytes)
            };
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
        if !(lower.ends_with(".rels") || lower.ends_with(".xml")) {
            drop(entry);
            let raw = zip.by_index_raw(i).map_err(|e| bad(e.to_string()))?;
            writer.raw_copy_file(raw).map_err(|e| bad(e.to_string()))?;
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| bad(format!("{part}: {e}")))?;
        drop(entry);
        let text = xml_text(&bytes).map_err(|why| bad(format!("{part} {why}")))?;
        let (clean, n) = if lower.ends_with(".rels") {
            strip_relationships(text)
        } else if ooxml && lower.ends_with("connections.xml") {
            // Data connections (web queries, external databases): none is kept.
            let ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
            (
                format!(r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><connections xmlns="{ns}"/>"#),
                1,
            )
        } else if ooxml {
            empty_loading_fields(text)
        } else {
            strip_odf_links(text)
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

/// An XML part as text, or why it is refused: these formats are UTF-8 and never declare
/// a DOCTYPE (whose entities could spell a URL the scanner would not see).
fn xml_text(bytes: &[u8]) -> Result<&str, &'static str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.contains(&0) {
        return Err("is not UTF-8 text");
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8 text")?;
    let lower = text.to_ascii_lowercase();
    if lower.contains("<!doctype") || lower.contains("<!entity") {
        return Err("declares a DOCTYPE, which documents of this format never do");
    }
    Ok(text)
}

/// One XML tag found in a text: its byte range, name and whether it is an end tag.
struct Tag<'a> {
    start: usize,
    end: usize,
    name: &'a str,
    closing: bool,
    self_closing: bool,
}

impl Tag<'_> {
    /// The name without its namespace prefix.
    fn local(&self) -> &str {
        local_name(self.name)
    }
}

fn local_name(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// The tags of an XML text, in order (comments, processing instructions, declarations
/// and CDATA skipped whole).
fn tags(xml: &str) -> Vec<Tag<'_>> {
    let b = xml.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = xml[i..].find('<') {
        let start = i + off;
        // Skipped whole, to their end marker, quotes or not (first match wins).
        const SKIPPED: [(&str, &str); 4] = [("<!--", "-->"), ("<![CDATA[", "]]>"), ("<?", "?>"), ("<!", ">")];
        if let Some((_, end)) = SKIPPED.iter().find(|(open, _)| xml[start..].starts_with(open)) {
            i = xml[start..].find(end).map(|e| start + e + end.len()).unwrap_or(b.len());
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
        out.push(Tag {
            start,
            end,
            name: &inner[name_start..name_start + name_len],
            closing,
            self_closing: inner.ends_with('/'),
        });
        i = end;
    }
    out
}

/// An attribute of a tag: its name and the byte range of its value in the tag's text.
struct Attr<'a> {
    name: &'a str,
    value: (usize, usize),
}

/// The attributes of a tag's text (`<name a="1" b='2'/>`), parsed in order, so a value
/// that looks like another attribute is only a value.
fn attributes(tag: &str) -> Vec<Attr<'_>> {
    let b = tag.as_bytes();
    let mut out = Vec::new();
    let mut i = tag
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .unwrap_or(tag.len());
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        if i == name_start {
            return out;
        }
        let name = &tag[name_start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return out;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || !matches!(b[i], b'"' | b'\'') {
            return out;
        }
        let q = b[i];
        let vstart = i + 1;
        let Some(len) = b[vstart..].iter().position(|&c| c == q) else {
            return out;
        };
        out.push(Attr {
            name,
            value: (vstart, vstart + len),
        });
        i = vstart + len + 1;
    }
}

/// An attribute value with its character and entity references resolved.
fn decode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether a target names a scheme (`http:`, `file:`, `smb:`...) or a drive (`C:`).
fn has_scheme(t: &str) -> bool {
    t.find(':').is_some_and(|c| {
        c > 0
            && t[..c]
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "+-.".contains(ch))
            && !t[..c].contains('/')
    })
}

/// Whether an ODF link leaves the document's package: a scheme, an absolute or UNC path,
/// or a path up out of the package.
fn leaves_package(target: &str) -> bool {
    let t = decode(target);
    let t = t.trim();
    let t = t.trim_start_matches("./");
    if t.is_empty() || t.starts_with('#') {
        return false;
    }
    has_scheme(t) || t.starts_with('/') || t.starts_with("..") || t.contains("/..") || t.contains('\\')
}

/// OOXML relationship parts: removes each relationship to outside the package.
fn strip_relationships(xml: &str) -> (String, usize) {
    let mut out = String::with_capacity(xml.len());
    let mut last = 0;
    let mut removed = 0;
    let all = tags(xml);
    let mut k = 0;
    while k < all.len() {
        let t = &all[k];
        k += 1;
        if t.closing || t.local() != "Relationship" {
            continue;
        }
        let text = &xml[t.start..t.end];
        let attrs = attributes(text);
        let value = |a: &str| {
            attrs
                .iter()
                .find(|x| local_name(x.name) == a)
                .map(|x| decode(&text[x.value.0..x.value.1]))
        };
        let external = value("TargetMode").is_some_and(|m| m.trim().eq_ignore_ascii_case("External"))
            || value("Target").is_some_and(|t| has_scheme(t.trim()) || t.trim().starts_with("\\\\"));
        if !external {
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

/// ODF parts: empties every link attribute that leaves the package, but on hyperlinks.
fn strip_odf_links(xml: &str) -> (String, usize) {
    let mut out = String::with_capacity(xml.len());
    let mut last = 0;
    let mut removed = 0;
    for t in tags(xml) {
        if t.closing {
            continue;
        }
        let text = &xml[t.start..t.end];
        for a in attributes(text) {
            let local = local_name(a.name);
            let linking = matches!(local, "href" | "src" | "background") && !(local == "href" && t.local() == "a");
            if linking && leaves_package(&text[a.value.0..a.value.1]) {
                out.push_str(&xml[last..t.start + a.value.0]);
                last = t.start + a.value.1;
                removed += 1;
            }
        }
    }
    out.push_str(&xml[last..]);
    (out, removed)
}

/// WordprocessingML: when the field instructions of a part (every `instrText` run, joined
/// as Word joins them, and every `fldSimple` `instr`) name a field that loads content,
/// every field instruction of the part is emptied; each field then shows its saved result.
fn empty_loading_fields(xml: &str) -> (String, usize) {
    let all = tags(xml);
    // (byte range to empty, its decoded text)
    let mut runs: Vec<(usize, usize, String)> = Vec::new();
    let mut simple: Vec<(usize, usize, String)> = Vec::new();
    for (k, t) in all.iter().enumerate() {
        if t.closing {
            continue;
        }
        if t.local() == "instrText" && !t.self_closing {
            if let Some(close) = all[k + 1..].iter().find(|c| c.closing && c.local() == "instrText") {
                runs.push((t.end, close.start, decode(&xml[t.end..close.start])));
            }
        }
        if t.local() == "fldSimple" {
            let text = &xml[t.start..t.end];
            for a in attributes(text) {
                if local_name(a.name) == "instr" {
                    simple.push((
                        t.start + a.value.0,
                        t.start + a.value.1,
                        decode(&text[a.value.0..a.value.1]),
                    ));
                }
            }
        }
    }
    let loads = |instr: &str| {
        instr
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\\')
            .any(|w| LOADING_FIELDS.iter().any(|k| w.eq_ignore_ascii_case(k)))
    };
    let joined: String = runs.iter().map(|r| r.2.as_str()).collect();
    if !loads(&joined) && !simple.iter().any(|s| loads(&s.2)) {
        return (xml.to_string(), 0);
    }
    let mut cuts: Vec<(usize, usize)> = runs.iter().chain(&simple).map(|r| (r.0, r.1)).collect();
    cuts.sort();
    let mut out = String::with_capacity(xml.len());
    let mut last = 0;
    for (s, e) in &cuts {
        if *s < last {
            continue;
        }
        out.push_str(&xml[last..*s]);
        last = *e;
    }
    out.push_str(&xml[last..]);
    (out, cuts.len())
}

/// RTF: renames every `\fldinst` control word (whatever follows it: a space, a group, a
/// digit parameter) so no field instruction is read; an instruction can be cut into
/// groups (`{INCL}{UDEPICTURE ...}`), so none is trusted.
fn rename_rtf_field_instructions(bytes: &mut [u8]) -> usize {
    let word = b"\\fldinst";
    let mut n = 0;
    let mut i = 0;
    while i + word.len() <= bytes.len() {
        let after = bytes.get(i + word.len()).copied();
        if &bytes[i..i + word.len()] == word && !after.is_some_and(|c| c.is_ascii_alphabetic()) {
            bytes[i + 1] = b'X';
            n += 1;
            i += word.len();
        } else {
            i += 1;
        }
    }
    n
}

/// Word 97: INCLUDEPICTURE and INCLUDETEXT, as whole words, in 8-bit and UTF-16LE text,
/// get `X` for their first letter, keeping every byte offset.
fn rename_doc_fields(bytes: &mut [u8]) -> usize {
    let mut n = 0;
    for kw in ["INCLUDEPICTURE", "INCLUDETEXT"] {
        n += rename_word(bytes, kw.as_bytes(), 1);
        let wide: Vec<u8> = kw.bytes().flat_map(|c| [c, 0]).collect();
        n += rename_word(bytes, &wide, 2);
    }
    n
}

/// Replaces the first letter of each whole-word, case-insensitive occurrence of `word`
/// (its characters `step` bytes apart) with `X`.
fn rename_word(bytes: &mut [u8], word: &[u8], step: usize) -> usize {
    let is_letter = |c: u8| c.is_ascii_alphabetic();
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
    fn removes_every_external_relationship() {
        let rels = r#"<?xml version="1.0"?><?x '?><Relationships xmlns="x">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image" Target="media/a.png"/>
<Relationship Id="rId0" Type="t" Target="/word/document.xml"/><Relationship Id="rIdU" Type="t" Target="../media/b.png"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image" Target="http://127.0.0.1:9/x.png" TargetMode="External"/>
<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink" Target="https://example.com/hyper" TargetMode="External"/>
<Relationship Id="rId4" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/attachedTemplate" Target="file:///etc/passwd"/>
<Relationship Id="rId5" Type="t" Target="\\server\share\x.png"></Relationship>
<Relationship Type='t TargetMode="Internal" Target="a.png"' Id="rId6" Target="&#104;ttp://127.0.0.1/six" TargetMode="&#69;xternal"/>
<r:Relationship Id="rId7" Target="smb://host/x" TargetMode="external"/>
<?x '?></Relationships>"#;
        let (out, n) = strip_relationships(rels);
        assert_eq!(n, 6, "{out}");
        assert!(out.contains("media/a.png") && out.contains("/word/document.xml") && out.contains("../media/b.png"));
        for gone in ["127.0.0.1", "/etc/passwd", "server", "hyper", "six", "smb:"] {
            assert!(!out.contains(gone), "{gone}: {out}");
        }
    }

    #[test]
    fn empties_odf_links_that_leave_the_package() {
        let xml = r#"<office:document-content><text:p><draw:frame><draw:image xlink:href="http://127.0.0.1:9/a.png" xlink:type="simple"/></draw:frame>
<draw:frame><draw:image xlink:href="Pictures/in.png"/></draw:frame><draw:object xlink:href="./Object 1"/>
<draw:object-ole xlink:href='file:///etc/hostname'/><text:section-source xlink:href="../secret.odt"/>
<draw:image draw:name='a xlink:href="Pictures/p.png"' xlink:href="http://127.0.0.1/named"/><?pi '?>
<draw:image xmlns:l="http://www.w3.org/1999/xlink" l:href="&#x66;ile:///etc/prefixed"/><?pi '?>
<text:a xlink:href="https://example.com/">link</text:a></text:p></office:document-content>"#;
        let (out, n) = strip_odf_links(xml);
        assert_eq!(n, 5, "{out}");
        assert!(out.contains("Pictures/in.png") && out.contains("./Object 1"));
        assert!(out.contains("https://example.com/"));
        for gone in ["127.0.0.1", "/etc/hostname", "secret.odt", "named", "prefixed"] {
            assert!(!out.contains(gone), "{gone}: {out}");
        }
    }

    #[test]
    fn refuses_doctypes_and_other_encodings() {
        assert!(xml_text(b"<!DOCTYPE x [<!ENTITY u \"http://x/\">]><a/>").is_err());
        assert!(xml_text(b"<\0a\0/\0>\0").is_err());
        assert!(xml_text(b"\xEF\xBB\xBF<a/>").is_ok());
    }

    #[test]
    fn loading_fields_lose_their_instructions_even_cut_across_runs() {
        let doc = r#"<w:body><w:p><w:r><w:t>Please include the link</w:t></w:r>
<w:r><w:instrText> INCL</w:instrText></w:r><w:r><w:instrText>UDEPICTURE "http://127.0.0.1/x" \d</w:instrText></w:r>
<w:fldSimple w:instr=" PAGE "/></w:p></w:body>"#;
        let (out, n) = empty_loading_fields(doc);
        assert_eq!(n, 3, "{out}");
        assert!(
            !out.contains("127.0.0.1") && !out.contains("PAGE") && out.contains("Please include the link"),
            "{out}"
        );
        // Ordinary fields and words stay as they are.
        let plain = r#"<w:p><w:r><w:t>a link to include</w:t></w:r><w:r><w:instrText> HYPERLINK "https://e.com/" </w:instrText></w:r><w:fldSimple w:instr=" PAGE "/></w:p>"#;
        assert_eq!(empty_loading_fields(plain), (plain.to_string(), 0));
        let simple = r#"<w:fldSimple w:instr=' &#73;NCLUDEPICTURE "file:///etc/x.png" '/>"#;
        assert!(!empty_loading_fields(simple).0.contains("/etc/x.png"));
    }

    #[test]
    fn no_rtf_field_instruction_is_read() {
        let mut rtf = br#"{\rtf1{\field{\*\fldinst INCLUDEPICTURE "x"}}{\field{\*\fldinst0 {INCL}{UDEPICTURE "y"}}}{\field{\*\fldinst{HYPERLINK "z"}}} \fldinstx}"#.to_vec();
        assert_eq!(rename_rtf_field_instructions(&mut rtf), 3);
        let s = String::from_utf8(rtf).unwrap();
        assert!(
            !s.contains("\\fldinst ") && !s.contains("\\fldinst0") && !s.contains("\\fldinst{"),
            "{s}"
        );
        assert!(s.contains("\\fldinstx"), "another control word is left alone: {s}");
    }

    #[test]
    fn doc_fields_are_renamed_in_place() {
        let mut wide: Vec<u8> = " INCLUDETEXT \"a\" include".bytes().flat_map(|c| [c, 0]).collect();
        let len = wide.len();
        assert_eq!(rename_doc_fields(&mut wide), 1);
        assert_eq!((wide.len(), wide[2]), (len, b'X'));
        let mut narrow = b"xINCLUDEPICTURE INCLUDEPICTURE".to_vec();
        assert_eq!(rename_doc_fields(&mut narrow), 1);
        assert_eq!(&narrow, b"xINCLUDEPICTURE XNCLUDEPICTURE");
    }
}
