//! Which manifest key grants each import. A component importing something its manifest does
//! not grant is refused when it loads, with the import and the key named, rather than
//! failing on the request that first touches it.

/// What an import needs from `[component.<id>]`.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// Part of every component's sandbox (Rust std needs these).
    Nothing,
    /// A non-empty list under this manifest key.
    Key(&'static str, &'static str),
    /// A non-empty list under this key of `[component.<id>.tool.berth]`.
    Setting(&'static str, &'static str),
    /// Not served by berth, with the reason.
    Refused(String),
}

fn need(import: &str) -> Need {
    let name = import.split('@').next().unwrap_or(import);
    let (package, interface) = name.split_once('/').unwrap_or((name, ""));
    match (package, interface) {
        ("wasi:cli" | "wasi:io" | "wasi:clocks" | "wasi:random", _) => Need::Nothing,
        // Linked with no preopened directories: the guest sees an empty file system.
        ("wasi:filesystem", _) => Need::Nothing,
        ("wasi:http", "types") => Need::Nothing,
        ("wasi:http", "outgoing-handler") => {
            Need::Key("allowed_outbound_hosts", "[\"https://api.example.com\"]")
        }
        ("wasi:sockets", _) => Need::Refused(
            "berth gives components no sockets; call other services over HTTP with allowed_outbound_hosts".into(),
        ),
        ("fermyon:spin", "sqlite") => Need::Key("sqlite_databases", "[\"<label>\"]"),
        ("fermyon:spin", "key-value") => Need::Key("key_value_stores", "[\"<label>\"]"),
        ("fermyon:spin", "variables") => Need::Nothing,
        ("wasmcloud:messaging", "consumer") => Need::Setting("publishes", "[\"<subject>\"]"),
        // Delivering a message only needs its shape.
        ("wasmcloud:messaging", "types") => Need::Nothing,
        _ => Need::Refused(
            "berth does not provide it (it serves WASI 0.2, wasi:http, fermyon:spin sqlite, key-value and variables @2.0.0, and wasmcloud:messaging@0.2.0)".into(),
        ),
    }
}

/// The grants of one component, as the manifest gives them.
pub struct Granted<'a> {
    pub allowed_outbound_hosts: bool,
    pub sqlite_databases: bool,
    pub key_value_stores: bool,
    pub publishes: bool,
    pub id: &'a str,
}

impl Granted<'_> {
    fn has(&self, key: &str) -> bool {
        match key {
            "allowed_outbound_hosts" => self.allowed_outbound_hosts,
            "sqlite_databases" => self.sqlite_databases,
            "key_value_stores" => self.key_value_stores,
            "publishes" => self.publishes,
            _ => false,
        }
    }
}

/// Every import of the component that the manifest does not grant, as a sentence each.
pub fn ungranted<'i>(imports: impl IntoIterator<Item = &'i str>, granted: &Granted) -> Vec<String> {
    imports
        .into_iter()
        .filter_map(|import| match need(import) {
            Need::Nothing => None,
            Need::Key(key, _) | Need::Setting(key, _) if granted.has(key) => None,
            Need::Setting(key, example) => Some(format!(
                "imports `{import}`, which [component.{0}] does not grant: add `{key} = {example}` to [component.{0}.tool.berth]",
                granted.id
            )),
            Need::Key(key, example) => Some(format!(
                "imports `{import}`, which [component.{}] does not grant: add `{key} = {example}` to it",
                granted.id
            )),
            Need::Refused(why) => Some(format!("imports `{import}`: {why}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRANTS_NOTHING: Granted = Granted {
        allowed_outbound_hosts: false,
        sqlite_databases: false,
        key_value_stores: false,
        publishes: false,
        id: "order",
    };

    #[test]
    fn std_imports_need_nothing() {
        let imports = [
            "wasi:cli/environment@0.2.6",
            "wasi:io/streams@0.2.6",
            "wasi:clocks/wall-clock@0.2.6",
            "wasi:random/random@0.2.6",
            "wasi:filesystem/preopens@0.2.6",
            "wasi:http/types@0.2.6",
            "fermyon:spin/variables@2.0.0",
        ];
        assert!(ungranted(imports, &GRANTS_NOTHING).is_empty());
    }

    #[test]
    fn an_ungranted_import_names_the_key_that_grants_it() {
        let problems = ungranted(["fermyon:spin/sqlite@2.0.0"], &GRANTS_NOTHING);
        assert_eq!(
            problems,
            [
                "imports `fermyon:spin/sqlite@2.0.0`, which [component.order] does not grant: add `sqlite_databases = [\"<label>\"]` to it"
            ]
        );
        let granted = Granted {
            sqlite_databases: true,
            ..GRANTS_NOTHING
        };
        assert!(ungranted(["fermyon:spin/sqlite@2.0.0"], &granted).is_empty());
    }

    #[test]
    fn unknown_and_refused_imports_say_why() {
        let problems = ungranted(
            [
                "wasi:sockets/tcp@0.2.6",
                "fermyon:spin/redis@2.0.0",
                "wasi:http/outgoing-handler@0.2.6",
            ],
            &GRANTS_NOTHING,
        );
        assert_eq!(problems.len(), 3);
        assert!(problems[0].contains("no sockets"));
        assert!(problems[1].contains("does not provide it"));
        assert!(problems[2].contains("allowed_outbound_hosts"));
    }
}
