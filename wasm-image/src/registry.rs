//! A small client of the OCI distribution API, enough to push an image or artifact: blobs
//! (checked with `HEAD`, uploaded monolithically with `POST` then `PUT`), then the manifest
//! by tag, after the API's version check `GET /v2/`.
//!
//! It speaks plain HTTP, without authentication: it is for local and test registries. A
//! registry that needs TLS or a login gets an error saying so and pointing at `skopeo copy`
//! of a built tarball, which handles both.
//!
//! ```text
//! let client = wasm_image::registry::Client::new("127.0.0.1:5000");
//! let digest = client.push_blob("hello", b"{}")?;
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ureq::http::{Response, StatusCode};

use crate::error::Error;
use crate::layout::{sha256_digest, ManifestAndBlobs};

/// What to do when plain HTTP without a login is not enough.
const PLAIN_HTTP_ONLY: &str = "wasm-image push speaks plain HTTP to a registry without \
authentication; for any other registry, build a tarball (wasm-image build ... -o out.tar) \
and copy it with skopeo";

/// The longest part of a registry's error body an error message quotes.
const MAX_BODY_IN_ERROR: usize = 1000;

/// `HOST[:PORT]/REPO[:TAG]`: where `push` sends an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `HOST[:PORT]`, e.g. `127.0.0.1:5000`.
    pub host: String,
    /// The repository inside the registry, e.g. `library/hello-wasm`.
    pub repository: String,
    /// The tag; `latest` when the reference names none.
    pub tag: String,
}

impl Reference {
    /// Parses `HOST[:PORT]/REPO[:TAG]`. The first component must be a host (it has a `.` or
    /// a `:`, or is `localhost`), as in Docker's references; a digest (`@sha256:…`) is
    /// refused, since a push names a tag.
    pub fn parse(name: &str) -> Result<Reference, Error> {
        let invalid = |problem: String| {
            Error::Invalid(format!(
                "`{name}` {problem}; push needs HOST[:PORT]/REPO[:TAG], e.g. 127.0.0.1:5000/hello-wasm:v1"
            ))
        };
        if name.contains('@') {
            return Err(invalid("names a digest, not a tag".into()));
        }
        let (host, rest) = name
            .split_once('/')
            .filter(|(host, _)| looks_like_host(host))
            .ok_or_else(|| invalid("names no registry host".into()))?;
        // Past the host no ':' belongs to a port, so one in the last component starts the tag.
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, tag),
            _ => (rest, "latest"),
        };
        if !valid_repository(repository) {
            return Err(invalid(format!(
                "has the repository `{repository}`, which is not lowercase letters and digits \
                 in components joined by '/', '.', '_' or '-'"
            )));
        }
        if !valid_tag(tag) {
            return Err(invalid(format!(
                "has the tag `{tag}`, which is not up to 128 letters, digits, '_', '.' or '-' \
                 (not starting with '.' or '-')"
            )));
        }
        Ok(Reference {
            host: host.to_string(),
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.host, self.repository, self.tag)
    }
}

fn looks_like_host(host: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    !host.is_empty()
        && host.chars().all(allowed)
        && (host == "localhost" || host.contains('.') || host.contains(':'))
}

/// The distribution spec's repository grammar: `[a-z0-9]+([._-][a-z0-9]+)*` components
/// joined by `/` (the spec allows `__` and runs of `-` too; they are rare enough to refuse).
fn valid_repository(repository: &str) -> bool {
    let component = |part: &str| {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        part.split(['.', '_', '-'])
            .all(|piece| !piece.is_empty() && piece.chars().all(alnum))
    };
    !repository.is_empty() && repository.split('/').all(component)
}

fn valid_tag(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-')
}

/// A client of one registry, `HOST[:PORT]`, over plain HTTP without authentication.
pub struct Client {
    host: String,
    agent: ureq::Agent,
    /// The registry answered `GET /v2/` (see [`Client::check`]).
    checked: AtomicBool,
}

impl Client {
    /// A client of the registry at `host` (`HOST[:PORT]`, e.g. `127.0.0.1:5000`). Nothing is
    /// sent until a push.
    pub fn new(host: &str) -> Client {
        let config = ureq::Agent::config_builder()
            // Statuses are this client's to interpret: a 404 on HEAD is an answer, and an
            // error should quote the registry's body.
            .http_status_as_error(false)
            // Redirects are looked at, not followed: ureq would turn a redirected PUT into a
            // GET, and a redirect to https means the registry needs TLS.
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(600)))
            .user_agent(concat!("wasm-image/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            host: host.to_string(),
            agent: ureq::Agent::new_with_config(config),
            checked: AtomicBool::new(false),
        }
    }

    /// Pushes every blob of `image`, then its manifest as `repo:tag`; returns the manifest's
    /// digest as the registry reported it.
    pub fn push(&self, repo: &str, tag: &str, image: &ManifestAndBlobs) -> Result<String, Error> {
        for blob in &image.blobs {
            self.push_blob(repo, blob)?;
        }
        self.push_manifest(repo, tag, image.media_type, &image.manifest)
    }

    /// Uploads `blob` into `repo` unless the registry has it already; returns its digest,
    /// `sha256:<hex>`.
    pub fn push_blob(&self, repo: &str, blob: &[u8]) -> Result<String, Error> {
        self.check(repo)?;
        let digest = sha256_digest(blob);
        if !self.has_blob(repo, &digest)? {
            let location = self.start_upload(repo)?;
            self.finish_upload(repo, &location, &digest, blob)?;
        }
        Ok(digest)
    }

    /// Puts `manifest` (whose media type is `media_type`) as `repo:tag`, or `repo@digest`
    /// when `tag` is a digest; returns the digest the registry reports in
    /// `Docker-Content-Digest`, after checking it is the digest of the bytes sent. Push the
    /// blobs it names first: a registry refuses a manifest whose blobs it lacks.
    pub fn push_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        manifest: &[u8],
    ) -> Result<String, Error> {
        self.check(repo)?;
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let request = self.agent.put(&url).header("Content-Type", media_type);
        let response = self.answer("PUT", &url, repo, request.send(manifest))?;
        let sent = sha256_digest(manifest);
        match header(&response, "Docker-Content-Digest") {
            Some(reported) if reported != sent => Err(Error::Registry(format!(
                "PUT {url}: the registry stored the manifest as {reported}, but the bytes sent \
                 have the digest {sent}; the registry may rewrite manifests, so push with skopeo \
                 instead"
            ))),
            // The header is only a SHOULD of the spec; without it, trust our own digest.
            _ => Ok(sent),
        }
    }

    /// `GET /v2/`, once per client: the API's version check, which tells a registry that
    /// needs a login (401) or TLS (a 400 whose body says so) before any upload, where a
    /// `HEAD` would carry no body to tell by.
    fn check(&self, repo: &str) -> Result<(), Error> {
        if self.checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let url = self.url("/v2/");
        self.answer("GET", &url, repo, self.agent.get(&url).call())?;
        self.checked.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    fn has_blob(&self, repo: &str, digest: &str) -> Result<bool, Error> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let response = self.send("HEAD", &url, repo, self.agent.head(&url).call())?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        // A registry may redirect a blob it has to its storage backend.
        if status.is_success() || status.is_redirection() {
            return Ok(true);
        }
        Err(self.refused("HEAD", &url, repo, response))
    }

    /// Opens an upload session; returns its `Location`.
    fn start_upload(&self, repo: &str) -> Result<String, Error> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let response = self.answer("POST", &url, repo, self.agent.post(&url).send_empty())?;
        header(&response, "Location").ok_or_else(|| {
            Error::Registry(format!(
                "POST {url}: the registry opened an upload but sent no Location header to \
                 upload to; it does not follow the OCI distribution API"
            ))
        })
    }

    /// Sends the whole blob to the upload session at `location`, closing it.
    fn finish_upload(
        &self,
        repo: &str,
        location: &str,
        digest: &str,
        blob: &[u8],
    ) -> Result<(), Error> {
        let url = self.upload_url(repo, location, digest)?;
        let request = self
            .agent
            .put(&url)
            .header("Content-Type", "application/octet-stream");
        self.answer("PUT", &url, repo, request.send(blob))?;
        Ok(())
    }

    /// The URL that completes an upload: `location` (absolute, or relative to the registry)
    /// with the digest added to any query it already has.
    fn upload_url(&self, repo: &str, location: &str, digest: &str) -> Result<String, Error> {
        let base = if location.starts_with("http://") {
            location.to_string()
        } else if location.starts_with("https://") {
            let detail = format!("it sent the upload to {location}");
            return Err(self.needs_tls("POST", location, repo, &detail));
        } else if location.starts_with('/') {
            self.url(location)
        } else {
            self.url(&format!("/v2/{repo}/blobs/uploads/{location}"))
        };
        let separator = if base.contains('?') { '&' } else { '?' };
        Ok(format!(
            "{base}{separator}digest={}",
            digest.replace(':', "%3A")
        ))
    }

    /// A response with a 2xx status, or the error that explains the other.
    fn answer(
        &self,
        method: &str,
        url: &str,
        repo: &str,
        result: Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>, Error> {
        let response = self.send(method, url, repo, result)?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.refused(method, url, repo, response))
    }

    /// The response whatever its status, or the error for a request that got none.
    fn send(
        &self,
        method: &str,
        url: &str,
        repo: &str,
        result: Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>, Error> {
        result.map_err(|err| {
            if matches!(err, ureq::Error::TlsRequired | ureq::Error::Tls(_)) {
                return self.needs_tls(method, url, repo, &err.to_string());
            }
            if unreachable(&err) {
                return Error::Registry(format!(
                    "{method} {url}: {err}; is the registry up at {}?",
                    self.host
                ));
            }
            // Connected, but the answer was no HTTP: most likely a TLS-only port.
            Error::Registry(format!(
                "{method} {url}: {err}; does the registry at {} speak plain HTTP? \
                 {PLAIN_HTTP_ONLY}: {}",
                self.host,
                self.skopeo_hint(repo)
            ))
        })
    }

    /// The error for a response the request did not want: authentication and TLS get the
    /// advice to use skopeo, anything else the registry's own explanation.
    fn refused(
        &self,
        method: &str,
        url: &str,
        repo: &str,
        mut response: Response<ureq::Body>,
    ) -> Error {
        let status = response.status();
        if let Some(location) = header(&response, "Location").filter(|l| l.starts_with("https:")) {
            let detail = format!("it redirects to {location}");
            return self.needs_tls(method, url, repo, &detail);
        }
        let body = one_line_body(&mut response);
        // Go's TLS servers answer a plain request with this 400.
        if body.contains("HTTP request to an HTTPS server") {
            return self.needs_tls(method, url, repo, &body);
        }
        let status_text = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let status_text = status_text.trim_end();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Error::Registry(format!(
                "{method} {url}: {status_text}: the registry wants a login: {body}; \
                 {PLAIN_HTTP_ONLY}: {}",
                self.skopeo_hint(repo)
            ));
        }
        Error::Registry(format!(
            "{method} {url}: the registry answered {status_text}: {body}"
        ))
    }

    fn needs_tls(&self, method: &str, url: &str, repo: &str, detail: &str) -> Error {
        let detail = detail.trim_end_matches('.');
        Error::Registry(format!(
            "{method} {url}: the registry needs TLS (https): {detail}; {PLAIN_HTTP_ONLY}: {}",
            self.skopeo_hint(repo)
        ))
    }

    fn skopeo_hint(&self, repo: &str) -> String {
        format!(
            "skopeo copy oci-archive:out.tar docker://{}/{repo}:TAG",
            self.host
        )
    }
}

/// Whether the request never reached a server: nothing listens there, or no such host.
fn unreachable(err: &ureq::Error) -> bool {
    match err {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
                | std::io::ErrorKind::TimedOut
        ),
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_) => true,
        _ => false,
    }
}

fn header(response: &Response<ureq::Body>, name: &str) -> Option<String> {
    let value = response.headers().get(name)?;
    value.to_str().ok().map(str::to_string)
}

/// The registry's error body (JSON, in the distribution API) on one line, cut short if long.
fn one_line_body(response: &mut Response<ureq::Body>) -> String {
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|err| format!("(its body could not be read: {err})"));
    let mut line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return "(no body)".to_string();
    }
    if line.len() > MAX_BODY_IN_ERROR {
        let mut end = MAX_BODY_IN_ERROR;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{self, Format};
    use crate::test_support::{FakeRegistry, Reply};

    #[test]
    fn references_name_host_repository_and_tag() {
        let cases = [
            ("127.0.0.1:5000/hello:v1", ("127.0.0.1:5000", "hello", "v1")),
            ("localhost/a/b", ("localhost", "a/b", "latest")),
            (
                "registry.example/team/app-1.x_y:1.0-rc",
                ("registry.example", "team/app-1.x_y", "1.0-rc"),
            ),
        ];
        for (name, (host, repository, tag)) in cases {
            let reference = Reference::parse(name).unwrap();
            assert_eq!(
                (
                    reference.host.as_str(),
                    reference.repository.as_str(),
                    reference.tag.as_str()
                ),
                (host, repository, tag),
                "{name}"
            );
        }
        assert_eq!(
            Reference::parse("localhost:1/x").unwrap().to_string(),
            "localhost:1/x:latest"
        );
        let refused = [
            "hello:1",
            "library/hello",
            "127.0.0.1:5000/Hello",
            "127.0.0.1:5000/",
            "127.0.0.1:5000/a//b",
            "127.0.0.1:5000/a:",
            "127.0.0.1:5000/a:.x",
            "127.0.0.1:5000/a@sha256:00",
        ];
        for name in refused {
            let err = Reference::parse(name)
                .err()
                .unwrap_or_else(|| panic!("{name}"));
            assert!(err.to_string().contains("HOST[:PORT]/REPO[:TAG]"), "{err}");
        }
    }

    #[test]
    fn push_uploads_missing_blobs_then_the_manifest() {
        let registry = FakeRegistry::start(|request| match request.method.as_str() {
            "HEAD" => Reply::status(404),
            // A Location relative to the registry, with a query of its own.
            "POST" => Reply::status(202).header("Location", "/v2/hello/blobs/uploads/u1?_state=s"),
            "PUT" if request.path.contains("/manifests/") => {
                Reply::status(201).header("Docker-Content-Digest", &sha256_digest(&request.body))
            }
            _ => Reply::status(201),
        });
        let image = artifact::manifest_and_blobs(Format::WasmV1, "m.wasm", b"\0asm\x01\0\0\0");
        let digest = Client::new(&registry.host)
            .push("hello", "v1", &image)
            .unwrap();
        assert_eq!(digest, image.digest());

        let requests = registry.requests();
        let lines: Vec<String> = requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        let module = sha256_digest(b"\0asm\x01\0\0\0");
        let config_blob = artifact::config(Format::WasmV1, &module);
        let config = sha256_digest(&config_blob);
        let escaped = |digest: &str| digest.replace(':', "%3A");
        let expected = [
            "GET /v2/".to_string(),
            format!("HEAD /v2/hello/blobs/{config}"),
            "POST /v2/hello/blobs/uploads/".to_string(),
            format!(
                "PUT /v2/hello/blobs/uploads/u1?_state=s&digest={}",
                escaped(&config)
            ),
            format!("HEAD /v2/hello/blobs/{module}"),
            "POST /v2/hello/blobs/uploads/".to_string(),
            format!(
                "PUT /v2/hello/blobs/uploads/u1?_state=s&digest={}",
                escaped(&module)
            ),
            "PUT /v2/hello/manifests/v1".to_string(),
        ];
        assert_eq!(lines, expected);
        assert_eq!(requests[3].body, config_blob);
        assert_eq!(
            requests[3].header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(requests[6].body, b"\0asm\x01\0\0\0");
        assert_eq!(requests[7].body, image.manifest);
        assert_eq!(
            requests[7].header("content-type"),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
    }

    #[test]
    fn blobs_the_registry_has_are_not_sent_again() {
        let registry = FakeRegistry::start(|_| Reply::status(200));
        let digest = Client::new(&registry.host)
            .push_blob("hello", b"x")
            .unwrap();
        assert_eq!(digest, sha256_digest(b"x"));
        let requests = registry.requests();
        let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods, ["GET", "HEAD"]);
    }

    #[test]
    fn absolute_upload_locations_are_used_as_they_are() {
        let client = Client::new("127.0.0.1:1");
        let absolute = client
            .upload_url("r", "http://storage:9/up/1", "sha256:ab")
            .unwrap();
        assert_eq!(absolute, "http://storage:9/up/1?digest=sha256%3Aab");
        let relative = client.upload_url("r", "u2", "sha256:ab").unwrap();
        assert_eq!(
            relative,
            "http://127.0.0.1:1/v2/r/blobs/uploads/u2?digest=sha256%3Aab"
        );
        let err = client
            .upload_url("r", "https://storage/up", "sha256:ab")
            .err()
            .unwrap();
        assert!(err.to_string().contains("needs TLS"), "{err}");
    }

    #[test]
    fn a_refusal_names_method_url_status_and_the_registry_body() {
        let body = r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}"#;
        let registry = FakeRegistry::start(move |request| match request.method.as_str() {
            "GET" => Reply::status(200),
            _ => Reply::status(400).body(body),
        });
        let client = Client::new(&registry.host);
        let err = client
            .push_manifest("hello", "v1", "application/x", b"{}")
            .err()
            .unwrap();
        let expected = format!(
            "PUT http://{}/v2/hello/manifests/v1: the registry answered 400 Bad Request: {body}",
            registry.host
        );
        assert_eq!(err.to_string(), expected);
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn a_login_or_tls_registry_gets_the_skopeo_advice() {
        let replies = [
            Reply::status(401).body(r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#),
            Reply::status(400).body("Client sent an HTTP request to an HTTPS server.\n"),
            Reply::status(301).header("Location", "https://example/v2/"),
        ];
        for reply in replies {
            let registry = FakeRegistry::start(move |_| reply.clone());
            let err = Client::new(&registry.host)
                .push_blob("hello", b"x")
                .err()
                .unwrap();
            let message = err.to_string();
            let check = format!("GET http://{}/v2/: ", registry.host);
            assert!(message.starts_with(&check), "{message}");
            assert!(
                message.contains("speaks plain HTTP to a registry without authentication"),
                "{message}"
            );
            assert!(
                message.contains(&format!(
                    "skopeo copy oci-archive:out.tar docker://{}/hello:TAG",
                    registry.host
                )),
                "{message}"
            );
        }
    }

    #[test]
    fn a_manifest_stored_under_another_digest_is_an_error() {
        let registry = FakeRegistry::start(|_| {
            Reply::status(201).header("Docker-Content-Digest", "sha256:0000")
        });
        let err = Client::new(&registry.host)
            .push_manifest("hello", "v1", "application/x", b"{}")
            .err()
            .unwrap();
        assert!(err.to_string().contains("sha256:0000"), "{err}");
        assert!(err.to_string().contains(&sha256_digest(b"{}")), "{err}");
    }

    #[test]
    fn an_unreachable_registry_is_named() {
        // A port just freed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let err = Client::new(&host).push_blob("hello", b"x").err().unwrap();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("GET http://{host}/v2/: ")),
            "{message}"
        );
        assert!(
            message.contains(&format!("is the registry up at {host}")),
            "{message}"
        );
    }
}
