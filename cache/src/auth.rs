//! Registry credentials: anonymous unless docker's config.json has an entry.
//!
//! Kept deliberately small (full auth — token helpers per scope, podman auth.json,
//! `--creds` flags — is a later issue). `docker_credential` reads
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, decodes base64 `auth`
//! and runs credential helpers. Credentials never leave this module except inside
//! `RegistryAuth`, which we never format.

use docker_credential::DockerCredential;
use oci_client::secrets::RegistryAuth;

/// The credentials for `registry` (as written in a reference, e.g. `host:5000`).
pub fn credentials_for(registry: &str) -> RegistryAuth {
    // Docker Hub is stored under its legacy v1 URL by `docker login`.
    let keys: Vec<String> = if registry == crate::reference::DOCKER_HUB {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}")]
    };
    for k in &keys {
        match docker_credential::get_credential(k) {
            Ok(DockerCredential::UsernamePassword(u, p)) => {
                tracing::debug!("using credentials from docker config for {registry}");
                return RegistryAuth::Basic(u, p);
            }
            Ok(DockerCredential::IdentityToken(_)) => {
                // An OAuth refresh token needs an exchange we do not implement yet.
                tracing::debug!("ignoring identity token for {registry} (not supported yet)");
            }
            Err(_) => {}
        }
    }
    RegistryAuth::Anonymous
}
