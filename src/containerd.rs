//! A small client of containerd's own gRPC API (the socket containerd passes as `-address`):
//! the container's image, the image's target and the blobs of its content store, which a wasm
//! OCI artifact's module is read from (see `artifact`).
//!
//! Messages are declared with prost's derive, field numbers as in containerd's
//! `api/services/{containers,images,content}/v1/*.proto` and `api/types/descriptor.proto`
//! (identical in 1.6, 1.7 and 2.x), so no protoc is needed.

use std::path::PathBuf;

use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// The gRPC metadata key containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// `containerd.services.containers.v1.GetContainerRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct GetContainerRequest {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// `containerd.services.containers.v1.GetContainerResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    pub container: Option<Container>,
}

/// `containerd.services.containers.v1.Container` (the fields the shim reads).
#[derive(Clone, PartialEq, Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    /// The image the container was created from, as its client named it (`ctr run` gives the
    /// reference; CRI the image's reference or id, both names of one image record).
    #[prost(string, tag = "3")]
    pub image: String,
}

/// `containerd.services.images.v1.GetImageRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct GetImageRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `containerd.services.images.v1.GetImageResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct GetImageResponse {
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}

/// `containerd.services.images.v1.Image` (the fields the shim reads).
#[derive(Clone, PartialEq, Message)]
pub struct Image {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "3")]
    pub target: Option<Descriptor>,
}

/// `containerd.types.Descriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct Descriptor {
    #[prost(string, tag = "1")]
    pub media_type: String,
    #[prost(string, tag = "2")]
    pub digest: String,
    #[prost(int64, tag = "3")]
    pub size: i64,
}

/// `containerd.services.content.v1.ReadContentRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ReadContentRequest {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(int64, tag = "2")]
    pub offset: i64,
    /// 0: the whole blob.
    #[prost(int64, tag = "3")]
    pub size: i64,
}

/// `containerd.services.content.v1.ReadContentResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct ReadContentResponse {
    #[prost(int64, tag = "1")]
    pub offset: i64,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// A connection to containerd's gRPC socket, with the namespace every call is made in.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    namespace: String,
}

impl Client {
    /// Connects to the unix socket `socket` (containerd's `-address`).
    pub async fn connect(socket: impl Into<PathBuf>, namespace: &str) -> Result<Client, String> {
        Ok(Client {
            channel: channel(socket).await?,
            namespace: namespace.to_string(),
        })
    }

    /// `Containers.Get`: the name of the image container `id` was created from ("" if none).
    pub async fn container_image(&self, id: &str) -> Result<String, String> {
        let request = GetContainerRequest { id: id.to_string() };
        let response: GetContainerResponse = self
            .unary("/containerd.services.containers.v1.Containers/Get", request)
            .await?;
        Ok(response.container.map(|c| c.image).unwrap_or_default())
    }

    /// `Images.Get`: the descriptor image `name` points at (a manifest or an index).
    pub async fn image_target(&self, name: &str) -> Result<Descriptor, String> {
        let request = GetImageRequest {
            name: name.to_string(),
        };
        let response: GetImageResponse = self
            .unary("/containerd.services.images.v1.Images/Get", request)
            .await?;
        response
            .image
            .and_then(|image| image.target)
            .ok_or_else(|| format!("containerd's image {name} has no target"))
    }

    /// `Content.Read` of the whole blob `digest`, chunk by chunk into `sink` (which may refuse
    /// a chunk, ending the read). containerd returns the bytes as stored: the caller verifies
    /// them against the digest.
    pub async fn read_blob(
        &self,
        digest: &str,
        mut sink: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        const METHOD: &str = "/containerd.services.content.v1.Content/Read";
        let request = ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        };
        let mut grpc = self.ready(METHOD).await?;
        let mut stream = grpc
            .server_streaming(
                self.request(request)?,
                PathAndQuery::from_static(METHOD),
                tonic_prost::ProstCodec::<ReadContentRequest, ReadContentResponse>::default(),
            )
            .await
            .map_err(|status| call_error(METHOD, &status))?
            .into_inner();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|status| call_error(METHOD, &status))?
        {
            sink(&chunk.data)?;
        }
        Ok(())
    }

    /// One unary call of `method` (its full gRPC path).
    pub async fn unary<Req, Resp>(&self, method: &'static str, request: Req) -> Result<Resp, String>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.ready(method).await?;
        grpc.unary(
            self.request(request)?,
            PathAndQuery::from_static(method),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| call_error(method, &status))
    }

    async fn ready(&self, method: &str) -> Result<tonic::client::Grpc<Channel>, String> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| format!("{method}: containerd is not ready: {e}"))?;
        Ok(grpc)
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, String> {
        let mut request = tonic::Request::new(message);
        let namespace = self
            .namespace
            .parse()
            .map_err(|e| format!("namespace {:?}: {e}", self.namespace))?;
        request.metadata_mut().insert(NAMESPACE_HEADER, namespace);
        Ok(request)
    }
}

/// A gRPC channel to the unix socket `socket` (containerd's API, or its CRI on the same
/// socket).
pub async fn channel(socket: impl Into<PathBuf>) -> Result<Channel, String> {
    let socket = socket.into();
    let shown = socket.display().to_string();
    tonic::transport::Endpoint::from_static("http://containerd")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .map_err(|e| format!("connect to containerd at {shown}: {e}"))
}

fn call_error(method: &str, status: &tonic::Status) -> String {
    format!("{method}: {:?}: {}", status.code(), status.message())
}
