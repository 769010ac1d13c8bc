//! What the unit tests of several modules share: command lines, modules on disk, reading a
//! layout tarball back, and a scripted fake registry.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::cli::{parse_args, BuildOptions, Command};
use crate::error::Error;
use crate::layout::{sha256_digest, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::{build_tarball, Tarball};

/// The smallest valid binary module: magic and version 1.
pub(crate) const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// The required options, for tests about everything else.
pub(crate) const REQUIRED: &str = "-o /nonexistent/out.tar --name docker.io/library/hello-wasm:v1";

/// A command line from whitespace-separated words (tests use no paths with spaces).
pub(crate) fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// The options of a `build` or `push` command line.
pub(crate) fn parse(line: &str) -> Result<BuildOptions, Error> {
    match parse_args(&words(line))? {
        Command::Build(opts, _) | Command::Push(opts, _) => Ok(*opts),
        other => panic!("expected a build command, got {other:?}"),
    }
}

/// Builds `module` with the required options plus `extra`.
pub(crate) fn build_with(module: &str, extra: &str) -> Result<Tarball, Error> {
    build_tarball(&parse(&format!(
        "build --module {module} {REQUIRED} {extra}"
    ))?)
}

pub(crate) fn write_module(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

pub(crate) fn chmod(path: impl AsRef<Path>, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[derive(Debug)]
pub(crate) struct TarEntry {
    pub(crate) kind: tar::EntryType,
    pub(crate) mode: u32,
    pub(crate) data: Vec<u8>,
    pub(crate) link: Option<String>,
}

/// Reads a tar back with the tar crate, in archive order, checking on the way that
/// every header carries the fixed owner and time.
pub(crate) fn untar(bytes: &[u8]) -> Vec<(String, TarEntry)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header();
        let owner_and_time = [header.uid(), header.gid(), header.mtime()].map(Result::unwrap);
        assert_eq!(owner_and_time, [0, 0, 0]);
        let (kind, mode) = (header.entry_type(), header.mode().unwrap());
        let path = entry.path().unwrap().to_str().unwrap().to_string();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into()).unwrap());
        let mut data = Vec::new();
        io::Read::read_to_end(&mut entry, &mut data).unwrap();
        out.push((
            path,
            TarEntry {
                kind,
                mode,
                data,
                link,
            },
        ));
    }
    out
}

/// The files of a layout tarball. Following a descriptor checks the blob's digest and
/// size against its bytes, so walking index → manifest → config/layer checks them all.
pub(crate) struct Layout(pub(crate) BTreeMap<String, TarEntry>);

impl Layout {
    pub(crate) fn new(built: &Tarball) -> Layout {
        Layout::from_tar(&built.tar)
    }

    pub(crate) fn from_tar(tar: &[u8]) -> Layout {
        Layout(untar(tar).into_iter().collect())
    }

    pub(crate) fn file(&self, path: &str) -> &[u8] {
        &self
            .0
            .get(path)
            .unwrap_or_else(|| panic!("no {path} in the layout"))
            .data
    }

    pub(crate) fn blob(&self, desc: &Value, media_type: &str) -> &[u8] {
        assert_eq!(desc["mediaType"], media_type);
        let digest = desc["digest"].as_str().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let blob = self.file(&format!("blobs/sha256/{hex}"));
        assert_eq!(sha256_digest(blob), digest, "digest of {media_type}");
        assert_eq!(desc["size"], blob.len(), "size of {media_type}");
        blob
    }

    pub(crate) fn index(&self) -> Value {
        serde_json::from_slice(self.file("index.json")).unwrap()
    }

    pub(crate) fn manifest(&self) -> Value {
        let blob = self.blob(&self.index()["manifests"][0], MANIFEST_MEDIA_TYPE);
        serde_json::from_slice(blob).unwrap()
    }

    pub(crate) fn config(&self) -> Value {
        let blob = self.blob(&self.manifest()["config"], CONFIG_MEDIA_TYPE);
        serde_json::from_slice(blob).unwrap()
    }

    pub(crate) fn layer_in_order(&self) -> Vec<(String, TarEntry)> {
        untar(self.blob(&self.manifest()["layers"][0], LAYER_MEDIA_TYPE))
    }

    pub(crate) fn layer(&self) -> BTreeMap<String, TarEntry> {
        self.layer_in_order().into_iter().collect()
    }
}

// ---------------------------------------------------------------------------------------------
// A fake registry: answers each HTTP request as a test scripts it, and records them all.

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The request target: path and query.
    pub(crate) path: String,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    pub(crate) fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub(crate) fn body(mut self, body: &str) -> Reply {
        self.body = body.as_bytes().to_vec();
        self
    }
}

pub(crate) struct FakeRegistry {
    /// `127.0.0.1:PORT`.
    pub(crate) host: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeRegistry {
    /// Serves on a free port of 127.0.0.1, one request per connection, until the test
    /// process ends (the thread blocks in accept; nothing else holds it).
    pub(crate) fn start(respond: impl Fn(&Request) -> Reply + Send + 'static) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let reply = respond(&request);
                let head_only = request.method == "HEAD";
                recorded.lock().unwrap().push(request);
                let _ = write_reply(&stream, &reply, head_only);
            }
        });
        FakeRegistry { host, requests }
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (key, value) = line.split_once(':')?;
        headers.push((key.trim().to_string(), value.trim().to_string()));
    }
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    assert_ne!(
        request.header("transfer-encoding"),
        Some("chunked"),
        "the fake registry reads Content-Length bodies only"
    );
    let length: usize = request
        .header("content-length")
        .map_or(0, |n| n.parse().unwrap());
    request.body = vec![0; length];
    reader.read_exact(&mut request.body).ok()?;
    Some(request)
}

fn write_reply(mut stream: &TcpStream, reply: &Reply, head_only: bool) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} Fake\r\nConnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let length = if head_only { 0 } else { reply.body.len() };
    head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&reply.body)?;
    }
    stream.flush()
}
