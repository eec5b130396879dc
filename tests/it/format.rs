//! docs/FORMAT.md's test vectors: computed here from the specification's own words (blake3
//! key derivation, AES-256-GCM with ring), by the library, and compared with the document.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use vouch::format::BlobKind;
use vouch::format::pack::{HeaderEntry, encode_header};
use vouch::format::{Keys, Kind, MasterSecret};

fn vectors_in_doc() -> std::collections::BTreeMap<String, String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMAT.md")).unwrap();
    let block = doc
        .split("## 11. Test vectors")
        .nth(1)
        .expect("a test vector section");
    let block = block
        .split("```text")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_format_document_test_vectors_hold() {
    let master: [u8; 32] = std::array::from_fn(|i| i as u8);
    let nonce: [u8; 24] = std::array::from_fn(|i| 0x40 + i as u8);
    let plain = b"vouch";

    // From the specification.
    let enc = blake3::derive_key("vouch repository v1 encryption", &master);
    let bid = blake3::derive_key("vouch repository v1 blob id", &master);
    let seed = blake3::derive_key("vouch repository v1 chunker seed", &master);
    let seed = u64::from_le_bytes(seed[..8].try_into().unwrap());
    let blob_id = blake3::keyed_hash(&bid, plain);
    let subkey = blake3::keyed_hash(&enc, &nonce[..12]);
    let mut sealed = nonce.to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(plain);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, subkey.as_bytes()).unwrap());
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(&nonce[12..]).unwrap(),
        Aad::from(b"vouch/v1 data blob"),
        &mut body,
    )
    .unwrap();
    sealed.extend_from_slice(&body);
    let mut entry = vec![0u8];
    entry.extend_from_slice(blob_id.as_bytes());
    entry.extend_from_slice(&46u32.to_le_bytes());
    entry.extend_from_slice(&5u32.to_le_bytes());

    // From the library.
    let keys = Keys::derive(&MasterSecret::from_bytes(master));
    assert_eq!(keys.blob_id(plain).as_bytes(), blob_id.as_bytes());
    assert_eq!(keys.chunker_seed(), seed);
    let mut payload = vec![0u8];
    payload.extend_from_slice(plain);
    assert_eq!(
        keys.seal_with_nonce(Kind::DataBlob, &nonce, &payload),
        sealed
    );
    assert_eq!(keys.open(Kind::DataBlob, &sealed).unwrap(), payload);
    let header = encode_header(&[HeaderEntry {
        kind: BlobKind::Data,
        id: keys.blob_id(plain),
        length: 46,
        raw_length: 5,
    }]);
    assert_eq!(header[0], 0, "header codec byte");
    assert_eq!(&header[1..], &entry[..]);

    // In the document.
    let computed = [
        ("encryption_key", hex::encode(enc)),
        ("blob_id_key", hex::encode(bid)),
        ("chunker_seed", seed.to_string()),
        ("blob_id", blob_id.to_hex().to_string()),
        ("file_hash", blake3::hash(plain).to_hex().to_string()),
        ("subkey", subkey.to_hex().to_string()),
        ("sealed_data_blob", hex::encode(&sealed)),
        ("object_name", blake3::hash(&sealed).to_hex().to_string()),
        ("header_entry", hex::encode(&entry)),
    ];
    let doc = vectors_in_doc();
    let mut wrong = Vec::new();
    for (name, value) in &computed {
        if doc.get(*name) != Some(value) {
            wrong.push(format!("{name:<16} = {value}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/FORMAT.md §11 disagrees; computed:\n{}",
        wrong.join("\n")
    );
}
