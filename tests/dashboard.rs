//! The dashboard, over HTTP against the real binary: sign-in and its cookie, what a
//! session may see and do, cross-site requests refused, markup shown as text, a revoked
//! key's session ended at once, one user's jobs hidden from another.

use runconvert_tests::reqwest::{self, header, redirect::Policy, StatusCode};
use runconvert_tests::serde_json::json;
use runconvert_tests::*;

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

async fn answer(r: reqwest::RequestBuilder) -> Answer {
    let r = r.send().await.unwrap();
    Answer {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

/// A form POST as the dashboard's own page sends it (`Sec-Fetch-Site: same-origin`).
async fn post_form(s: &Server, cookie: Option<&str>, path: &str, form: &str, site: Option<&str>) -> Answer {
    let mut r = browser()
        .post(s.url(path))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form.to_string());
    if let Some(site) = site {
        r = r.header("sec-fetch-site", site);
    }
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    answer(r).await
}

async fn get_page(s: &Server, cookie: Option<&str>, path: &str) -> Answer {
    let mut r = browser().get(s.url(path));
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    answer(r).await
}

/// The value a page shows once (a new key, a signing secret): its first input's.
fn shown_once(body: &str) -> String {
    let value = body.split("value=\"").nth(1).expect("a shown value");
    value.split('"').next().unwrap().to_string()
}

/// Signs in with `key`; the `name=value` of the session cookie.
async fn sign_in(s: &Server, key: &str) -> String {
    let a = post_form(
        s,
        None,
        "/dashboard/sign-in",
        &format!("key={key}"),
        Some("same-origin"),
    )
    .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let set = a.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn signing_in_sets_a_strict_cookie_and_wrong_keys_get_one_answer() {
    let s = Server::start(&[]).await;
    // The root and /dashboard lead to the dashboard, by relative links.
    for path in ["/", "/dashboard"] {
        let a = get_page(&s, None, path).await;
        assert_eq!(a.status, 303);
        assert_eq!(a.headers[header::LOCATION], "dashboard/");
    }
    let a = get_page(&s, None, "/dashboard/").await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains(r#"<label for="key">API key</label>"#), "{}", a.body);

    // Wrong, unknown and empty keys: the same answer.
    for form in ["key=rc_wrongwrongwrong", "key=", "nothing=here", "key=%00%ff"] {
        let a = post_form(&s, None, "/dashboard/sign-in", form, Some("same-origin")).await;
        assert_eq!(a.status, 401, "{form}: {}", a.body);
        assert!(a.body.contains("That API key was not accepted."), "{form}: {}", a.body);
        assert!(!a.headers.contains_key(header::SET_COOKIE));
    }

    let a = post_form(
        &s,
        None,
        "/dashboard/sign-in",
        &format!("key={}", s.key),
        Some("same-origin"),
    )
    .await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.headers[header::LOCATION], "./");
    let set = a.headers[header::SET_COOKIE].to_str().unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/dashboard/", "Max-Age="] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP on loopback: {set}");
    assert!(!set.contains(&s.key), "the cookie never holds the key: {set}");
    let cookie = set.split(';').next().unwrap().to_string();

    let a = get_page(&s, Some(&cookie), "/dashboard/").await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("Signed in as alice"), "{}", a.body);
    assert!(a.body.contains("No jobs"), "an empty list says so: {}", a.body);
    let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");

    // The API takes bearer keys only, never the cookie.
    let a = answer(browser().get(s.url("/v2/process/jobs")).header(header::COOKIE, &cookie)).await;
    assert_eq!(a.status, 401, "{}", a.body);

    // A cookie that was tampered with, or names no session, is a signed-out visitor.
    let tampered = cookie.replacen('.', ".9", 1);
    let a = get_page(&s, Some(&tampered), "/dashboard/").await;
    assert!(a.body.contains(r#"<label for="key">API key</label>"#), "{}", a.body);
    assert!(!a.body.contains("Signed in as"), "{}", a.body);

    // Signing out clears the cookie.
    let a = post_form(&s, Some(&cookie), "/dashboard/sign-out", "", Some("same-origin")).await;
    assert_eq!(a.status, 303);
    assert!(a.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn wrong_keys_at_sign_in_are_rate_limited() {
    let s = Server::start(&[]).await;
    let mut last = StatusCode::OK;
    for _ in 0..12 {
        last = post_form(&s, None, "/dashboard/sign-in", "key=rc_guess", Some("same-origin"))
            .await
            .status;
    }
    assert_eq!(last, 429);
    let a = post_form(&s, None, "/dashboard/sign-in", "key=rc_guess", Some("same-origin")).await;
    assert!(a.body.contains("Too many attempts"), "{}", a.body);
    // The limit follows the connection's address: a made-up X-Forwarded-For buys no
    // fresh tries, while another address (127.0.0.2, the control) has its own.
    let from = |ip: [u8; 4], forwarded: Option<&str>| {
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap();
        let mut r = client
            .post(s.url("/dashboard/sign-in"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body("key=rc_guess");
        if let Some(f) = forwarded {
            r = r.header("x-forwarded-for", f);
        }
        async move { r.send().await.unwrap().status() }
    };
    assert_eq!(from([127, 0, 0, 1], Some("203.0.113.9")).await, 429);
    assert_eq!(from([127, 0, 0, 2], None).await, 401);
}

#[tokio::test]
async fn keys_made_in_the_dashboard_work_and_cross_site_forms_are_refused() {
    let s = Server::start(&[]).await;
    let cookie = sign_in(&s, &s.key).await;
    let form = "name=from+the+dashboard&scope=task.read&scope=task.write";

    // Refused: another site, and no way to tell (no Fetch Metadata, no Origin), and an
    // Origin of another host.
    for site in [Some("cross-site"), Some("same-site"), None] {
        let a = post_form(&s, Some(&cookie), "/dashboard/keys", form, site).await;
        assert_eq!(a.status, 403, "{site:?}: {}", a.body);
    }
    let a = answer(
        browser()
            .post(s.url("/dashboard/keys"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, "http://evil.example")
            .body(form),
    )
    .await;
    assert_eq!(a.status, 403);
    let (_, keys) = s.get("/v2/users/me/keys").await;
    assert!(!keys.to_string().contains("from the dashboard"), "{keys}");

    // Control: the same form from the dashboard's page is taken; the Origin check alone
    // (a browser without Fetch Metadata) takes it too.
    let a = post_form(&s, Some(&cookie), "/dashboard/keys", form, Some("same-origin")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let shown = shown_once(&a.body);
    assert!(shown.starts_with("rc_") && shown.len() == 43, "{shown}");
    let (status, _) = s.get_as(&shown, "/v2/process/jobs").await;
    assert_eq!(status, 200);
    let (status, _) = s.get_as(&shown, "/v2/webhooks").await;
    assert_eq!(status, 403, "only the scopes ticked");
    let host = s.base.trim_start_matches("http://").to_string();
    let a = answer(
        browser()
            .post(s.url("/dashboard/keys"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, format!("http://{host}"))
            .body("name=second&scope=user.read"),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);

    // The list shows the first characters, never a whole key again.
    let a = get_page(&s, Some(&cookie), "/dashboard/keys").await;
    assert!(a.body.contains(&format!("{}…", &shown[..7])), "{}", a.body);
    assert!(!a.body.contains(&shown), "a key is shown once");

    // A key signed in with only task.read cannot make keys, nor one with more scopes.
    let narrow = sign_in(&s, &shown).await;
    let a = post_form(
        &s,
        Some(&narrow),
        "/dashboard/keys",
        "name=x&scope=task.read",
        Some("same-origin"),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("user.write"), "{}", a.body);
}

#[tokio::test]
async fn a_revoked_keys_session_ends_at_once() {
    let s = Server::start(&[]).await;
    let (status, made) = s
        .post(
            "/v2/users/me/keys",
            &json!({"name": "short-lived", "scopes": ["task.read", "user.read", "user.write"]}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let key = made["data"]["key"].as_str().unwrap().to_string();
    let id = made["data"]["id"].as_str().unwrap().to_string();
    let cookie = sign_in(&s, &key).await;
    let a = get_page(&s, Some(&cookie), "/dashboard/").await;
    assert!(
        a.body.contains("Signed in as alice"),
        "control: the session works: {}",
        a.body
    );

    let (status, _) = s.delete_as(&s.key, &format!("/v2/users/me/keys/{id}")).await;
    assert_eq!(status, 204);
    let a = get_page(&s, Some(&cookie), "/dashboard/").await;
    assert!(!a.body.contains("Signed in as"), "{}", a.body);
    assert!(a.body.contains(r#"<label for="key">API key</label>"#));
    let a = post_form(
        &s,
        Some(&cookie),
        "/dashboard/keys",
        "name=x&scope=task.read",
        Some("same-origin"),
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
}

#[tokio::test]
async fn jobs_are_shown_escaped_and_only_to_their_owner() {
    let s = Server::start(&[]).await;
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let job = s
        .run_job(json!({
            "tag": "<script>alert(1)</script>",
            "tasks": {
                "import-1": {"operation": "import/base64", "file": b64(&photo), "filename": "<img src=x onerror=alert(2)>.jpg"},
                "convert-1": {"operation": "convert", "input": "import-1", "output_format": "png"},
                "export-1": {"operation": "export/url", "input": "convert-1"}
            }
        }))
        .await;
    assert_eq!(job["status"], "completed", "{job}");
    let id = job["id"].as_str().unwrap();
    let cookie = sign_in(&s, &s.key).await;

    let a = get_page(&s, Some(&cookie), "/dashboard/").await;
    assert!(a.body.contains(&format!("href=\"./jobs/{id}\"")), "{}", a.body);
    assert!(
        a.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        a.body
    );
    assert!(!a.body.contains("<script>"), "markup is shown as text: {}", a.body);

    let a = get_page(&s, Some(&cookie), &format!("/dashboard/jobs/{id}")).await;
    assert_eq!(a.status, 200);
    assert!(
        !a.body.contains("<script>") && !a.body.contains("<img src=x"),
        "{}",
        a.body
    );
    for needle in [
        "import-1",
        "convert-1",
        "export-1",
        "completed",
        "&#34;output_format&#34;: &#34;png&#34;",
    ] {
        assert!(a.body.contains(needle), "{needle}: {}", a.body);
    }
    // The result's link downloads the PNG.
    let link = a
        .body
        .split("<a href=\"")
        .find(|part| part.contains(" download>"))
        .and_then(|part| part.split('"').next())
        .expect("a download link")
        .replace("&#38;", "&");
    let (status, bytes) = s.download(&link).await;
    assert_eq!(status, 200);
    assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 640);

    // Another user's session sees neither the job nor its page, and cannot delete it.
    let theirs = sign_in(&s, &s.other_key).await;
    let a = get_page(&s, Some(&theirs), "/dashboard/").await;
    assert!(!a.body.contains(id), "{}", a.body);
    let a = get_page(&s, Some(&theirs), &format!("/dashboard/jobs/{id}")).await;
    assert_eq!(a.status, 404);
    assert!(a.body.contains("Job not found"), "{}", a.body);
    let a = post_form(
        &s,
        Some(&theirs),
        &format!("/dashboard/jobs/{id}/delete"),
        "",
        Some("same-origin"),
    )
    .await;
    assert_eq!(a.status, 404);
    let (status, _) = s.get(&format!("/v2/process/jobs/{id}")).await;
    assert_eq!(status, 200, "still there");

    // Its owner deletes it.
    let a = post_form(
        &s,
        Some(&cookie),
        &format!("/dashboard/jobs/{id}/delete"),
        "",
        Some("same-origin"),
    )
    .await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.headers[header::LOCATION], "../../");
    let (status, _) = s.get(&format!("/v2/process/jobs/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn webhooks_and_usage_pages() {
    let s = Server::start(&["--allow-private-networks"]).await;
    let receiver = Canary::start().await;
    let cookie = sign_in(&s, &s.key).await;

    // A bad URL: the reason shown, nothing stored.
    let a = post_form(
        &s,
        Some(&cookie),
        "/dashboard/webhooks",
        "endpoint_url=ftp%3A%2F%2Fx&event=job.finished",
        Some("same-origin"),
    )
    .await;
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.body.contains("endpoint_url: must be an http"), "{}", a.body);
    let a = get_page(&s, Some(&cookie), "/dashboard/webhooks").await;
    assert!(a.body.contains("You have no webhooks."), "{}", a.body);

    let url = receiver.url("/hook");
    let encoded: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    let form = format!("endpoint_url={encoded}&event=job.created&event=job.finished");
    let a = post_form(&s, Some(&cookie), "/dashboard/webhooks", &form, Some("same-origin")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let secret = shown_once(&a.body);
    assert!(secret.starts_with("whsec_"), "{secret}");
    let (_, hooks) = s.get("/v2/webhooks").await;
    let hook = hooks["data"][0].clone();
    assert_eq!(hook["endpoint_url"], json!(url));
    assert!(!hooks.to_string().contains(&secret), "{hooks}");
    let a = get_page(&s, Some(&cookie), "/dashboard/webhooks").await;
    assert!(!a.body.contains(&secret), "a secret is shown once");

    // A job's events show as deliveries.
    let job = s
        .run_job(json!({"tag": "usage", "tasks": {"i": {"operation": "import/base64", "file": "aGk=", "filename": "a.txt"}}}))
        .await;
    let hook_page = format!("/dashboard/webhooks/{}", hook["id"].as_str().unwrap());
    let mut page = String::new();
    for _ in 0..100 {
        page = get_page(&s, Some(&cookie), &hook_page).await.body;
        if page.matches(">delivered<").count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(page.contains("job.created") && page.contains("job.finished"), "{page}");
    assert_eq!(page.matches(">delivered<").count(), 2, "{page}");
    assert!(receiver.seen().iter().filter(|l| l.starts_with("POST /hook")).count() >= 2);

    // Usage: credits, today's jobs, the limits.
    let a = get_page(&s, Some(&cookie), "/dashboard/usage").await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains(r#"<dd id="credits">unlimited</dd>"#), "{}", a.body);
    let today = &job["created_at"].as_str().unwrap()[..10];
    assert!(
        a.body.contains(&format!("<td>{today}</td><td>1</td>")),
        "today's bar counts the job: {}",
        a.body
    );
    assert!(a.body.contains("tasks in a job"), "{}", a.body);

    // Deleted from the dashboard: gone from the API.
    let a = post_form(
        &s,
        Some(&cookie),
        &format!("{hook_page}/delete"),
        "",
        Some("same-origin"),
    )
    .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let (_, hooks) = s.get("/v2/webhooks").await;
    assert_eq!(hooks["data"], json!([]));
}

/// Sign-up: off unless the server allows it; then a name gives a user whose first key
/// works from the API and who sees no one else's jobs; cross-site sign-ups are refused
/// (the same form from the page itself is the control), and each client address may sign
/// up only so often.
#[tokio::test]
async fn sign_up_only_when_allowed() {
    let closed = Server::start(&[]).await;
    let a = get_page(&closed, None, "/dashboard/").await;
    assert!(
        !a.body.contains("sign-up"),
        "no sign-up form when it is off: {}",
        a.body
    );
    let a = post_form(&closed, None, "/dashboard/sign-up", "name=mallory", Some("same-origin")).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("Sign-up is off"), "{}", a.body);
    assert!(!a.headers.contains_key(header::SET_COOKIE));

    let s = Server::start(&["--allow-signup", "--signup-credits", "5"]).await;
    s.create_job(json!({"tasks": {
        "in": {"operation": "import/base64", "file": "aGk=", "filename": "a.txt"},
        "out": {"operation": "export/url", "input": "in"},
    }}))
    .await;
    let a = get_page(&s, None, "/dashboard/").await;
    assert!(a.body.contains(r#"action="./sign-up""#), "{}", a.body);
    let a = post_form(&s, None, "/dashboard/sign-up", "name=%3Cb%3Ecarol", Some("cross-site")).await;
    assert_eq!(a.status, 403, "{}", a.body);
    let a = post_form(&s, None, "/dashboard/sign-up", "name=+", Some("same-origin")).await;
    assert_eq!(a.status, 422, "{}", a.body);

    let a = post_form(&s, None, "/dashboard/sign-up", "name=%3Cb%3Ecarol", Some("same-origin")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(
        a.body.contains("Welcome, &#60;b&#62;carol") || a.body.contains("Welcome, &lt;b&gt;carol"),
        "{}",
        a.body
    );
    let key = shown_once(&a.body);
    let cookie = a.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (status, me) = s.get_as(&key, "/v2/users/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["data"]["name"], "<b>carol");
    assert_eq!(me["data"]["credits"], 5);
    let (_, jobs) = s.get_as(&key, "/v2/process/jobs").await;
    assert_eq!(jobs["meta"]["count"], 0, "{jobs}");
    let a = get_page(&s, Some(&cookie), "/dashboard/").await;
    assert!(a.body.contains("No jobs"), "{}", a.body);

    // Three a minute per address: the fourth is refused.
    let mut statuses = Vec::new();
    for n in 0..3 {
        let a = post_form(
            &s,
            None,
            "/dashboard/sign-up",
            &format!("name=u{n}"),
            Some("same-origin"),
        )
        .await;
        statuses.push(a.status.as_u16());
    }
    assert_eq!(statuses, [201, 201, 429], "the first sign-up counted too");
}
