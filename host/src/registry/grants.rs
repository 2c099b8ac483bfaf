//! Which manifest key grants each import. As in Spin, a component that imports something its
//! manifest does not grant still loads, and each call through that import is denied with the
//! error Spin gives (`access-denied`, `HTTP-request-denied`); the load logs every such import
//! with the key that would grant it. `refuse_ungranted_imports = true` makes them load
//! errors instead. An import berth does not serve at all cannot be linked, so it always
//! stops the load.

/// What an import needs from `[component.<id>]`.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// Part of every component's sandbox (Rust std needs these).
    Nothing,
    /// A non-empty list under this manifest key.
    Key(&'static str, &'static str),
    /// A non-empty list under this key of `[component.<id>.tool.berth]`.
    Setting(&'static str, &'static str),
    /// Linked, but no grant opens it: every call is denied, for this reason.
    AlwaysDenied(&'static str),
    /// Not served by berth, with the reason.
    Refused(&'static str),
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
        ("wasi:sockets", _) => Need::AlwaysDenied(
            "berth gives components no sockets (every connect, bind and lookup is denied); call other services over HTTP with allowed_outbound_hosts",
        ),
        ("fermyon:spin", "sqlite") => Need::Key("sqlite_databases", "[\"<label>\"]"),
        ("fermyon:spin", "key-value") => Need::Key("key_value_stores", "[\"<label>\"]"),
        ("fermyon:spin", "variables") => Need::Nothing,
        ("wasmcloud:messaging", "consumer") => Need::Setting("publishes", "[\"<subject>\"]"),
        // Delivering a message only needs its shape.
        ("wasmcloud:messaging", "types") => Need::Nothing,
        _ => Need::Refused(
            "berth does not provide it (it serves WASI 0.2, wasi:http, fermyon:spin sqlite, key-value and variables @2.0.0, and wasmcloud:messaging@0.2.0)",
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

/// The component's imports that the manifest does not open, as a sentence each.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ungranted {
    /// Linked; every call is denied. Spin loads such a component, and so does berth unless
    /// the app asks for `refuse_ungranted_imports`.
    pub denied: Vec<String>,
    /// Not served at all: the component cannot be linked.
    pub refused: Vec<String>,
}

/// Sorts every import of the component by what the manifest grants.
pub fn ungranted<'i>(imports: impl IntoIterator<Item = &'i str>, granted: &Granted) -> Ungranted {
    let mut found = Ungranted::default();
    for import in imports {
        match need(import) {
            Need::Nothing => {}
            Need::Key(key, _) | Need::Setting(key, _) if granted.has(key) => {}
            Need::Setting(key, example) => found.denied.push(format!(
                "imports `{import}`, which [component.{0}] does not grant: add `{key} = {example}` to [component.{0}.tool.berth]",
                granted.id
            )),
            Need::Key(key, example) => found.denied.push(format!(
                "imports `{import}`, which [component.{}] does not grant: add `{key} = {example}` to it",
                granted.id
            )),
            Need::AlwaysDenied(why) => found.denied.push(format!("imports `{import}`: {why}")),
            Need::Refused(why) => found.refused.push(format!("imports `{import}`: {why}")),
        }
    }
    found
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
        assert_eq!(ungranted(imports, &GRANTS_NOTHING), Ungranted::default());
    }

    #[test]
    fn an_ungranted_import_is_denied_and_names_the_key_that_grants_it() {
        let found = ungranted(["fermyon:spin/sqlite@2.0.0"], &GRANTS_NOTHING);
        assert_eq!(
            found.denied,
            [
                "imports `fermyon:spin/sqlite@2.0.0`, which [component.order] does not grant: add `sqlite_databases = [\"<label>\"]` to it"
            ]
        );
        assert!(found.refused.is_empty());
        let granted = Granted {
            sqlite_databases: true,
            ..GRANTS_NOTHING
        };
        assert_eq!(
            ungranted(["fermyon:spin/sqlite@2.0.0"], &granted),
            Ungranted::default()
        );
    }

    #[test]
    fn sockets_are_always_denied_and_unknown_imports_refused() {
        let found = ungranted(
            [
                "wasi:sockets/tcp@0.2.6",
                "fermyon:spin/redis@2.0.0",
                "wasi:http/outgoing-handler@0.2.6",
                "wasmcloud:messaging/consumer@0.2.0",
            ],
            &GRANTS_NOTHING,
        );
        assert_eq!(found.denied.len(), 3, "{found:?}");
        assert!(found.denied[0].contains("no sockets"));
        assert!(found.denied[1].contains("allowed_outbound_hosts"));
        assert!(found.denied[2].contains("[component.order.tool.berth]"));
        assert_eq!(found.refused.len(), 1);
        assert!(found.refused[0].contains("does not provide it"));
    }
}
