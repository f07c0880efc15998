//! The protobuf codec of our services and clients: prost's, except that the
//! encoder reserves a message's whole encoded length before writing it.
//!
//! Why: tonic hands the encoder a buffer of 8 KiB that grows as prost writes
//! into it, so a ListImages answer for 10,000 images (2-3 MiB) was copied at
//! every doubling, each time into freshly mapped memory the kernel had to
//! fault in. That copying was a third of the daemon's CPU time per listing.
//! One reservation of the exact size, computed by prost, avoids all of it.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// What the generated services and clients use (see `build.rs`).
#[derive(Debug, Clone)]
pub struct ReservingProstCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for ReservingProstCodec<T, U> {
    fn default() -> Self {
        ReservingProstCodec {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for ReservingProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ReservingProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ReservingProstEncoder {
            _message: PhantomData,
        }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Encodes a message into space reserved for all of it at once.
#[derive(Debug, Clone)]
pub struct ReservingProstEncoder<T> {
    _message: PhantomData<T>,
}

impl<T: Message> Encoder for ReservingProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buffer: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buffer.reserve(item.encoded_len());
        // With the space reserved, the unchecked write is the whole encoding
        // (`encode` would compute the length a second time to check it).
        item.encode_raw(buffer);
        Ok(())
    }
}
