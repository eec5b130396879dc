//! Evidence signing keys and signatures, in minisign's formats, so that an auditor can check a
//! pack with `vouch evidence verify` or with the standard `minisign -V`.

use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};

use super::verify::Broken;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("{0}")]
    Key(String),
}

fn file_err(path: &Path, detail: impl ToString) -> SignError {
    SignError::File {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// The key id minisign prints: 16 hex digits, as in `minisign -V` output.
pub fn key_id(keynum: &[u8]) -> String {
    let mut bytes = keynum.to_vec();
    bytes.reverse();
    hex::encode_upper(bytes)
}

/// Make a key pair in `dir`: `evidence.key` (mode 0600; encrypted when `password` is given)
/// and `evidence.pub`. Returns the two paths and the key id.
pub fn keygen(
    dir: &Path,
    password: Option<String>,
    comment: &str,
) -> Result<(PathBuf, PathBuf, String), SignError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let (sk_path, pk_path) = (dir.join("evidence.key"), dir.join("evidence.pub"));
    for p in [&sk_path, &pk_path] {
        if p.exists() {
            return Err(file_err(
                p,
                "already exists; keep the old key, or move it away first (an auditor may hold its public key)",
            ));
        }
    }
    // The minisign crate stores a key "without a password" as one whose password is empty.
    let KeyPair { pk, sk } =
        KeyPair::generate_encrypted_keypair(Some(password.unwrap_or_default()))
            .map_err(|e| SignError::Key(e.to_string()))?;
    let sk_text = sk
        .to_box(Some(comment))
        .map_err(|e| SignError::Key(e.to_string()))?
        .into_string();
    let pk_text = pk
        .to_box()
        .map_err(|e| SignError::Key(e.to_string()))?
        .into_string();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&sk_path)
            .map_err(|e| file_err(&sk_path, e))?;
        f.write_all(sk_text.as_bytes())
            .map_err(|e| file_err(&sk_path, e))?;
    }
    std::fs::write(&pk_path, pk_text).map_err(|e| file_err(&pk_path, e))?;
    Ok((sk_path, pk_path, key_id(pk.keynum())))
}

/// Load a signing key; `password` is needed only for a key made with one.
pub fn load_secret_key(path: &Path, password: Option<String>) -> Result<SecretKey, SignError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    let open =
        |p: String| SecretKeyBox::from_string(&text).and_then(|b| b.into_secret_key(Some(p)));
    if let Ok(sk) = open(String::new()) {
        return Ok(sk);
    }
    let Some(password) = password else {
        return Err(file_err(
            path,
            "the signing key is protected by a passphrase: set [evidence] signing_key_password_file in vouch.toml, or give --signing-key-password-file",
        ));
    };
    open(password).map_err(|e| file_err(path, format!("cannot open the signing key: {e}")))
}

pub fn load_public_key(path: &Path) -> Result<PublicKey, SignError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    PublicKeyBox::from_string(&text)
        .and_then(|b| b.into_public_key())
        .or_else(|_| PublicKey::from_base64(text.trim()))
        .map_err(|e| file_err(path, format!("not a minisign public key: {e}")))
}

pub fn public_of(sk: &SecretKey) -> Result<PublicKey, SignError> {
    PublicKey::from_secret_key(sk).map_err(|e| SignError::Key(e.to_string()))
}

/// Write each `(name, bytes, trusted comment)` into `dir` and sign it; returns the files and
/// their signatures.
pub fn write_signed(
    dir: &Path,
    files: &[(&str, Vec<u8>, String)],
    sk: &SecretKey,
    pk: &PublicKey,
) -> Result<Vec<PathBuf>, SignError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let mut out = Vec::new();
    for (name, bytes, _) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| file_err(&path, e))?;
        out.push(path);
    }
    for (name, _, trusted) in files {
        out.push(sign_file(sk, pk, &dir.join(name), trusted)?);
    }
    Ok(out)
}

/// Sign `file`, writing `file.minisig`; the trusted comment names the file and the school.
pub fn sign_file(
    sk: &SecretKey,
    pk: &PublicKey,
    file: &Path,
    trusted: &str,
) -> Result<PathBuf, SignError> {
    let data = std::fs::File::open(file).map_err(|e| file_err(file, e))?;
    let sig = minisign::sign(
        Some(pk),
        sk,
        data,
        Some(trusted),
        Some("signature from vouch evidence"),
    )
    .map_err(|e| SignError::Key(e.to_string()))?;
    let out = PathBuf::from(format!("{}.minisig", file.display()));
    std::fs::write(&out, sig.into_string()).map_err(|e| file_err(&out, e))?;
    Ok(out)
}

/// Check `file` against `file.minisig`: its trusted comment, or what is wrong in words an
/// auditor can act on.
pub fn verify_file(pk: &PublicKey, file: &Path) -> Result<String, Broken> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sig_path = PathBuf::from(format!("{}.minisig", file.display()));
    let sig = SignatureBox::from_file(&sig_path).map_err(|e| Broken::SignatureMissing {
        file: name.clone(),
        why: e.to_string(),
    })?;
    if sig.keynum() != pk.keynum() {
        return Err(Broken::OtherKey {
            file: name,
            signed_by: key_id(sig.keynum()),
            given: key_id(pk.keynum()),
        });
    }
    let data = std::fs::File::open(file).map_err(|e| Broken::Unreadable {
        file: name.clone(),
        why: e.to_string(),
    })?;
    minisign::verify(pk, &sig, data, true, false, false)
        .map_err(|_| Broken::SignatureMismatch { file: name })?;
    Ok(sig.trusted_comment().unwrap_or_default())
}
