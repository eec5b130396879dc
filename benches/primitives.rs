//! Throughput of the primitives the format uses, on this machine, one thread:
//! `cargo bench --bench primitives`. This is how the AEAD was chosen: AES-256-GCM (ring, with
//! vouch's per-object subkey) against XChaCha20-Poly1305 (RustCrypto), sealing 1 MiB blobs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use vouch::format::{Keys, Kind, MasterSecret};

const BLOB: usize = 1 << 20;

fn measure(name: &str, bytes_per_iter: usize, mut f: impl FnMut()) {
    // Warm up, then run for about a second.
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut iters = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        f();
        iters += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<44} {:>8.0} MB/s",
        iters as f64 * bytes_per_iter as f64 / secs / 1e6
    );
}

fn text(len: usize) -> Vec<u8> {
    let words = [
        "INSERT",
        "INTO",
        "pupils",
        "VALUES",
        "(1204,",
        "'Zoë",
        "Brennan',",
        "3,",
        "97.2);\n",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

fn main() {
    let noise: Vec<u8> = (0..BLOB as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29) as u8)
        .collect();
    let keys = Keys::derive(&MasterSecret::from_bytes([7; 32]));
    println!("one thread, {BLOB}-byte blobs");

    let mut out = Vec::with_capacity(BLOB + 64);
    measure("AES-256-GCM (ring) + per-object subkey", BLOB, || {
        out.clear();
        keys.seal_into(Kind::DataBlob, black_box(&noise), &mut out);
        black_box(&out);
    });
    let x = XChaCha20Poly1305::new(&[7u8; 32].into());
    let mut buf = noise.clone();
    measure("XChaCha20-Poly1305 (RustCrypto)", BLOB, || {
        buf.copy_from_slice(&noise);
        let tag = x
            .encrypt_in_place_detached(XNonce::from_slice(&[1u8; 24]), b"aad", &mut buf)
            .unwrap();
        black_box(tag);
    });
    let mut sealed = Vec::new();
    keys.seal_into(Kind::DataBlob, &noise, &mut sealed);
    measure("AES-256-GCM open (ring)", BLOB, || {
        black_box(keys.open(Kind::DataBlob, black_box(&sealed)).unwrap());
    });
    measure("blake3 keyed (blob id)", BLOB, || {
        black_box(keys.blob_id(black_box(&noise)));
    });
    let doc = text(BLOB);
    let mut z = zstd::bulk::Compressor::new(3).unwrap();
    measure("zstd -3 compress, SQL-like text", BLOB, || {
        black_box(z.compress(black_box(&doc)).unwrap());
    });
    measure("zstd -3 compress, incompressible", BLOB, || {
        black_box(z.compress(black_box(&noise)).unwrap());
    });
    let packed = z.compress(&doc).unwrap();
    measure("zstd decompress, SQL-like text", BLOB, || {
        black_box(zstd::bulk::decompress(black_box(&packed), BLOB).unwrap());
    });
    let big = text(16 << 20);
    let chunker = vouch::format::Chunker::new(&Default::default(), keys.chunker_seed());
    measure("FastCDC 512K/1M/4M (keyed gear)", big.len(), || {
        black_box(chunker.split(black_box(&big)).len());
    });
}
