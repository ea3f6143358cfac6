//! Payload masking (RFC 6455 section 5.3): byte `i` of a payload is XORed with
//! byte `i % 4` of the masking key.
//!
//! [`apply_mask`] works a 64-byte block at a time, which the compiler turns into
//! SIMD XORs, and takes the offset of the slice within the payload so a payload
//! that arrives across several reads unmasks correctly piece by piece.

const BLOCK: usize = 64;

/// XORs `buf` with `key` in place, as the bytes of a payload starting at
/// `offset` (the number of payload bytes before `buf`). Masking twice unmasks.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key: [u8; 4] = std::array::from_fn(|i| key[(offset + i) % 4]);
    let block: [u8; BLOCK] = std::array::from_fn(|i| key[i % 4]);
    let mut chunks = buf.chunks_exact_mut(BLOCK);
    for chunk in &mut chunks {
        for (byte, k) in chunk.iter_mut().zip(block) {
            *byte ^= k;
        }
    }
    // The remainder starts at a multiple of 64, so its key phase is unchanged.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(block) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_the_definition_for_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..300 {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let (mut fast, mut slow) = (data.clone(), data);
                apply_mask(&mut fast, key, offset);
                naive(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn split_payload_unmasks_piece_by_piece() {
        let key = [1, 2, 3, 4];
        let mut whole = b"Hello, a payload that arrives in pieces".to_vec();
        let mut pieces = whole.clone();
        apply_mask(&mut whole, key, 0);
        let (a, b) = pieces.split_at_mut(5);
        let (b, c) = b.split_at_mut(11);
        apply_mask(a, key, 0);
        apply_mask(b, key, 5);
        apply_mask(c, key, 16);
        assert_eq!(whole, pieces);
    }
}
