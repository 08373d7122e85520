//! Generated protobuf and gRPC code. Only this crate names these modules' paths directly;
//! the planes convert to their own domain types at the edge.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("tollgate.gateway.v1");
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("tollgate.admin.v1");
    }
}

/// Encoded `FileDescriptorSet` of every service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tollgate_descriptor.bin"));
