//! Payload masking (RFC 6455 section 5.3): byte `i` of a payload is XORed with
//! byte `i % 4` of the masking key.
//!
//! [`apply_mask`] XORs a 4-byte word at a time, a loop the compiler turns
//! into SIMD XORs, and takes the offset of the slice within the payload so a
//! payload that arrives across several reads unmasks correctly piece by piece.
//! `copy_masked` does the same while copying, so received bytes are read once.

/// XORs `buf` with `key` in place, as the bytes of a payload starting at
/// `offset` (the number of payload bytes before `buf`). Masking twice unmasks.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = key_at(key, offset);
    let mut words = buf.chunks_exact_mut(4);
    for word in &mut words {
        let masked = mask_word(word, key);
        word.copy_from_slice(&masked);
    }
    // The remainder starts at a multiple of 4, so its key phase is unchanged.
    for (byte, k) in words.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// Writes `src` masked with `key` into `dst`, which has the same length, as
/// the bytes of a payload starting at `offset`: [`apply_mask`] on a copy.
pub(crate) fn copy_masked(dst: &mut [u8], src: &[u8], key: [u8; 4], offset: usize) {
    debug_assert_eq!(dst.len(), src.len());
    let key = key_at(key, offset);
    let (mut to, mut from) = (dst.chunks_exact_mut(4), src.chunks_exact(4));
    for (word, masked) in (&mut to).zip(&mut from) {
        word.copy_from_slice(&mask_word(masked, key));
    }
    for ((byte, masked), k) in to.into_remainder().iter_mut().zip(from.remainder()).zip(key) {
        *byte = masked ^ k;
    }
}

/// The key as it applies from payload byte `offset` on.
fn key_at(key: [u8; 4], offset: usize) -> [u8; 4] {
    u32::from_le_bytes(key).rotate_right(8 * (offset % 4) as u32).to_le_bytes()
}

/// A 4-byte `word` XORed with `key`.
fn mask_word(word: &[u8], key: [u8; 4]) -> [u8; 4] {
    let bytes: [u8; 4] = std::array::from_fn(|i| word[i]);
    (u32::from_ne_bytes(bytes) ^ u32::from_ne_bytes(key)).to_ne_bytes()
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
    fn copy_masked_matches_apply_mask() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..70 {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut copied = vec![0; len];
                copy_masked(&mut copied, &data, key, offset);
                let mut in_place = data;
                apply_mask(&mut in_place, key, offset);
                assert_eq!(copied, in_place, "len {len} offset {offset}");
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
