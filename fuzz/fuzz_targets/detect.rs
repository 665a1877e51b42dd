//! Bytes → a scratch file → content sniffing (functions/engines/src/detect.rs `sniff`,
//! which for a zip opens it and reads its entry names and `mimetype` entry to tell
//! docx/xlsx/pptx/odt/ods/odp from a plain zip), `compatible`, the raster engine's
//! `check_format`, and the executor's `process::input_format` for a file with no
//! extension. Errors are fine; panics are not, and sniffing must be deterministic.
//!
//! Not reachable from here: the zip-bomb check of office documents,
//! `check_unpacked_size` (functions/engines/src/office.rs:308), is private; its only caller
//! is `Office::convert` (office.rs:209), which needs a running LibreOffice.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runconvert_engines::process::{self, InputFile};
use runconvert_engines::{detect, raster};

const DECLARED: &[&str] = &[
    "pdf", "jpg", "png", "gif", "webp", "bmp", "tiff", "ico", "zip", "docx", "xlsx", "pptx", "odt", "doc", "txt",
    "html", "md", "csv", "mp4", "mov", "m4a", "mkv", "webm", "mp3",
];

fuzz_target!(|data: &[u8]| {
    let path = runconvert_fuzz::scratch_file("detect", data);
    let sniffed = detect::sniff(&path).expect("reading back the scratch file");
    assert_eq!(
        detect::sniff(&path).expect("reading back the scratch file"),
        sniffed,
        "sniff gives two answers for one file"
    );
    if let Some(real) = sniffed {
        assert!(detect::compatible(real, real), "{real} is not compatible with itself");
        for declared in DECLARED {
            let _ = detect::compatible(declared, real);
        }
        // A file declared as what it sniffs as passes the format check.
        assert!(
            raster::check_format(&path, "fuzz-input", real).is_ok(),
            "check_format refuses a file declared as what it sniffs as ({real})"
        );
    } else {
        assert!(raster::check_format(&path, "fuzz-input", "png").is_err());
    }
    let file = InputFile {
        path,
        name: "upload".to_string(),
        task: None,
    };
    let _ = process::input_format(&file, None);
});
