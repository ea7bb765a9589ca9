//! The backup encryption format, and the only implementation of it in the service: what
//! `openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000 -k KEY` writes (the runbook's backup and
//! manual backup jobs), and what `openssl enc -d …` with the same flags reads back.
//!
//! Layout: `Salted__`, an 8-byte random salt, then AES-256-CBC ciphertext with PKCS#7 padding.
//! Key and IV are the 48 bytes of PBKDF2-HMAC-SHA256(password, salt, 100000): 32 of key, 16 of IV.
//!
//! Three ways in: one-shot [`encrypt`]/[`decrypt`] for small data, [`decrypt_prefix`] for the first
//! bytes of a backup fetched with a ranged read (is it a pg_dump archive?), and the streaming
//! [`Decryptor`] for whole backups of hundreds of MB in constant memory. No error message ever
//! contains the password or derived key material.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::consts::U16;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use secrecy::{ExposeSecret, SecretSlice};

/// The 8 bytes every salted openssl file starts with.
pub const MAGIC: &[u8; 8] = b"Salted__";
/// PBKDF2 iterations the backup job uses (`-iter 100000`).
pub const ITERATIONS: u32 = 100_000;
/// Salt length written after [`MAGIC`].
pub const SALT_LEN: usize = 8;
/// [`MAGIC`] plus the salt.
pub const HEADER_LEN: usize = MAGIC.len() + SALT_LEN;
/// AES block size.
pub const BLOCK_LEN: usize = 16;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// Why data could not be decrypted. Messages describe the data, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The data does not start with `Salted__`: not written by `openssl enc -salt`.
    #[error("not openssl enc output: the data does not start with \"Salted__\"")]
    NotOpensslFormat,
    /// Shorter than a header and one block.
    #[error("too short for openssl enc output: {len} bytes, at least {min} needed")]
    TooShort { len: usize, min: usize },
    /// The ciphertext after the header is not a whole number of blocks.
    #[error(
        "truncated or corrupt: {len} bytes of ciphertext is not a whole number of 16-byte blocks"
    )]
    Truncated { len: usize },
    /// The padding check failed after decryption.
    #[error("bad padding after decryption: wrong key, or corrupt data")]
    BadPadding,
}

/// Derives the AES key and IV from the password and salt, as openssl's `-pbkdf2 -iter 100000`.
fn derive(password: &[u8], salt: &[u8]) -> ([u8; 32], [u8; 16]) {
    let mut out = [0u8; 48];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, ITERATIONS, &mut out);
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    key.copy_from_slice(&out[..32]);
    iv.copy_from_slice(&out[32..]);
    // The derived bytes are key material: do not leave a copy on the stack longer than needed.
    out.fill(0);
    (key, iv)
}

fn decryptor(password: &[u8], salt: &[u8]) -> Aes256CbcDec {
    let (mut key, mut iv) = derive(password, salt);
    let dec = Aes256CbcDec::new(&key.into(), &iv.into());
    key.fill(0);
    iv.fill(0);
    dec
}

/// Checks the `Salted__` header and returns the salt.
fn salt_of(data: &[u8]) -> Result<&[u8], CryptoError> {
    let min = HEADER_LEN + BLOCK_LEN;
    if data.len() >= MAGIC.len() && &data[..MAGIC.len()] != MAGIC {
        return Err(CryptoError::NotOpensslFormat);
    }
    if data.len() < min {
        return Err(CryptoError::TooShort {
            len: data.len(),
            min,
        });
    }
    Ok(&data[MAGIC.len()..HEADER_LEN])
}

fn decrypt_blocks(dec: &mut Aes256CbcDec, data: &mut [u8]) {
    // All whole blocks in one call: CBC decryption is parallel, and the AES backend then works
    // on several blocks at once (AES-NI pipelines 8), which a block-by-block loop forgoes.
    let (blocks, _tail) = aes::cipher::inout::InOutBuf::from(data).into_chunks::<U16>();
    dec.decrypt_blocks_inout_mut(blocks);
}

/// Checks PKCS#7 padding of the final plaintext block and returns how many bytes to keep.
fn unpadded_len(plain: &[u8]) -> Result<usize, CryptoError> {
    let n = usize::from(*plain.last().ok_or(CryptoError::BadPadding)?);
    if n == 0
        || n > BLOCK_LEN
        || n > plain.len()
        || plain[plain.len() - n..]
            .iter()
            .any(|&b| usize::from(b) != n)
    {
        return Err(CryptoError::BadPadding);
    }
    Ok(plain.len() - n)
}

/// Encrypts `plaintext` with a fresh random salt, exactly as
/// `openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000 -k PASSWORD` would.
pub fn encrypt(password: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let salt: [u8; SALT_LEN] = rand::random();
    let (mut key, mut iv) = derive(password, &salt);
    let enc = Aes256CbcEnc::new(&key.into(), &iv.into());
    key.fill(0);
    iv.fill(0);
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + BLOCK_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&enc.encrypt_padded_vec_mut::<Pkcs7>(plaintext));
    out
}

/// Decrypts a whole `openssl enc` file held in memory and checks its padding.
pub fn decrypt(password: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let salt = salt_of(data)?;
    let body = &data[HEADER_LEN..];
    if body.len() % BLOCK_LEN != 0 {
        return Err(CryptoError::Truncated { len: body.len() });
    }
    let mut plain = body.to_vec();
    decrypt_blocks(&mut decryptor(password, salt), &mut plain);
    let keep = unpadded_len(&plain)?;
    plain.truncate(keep);
    Ok(plain)
}

/// Decrypts the whole blocks among the first bytes of an `openssl enc` file (a ranged read of
/// its start), without any padding check: the end of the file is not there. Enough to see whether
/// a backup starts with the pg_dump magic `PGDMP`.
pub fn decrypt_prefix(password: &[u8], first_bytes: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let salt = salt_of(first_bytes)?;
    let body = &first_bytes[HEADER_LEN..];
    let mut plain = body[..body.len() - body.len() % BLOCK_LEN].to_vec();
    decrypt_blocks(&mut decryptor(password, salt), &mut plain);
    Ok(plain)
}

/// Streaming decryption of an `openssl enc` file: feed chunks of any size in order, get plaintext
/// back, then [`Decryptor::finish`] checks the padding. Holds at most a header and two blocks
/// besides the chunk being processed, whatever the file size.
pub struct Decryptor {
    state: State,
    /// Bytes not yet processed: the incomplete header, or less than a block of ciphertext.
    pending: Vec<u8>,
    /// The last decrypted block, held back because it carries the padding.
    last: Option<[u8; BLOCK_LEN]>,
    /// Ciphertext bytes seen after the header, for the error message of a truncated stream.
    body_len: u64,
}

enum State {
    /// The salt has not arrived yet, so the key cannot be derived.
    Header(SecretSlice<u8>),
    Body(Box<Aes256CbcDec>),
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Header(_) => "header",
            State::Body(_) => "body",
        };
        f.debug_struct("Decryptor")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl Decryptor {
    /// A decryptor for data encrypted with `password`.
    pub fn new(password: &[u8]) -> Self {
        Self {
            state: State::Header(SecretSlice::from(password.to_vec())),
            pending: Vec::new(),
            last: None,
            body_len: 0,
        }
    }

    /// Takes the next chunk and returns the plaintext it completes (possibly empty).
    pub fn update(&mut self, chunk: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut input = chunk;
        if let State::Header(password) = &self.state {
            let need = HEADER_LEN - self.pending.len();
            let take = need.min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            let seen = self.pending.len().min(MAGIC.len());
            if self.pending[..seen] != MAGIC[..seen] {
                return Err(CryptoError::NotOpensslFormat);
            }
            if self.pending.len() < HEADER_LEN {
                return Ok(Vec::new());
            }
            let dec = decryptor(
                password.expose_secret(),
                &self.pending[MAGIC.len()..HEADER_LEN],
            );
            self.state = State::Body(Box::new(dec));
            self.pending.clear();
        }
        let State::Body(dec) = &mut self.state else {
            return Ok(Vec::new());
        };
        self.body_len += input.len() as u64;
        // Decrypt every whole block available; keep the partial tail for the next call.
        let mut blocks = std::mem::take(&mut self.pending);
        blocks.extend_from_slice(input);
        let whole = blocks.len() - blocks.len() % BLOCK_LEN;
        self.pending = blocks.split_off(whole);
        decrypt_blocks(dec, &mut blocks);
        let mut out = Vec::with_capacity(blocks.len() + BLOCK_LEN);
        if let Some(last) = self.last.take() {
            out.extend_from_slice(&last);
        }
        out.extend_from_slice(&blocks);
        // Hold back the final block: it may be the padded one, checked only by `finish`.
        if out.len() >= BLOCK_LEN {
            let split = out.len() - BLOCK_LEN;
            let mut last = [0u8; BLOCK_LEN];
            last.copy_from_slice(&out[split..]);
            self.last = Some(last);
            out.truncate(split);
        }
        Ok(out)
    }

    /// Ends the stream: checks that the data was complete and the padding valid, and returns the
    /// last plaintext bytes.
    pub fn finish(self) -> Result<Vec<u8>, CryptoError> {
        match self.state {
            State::Header(_) => {
                let len = self.pending.len();
                Err(CryptoError::TooShort {
                    len,
                    min: HEADER_LEN + BLOCK_LEN,
                })
            }
            State::Body(_) => {
                if !self.pending.is_empty() {
                    return Err(CryptoError::Truncated {
                        len: usize::try_from(self.body_len).unwrap_or(usize::MAX),
                    });
                }
                let last = self.last.ok_or(CryptoError::TooShort {
                    len: HEADER_LEN,
                    min: HEADER_LEN + BLOCK_LEN,
                })?;
                let keep = unpadded_len(&last)?;
                Ok(last[..keep].to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use proptest::prelude::*;

    use super::*;

    const KEY: &str = "a-test-key-that-is-long-enough-0123456789";

    /// Runs `openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000 [-d]` with the key passed through
    /// the environment (never on the command line or in output), feeding `input` on stdin.
    fn openssl(decrypt: bool, key: &str, input: &[u8]) -> std::process::Output {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "enc",
            "-aes-256-cbc",
            "-salt",
            "-pbkdf2",
            "-iter",
            "100000",
            "-pass",
            "env:BR_TEST_ENC_KEY",
        ]);
        if decrypt {
            cmd.arg("-d");
        }
        let mut child = cmd
            .env("BR_TEST_ENC_KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl is installed (scripts/test.sh installs it)");
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        // Write on a thread so a large input cannot deadlock against a full stdout pipe.
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn stream(password: &[u8], data: &[u8], cuts: &[usize]) -> Result<Vec<u8>, CryptoError> {
        let mut d = Decryptor::new(password);
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, data.len());
            out.extend(d.update(&data[at..cut])?);
            at = cut;
        }
        out.extend(d.update(&data[at..])?);
        out.extend(d.finish()?);
        Ok(out)
    }

    #[test]
    fn what_openssl_encrypts_we_decrypt_to_the_same_bytes() {
        for len in [0, 1, 15, 16, 17, 4096, 100_003] {
            let plain = sample(len);
            let out = openssl(false, KEY, &plain);
            assert!(
                out.status.success(),
                "openssl enc failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );

            assert_eq!(
                decrypt(KEY.as_bytes(), &out.stdout).unwrap(),
                plain,
                "length {len}"
            );
            assert_eq!(
                stream(KEY.as_bytes(), &out.stdout, &[3, 20, 999]).unwrap(),
                plain,
                "streamed, length {len}"
            );
        }
    }

    #[test]
    fn what_we_encrypt_openssl_decrypts() {
        for len in [0, 5, 16, 33, 70_000] {
            let plain = sample(len);
            let ours = encrypt(KEY.as_bytes(), &plain);

            let out = openssl(true, KEY, &ours);

            assert!(
                out.status.success(),
                "openssl enc -d failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, plain, "length {len}");
        }
    }

    #[test]
    fn openssl_refuses_our_output_with_another_key_as_we_refuse_its() {
        // A wrong key passes the PKCS#7 padding check by chance about once in 256 salts (the
        // last decrypted byte happens to read as valid padding): it then yields garbage, never
        // the plaintext. So each salt must not give the plaintext back, and within a few salts
        // both sides must refuse (all of 8 passing by chance: 2^-64).
        let plain: &[u8] = b"PGDMP and some more bytes of a dump";
        let (mut openssl_refused, mut we_refused) = (false, None);
        for _ in 0..8 {
            let ours = encrypt(KEY.as_bytes(), plain);
            let out = openssl(true, "another-key", &ours);
            assert_ne!(out.stdout, plain, "another key gave the plaintext back");
            openssl_refused |= !out.status.success();
            let theirs = openssl(false, KEY, plain).stdout;
            match decrypt(b"another-key", &theirs) {
                Ok(bytes) => assert_ne!(bytes, plain, "another key gave the plaintext back"),
                Err(e) => we_refused = Some(e),
            }
            if openssl_refused && we_refused.is_some() {
                break;
            }
        }
        assert!(
            openssl_refused,
            "openssl never refused our output with another key"
        );
        let err = we_refused.expect("we never refused openssl's output with another key");
        assert_eq!(err, CryptoError::BadPadding);
        assert!(err.to_string().contains("wrong key"), "{err}");
    }

    #[test]
    fn a_prefix_of_an_openssl_file_decrypts_to_the_start_of_the_plaintext() {
        let plain = sample(10_000);
        let theirs = openssl(false, KEY, &plain).stdout;

        let head = decrypt_prefix(KEY.as_bytes(), &theirs[..64]).unwrap();

        assert_eq!(head, plain[..48]);
        let partial = decrypt_prefix(KEY.as_bytes(), &theirs[..40]).unwrap();
        assert_eq!(partial, plain[..16], "only whole blocks are decrypted");
        assert_ne!(
            decrypt_prefix(b"wrong", &theirs[..64]).unwrap()[..5],
            plain[..5]
        );
    }

    #[test]
    fn errors_say_what_is_wrong_and_never_show_the_key() {
        let good = encrypt(KEY.as_bytes(), &[7u8; 40]); // header + 3 blocks = 64 bytes
        let cases: Vec<(&[u8], CryptoError)> = vec![
            (
                b"PGDMP\x01\x0e\x00 plain dump, not encrypted",
                CryptoError::NotOpensslFormat,
            ),
            (b"Salted__1234", CryptoError::TooShort { len: 12, min: 32 }),
            (
                &good[..good.len() - 3],
                CryptoError::Truncated {
                    len: good.len() - 3 - HEADER_LEN,
                },
            ),
        ];
        for (data, want) in cases {
            let err = decrypt(KEY.as_bytes(), data).unwrap_err();
            assert_eq!(err, want);
            assert!(!err.to_string().contains(KEY));
        }
        assert_eq!(
            decrypt_prefix(KEY.as_bytes(), b"PGDMP-not-encrypted-at-all-0123456789"),
            Err(CryptoError::NotOpensslFormat)
        );
        assert_eq!(
            stream(KEY.as_bytes(), b"Salted", &[]),
            Err(CryptoError::TooShort { len: 6, min: 32 })
        );
        assert_eq!(
            stream(KEY.as_bytes(), &good[..good.len() - 1], &[]),
            Err(CryptoError::Truncated { len: 47 })
        );
        assert_eq!(
            stream(KEY.as_bytes(), b"Not salted at all", &[2]),
            Err(CryptoError::NotOpensslFormat)
        );
        assert!(!format!("{:?}", Decryptor::new(KEY.as_bytes())).contains(KEY));
    }

    #[test]
    fn two_encryptions_of_the_same_data_differ_by_their_salt() {
        let a = encrypt(KEY.as_bytes(), b"same");
        let b = encrypt(KEY.as_bytes(), b"same");
        assert_ne!(a, b);
        assert_eq!(decrypt(KEY.as_bytes(), &a), decrypt(KEY.as_bytes(), &b));
    }

    /// Ciphertexts of plaintexts of awkward lengths, made once: PBKDF2 with 100000 iterations
    /// is slow in a debug build, so the property below varies only the chunking.
    fn samples() -> &'static [(Vec<u8>, Vec<u8>)] {
        static SAMPLES: std::sync::OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = std::sync::OnceLock::new();
        SAMPLES.get_or_init(|| {
            [0, 1, 15, 16, 17, 100, 1000, 2999]
                .into_iter()
                .map(|len| {
                    let plain: Vec<u8> = (0..len).map(|_| rand::random()).collect();
                    let data = encrypt(KEY.as_bytes(), &plain);
                    (plain, data)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn streaming_equals_one_shot_for_any_chunking(
            which in 0usize..8,
            mut cuts in proptest::collection::vec(0usize..3100, 0..12),
        ) {
            let (plain, data) = &samples()[which];
            cuts.sort_unstable();

            let streamed = stream(KEY.as_bytes(), data, &cuts);

            prop_assert_eq!(streamed, Ok(plain.clone()));
        }

        #[test]
        fn a_wrong_key_never_yields_the_plaintext(which in 0usize..8) {
            let (plain, data) = &samples()[which];
            // Padding may accidentally look valid (about 1 in 256): then the bytes must differ.
            match decrypt(b"not-the-key", data) {
                Ok(other) => prop_assert_ne!(&other, plain),
                Err(e) => prop_assert_eq!(e, CryptoError::BadPadding),
            }
        }
    }

    #[test]
    fn one_shot_decryption_of_every_sample_gives_its_plaintext() {
        for (plain, data) in samples() {
            assert_eq!(&decrypt(KEY.as_bytes(), data).unwrap(), plain);
        }
    }
}
