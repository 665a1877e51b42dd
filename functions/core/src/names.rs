//! File names: what users give is made safe before it names anything on disk or in a bucket.

/// A file name made safe: no path, no control characters, at most 200 bytes, never empty
/// and never hidden (no leading dot).
pub fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    // No control characters, and no invisible ones that change how a name reads: bidi
    // overrides and isolates ("ab\u{202e}gpj.exe" shows as "abexe.jpg"), marks,
    // zero-width characters, byte-order marks. Characters Windows refuses become `_`.
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_invisible(*c))
        .map(|c| {
            if matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut cleaned = cleaned
        .trim()
        .trim_start_matches('.')
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
        .to_string();
    // Device names Windows reserves, whatever the extension: CON, PRN, AUX, NUL, COM1-9, LPT1-9.
    let stem = cleaned.split('.').next().unwrap_or("").trim_end().to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0');
    if reserved {
        cleaned.insert(0, '_');
    }
    if cleaned.len() > 200 {
        let ext = cleaned
            .rsplit_once('.')
            .map(|(_, e)| e.to_string())
            .filter(|e| e.len() <= 16);
        let mut cut = 180;
        while !cleaned.is_char_boundary(cut) {
            cut -= 1;
        }
        cleaned.truncate(cut);
        if let Some(ext) = ext {
            cleaned = format!("{cleaned}.{ext}");
        }
    }
    if cleaned.is_empty() {
        "file".to_string()
    } else {
        cleaned
    }
}

/// Characters that show nothing but change how the text around them reads.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}')
}

/// `name`, or `name (2).ext`, `name (3).ext`... when `taken` already has it (compared
/// without regard to case, as some file systems and archive tools do). Records the result.
pub fn unique_name(name: &str, taken: &mut std::collections::HashSet<String>) -> String {
    let mut candidate = name.to_string();
    let mut n = 2;
    while !taken.insert(candidate.to_lowercase()) {
        candidate = match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
            _ => format!("{name} ({n})"),
        };
        n += 1;
    }
    candidate
}

/// `photo.jpeg` + `png` → `photo.png`.
pub fn with_extension(filename: &str, ext: &str) -> String {
    let stem = match filename.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => filename,
    };
    format!("{stem}.{ext}")
}

/// `import/url` → `ImportUrl`, `convert_tools` → `ConvertTools`: a name as an identifier
/// (an OpenAPI operation id, a state of a state machine), split where it is not
/// alphanumeric.
pub fn pascal_case(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_made_safe() {
        assert_eq!(safe_filename("../../etc/passwd"), "passwd");
        assert_eq!(safe_filename("a\u{0}b\nc.jpg"), "abc.jpg");
        assert_eq!(safe_filename(".."), "file");
        assert_eq!(safe_filename(".bashrc"), "bashrc");
        assert_eq!(safe_filename(""), "file");
        let long = format!("{}.jpg", "x".repeat(500));
        let s = safe_filename(&long);
        assert!(s.len() <= 200 && s.ends_with(".jpg"));
        assert_eq!(with_extension("photo.jpeg", "png"), "photo.png");
        assert_eq!(with_extension("noext", "png"), "noext.png");
    }

    #[test]
    fn names_read_as_they_are() {
        assert_eq!(safe_filename("ab\u{202e}gpj.exe"), "abgpj.exe");
        assert_eq!(safe_filename("in\u{200b}voice\u{2066}.pdf\u{feff}"), "invoice.pdf");
        assert_eq!(safe_filename("CON.txt"), "_CON.txt");
        assert_eq!(safe_filename("lpt1"), "_lpt1");
        assert_eq!(safe_filename("COM0.txt"), "COM0.txt");
        assert_eq!(safe_filename("report. . "), "report");
        assert_eq!(safe_filename("x.html\u{a0}."), "x.html");
        assert_eq!(safe_filename("a<b>:c|d?.png"), "a_b__c_d_.png");
        assert_eq!(safe_filename("Console.txt"), "Console.txt");
        assert_eq!(safe_filename("\u{202e}"), "file");
    }

    #[test]
    fn pascal_case_splits_where_not_alphanumeric() {
        assert_eq!(pascal_case("import/url"), "ImportUrl");
        assert_eq!(pascal_case("convert_tools"), "ConvertTools");
        assert_eq!(pascal_case("import/azure/blob"), "ImportAzureBlob");
        assert_eq!(pascal_case("capture_website"), "CaptureWebsite");
    }
}
