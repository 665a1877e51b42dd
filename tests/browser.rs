//! The dashboard in a real browser: `tests/browser/dashboard.py` drives Debian's Chromium
//! through Playwright for Python against the real binary: sign-in, keys made and used from
//! the API, a revoked key's session ending, a photo converted on the Convert page and its
//! download decoded, a job's percent moving live, a webhook and its delivery, markup in a
//! tag shown as text (with a control that shows the check sees a script that runs), and
//! sign-up. `RC_SCREENSHOTS=<dir>` keeps the README's screenshots.

use runconvert_tests::*;
use std::path::Path;

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_in_chromium() {
    let s = Server::start(&["--allow-private-networks", "--allow-signup"]).await;
    let mut env = vec![
        ("RC_URL", s.url("")),
        ("RC_KEY", s.key.clone()),
        (
            "RC_PHOTO",
            corpus_file("images/photo_640x480.jpg").display().to_string(),
        ),
    ];
    // A relative screenshot directory is the repository's (cargo runs tests in tests/).
    if let Some(dir) = std::env::var_os("RC_SCREENSHOTS") {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        env.push(("RC_SCREENSHOTS", dir.display().to_string()));
    }
    python_checks("browser/dashboard.py", env, 9).await;
}
