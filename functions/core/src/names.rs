//! File names: what users give is made safe before it names anything on disk or in a bucket.

/// A file name made safe: no path, no control characters, at most 200 bytes, never empty
/// and never hidden (no leading dot).
pub fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let mut cleaned = cleaned.trim().trim_start_matches('.').to_string();
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
}
