//! Any bytes decode as a frame header, as "more bytes needed", or as one
//! error; a decoded header re-encodes (in the shortest length form, which a
//! sender must use and a receiver need not insist on) to a header that
//! decodes the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ws_proto::FrameHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, len))) = FrameHeader::decode(data) {
        assert!(len <= ws_proto::frame::MAX_HEADER_LEN && len <= data.len());
        assert!(header.encoded_len() <= len);
        let mut out = BytesMut::new();
        header.encode(&mut out);
        assert_eq!(out.len(), header.encoded_len());
        assert_eq!(FrameHeader::decode(&out), Ok(Some((header, out.len()))));
        if header.encoded_len() == len {
            assert_eq!(&out[..], &data[..len]);
        }
    }
});
