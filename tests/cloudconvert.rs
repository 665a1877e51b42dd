//! The CloudConvert-compatible surface driven by CloudConvert's official SDKs, unchanged,
//! against the real binary: `tests/cloudconvert/python_sdk.py` (PyPI `cloudconvert`) and
//! `tests/cloudconvert/node_sdk.js` (npm `cloudconvert`, base URLs set by overriding its
//! public `callWithBase`).

use runconvert_tests::*;

fn sdk_env(s: &Server, fx: &Fixture) -> Vec<(&'static str, String)> {
    vec![
        ("RC_URL", s.url("")),
        ("RC_KEY", s.key.clone()),
        (
            "RC_PHOTO",
            corpus_file("images/photo_640x480.jpg").display().to_string(),
        ),
        ("RC_FILE_URL", fx.url("/corpus/images/photo_640x480.jpg")),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_python_sdk() {
    let s = Server::start(&["--allow-private-networks"]).await;
    let fx = Fixture::start().await;
    python_checks("cloudconvert/python_sdk.py", sdk_env(&s, &fx), 10).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_node_sdk() {
    let s = Server::start(&["--allow-private-networks"]).await;
    let fx = Fixture::start().await;
    node_checks("cloudconvert/node_sdk.js", sdk_env(&s, &fx), 5).await;
}
