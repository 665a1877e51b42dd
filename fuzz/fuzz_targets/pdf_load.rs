//! Bytes → a scratch file → the PDF engine (functions/engines/src/pdf.rs): `page_count`
//! (which is `load`: format check, lopdf parse, encryption, page limits), then, for what
//! loads, `merge` of that one input and `compress` with the "max" profile (which decodes
//! and re-encodes the photos inside), and a reload of the merged file. Errors are fine;
//! panics, and a loaded PDF outside 1..=max_pages, are not.
//!
//! Note: `compress` rewrites photos on scoped threads and, in production, drops a thread
//! that panics (`h.join().ok()`); libFuzzer's panic hook aborts first, so such a panic is
//! reported here though a real task would only lose that photo's rewrite.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runconvert_engines::pdf::{self, Profile};
use runconvert_engines::process::InputFile;
use runconvert_engines::EngineLimits;

fuzz_target!(|data: &[u8]| {
    let input = runconvert_fuzz::scratch_file("pdf_load", data);
    let limits = EngineLimits {
        max_pixels: 4_000_000,
        max_pages: 50,
        ..EngineLimits::default()
    };
    let name = "fuzz.pdf";
    let Ok(pages) = pdf::page_count(&input, name, &limits) else {
        return;
    };
    assert!(
        (1..=limits.max_pages).contains(&pages),
        "load accepted a PDF of {pages} pages (limit {})",
        limits.max_pages
    );

    let merged = runconvert_fuzz::scratch_path("pdf_load", "merged.pdf");
    let file = InputFile {
        path: input.clone(),
        name: name.to_string(),
        task: None,
    };
    if let Ok(count) = pdf::merge(&[(file, "pdf")], &merged, &limits) {
        if count > 0 {
            // What merge wrote must not crash the loader either.
            let _ = pdf::page_count(&merged, "merged.pdf", &limits);
        }
    }

    let compressed = runconvert_fuzz::scratch_path("pdf_load", "compressed.pdf");
    let _ = pdf::compress(&input, name, &compressed, Profile { dpi: 72.0, quality: 40 }, &limits);
});
