//! `tasks-app`: the course's tasks service (Module 18, `serve.py`) as a small HTTP/1.1 server
//! written against the Rust standard library only, so that `cutover demo` can build it from
//! scratch in a second or two.
//!
//! Routes:
//!
//! - `GET /health` → `200 {"status":"ok","version":"<APP_VERSION>"}`, or
//!   `500 {"status":"broken",...}` when `BREAK=1` (the lab's stand-in for "starts but is broken").
//! - `GET /tasks` → `[{"id":1,"title":"…","done":false}]`.
//! - `POST /tasks` with `{"title":"…"}` → `201` and the new task; a bad body → `400 {"error":…}`.
//! - `GET /` → one plain-text line: app, version and `GREETING` if set.
//! - `GET /ws` with a WebSocket upgrade (RFC 6455) → an echo: every text or binary message comes
//!   back as it was sent; the `101` answer names the version in `X-App-Version`.
//!
//! Environment: `HOST` (default `127.0.0.1`), `PORT` (default `8000`), `APP_VERSION` (default
//! `dev`), `BREAK`, `GREETING` (or `GREETING_FILE`, a file holding it: a secret on the swarm
//! runtime), and `CUTOVER_DATA_DIR`: when set, tasks live in
//! `$CUTOVER_DATA_DIR/tasks.json` (cutover keeps that directory across releases); otherwise they
//! live in memory and die with the process.
//!
//! Signals: the standard library has no signal handling, so SIGTERM and Ctrl-C take their
//! default action and end the process at once. That is safe here: every write of `tasks.json`
//! goes to a temporary file that is renamed over the old one, so a kill can lose the request in
//! flight but never corrupt the file. (cutover stops sending traffic to an instance before it
//! stops it.)

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// Longest request line or header line accepted, in bytes.
const MAX_LINE: usize = 8 * 1024;
/// Most header lines accepted in one request.
const MAX_HEADERS: usize = 100;
/// Largest request body accepted, in bytes.
const MAX_BODY: usize = 64 * 1024;
/// Connections served at once; more are answered `503` and closed.
const MAX_CONNECTIONS: usize = 512;
/// An idle keep-alive connection (or a stalled client) is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest task title accepted, in characters.
const MAX_TITLE_CHARS: usize = 500;
/// Deepest JSON nesting accepted (the parser is recursive).
const MAX_JSON_DEPTH: usize = 32;

fn main() {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tasks-app: {e}");
            process::exit(2);
        }
    };
    let store = match Store::open(config.data_dir.clone()) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("tasks-app: {e}");
            process::exit(1);
        }
    };
    let listener = match TcpListener::bind((config.host.as_str(), config.port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "tasks-app: cannot listen on {}:{}: {e}",
                config.host, config.port
            );
            process::exit(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr.to_string(),
        Err(_) => format!("{}:{}", config.host, config.port),
    };
    log_line(&format!("tasks-app {} listening on {addr}", config.version));
    let app = App {
        version: config.version,
        broken: config.broken,
        greeting: config.greeting,
        store,
    };
    serve(listener, Arc::new(app));
}

/// Writes one line to stdout and flushes it. Never panics: a closed stdout must not take the
/// service down (`println!` would panic on a broken pipe).
fn log_line(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------
// Configuration and application state
// ---------------------------------------------------------------------------------------------

struct Config {
    host: String,
    port: u16,
    version: String,
    broken: bool,
    greeting: Option<String>,
    data_dir: Option<PathBuf>,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let var = |name: &str| env::var(name).ok().filter(|v| !v.is_empty());
        let port = match var("PORT") {
            None => 8000,
            Some(raw) => raw
                .trim()
                .parse::<u16>()
                .map_err(|_| format!("PORT={raw:?} is not a port number (0-65535)"))?,
        };
        Ok(Config {
            host: var("HOST").unwrap_or_else(|| "127.0.0.1".to_string()),
            port,
            version: var("APP_VERSION").unwrap_or_else(|| "dev".to_string()),
            broken: matches!(var("BREAK").as_deref(), Some("1" | "true")),
            // Or from the file `GREETING_FILE` names (a Swarm secret: /run/secrets/GREETING).
            greeting: match (var("GREETING"), var("GREETING_FILE")) {
                (Some(g), _) => Some(g),
                (None, Some(file)) => Some(
                    std::fs::read_to_string(&file)
                        .map_err(|e| format!("GREETING_FILE={file}: {e}"))?
                        .trim_end()
                        .to_string(),
                ),
                (None, None) => None,
            },
            data_dir: var("CUTOVER_DATA_DIR").map(PathBuf::from),
        })
    }
}

struct App {
    version: String,
    broken: bool,
    greeting: Option<String>,
    store: Store,
}

#[derive(Clone, Debug, PartialEq)]
struct Task {
    id: u64,
    title: String,
    done: bool,
}

impl Task {
    fn to_json(&self) -> String {
        format!(
            r#"{{"id":{},"title":{},"done":{}}}"#,
            self.id,
            json_string(&self.title),
            self.done
        )
    }

    fn from_json(value: &Json) -> Result<Task, String> {
        let id = match value.get("id") {
            Some(Json::Num(n)) if n.fract() == 0.0 && *n >= 0.0 && *n <= 9.0e15 => *n as u64,
            _ => return Err("a task needs a non-negative integer \"id\"".to_string()),
        };
        let title = match value.get("title") {
            Some(Json::Str(s)) => s.clone(),
            _ => return Err(format!("task {id} needs a string \"title\"")),
        };
        let done = match value.get("done") {
            None => false,
            Some(Json::Bool(b)) => *b,
            Some(_) => return Err(format!("task {id}: \"done\" must be true or false")),
        };
        Ok(Task { id, title, done })
    }
}

fn tasks_to_json(tasks: &[Task], pretty: bool) -> String {
    let sep = if pretty { ",\n  " } else { "," };
    let items: Vec<String> = tasks.iter().map(Task::to_json).collect();
    if pretty && !items.is_empty() {
        format!("[\n  {}\n]\n", items.join(sep))
    } else {
        format!("[{}]", items.join(sep))
    }
}

/// Where tasks live: `tasks.json` in a data directory, or memory.
///
/// With a file, every operation reads it afresh, so two instances of the app that share the
/// directory (the old and the new version during a blue-green cutover) see each other's writes.
struct Store {
    file: Option<PathBuf>,
    memory: Mutex<Vec<Task>>,
}

impl Store {
    fn open(data_dir: Option<PathBuf>) -> Result<Store, String> {
        let file = match data_dir {
            None => None,
            Some(dir) => {
                fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
                Some(dir.join("tasks.json"))
            }
        };
        let store = Store {
            file,
            memory: Mutex::new(Vec::new()),
        };
        // Refuse to start on a corrupt file rather than overwrite it on the first POST.
        store.list()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Task>> {
        // A handler never panics while holding the lock, but a poisoned lock must not take
        // every later request down with it.
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load(&self, memory: &[Task]) -> Result<Vec<Task>, String> {
        let Some(file) = &self.file else {
            return Ok(memory.to_vec());
        };
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let bad = |why: String| format!("{} is not a tasks file: {why}", file.display());
        match parse_json(&text).map_err(bad)? {
            Json::Arr(items) => items
                .iter()
                .map(Task::from_json)
                .collect::<Result<_, _>>()
                .map_err(bad),
            _ => Err(bad("expected a JSON array".to_string())),
        }
    }

    fn list(&self) -> Result<Vec<Task>, String> {
        let memory = self.lock();
        self.load(&memory)
    }

    fn add(&self, title: String) -> Result<Task, String> {
        let mut memory = self.lock();
        let mut tasks = self.load(&memory)?;
        let id = tasks.iter().map(|t| t.id).max().unwrap_or(0) + 1;
        let task = Task {
            id,
            title,
            done: false,
        };
        tasks.push(task.clone());
        match &self.file {
            None => *memory = tasks,
            Some(file) => {
                // Write a sibling temporary file, then rename it over the old one: a reader (or
                // a kill) sees the old list or the new one, never half of one.
                let tmp = file.with_extension(format!("json.tmp.{}", process::id()));
                let write = || -> io::Result<()> {
                    let mut f = fs::File::create(&tmp)?;
                    f.write_all(tasks_to_json(&tasks, true).as_bytes())?;
                    f.sync_all()?;
                    fs::rename(&tmp, file)
                };
                if let Err(e) = write() {
                    let _ = fs::remove_file(&tmp);
                    return Err(format!("cannot write {}: {e}", file.display()));
                }
            }
        }
        Ok(task)
    }
}

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: Option<&'static str>,
}

impl Response {
    fn json(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            body,
            allow: None,
        }
    }

    fn text(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
            allow: None,
        }
    }

    fn error(status: u16, message: &str) -> Response {
        Response::json(status, format!(r#"{{"error":{}}}"#, json_string(message)))
    }

    fn method_not_allowed(allow: &'static str) -> Response {
        Response {
            allow: Some(allow),
            ..Response::error(405, &format!("method not allowed; use {allow}"))
        }
    }
}

fn route(app: &App, req: &Request) -> Response {
    let path = req.target.split('?').next().unwrap_or("");
    let get = matches!(req.method.as_str(), "GET" | "HEAD");
    match path {
        "/" if get => {
            let line = match &app.greeting {
                Some(greeting) => format!("tasks-app {}: {greeting}\n", app.version),
                None => format!("tasks-app {}\n", app.version),
            };
            Response::text(200, line)
        }
        "/health" if get => {
            let (status, word) = if app.broken {
                (500, "broken")
            } else {
                (200, "ok")
            };
            Response::json(
                status,
                format!(
                    r#"{{"status":"{word}","version":{}}}"#,
                    json_string(&app.version)
                ),
            )
        }
        "/tasks" if get => match app.store.list() {
            Ok(tasks) => Response::json(200, tasks_to_json(&tasks, false)),
            Err(e) => Response::error(500, &e),
        },
        "/tasks" if req.method == "POST" => match parse_new_task(&req.body) {
            Err(e) => Response::error(400, &e),
            Ok(title) => match app.store.add(title) {
                Ok(task) => Response::json(201, task.to_json()),
                Err(e) => Response::error(500, &e),
            },
        },
        "/" | "/health" => Response::method_not_allowed("GET, HEAD"),
        "/tasks" => Response::method_not_allowed("GET, HEAD, POST"),
        _ => Response::error(404, &format!("no route for {path}")),
    }
}

/// Reads the title out of a `POST /tasks` body such as `{"title":"buy milk"}`.
fn parse_new_task(body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Err(r#"empty body; send {"title":"..."}"#.to_string());
    }
    let value = parse_json(text).map_err(|e| format!("body is not JSON: {e}"))?;
    if !matches!(value, Json::Obj(_)) {
        return Err(r#"body must be a JSON object like {"title":"..."}"#.to_string());
    }
    let title = match value.get("title") {
        Some(Json::Str(s)) => s.trim().to_string(),
        Some(_) => return Err("\"title\" must be a string".to_string()),
        None => return Err(r#"missing "title"; send {"title":"..."}"#.to_string()),
    };
    if title.is_empty() {
        return Err("\"title\" must not be empty".to_string());
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(format!(
            "\"title\" is longer than {MAX_TITLE_CHARS} characters"
        ));
    }
    Ok(title)
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    minor: u8,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn connection_has(&self, token: &str) -> bool {
        self.header("connection")
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection stays open after the response.
    fn keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.connection_has("keep-alive")
        } else {
            !self.connection_has("close")
        }
    }
}

#[derive(Debug)]
enum HttpError {
    /// The connection failed, timed out or the client went away mid-request: nothing to answer.
    Io,
    /// The request is wrong: answer with this status and message, then close.
    Status(u16, String),
}

impl From<io::Error> for HttpError {
    fn from(_: io::Error) -> Self {
        HttpError::Io
    }
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::Status(400, message.into())
}

/// Reads one line (up to `\n`, without the line ending) of at most `MAX_LINE` bytes.
/// `Ok(None)` is a clean end of stream before any byte of the line.
fn read_line<R: BufRead>(
    reader: &mut R,
    status_if_long: u16,
) -> Result<Option<Vec<u8>>, HttpError> {
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        if line.len() + chunk.len() > MAX_LINE + 2 {
            return Err(HttpError::Status(status_if_long, "line too long".into()));
        }
        line.extend_from_slice(chunk);
        let used = chunk.len();
        reader.consume(used);
        if found {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads one request. `Ok(None)`: the client closed the connection between requests.
fn read_request<R: BufRead>(reader: &mut R) -> Result<Option<Request>, HttpError> {
    // A client may send an empty line before a request (RFC 9112 §2.2): skip a few.
    let mut line = None;
    for _ in 0..4 {
        match read_line(reader, 414)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => {
                line = Some(l);
                break;
            }
        }
    }
    let line = line.ok_or_else(|| bad("expected a request line"))?;
    let line = String::from_utf8(line).map_err(|_| bad("request line is not UTF-8"))?;
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => {
            return Err(bad(
                "malformed request line; expected METHOD /path HTTP/1.1",
            ))
        }
    };
    if !is_token(method) {
        return Err(bad("malformed method"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad(
            "malformed request target; expected a path starting with /",
        ));
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        v if v.len() == 8
            && v.starts_with("HTTP/")
            && v.as_bytes()[5].is_ascii_digit()
            && v.as_bytes()[6] == b'.'
            && v.as_bytes()[7].is_ascii_digit() =>
        {
            return Err(HttpError::Status(
                505,
                format!("{v} is not supported; use HTTP/1.1"),
            ))
        }
        _ => return Err(bad("malformed HTTP version")),
    };

    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, 431)?.ok_or(HttpError::Io)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::Status(431, "too many header fields".into()));
        }
        let line = String::from_utf8(line).map_err(|_| bad("header is not UTF-8"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("malformed header; expected Name: value"))?;
        if !is_token(name) {
            return Err(bad(format!("malformed header name {name:?}")));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }

    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        minor,
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").next().is_some() {
        return Err(HttpError::Status(
            501,
            "Transfer-Encoding is not supported; send Content-Length".into(),
        ));
    }
    let mut length: Option<u64> = None;
    for value in req.header("content-length") {
        for item in value.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("malformed Content-Length"));
            }
            let n: u64 = item.parse().map_err(|_| bad("malformed Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY as u64 {
        return Err(HttpError::Status(
            413,
            format!("body larger than {MAX_BODY} bytes"),
        ));
    }
    req.body = vec![0; length as usize];
    reader.read_exact(&mut req.body)?;
    Ok(Some(req))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Serialises a response. `head` leaves the body out (a HEAD request); `keep_alive` and
/// `minor` decide the `Connection` header.
fn encode_response(resp: &Response, head: bool, keep_alive: bool, minor: u8) -> Vec<u8> {
    let mut out = String::new();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    if let Some(allow) = resp.allow {
        let _ = write!(out, "Allow: {allow}\r\n");
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    } else if minor == 0 {
        out.push_str("Connection: keep-alive\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(resp.body.as_bytes());
    }
    bytes
}

/// Accepts connections forever, one thread per connection.
fn serve(listener: TcpListener, app: Arc<App>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off a little, never exit.
                eprintln!("tasks-app: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let resp = Response::error(503, "too many connections");
            reject(stream, &resp);
            continue;
        }
        let app = Arc::clone(&app);
        let guard = ActiveGuard(Arc::clone(&active));
        let spawned = thread::Builder::new()
            .name("tasks-app-conn".into())
            .spawn(move || {
                let _guard = guard;
                handle_connection(stream, &app);
            });
        if let Err(e) = spawned {
            // The closure (and with it the stream and the guard) was dropped.
            eprintln!("tasks-app: cannot start a connection thread: {e}");
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers `resp` and closes, reading a little of what the client sent so that the close does
/// not turn into a reset that destroys the answer before the client reads it.
fn reject(mut stream: TcpStream, resp: &Response) {
    let _ = stream.write_all(&encode_response(resp, false, false, 1));
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

fn handle_connection(stream: TcpStream, app: &App) {
    let peer = stream
        .peer_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_else(|_| "-".to_string());
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut reader = match stream.try_clone() {
        Ok(s) => BufReader::new(s),
        Err(_) => return,
    };
    let mut writer = stream;
    loop {
        match read_request(&mut reader) {
            Ok(None) | Err(HttpError::Io) => return,
            Err(HttpError::Status(status, message)) => {
                log_line(&format!("{peer} bad request: {message} -> {status}"));
                reject(writer, &Response::error(status, &message));
                return;
            }
            Ok(Some(req)) if is_websocket(&req) => {
                log_line(&format!(
                    "{peer} \"{} {} HTTP/1.1\" 101",
                    req.method, req.target
                ));
                websocket(reader, writer, &req, app);
                return;
            }
            Ok(Some(req)) => {
                let resp = route(app, &req);
                let keep_alive = req.keep_alive();
                log_line(&format!(
                    "{peer} \"{} {} HTTP/1.{}\" {}",
                    req.method, req.target, req.minor, resp.status
                ));
                let bytes = encode_response(&resp, req.method == "HEAD", keep_alive, req.minor);
                if writer
                    .write_all(&bytes)
                    .and_then(|_| writer.flush())
                    .is_err()
                    || !keep_alive
                {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket echo (RFC 6455)
// ---------------------------------------------------------------------------------------------

/// Largest WebSocket message accepted, in bytes.
const MAX_MESSAGE: u64 = 64 * 1024;

fn is_websocket(req: &Request) -> bool {
    req.target.split('?').next() == Some("/ws")
        && req.method == "GET"
        && req.minor == 1
        && req.connection_has("upgrade")
        && req
            .header("upgrade")
            .any(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the handshake, then echoes messages until either side closes.
fn websocket(mut reader: BufReader<TcpStream>, mut writer: TcpStream, req: &Request, app: &App) {
    let Some(key) = req.header("sec-websocket-key").next().map(str::trim) else {
        reject(
            writer,
            &Response::error(400, "Sec-WebSocket-Key is missing"),
        );
        return;
    };
    let mut digest_input = key.as_bytes().to_vec();
    digest_input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64(&sha1(&digest_input));
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nX-App-Version: {}\r\n\r\n",
        app.version
    );
    if writer.write_all(head.as_bytes()).is_err() {
        return;
    }
    // A WebSocket stays open as long as its peers want.
    let _ = reader.get_ref().set_read_timeout(None);
    loop {
        let Ok((opcode, payload)) = read_frame(&mut reader) else {
            return;
        };
        let answer = match opcode {
            0x1 | 0x2 => frame(opcode, &payload),
            0x9 => frame(0xA, &payload),
            0x8 => {
                let _ = writer.write_all(&frame(0x8, &payload[..payload.len().min(2)]));
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            _ => continue,
        };
        if writer.write_all(&answer).is_err() {
            return;
        }
    }
}

/// Reads one whole frame from the client (which masks every frame); fragments are not
/// reassembled (their opcode 0 is ignored by the echo).
fn read_frame<R: Read>(reader: &mut R) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    reader.read_exact(&mut head)?;
    let opcode = head[0] & 0x0f;
    let mut len = u64::from(head[1] & 0x7f);
    if len == 126 {
        let mut ext = [0u8; 2];
        reader.read_exact(&mut ext)?;
        len = u64::from(u16::from_be_bytes(ext));
    } else if len == 127 {
        let mut ext = [0u8; 8];
        reader.read_exact(&mut ext)?;
        len = u64::from_be_bytes(ext);
    }
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too large",
        ));
    }
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        reader.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok((opcode, payload))
}

/// One final, unmasked frame (a server never masks).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// SHA-1 (FIPS 180-4), which the WebSocket handshake requires.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A minimal JSON reader and string writer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// The value of `key` in an object (the last one, if repeated).
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Quotes and escapes `s` as a JSON string.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses one JSON document (RFC 8259), with at most `MAX_JSON_DEPTH` levels of nesting.
fn parse_json(text: &str) -> Result<Json, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let value = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected text after the JSON value"));
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("{what} at byte {}", self.i)
    }

    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(value)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_JSON_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.ws();
        match self.s.get(self.i) {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.eat(b'}') {
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return Err(self.err("expected a string key"));
                    }
                    let key = self.string()?;
                    self.ws();
                    if !self.eat(b':') {
                        return Err(self.err("expected ':'"));
                    }
                    let value = self.value(depth + 1)?;
                    fields.push((key, value));
                    self.ws();
                    if self.eat(b'}') {
                        return Ok(Json::Obj(fields));
                    }
                    if !self.eat(b',') {
                        return Err(self.err("expected ',' or '}'"));
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b']') {
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b']') {
                        return Ok(Json::Arr(items));
                    }
                    if !self.eat(b',') {
                        return Err(self.err("expected ',' or ']'"));
                    }
                }
            }
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.s.get(self.i), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        self.eat(b'-');
        if self.eat(b'0') {
            // No leading zeros.
        } else if self.digits() == 0 {
            return Err(self.err("invalid number"));
        }
        if self.eat(b'.') && self.digits() == 0 {
            return Err(self.err("invalid number"));
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        // The slice is ASCII digits and signs, so it is valid UTF-8.
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        text.parse::<f64>()
            .map(Json::Num)
            .map_err(|_| self.err("invalid number"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("truncated \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.err("bad \\u escape"))?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.err("bad \\u escape"));
        }
        let n = u32::from_str_radix(text, 16).map_err(|_| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(n)
    }

    /// Parses a string; `self.i` is at the opening quote.
    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                return Err(self.err("unterminated string"));
            };
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if !(self.eat(b'\\') && self.eat(b'u')) {
                                    return Err(self.err("unpaired surrogate"));
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("unpaired surrogate"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or_else(|| self.err("unpaired surrogate"))?
                        }
                        _ => return Err(self.err("invalid escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return Err(self.err("control character in string")),
                _ => out.push(b),
            }
        }
        // The input is a &str and escapes add whole chars, so this cannot fail.
        String::from_utf8(out).map_err(|_| self.err("invalid UTF-8 in string"))
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    #[test]
    fn websocket_accept_is_rfc_6455_s() {
        // The example of RFC 6455 section 1.3.
        let mut input = b"dGhlIHNhbXBsZSBub25jZQ==".to_vec();
        input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        assert_eq!(
            super::base64(&super::sha1(&input)),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"a"), "YQ==");
    }

    use super::*;

    fn parse(raw: &str) -> Result<Option<Request>, HttpError> {
        read_request(&mut BufReader::new(raw.as_bytes()))
    }

    fn status_of(raw: &str) -> u16 {
        match parse(raw) {
            Err(HttpError::Status(s, _)) => s,
            other => panic!("expected an error status, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_request_with_a_body() {
        let req = parse("POST /tasks?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.target, "/tasks?x=1");
        assert_eq!(req.minor, 1);
        assert_eq!(req.body, b"hello");
        assert!(req.keep_alive());
    }

    #[test]
    fn keep_alive_rules() {
        let close = parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!close.keep_alive());
        let old = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!old.keep_alive());
        let old_ka = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(old_ka.keep_alive());
    }

    #[test]
    fn reads_pipelined_requests_and_end_of_stream() {
        let raw = "GET /a HTTP/1.1\n\nGET /b HTTP/1.1\r\n\r\n";
        let mut reader = BufReader::new(raw.as_bytes());
        assert_eq!(read_request(&mut reader).unwrap().unwrap().target, "/a");
        assert_eq!(read_request(&mut reader).unwrap().unwrap().target, "/b");
        assert!(read_request(&mut reader).unwrap().is_none());
    }

    #[test]
    fn rejects_malformed_requests() {
        assert_eq!(status_of("GARBAGE\r\n\r\n"), 400);
        assert_eq!(status_of("GET  / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of("GET tasks HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of("GET / HTTP/9\r\n\r\n"), 400);
        assert_eq!(status_of("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status_of("G(T / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of("GET / HTTP/1.1\r\nno colon\r\n\r\n"), 400);
        assert_eq!(status_of("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400);
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"),
            413
        );
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE + 10));
        assert_eq!(status_of(&long), 414);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status_of(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
        assert_eq!(status_of("\r\n\r\n\r\n\r\n\r\n"), 400);
    }

    #[test]
    fn a_truncated_request_is_an_io_error_not_a_panic() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost"),
            Err(HttpError::Io)
        ));
        assert!(matches!(
            parse("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
            Err(HttpError::Io)
        ));
        assert!(parse("").unwrap().is_none());
    }

    #[test]
    fn json_round_trips_strings() {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} é 😀";
        let encoded = json_string(nasty);
        assert_eq!(parse_json(&encoded).unwrap(), Json::Str(nasty.to_string()));
        assert_eq!(
            parse_json(r#""\u00e9\ud83d\ude00\/""#).unwrap(),
            Json::Str("é😀/".into())
        );
    }

    #[test]
    fn json_parses_values_and_rejects_bad_ones() {
        let v = parse_json(r#" {"a": [1, -2.5e3, true, false, null], "b": {}} "#).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&Json::Arr(vec![
                Json::Num(1.0),
                Json::Num(-2500.0),
                Json::Bool(true),
                Json::Bool(false),
                Json::Null
            ]))
        );
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1.",
            "-",
            "tru",
            "\"abc",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"a\nb\"",
            "[1] 2",
            &"[".repeat(100),
        ] {
            assert!(parse_json(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn new_task_bodies() {
        assert_eq!(
            parse_new_task(br#"{"title":"buy milk"}"#).unwrap(),
            "buy milk"
        );
        assert_eq!(
            parse_new_task(br#"{"title":"  spaced  ","extra":1}"#).unwrap(),
            "spaced"
        );
        for (body, needle) in [
            (&b""[..], "empty body"),
            (b"not json", "not JSON"),
            (b"[]", "JSON object"),
            (br#"{}"#, "missing \"title\""),
            (br#"{"title":5}"#, "must be a string"),
            (br#"{"title":"   "}"#, "must not be empty"),
            (b"\xff\xfe", "UTF-8"),
        ] {
            let err = parse_new_task(body).unwrap_err();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
        let long = format!(r#"{{"title":"{}"}}"#, "x".repeat(MAX_TITLE_CHARS + 1));
        assert!(parse_new_task(long.as_bytes()).is_err());
    }

    #[test]
    fn task_json_shape() {
        let t = Task {
            id: 1,
            title: "a \"b\"".into(),
            done: false,
        };
        assert_eq!(t.to_json(), r#"{"id":1,"title":"a \"b\"","done":false}"#);
        assert_eq!(tasks_to_json(&[], false), "[]");
        let back = Task::from_json(&parse_json(&t.to_json()).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = env::temp_dir().join(format!(
            "tasks-app-test-{tag}-{}-{}",
            process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn file_store_persists_across_opens_and_refuses_a_corrupt_file() {
        let dir = temp_dir("store");
        let store = Store::open(Some(dir.clone())).unwrap();
        assert_eq!(store.add("one".into()).unwrap().id, 1);
        assert_eq!(store.add("two".into()).unwrap().id, 2);
        let again = Store::open(Some(dir.clone())).unwrap();
        let titles: Vec<String> = again.list().unwrap().into_iter().map(|t| t.title).collect();
        assert_eq!(titles, ["one", "two"]);
        // A second store on the same directory (the other colour of a blue-green pair) sees
        // the first one's writes and does not reuse an id.
        assert_eq!(store.add("three".into()).unwrap().id, 3);
        assert_eq!(again.add("four".into()).unwrap().id, 4);

        fs::write(dir.join("tasks.json"), "{oops").unwrap();
        let err = Store::open(Some(dir.clone())).err().unwrap();
        assert!(err.contains("is not a tasks file"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// Sends raw bytes on `stream` and reads one response: (status, headers, body).
    fn exchange(
        stream: &mut TcpStream,
        reader: &mut BufReader<TcpStream>,
        raw: &str,
    ) -> (u16, Vec<String>, String) {
        stream.write_all(raw.as_bytes()).unwrap();
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                length = v.parse().unwrap();
            }
            headers.push(line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (status, headers, String::from_utf8(body).unwrap())
    }

    fn start(app: App) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || serve(listener, Arc::new(app)));
        addr
    }

    fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        (stream, reader)
    }

    #[test]
    fn serves_real_requests_over_tcp() {
        let dir = temp_dir("server");
        let addr = start(App {
            version: "abc123".into(),
            broken: false,
            greeting: Some("hello".into()),
            store: Store::open(Some(dir.clone())).unwrap(),
        });
        let (mut s, mut r) = connect(addr);

        // Several requests on one keep-alive connection.
        let (status, headers, body) =
            exchange(&mut s, &mut r, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"status":"ok","version":"abc123"}"#);
        assert!(headers.contains(&"Content-Type: application/json".to_string()));

        let (status, _, body) = exchange(&mut s, &mut r, "GET /tasks HTTP/1.1\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, "[]"));

        let post = r#"{"title":"ship it"}"#;
        let raw = format!(
            "POST /tasks HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{post}",
            post.len()
        );
        let (status, _, body) = exchange(&mut s, &mut r, &raw);
        assert_eq!(status, 201);
        assert_eq!(body, r#"{"id":1,"title":"ship it","done":false}"#);

        let (status, _, body) = exchange(&mut s, &mut r, "GET /tasks HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200);
        assert_eq!(body, r#"[{"id":1,"title":"ship it","done":false}]"#);
        assert!(fs::read_to_string(dir.join("tasks.json"))
            .unwrap()
            .contains("ship it"));

        let (status, _, body) = exchange(&mut s, &mut r, "GET / HTTP/1.1\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, "tasks-app abc123: hello\n"));

        let raw = "POST /tasks HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let (status, _, body) = exchange(&mut s, &mut r, raw);
        assert_eq!(status, 400);
        assert!(body.contains("missing"), "{body}");

        let (status, headers, _) = exchange(&mut s, &mut r, "DELETE /tasks HTTP/1.1\r\n\r\n");
        assert_eq!(status, 405);
        assert!(headers.contains(&"Allow: GET, HEAD, POST".to_string()));

        let (status, _, _) = exchange(&mut s, &mut r, "GET /nope HTTP/1.1\r\n\r\n");
        assert_eq!(status, 404);

        // `Connection: close` is honoured: the server answers, then closes.
        let (status, headers, _) = exchange(
            &mut s,
            &mut r,
            "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200);
        assert!(headers.contains(&"Connection: close".to_string()));
        let mut rest = Vec::new();
        assert_eq!(r.read_to_end(&mut rest).unwrap(), 0);

        // A malformed request gets a 400 and a closed connection; the server lives on.
        let (mut s, mut r) = connect(addr);
        let (status, _, body) = exchange(&mut s, &mut r, "BLAH\r\n\r\n");
        assert_eq!(status, 400);
        assert!(body.contains("malformed"), "{body}");
        let (mut s, mut r) = connect(addr);
        let (status, _, _) = exchange(&mut s, &mut r, "GET /health HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn break_makes_health_fail() {
        let addr = start(App {
            version: "dev".into(),
            broken: true,
            greeting: None,
            store: Store::open(None).unwrap(),
        });
        let (mut s, mut r) = connect(addr);
        let (status, _, body) = exchange(&mut s, &mut r, "GET /health HTTP/1.1\r\n\r\n");
        assert_eq!(status, 500);
        assert_eq!(body, r#"{"status":"broken","version":"dev"}"#);
        let (status, _, body) = exchange(&mut s, &mut r, "GET / HTTP/1.1\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, "tasks-app dev\n"));
    }
}
