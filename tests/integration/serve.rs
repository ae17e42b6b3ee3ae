//! `cairn serve` (issue 15): the real binary on a free port over a real repository with history
//! (successful backups, a failed run, a verify), every page and API endpoint fetched over HTTP,
//! escaping of an attacker-chosen file name, the token on a non-loopback address and on
//! downloads, downloads equal to `cat` and `export`, and the overview rendered by headless
//! Chromium without console errors (screenshot: target/serve-overview.png).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{ensure_package, example_app, have_program, ChildGuard, Env};

/// A file name that is markup: a directory `<script>alert(1)<` holding `script>.txt` (a name
/// cannot hold the `/`), and a file whose name is an `img` tag.
const EVIL: &str = "<script>alert(1)</script>.txt";
const EVIL_IMG: &str = "<img src=x onerror=alert(1)>.txt";
const TOKEN: &str = "serve-test-token-0123456789";

/// A running `cairn serve`, killed when dropped; `base` is `http://ADDR`.
struct Server {
    _child: ChildGuard,
    base: String,
}

fn start(env: &Env, cfg: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
    let mut c = env.cfg_cmd(cfg, &["serve"]);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = ChildGuard(c.spawn().expect("spawn cairn serve"));
    let line = child.read_line();
    let Some(url) = line.strip_prefix("serving ") else {
        let mut err = String::new();
        let _ = child.0.stderr.take().unwrap().read_to_string(&mut err);
        panic!("serve did not start: {line:?} {err}");
    };
    Server { _child: child, base: url.trim_end_matches('/').to_string() }
}

struct Reply {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn get(url: &str, bearer: Option<&str>) -> Reply {
    let mut req = ureq::get(url);
    if let Some(t) = bearer {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let code = resp.status();
    let headers = resp.headers_names().iter().map(|k| (k.clone(), resp.header(k).unwrap_or("").to_string())).collect();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    Reply { code, headers, body }
}

/// Every response carries the safe headers.
fn assert_safe_headers(r: &Reply, url: &str) {
    let csp = r.header("content-security-policy").unwrap_or_else(|| panic!("{url}: no CSP"));
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{url}: {csp}");
    assert!(!csp.contains("unsafe-eval") && !csp.contains("script-src"), "{url}: {csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{url}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{url}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{url}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{url}");
}

/// The example app backed up twice, a failed run of `logs`, a verify; one log file's name is
/// HTML.
fn repository_with_history(env: &Env) -> (PathBuf, PathBuf) {
    let (app, cfg) = example_app(env.path());
    std::fs::create_dir(app.join("logs/<script>alert(1)<")).unwrap();
    std::fs::write(app.join("logs").join(EVIL), b"not a script\n").unwrap();
    std::fs::write(app.join("logs").join(EVIL_IMG), b"not an image\n").unwrap();
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    std::fs::write(app.join("logs/extra.log"), b"one more line\n".repeat(100)).unwrap();
    env.run_cfg(&cfg, &["backup", "--now", "--type", "logs"]).ok();
    std::fs::rename(app.join("logs"), app.join("logs.away")).unwrap();
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "logs"]);
    assert_eq!(r.code, 1, "the run without its source fails: {}", r.stderr);
    std::fs::rename(app.join("logs.away"), app.join("logs")).unwrap();
    env.run_cfg(&cfg, &["verify"]).ok();
    (app, cfg)
}

#[test]
fn pages_api_downloads_and_escaping() {
    let env = Env::new();
    let (app, cfg) = repository_with_history(&env);
    let srv = start(&env, &cfg, &["--listen", "127.0.0.1:0"], &[("CAIRN_SERVE_TOKEN", TOKEN)]);
    let b = &srv.base;

    // The API has the CLI's --json shapes, value for value.
    let cli_snaps = env.run_cfg(&cfg, &["snapshots", "--json"]).ok().json();
    let api_snaps = get(&format!("{b}/api/snapshots"), None);
    assert_eq!(api_snaps.code, 200);
    assert_safe_headers(&api_snaps, "/api/snapshots");
    assert_eq!(api_snaps.header("content-type"), Some("application/json"));
    assert_eq!(api_snaps.json(), cli_snaps);
    let cli_hist = env.run_cfg(&cfg, &["history", "--json"]).ok().json();
    assert_eq!(get(&format!("{b}/api/history"), None).json(), cli_hist);
    let st = get(&format!("{b}/api/status"), None).json();
    let cli_st = env.run_cmd(env.cfg_cmd(&cfg, &["status", "--json"])).json();
    assert_eq!(st["types"].as_array().unwrap().len(), 3, "{st:#}");
    assert_eq!(st["exit_code"], cli_st["exit_code"]);
    assert_eq!(st["problems"], cli_st["problems"]);
    assert_eq!(st["last_verify"]["ok"], true, "{st:#}");
    assert_eq!(st["problems"][0]["kind"], "failing", "{st:#}");

    let logs: Vec<&serde_json::Value> = cli_snaps.as_array().unwrap().iter().filter(|s| s["type"] == "logs").collect();
    let logs_id = logs.last().unwrap()["id"].as_str().unwrap().to_string();
    let db_id =
        cli_snaps.as_array().unwrap().iter().find(|s| s["type"] == "db").unwrap()["id"].as_str().unwrap().to_string();
    let ls = get(&format!("{b}/api/snapshots/{logs_id}/ls"), None).json();
    assert_eq!(ls, env.run_cfg(&cfg, &["ls", "--json", &logs_id]).ok().json());

    // The overview answers "am I safe?": here, no: the failed run comes first, in words.
    let page = get(&format!("{b}/"), None);
    assert_eq!(page.code, 200);
    assert_safe_headers(&page, "/");
    let html = page.text();
    assert!(html.contains("Needs attention: failing"), "{html}");
    assert!(html.contains(st["problems"][0]["message"].as_str().unwrap().split(' ').next().unwrap()));
    for word in ["db", "logs", "config", "Repository", "Verification", "no errors", "Free space"] {
        assert!(html.contains(word), "overview lacks {word}");
    }

    // History: every run, filters, an error text.
    let h = get(&format!("{b}/history"), None).text();
    assert!(h.contains("failed") && h.contains("verify") && h.contains("success"), "{h}");
    let failed = get(&format!("{b}/history?type=logs&result=failed"), None).text();
    assert_eq!(failed.matches("<span class=\"badge failing\">failed</span>").count(), 1, "{failed}");
    assert!(!failed.contains(">success</span>"), "{failed}");
    let api_failed = get(&format!("{b}/api/history?type=logs&result=failed"), None).json();
    assert_eq!(api_failed.as_array().unwrap().len(), 1);
    assert!(api_failed[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    let paged = get(&format!("{b}/api/history?limit=2&page=2"), None).json();
    assert_eq!(paged.as_array().unwrap()[0], cli_hist[2]);

    // Charts: inline SVG per type.
    let c = get(&format!("{b}/charts"), None).text();
    assert!(c.matches("<svg").count() >= 9, "{c}");
    assert!(c.contains("<polyline"), "{c}");

    // Snapshots and the tree: the HTML file name shows escaped, never as markup.
    let s = get(&format!("{b}/snapshots"), None).text();
    assert!(s.contains(&logs_id[..8]) && s.contains("daily"), "{s}");
    let root = get(&format!("{b}/snapshots/{logs_id}"), None).text();
    assert!(root.contains("logs/"), "{root}");
    let tree = get(&format!("{b}/snapshots/{logs_id}?path=logs"), None);
    assert_eq!(tree.code, 200, "{}", tree.text());
    let t = tree.text();
    assert!(t.contains("&lt;script&gt;alert(1)&lt;/"), "{t}");
    assert!(t.contains("&lt;img src=x onerror=alert(1)&gt;.txt"), "{t}");
    assert!(!t.contains("<script") && !t.contains("<img"), "{t}");
    let sub: String = url::form_urlencoded::byte_serialize(b"logs/<script>alert(1)<").collect();
    let t = get(&format!("{b}/snapshots/{logs_id}?path={sub}"), None).text();
    assert!(t.contains(">script&gt;.txt<"), "{t}");
    assert!(!t.contains("<script"), "{t}");
    assert_eq!(get(&format!("{b}/snapshots/{logs_id}?path=nope"), None).code, 404);
    let missing = get(&format!("{b}/snapshots/ffffffff"), None);
    assert_eq!(missing.code, 404);
    assert_safe_headers(&missing, "404");

    // Downloads need the token on loopback too; with it, the bytes equal `cat` and `export`.
    let enc: String = url::form_urlencoded::byte_serialize(format!("logs/{EVIL}").as_bytes()).collect();
    let file_url = format!("{b}/snapshots/{logs_id}/file?path={enc}");
    let denied = get(&file_url, None);
    assert_eq!(denied.code, 401);
    assert!(denied.header("www-authenticate").is_some_and(|v| v.starts_with("Basic")));
    assert_eq!(get(&file_url, Some("wrong-token-0123456789")).code, 401);
    let got = get(&file_url, Some(TOKEN));
    assert_eq!(got.code, 200, "{}", got.text());
    assert_safe_headers(&got, "download");
    let cat = env.run_cfg_raw(&cfg, &["cat", &logs_id, &format!("logs/{EVIL}")]);
    assert_eq!(cat.code, 0, "{}", cat.stderr);
    assert_eq!(got.body, cat.stdout);
    let cd = got.header("content-disposition").unwrap();
    // The base name `script>.txt`, reduced to a safe ASCII name.
    assert_eq!(cd, "attachment; filename=\"script_.txt\"");

    let out = env.path().join("exported");
    env.run_cfg(&cfg, &["export", &db_id, "--out", out.to_str().unwrap()]).ok();
    let file = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap();
    let x = get(&format!("{b}/snapshots/{db_id}/export"), Some(TOKEN));
    assert_eq!(x.code, 200, "{}", x.text());
    assert_eq!(x.body, std::fs::read(file.path()).unwrap(), "the .db.gz differs from `export`");
    let name = file.file_name().into_string().unwrap();
    assert!(name.ends_with(".db.gz"));
    assert_eq!(x.header("content-disposition"), Some(format!("attachment; filename=\"{name}\"").as_str()));

    // A page of another site rebound to 127.0.0.1 is refused.
    let r = ureq::get(&format!("{b}/api/status")).set("Host", "evil.example").call();
    assert!(matches!(r, Err(ureq::Error::Status(403, _))), "{r:?}");

    // New snapshots show without a restart.
    std::fs::write(app.join(".env"), "CHANGED=1\n").unwrap();
    env.run_cfg(&cfg, &["backup", "--now", "--type", "config"]).ok();
    let n = cli_snaps.as_array().unwrap().len();
    assert_eq!(get(&format!("{b}/api/snapshots"), None).json().as_array().unwrap().len(), n + 1);
}

#[test]
fn non_loopback_needs_a_token() {
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    env.run_cfg(&cfg, &["backup", "--now", "--type", "config"]).ok();
    // Only 127.0.0.1 and ::1 count as loopback: 127.0.0.2 asks for a token like any address.
    let r = env.run_cfg(&cfg, &["serve", "--listen", "127.0.0.2:0"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not a loopback address") && r.stderr.contains("token"), "{}", r.stderr);
    // A short token is refused; the token never comes from argv.
    let short = app.join("short-token");
    std::fs::write(&short, "short\n").unwrap();
    let r = env.run_cfg(&cfg, &["serve", "--listen", "127.0.0.2:0", "--token-file", short.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("at least 16"), "{}", r.stderr);

    let tf = app.join("token");
    std::fs::write(&tf, format!("{TOKEN}\n")).unwrap();
    let srv = start(&env, &cfg, &["--listen", "127.0.0.2:0", "--token-file", tf.to_str().unwrap()], &[]);
    let b = &srv.base;
    assert!(b.starts_with("http://127.0.0.2:"), "{b}");
    for path in ["/", "/api/status", "/history", "/snapshots", "/style.css"] {
        let r = get(&format!("{b}{path}"), None);
        assert_eq!(r.code, 401, "{path}");
        assert_safe_headers(&r, path);
        assert_eq!(get(&format!("{b}{path}"), Some("serve-test-token-012345678X")).code, 401, "{path}");
        assert_eq!(get(&format!("{b}{path}"), Some(TOKEN)).code, 200, "{path}");
    }
    // HTTP Basic, as a browser sends it: the token as the password.
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("me:{TOKEN}"));
    let r = ureq::get(&format!("{b}/api/status")).set("Authorization", &format!("Basic {basic}")).call();
    assert_eq!(r.map(|r| r.status()).ok(), Some(200));
}

#[test]
fn downloads_without_token_only_when_turned_off() {
    let env = Env::new();
    let (_app, cfg) = example_app(env.path());
    env.run_cfg(&cfg, &["backup", "--now", "--type", "config"]).ok();
    let id = env.run_cfg(&cfg, &["snapshots", "--json"]).ok().json()[0]["id"].as_str().unwrap().to_string();
    let url = |b: &str| format!("{b}/snapshots/{id}/file?path=config.json");
    // No token at all: pages work, downloads are refused and say how to allow them.
    let srv = start(&env, &cfg, &[], &[]);
    assert_eq!(get(&format!("{}/", srv.base), None).code, 200);
    let r = get(&url(&srv.base), None);
    assert_eq!(r.code, 401);
    assert!(r.text().contains("--no-download-token"), "{}", r.text());
    drop(srv);
    let srv = start(&env, &cfg, &["--no-download-token"], &[]);
    let r = get(&url(&srv.base), None);
    assert_eq!(r.code, 200);
    assert_eq!(r.body, env.run_cfg_raw(&cfg, &["cat", &id, "config.json"]).stdout);
}

/// The overview in a real browser: rendered, screenshot taken, no console error.
#[test]
fn overview_renders_in_headless_chromium() {
    ensure_package("chromium", || have_program("chromium"));
    let env = Env::new();
    let (_app, cfg) = repository_with_history(&env);
    let srv = start(&env, &cfg, &[], &[]);
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/serve-overview.png");
    // (target/ may not exist: CARGO_TARGET_DIR can put the build elsewhere.)
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[&str]| {
        let out = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .args(["--enable-logging=stderr", "--v=0", "--window-size=1280,900"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("{}/", srv.base))
            .stdin(Stdio::null())
            .output()
            .expect("run chromium");
        assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (_, log) = chromium(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000, "{} bytes", png.len());
    // The DOM as the browser built it: the page rendered, nothing blocked by the CSP.
    let (dom, log2) = chromium(&["--dump-dom"]);
    assert!(dom.contains("Needs attention") && dom.contains("Backup types"), "{dom}");
    for l in log.lines().chain(log2.lines()) {
        let bad = l.contains("Uncaught")
            || l.contains("Content Security Policy")
            || (l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("error")));
        assert!(!bad, "console error: {l}");
    }
}
