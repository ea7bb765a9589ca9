//! The test cluster's keys, made with the `openssl` command: a CA, one serving certificate for
//! 127.0.0.1 (the API server's, and the node agent's kubelet endpoint), the ServiceAccount
//! token signing key.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pki {
    pub ca_crt: PathBuf,
    pub ca_pem: String,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running openssl (install it: apt-get install openssl): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

impl Pki {
    pub fn create(dir: &Path) -> Result<Pki, String> {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir,
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "7",
                    "-subj",
                    "/CN=backup-remediator-test-ca",
                ],
            ]
            .concat(),
        )?;
        openssl(
            dir,
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        )?;
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| e.to_string())?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "7",
                "-extfile",
                "server.ext",
            ],
        )?;
        openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
        openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
        let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).map_err(|e| e.to_string())?;
        Ok(Pki {
            ca_crt: dir.join("ca.crt"),
            ca_pem,
            server_crt: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        })
    }
}
