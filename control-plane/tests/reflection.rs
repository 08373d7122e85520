//! "A gRPC client using reflection alone can list and call both services."
//!
//! Starts a real control plane, then behaves like grpcurl: lists the services through the
//! server-reflection API, fetches their file descriptors through it, builds requests as
//! `prost_reflect::DynamicMessage`s from those descriptors and calls Admin and Gateway
//! methods with a dynamic codec. No generated Tollgate type is used for the calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message;
use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, ReflectMessage, Value,
};
use tollgate_tests::cluster::{ADMIN_TOKEN, ControlPlane, Home, base_config};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_reflection::pb::v1 as refl;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1alpha as refl_alpha;

const ADMIN: &str = "tollgate.admin.v1.Admin";
const GATEWAY: &str = "tollgate.gateway.v1.Gateway";
const HEALTH: &str = "grpc.health.v1.Health";

// ------------------------------------------------------------------ server

/// A control plane from the test kit on its embedded SQLite, with nothing else set.
async fn start_server() -> ControlPlane {
    let home = Home::embedded();
    let config = base_config(home.data_dir());
    ControlPlane::start_with(home, config).await
}

// ------------------------------------------------------------------ reflection client

/// One reflection request on a fresh bidi stream, one response back.
async fn reflect(channel: &Channel, req: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel.clone());
    let request = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(req),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().expect("one response");
    resp.message_response.expect("a message response")
}

async fn list_services(channel: &Channel) -> Vec<String> {
    match reflect(channel, MessageRequest::ListServices(String::new())).await {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

/// Fetches the files defining `symbol` (with their dependencies) into `pool`.
async fn fetch_descriptors(channel: &Channel, pool: &mut DescriptorPool, symbol: &str) {
    let files = match reflect(channel, MessageRequest::FileContainingSymbol(symbol.into())).await {
        MessageResponse::FileDescriptorResponse(f) => f.file_descriptor_proto,
        other => panic!("unexpected reflection answer for {symbol}: {other:?}"),
    };
    assert!(!files.is_empty(), "no descriptors for {symbol}");
    let protos = files
        .iter()
        .map(|b| FileDescriptorProto::decode(b.as_slice()).unwrap());
    pool.add_file_descriptor_protos(protos).unwrap();
}

// ------------------------------------------------------------------ dynamic codec

/// Encodes any `DynamicMessage`; decodes into the given response descriptor.
#[derive(Clone)]
struct DynamicCodec(MessageDescriptor);

struct DynamicEncoder;

struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.0.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encode: {e}")))
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decode: {e}")))
    }
}

/// Calls `method` with `request`, optionally with the admin bearer token.
async fn call(
    channel: &Channel,
    method: &MethodDescriptor,
    request: DynamicMessage,
    token: Option<&str>,
) -> Result<DynamicMessage, Status> {
    assert_eq!(request.descriptor(), method.input());
    let path: PathAndQuery = format!("/{}/{}", method.parent_service().full_name(), method.name())
        .parse()
        .unwrap();
    let mut req = Request::new(request);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary(req, path, DynamicCodec(method.output()))
        .await
        .map(tonic::Response::into_inner)
}

fn method(pool: &DescriptorPool, service: &str, name: &str) -> MethodDescriptor {
    let svc = pool
        .get_service_by_name(service)
        .unwrap_or_else(|| panic!("{service} not in the fetched descriptors"));
    svc.methods()
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("{service} has no method {name}"))
}

fn string(v: &str) -> Value {
    Value::String(v.to_owned())
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn reflection_alone_lists_and_calls_both_services() {
    let server = start_server().await;
    let channel = server.channel();

    // List: both Tollgate services, health, and reflection itself.
    let services = list_services(&channel).await;
    for want in [ADMIN, GATEWAY, HEALTH] {
        assert!(
            services.iter().any(|s| s == want),
            "{want} missing from {services:?}"
        );
    }

    // Descriptors, fetched through reflection only.
    let mut pool = DescriptorPool::new();
    for svc in [ADMIN, GATEWAY, HEALTH] {
        fetch_descriptors(&channel, &mut pool, svc).await;
    }
    let admin = pool.get_service_by_name(ADMIN).unwrap();
    assert!(
        admin.methods().count() >= 40,
        "Admin lists {} methods",
        admin.methods().count()
    );

    // Admin/CreateUser, built from the fetched descriptor.
    let create = method(&pool, ADMIN, "CreateUser");
    let mut req = DynamicMessage::new(create.input());
    req.set_field_by_name("email", string("reflected@example.com"));
    req.set_field_by_name("name", string("Reflected"));
    req.set_field_by_name("initial_balance_nanos", Value::I64(2_500_000_000));
    let user = call(&channel, &create, req, Some(ADMIN_TOKEN))
        .await
        .unwrap();
    let id = user.get_field_by_name("id").unwrap().as_i64().unwrap();
    assert!(id > 0);
    assert_eq!(
        user.get_field_by_name("balance_nanos").unwrap().as_i64(),
        Some(2_500_000_000)
    );

    // Admin/ListUsers with a nested PageRequest: OK, and the user is there.
    let list = method(&pool, ADMIN, "ListUsers");
    let page_desc = list.input().get_field_by_name("page").unwrap();
    let page_desc = page_desc.kind();
    let mut page = DynamicMessage::new(page_desc.as_message().unwrap().clone());
    page.set_field_by_name("limit", Value::U32(10));
    let mut req = DynamicMessage::new(list.input());
    req.set_field_by_name("page", Value::Message(page));
    let resp = call(&channel, &list, req, Some(ADMIN_TOKEN)).await.unwrap();
    let users = resp.get_field_by_name("users").unwrap();
    let users = users.as_list().unwrap();
    let emails: Vec<String> = users
        .iter()
        .map(|u| {
            let u = u.as_message().unwrap();
            u.get_field_by_name("email")
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        emails.contains(&"reflected@example.com".to_owned()),
        "{emails:?}"
    );

    // The Admin API still demands the token when called dynamically.
    let err = call(&channel, &list, DynamicMessage::new(list.input()), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Gateway/Authorize with a made-up key hash: a well-formed "no such key" answer.
    let authorize = method(&pool, GATEWAY, "Authorize");
    let mut req = DynamicMessage::new(authorize.input());
    req.set_field_by_name("key_hash", string(&"ab".repeat(32)));
    match call(&channel, &authorize, req, None).await {
        Ok(resp) => {
            assert!(
                !resp.has_field_by_name("key"),
                "unknown key resolved: {resp:?}"
            );
            let ttl = resp.get_field_by_name("ttl_ms").unwrap().as_u32().unwrap();
            assert!(ttl > 0, "negative answers carry a cache TTL");
        }
        // The method exists and was routed: any status but "unknown method" proves the call
        // reached the Gateway handler (tonic answers UNIMPLEMENTED for unknown paths).
        Err(s) => assert_ne!(s.code(), Code::Unimplemented, "{s:?}"),
    }

    // grpc.health.v1.Health/Check, also dynamically.
    let check = method(&pool, HEALTH, "Check");
    let mut req = DynamicMessage::new(check.input());
    req.set_field_by_name("service", string(ADMIN));
    let resp = call(&channel, &check, req, None).await.unwrap();
    let status = resp.get_field_by_name("status").unwrap().as_enum_number();
    assert_eq!(status, Some(1), "SERVING");

    // A method that does not exist is UNIMPLEMENTED: the control case for the asserts above.
    let mut ghost = tonic::client::Grpc::new(channel.clone());
    ghost.ready().await.unwrap();
    let err = ghost
        .unary(
            Request::new(DynamicMessage::new(authorize.input())),
            PathAndQuery::from_static("/tollgate.gateway.v1.Gateway/NoSuchMethod"),
            DynamicCodec(authorize.output()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    server.stop().await;
}

#[tokio::test]
async fn v1alpha_reflection_lists_the_same_services() {
    let server = start_server().await;
    let channel = server.channel();
    let mut client =
        refl_alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = refl_alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            refl_alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(refl_alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) =
        resp.message_response
    else {
        panic!("unexpected answer: {resp:?}");
    };
    // Each endpoint advertises its own reflection service; everything else is the same.
    let not_reflection = |s: &String| !s.starts_with("grpc.reflection.");
    let mut alpha: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
    assert!(alpha.contains(&"grpc.reflection.v1alpha.ServerReflection".to_owned()));
    alpha.retain(not_reflection);
    let mut v1 = list_services(&channel).await;
    v1.retain(not_reflection);
    alpha.sort();
    v1.sort();
    assert_eq!(alpha, v1);
    server.stop().await;
}
