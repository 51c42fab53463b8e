//! Registry credentials from CI environments (issue 9): GitLab's CI_REGISTRY*
//! variables, KILN_AUTH (a config.json path or inline JSON) and --authfile, against a
//! registry with htpasswd auth. No ~/.docker/config.json exists in the sandbox.

use kiln_integration::{seed_base_images, Image, Registry, Sandbox};

const USER: &str = "ci-user";
const PASSWORD: &str = "Pw-4-ci-Registry";

fn context(sb: &Sandbox, registry: &Registry) -> std::path::PathBuf {
    sb.new_context("app")
        .file(
            "Dockerfile",
            format!("FROM {}\nCOPY msg.txt /msg.txt\nRUN cat /msg.txt > /copy.txt\n", registry.reference("base/busybox:latest")),
        )
        .file("msg.txt", "pushed with CI credentials\n")
        .build()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn leftover_auth_dirs(sb: &Sandbox) -> Vec<String> {
    std::fs::read_dir(sb.kiln_root().join("tmp"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("auth-")).collect())
        .unwrap_or_default()
}

#[test]
fn gitlab_ci_registry_variables_authenticate_pull_and_push() {
    let registry = Registry::start_with_auth(USER, PASSWORD);
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = context(&sb, &registry);
    let reference = registry.reference("group/project:ci");

    // Without credentials: refused, and the error says where.
    let out = sb.kiln().build().tag(&reference).push().arg(&ctx).run();
    out.assert_failure_containing(&registry.host());

    let out = sb
        .kiln()
        .env("CI_REGISTRY", registry.host())
        .env("CI_REGISTRY_USER", USER)
        .env("CI_REGISTRY_PASSWORD", PASSWORD)
        .build()
        .tag(&reference)
        .push()
        .arg(&ctx)
        .run();
    out.assert_success();
    assert!(!out.combined().contains(PASSWORD), "the password is printed:\n{out}");
    let img = Image::pull_from(&registry, "group/project:ci");
    assert_eq!(img.tree.node("/copy.txt").text(), "pushed with CI credentials\n");
    assert!(leftover_auth_dirs(&sb).is_empty(), "the merged config is removed after the build");

    // A wrong password: fails, naming the registry, never showing the password.
    let wrong = "Wrong-Secret-Value-77";
    let out = sb
        .kiln()
        .env("CI_REGISTRY", registry.host())
        .env("CI_REGISTRY_USER", USER)
        .env("CI_REGISTRY_PASSWORD", wrong)
        .build()
        .tag(&registry.reference("group/project:wrong"))
        .push()
        .arg(&ctx)
        .run();
    out.assert_failure_containing(&registry.host());
    assert!(!out.combined().contains(wrong), "the password is printed:\n{out}");
    assert!(!out.combined().contains(&b64(&format!("{USER}:{wrong}"))), "the encoded credentials are printed:\n{out}");
    assert!(leftover_auth_dirs(&sb).is_empty());
}

#[test]
fn kiln_auth_inline_and_file_and_authfile_flag() {
    let registry = Registry::start_with_auth(USER, PASSWORD);
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let ctx = context(&sb, &registry);
    let config = format!(r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#, registry.host(), b64(&format!("{USER}:{PASSWORD}")));

    // Inline JSON.
    let out = sb.kiln().env("KILN_AUTH", &config).build().tag(&registry.reference("a/inline:1")).push().arg(&ctx).run();
    out.assert_success();
    assert!(!out.combined().contains(PASSWORD));

    // A path to a config.json (as a Kubernetes dockerconfigjson secret is mounted).
    let secret = sb.new_context("secret").file(".dockerconfigjson", &config).build();
    let out = sb
        .kiln()
        .env("KILN_AUTH", secret.join(".dockerconfigjson"))
        .build()
        .tag(&registry.reference("a/file:1"))
        .push()
        .arg(&ctx)
        .run();
    out.assert_success();

    // --authfile.
    let out = sb
        .kiln()
        .build()
        .arg("--authfile")
        .arg(secret.join(".dockerconfigjson"))
        .tag(&registry.reference("a/flag:1"))
        .push()
        .arg(&ctx)
        .run();
    out.assert_success();
    for t in ["a/inline:1", "a/file:1", "a/flag:1"] {
        assert_eq!(Image::pull_from(&registry, t).tree.node("/msg.txt").text(), "pushed with CI credentials\n");
    }

    // Broken inline JSON: a clear error naming KILN_AUTH, not its content.
    let out = sb.kiln().env("KILN_AUTH", format!("{{\"auths\": {PASSWORD}")).build().arg(&ctx).run();
    out.assert_failure_containing("KILN_AUTH");
    assert!(!out.combined().contains(PASSWORD));
    // A missing --authfile.
    let out = sb.kiln().build().arg("--authfile").arg("/nonexistent/auth.json").arg(&ctx).run();
    out.assert_failure_containing("/nonexistent/auth.json");
}
