//! The docs stay true: every config key is in the README's table.

#[test]
fn readme_documents_every_config_key() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let defaults: toml::Table = toml::from_str(callgate::config::DEFAULTS_TOML).expect("defaults");
    let mut keys = Vec::new();
    collect(&defaults, "", &mut keys);
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's configuration table lacks {missing:?}"
    );
}

fn collect(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => collect(t, &key, out),
            _ => out.push(key),
        }
    }
}
