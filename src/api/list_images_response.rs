//! `runtime.v1.ListImagesResponse`, written by hand instead of generated (see
//! `extern_path` in `build.rs`) so that the daemon can answer with images it
//! encoded for an earlier call.
//!
//! Why: the kubelet lists far more often than images change, and encoding
//! 10,000 images (building each `Image`, then writing 2-3 MiB) cost the daemon
//! about 12 ms per call. The answer's bytes now live as long as the listing
//! they were encoded from, and a call copies them.
//!
//! On the wire the message is exactly the generated one: field 1, a repeated
//! `Image`. A repeated field's entries may be written in any number of runs,
//! so `images` followed by `encoded_images` is one valid list, and a decoder
//! (ours, grpc-go's, Python's) sees a plain `ListImagesResponse`.

use bytes::{BufMut, Bytes};
use prost::Message;
use prost::encoding::{DecodeContext, WireType};

use super::proto::runtime::v1::Image;

/// The field number of `images` in the upstream proto.
const IMAGES_FIELD: u32 = 1;

#[derive(Clone, PartialEq, Default, Debug)]
pub struct ListImagesResponse {
    /// The images, as decoded by a client or built by a server.
    pub images: Vec<Image>,
    /// More images, already encoded as entries of field 1 (what
    /// [`ListImagesResponse::encode_images`] returns), sent after `images`.
    /// Always empty in a decoded message: decoding fills `images`.
    pub encoded_images: Bytes,
}

impl ListImagesResponse {
    /// `images` encoded as entries of the `images` field, to be sent later as
    /// `encoded_images`.
    pub fn encode_images(images: Vec<Image>) -> Bytes {
        let message = ListImagesResponse {
            images,
            encoded_images: Bytes::new(),
        };
        Bytes::from(message.encode_to_vec())
    }
}

impl Message for ListImagesResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        prost::encoding::message::encode_repeated(IMAGES_FIELD, &self.images, buf);
        buf.put_slice(&self.encoded_images);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == IMAGES_FIELD {
            prost::encoding::message::merge_repeated(wire_type, &mut self.images, buf, ctx).map_err(
                |mut error| {
                    error.push("ListImagesResponse", "images");
                    error
                },
            )
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::message::encoded_len_repeated(IMAGES_FIELD, &self.images)
            + self.encoded_images.len()
    }

    fn clear(&mut self) {
        self.images.clear();
        self.encoded_images = Bytes::new();
    }
}
